/* cmd_trace: `moetier trace import|stats|replay` over routing traces
 * (prefetch/routing_trace.h, prefetch/cache_sim.h). */
#include <cJSON.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli_common.h"
#include "core/base/decimal.h"
#include "core/base/fileutil.h"
#include "commands.h"
#include "prefetch/cache_sim.h"
#include "tiers/cache_policy.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: moetier trace import --csv FILE -o TRACE\n"
               "       moetier trace stats TRACE\n"
               "       moetier trace replay TRACE --policy P --cache N [--shared] [--in-order]\n"
               "                            [--chunk T] [--json]\n"
               "  import   reads the CSV of a routing trace (prompt,token,layer,experts; FILE may\n"
               "           be - for standard input, e.g. xz -dc F.csv.xz | moetier trace import\n"
               "           --csv - -o F.trace) into the compact lz4 trace format\n"
               "  stats    popularity skew and reuse across tokens\n"
               "  replay   simulates an expert cache on the trace: hits, misses and hit rate of\n"
               "           the policy next to Belady's optimum (with bypass) on the same trace\n"
               "  --policy P   lru (default; resists the scans of prefill steps larger than the\n"
               "               cache), lru-plain (LRU without that), lfu (frequency with\n"
               "               aging), lfu:H (half-life of H accesses of each layer; 128 by\n"
               "               default)\n"
               "  --cache N    experts per layer (N%% of a layer's experts with a %% sign); with\n"
               "               --shared, one cache of N experts for all layers (N%%: of\n"
               "               the experts of every layer the trace routes in)\n"
               "  --in-order   an event takes its experts one request after another in\n"
               "               ascending id (a plain per-request cache); by default those\n"
               "               already cached first, as the DRAM tier takes a layer's experts\n"
               "  --chunk T    steps of T tokens of a stream, as prefill runs them: each\n"
               "               layer of a step takes the union of its tokens' experts at\n"
               "               once (default 1, decode; Belady is computed only then)\n"
               "  --json       one JSON object: policy, cache, shared, order, chunk, hits,\n"
               "               misses, hit_rate, requests, and with --chunk 1 belady_hits,\n"
               "               belady_hit_rate\n");
}

static int cmd_import(int argc, char **argv)
{
    const char *csv = NULL, *out = NULL;
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--csv") && i + 1 < argc)
            csv = argv[++i];
        else if (!strcmp(argv[i], "-o") && i + 1 < argc)
            out = argv[++i];
        else {
            fprintf(stderr, "moetier trace import: unexpected '%s'\n", argv[i]);
            return 2;
        }
    }
    if (!csv || !out) {
        fprintf(stderr, "moetier trace import: --csv FILE and -o TRACE are required\n");
        return 2;
    }
    if (strcmp(csv, "-") && file_same(csv, out)) {
        fprintf(stderr, "moetier trace import: -o %s is the --csv file: the trace would replace "
                "it; give another path\n", out);
        return 2;
    }
    FILE *in = strcmp(csv, "-") ? fopen(csv, "r") : stdin;
    if (!in) {
        perror(csv);
        return 1;
    }
    routing_trace t;
    errbuf e;
    int rc = trace_import_csv(&t, in, strcmp(csv, "-") ? csv : "standard input", &e);
    if (in != stdin)
        fclose(in);
    if (rc == 0 && trace_write(&t, out, &e) == 0)
        fprintf(stderr, "moetier: %llu events, %u layers, %u experts, top-%u -> %s\n",
                (unsigned long long)t.n, trace_layers_routed(&t), t.n_experts, t.top_k, out);
    else
        rc = -1;
    trace_free(&t);
    return rc ? cli_fail(&e) : 0;
}

static int cmd_stats(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "moetier trace stats: give one TRACE\n");
        return 2;
    }
    routing_trace t;
    trace_stats s;
    errbuf e;
    if (trace_read(&t, argv[2], &e))
        return cli_fail(&e);
    int rc = trace_compute_stats(&t, &s, &e);
    if (rc == 0) {
        printf("events       %llu (%llu tokens in %llu streams), %u layers of %u experts, top-%u\n",
               (unsigned long long)s.events, (unsigned long long)s.tokens,
               (unsigned long long)s.streams, trace_layers_routed(&t), t.n_experts, t.top_k);
        printf("popularity   the 10%% most used experts of a layer get %.1f%% of its requests "
               "(uniform: 10%%)\n", 100 * s.top10_share);
        printf("reuse        the next token reuses %.1f%% of a token's experts in a layer "
               "(uniform: %.1f%%)\n", 100 * s.lag1_reuse, 100 * s.uniform_lag1);
        if (t.flags & TRACE_FLAG_TIERS) {
            uint64_t all = s.origin[0] + s.origin[1] + s.origin[2] + s.origin[3];
            double d = all ? 100.0 / (double)all : 0;
            printf("found        DRAM %.1f%%, read from the store %.1f%%, read early on a "
                   "prediction %.1f%%, checkpoint mapping %.1f%%\n", d * (double)s.origin[1],
                   d * (double)s.origin[2], d * (double)s.origin[3], d * (double)s.origin[0]);
            printf("store        %.1f MB read, %.1f ms waited (%.3f ms per token and layer)\n",
                   s.bytes / 1e6, 1e3 * s.stall_s, s.events ? 1e3 * s.stall_s / (double)s.events : 0);
        }
        int any = 0;
        for (uint32_t d = 0; d < t.depth; d++) {
            if (!s.pred_chosen[d])
                continue;
            any = 1;
            printf("predictions  %u layer%s ahead: recall %.1f%%, precision %.1f%% (%llu of %llu "
                   "chosen experts predicted, %llu predicted)\n", d + 1, d ? "s" : "",
                   100.0 * (double)s.pred_hits[d] / (double)s.pred_chosen[d],
                   s.pred_made[d] ? 100.0 * (double)s.pred_hits[d] / (double)s.pred_made[d] : 0.0,
                   (unsigned long long)s.pred_hits[d], (unsigned long long)s.pred_chosen[d],
                   (unsigned long long)s.pred_made[d]);
        }
        if (!any)
            printf("predictions  none recorded in this trace (record with --lookahead N)\n");
    }
    trace_free(&t);
    return rc ? cli_fail(&e) : 0;
}

static int cmd_replay(int argc, char **argv)
{
    const char *path = NULL, *policy = "lru", *cache_s = NULL;
    int shared = 0, json = 0, chunk = 1;
    sim_order order = SIM_HITS_FIRST;
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--policy") && i + 1 < argc)
            policy = argv[++i];
        else if (!strcmp(argv[i], "--chunk") && i + 1 < argc) {
            char *end;
            long v = strtol(argv[++i], &end, 10);
            if (end == argv[i] || *end || v < 1 || v > INT_MAX) {
                fprintf(stderr, "moetier trace replay: --chunk expects a number of tokens >= 1, "
                        "got '%s'\n", argv[i]);
                return 2;
            }
            chunk = (int)v;
        }
        else if (!strcmp(argv[i], "--cache") && i + 1 < argc)
            cache_s = argv[++i];
        else if (!strcmp(argv[i], "--shared"))
            shared = 1;
        else if (!strcmp(argv[i], "--json"))
            json = 1;
        else if (!strcmp(argv[i], "--in-order"))
            order = SIM_IN_ORDER;
        else if (argv[i][0] != '-' && !path)
            path = argv[i];
        else {
            fprintf(stderr, "moetier trace replay: unexpected '%s'\n", argv[i]);
            return 2;
        }
    }
    if (!path || !cache_s) {
        fprintf(stderr, "moetier trace replay: TRACE and --cache N are required\n");
        return 2;
    }
    if (!cache_policy_name_ok(policy)) {
        fprintf(stderr, "moetier trace replay: --policy expects lru, lru-plain, lfu or lfu:H, got "
                "'%s'\n", policy);
        return 2;
    }
    char *end;
    errno = 0;
    double v = decimal_parse(cache_s, &end);
    int percent = *end == '%';
    if (errno || end == cache_s || (*end && !(percent && !end[1])) || !(v > 0) || !isfinite(v)) {
        fprintf(stderr, "moetier: --cache expects a positive number of experts or a percentage, "
                        "got '%s'\n", cache_s);
        return 2;
    }
    routing_trace t;
    errbuf e;
    if (trace_read(&t, path, &e))
        return cli_fail(&e);
    /* a cache larger than every expert the trace can want holds them all */
    double all = (double)t.n_experts * (shared ? trace_layers_routed(&t) : 1);
    double per = percent ? v / 100.0 * all : v;
    int cache = (int)((per < all ? per : all) + 0.5);
    sim_result r, b = {0, 0};
    int rc = sim_replay(&t, policy, cache, shared, order, chunk, &r, &e);
    if (!rc && chunk == 1)
        rc = sim_belady(&t, cache, shared, &b, &e);
    if (!rc && json) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "policy", policy);
        cJSON_AddNumberToObject(j, "cache", cache);
        cJSON_AddBoolToObject(j, "shared", shared);
        cJSON_AddStringToObject(j, "order", order == SIM_IN_ORDER ? "in_order" : "hits_first");
        cJSON_AddNumberToObject(j, "chunk", chunk);
        cJSON_AddNumberToObject(j, "requests", (double)(r.hits + r.misses));
        cJSON_AddNumberToObject(j, "hits", (double)r.hits);
        cJSON_AddNumberToObject(j, "misses", (double)r.misses);
        cJSON_AddNumberToObject(j, "hit_rate", sim_hit_rate(&r));
        if (chunk == 1) {
            cJSON_AddNumberToObject(j, "belady_hits", (double)b.hits);
            cJSON_AddNumberToObject(j, "belady_hit_rate", sim_hit_rate(&b));
        }
        char *s = cJSON_PrintUnformatted(j);
        printf("%s\n", s);
        free(s);
        cJSON_Delete(j);
    } else if (!rc) {
        printf("cache %d experts %s, policy %s%s: %llu hits, %llu misses, hit rate %.4f", cache,
               shared ? "shared by all layers" : "per layer", policy,
               order == SIM_IN_ORDER ? " (in order)" : "", (unsigned long long)r.hits,
               (unsigned long long)r.misses, sim_hit_rate(&r));
        if (chunk == 1)
            printf("; Belady (with bypass) %.4f; policy / Belady %.3f\n", sim_hit_rate(&b),
                   sim_hit_rate(&b) > 0 ? sim_hit_rate(&r) / sim_hit_rate(&b) : 0.0);
        else
            printf(" in steps of %d tokens\n", chunk);
    }
    trace_free(&t);
    return rc ? cli_fail(&e) : 0;
}

int cmd_trace(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    for (int i = 1; i < argc; i++)     /* `trace stats --help` as well as `trace --help` */
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage(stdout);
            return 0;
        }
    if (!strcmp(argv[1], "import"))
        return cmd_import(argc, argv);
    if (!strcmp(argv[1], "stats"))
        return cmd_stats(argc, argv);
    if (!strcmp(argv[1], "replay"))
        return cmd_replay(argc, argv);
    fprintf(stderr, "moetier trace: unknown subcommand '%s' (import, stats, replay)\n", argv[1]);
    return 2;
}
