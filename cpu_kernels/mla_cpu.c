/* mla_cpu: see mla_cpu.h. */
#include "mla_cpu.h"

#include <string.h>

#include "linear_ref.h"
#include "ops_ref.h"

static const float *cache_row(const mla_args *a, int s)
{
    return a->kv_cache + (size_t)s * (size_t)(a->kv_lora + a->rope);
}

/* queries per block of the expanded form: a block's scores are [MLA_QBLOCK][keys] */
#define MLA_QBLOCK 64

static linear_weight f32_weight(int rows, int cols, const float *data)
{
    linear_weight wf = {.fmt = WF_F32, .rows = rows, .cols = cols, .data = data};
    return wf;
}

/* the expanded form's per-worker buffers after the head's rows, scores and
 * latent-sized vectors */
typedef struct expanded_bufs {
    float *kv;          /* [S][nope + v] the head's expanded keys and values */
    float *keys;        /* [S][nope + rope] whole keys: k_nope and the shared rope key */
    float *vt;          /* [v][keys of a block] values transposed */
    float *qh;          /* [MLA_QBLOCK][nope + rope] a block's queries of the head */
    float *sc;          /* [MLA_QBLOCK][S] a block's scores, then probabilities */
    float *oh;          /* [MLA_QBLOCK][v] a block's outputs of the head */
    float *lin;         /* the linear kernels' scratch */
} expanded_bufs;

static size_t lin_scratch_floats(const mla_args *a)
{
    int S = a->pos0 + a->T, qk = a->nope + a->rope, kvw = a->nope + a->v;
    int qb = a->T < MLA_QBLOCK ? a->T : MLA_QBLOCK;
    linear_weight expand = f32_weight(kvw, a->kv_lora, NULL), keys = f32_weight(S, qk, NULL),
                  values = f32_weight(a->v, S, NULL);
    size_t n = linear_forward_scratch(&expand, S, 1), k = linear_forward_scratch(&keys, qb, 1),
           v = linear_forward_scratch(&values, qb, 1);
    n = k > n ? k : n;
    return v > n ? v : n;
}

/* floats one worker needs: the head's rows, scores and three latent-sized
 * vectors (absorbed), and the expanded form's buffers */
static size_t worker_floats(const mla_args *a, int absorbed)
{
    size_t S = (size_t)(a->pos0 + a->T), C = (size_t)a->kv_lora, kvw = (size_t)(a->nope + a->v);
    size_t n = kvw * C + S + 3 * C;
    if (!absorbed) {
        size_t qk = (size_t)(a->nope + a->rope), v = (size_t)a->v, qb = MLA_QBLOCK;
        n += S * kvw + S * qk + v * S + qb * qk + qb * S + qb * v + lin_scratch_floats(a);
    }
    return n;
}

size_t mla_cpu_scratch(const mla_args *a, int absorbed, int n_threads)
{
    size_t S = (size_t)(a->pos0 + a->T), C = (size_t)a->kv_lora;
    return (absorbed ? 0 : S * C) + (size_t)(n_threads > 0 ? n_threads : 1) * worker_floats(a, absorbed);
}

typedef struct mla_job {
    kernel_path path;
    const mla_args *a;
    int absorbed;
    const float *latents;       /* [S][C] contiguous (expanded form) */
    float *work;                /* per worker */
} mla_job;

static void absorbed_head(const mla_job *j, int h, float *W, float *p, float *qa, float *ol)
{
    const mla_args *a = j->a;
    int C = a->kv_lora, qk = a->nope + a->rope, H = a->H;
    for (int t = 0; t < a->T; t++) {
        int n = a->pos0 + t + 1;
        const float *q = a->q + ((size_t)t * (size_t)H + (size_t)h) * (size_t)qk;
        memset(qa, 0, (size_t)C * sizeof *qa);
        for (int d = 0; d < a->nope; d++) {     /* qa = W_k[h]^T q_nope */
            const float *wr = W + (size_t)d * (size_t)C;
            float qd = q[d];
            for (int c = 0; c < C; c++)
                qa[c] += qd * wr[c];
        }
        for (int s = 0; s < n; s++)
            p[s] = (dot_f32(qa, cache_row(a, s), C) +
                    dot_f32(q + a->nope, cache_row(a, s) + C, a->rope)) * a->scale;
        softmax_ref(p, n);
        memset(ol, 0, (size_t)C * sizeof *ol);
        for (int s = 0; s < n; s++) {
            const float *lat = cache_row(a, s);
            float ps = p[s];
            for (int c = 0; c < C; c++)
                ol[c] += ps * lat[c];
        }
        float *o = a->out + ((size_t)t * (size_t)H + (size_t)h) * (size_t)a->v;
        for (int k = 0; k < a->v; k++)          /* o = W_v[h] ol */
            o[k] = dot_f32(W + (size_t)(a->nope + k) * (size_t)C, ol, C);
    }
}

/* The expanded form as float32 matrix products through the linear kernels:
 * the head's keys and values from the cached latents, then per block of
 * queries the scores against every key the block's last query sees, the
 * causal softmax of each query's row (the keys after it zeroed), and the
 * probabilities times the values. */
static void expanded_head(const mla_job *j, int h, const float *W, const expanded_bufs *b)
{
    const mla_args *a = j->a;
    int S = a->pos0 + a->T, C = a->kv_lora, qk = a->nope + a->rope, H = a->H;
    int kvw = a->nope + a->v;
    linear_weight wf = f32_weight(kvw, C, W);
    linear_forward(j->path, NULL, &wf, j->latents, S, b->kv, b->lin);
    for (int s = 0; s < S; s++) {
        memcpy(b->keys + (size_t)s * (size_t)qk, b->kv + (size_t)s * (size_t)kvw,
               (size_t)a->nope * sizeof(float));
        memcpy(b->keys + (size_t)s * (size_t)qk + a->nope, cache_row(a, s) + C,
               (size_t)a->rope * sizeof(float));
    }
    for (int t0 = 0; t0 < a->T; t0 += MLA_QBLOCK) {
        int nq = a->T - t0 < MLA_QBLOCK ? a->T - t0 : MLA_QBLOCK, nk = a->pos0 + t0 + nq;
        for (int i = 0; i < nq; i++)
            memcpy(b->qh + (size_t)i * (size_t)qk,
                   a->q + ((size_t)(t0 + i) * (size_t)H + (size_t)h) * (size_t)qk,
                   (size_t)qk * sizeof(float));
        linear_weight keys = f32_weight(nk, qk, b->keys);
        linear_forward(j->path, NULL, &keys, b->qh, nq, b->sc, b->lin);
        for (int i = 0; i < nq; i++) {
            float *p = b->sc + (size_t)i * (size_t)nk;
            int n = a->pos0 + t0 + i + 1;
            for (int s = 0; s < n; s++)
                p[s] *= a->scale;
            softmax_ref(p, n);
            memset(p + n, 0, (size_t)(nk - n) * sizeof *p);
        }
        for (int k = 0; k < a->v; k++) {
            float *vk = b->vt + (size_t)k * (size_t)nk;
            const float *src = b->kv + a->nope + k;
            for (int s = 0; s < nk; s++)
                vk[s] = src[(size_t)s * (size_t)kvw];
        }
        linear_weight values = f32_weight(a->v, nk, b->vt);
        linear_forward(j->path, NULL, &values, b->sc, nq, b->oh, b->lin);
        for (int i = 0; i < nq; i++)
            memcpy(a->out + ((size_t)(t0 + i) * (size_t)H + (size_t)h) * (size_t)a->v,
                   b->oh + (size_t)i * (size_t)a->v, (size_t)a->v * sizeof(float));
    }
}

static void run_heads(void *ctx, int worker, int n_workers)
{
    mla_job *j = ctx;
    const mla_args *a = j->a;
    size_t S = (size_t)(a->pos0 + a->T), C = (size_t)a->kv_lora;
    int kvw = a->nope + a->v;
    float *W = j->work + (size_t)worker * worker_floats(a, j->absorbed);
    float *p = W + (size_t)kvw * C, *b1 = p + S, *b2 = b1 + C, *b3 = b2 + C;
    size_t qk = (size_t)(a->nope + a->rope), v = (size_t)a->v, qb = MLA_QBLOCK;
    expanded_bufs eb = {0};
    if (!j->absorbed) {
        eb.kv = b3 + C;
        eb.keys = eb.kv + S * (size_t)kvw;
        eb.vt = eb.keys + S * qk;
        eb.qh = eb.vt + v * S;
        eb.sc = eb.qh + qb * qk;
        eb.oh = eb.sc + qb * S;
        eb.lin = eb.oh + qb * v;
    }
    int h0, h1;
    pool_split(a->H, 1, worker, n_workers, &h0, &h1);
    for (int h = h0; h < h1; h++) {
        linear_dequant_rows(j->path, a->kv_b, h * kvw, kvw, W);
        if (j->absorbed)
            absorbed_head(j, h, W, p, b1, b2);
        else
            expanded_head(j, h, W, &eb);
    }
}

void mla_cpu(kernel_path path, thread_pool *pool, const mla_args *a, int absorbed, float *scratch)
{
    size_t S = (size_t)(a->pos0 + a->T), C = (size_t)a->kv_lora;
    mla_job j = {.path = path, .a = a, .absorbed = absorbed};
    float *work = scratch;
    if (!absorbed) {
        float *lat = scratch;
        for (size_t s = 0; s < S; s++)
            memcpy(lat + s * C, cache_row(a, (int)s), C * sizeof *lat);
        j.latents = lat;
        work = scratch + S * C;
    }
    j.work = work;
    if (pool && thread_pool_size(pool) > 1 && a->H > 1)
        thread_pool_run(pool, run_heads, &j);
    else
        run_heads(&j, 0, 1);
}
