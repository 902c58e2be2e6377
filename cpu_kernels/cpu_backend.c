/* cpu_backend: see cpu_backend.h. */
#include "cpu_backend.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/engine/kv_q8.h"
#include "core/model/dtype.h"
#include "ffn_cpu.h"
#include "linear_ref.h"
#include "mla_cpu.h"
#include "ops_ref.h"
#include "router_ref.h"

typedef struct cpu_state {
    float *scratch;
    size_t scratch_n;
    thread_pool *pool;
    kernel_path path;
    int invariant;              /* cpu_options.batch_invariant */
    ffn_job *parts;             /* (invariant) the FFN jobs cut into parts */
    int parts_n;
} cpu_state;

/* A growing scratch area; the engine sizes calls so this stays bounded. An
 * allocation failure here is unrecoverable mid-forward, so it aborts with a
 * message rather than computing garbage. */
static float *cpu_scratch(backend *b, size_t n)
{
    cpu_state *s = b->impl;
    if (n > s->scratch_n) {
        float *p = realloc(s->scratch, n * sizeof *p);
        if (!p) {
            fprintf(stderr, "moetier: out of memory for %zu floats of CPU scratch\n", n);
            abort();
        }
        s->scratch = p;
        s->scratch_n = n;
    }
    return s->scratch;
}

static float *cpu_alloc(backend *b, size_t n)
{
    (void)b;
    return calloc(n ? n : 1, sizeof(float));
}

static void cpu_release(backend *b, float *p)
{
    (void)b;
    free(p);
}

static void cpu_embed(backend *b, const linear_weight *emb, const int *ids, int T, float *out)
{
    (void)b;
    for (int t = 0; t < T; t++)
        linear_ref_dequant_row(emb, ids[t], out + (size_t)t * (size_t)emb->cols);
}

static void cpu_rmsnorm(backend *b, const float *x, int xs, const float *w, int n, int T,
                        float eps, float *out, int os)
{
    (void)b;
    rmsnorm_ref(x, xs, w, n, T, eps, out, os);
}

/* tokens per FFN job: all, or in batch-invariant mode at most the row kernels' */
static int part_tokens(const backend *b, int T)
{
    const cpu_state *s = b->impl;
    return s->invariant && T > LINEAR_ROWS_MAX_T ? LINEAR_ROWS_MAX_T : T;
}

static void cpu_linear(backend *b, const linear_weight *w, const float *x, int T, float *y)
{
    cpu_state *s = b->impl;
    float *scratch = cpu_scratch(b, linear_forward_scratch(w, part_tokens(b, T),
                                                           thread_pool_size(s->pool)));
    if (s->invariant)
        linear_forward_invariant(s->path, s->pool, w, x, T, y, scratch);
    else
        linear_forward(s->path, s->pool, w, x, T, y, scratch);
}

static void cpu_rope(backend *b, float *x, int T, int n_vec, int ts, int vs, int off, int dim,
                     const int *pos, const float *inv_freq, float mscale)
{
    (void)b;
    rope_ref(x, T, n_vec, ts, vs, off, dim, pos, inv_freq, mscale);
}

/* The jobs as they run: in batch-invariant mode, each of more tokens than
 * the row kernels take cut into parts of their rows of x and out. */
static const ffn_job *job_parts(backend *b, const ffn_job *jobs, int *n)
{
    cpu_state *s = b->impl;
    int m = 0;
    for (int i = 0; i < *n; i++) {
        int part = part_tokens(b, jobs[i].T);
        m += jobs[i].T > part ? (jobs[i].T + part - 1) / part : 1;
    }
    if (m == *n)
        return jobs;
    if (m > s->parts_n) {
        ffn_job *p = realloc(s->parts, (size_t)m * sizeof *p);
        if (!p) {
            fprintf(stderr, "moetier: out of memory for %d FFN parts\n", m);
            abort();
        }
        s->parts = p;
        s->parts_n = m;
    }
    m = 0;
    for (int i = 0; i < *n; i++) {
        const ffn_job *j = &jobs[i];
        int part = part_tokens(b, j->T);
        if (j->T <= part) {
            s->parts[m++] = *j;
            continue;
        }
        for (int t0 = 0; t0 < j->T; t0 += part) {
            ffn_job *q = &s->parts[m++];
            *q = *j;
            q->x = j->x + (size_t)t0 * (size_t)j->gate->cols;
            q->out = j->out + (size_t)t0 * (size_t)j->down->rows;
            q->T = j->T - t0 < part ? j->T - t0 : part;
        }
    }
    *n = m;
    return s->parts;
}

static void cpu_ffn_batch(backend *b, const ffn_job *jobs, int n)
{
    cpu_state *s = b->impl;
    jobs = job_parts(b, jobs, &n);
    ffn_cpu_run(s->path, s->pool, jobs, n,
                cpu_scratch(b, ffn_cpu_scratch(jobs, n, thread_pool_size(s->pool))));
}

static void cpu_ffn(backend *b, const linear_weight *gate, const linear_weight *up,
                    const linear_weight *down, const float *x, int T, float *out)
{
    ffn_job j = {gate, up, down, x, T, out, -1, 0, 0};
    cpu_ffn_batch(b, &j, 1);
}

static void cpu_mla(backend *b, const mla_args *a)
{
    cpu_state *s = b->impl;
    int absorbed = s->invariant || mla_cpu_absorbs(a), nt = thread_pool_size(s->pool);
    mla_cpu(s->path, s->pool, a, absorbed, cpu_scratch(b, mla_cpu_scratch(a, absorbed, nt)));
}

static void cpu_route(backend *b, const route_params *p, const float *logits, const float *bias,
                      int T, int *ids, float *weights, float *scores)
{
    float *scratch = cpu_scratch(b, route_ref_scratch(p));
    size_t E = (size_t)p->n_experts, K = (size_t)p->top_k;
    for (int t = 0; t < T; t++)
        route_ref(p, logits + (size_t)t * E, bias, ids + (size_t)t * K, weights + (size_t)t * K,
                  scores ? scores + (size_t)t * E : NULL, scratch);
}

static void cpu_zero(backend *b, float *p, size_t n)
{
    (void)b;
    memset(p, 0, n * sizeof *p);
}

static void cpu_add(backend *b, float *y, const float *x, size_t n)
{
    (void)b;
    for (size_t i = 0; i < n; i++)
        y[i] += x[i];
}

static void cpu_gather(backend *b, const float *src, const int *idx, int n, int dim, float *dst)
{
    (void)b;
    for (int i = 0; i < n; i++)
        memcpy(dst + (size_t)i * (size_t)dim, src + (size_t)idx[i] * (size_t)dim,
               (size_t)dim * sizeof *dst);
}

static void cpu_scatter_add(backend *b, float *dst, const int *idx, const float *w, int n, int dim,
                            const float *src)
{
    (void)b;
    for (int i = 0; i < n; i++) {
        float *d = dst + (size_t)idx[i] * (size_t)dim;
        const float *s = src + (size_t)i * (size_t)dim;
        for (int j = 0; j < dim; j++)
            d[j] += w[i] * s[j];
    }
}

static void cpu_copy(backend *b, float *dst, const float *src, size_t n)
{
    (void)b;
    memmove(dst, src, n * sizeof *dst);
}

static void cpu_store_bf16(backend *b, float *dst, const float *src, size_t n)
{
    (void)b;
    uint16_t *d = (uint16_t *)(void *)dst;
    for (size_t i = 0; i < n; i++)
        d[i] = f32_to_bf16(src[i]);
}

static void cpu_store_q8_0(backend *b, float *dst, const float *src, int T, int row)
{
    (void)b;
    size_t bytes = kv_q8_row_bytes(row);
    for (int t = 0; t < T; t++)
        kv_q8_quantize(src + (size_t)t * (size_t)row, row, (char *)dst + (size_t)t * bytes);
}

static void cpu_destroy(backend *b)
{
    cpu_state *s = b->impl;
    if (s) {
        free(s->scratch);
        free(s->parts);
        thread_pool_destroy(s->pool);
    }
    free(s);
    b->impl = NULL;
}

static const backend_ops cpu_ops = {
    .alloc = cpu_alloc,
    .release = cpu_release,
    .embed = cpu_embed,
    .rmsnorm = cpu_rmsnorm,
    .linear = cpu_linear,
    .rope = cpu_rope,
    .ffn = cpu_ffn,
    .ffn_batch = cpu_ffn_batch,
    .mla_attention = cpu_mla,
    .route = cpu_route,
    .zero = cpu_zero,
    .add = cpu_add,
    .gather_rows = cpu_gather,
    .scatter_add_rows = cpu_scatter_add,
    .to_host = cpu_copy,
    .from_host = cpu_copy,
    .store_bf16 = cpu_store_bf16,
    .store_q8_0 = cpu_store_q8_0,
    .destroy = cpu_destroy,
};

int cpu_backend_create_opts(backend *b, const cpu_options *o, errbuf *e)
{
    kernel_path path = o->path_set ? o->path : kernel_path_default();
    if (!kernel_path_supported(path))
        return err_set(e, "this CPU cannot run the %s kernels", kernel_path_name(path));
    cpu_state *s = calloc(1, sizeof *s);
    if (!s)
        return err_set(e, "out of memory");
    s->path = path;
    s->invariant = o->batch_invariant;
    if (thread_pool_create(&s->pool, o->threads, e)) {
        free(s);
        return -1;
    }
    b->name = "cpu";
    b->ops = &cpu_ops;
    b->impl = s;
    b->bitwise_rows = path == KPATH_SCALAR ? 0 : LINEAR_ROWS_MAX_T;
    return 0;
}

int cpu_backend_create(backend *b, errbuf *e)
{
    cpu_options o = {0};
    return cpu_backend_create_opts(b, &o, e);
}

kernel_path cpu_backend_path(const backend *b)
{
    return ((const cpu_state *)b->impl)->path;
}

int cpu_backend_invariant(const backend *b)
{
    return ((const cpu_state *)b->impl)->invariant;
}

int cpu_backend_threads(const backend *b)
{
    return thread_pool_size(((const cpu_state *)b->impl)->pool);
}

int cpu_backend_set_threads(backend *b, int threads, errbuf *e)
{
    cpu_state *s = b->impl;
    thread_pool *pool;
    if (thread_pool_create(&pool, threads, e))
        return -1;
    thread_pool_destroy(s->pool);
    s->pool = pool;
    return 0;
}
