/* bench_prompt_cache: what saving and restoring a conversation's KV rows costs
 * (the server's prompt cache), at Kimi K2's shape: 61 layers of 576-float
 * latent rows, 140 KB a token. A conversation of N tokens is saved from and
 * restored into a CPU backend's KV cache; the yardstick, measured in the same
 * run, is one memcpy of the same bytes between two host buffers: ratio =
 * memcpy ms / restore ms (1: the restore runs at the machine's copy speed).
 * A save goes to freshly allocated memory, as the server's do (its own
 * allocator: transparent huge pages when the kernel gives them), so it pays
 * the first touch of its pages; save_ms_warm is the same copy into memory
 * touched before.
 * The cost to set against it is prefilling the same tokens again. One JSON
 * line per length. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/base/progress.h"
#include "core/engine/kv_cache.h"
#include "core/engine/prompt_cache.h"
#include "cpu_kernels/cpu_backend.h"

enum { LAYERS = 61, ROW = 576, REPEAT = 5 };

static void touch(float *p, size_t n)
{
    for (size_t i = 0; i < n; i += 1024)
        p[i] = (float)i;
}

int main(void)
{
    const int lengths[] = {1024, 4096, 8192};
    backend be;
    errbuf e;
    if (cpu_backend_create(&be, &e)) {
        fprintf(stderr, "bench_prompt_cache: %s\n", e.msg);
        return 1;
    }
    for (int k = 0; k < 3; k++) {
        int n = lengths[k];
        kv_cache kv;
        if (kv_cache_create(&kv, &be, LAYERS, n, ROW, KV_F32, &e)) {
            fprintf(stderr, "bench_prompt_cache: %s\n", e.msg);
            return 1;
        }
        size_t floats = (size_t)LAYERS * (size_t)n * ROW;
        float *saved = malloc(floats * sizeof *saved), *copy = malloc(floats * sizeof *copy);
        if (!saved || !copy) {
            fprintf(stderr, "bench_prompt_cache: out of memory for %d tokens\n", n);
            return 1;
        }
        for (int l = 0; l < LAYERS; l++)
            touch(kv.layer[l], (size_t)n * ROW);
        touch(saved, floats);
        touch(copy, floats);
        kv_span span = {.rows = saved, .first = 0, .end = n, .stride = n};
        double save = 1e30, warm = 1e30, restore = 1e30, yard = 1e30;
        for (int r = 0; r < REPEAT; r++) {
            double t0 = now_seconds();
            kv_cache_save(&kv, 0, n, saved);
            double t1 = now_seconds();
            kv_cache_load(&kv, 0, n, &span);
            double t2 = now_seconds();
            memcpy(copy, saved, floats * sizeof *copy);
            double t3 = now_seconds();
            warm = t1 - t0 < warm ? t1 - t0 : warm;
            restore = t2 - t1 < restore ? t2 - t1 : restore;
            yard = t3 - t2 < yard ? t3 - t2 : yard;
        }
        /* after the others: giving fresh memory back disturbs what runs next */
        for (int r = 0; r < REPEAT; r++) {
            float *fresh = prompt_cache_rows_alloc(floats * sizeof *fresh);
            if (!fresh) {
                fprintf(stderr, "bench_prompt_cache: out of memory for %d tokens\n", n);
                return 1;
            }
            double f0 = now_seconds();
            kv_cache_save(&kv, 0, n, fresh);
            double f1 = now_seconds();
            save = f1 - f0 < save ? f1 - f0 : save;
            prompt_cache_rows_free(fresh, floats * sizeof *fresh);
        }
        double gb = (double)floats * sizeof(float) / 1e9;
        printf("{\"bench\": \"prompt_cache\", \"tokens\": %d, \"gb\": %.3f, \"save_ms\": %.2f, "
               "\"save_ms_warm\": %.2f, \"restore_ms\": %.2f, \"restore_gb_s\": %.2f, \"memcpy_ms\": %.2f, \"ratio\": %.3f, "
               "\"sink\": %.0f}\n",
               n, gb, save * 1e3, warm * 1e3, restore * 1e3, gb / restore, yard * 1e3, yard / restore,
               (double)copy[floats - 1] + (double)kv.layer[LAYERS - 1][(size_t)n * ROW - 1]);
        fflush(stdout);
        free(saved);
        free(copy);
        kv_cache_destroy(&kv);
    }
    be.ops->destroy(&be);
    return 0;
}
