/* --cache-type bf16: the KV cache's values rounded to bfloat16 when written.
 *
 * Rounding is the only change: the first layer's rows (which no attention
 * feeds) are the float32 cache's rows rounded, every row holds bf16 values,
 * the steps of a batch-invariant run keep their bits, and the logits stay
 * within the testdata's bf16 profile of the golden ones. (The attention's
 * reads of a bf16 cache are checked against the reference forms in
 * test_kernels.c; tiers, saved prompts and sequences stepped together in
 * test_tiers.c, test_prompt_file.c and test_engine_seqs.c.) */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "core/app/cli_common.h"
#include "core/app/cli_prompt_file.h"
#include "core/engine/prompt_cache.h"
#include "core/engine/prompt_file.h"
#include "core/model/dtype.h"
#include "core/model/synth.h"
#include "testutil.h"

#define T_IDS 24

/* the backend the tests open ("cuda" in the _gpu ones; each test runs in its own process) */
static const char *backend_name = "cpu";

static void open_typed(cli_model *m, const char *dir, kv_type type, int invariant, int chunk)
{
    model_flags f = {.dir = dir, .ctx = 64, .chunk = chunk, .quiet = 1, .cache_type = type,
                     .batch_invariant = invariant, .backend = backend_name};
    errbuf e;
    cr_assert_eq(cli_model_open(m, &f, &e), 0, "%s", e.msg);
}

static void some_ids(int *ids, int V)
{
    for (int i = 0; i < T_IDS; i++)
        ids[i] = (i * 37 + 5) % V;
}

/* every layer's rows of the prompt's positions, as float32 (a bf16 cache's
 * widened here: the host gets them as the cache holds them); loaded back into
 * other positions, they come out with the same bits (as a saved prompt's do) */
static float *prefilled_rows(const char *dir, kv_type type)
{
    cli_model m;
    open_typed(&m, dir, type, 0, 7);
    int ids[T_IDS];
    some_ids(ids, m.mw.cfg.vocab_size);
    errbuf e;
    cr_assert_eq(engine_forward(&m.en, ids, T_IDS, NULL, 0, &e), 0, "%s", e.msg);
    size_t values = (size_t)m.en.kv.n_layers * T_IDS * (size_t)m.en.kv.row;
    size_t floats = (size_t)m.en.kv.n_layers * T_IDS * (size_t)kv_cache_row_floats(&m.en.kv);
    cr_expect_eq(floats, type == KV_BF16 ? values / 2 : values);
    float *raw = malloc(floats * sizeof *raw), *again = malloc(floats * sizeof *again);
    float *rows = malloc(values * sizeof *rows);
    cr_assert(raw && again && rows);
    kv_cache_save(&m.en.kv, 0, T_IDS, raw);
    kv_span span = {.rows = raw, .first = T_IDS, .end = 2 * T_IDS, .stride = T_IDS};
    kv_cache_load(&m.en.kv, T_IDS, 2 * T_IDS, &span);
    kv_cache_save(&m.en.kv, T_IDS, 2 * T_IDS, again);
    cr_expect(memcmp(raw, again, floats * sizeof *raw) == 0, "%s rows saved, loaded and saved "
              "again differ", kv_type_name(type));
    if (type == KV_BF16)
        bf16_widen((const uint16_t *)(const void *)raw, values, rows);
    else
        memcpy(rows, raw, values * sizeof *rows);
    free(raw);
    free(again);
    cli_model_close(&m);
    return rows;
}

static void rows_rounded(void)
{
    char *dir = test_testdata_model_or_skip("bf16");
    cli_model m;
    open_typed(&m, dir, KV_F32, 0, 7);
    size_t layer = (size_t)T_IDS * (size_t)m.en.kv.row, all = (size_t)m.en.kv.n_layers * layer;
    cli_model_close(&m);
    float *f32 = prefilled_rows(dir, KV_F32), *bf16 = prefilled_rows(dir, KV_BF16);
    /* the first layer's rows come from the embeddings alone */
    size_t rounded = 0, changed = 0;
    for (size_t i = 0; i < layer; i++) {
        float want = bf16_to_f32(f32_to_bf16(f32[i]));
        rounded += memcmp(&want, &bf16[i], sizeof want) == 0;
        changed += want != f32[i];
    }
    cr_expect_eq(rounded, layer, "%zu of layer 0's %zu values are the f32 ones rounded", rounded,
                 layer);
    cr_expect_gt(changed, layer / 2, "rounding changed only %zu of %zu values", changed, layer);
    /* the later layers' rows differ (their attention read rounded rows) but
     * are bf16 values all the same */
    size_t wide = 0, differ = 0;
    for (size_t i = layer; i < all; i++) {
        uint32_t u;
        memcpy(&u, &bf16[i], sizeof u);
        wide += (u & 0xffff) != 0;
        differ += bf16[i] != bf16_to_f32(f32_to_bf16(f32[i]));
    }
    cr_expect_eq(wide, 0, "%zu values of the later layers are not bf16", wide);
    cr_expect_gt(differ, 0, "the later layers' rows are the f32 rows rounded: did attention read "
                 "the rounded cache?");
    free(f32);
    free(bf16);
    free(dir);
}

Test(cache_type, rows_are_the_f32_rows_rounded, .timeout = 120) { rows_rounded(); }

/* the GPU rounds its rows as the host does */
Test(cache_type, rows_are_the_f32_rows_rounded_gpu, .timeout = 300)
{
    test_require_gpu();
    backend_name = "cuda";
    rows_rounded();
}

/* the bf16 profile of the testdata README (fp32 accumulation, bf16 values) */
static void within_bf16_profile(const char *variant)
{
    char *dir = test_testdata_model_or_skip(variant), path[4200];
    cli_model m;
    open_typed(&m, dir, KV_BF16, 0, 256);
    int V = m.mw.cfg.vocab_size;
    snprintf(path, sizeof path, "%s/golden/prompt_ids.i32.bin", dir);
    size_t n;
    int *ids = test_read_file(path, &n);
    int T = (int)(n / sizeof *ids);
    snprintf(path, sizeof path, "%s/golden/prefill_logits.f32.bin", dir);
    float *golden = test_read_file(path, &n);
    cr_assert_eq(n, (size_t)T * (size_t)V * sizeof(float), "%s: %zu bytes", path, n);
    float *got = malloc(n);
    errbuf e;
    cr_assert_eq(engine_forward(&m.en, ids, T, got, 1, &e), 0, "%s", e.msg);
    logit_cmp r = test_compare_logits(golden, got, T, V);
    cr_log_info("%s, bf16 cache: max|diff|/std %.3g rms/std %.3g top-1 %d of %d", variant,
                r.max_over_std, r.rms_over_std, r.top1_agree, T);
    cr_expect_leq(r.max_over_std, 2.5, "%s: max|diff|/std %.3g", variant, r.max_over_std);
    cr_expect_leq(r.rms_over_std, 0.25, "%s: rms/std %.3g", variant, r.rms_over_std);
    cr_expect_geq(r.top1_agree * 10, T * 7, "%s: top-1 agrees at %d of %d", variant, r.top1_agree,
                  T);
    /* and the cache was rounded: the strict profile no longer holds exactly */
    cr_expect_gt(r.rms_over_std, 0, "%s: the bf16 cache gave the f32 logits", variant);
    free(got);
    free(golden);
    free(ids);
    cli_model_close(&m);
    free(dir);
}

Test(cache_type, logits_in_the_bf16_profile_bf16, .timeout = 120) { within_bf16_profile("bf16"); }
Test(cache_type, logits_in_the_bf16_profile_fp8, .timeout = 120) { within_bf16_profile("fp8"); }
Test(cache_type, logits_in_the_bf16_profile_int4, .timeout = 120) { within_bf16_profile("int4"); }

Test(cache_type, logits_in_the_bf16_profile_gpu, .timeout = 300)
{
    test_require_gpu();
    backend_name = "cuda";
    within_bf16_profile("fp8");
}

/* With --batch-invariant a token's logits keep their bits over a bf16 cache
 * too: a prompt in one prefill, in chunks of 5, and its last tokens as
 * decode steps. */
Test(cache_type, batch_invariant_steps_keep_their_bits, .timeout = 120)
{
    char *dir = test_testdata_model_or_skip("int4");
    cli_model m;
    open_typed(&m, dir, KV_BF16, 1, 64);
    int V = m.mw.cfg.vocab_size, ids[T_IDS];
    some_ids(ids, V);
    size_t n = (size_t)T_IDS * (size_t)V;
    float *one = malloc(n * sizeof *one), *parts = malloc(n * sizeof *parts);
    errbuf e;
    cr_assert_eq(engine_forward(&m.en, ids, T_IDS, one, 1, &e), 0, "%s", e.msg);
    cli_model_close(&m);
    open_typed(&m, dir, KV_BF16, 1, 5);
    cr_assert_eq(engine_forward(&m.en, ids, T_IDS - 3, parts, 1, &e), 0, "%s", e.msg);
    for (int t = T_IDS - 3; t < T_IDS; t++)
        cr_assert_eq(engine_decode(&m.en, ids[t], parts + (size_t)t * (size_t)V, &e), 0, "%s",
                     e.msg);
    for (int t = 0; t < T_IDS; t++)
        cr_expect(memcmp(one + (size_t)t * (size_t)V, parts + (size_t)t * (size_t)V,
                         (size_t)V * sizeof *one) == 0, "position %d: other bits in chunks", t);
    cli_model_close(&m);
    free(one);
    free(parts);
    free(dir);
}

/* the prompt's ids prefilled into m's engine, then saved to path as id's */
static void save_prompt(cli_model *m, const char *path, const prompt_identity *id)
{
    int ids[T_IDS];
    some_ids(ids, m->mw.cfg.vocab_size);
    errbuf e;
    cr_assert_eq(engine_forward(&m->en, ids, T_IDS, NULL, 0, &e), 0, "%s", e.msg);
    cr_assert_eq(prompt_file_save(path, id, &m->en, NULL, &e), 0, "%s", e.msg);
}

/* A saved prompt is found again only by a run with the cache type it was
 * made with: the rows, and all computed after them, differ. */
Test(cache_type, prompts_are_kept_apart_by_cache_type, .timeout = 120)
{
    char *dir = test_testdata_model_or_skip("bf16"), *tmp = test_make_tmpdir("cache_type_id");
    char path[4300];
    snprintf(path, sizeof path, "%s/prompt.bin", tmp);
    cli_model m;
    prompt_identity f32, bf16;
    errbuf e;
    open_typed(&m, dir, KV_BF16, 0, 8);
    cr_assert_eq(cli_model_prompt_identity(&m, &bf16, &e), 0, "%s", e.msg);
    save_prompt(&m, path, &bf16);
    cli_model_close(&m);
    open_typed(&m, dir, KV_F32, 0, 8);
    cr_assert_eq(cli_model_prompt_identity(&m, &f32, &e), 0, "%s", e.msg);
    cr_expect_eq(f32.model, bf16.model);
    cr_expect_str_neq(f32.compute, bf16.compute);
    cr_expect(strstr(bf16.compute, "bf16 cache"), "'%s'", bf16.compute);
    /* the f32 run refuses the bf16 file, naming the cache rather than the shape */
    prompt_file pf;
    cr_expect_neq(prompt_file_open(&pf, path, &f32, &m.en, &e), 0);
    cr_expect(strstr(e.msg, "bf16 cache kernels; this run computes with the"), "%s", e.msg);
    cli_model_close(&m);
    test_remove_tree(tmp);
    free(tmp);
    free(dir);
}

/* A bf16 cache's saved rows take half the bytes: a prompt file's, and a
 * position in the server's prompt cache (its rows and its id). */
Test(cache_type, saved_rows_take_half_the_bytes, .timeout = 120)
{
    char *dir = test_testdata_model_or_skip("int4"), *tmp = test_make_tmpdir("cache_type_file");
    size_t bytes[2], position[2], rows = 0;
    for (int k = 0; k < 2; k++) {
        cli_model m;
        open_typed(&m, dir, k ? KV_BF16 : KV_F32, 0, 8);
        char path[4300];
        snprintf(path, sizeof path, "%s/prompt-%d.bin", tmp, k);
        prompt_identity id = {.model = 1, .compute = "test"};
        save_prompt(&m, path, &id);
        free(test_read_file(path, &bytes[k]));
        position[k] = prompt_cache_position_bytes(&m.en);
        rows = (size_t)m.en.kv.n_layers * (size_t)m.en.kv.row;
        cli_model_close(&m);
    }
    cr_expect_eq(bytes[0] - bytes[1], T_IDS * rows * 2, "a file of %zu bytes, %zu with bf16",
                 bytes[0], bytes[1]);
    cr_expect_eq(position[0] - position[1], rows * 2);
    test_remove_tree(tmp);
    free(tmp);
    free(dir);
}

/* The plans count the cache at 2 bytes a value: the CPU's in RAM, the GPU's in
 * VRAM (whose prefill scratch then also holds a block's rows widened). */
Test(cache_type, the_plan_counts_half_the_bytes)
{
    model_config c = {.n_layers = 61, .kv_lora_rank = 512, .qk_rope_dim = 64,
                      .max_position_embeddings = 131072};
    model_flags f = {.ctx = 1000, .backend = "cpu"};
    tier_flags a = {0}, b = {0};
    cli_kv_flags(&f, &c, &a);
    f.cache_type = KV_BF16;
    cli_kv_flags(&f, &c, &b);
    cr_expect(a.kv_positions == 1000 && b.kv_positions == 1000 && !a.kv_on_device);
    uint64_t f32_bytes = kv_cache_bytes(&c, a.kv_positions, a.kv_value_bytes);
    cr_expect_eq(f32_bytes, 61ull * 1000 * 576 * 4);
    cr_expect_eq(kv_cache_bytes(&c, b.kv_positions, b.kv_value_bytes), f32_bytes / 2);
    tier_plan p = {.dense_bytes = 1000000000, .n_experts = 100};
    /* the GPU plan at the context's positions, or at those the flags give */
    tier_flags g32 = {.vram_gb = 80, .vram_gb_set = 1}, g16 = g32, g16_600;
    g16.kv_value_bytes = 2;
    g16_600 = g16;
    g16_600.kv_positions = 600;
    gpu_plan x, y, z;
    errbuf e;
    c.hidden_size = 7168;
    c.n_heads = 64;
    c.qk_nope_dim = 128;
    c.v_head_dim = 128;
    c.vocab_size = 1000;
    cr_assert_eq(gpu_plan_make(&x, &p, &c, &g32, 1000, 512, 1000000, 0, 0, &e), 0, "%s", e.msg);
    cr_assert_eq(gpu_plan_make(&y, &p, &c, &g16, 1000, 512, 1000000, 0, 0, &e), 0, "%s", e.msg);
    cr_expect_eq(x.kv_bytes, f32_bytes);
    cr_expect_eq(y.kv_bytes, x.kv_bytes / 2);
    cr_assert_eq(gpu_plan_make(&z, &p, &c, &g16_600, 1000, 512, 1000000, 0, 0, &e), 0, "%s",
                 e.msg);
    cr_expect_eq(z.kv_bytes, x.kv_bytes / 2 * 600 / 1000);
    /* (512 x 512 / 256 + 1,040 positions) x 576 floats, a quarter more */
    cr_expect_eq(y.act_bytes - x.act_bytes, (512ull * 512 / 256 + 1040) * 576 * 5 / 4 * 4);
}

/* The flag's refusals: a type it does not know, and a cache row of an odd
 * number of values (bf16 rows are moved as the floats their bytes make). */
Test(cache_type, refusals, .timeout = 60)
{
    char *dir = test_testdata_model_or_skip("bf16"), *out, *err;
    int rc = test_run_fmt(&out, &err, "%s logits -m %s --ids 1,2 -o /dev/null --cache-type q8_0",
                          test_moetier_bin(), dir);
    cr_expect_neq(rc, 0);
    cr_expect(strstr(err, "--cache-type: 'q8_0' is not a cache type (f32 or bf16)"), "%s", err);
    free(out);
    free(err);
    free(dir);
    char *odd = test_make_tmpdir("cache_type_odd");
    synth_options o = synth_options_default();
    const char *sets[] = {"kv_lora_rank=47"};
    o.out_dir = odd;
    o.force = 1;
    o.sets = sets;
    o.n_sets = 1;
    o.tokenizer = 0;
    errbuf e;
    cr_assert_eq(synth_run(&o, &e), 0, "synth: %s", e.msg);
    cli_model m;
    model_flags f = {.dir = odd, .ctx = 16, .quiet = 1, .cache_type = KV_BF16};
    cr_expect_neq(cli_model_open(&m, &f, &e), 0);
    cr_expect(strstr(e.msg, "a bf16 KV cache needs an even number of values a position "
                     "(kv_lora_rank + qk_rope_head_dim = 63)"), "%s", e.msg);
    f.cache_type = KV_F32;
    cr_assert_eq(cli_model_open(&m, &f, &e), 0, "%s", e.msg);
    cli_model_close(&m);
    test_remove_tree(odd);
    free(odd);
}
