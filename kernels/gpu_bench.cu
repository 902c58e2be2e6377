/* gpu_bench: see gpu_bench.h. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "gpu_ops.cuh"

extern "C" {
#include "core/base/progress.h"
#include "core/engine/kv_q8.h"
#include "kernels/gpu_backend.h"
#include "kernels/gpu_bench.h"
#include "kernels/gpu_layout.h"
}

/* GB/s of copies from src to dst for about `seconds` (at least 3 copies) */
static double copy_rate(void *dst, const void *src, uint64_t bytes, double seconds, int *copies)
{
    GPU_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice));     /* warm-up */
    GPU_CHECK(cudaDeviceSynchronize());
    double t0 = now_seconds(), t;
    int n = 0;
    do {
        GPU_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice));
        n++;
        t = now_seconds() - t0;
    } while (n < 3 || t < seconds);
    GPU_CHECK(cudaDeviceSynchronize());
    t = now_seconds() - t0;
    *copies = n;
    return (double)bytes * n / t / 1e9;
}

extern "C" int gpu_bench_copy(int device, uint64_t bytes, double seconds, gpu_copy_result *r, errbuf *e)
{
    memset(r, 0, sizeof *r);
    r->bytes = bytes;
    cudaError_t err = cudaSetDevice(device);
    void *dev = NULL, *pinned = NULL, *pageable = NULL;
    if (err == cudaSuccess)
        err = cudaMalloc(&dev, bytes);
    if (err == cudaSuccess)
        err = cudaMallocHost(&pinned, bytes);
    if (err != cudaSuccess) {
        cudaGetLastError();
        if (dev)
            cudaFree(dev);
        return err_set(e, "cannot set up a copy of %.1f MB on device %d: %s", bytes / 1e6, device,
                       cudaGetErrorString(err));
    }
    pageable = malloc(bytes);
    if (!pageable) {
        cudaFree(dev);
        cudaFreeHost(pinned);
        return err_set(e, "out of memory for %.1f MB of host memory", bytes / 1e6);
    }
    memset(pinned, 0x5a, bytes);    /* pages present: the copies measure the bus, not faults */
    memset(pageable, 0x5a, bytes);
    int n;
    r->pinned_gbps = copy_rate(dev, pinned, bytes, seconds, &n);
    r->copies = n;
    r->pageable_gbps = copy_rate(dev, pageable, bytes, seconds, &n);
    free(pageable);
    cudaFreeHost(pinned);
    cudaFree(dev);
    return 0;
}

/* one random INT4 matrix at p (data, then its bf16 scales), advancing p */
static linear_weight int4_matrix(int rows, int cols, char **p, uint32_t *seed)
{
    linear_weight w = {};
    w.fmt = WF_INT4_GROUP;
    w.rows = rows;
    w.cols = cols;
    w.group_size = 32;
    w.row_words = cols / 8;
    w.scale_cols = cols / 32;
    uint32_t *data = (uint32_t *)*p;
    size_t words = (size_t)rows * (size_t)w.row_words;
    for (size_t i = 0; i < words; i++) {
        *seed = *seed * 1664525u + 1013904223u;
        data[i] = *seed;
    }
    uint16_t *scale = (uint16_t *)(*p + gpu_align(words * 4));
    for (size_t i = 0; i < (size_t)rows * (size_t)w.scale_cols; i++)
        scale[i] = 0x3c00;      /* bf16 2^-7 */
    w.data = data;
    w.scale = scale;
    *p += gpu_align(words * 4) + gpu_align((size_t)rows * (size_t)w.scale_cols * 2);
    return w;
}

struct bench_expert {
    linear_weight gate, up, down;
    float *x, *out;     /* device */
};

/* the best of reps runs of the batch, to the end of the device's work */
static double time_batch(backend *b, const bench_expert *ex, int first, int n, int T, int keyed,
                         int reps)
{
    ffn_job jobs[256];
    for (int i = 0; i < n; i++) {
        const bench_expert *x = &ex[first + i];
        jobs[i] = ffn_job{&x->gate, &x->up, &x->down, x->x, T, x->out, -1,
                          keyed ? 1 + first + i : 0, 0};
    }
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        GPU_CHECK(cudaDeviceSynchronize());
        double t0 = now_seconds();
        b->ops->ffn_batch(b, jobs, n);
        GPU_CHECK(cudaDeviceSynchronize());
        double t = now_seconds() - t0;
        best = t < best ? t : best;
    }
    return best;
}

extern "C" int gpu_bench_overlap(int device, int hidden, int inter, int gpu_experts, int cpu_experts,
                                 int threads, int reps, gpu_overlap_result *r, errbuf *e)
{
    memset(r, 0, sizeof *r);
    int K = gpu_experts, M = cpu_experts, n = K + M;
    if (hidden <= 0 || inter <= 0 || hidden % 32 || inter % 32 || K < 1 || M < 1 || n > 256 || reps < 1)
        return err_set(e, "overlap benchmark: the shape must be multiples of 32 and the experts "
                       "1 + 1 to 256 in all (got %dx%d, %d + %d)", hidden, inter, K, M);
    /* one expert's layout, then all of them in one host allocation */
    linear_weight g = {}, d = {};
    g.fmt = d.fmt = WF_INT4_GROUP;
    g.rows = inter, g.cols = hidden, d.rows = hidden, d.cols = inter;
    g.group_size = d.group_size = 32;
    g.row_words = hidden / 8, d.row_words = inter / 8;
    g.scale_cols = hidden / 32, d.scale_cols = inter / 32;
    uint64_t per = gpu_expert_slot_bytes(&g, &g, &d);
    char *host = (char *)aligned_alloc(4096, (size_t)((per * n + 4095) / 4096 * 4096));
    if (!host)
        return err_set(e, "out of memory for %d experts of %.1f MB", n, per / 1e6);
    gpu_options o = {};
    o.device = device;
    o.expert_slot_bytes = per;
    o.expert_cache_bytes = per * (uint64_t)K;
    o.n_expert_keys = n;
    o.cpu_tokens = 1;       /* the fixed rule: one-token misses on the CPU, none promoted */
    o.cpu_threads = threads;
    backend b;
    if (gpu_backend_create(&b, &o, e)) {
        free(host);
        return -1;
    }
    errbuf reg;
    int registered = !gpu_backend_register_host(&b, host, per * n, &reg);
    bench_expert *ex = (bench_expert *)calloc((size_t)n, sizeof *ex);
    uint32_t seed = 12345;
    char *p = host;
    for (int i = 0; i < n; i++) {
        ex[i].gate = int4_matrix(inter, hidden, &p, &seed);
        ex[i].up = int4_matrix(inter, hidden, &p, &seed);
        ex[i].down = int4_matrix(hidden, inter, &p, &seed);
        ex[i].x = b.ops->alloc(&b, 2 * (size_t)hidden);
        ex[i].out = b.ops->alloc(&b, 2 * (size_t)hidden);
        if (!ex[i].x || !ex[i].out) {
            b.ops->destroy(&b);
            free(ex);
            free(host);
            return err_set(e, "out of GPU memory for the benchmark's activations");
        }
        float xs[64];
        for (int k = 0; k < 64; k++)
            xs[k] = (float)(k % 7 - 3) * 0.25f;
        for (int c = 0; c < 2 * hidden; c += 64)
            b.ops->from_host(&b, ex[i].x + c, xs, (size_t)(2 * hidden - c < 64 ? 2 * hidden - c : 64));
    }
    time_batch(&b, ex, 0, K, 2, 1, 1);     /* two tokens: copied into the cache, not the CPU's */
    r->gpu_s = time_batch(&b, ex, 0, K, 1, 1, reps);
    r->cpu_s = time_batch(&b, ex, K, M, 1, 1, reps);
    r->both_s = time_batch(&b, ex, 0, n, 1, 1, reps);
    r->copy_s = time_batch(&b, ex, K, M, 2, 0, reps);      /* unkeyed: copied every time */
    double shorter = r->gpu_s < r->cpu_s ? r->gpu_s : r->cpu_s;
    r->overlap = (r->gpu_s + r->cpu_s - r->both_s) / shorter;
    r->blob_gbps = (double)per * M / r->copy_s / 1e9;
    gpu_copy_result c;
    int yardstick_failed = gpu_bench_copy(device, per, 0.01, &c, e);
    if (!yardstick_failed)
        r->pinned_gbps = c.pinned_gbps;
    r->hidden = hidden;
    r->inter = inter;
    r->gpu_experts = K;
    r->cpu_experts = M;
    r->expert_bytes = per;
    r->threads = threads;
    for (int i = 0; i < n; i++) {
        b.ops->release(&b, ex[i].x);
        b.ops->release(&b, ex[i].out);
    }
    b.ops->destroy(&b);     /* unregisters the host memory */
    free(ex);
    free(host);
    if (yardstick_failed)     /* a ratio against nothing would print inf */
        return err_prefix(e, "the plain pinned copy the blob copies are compared with: ");
    if (!registered)
        return err_set(e, "%s", reg.msg);
    return 0;
}

/* ---- the linear kernel against HBM bandwidth ---- */

__device__ __forceinline__ uint32_t bench_hash(size_t i, uint32_t seed)
{
    uint32_t h = (uint32_t)i * 2654435761u ^ seed;
    h ^= h >> 15;
    h *= 2246822519u;
    return h ^ (h >> 13);
}

__global__ void k_fill_random(uint32_t *p, size_t words, uint32_t seed)
{
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < words)
        p[i] = bench_hash(i, seed);
}

/* floats in [-1, 1) */
__global__ void k_fill_floats(float *p, size_t n, uint32_t seed)
{
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n)
        p[i] = (float)(bench_hash(i, seed) >> 8) * (1.0f / 8388608.0f) - 1.0f;
}

/* BF16 values in [-1/16, 1/16) */
__global__ void k_fill_bf16(uint16_t *p, size_t n, uint32_t seed)
{
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n)
        p[i] = (uint16_t)(__float_as_uint(((float)(bench_hash(i, seed) >> 8) * (1.0f / 8388608.0f) -
                                           1.0f) * 0.0625f) >> 16);
}

/* one matrix at base (NULL: its sizes only): data, then scales, each part
 * aligned; *bytes: both parts, *scale_bytes: the scales' */
static gpu_weight bench_weight(int fmt, int rows, int cols, char *base, uint64_t *bytes,
                               uint64_t *scale_bytes)
{
    gpu_weight w = {};
    w.fmt = fmt;
    w.rows = rows;
    w.cols = cols;
    uint64_t data = (uint64_t)rows * (uint64_t)cols * (fmt == WF_F32 ? 4 : fmt == WF_FP8_BLOCK ? 1 : 2),
             scale = 0;
    if (fmt == WF_FP8_BLOCK) {
        w.block_rows = w.block_cols = 128;
        w.scale_cols = (cols + 127) / 128;
        scale = (uint64_t)((rows + 127) / 128) * (uint64_t)w.scale_cols * 4;
    } else if (fmt == WF_INT4_GROUP) {
        w.group_size = 32;
        w.row_words = (cols + 7) / 8;
        w.scale_cols = (cols + 31) / 32;
        data = (uint64_t)rows * (uint64_t)w.row_words * 4;
        scale = (uint64_t)rows * (uint64_t)w.scale_cols * 2;
    }
    w.data = base;
    w.scale = scale && base ? base + gpu_align(data) : NULL;
    *bytes = gpu_align(data) + gpu_align(scale);
    *scale_bytes = scale;
    return w;
}

/* device seconds from event a (recorded on stream 0) to now, recorded on b */
static double seconds_since(cudaEvent_t a, cudaEvent_t b)
{
    GPU_CHECK(cudaEventRecord(b, 0));
    GPU_CHECK(cudaEventSynchronize(b));
    float ms = 0;
    GPU_CHECK(cudaEventElapsedTime(&ms, a, b));
    return ms * 1e-3;
}

/* The yardstick of the kernels' benchmarks: half of `bytes` at set copied
 * onto the other half, bytes read and written per second (the best of reps) */
static double hbm_gbps(char *set, uint64_t bytes, int reps, cudaEvent_t a, cudaEvent_t b)
{
    uint64_t half = bytes / 2 / 256 * 256;
    double copy = 1e30;
    if (!half)
        return 0;
    for (int k = 0; k < reps + 1; k++) {
        GPU_CHECK(cudaEventRecord(a, 0));
        GPU_CHECK(cudaMemcpy(set + half, set, half, cudaMemcpyDeviceToDevice));
        double t = seconds_since(a, b);
        if (k && t < copy)      /* the first is a warm-up */
            copy = t;
    }
    return 2.0 * (double)half / copy / 1e9;
}

/* seconds of one pass of the kernel over every matrix (device time) */
static double time_linear_pass(const gpu_lin *mats, int n, cudaEvent_t a, cudaEvent_t b)
{
    GPU_CHECK(cudaEventRecord(a, 0));
    for (int i = 0; i < n; i++)
        gpu_linear(&mats[i], 0);
    return seconds_since(a, b);
}

static void set_variant(gpu_lin *mats, int n, int v)
{
    for (int i = 0; i < n; i++) {
        mats[i].plain = v == 1;
        mats[i].one_row = v == 2;
    }
}

extern "C" int gpu_bench_linear(int device, int fmt, int rows, int cols, int tokens,
                                uint64_t set_bytes, int reps, gpu_linear_result *r, errbuf *e)
{
    memset(r, 0, sizeof *r);
    if (fmt < WF_F32 || fmt > WF_INT4_GROUP || rows < 1 || cols < 1 || tokens < 1 || reps < 1)
        return err_set(e, "linear benchmark: format %d, %d x %d, %d tokens, %d runs: out of range",
                       fmt, rows, cols, tokens, reps);
    uint64_t per, scale_bytes;
    bench_weight(fmt, rows, cols, NULL, &per, &scale_bytes);
    int n = (int)(set_bytes / per < 1 ? 1 : set_bytes / per > 100000 ? 100000 : set_bytes / per);
    cudaError_t err = cudaSetDevice(device);
    char *set = NULL;
    float *x = NULL, *y = NULL, *y2 = NULL;
    size_t xn = (size_t)tokens * (size_t)cols, yn = (size_t)tokens * (size_t)rows;
    if (err == cudaSuccess)
        err = cudaMalloc(&set, per * (uint64_t)n);
    if (err == cudaSuccess)
        err = cudaMalloc(&x, xn * sizeof(float));
    if (err == cudaSuccess)
        err = cudaMalloc(&y, yn * sizeof(float));
    if (err == cudaSuccess)
        err = cudaMalloc(&y2, yn * sizeof(float));
    gpu_lin *mats = (gpu_lin *)calloc((size_t)n, sizeof *mats);
    float *h1 = (float *)malloc(yn * sizeof(float)), *h2 = (float *)malloc(yn * sizeof(float));
    cudaEvent_t a = NULL, b = NULL;
    if (err == cudaSuccess)
        err = cudaEventCreate(&a);
    if (err == cudaSuccess)
        err = cudaEventCreate(&b);
    int rc = 0;
    if (err != cudaSuccess || !mats || !h1 || !h2) {
        cudaGetLastError();
        rc = err_set(e, "cannot set up %d matrices of %.1f MB on device %d: %s", n, per / 1e6, device,
                     err != cudaSuccess ? cudaGetErrorString(err) : "out of host memory");
        goto done;
    }
    {
        /* random codes (any bits: the time does not depend on them), scales
         * and activations of 0x3c bytes (small normal numbers) */
        size_t words = (size_t)(per * (uint64_t)n / 4);
        GPU_LAUNCH(k_fill_random, (unsigned)((words + 255) / 256), 256, 0, 0)((uint32_t *)set, words, 7u);
        GPU_LAUNCHED("fill");
        GPU_CHECK(cudaMemset(x, 0x3c, xn * sizeof(float)));
        for (int i = 0; i < n; i++) {
            uint64_t bytes;
            gpu_weight w = bench_weight(fmt, rows, cols, set + per * (uint64_t)i, &bytes, &scale_bytes);
            if (w.scale)
                GPU_CHECK(cudaMemset((void *)w.scale, 0x3c, scale_bytes));
            gpu_lin &m = mats[i];
            m.w = w;
            m.nrows = rows;
            m.groups = 1;
            m.x = x;
            m.xs = (size_t)cols;
            m.y = y;
            m.ys = (size_t)rows;
            m.T = tokens;
        }
        /* variant v: 0 the engine's kernel, 1 without reading ahead, 2 a warp per row */
        for (int v = 0; v < 3; v++) {       /* warm-up */
            set_variant(mats, n, v);
            time_linear_pass(mats, n, a, b);
        }
        double best[3] = {1e30, 1e30, 1e30};
        for (int k = 0; k < 3 * reps; k++) {
            set_variant(mats, n, k % 3);
            double t = time_linear_pass(mats, n, a, b);
            best[k % 3] = t < best[k % 3] ? t : best[k % 3];
        }
        /* the last matrix each way, into separate outputs */
        r->same_bits = 1;
        for (int v = 0; v < 3; v++) {
            gpu_lin last = mats[n - 1];
            set_variant(&last, 1, v);
            last.y = v ? y2 : y;
            gpu_linear(&last, 0);
            GPU_CHECK(cudaMemcpy(v ? h2 : h1, last.y, yn * sizeof(float), cudaMemcpyDeviceToHost));
            r->same_bits &= !v || !memcmp(h1, h2, yn * sizeof(float));
        }
        r->hbm_gbps = hbm_gbps(set, per * (uint64_t)n, reps, a, b);
        r->fmt = fmt;
        r->rows = rows;
        r->cols = cols;
        r->tokens = tokens;
        r->matrices = n;
        r->weight_bytes = per * (uint64_t)n;
        r->ahead_s = best[0];
        r->plain_s = best[1];
        r->one_row_s = best[2];
        r->ahead_gbps = (double)r->weight_bytes / best[0] / 1e9;
        r->plain_gbps = (double)r->weight_bytes / best[1] / 1e9;
        r->one_row_gbps = (double)r->weight_bytes / best[2] / 1e9;
    }
done:
    if (a)
        cudaEventDestroy(a);
    if (b)
        cudaEventDestroy(b);
    free(h1);
    free(h2);
    free(mats);
    cudaFree(y2);
    cudaFree(y);
    cudaFree(x);
    cudaFree(set);
    return rc;
}

/* seconds of one pass of the attention over every layer's cache */
static double time_attention_pass(gpu_mla_args *layers, int n, float *part, cudaEvent_t a,
                                  cudaEvent_t b)
{
    GPU_CHECK(cudaEventRecord(a, 0));
    for (int i = 0; i < n; i++) {
        layers[i].part = part;
        gpu_mla(&layers[i], 0);
    }
    return seconds_since(a, b);
}

/* Kimi K2's attention (64 heads, latent 512, rope 64, nope and v 128) of
 * `tokens` tokens at the end of a context; no buffers yet */
static gpu_mla_args k2_attention(int context, int tokens)
{
    gpu_mla_args one = {};
    one.T = tokens;
    one.pos0 = context - tokens;
    one.H = 64;
    one.nope = 128;
    one.rope = 64;
    one.v = 128;
    one.kv_lora = 512;
    one.scale = 0.1f;
    return one;
}

extern "C" int gpu_bench_attention(int device, int context, int tokens, uint64_t set_bytes,
                                   int reps, kv_type cache_type, gpu_attention_result *r,
                                   errbuf *e)
{
    memset(r, 0, sizeof *r);
    gpu_mla_args one = k2_attention(context, tokens);
    const int H = one.H, C = one.kv_lora, R = one.rope, nope = one.nope, v = one.v;
    if (context < 1 || tokens < 1 || tokens > context || reps < 1)
        return err_set(e, "attention benchmark: context %d, %d tokens, %d runs: out of range",
                       context, tokens, reps);
    uint64_t cache = (uint64_t)context * (uint64_t)kv_type_row_bytes(cache_type, C + R);
    int n = (int)(set_bytes / cache < 1 ? 1 : set_bytes / cache > 61 ? 61 : set_bytes / cache);
    uint64_t kvb_bytes = (uint64_t)H * (uint64_t)(nope + v) * (uint64_t)C * 2;
    size_t qn = (size_t)tokens * H * (nope + R), on = (size_t)tokens * H * C;
    size_t outn = (size_t)tokens * H * v;
    size_t part_n = (size_t)tokens * H * (size_t)((context + 255) / 256) * (size_t)(C + 2);
    cudaError_t err = cudaSetDevice(device);
    char *set = NULL, *kvb = NULL;
    float *q = NULL, *qa = NULL, *ol = NULL, *out = NULL, *part = NULL;
    gpu_mla_args *layers = (gpu_mla_args *)calloc((size_t)n, sizeof *layers);
    float *h1 = (float *)malloc(outn * sizeof(float)), *h2 = (float *)malloc(outn * sizeof(float));
    cudaEvent_t a = NULL, b = NULL;
    cudaDeviceProp prop;
    if (err == cudaSuccess)
        err = cudaGetDeviceProperties(&prop, device);
    if (err == cudaSuccess)
        err = cudaMalloc(&set, cache * (uint64_t)n);
    if (err == cudaSuccess)
        err = cudaMalloc(&kvb, kvb_bytes);
    if (err == cudaSuccess)
        err = cudaMalloc(&q, qn * sizeof(float));
    if (err == cudaSuccess)
        err = cudaMalloc(&qa, on * sizeof(float));
    if (err == cudaSuccess)
        err = cudaMalloc(&ol, on * sizeof(float));
    if (err == cudaSuccess)
        err = cudaMalloc(&out, outn * sizeof(float));
    if (err == cudaSuccess)
        err = cudaMalloc(&part, part_n * sizeof(float));
    if (err == cudaSuccess)
        err = cudaEventCreate(&a);
    if (err == cudaSuccess)
        err = cudaEventCreate(&b);
    int rc = 0;
    if (err != cudaSuccess || !layers || !h1 || !h2) {
        cudaGetLastError();
        rc = err_set(e, "cannot set up %d layers of %.1f MB of attention cache on device %d: %s",
                     n, cache / 1e6, device,
                     err != cudaSuccess ? cudaGetErrorString(err) : "out of host memory");
        goto done;
    }
    {
        if (cache_type == KV_BF16) {
            size_t values = (size_t)(cache * (uint64_t)n / 2);
            GPU_LAUNCH(k_fill_bf16, (unsigned)((values + 255) / 256), 256, 0, 0)((uint16_t *)set,
                                                                                 values, 5u);
        } else if (cache_type == KV_Q8_0) {
            /* random rows quantized as the backend writes them, a layer at a time */
            size_t values = (size_t)context * (size_t)(C + R);
            float *rows = NULL;
            GPU_CHECK(cudaMalloc(&rows, values * sizeof(float)));
            for (int i = 0; i < n; i++) {
                GPU_LAUNCH(k_fill_floats, (unsigned)((values + 255) / 256), 256, 0, 0)(
                    rows, values, 5u + (unsigned)i);
                GPU_LAUNCHED("fill");
                gpu_store_q8_0(set + cache * (uint64_t)i, rows, context, C + R, 0);
            }
            GPU_CHECK(cudaDeviceSynchronize());
            GPU_CHECK(cudaFree(rows));
        } else {
            size_t floats = (size_t)(cache * (uint64_t)n / sizeof(float));
            GPU_LAUNCH(k_fill_floats, (unsigned)((floats + 255) / 256), 256, 0, 0)((float *)set,
                                                                                   floats, 5u);
        }
        GPU_LAUNCHED("fill");
        GPU_LAUNCH(k_fill_floats, (unsigned)((qn + 255) / 256), 256, 0, 0)(q, qn, 9u);
        GPU_LAUNCHED("fill");
        GPU_CHECK(cudaMemset(kvb, 0x3c, kvb_bytes));     /* BF16 0.0115 */
        uint64_t scale_bytes;
        one.kv_b = bench_weight(WF_BF16, H * (nope + v), C, kvb, &kvb_bytes, &scale_bytes);
        one.q = q;
        one.qa = qa;
        one.ol = ol;
        one.out = out;
        for (int i = 0; i < n; i++) {
            layers[i] = one;
            if (cache_type == KV_BF16)
                layers[i].kv_bf16 = (const uint16_t *)(set + cache * (uint64_t)i);
            else if (cache_type == KV_Q8_0)
                layers[i].kv_q8 = set + cache * (uint64_t)i;
            else
                layers[i].kv_cache = (const float *)(set + cache * (uint64_t)i);
            layers[i].q8_row_bytes = kv_q8_row_bytes(C + R);
        }
        /* way 0: a block per token and head group folds every chunk; 1: a block per chunk */
        float *parts[2] = {NULL, part};
        time_attention_pass(layers, n, parts[0], a, b);     /* warm-up */
        time_attention_pass(layers, n, parts[1], a, b);
        double best[2] = {1e30, 1e30};
        for (int k = 0; k < 2 * reps; k++) {
            double t = time_attention_pass(layers, n, parts[k % 2], a, b);
            best[k % 2] = t < best[k % 2] ? t : best[k % 2];
        }
        for (int w = 0; w < 2; w++) {
            gpu_mla_args last = layers[n - 1];
            last.part = parts[w];
            gpu_mla(&last, 0);
            GPU_CHECK(cudaMemcpy(w ? h2 : h1, out, outn * sizeof(float), cudaMemcpyDeviceToHost));
        }
        r->same_bits = !memcmp(h1, h2, outn * sizeof(float));
        r->hbm_gbps = hbm_gbps(set, cache * (uint64_t)n, reps, a, b);
        one.kv_cache = layers[0].kv_cache;
        one.kv_bf16 = layers[0].kv_bf16;
        one.kv_q8 = layers[0].kv_q8;
        r->backend_splits = gpu_mla_split_floats(&one, prop.multiProcessorCount) != 0;
        r->context = context;
        r->tokens = tokens;
        r->layers = n;
        r->cache_bytes = cache;
        r->whole_s = best[0] / n;
        r->split_s = best[1] / n;
        r->whole_gbps = (double)cache / r->whole_s / 1e9;
        r->split_gbps = (double)cache / r->split_s / 1e9;
    }
done:
    if (a)
        cudaEventDestroy(a);
    if (b)
        cudaEventDestroy(b);
    free(h1);
    free(h2);
    free(layers);
    cudaFree(part);
    cudaFree(out);
    cudaFree(ol);
    cudaFree(qa);
    cudaFree(q);
    cudaFree(kvb);
    cudaFree(set);
    return rc;
}

/* seconds of one layer's attention in the absorbed or the expanded form */
static double time_prefill_form(const gpu_mla_args *one, int expanded, float *kvx, float *state,
                                cudaEvent_t a, cudaEvent_t b)
{
    GPU_CHECK(cudaEventRecord(a, 0));
    if (expanded)
        gpu_mla_expanded(one, kvx, state, NULL, 0);
    else
        gpu_mla(one, 0);
    return seconds_since(a, b);
}

extern "C" int gpu_bench_prefill_attention(int device, int context, int tokens, int reps,
                                           gpu_prefill_attention_result *r, errbuf *e)
{
    memset(r, 0, sizeof *r);
    gpu_mla_args one = k2_attention(context, tokens);
    const int H = one.H, C = one.kv_lora, R = one.rope, nope = one.nope, v = one.v;
    if (context < 1 || tokens < 1 || tokens > context || reps < 1)
        return err_set(e, "prefill attention benchmark: context %d, %d tokens, %d runs: out of "
                       "range", context, tokens, reps);
    size_t cache_n = (size_t)context * (C + R), qn = (size_t)tokens * H * (nope + R);
    size_t on = (size_t)tokens * H * C, outn = (size_t)tokens * H * v;
    size_t kvx_n = gpu_mla_expanded_block(&one) * H * (nope + v);
    size_t state_n = (size_t)tokens * H * (2 + v);
    uint64_t kvb_bytes = (uint64_t)H * (uint64_t)(nope + v) * (uint64_t)C * 2;
    float *cache = NULL, *q = NULL, *qa = NULL, *ol = NULL, *out = NULL, *kvx = NULL, *state = NULL;
    char *kvb = NULL;
    float *h1 = (float *)malloc(outn * sizeof(float)), *h2 = (float *)malloc(outn * sizeof(float));
    cudaEvent_t a = NULL, b = NULL;
    cudaError_t err = cudaSetDevice(device);
    float **bufs[] = {&cache, &q, &qa, &ol, &out, &kvx, &state};
    size_t sizes[] = {cache_n, qn, on, on, outn, kvx_n, state_n};
    for (int i = 0; i < 7 && err == cudaSuccess; i++)
        err = cudaMalloc(bufs[i], sizes[i] * sizeof(float));
    if (err == cudaSuccess)
        err = cudaMalloc(&kvb, kvb_bytes);
    if (err == cudaSuccess)
        err = cudaEventCreate(&a);
    if (err == cudaSuccess)
        err = cudaEventCreate(&b);
    int rc = 0;
    if (err != cudaSuccess || !h1 || !h2) {
        cudaGetLastError();
        rc = err_set(e, "cannot set up the prefill attention of %d tokens at %d positions on "
                     "device %d: %s", tokens, context, device,
                     err != cudaSuccess ? cudaGetErrorString(err) : "out of host memory");
        goto done;
    }
    {
        GPU_LAUNCH(k_fill_floats, (unsigned)((cache_n + 255) / 256), 256, 0, 0)(cache, cache_n, 5u);
        GPU_LAUNCHED("fill");
        GPU_LAUNCH(k_fill_floats, (unsigned)((qn + 255) / 256), 256, 0, 0)(q, qn, 9u);
        GPU_LAUNCHED("fill");
        size_t kvb_n = kvb_bytes / 2;
        GPU_LAUNCH(k_fill_bf16, (unsigned)((kvb_n + 255) / 256), 256, 0, 0)((uint16_t *)kvb, kvb_n,
                                                                           13u);
        GPU_LAUNCHED("fill");
        uint64_t scale_bytes;
        one.kv_b = bench_weight(WF_BF16, H * (nope + v), C, kvb, &kvb_bytes, &scale_bytes);
        one.q = q;
        one.qa = qa;
        one.ol = ol;
        one.out = out;
        one.kv_cache = cache;
        double best[2] = {1e30, 1e30};
        for (int k = 0; k < 2 * (reps + 1); k++) {     /* a warm-up run of each first */
            double t = time_prefill_form(&one, k % 2, kvx, state, a, b);
            if (k >= 2)
                best[k % 2] = t < best[k % 2] ? t : best[k % 2];
        }
        for (int x = 0; x < 2; x++) {
            time_prefill_form(&one, x, kvx, state, a, b);
            GPU_CHECK(cudaMemcpy(x ? h2 : h1, out, outn * sizeof(float), cudaMemcpyDeviceToHost));
        }
        double big = 0, diff = 0;
        for (size_t i = 0; i < outn; i++) {
            big = fabs(h1[i]) > big ? fabs(h1[i]) : big;
            double d = fabs((double)h2[i] - (double)h1[i]);
            diff = d > diff || d != d ? d : diff;
        }
        r->rel_diff = big > 0 ? diff / big : diff;
        /* per token and head: scores and sums over its positions; the
         * expanded form also expands every position once per head */
        double pairs = (double)tokens * ((double)one.pos0 + (tokens + 1) / 2.0) * H;
        r->absorbed_macs = pairs * (C + R + C) + (double)tokens * H * nope * C +
                           (double)tokens * H * v * C;
        r->expanded_macs = pairs * (nope + R + v) + (double)context * H * (nope + v) * C;
        r->context = context;
        r->tokens = tokens;
        r->absorbed_s = best[0];
        r->expanded_s = best[1];
        r->absorbed_tmacs = r->absorbed_macs / best[0] / 1e12;
        r->expanded_tmacs = r->expanded_macs / best[1] / 1e12;
    }
done:
    if (a)
        cudaEventDestroy(a);
    if (b)
        cudaEventDestroy(b);
    free(h1);
    free(h2);
    for (int i = 0; i < 7; i++)
        cudaFree(*bufs[i]);
    cudaFree(kvb);
    return rc;
}
