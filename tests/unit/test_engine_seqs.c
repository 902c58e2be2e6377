/* Several sequences stepped at once (engine_decode_seqs): three conversations
 * of different lengths, prefilled one after another through engine_seq_swap,
 * then decoded together (the engine's own one of them) give each the logits
 * of that conversation run alone, bit for bit on the CPU backend (its kernels
 * give each row the same bits for any count of rows below
 * LINEAR_BATCHED_MIN_T) and on the CUDA backend (on a device or the
 * emulation; within the strict tolerance of the CPU); a step of more
 * sequences than the engine's chunk, or than the CPU's row kernels take,
 * goes in parts with the same bits; so do several rows of a sequence (a
 * token and guesses after it); bad
 * steps are refused before anything runs, and a step whose expert read fails
 * says why. */
#include <cJSON.h>
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "core/app/cli_common.h"
#include "core/base/progress.h"
#include "testutil.h"

#define N_SEQS 3
#define MAX_SEQS 20
#define STEPS 4
#define CTX 64

static int prompt_length(int s)
{
    static const int len[3] = {11, 5, 17};
    return len[s % 3] + s / 3;
}

static int prompt_id(int s, int i, int V)
{
    return (i * 37 + s * 101 + 5) % V;
}

static int step_id(int s, int k, int V)
{
    return (k * 53 + s * 17 + 2) % V;
}

/* conversation s's prompt into ids; returns its length */
static int prompt_ids(int s, int V, int *ids)
{
    for (int i = 0; i < prompt_length(s); i++)
        ids[i] = prompt_id(s, i, V);
    return prompt_length(s);
}

/* the cache type of the models the test opens (each test runs in its own process) */
static kv_type cache_type = KV_F32;

static void open_model(cli_model *m, const char *dir, int chunk)
{
    model_flags f = {.dir = dir, .ctx = CTX, .chunk = chunk, .quiet = 1, .cache_type = cache_type};
    errbuf e;
    cr_assert_eq(cli_model_open(m, &f, &e), 0, "%s", e.msg);
}

/* conversation s's prompt, from nothing, into q (NULL: the engine's own) */
static void prefill(engine *en, engine_seq *q, int s)
{
    int ids[32], n = prompt_ids(s, en->cfg->vocab_size, ids);
    errbuf e;
    if (q)
        engine_seq_swap(en, q);
    engine_reset(en);
    int rc = engine_forward(en, ids, n, NULL, 0, &e);
    if (q)
        engine_seq_swap(en, q);
    cr_assert_eq(rc, 0, "%s", e.msg);
}

/* [n][STEPS][vocab]: each of n conversations alone, its steps one at a time */
static float *alone_n(const char *dir, int chunk, int n)
{
    cli_model m;
    open_model(&m, dir, chunk);
    size_t V = (size_t)m.mw.cfg.vocab_size;
    float *out = malloc(n * STEPS * V * sizeof *out);
    cr_assert_not_null(out);
    errbuf e;
    for (int s = 0; s < n; s++) {
        prefill(&m.en, NULL, s);
        for (int k = 0; k < STEPS; k++)
            cr_assert_eq(engine_decode(&m.en, step_id(s, k, (int)V), out + (s * STEPS + k) * V, &e),
                         0, "%s", e.msg);
    }
    cli_model_close(&m);
    return out;
}

static float *alone(const char *dir, int chunk)
{
    return alone_n(dir, chunk, N_SEQS);
}

/* the same, the conversations stepped together: the engine's own is the
 * sequence at `own` of the step, the others engine_seqs */
static float *together_n(const char *dir, int chunk, int own, int n)
{
    cli_model m;
    open_model(&m, dir, chunk);
    size_t V = (size_t)m.mw.cfg.vocab_size;
    engine_seq seqs[MAX_SEQS];
    engine_seq *step[MAX_SEQS];
    errbuf e;
    for (int s = 0; s < n; s++) {
        cr_assert_eq(engine_seq_create(&m.en, &seqs[s], &e), 0, "%s", e.msg);
        step[s] = s == own ? NULL : &seqs[s];
        prefill(&m.en, step[s], s);
    }
    float *out = malloc(n * STEPS * V * sizeof *out);
    float *rows = malloc(n * V * sizeof *rows);
    cr_assert(out && rows);
    for (int k = 0; k < STEPS; k++) {
        int ids[MAX_SEQS];
        for (int s = 0; s < n; s++)
            ids[s] = step_id(s, k, (int)V);
        cr_assert_eq(engine_decode_seqs(&m.en, step, ids, n, rows, NULL, &e), 0, "%s", e.msg);
        for (int s = 0; s < n; s++)
            memcpy(out + (s * STEPS + k) * V, rows + s * V, V * sizeof *rows);
    }
    for (int s = 0; s < n; s++) {
        const engine_seq *q = s == own ? NULL : &seqs[s];
        int n_past = q ? q->n_past : m.en.n_past;
        cr_expect_eq(n_past, prompt_length(s) + STEPS, "sequence %d holds %d positions", s, n_past);
    }
    cr_expect_eq(m.en.stats.tokens_decoded, (uint64_t)(n * STEPS));
    for (int s = 0; s < n; s++)
        engine_seq_destroy(&seqs[s]);
    free(rows);
    cli_model_close(&m);
    return out;
}

static float *together(const char *dir, int chunk, int own)
{
    return together_n(dir, chunk, own, N_SEQS);
}

static void expect_same_bits_n(const float *want, const float *got, size_t V, int n,
                               const char *what)
{
    for (int s = 0; s < n; s++)
        for (int k = 0; k < STEPS; k++) {
            size_t at = (size_t)(s * STEPS + k) * V;
            cr_expect(memcmp(want + at, got + at, V * sizeof *want) == 0,
                      "%s: sequence %d, step %d differs from the sequence alone", what, s, k);
        }
}

static void expect_same_bits(const float *want, const float *got, size_t V, const char *what)
{
    expect_same_bits_n(want, got, V, N_SEQS, what);
}

static size_t vocab_of(const char *dir)
{
    cli_model m;
    open_model(&m, dir, 8);
    size_t V = (size_t)m.mw.cfg.vocab_size;
    cli_model_close(&m);
    return V;
}

static void bitwise_as_alone(const char *format)
{
    char *dir = test_make_tmpdir("engine_seqs");
    test_synth_tiny(dir, format);
    size_t V = vocab_of(dir);
    float *want = alone(dir, 8);
    for (int own = 0; own < N_SEQS; own++) {
        float *got = together(dir, 8, own);
        char what[64];
        snprintf(what, sizeof what, "%s, the engine's own sequence %d", format, own);
        expect_same_bits(want, got, V, what);
        free(got);
    }
    /* a chunk of 2: the step of 3 goes as 2 + 1 (the prefill in chunks of 2
     * on both sides) */
    free(want);
    want = alone(dir, 2);
    float *got = together(dir, 2, 1);
    expect_same_bits(want, got, V, "a step larger than the chunk");
    free(got);
    free(want);
    test_remove_tree(dir);
    free(dir);
}

Test(engine_seqs, stepped_together_each_as_alone_int4, .timeout = 120) { bitwise_as_alone("int4"); }

/* A step of more sequences than the backend's row kernels give their own
 * bits for (the batched products from LINEAR_BATCHED_MIN_T rows) goes in
 * parts: each of 20 sequences stepped together as alone. */
Test(engine_seqs, a_step_larger_than_the_row_kernels_take_goes_in_parts, .timeout = 300)
{
    char *dir = test_make_tmpdir("engine_seqs_many");
    test_synth_tiny(dir, "bf16");
    size_t V = vocab_of(dir);
    float *want = alone_n(dir, 32, MAX_SEQS), *got = together_n(dir, 32, 4, MAX_SEQS);
    expect_same_bits_n(want, got, V, MAX_SEQS, "20 sequences in a step");
    free(want);
    free(got);
    test_remove_tree(dir);
    free(dir);
}
Test(engine_seqs, stepped_together_each_as_alone_fp8, .timeout = 120) { bitwise_as_alone("fp8"); }
Test(engine_seqs, stepped_together_each_as_alone_bf16, .timeout = 120) { bitwise_as_alone("bf16"); }

/* each sequence's new rows rounded into its own bf16 cache */
Test(engine_seqs, stepped_together_each_as_alone_bf16_cache, .timeout = 120)
{
    cache_type = KV_BF16;
    bitwise_as_alone("int4");
}

/* or quantized into its own q8_0 cache */
Test(engine_seqs, stepped_together_each_as_alone_q8_cache, .timeout = 120)
{
    cache_type = KV_Q8_0;
    bitwise_as_alone("fp8");
}

Test(engine_seqs, stepped_together_on_the_gpu_as_alone_gpu, .timeout = 300)
{
    test_require_gpu();     /* first: a skip leaves no model behind */
    char *dir = test_make_tmpdir("engine_seqs_gpu");
    test_synth_tiny(dir, "int4");
    size_t V = vocab_of(dir);
    unsetenv("MOETIER_BACKEND");
    float *cpu = alone(dir, 8);
    setenv("MOETIER_BACKEND", "cuda", 1);
    float *gpu_alone = alone(dir, 8), *gpu = together(dir, 8, 1);
    expect_same_bits(gpu_alone, gpu, V, "CUDA backend");
    logit_cmp r = test_compare_logits(cpu, gpu, N_SEQS * STEPS, (int)V);
    cr_expect(r.max_over_std <= 1e-3 && r.rms_over_std <= 1e-4 && r.top1_agree == r.rows,
              "GPU together against the CPU alone: max|diff|/std %.3g, rms/std %.3g, top-1 %d/%d",
              r.max_over_std, r.rms_over_std, r.top1_agree, r.rows);
    free(cpu);
    free(gpu_alone);
    free(gpu);
    test_remove_tree(dir);
    free(dir);
}

/* The conversations stepped together with several rows each, as the server
 * steps a token and its guesses: [N_SEQS][STEPS][vocab] as alone. Two steps
 * take each conversation's STEPS tokens (3 + 1, 1 + 3, 2 + 2 rows; the
 * engine's own is the last); the first step also takes a wrong guess after
 * the second conversation's token, dropped after it as the server drops
 * guesses not kept. */
static float *together_guessed(const char *dir, int chunk)
{
    cli_model m;
    open_model(&m, dir, chunk);
    int V = m.mw.cfg.vocab_size;
    engine_seq seqs[N_SEQS - 1];
    engine_seq *q[N_SEQS] = {&seqs[0], &seqs[1], NULL};
    errbuf e;
    for (int s = 0; s < N_SEQS; s++) {
        if (q[s])
            cr_assert_eq(engine_seq_create(&m.en, q[s], &e), 0, "%s", e.msg);
        prefill(&m.en, q[s], s);
    }
    static const int first[N_SEQS] = {3, 1, 2}, wrong = 1;
    float *out = malloc(N_SEQS * STEPS * (size_t)V * sizeof *out);
    float *rows = malloc((N_SEQS * STEPS + 1) * (size_t)V * sizeof *rows);
    cr_assert(out && rows);
    for (int step = 0; step < 2; step++) {
        engine_seq *row_seq[N_SEQS * STEPS + 1];
        int ids[N_SEQS * STEPS + 1], at[N_SEQS], n = 0;
        for (int s = 0; s < N_SEQS; s++) {
            int k0 = step ? first[s] : 0, k1 = step ? STEPS : first[s];
            at[s] = n;
            for (int k = k0; k < k1; k++, n++) {
                row_seq[n] = q[s];
                ids[n] = step_id(s, k, V);
            }
            if (!step && s == wrong) {
                row_seq[n] = q[s];
                ids[n++] = (step_id(s, first[s], V) + 1) % V;
            }
        }
        cr_assert_eq(engine_decode_seqs(&m.en, row_seq, ids, n, rows, NULL, &e), 0, "%s", e.msg);
        for (int s = 0; s < N_SEQS; s++) {
            int k0 = step ? first[s] : 0, k1 = step ? STEPS : first[s];
            memcpy(out + (size_t)(s * STEPS + k0) * V, rows + (size_t)at[s] * V,
                   (size_t)(k1 - k0) * V * sizeof *rows);
        }
        if (!step) {
            engine_seq_swap(&m.en, q[wrong]);
            cr_assert_eq(engine_drop_guesses(&m.en, 1, &e), 0, "%s", e.msg);
            engine_seq_swap(&m.en, q[wrong]);
        }
    }
    for (int s = 0; s < N_SEQS; s++) {
        int n_past = q[s] ? q[s]->n_past : m.en.n_past;
        cr_expect_eq(n_past, prompt_length(s) + STEPS, "sequence %d holds %d positions", s, n_past);
        if (q[s])
            engine_seq_destroy(q[s]);
    }
    cr_expect_eq(m.en.stats.tokens_decoded, (uint64_t)(N_SEQS * STEPS));
    free(rows);
    cli_model_close(&m);
    return out;
}

/* Several rows of a sequence in a step (a token and its guesses,
 * --draft-lookup with several requests decoding) give each row the bits of
 * its token decoded alone; in parts of 2 rows too (chunk 2), which cut
 * sequences' rows apart (`parts`). */
static void guessed_rows_as_alone(const char *format, int parts)
{
    char *dir = test_make_tmpdir("engine_seqs_guessed");
    test_synth_tiny(dir, format);
    size_t V = vocab_of(dir);
    float *want = alone(dir, 8), *got = together_guessed(dir, 8);
    expect_same_bits(want, got, V, "rows of a sequence in a step");
    free(got);
    free(want);
    if (parts) {
        want = alone(dir, 2);
        got = together_guessed(dir, 2);
        expect_same_bits(want, got, V, "rows of a sequence in parts of 2");
        free(got);
        free(want);
    }
    test_remove_tree(dir);
    free(dir);
}

Test(engine_seqs, several_rows_of_a_sequence_each_as_alone_int4, .timeout = 120)
{
    guessed_rows_as_alone("int4", 1);
}
Test(engine_seqs, several_rows_of_a_sequence_each_as_alone_bf16, .timeout = 120)
{
    guessed_rows_as_alone("bf16", 1);
}
/* (the parts are the engine's, the same for both backends) */
Test(engine_seqs, several_rows_of_a_sequence_each_as_alone_gpu, .timeout = 300)
{
    test_require_gpu();
    guessed_rows_as_alone("int4", 0);
}

/* the source of the model under test, failing its gets once `failing` is set */
static int (*real_get)(expert_source *s, int layer, int expert, expert_view *out, errbuf *e);
static int failing;

static int failing_get(expert_source *s, int layer, int expert, expert_view *out, errbuf *e)
{
    if (failing)
        return err_set(e, "layer %d expert %d: injected read error", layer, expert);
    return real_get(s, layer, expert, out, e);
}

/* A step whose expert read fails says so, naming the expert, and leaves the
 * engine usable: the sequences prefilled again, the next step computes each
 * as alone, bit for bit. */
Test(engine_seqs, a_failed_step_says_why_and_leaves_the_engine_usable, .timeout = 120)
{
    char *dir = test_make_tmpdir("engine_seqs_fail");
    test_synth_tiny(dir, "int4");
    size_t V = vocab_of(dir);
    float *want = alone(dir, 8);
    cli_model m;
    open_model(&m, dir, 8);
    real_get = m.src.get;
    m.src.get = failing_get;
    engine_seq seqs[N_SEQS];
    engine_seq *step[N_SEQS];
    errbuf e;
    for (int s = 1; s < N_SEQS; s++)
        cr_assert_eq(engine_seq_create(&m.en, &seqs[s], &e), 0, "%s", e.msg);
    step[0] = NULL;
    for (int s = 1; s < N_SEQS; s++)
        step[s] = &seqs[s];
    float *rows = malloc(N_SEQS * V * sizeof *rows);
    cr_assert_not_null(rows);
    for (int round = 0; round < 2; round++) {
        for (int s = 0; s < N_SEQS; s++)
            prefill(&m.en, step[s], s);
        int ids[N_SEQS];
        for (int s = 0; s < N_SEQS; s++)
            ids[s] = step_id(s, 0, (int)V);
        failing = round == 0;
        int rc = engine_decode_seqs(&m.en, step, ids, N_SEQS, rows, NULL, &e);
        if (round == 0) {
            cr_expect_eq(rc, -1);
            cr_expect(strstr(e.msg, "injected read error") && strstr(e.msg, "layer "), "%s", e.msg);
            failing = 0;
            continue;
        }
        cr_expect_eq(rc, 0, "%s", e.msg);
        for (int s = 0; s < N_SEQS; s++)
            cr_expect(memcmp(rows + s * V, want + (size_t)s * STEPS * V, V * sizeof *rows) == 0,
                      "sequence %d after a failed step differs from it alone", s);
    }
    failing = 0;
    m.src.get = real_get;
    for (int s = 1; s < N_SEQS; s++)
        engine_seq_destroy(&seqs[s]);
    free(rows);
    free(want);
    cli_model_close(&m);
    test_remove_tree(dir);
    free(dir);
}

Test(engine_seqs, bad_steps_are_refused_before_anything_runs, .timeout = 60)
{
    char *dir = test_make_tmpdir("engine_seqs_bad");
    test_synth_tiny(dir, "int4");
    cli_model m;
    open_model(&m, dir, 8);
    int V = m.mw.cfg.vocab_size;
    engine_seq a, b;
    errbuf e;
    cr_assert_eq(engine_seq_create(&m.en, &a, &e), 0, "%s", e.msg);
    cr_assert_eq(engine_seq_create(&m.en, &b, &e), 0, "%s", e.msg);
    prefill(&m.en, NULL, 0);
    float *rows = malloc(3 * (size_t)V * sizeof *rows);
    cr_assert_not_null(rows);
    int ids[3] = {1, 2, 3};
    engine_seq *apart[3] = {&a, &b, &a}, *own_apart[3] = {NULL, &a, NULL}, *ok[3] = {&a, NULL, &b};
    cr_expect_eq(engine_decode_seqs(&m.en, apart, ids, 3, rows, NULL, &e), -1);
    cr_expect(strstr(e.msg, "row 2's sequence is given in rows apart (row 0 too)"), "%s", e.msg);
    cr_expect_eq(engine_decode_seqs(&m.en, own_apart, ids, 3, rows, NULL, &e), -1);
    cr_expect(strstr(e.msg, "row 2's sequence (the engine's own) is given in rows apart (row 0 too)"),
              "%s", e.msg);
    int bad[3] = {1, V, 3};
    cr_expect_eq(engine_decode_seqs(&m.en, ok, bad, 3, rows, NULL, &e), -1);
    cr_expect(strstr(e.msg, "outside the vocabulary"), "%s", e.msg);
    b.n_past = CTX;     /* as if full: its ids and rows are never read */
    cr_expect_eq(engine_decode_seqs(&m.en, ok, ids, 3, rows, NULL, &e), -1);
    cr_expect(strstr(e.msg, "context is full: row 2's sequence holds 64 tokens and takes 1"),
              "%s", e.msg);
    /* a sequence with room for one of its two rows */
    engine_seq *two_rows[3] = {&a, &b, &b};
    b.n_past = CTX - 1;
    cr_expect_eq(engine_decode_seqs(&m.en, two_rows, ids, 3, rows, NULL, &e), -1);
    cr_expect(strstr(e.msg, "context is full: row 2's sequence holds 63 tokens and takes 2"),
              "%s", e.msg);
    b.n_past = CTX;
    cr_expect_eq(engine_decode_seqs(&m.en, ok, ids, 0, rows, NULL, &e), -1);
    cr_expect(a.n_past == 0 && m.en.n_past == prompt_length(0) && b.n_past == CTX,
              "a refused step advanced a sequence: %d %d %d", a.n_past, m.en.n_past, b.n_past);
    b.n_past = 0;
    cr_expect_eq(engine_decode_seqs(&m.en, ok, ids, 3, rows, NULL, &e), 0, "%s", e.msg);
    cr_expect(a.n_past == 1 && m.en.n_past == prompt_length(0) + 1 && b.n_past == 1);
    free(rows);
    engine_seq_destroy(&a);
    engine_seq_destroy(&b);
    cli_model_close(&m);
    test_remove_tree(dir);
    free(dir);
}

/* A token whose embedding holds a NaN: its rows' logits are NaN, and so are
 * those after it in its sequence (their attention reads its cache). Given
 * where to mark such rows, a step marks them and goes on: another sequence of
 * the step, and a row before the NaN in the same sequence (a token and a guess
 * after it not taken), keep the bits they have alone. Without, the step fails
 * naming the row, as a plain decode step does. On either backend. */
static void nan_fails_only_its_own_rows(void)
{
    char *dir = test_make_tmpdir("engine_seqs_nan");
    test_synth_tiny(dir, "int4");
    char path[4200];
    snprintf(path, sizeof path, "%s/config.json", dir);
    cJSON *cfg = test_read_json(path);
    int V = cJSON_GetObjectItem(cfg, "vocab_size")->valueint,
        hidden = cJSON_GetObjectItem(cfg, "hidden_size")->valueint;
    cJSON_Delete(cfg);
    int X = V - 1;  /* in neither prompt below */
    for (int s = 0; s < 2; s++)
        for (int i = 0; i < prompt_length(s); i++)
            cr_assert_neq(prompt_id(s, i, V), X);
    test_poke_nan(dir, "model.embed_tokens.weight", (size_t)X * (size_t)hidden + 1);
    cli_model m;
    open_model(&m, dir, 8);
    engine_seq b;
    errbuf e;
    cr_assert_eq(engine_seq_create(&m.en, &b, &e), 0, "%s", e.msg);
    prefill(&m.en, NULL, 0);
    prefill(&m.en, &b, 1);
    int own_past = m.en.n_past, b_past = b.n_past;
    float *alone_own = malloc((size_t)V * sizeof(float)), *alone_b = malloc((size_t)V * sizeof(float)),
          *rows = malloc(2 * (size_t)V * sizeof(float));
    cr_assert(alone_own && alone_b && rows);
    cr_assert_eq(engine_decode(&m.en, 2, alone_own, &e), 0, "%s", e.msg);
    cr_assert_eq(engine_truncate(&m.en, own_past, &e), 0, "%s", e.msg);
    engine_seq_swap(&m.en, &b);
    cr_assert_eq(engine_decode(&m.en, 3, alone_b, &e), 0, "%s", e.msg);
    cr_assert_eq(engine_truncate(&m.en, b_past, &e), 0, "%s", e.msg);
    engine_seq_swap(&m.en, &b);

    /* two sequences, the engine's own stepping the NaN token */
    engine_seq *both[2] = {NULL, &b};
    int ids[2] = {X, 3};
    unsigned char nan[2] = {9, 9};
    cr_assert_eq(engine_decode_seqs(&m.en, both, ids, 2, rows, nan, &e), 0, "%s", e.msg);
    cr_expect(nan[0] == 1 && nan[1] == 0, "rows marked %d %d", nan[0], nan[1]);
    cr_expect(memcmp(rows + V, alone_b, (size_t)V * sizeof *rows) == 0,
              "the other sequence's row differs from it alone");
    cr_assert_eq(engine_truncate(&m.en, own_past, &e), 0, "%s", e.msg);
    b.n_past = b_past;
    cr_expect_eq(engine_decode_seqs(&m.en, both, ids, 2, rows, NULL, &e), -1);
    cr_expect(strstr(e.msg, "the logits of the step's row 0 are NaN"), "%s", e.msg);
    cr_assert_eq(engine_truncate(&m.en, own_past, &e), 0, "%s", e.msg);

    /* a token, then a guess of the NaN token */
    int guessed[2] = {2, X};
    memset(nan, 9, sizeof nan);
    cr_assert_eq(engine_decode_tokens(&m.en, guessed, 2, rows, nan, &e), 0, "%s", e.msg);
    cr_expect(nan[0] == 0 && nan[1] == 1, "rows marked %d %d", nan[0], nan[1]);
    cr_expect(memcmp(rows, alone_own, (size_t)V * sizeof *rows) == 0, "the token's row differs");
    cr_assert_eq(engine_truncate(&m.en, own_past, &e), 0, "%s", e.msg);
    cr_expect_eq(engine_decode_tokens(&m.en, guessed, 2, rows, NULL, &e), -1);
    char want[64];
    snprintf(want, sizeof want, "the logits at position %d are NaN", own_past + 1);
    cr_expect(strstr(e.msg, want), "%s", e.msg);
    free(alone_own);
    free(alone_b);
    free(rows);
    engine_seq_destroy(&b);
    cli_model_close(&m);
    test_remove_tree(dir);
    free(dir);
}

Test(engine_seqs, a_nan_fails_only_its_own_rows, .timeout = 60) { nan_fails_only_its_own_rows(); }
Test(engine_seqs, a_nan_fails_only_its_own_rows_bf16_cache, .timeout = 60)
{
    cache_type = KV_BF16;
    nan_fails_only_its_own_rows();
}
Test(engine_seqs, a_nan_fails_only_its_own_rows_q8_cache, .timeout = 60)
{
    cache_type = KV_Q8_0;
    nan_fails_only_its_own_rows();
}
Test(engine_seqs, a_nan_fails_only_its_own_rows_gpu, .timeout = 300)
{
    test_require_gpu();
    nan_fails_only_its_own_rows();
}

/* The decode steps count the cached positions their attention read (the
 * decode bounds' KV bytes): a token at position p reads p + 1, whichever way
 * it was stepped; prefills and refused steps count nothing. */
Test(engine_seqs, decode_steps_count_the_positions_they_read, .timeout = 60)
{
    char *dir = test_make_tmpdir("engine_seqs_read");
    test_synth_tiny(dir, "int4");
    cli_model m;
    open_model(&m, dir, 8);
    int V = m.mw.cfg.vocab_size;
    engine_seq a;
    errbuf e;
    cr_assert_eq(engine_seq_create(&m.en, &a, &e), 0, "%s", e.msg);
    prefill(&m.en, NULL, 0);
    prefill(&m.en, &a, 1);
    const uint64_t *read = &m.en.stats.kv_positions_decoded;
    float *rows = malloc(2 * (size_t)V * sizeof *rows);
    cr_assert_not_null(rows);
    int ids[2] = {1, 2}, bad[2] = {1, V};
    engine_seq *both[2] = {NULL, &a};
    cr_expect_eq(engine_decode_seqs(&m.en, both, bad, 2, rows, NULL, &e), -1);
    cr_expect_eq(*read, 0, "prefills and a refused step read %llu", (unsigned long long)*read);
    /* positions 11 and 5 */
    cr_assert_eq(engine_decode_seqs(&m.en, both, ids, 2, rows, NULL, &e), 0, "%s", e.msg);
    cr_expect_eq(*read, 12 + 6);
    /* position 12, then 13 and 14 in one step */
    cr_assert_eq(engine_decode(&m.en, 3, rows, &e), 0, "%s", e.msg);
    cr_assert_eq(engine_decode_tokens(&m.en, ids, 2, rows, NULL, &e), 0, "%s", e.msg);
    cr_expect_eq(*read, 18 + 13 + 14 + 15, "%llu", (unsigned long long)*read);
    free(rows);
    engine_seq_destroy(&a);
    cli_model_close(&m);
    test_remove_tree(dir);
    free(dir);
}

/* engine_copy_prefix: the start of a prompt copied from another sequence that
 * holds it (and then went on otherwise), into a cache that shares part of it
 * or nothing, computes the rest of the prompt and the steps after it with the
 * bits of the prompt run in that cache from nothing (the same steps: the
 * prefix in chunks, then the rest); the source is left as it was. */
static void copied_prefix_as_computed(void)
{
    char *dir = test_make_tmpdir("engine_seqs_copy");
    test_synth_tiny(dir, "int4");
    cli_model m;
    open_model(&m, dir, 8);
    engine *en = &m.en;
    int V = en->cfg->vocab_size, prompt[17], other[5], junk[3] = {7, 8, 9};
    enum { PREFIX = 12 };
    for (int i = 0; i < 17; i++)
        prompt[i] = prompt_id(0, i, V);
    for (int i = 0; i < 5; i++)
        other[i] = prompt_id(1, i, V);
    float *want = malloc(3 * (size_t)V * sizeof *want), *got = malloc(3 * (size_t)V * sizeof *got);
    cr_assert(want && got);
    errbuf e;
    /* the prompt computed: its prefix, the rest, two steps */
    engine_reset(en);
    cr_assert_eq(engine_forward(en, prompt, PREFIX, NULL, 0, &e), 0, "%s", e.msg);
    cr_assert_eq(engine_forward(en, prompt + PREFIX, 17 - PREFIX, want, 0, &e), 0, "%s", e.msg);
    for (int k = 0; k < 2; k++)
        cr_assert_eq(engine_decode(en, step_id(0, k, V), want + (size_t)(k + 1) * V, &e), 0, "%s", e.msg);
    /* the source: the prefix, then another continuation */
    engine_reset(en);
    cr_assert_eq(engine_forward(en, prompt, PREFIX, NULL, 0, &e), 0, "%s", e.msg);
    cr_assert_eq(engine_forward(en, other, 5, NULL, 0, &e), 0, "%s", e.msg);
    /* the destination empty, or holding the prompt's first chunk (the
     * reference's first step), then other ids */
    for (int shared = 0; shared <= 8; shared += 8) {
        engine_seq dst;
        cr_assert_eq(engine_seq_create(en, &dst, &e), 0, "%s", e.msg);
        engine_seq_swap(en, &dst);      /* dst is the engine's; the source waits in dst */
        engine_reset(en);
        if (shared) {
            cr_assert_eq(engine_forward(en, prompt, shared, NULL, 0, &e), 0, "%s", e.msg);
            cr_assert_eq(engine_forward(en, junk, 3, NULL, 0, &e), 0, "%s", e.msg);
        }
        cr_expect_eq(engine_copy_prefix(en, &dst, PREFIX + 5, &e), 0, "%s", e.msg);
        cr_expect_eq(en->n_past, PREFIX + 5);
        cr_expect_eq(engine_copy_prefix(en, &dst, PREFIX, &e), 0, "%s", e.msg);
        cr_expect_eq(en->n_past, PREFIX);
        cr_expect_eq(engine_copy_prefix(en, &dst, PREFIX + 6, &e), -1, "more than the source holds");
        cr_expect(strstr(e.msg, "copy 18 positions of a sequence that holds 17"), "%s", e.msg);
        cr_assert_eq(engine_forward(en, prompt + PREFIX, 17 - PREFIX, got, 0, &e), 0, "%s", e.msg);
        for (int k = 0; k < 2; k++)
            cr_assert_eq(engine_decode(en, step_id(0, k, V), got + (size_t)(k + 1) * V, &e), 0, "%s", e.msg);
        for (int k = 0; k < 3; k++)
            cr_expect(memcmp(want + (size_t)k * V, got + (size_t)k * V, (size_t)V * sizeof *got) == 0,
                      "destination sharing %d: row %d differs from the prompt computed", shared, k);
        cr_expect(memcmp(en->cached_ids, prompt, 17 * sizeof *prompt) == 0, "the ids are not the prompt's");
        engine_seq_swap(en, &dst);
        cr_expect_eq(en->n_past, PREFIX + 5, "the source changed");
        engine_seq_destroy(&dst);
    }
    free(want);
    free(got);
    cli_model_close(&m);
    test_remove_tree(dir);
    free(dir);
}

Test(engine_seqs, a_prefix_copied_from_another_sequence_computes_as_its_own, .timeout = 120)
{
    copied_prefix_as_computed();
}

/* a bf16 cache's rows copied as they are */
Test(engine_seqs, a_prefix_copied_from_another_sequence_computes_as_its_own_bf16_cache, .timeout = 120)
{
    cache_type = KV_BF16;
    copied_prefix_as_computed();
}

/* and a q8_0 cache's, scales and all */
Test(engine_seqs, a_prefix_copied_from_another_sequence_computes_as_its_own_q8_cache, .timeout = 120)
{
    cache_type = KV_Q8_0;
    copied_prefix_as_computed();
}

Test(engine_seqs, a_prefix_copied_on_the_gpu_computes_as_its_own_bf16_cache_gpu, .timeout = 300)
{
    test_require_gpu();
    cache_type = KV_BF16;
    setenv("MOETIER_BACKEND", "cuda", 1);
    copied_prefix_as_computed();
    unsetenv("MOETIER_BACKEND");
}

Test(engine_seqs, a_prefix_copied_on_the_gpu_computes_as_its_own_q8_cache_gpu, .timeout = 300)
{
    test_require_gpu();
    cache_type = KV_Q8_0;
    setenv("MOETIER_BACKEND", "cuda", 1);
    copied_prefix_as_computed();
    unsetenv("MOETIER_BACKEND");
}

Test(engine_seqs, a_prefix_copied_on_the_gpu_computes_as_its_own_gpu, .timeout = 300)
{
    test_require_gpu();
    setenv("MOETIER_BACKEND", "cuda", 1);
    copied_prefix_as_computed();
    unsetenv("MOETIER_BACKEND");
}

/* Decode steps taken between the layers of a prefill chunk (between_layers,
 * as serve --parallel takes them while a prompt is prefilled): conversations
 * 0 and 1 step while the engine's own prefills a prompt of PAUSED_PROMPT
 * tokens in chunks of 4, in turn all together (engine_decode_seqs) and one
 * at a time made the engine's own (engine_seq_swap, as the server steps one
 * slot), and conversation 2's prompt is prefilled in the first pause (as the
 * server prefills a short prompt there). The steps give the bits they give
 * alone, conversation 2 the logits of its prefill alone, and the paused
 * prompt's every position the logits of its prefill alone. */
#define PAUSED_PROMPT 29
#define PAUSED_CHUNK 4

typedef struct paused_steps {
    engine *en;
    engine_seq *seqs[2];
    engine_seq *third;          /* conversation 2, prefilled in the first pause */
    float *third_logits;        /* [vocab] its last position's */
    double third_seconds;       /* its prefill's time (counted as prefill, inside the pause) */
    int k, calls;
    float *out;                 /* [2][STEPS][vocab] */
    float *rows;                /* [2][vocab] */
    errbuf e;
    int failed;
} paused_steps;

static void step_between_layers(void *ctx)
{
    paused_steps *p = ctx;
    p->calls++;
    engine *en = p->en;
    size_t V = (size_t)en->cfg->vocab_size;
    if (p->calls == 1) {
        int ids[32], n = prompt_ids(2, (int)V, ids);
        double t0 = now_seconds();
        engine_seq_swap(en, p->third);
        p->failed |= engine_forward(en, ids, n, p->third_logits, 0, &p->e) != 0;
        engine_seq_swap(en, p->third);
        p->third_seconds = now_seconds() - t0;
    }
    if (p->k >= STEPS || p->failed)
        return;
    int ids[2] = {step_id(0, p->k, (int)V), step_id(1, p->k, (int)V)};
    if (p->k % 2 == 0) {
        p->failed |= engine_decode_seqs(en, p->seqs, ids, 2, p->rows, NULL, &p->e) != 0;
    } else {
        for (int s = 0; s < 2; s++) {
            engine_seq_swap(en, p->seqs[s]);
            p->failed |= engine_decode(en, ids[s], p->rows + s * V, &p->e) != 0;
            engine_seq_swap(en, p->seqs[s]);
        }
    }
    for (int s = 0; s < 2; s++)
        memcpy(p->out + (s * STEPS + p->k) * V, p->rows + s * V, V * sizeof *p->rows);
    p->k++;
}

static int nothing_wanted(void *ctx)
{
    (void)ctx;
    return 0;
}

static int paused_prompt_id(int i, int V)
{
    return (i * 29 + 7) % V;
}

/* the prompt's [PAUSED_PROMPT][vocab] logits, prefilled with the steps of
 * p between its layers (p NULL: none) */
static float *paused_prefill(const char *dir, paused_steps *p)
{
    cli_model m;
    open_model(&m, dir, PAUSED_CHUNK);
    size_t V = (size_t)m.mw.cfg.vocab_size;
    engine_seq seqs[3];
    errbuf e;
    if (p) {
        for (int s = 0; s < 3; s++) {
            cr_assert_eq(engine_seq_create(&m.en, &seqs[s], &e), 0, "%s", e.msg);
            if (s < 2) {
                prefill(&m.en, &seqs[s], s);
                p->seqs[s] = &seqs[s];
            }
        }
        p->third = &seqs[2];
        p->en = &m.en;
        cr_assert_eq(engine_allow_pauses(&m.en, &e), 0, "%s", e.msg);
        m.en.between_layers = step_between_layers;
        m.en.between_ctx = p;
    }
    int ids[PAUSED_PROMPT];
    for (int i = 0; i < PAUSED_PROMPT; i++)
        ids[i] = paused_prompt_id(i, (int)V);
    float *logits = malloc(PAUSED_PROMPT * V * sizeof *logits);
    cr_assert_not_null(logits);
    uint64_t prefilled = m.en.stats.tokens_prefilled;
    double prefill_s = m.en.stats.prefill_seconds, t0 = now_seconds();
    cr_assert_eq(engine_forward(&m.en, ids, PAUSED_PROMPT, logits, 1, &e), 0, "%s", e.msg);
    double wall = now_seconds() - t0;
    cr_expect_eq(m.en.n_past, PAUSED_PROMPT);
    /* (and conversation 2's prompt, prefilled in the first pause) */
    cr_expect_eq(m.en.stats.tokens_prefilled - prefilled,
                 (uint64_t)(PAUSED_PROMPT + (p ? prompt_length(2) : 0)));
    /* the pauses' time is not the paused prefill's (the prompt prefilled in
     * one is counted as its own) */
    double inside = p ? p->third_seconds : 0;
    cr_expect(m.en.stats.prefill_seconds - prefill_s <= wall - m.en.paused_seconds + inside + 1e-6,
              "prefill %.6f s counted of %.6f s, %.6f s of them paused (%.6f s a prefill inside)",
              m.en.stats.prefill_seconds - prefill_s, wall, m.en.paused_seconds, inside);
    cr_expect_eq(m.en.paused_seconds > 0, p != NULL);
    if (p) {
        cr_assert(!p->failed, "a step between layers failed: %s", p->e.msg);
        int chunks = (PAUSED_PROMPT + PAUSED_CHUNK - 1) / PAUSED_CHUNK;
        cr_expect_eq(p->calls, chunks * (m.mw.cfg.n_layers - 1),
                     "between_layers runs between each chunk's layers, not inside its own steps");
        cr_assert_geq(p->k, STEPS, "the premise: room for every step");
        cr_expect_eq(m.en.stats.tokens_decoded, (uint64_t)(2 * STEPS));
        /* no pause where pause_wanted says there is nothing to do */
        int calls = p->calls;
        m.en.pause_wanted = nothing_wanted;
        cr_assert_eq(engine_forward(&m.en, ids, 3, NULL, 0, &e), 0, "%s", e.msg);
        cr_expect_eq(p->calls, calls);
        for (int s = 0; s < 2; s++)
            cr_expect_eq(seqs[s].n_past, prompt_length(s) + STEPS);
        cr_expect_eq(seqs[2].n_past, prompt_length(2));
        for (int s = 0; s < 3; s++)
            engine_seq_destroy(&seqs[s]);
    }
    cli_model_close(&m);
    return logits;
}

/* conversation 2's last prompt logits, its prompt prefilled alone */
static float *third_alone(const char *dir)
{
    cli_model m;
    open_model(&m, dir, PAUSED_CHUNK);
    int V = m.mw.cfg.vocab_size, ids[32], n = prompt_ids(2, V, ids);
    float *out = malloc((size_t)V * sizeof *out);
    cr_assert_not_null(out);
    errbuf e;
    cr_assert_eq(engine_forward(&m.en, ids, n, out, 0, &e), 0, "%s", e.msg);
    cli_model_close(&m);
    return out;
}

static void steps_between_layers_as_alone(const char *format)
{
    char *dir = test_make_tmpdir("engine_seqs_paused");
    test_synth_tiny(dir, format);
    size_t V = vocab_of(dir);
    float *want_steps = alone_n(dir, PAUSED_CHUNK, 2), *want_prompt = paused_prefill(dir, NULL);
    float *want_third = third_alone(dir);
    paused_steps p = {.out = malloc(2 * STEPS * V * sizeof(float)),
                      .rows = malloc(2 * V * sizeof(float)),
                      .third_logits = malloc(V * sizeof(float))};
    cr_assert(p.out && p.rows && p.third_logits);
    float *got_prompt = paused_prefill(dir, &p);
    expect_same_bits_n(want_steps, p.out, V, 2, "steps between a prefill's layers");
    cr_expect(memcmp(want_third, p.third_logits, V * sizeof(float)) == 0,
              "%s: a prompt prefilled between another's layers differs from its prefill alone", format);
    free(want_third);
    free(p.third_logits);
    for (int t = 0; t < PAUSED_PROMPT; t++)
        cr_expect(memcmp(want_prompt + t * V, got_prompt + t * V, V * sizeof(float)) == 0,
                  "%s: the prompt's position %d differs from its prefill alone", format, t);
    free(p.out);
    free(p.rows);
    free(want_steps);
    free(want_prompt);
    free(got_prompt);
    test_remove_tree(dir);
    free(dir);
}

Test(engine_seqs, steps_between_a_prefills_layers_as_alone_int4, .timeout = 120)
{
    steps_between_layers_as_alone("int4");
}
Test(engine_seqs, steps_between_a_prefills_layers_as_alone_fp8, .timeout = 120)
{
    steps_between_layers_as_alone("fp8");
}
Test(engine_seqs, steps_between_a_prefills_layers_as_alone_gpu, .timeout = 300)
{
    test_require_gpu();
    steps_between_layers_as_alone("int4");
}
