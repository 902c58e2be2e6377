/* held_flags: see held_flags.h. */
#include "held_flags.h"

#include <stdlib.h>
#include <string.h>

#include "cli_common.h"
#include "core/base/json_alloc.h"
#include "core/text/chat_format.h"
#include "core/text/grammar_answer.h"

int held_flag_parse(held_flags *h, int argc, char **argv, int *i)
{
    const char *a = argv[*i];
    const char **to = !strcmp(a, "--json-schema")        ? &h->schema_arg
                      : !strcmp(a, "--json-schema-file") ? &h->schema_path
                      : !strcmp(a, "--grammar")          ? &h->grammar_arg
                      : !strcmp(a, "--grammar-file")     ? &h->grammar_path
                                                         : NULL;
    if (!to)
        return 0;
    return (*to = cli_value(argc, argv, i)) ? 1 : -1;
}

void held_flags_usage(FILE *f)
{
    fprintf(f, "  --json-schema SCHEMA the answer is a JSON value SCHEMA takes (JSON Schema as\n"
               "                       the server's response_format json_schema; '{}': any JSON)\n"
               "  --json-schema-file FILE  the same, the schema read from FILE\n"
               "  --grammar GBNF       the answer is a text of the grammar's root (llama.cpp's\n"
               "                       GBNF, as the server's 'grammar')\n"
               "  --grammar-file FILE  the same, the grammar read from FILE\n");
}

int held_flags_given(const held_flags *h)
{
    return h->schema_arg || h->schema_path || h->grammar_arg || h->grammar_path;
}

int held_flags_check(const held_flags *h, const char *cmd)
{
    if (!!h->schema_arg + !!h->schema_path + !!h->grammar_arg + !!h->grammar_path > 1) {
        fprintf(stderr,
                "moetier %s: give one of --json-schema, --json-schema-file, --grammar and "
                "--grammar-file\n",
                cmd);
        return -1;
    }
    /* chat's messages come on standard input: a file read from it to its end
     * would leave the chat none */
    const char *from_stdin = h->schema_path && !strcmp(h->schema_path, "-")     ? "--json-schema-file"
                             : h->grammar_path && !strcmp(h->grammar_path, "-") ? "--grammar-file"
                                                                                : NULL;
    if (from_stdin && !strcmp(cmd, "chat")) {
        fprintf(stderr, "moetier chat: %s -: chat reads its messages from standard input; give a file\n",
                from_stdin);
        return -1;
    }
    return 0;
}

/* The option's text: text itself, or the file at path (then in *file, to
 * free); 1 when the file cannot be read (e naming file_flag). */
static int option_text(const char *text, const char *path, const char *file_flag, char **file, size_t *len,
                       errbuf *e)
{
    *file = NULL;
    *len = text ? strlen(text) : 0;
    if (path && cli_read_text(path, file, len, e)) {
        err_prefix(e, "%s: ", file_flag);
        return 1;
    }
    return 0;
}

/* --json-schema TEXT or --json-schema-file PATH */
static int compile_schema(const char *text, const char *path, json_schema *s, errbuf *e)
{
    char *file;
    size_t len;
    if (option_text(text, path, "--json-schema-file", &file, &len, e))
        return 1;
    const char *end = NULL;
    cJSON *j = chat_json_parse(path ? file : text, len, &end);
    int rc;
    if (!j && json_alloc_failed())
        rc = err_set(e, "%s: out of memory parsing it", path ? path : "--json-schema");
    else if (!j)
        rc = err_set(e, "%s: not JSON (near byte %ld)", path ? path : "--json-schema",
                     end ? (long)(end - (path ? file : text)) : 0L);
    else if ((rc = json_schema_compile(j, s, e)))
        err_prefix(e, "%s: ", path ? path : "--json-schema");
    cJSON_Delete(j);
    free(file);
    return rc;
}

/* --grammar TEXT or --grammar-file PATH */
static int compile_grammar(const char *text, const char *path, gbnf *g, errbuf *e)
{
    char *file;
    size_t len;
    if (option_text(text, path, "--grammar-file", &file, &len, e))
        return 1;
    int rc = gbnf_compile(g, path ? file : text, len, e), held = rc ? 0 : grammar_answer_check(g);
    if (held) {
        gbnf_free(g);
        rc = err_set(e, "%s", grammar_answer_strerror(held));
    }
    if (rc)
        err_prefix(e, "%s: ", path ? path : "--grammar");
    free(file);
    return rc;
}

int held_flags_compile(const held_flags *h, json_schema *schema, gbnf *grammar, errbuf *e)
{
    if (h->grammar_arg || h->grammar_path)
        return compile_grammar(h->grammar_arg, h->grammar_path, grammar, e);
    if (h->schema_arg || h->schema_path)
        return compile_schema(h->schema_arg, h->schema_path, schema, e);
    return 0;
}
