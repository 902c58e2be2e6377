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

/* One block per token and group of HG heads: every cached latent and rope key
 * is read once for the group's heads (the absorbed form's queries all look at
 * the same cache), OLP latent columns per thread. */
template <int HG, int OLP> __global__ void k_mla_attend(gpu_mla_args a)
{
    GPU_DYNAMIC_SMEM(float, sm);
    int h0 = blockIdx.x * HG, t = blockIdx.y, C = a.kv_lora, R = a.rope, tid = threadIdx.x;
    int nh = a.H - h0 < HG ? a.H - h0 : HG;
    size_t row = (size_t)(C + R);
    float *sqa = sm, *sqr = sqa + HG * C, *sp = sqr + HG * R, *red = sp + HG * ATT;
    for (int g = 0; g < HG; g++) {      /* a group's missing heads: zero queries */
        size_t th = (size_t)t * (size_t)a.H + (size_t)(h0 + g);
        for (int i = tid; i < C; i += ATT)
            sqa[g * C + i] = g < nh ? a.qa[th * (size_t)C + (size_t)i] : 0.0f;
        for (int i = tid; i < R; i += ATT)
            sqr[g * R + i] = g < nh ? a.q[th * (size_t)(a.nope + R) + (size_t)(a.nope + i)] : 0.0f;
    }
    __syncthreads();
    int n = a.pos0 + t + 1;         /* causal: positions 0 .. pos0 + t */
    float ol[HG][OLP], m[HG], l[HG];
#pragma unroll
    for (int g = 0; g < HG; g++) {
        m[g] = -INFINITY;
        l[g] = 0.0f;
#pragma unroll
        for (int j = 0; j < OLP; j++)
            ol[g][j] = 0.0f;
    }
    for (int s0 = 0; s0 < n; s0 += ATT) {
        int s = s0 + tid;
        float sc[HG], alpha[HG];
#pragma unroll
        for (int g = 0; g < HG; g++)
            sc[g] = -INFINITY;
        if (s < n) {
            const float *kv = a.kv_cache + (size_t)s * row;
            float d1[HG], d2[HG];
#pragma unroll
            for (int g = 0; g < HG; g++)
                d1[g] = d2[g] = 0.0f;
            for (int c = 0; c < C; c++) {
                float k = kv[c];
#pragma unroll
                for (int g = 0; g < HG; g++)
                    d1[g] = fmaf(sqa[g * C + c], k, d1[g]);
            }
            for (int c = 0; c < R; c++) {
                float k = kv[C + c];
#pragma unroll
                for (int g = 0; g < HG; g++)
                    d2[g] = fmaf(sqr[g * R + c], k, d2[g]);
            }
#pragma unroll
            for (int g = 0; g < HG; g++)
                sc[g] = (d1[g] + d2[g]) * a.scale;
        }
        float mt[HG];
#pragma unroll
        for (int g = 0; g < HG; g++)
            mt[g] = sc[g];
        block_reduce_n<HG>(mt, red, true);
        float p[HG];
#pragma unroll
        for (int g = 0; g < HG; g++) {
            float mnew = fmaxf(m[g], mt[g]);
            alpha[g] = expf(m[g] - mnew);       /* 0 on the first tile */
            p[g] = s < n ? expf(sc[g] - mnew) : 0.0f;
            sp[g * ATT + tid] = p[g];
            m[g] = mnew;
        }
        block_reduce_n<HG>(p, red, false);      /* its barriers also publish sp */
#pragma unroll
        for (int g = 0; g < HG; g++)
            l[g] = l[g] * alpha[g] + p[g];
        int ns = n - s0 < ATT ? n - s0 : ATT;
#pragma unroll
        for (int j = 0; j < OLP; j++) {
            int c = tid + j * ATT;
            if (c < C) {
                float acc[HG];
#pragma unroll
                for (int g = 0; g < HG; g++)
                    acc[g] = ol[g][j] * alpha[g];
                for (int k = 0; k < ns; k++) {
                    float kv = a.kv_cache[(size_t)(s0 + k) * row + (size_t)c];
#pragma unroll
                    for (int g = 0; g < HG; g++)
                        acc[g] = fmaf(sp[g * ATT + k], kv, acc[g]);
                }
#pragma unroll
                for (int g = 0; g < HG; g++)
                    ol[g][j] = acc[g];
            }
        }
        __syncthreads();    /* sp is rewritten by the next tile */
    }
#pragma unroll
    for (int g = 0; g < HG; g++) {
        if (g >= nh)
            break;
        size_t th = (size_t)t * (size_t)a.H + (size_t)(h0 + g);
        float inv = 1.0f / l[g];
#pragma unroll
        for (int j = 0; j < OLP; j++) {
            int c = tid + j * ATT;
            if (c < C)
                a.ol[th * (size_t)C + (size_t)c] = ol[g][j] * inv;
        }
    }
}

/* heads per block when the latent is at most 2 x ATT columns (DeepSeek-V3 and
 * Kimi K2: 512): the cache is read once per 8 heads instead of once per head */
#define MLA_HEADS 8

template <int HG, int OLP> static void launch_attend(const gpu_mla_args *a, cudaStream_t s)
{
    dim3 grid((unsigned)((a->H + HG - 1) / HG), (unsigned)a->T);
    size_t smem = (size_t)HG * (size_t)(a->kv_lora + a->rope + ATT + 32) * sizeof(float);
    void (*kernel)(gpu_mla_args) = k_mla_attend<HG, OLP>;
    GPU_LAUNCH(kernel, grid, ATT, smem, s)(*a);
}

void gpu_mla(const gpu_mla_args *a, cudaStream_t s)
{
    if (a->T <= 0)
        return;
    dim3 grid((unsigned)a->H, (unsigned)a->T);
    GPU_LAUNCH(k_mla_absorb_q, grid, ATT, 0, s)(*a);
    GPU_LAUNCHED("mla absorb q");
    /* within the 48 KB of shared memory a block may take without opting in */
    if (a->kv_lora <= 2 * ATT && a->H > 1 &&
        MLA_HEADS * (a->kv_lora + a->rope + ATT + 32) * sizeof(float) <= 48 * 1024)
        launch_attend<MLA_HEADS, 2>(a, s);
    else
        launch_attend<1, OL_PER_THREAD>(a, s);
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
