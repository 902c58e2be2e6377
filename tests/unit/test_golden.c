/* Golden tests: the engine against the official reference implementation's
 * outputs for each k2-tiny variant (bf16, fp8, int4), at the strict fp32
 * profile: prefill logits, hidden states and routing; free-running greedy decode
 * with the KV cache; and the 4160-token prompt where YaRN matters. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/engine/sampler.h"
#include "cpu_kernels/linear_kernels.h"
#include "golden_harness.h"
#include "testutil.h"

#define T_PROMPT 24
#define N_NEW 16

static void check_prefill(const char *variant, int chunk)
{
    golden_run g;
    golden_open(&g, variant, 64, chunk, T_PROMPT);
    const model_config *c = &g.m.mw.cfg;
    int V = c->vocab_size, h = c->hidden_size, K = c->n_experts_per_tok, E = c->n_routed_experts;
    int *ids = golden_load(&g, "prompt_ids.i32.bin", T_PROMPT * 4);
    float *logits = malloc((size_t)T_PROMPT * V * sizeof *logits);
    errbuf e;
    cr_assert_eq(engine_forward(&g.m.en, ids, T_PROMPT, logits, 1, &e), 0, "%s", e.msg);
    float *gl = golden_load(&g, "prefill_logits.f32.bin", (size_t)T_PROMPT * V * 4);
    golden_assert_logits("prefill_logits", gl, logits, T_PROMPT, V);

    /* residual stream after every layer, relative to the layer's rms */
    float *gh = golden_load(&g, "hidden_states.f32.bin", (size_t)c->n_layers * T_PROMPT * h * 4);
    for (int l = 0; l < c->n_layers; l++) {
        double ss = 0, mx = 0;
        for (size_t i = 0; i < (size_t)T_PROMPT * h; i++) {
            double gv = gh[(size_t)l * T_PROMPT * h + i], cv = g.hidden[(size_t)l * T_PROMPT * h + i];
            ss += gv * gv;
            mx = fmax(mx, fabs(gv - cv));
        }
        double rms = sqrt(ss / ((double)T_PROMPT * h));
        cr_expect_leq(mx / rms, 1e-3, "layer %d hidden state: max|diff|/rms %.3g", l, mx / rms);
    }

    int *gids = golden_load(&g, "routing_ids.i32.bin", (size_t)g.n_moe * T_PROMPT * K * 4);
    float *gw = golden_load(&g, "routing_weights.f32.bin", (size_t)g.n_moe * T_PROMPT * K * 4);
    golden_assert_routing(&g, gids, gw, T_PROMPT, 0, T_PROMPT, "prefill routing");

    float *gs = golden_load(&g, "router_scores.f32.bin", (size_t)g.n_moe * T_PROMPT * E * 4);
    double smax = 0;
    for (size_t i = 0; i < (size_t)g.n_moe * T_PROMPT * E; i++)
        smax = fmax(smax, fabs(gs[i] - g.route_scores[i]));
    cr_expect_leq(smax, 1e-4, "router scores differ by %.3g", smax);
    free(gs);
    free(gids);
    free(gw);
    free(gh);
    free(gl);
    free(logits);
    free(ids);
    golden_close(&g);
}

/* Prefill of the prompt, then single-token steps feeding our own argmax. */
static void check_decode(const char *variant)
{
    golden_run g;
    golden_open(&g, variant, 64, 256, T_PROMPT + N_NEW);
    const model_config *c = &g.m.mw.cfg;
    int V = c->vocab_size, K = c->n_experts_per_tok;
    int *ids = golden_load(&g, "prompt_ids.i32.bin", T_PROMPT * 4);
    int *gen = golden_load(&g, "generated_ids.i32.bin", N_NEW * 4);
    float *gl = golden_load(&g, "decode_logits.f32.bin", (size_t)N_NEW * V * 4);
    float *logits = malloc((size_t)N_NEW * V * sizeof *logits);
    int mine[N_NEW];
    errbuf e;
    cr_assert_eq(engine_forward(&g.m.en, ids, T_PROMPT, logits, 0, &e), 0, "%s", e.msg);
    mine[0] = argmax_f32(logits, V);
    for (int k = 1; k < N_NEW; k++) {
        cr_assert_eq(engine_forward(&g.m.en, &mine[k - 1], 1, logits + (size_t)k * V, 0, &e), 0,
                     "%s", e.msg);
        mine[k] = argmax_f32(logits + (size_t)k * V, V);
    }
    for (int k = 0; k < N_NEW; k++)
        cr_expect_eq(mine[k], gen[k], "generated token %d: %d, golden %d", k, mine[k], gen[k]);
    golden_assert_logits("decode_logits", gl, logits, N_NEW, V);
    int *gids = golden_load(&g, "decode_routing_ids.i32.bin", (size_t)g.n_moe * (N_NEW - 1) * K * 4);
    float *gw = golden_load(&g, "decode_routing_weights.f32.bin",
                            (size_t)g.n_moe * (N_NEW - 1) * K * 4);
    golden_assert_routing(&g, gids, gw, N_NEW - 1, T_PROMPT, N_NEW - 1, "decode routing");
    free(gids);
    free(gw);
    free(ids);
    free(gen);
    free(gl);
    free(logits);
    golden_close(&g);
}

#define T_LONG 4160
#define TAIL 8
#define N_LONG 4

static void check_long(const char *variant)
{
    golden_run g;
    golden_open(&g, variant, T_LONG + N_LONG, 512, T_LONG + N_LONG);
    const model_config *c = &g.m.mw.cfg;
    int V = c->vocab_size, K = c->n_experts_per_tok;
    int *ids = golden_load(&g, "long_prompt_ids.i32.bin", T_LONG * 4);
    float *all = malloc((size_t)T_LONG * V * sizeof *all);
    errbuf e;
    cr_assert_eq(engine_forward(&g.m.en, ids, T_LONG, all, 1, &e), 0, "%s", e.msg);
    float *gt = golden_load(&g, "long_prefill_logits_tail.f32.bin", (size_t)TAIL * V * 4);
    golden_assert_logits("long_prefill_logits_tail", gt, all + (size_t)(T_LONG - TAIL) * V, TAIL, V);
    int *gids = golden_load(&g, "long_routing_ids_tail.i32.bin", (size_t)g.n_moe * TAIL * K * 4);
    golden_assert_routing(&g, gids, NULL, TAIL, T_LONG - TAIL, TAIL, "long routing tail");

    int *gen = golden_load(&g, "long_generated_ids.i32.bin", N_LONG * 4);
    float *gl = golden_load(&g, "long_decode_logits.f32.bin", (size_t)N_LONG * V * 4);
    float *logits = malloc((size_t)N_LONG * V * sizeof *logits);
    memcpy(logits, all + (size_t)(T_LONG - 1) * V, (size_t)V * sizeof *logits);
    int mine[N_LONG];
    mine[0] = argmax_f32(logits, V);
    for (int k = 1; k < N_LONG; k++) {
        cr_assert_eq(engine_forward(&g.m.en, &mine[k - 1], 1, logits + (size_t)k * V, 0, &e), 0,
                     "%s", e.msg);
        mine[k] = argmax_f32(logits + (size_t)k * V, V);
    }
    for (int k = 0; k < N_LONG; k++)
        cr_expect_eq(mine[k], gen[k], "long generated token %d: %d, golden %d", k, mine[k], gen[k]);
    golden_assert_logits("long_decode_logits", gl, logits, N_LONG, V);
    free(gen);
    free(gl);
    free(logits);
    free(gids);
    free(gt);
    free(all);
    free(ids);
    golden_close(&g);
}

Test(golden, bf16_prefill) { check_prefill("bf16", 256); }
Test(golden, fp8_prefill) { check_prefill("fp8", 256); }
Test(golden, int4_prefill) { check_prefill("int4", 256); }
/* Chunked prefill (5 tokens a step, the last step of 4 taking the absorbed
 * path) must give the same numbers as one pass. */
Test(golden, bf16_prefill_chunked) { check_prefill("bf16", 5); }
Test(golden, bf16_decode) { check_decode("bf16"); }
Test(golden, fp8_decode) { check_decode("fp8"); }
Test(golden, int4_decode) { check_decode("int4"); }
/* (under the sanitizers the bf16 run alone: the long context's code is the
 * same in the three, and the formats' kernels are the short runs' too) */
static void check_long_plain(const char *variant)
{
    if (test_sanitized())
        cr_skip_test("under the sanitizers golden::bf16_long covers the long context");
    check_long(variant);
}

Test(golden, bf16_long, .timeout = 1200) { check_long("bf16"); }
Test(golden, fp8_long, .timeout = 1200) { check_long_plain("fp8"); }
Test(golden, int4_long, .timeout = 1200) { check_long_plain("int4"); }

/* The same checks on every kernel path this CPU runs (the default above is the
 * fastest): every path must meet the strict float32 profile on its own. */
static void force_path(const char *path)
{
    kernel_path p;
    cr_assert_eq(kernel_path_parse(path, &p), 0);
    if (!kernel_path_supported(p))
        cr_skip_test("this CPU cannot run the %s kernels", path);
    setenv("MOETIER_KERNELS", path, 1);
    cr_assert_eq(kernel_path_default(), p, "MOETIER_KERNELS=%s did not take", path);
}

#define PATH_TESTS(path)                                                                          \
    Test(golden, bf16_prefill_##path) { force_path(#path); check_prefill("bf16", 256); }         \
    Test(golden, fp8_prefill_##path) { force_path(#path); check_prefill("fp8", 256); }           \
    Test(golden, int4_prefill_##path) { force_path(#path); check_prefill("int4", 256); }         \
    Test(golden, bf16_decode_##path) { force_path(#path); check_decode("bf16"); }                \
    Test(golden, fp8_decode_##path) { force_path(#path); check_decode("fp8"); }                  \
    Test(golden, int4_decode_##path) { force_path(#path); check_decode("int4"); }

PATH_TESTS(scalar)
PATH_TESTS(avx2)
PATH_TESTS(avx512)

/* AVX-512 FP8 without the VBMI byte tables, as CPUs without VBMI run it */
static void force_avx512_without_tables(void)
{
    force_path("avx512");
    setenv("MOETIER_FP8_TABLES", "0", 1);
    cr_assert_not(kernel_fp8_lut_supported(), "MOETIER_FP8_TABLES=0 did not take");
}

Test(golden, fp8_prefill_avx512_without_tables)
{
    force_avx512_without_tables();
    check_prefill("fp8", 256);
}

Test(golden, fp8_decode_avx512_without_tables)
{
    force_avx512_without_tables();
    check_decode("fp8");
}

/* AVX-512 with the FMA batched product where the AVX-512 tests above take AMX */
static void force_avx512_without_amx(void)
{
    force_path("avx512");
    if (!kernel_amx_supported())
        cr_skip_test("this CPU has no AMX: the avx512 tests above run the FMA product");
    kernel_amx_disable(1);
}

Test(golden, bf16_prefill_avx512_without_amx) { force_avx512_without_amx(); check_prefill("bf16", 256); }
Test(golden, fp8_prefill_avx512_without_amx) { force_avx512_without_amx(); check_prefill("fp8", 256); }
Test(golden, int4_prefill_avx512_without_amx) { force_avx512_without_amx(); check_prefill("int4", 256); }

/* The same golden checks with every operation on the GPU (skipped without one) */
#define GPU_TESTS(variant)                                                                         \
    Test(golden, variant##_prefill_gpu, .timeout = 300)                                            \
    {                                                                                              \
        test_require_gpu();                                                                        \
        check_prefill(#variant, 256);                                                              \
    }                                                                                              \
    Test(golden, variant##_decode_gpu, .timeout = 300)                                             \
    {                                                                                              \
        test_require_gpu();                                                                        \
        check_decode(#variant);                                                                    \
    }

GPU_TESTS(bf16)
GPU_TESTS(fp8)
GPU_TESTS(int4)
