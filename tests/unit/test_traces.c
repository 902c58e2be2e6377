/* Routing traces and cache replay.
 *
 * Generated traces: streams of tokens; in every (token, layer) each of the top_k
 * experts is, with probability `reuse`, one the same stream used in that layer at
 * the previous token, else drawn from a Zipf(`skew`) popularity over the layer's
 * experts (a different random ranking per layer); the experts of one event are
 * distinct. skew 0 and reuse 0 is uniform routing. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "prefetch/cache_sim.h"
#include "reference_lru.h"
#include "testutil.h"

static uint64_t rng_state;

static double urand(void)
{
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(rng_state >> 11) / 9007199254740992.0;
}

static void generate(routing_trace *t, int layers, int experts, int k, int streams, int tokens,
                     double skew, double reuse, int weights, uint64_t seed)
{
    errbuf e;
    rng_state = seed;
    cr_assert_eq(trace_init(t, (uint32_t)layers, (uint32_t)experts, (uint32_t)k,
                            weights ? TRACE_FLAG_WEIGHTS : 0, 0, &e), 0, "%s", e.msg);
    double *cdf = malloc((size_t)experts * sizeof *cdf);
    int *rank = malloc((size_t)layers * experts * sizeof *rank);
    uint16_t *prev = calloc((size_t)layers * k, sizeof *prev);
    double sum = 0;
    for (int i = 0; i < experts; i++)
        cdf[i] = sum += 1.0 / pow(i + 1, skew);
    for (int l = 0; l < layers; l++) {
        int *r = rank + (size_t)l * experts;
        for (int i = 0; i < experts; i++)
            r[i] = i;
        for (int i = experts - 1; i > 0; i--) {
            int j = (int)(urand() * (i + 1));
            int tmp = r[i];
            r[i] = r[j];
            r[j] = tmp;
        }
    }
    for (int s = 0; s < streams; s++)
        for (int tok = 0; tok < tokens; tok++)
            for (int l = 0; l < layers; l++) {
                uint16_t ex[16];
                float w[16];
                for (int j = 0; j < k; j++) {
                    int x, dup;
                    do {
                        if (tok > 0 && urand() < reuse) {
                            x = prev[(size_t)l * k + (size_t)(urand() * k)];
                        } else {
                            double u = urand() * sum;
                            int i = 0;
                            while (cdf[i] < u)
                                i++;
                            x = rank[(size_t)l * experts + i];
                        }
                        dup = 0;
                        for (int q = 0; q < j; q++)
                            dup |= ex[q] == x;
                    } while (dup);
                    ex[j] = (uint16_t)x;
                    w[j] = (float)urand();
                }
                memcpy(prev + (size_t)l * k, ex, (size_t)k * sizeof *ex);
                cr_assert_eq(trace_append(t, (uint32_t)s, (uint32_t)tok, (uint16_t)l, ex, w, &e), 0,
                             "%s", e.msg);
            }
    free(cdf);
    free(rank);
    free(prev);
}

Test(traces, file_round_trip)
{
    routing_trace t, u;
    errbuf e;
    generate(&t, 5, 40, 4, 3, 30000, 1.0, 0.3, 1, 7);  /* > one chunk of events */
    char *dir = test_make_tmpdir("trace");
    char path[4200];
    snprintf(path, sizeof path, "%s/a.trace", dir);
    cr_assert_eq(trace_write(&t, path, &e), 0, "%s", e.msg);
    cr_assert_eq(trace_read(&u, path, &e), 0, "%s", e.msg);
    cr_assert_eq(u.n, t.n);
    cr_assert(u.n_layers == 5 && u.n_experts == 40 && u.top_k == 4 && u.flags == TRACE_FLAG_WEIGHTS);
    cr_expect(!memcmp(t.stream, u.stream, t.n * 4) && !memcmp(t.token, u.token, t.n * 4) &&
              !memcmp(t.layer, u.layer, t.n * 2) && !memcmp(t.experts, u.experts, t.n * 4 * 2) &&
              !memcmp(t.weights, u.weights, t.n * 4 * 4), "events differ after a round trip");
    trace_free(&u);

    /* damage: a flipped byte in the data, a truncation, another file type */
    size_t n;
    unsigned char *bytes = test_read_file(path, &n);
    bytes[n / 2] ^= 0x10;
    FILE *f = fopen(path, "wb");
    fwrite(bytes, 1, n, f);
    fclose(f);
    cr_expect_neq(trace_read(&u, path, &e), 0);
    cr_expect(strstr(e.msg, "damaged") || strstr(e.msg, "sizes"), "%s", e.msg);
    bytes[n / 2] ^= 0x10;
    f = fopen(path, "wb");
    fwrite(bytes, 1, n - 100, f);
    fclose(f);
    cr_expect_neq(trace_read(&u, path, &e), 0);
    cr_expect(strstr(e.msg, "truncated") != NULL, "%s", e.msg);
    f = fopen(path, "wb");
    fwrite("prompt,token,layer,experts\n", 1, 27, f);
    fclose(f);
    cr_expect_neq(trace_read(&u, path, &e), 0);
    cr_expect(strstr(e.msg, "not a moetier routing trace") != NULL, "%s", e.msg);
    free(bytes);
    trace_free(&t);
    test_remove_tree(dir);
    free(dir);
}

/* Tier and prediction fields survive a round trip; a version-1 file (no such
 * fields) still reads; an origin outside 0..3 is refused. */
Test(traces, tiers_and_predictions_round_trip)
{
    routing_trace t, u;
    errbuf e;
    cr_assert_eq(trace_init(&t, 3, 20, 4, TRACE_FLAG_TIERS | TRACE_FLAG_PREDICTED, 3, &e), 0, "%s",
                 e.msg);
    cr_expect_neq(trace_init(&u, 3, 20, 4, TRACE_FLAG_PREDICTED, 9, &e), 0, "depth 9 accepted");
    rng_state = 5;
    for (int i = 0; i < 70000; i++) {      /* more than one chunk */
        uint16_t x[4] = {(uint16_t)(i % 20), (uint16_t)((i + 3) % 20), (uint16_t)((i + 7) % 20),
                         (uint16_t)((i + 11) % 20)};
        cr_assert_eq(trace_append(&t, 0, (uint32_t)(i / 3), (uint16_t)(i % 3), x, NULL, &e), 0);
        uint8_t org[4];
        for (int k = 0; k < 4; k++)
            org[k] = (uint8_t)(urand() * 4);
        trace_set_tiers(&t, t.n - 1, org, (uint32_t)(urand() * 4e9), (float)urand());
        for (uint32_t d = 1; d <= 3; d++) {
            uint64_t mask = (uint64_t)(urand() * 16);
            int hit = __builtin_popcountll(mask);
            trace_set_predicted(&t, t.n - 1, d, mask, (uint16_t)(hit + urand() * (20 - hit)));
        }
    }
    char *dir = test_make_tmpdir("trace2");
    char path[4200];
    snprintf(path, sizeof path, "%s/b.trace", dir);
    cr_assert_eq(trace_write(&t, path, &e), 0, "%s", e.msg);
    cr_assert_eq(trace_read(&u, path, &e), 0, "%s", e.msg);
    cr_assert(u.n == t.n && u.depth == 3 && u.flags == t.flags);
    cr_expect(!memcmp(t.origin, u.origin, t.n * 4) && !memcmp(t.bytes, u.bytes, t.n * 4) &&
              !memcmp(t.stall, u.stall, t.n * 4) && !memcmp(t.pred_mask, u.pred_mask, t.n * 3 * 8) &&
              !memcmp(t.pred_count, u.pred_count, t.n * 3 * 2), "fields differ after a round trip");
    trace_free(&u);
    /* a prediction that names more of the event's experts than were predicted,
     * or experts it does not have, is refused */
    uint64_t masks[] = {0x7, 0x10}, counts[] = {2, 5};
    for (int k = 0; k < 2; k++) {
        trace_set_predicted(&t, 5, 2, masks[k], (uint16_t)counts[k]);
        cr_assert_eq(trace_write(&t, path, &e), 0, "%s", e.msg);
        cr_expect_neq(trace_read(&u, path, &e), 0, "mask %#llx of %llu accepted",
                      (unsigned long long)masks[k], (unsigned long long)counts[k]);
        cr_expect(strstr(e.msg, "event 5: prediction 2") != NULL, "%s", e.msg);
    }
    trace_free(&t);

    /* a version-1 file: the header's version field set back, no new flags */
    routing_trace v;
    generate(&v, 2, 10, 2, 1, 50, 0.5, 0.2, 1, 3);
    cr_assert_eq(trace_write(&v, path, &e), 0, "%s", e.msg);
    size_t n;
    unsigned char *bytes = test_read_file(path, &n);
    bytes[8] = 1;
    FILE *f = fopen(path, "wb");
    fwrite(bytes, 1, n, f);
    fclose(f);
    cr_expect_eq(trace_read(&u, path, &e), 0, "version 1 refused: %s", e.msg);
    cr_expect_eq(u.n, v.n);
    trace_free(&u);
    bytes[12] |= TRACE_FLAG_TIERS;     /* version 1 never had tier fields */
    f = fopen(path, "wb");
    fwrite(bytes, 1, n, f);
    fclose(f);
    cr_expect_neq(trace_read(&u, path, &e), 0, "a version-1 file with tier flags was read");
    free(bytes);
    trace_free(&v);

    /* an origin of 7 in an otherwise valid file */
    cr_assert_eq(trace_init(&t, 1, 4, 1, TRACE_FLAG_TIERS, 0, &e), 0, "%s", e.msg);
    uint16_t x0 = 2;
    cr_assert_eq(trace_append(&t, 0, 0, 0, &x0, NULL, &e), 0);
    uint8_t bad = 7;
    t.origin[0] = bad;
    cr_assert_eq(trace_write(&t, path, &e), 0, "%s", e.msg);
    cr_expect_neq(trace_read(&u, path, &e), 0, "origin 7 accepted");
    cr_expect(strstr(e.msg, "origin 7"), "%s", e.msg);
    trace_free(&t);
    test_remove_tree(dir);
    free(dir);
}

static int import_text(routing_trace *t, const char *text, errbuf *e)
{
    FILE *f = fmemopen((void *)text, strlen(text), "r");
    int rc = trace_import_csv(t, f, "test.csv", e);
    fclose(f);
    return rc;
}

Test(traces, csv_import_and_errors)
{
    routing_trace t;
    errbuf e;
    cr_assert_eq(import_text(&t, "prompt,token,layer,experts\n1,0,1,8 26 56\n1,0,2,3 35 9\n"
                             "1,1,1,8 2 1\n", &e), 0, "%s", e.msg);
    cr_expect(t.n == 3 && t.top_k == 3 && t.n_layers == 3 && t.n_experts == 57);
    cr_expect(t.experts[3] == 3 && t.experts[8] == 1 && t.token[2] == 1);
    trace_free(&t);
    /* CRLF line ends and a blank last line are CSV too */
    cr_assert_eq(import_text(&t, "prompt,token,layer,experts\r\n1,0,1,8 26\r\n\n", &e), 0, "%s",
                 e.msg);
    cr_expect(t.n == 1 && t.experts[1] == 26);
    trace_free(&t);
    /* a new prompt starts its tokens again */
    cr_assert_eq(import_text(&t, "prompt,token,layer,experts\n1,7,1,8\n2,0,1,9\n", &e), 0, "%s",
                 e.msg);
    trace_free(&t);
    const char *bad[][2] = {
        {"prompt,token,layer\n", "line 1"},
        {"prompt,token,layer,expertsGARBAGE\n1,0,1,8\n", "line 1"},
        {"prompt,token,layer,experts\n1,0,1,8 8\n", "twice"},
        {"prompt,token,layer,experts\n1,0,1,-3\n", "line 2"},
        {"prompt,token,layer,experts\n1,+0,1,3\n", "token"},
        {"prompt,token,layer,experts\n1,0,1,3\r2\n", "carriage return"},
        {"prompt,token,layer,experts\n1,0,1,3x\n", "line 2"},
        {"prompt,token,layer,experts\n0,0,0,0\n0,0,65535,65535\n",
         "layer 65535 on line 3) of 65536 experts (expert 65535 on line 3)"},
        /* a file cut short: the last line has no line end */
        {"prompt,token,layer,experts\n1,0,1,8 26\n1,0,2,3 5", "line 3 has no line end"},
        {"prompt,token,layer,experts\n0,0,1\n", "line 2: 3 fields, expected 4"},
        {"prompt,token,layer,experts\n1,0,1,8 26\n1,0,2,3\n", "line 3"},
        {"prompt,token,layer,experts\n1,x,1,8 26\n", "token"},
        {"prompt,token,layer,experts\n1,0,1,8 99999\n", "line 2"},
        {"prompt,token,layer,experts\n", "no events"},
        {"prompt,token,layer,experts\n1,0,1,3\n1,0,1,3\n", "line 3: token 0 layer 1 of prompt 1"},
        {"prompt,token,layer,experts\n1,5,1,3\n1,2,1,4\n", "each prompt's events must be in order"},
        {"prompt,token,layer,experts\n1,0,2,3\n1,0,1,4\n", "line 3"},
        {"prompt,token,layer,experts\n1,0,1,3\n2,0,1,4\n1,0,1,3\n", "prompt 1 come in more than one"},
        {"prompt,token,layer,experts\n1,0,1,\n", "line 2: no experts"},
        {"prompt,token,layer,experts\n1,0,70000,3\n", "layer) must be a number in 0..65535"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        cr_expect_neq(import_text(&t, bad[i][0], &e), 0, "case %zu accepted", i);
        cr_expect(strstr(e.msg, bad[i][1]) != NULL, "case %zu: '%s' lacks '%s'", i, e.msg, bad[i][1]);
    }
    /* a NUL byte is said to be one (it read as a line too long), and a line
     * too long is */
    static const char nul[] = "prompt,token,layer,experts\n1,0,1,3\n1,1,1,4\0 5\n";
    FILE *f = fmemopen((void *)nul, sizeof nul - 1, "r");
    cr_expect_neq(trace_import_csv(&t, f, "test.csv", &e), 0);
    fclose(f);
    cr_expect(strstr(e.msg, "line 3 holds a NUL byte") != NULL, "%s", e.msg);
    char *long_line = malloc(6000);
    int n = snprintf(long_line, 6000, "prompt,token,layer,experts\n1,0,1,3");
    memset(long_line + n, ' ', 5000);
    strcpy(long_line + n + 5000, "\n");
    cr_expect_neq(import_text(&t, long_line, &e), 0);
    cr_expect(strstr(e.msg, "line 2 is longer than") != NULL, "%s", e.msg);
    free(long_line);
}

Test(traces, lru_replay_matches_an_independent_lru)
{
    routing_trace t;
    errbuf e;
    generate(&t, 3, 32, 4, 4, 300, 0.8, 0.25, 0, 11);
    for (int shared = 0; shared < 2; shared++)
        for (int c = 4; c <= 32; c += 7)
            for (sim_order o = SIM_HITS_FIRST; o <= SIM_IN_ORDER; o++) {
                int cache = c * (shared ? 3 : 1);   /* one tier for the 3 layers */
                sim_result r;
                cr_assert_eq(sim_replay(&t, "lru", cache, shared, o, 1, &r, &e), 0, "%s", e.msg);
                cr_expect_eq(r.hits, reference_lru_hits(&t, cache, shared, o),
                             "cache %d%s, order %d", cache, shared ? " shared" : "", o);
                cr_expect_eq(r.hits + r.misses, t.n * t.top_k);
            }
    /* in order, steps of 4 tokens hold up to 16 experts a layer: a cache of 8
     * is refused up front, one of 16 replays */
    sim_result r;
    cr_expect_neq(sim_replay(&t, "lru", 8, 0, SIM_IN_ORDER, 4, &r, &e), 0);
    cr_expect(strstr(e.msg, "need a cache of 16") != NULL, "%s", e.msg);
    cr_expect_eq(sim_replay(&t, "lru", 16, 0, SIM_IN_ORDER, 4, &r, &e), 0, "%s", e.msg);
    trace_free(&t);
}

Test(traces, belady_beats_every_policy, .timeout = 120)
{
    const char *policies[] = {"lru", "lfu", "lfu:8", "lfu:1000"};
    struct { double skew, reuse; } shapes[] = {{0, 0}, {1.2, 0}, {0.6, 0.4}, {1.5, 0.7}};
    errbuf e;
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
        routing_trace t;
        generate(&t, 4, 48, 6, 3, 200, shapes[s].skew, shapes[s].reuse, 0, 100 + s);
        int sizes[] = {6, 12, 24, 47};
        for (int shared = 0; shared < 2; shared++)
            for (size_t c = 0; c < 4; c++) {
                int cache = sizes[c] * (shared ? 4 : 1);
                sim_result b;
                cr_assert_eq(sim_belady(&t, cache, shared, &b, &e), 0, "%s", e.msg);
                for (size_t p = 0; p < sizeof policies / sizeof *policies; p++)
                    for (sim_order o = SIM_HITS_FIRST; o <= SIM_IN_ORDER; o++) {
                        sim_result r;
                        cr_assert_eq(sim_replay(&t, policies[p], cache, shared, o, 1, &r, &e), 0,
                                     "%s", e.msg);
                        cr_expect_geq(b.hits, r.hits, "skew %.1f reuse %.1f cache %d%s: %s (order "
                                      "%d) %llu hits > Belady %llu", shapes[s].skew,
                                      shapes[s].reuse, cache, shared ? " shared" : "", policies[p],
                                      o, (unsigned long long)r.hits, (unsigned long long)b.hits);
                    }
            }
        trace_free(&t);
    }
}

Test(traces, generated_statistics_follow_their_parameters)
{
    routing_trace t;
    trace_stats s;
    errbuf e;
    generate(&t, 2, 64, 6, 2, 400, 0, 0, 0, 5);
    cr_assert_eq(trace_compute_stats(&t, &s, &e), 0, "%s", e.msg);
    cr_expect(fabs(s.lag1_reuse - 6.0 / 64) < 0.03, "uniform reuse %.3f", s.lag1_reuse);
    cr_expect(fabs(s.top10_share - 0.1) < 0.03, "uniform top-10%% share %.3f", s.top10_share);
    trace_free(&t);
    generate(&t, 2, 64, 6, 2, 400, 1.2, 0.5, 0, 5);
    cr_assert_eq(trace_compute_stats(&t, &s, &e), 0, "%s", e.msg);
    cr_expect(s.lag1_reuse > 0.4 && s.top10_share > 0.3, "skewed trace: reuse %.3f share %.3f",
              s.lag1_reuse, s.top10_share);
    trace_free(&t);
}

/* Tokens are what passed through the layers: a stream that goes on from a
 * prefix computed before (positions 30.. of a chat's second turn) counts its
 * own tokens, not its positions (it counted 32 for 2). */
Test(traces, statistics_count_the_tokens_computed)
{
    routing_trace t;
    trace_stats s;
    errbuf e;
    cr_assert_eq(import_text(&t, "prompt,token,layer,experts\n"
                             "1,0,1,1 2\n1,0,2,3 4\n1,1,1,1 5\n1,1,2,3 6\n1,2,1,1 2\n1,2,2,4 3\n"
                             "2,30,1,7 8\n2,30,2,7 9\n2,31,1,8 7\n2,31,2,9 1\n", &e), 0, "%s", e.msg);
    cr_assert_eq(trace_compute_stats(&t, &s, &e), 0, "%s", e.msg);
    cr_expect_eq(s.streams, 2);
    cr_expect_eq(s.events, 10);
    cr_expect_eq(s.tokens, 5, "%llu tokens", (unsigned long long)s.tokens);
    trace_free(&t);
    generate(&t, 3, 64, 6, 4, 100, 0, 0, 0, 7);
    cr_assert_eq(trace_compute_stats(&t, &s, &e), 0, "%s", e.msg);
    cr_expect_eq(s.tokens * 3, s.events, "%llu tokens, %llu events", (unsigned long long)s.tokens,
                 (unsigned long long)s.events);
    trace_free(&t);
}

/* The real trace's dev half against the figures its README gives (measured
 * independently on 800 random prompts of it). */
Test(traces, real_trace_dev_half, .timeout = 300)
{
    char *xz = test_data_path("routing-traces/dsv2lite-puffin-dev.csv.xz");
    if (!test_path_exists(xz))
        cr_skip_test("%s is absent (set MOETIER_TESTDATA to ../shared/testdata)", xz);
    char cmd[4400];
    snprintf(cmd, sizeof cmd, "xz -dc '%s'", xz);
    FILE *p = popen(cmd, "r");
    cr_assert(p);
    routing_trace t;
    errbuf e;
    int rc = trace_import_csv(&t, p, xz, &e);
    pclose(p);
    cr_assert_eq(rc, 0, "%s", e.msg);
    cr_expect(t.top_k == 6 && t.n_experts == 64 && t.n_layers == 27);
    sim_result lru, b, tier;
    cr_assert_eq(sim_replay(&t, "lru", 16, 0, SIM_IN_ORDER, 1, &lru, &e), 0, "%s", e.msg);
    cr_assert_eq(sim_belady(&t, 16, 0, &b, &e), 0, "%s", e.msg);
    cr_expect(fabs(sim_hit_rate(&lru) - 0.446) < 0.02, "LRU at 16 of 64: %.4f", sim_hit_rate(&lru));
    cr_expect(fabs(sim_hit_rate(&b) - 0.690) < 0.02, "Belady at 16 of 64: %.4f", sim_hit_rate(&b));
    /* the tier's order keeps an event's cached experts from its own misses */
    cr_assert_eq(sim_replay(&t, "lru", 16, 0, SIM_HITS_FIRST, 1, &tier, &e), 0, "%s", e.msg);
    cr_expect(sim_hit_rate(&tier) > sim_hit_rate(&lru) + 0.01, "LRU at 16 of 64: %.4f with the "
              "cached experts first, %.4f in order", sim_hit_rate(&tier), sim_hit_rate(&lru));
    trace_free(&t);
    free(xz);
}
