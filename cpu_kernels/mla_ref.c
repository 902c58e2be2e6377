/* mla_ref: see mla_ref.h. Scores are (q_nope . k_nope + q_pe . k_pe) * scale,
 * softmax in float32 over positions 0..pos0+t, output sum_s p[s] v[s]. */
#include "mla_ref.h"

#include <math.h>
#include <string.h>

#include "core/engine/kv_q8.h"
#include "core/model/dtype.h"
#include "linear_ref.h"
#include "ops_ref.h"

/* Cache row s: latent at +0, rope key at +kv_lora. */
static const float *cache_row(const mla_args *a, int s)
{
    return a->kv_cache + (size_t)s * (size_t)(a->kv_lora + a->rope);
}

/* floats a bf16 or q8_0 cache takes widened (the reference reads float32 rows) */
static size_t widened_floats(const mla_args *a)
{
    return a->kv_bf16 || a->kv_q8 ? (size_t)(a->pos0 + a->T) * (size_t)(a->kv_lora + a->rope) : 0;
}

/* a with its bf16 or q8_0 cache widened into w (widened_floats), the scratch after it */
static mla_args widened(const mla_args *a, float **scratch)
{
    mla_args b = *a;
    size_t n = widened_floats(a);
    if (a->kv_bf16)
        bf16_widen(a->kv_bf16, n, *scratch);
    if (a->kv_q8) {
        int row = a->kv_lora + a->rope;
        size_t bytes = kv_q8_row_bytes(row);
        for (int s = 0; s < a->pos0 + a->T; s++)
            kv_q8_widen((const char *)a->kv_q8 + (size_t)s * bytes, row, 0, row,
                        *scratch + (size_t)s * (size_t)row);
    }
    if (n) {
        b.kv_cache = *scratch;
        b.kv_bf16 = NULL;
        b.kv_q8 = NULL;
        *scratch += n;
    }
    return b;
}

size_t mla_ref_naive_scratch(const mla_args *a)
{
    size_t S = (size_t)(a->pos0 + a->T);
    /* one head's expanded k_nope|v for every position, a row of scores, a dequant row */
    return S * (size_t)(a->nope + a->v) + S + (size_t)a->kv_lora + widened_floats(a);
}

void mla_ref_naive(const mla_args *a_in, float *scratch)
{
    mla_args wa = widened(a_in, &scratch);
    const mla_args *a = &wa;
    int S = a->pos0 + a->T, H = a->H, qk = a->nope + a->rope, kvw = a->nope + a->v;
    float *kv = scratch;                            /* [S][nope + v] of head h */
    float *p = kv + (size_t)S * (size_t)kvw;        /* [S] */
    float *row = p + S;
    /* head by head, so the expansion needs S x (nope + v) floats, not H times that */
    for (int h = 0; h < H; h++) {
        for (int r = 0; r < kvw; r++) {
            linear_ref_dequant_row(a->kv_b, h * kvw + r, row);
            for (int s = 0; s < S; s++)
                kv[(size_t)s * (size_t)kvw + (size_t)r] = dot_f32(row, cache_row(a, s), a->kv_lora);
        }
        for (int t = 0; t < a->T; t++) {
            int n = a->pos0 + t + 1;
            const float *q = a->q + ((size_t)t * (size_t)H + (size_t)h) * (size_t)qk;
            for (int s = 0; s < n; s++) {
                const float *k = kv + (size_t)s * (size_t)kvw;
                p[s] = (dot_f32(q, k, a->nope) +
                        dot_f32(q + a->nope, cache_row(a, s) + a->kv_lora, a->rope)) *
                       a->scale;
            }
            softmax_ref(p, n);
            float *o = a->out + ((size_t)t * (size_t)H + (size_t)h) * (size_t)a->v;
            memset(o, 0, (size_t)a->v * sizeof *o);
            for (int s = 0; s < n; s++) {
                const float *v = kv + (size_t)s * (size_t)kvw + a->nope;
                for (int j = 0; j < a->v; j++)
                    o[j] += p[s] * v[j];
            }
        }
    }
}

size_t mla_ref_absorbed_scratch(const mla_args *a)
{
    return (size_t)(a->pos0 + a->T) + 3 * (size_t)a->kv_lora + widened_floats(a);
}

void mla_ref_absorbed(const mla_args *a_in, float *scratch)
{
    mla_args wa = widened(a_in, &scratch);
    const mla_args *a = &wa;
    int S = a->pos0 + a->T, H = a->H, C = a->kv_lora, qk = a->nope + a->rope;
    int kvw = a->nope + a->v;
    float *p = scratch;          /* [S] */
    float *qa = p + S;           /* [C] absorbed query */
    float *ol = qa + C;          /* [C] attention output in latent space */
    float *row = ol + C;         /* [C] dequantised kv_b row */
    for (int t = 0; t < a->T; t++) {
        int n = a->pos0 + t + 1;
        for (int h = 0; h < H; h++) {
            const float *q = a->q + ((size_t)t * (size_t)H + (size_t)h) * (size_t)qk;
            /* qa = W_k[h]^T q_nope */
            memset(qa, 0, (size_t)C * sizeof *qa);
            for (int d = 0; d < a->nope; d++) {
                linear_ref_dequant_row(a->kv_b, h * kvw + d, row);
                for (int c = 0; c < C; c++)
                    qa[c] += q[d] * row[c];
            }
            for (int s = 0; s < n; s++)
                p[s] = (dot_f32(qa, cache_row(a, s), C) +
                        dot_f32(q + a->nope, cache_row(a, s) + C, a->rope)) *
                       a->scale;
            softmax_ref(p, n);
            memset(ol, 0, (size_t)C * sizeof *ol);
            for (int s = 0; s < n; s++) {
                const float *lat = cache_row(a, s);
                for (int c = 0; c < C; c++)
                    ol[c] += p[s] * lat[c];
            }
            /* out = W_v[h] ol */
            float *o = a->out + ((size_t)t * (size_t)H + (size_t)h) * (size_t)a->v;
            for (int j = 0; j < a->v; j++) {
                linear_ref_dequant_row(a->kv_b, h * kvw + a->nope + j, row);
                o[j] = dot_f32(row, ol, C);
            }
        }
    }
}
