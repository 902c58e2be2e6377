/* gpu_twin: see gpu_twin.h; the SIMD kernels are in gpu_twin_avx512.c and
 * gpu_twin_avx2.c (gpu_twin_simd.h). */
#include "gpu_twin.h"

#include <math.h>
#include <string.h>

#include "core/model/dtype.h"
#include "gpu_math.h"
#include "gpu_twin_simd.h"

#define LANES TWIN_LANES

/* the warp's butterfly: lane l adds lane l ^ o for o = 16, 8, 4, 2, 1; lane 0's sum */
static float butterfly(float *v)
{
    for (int o = LANES / 2; o > 0; o /= 2) {
        float t[LANES];
        for (int l = 0; l < LANES; l++)
            t[l] = v[l] + v[l ^ o];
        for (int l = 0; l < LANES; l++)
            v[l] = t[l];
    }
    return v[0];
}

/* one lane at a time: fmaf is the fused multiply-add the GPU's lanes do (the
 * reference the SIMD twins are tested against) */
static float dot_lanes(const float *w, const float *x, int n)
{
    float acc[LANES] = {0};
    for (int c = 0; c < n; c++)
        acc[c % LANES] = fmaf(w[c], x[c], acc[c % LANES]);
    return butterfly(acc);
}

static float bf16_float(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* INT4 as the GPU's lanes take it (gpu_linear.cu): lane l has the row's 32-bit
 * words l, l + 32, ...; a word's 8 columns are one chain of fmaf((q - 8), x)
 * from 0 (x = 0 past the last column), which goes into the lane's sum as
 * fmaf(chain, the group's scale, sum); then the butterfly. The reference the
 * SIMD twins are tested against. */
static float int4_row_lanes(const linear_weight *w, int r, const float *x)
{
    const uint32_t *words = (const uint32_t *)w->data + (size_t)r * (size_t)w->row_words;
    const uint16_t *srow = (const uint16_t *)w->scale + (size_t)r * (size_t)w->scale_cols;
    float acc[LANES] = {0};
    for (long long k = 0; k < w->row_words; k++) {
        float d = 0.0f;
        for (int j = 0; j < 8; j++) {
            long long c = 8 * k + j;
            float q = (float)((int)((words[k] >> (4 * j)) & 15u) - 8);
            d = fmaf(q, c < w->cols ? x[c] : 0.0f, d);
        }
        acc[k % LANES] = fmaf(d, bf16_float(srow[8 * k / w->group_size]), acc[k % LANES]);
    }
    return butterfly(acc);
}

/* FP8 when its GPU lanes take words (twin_fp8_words): as INT4 with words of 4
 * codes, each code's exact value in the chain and the block's scale after it */
static float fp8_row_lanes(const linear_weight *w, int r, const float *x)
{
    const uint8_t *row = (const uint8_t *)w->data + (size_t)r * (size_t)w->cols;
    const float *srow = (const float *)w->scale + (size_t)(r / w->block_rows) * (size_t)w->scale_cols;
    float acc[LANES] = {0};
    for (int k = 0; k < w->cols / 4; k++) {
        float d = 0.0f;
        for (int j = 0; j < 4; j++)
            d = fmaf(e4m3_to_f32(row[4 * k + j]), x[4 * k + j], d);
        acc[k % LANES] = fmaf(d, srow[4 * k / w->block_cols], acc[k % LANES]);
    }
    return butterfly(acc);
}

/* word k's column j at xp[CW (k - l) + V j + l], l = k % V: each register of V
 * lanes takes column j of its V words in one load; zeros past the columns */
void twin_words_permute_x(const float *x, int T, int cols, int CW, int V, float *xp)
{
    size_t xs = twin_x_stride(cols), v = (size_t)V, cw = (size_t)CW;
    for (size_t t = 0; t < (size_t)T; t++) {
        const float *xt = x + t * (size_t)cols;
        float *out = xp + t * xs;
        for (size_t k0 = 0; k0 < xs / cw; k0 += v)      /* V words, CW V columns */
            for (size_t l = 0; l < v; l++)
                for (size_t j = 0, c = cw * (k0 + l); j < cw; j++, c++)
                    out[cw * k0 + v * j + l] = c < (size_t)cols ? xt[c] : 0.0f;
    }
}

/* the lanes per register of the SIMD twin that takes w's words on `path`,
 * 0 if none does */
static int words_in_registers(kernel_path path, const linear_weight *w)
{
    if (path == KPATH_AVX512 && (twin_int4_in_registers(w) || twin_fp8_words_16(w)))
        return 16;
    if ((path == KPATH_AVX512 || path == KPATH_AVX2) && (twin_int4_in_registers(w) || twin_fp8_words_8(w)))
        return 8;   /* AVX-512 without VBMI takes AVX2's FP8 shuffles */
    return 0;
}

typedef struct linear_ctx {
    kernel_path path;
    const linear_weight *w;
    const float *x;             /* words in registers: laid out to match */
    int T;
    float *y, *work;            /* TWIN_ROWS * cols floats per worker */
} linear_ctx;

static void linear_worker(void *p, int worker, int n_workers)
{
    linear_ctx *c = p;
    int r0, r1, cols = c->w->cols;
    pool_split(c->w->rows, 1, worker, n_workers, &r0, &r1);
    float *work = c->work + (size_t)worker * TWIN_ROWS * (size_t)cols;
    int V = words_in_registers(c->path, c->w);
    if (V && c->w->fmt == WF_INT4_GROUP) {
        (V == 16 ? twin_int4_avx512 : twin_int4_avx2)(c->w, r0, r1, c->x, c->T, c->y);
        return;
    }
    if (V) {
        (V == 16 ? twin_fp8_avx512 : twin_fp8_avx2)(c->w, r0, r1, c->x, c->T, c->y);
        return;
    }
    if (c->w->fmt == WF_INT4_GROUP || twin_fp8_words(c->w)) {
        /* the scalar path, or INT4 words per group or FP8 blocks the SIMD twins do not take */
        float (*lanes)(const linear_weight *, int, const float *) =
            c->w->fmt == WF_INT4_GROUP ? int4_row_lanes : fp8_row_lanes;
        for (int r = r0; r < r1; r++)
            for (int t = 0; t < c->T; t++)
                c->y[(size_t)t * (size_t)c->w->rows + (size_t)r] =
                    lanes(c->w, r, c->x + (size_t)t * (size_t)cols);
        return;
    }
    if (c->path == KPATH_AVX512 && twin_bf16_in_registers(c->w)) {
        twin_bf16_avx512(c->w, r0, r1, c->x, c->T, c->y);
        return;
    }
    if (c->path == KPATH_AVX512) {
        twin_dequant_avx512(c->path, c->w, r0, r1, c->x, c->T, c->y, work);
        return;
    }
    if (c->path == KPATH_AVX2 && twin_bf16_in_registers(c->w)) {
        twin_bf16_avx2(c->w, r0, r1, c->x, c->T, c->y);
        return;
    }
    if (c->path == KPATH_AVX2) {
        twin_dequant_avx2(c->w, r0, r1, c->x, c->T, c->y, work);
        return;
    }
    for (int r = r0; r < r1; r++) {
        linear_dequant_rows(c->path, c->w, r, 1, work);
        for (int t = 0; t < c->T; t++)
            c->y[(size_t)t * (size_t)c->w->rows + (size_t)r] =
                dot_lanes(work, c->x + (size_t)t * (size_t)cols, cols);
    }
}

size_t gpu_twin_linear_scratch(int cols, int T, int n_threads)
{
    return (size_t)T * twin_x_stride(cols) +
           (size_t)(n_threads > 0 ? n_threads : 1) * TWIN_ROWS * (size_t)cols;
}

void gpu_twin_linear(kernel_path path, thread_pool *pool, const linear_weight *w, const float *x,
                     int T, float *y, float *scratch)
{
    linear_ctx c = {path, w, x, T, y, scratch + (size_t)T * twin_x_stride(w->cols)};
    int V = words_in_registers(path, w);
    if (V) {
        twin_words_permute_x(x, T, w->cols, w->fmt == WF_INT4_GROUP ? 8 : 4, V, scratch);
        c.x = scratch;
    }
    if (pool)
        thread_pool_run(pool, linear_worker, &c);
    else
        linear_worker(&c, 0, 1);
}

size_t gpu_twin_ffn_scratch(const linear_weight *gate, const linear_weight *down, int T,
                            int n_threads)
{
    int cols = gate->cols > down->cols ? gate->cols : down->cols;
    return 2 * (size_t)T * (size_t)gate->rows + gpu_twin_linear_scratch(cols, T, n_threads);
}

void gpu_twin_ffn(kernel_path path, thread_pool *pool, const linear_weight *gate,
                  const linear_weight *up, const linear_weight *down, const float *x, int T,
                  float *out, float *scratch)
{
    size_t n = (size_t)T * (size_t)gate->rows;
    float *g = scratch, *u = g + n, *rest = u + n;
    gpu_twin_linear(path, pool, gate, x, T, g, rest);
    gpu_twin_linear(path, pool, up, x, T, u, rest);
    for (size_t i = 0; i < n; i++)
        g[i] = gm_silu_mul(g[i], u[i]);
    gpu_twin_linear(path, pool, down, g, T, out, rest);
}
