/* moetier tune: the prediction model, the plot and the command.
 *
 * The model is checked against numbers it must reproduce exactly (a line
 * through two runs recovers its slope and intercept; a tier holding every
 * expert misses nothing; misses are those of an LRU written apart from the
 * replay; speeds follow 1 / (compute + misses * cost)); the recommendation
 * against its rule; the plot is well-formed SVG with both curves; the command
 * runs end to end on a synthetic model with a store and reports a prediction
 * and a measurement at the recommended size. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cJSON.h"
#include "core/app/cli_common.h"
#include "prefetch/tune_model.h"
#include "prefetch/tune_plot.h"
#include "reference_lru.h"
#include "testutil.h"

Test(tune, calibration_is_the_line_through_two_runs)
{
    /* 10 ms of compute per token, 0.5 ms per miss: 40 and 4 misses per token */
    tune_sample small = {.tokens = 50, .decode_s = 50 * (0.010 + 40 * 0.0005), .stall_s = 0.3,
                         .misses = 50 * 40};
    tune_sample large = {.tokens = 20, .decode_s = 20 * (0.010 + 4 * 0.0005), .stall_s = 0.01,
                         .misses = 20 * 4};
    tune_calibration c = tune_calibrate(&small, &large);
    cr_expect_float_eq(c.compute_s, 0.010, 1e-9, "compute %g", c.compute_s);
    cr_expect_float_eq(c.stall_per_miss_s, 0.0005, 1e-9, "per miss %g", c.stall_per_miss_s);
    /* runs that missed alike: the measured wait per miss stands in */
    tune_sample same = large;
    same.misses = 80;
    same.stall_s = 0.04;
    c = tune_calibrate(&same, &large);
    cr_expect_float_eq(c.stall_per_miss_s, 0.0005, 1e-9, "per miss %g", c.stall_per_miss_s);
    /* a line that reaches zero misses below zero time (0.4 s - 50 x 12 ms):
     * the measured waits stand in, and a tier that misses nothing is fastest */
    tune_sample noisy_small = {.tokens = 10, .decode_s = 10, .stall_s = 8, .misses = 1000};
    tune_sample noisy_large = {.tokens = 10, .decode_s = 4, .stall_s = 3, .misses = 500};
    c = tune_calibrate(&noisy_small, &noisy_large);
    cr_expect_float_eq(c.stall_per_miss_s, 0.008, 1e-9, "per miss %g", c.stall_per_miss_s);
    cr_expect_float_eq(c.compute_s, 0.1, 1e-9, "compute %g", c.compute_s);
}

/* a trace of `tokens` steps over 2 layers of 16 experts, top 2, in a rotating pattern */
static void small_trace(routing_trace *t, int tokens)
{
    errbuf e;
    cr_assert_eq(trace_init(t, 2, 16, 2, 0, 0, &e), 0, "%s", e.msg);
    for (int k = 0; k < tokens; k++)
        for (uint16_t l = 0; l < 2; l++) {
            uint16_t x[2] = {(uint16_t)((k * 3 + l) % 16), (uint16_t)((k * 5 + 7 * l + 1) % 16)};
            if (x[0] == x[1])
                x[1] = (uint16_t)((x[1] + 1) % 16);
            cr_assert_eq(trace_append(t, 0, (uint32_t)k, l, x, NULL, &e), 0, "%s", e.msg);
        }
}

Test(tune, predictions_follow_the_replay)
{
    routing_trace t;
    small_trace(&t, 200);
    cr_expect_eq(tune_trace_tokens(&t), 200);
    tune_calibration c = {.compute_s = 0.01, .stall_per_miss_s = 0.002};
    tune_point p[4] = {{.slots = 2}, {.slots = 8}, {.slots = 20}, {.slots = 32}};
    errbuf e;
    cr_assert_eq(tune_predict(&t, "lru", &c, 32, p, 4, &e), 0, "%s", e.msg);
    for (int i = 0; i < 4; i++) {
        /* misses from an LRU written apart from the replay; every expert fits at 32 */
        uint64_t misses = p[i].slots >= 32
                              ? 0 : t.n * t.top_k - reference_lru_hits(&t, p[i].slots, 1,
                                                                          SIM_HITS_FIRST);
        cr_expect_float_eq(p[i].misses_per_token, misses / 200.0, 1e-12, "point %d: %g misses "
                           "per token, want %g", i, p[i].misses_per_token, misses / 200.0);
        double want = 1.0 / (0.01 + misses / 200.0 * 0.002);
        cr_expect_float_eq(p[i].tokens_per_s, want, 1e-9, "point %d", i);
        cr_expect(p[i].hit_rate >= 0 && p[i].hit_rate <= 1);
        if (i)  /* LRU is a stack policy: a larger cache never misses more */
            cr_expect_leq(p[i].misses_per_token, p[i - 1].misses_per_token, "point %d", i);
    }
    cr_expect_eq(p[3].misses_per_token, 0, "a tier of every expert is filled at start");
    cr_expect_float_eq(p[3].hit_rate, 1.0, 1e-12);
    cr_expect_gt(p[2].misses_per_token, 0, "20 of 32 slots: the first touches still miss");
    trace_free(&t);
    routing_trace empty;
    cr_assert_eq(trace_init(&empty, 2, 16, 2, 0, 0, &e), 0, "%s", e.msg);
    cr_expect_neq(tune_predict(&empty, "lru", &c, 32, p, 4, &e), 0, "an empty trace predicts");
    trace_free(&empty);
}

Test(tune, recommendation_is_the_knee_within_the_memory)
{
    tune_point p[5] = {{.slots = 10, .tokens_per_s = 5},  {.slots = 20, .tokens_per_s = 8},
                       {.slots = 40, .tokens_per_s = 9.2}, {.slots = 80, .tokens_per_s = 10},
                       {.slots = 160, .tokens_per_s = 30}};
    cr_expect_eq(tune_recommend(p, 5, 80, 0.10), 2, "the smallest within 10%% of 10 tok/s");
    cr_expect_eq(tune_recommend(p, 5, 1000, 0.10), 4, "everything fits: the fastest");
    cr_expect_eq(tune_recommend(p, 5, 30, 0.10), 1);
    cr_expect_eq(tune_recommend(p, 5, 5, 0.10), -1, "nothing fits");
}

Test(tune, plot_is_svg_with_both_curves)
{
    char *dir = test_make_tmpdir("tuneplot");
    char path[4200];
    snprintf(path, sizeof path, "%s/plot.svg", dir);
    tune_point p[3] = {{.slots = 8, .gb = 0.1, .hit_rate = 0.2, .tokens_per_s = 3},
                       {.slots = 16, .gb = 0.2, .hit_rate = 0.5, .tokens_per_s = 5},
                       {.slots = 32, .gb = 0.4, .hit_rate = 0.9, .tokens_per_s = 9}};
    errbuf e;
    cr_assert_eq(tune_write_svg(path, "a <model> & more", p, 3, 1, 5.5, &e), 0, "%s", e.msg);
    size_t n;
    char *s = test_read_file(path, &n);
    cr_assert_not_null(s);
    cr_expect(strncmp(s, "<svg ", 5) == 0 && strstr(s, "</svg>"), "not an svg document");
    int lines = 0;
    for (const char *q = s; (q = strstr(q, "<polyline")); q++)
        lines++;
    cr_expect_eq(lines, 2, "%d curves", lines);
    cr_expect(strstr(s, "a &lt;model&gt; &amp; more"), "the title is not escaped");
    cr_expect(strstr(s, "recommended 0.2 GB") && strstr(s, "measured 5.5 tok/s"));
    free(s);
    cr_expect_neq(tune_write_svg("/nonexistent-dir/x.svg", "t", p, 3, -1, 0, &e), 0);
    cr_expect(strstr(e.msg, "/nonexistent-dir/x.svg"), "error does not name the file: %s", e.msg);
    test_remove_tree(dir);
    free(dir);
}

Test(tune, command_predicts_and_checks, .timeout = 300)
{
    const char *bin = test_moetier_bin();
    char *dir = test_make_tmpdir("tunecmd");
    char model[4200], cmd[13000], svg[4300];
    snprintf(model, sizeof model, "%s/model", dir);
    snprintf(svg, sizeof svg, "%s/tune.svg", dir);
    test_synth_tiny(model, "int4");
    char *out = NULL, *err = NULL;
    /* without a store it says what to do */
    snprintf(cmd, sizeof cmd, "%s tune -m %s --svg %s", bin, model, svg);
    cr_expect_neq(test_run_capture(cmd, &out, &err), 0);
    cr_expect(strstr(err, "moetier convert"), "no hint to convert: %s", err);
    free(out);
    free(err);
    snprintf(cmd, sizeof cmd, "%s convert -m %s", bin, model);
    cr_assert_eq(test_run_capture(cmd, &out, &err), 0, "convert: %s", err);
    free(out);
    free(err);
    snprintf(cmd, sizeof cmd, "%s tune -m %s --tokens 12 --json --svg %s -t 1", bin, model, svg);
    cr_assert_eq(test_run_capture(cmd, &out, &err), 0, "tune failed: %s", err);
    int points = 0, summary = 0;
    for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n")) {
        cJSON *j = cJSON_Parse(line);
        cr_assert_not_null(j, "not JSON: %s", line);
        if (cJSON_GetObjectItem(j, "slots")) {
            points++;
            double hr = cJSON_GetObjectItem(j, "hit_rate")->valuedouble;
            cr_expect(hr >= 0 && hr <= 1, "hit rate %g", hr);
            cr_expect_gt(cJSON_GetObjectItem(j, "predicted_tok_s")->valuedouble, 0);
        } else {
            summary++;
            cr_expect_gt(cJSON_GetObjectItem(j, "ram_read_gbps")->valuedouble, 0);
            cr_expect_gt(cJSON_GetObjectItem(j, "store_read_gbps")->valuedouble, 0);
            cJSON *p = cJSON_GetObjectItem(j, "predicted_tok_s");
            cJSON *m = cJSON_GetObjectItem(j, "measured_tok_s");
            cr_assert(p && m, "no prediction or measurement at the recommended size: %s", line);
            cr_expect_gt(m->valuedouble, 0);
            cr_log_info("recommended %.3f GB: predicted %.1f tok/s, measured %.1f",
                        cJSON_GetObjectItem(j, "recommended_dram_gb")->valuedouble, p->valuedouble,
                        m->valuedouble);
            /* the budget recommended, given to --dram-gb, holds the experts it names */
            char plan[4400], *pout, *perr, want[64];
            snprintf(plan, sizeof plan, "%s inspect -m %s --dram-gb %.17g", bin, model,
                     cJSON_GetObjectItem(j, "recommended_dram_gb")->valuedouble);
            cr_assert_eq(test_run_capture(plan, &pout, &perr), 0, "%s", perr);
            snprintf(want, sizeof want, " %d of ", cJSON_GetObjectItem(j, "recommended_experts")->valueint);
            cr_expect(strstr(pout, want) || strstr(perr, want), "%s: %s%s", want, pout, perr);
            free(pout);
            free(perr);
        }
        cJSON_Delete(j);
    }
    cr_expect_geq(points, 3, "%d budgets", points);
    cr_expect_eq(summary, 1);
    cr_expect(test_path_exists(svg), "no plot at %s", svg);
    free(out);
    free(err);
    /* a trace of another model (16 experts a layer, not 32) or none at all is
     * refused before anything is measured */
    char other[4300];
    snprintf(other, sizeof other, "%s/other", dir);
    snprintf(cmd, sizeof cmd, "%s synth -o %s --set n_routed_experts=16 >/dev/null 2>&1 && %s run "
             "-m %s --ids 1,2 -n 2 --trace %s/other.trace", bin, other, bin, other, dir);
    cr_assert_eq(test_run_capture(cmd, &out, &err), 0, "%s", err);
    free(out);
    free(err);
    const char *traces[] = {"other.trace", "missing.trace"}, *says[] = {"16 experts", "missing"};
    for (int i = 0; i < 2; i++) {
        snprintf(cmd, sizeof cmd, "%s tune -m %s --trace %s/%s --svg %s -t 1", bin, model, dir,
                 traces[i], svg);
        cr_expect_eq(test_run_capture(cmd, &out, &err), 1, "%s", err);
        cr_expect(strstr(err, says[i]) && !strstr(err, "measuring"), "%s", err);
        free(out);
        free(err);
    }
    /* so are a budget below one token's experts and a plot that cannot be
     * written (both used to fail after the measurements), and a GPU backend
     * (whose threads the CPU's measurements read) */
    struct {
        const char *args;
        int status;
        const char *says;
    } early[] = {{"--backend cuda --svg /dev/null", 2, "--backend cuda is not taken"},
                 {"--budgets 0.00001,1 --svg /dev/null", 2, "fewer than the 8 one token uses"},
                 /* (1e9 GB's slots passed an int: it was the size refused, holding -2^31) */
                 {"--budgets 1e9,0.00001 --svg /dev/null", 2, "1e-05 GB holds 0 experts"},
                 {"--svg /nonexistent-dir/t.svg", 1, "/nonexistent-dir/t.svg"},
                 {"--svg MODEL/config.json", 1, "is the checkpoint's config.json"}};
    for (size_t i = 0; i < sizeof early / sizeof *early; i++) {
        char args[4400];
        const char *at = strstr(early[i].args, "MODEL");
        if (at)
            snprintf(args, sizeof args, "%.*s%s%s", (int)(at - early[i].args), early[i].args, model,
                     at + 5);
        else
            snprintf(args, sizeof args, "%s", early[i].args);
        snprintf(cmd, sizeof cmd, "%s tune -m %s %s -t 1", bin, model, args);
        cr_expect_eq(test_run_capture(cmd, &out, &err), early[i].status, "%s: %s", args, err);
        cr_expect(strstr(err, early[i].says) && !strstr(err, "measuring"), "%s: %s", args, err);
        free(out);
        free(err);
    }
    /* the default plot's name over a file of the user's: left as it is (it was
     * replaced without a flag naming it) */
    snprintf(cmd, sizeof cmd, "cd %s && echo mine > tune.svg && %s tune -m %s -t 1; s=$?; "
             "grep -qx mine tune.svg && exit $s", dir, bin, model);
    cr_expect_eq(test_run_capture(cmd, &out, &err), 1, "%s", err);
    cr_expect(strstr(err, "tune.svg is there and is not a plot of moetier tune's") &&
              !strstr(err, "measuring"), "%s", err);
    free(out);
    free(err);
    test_remove_tree(dir);
    free(dir);
}

/* The largest size tune tries is what the automatic budget leaves beside the
 * KV cache of -c positions: a machine (faked) whose free memory holds 60
 * experts beside the dense weights, and a cache of 25 experts' bytes. */
Test(tune, the_sizes_leave_the_kv_cache, .timeout = 300)
{
    const char *bin = test_moetier_bin();
    char *dir = test_make_tmpdir("tunekv");
    char model[4200], cmd[9000], meminfo[4300];
    snprintf(model, sizeof model, "%s/model", dir);
    test_synth_tiny(model, "int4");
    char *out = NULL, *err = NULL;
    snprintf(cmd, sizeof cmd, "%s convert -m %s", bin, model);
    cr_assert_eq(test_run_capture(cmd, &out, &err), 0, "convert: %s", err);
    free(out);
    free(err);
    cli_model m;
    model_flags f = {.dir = model, .ctx = 8, .quiet = 1};
    errbuf e;
    cr_assert_eq(cli_model_open(&m, &f, &e), 0, "%s", e.msg);
    uint64_t dense = m.plan.dense_bytes, slot = m.plan.slot_bytes;
    const model_config *c = &m.mw.cfg;
    uint64_t per_position = (uint64_t)c->n_layers * (uint64_t)(c->kv_lora_rank + c->qk_rope_dim) * 4;
    cli_model_close(&m);
    snprintf(meminfo, sizeof meminfo, "%s/meminfo", dir);
    FILE *mf = fopen(meminfo, "w");
    cr_assert_not_null(mf);
    fprintf(mf, "MemTotal: %llu kB\nMemAvailable: %llu kB\n", 1ull << 30,
            (unsigned long long)((dense + 60 * slot) / 0.85 / 1024 + 1));
    fclose(mf);
    setenv("MOETIER_MEMINFO", meminfo, 1);
    int ctx = (int)(25 * slot / per_position);
    snprintf(cmd, sizeof cmd, "%s tune -m %s --tokens 4 --no-check --json --svg /dev/null -t 1 -c %d",
             bin, model, ctx);
    cr_assert_eq(test_run_capture(cmd, &out, &err), 0, "tune: %s", err);
    unsetenv("MOETIER_MEMINFO");
    cr_expect(strstr(err, "the sizes stop short of") && strstr(err, "for the KV cache"), "%s", err);
    /* its second calibration runs at the largest size */
    const char *at = strstr(err, "calibrating:");
    at = at ? strstr(at + 1, "calibrating:") : NULL;
    int steps = 0, slots = 0, all = 0;
    cr_assert(at && sscanf(at, "calibrating: %d decode steps with %d of %d experts", &steps, &slots,
                           &all) == 3, "%s", err);
    cr_expect(slots == 35 || slots == 34, "the largest size holds %d experts (60 less 25)", slots);
    free(out);
    free(err);
    test_remove_tree(dir);
    free(dir);
}
