/* gpu_backend: the operation table on a CUDA device; see gpu_backend.h.
 *
 * Kernels are queued on the legacy default stream, so operations run in the
 * order the engine calls them. The host waits for the device only where it
 * needs a result (the router's logits, the inputs of experts it computes,
 * `to_host`) and at the end of an expert batch (the tiers' bytes); host arrays
 * passed per call (token ids, positions, the dispatch indices and weights) are
 * queued to small device buffers through a pinned ring (upload); the
 * model's weights and tables are copied once and looked up by their host
 * address; routed experts go through the VRAM expert cache (slots in one
 * allocation made at create, an expert_cache with LRU for the bookkeeping) or,
 * without a key or a free slot, through two staging buffers used in turn.
 * Expert copies run on a second, non-blocking stream; each slot and staging
 * buffer has two events: `filled` (its copy is done: kernels wait for it) and
 * `free` (the kernels reading it are done: the next copy into it waits). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpu_mem_guard.cuh"
#include "gpu_ops.cuh"

extern "C" {
#include "core/base/progress.h"
#include "core/engine/kv_q8.h"
#include "cpu_kernels/router_ref.h"
#include "cpu_kernels/side_thread.h"
#include "kernels/gpu_backend.h"
#include "kernels/gpu_bench.h"
#include "kernels/gpu_layout.h"
#include "kernels/gpu_probe.h"
#include "kernels/gpu_twin.h"
#include "kernels/hybrid_plan.h"
#include "tiers/expert_cache.h"
}

void gpu_check(cudaError_t err, const char *what, const char *file, int line)
{
    if (err == cudaSuccess)
        return;
    fprintf(stderr, "moetier: CUDA error at %s:%d (%s): %s\n", file, line, what,
            cudaGetErrorString(err));
    abort();
}

/* MOETIER_CUDA_SYNC=1 waits for every kernel, so a fault names its kernel */
static int sync_each_launch(void)
{
    static int v = -1;
    if (v < 0) {
        const char *s = getenv("MOETIER_CUDA_SYNC");
        v = s && *s && strcmp(s, "0") != 0;
    }
    return v;
}

/* kernels launched by this process (the backend's calls into CUDA come from
 * one thread at a time) */
static uint64_t launches_so_far;

void gpu_after_launch(const char *what, const char *file, int line)
{
    launches_so_far++;
    gpu_check(cudaGetLastError(), what, file, line);
    if (sync_each_launch())
        gpu_check(cudaDeviceSynchronize(), what, file, line);
}

/* ---- state ---- */

/* A model array copied to the device, found by its host address. */
struct resident_entry {
    const void *host;
    void *dev;
    size_t bytes;
    int pooled;         /* in the resident pool (not freed on its own) */
};

enum scratch_id {
    SCR_INDEX, SCR_WEIGHTS, SCR_GATE, SCR_UP, SCR_QA, SCR_OL, SCR_MLA_PART, SCR_LISTS, SCR_KV_WIDE,
    SCR_COUNT
};

/* host memory registered with the device (gpu_backend_register_host) */
struct host_range {
    const char *lo, *hi;
};

struct gpu_state {
    char device[256];
    int ordinal;                /* the CUDA device's number */
    int multiprocessors;
    resident_entry *res;
    size_t res_cap, res_n;
    uint64_t resident_bytes;
    /* the resident pool: one allocation for the model's arrays, taken at create */
    char *res_pool;
    uint64_t res_pool_bytes, res_pool_used;
    void *scr[SCR_COUNT];
    size_t scr_bytes[SCR_COUNT];
    float *host_logits, *host_route;
    size_t host_logits_n, host_route_n;
    /* small uploads: a pinned ring and its next free byte */
    char *ring;
    size_t ring_head;
    /* the VRAM expert cache */
    char *slots;
    uint64_t slot_bytes;
    int n_keys;
    expert_cache cache;
    gpu_cache_stats stats;
    uint64_t launches_before;   /* launches_so_far when it was created */
    /* expert copies: their stream; the staging buffers for experts without a
     * slot; per slot, then per staging buffer, the events */
    cudaStream_t copy_stream;
    char *staging[2];
    uint64_t staging_bytes;
    int staging_next;
    cudaEvent_t *filled, *freed;
    host_range registered[GPU_MAX_REGISTERED];
    int n_registered;
    /* missed experts on the CPU: by the cost model (cpu_auto) or by tokens */
    int cpu_tokens, cpu_auto;
    hybrid_rates rates;
    /* the last batch's experts in VRAM: events around their kernels, the
     * seconds the rates predicted for them (0: none to learn from) */
    cudaEvent_t vram_timer[2];
    double vram_predicted;
    thread_pool *pool;
    side_thread *cpu_side;      /* runs the CPU's experts while this thread feeds the GPU */
    kernel_path path;
    float *host;                /* their x, out and the twin's scratch */
    size_t host_n;
    int host_pinned;
    /* per job of the current batch */
    unsigned char *where;       /* JOB_GPU, JOB_CPU or JOB_DONE */
    unsigned char *place;       /* HYBRID_* */
    hybrid_job *hjobs;
    int *order;
    const ffn_job **vram_jobs;  /* those in VRAM, their slots, views and products */
    int *slot_of_job;
    struct expert_views *views;
    gpu_lin *lists;             /* 3 per job */
    int batch_cap;
    /* scatter_add's plan: per destination row, the call (stamp) that last
     * named it and its place in that call's list; the plan itself */
    uint32_t *row_stamp;
    int *row_slot;
    size_t rows_n;
    uint32_t stamp;
    int *plan;
    size_t plan_n;
};

/* The backend's state, its device made the calling thread's current one: the
 * runtime keeps the current device per thread, and the engine may run on
 * another thread than the one that created the backend (the server's). Every
 * operation calls this before its first call into CUDA. */
static gpu_state *state(backend *b)
{
    gpu_state *st = (gpu_state *)b->impl;
    int current = -1;
    if (cudaGetDevice(&current) != cudaSuccess || current != st->ordinal)
        GPU_CHECK(cudaSetDevice(st->ordinal));
    return st;
}

/* A failed cudaMalloc: "out of GPU memory" only when that is what it says. An
 * earlier kernel's fault (an illegal address, say) is sticky and comes back
 * from the next call, often an allocation; it is reported as itself. */
static void device_alloc_failed(cudaError_t err, size_t bytes, const char *what, const gpu_state *st)
{
    if (err != cudaErrorMemoryAllocation)
        gpu_check(err, what, __FILE__, __LINE__);
    cudaGetLastError();
    size_t free_b = 0, total = 0;
    cudaMemGetInfo(&free_b, &total);
    fprintf(stderr, "moetier: out of GPU memory: %.3f GB more for %s (%.2f GB of weights resident, "
            "%.2f of %.2f GB free)\n", bytes / 1e9, what, st->resident_bytes / 1e9, free_b / 1e9,
            total / 1e9);
    abort();
}

/* Scratch `id` of at least `bytes`: cudaSuccess, or the allocation's error
 * (the buffer then gone). Growing frees the old one (cudaFree waits for the
 * work that may still read it) and takes a quarter more, for the next growth;
 * where that quarter does not fit, exactly `bytes`. */
static cudaError_t scratch_grow(gpu_state *st, int id, size_t bytes)
{
    if (bytes <= st->scr_bytes[id])
        return cudaSuccess;
    if (st->scr[id])
        GPU_CHECK(cudaFree(st->scr[id]));
    st->scr[id] = NULL;
    st->scr_bytes[id] = 0;
    size_t want = bytes + bytes / 4;
    cudaError_t err = cudaMalloc(&st->scr[id], want);
    if (err == cudaErrorMemoryAllocation) {
        cudaGetLastError();
        err = cudaMalloc(&st->scr[id], want = bytes);
    }
    if (err == cudaSuccess)
        st->scr_bytes[id] = want;
    else
        st->scr[id] = NULL;
    return err;
}

/* A device buffer of at least `bytes` for one use inside an operation. */
static void *scratch(gpu_state *st, int id, size_t bytes)
{
    cudaError_t err = scratch_grow(st, id, bytes);
    if (err != cudaSuccess)
        device_alloc_failed(err, bytes, "scratch", st);
    return st->scr[id];
}

/* The same for a buffer the operation can do without (a faster way's): NULL
 * when the device has no room for it. */
static void *scratch_or_null(gpu_state *st, int id, size_t bytes)
{
    cudaError_t err = scratch_grow(st, id, bytes);
    if (err == cudaErrorMemoryAllocation) {
        cudaGetLastError();
        return NULL;
    }
    if (err != cudaSuccess)
        gpu_check(err, "scratch", __FILE__, __LINE__);
    return st->scr[id];
}

/* A host array the next kernels read (token indices, routing weights,
 * positions), copied into scratch `id`. cudaMemcpy from pageable memory waits
 * for everything queued before it, and these come three per routed expert
 * (its gather and its scatter), so the host would wait for the device's queue
 * to drain that often. Through a pinned ring the copy is queued like a kernel
 * and the host goes on; a ring byte is written again only a lap later, once
 * the queue has drained (one wait per megabyte of uploads). */
#define UPLOAD_RING (1u << 20)
#define UPLOAD_ALIGN 256

template <typename T> static T *upload(gpu_state *st, int id, const T *host, size_t n)
{
    T *d = (T *)scratch(st, id, (n ? n : 1) * sizeof(T));
    size_t bytes = n * sizeof(T), need = (bytes + UPLOAD_ALIGN - 1) / UPLOAD_ALIGN * UPLOAD_ALIGN;
    if (!n)
        return d;
    if (!st->ring || need > UPLOAD_RING / 4) {      /* large: as before */
        st->stats.waits++;
        GPU_CHECK(cudaMemcpy(d, host, bytes, cudaMemcpyHostToDevice));
        return d;
    }
    if (st->ring_head + need > UPLOAD_RING) {
        GPU_CHECK(cudaStreamSynchronize(0));
        st->stats.waits++;
        st->ring_head = 0;
    }
    char *src = st->ring + st->ring_head;
    st->ring_head += need;
    memcpy(src, host, bytes);
    GPU_CHECK(cudaMemcpyAsync(d, src, bytes, cudaMemcpyHostToDevice, 0));
    return d;
}

static size_t slot_of(const gpu_state *st, const void *host)
{
    uint64_t h = (uint64_t)(uintptr_t)host * 0x9E3779B97F4A7C15ull;
    return (size_t)(h >> 17) & (st->res_cap - 1);
}

static resident_entry *find_entry(gpu_state *st, const void *host)
{
    if (!st->res_cap)
        return NULL;
    for (size_t i = slot_of(st, host);; i = (i + 1) & (st->res_cap - 1)) {
        if (st->res[i].host == host)
            return &st->res[i];
        if (!st->res[i].host)
            return NULL;
    }
}

static void grow_table(gpu_state *st)
{
    size_t old_cap = st->res_cap, cap = old_cap ? old_cap * 2 : 1024;
    resident_entry *old = st->res;
    st->res = (resident_entry *)calloc(cap, sizeof *st->res);
    if (!st->res) {
        fprintf(stderr, "moetier: out of memory for the GPU weight table\n");
        abort();
    }
    st->res_cap = cap;
    for (size_t i = 0; i < old_cap; i++)
        if (old[i].host) {
            size_t j = slot_of(st, old[i].host);
            while (st->res[j].host)
                j = (j + 1) & (cap - 1);
            st->res[j] = old[i];
        }
    free(old);
}

/* The device copy of `bytes` of model memory at `host`, made on first use. */
static const void *resident(gpu_state *st, const void *host, size_t bytes)
{
    if (!host || !bytes)
        return NULL;
    resident_entry *r = find_entry(st, host);
    if (r && r->bytes >= bytes)
        return r->dev;
    if (r) {    /* asked for more of it than before: copy it again, whole */
        if (!r->pooled) {   /* a pooled copy's bytes stay taken until the end */
            GPU_CHECK(cudaFree(r->dev));
            st->stats.resident_unpooled -= r->bytes;
        }
        st->resident_bytes -= r->bytes;
    } else {
        if ((st->res_n + 1) * 2 > st->res_cap)
            grow_table(st);
        size_t i = slot_of(st, host);
        while (st->res[i].host)
            i = (i + 1) & (st->res_cap - 1);
        r = &st->res[i];
        r->host = host;
        st->res_n++;
    }
    uint64_t take = gpu_align(bytes);
    cudaError_t err;
    r->pooled = st->res_pool_bytes - st->res_pool_used >= take;
    if (r->pooled) {
        r->dev = st->res_pool + st->res_pool_used;
        st->res_pool_used += take;
        GPU_MEM_OPEN(r->dev, bytes);
    } else if ((err = cudaMalloc(&r->dev, bytes)) != cudaSuccess) {
        device_alloc_failed(err, bytes, "a resident weight", st);
    } else {
        st->stats.resident_unpooled += bytes;
    }
    GPU_CHECK(cudaMemcpy(r->dev, host, bytes, cudaMemcpyHostToDevice));
    r->bytes = bytes;
    st->resident_bytes += bytes;
    return r->dev;
}

static gpu_weight view_of(const linear_weight *w, const void *data, const void *scale)
{
    gpu_weight g;
    g.fmt = (int)w->fmt;
    g.rows = w->rows;
    g.cols = w->cols;
    g.data = data;
    g.scale = scale;
    g.block_rows = w->block_rows;
    g.block_cols = w->block_cols;
    g.group_size = w->group_size;
    g.row_words = (long long)w->row_words;
    g.scale_cols = (long long)w->scale_cols;
    return g;
}

static gpu_weight resident_weight(gpu_state *st, const linear_weight *w)
{
    return view_of(w, resident(st, w->data, linear_weight_data_bytes(w)),
                   resident(st, w->scale, linear_weight_scale_bytes(w)));
}

/* the view of w placed at base + *off (device; gpu_layout.h), advancing *off */
static gpu_weight place_weight(const linear_weight *w, char *base, uint64_t *off)
{
    uint64_t nd = linear_weight_data_bytes(w), ns = linear_weight_scale_bytes(w);
    char *d = base + *off;
    *off += gpu_weight_bytes(w);
    return view_of(w, d, ns ? d + gpu_align(nd) : NULL);
}

/* queues the copy of w's data and scales to where place_weight put them */
static void copy_weight(gpu_state *st, const linear_weight *w, const gpu_weight *g)
{
    uint64_t nd = linear_weight_data_bytes(w), ns = linear_weight_scale_bytes(w);
    GPU_MEM_OPEN(g->data, nd);
    if (ns)
        GPU_MEM_OPEN(g->scale, ns);
    GPU_CHECK(cudaMemcpyAsync((void *)g->data, w->data, nd, cudaMemcpyHostToDevice, st->copy_stream));
    if (ns)
        GPU_CHECK(cudaMemcpyAsync((void *)g->scale, w->scale, ns, cudaMemcpyHostToDevice,
                                  st->copy_stream));
    st->stats.bytes_copied += nd + ns;
}

/* ---- small kernels ---- */

__global__ void k_rmsnorm(const float *x, int xs, const float *w, int n, float eps, float *out,
                          int os)
{
    __shared__ float red[32];
    const float *xr = x + (size_t)blockIdx.x * (size_t)xs;
    float *o = out + (size_t)blockIdx.x * (size_t)os;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < n; i += blockDim.x)
        ss = fmaf(xr[i], xr[i], ss);
    ss = block_reduce(ss, red, false);     /* every read of xr is before its barriers */
    float inv = 1.0f / sqrtf(ss / (float)n + eps);
    for (int i = threadIdx.x; i < n; i += blockDim.x)
        o[i] = w[i] * (xr[i] * inv);
}

/* y += x, then k_rmsnorm of y: each thread adds the elements it then squares,
 * in k_rmsnorm's order, so the bits are those of k_add and k_rmsnorm */
__global__ void k_add_rmsnorm(float *y, const float *x, const float *w, int n, float eps, float *out)
{
    __shared__ float red[32];
    size_t row = (size_t)blockIdx.x * (size_t)n;
    float *yr = y + row, *o = out + row;
    const float *xr = x + row;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        float v = yr[i] + xr[i];
        yr[i] = v;
        ss = fmaf(v, v, ss);
    }
    ss = block_reduce(ss, red, false);
    float inv = 1.0f / sqrtf(ss / (float)n + eps);
    for (int i = threadIdx.x; i < n; i += blockDim.x)
        o[i] = w[i] * (yr[i] * inv);
}

__global__ void k_rope(float *x, int T, int n_vec, int ts, int vs, int off, int dim, const int *pos,
                       const float *inv_freq, float mscale)
{
    size_t half = (size_t)dim / 2, idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (size_t)T * half * (size_t)n_vec)
        return;
    size_t k = idx % (size_t)n_vec, i = idx / (size_t)n_vec % half, t = idx / ((size_t)n_vec * half);
    float ang = (float)pos[t] * inv_freq[i];
    float c = cosf(ang) * mscale, s = sinf(ang) * mscale;
    float *v = x + t * (size_t)ts + k * (size_t)vs + (size_t)off + 2 * i;
    float a = v[0], b = v[1];
    /* (each product rounded, as rope_ref's: nvcc would fuse one of them into an fma) */
    v[0] = __fmul_rn(a, c) - __fmul_rn(b, s);
    v[1] = __fmul_rn(a, s) + __fmul_rn(b, c);
}

__global__ void k_add(float *y, const float *x, size_t n)
{
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n)
        y[i] += x[i];
}

/* rows strided over grid.y: a step's rows are its tokens x top_k, which pass
 * grid.y's 65535 at 8,192 tokens of K2 */
__global__ void k_gather(const float *src, const int *idx, int n, int dim, float *dst)
{
    int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j < dim)
        for (int i = blockIdx.y; i < n; i += gridDim.y)
            dst[(size_t)i * (size_t)dim + (size_t)j] = src[(size_t)idx[i] * (size_t)dim + (size_t)j];
}

/* y[d] += w[i] x[i] over the rows i that go to destination d, in increasing i
 * (the caller's order, as the CPU adds them), from scatter_plan's plan: one
 * thread per column of a destination, so the destinations go in parallel and
 * each element's adds keep their order. A destination several rows name (the
 * tokens a group of experts shares) gets the bits of adding them one by one;
 * fmaf, so that no compiler's contraction choice changes them. */
__global__ void k_scatter_add(float *dst, const int *plan, int m, const float *w, int dim,
                              const float *src)
{
    int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= dim)
        return;
    const int *start = plan + m, *list = start + m + 1;
    for (int d = blockIdx.y; d < m; d += gridDim.y) {
        float *y = dst + (size_t)plan[d] * (size_t)dim + (size_t)j;
        float acc = *y;
        for (int k = start[d]; k < start[d + 1]; k++)
            acc = fmaf(w[list[k]], src[(size_t)list[k] * (size_t)dim + (size_t)j], acc);
        *y = acc;
    }
}

static unsigned blocks_for(size_t n, unsigned per)
{
    return (unsigned)((n + per - 1) / per);
}

/* ---- the operations ---- */

static float *g_alloc(backend *b, size_t n)
{
    state(b);
    void *p = NULL;
    size_t bytes = (n ? n : 1) * sizeof(float);
    cudaError_t err = cudaMalloc(&p, bytes);
    if (err == cudaErrorMemoryAllocation) {
        cudaGetLastError();
        return NULL;    /* the caller says what it was for */
    }
    GPU_CHECK(err);     /* an earlier fault, not a lack of memory */
    GPU_CHECK(cudaMemset(p, 0, bytes));
    return (float *)p;
}

static void g_release(backend *b, float *p)
{
    state(b);
    GPU_CHECK(cudaFree(p));
}

/* A step of the model starts with its embedding: a step of the expert cache
 * too (scan resistance, expert_cache.h) */
static void g_embed(backend *b, const linear_weight *emb, const int *ids, int T, float *out)
{
    gpu_state *st = state(b);
    if (st->slots)
        expert_cache_begin_step(&st->cache);
    gpu_weight w = resident_weight(st, emb);
    gpu_embed(&w, upload(st, SCR_INDEX, ids, (size_t)T), T, out, 0);
}

static void g_rmsnorm(backend *b, const float *x, int xs, const float *w, int n, int T, float eps,
                      float *out, int os)
{
    if (T <= 0)
        return;
    const float *dw = (const float *)resident(state(b), w, (size_t)n * sizeof(float));
    GPU_LAUNCH(k_rmsnorm, (unsigned)T, 256, 0, 0)(x, xs, dw, n, eps, out, os);
    GPU_LAUNCHED("rmsnorm");
}

static void g_add_rmsnorm(backend *b, float *y, const float *x, const float *w, int n, int T,
                          float eps, float *out)
{
    if (T <= 0)
        return;
    const float *dw = (const float *)resident(state(b), w, (size_t)n * sizeof(float));
    GPU_LAUNCH(k_add_rmsnorm, (unsigned)T, 256, 0, 0)(y, x, dw, n, eps, out);
    GPU_LAUNCHED("add_rmsnorm");
}

/* y = w x for T tokens, as one product */
static gpu_lin lin_of(gpu_weight w, const float *x, int T, float *y)
{
    gpu_lin a = {};
    a.w = w;
    a.nrows = w.rows;
    a.groups = 1;
    a.x = x;
    a.xs = (size_t)w.cols;
    a.y = y;
    a.ys = (size_t)w.rows;
    a.T = T;
    return a;
}

static void linear_on(gpu_weight w, const float *x, int T, float *y)
{
    gpu_lin a = lin_of(w, x, T, y);
    gpu_linear(&a, 0);
}

static void g_linear(backend *b, const linear_weight *w, const float *x, int T, float *y)
{
    linear_on(resident_weight(state(b), w), x, T, y);
}

static void g_rope(backend *b, float *x, int T, int n_vec, int ts, int vs, int off, int dim,
                   const int *pos, const float *inv_freq, float mscale)
{
    gpu_state *st = state(b);
    size_t n = (size_t)T * (size_t)(dim / 2) * (size_t)n_vec;
    if (!n)
        return;
    const float *f = (const float *)resident(st, inv_freq, (size_t)(dim / 2) * sizeof(float));
    const int *p = upload(st, SCR_INDEX, pos, (size_t)T);
    GPU_LAUNCH(k_rope, blocks_for(n, 256), 256, 0, 0)(x, T, n_vec, ts, vs, off, dim, p, f, mscale);
    GPU_LAUNCHED("rope");
}

static void ffn_on(gpu_state *st, gpu_weight g, gpu_weight u, gpu_weight d, const float *x, int T,
                   float *out)
{
    size_t n = (size_t)T * (size_t)g.rows;
    float *G = (float *)scratch(st, SCR_GATE, n * sizeof(float));
    float *U = (float *)scratch(st, SCR_UP, n * sizeof(float));
    linear_on(g, x, T, G);
    linear_on(u, x, T, U);
    gpu_silu_mul(G, U, n, 0);
    linear_on(d, G, T, out);
}

/* an FFN of the model's own weights (a dense layer's, a shared expert's) */
static void resident_ffn(gpu_state *st, const linear_weight *gate, const linear_weight *up,
                         const linear_weight *down, const float *x, int T, float *out)
{
    ffn_on(st, resident_weight(st, gate), resident_weight(st, up), resident_weight(st, down), x, T,
           out);
}

static void g_ffn(backend *b, const linear_weight *gate, const linear_weight *up,
                  const linear_weight *down, const float *x, int T, float *out)
{
    resident_ffn(state(b), gate, up, down, x, T, out);
}

/* An expert's three matrices at base (gpu_layout.h). */
struct expert_views {
    gpu_weight g, u, d;
};

static expert_views place_expert(const ffn_job *j, char *base)
{
    expert_views v;
    uint64_t off = 0;
    v.g = place_weight(j->gate, base, &off);
    v.u = place_weight(j->up, base, &off);
    v.d = place_weight(j->down, base, &off);
    return v;
}

/* Queues the copy of j's expert into buffer `buf` (a slot, or a staging buffer
 * after the slots) at base, after the kernels still reading it. */
static void fill(gpu_state *st, int buf, char *base, const ffn_job *j)
{
    expert_views v = place_expert(j, base);
    GPU_CHECK(cudaStreamWaitEvent(st->copy_stream, st->freed[buf], 0));
    copy_weight(st, j->gate, &v.g);
    copy_weight(st, j->up, &v.u);
    copy_weight(st, j->down, &v.d);
    GPU_CHECK(cudaEventRecord(st->filled[buf], st->copy_stream));
}

/* Queues j's FFN from buffer `buf`, after its copy. */
static void compute(gpu_state *st, int buf, char *base, const ffn_job *j)
{
    expert_views v = place_expert(j, base);
    GPU_CHECK(cudaStreamWaitEvent(0, st->filled[buf], 0));
    ffn_on(st, v.g, v.u, v.d, j->x, j->T, j->out);
    GPU_CHECK(cudaEventRecord(st->freed[buf], 0));
}

static int cache_key(const gpu_state *st, const ffn_job *j)
{
    int key = j->cache_key - 1;
    return st->slots && key >= 0 && key < st->n_keys &&
           gpu_expert_slot_bytes(j->gate, j->up, j->down) <= st->slot_bytes ? key : -1;
}

/* the next staging buffer, grown to `bytes` (after everything queued, which
 * may still read it) */
static int next_staging(gpu_state *st, uint64_t bytes)
{
    int k = st->staging_next;
    st->staging_next ^= 1;
    if (bytes > st->staging_bytes) {
        GPU_CHECK(cudaDeviceSynchronize());
        for (int i = 0; i < 2; i++) {
            if (st->staging[i])
                GPU_CHECK(cudaFree(st->staging[i]));
            st->staging[i] = NULL;
        }
        st->staging_bytes = 0;
        cudaError_t err;
        for (int i = 0; i < 2; i++)
            if ((err = cudaMalloc(&st->staging[i], bytes)) != cudaSuccess) {
                device_alloc_failed(err, bytes, "an expert's staging buffer", st);
            } else {
                GPU_MEM_CLOSE(st->staging[i], bytes);
            }
        st->staging_bytes = bytes;
    }
    return k;
}

/* Whether a miss of `key` should stay out of the cache: this step has used
 * every expert the cache could evict (a prefill step larger than the cache),
 * so the slot would be taken back before the next step wants it, and the copy
 * would evict one that the next step will. */
static int keep_out(const gpu_state *st, int key)
{
    return key >= 0 && expert_cache_find(&st->cache, key) < 0 &&
           expert_cache_scanning(&st->cache);
}

/* One routed expert on the GPU: a keyed one through the VRAM cache (copied into
 * a slot on a miss), else, or when the cache keeps it out, through a staging
 * buffer. */
static void expert_on_gpu(gpu_state *st, const ffn_job *j)
{
    int key = cache_key(st, j), slot = -1, resident = 0, evicted, buf;
    char *base;
    if (key >= 0 && !keep_out(st, key))
        slot = expert_cache_acquire(&st->cache, key, &resident, &evicted);
    if (slot >= 0) {
        buf = slot;
        base = st->slots + (uint64_t)slot * st->slot_bytes;
        if (resident)
            st->stats.hits++;
        else
            st->stats.misses++;
    } else {
        int k = next_staging(st, gpu_expert_slot_bytes(j->gate, j->up, j->down));
        buf = st->stats.slots + k;
        base = st->staging[k];
        st->stats.uncached++;
    }
    if (!resident) {
        fill(st, buf, base, j);
        if (slot >= 0)
            expert_cache_ready(&st->cache, slot);
    }
    compute(st, buf, base, j);
    if (slot >= 0)
        expert_cache_release(&st->cache, slot);
}

/* Copies an expert into the cache without computing it (one the CPU computes,
 * or one predicted for the next layer), when a slot is free to take and the
 * cache does not keep it out; 1 if it was copied. */
static int copy_into_cache(gpu_state *st, const ffn_job *j)
{
    int key = cache_key(st, j), resident = 0, evicted, copied = 0;
    if (keep_out(st, key))
        return 0;
    int slot = key >= 0 ? expert_cache_acquire(&st->cache, key, &resident, &evicted) : -1;
    if (slot < 0)
        return 0;
    if (!resident) {
        fill(st, slot, st->slots + (uint64_t)slot * st->slot_bytes, j);
        expert_cache_ready(&st->cache, slot);
        copied = 1;
    }
    expert_cache_release(&st->cache, slot);
    return copied;
}

static int in_vram(const gpu_state *st, const ffn_job *j)
{
    int key = cache_key(st, j);
    return key >= 0 && expert_cache_find(&st->cache, key) >= 0;
}

static bool same_shape(const gpu_weight &a, const gpu_weight &b)
{
    return a.fmt == b.fmt && a.rows == b.rows && a.cols == b.cols && a.block_rows == b.block_rows &&
           a.block_cols == b.block_cols && a.group_size == b.group_size;
}

/* The FFNs of m experts in VRAM (jobs[k] in slot[k]) in three launches, not
 * four each: gate and up of all, the gating of all, down of all; each row's
 * sums as ffn_on gives them. 0 (nothing queued) when their matrices differ in
 * format or shape. */
static int ffn_slots(gpu_state *st, const ffn_job *const *jobs, const int *slot, int m)
{
    expert_views *v = st->views;
    gpu_lin *L = st->lists;
    int total = 0, most = 0;
    for (int k = 0; k < m; k++) {
        v[k] = place_expert(jobs[k], st->slots + (uint64_t)slot[k] * st->slot_bytes);
        if (!same_shape(v[k].g, v[0].g) || !same_shape(v[k].u, v[0].g) ||
            !same_shape(v[k].d, v[0].d))
            return 0;
        most = jobs[k]->T > jobs[most]->T ? k : most;
        total += jobs[k]->T;
    }
    size_t n = (size_t)total * (size_t)v[0].g.rows, off = 0;
    float *G = (float *)scratch(st, SCR_GATE, n * sizeof(float));
    float *U = (float *)scratch(st, SCR_UP, n * sizeof(float));
    for (int k = 0; k < m; k++) {
        const ffn_job *j = jobs[k];
        L[k] = lin_of(v[k].g, j->x, j->T, G + off);
        L[m + k] = lin_of(v[k].u, j->x, j->T, U + off);
        L[2 * m + k] = lin_of(v[k].d, G + off, j->T, j->out);
        off += (size_t)j->T * (size_t)v[0].g.rows;
        GPU_CHECK(cudaStreamWaitEvent(0, st->filled[slot[k]], 0));
    }
    const gpu_lin *dev = upload(st, SCR_LISTS, L, (size_t)(3 * m));
    gpu_linear_list(dev, 2 * m, &L[most], 0);
    gpu_silu_mul(G, U, n, 0);
    gpu_linear_list(dev + 2 * m, m, &L[2 * m + most], 0);
    for (int k = 0; k < m; k++)
        GPU_CHECK(cudaEventRecord(st->freed[slot[k]], 0));
    return 1;
}

/* The jobs in VRAM: all at once (ffn_slots), or one by one */
static void experts_in_vram(gpu_state *st, const ffn_job *const *jobs, int m)
{
    int *slot = st->slot_of_job;
    if (!m)
        return;
    for (int k = 0; k < m; k++) {
        int resident = 0, evicted;
        /* found (in_vram), so pinned and resident: no slot is taken from another */
        slot[k] = expert_cache_acquire(&st->cache, cache_key(st, jobs[k]), &resident, &evicted);
        st->stats.hits++;
    }
    if (!ffn_slots(st, jobs, slot, m))
        for (int k = 0; k < m; k++)
            compute(st, slot[k], st->slots + (uint64_t)slot[k] * st->slot_bytes, jobs[k]);
    for (int k = 0; k < m; k++)
        expert_cache_release(&st->cache, slot[k]);
}

static int registered(const gpu_state *st, const void *p)
{
    for (int i = 0; i < st->n_registered; i++)
        if ((const char *)p >= st->registered[i].lo && (const char *)p < st->registered[i].hi)
            return 1;
    return 0;
}

/* the per-job arrays of a batch of n */
static void batch_room(gpu_state *st, int n)
{
    if (n <= st->batch_cap)
        return;
    free(st->where);
    free(st->place);
    free(st->hjobs);
    free(st->order);
    free(st->vram_jobs);
    free(st->slot_of_job);
    free(st->views);
    free(st->lists);
    st->where = (unsigned char *)malloc((size_t)n);
    st->place = (unsigned char *)malloc((size_t)n);
    st->hjobs = (hybrid_job *)malloc((size_t)n * sizeof *st->hjobs);
    st->order = (int *)malloc((size_t)n * sizeof *st->order);
    st->vram_jobs = (const ffn_job **)malloc((size_t)n * sizeof *st->vram_jobs);
    st->slot_of_job = (int *)malloc((size_t)n * sizeof *st->slot_of_job);
    st->views = (expert_views *)malloc((size_t)n * sizeof *st->views);
    st->lists = (gpu_lin *)malloc((size_t)n * 3 * sizeof *st->lists);
    if (!st->where || !st->place || !st->hjobs || !st->order || !st->vram_jobs ||
        !st->slot_of_job || !st->views || !st->lists) {
        fprintf(stderr, "moetier: out of memory for a batch of %d experts\n", n);
        abort();
    }
    st->batch_cap = n;
}

static int on_cpu(unsigned char place)
{
    return place == HYBRID_CPU || place == HYBRID_CPU_PROMOTE;
}

/* Where each job of the batch runs: place[i] (HYBRID_*) and the CPU side's
 * predicted seconds. */
static double plan_batch(gpu_state *st, const ffn_job *jobs, int n)
{
    for (int i = 0; i < n; i++) {
        const ffn_job *j = &jobs[i];
        hybrid_job *h = &st->hjobs[i];
        h->bytes = gpu_expert_slot_bytes(j->gate, j->up, j->down);
        h->weights = (uint64_t)j->gate->rows * (uint64_t)j->gate->cols +
                     (uint64_t)j->up->rows * (uint64_t)j->up->cols +
                     (uint64_t)j->down->rows * (uint64_t)j->down->cols;
        h->tokens = j->T;
        h->in_vram = j->resident || in_vram(st, j);     /* the shared expert is resident */
        h->pinned = registered(st, j->gate->data);
        h->cacheable = !j->resident && cache_key(st, j) >= 0;
    }
    if (!st->pool)
        for (int i = 0; i < n; i++)
            st->place[i] = jobs[i].T ? HYBRID_GPU : HYBRID_SKIP;
    else if (st->cpu_auto)
        hybrid_plan_batch(&st->rates, st->hjobs, n, st->place, st->order);
    else
        hybrid_plan_fixed(st->hjobs, n, st->cpu_tokens, st->place);
    double cpu = 0;
    for (int i = 0; i < n; i++)
        if (on_cpu(st->place[i]))
            cpu += hybrid_cpu_seconds(&st->rates, &st->hjobs[i]);
    return cpu;
}

/* a growing host buffer; an allocation failure mid-forward is unrecoverable */
static void *grow_or_abort(void *p, size_t bytes)
{
    void *q = realloc(p, bytes);
    if (!q) {
        fprintf(stderr, "moetier: out of memory for %zu bytes of host buffers\n", bytes);
        abort();
    }
    return q;
}

static float *host_buffer(float **p, size_t *have, size_t n)
{
    if (n > *have) {
        *p = (float *)grow_or_abort(*p, n * sizeof **p);
        *have = n;
    }
    return *p;
}

/* The CPU jobs' buffer, pinned so that their copies queue without the host
 * waiting (pageable if the device refuses: then each copy waits, still right).
 * Growing frees the old one once the copies from it are done; it grows by half
 * at least, because each growth drains the device and pins memory anew (slow on
 * a real driver), and a prefill's batches grow step by step. */
static float *cpu_jobs_buffer(gpu_state *st, size_t need)
{
    if (need <= st->host_n)
        return st->host;
    size_t n = st->host_n + st->host_n / 2 > need ? st->host_n + st->host_n / 2 : need;
    GPU_CHECK(cudaDeviceSynchronize());     /* the copies from the old one are done */
    if (st->host_pinned)
        cudaFreeHost(st->host);
    else
        free(st->host);
    st->host = NULL;
    st->host_n = 0;
    st->host_pinned = cudaMallocHost((void **)&st->host, n * sizeof(float)) == cudaSuccess;
    if (!st->host_pinned) {
        cudaGetLastError();
        st->host = (float *)malloc(n * sizeof(float));
    }
    if (!st->host) {
        fprintf(stderr, "moetier: out of memory for %zu floats of host buffers\n", n);
        abort();
    }
    st->host_n = n;
    return st->host;
}

/* where each job of a batch runs */
enum { JOB_GPU, JOB_CPU, JOB_DONE };

/* The CPU's experts of one batch, run on the side thread: each job's x and out
 * lie one after another from host[0], the twin's scratch after them. */
struct cpu_work {
    gpu_state *st;
    const ffn_job *jobs;
    int n;
    float *host;
    size_t scratch_at;
    double seconds;
};

static void cpu_experts(void *arg)
{
    cpu_work *w = (cpu_work *)arg;
    gpu_state *st = w->st;
    double t0 = now_seconds();
    size_t off = 0;
    for (int i = 0; i < w->n; i++)
        if (on_cpu(st->place[i])) {     /* place: the calling thread changes where meanwhile */
            const ffn_job *j = &w->jobs[i];
            size_t nx = (size_t)j->T * (size_t)j->gate->cols;
            gpu_twin_ffn(st->path, st->pool, j->gate, j->up, j->down, w->host + off, j->T,
                         w->host + off + nx, w->host + w->scratch_at);
            off += nx + (size_t)j->T * (size_t)j->down->rows;
        }
    w->seconds = now_seconds() - t0;
}

/* The GPU's rate moves towards the device time of the last batch's experts in
 * VRAM, read only if the device is past them (by the next layer's batch it is:
 * the router's logits came down in between; a batch not yet done is skipped),
 * so the host never waits for it. */
static void learn_gpu_rate(gpu_state *st)
{
    if (!(st->vram_predicted > 0) || !st->cpu_auto)
        return;
    float ms = 0;
    if (cudaEventQuery(st->vram_timer[1]) == cudaSuccess &&
        cudaEventElapsedTime(&ms, st->vram_timer[0], st->vram_timer[1]) == cudaSuccess)
        hybrid_update_gpu(&st->rates, st->vram_predicted, ms * 1e-3);
    cudaGetLastError();
    st->vram_predicted = 0;
}

/* Routed experts: their bytes are valid only during the call (a tier may reuse
 * the memory next). The plan says where each runs. The CPU jobs' inputs come
 * down first (a copy to the host waits for the GPU's queue) and the side
 * thread starts on them; meanwhile this thread queues the shared expert (a
 * resident job), the experts in VRAM,
 * the other GPU jobs' copies on the copy stream with their kernels after
 * them, then the copies of predicted experts and of promoted ones. Then the CPU's results go up, and the
 * call returns when the copy stream is done with the tiers' bytes. */
static void g_ffn_batch(backend *b, const ffn_job *jobs, int n)
{
    gpu_state *st = state(b);
    batch_room(st, n);
    double cpu_predicted = plan_batch(st, jobs, n);
    unsigned char *where = st->where;
    size_t io_total = 0, twin_scratch = 0;
    int n_cpu = 0;
    for (int i = 0; i < n; i++) {
        const ffn_job *j = &jobs[i];
        where[i] = st->place[i] == HYBRID_GPU ? JOB_GPU : on_cpu(st->place[i]) ? JOB_CPU : JOB_DONE;
        if (where[i] != JOB_CPU)
            continue;
        n_cpu++;
        io_total += (size_t)j->T * (size_t)(j->gate->cols + j->down->rows);
        size_t sc = gpu_twin_ffn_scratch(j->gate, j->down, j->T, thread_pool_size(st->pool));
        twin_scratch = sc > twin_scratch ? sc : twin_scratch;
    }
    cpu_work work = {st, jobs, n, NULL, io_total, 0};
    if (n_cpu) {
        work.host = cpu_jobs_buffer(st, io_total + twin_scratch);
        size_t off = 0;
        for (int i = 0; i < n; i++)
            if (where[i] == JOB_CPU) {
                const ffn_job *j = &jobs[i];
                size_t nx = (size_t)j->T * (size_t)j->gate->cols;
                GPU_CHECK(cudaMemcpyAsync(work.host + off, j->x, nx * sizeof(float),
                                          cudaMemcpyDeviceToHost, 0));
                off += nx + (size_t)j->T * (size_t)j->down->rows;
            }
        st->stats.waits++;      /* one wait for all of them */
        GPU_CHECK(cudaStreamSynchronize(0));
        side_thread_start(st->cpu_side, cpu_experts, &work);
    }
    /* the shared expert, from the model's resident weights, as g_ffn runs it:
     * queued now, it runs while the CPU works, not after */
    for (int i = 0; i < n; i++)
        if (jobs[i].resident && where[i] == JOB_GPU) {
            resident_ffn(st, jobs[i].gate, jobs[i].up, jobs[i].down, jobs[i].x, jobs[i].T,
                         jobs[i].out);
            where[i] = JOB_DONE;
        }
    learn_gpu_rate(st);
    int m = 0;
    double predicted = 0;
    for (int i = 0; i < n; i++)
        if (where[i] == JOB_GPU && in_vram(st, &jobs[i])) {
            st->vram_jobs[m++] = &jobs[i];
            predicted += hybrid_gpu_seconds(&st->rates, &st->hjobs[i]);
            where[i] = JOB_DONE;
        }
    if (m && st->vram_timer[0])
        GPU_CHECK(cudaEventRecord(st->vram_timer[0], 0));
    experts_in_vram(st, st->vram_jobs, m);
    if (m && st->vram_timer[0]) {
        GPU_CHECK(cudaEventRecord(st->vram_timer[1], 0));
        st->vram_predicted = predicted;
    }
    for (int i = 0; i < n; i++)
        if (where[i] == JOB_GPU)
            expert_on_gpu(st, &jobs[i]);
    for (int i = 0; i < n; i++)
        if (st->place[i] == HYBRID_PREFETCH)
            st->stats.prefetched += (uint64_t)copy_into_cache(st, &jobs[i]);
    for (int i = 0; i < n; i++)
        if (st->place[i] == HYBRID_CPU_PROMOTE)
            st->stats.promoted += (uint64_t)copy_into_cache(st, &jobs[i]);
    if (n_cpu) {
        side_thread_wait(st->cpu_side);
        st->stats.on_cpu += (uint64_t)n_cpu;
        hybrid_update_cpu(&st->rates, cpu_predicted, work.seconds);
        size_t off = 0;
        for (int i = 0; i < n; i++)
            if (where[i] == JOB_CPU) {
                const ffn_job *j = &jobs[i];
                size_t nx = (size_t)j->T * (size_t)j->gate->cols;
                size_t ny = (size_t)j->T * (size_t)j->down->rows;
                /* queued: the buffer changes next only after a wait on
                 * stream 0 (the next batch's inputs) or a free, which waits */
                GPU_CHECK(cudaMemcpyAsync(j->out, work.host + off + nx, ny * sizeof(float),
                                          cudaMemcpyHostToDevice, 0));
                off += nx + ny;
            }
    }
    st->stats.waits++;
    GPU_CHECK(cudaStreamSynchronize(st->copy_stream));
}

static void g_mla(backend *b, const mla_args *m)
{
    gpu_state *st = state(b);
    char why[256];
    if (!gpu_attention_fits(m->kv_lora, m->rope, why, sizeof why)) {
        fprintf(stderr, "moetier: %s\n", why);    /* the backend's open refuses such models */
        abort();
    }
    gpu_mla_args a;
    a.kv_b = resident_weight(st, m->kv_b);
    a.q = m->q;
    a.T = m->T;
    a.pos0 = m->pos0;
    a.H = m->H;
    a.nope = m->nope;
    a.rope = m->rope;
    a.v = m->v;
    a.kv_lora = m->kv_lora;
    a.kv_cache = m->kv_cache;
    a.kv_bf16 = m->kv_bf16;
    a.kv_q8 = m->kv_q8;
    a.q8_row_bytes = kv_q8_row_bytes(m->kv_lora + m->rope);
    a.scale = m->scale;
    a.out = m->out;
    a.qa = a.ol = a.part = NULL;
    /* the step's whole slices of GPU_MLA_EXPANDED_TOKENS in the expanded form
     * (its scratch in that of the absorbed form's queries and outputs) */
    int expanded = 0;
    if (gpu_mla_expanded_fits(&a))
        expanded = m->T / GPU_MLA_EXPANDED_TOKENS * GPU_MLA_EXPANDED_TOKENS;
    if (expanded) {
        gpu_mla_args x = a;
        x.T = expanded;
        size_t kvx = gpu_mla_expanded_block(&x) * (size_t)x.H * (size_t)(x.nope + x.v);
        size_t state = (size_t)x.T * (size_t)x.H * (size_t)(2 + x.v);
        size_t wide = x.kv_bf16 || x.kv_q8
                          ? gpu_mla_expanded_block(&x) * (size_t)(x.kv_lora + x.rope) : 0;
        gpu_mla_expanded(&x, (float *)scratch(st, SCR_QA, kvx * sizeof(float)),
                         (float *)scratch(st, SCR_OL, state * sizeof(float)),
                         wide ? (float *)scratch(st, SCR_KV_WIDE, wide * sizeof(float)) : NULL, 0);
    }
    if (m->T == expanded)
        return;
    a.T = m->T - expanded;
    a.pos0 = m->pos0 + expanded;
    a.q = m->q + (size_t)expanded * (size_t)a.H * (size_t)(a.nope + a.rope);
    a.out = m->out + (size_t)expanded * (size_t)a.H * (size_t)a.v;
    size_t n = (size_t)a.T * (size_t)a.H * (size_t)a.kv_lora;
    a.qa = (float *)scratch(st, SCR_QA, n * sizeof(float));
    a.ol = (float *)scratch(st, SCR_OL, n * sizeof(float));
    /* (the split's partial sums grow with the context, step after step; where
     * the device has no room for them the attention runs whole: the same bits) */
    size_t part = gpu_mla_split_floats(&a, st->multiprocessors);
    if (part)
        a.part = (float *)scratch_or_null(st, SCR_MLA_PART, part * sizeof(float));
    gpu_mla(&a, 0);
}

/* The router's choice is made on the host, where its result is wanted: the
 * logits come over (T x n_experts floats) and the reference picks. */
static void g_route(backend *b, const route_params *p, const float *logits, const float *bias,
                    int T, int *ids, float *weights, float *scores)
{
    gpu_state *st = state(b);
    size_t E = (size_t)p->n_experts, K = (size_t)p->top_k;
    float *hl = host_buffer(&st->host_logits, &st->host_logits_n, (size_t)T * E + 1);
    float *rs = host_buffer(&st->host_route, &st->host_route_n, route_ref_scratch(p) + 1);
    st->stats.waits++;
    GPU_CHECK(cudaMemcpy(hl, logits, (size_t)T * E * sizeof(float), cudaMemcpyDeviceToHost));
    for (int t = 0; t < T; t++)
        route_ref(p, hl + (size_t)t * E, bias, ids + (size_t)t * K, weights + (size_t)t * K,
                  scores ? scores + (size_t)t * E : NULL, rs);
}

static void g_zero(backend *b, float *p, size_t n)
{
    state(b);
    GPU_CHECK(cudaMemsetAsync(p, 0, n * sizeof(float), 0));
}

static void g_add(backend *b, float *y, const float *x, size_t n)
{
    state(b);
    if (!n)
        return;
    GPU_LAUNCH(k_add, blocks_for(n, 256), 256, 0, 0)(y, x, n);
    GPU_LAUNCHED("add");
}

static void g_gather(backend *b, const float *src, const int *idx, int n, int dim, float *dst)
{
    if (n <= 0 || dim <= 0)
        return;
    const int *di = upload(state(b), SCR_INDEX, idx, (size_t)n);
    dim3 grid(blocks_for((size_t)dim, 256), (unsigned)(n < GPU_GRID_Y ? n : GPU_GRID_Y));
    GPU_LAUNCH(k_gather, grid, 256, 0, 0)(src, di, n, dim, dst);
    GPU_LAUNCHED("gather");
}

/* The plan k_scatter_add follows for rows idx[0..n): the m distinct
 * destinations in the order first named, where each one's rows start in the
 * list (m + 1), then the list, each destination's rows in increasing order.
 * Its length is 2 m + 1 + n. Stamps mark the rows this call named, so that no
 * call clears a table as long as the largest destination. */
static const int *scatter_plan(gpu_state *st, const int *idx, int n, int *m_out, size_t *len)
{
    size_t rows = 0;
    for (int i = 0; i < n; i++)
        rows = (size_t)idx[i] + 1 > rows ? (size_t)idx[i] + 1 : rows;
    if (rows > st->rows_n) {
        st->row_stamp = (uint32_t *)grow_or_abort(st->row_stamp, rows * sizeof *st->row_stamp);
        st->row_slot = (int *)grow_or_abort(st->row_slot, rows * sizeof *st->row_slot);
        memset(st->row_stamp + st->rows_n, 0, (rows - st->rows_n) * sizeof *st->row_stamp);
        st->rows_n = rows;
    }
    if (++st->stamp == 0) {     /* wrapped: old stamps could match */
        memset(st->row_stamp, 0, st->rows_n * sizeof *st->row_stamp);
        st->stamp = 1;
    }
    if (4 * (size_t)n + 1 > st->plan_n) {
        st->plan_n = 4 * (size_t)n + 1;
        st->plan = (int *)grow_or_abort(st->plan, st->plan_n * sizeof *st->plan);
    }
    int *out = st->plan, *count = st->plan + 3 * (size_t)n + 1, m = 0;
    for (int i = 0; i < n; i++) {
        int r = idx[i];
        if (st->row_stamp[r] != st->stamp) {
            st->row_stamp[r] = st->stamp;
            st->row_slot[r] = m;
            out[m] = r;
            count[m++] = 0;
        }
        count[st->row_slot[r]]++;
    }
    int *start = out + m, *list = start + m + 1;
    start[0] = 0;
    for (int d = 0; d < m; d++) {
        start[d + 1] = start[d] + count[d];
        count[d] = start[d];    /* now where its next row goes */
    }
    for (int i = 0; i < n; i++)
        list[count[st->row_slot[idx[i]]]++] = i;
    *m_out = m;
    *len = 2 * (size_t)m + 1 + (size_t)n;
    return out;
}

static void g_scatter_add(backend *b, float *dst, const int *idx, const float *w, int n, int dim,
                          const float *src)
{
    if (n <= 0 || dim <= 0)
        return;
    gpu_state *st = state(b);
    int m;
    size_t len;
    const int *plan = scatter_plan(st, idx, n, &m, &len);
    const int *dp = upload(st, SCR_INDEX, plan, len);
    const float *dw = upload(st, SCR_WEIGHTS, w, (size_t)n);
    dim3 grid(blocks_for((size_t)dim, 256), (unsigned)(m < GPU_GRID_Y ? m : GPU_GRID_Y));
    GPU_LAUNCH(k_scatter_add, grid, 256, 0, 0)(dst, dp, m, dw, dim, src);
    GPU_LAUNCHED("scatter_add");
}

static void g_to_host(backend *b, float *host, const float *buf, size_t n)
{
    state(b)->stats.waits++;
    GPU_CHECK(cudaMemcpy(host, buf, n * sizeof(float), cudaMemcpyDeviceToHost));
}

static void g_from_host(backend *b, float *buf, const float *host, size_t n)
{
    state(b)->stats.waits++;
    GPU_CHECK(cudaMemcpy(buf, host, n * sizeof(float), cudaMemcpyHostToDevice));
}

static void g_store_bf16(backend *b, float *dst, const float *src, size_t n)
{
    state(b);   /* (the backend's device current, as for every operation) */
    gpu_store_bf16((uint16_t *)(void *)dst, src, n, 0);
}

static void g_store_q8_0(backend *b, float *dst, const float *src, int T, int row)
{
    state(b);
    gpu_store_q8_0(dst, src, T, row, 0);
}

/* the cache, the copy stream, the events and the registered host memory */
static void free_copy_state(gpu_state *st)
{
    if (st->copy_stream)
        cudaStreamSynchronize(st->copy_stream);
    for (int i = 0; i < st->stats.slots + 2; i++) {
        if (st->filled && st->filled[i])
            cudaEventDestroy(st->filled[i]);
        if (st->freed && st->freed[i])
            cudaEventDestroy(st->freed[i]);
    }
    free(st->filled);
    free(st->freed);
    st->filled = st->freed = NULL;
    if (st->copy_stream)
        cudaStreamDestroy(st->copy_stream);
    st->copy_stream = NULL;
    for (int i = 0; i < 2; i++)
        if (st->staging[i])
            cudaFree(st->staging[i]);
    if (st->slots) {
        cudaFree(st->slots);
        expert_cache_free(&st->cache);
        st->slots = NULL;
    }
    for (int i = 0; i < st->n_registered; i++)
        cudaHostUnregister((void *)st->registered[i].lo);
    st->n_registered = 0;
}

static void free_ring(gpu_state *st)
{
    if (st->ring) {
        cudaDeviceSynchronize();    /* the copies from it are done */
        cudaFreeHost(st->ring);
    }
    st->ring = NULL;
}

/* Everything the state holds; also a state that create built only in part. */
static void free_state(gpu_state *st)
{
    if (!st)
        return;
    cudaDeviceSynchronize();
    for (size_t i = 0; i < st->res_cap; i++)
        if (st->res[i].host && !st->res[i].pooled)
            cudaFree(st->res[i].dev);
    if (st->res_pool)
        cudaFree(st->res_pool);
    for (int i = 0; i < SCR_COUNT; i++)
        if (st->scr[i])
            cudaFree(st->scr[i]);
    free_copy_state(st);
    free_ring(st);
    for (int i = 0; i < 2; i++)
        if (st->vram_timer[i])
            cudaEventDestroy(st->vram_timer[i]);
    side_thread_destroy(st->cpu_side);
    if (st->pool)
        thread_pool_destroy(st->pool);
    if (st->host_pinned)
        cudaFreeHost(st->host);
    else
        free(st->host);
    free(st->where);
    free(st->place);
    free(st->hjobs);
    free(st->order);
    free(st->vram_jobs);
    free(st->slot_of_job);
    free(st->views);
    free(st->lists);
    free(st->res);
    free(st->host_logits);
    free(st->host_route);
    free(st->row_stamp);
    free(st->row_slot);
    free(st->plan);
    free(st);
}

static void g_destroy(backend *b)
{
    free_state(state(b));
    b->impl = NULL;
}

/* the kernels and copies queued on every stream (a batch's own copies and CPU
 * experts are done when it returns) */
static void g_finish(backend *b)
{
    state(b)->stats.waits++;
    GPU_CHECK(cudaDeviceSynchronize());
}

static const backend_ops gpu_ops_table = {
    g_alloc, g_release, g_embed, g_rmsnorm, g_linear, g_rope, g_ffn, g_ffn_batch, g_mla, g_route,
    g_zero, g_add, g_gather, g_scatter_add, g_to_host, g_from_host, g_destroy,
    1,  /* plans_batches */
    g_store_bf16, g_add_rmsnorm, g_finish, g_store_q8_0,
};

/* The resident pool, for the model's weights that stay on the GPU: one
 * allocation taken now, as the planner sized it, rather than one per array on
 * first use (the driver rounds each allocation up, by as much as 2 MB, which
 * the plan cannot see). The slack covers the arrays' alignment and the norms,
 * which the planner's total leaves out; whatever does not fit gets an
 * allocation of its own. */
static int open_resident_pool(gpu_state *st, const gpu_options *o, const char *device, errbuf *e)
{
    if (!o->resident_bytes)
        return 0;
    uint64_t n = gpu_pool_bytes(o->resident_bytes);
    if (cudaMalloc((void **)&st->res_pool, n) != cudaSuccess) {
        cudaGetLastError();
        st->res_pool = NULL;
        return err_set(e, "%s: cannot allocate %.2f GB for the dense and attention weights",
                       device, n / 1e9);
    }
    st->res_pool_bytes = n;
    GPU_MEM_CLOSE(st->res_pool, n);
    return 0;
}

/* The cache's slots (one allocation, taken now: no allocation mid-run), the
 * copy stream and the events of the slots and staging buffers. */
static int open_expert_cache(gpu_state *st, const gpu_options *o, const char *device, errbuf *e)
{
    uint64_t n = 0;
    if (o->expert_cache_bytes && o->expert_slot_bytes && o->n_expert_keys > 0) {
        n = o->expert_cache_bytes / o->expert_slot_bytes;
        if (n > (uint64_t)o->n_expert_keys)
            n = (uint64_t)o->n_expert_keys;
    }
    if (n) {
        uint64_t bytes = n * o->expert_slot_bytes;
        if (cudaMalloc(&st->slots, bytes) != cudaSuccess) {
            cudaGetLastError();
            uint64_t free_b = 0, total = 0;
            gpu_device_memory(o->device, &free_b, &total, NULL);
            st->slots = NULL;
            return err_set(e, "%s: cannot allocate the VRAM expert cache (%llu slots, %.3f GB; "
                           "%.3f GB free): lower --vram-gb", device, (unsigned long long)n,
                           bytes / 1e9, free_b / 1e9);
        }
        GPU_MEM_CLOSE(st->slots, bytes);
        cache_policy pol;
        const char *name = o->policy ? o->policy : "lru";
        int bad_policy = cache_policy_make(&pol, name, (int)n, o->n_expert_keys, o->policy_layers);
        if (bad_policy || expert_cache_init(&st->cache, o->n_expert_keys, (int)n, pol)) {
            cudaFree(st->slots);
            st->slots = NULL;
            return bad_policy ? err_set(e, "unknown cache policy '%s' or out of memory", name)
                              : err_set(e, "out of memory for the VRAM expert cache's table");
        }
        st->slot_bytes = o->expert_slot_bytes;
        st->n_keys = o->n_expert_keys;
        st->stats.slots = (int)n;
    }
    int n_buf = (int)n + 2;
    st->filled = (cudaEvent_t *)calloc((size_t)n_buf, sizeof *st->filled);
    st->freed = (cudaEvent_t *)calloc((size_t)n_buf, sizeof *st->freed);
    cudaError_t err = st->filled && st->freed ? cudaSuccess : cudaErrorMemoryAllocation;
    if (err == cudaSuccess)
        err = cudaStreamCreateWithFlags(&st->copy_stream, cudaStreamNonBlocking);
    for (int i = 0; i < n_buf && err == cudaSuccess; i++)
        if ((err = cudaEventCreateWithFlags(&st->filled[i], cudaEventDisableTiming)) == cudaSuccess)
            err = cudaEventCreateWithFlags(&st->freed[i], cudaEventDisableTiming);
    if (err != cudaSuccess) {
        cudaGetLastError();
        free_copy_state(st);
        return err_set(e, "%s: cannot create the expert copy stream and its events (%s)", device,
                       cudaGetErrorString(err));
    }
    return 0;
}

/* The cost model's GPU rates, before the expert cache takes its memory:
 * host-to-device copies of 32 MB from pinned and from pageable memory
 * (gpu_bench_copy); the GPU's read rate of a resident expert from the linear
 * kernel itself, on 256 MB of matrices of the experts' format and width at one
 * token (gpu_bench_linear; the emulation's kernels would take seconds for
 * that, so there a device-to-device copy stands in: read + write, twice its
 * rate). Defaults where something cannot be measured. */
static void measure_gpu_rates(hybrid_rates *r, int device, const linear_weight *expert_like)
{
    const size_t bytes = 32u << 20;
    r->copy_pinned = r->copy_pageable = 10e9;
    r->gpu = 1e12;
    gpu_copy_result c;
    errbuf ignored;
    if (!gpu_bench_copy(device, bytes, 0, &c, &ignored)) {
        r->copy_pinned = c.pinned_gbps * 1e9;
        r->copy_pageable = c.pageable_gbps * 1e9;
    }
#ifndef MOETIER_CUDA_EMU
    int fmt = expert_like ? expert_like->fmt : WF_INT4_GROUP;
    int cols = expert_like && expert_like->cols > 0 ? expert_like->cols : 7168;
    gpu_linear_result lr;
    if (!gpu_bench_linear(device, fmt, 2048, cols, 1, 256ull << 20, 2, &lr, &ignored) &&
        lr.ahead_gbps > 0)
        r->gpu = lr.ahead_gbps * 1e9;
#else
    void *dev = NULL;
    if (cudaMalloc(&dev, 2 * bytes) == cudaSuccess) {
        double best = 1e30;
        for (int rep = 0; rep < 3; rep++) {
            double t0 = now_seconds();
            GPU_CHECK(cudaMemcpy((char *)dev + bytes, dev, bytes, cudaMemcpyDeviceToDevice));
            GPU_CHECK(cudaDeviceSynchronize());
            double t = now_seconds() - t0;
            best = t < best ? t : best;
        }
        r->gpu = 2.0 * (double)bytes / (best > 1e-9 ? best : 1e-9);
        cudaFree(dev);
    }
#endif
    cudaGetLastError();
}

__global__ void k_probe(int *p)
{
    *p = 42;
}

extern "C" int gpu_backend_create(backend *b, const gpu_options *o, errbuf *e)
{
    int dev = o ? o->device : 0;
    char why[256];
    if (gpu_describe(dev, why, sizeof why))
        return err_set(e, "%s", why);
    cudaDeviceProp p;
    cudaError_t err;
    if ((err = cudaGetDeviceProperties(&p, dev)) != cudaSuccess ||
        (err = cudaSetDevice(dev)) != cudaSuccess)
        return err_set(e, "CUDA device %d: %s", dev, cudaGetErrorString(err));
    /* one tiny kernel proves the build's code runs on this device */
    int *probe = NULL, got = 0;
    if ((err = cudaMalloc(&probe, sizeof *probe)) == cudaSuccess) {
        GPU_LAUNCH(k_probe, 1, 1, 0, 0)(probe);
        if ((err = cudaGetLastError()) == cudaSuccess &&
            (err = cudaMemcpy(&got, probe, sizeof got, cudaMemcpyDeviceToHost)) == cudaSuccess &&
            got != 42)
            err = cudaErrorUnknown;
        cudaFree(probe);
    }
    if (err != cudaSuccess) {
        cudaGetLastError();
        return err_set(e, "cannot run this build's kernels on %s (sm_%d%d): %s", p.name, p.major,
                       p.minor, cudaGetErrorString(err));
    }
    gpu_state *st = (gpu_state *)calloc(1, sizeof *st);
    if (!st)
        return err_set(e, "out of memory");
    st->ordinal = dev;
    gpu_options none = {};
    if (!o)
        o = &none;
    /* without the ring (pinned memory refused) uploads wait, as cudaMemcpy does */
    if (cudaMallocHost((void **)&st->ring, UPLOAD_RING) != cudaSuccess) {
        cudaGetLastError();
        st->ring = NULL;
    }
    if (!o->rates && o->cpu_tokens == GPU_CPU_TOKENS_AUTO)
        measure_gpu_rates(&st->rates, dev, o->expert_like);
    if (open_resident_pool(st, o, p.name, e) || open_expert_cache(st, o, p.name, e)) {
        free_state(st);
        return -1;
    }
    if (o->cpu_tokens > 0 || o->cpu_tokens == GPU_CPU_TOKENS_AUTO) {
        st->cpu_tokens = o->cpu_tokens;
        st->cpu_auto = o->cpu_tokens == GPU_CPU_TOKENS_AUTO;
        st->path = kernel_path_default();
        if (thread_pool_create(&st->pool, o->cpu_threads, e) ||
            side_thread_create(&st->cpu_side, e)) {
            free_state(st);     /* the resident pool and the expert cache too */
            return -1;
        }
        if (o->rates)
            st->rates = *o->rates;
        else if (st->cpu_auto)
            hybrid_measure_cpu(&st->rates, st->path, st->pool, o->expert_like);
        /* without them the GPU's rate stays as measured */
        if (st->cpu_auto && (cudaEventCreate(&st->vram_timer[0]) != cudaSuccess ||
                             cudaEventCreate(&st->vram_timer[1]) != cudaSuccess)) {
            cudaGetLastError();
            if (st->vram_timer[0])
                cudaEventDestroy(st->vram_timer[0]);
            st->vram_timer[0] = st->vram_timer[1] = NULL;
        }
    }
    st->launches_before = launches_so_far;
    st->multiprocessors = p.multiProcessorCount;
    snprintf(st->device, sizeof st->device, "%.200s, sm_%d%d, %.1f GB", p.name, p.major, p.minor,
             (double)p.totalGlobalMem / 1e9);
    b->name = "cuda";
    b->ops = &gpu_ops_table;
    b->impl = st;
    b->bitwise_rows = 0;    /* each output's order is fixed whatever the tiling (gpu_twin.h) */
    return 0;
}

extern "C" const char *gpu_backend_device(const backend *b)
{
    return ((const gpu_state *)b->impl)->device;
}

extern "C" int gpu_backend_multiprocessors(const backend *b)
{
    return ((const gpu_state *)b->impl)->multiprocessors;
}

extern "C" uint64_t gpu_backend_resident_bytes(const backend *b)
{
    return ((const gpu_state *)b->impl)->resident_bytes;
}

extern "C" void gpu_backend_cache_stats(const backend *b, gpu_cache_stats *s)
{
    const gpu_state *st = (const gpu_state *)b->impl;
    *s = st->stats;
    s->launches = launches_so_far - st->launches_before;
    s->policy = st->slots ? st->cache.policy.name : NULL;
}

extern "C" void gpu_backend_rates(const backend *b, hybrid_rates *r)
{
    *r = ((const gpu_state *)b->impl)->rates;
}

extern "C" int gpu_backend_register_host(backend *b, void *p, uint64_t bytes, errbuf *e)
{
    gpu_state *st = state(b);
    if (st->n_registered == GPU_MAX_REGISTERED)
        return err_set(e, "cannot register more than %d host ranges", GPU_MAX_REGISTERED);
    cudaError_t err = cudaHostRegister(p, bytes, cudaHostRegisterDefault);
    if (err != cudaSuccess) {
        cudaGetLastError();
        return err_set(e, "cannot register %.3f GB of host memory with the device (%s)", bytes / 1e9,
                       cudaGetErrorString(err));
    }
    st->registered[st->n_registered++] = host_range{(const char *)p, (const char *)p + bytes};
    return 0;
}

extern "C" int gpu_device_memory(int device, uint64_t *free_bytes, uint64_t *total_bytes, errbuf *e)
{
    size_t f = 0, t = 0;
    char why[256];
    *free_bytes = *total_bytes = 0;
    if (gpu_describe(device, why, sizeof why))
        return err_set(e, "%s", why);
    cudaError_t err = cudaSetDevice(device);
    if (err == cudaSuccess)
        err = cudaMemGetInfo(&f, &t);
    *free_bytes = f;
    *total_bytes = t;
    if (err != cudaSuccess) {
        cudaGetLastError();
        return err_set(e, "no usable CUDA device %d (%s)", device, cudaGetErrorString(err));
    }
    return 0;
}
