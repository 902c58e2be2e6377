/* cmd_tokenize: `moetier tokenize -m DIR (--text T | --file F) [--special]`.
 *
 * Prints the token ids of the text comma-separated on one line (an empty line
 * for empty text). Without --special, special-token names in the text are
 * ordinary text; with it they become their ids. DIR is a model directory or a
 * folder holding tiktoken.model + tokenizer_config.json. Scripts drive this. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_common.h"
#include "commands.h"
#include "core/text/tokenizer.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: moetier tokenize -m DIR (--text T | --file F) [--special] [--no-chunking]\n"
               "  Prints the token ids of the text comma-separated on one line.\n"
               "  -m DIR         model directory, or a folder with tiktoken.model and\n"
               "                 tokenizer_config.json\n"
               "  --text T       the text\n"
               "  --file F       read the text from F (- for standard input)\n"
               "  --special      special-token names in the text become special ids\n"
               "  --no-chunking  plain tiktoken: no 400k/25k-code-point slicing as Kimi's\n"
               "                 Python tokenizer does\n");
}

int cmd_tokenize(int argc, char **argv)
{
    const char *dir = NULL, *text = NULL, *file = NULL;
    int flags = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
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
        } else if (!strcmp(a, "--special")) {
            flags |= TOK_ALLOW_SPECIAL;
        } else if (!strcmp(a, "--no-chunking")) {
            flags |= TOK_NO_CHUNKING;
        } else {
            fprintf(stderr, "moetier tokenize: unknown option '%s'\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (!dir || (!text == !file)) {
        fprintf(stderr, "moetier tokenize: -m and exactly one of --text, --file are required\n");
        usage(stderr);
        return 2;
    }
    errbuf e;
    char *buf = NULL;
    size_t len = 0;
    if (file) {
        if (cli_read_text(file, &buf, &len, &e))
            return cli_fail(&e);
    } else {
        len = strlen(text);
    }
    tokenizer t;
    token_list ids = {0};
    int rc = 1;
    if (tokenizer_load(&t, dir, &e) == 0) {
        if (tokenizer_encode(&t, buf ? buf : text, len, flags, &ids, &e) == 0) {
            for (size_t i = 0; i < ids.n; i++)
                printf(i ? ",%d" : "%d", ids.ids[i]);
            printf("\n");
            rc = 0;
        }
        tokenizer_free(&t);
    }
    if (rc)
        cli_fail(&e);
    token_list_free(&ids);
    free(buf);
    return rc;
}
