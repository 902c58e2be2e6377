/* golden_harness: runs the engine on a k2-tiny testdata variant and records
 * what the golden files describe (logits, routing, hidden states). */
#ifndef MOETIER_GOLDEN_HARNESS_H
#define MOETIER_GOLDEN_HARNESS_H

#include "core/app/cli_common.h"

typedef struct golden_run {
    char *model_dir, *golden_dir;
    cli_model m;
    int n_moe;
    int *moe_index;         /* layer -> index among MoE layers, -1 for dense */
    int max_pos;            /* positions recorded */
    int *route_ids;         /* [n_moe][max_pos][k] */
    float *route_w;         /* [n_moe][max_pos][k] */
    float *route_scores;    /* [n_moe][max_pos][E] */
    float *hidden;          /* [layers][max_pos][hidden] */
} golden_run;

/* Opens variant ("bf16", "fp8", "int4"); skips the test (cr_skip) when the
 * testdata is absent. ctx: context size; chunk: prefill chunk. */
void golden_open(golden_run *g, const char *variant, int ctx, int chunk, int record_pos);
void golden_close(golden_run *g);
/* Reads golden/<name> into a malloc'd buffer, asserting its size in bytes. */
void *golden_load(const golden_run *g, const char *name, size_t bytes);
/* Asserts the fp32 profile on rows x vocab logits. */
void golden_assert_logits(const char *what, const float *golden, const float *cand, int rows,
                          int vocab);
/* Asserts that routing of positions [p0, p0+n) equals golden ids (as sets) and weights. */
void golden_assert_routing(const golden_run *g, const int *gids, const float *gw, int golden_rows,
                           int p0, int n, const char *what);

#endif
