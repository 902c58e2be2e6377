/* Fuzz target: opening an expert store whose index.json or index.bin is
 * arbitrary bytes. The first input byte picks the file (even: index.json, odd:
 * index.bin); the rest replaces it in a copy of a real store of a small
 * synthetic checkpoint, built once per process. store_open must refuse or
 * accept without crashing, and an accepted store must be consistent. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/base/fileutil.h"
#include "core/model/synth.h"
#include "tiers/store_writer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char root[64];
static model_weights mw;
static char *orig_json, *orig_bin;
static size_t orig_json_len, orig_bin_len;
static int ready;

static void cleanup(void)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    if (system(cmd) != 0)
        fprintf(stderr, "fuzz_store_index: could not remove %s\n", root);
}

static int setup(void)
{
    snprintf(root, sizeof root, "/tmp/moetier-fuzz-store-XXXXXX");
    if (!mkdtemp(root))
        return -1;
    atexit(cleanup);
    char model[128], store_dir[128], path[256];
    snprintf(model, sizeof model, "%s/model", root);
    snprintf(store_dir, sizeof store_dir, "%s/store", root);
    synth_options o = synth_options_default();
    o.out_dir = model;
    o.format = SYNTH_INT4;
    o.layers = 2;
    errbuf e;
    convert_options co = {.out_dir = store_dir};
    if (synth_run(&o, &e) || model_weights_open(&mw, model, &e) || store_convert(&mw, &co, &e)) {
        fprintf(stderr, "fuzz_store_index: setup failed: %s\n", e.msg);
        return -1;
    }
    snprintf(path, sizeof path, "%s/%s", store_dir, STORE_INDEX_JSON);
    if (file_read_all(path, &orig_json, &orig_json_len, &e))
        return -1;
    snprintf(path, sizeof path, "%s/%s", store_dir, STORE_INDEX_BIN);
    if (file_read_all(path, &orig_bin, &orig_bin_len, &e))
        return -1;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!ready) {
        if (setup() != 0)
            abort();
        ready = 1;
    }
    if (size == 0)
        return 0;
    char store_dir[128], path[256];
    snprintf(store_dir, sizeof store_dir, "%s/store", root);
    errbuf e;
    int bin = data[0] & 1;
    snprintf(path, sizeof path, "%s/%s", store_dir, STORE_INDEX_JSON);
    file_write_atomic(path, bin ? orig_json : (const char *)data + 1, bin ? orig_json_len : size - 1,
                      &e);
    snprintf(path, sizeof path, "%s/%s", store_dir, STORE_INDEX_BIN);
    file_write_atomic(path, bin ? (const char *)data + 1 : orig_bin, bin ? size - 1 : orig_bin_len,
                      &e);
    store s;
    if (store_open(&s, store_dir, &mw, &e) == 0) {
        /* accepted: every blob must lie inside its file */
        for (int i = 0; i < s.n_layers * s.n_experts; i++) {
            const store_blob *b = &s.blobs[i];
            if (b->file != UINT32_MAX &&
                (b->file >= (uint32_t)s.n_files ||
                 b->offset + s.layout.slot_bytes > s.file_bytes[b->file]))
                abort();
        }
        store_close(&s);
    }
    return 0;
}
