/* bench_prefetch: decode from the NVMe tier with a small DRAM tier, with and
 * without the router lookahead, in the same run.
 *
 * A synthetic model (Kimi K2's layout scaled to hidden 1024, 64 experts of
 * 1.8 MB in INT4, 8 layers) is written with its expert store once into the
 * scratch directory; then greedy decode of 64 tokens, one token per step, on one
 * thread (so there is compute to hide reads behind), with DRAM tiers of 3/8 and
 * 13/16 of the experts, alternating --lookahead 0, 1 and 2 over three rounds.
 * Prints one JSON line per run (stall seconds, tokens/s, hit rate, early reads
 * and how many were used) and per tier size a line with the medians and the
 * stall ratios against lookahead 0, the yardstick: the same run without it.
 *
 * Usage: bench_prefetch [DIR]; DIR defaults to $MOETIER_BENCH_DIR or
 * build/bench-scratch; the model is removed at the end. */
#include <cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/app/cli_common.h"
#include "core/base/fileutil.h"
#include "core/model/synth.h"
#include "tiers/store_writer.h"
#include "tiers/tiered_source.h"
#include "bench_model.h"

#define TOKENS 64
#define ROUNDS 3

typedef struct run_result {
    double stall_s, tok_s, hit_rate;
    uint64_t early, used;
} run_result;

static int run(const char *model, const char *store_dir, double gb, int lookahead, run_result *r,
               errbuf *e)
{
    cli_model m;
    model_flags f = {.dir = model, .ctx = TOKENS + 1, .chunk = 1, .quiet = 1, .threads = 1};
    f.tiers = (tier_flags){.store_dir = store_dir, .dram_gb = gb, .dram_gb_set = 1,
                           .lookahead = lookahead, .lookahead_set = 1};
    if (cli_model_open(&m, &f, e))
        return -1;
    int V = m.mw.cfg.vocab_size, id = 1, rc = 0;
    float *logits = malloc((size_t)V * sizeof *logits);
    for (int k = 0; k < TOKENS && !rc; k++) {
        rc = engine_decode(&m.en, id, logits, e);
        int b = 0;
        for (int i = 1; i < V; i++)
            b = logits[i] > logits[b] ? i : b;
        id = b;
    }
    memset(r, 0, sizeof *r);
    tier_layer_stats all;
    tiered_source_totals(&m.src, &all);
    uint64_t wanted = all.hits + all.early + all.misses;   /* (an early read is a read, no hit) */
    r->stall_s = all.stall_seconds;
    const tier_spec_stats *ss = tiered_source_spec_stats(&m.src);
    r->early = ss->reads;
    r->used = ss->used;
    r->hit_rate = wanted ? (double)all.hits / (double)wanted : 0;
    r->tok_s = m.en.stats.decode_seconds > 0 ? TOKENS / m.en.stats.decode_seconds : 0;
    free(logits);
    cli_model_close(&m);
    return rc;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median3(double *v)
{
    qsort(v, ROUNDS, sizeof *v, cmp_double);
    return v[ROUNDS / 2];
}

int main(int argc, char **argv)
{
    const char *base = argc > 1 ? argv[1] : getenv("MOETIER_BENCH_DIR");
    if (!base)
        base = "build/bench-scratch";
    char model[4096], store_dir[4200];
    snprintf(model, sizeof model, "%s/prefetch-model", base);
    snprintf(store_dir, sizeof store_dir, "%s/store", model);
    errbuf e;
    if (dir_ensure(base, &e))
        return fprintf(stderr, "bench_prefetch: %s\n", e.msg), 1;
    const char *sets[] = {"hidden_size=1024", "moe_intermediate_size=1024", "n_routed_experts=64",
                          "intermediate_size=2048", "n_group=1", "topk_group=1"};
    synth_options so = synth_options_default();
    so.out_dir = model;
    so.force = 1;
    so.layers = 8;
    so.sets = sets;
    so.n_sets = 6;
    if (synth_format_parse("int4", &so.format, &e) || synth_run(&so, &e))
        return fprintf(stderr, "bench_prefetch: synth: %s\n", e.msg), 1;
    model_weights mw;
    store_layout L;
    if (model_weights_open(&mw, model, &e))
        return fprintf(stderr, "bench_prefetch: %s\n", e.msg), 1;
    convert_options co = {.out_dir = store_dir};
    int moe = 0;
    for (int l = 0; l < mw.cfg.n_layers; l++)
        moe += mw.layers[l].is_moe;
    int rc = store_layout_for_model(&mw, &L, &e) || store_convert(&mw, &co, &e);
    int experts = moe * mw.cfg.n_routed_experts;
    model_weights_close(&mw);
    if (rc)
        return fprintf(stderr, "bench_prefetch: %s\n", e.msg), 1;
    const int looks[3] = {0, 1, 2};
    for (int size = 0; size < 2; size++) {
    int slots = size ? experts * 13 / 16 : experts * 3 / 8;
    double gb = (double)slots * (double)L.slot_bytes / 1e9 * 1.000001;
    double stall[3][ROUNDS], tps[3][ROUNDS];
    for (int round = 0; round < ROUNDS; round++)
        for (int k = 0; k < 3; k++) {
            run_result r;
            if (run(model, store_dir, gb, looks[k], &r, &e))
                return fprintf(stderr, "bench_prefetch: %s\n", e.msg), 1;
            stall[k][round] = r.stall_s;
            tps[k][round] = r.tok_s;
            printf("{\"bench\":\"prefetch\",\"lookahead\":%d,\"round\":%d,\"dram_slots\":%d,"
                   "\"experts\":%d,\"stall_s\":%.4f,\"decode_tok_s\":%.2f,\"hit_rate\":%.4f,"
                   "\"early_reads\":%llu,\"early_used\":%llu}\n", looks[k], round, slots, experts,
                   r.stall_s, r.tok_s, r.hit_rate, (unsigned long long)r.early,
                   (unsigned long long)r.used);
            fflush(stdout);
        }
    double s0 = median3(stall[0]), s1 = median3(stall[1]), s2 = median3(stall[2]);
    printf("{\"bench\":\"prefetch_summary\",\"dram_slots\":%d,\"experts\":%d,\"stall_s\":[%.4f,"
           "%.4f,%.4f],\"decode_tok_s\":[%.2f,%.2f,%.2f],\"stall_ratio_lookahead1\":%.3f,"
           "\"stall_ratio_lookahead2\":%.3f}\n", slots, experts, s0, s1, s2, median3(tps[0]),
           median3(tps[1]), median3(tps[2]), s0 > 0 ? s1 / s0 : 0, s0 > 0 ? s2 / s0 : 0);
    }
    bench_remove_tree(model);
    return 0;
}
