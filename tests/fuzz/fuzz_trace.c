/* Fuzz target: reading a routing trace file of arbitrary bytes (the reader takes
 * a path, so the input goes through a private temporary file). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "prefetch/routing_trace.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[] = "/tmp/moetier-fuzz-trace-XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0)
        return 0;
    FILE *f = fdopen(fd, "wb");
    if (!f) {
        close(fd);
        unlink(path);
        return 0;
    }
    fwrite(data, 1, size, f);
    fclose(f);
    routing_trace t;
    errbuf e;
    if (trace_read(&t, path, &e) == 0) {
        for (uint64_t i = 0; i < t.n; i++)     /* accepted: every id is in range */
            if (t.layer[i] >= t.n_layers)
                abort();
        for (uint64_t i = 0; i < t.n * t.top_k; i++)
            if (t.experts[i] >= t.n_experts || ((t.flags & TRACE_FLAG_TIERS) && t.origin[i] > 3))
                abort();
        if ((t.flags & TRACE_FLAG_PREDICTED) && (t.depth < 1 || t.depth > TRACE_MAX_DEPTH))
            abort();
        trace_free(&t);
    }
    unlink(path);
    return 0;
}
