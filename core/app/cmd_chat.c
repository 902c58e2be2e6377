/* cmd_chat: `moetier chat -m DIR [--system S] [-n N] [sampling]`.
 *
 * An interactive, multi-turn conversation in the model's own chat format. Each
 * turn renders the whole conversation, reuses the KV cache for the prefix it
 * shares with what was computed before (so a turn prefills only its new tail),
 * and streams the reply until an end-of-turn token. Lines typed at the prompt
 * are user messages (a line ending in a backslash goes on to the next); the
 * commands (/help lists them) start over, take back or redo the last
 * exchange, save and load the conversation, add a file to the next message
 * (chat_commands.c), or quit.
 * Ctrl+C stops the reply in progress through the engine's stop check (between
 * tokens, or between prompt chunks) and quits at the prompt. */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli_common.h"
#include "chat_commands.h"
#include "cli_prompt_file.h"
#include "commands.h"
#include "core/base/progress.h"
#include "core/base/stop_signal.h"
#include "core/engine/draft_tuner.h"
#include "core/text/chat_format.h"
#include "core/text/tool_calls.h"
#include "core/text/tool_force.h"
#include "core/text/utf8.h"
#include "generate.h"
#include "held_flags.h"
#include "sampling_flags.h"

static const char commands_help[] =
    "    /reset, /clear  start a new conversation\n"
    "    /undo        take back the last message and its reply\n"
    "    /regen       answer the last message again (a new draw)\n"
    "    /save FILE   write the conversation to FILE as JSON (a list of messages)\n"
    "    /load FILE   go on with the conversation in FILE (such a list, a chat\n"
    "                 request, or one the chat page of serve exported)\n"
    "    /read FILE   add a text file to the next message (its name and a fenced block)\n"
    "    /help        this list\n"
    "    /exit, /quit quit\n"
    "    (a message that begins with '/' and a word: begin it with '//')\n";

static void usage(FILE *f)
{
    fprintf(f, "usage: moetier chat -m DIR [--system TEXT] [-n N] [--no-think] [--draft-lookup N]\n"
               "                    [--json-schema SCHEMA | --grammar GBNF] [sampling options]\n"
               "  Interactive multi-turn chat in the model's chat format. Type a message and\n"
               "  press Enter (end a line with \\ to go on to the next). Commands:\n"
               "%s"
               "  End of input quits too.\n"
               "  Ctrl+C stops a reply (what it said so far is kept) or, at the prompt, quits;\n"
               "  a second Ctrl+C before the first took effect ends the program at once.\n"
               "  SIGTERM stops the reply and quits.\n"
               "  -m DIR           checkpoint directory (with its tokenizer)\n"
               "  --system TEXT    system message\n"
               "  -n N             most tokens per reply (default 1024)\n"
               "  --no-think       ask for answers without reasoning (thinking=false)\n"
               "  --hide-think     do not print the reasoning (default: printed)\n"
               "  --draft-lookup N check up to N (1-3) tokens guessed from the conversation\n"
               "                   with each generated one, in one step: faster on replies\n"
               "                   that repeat earlier text, the same reply (default 0: off);\n"
               "                   a step checks the guesses that its measured cost says pay\n"
               "  --prompt-cache FILE  keep the conversation's KV cache in FILE at the end (and\n"
               "                   at /reset): a later chat that starts the same way (the same\n"
               "                   system message) computes only the rest\n"
               "  --prompt-cache-ro    read FILE, never write it\n"
               "  each reply held as run's (after its reasoning, when the model reasons):\n",
            commands_help);
    held_flags_usage(f);
    fprintf(f, "  and the context, tier and sampling options of `moetier run`:\n");
    chat_template_flag_usage(f);
    model_flags_usage(f);
    sampling_flags_usage(f);
}

typedef struct chat_state {
    cli_model m;
    tokenizer tok;
    chat_template tpl;
    chat_options copt;
    cJSON *messages;
    const char *system;
    int stop[VOCAB_MAX_REPLY_STOPS];
    int n_stop;
    cli_prompt_cache pcache;    /* --prompt-cache */
    int draft;                  /* --draft-lookup */
    draft_tuner tuner;          /* what its guesses and steps were like */
    held_flags held;            /* each reply held to a schema or grammar */
    json_schema schema;
    gbnf grammar;
    json_vocab jv;
    char *pending;              /* files /read added to the next message */
    const model_flags *mf;      /* the model's files, which /save must not replace */
} chat_state;

static void chat_held_free(chat_state *c)
{
    json_schema_free(&c->schema);
    gbnf_free(&c->grammar);
    json_vocab_free(&c->jv);
}

static void chat_reset(chat_state *c)
{
    free(c->pending);
    c->pending = NULL;
    cJSON_Delete(c->messages);
    c->messages = cJSON_CreateArray();
    if (c->system) {
        cJSON *m = cJSON_CreateObject();
        cJSON_AddStringToObject(m, "role", "system");
        cJSON_AddStringToObject(m, "content", c->system);
        cJSON_AddItemToArray(c->messages, m);
    }
}

/* Streams a reply: token bytes through the tool-call/reasoning splitter; the
 * content is printed as it arrives, the reasoning only when asked. */
typedef struct reply_stream {
    const tokenizer *tok;
    tool_stream ts;
    char *text, *think;             /* the reply's content and reasoning so far */
    size_t text_len, think_len;
    int show_think;
    int dim_think;                  /* a terminal (and no NO_COLOR): the reasoning is shown dim */
    const int *stop;
    int n_stop;
} reply_stream;

static void append(char **buf, size_t *len, const char *p, size_t n)
{
    char *nb = realloc(*buf, *len + n + 1);
    if (!nb)
        return;
    memcpy(nb + *len, p, n);
    *len += n;
    nb[*len] = 0;
    *buf = nb;
}

static void reply_delta(reply_stream *r, const tool_stream_delta *d)
{
    fwrite(d->content, 1, d->content_len, stdout);
    if (r->show_think && d->reasoning_len) {
        fputs(r->dim_think ? "\033[2m" : "", stdout);
        fwrite(d->reasoning, 1, d->reasoning_len, stdout);
        fputs(r->dim_think ? "\033[0m" : "", stdout);
    }
    fflush(stdout);
    append(&r->text, &r->text_len, d->content, d->content_len);
    append(&r->think, &r->think_len, d->reasoning, d->reasoning_len);
}

static void reply_token(void *ctx, int id)
{
    reply_stream *r = ctx;
    for (int i = 0; i < r->n_stop; i++)
        if (id == r->stop[i])
            return;
    size_t n;
    const char *b = vocab_decode(&r->tok->v, id, &n);
    if (b && vocab_is_special(&r->tok->v, id) && !tool_stream_marker(b, n))
        return;     /* reserved and media tokens are not reply text (as in serve) */
    tool_stream_delta d;
    errbuf e;
    if (b && tool_stream_feed(&r->ts, b, n, &d, &e) == 0)
        reply_delta(r, &d);
}

static int stop_requested(void *ctx)
{
    (void)ctx;
    return stop_signal_pending();
}

/* Waits at the prompt: 0 when stdin has input (or its end), -1 when Ctrl+C
 * (or SIGTERM) came first. */
static int wait_for_input(void)
{
    struct pollfd p[2] = {{.fd = 0, .events = POLLIN}, {.fd = stop_signal_fd(), .events = POLLIN}};
    while (!stop_signal_pending()) {
        int r = poll(p, 2, -1);
        if (r < 0 && errno != EINTR)
            return 0;           /* getline reports it */
        if (r > 0 && p[0].revents)
            return 0;
    }
    return -1;
}

/* Appends n bytes and a NUL to the growing buffer *buf; -1 when out of memory. */
static int buf_append(char **buf, size_t *len, size_t *cap, const char *s, size_t n)
{
    if (*len + n + 1 > *cap) {
        size_t nc = (*len + n + 1) * 2;
        char *nb = realloc(*buf, nc);
        if (!nb)
            return -1;
        *buf = nb;
        *cap = nc;
    }
    memcpy(*buf + *len, s, n);
    *len += n;
    (*buf)[*len] = 0;
    return 0;
}

/* A terminal's bracketed paste (asked for at start) wraps pasted text in
 * these, so its line breaks are the message's, not Enter. */
#define PASTE_BEGIN "\033[200~"
#define PASTE_END "\033[201~"

/* Removes the paste markers from line[0, n), following them in *pasting;
 * returns the new length. */
static size_t drop_paste_markers(char *line, size_t n, int *pasting)
{
    size_t o = 0, k = strlen(PASTE_BEGIN);
    for (size_t i = 0; i < n;) {
        if (n - i >= k && (!memcmp(line + i, PASTE_BEGIN, k) || !memcmp(line + i, PASTE_END, k))) {
            *pasting = line[i + 4] == '0';
            i += k;
            continue;
        }
        line[o++] = line[i++];
    }
    return o;
}

/* One message from the prompt: a line, or several when each but the last ends
 * in a backslash (which becomes a line break), or when they came in one paste.
 * Returns its length; -1 at the end of input or when Ctrl+C came first.
 * The end of input after a backslash, or in a paste, sends what came before it. */
static ssize_t read_message(char **msg, size_t *cap, int tty)
{
    size_t len = 0;
    char *line = NULL;
    size_t line_cap = 0;
    ssize_t rc = -1;
    int pasting = 0;
    for (;;) {
        if (tty && !pasting) {
            fprintf(stderr, len ? "... " : "> ");
            fflush(stderr);
        }
        if (wait_for_input())
            break;
        ssize_t n = getline(&line, &line_cap, stdin);
        if (stop_signal_pending())
            break;
        if (n < 0) {
            if (len)        /* the line break the last backslash asked for */
                (*msg)[--len] = 0;
            if (len)
                rc = (ssize_t)len;
            break;
        }
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
            n--;
        n = (ssize_t)drop_paste_markers(line, (size_t)n, &pasting);
        int more = pasting || (n > 0 && line[n - 1] == '\\');
        if (more && !pasting)
            line[n - 1] = '\n';
        if (buf_append(msg, &len, cap, line, (size_t)n) || (pasting && buf_append(msg, &len, cap, "\n", 1)))
            break;
        if (!more) {
            rc = (ssize_t)len;
            break;
        }
    }
    free(line);
    return rc;
}

/* Adds text[0, n) to o as valid UTF-8: a reply may hold any bytes (a stray
 * byte token, a character cut by -n or Ctrl+C), and the next turn's prompt,
 * rendered from the history, must be text. */
static void add_text(cJSON *o, const char *key, const char *text, size_t n)
{
    char *clean = utf8_clean(text ? text : "", text ? n : 0);
    cJSON_AddStringToObject(o, key, clean ? clean : "");
    free(clean);
}

/* Whether line is the command name, alone or (arg non-NULL) with an
 * argument after a space, which *arg then points to. */
static int is_command(const char *line, const char *name, const char **arg)
{
    size_t n = strlen(name);
    if (strncmp(line, name, n))
        return 0;
    if (!line[n])
        return !arg;
    if (!arg || line[n] != ' ')
        return 0;
    *arg = line + n + strspn(line + n, " ");
    return **arg != 0;
}

/* Whether line begins as a command does, '/' and a word of letters ended by
 * a space or the line's end: a typo of one is not sent to the model (a path
 * such as /etc/hosts is a message). */
static int looks_like_command(const char *line)
{
    size_t n = line[0] == '/' ? strspn(line + 1, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ") : 0;
    return n && (line[1 + n] == ' ' || !line[1 + n]);
}

/* a + a blank line + b, malloc'd */
static char *joined(const char *a, const char *b)
{
    size_t na = strlen(a), nb = strlen(b);
    char *s = malloc(na + nb + 3);
    if (s) {
        memcpy(s, a, na);
        memcpy(s + na, "\n\n", 2);
        memcpy(s + na + 2, b, nb + 1);
    }
    return s;
}

/* /save FILE, /load FILE and /read FILE; 0 when line is none of them. A
 * failure is said and the chat goes on as it was. */
static int conversation_command(chat_state *c, const char *line)
{
    const char *path;
    errbuf e;
    if (is_command(line, "/save", &path)) {
        if (cli_check_output("/save", path, c->mf, &e) || chat_save(c->messages, path, &e))
            fprintf(stderr, "[not saved: %s]\n", e.msg);
        else
            fprintf(stderr, "[saved %d messages to %s]\n", cJSON_GetArraySize(c->messages), path);
    } else if (is_command(line, "/load", &path)) {
        cJSON *loaded = chat_load(path, &e);
        if (!loaded) {
            fprintf(stderr, "[not loaded: %s]\n", e.msg);
            return 1;
        }
        chat_reset(c);
        cJSON_Delete(c->messages);
        c->messages = loaded;   /* (its own system message, if any, not --system) */
        fprintf(stderr, "[loaded %d messages from %s: the next message goes on from there]\n",
                cJSON_GetArraySize(loaded), path);
    } else if (is_command(line, "/read", &path)) {
        char *block = chat_file_block(path, &e), *more = NULL;
        if (!block) {
            fprintf(stderr, "[not added: %s]\n", e.msg);
            return 1;
        }
        if (c->pending && !(more = joined(c->pending, block))) {
            fprintf(stderr, "[not added: out of memory]\n");
            free(block);
            return 1;
        }
        free(c->pending);
        c->pending = more ? more : block;
        if (more)
            free(block);
        fprintf(stderr, "[%s added to your next message]\n", path);
    } else if (!strncmp(line, "/save", 5) || !strncmp(line, "/load", 5) || !strncmp(line, "/read", 5)) {
        if (line[5 + strspn(line + 5, " ")])
            return 0;       /* (a word that only begins so: "/saved") */
        fprintf(stderr, "[%.5s needs a file: %.5s FILE]\n", line, line);
    } else {
        return 0;
    }
    return 1;
}

/* chat_turn's answer when the message did not join the conversation (the
 * user may send it again: the files /read attached stay with it) */
#define CHAT_NOT_ADDED 1

/* One turn: the user's line in, the assistant's reply streamed and recorded.
 * 0, CHAT_NOT_ADDED, or -1 on an error that ends the chat (e says it). */
static int chat_turn(chat_state *c, sampler *smp, const char *line, int max_new, int show_think,
                     errbuf *e)
{
    cJSON *um = cJSON_CreateObject();
    cJSON_AddStringToObject(um, "role", "user");
    cJSON_AddStringToObject(um, "content", line);
    cJSON_AddItemToArray(c->messages, um);
    char *text = NULL;
    size_t len = 0;
    token_list ids = {0}, gen = {0};
    int rc = -1;
    float *logits = malloc((size_t)c->m.mw.cfg.vocab_size * sizeof *logits);
    if (!logits) {
        err_set(e, "out of memory");
        goto out;
    }
    if (chat_template_render(&c->tpl, c->messages, NULL, &c->copt, &text, &len, e) ||
        tokenizer_encode(&c->tok, text, len, TOK_ALLOW_SPECIAL, &ids, e)) {
        /* the conversation as it was (a template may refuse, say, two user
         * messages in a row): the chat goes on, nothing unsaved is lost */
        cJSON_DeleteItemFromArray(c->messages, cJSON_GetArraySize(c->messages) - 1);
        fprintf(stderr, "[not sent: %s]\n", e->msg);
        rc = CHAT_NOT_ADDED;
        goto out;
    }
    engine *en = &c->m.en;
    if ((int)ids.n >= en->kv.max_ctx) {
        /* checked before the cache is touched: the conversation goes on as it was */
        cJSON_DeleteItemFromArray(c->messages, cJSON_GetArraySize(c->messages) - 1);
        fprintf(stderr, "[this message brings the conversation to %zu tokens, and the context "
                "holds %d, a reply included: it was not added; /reset starts over, a larger -c "
                "holds more]\n", ids.n, en->kv.max_ctx);
        rc = CHAT_NOT_ADDED;
        goto out;
    }
    /* a conversation's first turn: what the prompt cache holds of it */
    if (c->pcache.path && en->n_past == 0 &&
        cli_prompt_cache_restore(&c->pcache, &c->m, ids.ids, (int)ids.n, logits, e) < 0)
        goto out;
    int reuse = engine_reusable_prefix(en, ids.ids, (int)ids.n);
    if (engine_truncate(en, reuse, e))
        goto out;
    double t0 = now_seconds();
    int frc = engine_forward(en, ids.ids + reuse, (int)ids.n - reuse, logits, 0, e);
    if (frc == 1) {
        /* Ctrl+C during the prompt: no reply, so the message leaves the conversation
         * (the chunks computed stay cached for when it is sent again) */
        cJSON_DeleteItemFromArray(c->messages, cJSON_GetArraySize(c->messages) - 1);
        fprintf(stderr, "[stopped before the reply; the message was not added]\n");
        rc = CHAT_NOT_ADDED;
    }
    if (frc)
        goto out;
    double t1 = now_seconds();
    /* the repetition penalty looks back over the conversation, as run's does over its prompt */
    sampler_forget(smp);
    for (size_t i = 0; i < ids.n; i++)
        sampler_accept(smp, ids.ids[i]);
    reply_stream rs = {.tok = &c->tok, .show_think = show_think, .stop = c->stop, .n_stop = c->n_stop,
                       .dim_think = isatty(1) && !getenv("NO_COLOR")};
    int opened = chat_prompt_reasoning(text, len) == REASONING_OPEN;
    tool_stream_init(&rs.ts, opened ? TOOL_REASONING_OPEN : TOOL_REASONING_TAGS);
    gen_draft_stats draft_stats = {0};
    gen_params gp = {.max_new = max_new, .stop_ids = c->stop, .n_stop = c->n_stop,
                     .on_token = reply_token, .ctx = &rs, .draft = c->draft,
                     .draft_stats = &draft_stats, .tuner = &c->tuner};
    if (held_flags_given(&c->held)) {
        int grammar = c->held.grammar_arg || c->held.grammar_path;
        gp.schema = grammar ? NULL : &c->schema;
        gp.grammar = grammar ? &c->grammar : NULL;
        gp.jv = &c->jv;
        gp.reasoning = chat_prompt_reasoning(text, len);
        gp.think_begin = vocab_find_special(&c->tok.v, "<think>");
        gp.section_begin = tool_section_begin(&c->tok.v);
    }
    int grc = generate(&c->m, &c->tok, smp, logits, &gp, &gen, e);
    tool_stream_delta d;
    if (tool_stream_finish(&rs.ts, &d, e) == 0)
        reply_delta(&rs, &d);
    tool_stream_free(&rs.ts);
    double t2 = now_seconds();
    if (grc == 0 || grc == 1 || grc == GEN_CONTEXT_FULL) {
        /* a reply stopped by Ctrl+C or by the end of the context is kept as far as it went */
        cJSON *am = cJSON_CreateObject();
        cJSON_AddStringToObject(am, "role", "assistant");
        add_text(am, "content", rs.text, rs.text_len);
        if (rs.think_len)
            add_text(am, "reasoning_content", rs.think, rs.think_len);
        cJSON_AddItemToArray(c->messages, am);
        rc = 0;
    }
    free(rs.text);
    free(rs.think);
    printf("\n");
    fflush(stdout);
    if (grc == 1)
        fprintf(stderr, "[stopped]\n");
    if (grc == GEN_CONTEXT_FULL)
        fprintf(stderr, "[the context of %d tokens is full: the reply stops here; /reset starts "
                "over, a larger -c holds more]\n", en->kv.max_ctx);
    fprintf(stderr, "[%zu prompt tokens, %d reused from the cache, %zu new in %.2f s; %zu generated "
            "in %.2f s (%.2f tok/s)]\n", ids.n, reuse, ids.n - (size_t)reuse, t1 - t0, gen.n,
            t2 - t1, t2 > t1 ? (double)gen.n / (t2 - t1) : 0.0);
    if (c->draft) {
        gen_draft_stats_print(&draft_stats, stderr);
        draft_tuner_print(&c->tuner, stderr);
    }
out:
    free(logits);
    free(text);
    token_list_free(&ids);
    token_list_free(&gen);
    return rc;
}

int cmd_chat(int argc, char **argv)
{
    model_flags mf = {0};
    sampler_params sp = sampler_defaults();
    chat_state c = {.mf = &mf};
    draft_tuner_init(&c.tuner);
    int max_new = 1024, show_think = 1;
    breaker_flags breakers = {0};
    const char *template_name = NULL;
    chat_options_default(&c.copt);
    for (int i = 1; i < argc; i++) {
        int r = model_flags_parse(&mf, argc, argv, &i);
        if (!r)
            r = sampling_flag_parse(&sp, &breakers, argc, argv, &i);
        if (r < 0)
            return 2;
        if (!r)
            r = cli_prompt_cache_parse(&c.pcache, argc, argv, &i);
        if (!r)
            r = chat_template_flag_parse(&template_name, argc, argv, &i);
        if (!r)
            r = held_flag_parse(&c.held, argc, argv, &i);
        if (r < 0)
            return 2;
        if (r)
            continue;
        const char *a = argv[i], *v;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--system")) {
            if (!(c.system = cli_value(argc, argv, &i)))
                return 2;
        } else if (!strcmp(a, "-n") || !strcmp(a, "--n-predict")) {
            if (!(v = cli_value(argc, argv, &i)) || cli_int(a, v, 1, 1 << 24, &max_new))
                return 2;
        } else if (!strcmp(a, "--draft-lookup")) {
            if (!(v = cli_value(argc, argv, &i)) || cli_int(a, v, 0, ENGINE_DRAFT_MAX_T - 1, &c.draft))
                return 2;
        } else if (!strcmp(a, "--no-think")) {
            c.copt.thinking = 0;
            c.copt.thinking_set = 1;
        } else if (!strcmp(a, "--hide-think")) {
            show_think = 0;
        } else {
            fprintf(stderr, "moetier chat: unknown option '%s'\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (!mf.dir) {
        fprintf(stderr, "moetier chat: -m DIR is required\n");
        return 2;
    }
    if (c.pcache.all || (c.pcache.read_only && !c.pcache.path)) {
        fprintf(stderr, "moetier chat: %s\n", c.pcache.all ? "--prompt-cache-all is run's (chat "
                "keeps the replies anyway)" : "--prompt-cache-ro needs --prompt-cache FILE");
        return 2;
    }
    if (model_flags_check(&mf, "chat") || held_flags_check(&c.held, "chat"))
        return 2;
    errbuf e;
    if (sampler_check(&sp, &e)) {
        cli_fail(&e);
        return 2;       /* a bad option value, as when it does not parse */
    }
    int bad_held = held_flags_compile(&c.held, &c.schema, &c.grammar, &e);
    if (bad_held) {
        cli_fail(&e);
        return bad_held < 0 ? 2 : 1;        /* a bad option value, or a file not read */
    }
    cli_note_file(&mf, "--json-schema-file", c.held.schema_path);
    cli_note_template(&mf, template_name);
    cli_note_file(&mf, "--grammar-file", c.held.grammar_path);
    cli_note_file(&mf, "--prompt-cache", c.pcache.path);
    if (c.pcache.path && (cli_check_output("--prompt-cache", c.pcache.path, &mf, &e) ||
                          cli_prompt_cache_check(&c.pcache, &e)))
        return cli_fail(&e);
    if (tokenizer_load(&c.tok, mf.dir, &e)) {
        chat_held_free(&c);
        return cli_fail(&e);
    }
    if ((held_flags_given(&c.held) && json_vocab_build(&c.jv, &c.tok.v, &e)) ||
        cli_chat_template(mf.dir, template_name, &c.tpl, &e) || cli_model_open(&c.m, &mf, &e)) {
        chat_held_free(&c);
        tokenizer_free(&c.tok);
        chat_template_close(&c.tpl);
        return cli_fail(&e);
    }
    c.n_stop = vocab_reply_stop_ids(&c.tok.v, c.m.mw.cfg.eos_token_ids, c.m.mw.cfg.n_eos, c.stop);
    sampler smp;
    dry_breakers dry; /* (the sampler is made again at /reset) */
    if (sampling_flags_finish(&sp, &breakers, &c.tok, c.m.en.kv.max_ctx, &dry, &e) ||
        sampler_create(&smp, &sp, c.m.mw.cfg.vocab_size, &e)) {
        dry_breakers_free(&dry);
        chat_held_free(&c);
        cli_model_close(&c.m);
        tokenizer_free(&c.tok);
        chat_template_close(&c.tpl);
        return cli_fail(&e);
    }
    chat_reset(&c);
    /* from here on Ctrl+C stops a reply (within one token, or one prompt chunk)
     * and, at the prompt, ends the chat; pressed twice it ends the process */
    if (stop_signal_install()) {
        sampler_destroy(&smp);
        dry_breakers_free(&dry);
        chat_held_free(&c);
        cJSON_Delete(c.messages);
        cli_model_close(&c.m);
        tokenizer_free(&c.tok);
        chat_template_close(&c.tpl);
        err_set(&e, "cannot set up Ctrl+C handling: %s", strerror(errno));
        return cli_fail(&e);
    }
    c.m.en.stop_requested = stop_requested;
    /* unbuffered: the prompt polls fd 0 for the next message, and lines a
     * buffer had already taken from a pipe that stays open would wait there
     * unseen (a program that writes two messages and waits for two replies) */
    setvbuf(stdin, NULL, _IONBF, 0);
    int tty = isatty(0), rc = 0;
    if (tty && isatty(2))
        fputs("\033[?2004h", stderr);  /* bracketed paste: a pasted text is one message */
    char *line = NULL;
    size_t cap = 0;
    for (;;) {
        ssize_t n = read_message(&line, &cap, tty);
        if (n < 0)
            break;
        if (n == 0)
            continue;
        if (memchr(line, 0, (size_t)n)) {
            /* a message is a JSON string: a NUL would silently end it */
            fprintf(stderr, "[the message has a NUL byte; it was not sent]\n");
            continue;
        }
        size_t bad = utf8_validate((const uint8_t *)line, (size_t)n);
        if (bad < (size_t)n) {
            fprintf(stderr, "[the message is not valid UTF-8 at byte %zu; it was not sent]\n", bad);
            continue;
        }
        if (is_command(line, "/exit", NULL) || is_command(line, "/quit", NULL))
            break;
        if (is_command(line, "/reset", NULL) || is_command(line, "/clear", NULL)) {
            /* a fresh sampler too: the new conversation is the one a new chat
             * with this seed would have */
            cli_prompt_cache_save(&c.pcache, &c.m, NULL);
            chat_reset(&c);
            engine_reset(&c.m.en);
            sampler_destroy(&smp);
            if (sampler_create(&smp, &sp, c.m.mw.cfg.vocab_size, &e)) {
                rc = cli_fail(&e);
                break;
            }
            continue;
        }
        char *regen = NULL, *sent = NULL;
        cJSON *before_regen = NULL;     /* the exchange back, if its message is not sent again */
        if (is_command(line, "/regen", NULL)) {
            before_regen = cJSON_Duplicate(c.messages, 1);
            if (!(regen = chat_take_last_exchange(c.messages))) {
                cJSON_Delete(before_regen);
                fprintf(stderr, "[nothing to answer again: the conversation has no message]\n");
                continue;
            }
        } else if (is_command(line, "/undo", NULL)) {
            char *gone = chat_take_last_exchange(c.messages);
            fprintf(stderr, gone ? "[took back the last message and its reply]\n"
                                 : "[nothing to take back: the conversation has no message]\n");
            free(gone);
            continue;
        } else if (is_command(line, "/help", NULL)) {
            fputs(commands_help, stderr);
            continue;
        } else if (conversation_command(&c, line)) {
            continue;
        } else if (looks_like_command(line)) {
            int w = (int)strcspn(line, " ");
            static const char *const known[] = {"/reset", "/clear", "/undo", "/regen", "/help", "/exit", "/quit"};
            const char *name = NULL;
            for (size_t k = 0; k < sizeof known / sizeof *known; k++)
                if ((int)strlen(known[k]) == w && !strncmp(line, known[k], (size_t)w))
                    name = known[k];
            if (name)
                fprintf(stderr, "[%s takes nothing after it; a message that begins so is sent when it "
                                "begins with '//']\n", name);
            else
                fprintf(stderr, "[no command %.*s: /help lists them; a message that begins so is sent "
                                "when it begins with '//']\n", w, line);
            continue;
        }
        /* (the first '/' of '//word' said the line is a message) */
        const char *text = !strncmp(line, "//", 2) && looks_like_command(line + 1) ? line + 1 : line;
        if (!regen && c.pending && !(sent = joined(c.pending, text))) {
            err_set(&e, "out of memory");
            rc = cli_fail(&e);
            break;
        }
        int turn = chat_turn(&c, &smp, regen ? regen : sent ? sent : text, max_new, show_think, &e);
        if (turn == CHAT_NOT_ADDED && before_regen) {
            cJSON_Delete(c.messages);
            c.messages = before_regen;
            before_regen = NULL;
            fprintf(stderr, "[the last exchange stays as it was]\n");
        }
        cJSON_Delete(before_regen);
        if (sent && turn != CHAT_NOT_ADDED) {   /* (the files /read added went with this message) */
            free(c.pending);
            c.pending = NULL;
        }
        free(regen);
        free(sent);
        if (turn < 0) {
            /* an error (not a full context, handled in the turn) ends the chat */
            rc = cli_fail(&e);
            break;
        }
        if (stop_signal_pending() == SIGTERM)
            break;          /* SIGTERM ends the chat once the reply has stopped */
        stop_signal_clear();
    }
    if (tty && isatty(2))
        fputs("\033[?2004l", stderr);
    if (tty && stop_signal_pending())
        fprintf(stderr, "\n");
    cli_prompt_cache_save(&c.pcache, &c.m, NULL);
    cli_prompt_cache_free(&c.pcache);
    stop_signal_uninstall();
    free(line);
    sampler_destroy(&smp);
    dry_breakers_free(&dry);
    chat_held_free(&c);
    cJSON_Delete(c.messages);
    free(c.pending);
    if (cli_model_close(&c.m) && rc == 0)
        rc = 1;     /* the --trace file could not be written */
    tokenizer_free(&c.tok);
    chat_template_close(&c.tpl);
    return rc;
}
