/* cmd_logits: `moetier logits -m DIR --ids 1,2,3 -o FILE`.
 *
 * One prefill of the given ids; writes the logits of every position as raw
 * little-endian float32 [T, vocab] to FILE. Prints nothing on stdout: scripts
 * drive this interface. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_common.h"
#include "commands.h"
#include "core/base/fileutil.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: moetier logits -m DIR --ids 1,2,3 -o FILE [-c CTX] [--chunk N] [tier options]\n"
               "  Runs one prefill of the ids and writes the logits of every position as\n"
               "  little-endian float32 [T, vocab] to FILE (nothing is printed on stdout).\n"
               "  -m DIR       checkpoint directory (config.json + safetensors)\n"
               "  --ids LIST   comma-separated token ids\n"
               "  -o FILE      output file\n");
    model_flags_usage(f);
}

int cmd_logits(int argc, char **argv)
{
    model_flags mf = {0};
    const char *ids_s = NULL, *out = NULL;
    for (int i = 1; i < argc; i++) {
        int r = model_flags_parse(&mf, argc, argv, &i);
        if (r < 0)
            return 2;
        if (r)
            continue;
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--ids")) {
            if (!(ids_s = cli_value(argc, argv, &i)))
                return 2;
        } else if (!strcmp(argv[i], "-o")) {
            if (!(out = cli_value(argc, argv, &i)))
                return 2;
        } else {
            fprintf(stderr, "moetier logits: unknown option '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    if (!mf.dir || !ids_s || !out) {
        fprintf(stderr, "moetier logits: -m, --ids and -o are required\n");
        usage(stderr);
        return 2;
    }
    if (model_flags_check(&mf, "logits"))
        return 2;
    errbuf e;
    if (cli_check_output("-o", out, &mf, &e))
        return cli_fail(&e);
    cli_note_file(&mf, "-o", out);
    int *ids, T;
    if (cli_parse_ids(ids_s, &ids, &T))
        return 2;
    if (mf.ctx == 0)
        mf.ctx = T;
    cli_model m;
    if (cli_model_open(&m, &mf, &e)) {
        free(ids);
        return cli_fail(&e);
    }
    size_t n = (size_t)T * (size_t)m.mw.cfg.vocab_size;
    float *logits = malloc(n * sizeof *logits);
    int rc = 1;
    if (!logits)
        err_set(&e, "out of memory for %d x %d logits", T, m.mw.cfg.vocab_size);
    else if (engine_forward(&m.en, ids, T, logits, 1, &e) == 0 &&
             file_write_atomic(out, logits, n * sizeof *logits, &e) == 0)
        rc = 0;
    if (rc)
        cli_fail(&e);
    free(logits);
    free(ids);
    if (cli_model_close(&m) && rc == 0)
        rc = 1;     /* the --trace file could not be written */
    return rc;
}
