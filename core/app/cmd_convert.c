/* cmd_convert: `moetier convert -m DIR [-o STORE] [--check] [--force] [--file-gb N]`.
 * Builds (or completes, or verifies) the expert store of a checkpoint. */
#include <stdlib.h>
#include <string.h>

#include "cli_common.h"
#include "commands.h"
#include "tiers/store_source.h"
#include "tiers/store_writer.h"

/* --check: every blob against its checksum; and when the checkpoint's files
 * moved after the store was built (or the store predates the record of their
 * times), every expert of the checkpoint against the store's checksums, with
 * the new times recorded when all agree (tiers/store_source.h). */
static int check_store(const char *out, const model_weights *mw, io_mode mode)
{
    store st;
    errbuf e;
    if (store_open(&st, out, mw, &e))
        return cli_fail(&e);
    nvme_options io;
    nvme_options_default(&io);
    io.mode = mode;
    io.log = stderr;
    uint64_t bad = 0, differ = 0;
    int rc = 0;
    if (store_check(&st, &io, stderr, &bad, &e)) {
        rc = cli_fail(&e);
    } else if (bad) {
        fprintf(stderr, "moetier: %llu of %d blobs in %s fail their checksum\n", (unsigned long long)bad,
                st.n_blobs, out);
        rc = 1;
    } else {
        fprintf(stderr, "moetier: all %d blobs in %s match their checksums\n", st.n_blobs, out);
        if (!st.source_times || st.n_changed_sources) {
            fprintf(stderr, "moetier: %s: comparing every expert of %s with the store\n",
                    st.source_times ? "the checkpoint's files changed after the store was built"
                                    : "the store has no record of the checkpoint's file times",
                    mw->ckpt.dir);
            /* the times the comparison vouches for are those of the files
             * as mapped: a shard written to, or replaced, since must not look
             * compared */
            cJSON *before = store_source_files_json(mw, &e);
            if (!before || store_source_check(&st, mw, stderr, &differ, &e)) {
                rc = cli_fail(&e);
            } else if (differ) {
                fprintf(stderr, "moetier: %llu of %d experts of %s differ from the store's, which holds "
                        "them as they were: rebuild it with moetier convert -m %s -o %s --force\n",
                        (unsigned long long)differ, st.n_blobs, mw->ckpt.dir, mw->ckpt.dir, out);
                rc = 1;
            } else if (store_source_files_moved(mw)) {
                fprintf(stderr, "moetier: files of %s changed during the comparison: nothing is "
                        "recorded; run --check again when they stay as they are\n", mw->ckpt.dir);
                rc = 1;
            } else if (store_source_record(&st, before, &e)) {
                fprintf(stderr, "moetier: every expert of %s is the store's, but the times of its "
                        "files could not be recorded (%s), so runs keep warning\n", mw->ckpt.dir, e.msg);
                rc = 1;
            } else {
                fprintf(stderr, "moetier: every expert of %s is the store's; the times of its files "
                        "are recorded\n", mw->ckpt.dir);
            }
            cJSON_Delete(before);
        }
    }
    store_close(&st);
    return rc;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: moetier convert -m DIR [-o STORE] [--check] [--force] [--file-gb N]\n"
               "  Repacks every routed expert of the checkpoint into the expert store, one\n"
               "  checksummed 4 KiB-aligned blob per expert, bit-exact. An interrupted\n"
               "  conversion resumes where it stopped when run again.\n"
               "  -m DIR        checkpoint directory\n"
               "  -o STORE      store directory (default DIR/" DEFAULT_STORE_NAME ")\n"
               "  --check       verify every blob's checksum of an existing store; when the\n"
               "                checkpoint's files changed after it was built, also compare\n"
               "                every expert of the checkpoint with it\n"
               "  --force       rebuild even a complete store; replace another checkpoint's\n"
               "                store or interrupted conversion\n"
               "  --file-gb N   largest data file in GB (default 64 GiB: 68.7 GB; an\n"
               "                interrupted conversion goes on with its own)\n"
               "  --io MODE     reads for --check: auto, uring or pread\n");
}

int cmd_convert(int argc, char **argv)
{
    const char *dir = NULL, *out = NULL;
    int check = 0, force = 0;
    double file_gb = 0;
    tier_flags tf = {0};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        if (!strcmp(a, "-m") || !strcmp(a, "--model")) {
            if (!(v = cli_value(argc, argv, &i)))
                return 2;
            dir = v;
        } else if (!strcmp(a, "-o") || !strcmp(a, "--output")) {
            if (!(v = cli_value(argc, argv, &i)))
                return 2;
            out = v;
        } else if (!strcmp(a, "--check")) {
            check = 1;
        } else if (!strcmp(a, "--force")) {
            force = 1;
        } else if (!strcmp(a, "--file-gb")) {
            float x;
            if (!(v = cli_value(argc, argv, &i)) || cli_float(a, v, &x))
                return 2;
            if (!(x > 0 && x <= 1e9)) {
                fprintf(stderr, "moetier convert: --file-gb must be positive (at most 1e9)\n");
                return 2;
            }
            file_gb = x;
        } else if (!strcmp(a, "--io")) {
            int r = tier_flags_parse(&tf, argc, argv, &i);
            if (r < 0)
                return 2;
        } else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "moetier convert: unknown option '%s'\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (!dir) {
        fprintf(stderr, "moetier convert: -m DIR is required\n");
        usage(stderr);
        return 2;
    }
    /* an option the chosen work has no use for would be silently ignored */
    const char *idle = check && force ? "--force" : check && file_gb ? "--file-gb"
                     : !check && tf.io != IO_AUTO ? "--io" : NULL;
    if (idle) {
        fprintf(stderr, "moetier convert: %s goes %s --check\n", idle, check ? "without" : "with");
        return 2;
    }
    char def[4096];
    if (!out) {
        snprintf(def, sizeof def, "%s/%s", dir, DEFAULT_STORE_NAME);
        out = def;
    }
    errbuf e;
    model_weights mw;
    if (model_weights_open(&mw, dir, &e))
        return cli_fail(&e);
    int rc = 0;
    if (check) {
        rc = check_store(out, &mw, tf.io);
    } else {
        /* without --file-gb, the default (0); any size below one blob means one
         * blob per file (so 1, not 0) */
        uint64_t file_bytes = file_gb == 0 ? 0 : file_gb * 1e9 < 1 ? 1 : (uint64_t)(file_gb * 1e9);
        convert_options o = {.out_dir = out, .force = force, .log = stderr,
                             .max_file_bytes = file_bytes};
        const char *stop = getenv("MOETIER_CONVERT_STOP_AFTER");
        o.stop_after = stop ? atol(stop) : 0;
        if (store_convert(&mw, &o, &e))
            rc = cli_fail(&e);
    }
    model_weights_close(&mw);
    return rc;
}
