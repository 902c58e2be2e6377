/* `moetier perplexity`: its figure against one computed here from logits it
 * did not produce: the reference implementation's golden logits (prompt and
 * teacher-forced decode), and `moetier logits` run window by window on a
 * synthetic model (several windows, with BOS in their first place or not, one
 * scored in two steps, a last partial window left out); its errors. Scored,
 * as in llama.cpp: the tokens C/2 + 1 .. C - 1 of each window of C. */
#include <cJSON.h>
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/text/tokenizer.h"
#include "testutil.h"

/* a command line, printf-formatted: its exit status, stdout and stderr */
#define run test_run_fmt


/* Sums -log softmax(row)[target] over n rows, in double. */
static double nll_sum(const float *rows, int n, int V, const int *targets)
{
    double total = 0;
    for (int t = 0; t < n; t++) {
        const float *r = rows + (size_t)t * (size_t)V;
        double max = r[0], sum = 0;
        for (int v = 1; v < V; v++)
            max = r[v] > max ? r[v] : max;
        for (int v = 0; v < V; v++)
            sum += exp(r[v] - max);
        total += log(sum) + max - r[targets[t]];
    }
    return total;
}

static char *ids_list(const int *ids, int n)
{
    char *s = malloc((size_t)n * 12 + 1);
    size_t at = 0;
    for (int i = 0; i < n; i++)
        at += (size_t)sprintf(s + at, "%s%d", i ? "," : "", ids[i]);
    s[at] = 0;
    return s;
}

static double json_number(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    cr_assert(cJSON_IsNumber(v), "no number '%s'", key);
    return v->valuedouble;
}

/* The golden sequence (prompt, then the greedy ids fed back) as one window:
 * the positions scored have golden logits (prefill rows, then decode rows),
 * and the mean NLL may differ only by what the fp32 tolerance allows each
 * logit (max |diff| 1e-3 std, so twice that for a log-softmax entry). */
static void golden_case(const char *variant)
{
    char *dir = test_testdata_model_or_skip(variant);
    char path[4300];
    size_t n_prompt_b, n_gen_b, n_pre_b, n_dec_b;
    snprintf(path, sizeof path, "%s/golden/prompt_ids.i32.bin", dir);
    int *prompt = test_read_file(path, &n_prompt_b);
    snprintf(path, sizeof path, "%s/golden/generated_ids.i32.bin", dir);
    int *gen = test_read_file(path, &n_gen_b);
    snprintf(path, sizeof path, "%s/golden/prefill_logits.f32.bin", dir);
    float *pre = test_read_file(path, &n_pre_b);
    snprintf(path, sizeof path, "%s/golden/decode_logits.f32.bin", dir);
    float *dec = test_read_file(path, &n_dec_b);
    cr_assert(prompt && gen && pre && dec, "golden files of %s", variant);
    int T = (int)(n_prompt_b / 4), G = (int)(n_gen_b / 4), V = (int)(n_pre_b / 4 / (size_t)T);
    cr_assert_eq(n_dec_b, (size_t)G * (size_t)V * 4);
    /* logits of positions 0..T+G-2: prefill rows, then decode rows 1.. (row 0
     * repeats the last prefill row) */
    int S = T + G;
    int *seq = malloc((size_t)S * sizeof *seq);
    float *logits = malloc((size_t)(S - 1) * (size_t)V * sizeof *logits);
    memcpy(seq, prompt, (size_t)T * sizeof *seq);
    memcpy(seq + T, gen, (size_t)G * sizeof *seq);
    memcpy(logits, pre, (size_t)T * (size_t)V * sizeof *logits);
    memcpy(logits + (size_t)T * (size_t)V, dec + V, (size_t)(G - 1) * (size_t)V * sizeof *logits);
    int first = S / 2, scored = S - 1 - first;
    double want = nll_sum(logits + (size_t)first * (size_t)V, scored, V, seq + first + 1) / scored;
    double mean = 0, var = 0;
    size_t n = (size_t)(S - 1) * (size_t)V;
    for (size_t i = 0; i < n; i++)
        mean += logits[i];
    mean /= (double)n;
    for (size_t i = 0; i < n; i++)
        var += (logits[i] - mean) * (logits[i] - mean);
    double tol = 2 * 1e-3 * sqrt(var / (double)n);

    char *ids = ids_list(seq, S), *out, *err;
    cr_assert_eq(run(&out, &err, "%s perplexity -m %s --ids %s -c %d --json", test_moetier_bin(),
                     dir, ids, S), 0, "%s", err);
    cJSON *o = cJSON_Parse(out);
    cr_assert_not_null(o, "not JSON: %s", out);
    double got = json_number(o, "mean_nll");
    cr_expect(fabs(got - want) <= tol,
              "%s: mean NLL %.6f, from the golden logits %.6f (tolerance %.2g)", variant, got, want,
              tol);
    cr_expect(fabs(json_number(o, "perplexity") - exp(got)) <= 1e-9 * exp(got));
    cr_expect_eq(json_number(o, "tokens_scored"), scored);
    cr_expect_eq(json_number(o, "windows"), 1);
    cr_expect_eq(json_number(o, "tokens_left_out"), 0);
    cJSON_Delete(o);
    free(out);
    free(err);
    free(ids);
    free(seq);
    free(logits);
    free(prompt);
    free(gen);
    free(pre);
    free(dec);
    free(dir);
}

Test(perplexity, golden_bf16_matches_the_reference_logits, .timeout = 60)
{
    golden_case("bf16");
}

Test(perplexity, golden_fp8_matches_the_reference_logits, .timeout = 60)
{
    golden_case("fp8");
}

Test(perplexity, golden_int4_matches_the_reference_logits, .timeout = 60)
{
    golden_case("int4");
}

/* Text of about n_words pseudo-random words. */
static char *some_text(int n_words)
{
    static const char *words[] = {"the", "expert", "cache", "holds", "routed", "weights", "while",
                                  "a", "token", "waits", "for", "its", "layer", "on", "NVMe",
                                  "and", "GPU", "memory", "of", "one", "machine."};
    size_t n_list = sizeof words / sizeof *words, at = 0;
    char *s = malloc((size_t)n_words * 16 + 1);
    unsigned x = 12345;
    for (int i = 0; i < n_words; i++) {
        x = x * 1103515245u + 12345u;
        at += (size_t)sprintf(s + at, "%s%s", i ? " " : "", words[(x >> 16) % n_list]);
    }
    s[at] = 0;
    return s;
}

/* Each window's figure from `moetier logits` on that window alone. */
static void windows_case(const char *tag, int n_words, int C, int min_windows, int bos)
{
    char *tmp = test_make_tmpdir(tag), model[4300], text_path[4300], logits_path[4300];
    snprintf(model, sizeof model, "%s/model", tmp);
    snprintf(text_path, sizeof text_path, "%s/text.txt", tmp);
    snprintf(logits_path, sizeof logits_path, "%s/window.f32", tmp);
    test_synth_tiny(model, "int4");
    char *text = some_text(n_words);
    FILE *f = fopen(text_path, "w");
    cr_assert_not_null(f);
    fputs(text, f);
    fclose(f);
    tokenizer tok;
    token_list l = {0};
    errbuf e;
    cr_assert_eq(tokenizer_load(&tok, model, &e), 0, "%s", e.msg);
    cr_assert_eq(tokenizer_encode(&tok, text, strlen(text), 0, &l, &e), 0, "%s", e.msg);
    tokenizer_free(&tok);
    int windows = (int)l.n / C, first = C / 2;
    cr_assert(windows >= min_windows, "the text gave %zu tokens", l.n);
    cr_assert(min_windows == 1 || l.n % (size_t)C, "no partial window is left out");
    double total = 0;
    long scored = 0;
    int bos_id = -1;
    if (bos) {
        char cfg_path[4400];
        snprintf(cfg_path, sizeof cfg_path, "%s/config.json", model);
        char *cfg_text = test_read_file(cfg_path, NULL);
        cJSON *cfg = cJSON_Parse(cfg_text);
        cr_assert(cJSON_IsNumber(cJSON_GetObjectItem(cfg, "bos_token_id")), "%s", cfg_text);
        bos_id = cJSON_GetObjectItem(cfg, "bos_token_id")->valueint;
        cJSON_Delete(cfg);
        free(cfg_text);
    }
    for (int w = 0; w < windows; w++) {
        int *ids = l.ids + (size_t)w * (size_t)C;
        if (bos)
            ids[0] = bos_id;
        char *list = ids_list(ids, C), *out, *err;
        cr_assert_eq(run(&out, &err, "%s logits -m %s --ids %s -o %s", test_moetier_bin(), model,
                         list, logits_path), 0, "%s", err);
        size_t nb;
        float *rows = test_read_file(logits_path, &nb);
        int V = (int)(nb / 4 / (size_t)C);
        total += nll_sum(rows + (size_t)first * (size_t)V, C - 1 - first, V, ids + first + 1);
        scored += C - 1 - first;
        free(rows);
        free(list);
        free(out);
        free(err);
    }
    char *out, *err;
    cr_assert_eq(run(&out, &err, "%s perplexity -m %s -f %s -c %d --json%s", test_moetier_bin(),
                     model, text_path, C, bos ? " --bos" : ""), 0, "%s", err);
    cJSON *o = cJSON_Parse(out);
    cr_assert_not_null(o, "not JSON: %s", out);
    double want = total / (double)scored, got = json_number(o, "mean_nll");
    /* the same engine, but the command runs each window in two or more calls */
    cr_expect(fabs(got - want) <= 1e-4, "mean NLL %.8f, from `logits` %.8f", got, want);
    cr_expect_eq(json_number(o, "tokens_scored"), scored);
    cr_expect_eq(json_number(o, "windows"), windows);
    cr_expect_eq(json_number(o, "window"), C);
    cr_expect_eq(json_number(o, "tokens"), (double)l.n);
    cr_expect_eq(json_number(o, "tokens_left_out"), (double)l.n - windows * C);
    cr_expect(json_number(o, "perplexity_error") > 0);
    cr_expect(strstr(err, "perplexity: ") && strstr(err, "[1/"), "no progress on stderr: %s", err);
    /* every token fed is prefill, a last step of one row too */
    char want_prefill[64];
    snprintf(want_prefill, sizeof want_prefill, "prefill: %d tokens", windows * (C - 1));
    cr_expect(strstr(err, want_prefill) != NULL, "want '%s': %s", want_prefill, err);
    cJSON_Delete(o);
    free(out);
    free(err);
    /* the same figure without --json, as text on stdout; --trace records each
     * window as a stream of its own (positions start again in each) */
    cr_assert_eq(run(&out, &err, "%s perplexity -m %s -f %s -c %d%s --trace %s/p.trace", test_moetier_bin(),
                     model, text_path, C, bos ? " --bos" : "", tmp), 0, "%s", err);
    char *stats_out, *stats_err, want_streams[64];
    cr_assert_eq(run(&stats_out, &stats_err, "%s trace stats %s/p.trace", test_moetier_bin(), tmp), 0, "%s",
                 stats_err);
    snprintf(want_streams, sizeof want_streams, "(%d tokens in %d streams)", windows * (C - 1), windows);
    cr_expect(strstr(stats_out, want_streams) != NULL, "want '%s': %s", want_streams, stats_out);
    free(stats_out);
    free(stats_err);
    char want_text[64];
    snprintf(want_text, sizeof want_text, "perplexity: %.4f +/- ", exp(got));
    cr_expect(strncmp(out, want_text, strlen(want_text)) == 0, "%s (want %s)", out, want_text);
    free(out);
    free(err);
    token_list_free(&l);
    free(text);
    test_remove_tree(tmp);
    free(tmp);
}

Test(perplexity, windows_match_logits_run_window_by_window, .timeout = 120)
{
    windows_case("ppl-windows", 60, 17, 4, 0);
}

Test(perplexity, bos_takes_each_windows_first_place, .timeout = 120)
{
    windows_case("ppl-bos", 60, 17, 4, 1);
}

/* 1,028 tokens: the 513 scored are computed in two steps (512 rows at most),
 * the last of one row */
Test(perplexity, a_long_window_is_scored_in_steps, .timeout = 180)
{
    windows_case("ppl-long", 600, 1028, 1, 0);
}

Test(perplexity, bad_arguments_are_refused, .timeout = 60)
{
    char *tmp = test_make_tmpdir("ppl-bad"), model[4300], text_path[4300];
    snprintf(model, sizeof model, "%s/model", tmp);
    snprintf(text_path, sizeof text_path, "%s/short.txt", tmp);
    test_synth_tiny(model, "int4");
    FILE *f = fopen(text_path, "w");
    cr_assert_not_null(f);
    fputs("a few words", f);
    fclose(f);
    struct {
        const char *args;
        int status;
        const char *says;
    } cases[] = {
        {"", 2, "one of -f and --ids"},
        {"--ids 1,2,3 -f FILE", 2, "one of -f and --ids"},
        {"--ids 1,2,3,4 -c 2", 2, "at least 3"},
        {"--ids 1,2,3 --frob", 2, "unknown option '--frob'"},
        {"-f FILE -c 64", 1, "fewer than one window of 64"},
        {"-f /nonexistent/text.txt", 1, "/nonexistent/text.txt"},
        {"--ids 1,2,999999 -c 3", 1, "999999"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char args[4400], *out, *err;
        const char *at = strstr(cases[i].args, "FILE");
        if (at)
            snprintf(args, sizeof args, "%.*s%s%s", (int)(at - cases[i].args), cases[i].args,
                     text_path, at + 4);
        else
            snprintf(args, sizeof args, "%s", cases[i].args);
        int rc = run(&out, &err, "%s perplexity -m %s %s", test_moetier_bin(), model, args);
        cr_expect_eq(rc, cases[i].status, "%s: status %d: %s", args, rc, err);
        cr_expect(strstr(err, cases[i].says) != NULL, "%s: %s", args, err);
        cr_expect_eq(out[0], 0, "%s printed on stdout: %s", args, out);
        free(out);
        free(err);
    }
    test_remove_tree(tmp);
    free(tmp);
}

/* Tokens are checked where they are fed or scored: an id past the vocabulary
 * after the last window is left out with the rest of the tail. A text whose
 * tokenizer gives ids past the model's vocabulary names the tokenizer, not
 * --ids (Kimi's tokenizer in a k2-tiny checkpoint's directory). */
Test(perplexity, token_ids_are_checked_where_they_are_used, .timeout = 60)
{
    char *tmp = test_make_tmpdir("ppl-ids"), model[4300], text_path[4300];
    snprintf(model, sizeof model, "%s/model", tmp);
    snprintf(text_path, sizeof text_path, "%s/text.txt", tmp);
    test_synth_tiny(model, "int4");
    char *out, *err;
    int rc = run(&out, &err, "%s perplexity -m %s --ids 1,2,3,999999 -c 3", test_moetier_bin(), model);
    cr_expect_eq(rc, 0, "an id after the last window: %s", err);
    free(out);
    free(err);

    /* a bos_token_id past the vocabulary is said where --bos uses it; the
     * model opens for everything else */
    char cfg_path[4400];
    snprintf(cfg_path, sizeof cfg_path, "%s/config.json", model);
    cJSON *cfg = test_read_json(cfg_path);
    cJSON_ReplaceItemInObject(cfg, "bos_token_id", cJSON_CreateNumber(5000));
    char *cfg_text = cJSON_Print(cfg);
    test_write_file(cfg_path, cfg_text, strlen(cfg_text));
    free(cfg_text);
    cJSON_Delete(cfg);
    rc = run(&out, &err, "%s perplexity -m %s --ids 1,2,3,4 -c 3 --bos", test_moetier_bin(), model);
    cr_expect_eq(rc, 1, "%s", err);
    cr_expect(strstr(err, "--bos") && strstr(err, "bos_token_id 5000 is outside the vocabulary"),
              "%s", err);
    free(out);
    free(err);
    rc = run(&out, &err, "%s perplexity -m %s --ids 1,2,3,4 -c 3", test_moetier_bin(), model);
    cr_expect_eq(rc, 0, "without --bos: %s", err);
    free(out);
    free(err);

    char *kimi = test_data_path("kimi-tokenizer");
    if (!test_path_exists(kimi)) {
        free(kimi);
        test_remove_tree(tmp);
        free(tmp);
        cr_skip_test("%s is absent: the tokenizer half of this test needs Kimi's tokenizer", kimi);
    }
    rc = run(&out, &err, "cp %s/tiktoken.model %s/tokenizer_config.json %s/", kimi, kimi, model);
    cr_assert_eq(rc, 0, "%s", err);
    free(out);
    free(err);
    char *text = some_text(200);
    test_write_file(text_path, text, strlen(text));
    rc = run(&out, &err, "%s perplexity -m %s -f %s -c 16", test_moetier_bin(), model, text_path);
    cr_expect_eq(rc, 1, "%s", err);
    cr_expect(strstr(err, text_path) && strstr(err, "tokenizer files are not this checkpoint's") &&
              !strstr(err, "--ids"), "%s", err);
    free(out);
    free(err);
    free(text);
    free(kimi);
    test_remove_tree(tmp);
    free(tmp);
}
