/* cmd_tokenize: `moetier tokenize -m DIR (--text T | --file F | --chat F)`.
 *
 * Prints the token ids of the text comma-separated on one line (an empty line
 * for empty text). Without --special, special-token names in the text are
 * ordinary text; with it they become their ids. --chat renders a conversation
 * through the model's chat format first (as run --chat and serve do), and
 * --render prints that prompt instead of its ids: what a template makes of a
 * conversation, without loading the model. --jsonl encodes one text per line
 * (a tokenizer loaded once). DIR is a model directory or a folder holding
 * tiktoken.model + tokenizer_config.json, or tokenizer.json. Scripts drive
 * this. */
#include <cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cli_common.h"
#include "commands.h"
#include "core/text/chat_template.h"
#include "core/text/tokenizer.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: moetier tokenize -m DIR (--text T | --file F | --jsonl F | --chat F [--render])\n"
               "                        [--special] [--no-chunking] [--chat-template NAME]\n"
               "  Prints the token ids of the text comma-separated on one line.\n"
               "  -m DIR         model directory, or a folder with tiktoken.model and\n"
               "                 tokenizer_config.json, or with a Hugging Face tokenizer.json\n"
               "  --text T       the text\n"
               "  --file F       read the text from F (- for standard input)\n"
               "  --jsonl F      many texts (- for standard input): each line a JSON string, or an\n"
               "                 object with a \"text\" string; their ids one line each, in order\n"
               "  --chat F       a conversation in JSON (- for standard input): an array of\n"
               "                 messages, or an object as a chat request has them (messages,\n"
               "                 tools, chat_template_kwargs, thinking, add_generation_prompt,\n"
               "                 continue_final_message),\n"
               "                 rendered in the model's chat format, its special tokens kept\n"
               "  --render       with --chat: print the rendered prompt, not its ids\n"
               "  --special      special-token names in the text become special ids\n"
               "  --no-chunking  plain tiktoken: no 400k/25k-code-point slicing as Kimi's\n"
               "                 Python tokenizer does\n");
    chat_template_flag_usage(f);
}

/* The conversation of a --chat file rendered into *text (malloc'd). */
static int render_chat(const char *dir, const char *template_name, const char *json, size_t len, char **text,
                       size_t *text_len, errbuf *e)
{
    cJSON *root = chat_json_parse(json, len, NULL);
    if (!root)
        return err_set(e, "--chat: the file is not JSON");
    const cJSON *messages = root, *tools = NULL;
    chat_options opt;
    chat_options_default(&opt);
    int rc = 0, continue_final = 0;
    if (cJSON_IsObject(root)) {
        continue_final = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(root, "continue_final_message"));
        messages = cJSON_GetObjectItemCaseSensitive(root, "messages");
        tools = cJSON_GetObjectItemCaseSensitive(root, "tools");
        const cJSON *kw = cJSON_GetObjectItemCaseSensitive(root, "chat_template_kwargs");
        rc = chat_options_from_json(root, &opt, e);
        if (!rc && kw && !cJSON_IsNull(kw)) {
            rc = chat_options_from_json(kw, &opt, e);
            opt.vars = kw;
        }
    }
    if (!rc && !cJSON_IsArray(messages))
        rc = err_set(e, "expected an array of messages, or an object with \"messages\"");
    chat_template tpl;
    if (!rc && continue_final && opt.add_generation_prompt)
        rc = err_set(e, "continue_final_message needs \"add_generation_prompt\": false");
    if (!rc && (rc = cli_chat_template(dir, template_name, &tpl, e)) == 0) {
        rc = continue_final ? chat_template_render_continue(&tpl, messages, tools, &opt, text, text_len, e)
                            : chat_template_render(&tpl, messages, tools, &opt, text, text_len, e);
        chat_template_close(&tpl);
    }
    cJSON_Delete(root);
    return rc ? err_prefix(e, "--chat: ") : 0;
}

static void print_ids(const token_list *ids)
{
    for (size_t i = 0; i < ids->n; i++)
        printf(i ? ",%d" : "%d", ids->ids[i]);
    printf("\n");
}

/* Whether JSON text p[0..n) escapes a NUL (\u0000), which a parsed string
 * would silently end at. */
static int escapes_nul(const char *p, size_t n)
{
    for (size_t i = 0; i + 6 <= n; i++) {
        if (p[i] != '\\' || strncasecmp(p + i + 1, "u0000", 5))
            continue;
        size_t run = 1;     /* the backslashes before it: an odd run escapes */
        while (run <= i && p[i - run] == '\\')
            run++;
        if (run % 2)
            return 1;
    }
    return 0;
}

/* --jsonl: each line of buf[0..len) a text; their ids, a line each. */
static int encode_lines(const tokenizer *t, const char *buf, size_t len, int flags, errbuf *e)
{
    token_list ids = {0};
    int line = 0, rc = 0;
    for (size_t at = 0; at < len && !rc;) {
        const char *nl = memchr(buf + at, '\n', len - at);
        size_t end = nl ? (size_t)(nl - buf) : len;
        line++;
        cJSON *j = cJSON_ParseWithLength(buf + at, end - at);
        const cJSON *text = cJSON_IsObject(j) ? cJSON_GetObjectItemCaseSensitive(j, "text") : j;
        ids.n = 0;
        if (!cJSON_IsString(text))
            rc = err_set(e, "--jsonl: line %d is not a JSON string or an object with a \"text\" string", line);
        else if (escapes_nul(buf + at, end - at))
            rc = err_set(e, "--jsonl: line %d holds a NUL (\\u0000), which a text here cannot: give it with "
                         "--file", line);
        else if (tokenizer_encode(t, text->valuestring, strlen(text->valuestring), flags, &ids, e))
            rc = err_prefix(e, "--jsonl: line %d: ", line);
        else
            print_ids(&ids);
        cJSON_Delete(j);
        at = end + 1;
    }
    token_list_free(&ids);
    return rc;
}

int cmd_tokenize(int argc, char **argv)
{
    const char *dir = NULL, *text = NULL, *file = NULL, *chat = NULL, *template_name = NULL, *jsonl = NULL;
    int flags = 0, render = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int r;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "-m") || !strcmp(a, "--model")) {
            if (!(dir = cli_value(argc, argv, &i)))
                return 2;
        } else if (!strcmp(a, "--text")) {
            if (!(text = cli_value(argc, argv, &i)))
                return 2;
        } else if (!strcmp(a, "--file")) {
            if (!(file = cli_value(argc, argv, &i)))
                return 2;
        } else if (!strcmp(a, "--chat")) {
            if (!(chat = cli_value(argc, argv, &i)))
                return 2;
        } else if (!strcmp(a, "--jsonl")) {
            if (!(jsonl = cli_value(argc, argv, &i)))
                return 2;
        } else if (!strcmp(a, "--render")) {
            render = 1;
        } else if (!strcmp(a, "--special")) {
            flags |= TOK_ALLOW_SPECIAL;
        } else if (!strcmp(a, "--no-chunking")) {
            flags |= TOK_NO_CHUNKING;
        } else if ((r = chat_template_flag_parse(&template_name, argc, argv, &i)) != 0) {
            if (r < 0)
                return 2;
        } else {
            fprintf(stderr, "moetier tokenize: unknown option '%s'\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (!dir || (!!text + !!file + !!chat + !!jsonl) != 1 || ((render || template_name) && !chat)) {
        fprintf(stderr, "moetier tokenize: -m and exactly one of --text, --file, --jsonl, --chat are "
                        "required (--render and --chat-template go with --chat)\n");
        usage(stderr);
        return 2;
    }
    errbuf e;
    char *buf = NULL, *rendered = NULL;
    size_t len = 0;
    if (file || chat || jsonl) {
        if (cli_read_text(file ? file : chat ? chat : jsonl, &buf, &len, &e))
            return cli_fail(&e);
    } else {
        len = strlen(text);
    }
    if (chat) {
        int rc = render_chat(dir, template_name, buf, len, &rendered, &len, &e);
        free(buf);
        if (rc)
            return cli_fail(&e);
        buf = rendered;
        flags |= TOK_ALLOW_SPECIAL; /* the template's markers are special tokens */
        if (render) {
            fwrite(buf, 1, len, stdout);
            free(buf);
            return 0;
        }
    }
    tokenizer t;
    token_list ids = {0};
    int rc = 1;
    if (tokenizer_load(&t, dir, &e) == 0) {
        if (jsonl)
            rc = encode_lines(&t, buf, len, flags, &e) ? 1 : 0;
        else if (tokenizer_encode(&t, buf ? buf : text, len, flags, &ids, &e) == 0) {
            print_ids(&ids);
            rc = 0;
        } else if (file) {
            err_prefix(&e, "--file %s: ", file);
        }
        tokenizer_free(&t);
    }
    if (rc)
        cli_fail(&e);
    token_list_free(&ids);
    free(buf);
    return rc;
}
