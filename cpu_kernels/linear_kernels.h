/* linear_kernels: y = W x for every weight format, at memory speed.
 *
 * Three paths compute the same thing: the scalar reference (linear_ref.c),
 * AVX2+FMA and AVX-512 (F/BW/VL), chosen at run time from what the CPU has
 * (or forced: MOETIER_KERNELS=scalar|avx2|avx512, `--kernels`). Activations stay
 * float32 on every path, weights are dequantized in registers straight from the
 * checkpoint / store bytes: the paths differ from the reference only in the
 * order of float32 additions.
 *
 * A SIMD kernel computes rows [r0, r1) of y for all T tokens: below
 * LINEAR_BATCHED_MIN_T tokens it reads each weight row once per tile of up to 4
 * tokens (decode, a bandwidth-bound GEMV; LINEAR_TILES_MAX_T tokens a pass over
 * the weights); from there on it dequantizes panels of rows once and runs a
 * register-blocked float32 GEMM (prefill), with tokens in the vector lanes
 * up to LINEAR_LANES_MAX_T and rows above (the two give the same
 * bits: one FMA chain per output, columns in order). Below
 * LINEAR_BATCHED_MIN_T a token's result has the same bits whatever the call's
 * token count (a decode step of several conversations gives each the bits of
 * it alone). Layouts
 * it cannot take (INT4 groups that are not whole 32-blocks, FP8 blocks not a
 * multiple of 16 wide) go to the scalar reference. */
#ifndef MOETIER_LINEAR_KERNELS_H
#define MOETIER_LINEAR_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "core/model/linear_weight.h"
#include "thread_pool.h"

typedef enum kernel_path { KPATH_SCALAR, KPATH_AVX2, KPATH_AVX512, KPATH_COUNT } kernel_path;

const char *kernel_path_name(kernel_path p);
int kernel_path_parse(const char *s, kernel_path *out);
/* Whether this CPU can run path p. */
int kernel_path_supported(kernel_path p);
/* The fastest supported path, or MOETIER_KERNELS when set (and supported). */
kernel_path kernel_path_default(void);
/* "avx512 kernels" and what they use on this CPU (FP8 byte tables, AMX for
 * prefill), for start-up lines and `inspect` */
void kernel_path_describe(kernel_path p, char *buf, size_t cap);

/* A decode kernel reads 64 bytes per 10-30 vector ops, too slowly for the
 * hardware prefetchers to keep enough misses in flight: from DRAM the INT4 row
 * kernel ran at about half its speed on weights in L2. A software prefetch into
 * L2 4 KiB ahead (the rows of a matrix are contiguous, so it runs on into the
 * next row) brought it from 12-14 to 18-20 GB/s on one core in a scratch
 * benchmark over 235 MB of weights; 2 KiB was too
 * short, 8-32 KiB no better. Prefetches never fault, so reading past the
 * matrix's end is harmless; the address is formed as an integer for that reason. */
#define PREFETCH_AHEAD 4096

static inline void prefetch_l2(const void *p, size_t ahead)
{
    __builtin_prefetch((const void *)((uintptr_t)p + ahead), 0, 2);
}

/* Per-call preparation of x shared by every row (and every thread): INT4 wants
 * x with each 64-chunk transposed as 8 x 8 (AVX2) or each 128-chunk as 8 x 16
 * (AVX-512); the FP8 kernels without byte tables want each token's x scaled by
 * a power of two and each 32-column (AVX2) or 64-column (AVX-512) chunk of a
 * scale block transposed as 8 x 4 or 16 x 4; the AVX-512 VBMI FP8 kernel wants
 * each 64-column chunk of a scale block in the order its byte unpacking yields.
 * Whatever x the row kernels read starts on a 64-byte boundary (a copy in the
 * scratch when the caller's does not). */
typedef struct linear_prep {
    const float *x;             /* [T][cols] */
    const float *x_perm;        /* [T][cols], or NULL when the kernel reads x as is */
    int T;
    int fp8_lut;                /* FP8: x_perm is in the VBMI order */
    /* FP8 without byte tables: x_perm is each token's x times a power of two
     * 2^k, its whole chunks (32 columns on AVX2, 64 on AVX-512) transposed when
     * fp8_chunked; fp8_up[t] = 2^(120 - k) */
    int fp8_chunked;
    const float *fp8_up;
    /* batched calls of up to LINEAR_LANES_MAX_T tokens: x transposed,
     * [cols][ceil(T / L)][L], tokens in the lanes (zeros past T); L = 16 on
     * AVX-512, 8 on AVX2 */
    const float *x_lanes;
    int batched;                /* the batched product (linear_batched), x as is */
    /* the batched product on the AMX tiles: x in linear_amx_prepare's layout */
    const uint32_t *x_amx;
} linear_prep;

/* Whether the AVX-512 FP8 kernel can use byte-table lookups (AVX512-VBMI;
 * MOETIER_FP8_TABLES=0 turns them off, to run the kernel of CPUs without VBMI). */
int kernel_fp8_lut_supported(void);
/* bf16 bits of every E4M3 magnitude (index = code & 0x7f): high bytes at [0,128),
 * low bytes at [128, 256). */
const uint8_t *fp8_bf16_table(void);
/* 1 when the SIMD paths take w, 0 when it goes to the scalar reference. */
int linear_simd_ok(const linear_weight *w);
/* floats of scratch linear_prepare needs for w and T tokens */
size_t linear_prep_scratch(const linear_weight *w, int T);
void linear_prepare(kernel_path path, const linear_weight *w, const float *x, int T,
                    float *scratch, linear_prep *p);

/* From this many tokens on, the SIMD paths dequantize blocks of rows once and
 * run a register-blocked float32 product (prefill); below, token tiles of 4. */
#define LINEAR_BATCHED_MIN_T 16
/* On AVX2, INT4 and FP8 take it from this many: with 8 lanes, dequantizing a
 * panel into memory costs more for fewer tokens than the tiles' dequantizing
 * in registers (2 threads, GFLOP/s against the tiles': INT4 at 16 tokens
 * 122-134 against 136-138, at 32 138-157 against 138-142; FP8 at 16 81-86
 * against 104, at 32 116-118 against 87-108). */
#define LINEAR_AVX2_QUANT_BATCHED_MIN_T 32
/* Whether a call of T tokens on `path` takes the batched product. */
int linear_batched(kernel_path path, const linear_weight *w, int T);
/* up to this many tokens the batched product keeps tokens in its
 * vector lanes (no transpose of the weights), above it rows; both give the
 * same bits */
#define LINEAR_LANES_MAX_T 64
/* The token tiles take at most this many tokens per pass over the weights; a
 * call of more that goes to them (below LINEAR_BATCHED_MIN_T) runs in groups
 * of it, with the same bits (each token's sums are
 * its own): past it, the tokens' x and the tiles' partial sums spill out of L1
 * (one thread, INT4: 108 GFLOP/s at 8 tokens, 68 at 15 in one pass) */
#define LINEAR_TILES_MAX_T 8
/* floats of per-thread work the batched rows need (either SIMD path) */
size_t linear_batched_work(int cols, int T);
/* AMX (linear_amx.c): on CPUs with AMX-BF16 (Sapphire Rapids and later) the
 * AVX-512 path's batched product runs on the tile unit for BF16, FP8 and INT4
 * weights whose columns come in 32s, with float32 accuracy (x cut exactly
 * into three bf16 parts, every product exact, float32 sums: a different
 * order of additions, like the other paths). Like the FMA product it replaces,
 * a token's result has the same bits in a call of any size from
 * LINEAR_BATCHED_MIN_T tokens on; the bits differ from the FMA product's, so
 * whether AMX ran is part of what a saved prompt's numbers depend on.
 * MOETIER_AMX=0 turns it off. */
int kernel_amx_supported(void);
/* whether the batched product takes AMX now: supported and not disabled */
int kernel_amx_enabled(void);
/* off: the FMA product instead, from now on (a benchmark's comparison, a test) */
void kernel_amx_disable(int off);
/* whether the AMX product takes w */
int linear_amx_ok(const linear_weight *w);
/* floats of x prepared for T tokens */
size_t linear_amx_prep_floats(int cols, int T);
/* x's blocks of 16 tokens [b0, b1) (of ceil(T / 16)) into dst, the layout
 * the AMX rows read (linear_forward splits the blocks over its pool) */
void linear_amx_prepare(const float *x, int T, int cols, int b0, int b1, uint32_t *dst);
/* floats of per-thread work */
size_t linear_amx_work(int cols, int T);
void linear_rows_amx(const linear_weight *w, const linear_prep *p, float *y, int r0, int r1,
                     float *work);

/* rows [r0, r1) of y [T][w->rows]; requires linear_simd_ok(w); work: the
 * calling worker's linear_batched_work (or cols) floats */
void linear_rows_avx512(const linear_weight *w, const linear_prep *p, float *y, int r0, int r1,
                        float *work);
void linear_rows_avx2(const linear_weight *w, const linear_prep *p, float *y, int r0, int r1,
                      float *work);

/* rows [r0, r0 + n) of W as float32 [n][cols], exactly the reference's values */
void dequant_rows_avx512(const linear_weight *w, int r0, int n, float *out);
void dequant_rows_avx2(const linear_weight *w, int r0, int n, float *out);
void linear_dequant_rows(kernel_path path, const linear_weight *w, int r0, int n, float *out);

/* y[c] = sum over i < n of a[i] W[i][c] for c < cols (W row-major float32):
 * a combination of W's rows, W^T a, each output summed over i in order (the
 * absorbed attention's queries, W_k^T q_nope, with no transpose of W_k). The
 * SIMD paths fuse each multiply-add; the scalar reference does not. */
void linear_combine_rows(kernel_path path, const float *a, const float *W, int n, int cols,
                         float *y);
/* add: each output's chain carried on from y instead of started at zero */
void combine_rows_avx512(const float *a, const float *W, int n, int cols, float *y, int add);
void combine_rows_avx2(const float *a, const float *W, int n, int cols, float *y, int add);
/* The same over rows [r0, r0 + n) of a weight in any format, with the bits of
 * linear_combine_rows on those rows dequantized (linear_dequant_rows), read a
 * block of rows at a time; work: linear_combine_work(w) floats (0 for F32,
 * read in place). */
#define LINEAR_COMBINE_BLOCK_FLOATS 4096
size_t linear_combine_work(const linear_weight *w);
void linear_combine_weight(kernel_path path, const float *a, const linear_weight *w, int r0, int n,
                           float *y, float *work);

/* Y[r][c] = sum over i < n of A[r][i] W[i][c] for r < R and c < cols: R
 * combinations of the same n rows of W at once (the absorbed attention's
 * probabilities times the latent cache, W's rows float32 in W32 or bf16 in
 * W16), each output the bits of linear_combine_rows of its row of A over W's
 * rows as float32, whatever R, the pool or how the work is split. W's rows
 * are read a block at a time by tiles of several rows of A (so the cache is
 * read once for all of them, and without a transpose); the pool splits the
 * columns, or the rows of A when there are many. Rows lda, ldw and ldy
 * elements apart. With add, each output's chain carries on from Y (a call
 * over the rows after those of the call before it: the bits of one call over
 * all of them). */
void linear_combine_many(kernel_path path, thread_pool *pool, const float *A, size_t lda, int R,
                         const float *W32, const uint16_t *W16, size_t ldw, int n, int cols,
                         float *Y, size_t ldy, int add);
/* nr rows of A against columns [c0, c1) of W (at most 64 on AVX-512, 32 on
 * AVX2), W's rows [0, n), each output's chain from zero or (add) carried on
 * from Y */
void combine_many_avx512(const float *A, size_t lda, int nr, const float *W32,
                         const uint16_t *W16, size_t ldw, int n, int c0, int c1, float *Y,
                         size_t ldy, int add);
void combine_many_avx2(const float *A, size_t lda, int nr, const float *W32, const uint16_t *W16,
                       size_t ldw, int n, int c0, int c1, float *Y, size_t ldy, int add);

/* y = W x on path `path`, split by rows over the pool (NULL: this thread only).
 * scratch: linear_forward_scratch(w, T) floats. */
size_t linear_forward_scratch(const linear_weight *w, int T, int n_threads);
void linear_forward(kernel_path path, thread_pool *pool, const linear_weight *w, const float *x,
                    int T, float *y, float *scratch);
/* The same with each token's result the bits it has alone, whatever T: in
 * parts the row kernels take (LINEAR_ROWS_MAX_T tokens). scratch:
 * linear_forward_scratch(w, min(T, LINEAR_ROWS_MAX_T), n_threads) floats. */
#define LINEAR_ROWS_MAX_T (LINEAR_BATCHED_MIN_T - 1)
void linear_forward_invariant(kernel_path path, thread_pool *pool, const linear_weight *w,
                              const float *x, int T, float *y, float *scratch);

#endif
