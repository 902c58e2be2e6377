/* store_read_rate: see store_read_rate.h. */
#include "store_read_rate.h"

#include <stdlib.h>
#include <string.h>

#include "core/base/progress.h"

double store_read_gbps(const store *st, io_mode io, int batch, errbuf *e)
{
    nvme_options o;
    nvme_options_default(&o);
    o.mode = io;
    nvme_tier *nt;
    if (nvme_tier_open(&nt, st, &o, e))
        return -1;
    uint64_t sb = st->layout.slot_bytes;
    uint8_t *buf = aligned_alloc(STORE_ALIGN, (size_t)batch * sb);
    nvme_read *rd = calloc((size_t)batch, sizeof *rd);
    double gbps = -1;
    if (!buf || !rd) {
        err_set(e, "out of memory for %d expert reads", batch);
        goto done;
    }
    uint64_t bytes = 0, next = 0, n_keys = (uint64_t)st->n_layers * (uint64_t)st->n_experts;
    double t0 = now_seconds();
    int failed = 0;
    for (uint64_t done_blobs = 0; !failed && done_blobs < (uint64_t)st->n_blobs &&
                                  (now_seconds() - t0 < 1.0 || bytes == 0);) {
        int n = 0;
        /* a fixed stride through the keys visits the blobs in a scattered order
         * (every key when n_keys is not a multiple of the prime stride) */
        for (uint64_t tries = 0; n < batch && done_blobs < (uint64_t)st->n_blobs &&
                                 tries < n_keys; tries++) {
            next = (next + 7919) % n_keys;
            const store_blob *b = store_blob_at(st, (int)(next / (uint64_t)st->n_experts),
                                                (int)(next % (uint64_t)st->n_experts));
            if (b->file == UINT32_MAX)
                continue;
            memset(&rd[n], 0, sizeof rd[n]);
            rd[n].blob = b;
            rd[n].dst = buf + (size_t)n * sb;
            nvme_tier_submit(nt, &rd[n]);
            n++;
            done_blobs++;
        }
        if (!n)
            break;  /* the stride found no blob */
        nvme_tier_flush(nt);
        for (int i = 0; i < n; i++)
            if (nvme_tier_wait(nt, &rd[i], e))
                failed = 1;
            else
                bytes += sb;
    }
    if (!failed)
        gbps = (double)bytes / (now_seconds() - t0) / 1e9;
done:
    nvme_tier_close_and_free(nt, buf);
    free(rd);
    return gbps;
}
