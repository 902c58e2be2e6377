/* gpu_mla: MLA attention on the device in the absorbed form, for decode and
 * prefill alike (see mla_ref.c for the math both forms compute):
 *   1. qa[t][h] = W_k[h]^T q_nope[t][h]            (k_mla_absorb_q)
 *   2. scores against every cached latent and rope key, softmax, and the
 *      attention-weighted sum of latents ol[t][h]    (k_mla_attend)
 *   3. out[t][h] = W_v[h] ol[t][h]                   (gpu_linear, a group per head)
 * Step 2 folds the cache in chunks of ATT positions, each with its maximum and
 * sum (so no row of scores as long as the context is ever stored), in one
 * block per token and heads, or, for few tokens and a long context, in a block
 * per chunk too and one more kernel that folds them (k_mla_merge). */
#include <math.h>

#include "gpu_ops.cuh"

#define ATT 256             /* threads, and positions per tile and per chunk */
#define OL_PER_THREAD (GPU_MLA_MAX_LORA / ATT)

/* tokens per block of k_mla_absorb_q: each weight of W_k[h] read once for them */
#define ABSORB_TOKENS 8

/* One block per head and ABSORB_TOKENS tokens, a thread per latent column:
 * each token's sum runs over d in order, however many tokens share the block. */
__global__ void k_mla_absorb_q(gpu_mla_args a)
{
    int h = blockIdx.x, t0 = blockIdx.y * ABSORB_TOKENS, C = a.kv_lora, kvw = a.nope + a.v;
    int nt = a.T - t0 < ABSORB_TOKENS ? a.T - t0 : ABSORB_TOKENS;
    size_t qk = (size_t)(a.nope + a.rope), q_step = (size_t)a.H * qk;
    const float *q = a.q + ((size_t)t0 * (size_t)a.H + (size_t)h) * qk;
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
        float acc[ABSORB_TOKENS];
#pragma unroll
        for (int t = 0; t < ABSORB_TOKENS; t++)
            acc[t] = 0.0f;
        for (int d = 0; d < a.nope; d++) {
            float w = gw_at(a.kv_b, h * kvw + d, c);
#pragma unroll
            for (int t = 0; t < ABSORB_TOKENS; t++)
                if (t < nt)
                    acc[t] = fmaf(q[(size_t)t * q_step + (size_t)d], w, acc[t]);
        }
        for (int t = 0; t < nt; t++)
            a.qa[((size_t)(t0 + t) * (size_t)a.H + (size_t)h) * (size_t)C + (size_t)c] = acc[t];
    }
}

/* The attention of a token is a fold over its positions in chunks of ATT, in
 * order: a chunk gives the maximum m of its scores, the sum l of
 * exp(score - m) and the sum o of exp(score - m) x latent, and the running
 * (M, L, O) takes each chunk with the weights below. Either one block folds
 * all chunks of its token, or every chunk has a block of its own that writes
 * its (m, l, o) and k_mla_merge folds them: the same operations in the same
 * order, so the same bits whichever ran (a long context with few tokens needs
 * the second to keep more than a few multiprocessors busy). */
__device__ __forceinline__ void mla_merge(float &M, float &L, float m, float l, float &wa, float &wb)
{
    float mn = fmaxf(M, m);
    wa = expf(M - mn);      /* 0 for the first chunk (M = -inf) */
    wb = expf(m - mn);
    M = mn;
    L = fmaf(l, wb, __fmul_rn(L, wa));
}

/* __fmul_rn: never fused into an fma, which the compiler could do in one
 * kernel and not in the other */
__device__ __forceinline__ float mla_merged(float O, float o, float wa, float wb)
{
    return fmaf(o, wb, __fmul_rn(O, wa));
}

static __host__ __device__ int mla_chunks(int positions)
{
    return (positions + ATT - 1) / ATT;
}

/* a chunk's (m, l, o[kv_lora]) in part: [token][head][chunk of the batch's last token] */
__device__ __forceinline__ float *mla_part(const gpu_mla_args &a, int t, int h, int chunk)
{
    size_t per_head = (size_t)mla_chunks(a.pos0 + a.T) * (size_t)(a.kv_lora + 2);
    return a.part + ((size_t)t * (size_t)a.H + (size_t)h) * per_head +
           (size_t)chunk * (size_t)(a.kv_lora + 2);
}

/* One block per token and group of HG heads (and per chunk, with a.part):
 * every cached latent and rope key is read once for the group's heads (the
 * absorbed form's queries all look at the same cache), OLP latent columns per
 * thread. */
template <int HG, int OLP> __global__ void k_mla_attend(gpu_mla_args a)
{
    GPU_DYNAMIC_SMEM(float, sm);
    int h0 = blockIdx.x * HG, t = blockIdx.y, C = a.kv_lora, R = a.rope, tid = threadIdx.x;
    int nh = a.H - h0 < HG ? a.H - h0 : HG;
    int n = a.pos0 + t + 1;         /* causal: positions 0 .. pos0 + t */
    int first = a.part ? (int)blockIdx.z * ATT : 0, end = a.part ? first + ATT : n;
    if (first >= n)
        return;                     /* an earlier token, with fewer chunks */
    end = end < n ? end : n;
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
    float O[HG][OLP], M[HG], L[HG];
#pragma unroll
    for (int g = 0; g < HG; g++) {
        M[g] = -INFINITY;
        L[g] = 0.0f;
#pragma unroll
        for (int j = 0; j < OLP; j++)
            O[g][j] = 0.0f;
    }
    for (int s0 = first; s0 < end; s0 += ATT) {
        int s = s0 + tid;
        float sc[HG];
#pragma unroll
        for (int g = 0; g < HG; g++)
            sc[g] = -INFINITY;
        if (s < end) {
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
        float m[HG], l[HG], wa[HG] = {}, wb[HG] = {};
#pragma unroll
        for (int g = 0; g < HG; g++)
            m[g] = sc[g];
        block_reduce_n<HG>(m, red, true);
#pragma unroll
        for (int g = 0; g < HG; g++) {
            l[g] = s < end ? expf(sc[g] - m[g]) : 0.0f;
            sp[g * ATT + tid] = l[g];
        }
        block_reduce_n<HG>(l, red, false);      /* its barriers also publish sp */
        if (!a.part) {
#pragma unroll
            for (int g = 0; g < HG; g++)
                mla_merge(M[g], L[g], m[g], l[g], wa[g], wb[g]);
        } else if (tid == 0) {
            for (int g = 0; g < nh; g++) {
                float *pp = mla_part(a, t, h0 + g, blockIdx.z);
                pp[0] = m[g];
                pp[1] = l[g];
            }
        }
        int ns = end - s0 < ATT ? end - s0 : ATT;
#pragma unroll
        for (int j = 0; j < OLP; j++) {
            int c = tid + j * ATT;
            if (c < C) {
                float o[HG];
#pragma unroll
                for (int g = 0; g < HG; g++)
                    o[g] = 0.0f;
                for (int k = 0; k < ns; k++) {
                    float kv = a.kv_cache[(size_t)(s0 + k) * row + (size_t)c];
#pragma unroll
                    for (int g = 0; g < HG; g++)
                        o[g] = fmaf(sp[g * ATT + k], kv, o[g]);
                }
                if (!a.part) {
#pragma unroll
                    for (int g = 0; g < HG; g++)
                        O[g][j] = mla_merged(O[g][j], o[g], wa[g], wb[g]);
                } else {
                    for (int g = 0; g < nh; g++)
                        mla_part(a, t, h0 + g, blockIdx.z)[2 + c] = o[g];
                }
            }
        }
        __syncthreads();    /* sp is rewritten by the next tile */
    }
    if (a.part)
        return;
#pragma unroll
    for (int g = 0; g < HG; g++) {
        if (g >= nh)
            break;
        size_t th = (size_t)t * (size_t)a.H + (size_t)(h0 + g);
        float inv = 1.0f / L[g];
#pragma unroll
        for (int j = 0; j < OLP; j++) {
            int c = tid + j * ATT;
            if (c < C)
                a.ol[th * (size_t)C + (size_t)c] = O[g][j] * inv;
        }
    }
}

/* The chunks' blocks done, one block per token and head folds its chunks in
 * order, as k_mla_attend does when one block takes them all. */
__global__ void k_mla_merge(gpu_mla_args a)
{
    int h = blockIdx.x, t = blockIdx.y, C = a.kv_lora;
    int chunks = mla_chunks(a.pos0 + t + 1);
    size_t th = (size_t)t * (size_t)a.H + (size_t)h;
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
        float M = -INFINITY, L = 0.0f, O = 0.0f;
        for (int z = 0; z < chunks; z++) {
            const float *pp = mla_part(a, t, h, z);
            float wa, wb;
            mla_merge(M, L, pp[0], pp[1], wa, wb);
            O = mla_merged(O, pp[2 + c], wa, wb);
        }
        float inv = 1.0f / L;
        a.ol[th * (size_t)C + (size_t)c] = O * inv;
    }
}

/* heads per block when the latent is at most 2 x ATT columns (DeepSeek-V3 and
 * Kimi K2: 512): the cache is read once per 8 heads instead of once per head */
#define MLA_HEADS 8
/* at most this much scratch for the chunks of a split attention (K2 at one
 * token: 131 KB per chunk of 256 positions, so up to 250 K positions) */
#define MLA_PART_BYTES (128u << 20)

static size_t attend_smem(int heads, const gpu_mla_args *a)
{
    return (size_t)heads * (size_t)(a->kv_lora + a->rope + ATT + 32) * sizeof(float);
}

/* within the 48 KB of shared memory a block may take without opting in */
static int heads_per_block(const gpu_mla_args *a)
{
    return a->kv_lora <= 2 * ATT && a->H > 1 && attend_smem(MLA_HEADS, a) <= 48 * 1024 ? MLA_HEADS
                                                                                     : 1;
}

size_t gpu_mla_split_floats(const gpu_mla_args *a, int sms)
{
    int hg = heads_per_block(a), chunks = mla_chunks(a->pos0 + a->T);
    size_t blocks = (size_t)((a->H + hg - 1) / hg) * (size_t)a->T;
    size_t floats = (size_t)a->T * (size_t)a->H * (size_t)chunks * (size_t)(a->kv_lora + 2);
    if (a->T <= 0 || chunks < 2 || blocks >= (size_t)sms || floats * sizeof(float) > MLA_PART_BYTES)
        return 0;
    return floats;
}

template <int HG, int OLP> static void launch_attend(const gpu_mla_args *a, cudaStream_t s)
{
    dim3 grid((unsigned)((a->H + HG - 1) / HG), (unsigned)a->T,
              a->part ? (unsigned)mla_chunks(a->pos0 + a->T) : 1u);
    void (*kernel)(gpu_mla_args) = k_mla_attend<HG, OLP>;
    GPU_LAUNCH(kernel, grid, ATT, attend_smem(HG, a), s)(*a);
}

void gpu_mla(const gpu_mla_args *a, cudaStream_t s)
{
    if (a->T <= 0)
        return;
    dim3 grid((unsigned)a->H, (unsigned)a->T);
    dim3 absorb((unsigned)a->H, (unsigned)((a->T + ABSORB_TOKENS - 1) / ABSORB_TOKENS));
    GPU_LAUNCH(k_mla_absorb_q, absorb, ATT, 0, s)(*a);
    GPU_LAUNCHED("mla absorb q");
    if (heads_per_block(a) == MLA_HEADS)
        launch_attend<MLA_HEADS, 2>(a, s);
    else
        launch_attend<1, OL_PER_THREAD>(a, s);
    GPU_LAUNCHED("mla attend");
    if (a->part) {
        GPU_LAUNCH(k_mla_merge, grid, ATT, 0, s)(*a);
        GPU_LAUNCHED("mla merge");
    }
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
