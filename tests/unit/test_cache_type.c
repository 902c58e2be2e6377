/* --cache-type bf16 and q8_0: the KV cache's values rounded to bfloat16, or
 * quantized to int8 in blocks of 32 with a scale each, when written.
 *
 * Rounding is the only change: the first layer's rows (which no attention
 * feeds) are the float32 cache's rows rounded, every bf16 row holds bf16
 * values, the steps of a batch-invariant run keep their bits, and the logits
 * stay within the testdata's bf16 profile of the golden ones. (The
 * attention's reads of a bf16 or q8_0 cache are checked against the reference
 * forms and widened rows in test_kernels.c, the q8_0 rows themselves in
 * test_kv_q8.c; tiers, saved prompts and sequences stepped together in
 * test_tiers.c, test_prompt_file.c and test_engine_seqs.c.) */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "core/app/cli_common.h"
#include "core/app/cli_prompt_file.h"
#include "core/engine/kv_q8.h"
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

/* every layer's rows of the prompt's positions, as float32 (a bf16 or q8_0
 * cache's widened here: the host gets them as the cache holds them); loaded
 * back into other positions, they come out with the same bits (as a saved
 * prompt's do) */
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
    size_t per_row = type == KV_BF16 ? (size_t)m.en.kv.row / 2
                     : type == KV_Q8_0 ? kv_q8_row_bytes(m.en.kv.row) / 4 : (size_t)m.en.kv.row;
    cr_expect_eq(floats, values / (size_t)m.en.kv.row * per_row);
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
    else if (type == KV_Q8_0)
        for (size_t r = 0; r < values / (size_t)m.en.kv.row; r++)
            kv_q8_widen(raw + r * per_row, m.en.kv.row, 0, m.en.kv.row,
                        rows + r * (size_t)m.en.kv.row);
    else
        memcpy(rows, raw, values * sizeof *rows);
    free(raw);
    free(again);
    cli_model_close(&m);
    return rows;
}

/* float32 rows of `row` values, n values in all, as a cache of type t holds
 * them, widened */
static void rounded_as(kv_type t, const float *x, size_t n, int row, float *out)
{
    void *q = malloc(kv_q8_row_bytes(row));
    cr_assert_not_null(q);
    for (size_t r = 0; r < n / (size_t)row; r++) {
        const float *xr = x + r * (size_t)row;
        float *o = out + r * (size_t)row;
        if (t == KV_Q8_0) {
            kv_q8_quantize(xr, row, q);
            kv_q8_widen(q, row, 0, row, o);
        } else {
            for (int i = 0; i < row; i++)
                o[i] = bf16_to_f32(f32_to_bf16(xr[i]));
        }
    }
    free(q);
}

static void rows_rounded(kv_type type)
{
    char *dir = test_testdata_model_or_skip("bf16");
    cli_model m;
    open_typed(&m, dir, KV_F32, 0, 7);
    int row = m.en.kv.row;
    size_t layer = (size_t)T_IDS * (size_t)row, all = (size_t)m.en.kv.n_layers * layer;
    cli_model_close(&m);
    float *f32 = prefilled_rows(dir, KV_F32), *got = prefilled_rows(dir, type);
    float *want = malloc(all * sizeof *want);
    cr_assert_not_null(want);
    rounded_as(type, f32, all, row, want);
    /* the first layer's rows come from the embeddings alone */
    size_t rounded = 0, changed = 0;
    for (size_t i = 0; i < layer; i++) {
        rounded += memcmp(&want[i], &got[i], sizeof *want) == 0;
        changed += want[i] != f32[i];
    }
    cr_expect_eq(rounded, layer, "%s: %zu of layer 0's %zu values are the f32 ones rounded",
                 kv_type_name(type), rounded, layer);
    cr_expect_gt(changed, layer / 2, "%s: rounding changed only %zu of %zu values",
                 kv_type_name(type), changed, layer);
    /* the later layers' rows differ (their attention read rounded rows); a
     * bf16 cache's are bf16 values all the same */
    size_t wide = 0, differ = 0;
    for (size_t i = layer; i < all; i++) {
        uint32_t u;
        memcpy(&u, &got[i], sizeof u);
        wide += (u & 0xffff) != 0;
        differ += got[i] != want[i];
    }
    if (type == KV_BF16)
        cr_expect_eq(wide, 0, "%zu values of the later layers are not bf16", wide);
    cr_expect_gt(differ, 0, "%s: the later layers' rows are the f32 rows rounded: did attention "
                 "read the rounded cache?", kv_type_name(type));
    free(f32);
    free(got);
    free(want);
    free(dir);
}

Test(cache_type, rows_are_the_f32_rows_rounded, .timeout = 120) { rows_rounded(KV_BF16); }
Test(cache_type, rows_are_the_f32_rows_quantized_q8, .timeout = 120) { rows_rounded(KV_Q8_0); }

/* the GPU rounds its rows as the host does */
Test(cache_type, rows_are_the_f32_rows_rounded_gpu, .timeout = 300)
{
    test_require_gpu();
    backend_name = "cuda";
    rows_rounded(KV_BF16);
}

/* and quantizes them as the host does */
Test(cache_type, rows_are_the_f32_rows_quantized_q8_gpu, .timeout = 300)
{
    test_require_gpu();
    backend_name = "cuda";
    rows_rounded(KV_Q8_0);
}

/* the bf16 profile of the testdata README (fp32 accumulation, bf16 values) */
static void within_bf16_profile(const char *variant, kv_type type)
{
    char *dir = test_testdata_model_or_skip(variant), path[4200];
    cli_model m;
    open_typed(&m, dir, type, 0, 256);
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
    cr_log_info("%s, %s cache: max|diff|/std %.3g rms/std %.3g top-1 %d of %d", variant,
                kv_type_name(type), r.max_over_std, r.rms_over_std, r.top1_agree, T);
    cr_expect_leq(r.max_over_std, 2.5, "%s: max|diff|/std %.3g", variant, r.max_over_std);
    cr_expect_leq(r.rms_over_std, 0.25, "%s: rms/std %.3g", variant, r.rms_over_std);
    cr_expect_geq(r.top1_agree * 10, T * 7, "%s: top-1 agrees at %d of %d", variant, r.top1_agree,
                  T);
    /* and the cache was rounded: the strict profile no longer holds exactly */
    cr_expect_gt(r.rms_over_std, 0, "%s: the %s cache gave the f32 logits", variant,
                 kv_type_name(type));
    free(got);
    free(golden);
    free(ids);
    cli_model_close(&m);
    free(dir);
}

Test(cache_type, logits_in_the_bf16_profile_bf16, .timeout = 120)
{
    within_bf16_profile("bf16", KV_BF16);
}
Test(cache_type, logits_in_the_bf16_profile_fp8, .timeout = 120)
{
    within_bf16_profile("fp8", KV_BF16);
}
Test(cache_type, logits_in_the_bf16_profile_int4, .timeout = 120)
{
    within_bf16_profile("int4", KV_BF16);
}
Test(cache_type, q8_logits_in_the_bf16_profile_bf16, .timeout = 120)
{
    within_bf16_profile("bf16", KV_Q8_0);
}
Test(cache_type, q8_logits_in_the_bf16_profile_fp8, .timeout = 120)
{
    within_bf16_profile("fp8", KV_Q8_0);
}
Test(cache_type, q8_logits_in_the_bf16_profile_int4, .timeout = 120)
{
    within_bf16_profile("int4", KV_Q8_0);
}

Test(cache_type, logits_in_the_bf16_profile_gpu, .timeout = 300)
{
    test_require_gpu();
    backend_name = "cuda";
    within_bf16_profile("fp8", KV_BF16);
}

Test(cache_type, q8_logits_in_the_bf16_profile_gpu, .timeout = 300)
{
    test_require_gpu();
    backend_name = "cuda";
    within_bf16_profile("int4", KV_Q8_0);
}

/* With --batch-invariant a token's logits keep their bits over a bf16 or
 * q8_0 cache too: a prompt in one prefill, in chunks of 5, and its last
 * tokens as decode steps. */
static void batch_invariant_steps(kv_type type)
{
    char *dir = test_testdata_model_or_skip("int4");
    cli_model m;
    open_typed(&m, dir, type, 1, 64);
    int V = m.mw.cfg.vocab_size, ids[T_IDS];
    some_ids(ids, V);
    size_t n = (size_t)T_IDS * (size_t)V;
    float *one = malloc(n * sizeof *one), *parts = malloc(n * sizeof *parts);
    errbuf e;
    cr_assert_eq(engine_forward(&m.en, ids, T_IDS, one, 1, &e), 0, "%s", e.msg);
    cli_model_close(&m);
    open_typed(&m, dir, type, 1, 5);
    cr_assert_eq(engine_forward(&m.en, ids, T_IDS - 3, parts, 1, &e), 0, "%s", e.msg);
    for (int t = T_IDS - 3; t < T_IDS; t++)
        cr_assert_eq(engine_decode(&m.en, ids[t], parts + (size_t)t * (size_t)V, &e), 0, "%s",
                     e.msg);
    for (int t = 0; t < T_IDS; t++)
        cr_expect(memcmp(one + (size_t)t * (size_t)V, parts + (size_t)t * (size_t)V,
                         (size_t)V * sizeof *one) == 0, "%s: position %d: other bits in chunks",
                  kv_type_name(type), t);
    cli_model_close(&m);
    free(one);
    free(parts);
    free(dir);
}

Test(cache_type, batch_invariant_steps_keep_their_bits, .timeout = 120)
{
    batch_invariant_steps(KV_BF16);
}
Test(cache_type, batch_invariant_steps_keep_their_bits_q8, .timeout = 120)
{
    batch_invariant_steps(KV_Q8_0);
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
    cli_model q8;
    prompt_identity q8_id;
    open_typed(&q8, dir, KV_Q8_0, 0, 8);
    cr_assert_eq(cli_model_prompt_identity(&q8, &q8_id, &e), 0, "%s", e.msg);
    cr_expect(strstr(q8_id.compute, "q8_0 cache"), "'%s'", q8_id.compute);
    cli_model_close(&q8);
    /* and by --batch-invariant, whose prefill rows have other bits too (the
     * longest identity still fits its field whole) */
    cli_model inv;
    prompt_identity inv_id;
    open_typed(&inv, dir, KV_BF16, 1, 8);
    cr_assert_eq(cli_model_prompt_identity(&inv, &inv_id, &e), 0, "%s", e.msg);
    cr_expect(strstr(inv_id.compute, "+inv, bf16 cache"), "'%s'", inv_id.compute);
    cli_model_close(&inv);
    /* the f32 run refuses the bf16 file, naming the cache rather than the shape */
    prompt_file pf;
    cr_expect_neq(prompt_file_open(&pf, path, &f32, &m.en, &e), 0);
    cr_expect(strstr(e.msg, "bf16 cache kernels; this run computes with the"), "%s", e.msg);
    cli_model_close(&m);
    test_remove_tree(tmp);
    free(tmp);
    free(dir);
}

/* A bf16 cache's saved rows take half the bytes, a q8_0 one's its rows'
 * bytes: a prompt file's, and a position in the server's prompt cache (its
 * rows and its id). */
Test(cache_type, saved_rows_take_half_the_bytes, .timeout = 120)
{
    char *dir = test_testdata_model_or_skip("int4"), *tmp = test_make_tmpdir("cache_type_file");
    size_t bytes[3], position[3], rows = 0, row = 0;
    const kv_type types[3] = {KV_F32, KV_BF16, KV_Q8_0};
    for (int k = 0; k < 3; k++) {
        cli_model m;
        open_typed(&m, dir, types[k], 0, 8);
        char path[4300];
        snprintf(path, sizeof path, "%s/prompt-%d.bin", tmp, k);
        prompt_identity id = {.model = 1, .compute = "test"};
        save_prompt(&m, path, &id);
        free(test_read_file(path, &bytes[k]));
        position[k] = prompt_cache_position_bytes(&m.en);
        rows = (size_t)m.en.kv.n_layers * (size_t)m.en.kv.row;
        row = (size_t)m.en.kv.row;
        cli_model_close(&m);
    }
    cr_expect_eq(bytes[0] - bytes[1], T_IDS * rows * 2, "a file of %zu bytes, %zu with bf16",
                 bytes[0], bytes[1]);
    cr_expect_eq(position[0] - position[1], rows * 2);
    /* q8_0: a byte a value, padded to 4, and a 4-byte scale a block of 32 */
    size_t q8_row = (row + 3) / 4 * 4 + (row + 31) / 32 * 4;
    cr_expect_eq(bytes[0] - bytes[2], T_IDS * (rows * 4 - rows / row * q8_row),
                 "a file of %zu bytes, %zu with q8_0", bytes[0], bytes[2]);
    cr_expect_eq(position[0] - position[2], rows * 4 - rows / row * q8_row);
    test_remove_tree(tmp);
    free(tmp);
    free(dir);
}

/* The plans count the cache at 2 bytes a value (q8_0: a byte and a scale of
 * 4 a block of 32): the CPU's in RAM, the GPU's in VRAM (whose prefill
 * scratch then also holds a block's rows widened). */
Test(cache_type, the_plan_counts_half_the_bytes)
{
    model_config c = {.n_layers = 61, .kv_lora_rank = 512, .qk_rope_dim = 64,
                      .max_position_embeddings = 131072};
    model_flags f = {.ctx = 1000, .backend = "cpu"};
    tier_flags a = {0}, b = {0}, q = {0};
    cli_kv_flags(&f, &c, &a);
    f.cache_type = KV_BF16;
    cli_kv_flags(&f, &c, &b);
    f.cache_type = KV_Q8_0;
    cli_kv_flags(&f, &c, &q);
    cr_expect(a.kv_positions == 1000 && b.kv_positions == 1000 && !a.kv_on_device);
    uint64_t f32_bytes = kv_cache_bytes(&c, a.kv_positions, a.kv_type);
    cr_expect_eq(f32_bytes, 61ull * 1000 * 576 * 4);
    cr_expect_eq(kv_cache_bytes(&c, b.kv_positions, b.kv_type), f32_bytes / 2);
    cr_expect_eq(kv_cache_bytes(&c, q.kv_positions, q.kv_type), 61ull * 1000 * (576 + 18 * 4));
    tier_plan p = {.dense_bytes = 1000000000, .n_experts = 100};
    /* the GPU plan at the context's positions, or at those the flags give */
    tier_flags g32 = {.vram_gb = 80, .vram_gb_set = 1}, g16 = g32, g16_600;
    g16.kv_type = KV_BF16;
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
    int rc = test_run_fmt(&out, &err, "%s logits -m %s --ids 1,2 -o /dev/null --cache-type q4_0",
                          test_moetier_bin(), dir);
    cr_expect_neq(rc, 0);
    cr_expect(strstr(err, "--cache-type: 'q4_0' is not a cache type (f32, bf16 or q8_0)"), "%s",
              err);
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
