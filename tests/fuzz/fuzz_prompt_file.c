/* Fuzz target: opening a prompt file (`run --prompt-cache`, or one of a
 * server's --prompt-cache-dir holding rows from a base on) of arbitrary bytes
 * for a small model (2 layers of 4-float rows, a vocabulary of 16). Each input is
 * tried as it is and with its last 8 bytes made the right checksum of the
 * rest, so the checks behind the checksum are reached too. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>

#include "core/base/fileutil.h"
#include "core/engine/prompt_file.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct seen {
    int base, n, rows;
} seen;

/* each piece inside the layers and positions the header gave */
static void look(void *ctx, int layer, int first, int count, const float *rows)
{
    seen *s = ctx;
    if (layer < 0 || layer >= 2 || first < s->base || count < 1 || first + count > s->n || !rows)
        abort();
    s->rows += count;
}

static void try_open(const uint8_t *data, size_t size)
{
    char path[] = "/tmp/moetier-fuzz-prompt-XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0)
        return;
    int ok = fd_write_all(fd, data, size) == 0;
    close(fd);
    model_config cfg = {.vocab_size = 16};
    engine en = {.cfg = &cfg, .kv = {.n_layers = 2, .row = 4}};
    prompt_identity id = {.model = 1, .compute = "fuzz"};
    prompt_file pf;
    errbuf e;
    if (ok && prompt_file_open(&pf, path, &id, &en, &e) == 0) {
        /* opened: the header agreed, every id is in range */
        if (pf.n < 1 || pf.layers != 2 || pf.row != 4 || pf.base < 0 || pf.base >= pf.n)
            abort();
        for (int i = 0; i < pf.n; i++)
            if (pf.ids[i] < 0 || pf.ids[i] >= 16)
                abort();
        seen s = {.base = pf.base, .n = pf.n};
        if (prompt_file_read_rows(&pf, look, &s, &e) == 0 && s.rows != 2 * (pf.n - pf.base))
            abort();        /* the checksum agreed: every row was handed on, once */
        prompt_file_close(&pf);
    }
    unlink(path);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    try_open(data, size);
    if (size >= 8) {
        uint8_t *fixed = malloc(size);
        if (!fixed)
            return 0;
        memcpy(fixed, data, size);
        uint64_t sum = XXH3_64bits(fixed, size - 8);
        for (int i = 0; i < 8; i++)
            fixed[size - 8 + i] = (uint8_t)(sum >> (8 * i));
        try_open(fixed, size);
        free(fixed);
    }
    return 0;
}
