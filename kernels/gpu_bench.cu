/* gpu_bench: see gpu_bench.h. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gpu_ops.cuh"

extern "C" {
#include "kernels/gpu_backend.h"
#include "kernels/gpu_bench.h"
#include "kernels/gpu_layout.h"
}

static double seconds_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* GB/s of copies from src to dst for about `seconds` (at least 3 copies) */
static double copy_rate(void *dst, const void *src, uint64_t bytes, double seconds, int *copies)
{
    GPU_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice));     /* warm-up */
    GPU_CHECK(cudaDeviceSynchronize());
    double t0 = seconds_now(), t;
    int n = 0;
    do {
        GPU_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice));
        n++;
        t = seconds_now() - t0;
    } while (n < 3 || t < seconds);
    GPU_CHECK(cudaDeviceSynchronize());
    t = seconds_now() - t0;
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
        jobs[i] = ffn_job{&x->gate, &x->up, &x->down, x->x, T, x->out, -1, keyed ? 1 + first + i : 0};
    }
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        GPU_CHECK(cudaDeviceSynchronize());
        double t0 = seconds_now();
        b->ops->ffn_batch(b, jobs, n);
        GPU_CHECK(cudaDeviceSynchronize());
        double t = seconds_now() - t0;
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
    if (!gpu_bench_copy(device, per, 0.01, &c, e))
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
    if (!registered)
        return err_set(e, "%s", reg.msg);
    return 0;
}
