/* mla_cpu: see mla_cpu.h. */
#include "mla_cpu.h"

#include <string.h>

#include "linear_ref.h"
#include "ops_ref.h"

static const float *cache_row(const mla_args *a, int s)
{
    return a->kv_cache + (size_t)s * (size_t)(a->kv_lora + a->rope);
}

/* The float32 view of one head's dequantized kv_b rows. */
static linear_weight head_weight(const mla_args *a, const float *W)
{
    linear_weight wf = {.fmt = WF_F32, .rows = a->nope + a->v, .cols = a->kv_lora, .data = W};
    return wf;
}

/* floats one worker needs: the head's rows, scores, three latent-sized vectors
 * (absorbed), or the expanded keys/values and the linear kernels' scratch */
static size_t worker_floats(const mla_args *a, int absorbed)
{
    size_t S = (size_t)(a->pos0 + a->T), C = (size_t)a->kv_lora, kvw = (size_t)(a->nope + a->v);
    size_t n = kvw * C + S + 3 * C;
    if (!absorbed) {
        linear_weight wf = head_weight(a, NULL);
        n += S * kvw + linear_forward_scratch(&wf, (int)S, 1);
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

static void expanded_head(const mla_job *j, int h, float *W, float *p, float *kv, float *lin_scratch)
{
    const mla_args *a = j->a;
    int S = a->pos0 + a->T, C = a->kv_lora, qk = a->nope + a->rope, H = a->H;
    int kvw = a->nope + a->v;
    /* kv[s][r] = W[r] . latent_s: a float32 product through the linear kernels */
    linear_weight wf = head_weight(a, W);
    linear_forward(j->path, NULL, &wf, j->latents, S, kv, lin_scratch);
    for (int t = 0; t < a->T; t++) {
        int n = a->pos0 + t + 1;
        const float *q = a->q + ((size_t)t * (size_t)H + (size_t)h) * (size_t)qk;
        for (int s = 0; s < n; s++) {
            const float *k = kv + (size_t)s * (size_t)kvw;
            p[s] = (dot_f32(q, k, a->nope) + dot_f32(q + a->nope, cache_row(a, s) + C, a->rope)) *
                   a->scale;
        }
        softmax_ref(p, n);
        float *o = a->out + ((size_t)t * (size_t)H + (size_t)h) * (size_t)a->v;
        memset(o, 0, (size_t)a->v * sizeof *o);
        for (int s = 0; s < n; s++) {
            const float *v = kv + (size_t)s * (size_t)kvw + a->nope;
            float ps = p[s];
            for (int k = 0; k < a->v; k++)
                o[k] += ps * v[k];
        }
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
    int h0, h1;
    pool_split(a->H, 1, worker, n_workers, &h0, &h1);
    for (int h = h0; h < h1; h++) {
        linear_dequant_rows(j->path, a->kv_b, h * kvw, kvw, W);
        if (j->absorbed)
            absorbed_head(j, h, W, p, b1, b2);
        else
            expanded_head(j, h, W, p, b3 + C, b3 + C + S * (size_t)kvw);
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
