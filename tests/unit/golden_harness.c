/* golden_harness: see golden_harness.h. */
#include "golden_harness.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

static void on_route(void *ctx, int layer, int pos, const int *ids, const float *w,
                     const float *scores)
{
    golden_run *g = ctx;
    const model_config *c = &g->m.mw.cfg;
    int mi = g->moe_index[layer], K = c->n_experts_per_tok, E = c->n_routed_experts;
    if (pos >= g->max_pos)
        return;
    size_t row = (size_t)mi * (size_t)g->max_pos + (size_t)pos;
    memcpy(g->route_ids + row * K, ids, (size_t)K * sizeof *ids);
    memcpy(g->route_w + row * K, w, (size_t)K * sizeof *w);
    memcpy(g->route_scores + row * E, scores, (size_t)E * sizeof *scores);
}

static void on_layer_out(void *ctx, int layer, int pos0, int T, const float *hidden)
{
    golden_run *g = ctx;
    int h = g->m.mw.cfg.hidden_size;
    for (int t = 0; t < T; t++)
        if (pos0 + t < g->max_pos)
            memcpy(g->hidden + ((size_t)layer * g->max_pos + (size_t)(pos0 + t)) * h,
                   hidden + (size_t)t * h, (size_t)h * sizeof *hidden);
}

void golden_open(golden_run *g, const char *variant, int ctx, int chunk, int record_pos)
{
    memset(g, 0, sizeof *g);
    char rel[64];
    snprintf(rel, sizeof rel, "k2-tiny-%s", variant);
    g->model_dir = test_data_path(rel);
    if (asprintf(&g->golden_dir, "%s/golden", g->model_dir) < 0)
        cr_assert_fail("oom");
    if (!test_path_exists(g->golden_dir)) {
        free(g->model_dir);
        free(g->golden_dir);
        g->model_dir = g->golden_dir = NULL;
        cr_skip_test("testdata %s is absent (set MOETIER_TESTDATA to ../shared/testdata)", rel);
    }
    model_flags f = {.dir = g->model_dir, .ctx = ctx, .chunk = chunk, .quiet = 1};
    errbuf e;
    cr_assert_eq(cli_model_open(&g->m, &f, &e), 0, "open %s: %s", g->model_dir, e.msg);
    const model_config *c = &g->m.mw.cfg;
    g->moe_index = calloc((size_t)c->n_layers, sizeof(int));
    for (int l = 0; l < c->n_layers; l++)
        g->moe_index[l] = config_is_moe_layer(c, l) ? g->n_moe++ : -1;
    g->max_pos = record_pos;
    if (record_pos > 0) {
        size_t rows = (size_t)g->n_moe * (size_t)record_pos;
        g->route_ids = calloc(rows * c->n_experts_per_tok, sizeof(int));
        g->route_w = calloc(rows * c->n_experts_per_tok, sizeof(float));
        g->route_scores = calloc(rows * c->n_routed_experts, sizeof(float));
        g->hidden = calloc((size_t)c->n_layers * record_pos * c->hidden_size, sizeof(float));
        g->m.en.obs = (engine_observer){.ctx = g, .on_route = on_route, .on_layer_out = on_layer_out};
    }
}

void golden_close(golden_run *g)
{
    if (g->m.opened)
        cli_model_close(&g->m);
    free(g->moe_index);
    free(g->route_ids);
    free(g->route_w);
    free(g->route_scores);
    free(g->hidden);
    free(g->model_dir);
    free(g->golden_dir);
}

void *golden_load(const golden_run *g, const char *name, size_t bytes)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", g->golden_dir, name);
    size_t n = 0;
    void *p = test_read_file(path, &n);
    cr_assert_not_null(p, "cannot read %s", path);
    cr_assert_eq(n, bytes, "%s: %zu bytes, expected %zu", path, n, bytes);
    return p;
}

void golden_assert_logits(const char *what, const float *golden, const float *cand, int rows,
                          int vocab)
{
    logit_cmp r = test_compare_logits(golden, cand, rows, vocab);
    cr_log_info("%s: max|diff|/std %.3g, rms/std %.3g, top-1 %d/%d", what, r.max_over_std,
                r.rms_over_std, r.top1_agree, r.rows);
    cr_expect_leq(r.max_over_std, 1e-3, "%s: max|diff|/std %.3g > 1e-3", what, r.max_over_std);
    cr_expect_leq(r.rms_over_std, 1e-4, "%s: rms(diff)/std %.3g > 1e-4", what, r.rms_over_std);
    cr_expect_eq(r.top1_agree, r.rows, "%s: top-1 agreement %d/%d", what, r.top1_agree, r.rows);
}

void golden_assert_routing(const golden_run *g, const int *gids, const float *gw, int golden_rows,
                           int p0, int n, const char *what)
{
    int K = g->m.mw.cfg.n_experts_per_tok;
    int mism = 0;
    double wmax = 0;
    for (int mi = 0; mi < g->n_moe; mi++)
        for (int t = 0; t < n; t++) {
            const int *gi = gids + ((size_t)mi * golden_rows + t) * K;
            const float *gwr = gw ? gw + ((size_t)mi * golden_rows + t) * K : NULL;
            size_t row = (size_t)mi * g->max_pos + (size_t)(p0 + t);
            const int *ci = g->route_ids + row * K;
            const float *cw = g->route_w + row * K;
            for (int a = 0; a < K; a++) {
                int found = -1;
                for (int b = 0; b < K; b++)
                    if (ci[b] == gi[a])
                        found = b;
                if (found < 0) {
                    mism++;
                    break;
                }
                if (gwr && fabs(gwr[a] - cw[found]) > wmax)
                    wmax = fabs(gwr[a] - cw[found]);
            }
        }
    cr_log_info("%s: %d mismatched expert sets, max weight diff %.3g", what, mism, wmax);
    cr_expect_eq(mism, 0, "%s: %d (layer, position) rows select other experts", what, mism);
    cr_expect_leq(wmax, 1e-4, "%s: routing weights differ by %.3g", what, wmax);
}
