/* Guessed tokens checked in one step (--draft-lookup): draft_lookup finds
 * what followed the latest earlier occurrence of the context's last tokens;
 * engine_decode_tokens gives each row the bits of decoding one token at a
 * time, and dropping its guesses leaves the cache of one token (CPU and CUDA
 * backends, up to ENGINE_DRAFT_MAX_T rows, every format); and
 * generate with guesses answers exactly as without them, greedy or sampled,
 * leaving the same cache and logits behind, up to a full context too. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "core/app/cli_common.h"
#include "core/app/generate.h"
#include "core/engine/draft_lookup.h"
#include "testutil.h"

static void expect_draft(const int *ids, int n, int last, int max, const int *want, int n_want)
{
    int out[8];
    int got = draft_lookup(ids, n, last, max, out);
    cr_assert_eq(got, n_want, "n %d last %d max %d: %d guesses, expected %d", n, last, max, got,
                 n_want);
    for (int i = 0; i < got; i++)
        cr_expect_eq(out[i], want[i], "guess %d: %d, expected %d", i, out[i], want[i]);
}

Test(draft, lookup_takes_the_latest_longest_match)
{
    /* the last three (1 2 3) occurred at the start: what followed it */
    int a[] = {1, 2, 3, 9, 8, 1, 2};
    expect_draft(a, 7, 3, 3, (int[]){9, 8, 1}, 3);
    expect_draft(a, 7, 3, 1, (int[]){9}, 1);
    /* two occurrences of the last two (7 8): the latest one's continuation */
    int b[] = {7, 8, 1, 7, 8, 2, 5, 7};
    expect_draft(b, 8, 8, 3, (int[]){2, 5, 7}, 3);
    /* a longer match wins over a later shorter one */
    int c[] = {4, 7, 8, 1, 5, 7, 8, 2, 4, 7};
    expect_draft(c, 10, 8, 2, (int[]){1, 5}, 2);
    /* the continuation stops at the context's end (the last token included) */
    int d[] = {1, 2, 1};
    expect_draft(d, 3, 2, 3, (int[]){1, 2}, 2);
    /* one token in common is not enough; nothing before the last run either */
    int e[] = {3, 6, 5};
    expect_draft(e, 3, 3, 3, NULL, 0);
    expect_draft(e, 0, 3, 3, NULL, 0);
    expect_draft(a, 7, 3, 0, NULL, 0);
}

static void expect_share(const int *g, int n, int room, const int *want)
{
    int got[8];
    memcpy(got, g, (size_t)n * sizeof *got);
    draft_lookup_share(got, n, room);
    for (int i = 0; i < n; i++)
        cr_expect_eq(got[i], want[i], "room %d: sequence %d keeps %d guesses, expected %d", room, i,
                     got[i], want[i]);
}

/* Guesses of sequences stepped together cut to the rows left in one pass,
 * one of each in turn */
Test(draft, share_takes_one_guess_of_each_in_turn)
{
    int full[] = {3, 3, 3, 3};
    expect_share(full, 4, 11, (int[]){3, 3, 3, 2});
    expect_share(full, 4, 5, (int[]){2, 1, 1, 1});
    expect_share(full, 4, 12, full);
    expect_share(full, 4, 40, full);
    expect_share(full, 4, 0, (int[]){0, 0, 0, 0});
    expect_share(full, 4, -3, (int[]){0, 0, 0, 0});     /* more sequences than a pass's rows */
    int some[] = {0, 3, 1};
    expect_share(some, 3, 3, (int[]){0, 2, 1});
}

/* how many of the next n steps the backoff lets look up, as a bit mask */
static unsigned allowed(draft_backoff *b, int n)
{
    unsigned m = 0;
    for (int i = 0; i < n; i++)
        m |= (unsigned)draft_backoff_allows(b) << i;
    return m;
}

/* Lookups skipped after guesses all missed: 1, 2, 4, 8, then 16 steps at
 * most; a kept guess ends it, a step without guesses changes nothing */
Test(draft, backoff_skips_lookups_after_misses)
{
    draft_backoff b = {0};
    cr_expect_eq(allowed(&b, 3), 0x7u);
    int skips[] = {1, 2, 4, 8, 16, 16};
    for (int i = 0; i < 6; i++) {
        draft_backoff_after(&b, 3, 0);
        unsigned want = 1u << skips[i], got = allowed(&b, skips[i] + 1);   /* off, then on */
        cr_expect_eq(got, want, "miss %d in a row: steps allowed %#x, expected %#x", i + 1, got,
                     want);
    }
    draft_backoff_after(&b, 0, 0);
    cr_expect_eq(allowed(&b, 2), 0x3u, "a step without guesses started a skip");
    draft_backoff_after(&b, 2, 1);
    cr_expect_eq(allowed(&b, 2), 0x3u, "a kept guess left a skip");
    draft_backoff_after(&b, 1, 0);
    cr_expect_eq(allowed(&b, 2), 0x2u, "after a kept guess, a miss skips 1 step again");
}

#define CTX 512

static void open_model_chunk(cli_model *m, const char *dir, int ctx, int chunk)
{
    model_flags f = {.dir = dir, .ctx = ctx, .chunk = chunk, .quiet = 1};
    errbuf e;
    cr_assert_eq(cli_model_open(m, &f, &e), 0, "%s", e.msg);
}

static void open_model(cli_model *m, const char *dir, int ctx)
{
    open_model_chunk(m, dir, ctx, 64);
}

static const int prompt[] = {5, 6, 7, 8, 5, 6, 7, 8, 5, 6, 7};
#define PROMPT_N ((int)(sizeof prompt / sizeof *prompt))

/* A step's guesses fit the rows of one pass (the chunk here), the context's
 * room and the answer's limit */
Test(draft, lookup_step_keeps_to_one_pass_the_context_and_the_limit, .timeout = 60)
{
    char *dir = test_make_tmpdir("draft_step_limits");
    test_synth_tiny(dir, "int4");
    errbuf e;
    int out[ENGINE_DRAFT_MAX_T];
    const struct { int chunk, ctx, left, want; } cases[] = {
        {64, CTX, 10, 3},           /* 5 6 7 8 after "... 5 6 7" and 8: three of them */
        {2, CTX, 10, 1},            /* a pass of 2 rows: the token and one guess */
        {64, PROMPT_N + 3, 10, 2},  /* room for the token and two more */
        {64, CTX, 1, 1},            /* the answer may take one more token */
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        cli_model m;
        open_model_chunk(&m, dir, cases[k].ctx, cases[k].chunk);
        cr_assert_eq(engine_forward(&m.en, prompt, PROMPT_N, NULL, 0, &e), 0, "%s", e.msg);
        int got = draft_lookup_step(&m.en, 8, 3, cases[k].left, out);
        cr_expect_eq(got, cases[k].want, "case %zu: %d guesses, expected %d", k, got,
                     cases[k].want);
        cli_model_close(&m);
    }
    test_remove_tree(dir);
    free(dir);
}

/* Rows of a step of T tokens against the same tokens decoded one at a time;
 * then, the step's guesses dropped, the next token's logits against those
 * decoded after the first token alone (what the decode loop does when it
 * keeps no guess). */
static void step_rows_as_one_at_a_time(const char *format)
{
    char *dir = test_make_tmpdir("draft_rows");
    test_synth_tiny(dir, format);
    cli_model m;
    open_model(&m, dir, CTX);
    size_t V = (size_t)m.mw.cfg.vocab_size;
    int ids[ENGINE_DRAFT_MAX_T] = {11, 3, 11, 42}, next = 77;
    float *want = malloc((ENGINE_DRAFT_MAX_T + 1) * V * sizeof *want);
    float *got = malloc(ENGINE_DRAFT_MAX_T * V * sizeof *got);
    cr_assert(want && got);
    errbuf e;
    for (int T = 2; T <= ENGINE_DRAFT_MAX_T; T++) {
        engine_reset(&m.en);
        cr_assert_eq(engine_forward(&m.en, prompt, PROMPT_N, NULL, 0, &e), 0, "%s", e.msg);
        for (int t = 0; t < T; t++)
            cr_assert_eq(engine_decode(&m.en, ids[t], want + t * V, &e), 0, "%s", e.msg);
        engine_reset(&m.en);
        cr_assert_eq(engine_forward(&m.en, prompt, PROMPT_N, NULL, 0, &e), 0, "%s", e.msg);
        unsigned long long want_decoded = m.en.stats.tokens_decoded;
        cr_assert_eq(engine_decode(&m.en, ids[0], NULL, &e), 0, "%s", e.msg);
        float *want_next = want + ENGINE_DRAFT_MAX_T * V;
        cr_assert_eq(engine_decode(&m.en, next, want_next, &e), 0, "%s", e.msg);
        want_decoded = m.en.stats.tokens_decoded - want_decoded;

        engine_reset(&m.en);
        cr_assert_eq(engine_forward(&m.en, prompt, PROMPT_N, NULL, 0, &e), 0, "%s", e.msg);
        unsigned long long got_decoded = m.en.stats.tokens_decoded;
        cr_assert_eq(engine_decode_tokens(&m.en, ids, T, got, &e), 0, "%s", e.msg);
        cr_assert_eq(m.en.n_past, PROMPT_N + T);
        cr_expect(memcmp(want, got, (size_t)T * V * sizeof *got) == 0,
                  "%s, a step of %d tokens: not the bits of one at a time", format, T);
        cr_assert_eq(engine_drop_guesses(&m.en, T - 1, &e), 0, "%s", e.msg);
        cr_assert_eq(m.en.n_past, PROMPT_N + 1);
        cr_assert_eq(engine_decode(&m.en, next, got, &e), 0, "%s", e.msg);
        cr_expect(memcmp(want_next, got, V * sizeof *got) == 0,
                  "%s, %d guesses dropped: the next token's logits differ", format, T - 1);
        got_decoded = m.en.stats.tokens_decoded - got_decoded;
        cr_expect_eq(got_decoded, want_decoded,
                     "%s, %d guesses dropped: %llu tokens counted as decoded, expected %llu",
                     format, T - 1, got_decoded, want_decoded);
    }
    free(want);
    free(got);
    cli_model_close(&m);
    test_remove_tree(dir);
    free(dir);
}

Test(draft, step_rows_have_the_bits_of_one_at_a_time_int4, .timeout = 60)
{
    step_rows_as_one_at_a_time("int4");
}
Test(draft, step_rows_have_the_bits_of_one_at_a_time_fp8, .timeout = 60)
{
    step_rows_as_one_at_a_time("fp8");
}
Test(draft, step_rows_have_the_bits_of_one_at_a_time_bf16, .timeout = 60)
{
    step_rows_as_one_at_a_time("bf16");
}
/* The CUDA backend: each product's sums and each token's attention keep
 * their order whatever the step's tokens (gpu_linear.cu, gpu_mla.cu; each
 * format's products for any count of tokens in test_gpu.c), and a dropped
 * guess's cache row is written over by the next step. The decode loop above
 * these calls is the same for both backends (tested below on the CPU, as the
 * device emulation takes about a second a step). */
Test(draft, step_rows_have_the_bits_of_one_at_a_time_gpu, .timeout = 300)
{
    test_require_gpu();
    step_rows_as_one_at_a_time("int4");
}

typedef struct answer {
    token_list ids;
    float *logits;
    int rc, n_past;
    unsigned long long decoded;
    int *cached;
    gen_draft_stats st;
} answer;

/* The answer to the prompt with `draft` guesses a step, and what it leaves. */
static answer generate_with(const char *dir, int ctx, int max_new, float temp, uint64_t seed,
                            int draft)
{
    cli_model m;
    open_model(&m, dir, ctx);
    size_t V = (size_t)m.mw.cfg.vocab_size;
    answer a = {.logits = malloc(V * sizeof(float))};
    cr_assert_not_null(a.logits);
    errbuf e;
    cr_assert_eq(engine_forward(&m.en, prompt, PROMPT_N, a.logits, 0, &e), 0, "%s", e.msg);
    sampler_params sp = sampler_defaults();
    sp.temperature = temp;
    sp.seed = seed;
    sampler s;
    cr_assert_eq(sampler_create(&s, &sp, (int)V, &e), 0, "%s", e.msg);
    gen_params gp = {.max_new = max_new, .draft = draft, .draft_stats = &a.st};
    a.rc = generate(&m, NULL, &s, a.logits, &gp, &a.ids, &e);
    cr_assert(a.rc == 0 || a.rc == GEN_CONTEXT_FULL, "%s", e.msg);
    a.n_past = m.en.n_past;
    a.decoded = (unsigned long long)m.en.stats.tokens_decoded;
    a.cached = malloc((size_t)a.n_past * sizeof *a.cached);
    cr_assert_not_null(a.cached);
    memcpy(a.cached, m.en.cached_ids, (size_t)a.n_past * sizeof *a.cached);
    sampler_destroy(&s);
    cli_model_close(&m);
    return a;
}

static void answer_free(answer *a)
{
    token_list_free(&a->ids);
    free(a->logits);
    free(a->cached);
}

/* The answer with guesses is the one without, both ending as want_rc says
 * (0: the length limit; GEN_CONTEXT_FULL); returns how many were kept. */
static unsigned long long same_answer(const char *dir, int ctx, int max_new, float temp,
                                      uint64_t seed, int want_rc, size_t V, const char *what)
{
    answer want = generate_with(dir, ctx, max_new, temp, seed, 0);
    answer got = generate_with(dir, ctx, max_new, temp, seed, ENGINE_DRAFT_MAX_T - 1);
    cr_expect_eq(want.rc, want_rc, "%s: returned %d without guesses, expected %d", what, want.rc,
                 want_rc);
    cr_expect_eq(got.rc, want.rc, "%s: returned %d, without guesses %d", what, got.rc, want.rc);
    cr_assert_eq(got.ids.n, want.ids.n, "%s: %zu tokens, without guesses %zu", what, got.ids.n,
                 want.ids.n);
    cr_expect(memcmp(got.ids.ids, want.ids.ids, got.ids.n * sizeof(int)) == 0,
              "%s: another answer", what);
    /* the cache holds the answer but its last token, and the logits are the
     * distribution that token was drawn from */
    cr_assert_eq(got.n_past, want.n_past, "%s: %d cached positions, without guesses %d", what,
                 got.n_past, want.n_past);
    cr_expect(memcmp(got.cached, want.cached, (size_t)got.n_past * sizeof(int)) == 0,
              "%s: other ids cached", what);
    cr_expect_eq(got.decoded, want.decoded, "%s: %llu tokens counted as decoded, without guesses %llu",
                 what, got.decoded, want.decoded);
    cr_expect(memcmp(got.logits, want.logits, V * sizeof(float)) == 0, "%s: other last logits",
              what);
    unsigned long long kept = got.st.accepted;
    answer_free(&want);
    answer_free(&got);
    return kept;
}

Test(draft, generate_answers_as_without_guesses, .timeout = 120)
{
    char *dir = test_make_tmpdir("draft_generate");
    test_synth_tiny(dir, "int4");
    cli_model m;
    open_model(&m, dir, CTX);
    size_t V = (size_t)m.mw.cfg.vocab_size;
    cli_model_close(&m);
    /* (each case must keep some guesses, or it checks nothing) */
    cr_expect(same_answer(dir, CTX, 400, 0.0f, 0, 0, V, "greedy") > 0, "greedy: no guess kept");
    unsigned long long kept = 0;
    for (uint64_t seed = 1; seed <= 4; seed++)
        kept += same_answer(dir, CTX, 400, 0.3f, seed, 0, V, "sampled");
    cr_expect(kept > 0, "sampled with 4 seeds: no guess kept");
    /* the context fills up while guesses are in the cache */
    cr_expect(same_answer(dir, PROMPT_N + 300, 400, 0.0f, 0, GEN_CONTEXT_FULL, V, "a full context") > 0,
              "a full context: no guess kept");
    test_remove_tree(dir);
    free(dir);
}
