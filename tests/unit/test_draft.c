/* Guessed tokens checked in one step (--draft-lookup): draft_lookup finds
 * what followed the latest earlier occurrence of the context's last tokens;
 * engine_decode_tokens gives each row the bits of decoding one token at a
 * time, and dropping its guesses leaves the cache of one token (CPU and CUDA
 * backends, up to ENGINE_DRAFT_MAX_T rows, every format); the tuner learns
 * how guesses fare and what steps cost, and picks the guesses that pay (the
 * best split, against every one); and generate with guesses answers exactly
 * as without them, every guess checked or tuned, greedy or sampled, leaving
 * the same cache and logits behind, up to a full context too. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "core/app/cli_common.h"
#include "core/app/generate.h"
#include "core/engine/draft_lookup.h"
#include "core/engine/draft_tuner.h"
#include "testutil.h"

static void expect_draft(const int *ids, int n, int last, int max, const int *want, int n_want,
                         int want_match)
{
    int out[8], match = -1;
    int got = draft_lookup(ids, n, last, max, out, &match);
    cr_assert_eq(got, n_want, "n %d last %d max %d: %d guesses, expected %d", n, last, max, got,
                 n_want);
    for (int i = 0; i < got; i++)
        cr_expect_eq(out[i], want[i], "guess %d: %d, expected %d", i, out[i], want[i]);
    cr_expect_eq(match, want_match, "n %d last %d: %d tokens matched, expected %d", n, last, match,
                 want_match);
}

Test(draft, lookup_takes_the_latest_longest_match)
{
    /* the last three (1 2 3) occurred at the start: what followed it */
    int a[] = {1, 2, 3, 9, 8, 1, 2};
    expect_draft(a, 7, 3, 3, (int[]){9, 8, 1}, 3, 3);
    expect_draft(a, 7, 3, 1, (int[]){9}, 1, 3);
    /* two occurrences of the last two (7 8): the latest one's continuation */
    int b[] = {7, 8, 1, 7, 8, 2, 5, 7};
    expect_draft(b, 8, 8, 3, (int[]){2, 5, 7}, 3, 2);
    /* a longer match wins over a later shorter one */
    int c[] = {4, 7, 8, 1, 5, 7, 8, 2, 4, 7};
    expect_draft(c, 10, 8, 2, (int[]){1, 5}, 2, 3);
    /* of two occurrences of the last three, the one matching further back,
     * though earlier (5 1 2 3, where the later one has 6 1 2 3) */
    int h[] = {5, 1, 2, 3, 9, 6, 1, 2, 3, 4, 0, 5, 1, 2};
    expect_draft(h, 14, 3, 3, (int[]){9, 6, 1}, 3, 4);
    /* the continuation stops at the context's end (the last token included) */
    int d[] = {1, 2, 1};
    expect_draft(d, 3, 2, 3, (int[]){1, 2}, 2, 2);
    /* the match measured back along the run, up to DRAFT_LOOKUP_MATCH_MAX */
    int f[] = {9, 1, 2, 3, 4, 5, 7, 2, 3, 4};
    expect_draft(f, 10, 5, 3, (int[]){7, 2, 3}, 3, 4);
    int g[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 1, 2, 3, 4, 5, 6, 7, 8, 9};
    expect_draft(g, 20, 10, 3, (int[]){11, 1, 2}, 3, DRAFT_LOOKUP_MATCH_MAX);
    /* one token in common is not enough; nothing before the last run either */
    int e[] = {3, 6, 5};
    expect_draft(e, 3, 3, 3, NULL, 0, 0);
    expect_draft(e, 0, 3, 3, NULL, 0, 0);
    expect_draft(a, 7, 3, 0, NULL, 0, 0);
}

/* The chance of each guess, learned from lookups and the tokens that follow:
 * a guess is judged once the ones before it were kept, every lookup at once */
Test(draft, acceptance_is_learned_from_every_lookup)
{
    draft_accept a;
    draft_accept_init(&a);
    for (int c = 0; c < DRAFT_MATCH_CLASSES; c++)
        for (int j = 0; j < DRAFT_GUESS_MAX; j++)
            cr_expect_float_eq(draft_accept_chance(&a, c, j), draft_match_class_prior[c], 1e-12,
                               "class %d guess %d before any lookup", c, j);
    /* a longer match is the likelier to go on */
    for (int c = 1; c < DRAFT_MATCH_CLASSES; c++)
        cr_expect_gt(draft_match_class_prior[c], draft_match_class_prior[c - 1]);
    double q = draft_match_class_prior[1], q3 = draft_match_class_prior[3];
    /* the classes: 2, 3, 4-7 and 8 or more tokens matched */
    int want_class[] = {0, 0, 0, 1, 2, 2, 2, 2, 3, 3, 3};
    for (int m = 0; m <= 10; m++)
        cr_expect_eq(draft_match_class(m), want_class[m], "%d tokens matched: class %d", m,
                     draft_match_class(m));
    /* guesses 1 2 3, the answer goes on 1 2 9: the first two kept, the third not */
    draft_accept_lookup(&a, (int[]){1, 2, 3}, 3, 3);
    draft_accept_token(&a, 1);
    draft_accept_token(&a, 2);
    draft_accept_token(&a, 9);
    draft_accept_token(&a, 3);      /* (judges nothing: the lookup is done) */
    double want[] = {(1 + q) / 2, (1 + q) / 2, q / 2};
    for (int j = 0; j < 3; j++)
        cr_expect_float_eq(draft_accept_chance(&a, 1, j), want[j], 1e-12, "guess %d: %f, expected %f",
                           j, draft_accept_chance(&a, 1, j), want[j]);
    /* two lookups pending at once, each judged by the tokens after it */
    draft_accept_init(&a);
    draft_accept_lookup(&a, (int[]){5, 6}, 2, 3);
    draft_accept_token(&a, 5);
    draft_accept_lookup(&a, (int[]){7, 8}, 2, 3);
    draft_accept_token(&a, 6);      /* the first's second kept, the second's first not */
    draft_accept_token(&a, 8);      /* (the second is done: it judges nothing) */
    double d = DRAFT_ACCEPT_DECAY, first = (d * 1 + 0 + q) / (d * 1 + 1 + 1);
    cr_expect_float_eq(draft_accept_chance(&a, 1, 0), first, 1e-12, "%f, expected %f",
                       draft_accept_chance(&a, 1, 0), first);
    cr_expect_float_eq(draft_accept_chance(&a, 1, 1), (1 + q) / 2, 1e-12);
    /* a new answer drops what was pending, not what was learned */
    draft_accept_lookup(&a, (int[]){4}, 1, 3);
    draft_accept_restart(&a);
    draft_accept_token(&a, 4);
    cr_expect_float_eq(draft_accept_chance(&a, 1, 0), first, 1e-12, "a dropped lookup was judged");
    /* each class learns from its own lookups */
    draft_accept_lookup(&a, (int[]){4}, 1, DRAFT_LOOKUP_MATCH_MAX + 3);
    draft_accept_token(&a, 4);
    cr_expect_float_eq(draft_accept_chance(&a, 3, 0), (1 + q3) / 2, 1e-12);
    cr_expect_float_eq(draft_accept_chance(&a, 1, 0), first, 1e-12, "another class's lookup counted");
    double chances[DRAFT_GUESS_MAX];
    draft_accept_chances(&a, 9, chances);
    cr_expect_float_eq(chances[0], (1 + q3) / 2, 1e-12);
    cr_expect_float_eq(chances[1], q3, 1e-12);
    /* old outcomes fade: the chance follows the text */
    for (int i = 0; i < 200; i++) {
        draft_accept_lookup(&a, (int[]){1}, 1, 3);
        draft_accept_token(&a, 2);
    }
    cr_expect_lt(draft_accept_chance(&a, 1, 0), 0.05, "%f after 200 misses", draft_accept_chance(&a, 1, 0));
    for (int i = 0; i < 200; i++) {
        draft_accept_lookup(&a, (int[]){1}, 1, 3);
        draft_accept_token(&a, 1);
    }
    cr_expect_gt(draft_accept_chance(&a, 1, 0), 0.95, "%f after 200 hits", draft_accept_chance(&a, 1, 0));
    /* a new answer starts from an earlier one's chances at half their weight */
    draft_accept b;
    draft_accept_lookup(&a, (int[]){1}, 1, 3);
    draft_accept_start_from(&b, &a);
    cr_expect_eq(b.n_pending, 0, "a lookup of the earlier answer is pending in the new one");
    for (int j = 0; j < DRAFT_GUESS_MAX; j++) {
        double want_b = (a.kept[1][j] / 2 + q) / (a.trials[1][j] / 2 + 1);
        cr_expect_float_eq(draft_accept_chance(&b, 1, j), want_b, 1e-12, "guess %d: %f, expected %f", j,
                           draft_accept_chance(&b, 1, j), want_b);
    }
    cr_expect_gt(draft_accept_chance(&b, 1, 0), 0.9, "%f", draft_accept_chance(&b, 1, 0));
    /* lookups with no token between: the oldest goes, nothing overflows */
    for (int i = 0; i < 3 * DRAFT_GUESS_MAX; i++)
        draft_accept_lookup(&a, (int[]){1, 2, 3}, 3, 3);
    cr_expect_leq(a.n_pending, DRAFT_GUESS_MAX + 1);
}

/* Step times: averaged per row count, estimated on a line through the fresh
 * ones, taken as equal while fewer than two are fresh */
Test(draft, step_cost_is_estimated_from_fresh_times)
{
    draft_cost c;
    draft_cost_init(&c);
    c.check_all = 0;
    cr_expect_float_eq(draft_cost_time(&c, 3), 1.0, 0, "nothing timed");
    /* one count timed: larger steps as dear (tried next), smaller ones their share */
    draft_cost_add(&c, 4, 0.4);
    cr_expect_float_eq(draft_cost_time(&c, 1), 0.1, 1e-12);
    cr_expect_float_eq(draft_cost_time(&c, 3), 0.3, 1e-12);
    cr_expect_float_eq(draft_cost_time(&c, 8), 0.4, 1e-12);
    draft_cost_init(&c);
    c.check_all = 0;
    draft_cost_add(&c, 1, 0.1);
    for (int r = 1; r <= 8; r++)
        cr_expect_float_eq(draft_cost_time(&c, r), 0.1, 1e-12, "one count timed: %d rows", r);
    draft_cost_add(&c, 4, 0.4);
    double want[] = {0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6};
    for (int r = 1; r <= 6; r++)
        cr_expect_float_eq(draft_cost_time(&c, r), want[r], 1e-12, "%d rows: %f", r,
                           draft_cost_time(&c, r));
    cr_expect_float_eq(draft_cost_time(&c, 100), 0.1 + 0.1 * 99, 1e-9, "past the table");
    draft_cost_add(&c, 1, 0.2);     /* a moving average */
    cr_expect_float_eq(draft_cost_time(&c, 1), 0.75 * 0.1 + 0.25 * 0.2, 1e-12);
    draft_cost_add(&c, 4, 4.0);     /* a step held up: counted as twice the average */
    cr_expect_float_eq(draft_cost_time(&c, 4), 0.75 * 0.4 + 0.25 * 0.8, 1e-12, "%f",
                       draft_cost_time(&c, 4));
    draft_cost_add(&c, 4, 0.4);
    cr_expect_float_eq(draft_cost_time(&c, 4), 0.75 * 0.5 + 0.25 * 0.4, 1e-12);
    /* a count below the first fresh one: the line continued down, never below 0 */
    draft_cost_add(&c, 3, 0.3);
    cr_expect_float_eq(draft_cost_time(&c, 2), (draft_cost_time(&c, 1) + 0.3) / 2, 1e-12);
    /* a slower pair of larger steps than smaller ones (noise) does not make
     * still larger ones cheaper */
    draft_cost d;
    draft_cost_init(&d);
    d.check_all = 0;
    draft_cost_add(&d, 2, 0.5);
    draft_cost_add(&d, 3, 0.4);
    cr_expect_float_eq(draft_cost_time(&d, 6), 0.4, 1e-12);
    cr_expect_float_eq(draft_cost_time(&d, 1), 0.5, 1e-12);
    /* counts not timed for DRAFT_COST_FRESH steps are estimated again */
    for (int i = 0; i < DRAFT_COST_FRESH; i++)
        draft_cost_add(&c, 1, 0.1);
    cr_expect_float_eq(draft_cost_time(&c, 4), draft_cost_time(&c, 1), 1e-12,
                       "4 rows, not timed for %d steps: %f", DRAFT_COST_FRESH,
                       draft_cost_time(&c, 4));
    draft_cost_add(&c, 4, 0.9);     /* a stale time is replaced, not averaged */
    cr_expect_float_eq(draft_cost_time(&c, 4), 0.9, 1e-12);
    draft_cost_add(&c, DRAFT_COST_ROWS + 1, 5.0);   /* not kept */
    cr_expect_float_eq(draft_cost_time(&c, 4), 0.9, 1e-12);
    c.check_all = 1;
    cr_expect_float_eq(draft_cost_time(&c, 4), 1.0, 0, "check_all: every step costs the same");
}

static double step_value(const draft_cost *c, const double *chance, const int *g, int n)
{
    double tokens = n;
    int rows = n;
    for (int i = 0; i < n; i++) {
        double all = 1;
        for (int j = 0; j < g[i]; j++) {
            all *= chance[i * DRAFT_GUESS_MAX + j];
            tokens += all;
        }
        rows += g[i];
    }
    return tokens / draft_cost_time(c, rows);
}

Test(draft, choice_checks_guesses_where_they_pay)
{
    double p[1][DRAFT_GUESS_MAX] = {{0.9, 0.9, 0.9}};
    draft_cost c;
    draft_cost_init(&c);
    c.check_all = 0;
    int avail = 3, g;
    cr_expect_eq(draft_choose(&c, p[0], &avail, 1, 3, &g), 3, "nothing timed: every guess");
    draft_cost_add(&c, 4, 0.4);
    cr_expect_eq(draft_choose(&c, p[0], &avail, 1, 3, &g), 0, "only 4 rows timed: a row alone next");
    draft_cost_init(&c);
    c.check_all = 0;
    draft_cost_add(&c, 1, 1.0);
    draft_cost_add(&c, 4, 4.0);     /* each row as dear as the first: none pays */
    cr_expect_eq(draft_choose(&c, p[0], &avail, 1, 3, &g), 0);
    draft_cost_init(&c);
    c.check_all = 0;
    draft_cost_add(&c, 1, 1.0);
    draft_cost_add(&c, 4, 2.0);     /* a row a third of the first */
    cr_expect_eq(draft_choose(&c, p[0], &avail, 1, 3, &g), 3, "2.439 more tokens for twice the time");
    p[0][0] = 0.2;
    cr_expect_eq(draft_choose(&c, p[0], &avail, 1, 3, &g), 0, "a first guess kept one time in 5");
    cr_expect_eq(draft_choose(&c, p[0], &avail, 1, 0, &g), 0, "no room");
    avail = 0;
    cr_expect_eq(draft_choose(&c, p[0], &avail, 1, 3, &g), 0, "no guesses");
    c.check_all = 1;
    avail = 2;
    cr_expect_eq(draft_choose(&c, p[0], &avail, 1, 3, &g), 2, "check_all: every guess found");
}

/* The choice against every split of the room, for random chances, guesses
 * found and step times */
Test(draft, choice_is_the_best_split)
{
    srand(7);
    for (int trial = 0; trial < 3000; trial++) {
        int n = 1 + rand() % 4, room = rand() % 14 - 1, avail[4], g[4];
        double p[4][DRAFT_GUESS_MAX];
        for (int i = 0; i < n; i++) {
            for (int j = 0; j < DRAFT_GUESS_MAX; j++)
                p[i][j] = (rand() % 1001) / 1000.0;
            avail[i] = rand() % (DRAFT_GUESS_MAX + 1);
        }
        draft_cost c;
        draft_cost_init(&c);
        c.check_all = 0;
        for (int r = 1; r <= 16; r++)
            if (rand() % 3 == 0)
                draft_cost_add(&c, r, 0.05 + (rand() % 1000) / 1000.0 * r);
        int k = draft_choose(&c, p[0], avail, n, room, g), sum = 0;
        for (int i = 0; i < n; i++) {
            cr_assert(g[i] >= 0 && g[i] <= avail[i], "trial %d: %d of %d guesses", trial, g[i],
                      avail[i]);
            sum += g[i];
        }
        cr_assert(sum == k && k <= (room > 0 ? room : 0), "trial %d: %d guesses, %d returned, room %d",
                  trial, sum, k, room);
        double got = step_value(&c, p[0], g, n), best = 0;
        int try[4] = {0, 0, 0, 0};
        for (;;) {      /* every split */
            int total = 0;
            for (int i = 0; i < n; i++)
                total += try[i];
            if (total <= room || total == 0) {
                double v = step_value(&c, p[0], try, n);
                best = v > best ? v : best;
            }
            int i = 0;
            while (i < n && try[i] == avail[i])
                try[i++] = 0;
            if (i == n)
                break;
            try[i]++;
        }
        cr_assert(got >= best * (1 - 1e-12), "trial %d: %.9f tokens a second, %.9f possible",
                  trial, got, best);
    }
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
        int got = draft_lookup_step(&m.en, 8, 3, cases[k].left, out, NULL);
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
        cr_assert_eq(engine_decode_tokens(&m.en, ids, T, got, NULL, &e), 0, "%s", e.msg);
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
    draft_accept learned;       /* what the tuner learned of the guesses */
} answer;

/* The answer to the prompt with up to `draft` guesses a step (all of them
 * checked, or as the tuner picks them), and what it leaves. */
static answer generate_with(const char *dir, int ctx, int max_new, float temp, uint64_t seed,
                            int draft, int tuned)
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
    draft_tuner tuner;
    draft_tuner_init(&tuner);
    tuner.cost.check_all = !tuned;
    gen_params gp = {.max_new = max_new, .draft = draft, .draft_stats = &a.st, .tuner = &tuner};
    a.rc = generate(&m, NULL, &s, a.logits, &gp, &a.ids, &e);
    a.learned = tuner.accept;
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

/* got, an answer with guesses, is want, the one without */
static void expect_same(const answer *got, const answer *want, size_t V, const char *what)
{
    cr_expect_eq(got->rc, want->rc, "%s: returned %d, without guesses %d", what, got->rc, want->rc);
    cr_assert_eq(got->ids.n, want->ids.n, "%s: %zu tokens, without guesses %zu", what, got->ids.n,
                 want->ids.n);
    cr_expect(memcmp(got->ids.ids, want->ids.ids, got->ids.n * sizeof(int)) == 0,
              "%s: another answer", what);
    /* the cache holds the answer but its last token, and the logits are the
     * distribution that token was drawn from */
    cr_assert_eq(got->n_past, want->n_past, "%s: %d cached positions, without guesses %d", what,
                 got->n_past, want->n_past);
    cr_expect(memcmp(got->cached, want->cached, (size_t)got->n_past * sizeof(int)) == 0,
              "%s: other ids cached", what);
    cr_expect_eq(got->decoded, want->decoded, "%s: %llu tokens counted as decoded, without guesses %llu",
                 what, got->decoded, want->decoded);
    cr_expect(memcmp(got->logits, want->logits, V * sizeof(float)) == 0, "%s: other last logits",
              what);
}

/* The answer with guesses, every one checked and as the tuner picks them, is
 * the one without, all ending as want_rc says (0: the length limit;
 * GEN_CONTEXT_FULL); returns how many guesses were kept checking all. */
static unsigned long long same_answer(const char *dir, int ctx, int max_new, float temp,
                                      uint64_t seed, int want_rc, size_t V, const char *what)
{
    answer want = generate_with(dir, ctx, max_new, temp, seed, 0, 0);
    cr_expect_eq(want.rc, want_rc, "%s: returned %d without guesses, expected %d", what, want.rc,
                 want_rc);
    unsigned long long kept = 0;
    for (int tuned = 0; tuned < 2; tuned++) {
        answer got = generate_with(dir, ctx, max_new, temp, seed, ENGINE_DRAFT_MAX_T - 1, tuned);
        char what_how[128];
        snprintf(what_how, sizeof what_how, "%s, %s", what, tuned ? "tuned" : "every guess checked");
        expect_same(&got, &want, V, what_how);
        kept += tuned ? 0 : got.st.accepted;
        /* the loop teaches the tuner: every kept guess was a first guess kept once */
        double first_kept = 0;
        for (int c = 0; c < DRAFT_MATCH_CLASSES; c++)
            first_kept += got.learned.kept[c][0];
        cr_expect(tuned || first_kept > 0 || !got.st.accepted,
                  "%s: %llu guesses kept, none learned", what_how, got.st.accepted);
        answer_free(&got);
    }
    answer_free(&want);
    return kept;
}

/* a synthetic model for the answers; its vocabulary in *V (each case must keep
 * some guesses, or it checks nothing; the cases are tests of their own, so
 * that they run side by side) */
static char *answer_model(size_t *V)
{
    char *dir = test_make_tmpdir("draft_generate");
    test_synth_tiny(dir, "int4");
    cli_model m;
    open_model(&m, dir, CTX);
    *V = (size_t)m.mw.cfg.vocab_size;
    cli_model_close(&m);
    return dir;
}

static void answer_model_free(char *dir)
{
    test_remove_tree(dir);
    free(dir);
}

Test(draft, generate_answers_as_without_guesses, .timeout = 120)
{
    size_t V;
    char *dir = answer_model(&V);
    cr_expect(same_answer(dir, CTX, 400, 0.0f, 0, 0, V, "greedy") > 0, "greedy: no guess kept");
    answer_model_free(dir);
}

Test(draft, sampled_answers_as_without_guesses, .timeout = 120)
{
    size_t V;
    char *dir = answer_model(&V);
    unsigned long long kept = 0;
    int seeds = test_rounds(4);
    for (uint64_t seed = 1; seed <= (uint64_t)seeds; seed++)
        kept += same_answer(dir, CTX, 400, 0.3f, seed, 0, V, "sampled");
    cr_expect(kept > 0, "sampled with %d seeds: no guess kept", seeds);
    answer_model_free(dir);
}

/* the context fills up while guesses are in the cache; the sizes swept
 * include, for this model, one filled by a step whose guesses were all kept
 * (the last token then drawn from that step's rows, not from logits) */
Test(draft, an_answer_that_fills_the_context_as_without_guesses, .timeout = 120)
{
    size_t V;
    char *dir = answer_model(&V);
    /* (under the sanitizers, which look for memory errors, one size: each
     * takes seconds there) */
    for (int extra = 0; extra < (test_sanitized() ? 1 : 12); extra++) {
        char what[64];
        snprintf(what, sizeof what, "a full context of %d", PROMPT_N + 300 + extra);
        cr_expect(same_answer(dir, PROMPT_N + 300 + extra, 400, 0.0f, 0, GEN_CONTEXT_FULL, V, what) > 0,
                  "%s: no guess kept", what);
    }
    answer_model_free(dir);
}
