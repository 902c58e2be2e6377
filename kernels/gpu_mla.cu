/* gpu_mla: MLA attention on the device in the absorbed form, for decode and
 * prefill alike (see mla_ref.c for the math both forms compute):
 *   1. qa[t][h] = W_k[h]^T q_nope[t][h]            (k_mla_absorb_q)
 *   2. scores against every cached latent and rope key, softmax, and the
 *      attention-weighted sum of latents ol[t][h]    (k_mla_attend)
 *   3. out[t][h] = W_v[h] ol[t][h]                   (gpu_linear, a group per head)
 * Step 2 keeps a running maximum and sum (one pass over the cache in tiles of
 * ATT positions), so no row of scores as long as the context is ever stored. */
#include <math.h>

#include "gpu_ops.cuh"

#define ATT 256                                     /* threads, and positions per tile */
#define OL_PER_THREAD (GPU_MLA_MAX_LORA / ATT)

__global__ void k_mla_absorb_q(gpu_mla_args a)
{
    int h = blockIdx.x, t = blockIdx.y, C = a.kv_lora, kvw = a.nope + a.v;
    size_t th = (size_t)t * (size_t)a.H + (size_t)h;
    const float *q = a.q + th * (size_t)(a.nope + a.rope);
    float *qa = a.qa + th * (size_t)C;
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
        float acc = 0.0f;
        for (int d = 0; d < a.nope; d++)
            acc = fmaf(q[d], gw_at(a.kv_b, h * kvw + d, c), acc);
        qa[c] = acc;
    }
}

__global__ void k_mla_attend(gpu_mla_args a)
{
    GPU_DYNAMIC_SMEM(float, sm);
    int h = blockIdx.x, t = blockIdx.y, C = a.kv_lora, R = a.rope, tid = threadIdx.x;
    size_t row = (size_t)(C + R), th = (size_t)t * (size_t)a.H + (size_t)h;
    float *sqa = sm, *sqr = sm + C, *sp = sqr + R, *red = sp + ATT;
    const float *q = a.q + th * (size_t)(a.nope + R);
    for (int i = tid; i < C; i += ATT)
        sqa[i] = a.qa[th * (size_t)C + (size_t)i];
    for (int i = tid; i < R; i += ATT)
        sqr[i] = q[a.nope + i];
    __syncthreads();
    int n = a.pos0 + t + 1;         /* causal: positions 0 .. pos0 + t */
    float ol[OL_PER_THREAD];
#pragma unroll
    for (int j = 0; j < OL_PER_THREAD; j++)
        ol[j] = 0.0f;
    float m = -INFINITY, l = 0.0f;
    for (int s0 = 0; s0 < n; s0 += ATT) {
        int s = s0 + tid;
        float sc = -INFINITY;
        if (s < n) {
            const float *kv = a.kv_cache + (size_t)s * row;
            float d1 = 0.0f, d2 = 0.0f;
            for (int c = 0; c < C; c++)
                d1 = fmaf(sqa[c], kv[c], d1);
            for (int c = 0; c < R; c++)
                d2 = fmaf(sqr[c], kv[C + c], d2);
            sc = (d1 + d2) * a.scale;
        }
        float mnew = fmaxf(m, block_reduce(sc, red, true));
        float alpha = expf(m - mnew);               /* 0 on the first tile */
        float p = s < n ? expf(sc - mnew) : 0.0f;
        sp[tid] = p;
        l = l * alpha + block_reduce(p, red, false);  /* its syncs also publish sp */
        int ns = n - s0 < ATT ? n - s0 : ATT;
#pragma unroll
        for (int j = 0; j < OL_PER_THREAD; j++) {
            int c = tid + j * ATT;
            if (c < C) {
                float acc = ol[j] * alpha;
                for (int k = 0; k < ns; k++)
                    acc = fmaf(sp[k], a.kv_cache[(size_t)(s0 + k) * row + (size_t)c], acc);
                ol[j] = acc;
            }
        }
        m = mnew;
        __syncthreads();    /* sp is rewritten by the next tile */
    }
    float inv = 1.0f / l;
#pragma unroll
    for (int j = 0; j < OL_PER_THREAD; j++) {
        int c = tid + j * ATT;
        if (c < C)
            a.ol[th * (size_t)C + (size_t)c] = ol[j] * inv;
    }
}

void gpu_mla(const gpu_mla_args *a, cudaStream_t s)
{
    if (a->T <= 0)
        return;
    dim3 grid((unsigned)a->H, (unsigned)a->T);
    GPU_LAUNCH(k_mla_absorb_q, grid, ATT, 0, s)(*a);
    GPU_LAUNCHED("mla absorb q");
    size_t smem = (size_t)(a->kv_lora + a->rope + ATT + 32) * sizeof(float);
    GPU_LAUNCH(k_mla_attend, grid, ATT, smem, s)(*a);
    GPU_LAUNCHED("mla attend");
    int kvw = a->nope + a->v;
    gpu_lin o = {};
    o.w = a->kv_b;
    o.row0 = a->nope;
    o.nrows = a->v;
    o.row_step = kvw;
    o.groups = a->H;
    o.x = a->ol;
    o.xs = (size_t)a->H * (size_t)a->kv_lora;
    o.x_step = (size_t)a->kv_lora;
    o.y = a->out;
    o.ys = (size_t)a->H * (size_t)a->v;
    o.y_step = (size_t)a->v;
    o.T = a->T;
    gpu_linear(&o, s);
}
