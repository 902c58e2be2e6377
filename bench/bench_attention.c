/* bench_attention: the CPU attention (cpu_kernels/mla_cpu.h) at Kimi K2's
 * dimensions (64 heads, 128 + 64 key dims, 128 value dims, 512 latents), a
 * prompt's chunk of 512 queries after 0, 3,584 and 7,680 cached positions in
 * the expanded form (the one their cost picks) and in the absorbed form (the
 * one --batch-invariant takes), and decode queries, on every core: kv_b in
 * float32 for the prompts, and for decode also in the checkpoints' formats
 * (BF16, and FP8 in 128 x 128 blocks), whose W_k a decode query reads; and
 * the long-context cases over a float32 cache, over a bf16 one
 * (--cache-type bf16), whose decode reads half the bytes, and over a q8_0 one
 * (--cache-type q8_0, 28 %), read a block at a time widened; and a decode step
 * checking three guessed tokens (--draft-lookup: 4 queries) at 32 K positions.
 *
 * Yardstick, measured in the same run: a float32 product through the linear
 * kernels of the shape the attention is made of (keys [1024][192] against 64
 * queries). Prints one JSON line per case: the seconds per call, GFLOP/s (the
 * multiply-adds of the causal attention, expansion included, times two), the
 * ratio to the yardstick's GFLOP/s, the scratch the call takes in MB, kv_b's
 * format, the cache's type and the GB/s of its bytes read once per call.
 *
 * Usage: bench_attention [decode]   (decode: the decode cases and the check; the
 * kernels' path from MOETIER_KERNELS as everywhere) */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/engine/kv_cache.h"
#include "core/engine/kv_q8.h"
#include "core/model/dtype.h"
#include "core/model/linear_weight.h"
#include "cpu_kernels/mla_cpu.h"
#include "cpu_kernels/thread_pool.h"

#define HEADS 64
#define NOPE 128
#define ROPE 64
#define VDIM 128
#define LORA 512

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static float *random_floats(size_t n, unsigned seed)
{
    float *p = malloc(n * sizeof *p);
    for (size_t i = 0; p && i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        p[i] = (float)(seed >> 8) / (float)(1u << 24) - 0.5f;
    }
    return p;
}

/* seconds per call, at least 3 calls and half a second */
#define TIME_CALLS(secs, ...)                                                         \
    do {                                                                               \
        double t0_ = now(), t_;                                                        \
        int n_ = 0;                                                                    \
        do {                                                                           \
            __VA_ARGS__;                                                               \
            n_++;                                                                      \
            t_ = now() - t0_;                                                          \
        } while (n_ < 3 || t_ < 0.5);                                                  \
        (secs) = t_ / n_;                                                              \
    } while (0)

static double yardstick_gflops(kernel_path path, thread_pool *pool)
{
    int rows = 1024, cols = NOPE + ROPE, T = 64;
    float *w = random_floats((size_t)rows * cols, 1), *x = random_floats((size_t)T * cols, 2);
    float *y = malloc((size_t)T * rows * sizeof *y);
    linear_weight lw = {.fmt = WF_F32, .rows = rows, .cols = cols, .data = w};
    float *s = malloc(linear_forward_scratch(&lw, T, thread_pool_size(pool)) * sizeof *s + 64);
    double secs = 0;
    if (w && x && y && s)
        TIME_CALLS(secs, linear_forward(path, pool, &lw, x, T, y, s));
    free(w);
    free(x);
    free(y);
    free(s);
    return secs > 0 ? 2.0 * rows * cols * T / secs / 1e9 : 0;
}

/* multiply-adds of the causal attention of T queries after pos0 positions in
 * the form taken: the expanded form's expansion of every position, or the
 * absorbed form's work in the latent space */
static double multiply_adds(int T, int pos0, int absorbed)
{
    double S = pos0 + T, seen = (double)T * pos0 + (double)T * (T + 1) / 2;
    if (absorbed)
        return HEADS * (T * ((double)NOPE * LORA + (double)LORA * VDIM) + seen * (2.0 * LORA + ROPE));
    return HEADS * (S * (NOPE + VDIM) * (double)LORA + seen * (NOPE + ROPE + VDIM));
}

/* kv_b in format fmt (F32, BF16, FP8_BLOCK) from its float32 values; the
 * buffers in *data and *scale, to free */
static linear_weight kv_b_as(weight_format fmt, const float *f, int rows, int cols, void **data,
                             float **scale)
{
    linear_weight w = {.fmt = fmt, .rows = rows, .cols = cols, .data = f};
    size_t n = (size_t)rows * (size_t)cols;
    *data = NULL;
    *scale = NULL;
    if (fmt == WF_BF16) {
        uint16_t *h = malloc(n * sizeof *h);
        for (size_t i = 0; h && i < n; i++)
            h[i] = f32_to_bf16(f[i]);
        w.data = *data = h;
    } else if (fmt == WF_FP8_BLOCK) {
        int B = 128, sr = (rows + B - 1) / B, sc = (cols + B - 1) / B;
        uint8_t *q = malloc(n);
        float *s = malloc((size_t)sr * (size_t)sc * sizeof *s);
        for (int b = 0; q && s && b < sr * sc; b++) {
            int r0 = b / sc * B, c0 = b % sc * B;
            float m = 0;
            for (int r = r0; r < r0 + B && r < rows; r++)
                for (int c = c0; c < c0 + B && c < cols; c++)
                    m = fmaxf(m, fabsf(f[(size_t)r * cols + c]));
            s[b] = m > 0 ? m / 448.0f : 1.0f;
            for (int r = r0; r < r0 + B && r < rows; r++)
                for (int c = c0; c < c0 + B && c < cols; c++)
                    q[(size_t)r * cols + c] = f32_to_e4m3(f[(size_t)r * cols + c] / s[b]);
        }
        w.data = *data = q;
        w.scale = *scale = s;
        w.block_rows = w.block_cols = B;
        w.scale_cols = sc;
    }
    return w;
}

int main(int argc, char **argv)
{
    int decode_only = argc > 1 && !strcmp(argv[1], "decode");
    kernel_path path = kernel_path_default();
    thread_pool *pool;
    errbuf e;
    if (thread_pool_create(&pool, 0, &e)) {
        fprintf(stderr, "bench_attention: %s\n", e.msg);
        return 1;
    }
    int nt = thread_pool_size(pool);
    /* form -1: the one mla_cpu_absorbs picks */
    const struct { int T, pos0, form; weight_format kvb; kv_type cache; } cases[] = {
        {512, 0, -1, WF_F32, KV_F32}, {512, 0, 1, WF_F32, KV_F32}, {512, 3584, -1, WF_F32, KV_F32},
        {512, 3584, 1, WF_F32, KV_F32}, {512, 7680, -1, WF_F32, KV_F32},
        {512, 7680, 1, WF_F32, KV_F32}, {512, 7680, -1, WF_F32, KV_BF16},
        {512, 7680, -1, WF_F32, KV_Q8_0}, {1, 8191, -1, WF_F32, KV_F32},
        {1, 63, -1, WF_BF16, KV_F32}, {1, 1023, -1, WF_BF16, KV_F32},
        {1, 8191, -1, WF_BF16, KV_F32}, {1, 63, -1, WF_FP8_BLOCK, KV_F32},
        {1, 1023, -1, WF_FP8_BLOCK, KV_F32}, {1, 1023, -1, WF_BF16, KV_BF16},
        {1, 8191, -1, WF_BF16, KV_BF16}, {1, 1023, -1, WF_BF16, KV_Q8_0},
        {1, 8191, -1, WF_BF16, KV_Q8_0}, {1, 32767, -1, WF_BF16, KV_F32},
        {1, 32767, -1, WF_BF16, KV_BF16}, {1, 32767, -1, WF_BF16, KV_Q8_0},
        {4, 32764, -1, WF_BF16, KV_F32},
    };
    int maxS = 32768, row = LORA + ROPE;
    size_t qk = NOPE + ROPE, cache_n = (size_t)maxS * (size_t)row, q8_bytes = kv_q8_row_bytes(row);
    float *cache = random_floats(cache_n, 3);
    uint16_t *cache16 = malloc(cache_n * sizeof *cache16);
    char *cache8 = malloc((size_t)maxS * q8_bytes);
    for (size_t i = 0; cache && cache16 && i < cache_n; i++)
        cache16[i] = f32_to_bf16(cache[i]);
    for (int s = 0; cache && cache8 && s < maxS; s++)
        kv_q8_quantize(cache + (size_t)s * (size_t)row, row, cache8 + (size_t)s * q8_bytes);
    float *q = random_floats((size_t)512 * HEADS * qk, 4);
    float *kvb = random_floats((size_t)HEADS * (NOPE + VDIM) * LORA, 5);
    float *out = malloc((size_t)512 * HEADS * VDIM * sizeof *out);
    if (!cache || !cache16 || !cache8 || !q || !kvb || !out) {
        fprintf(stderr, "bench_attention: out of memory\n");
        return 1;
    }
    for (size_t i = 0; i < (size_t)HEADS * (NOPE + VDIM) * LORA; i++)
        kvb[i] *= 0.05f;
    double yard = yardstick_gflops(path, pool);
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        if (decode_only && cases[c].T > 4)
            continue;
        void *kv_data;
        float *kv_scale;
        linear_weight kv_b = kv_b_as(cases[c].kvb, kvb, HEADS * (NOPE + VDIM), LORA, &kv_data, &kv_scale);
        if (cases[c].kvb != WF_F32 && !kv_data) {
            fprintf(stderr, "bench_attention: out of memory\n");
            return 1;
        }
        mla_args a = {.q = q, .T = cases[c].T, .pos0 = cases[c].pos0,
                      .kv_cache = cases[c].cache == KV_F32 ? cache : NULL,
                      .kv_bf16 = cases[c].cache == KV_BF16 ? cache16 : NULL,
                      .kv_q8 = cases[c].cache == KV_Q8_0 ? cache8 : NULL, .kv_b = &kv_b, .H = HEADS,
                      .nope = NOPE, .rope = ROPE, .v = VDIM,
                      .kv_lora = LORA, .scale = 1.0f / sqrtf((float)qk), .out = out};
        int absorbed = cases[c].form < 0 ? mla_cpu_absorbs(&a) : cases[c].form;
        size_t n = mla_cpu_scratch(&a, absorbed, nt);
        float *scratch = malloc(n * sizeof *scratch);
        if (!scratch) {
            fprintf(stderr, "bench_attention: out of memory for %zu MB of scratch\n",
                    n * sizeof(float) >> 20);
            return 1;
        }
        double secs;
        TIME_CALLS(secs, mla_cpu(path, pool, &a, absorbed, scratch));
        double gflops = 2 * multiply_adds(a.T, a.pos0, absorbed) / secs / 1e9;
        double cache_gb =
            (double)(a.pos0 + a.T) * (double)kv_type_row_bytes(cases[c].cache, row) / 1e9;
        printf("{\"bench\":\"attention\",\"path\":\"%s\",\"threads\":%d,\"queries\":%d,"
               "\"cached\":%d,\"form\":\"%s\",\"seconds\":%.6f,\"gflops\":%.1f,"
               "\"yardstick_gflops\":%.1f,\"ratio\":%.2f,\"scratch_mb\":%.1f,\"kv_b\":\"%s\","
               "\"cache\":\"%s\",\"cache_gbps\":%.1f}\n",
               kernel_path_name(path), nt, a.T, a.pos0, absorbed ? "absorbed" : "expanded", secs,
               gflops, yard, gflops / yard, (double)n * sizeof(float) / 1e6,
               weight_format_name(kv_b.fmt), kv_type_name(cases[c].cache), cache_gb / secs);
        fflush(stdout);
        free(scratch);
        free(kv_data);
        free(kv_scale);
    }
    free(cache);
    free(cache16);
    free(cache8);
    free(q);
    free(kvb);
    free(out);
    thread_pool_destroy(pool);
    return 0;
}
