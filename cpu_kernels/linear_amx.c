/* linear_amx: the batched product (prefill: 16 tokens or more) on the AMX
 * tile unit of Xeon CPUs since Sapphire Rapids, with float32 accuracy.
 *
 * A tile product (TDPBF16PS) multiplies bf16 pairs and adds them in float32.
 * Weights of the BF16, FP8 and INT4 formats are exact in bf16 without their
 * scales (E4M3 values and nibbles are), and x is cut exactly into three bf16
 * parts (x = hi + mid + lo: each truncation keeps the next 8 of float32's 24
 * significant bits), so each product is exact and the sums are float32 sums,
 * as on the other paths; only their order differs. The scales apply to each
 * span of columns they cover (an INT4 group, an FP8 block): that span's sum
 * is taken out of the tile, multiplied by its row's scale and added to the
 * output's running sum. BF16 has no scales: its sums stay in the tiles over
 * a chunk of columns and go through memory only from one chunk to the next.
 * The tile unit reads subnormal bf16 as zero and flushes subnormal results:
 * a part of x below 2^-126 is lost, an error under 1e-38 |w| per product.
 *
 * Operands: A is a panel of 32 weight rows dequantized to bf16 in their own
 * order (two tiles of 16 rows x 32 columns), B is x, prepared once per call
 * (linear_amx_prepare) as tiles of 32 columns x 16 tokens in the pair layout
 * the instruction wants, three parts each; four accumulator tiles hold 32
 * rows x 32 tokens. Each output's sums depend only on its own row and token,
 * never on how many tokens or rows a call holds or how threads split them. */
#include <cpuid.h>
#include <immintrin.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "linear_kernels.h"
#include "transpose_avx512.h"

#define TGT __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,amx-tile,amx-bf16")))
#define INL static inline __attribute__((always_inline))

/* weight rows per panel (two A tiles) and columns dequantized per panel chunk */
#define AMX_NR 32
#define AMX_KC 256
/* x parts */
#define AMX_PARTS 3

/* Linux hands out the tile registers' state only on request (arch_prctl,
 * since 5.16); without it the first tile instruction faults. */
#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18

static int amx_ok;
static int amx_off;
static pthread_once_t amx_once = PTHREAD_ONCE_INIT;

static void amx_probe(void)
{
    __builtin_cpu_init();
    const char *env = getenv("MOETIER_AMX");
    if (env && !strcmp(env, "0"))
        return;
    if (!kernel_path_supported(KPATH_AVX512) || !__builtin_cpu_supports("avx512dq"))
        return;
    /* CPUID leaf 7: EDX bit 24 AMX-TILE, bit 22 AMX-BF16 */
    unsigned a, b, c, d;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d) || !(d & (1u << 24)) || !(d & (1u << 22)))
        return;
    amx_ok = syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0;
}

int kernel_amx_supported(void)
{
    pthread_once(&amx_once, amx_probe);
    return amx_ok;
}

void kernel_amx_disable(int off)
{
    __atomic_store_n(&amx_off, off, __ATOMIC_RELAXED);
}

int kernel_amx_enabled(void)
{
    return kernel_amx_supported() && !__atomic_load_n(&amx_off, __ATOMIC_RELAXED);
}

int linear_amx_ok(const linear_weight *w)
{
    if (w->cols % 32)
        return 0;
    switch (w->fmt) {
    case WF_BF16: return 1;
    case WF_FP8_BLOCK: return w->block_cols % 32 == 0 && w->block_rows > 0;
    case WF_INT4_GROUP: return w->group_size % 32 == 0;
    default: return 0; /* float32 and float16 values are not exact in bf16 */
    }
}

static size_t token_blocks(int T)
{
    return ((size_t)T + 15) / 16;
}

size_t linear_amx_prep_floats(int cols, int T)
{
    /* one dword (a bf16 pair) per two columns, per token, per part */
    return token_blocks(T) * 16 * (size_t)cols / 2 * AMX_PARTS;
}

/* the B tile of x for columns [32 s, 32 s + 32), tokens [16 b, 16 b + 16) and
 * part p: 16 rows (column pairs) of 16 dwords (tokens) */
INL size_t x_tile(size_t s, size_t nb, size_t b, int p)
{
    return ((s * nb + b) * AMX_PARTS + (size_t)p) * 256;
}

/* the three bf16 parts of 16 floats, as the top halves of 16 dwords. An
 * infinity is its first part alone (inf - inf would make the others NaN, and
 * the product NaN where the reference's is infinite); a NaN is a quiet NaN
 * there (its payload may lie in the bits the first part drops, which would
 * leave an infinity). */
TGT INL void split3(__m512 x, __m512i part[AMX_PARTS])
{
    const __m512i top = _mm512_set1_epi32((int)0xffff0000u);
    __mmask16 inf_or_nan = _mm512_fpclass_ps_mask(x, 0x01 | 0x08 | 0x10 | 0x80);
    __mmask16 nan = _mm512_fpclass_ps_mask(x, 0x01 | 0x80);
    __m512i hi = _mm512_and_si512(_mm512_castps_si512(x), top);
    hi = _mm512_mask_mov_epi32(hi, nan, _mm512_set1_epi32(0x7fc00000));
    __m512 r = _mm512_sub_ps(x, _mm512_castsi512_ps(hi));
    __m512i mid = _mm512_and_si512(_mm512_castps_si512(r), top);
    __m512 lo = _mm512_sub_ps(r, _mm512_castsi512_ps(mid)); /* exact in bf16 */
    part[0] = hi;
    part[1] = _mm512_maskz_mov_epi32((__mmask16)~inf_or_nan, mid);
    part[2] = _mm512_maskz_mov_epi32((__mmask16)~inf_or_nan, _mm512_castps_si512(lo));
}

TGT void linear_amx_prepare(const float *x, int T, int cols, int b0, int b1, uint32_t *dst)
{
    size_t nb = token_blocks(T), steps = (size_t)cols / 32;
    /* the top halves of two vectors' dwords, in order: 32 words, columns 0..31 */
    static const uint16_t pick_words[32]
        __attribute__((aligned(64))) = {1,  3,  5,  7,  9,  11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31,
                                        33, 35, 37, 39, 41, 43, 45, 47, 49, 51, 53, 55, 57, 59, 61, 63};
    const __m512i pick = _mm512_load_si512(pick_words);
    uint32_t rows[AMX_PARTS][16][16] __attribute__((aligned(64)));
    for (size_t b = (size_t)b0; b < (size_t)b1; b++)
        for (size_t s = 0; s < steps; s++) {
            for (int tt = 0; tt < 16; tt++) {
                size_t t = b * 16 + (size_t)tt;
                __m512 x0 = _mm512_setzero_ps(), x1 = _mm512_setzero_ps();
                if (t < (size_t)T) {
                    x0 = _mm512_loadu_ps(x + t * (size_t)cols + 32 * s);
                    x1 = _mm512_loadu_ps(x + t * (size_t)cols + 32 * s + 16);
                }
                __m512i p0[AMX_PARTS], p1[AMX_PARTS];
                split3(x0, p0);
                split3(x1, p1);
                for (int p = 0; p < AMX_PARTS; p++)
                    _mm512_store_si512(rows[p][tt], _mm512_permutex2var_epi16(p0[p], pick, p1[p]));
            }
            /* a row per token becomes a row per column pair */
            for (int p = 0; p < AMX_PARTS; p++)
                transpose16((const float *)rows[p][0], 16, (float *)(dst + x_tile(s, nb, b, p)), 16);
        }
}

/* Tokens per pass over the weights, in blocks of 16: the x of a chunk of
 * columns for this many (256 x 256 columns x 3 parts x 2 bytes: 384 KB) stays
 * in L2 while every panel of rows runs against it. Read for every panel, x
 * from L3 was the limit: 157-175 GFLOP/s at 256 tokens on one Xeon core. */
#define AMX_PASS_BLOCKS 16
/* Rows whose sums a pass keeps (in L2, 256 KB at 256 tokens) over all the
 * columns: they reach y once. Added to y after each chunk instead, y's rows
 * (a line per token) were a fifth of the time. */
#define AMX_MB 256

size_t linear_amx_work(int cols, int T)
{
    (void)cols;
    size_t blocks = token_blocks(T) < AMX_PASS_BLOCKS ? token_blocks(T) : AMX_PASS_BLOCKS;
    return (size_t)AMX_NR * AMX_KC / 2    /* the bf16 panel */
           + 4 * 256                      /* the tiles' sums of a span */
           + (size_t)AMX_MB * blocks * 16 /* the row block's sums */
           + AMX_NR * AMX_KC / 32 + 16;   /* the rows' scales by step; alignment */
}

/* bf16 bits of the E4M3 magnitudes 0..127 (NaN 0x7fc0) */
static uint16_t fp8_words[128] __attribute__((aligned(64)));
static pthread_once_t fp8_words_once = PTHREAD_ONCE_INIT;

static void fp8_words_init(void)
{
    const uint8_t *t = fp8_bf16_table();
    for (int i = 0; i < 128; i++)
        fp8_words[i] = (uint16_t)(t[i] << 8 | t[128 + i]);
}

/* columns [c0, c0 + kc) of rows [r, r + nr) as bf16, without scales, into
 * panel [AMX_NR][AMX_KC] */
TGT static void dequant_panel(const linear_weight *w, int r, int nr, int c0, int kc, uint16_t *panel)
{
    /* bf16 of -8 .. 7, indexed by the nibble */
    static const uint16_t int4_bf16[32]
        __attribute__((aligned(64))) = {0xc100, 0xc0e0, 0xc0c0, 0xc0a0, 0xc080, 0xc040, 0xc000, 0xbf80,
                                        0,      0x3f80, 0x4000, 0x4040, 0x4080, 0x40a0, 0x40c0, 0x40e0};
    const __m512i int4_words = _mm512_load_si512(int4_bf16);
    const __m512i f0 = _mm512_load_si512(fp8_words), f1 = _mm512_load_si512(fp8_words + 32);
    const __m512i f2 = _mm512_load_si512(fp8_words + 64), f3 = _mm512_load_si512(fp8_words + 96);
    for (int i = 0; i < nr; i++) {
        uint16_t *o = panel + (size_t)i * AMX_KC;
        size_t row = (size_t)(r + i);
        if (w->fmt == WF_INT4_GROUP) {
            const uint8_t *src = (const uint8_t *)w->data + row * (size_t)w->row_words * 4;
            for (int c = 0; c < kc; c += 32) {
                /* byte j holds columns 2j (low nibble) and 2j + 1 (high) */
                __m512i v = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(src + (c0 + c) / 2)));
                __m512i q = _mm512_or_si512(_mm512_and_si512(v, _mm512_set1_epi32(0xf)),
                                            _mm512_slli_epi32(_mm512_srli_epi32(v, 4), 16));
                _mm512_store_si512(o + c, _mm512_permutexvar_epi16(q, int4_words));
            }
        } else if (w->fmt == WF_FP8_BLOCK) {
            const uint8_t *src = (const uint8_t *)w->data + row * (size_t)w->cols;
            for (int c = 0; c < kc; c += 32) {
                __m512i v = _mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i *)(src + c0 + c)));
                __m512i mag = _mm512_and_si512(v, _mm512_set1_epi16(0x7f));
                __m512i low = _mm512_permutex2var_epi16(f0, mag, f1);
                __m512i high = _mm512_permutex2var_epi16(f2, mag, f3);
                __mmask32 upper = _mm512_test_epi16_mask(mag, _mm512_set1_epi16(0x40));
                __m512i sign = _mm512_slli_epi16(_mm512_and_si512(v, _mm512_set1_epi16(0x80)), 8);
                _mm512_store_si512(o + c, _mm512_or_si512(_mm512_mask_blend_epi16(upper, low, high), sign));
            }
        } else {
            const uint16_t *src = (const uint16_t *)w->data + row * (size_t)w->cols;
            memcpy(o, src + c0, (size_t)kc * 2);
        }
    }
}

/* the scale row r's weights carry over the span starting at column c (INT4
 * or FP8; BF16 has none) */
INL float row_scale(const linear_weight *w, int r, int c)
{
    if (w->fmt == WF_INT4_GROUP) {
        uint16_t h =
            ((const uint16_t *)w->scale)[(size_t)r * (size_t)w->scale_cols + (size_t)(c / w->group_size)];
        uint32_t u = (uint32_t)h << 16;
        float f;
        memcpy(&f, &u, 4);
        return f;
    }
    float f;
    memcpy(&f,
           (const float *)w->scale + (size_t)(r / w->block_rows) * (size_t)w->scale_cols +
               (size_t)(c / w->block_cols),
           4);
    return f;
}

typedef struct tile_config {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} tile_config;

/* tiles 0-3: sums (rows 0-15 and 16-31 by tokens of block b and b + 1);
 * 4-5: the weight panel's two row halves; 6-7: x of blocks b and b + 1 */
TGT INL void load_tile_config(void)
{
    tile_config cfg __attribute__((aligned(64)));
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int i = 0; i < 8; i++) {
        cfg.rows[i] = 16;
        cfg.colsb[i] = 64;
    }
    _tile_loadconfig(&cfg);
}

/* sums[t][i][j]: tile t's row i, token j (t: row half t & 1, token block
 * b + t / 2); part: the running sums from the panel's first row, rows tp apart;
 * the scale of row n at scale[n * AMX_KC / 32] */
TGT INL void add_span(const float *sums, const float *scale, float *part, size_t tp, size_t b, int two,
                      int first)
{
    for (int t = 0; t < (two ? 4 : 2); t++) {
        size_t blk = b + (size_t)(t >> 1);
        for (int i = 0; i < 16; i++) {
            int n = 16 * (t & 1) + i;
            float *a = part + (size_t)n * tp + 16 * blk;
            __m512 s = _mm512_load_ps(sums + (size_t)t * 256 + 16 * (size_t)i);
            __m512 sc = _mm512_set1_ps(scale[(size_t)n * (AMX_KC / 32)]);
            _mm512_store_ps(a, first ? _mm512_mul_ps(s, sc) : _mm512_fmadd_ps(s, sc, _mm512_load_ps(a)));
        }
    }
}

/* the tile products over columns [c, c + 32) of the panel for token blocks b
 * (and b + 1 when two); xs: x's tiles of those columns */
TGT INL void step_products(const uint16_t *panel, int c, const uint32_t *xs, size_t nb, size_t b, int two)
{
    _tile_loadd(4, panel + c, AMX_KC * 2);
    _tile_loadd(5, panel + (size_t)16 * AMX_KC + c, AMX_KC * 2);
    for (int p = 0; p < AMX_PARTS; p++) {
        _tile_loadd(6, xs + x_tile(0, nb, b, p), 64);
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 5, 6);
        if (two) {
            _tile_loadd(7, xs + x_tile(0, nb, b + 1, p), 64);
            _tile_dpbf16ps(2, 4, 7);
            _tile_dpbf16ps(3, 5, 7);
        }
    }
}

/* y[t][r + n] = part[n][t - 16 b0] for n < nr and the pass's tokens below T
 * (part [.][tp]) */
TGT INL void store_sums(const float *part, size_t tp, float *y, size_t R, int r, int nr, size_t b0, int T)
{
    float cols16[16][16] __attribute__((aligned(64)));
    for (int h = 0; h * 16 < nr; h++) {
        int left = nr - 16 * h;
        __mmask16 m = left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1u);
        for (size_t blk = 0; blk * 16 < tp; blk++) {
            transpose16(part + (size_t)16 * h * tp + 16 * blk, tp, cols16[0], 16);
            for (int j = 0; j < 16; j++) {
                size_t t = (b0 + blk) * 16 + (size_t)j;
                if (t >= (size_t)T)
                    break;
                _mm512_mask_storeu_ps(y + t * R + (size_t)r + 16 * (size_t)h, m, _mm512_load_ps(cols16[j]));
            }
        }
    }
}

/* Prefetches into L2 the panel of rows [r, r + nr), columns [c0, c0 + kc)
 * (a short run per row, which the hardware prefetcher does not follow) */
INL void prefetch_panel(const linear_weight *w, int r, int nr, int c0, int kc)
{
    size_t bytes = w->fmt == WF_INT4_GROUP ? 1 : w->fmt == WF_FP8_BLOCK ? 2 : 4; /* per 2 columns */
    size_t rb = w->fmt == WF_INT4_GROUP ? (size_t)w->row_words * 4 : (size_t)w->cols * bytes / 2;
    for (int i = 0; i < nr; i++) {
        const uint8_t *row = (const uint8_t *)w->data + (size_t)(r + i) * rb;
        for (size_t b = (size_t)c0 * bytes / 2 & ~(size_t)63; b < (size_t)(c0 + kc) * bytes / 2; b += 64)
            prefetch_l2(row + b, 0);
    }
}

/* The products of a panel (rows [0, AMX_NR), columns [0, kc) of the chunk at
 * c0) and token blocks b and (two) b + 1, added to the panel's running sums
 * pr (rows tp apart; first: the row's first chunk). Scaled formats take each
 * span's sums out of the tiles to scale them; unscaled ones keep them there
 * over the whole chunk, carried from chunk to chunk through pr. span_sums:
 * 4 x 256 floats. */
TGT INL void pair_products(const uint16_t *panel, int kc, int c0, int span, const uint32_t *xs, size_t nb,
                           size_t b, int two, const float *scale, float *span_sums, float *pr, size_t tp,
                           int first, int unscaled)
{
    const uint32_t *xb = xs + x_tile(0, nb, b, 0);
    if (unscaled) {
        float *c0p = pr + 16 * b, *c1p = pr + 16 * tp + 16 * b;
        size_t stride = tp * sizeof(float);
        if (first) {
            _tile_zero(0);
            _tile_zero(1);
        } else {
            _tile_loadd(0, c0p, stride);
            _tile_loadd(1, c1p, stride);
        }
        if (two && !first) {
            _tile_loadd(2, c0p + 16, stride);
            _tile_loadd(3, c1p + 16, stride);
        } else {
            _tile_zero(2);
            _tile_zero(3);
        }
        for (int c = 0; c < kc; c += 32)
            step_products(panel, c, xb + x_tile((size_t)c / 32, nb, 0, 0), nb, 0, two);
        _tile_stored(0, c0p, stride);
        _tile_stored(1, c1p, stride);
        if (two) {
            _tile_stored(2, c0p + 16, stride);
            _tile_stored(3, c1p + 16, stride);
        }
        return;
    }
    for (int c = 0; c < kc;) {
        int start = c;
        int end = ((c0 + c) / span + 1) * span - c0;
        end = end < kc ? end : kc;
        _tile_zero(0);
        _tile_zero(1);
        _tile_zero(2);
        _tile_zero(3);
        for (; c < end; c += 32)
            step_products(panel, c, xb + x_tile((size_t)c / 32, nb, 0, 0), nb, 0, two);
        _tile_stored(0, span_sums, 64);
        _tile_stored(1, span_sums + 256, 64);
        _tile_stored(2, span_sums + 512, 64);
        _tile_stored(3, span_sums + 768, 64);
        add_span(span_sums, scale + start / 32, pr, tp, b, two, first && start == 0);
    }
}

/* Tokens in passes of AMX_PASS_BLOCKS blocks; in each, rows in blocks of
 * AMX_MB, their columns in chunks of AMX_KC, and in each chunk every panel of
 * AMX_NR rows: the panel dequantized, then its tile products over every pair
 * of token blocks, a span at a time. */
TGT void linear_rows_amx(const linear_weight *w, const linear_prep *p, float *y, int r0, int r1, float *work)
{
    pthread_once(&fp8_words_once, fp8_words_init);
    int cols = w->cols, T = p->T, unscaled = w->fmt == WF_BF16;
    /* columns per scale: a span's sums leave the tiles at its end */
    int span = w->fmt == WF_INT4_GROUP ? w->group_size : w->block_cols;
    size_t nb = token_blocks(T), R = (size_t)w->rows;
    size_t most = nb < AMX_PASS_BLOCKS ? nb : AMX_PASS_BLOCKS; /* blocks in a pass */
    uint16_t *panel = (uint16_t *)(((uintptr_t)work + 63) & ~(uintptr_t)63);
    float *sums = (float *)(panel + (size_t)AMX_NR * AMX_KC);
    float *part = sums + 4 * 256;
    float *scale = part + (size_t)AMX_MB * most * 16;
    load_tile_config();
    for (size_t b0 = 0; b0 < nb; b0 += most) {
        size_t pass = nb - b0 < most ? nb - b0 : most, tp = pass * 16;
        for (int rb = r0; rb < r1; rb += AMX_MB) {
            int re = r1 - rb < AMX_MB ? r1 : rb + AMX_MB;
            for (int c0 = 0; c0 < cols; c0 += AMX_KC) {
                int kc = cols - c0 < AMX_KC ? cols - c0 : AMX_KC;
                const uint32_t *xs = p->x_amx + x_tile((size_t)c0 / 32, nb, b0, 0);
                for (int r = rb; r < re; r += AMX_NR) {
                    int nr = re - r < AMX_NR ? re - r : AMX_NR;
                    float *pr = part + (size_t)(r - rb) * tp;
                    int next = r + AMX_NR < re ? (re - r - AMX_NR < AMX_NR ? re - r - AMX_NR : AMX_NR) : 0;
                    /* rows past a short panel: zeros, computed and never stored */
                    if (nr < AMX_NR)
                        memset(panel + (size_t)nr * AMX_KC, 0, (size_t)(AMX_NR - nr) * AMX_KC * 2);
                    dequant_panel(w, r, nr, c0, kc, panel);
                    for (int i = 0; i < AMX_NR && !unscaled; i++)
                        for (int c = 0; c < kc; c += 32)
                            scale[i * (AMX_KC / 32) + c / 32] = i < nr ? row_scale(w, r + i, c0 + c) : 0.0f;
                    size_t pairs = (pass + 1) / 2;
                    for (size_t b = 0; b < pass; b += 2) {
                        /* the next panel's rows stream in a share at a time */
                        int i0 = (int)((size_t)next * (b / 2) / pairs),
                            i1 = (int)((size_t)next * (b / 2 + 1) / pairs);
                        prefetch_panel(w, r + AMX_NR + i0, i1 - i0, c0, kc);
                        pair_products(panel, kc, c0, span, xs, nb, b, b + 1 < pass, scale, sums, pr, tp,
                                      c0 == 0, unscaled);
                    }
                }
            }
            for (int r = rb; r < re; r += AMX_NR)
                store_sums(part + (size_t)(r - rb) * tp, tp, y, R, r, re - r < AMX_NR ? re - r : AMX_NR, b0,
                           T);
        }
    }
    _tile_release();
}
