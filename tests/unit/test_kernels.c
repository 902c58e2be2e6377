/* Kernel tests: the scalar reference kernels against independent formulas
 * (format decoding, partial FP8 blocks, int4 nibble order), the two MLA
 * formulations against each other, routing against a brute-force selection, and
 * RoPE/YaRN constants against the reference's values. */
#include <criterion/criterion.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/engine/kv_q8.h"
#include "core/engine/rope_freq.h"
#include "core/model/dtype.h"
#include "cpu_kernels/linear_ref.h"
#include "cpu_kernels/mla_cpu.h"
#include "cpu_kernels/mla_ref.h"
#include "cpu_kernels/ops_ref.h"
#include "cpu_kernels/router_ref.h"
#include "reference_model.h"
#include "testutil.h"

static uint64_t rng_state = 88172645463325252ull;
static uint32_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 11);
}
static float frand(void)
{
    return (float)rnd() / 2147483648.0f - 1.0f;  /* [-1, 1) */
}

Test(dtype, e4m3_known_values)
{
    cr_expect_eq(e4m3_to_f32(0x00), 0.0f);
    cr_expect_eq(e4m3_to_f32(0x38), 1.0f);          /* exp 7, man 0 */
    cr_expect_eq(e4m3_to_f32(0xB8), -1.0f);
    cr_expect_eq(e4m3_to_f32(0x7E), 448.0f);        /* largest finite */
    cr_expect_eq(e4m3_to_f32(0x01), 1.0f / 512);    /* smallest subnormal 2^-9 */
    cr_expect_eq(e4m3_to_f32(0x08), 1.0f / 64);     /* smallest normal 2^-6 */
    cr_expect_eq(e4m3_to_f32(0x3C), 1.5f);
    cr_expect(isnan(e4m3_to_f32(0x7F)));
    cr_expect(signbit(e4m3_to_f32(0x80)));
}

Test(dtype, e4m3_roundtrip_and_rounding)
{
    for (int c = 0; c < 256; c++) {
        if ((c & 0x7f) == 0x7f)
            continue;
        float v = e4m3_to_f32((uint8_t)c);
        cr_expect_eq(f32_to_e4m3(v), (c == 0x80) ? 0x80 : c, "code %#x", c);
    }
    /* halfway between 1.0 (0x38) and 1.125 (0x39): ties to even -> 0x38 */
    cr_expect_eq(f32_to_e4m3(1.0625f), 0x38);
    cr_expect_eq(f32_to_e4m3(1.07f), 0x39);
    cr_expect_eq(f32_to_e4m3(1000.0f), 0x7E);       /* saturates */
    /* against a search over every code, for values across the whole range */
    for (int i = 0; i < 50000; i++) {
        float x = ldexpf(frand(), (int)(rnd() % 22) - 12);
        float a = fabsf(x);
        int best = 0;
        for (int c = 1; c <= 0x7e; c++) {
            float dc = fabsf(e4m3_to_f32((uint8_t)c) - a), db = fabsf(e4m3_to_f32((uint8_t)best) - a);
            if (dc < db || (dc == db && !(c & 1)))
                best = c;
        }
        uint8_t got = f32_to_e4m3(x);
        cr_assert_eq(got & 0x7f, best, "%.9g: code %#x, nearest %#x", x, got, best);
    }
}

Test(dtype, bf16_f16)
{
    cr_expect_eq(bf16_to_f32(0x3F80), 1.0f);
    cr_expect_eq(f32_to_bf16(1.0f), 0x3F80);
    /* 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties to even */
    cr_expect_eq(f32_to_bf16(1.0f + 1.0f / 256), 0x3F80);
    cr_expect_eq(f32_to_bf16(1.0f + 3.0f / 256), 0x3F82);
    cr_expect_eq(f16_to_f32(0x3C00), 1.0f);
    cr_expect_eq(f16_to_f32(0xC000), -2.0f);
    cr_expect_eq(f16_to_f32(0x0001), ldexpf(1, -24));
    cr_expect(isinf(f16_to_f32(0x7C00)));
}

/* Reference dense matrix for a weight built by the helpers below. */
typedef struct test_weight {
    linear_weight w;
    float *dense;                    /* [rows][cols] the values the format encodes */
    void *data, *scale;
} test_weight;

static void make_fp8(test_weight *t, int rows, int cols, int br, int bc)
{
    int sr = (rows + br - 1) / br, sc = (cols + bc - 1) / bc;
    uint8_t *q = malloc((size_t)rows * cols);
    float *s = malloc((size_t)sr * sc * sizeof *s);
    t->dense = malloc((size_t)rows * cols * sizeof(float));
    for (int i = 0; i < sr * sc; i++)
        s[i] = 0.001f * (float)(1 + (rnd() % 100));
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < cols; c++) {
            uint8_t code = (uint8_t)(rnd() & 0xff);
            if ((code & 0x7f) == 0x7f)
                code = 0x01;
            q[(size_t)r * cols + c] = code;
            t->dense[(size_t)r * cols + c] = e4m3_to_f32(code) * s[(r / br) * sc + c / bc];
        }
    t->data = q;
    t->scale = s;
    t->w = (linear_weight){.fmt = WF_FP8_BLOCK, .rows = rows, .cols = cols, .data = q, .scale = s,
                           .block_rows = br, .block_cols = bc, .scale_cols = sc};
}

static void make_int4(test_weight *t, int rows, int cols, int gs)
{
    int words = (cols + 7) / 8, sc = (cols + gs - 1) / gs;
    uint32_t *p = calloc((size_t)rows * words, 4);
    uint16_t *s = malloc((size_t)rows * sc * 2);
    t->dense = malloc((size_t)rows * cols * sizeof(float));
    for (int i = 0; i < rows * sc; i++)
        s[i] = f32_to_bf16(0.01f * (float)(1 + rnd() % 50));
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < cols; c++) {
            int q = (int)(rnd() % 16) - 8;
            p[(size_t)r * words + c / 8] |= (uint32_t)(q + 8) << (4 * (c % 8));
            t->dense[(size_t)r * cols + c] = (float)q * bf16_to_f32(s[r * sc + c / gs]);
        }
    t->data = p;
    t->scale = s;
    t->w = (linear_weight){.fmt = WF_INT4_GROUP, .rows = rows, .cols = cols, .data = p, .scale = s,
                           .group_size = gs, .row_words = words, .scale_cols = sc};
}

static void make_bf16(test_weight *t, int rows, int cols)
{
    uint16_t *d = malloc((size_t)rows * cols * 2);
    t->dense = malloc((size_t)rows * cols * sizeof(float));
    for (int i = 0; i < rows * cols; i++) {
        d[i] = f32_to_bf16(frand());
        t->dense[i] = bf16_to_f32(d[i]);
    }
    t->data = d;
    t->scale = NULL;
    t->w = (linear_weight){.fmt = WF_BF16, .rows = rows, .cols = cols, .data = d};
}

static void free_weight(test_weight *t)
{
    free(t->dense);
    free(t->data);
    free(t->scale);
}

static void check_linear(test_weight *t, int T)
{
    int R = t->w.rows, C = t->w.cols;
    float *x = calloc((size_t)T * C, sizeof *x), *y = malloc((size_t)T * R * sizeof *y);
    float *row = malloc((size_t)C * sizeof *row);
    for (int i = 0; i < T * C; i++)
        x[i] = frand();
    linear_ref_forward(&t->w, x, T, y, row);
    for (int tt = 0; tt < T; tt++)
        for (int r = 0; r < R; r++) {
            double ref = 0, mag = 0;
            for (int c = 0; c < C; c++) {
                ref += (double)t->dense[(size_t)r * C + c] * x[(size_t)tt * C + c];
                mag += fabs((double)t->dense[(size_t)r * C + c] * x[(size_t)tt * C + c]);
            }
            cr_assert_leq(fabs(y[(size_t)tt * R + r] - ref), 1e-5 * mag + 1e-30,
                          "%s [%dx%d] t=%d row %d: %g vs %g", weight_format_name(t->w.fmt), R, C,
                          tt, r, y[(size_t)tt * R + r], ref);
        }
    free(x);
    free(y);
    free(row);
}

Test(linear_ref, fp8_partial_blocks)
{
    const int shapes[][2] = {{80, 256}, {130, 200}, {256, 64}, {1, 1}, {129, 129}};
    for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++)
        for (int T = 1; T <= 5; T += 2) {
            test_weight t;
            make_fp8(&t, shapes[i][0], shapes[i][1], 128, 128);
            check_linear(&t, T);
            free_weight(&t);
        }
}

Test(linear_ref, int4_groups_and_odd_widths)
{
    const int shapes[][3] = {{128, 256, 32}, {7, 96, 32}, {5, 100, 32}, {3, 64, 64}, {9, 24, 8}};
    for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++)
        for (int T = 1; T <= 4; T++) {
            test_weight t;
            make_int4(&t, shapes[i][0], shapes[i][1], shapes[i][2]);
            check_linear(&t, T);
            free_weight(&t);
        }
}

Test(linear_ref, int4_nibble_order)
{
    /* word 0x76543210 with scale 1: values 0-8, 1-8, ..., 7-8 in input order */
    uint32_t word = 0x76543210u;
    uint16_t scale = f32_to_bf16(1.0f);
    linear_weight w = {.fmt = WF_INT4_GROUP, .rows = 1, .cols = 8, .data = &word, .scale = &scale,
                       .group_size = 8, .row_words = 1, .scale_cols = 1};
    float out[8];
    linear_ref_dequant_row(&w, 0, out);
    for (int k = 0; k < 8; k++)
        cr_expect_eq(out[k], (float)(k - 8), "value %d", k);
}

Test(linear_ref, bf16)
{
    test_weight t;
    make_bf16(&t, 33, 70);
    check_linear(&t, 3);
    free_weight(&t);
}

/* A random MLA problem: kv_b, cache, queries and two output buffers. */
typedef struct mla_case {
    test_weight kvb;
    float *cache, *q, *o1, *o2;
    uint16_t *cache16;      /* the cache rounded to bf16, when a reads it */
    void *cache8;           /* the cache as q8_0 rows, when a reads it */
    mla_args a;
} mla_case;

/* m's attention reads its cache rounded to bf16 (--cache-type bf16); m->cache
 * holds those values widened */
static void mla_case_bf16(mla_case *m)
{
    size_t n = (size_t)(m->a.pos0 + m->a.T) * (size_t)(m->a.kv_lora + m->a.rope);
    m->cache16 = malloc(n * sizeof *m->cache16);
    for (size_t i = 0; i < n; i++) {
        m->cache16[i] = f32_to_bf16(m->cache[i]);
        m->cache[i] = bf16_to_f32(m->cache16[i]);
    }
    m->a.kv_cache = NULL;
    m->a.kv_bf16 = m->cache16;
}

/* m's attention reads its cache as q8_0 rows (--cache-type q8_0); m->cache
 * holds those rows widened (what a float32 cache would hold) */
static void mla_case_q8(mla_case *m)
{
    int S = m->a.pos0 + m->a.T, row = m->a.kv_lora + m->a.rope;
    size_t bytes = kv_q8_row_bytes(row);
    m->cache8 = malloc((size_t)S * bytes);
    cr_assert_not_null(m->cache8);
    for (int s = 0; s < S; s++) {
        char *q = (char *)m->cache8 + (size_t)s * bytes;
        kv_q8_quantize(m->cache + (size_t)s * (size_t)row, row, q);
        kv_q8_widen(q, row, 0, row, m->cache + (size_t)s * (size_t)row);
    }
    m->a.kv_cache = NULL;
    m->a.kv_q8 = m->cache8;
}

static void mla_case_make(mla_case *m, const int *dims, int T)
{
    int H = dims[0], nope = dims[1], rope = dims[2], v = dims[3], C = dims[4], pos0 = dims[5];
    int S = pos0 + T;
    make_bf16(&m->kvb, H * (nope + v), C);
    m->cache = malloc((size_t)S * (C + rope) * sizeof(float));
    m->q = malloc((size_t)T * H * (nope + rope) * sizeof(float));
    for (int i = 0; i < S * (C + rope); i++)
        m->cache[i] = frand();
    for (int i = 0; i < T * H * (nope + rope); i++)
        m->q[i] = frand();
    m->o1 = malloc((size_t)T * H * v * sizeof(float));
    m->o2 = malloc((size_t)T * H * v * sizeof(float));
    m->cache16 = NULL;
    m->cache8 = NULL;
    m->a = (mla_args){.q = m->q, .T = T, .pos0 = pos0, .kv_cache = m->cache, .kv_b = &m->kvb.w,
                      .H = H, .nope = nope, .rope = rope, .v = v, .kv_lora = C, .scale = 0.3f,
                      .out = m->o1};
}

static void mla_case_free(mla_case *m)
{
    free(m->cache16);
    free(m->cache8);
    free(m->o1);
    free(m->o2);
    free(m->q);
    free(m->cache);
    free_weight(&m->kvb);
}

/* Query t of m's call alone (a call of one query at its position), into
 * m->o2, in the absorbed form on one thread. */
static void query_alone(kernel_path path, mla_case *m, int t, float *scratch)
{
    mla_args one = m->a;
    one.T = 1;
    one.pos0 = m->a.pos0 + t;
    one.q = m->q + (size_t)t * (size_t)m->a.H * (size_t)(m->a.nope + m->a.rope);
    one.out = m->o2;
    mla_cpu(path, NULL, &one, 1, scratch);
}

/* Both MLA forms over the same random cache (float32, and rounded to bf16)
 * must agree. */
Test(mla_ref, naive_equals_absorbed)
{
    const int cases[][6] = {
        /* H, nope, rope, v, kv_lora, pos0 */
        {4, 32, 16, 32, 64, 0}, {2, 16, 8, 24, 40, 7}, {3, 8, 4, 8, 12, 30}, {1, 5, 2, 3, 9, 1},
    };
    for (size_t k = 0; k < 2 * sizeof cases / sizeof *cases; k++)
        for (int T = 1; T <= 4; T++) {
            size_t ci = k / 2;
            int bf16 = (int)(k % 2);
            mla_case m;
            mla_case_make(&m, cases[ci], T);
            if (bf16)
                mla_case_bf16(&m);
            float *s1 = malloc(mla_ref_naive_scratch(&m.a) * sizeof(float));
            mla_ref_naive(&m.a, s1);
            m.a.out = m.o2;
            float *s2 = malloc(mla_ref_absorbed_scratch(&m.a) * sizeof(float));
            mla_ref_absorbed(&m.a, s2);
            for (int i = 0; i < T * m.a.H * m.a.v; i++)
                cr_assert_float_eq(m.o1[i], m.o2[i], 1e-4, "case %zu T %d bf16 %d: out[%d] %g vs %g",
                                   ci, T, bf16, i, m.o1[i], m.o2[i]);
            free(s1);
            free(s2);
            mla_case_free(&m);
        }
}

Test(router_ref, matches_brute_force)
{
    route_params cases[] = {
        {.n_experts = 32, .top_k = 8, .n_group = 1, .topk_group = 1, .sigmoid = 1,
         .group_by_top2 = 1, .use_groups = 1, .normalize = 1, .scaling = 2.827f},
        {.n_experts = 64, .top_k = 6, .n_group = 8, .topk_group = 3, .sigmoid = 1,
         .group_by_top2 = 1, .use_groups = 1, .normalize = 1, .scaling = 2.5f},
        {.n_experts = 60, .top_k = 4, .n_group = 4, .topk_group = 2, .sigmoid = 0,
         .group_by_top2 = 0, .use_groups = 1, .normalize = 0, .scaling = 1.0f},
        {.n_experts = 16, .top_k = 2, .n_group = 1, .topk_group = 1, .sigmoid = 0,
         .group_by_top2 = 0, .use_groups = 0, .normalize = 1, .scaling = 1.0f},
    };
    for (size_t ci = 0; ci < sizeof cases / sizeof *cases; ci++) {
        route_params *p = &cases[ci];
        float *scratch = malloc(route_ref_scratch(p) * sizeof(float));
        for (int trial = 0; trial < 200; trial++) {
            float logits[512], bias[512], w[16], bw[16];
            int ids[16], bids[16];
            for (int i = 0; i < p->n_experts; i++) {
                logits[i] = 3 * frand();
                bias[i] = 0.2f * frand();
            }
            route_ref(p, logits, ci == 3 ? NULL : bias, ids, w, NULL, scratch);
            reference_route(p, logits, ci == 3 ? NULL : bias, bids, bw);
            for (int k = 0; k < p->top_k; k++) {
                cr_assert_eq(ids[k], bids[k], "case %zu trial %d slot %d", ci, trial, k);
                cr_assert_float_eq(w[k], bw[k], 1e-5, "case %zu trial %d weight %d", ci, trial, k);
            }
        }
        free(scratch);
    }
}

/* A group whose score is +inf (a huge router bias) is a group like any other,
 * dropped when all the groups left are: the dropped groups are told apart by a
 * flag, not by a score they could share. Nothing around the scratch changes. */
Test(router_ref, infinite_group_scores_stay_in_bounds)
{
    route_params p = {.n_experts = 16, .top_k = 2, .n_group = 4, .topk_group = 2, .sigmoid = 1,
                      .group_by_top2 = 1, .use_groups = 1, .normalize = 1, .scaling = 1.0f};
    size_t n = route_ref_scratch(&p);
    float *buf = malloc((n + 2 * 16) * sizeof(float)), *scratch = buf + 16;
    for (size_t i = 0; i < n + 32; i++)
        buf[i] = 12345.0f;
    float logits[16], bias[16], w[2], scores[16];
    int ids[2];
    for (int i = 0; i < 16; i++) {
        logits[i] = 0.1f * (float)i;
        bias[i] = i >= 4 ? FLT_MAX : 0.0f;     /* groups 1-3 sum to +inf: one is dropped */
    }
    route_ref(&p, logits, bias, ids, w, scores, scratch);
    for (int i = 0; i < 16; i++) {
        cr_expect(buf[i] == 12345.0f && buf[16 + n + i] == 12345.0f, "written outside the scratch");
        cr_expect(isfinite(scores[i]), "score %d is %g", i, scores[i]);
    }
    for (int k = 0; k < 2; k++) {
        cr_expect(ids[k] >= 4, "slot %d took expert %d, outside the +inf groups", k, ids[k]);
        cr_expect(isfinite(w[k]) && w[k] > 0, "weight %d is %g", k, w[k]);
    }
    free(buf);
}

Test(rope, yarn_matches_reference_constants)
{
    /* values from the testdata manifest of the reference implementation */
    char *p = test_data_path("k2-tiny-bf16/config.json");
    if (!test_path_exists(p)) {
        free(p);
        cr_skip_test("testdata absent");
    }
    model_config c;
    errbuf e;
    char *dir = test_data_path("k2-tiny-bf16");
    cr_assert_eq(config_load(&c, dir, &e), 0, "%s", e.msg);
    const float want[8] = {1.0f, 0.2586001455783844f, 0.06687403470277786f, 0.01729363389313221f,
                           0.004472136031836271f, 3.614046727307141e-05f, 9.345930266135838e-06f,
                           2.416858706055791e-06f};
    float inv[8], ms;
    rope_freq_compute(&c.rope, c.qk_rope_dim, inv, &ms);
    for (int i = 0; i < 8; i++)
        cr_expect_float_eq(inv[i], want[i], 1e-6 * want[i], "inv_freq[%d] %.9g vs %.9g", i, inv[i],
                           want[i]);
    cr_expect_eq(ms, 1.0f);
    cr_expect_float_eq(attention_softmax_scale(&c), 0.2617215999259001f, 1e-7);
    free(p);
    free(dir);
}

Test(rope, rotation_is_interleaved_pairs)
{
    float x[4] = {1, 0, 0, 1}, inv[2] = {1.0f, 0.5f};
    int pos = 2;
    rope_ref(x, 1, 1, 4, 4, 0, 4, &pos, inv, 1.0f);
    /* pair 0 rotated by 2 rad, pair 1 by 1 rad */
    cr_expect_float_eq(x[0], cosf(2), 1e-6);
    cr_expect_float_eq(x[1], sinf(2), 1e-6);
    cr_expect_float_eq(x[2], -sinf(1), 1e-6);
    cr_expect_float_eq(x[3], cosf(1), 1e-6);
}

Test(ops_ref, rmsnorm_and_silu)
{
    float x[4] = {1, 2, 3, 4}, w[4] = {1, 1, 2, 0.5f}, o[4];
    rmsnorm_ref(x, 4, w, 4, 1, 0.0f, o, 4);
    float r = sqrtf((1 + 4 + 9 + 16) / 4.0f);
    cr_expect_float_eq(o[2], 2 * 3 / r, 1e-6);
    cr_expect_float_eq(o[3], 0.5f * 4 / r, 1e-6);
    float g[2] = {0, 2}, u[2] = {5, 3}, s[2];
    silu_mul_ref(g, u, 2, s);
    cr_expect_float_eq(s[0], 0.0f, 1e-7);
    cr_expect_float_eq(s[1], 2 / (1 + expf(-2)) * 3, 1e-6);
}

/* Queries whose absorbed scores would pass 64 MB go in blocks of tokens, each
 * seeing the positions it would in one call: 70 queries of 2 heads over
 * 120,000 cached positions take two blocks. */
Test(mla_cpu, absorbed_form_in_blocks_of_tokens_matches_reference, .timeout = 120)
{
    const int dims[6] = {2, 8, 4, 8, 16, 120000};
    thread_pool *pool;
    errbuf e;
    cr_assert_eq(thread_pool_create(&pool, 2, &e), 0, "%s", e.msg);
    mla_case m;
    mla_case_make(&m, dims, 70);
    float *s1 = malloc(mla_ref_naive_scratch(&m.a) * sizeof(float));
    cr_assert_not_null(s1);
    mla_ref_naive(&m.a, s1);
    m.a.out = m.o2;
    float *s2 = malloc(mla_cpu_scratch(&m.a, 1, 2) * sizeof(float));
    cr_assert_not_null(s2);
    mla_cpu(kernel_path_default(), pool, &m.a, 1, s2);
    for (int i = 0; i < 70 * m.a.H * m.a.v; i++)
        cr_assert_float_eq(m.o1[i], m.o2[i], 1e-4, "out[%d] %g vs %g", i, m.o1[i], m.o2[i]);
    /* and each query has the bits it has alone (a position lost or gained
     * moves an average over 120,000 by about what the tolerance above allows:
     * a block's queries that lost their own position passed it) */
    size_t row = (size_t)m.a.H * (size_t)m.a.v, qrow = (size_t)m.a.H * (size_t)(m.a.nope + m.a.rope);
    float *alone = malloc(row * sizeof *alone);
    for (int t = 0; t < 70; t++) {
        mla_args one = m.a;
        one.T = 1;
        one.pos0 = m.a.pos0 + t;
        one.q = m.q + (size_t)t * qrow;
        one.out = alone;
        mla_cpu(kernel_path_default(), pool, &one, 1, s2);
        cr_expect(memcmp(m.o2 + (size_t)t * row, alone, row * sizeof *alone) == 0,
                  "query %d of 70 after %d positions differs from it alone", t, m.a.pos0);
    }
    free(alone);
    free(s1);
    free(s2);
    mla_case_free(&m);
    thread_pool_destroy(pool);
}

/* In the absorbed form a query's output has the same bits in a call of any
 * count of queries as alone: a decode step and the short prefill of a prompt
 * the cache held but for its last tokens give a token the same attention (and
 * so does a whole prompt in batch-invariant mode). Calls of 4 and of 20
 * queries, whose positions run over several of the latent product's blocks of
 * cache rows and over the lanes product's panels; over a float32 cache, a
 * bf16 one and a q8_0 one (over 2,048 positions, several of its blocks). */
Test(mla_cpu, absorbed_query_has_the_same_bits_alone)
{
    const int dims[][6] = {{4, 32, 16, 32, 64, 9}, {16, 16, 8, 16, 32, 40}, {16, 16, 8, 16, 32, 2040}};
    const int counts[] = {4, 20};
    for (size_t d = 0; d < sizeof dims / sizeof *dims; d++)
        for (int path = 0; path < KPATH_COUNT; path++)
            for (int c = 0; c < 6; c++) {
                if (!kernel_path_supported((kernel_path)path))
                    continue;
                int T = counts[c % 2];
                mla_case m;
                mla_case_make(&m, dims[d], T);
                if (c / 2 == 1)
                    mla_case_bf16(&m);
                if (c / 2 == 2)
                    mla_case_q8(&m);
                float *s = malloc(mla_cpu_scratch(&m.a, 1, 1) * sizeof(float));
                cr_assert_not_null(s);
                mla_cpu((kernel_path)path, NULL, &m.a, 1, s);
                size_t row = (size_t)m.a.H * (size_t)m.a.v;
                for (int t = 0; t < T; t++) {
                    query_alone((kernel_path)path, &m, t, s);
                    cr_expect(memcmp(m.o1 + (size_t)t * row, m.o2, row * sizeof(float)) == 0,
                              "%s, %d heads after %d positions: query %d of %d differs from it "
                              "alone", kernel_path_name(path), m.a.H, m.a.pos0, t, T);
                }
                free(s);
                mla_case_free(&m);
            }
}

/* A NaN in a cached latent (a damaged weight met by a token) reaches the
 * queries that see its position, not those before it: a token's row checked
 * with guesses after it keeps the bits it has alone, whatever a guess (not
 * taken) meets. Its query's zero probability of the position would add 0 x
 * NaN. Over each cache type, every path, NaN at the last position and in the
 * middle of the queries' positions, over one of the q8_0 combination's blocks
 * of rows and several. */
Test(mla_cpu, absorbed_query_is_untouched_by_a_nan_after_it)
{
    const int dims[][6] = {{16, 16, 8, 16, 32, 40}, {16, 16, 8, 16, 32, 2040}};
    const int T = 6;
    thread_pool *pool3;
    errbuf e;
    cr_assert_eq(thread_pool_create(&pool3, 3, &e), 0, "%s", e.msg);
    for (size_t d = 0; d < sizeof dims / sizeof *dims; d++)
        for (int path = 0; path < KPATH_COUNT; path++)
            for (int c = 0; c < 12; c++) {
                if (!kernel_path_supported((kernel_path)path))
                    continue;
                /* alone and on 3 threads (each worker's rows of the 32 columns) */
                thread_pool *pool = c / 6 ? pool3 : NULL;
                mla_case m;
                mla_case_make(&m, dims[d], T);
                int row = m.a.kv_lora + m.a.rope, at = m.a.pos0 + (c % 2 ? T - 1 : T / 2);
                m.cache[(size_t)at * (size_t)row + 5] = NAN;
                if (c / 2 % 3 == 1)
                    mla_case_bf16(&m);
                if (c / 2 % 3 == 2)
                    mla_case_q8(&m);    /* (its block holding the NaN reads back as NaN) */
                float *s = malloc(mla_cpu_scratch(&m.a, 1, 3) * sizeof(float));
                cr_assert_not_null(s);
                mla_cpu((kernel_path)path, pool, &m.a, 1, s);
                size_t out_row = (size_t)m.a.H * (size_t)m.a.v;
                for (int t = 0; t < T; t++) {
                    const float *got = m.o1 + (size_t)t * out_row;
                    if (m.a.pos0 + t >= at) {
                        cr_expect(isnan(got[0]), "query %d sees the NaN at %d", t, at);
                        continue;
                    }
                    query_alone((kernel_path)path, &m, t, s);
                    cr_expect(memcmp(got, m.o2, out_row * sizeof(float)) == 0,
                              "%s, cache %d, after %d positions: query %d of %d, before the NaN at %d, "
                              "differs from it alone", kernel_path_name(path), c / 2 % 3, m.a.pos0, t, T, at);
                }
                free(s);
                mla_case_free(&m);
            }
    thread_pool_destroy(pool3);
}

/* A bf16 or q8_0 cache gives the bits of a float32 cache holding its rows
 * widened: both forms, every path, alone and on 3 threads, positions in one
 * of the absorbed form's blocks of 256 and in several (300: a partial second
 * block; 600: three), q8_0 rows whose last block of 32 is partial (80, 11
 * values) and whole (48), more heads than a tile of rows (10: the
 * combination's rows split between workers) and fewer. */
Test(mla_cpu, rounded_cache_has_the_bits_of_its_rows_widened, .timeout = 120)
{
    const int cases[][6] = {
        /* H, nope, rope, v, kv_lora, pos0 */
        {4, 32, 16, 32, 64, 0}, {2, 8, 4, 8, 16, 300}, {3, 5, 2, 3, 9, 598}, {2, 16, 16, 16, 32, 7},
        {10, 8, 8, 8, 130, 40},
    };
    const int tokens[] = {1, 2, 5, 20};
    thread_pool *pool3;
    errbuf e;
    cr_assert_eq(thread_pool_create(&pool3, 3, &e), 0, "%s", e.msg);
    for (int path = 0; path < KPATH_COUNT; path++) {
        if (!kernel_path_supported((kernel_path)path))
            continue;
        for (size_t ci = 0; ci < sizeof cases / sizeof *cases; ci++)
            for (size_t ti = 0; ti < sizeof tokens / sizeof *tokens; ti++)
                for (int k = 0; k < 8; k++) {
                    int T = tokens[ti], absorbed = k % 2, q8 = k / 4;
                    thread_pool *pool = k / 2 % 2 ? pool3 : NULL;
                    mla_case m;
                    mla_case_make(&m, cases[ci], T);
                    if (q8)
                        mla_case_q8(&m);
                    else
                        mla_case_bf16(&m);
                    float *s = malloc(mla_cpu_scratch(&m.a, absorbed, 3) * sizeof(float));
                    cr_assert_not_null(s);
                    mla_cpu((kernel_path)path, pool, &m.a, absorbed, s);
                    mla_args wide = m.a;
                    wide.kv_q8 = NULL;
                    wide.kv_bf16 = NULL;
                    wide.kv_cache = m.cache;
                    wide.out = m.o2;
                    free(s);
                    s = malloc(mla_cpu_scratch(&wide, absorbed, 3) * sizeof(float));
                    cr_assert_not_null(s);
                    mla_cpu((kernel_path)path, pool, &wide, absorbed, s);
                    size_t n = (size_t)T * (size_t)m.a.H * (size_t)m.a.v;
                    cr_expect(memcmp(m.o1, m.o2, n * sizeof(float)) == 0,
                              "%s case %zu, %d queries, absorbed %d, %d thread(s): the %s "
                              "cache's outputs differ from its widened rows'",
                              kernel_path_name(path), ci, T, absorbed, pool ? 3 : 1,
                              q8 ? "q8_0" : "bf16");
                    free(s);
                    mla_case_free(&m);
                }
    }
    thread_pool_destroy(pool3);
}

/* The form each call takes: the absorbed one for a few queries, or a few
 * dozen against a long cache; the expanded one for a prompt's chunk. */
Test(mla_cpu, form_by_multiply_adds)
{
    mla_args a = {.H = 64, .nope = 128, .rope = 64, .v = 128, .kv_lora = 512};
    struct { int T, pos0, absorbed; } cases[] = {
        {1, 7, 1}, {4, 4000, 1}, {100, 4000, 1}, {64, 0, 0}, {1024, 0, 0}, {1024, 3072, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        a.T = cases[i].T;
        a.pos0 = cases[i].pos0;
        cr_expect_eq(mla_cpu_absorbs(&a), cases[i].absorbed, "K2 dims, %d queries after %d positions",
                     a.T, a.pos0);
    }
}

/* The threaded SIMD MLA (both forms, every path, 1 and 3 threads) against the
 * reference forms on random caches, float32 and bf16; the expanded form's queries in one block,
 * and in two (a block of 64 and the rest), its positions in one block of 256
 * and in several (after 230 cached positions, 70 queries straddle the second
 * block's start: the first 26 see none of it); the absorbed form's positions
 * in one of the latent product's blocks of cache rows and, past 2,048 cached
 * positions, in many. */
Test(mla_cpu, matches_reference_on_every_path)
{
    const int tokens[] = {1, 2, 3, 4, 5, 6, 17, 70};
    const int cases[][6] = {
        {4, 32, 16, 32, 64, 0}, {3, 16, 8, 24, 40, 7}, {5, 8, 4, 8, 12, 30}, {1, 5, 2, 3, 9, 1},
        {2, 8, 4, 8, 16, 2100}, {2, 8, 4, 8, 16, 230},
    };
    thread_pool *pool3;
    errbuf e;
    cr_assert_eq(thread_pool_create(&pool3, 3, &e), 0, "%s", e.msg);
    for (int path = 0; path < KPATH_COUNT; path++) {
        if (!kernel_path_supported((kernel_path)path))
            continue;
        for (size_t k = 0; k < 2 * sizeof cases / sizeof *cases; k++)
            for (size_t ti = 0; ti < sizeof tokens / sizeof *tokens; ti++)
                for (int absorbed = 0; absorbed < 2; absorbed++) {
                    size_t ci = k / 2;
                    int T = tokens[ti], bf16 = (int)(k % 2);
                    mla_case m;
                    mla_case_make(&m, cases[ci], T);
                    if (bf16)
                        mla_case_bf16(&m);
                    float *s1 = malloc(mla_ref_naive_scratch(&m.a) * sizeof(float));
                    mla_ref_naive(&m.a, s1);
                    m.a.out = m.o2;
                    thread_pool *pool = T % 2 ? pool3 : NULL;
                    float *s2 = malloc(mla_cpu_scratch(&m.a, absorbed, 3) * sizeof(float));
                    mla_cpu((kernel_path)path, pool, &m.a, absorbed, s2);
                    for (int i = 0; i < T * m.a.H * m.a.v; i++)
                        cr_assert_float_eq(m.o1[i], m.o2[i], 1e-4, "%s case %zu T %d absorbed %d "
                                           "bf16 %d: out[%d] %g vs %g", kernel_path_name(path), ci,
                                           T, absorbed, bf16, i, m.o1[i], m.o2[i]);
                    free(s1);
                    free(s2);
                    mla_case_free(&m);
                }
    }
    thread_pool_destroy(pool3);
}
