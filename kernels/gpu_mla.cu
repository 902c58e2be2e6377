/* gpu_mla: MLA attention on the device (see mla_ref.c for the math both forms
 * compute). The absorbed form, for decode and the tokens of a prefill step
 * beyond its whole slices of GPU_MLA_EXPANDED_TOKENS (the expanded form, below,
 * takes those):
 *   1. qa[t][h] = W_k[h]^T q_nope[t][h]            (k_mla_absorb_q)
 *   2. scores against every cached latent and rope key, softmax, and the
 *      attention-weighted sum of latents ol[t][h]    (k_mla_attend)
 *   3. out[t][h] = W_v[h] ol[t][h]                   (gpu_linear, a group per head)
 * Step 2 folds the cache in chunks of ATT positions, each with its maximum and
 * sum (so no row of scores as long as the context is ever stored), in one
 * block per token and heads, or, for few tokens and a long context, in a block
 * per chunk too and one more kernel that folds them (k_mla_merge). */
#include <math.h>

#include "gpu_layout.h"
#include "gpu_ops.cuh"

#define ATT 256             /* threads, and positions per tile and per chunk */
#define OL_PER_THREAD (GPU_MLA_MAX_LORA / ATT)
/* columns of the keys a tile stages in shared memory at a time (rows padded by
 * one, so that the threads reading their rows hit distinct banks) */
#define KEY_COLS 16

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
 * thread. A thread scores one position, but the tile's keys come through
 * shared memory KEY_COLS columns at a time, loaded by the block a few rows'
 * consecutive columns per warp: a thread reading its own row straight from
 * the cache made every warp's load touch 32 rows 2.3 KB apart. The sums run
 * over the columns in the same order either way. */
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
    float *sqa = sm, *sqr = sqa + HG * C, *sp = sqr + HG * R, *red = sp + HG * ATT;
    float *skey = red + HG * 32;    /* ATT rows of KEY_COLS + 1 */
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
        float d1[HG], d2[HG];
#pragma unroll
        for (int g = 0; g < HG; g++)
            d1[g] = d2[g] = 0.0f;
        int ns = end - s0 < ATT ? end - s0 : ATT;
        for (int c0 = 0; c0 < C + R; c0 += KEY_COLS) {
            int w = C + R - c0 < KEY_COLS ? C + R - c0 : KEY_COLS;
            __syncthreads();    /* the last columns' readers are done */
            for (int e = tid; e < ns * KEY_COLS; e += ATT) {
                int r = e / KEY_COLS, c = e % KEY_COLS;
                if (c < w)
                    skey[r * (KEY_COLS + 1) + c] =
                        kv_at(a, (size_t)(s0 + r), c0 + c);
            }
            __syncthreads();
            if (s < end)
                for (int c = 0; c < w; c++) {
                    float k = skey[tid * (KEY_COLS + 1) + c];
                    int col = c0 + c;
                    if (col < C) {
#pragma unroll
                        for (int g = 0; g < HG; g++)
                            d1[g] = fmaf(sqa[g * C + col], k, d1[g]);
                    } else {
#pragma unroll
                        for (int g = 0; g < HG; g++)
                            d2[g] = fmaf(sqr[g * R + col - C], k, d2[g]);
                    }
                }
        }
        if (s < end) {
#pragma unroll
            for (int g = 0; g < HG; g++)
                sc[g] = __fmul_rn(d1[g] + d2[g], a.scale);     /* never fused into the - m below */
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
#pragma unroll
        for (int j = 0; j < OLP; j++) {
            int c = tid + j * ATT;
            if (c < C) {
                float o[HG];
#pragma unroll
                for (int g = 0; g < HG; g++)
                    o[g] = 0.0f;
                for (int k = 0; k < ns; k++) {
                    float kv = kv_at(a, (size_t)(s0 + k), c);
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

/* ---- the expanded form, for prefill ----
 *
 * The absorbed form costs (kv_lora + rope) multiply-adds per position and head
 * for the scores and kv_lora more for the latent sum (K2: 1,088); the expanded
 * form nope + rope and v (K2: 320), plus expanding every cached latent into
 * each head's key and value once per call (kv_lora x H x (nope + v) per
 * position). From a few hundred tokens a call the whole is fewer multiply-adds
 * (at K2's shapes 1.3 times fewer at 256 tokens, 2.8 at 2,048), so a prefill
 * step's whole slices of GPU_MLA_EXPANDED_TOKENS tokens take this form
 * (gpu_backend.cu, g_mla).
 *
 * The positions are expanded in blocks (gpu_linear into kvx); for each block
 * one kernel walks tiles of EXP_POS positions for a block of EXP_TOKENS tokens
 * and one head, an online softmax per token whose running maximum, sum and
 * output stay in `state` between blocks. A token's arithmetic is the same
 * whichever tokens share its thread block or its call: tiles start at
 * multiples of EXP_POS, a tile past a token's last position leaves its row
 * untouched, the expansion of a position does not depend on the others
 * (gpu_linear), and a row's state is stored and loaded exactly between
 * blocks. So a token's attention has the same bits in a step of 256 tokens as
 * in one of 4,096. */
#define EXP_TOKENS 32       /* tokens per thread block: 8 rows of 4 */
#define EXP_POS GPU_MLA_EXPANDED_TILE  /* positions per tile: one per lane of a half-warp */
#define EXP_THREADS 128
#define EXP_PAD 4           /* floats after each row of shared memory: rows
                             * stay 16-byte aligned, a half-warp's keys fall
                             * in different banks */
#define EXP_MAX_V 128       /* each lane takes 8 of a row's v columns */

static size_t expanded_smem(const gpu_mla_args *a)
{
    size_t qs = (size_t)(a->nope + a->rope + EXP_PAD), vs = (size_t)(a->v + EXP_PAD);
    return ((size_t)(EXP_TOKENS + EXP_POS) * qs + (size_t)EXP_POS * vs +
            (size_t)EXP_POS * EXP_TOKENS) * sizeof(float);
}

int gpu_mla_expanded_fits(const gpu_mla_args *a)
{
    return a->nope % 4 == 0 && a->rope % 4 == 0 && a->v % 4 == 0 && a->v <= EXP_MAX_V &&
           expanded_smem(a) <= 48 * 1024;
}

/* y[r][0..3] = fmaf(p, v.xyzw, y[r][0..3]) */
__device__ __forceinline__ void fma4(float *y, float p, float4 v)
{
    y[0] = fmaf(p, v.x, y[0]);
    y[1] = fmaf(p, v.y, y[1]);
    y[2] = fmaf(p, v.z, y[2]);
    y[3] = fmaf(p, v.w, y[3]);
}

/* the v column of a thread's output e (0..7): 4 tx .. 4 tx + 3, then 64 more */
__device__ __forceinline__ int out_column(int tx, int e)
{
    return (e < 4 ? 4 * tx : 64 + 4 * tx) + (e & 3);
}

__device__ __forceinline__ float dot4(float acc, float4 q, float4 k)
{
    acc = fmaf(q.x, k.x, acc);
    acc = fmaf(q.y, k.y, acc);
    acc = fmaf(q.z, k.z, acc);
    return fmaf(q.w, k.w, acc);
}

/* One block per head (x) and EXP_TOKENS tokens (y), positions [b0, b1) of
 * the cache, whose keys and values kvx holds ([position - b0][H][nope + v]).
 * Thread (ty, tx) = (tid / 16, tid % 16) has the tokens 4 ty .. 4 ty + 3: for
 * the scores the tile's position tx, for the sum the v columns 4 tx .. 4 tx + 3
 * and 64 + 4 tx .. 64 + 4 tx + 3; a token's 16 lanes share its softmax by
 * shuffles. state: [T][H][2 + v] (maximum, sum, unnormalised output), read
 * unless b0 is 0; with `last` the output goes to a.out instead. */
__global__ void k_mla_expanded(gpu_mla_args a, const float *kvx, int b0, int b1, float *state,
                               int last)
{
    GPU_DYNAMIC_SMEM(float4, sm4);
    float *sm = (float *)sm4;
    int h = blockIdx.x, t0 = blockIdx.y * EXP_TOKENS, tid = threadIdx.x, tx = tid & 15,
        ty = tid >> 4;
    int nope = a.nope, qk = a.nope + a.rope, kvw = a.nope + a.v, V = a.v, C = a.kv_lora;
    int qs = qk + EXP_PAD, vs = V + EXP_PAD;
    int nt = a.T - t0 < EXP_TOKENS ? a.T - t0 : EXP_TOKENS;
    float *sq = sm, *sk = sq + EXP_TOKENS * qs, *sv = sk + EXP_POS * qs, *sp = sv + EXP_POS * vs;
    size_t hkv = (size_t)a.H * (size_t)kvw;
    for (int i = tid; i < EXP_TOKENS * qk; i += EXP_THREADS) {
        int t = i / qk, d = i % qk;
        sq[t * qs + d] = t < nt ? a.q[((size_t)(t0 + t) * (size_t)a.H + (size_t)h) * (size_t)qk +
                                      (size_t)d] : 0.0f;
    }
    /* the rows' last positions (-1: no token) and state */
    int lp[4];
    float M[4], L[4], O[4][8];
#pragma unroll
    for (int r = 0; r < 4; r++) {
        int t = 4 * ty + r;
        lp[r] = t < nt ? a.pos0 + t0 + t : -1;
        const float *st = state + ((size_t)(t0 + t) * (size_t)a.H + (size_t)h) * (size_t)(2 + V);
        bool load = b0 > 0 && t < nt;
        M[r] = load ? st[0] : -INFINITY;
        L[r] = load ? st[1] : 0.0f;
#pragma unroll
        for (int e = 0; e < 8; e++) {
            int j = out_column(tx, e);
            O[r][e] = load && j < V ? st[2 + j] : 0.0f;
        }
    }
    int end = a.pos0 + t0 + nt < b1 ? a.pos0 + t0 + nt : b1;
    for (int s0 = b0; s0 < end; s0 += EXP_POS) {
        __syncthreads();    /* the previous tile's readers are done (and sq is written) */
        int ns = end - s0 < EXP_POS ? end - s0 : EXP_POS;
        for (int i = tid; i < EXP_POS * qk; i += EXP_THREADS) {
            int p = i / qk, d = i % qk;
            float k = 0.0f;
            if (p < ns)
                k = d < nope ? kvx[(size_t)(s0 + p - b0) * hkv + (size_t)h * kvw + (size_t)d]
                             : kv_at(a, (size_t)(s0 + p), C + d - nope);
            sk[p * qs + d] = k;
        }
        for (int i = tid; i < EXP_POS * V; i += EXP_THREADS) {
            int p = i / V, j = i % V;
            sv[p * vs + j] = p < ns ? kvx[(size_t)(s0 + p - b0) * hkv + (size_t)h * kvw +
                                          (size_t)(nope + j)] : 0.0f;
        }
        __syncthreads();
        /* scores of the rows' tokens against position s0 + tx */
        float d1[4] = {}, d2[4] = {};
        const float *kr = sk + tx * qs;
        for (int d = 0; d < nope; d += 4) {
            float4 k4 = *(const float4 *)(kr + d);
#pragma unroll
            for (int r = 0; r < 4; r++)
                d1[r] = dot4(d1[r], *(const float4 *)(sq + (4 * ty + r) * qs + d), k4);
        }
        for (int d = nope; d < qk; d += 4) {
            float4 k4 = *(const float4 *)(kr + d);
#pragma unroll
            for (int r = 0; r < 4; r++)
                d2[r] = dot4(d2[r], *(const float4 *)(sq + (4 * ty + r) * qs + d), k4);
        }
        int s = s0 + tx;
        float wa[4];
        bool act[4];
#pragma unroll
        for (int r = 0; r < 4; r++) {
            bool valid = tx < ns && s <= lp[r];
            float sc = valid ? __fmul_rn(d1[r] + d2[r], a.scale) : -INFINITY;  /* not fused into - mn */
            float m = sc;
            for (int o = 8; o > 0; o >>= 1)
                m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
            act[r] = s0 <= lp[r];       /* the same on the row's 16 lanes */
            float mn = fmaxf(M[r], m);
            wa[r] = expf(M[r] - mn);    /* 0 at the row's first tile (M = -inf) */
            float pr = valid ? expf(sc - mn) : 0.0f, l = pr;
            for (int o = 8; o > 0; o >>= 1)
                l += __shfl_xor_sync(0xffffffffu, l, o);
            sp[tx * EXP_TOKENS + 4 * ty + r] = pr;
            if (act[r]) {
                M[r] = mn;
                L[r] = fmaf(L[r], wa[r], l);
            }
        }
        __syncthreads();
#pragma unroll
        for (int r = 0; r < 4; r++)
            if (act[r])
#pragma unroll
                for (int e = 0; e < 8; e++)
                    O[r][e] = __fmul_rn(O[r][e], wa[r]);
        for (int k = 0; k < ns; k++) {
            float4 p4 = *(const float4 *)(sp + k * EXP_TOKENS + 4 * ty);
            float4 zero = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
            float4 va = 4 * tx < V ? *(const float4 *)(sv + k * vs + 4 * tx) : zero;
            float4 vb = 64 + 4 * tx < V ? *(const float4 *)(sv + k * vs + 64 + 4 * tx) : zero;
            float p[4] = {p4.x, p4.y, p4.z, p4.w};
#pragma unroll
            for (int r = 0; r < 4; r++)
                if (act[r]) {   /* a row past its last position keeps its bits */
                    fma4(O[r], p[r], va);
                    fma4(O[r] + 4, p[r], vb);
                }
        }
    }
#pragma unroll
    for (int r = 0; r < 4; r++) {
        int t = 4 * ty + r;
        if (t >= nt)
            continue;
        size_t th = (size_t)(t0 + t) * (size_t)a.H + (size_t)h;
        float *st = state + th * (size_t)(2 + V), inv = 1.0f / L[r];
        if (!last && tx == 0) {
            st[0] = M[r];
            st[1] = L[r];
        }
#pragma unroll
        for (int e = 0; e < 8; e++) {
            int j = out_column(tx, e);
            if (j >= V)
                continue;
            if (last)
                a.out[th * (size_t)V + (size_t)j] = O[r][e] * inv;
            else
                st[2 + j] = O[r][e];
        }
    }
}

size_t gpu_mla_expanded_block(const gpu_mla_args *a)
{
    size_t kvw = (size_t)(a->nope + a->v), S = (size_t)(a->pos0 + a->T);
    /* the absorbed form's query scratch for these tokens (what the plan counts)
     * holds T x kv_lora / (nope + v) positions; at least 1,024 */
    size_t n = (size_t)a->T * (size_t)a->kv_lora / kvw;
    n = n > GPU_MLA_EXPANDED_MIN_POSITIONS ? n : GPU_MLA_EXPANDED_MIN_POSITIONS;
    n = n < S ? n : S;
    return (n + EXP_POS - 1) / EXP_POS * EXP_POS;
}

/* rows [s0, s0 + n / row) of a's bf16 or q8_0 cache, widened into dst */
__global__ void k_cache_widen(gpu_mla_args a, size_t s0, size_t n, float *dst)
{
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x, row = (size_t)(a.kv_lora + a.rope);
    if (i < n)
        dst[i] = kv_at(a, s0 + i / row, (int)(i % row));
}

/* one block of KV_Q8_BLOCK values of one row a thread: its scale, its values */
__global__ void k_q8_store(char *dst, const float *src, int T, int row, size_t row_bytes)
{
    int nb = (row + KV_Q8_BLOCK - 1) / KV_Q8_BLOCK;
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (size_t)T * (size_t)nb)
        return;
    size_t t = i / (size_t)nb;
    int b = (int)(i % (size_t)nb), c0 = b * KV_Q8_BLOCK;
    int c1 = c0 + KV_Q8_BLOCK < row ? c0 + KV_Q8_BLOCK : row;
    const float *x = src + t * (size_t)row;
    float *scale = (float *)(dst + t * row_bytes);
    signed char *q = (signed char *)(scale + nb);
    float amax = 0.0f;
    bool finite = true;
    for (int c = c0; c < c1; c++) {
        finite = finite && isfinite(x[c]);
        amax = fabsf(x[c]) > amax ? fabsf(x[c]) : amax;
    }
    /* a zero block keeps zeros; a non-finite one reads back as NaN */
    float s = finite ? __fdiv_rn(amax, 127.0f) : __int_as_float(0x7fc00000);
    scale[b] = s;
    for (int c = c0; c < c1; c++) {
        float r = finite && s > 0.0f ? rintf(__fdiv_rn(x[c], s)) : 0.0f;
        q[c] = (signed char)(r > 127.0f ? 127.0f : r < -127.0f ? -127.0f : r);
    }
    /* the padding after the last block's values, zeroed as the host does */
    if (b == nb - 1)
        for (size_t p = (size_t)nb * 4 + (size_t)row; p < row_bytes; p++)
            dst[t * row_bytes + p] = 0;
}

void gpu_store_q8_0(void *dst, const float *src, int T, int row, cudaStream_t s)
{
    size_t n = (size_t)T * (size_t)kv_q8_blocks(row);
    if (!n)
        return;
    GPU_LAUNCH(k_q8_store, (unsigned)((n + 255) / 256), 256, 0, s)((char *)dst, src, T, row,
                                                                    kv_q8_row_bytes(row));
    GPU_LAUNCHED("q8_0 store");
}

__global__ void k_bf16_store(uint16_t *dst, const float *src, size_t n)
{
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n)
        return;
    uint32_t u = __float_as_uint(src[i]);
    /* NaN stays a (quiet) NaN; the rest rounds to nearest, ties to even */
    dst[i] = (u & 0x7fffffffu) > 0x7f800000u ? (uint16_t)((u >> 16) | 0x40u)
                                             : (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

void gpu_store_bf16(uint16_t *dst, const float *src, size_t n, cudaStream_t s)
{
    if (!n)
        return;
    GPU_LAUNCH(k_bf16_store, (unsigned)((n + 255) / 256), 256, 0, s)(dst, src, n);
    GPU_LAUNCHED("bf16 store");
}

void gpu_mla_expanded(const gpu_mla_args *a, float *kvx, float *state, float *wide, cudaStream_t s)
{
    int S = a->pos0 + a->T, block = (int)gpu_mla_expanded_block(a), kvw = a->nope + a->v;
    dim3 grid((unsigned)a->H, (unsigned)((a->T + EXP_TOKENS - 1) / EXP_TOKENS));
    for (int b0 = 0; b0 < S; b0 += block) {
        int b1 = S - b0 < block ? S : b0 + block;
        gpu_lin x = {};
        x.w = a->kv_b;
        x.nrows = a->H * kvw;
        x.groups = 1;
        size_t row = (size_t)(a->kv_lora + a->rope);
        if (a->kv_bf16 || a->kv_q8) {
            /* the block's rows widened for the product (its keys' rope part
             * the kernel reads from the cache as it is) */
            size_t n = (size_t)(b1 - b0) * row;
            GPU_LAUNCH(k_cache_widen, (unsigned)((n + 255) / 256), 256, 0, s)(*a, (size_t)b0, n,
                                                                              wide);
            GPU_LAUNCHED("cache widen");
            x.x = wide;
        } else {
            x.x = a->kv_cache + (size_t)b0 * row;
        }
        x.xs = (size_t)(a->kv_lora + a->rope);
        x.y = kvx;
        x.ys = (size_t)a->H * (size_t)kvw;
        x.T = b1 - b0;
        gpu_linear(&x, s);
        GPU_LAUNCH(k_mla_expanded, grid, EXP_THREADS, expanded_smem(a), s)(*a, kvx, b0, b1, state,
                                                                          b1 == S);
        GPU_LAUNCHED("mla expanded");
    }
}

/* heads per block when the latent is at most 2 x ATT columns (DeepSeek-V3 and
 * Kimi K2: 512): the cache is read once per 8 heads instead of once per head */
#define MLA_HEADS 8
/* GPU_MLA_PART_BYTES, the most scratch for the chunks of a split attention:
 * K2 at one token takes 131 KB per chunk of 256 positions, so up to 250 K
 * positions */

static_assert((GPU_MLA_MAX_LATENT_ROW + ATT + 32 + ATT * (KEY_COLS + 1)) * sizeof(float) <= 48 * 1024,
              "one head's attention block at the widest cache row gpu_layout.h allows");

static size_t attend_smem(int heads, const gpu_mla_args *a)
{
    return ((size_t)heads * (size_t)(a->kv_lora + a->rope + ATT + 32) +
            (size_t)ATT * (KEY_COLS + 1)) * sizeof(float);
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
    if (a->T <= 0 || chunks < 2 || blocks >= (size_t)sms || floats * sizeof(float) > GPU_MLA_PART_BYTES)
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
