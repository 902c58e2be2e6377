/* `moetier bench model` as scripts read it: one JSON object per test and
 * setting, speeds that are the mean and deviation of the samples it lists,
 * decode yardsticks that count the decode steps alone, DRAM hit rates that
 * follow the tier's size, and bad arguments refused before anything loads. */
#include <cJSON.h>
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/model/config.h"
#include "testutil.h"

#define run test_run_fmt

/* The JSON lines of out, parsed (at most max); their count. */
static int parse_lines(char *out, cJSON **lines, int max)
{
    int n = 0;
    for (char *l = strtok(out, "\n"); l; l = strtok(NULL, "\n")) {
        cr_assert_lt(n, max, "more lines than expected: %s", l);
        lines[n] = cJSON_Parse(l);
        cr_assert_not_null(lines[n], "not JSON: %s", l);
        n++;
    }
    return n;
}

static double num(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    cr_assert(cJSON_IsNumber(v), "no number %s in %s", key, cJSON_PrintUnformatted(o));
    return v->valuedouble;
}

/* the seconds of a token's multiply-adds at the FMA peak, 0 where the peak
 * was not measured (the scalar kernels) */
static double fma_seconds(const cJSON *o)
{
    const cJSON *peak = cJSON_GetObjectItemCaseSensitive(o, "peak_gflops");
    return cJSON_IsNumber(peak) ? num(o, "gflop_per_token") / peak->valuedouble : 0;
}

static const char *str(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    cr_assert(cJSON_IsString(v), "no string %s", key);
    return v->valuestring;
}

static void expect_refused(int want_rc, const char *needle, const char *dir, const char *args)
{
    char *out, *err;
    int rc = run(&out, &err, "%s bench model -m %s %s", test_moetier_bin(), dir, args);
    cr_expect_eq(rc, want_rc, "'%s': exit %d, stderr %s", args, rc, err);
    cr_expect(strstr(err, needle) != NULL, "'%s': stderr '%s' lacks '%s'", args, err, needle);
    cr_expect_str_empty(out, "'%s' printed '%s'", args, out);
    free(out);
    free(err);
}

Test(bench_model, json_lines_hold_their_samples, .timeout = 120)
{
    char *d = test_testdata_model_or_skip("int4"), *out, *err;
    cr_assert_eq(run(&out, &err, "%s bench model -m %s --json -p 8 -n 4 -d 0,6 --parallel 1,15 -r 3 "
                     "-t 1", test_moetier_bin(), d), 0, "%s", err);
    cJSON *l[8];
    int n = parse_lines(out, l, 8);
    cr_assert_eq(n, 6, "pp8, tg4 alone and 15 at once, at two depths: %d lines", n);
    /* the plan counts the caches of the 15 conversations, each of the 15
     * positions the deepest test takes (16 at least, as serve's slots) */
    cr_expect(strstr(err, "KV cache: 240 positions, when full"), "%s", err);
    const char *want[] = {"pp8", "tg4", "tg4"};
    const int parallel[] = {1, 1, 15};
    double gb[2][2], kv[2][2], gflop[2][2], attn[2][2];
    for (int k = 0; k < n; k++) {
        cr_expect_str_eq(str(l[k], "test"), want[k % 3]);
        cr_expect_eq(num(l[k], "parallel"), parallel[k % 3]);
        cr_expect_str_eq(str(l[k], "backend"), "cpu");
        cr_expect_str_eq(str(l[k], "cache_type"), "f32");
        cr_expect_str_eq(str(l[k], "model"), d);
        cr_expect_eq(num(l[k], "threads"), 1);
        cr_expect_eq(num(l[k], "depth"), k < 3 ? 0 : 6);
        cr_expect(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(l[k], "dram_gb")),
                  "no expert store, yet a DRAM tier size");
        /* tps and tps_sd are the samples' mean and sample deviation */
        const cJSON *s = cJSON_GetObjectItemCaseSensitive(l[k], "samples");
        cr_assert_eq(cJSON_GetArraySize(s), 3);
        cr_expect_eq(num(l[k], "reps"), 3);
        double sum = 0, sq = 0, mean;
        for (int i = 0; i < 3; i++) {
            double v = cJSON_GetArrayItem(s, i)->valuedouble;
            cr_expect_gt(v, 0);
            sum += v;
        }
        mean = sum / 3;
        for (int i = 0; i < 3; i++)
            sq += pow(cJSON_GetArrayItem(s, i)->valuedouble - mean, 2);
        cr_expect(fabs(num(l[k], "tps") - mean) < 1e-3 * mean, "tps %g, mean %g",
                  num(l[k], "tps"), mean);
        cr_expect(fabs(num(l[k], "tps_sd") - sqrt(sq / 2)) < 1e-3 * mean + 1e-3, "sd");
        if (k % 3 == 0) {
            cr_expect_null(cJSON_GetObjectItemCaseSensitive(l[k], "gb_per_token"),
                           "a prefill row has a decode yardstick");
            continue;
        }
        double g = gb[k / 3][k % 3 - 1] = num(l[k], "gb_per_token");
        kv[k / 3][k % 3 - 1] = num(l[k], "kv_gb_per_token");
        gflop[k / 3][k % 3 - 1] = num(l[k], "gflop_per_token");
        attn[k / 3][k % 3 - 1] = num(l[k], "attn_gflop_per_token");
        /* the bound: the slower of the reads and the multiply-adds, named
         * (15 conversations read a fraction of one's bytes a token for the
         * same arithmetic: on the development VM their rows are bound by the
         * multiply-adds, one conversation's by the reads) */
        double bound = num(l[k], "bound_tps"), read_s = g / num(l[k], "read_bw_gbps"),
               fma_s = fma_seconds(l[k]);
        cr_expect(fabs(bound - 1 / fmax(read_s, fma_s)) < 1e-3 * bound,
                  "bound %g, reads %g s, multiply-adds %g s", bound, read_s, fma_s);
        cr_expect_str_eq(str(l[k], "bound_by"), read_s >= fma_s ? "ram" : "fma");
        cr_expect(fabs(num(l[k], "ratio") - num(l[k], "tps") / bound) < 1e-3, "ratio");
    }
    /* a decode token at position p reads p + 1 cached positions of every
     * layer: tg4 after D tokens of context reads D + 2.5 a token, alone or
     * 15 at once; and the same weights at both depths (the untimed prefill of
     * the depth is not counted in) */
    model_config cfg;
    errbuf e;
    cr_assert_eq(config_load(&cfg, d, &e), 0, "%s", e.msg);
    double position_gb = cfg.n_layers * (cfg.kv_lora_rank + cfg.qk_rope_dim) * 4.0 / 1e9;
    for (int p = 0; p < 2; p++) {
        for (int i = 0; i < 2; i++)
            cr_expect(fabs(kv[i][p] - (i ? 8.5 : 2.5) * position_gb) < 1e-5 * kv[i][p],
                      "KV GB per token %g at depth %d (%d at once), not %g", kv[i][p], i ? 6 : 0,
                      parallel[p + 1], (i ? 8.5 : 2.5) * position_gb);
        cr_expect(gb[0][p] > 0 && fabs((gb[0][p] - kv[0][p]) - (gb[1][p] - kv[1][p])) < 1e-4,
                  "GB per token %g at depth 0, %g at 6 (%d at once)", gb[0][p], gb[1][p],
                  parallel[p + 1]);
    }
    /* a token multiplies every linear weight but the embedding table (the
     * routers' too), and its top-k experts, whatever the conversations at
     * once; the absorbed
     * attention takes, per head and cached position of every layer, the
     * latent and rope key for its score and the latent for its output */
    double mla = (cfg.q_lora_rank ? (double)cfg.q_lora_rank * cfg.hidden_size +
                                        (double)cfg.n_heads * (cfg.qk_nope_dim + cfg.qk_rope_dim) *
                                            cfg.q_lora_rank
                                  : (double)cfg.n_heads * (cfg.qk_nope_dim + cfg.qk_rope_dim) *
                                        cfg.hidden_size) +
                 (double)(cfg.kv_lora_rank + cfg.qk_rope_dim) * cfg.hidden_size +
                 (double)cfg.n_heads * (cfg.qk_nope_dim + cfg.v_head_dim) * cfg.kv_lora_rank +
                 (double)cfg.hidden_size * cfg.n_heads * cfg.v_head_dim;
    double weights = (double)cfg.vocab_size * cfg.hidden_size;      /* lm_head */
    for (int layer = 0; layer < cfg.n_layers; layer++) {
        int moe = config_is_moe_layer(&cfg, layer);
        double ffn = 3.0 * cfg.hidden_size;
        weights += mla + (moe ? ffn * cfg.moe_intermediate_size *
                                        (cfg.n_shared_experts + cfg.n_experts_per_tok) +
                                    (double)cfg.n_routed_experts * cfg.hidden_size
                              : ffn * cfg.intermediate_size);
    }
    double per_position = 2.0 * cfg.n_heads * (2 * cfg.kv_lora_rank + cfg.qk_rope_dim) *
                          cfg.n_layers / 1e9;
    for (int p = 0; p < 2; p++)
        for (int i = 0; i < 2; i++) {
            double a = (i ? 8.5 : 2.5) * per_position;
            cr_expect(fabs(attn[i][p] - a) < 1e-6 * a, "attention GFLOP %g, not %g", attn[i][p],
                      a);
            cr_expect(fabs(gflop[i][p] - (2 * weights / 1e9 + a)) < 1e-6 * gflop[i][p],
                      "GFLOP per token %g, not %g", gflop[i][p], 2 * weights / 1e9 + a);
        }
    /* 15 conversations stepped together read the dense weights once a step */
    cr_expect(gb[0][1] < 0.5 * gb[0][0], "GB per token %g alone, %g 15 at once", gb[0][0],
              gb[0][1]);
    for (int k = 0; k < n; k++)
        cJSON_Delete(l[k]);
    free(out);
    free(err);
    free(d);
}

/* one setting per --dram-gb value, the table's rows in order; a tier of 8
 * slots hits less than one that holds every expert */
Test(bench_model, dram_sizes_are_settings_of_their_own, .timeout = 120)
{
    char *tmp = test_make_tmpdir("bench-model"), model[4200], text[4300], *out, *err;
    snprintf(model, sizeof model, "%s/model", tmp);
    test_synth_tiny(model, "int4");
    cr_assert_eq(run(&out, &err, "%s convert -m %s", test_moetier_bin(), model), 0, "%s", err);
    free(out);
    free(err);
    snprintf(text, sizeof text, "%s/text.txt", tmp);
    FILE *f = fopen(text, "w");
    cr_assert_not_null(f);
    for (int k = 0; k < 40; k++)
        fprintf(f, "line %d of a text whose tokens the benchmark takes in order.\n", k);
    fclose(f);
    /* 8 experts (0.0005 GB) and all 96; a bf16 KV cache, which the rows name */
    cr_assert_eq(run(&out, &err, "%s bench model -m %s --json -p 0 -n 12 -r 2 --dram-gb 0.0005,1 "
                     "-f %s --cache-type bf16", test_moetier_bin(), model, text), 0, "%s", err);
    cJSON *l[4];
    cr_assert_eq(parse_lines(out, l, 4), 2, "%s", out);
    for (int k = 0; k < 2; k++)
        cr_expect_str_eq(str(l[k], "cache_type"), "bf16");
    double small = num(l[0], "dram_gb"), all = num(l[1], "dram_gb");
    cr_expect(small < all && all < 0.01, "tiers of %g and %g GB", small, all);
    double h0 = num(l[0], "dram_hit_rate"), h1 = num(l[1], "dram_hit_rate");
    cr_expect(h0 < h1, "8 slots hit %g, every expert %g", h0, h1);
    /* the bound: the longest of the RAM's reads, the store's (the misses) and
     * the multiply-adds */
    for (int k = 0; k < 2; k++) {
        double ram = num(l[k], "gb_per_token") / num(l[k], "read_bw_gbps"),
               store = num(l[k], "store_gb_per_token") / num(l[k], "store_read_gbps"),
               fma = fma_seconds(l[k]);
        double bound = num(l[k], "bound_tps"), slowest = fmax(fmax(ram, store), fma);
        cr_expect(fabs(bound - 1 / slowest) < 1e-3 * bound,
                  "bound %g, RAM %g s, store %g s, multiply-adds %g s", bound, ram, store, fma);
        cr_expect_str_eq(str(l[k], "bound_by"), slowest == ram ? "ram" : slowest == store ? "store"
                                                                                          : "fma");
    }
    cr_expect_gt(num(l[0], "store_gb_per_token"), 0, "8 slots read nothing from the store");
    cr_expect_lt(num(l[1], "store_gb_per_token"), num(l[0], "store_gb_per_token"));
    cJSON_Delete(l[0]);
    cJSON_Delete(l[1]);
    free(out);
    free(err);
    /* the table: a header and a row per test and setting, every cache type
     * a setting of its own within each tier size, a bf16 or q8_0 cache's named
     * (a space after a list's comma passed over) */
    cr_assert_eq(run(&out, &err, "%s bench model -m %s -p 4 -n 0 -r 1 --dram-gb '0.0005, 1' "
                     "-ctk f32,bf16,q8_0", test_moetier_bin(), model), 0, "%s", err);
    /* the model's shape, then the table */
    cr_expect(strncmp(out, "model ", 6) == 0 && strstr(out, "3 MoE, 32 routed experts each, top 8"),
              "%s", out);
    cr_expect(strstr(out, "\n\n| backend | threads | dram GB |"), "%s", out);
    int rows = 0, bf16_rows = 0, q8_rows = 0;
    for (const char *p = out; (p = strstr(p, "\n| cpu |")); p++)
        rows++;
    for (const char *p = out; (p = strstr(p, "\n| cpu, bf16 KV cache |")); p++)
        bf16_rows++;
    for (const char *p = out; (p = strstr(p, "\n| cpu, q8_0 KV cache |")); p++)
        q8_rows++;
    cr_expect(rows == 2 && bf16_rows == 2 && q8_rows == 2, "%s", out);
    const char *f32_row = strstr(out, "\n| cpu |"), *bf16_row = strstr(out, "| cpu, bf16 KV");
    const char *q8_row = strstr(out, "| cpu, q8_0 KV");
    cr_expect(f32_row && bf16_row && q8_row && f32_row < bf16_row && bf16_row < q8_row &&
              strstr(q8_row + 1, "\n| cpu |"), "not f32, bf16, q8_0 within each tier size: %s",
              out);
    free(out);
    free(err);
    /* a text without tokens is refused, naming it */
    char empty[4300], args[4400];
    snprintf(empty, sizeof empty, "%s/empty.txt", tmp);
    f = fopen(empty, "w");
    cr_assert_not_null(f);
    fclose(f);
    snprintf(args, sizeof args, "-f %s -p 4", empty);
    expect_refused(1, "empty.txt: the text has no tokens", model, args);
    test_remove_tree(tmp);
    free(tmp);
}

/* -t values run on the model as opened (the CPU backend takes a new pool of
 * threads), after each --dram-gb setting's open */
Test(bench_model, threads_run_on_the_open_model, .timeout = 120)
{
    char *tmp = test_make_tmpdir("bench-model-t"), model[4200], *out, *err;
    snprintf(model, sizeof model, "%s/model", tmp);
    test_synth_tiny(model, "int4");
    cr_assert_eq(run(&out, &err, "%s convert -m %s", test_moetier_bin(), model), 0, "%s", err);
    free(out);
    free(err);
    cr_assert_eq(run(&out, &err, "%s bench model -m %s --json -p 4 -n 2 -r 1 -t 1,2 "
                     "--dram-gb 0.0005,1", test_moetier_bin(), model), 0, "%s", err);
    cJSON *l[8];
    cr_assert_eq(parse_lines(out, l, 8), 8, "%s", out);
    const int threads[] = {1, 1, 2, 2, 1, 1, 2, 2};
    for (int k = 0; k < 8; k++) {
        cr_expect_eq(num(l[k], "threads"), threads[k], "row %d", k);
        /* 8 slots of 0.0005 GB, then every expert (the whole store, under 1 GB) */
        double gb = num(l[k], "dram_gb");
        cr_expect(k < 4 ? gb <= 0.0005 : gb > 0.001, "row %d: %g GB", k, gb);
        cJSON_Delete(l[k]);
    }
    /* one switch per tier setting, none for the first -t of each */
    const char *line = "moetier bench model: -t 2 on the model as opened";
    char *at = strstr(err, line);
    cr_expect(at && strstr(at + 1, line) && !strstr(strstr(at + 1, line) + 1, line), "%s", err);
    cr_expect_null(strstr(err, "-t 1 on the model"), "%s", err);
    free(out);
    free(err);
    test_remove_tree(tmp);
    free(tmp);
}

Test(bench_model, bad_arguments_are_refused, .timeout = 60)
{
    char *d = test_testdata_model_or_skip("bf16");
    expect_refused(2, "nothing to measure", d, "-p 0 -n 0");
    expect_refused(2, "nothing to measure", d, "-p 0 -n 0 -d 5");
    expect_refused(2, "-c 16 is too small", d, "-c 16 -p 8 -n 4 -d 12");
    expect_refused(2, "-r expects", d, "-r 0");
    expect_refused(2, "empty value", d, "--dram-gb 1,,2");
    expect_refused(2, "takes at most 8 values", d, "-p 1,2,3,4,5,6,7,8,9");
    expect_refused(2, "--parallel expects", d, "--parallel 65");
    expect_refused(2, "--cache-type: 'q4_0' is not a cache type", d, "-ctk f32,q4_0");
    expect_refused(2, "--trace is not taken", d, "--trace /tmp/x.trace");
    expect_refused(2, "unknown option", d, "--frobnicate");
    expect_refused(1, "--dram-gb needs an expert store", d, "--dram-gb 1 -p 4 -n 0");
    expect_refused(1, "no-such-file", d, "-f /nonexistent/no-such-file -p 4");
    char *out, *err;
    cr_expect_eq(run(&out, &err, "%s bench model -p 4", test_moetier_bin()), 2);
    cr_expect(strstr(err, "-m DIR is required"), "%s", err);
    free(out);
    free(err);
    free(d);
}

/* On the GPU backend a decode row carries the decode bound of its timed steps
 * alone: the same weights a token whether or not a context was prefilled
 * before them (the prefill's copies and GPU experts not counted in), the KV
 * cache up to each token's position, and ratio = tps / bound_tps; each
 * --vram-gb value is a setting of its own. */
Test(bench_model, gpu_rows_carry_the_decode_bound_gpu, .timeout = 300)
{
    test_require_gpu();
    char *dir = test_make_tmpdir("bench-model-gpu"), *out, *err;
    test_synth_tiny(dir, "int4");
    cr_assert_eq(run(&out, &err, "%s bench model -m %s --backend cuda --json -p 4 -n 3 -d 0,5 -r 2 "
                     "--vram-gb 0.5,1", test_moetier_bin(), dir), 0, "%s", err);
    cJSON *l[16];
    int n = parse_lines(out, l, 16);
    cr_assert_eq(n, 8, "2 budgets x 2 depths x pp and tg: %d lines", n);
    model_config cfg;
    errbuf e;
    cr_assert_eq(config_load(&cfg, dir, &e), 0, "%s", e.msg);
    double position_gb = cfg.n_layers * (cfg.kv_lora_rank + cfg.qk_rope_dim) * 4.0 / 1e9;
    for (int k = 0; k < n; k++) {
        cr_expect_str_eq(str(l[k], "backend"), "cuda");
        cr_expect_eq(num(l[k], "vram_gb"), k < 4 ? 0.5 : 1);
        if (strncmp(str(l[k], "test"), "tg", 2))
            continue;
        double bound = num(l[k], "bound_tps"), hits = num(l[k], "vram_hit_rate");
        cr_expect(bound > 0 && fabs(num(l[k], "ratio") - num(l[k], "tps") / bound) < 1e-3,
                  "ratio of line %d", k);
        cr_expect(hits >= 0 && hits <= 1, "VRAM hit rate %g", hits);
        const char *by = str(l[k], "bound_by");
        cr_expect(!strcmp(by, "gpu") || !strcmp(by, "cpu") || !strcmp(by, "copy"), "bound by %s",
                  by);
        /* tg3 reads the cache up to positions 1..3 after no context, 6..8
         * after 5 tokens: 2 and 7 positions a token */
        double kv = num(l[k], "kv_gb_per_token"), positions = k % 4 == 3 ? 7 : 2;
        cr_expect(fabs(kv - positions * position_gb) < 1e-5 * kv, "KV GB per token %g, not %g",
                  kv, positions * position_gb);
        if (k % 4 == 3)
            cr_expect(fabs((num(l[k], "gb_per_token") - kv) -
                           (num(l[k - 2], "gb_per_token") - num(l[k - 2], "kv_gb_per_token"))) <
                          1e-6,
                      "GB per token %g after 5 tokens, %g after none", num(l[k], "gb_per_token"),
                      num(l[k - 2], "gb_per_token"));
    }
    for (int k = 0; k < n; k++)
        cJSON_Delete(l[k]);
    free(out);
    free(err);
    test_remove_tree(dir);
    free(dir);
}
