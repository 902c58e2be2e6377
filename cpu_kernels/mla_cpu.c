/* mla_cpu: see mla_cpu.h. */
#include "mla_cpu.h"

#include <math.h>
#include <string.h>

#include "core/engine/kv_q8.h"
#include "kv_widen_simd.h"
#include "softmax_simd.h"

/* values [c0, c0 + n) of cache row s into dst as float32 (a bf16 or q8_0
 * cache's widened, in vectors on the SIMD paths: the same bits) */
static void cache_values(kernel_path path, const mla_args *a, int s, int c0, int n, float *dst)
{
    int row = a->kv_lora + a->rope;
    size_t at = (size_t)s * (size_t)row + (size_t)c0;
    if (a->kv_q8)
        kv_q8_widen_simd(path, (const char *)a->kv_q8 + (size_t)s * kv_q8_row_bytes(row), row, c0,
                         n, dst);
    else if (a->kv_bf16)
        bf16_widen_simd(path, a->kv_bf16 + at, n, dst);
    else
        memcpy(dst, a->kv_cache + at, (size_t)n * sizeof *dst);
}

/* The expanded form goes over the cache in blocks of this many positions,
 * each expanded into a head's keys and values and attended to with a running
 * softmax, so its buffers do not grow with the context (the whole context's
 * keys and values would take 2.5 KB a position, per worker) */
#define MLA_KBLOCK 256

/* queries per block of the expanded form's products: scores are [MLA_QBLOCK][MLA_KBLOCK] */
#define MLA_QBLOCK 64

static linear_weight f32_weight(int rows, int cols, const float *data)
{
    linear_weight wf = {.fmt = WF_F32, .rows = rows, .cols = cols, .data = data};
    return wf;
}

/* The absorbed form reads a q8_0 cache a block of this many positions at a
 * time, widened to float32 for its two products (a block is 590 KB at K2's
 * 576 values a row: it stays in L2 while the product reads it, where the
 * whole context widened would take 2.3 KB a position). A float32 or bf16
 * cache the linear kernels read in place, widening bf16 in their registers
 * (the same bits as widened rows: tested; on AVX2 the blocks cost 13 %). */
#define MLA_WIDE_BLOCK 256

/* positions a block holds (0: the cache is read in place) */
static int wide_block(const mla_args *a)
{
    int S = a->pos0 + a->T;
    return !a->kv_q8 ? 0 : S < MLA_WIDE_BLOCK ? S : MLA_WIDE_BLOCK;
}

/* the cache's first S rows as the weight of a product (bf16 read as the
 * linear kernels read a BF16 checkpoint's weights) */
static linear_weight cache_weight(const mla_args *a, int S)
{
    linear_weight w = {.fmt = a->kv_bf16 ? WF_BF16 : WF_F32, .rows = S,
                       .cols = a->kv_lora + a->rope,
                       .data = a->kv_bf16 ? (const void *)a->kv_bf16 : (const void *)a->kv_cache};
    return w;
}

/* the expanded form's per-worker buffers, after the head's kv_b rows */
typedef struct expanded_bufs {
    float *lat;         /* [MLA_KBLOCK][kv_lora] a block's latents, contiguous */
    float *kv;          /* [MLA_KBLOCK][nope + v] their expansion into keys and values */
    float *keys;        /* [MLA_KBLOCK][nope + rope] whole keys: k_nope and the shared rope key */
    float *vt;          /* [v][keys a block of queries sees] values transposed */
    float *qh;          /* [T][nope + rope] the head's queries */
    float *sc;          /* [MLA_QBLOCK][MLA_KBLOCK] scores, then probabilities */
    float *oh;          /* [MLA_QBLOCK][v] probabilities times values */
    float *acc;         /* [T][v] each query's output so far, not yet divided by its sum */
    float *max, *sum;   /* [T] each query's largest scaled score so far, and the sum of
                         * its exponentials relative to it */
    float *lin;         /* the linear kernels' scratch */
} expanded_bufs;

static int key_block(const mla_args *a)
{
    int S = a->pos0 + a->T;
    return S < MLA_KBLOCK ? S : MLA_KBLOCK;
}

static int query_block(const mla_args *a)
{
    return a->T < MLA_QBLOCK ? a->T : MLA_QBLOCK;
}

static size_t lin_scratch_floats(const mla_args *a)
{
    int kb = key_block(a), qb = query_block(a), qk = a->nope + a->rope, kvw = a->nope + a->v;
    linear_weight expand = f32_weight(kvw, a->kv_lora, NULL), keys = f32_weight(kb, qk, NULL),
                  values = f32_weight(a->v, kb, NULL);
    size_t n = linear_forward_scratch(&expand, kb, 1), k = linear_forward_scratch(&keys, qb, 1),
           v = linear_forward_scratch(&values, qb, 1);
    n = k > n ? k : n;
    return v > n ? v : n;
}

static size_t expanded_floats(const mla_args *a)
{
    size_t kb = (size_t)key_block(a), qb = (size_t)query_block(a), T = (size_t)a->T;
    size_t C = (size_t)a->kv_lora, qk = (size_t)(a->nope + a->rope), v = (size_t)a->v;
    size_t kvw = (size_t)(a->nope + a->v);
    return kb * C + kb * kvw + kb * qk + v * kb + T * qk + qb * kb + qb * v + T * v + 2 * T +
           lin_scratch_floats(a);
}

static expanded_bufs expanded_layout(const mla_args *a, float *p)
{
    size_t kb = (size_t)key_block(a), qb = (size_t)query_block(a), T = (size_t)a->T;
    size_t C = (size_t)a->kv_lora, qk = (size_t)(a->nope + a->rope), v = (size_t)a->v;
    size_t kvw = (size_t)(a->nope + a->v);
    expanded_bufs b;
    b.lat = p;
    b.kv = b.lat + kb * C;
    b.keys = b.kv + kb * kvw;
    b.vt = b.keys + kb * qk;
    b.qh = b.vt + v * kb;
    b.sc = b.qh + T * qk;
    b.oh = b.sc + qb * kb;
    b.acc = b.oh + qb * v;
    b.max = b.acc + T * v;
    b.sum = b.max + T;
    b.lin = b.sum + T;
    return b;
}

/* Calls of this many queries or fewer take the absorbed form whatever the
 * cost, so that a token's attention has the same bits in a decode step and in
 * the short prefill of a prompt found in the cache but for its last tokens,
 * or in a step checking guessed tokens */
#define MLA_ABSORB_ALWAYS_T 4     /* (a checked draft: ENGINE_DRAFT_MAX_T, engine.h) */

/* the absorbed form's buffers, shared by the workers: rows i = t * H + h */
typedef struct absorbed_bufs {
    float *qa;          /* [T * H][kv_lora + rope] absorbed queries and their rope parts */
    float *sc;          /* [T * H][S] scores, then probabilities */
    float *ol;          /* [T * H][kv_lora] probabilities times latents */
    float *lin;         /* the linear kernels' scratch, every thread */
    int seen;           /* the positions every query's combination runs over
                         * at once (past them, each goes on for the queries
                         * that see it) */
} absorbed_bufs;

/* Scores of the absorbed form are [T * H][S]: queries go in blocks of tokens
 * whose scores stay within this many floats (64 MB), */
#define MLA_SCORE_FLOATS (16u << 20)
/* and of at most this many tokens, whose other buffers ([T * H][kv_lora]
 * twice) then stay near 17 MB at K2's dimensions (a prompt's chunk in
 * batch-invariant mode would take them by the GB) */
#define MLA_ABSORB_TBLOCK 64

static int absorbed_tokens_per_block(const mla_args *a)
{
    size_t per_token = (size_t)a->H * (size_t)(a->pos0 + a->T);
    size_t tb = MLA_SCORE_FLOATS / (per_token ? per_token : 1);
    tb = tb < MLA_ABSORB_TBLOCK ? tb : MLA_ABSORB_TBLOCK;
    return tb < 1 ? 1 : tb > (size_t)a->T ? a->T : (int)tb;
}

/* the queries [t0, t0 + n) of a, as a call of their own: they see the same
 * positions, and the cache rows after them are not read */
static mla_args token_block(const mla_args *a, int t0, int n)
{
    mla_args b = *a;
    size_t qk = (size_t)(a->nope + a->rope);
    b.q = a->q + (size_t)t0 * (size_t)a->H * qk;
    b.out = a->out + (size_t)t0 * (size_t)a->H * (size_t)a->v;
    b.pos0 = a->pos0 + t0;
    b.T = n;
    return b;
}

static size_t absorbed_shared_floats(const mla_args *a, int n_threads)
{
    size_t S = (size_t)(a->pos0 + a->T), C = (size_t)a->kv_lora, R = (size_t)a->T * (size_t)a->H;
    linear_weight scores = cache_weight(a, (int)S);
    /* (a q8_0 cache's products take their scratch per worker) */
    size_t lin = a->kv_q8 ? 0 : linear_forward_scratch(&scores, a->H, n_threads);
    return R * (C + (size_t)a->rope) + R * S + R * C + lin;
}

/* W_v of head h: its rows of kv_b as they are, or (when the format's scales
 * cannot start there) dequantized into W, [v][kv_lora] */
static linear_weight head_values(kernel_path path, const mla_args *a, int h, float *W)
{
    linear_weight wv;
    int r0 = h * (a->nope + a->v) + a->nope;
    if (!linear_weight_rows(a->kv_b, r0, a->v, &wv)) {
        linear_dequant_rows(path, a->kv_b, r0, a->v, W);
        wv = f32_weight(a->v, a->kv_lora, W);
    }
    return wv;
}

/* the absorbed form's per-worker buffers */
typedef struct absorbed_work {
    float *W;           /* [max(nope, v)][kv_lora] a head's W_k or W_v as float32, or
                         * linear_combine_weight's work */
    float *x, *y;       /* [T][kv_lora] the head's rows of ol; [T][v] its outputs */
    float *lin;         /* the linear kernels' scratch */
    /* (a q8_0 cache) a block of its rows widened, [wide_block][kv_lora +
     * rope]; the block's scores of a query, [H][wide_block]; their product's
     * scratch */
    float *wide, *wide_sc, *wide_lin;
} absorbed_work;

static size_t absorbed_floats(const mla_args *a, absorbed_work *w, float *p)
{
    size_t C = (size_t)a->kv_lora, nope = (size_t)a->nope, v = (size_t)a->v, T = (size_t)a->T;
    int part = a->T < LINEAR_ROWS_MAX_T ? a->T : LINEAR_ROWS_MAX_T;
    linear_weight wv = f32_weight(a->v, a->kv_lora, NULL), wv_rows;
    size_t lin = linear_forward_scratch(&wv, part, 1);
    if (linear_weight_rows(a->kv_b, a->nope, a->v, &wv_rows)) {
        size_t l = linear_forward_scratch(&wv_rows, part, 1);
        lin = l > lin ? l : lin;
    }
    size_t wr = (nope > v ? nope : v) * C, comb = linear_combine_work(a->kv_b);
    wr = wr > comb ? wr : comb;
    size_t kb = (size_t)wide_block(a), row = C + (size_t)a->rope;
    linear_weight block = f32_weight((int)kb, (int)row, NULL);
    size_t wide = kb ? kb * row + (size_t)a->H * kb + linear_forward_scratch(&block, a->H, 1) : 0;
    if (w) {
        w->W = p;
        w->x = w->W + wr;
        w->y = w->x + T * C;
        w->lin = w->y + T * v;
        w->wide = w->lin + lin;
        w->wide_sc = w->wide + kb * row;
        w->wide_lin = w->wide_sc + (size_t)a->H * kb;
    }
    return wr + T * C + T * v + lin + wide;
}

/* floats one worker needs: for the absorbed form absorbed_work; for the
 * expanded one a head's kv_b rows as float32 and the buffers of expanded_bufs */
static size_t worker_floats(const mla_args *a, int absorbed)
{
    if (absorbed)
        return absorbed_floats(a, NULL, NULL);
    return (size_t)(a->nope + a->v) * (size_t)a->kv_lora + expanded_floats(a);
}

static int workers(thread_pool *pool)
{
    return pool ? thread_pool_size(pool) : 1;
}

size_t mla_cpu_scratch(const mla_args *a, int absorbed, int n_threads)
{
    size_t nt = (size_t)(n_threads > 0 ? n_threads : 1);
    if (!absorbed)
        return nt * worker_floats(a, 0);
    /* the last block sees the most positions */
    int tb = absorbed_tokens_per_block(a);
    mla_args last = token_block(a, a->T - tb, tb);
    return absorbed_shared_floats(&last, (int)nt) + nt * worker_floats(&last, 1);
}

int mla_cpu_absorbs(const mla_args *a)
{
    if (a->T <= MLA_ABSORB_ALWAYS_T)
        return 1;
    /* multiply-adds of each form, causal masks counted as full rows: the
     * expanded form expands every cached latent into each head's keys and
     * values, the absorbed one works in the latent space per query */
    double S = a->pos0 + a->T, T = a->T, H = a->H, C = a->kv_lora;
    double qk = a->nope + a->rope, kvw = a->nope + a->v;
    double expanded = H * S * (kvw * C + T * (qk + a->v));
    double absorbed = H * T * (a->nope * C + S * (C + a->rope) + S * C + C * a->v);
    return absorbed <= expanded;
}

typedef struct mla_job {
    kernel_path path;
    const mla_args *a;
    int absorbed;
    absorbed_bufs ab;           /* (absorbed form) */
    float *work;                /* per worker */
} mla_job;

/* The absorbed form, every head at once: the cache's latent rows are shared by
 * all heads, so a query's scores in all of them are one float32 product of
 * the cache (rows) with its H absorbed query rows, the cache read once per
 * query instead of once per head, and its probabilities times the latents
 * another, per block of positions; only the absorption of each query into the
 * latent space and the output through W_v go head by head. */

/* qa[t * H + h] = [W_k[h]^T q_nope | q_rope] for the worker's heads: each
 * query's combination of W_k's rows (its own, so a query's bits do not depend
 * on the others in the call) */
static void absorbed_queries(void *ctx, int worker, int n_workers)
{
    const mla_job *j = ctx;
    const mla_args *a = j->a;
    int C = a->kv_lora, qk = a->nope + a->rope, H = a->H, kvw = a->nope + a->v, nope = a->nope;
    size_t qaw = (size_t)(C + a->rope);
    absorbed_work w;
    absorbed_floats(a, &w, j->work + (size_t)worker * worker_floats(a, 1));
    int h0, h1;
    pool_split(H, 1, worker, n_workers, &h0, &h1);
    /* several queries share one dequantization of W_k; one reads it in
     * blocks that stay in L1 (the same bits) */
    int whole = a->T > 1;
    for (int h = h0; h < h1; h++) {
        if (whole)
            linear_dequant_rows(j->path, a->kv_b, h * kvw, nope, w.W);
        for (int t = 0; t < a->T; t++) {
            const float *q = a->q + ((size_t)t * (size_t)H + (size_t)h) * (size_t)qk;
            float *qa = j->ab.qa + ((size_t)t * (size_t)H + (size_t)h) * qaw;
            if (whole)
                linear_combine_rows(j->path, q, w.W, nope, C, qa);
            else
                linear_combine_weight(j->path, q, a->kv_b, h * kvw, nope, qa, w.W);
            memcpy(qa + C, q + nope, (size_t)a->rope * sizeof *qa);
        }
    }
}

/* each of the worker's score rows scaled and softmaxed over the positions its
 * query sees, the later ones zeroed */
static void absorbed_softmax(void *ctx, int worker, int n_workers)
{
    const mla_job *j = ctx;
    const mla_args *a = j->a;
    int S = a->pos0 + a->T, i0, i1;
    pool_split(a->T * a->H, 1, worker, n_workers, &i0, &i1);
    for (int i = i0; i < i1; i++) {
        float *p = j->ab.sc + (size_t)i * (size_t)S;
        int n = a->pos0 + i / a->H + 1;
        softmax_simd(j->path, p, n, a->scale);
        memset(p + n, 0, (size_t)(S - n) * sizeof *p);
    }
}

/* out[t][h] = W_v[h] ol[t * H + h] for the worker's heads, W_v read as the
 * checkpoint holds it */
static void absorbed_outputs(void *ctx, int worker, int n_workers)
{
    const mla_job *j = ctx;
    const mla_args *a = j->a;
    int C = a->kv_lora, H = a->H, T = a->T;
    absorbed_work w;
    absorbed_floats(a, &w, j->work + (size_t)worker * worker_floats(a, 1));
    int h0, h1;
    pool_split(H, 1, worker, n_workers, &h0, &h1);
    for (int h = h0; h < h1; h++) {
        linear_weight wv = head_values(j->path, a, h, w.W);
        for (int t = 0; t < T; t++)
            memcpy(w.x + (size_t)t * (size_t)C, j->ab.ol + ((size_t)t * (size_t)H + (size_t)h) * (size_t)C,
                   (size_t)C * sizeof(float));
        linear_forward_invariant(j->path, NULL, &wv, w.x, T, w.y, w.lin);
        for (int t = 0; t < T; t++)
            memcpy(a->out + ((size_t)t * (size_t)H + (size_t)h) * (size_t)a->v,
                   w.y + (size_t)t * (size_t)a->v, (size_t)a->v * sizeof(float));
    }
}

static void run_workers(thread_pool *pool, pool_fn fn, mla_job *j, int n)
{
    if (pool && thread_pool_size(pool) > 1 && n > 1)
        thread_pool_run(pool, fn, j);
    else
        fn(j, 0, 1);
}

/* The absorbed form's two products over a q8_0 cache: each worker widens a
 * block of rows at a time into its own buffer (as the expanded form and the
 * reference read them) and runs the float32 products of a float32 cache over
 * it, so each takes one dispatch. The bits are those of a float32 cache
 * holding the widened rows: a score is one product of its query and row,
 * and each combination's chain carries on from one block to the next. */

/* the scores of the worker's positions, every query and head */
static void wide_scores(void *ctx, int worker, int n_workers)
{
    const mla_job *j = ctx;
    const mla_args *a = j->a;
    absorbed_work w;
    absorbed_floats(a, &w, j->work + (size_t)worker * worker_floats(a, 1));
    int S = a->pos0 + a->T, H = a->H, row = a->kv_lora + a->rope, s0, s1;
    pool_split(S, 1, worker, n_workers, &s0, &s1);
    for (int k0 = s0; k0 < s1; k0 += MLA_WIDE_BLOCK) {
        int kn = s1 - k0 < MLA_WIDE_BLOCK ? s1 - k0 : MLA_WIDE_BLOCK;
        for (int s = 0; s < kn; s++)
            cache_values(j->path, a, k0 + s, 0, row, w.wide + (size_t)s * (size_t)row);
        linear_weight block = f32_weight(kn, row, w.wide);
        for (int t = 0; t < a->T; t++) {
            linear_forward(j->path, NULL, &block, j->ab.qa + (size_t)t * (size_t)H * (size_t)row,
                           H, w.wide_sc, w.wide_lin);
            for (int h = 0; h < H; h++)
                memcpy(j->ab.sc + ((size_t)t * (size_t)H + (size_t)h) * (size_t)S + (size_t)k0,
                       w.wide_sc + (size_t)h * (size_t)kn, (size_t)kn * sizeof(float));
        }
    }
}

/* the probabilities times the latents of the worker's columns (a multiple
 * of 64) and rows: the rows are cut into groups only when there are more
 * workers than blocks of 64 columns, so that each worker reads the
 * probabilities once */
static void wide_combine(void *ctx, int worker, int n_workers)
{
    const mla_job *j = ctx;
    const mla_args *a = j->a;
    absorbed_work w;
    absorbed_floats(a, &w, j->work + (size_t)worker * worker_floats(a, 1));
    int S = a->pos0 + a->T, C = a->kv_lora, R = a->T * a->H;
    /* (6 rows: the combination kernel's tile) */
    int blocks = (C + 63) / 64, groups = n_workers / blocks, tiles = (R + 5) / 6;
    groups = groups < 1 ? 1 : groups > tiles ? tiles : groups;
    int per_group = n_workers / groups, c0, c1, r0, r1;
    if (worker >= groups * per_group)
        return;
    pool_split(C, 64, worker % per_group, per_group, &c0, &c1);
    pool_split(R, 1, worker / per_group, groups, &r0, &r1);
    int cols = c1 - c0;
    /* positions [0, seen) for all rows, then each later one for the rows that
     * see it (absorbed_all) */
    for (int k0 = 0, seen = j->ab.seen; cols > 0 && r1 > r0 && k0 < S;) {
        int end = k0 < seen ? seen : k0 + 1, kn = end - k0 < MLA_WIDE_BLOCK ? end - k0 : MLA_WIDE_BLOCK;
        /* the first row that sees k0 */
        int q0 = k0 < seen ? r0 : (k0 - a->pos0) * a->H, from = q0 > r0 ? q0 : r0;
        for (int s = 0; s < kn && from < r1; s++)
            cache_values(j->path, a, k0 + s, c0, cols, w.wide + (size_t)s * (size_t)cols);
        if (from < r1)
            linear_combine_many(j->path, NULL, j->ab.sc + (size_t)from * (size_t)S + k0, (size_t)S,
                                r1 - from, w.wide, NULL, (size_t)cols, kn, cols,
                                j->ab.ol + (size_t)from * (size_t)C + c0, (size_t)C, k0 > 0);
        k0 += kn;
    }
}

/* Whether the latents of the cache rows after the first query's, [pos0 + 1,
 * pos0 + T), are all finite. */
static int later_latents_finite(kernel_path path, const mla_args *a)
{
    float v[64];
    for (int s = a->pos0 + 1; s < a->pos0 + a->T; s++)
        for (int c0 = 0; c0 < a->kv_lora; c0 += 64) {
            int n = a->kv_lora - c0 < 64 ? a->kv_lora - c0 : 64;
            cache_values(path, a, s, c0, n, v);
            for (int i = 0; i < n; i++)
                if (!isfinite(v[i]))
                    return 0;
        }
    return 1;
}

static void absorbed_all(mla_job *j, thread_pool *pool, float *shared)
{
    const mla_args *a = j->a;
    int S = a->pos0 + a->T, C = a->kv_lora, R = a->T * a->H;
    absorbed_bufs *b = &j->ab;
    b->qa = shared;
    b->sc = b->qa + (size_t)R * (size_t)(C + a->rope);
    b->ol = b->sc + (size_t)R * (size_t)S;
    b->lin = b->ol + (size_t)R * (size_t)C;
    /* each query's scores take its H rows alone (and its outputs go in parts
     * the row kernels take), so its bits do not depend on how many queries
     * the call has (a decode step, or the last token of a prompt found in the
     * cache, as the same token in a longer prefill) */
    size_t H = (size_t)a->H, qaw = (size_t)(C + a->rope);
    run_workers(pool, absorbed_queries, j, a->H);
    if (a->kv_q8) {
        run_workers(pool, wide_scores, j, S);
    } else {
        linear_weight cache = cache_weight(a, S);
        for (int t = 0; t < a->T; t++)
            linear_forward(j->path, pool, &cache, b->qa + (size_t)t * H * qaw, a->H,
                           b->sc + (size_t)t * H * (size_t)S, b->lin);
    }
    run_workers(pool, absorbed_softmax, j, R);
    /* the probabilities times the latents, every row at once straight from
     * the cache: each output one chain over the positions in order, and a
     * query's zeros past its own positions add exactly nothing to it, unless
     * a latent there is a NaN or infinity (a damaged weight met by a later
     * token: a guess not taken, say), whose product with zero is a NaN. Then
     * each chain stops at its query's last position: the positions the first
     * query sees go for all rows, then each later one for the queries that
     * see it, the chains carried on. */
    b->seen = later_latents_finite(j->path, a) ? S : a->pos0 + 1;
    if (a->kv_q8) {
        run_workers(pool, wide_combine, j, R);
    } else {
        const float *W32 = a->kv_bf16 ? NULL : a->kv_cache;
        const uint16_t *W16 = a->kv_bf16;
        for (int t = 0, k0 = 0; k0 < S; t++) {
            int k1 = t ? k0 + 1 : b->seen, r0 = t * a->H;
            /* (a single position's rows: too little work to share) */
            linear_combine_many(j->path, t ? NULL : pool, b->sc + (size_t)r0 * (size_t)S + (size_t)k0,
                                (size_t)S, R - r0, W32 ? W32 + (size_t)k0 * qaw : NULL,
                                W16 ? W16 + (size_t)k0 * qaw : NULL, qaw, k1 - k0, C,
                                b->ol + (size_t)r0 * (size_t)C, (size_t)C, t > 0);
            k0 = k1;
        }
    }
    run_workers(pool, absorbed_outputs, j, a->H);
}

/* The keys [k0, k0 + kn) of the block against the queries [t0, t0 + nq): their
 * scores, scaled, folded into each query's running softmax (the keys after a
 * query zeroed; its output so far and its sum rescaled when its largest score
 * grows), then the probabilities times the values added to the outputs. */
static void expanded_scores(const mla_job *j, const expanded_bufs *b, int k0, int kn, int t0, int nq)
{
    const mla_args *a = j->a;
    int qk = a->nope + a->rope, v = a->v;
    linear_weight keys = f32_weight(kn, qk, b->keys);
    linear_forward(j->path, NULL, &keys, b->qh + (size_t)t0 * (size_t)qk, nq, b->sc, b->lin);
    for (int i = 0; i < nq; i++) {
        int t = t0 + i, n = a->pos0 + t + 1 - k0;
        float *p = b->sc + (size_t)i * (size_t)kn, *acc = b->acc + (size_t)t * (size_t)v;
        n = n < kn ? n : kn;
        if (n <= 0) {
            memset(p, 0, (size_t)kn * sizeof *p);
            continue;
        }
        float m = b->max[t], pm = softmax_scale_max(j->path, p, n, a->scale);
        m = pm > m ? pm : m;
        float l = softmax_exp_sum(j->path, p, n, m);
        memset(p + n, 0, (size_t)(kn - n) * sizeof *p);
        if (m > b->max[t]) {
            float r = expf(b->max[t] - m);
            b->sum[t] *= r;
            for (int d = 0; d < v; d++)
                acc[d] *= r;
            b->max[t] = m;
        }
        b->sum[t] += l;
    }
    linear_weight values = f32_weight(v, kn, b->vt);
    linear_forward(j->path, NULL, &values, b->sc, nq, b->oh, b->lin);
    for (int i = 0; i < nq; i++) {
        float *acc = b->acc + (size_t)(t0 + i) * (size_t)v;
        const float *o = b->oh + (size_t)i * (size_t)v;
        for (int d = 0; d < v; d++)
            acc[d] += o[d];
    }
}

/* values of the block's first kn keys transposed, [v][kn] */
static void transpose_values(const mla_args *a, const expanded_bufs *b, int kn)
{
    int kvw = a->nope + a->v;
    for (int k = 0; k < a->v; k++) {
        float *vk = b->vt + (size_t)k * (size_t)kn;
        const float *src = b->kv + a->nope + k;
        for (int s = 0; s < kn; s++)
            vk[s] = src[(size_t)s * (size_t)kvw];
    }
}

/* The expanded form of head h as float32 matrix products through the linear
 * kernels, a block of cache positions at a time: the block's latents expanded
 * into the head's keys and values, then per block of queries that sees any of
 * them the scores, the running softmax and the probabilities times the values;
 * the outputs divided by their sums at the end. */
static void expanded_head(const mla_job *j, int h, const float *W, const expanded_bufs *b)
{
    const mla_args *a = j->a;
    int S = a->pos0 + a->T, C = a->kv_lora, qk = a->nope + a->rope, H = a->H, v = a->v;
    int kvw = a->nope + a->v, KB = key_block(a);
    for (int t = 0; t < a->T; t++) {
        memcpy(b->qh + (size_t)t * (size_t)qk, a->q + ((size_t)t * (size_t)H + (size_t)h) * (size_t)qk,
               (size_t)qk * sizeof(float));
        b->max[t] = -INFINITY;
        b->sum[t] = 0;
    }
    memset(b->acc, 0, (size_t)a->T * (size_t)v * sizeof(float));
    linear_weight wf = f32_weight(kvw, C, W);
    for (int k0 = 0; k0 < S; k0 += KB) {
        int kb = S - k0 < KB ? S - k0 : KB;
        for (int s = 0; s < kb; s++)
            cache_values(j->path, a, k0 + s, 0, C, b->lat + (size_t)s * (size_t)C);
        linear_forward(j->path, NULL, &wf, b->lat, kb, b->kv, b->lin);
        for (int s = 0; s < kb; s++) {
            memcpy(b->keys + (size_t)s * (size_t)qk, b->kv + (size_t)s * (size_t)kvw,
                   (size_t)a->nope * sizeof(float));
            cache_values(j->path, a, k0 + s, C, a->rope, b->keys + (size_t)s * (size_t)qk + a->nope);
        }
        /* the keys a block of queries sees only grow from one block to the
         * next, so the values are transposed again only when they do */
        int vt_n = 0;
        for (int t0 = 0; t0 < a->T; t0 += MLA_QBLOCK) {
            int nq = a->T - t0 < MLA_QBLOCK ? a->T - t0 : MLA_QBLOCK;
            int kn = a->pos0 + t0 + nq - k0;
            if (kn <= 0)
                continue;
            kn = kn < kb ? kn : kb;
            if (kn != vt_n)
                transpose_values(a, b, vt_n = kn);
            expanded_scores(j, b, k0, kn, t0, nq);
        }
    }
    for (int t = 0; t < a->T; t++) {
        float *o = a->out + ((size_t)t * (size_t)H + (size_t)h) * (size_t)v;
        const float *acc = b->acc + (size_t)t * (size_t)v;
        for (int d = 0; d < v; d++)
            o[d] = acc[d] / b->sum[t];
    }
}

static void run_heads(void *ctx, int worker, int n_workers)
{
    mla_job *j = ctx;
    const mla_args *a = j->a;
    int kvw = a->nope + a->v;
    float *W = j->work + (size_t)worker * worker_floats(a, 0);
    expanded_bufs eb = expanded_layout(a, W + (size_t)kvw * (size_t)a->kv_lora);
    int h0, h1;
    pool_split(a->H, 1, worker, n_workers, &h0, &h1);
    for (int h = h0; h < h1; h++) {
        linear_dequant_rows(j->path, a->kv_b, h * kvw, kvw, W);
        expanded_head(j, h, W, &eb);
    }
}

void mla_cpu(kernel_path path, thread_pool *pool, const mla_args *a, int absorbed, float *scratch)
{
    mla_job j = {.path = path, .a = a, .absorbed = absorbed};
    if (absorbed) {
        int tb = absorbed_tokens_per_block(a);
        for (int t0 = 0; t0 < a->T; t0 += tb) {
            mla_args b = token_block(a, t0, a->T - t0 < tb ? a->T - t0 : tb);
            j.a = &b;
            j.work = scratch + absorbed_shared_floats(&b, workers(pool));
            absorbed_all(&j, pool, scratch);
        }
        return;
    }
    j.work = scratch;
    run_workers(pool, run_heads, &j, a->H);
}
