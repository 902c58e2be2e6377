/* engine: see engine.h. */
#include "engine.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/base/progress.h"
#include "rope_freq.h"

#define OPS(en) ((en)->be->ops)

static size_t max_sz(size_t a, size_t b)
{
    return a > b ? a : b;
}

/* the lookahead's predictions: [ENGINE_MAX_LOOKAHEAD][n_layers][n_experts] */
static size_t predicted_bytes(const model_config *c)
{
    return max_sz(ENGINE_MAX_LOOKAHEAD * (size_t)c->n_layers * (size_t)c->n_routed_experts, 1);
}

uint64_t engine_activation_bytes(const model_config *c, int chunk)
{
    /* per row, as engine_create below takes them (a row gathered for each of
     * its experts at most, as the batched FFN does) */
    uint64_t h = (uint64_t)c->hidden_size, H = (uint64_t)c->n_heads, E = (uint64_t)c->n_routed_experts;
    uint64_t K = c->n_experts_per_tok > 1 ? (uint64_t)c->n_experts_per_tok : 1;
    uint64_t floats = 5 * h + max_sz((size_t)c->q_lora_rank, 1) + H * (uint64_t)(c->qk_nope_dim + c->qk_rope_dim) +
                      H * (uint64_t)c->v_head_dim + 2 * K * h + (uint64_t)(c->kv_lora_rank + c->qk_rope_dim) + E;
    uint64_t host = h * 4 + E * 4 + K * 16 + 16;    /* host_hidden, route_scores, routes, positions */
    return (uint64_t)chunk * (floats * 4 + host);
}

int engine_create(engine *en, const model_weights *mw, backend *be, expert_source *experts,
                  int max_ctx, int max_chunk, kv_type kv, errbuf *e)
{
    memset(en, 0, sizeof *en);
    const model_config *c = &mw->cfg;
    en->mw = mw;
    en->cfg = c;
    en->be = be;
    en->experts = experts;
    if (max_ctx < 1)
        return err_set(e, "context size must be at least 1 (got %d)", max_ctx);
    en->max_chunk = max_chunk < 1 ? 1 : (max_chunk > max_ctx ? max_ctx : max_chunk);
    int C = en->max_chunk, h = c->hidden_size, H = c->n_heads;
    int qk = c->qk_nope_dim + c->qk_rope_dim;
    if (kv == KV_BF16 && !OPS(en)->store_bf16)
        return err_set(e, "the %s backend keeps its KV cache in f32 only (--cache-type)", be->name);
    if (kv == KV_Q8_0 && !OPS(en)->store_q8_0)
        return err_set(e, "--cache-type q8_0: the %s backend keeps its KV cache in f32%s", be->name,
                       OPS(en)->store_bf16 ? " or bf16" : "");
    if (kv_cache_create(&en->kv, be, c->n_layers, max_ctx, c->kv_lora_rank + c->qk_rope_dim, kv, e))
        return -1;
    en->inv_freq = malloc((size_t)c->qk_rope_dim / 2 * sizeof *en->inv_freq);
    if (!en->inv_freq)
        goto oom;
    rope_freq_compute(&c->rope, c->qk_rope_dim, en->inv_freq, &en->rope_mscale);
    en->softmax_scale = attention_softmax_scale(c);
    en->rp = (route_params){
        .n_experts = c->n_routed_experts,
        .top_k = c->n_experts_per_tok,
        .n_group = c->n_group,
        .topk_group = c->topk_group,
        .sigmoid = c->scoring == SCORE_SIGMOID,
        .group_by_top2 = c->topk == TOPK_NOAUX_TC,
        .use_groups = c->topk != TOPK_GREEDY,
        .normalize = c->norm_topk_prob,
        .scaling = (float)c->routed_scaling_factor,
    };
    /* (engine_activation_bytes above counts these per row: a buffer added or
     * grown here is added there too) */
    size_t Cz = (size_t)C, E = (size_t)c->n_routed_experts, K = (size_t)c->n_experts_per_tok;
#define ALLOC(ptr, n)                                                                              \
    do {                                                                                           \
        if (!((ptr) = OPS(en)->alloc(be, (n))))                                                    \
            goto oom;                                                                              \
    } while (0)
    ALLOC(en->x, Cz * h);
    ALLOC(en->xn, Cz * h);
    ALLOC(en->qa, Cz * max_sz((size_t)c->q_lora_rank, 1));
    ALLOC(en->q, Cz * H * qk);
    ALLOC(en->attn, Cz * H * c->v_head_dim);
    ALLOC(en->tmp, Cz * h);
    ALLOC(en->moe, Cz * h);
    en->gather_rows = C * (OPS(en)->ffn_batch && OPS(en)->plans_batches ? max_sz(K, 1) : 1);
    ALLOC(en->gath, (size_t)en->gather_rows * h);
    ALLOC(en->eout, (size_t)en->gather_rows * h);
    en->logit_rows = C < ENGINE_LOGIT_ROWS ? C : ENGINE_LOGIT_ROWS;
    ALLOC(en->logits_rows, (size_t)en->logit_rows * c->vocab_size);
    ALLOC(en->router_logits, Cz * max_sz(E, 1));
    ALLOC(en->xp, Cz * h);
    ALLOC(en->kv_rows, Cz * (size_t)en->kv.row);
#undef ALLOC
    en->route_ids = malloc(max_sz(Cz * K, 1) * sizeof(int));
    en->route_w = malloc(max_sz(Cz * K, 1) * sizeof(float));
    en->route_scores = malloc(max_sz(Cz * E, 1) * sizeof(float));
    en->host_hidden = malloc(Cz * (size_t)h * sizeof(float));
    en->slot_start = malloc((E + 2) * sizeof(int));
    en->used_experts = malloc((E + 1) * sizeof(int));
    en->disp_tok = malloc(max_sz(Cz * K, 1) * sizeof(int));
    en->disp_w = malloc(max_sz(Cz * K, 1) * sizeof(float));
    en->pos = malloc(Cz * sizeof(int));
    en->row_index = malloc(Cz * sizeof(int));
    en->step_seqs = malloc(Cz * sizeof *en->step_seqs);
    en->predicted = calloc(predicted_bytes(c), 1);
    en->predicted_now = calloc(max_sz(ENGINE_MAX_LOOKAHEAD * E, 1), 1);
    en->predicted_list = malloc((E + 1) * sizeof(int));
    en->hint_list = malloc((E + 1) * sizeof(int));
    en->x_origin = calloc(E + 1, 1);
    en->x_bytes = calloc(E + 1, sizeof(uint32_t));
    en->x_stall = calloc(E + 1, sizeof(float));
    en->cached_ids = malloc((size_t)max_ctx * sizeof(int));
    en->group_views = calloc(2 * E + 1, sizeof *en->group_views);
    en->group_jobs = calloc(2 * E + 1, sizeof *en->group_jobs);
    if (!en->cached_ids || !en->route_ids || !en->route_w || !en->route_scores || !en->host_hidden ||
        !en->slot_start || !en->used_experts || !en->disp_tok || !en->disp_w || !en->pos ||
        !en->row_index || !en->step_seqs ||
        !en->predicted || !en->predicted_now || !en->predicted_list || !en->hint_list || !en->x_origin ||
        !en->x_bytes || !en->x_stall || !en->group_views || !en->group_jobs)
        goto oom;
    for (int i = 0; i < C; i++)
        en->row_index[i] = i;
    return 0;
oom:
    engine_destroy(en);
    return err_set(e, "out of memory for activations (chunk of %d tokens)", C);
}

void engine_destroy(engine *en)
{
    if (!en->be)
        return;
    float **bufs[] = {&en->x, &en->xn, &en->qa, &en->q, &en->attn, &en->tmp, &en->moe,
                      &en->gath, &en->eout, &en->logits_rows, &en->router_logits, &en->xp,
                      &en->kv_rows};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++)
        if (*bufs[i])
            OPS(en)->release(en->be, *bufs[i]);
    if (en->x_aside)
        OPS(en)->release(en->be, en->x_aside);
    free(en->predicted_aside);
    kv_cache_destroy(&en->kv);
    free(en->inv_freq);
    free(en->route_ids);
    free(en->route_w);
    free(en->route_scores);
    free(en->host_hidden);
    free(en->slot_start);
    free(en->used_experts);
    free(en->disp_tok);
    free(en->disp_w);
    free(en->pos);
    free(en->row_index);
    free(en->step_seqs);
    free(en->predicted);
    free(en->predicted_now);
    free(en->predicted_list);
    free(en->hint_list);
    free(en->x_origin);
    free(en->x_bytes);
    free(en->x_stall);
    free(en->cached_ids);
    free(en->group_views);
    free(en->group_jobs);
    memset(en, 0, sizeof *en);
}

int engine_allow_pauses(engine *en, errbuf *e)
{
    /* (x_aside is not in engine_activation_bytes: only serve --parallel takes
     * it, at its fixed chunk of 1,024 rows, 29 MB at K2's width) */
    size_t h = (size_t)en->cfg->hidden_size;
    if (!en->x_aside)
        en->x_aside = OPS(en)->alloc(en->be, (size_t)en->max_chunk * h);
    if (!en->predicted_aside)
        en->predicted_aside = calloc(predicted_bytes(en->cfg), 1);
    if (en->x_aside && en->predicted_aside)
        return 0;
    return err_set(e, "out of memory for a prefill's residual rows set aside between its layers "
                   "(%zu MB)", (size_t)en->max_chunk * h * sizeof(float) >> 20);
}

void engine_reset(engine *en)
{
    en->n_past = 0;
}

int engine_truncate(engine *en, int n, errbuf *e)
{
    if (n < 0 || n > en->n_past)
        return err_set(e, "cannot rewind the cache to %d positions (it holds %d)", n, en->n_past);
    en->n_past = n;
    return 0;
}

int ids_common_prefix(const int *a, int na, const int *b, int nb)
{
    int k = 0;
    while (k < na && k < nb && a[k] == b[k])
        k++;
    return k;
}

int engine_reusable_prefix(const engine *en, const int *ids, int n)
{
    return ids_common_prefix(en->cached_ids, en->n_past, ids, n - 1);
}

int engine_load_prefix(engine *en, const int *ids, int n, const kv_span *spans, int n_spans,
                       errbuf *e)
{
    if (n < 0 || n > en->kv.max_ctx)
        return err_set(e, "cannot load %d positions into a cache of %d", n, en->kv.max_ctx);
    int keep = ids_common_prefix(en->cached_ids, en->n_past, ids, n);
    int covered = keep;
    for (int i = 0; i < n_spans; i++) {
        const kv_span *s = &spans[i];
        if (s->first > covered || s->end - s->first > s->stride)
            return err_set(e, "saved rows for positions %d..%d, where %d was wanted next",
                           s->first, s->end, covered);
        covered = s->end > covered ? s->end : covered;
    }
    if (covered < n)
        return err_set(e, "saved rows end at position %d, before %d", covered, n);
    for (int i = 0; i < n_spans; i++) {
        int lo = spans[i].first > keep ? spans[i].first : keep;
        int hi = spans[i].end < n ? spans[i].end : n;
        if (lo < hi)
            kv_cache_load(&en->kv, lo, hi, &spans[i]);
    }
    memcpy(en->cached_ids + keep, ids + keep, (size_t)(n - keep) * sizeof *ids);
    en->n_past = n;
    return 0;
}

void engine_set_prefix(engine *en, const int *ids, int n)
{
    memcpy(en->cached_ids, ids, (size_t)n * sizeof *ids);
    en->n_past = n;
}

int engine_copy_prefix(engine *en, const engine_seq *src, int n, errbuf *e)
{
    if (n < 0 || n > src->n_past || n > en->kv.max_ctx)
        return err_set(e, "cannot copy %d positions of a sequence that holds %d into a cache of %d",
                       n, src->n_past, en->kv.max_ctx);
    int keep = ids_common_prefix(en->cached_ids, en->n_past, src->cached_ids, n);
    int row = kv_cache_row_floats(&en->kv);
    /* rows copied where the backend keeps them (the GPU's memory: no trip
     * through the host), as a gather of consecutive rows (a bf16 cache's
     * moved as the floats their bytes make) */
    for (int l = 0; l < en->kv.n_layers; l++)
        for (int p = keep; p < n; p += en->max_chunk) {
            int k = n - p < en->max_chunk ? n - p : en->max_chunk;
            OPS(en)->gather_rows(en->be, kv_cache_row(&src->kv, l, p), en->row_index, k, row,
                                 kv_cache_row(&en->kv, l, p));
        }
    memcpy(en->cached_ids + keep, src->cached_ids + keep, (size_t)(n - keep) * sizeof *en->cached_ids);
    en->n_past = n;
    return 0;
}

/* a's cache: layer l of kv, as float32, bf16 or q8_0 rows */
static void set_cache(mla_args *a, const kv_cache *kv, int l)
{
    a->kv_cache = kv->type == KV_F32 ? kv_cache_row(kv, l, 0) : NULL;
    a->kv_bf16 = kv->type == KV_BF16 ? kv_cache_row(kv, l, 0) : NULL;
    a->kv_q8 = kv->type == KV_Q8_0 ? kv_cache_row(kv, l, 0) : NULL;
}

/* T new rows of `row` values into kv at layer l from position pos, rounded
 * to its type (a float32 cache's are written in place by the attention) */
static void store_rows(engine *en, const kv_cache *kv, int l, int pos, const float *rows, int T)
{
    const backend_ops *o = OPS(en);
    int row = kv->row;
    if (kv->type == KV_BF16)
        o->store_bf16(en->be, kv_cache_row(kv, l, pos), rows, (size_t)T * (size_t)row);
    else
        o->store_q8_0(en->be, kv_cache_row(kv, l, pos), rows, T, row);
}

/* MLA attention of layer l for the step's T rows: T tokens of the engine's
 * own sequence at pos0 (seqs NULL), or one token of each seqs[t] at
 * en->pos[t]; writes the o_proj output to en->tmp. */
static void attention(engine *en, int l, int T, int pos0, engine_seq *const *seqs)
{
    const model_config *c = en->cfg;
    const layer_weights *L = &en->mw->layers[l];
    const backend_ops *o = OPS(en);
    int H = c->n_heads, qk = c->qk_nope_dim + c->qk_rope_dim, row = en->kv.row;
    float eps = (float)c->rms_norm_eps;
    if (c->q_lora_rank > 0) {
        o->linear(en->be, &L->q_a, en->xn, T, en->qa);
        o->rmsnorm(en->be, en->qa, c->q_lora_rank, L->q_a_norm, c->q_lora_rank, T, eps, en->qa,
                   c->q_lora_rank);
        o->linear(en->be, &L->q_b, en->qa, T, en->q);
    } else {
        o->linear(en->be, &L->q_proj, en->xn, T, en->q);
    }
    o->rope(en->be, en->q, T, H, H * qk, qk, c->qk_nope_dim, c->qk_rope_dim, en->pos, en->inv_freq,
            en->rope_mscale);
    /* the new cache rows: latent (normed in place) + rope key (rotated in
     * place), straight into a float32 cache, or computed apart and then
     * rounded into a bf16 or q8_0 one or copied to each of several
     * sequences' own */
    int rounded = en->kv.type != KV_F32;
    float *rows = seqs || rounded ? en->kv_rows : kv_cache_row(&en->kv, l, pos0);
    o->linear(en->be, &L->kv_a, en->xn, T, rows);
    o->rmsnorm(en->be, rows, row, L->kv_a_norm, c->kv_lora_rank, T, eps, rows, row);
    o->rope(en->be, rows, T, 1, row, 0, c->kv_lora_rank, c->qk_rope_dim, en->pos, en->inv_freq,
            en->rope_mscale);
    if (rounded && !seqs)
        store_rows(en, &en->kv, l, pos0, rows, T);
    mla_args a = {
        .q = en->q, .T = T, .pos0 = pos0, .kv_b = &L->kv_b, .H = H, .nope = c->qk_nope_dim,
        .rope = c->qk_rope_dim, .v = c->v_head_dim, .kv_lora = c->kv_lora_rank,
        .scale = en->softmax_scale, .out = en->attn,
    };
    set_cache(&a, &en->kv, l);
    if (!seqs) {
        o->mla_attention(en->be, &a);
    } else {
        a.T = 1;
        for (int t = 0; t < T; t++) {
            const kv_cache *kv = &seqs[t]->kv;
            if (rounded)
                store_rows(en, kv, l, en->pos[t], en->kv_rows + (size_t)t * (size_t)row, 1);
            else
                o->gather_rows(en->be, en->kv_rows, &en->row_index[t], 1, row,
                               kv_cache_row(kv, l, en->pos[t]));
            a.q = en->q + (size_t)t * (size_t)(H * qk);
            a.pos0 = en->pos[t];
            set_cache(&a, kv, l);
            a.out = en->attn + (size_t)t * (size_t)(H * c->v_head_dim);
            o->mla_attention(en->be, &a);
        }
    }
    o->linear(en->be, &L->o_proj, en->attn, T, en->tmp);
}

/* this layer's experts predicted d + 1 layers ahead */
static unsigned char *predicted_row(engine *en, int d, int l)
{
    size_t E = (size_t)en->cfg->n_routed_experts;
    return en->predicted + ((size_t)d * (size_t)en->cfg->n_layers + (size_t)l) * E;
}

/* how many layers ahead the engine predicts */
static int lookahead_depth(const engine *en)
{
    return en->lookahead < ENGINE_MAX_LOOKAHEAD ? en->lookahead : ENGINE_MAX_LOOKAHEAD;
}

/* Scores the predictions made for layer l (the union over distances) against the
 * n_used experts it chose, keeps them per distance in predicted_now for the
 * observer and forgets them. */
static void score_prediction(engine *en, int l, int n_used)
{
    int depth = lookahead_depth(en);
    if (!depth)
        return;     /* nothing was predicted; predicted_now stays all zero */
    size_t E = (size_t)en->cfg->n_routed_experts;
    unsigned char *now = en->predicted_now;
    memset(now, 0, (size_t)depth * E);
    uint64_t n_pred = 0;
    int any = 0;
    for (int d = 0; d < depth; d++) {
        unsigned char *p = predicted_row(en, d, l);
        for (size_t x = 0; x < E; x++)
            if (p[x]) {
                any = 1;
                now[(size_t)d * E + x] = 1;
                p[x] = 0;
            }
    }
    if (!any)
        return;
    /* the union: an expert predicted at several distances counts once */
    for (size_t x = 0; x < E; x++) {
        int hit = 0;
        for (int d = 0; d < depth; d++)
            hit |= now[(size_t)d * E + x];
        n_pred += (uint64_t)hit;
    }
    en->stats.la_predicted += n_pred;
    en->stats.la_chosen += (uint64_t)n_used;
    for (int i = 0; i < n_used; i++) {
        int hit = 0;
        for (int d = 0; d < depth; d++)
            hit |= now[(size_t)d * E + (size_t)en->used_experts[i]];
        en->stats.la_correct += (uint64_t)hit;
    }
}

/* Predicts the experts of the next en->lookahead MoE layers after l: each one's
 * ffn norm and router applied to the residual stream as it is now (after layer
 * l's attention), its top-k per token, the union over the chunk in router
 * order. The router buffers are free again here (layer l is dispatched). */
static void lookahead(engine *en, int l, int T)
{
    const model_config *c = en->cfg;
    const backend_ops *o = OPS(en);
    int K = c->n_experts_per_tok, h = c->hidden_size;
    int depth = lookahead_depth(en);
    for (int l2 = l + 1, d = 0; l2 < c->n_layers && d < depth; l2++) {
        const layer_weights *L2 = &en->mw->layers[l2];
        if (!L2->is_moe)
            continue;
        d++;
        o->rmsnorm(en->be, en->x, h, L2->ffn_norm, h, T, (float)c->rms_norm_eps, en->xp, h);
        o->linear(en->be, &L2->router, en->xp, T, en->router_logits);
        o->route(en->be, &en->rp, en->router_logits, L2->router_bias, T, en->route_ids,
                 en->route_w, NULL);
        unsigned char *p = predicted_row(en, d - 1, l2);
        int n = 0;
        for (int i = 0; i < T * K; i++) {
            int x = en->route_ids[i];
            if (!p[x]) {
                p[x] = 1;
                en->predicted_list[n++] = x;
            }
        }
        expert_source_speculate(en->experts, l2, en->predicted_list, n);
        if (d == 1) {
            memcpy(en->hint_list, en->predicted_list, (size_t)n * sizeof *en->hint_list);
            en->n_hint = n;
            en->hint_layer = l2;
        }
    }
}

/* Whether the backend gets the next MoE layer's predicted experts: it takes
 * them, and the source can hand them over without a read or a decision (it
 * never evicts, or it can peek at the ones it has). */
static int hints_wanted(const engine *en)
{
    return en->lookahead > 0 && OPS(en)->ffn_batch && OPS(en)->plans_batches &&
           (en->experts->peek || expert_source_never_evicts(en->experts));
}

/* Appends the hints as jobs of no tokens after the group's g jobs (peeked, or
 * held until hints_put); returns how many. Nothing calls the source between
 * this and hints_put, so peeked views stay valid through the ffn_batch. */
static int hints_get(engine *en, int g)
{
    expert_source *s = en->experts;
    int E = en->cfg->n_routed_experts, n = 0;
    errbuf ignored;
    for (int k = 0; k < en->n_hint; k++) {
        expert_view *v = &en->group_views[g + n];
        int x = en->hint_list[k];
        if (s->peek ? s->peek(s, en->hint_layer, x, v)
                    : expert_source_get(s, en->hint_layer, x, v, &ignored))
            continue;       /* a hint is only a hint */
        en->group_jobs[g + n] = (ffn_job){&v->gate, &v->up, &v->down, NULL, 0, NULL, v->node,
                                          1 + en->hint_layer * E + x, 0};
        n++;
    }
    return n;
}

static void hints_put(engine *en, int first, int n)
{
    int E = en->cfg->n_routed_experts;
    if (en->experts->peek)
        return;
    for (int k = first; k < first + n; k++)
        expert_source_put(en->experts, en->hint_layer, (en->group_jobs[k].cache_key - 1) % E);
}

/* Whether a source's error already says "layer l expert x" (the store's do). */
static int names_expert(const char *msg, int l, int x)
{
    char who[48];
    int n = snprintf(who, sizeof who, "layer %d expert %d", l, x);
    for (const char *p = strstr(msg, who); p; p = strstr(p + 1, who))
        if (p[n] < '0' || p[n] > '9')
            return 1;
    return 0;
}

/* MoE FFN of layer l on en->xn; writes the result to en->tmp. */
static int moe(engine *en, int l, int T, int pos0, errbuf *e)
{
    const model_config *c = en->cfg;
    const layer_weights *L = &en->mw->layers[l];
    const backend_ops *o = OPS(en);
    int E = c->n_routed_experts, K = c->n_experts_per_tok, h = c->hidden_size;
    o->linear(en->be, &L->router, en->xn, T, en->router_logits);
    o->route(en->be, &en->rp, en->router_logits, L->router_bias, T, en->route_ids, en->route_w,
             en->obs.on_route ? en->route_scores : NULL);
    if (en->obs.on_route)
        for (int t = 0; t < T; t++)
            en->obs.on_route(en->obs.ctx, l, en->pos[t], en->route_ids + (size_t)t * K,
                             en->route_w + (size_t)t * K, en->route_scores + (size_t)t * E);
    /* counting sort of (token, weight) pairs by expert */
    int *start = en->slot_start;
    memset(start, 0, ((size_t)E + 2) * sizeof *start);
    for (int i = 0; i < T * K; i++)
        start[en->route_ids[i] + 2]++;
    for (int x = 0; x < E; x++)
        start[x + 2] += start[x + 1];
    for (int i = 0; i < T * K; i++) {
        int slot = start[en->route_ids[i] + 1]++;
        en->disp_tok[slot] = i / K;
        en->disp_w[slot] = en->route_w[i];
    }
    /* now experts x's pairs are disp_*[start[x] .. start[x+1]); announce them all
     * so the source can have every missing one in flight at once */
    int n_used = 0;
    for (int x = 0; x < E; x++)
        if (start[x + 1] > start[x])
            en->used_experts[n_used++] = x;
    int reserved = expert_source_prefetch(en->experts, l, en->used_experts, n_used);
    score_prediction(en, l, n_used);
    en->n_hint = 0;
    if (en->lookahead > 0 && (en->experts->speculate || hints_wanted(en)))
        lookahead(en, l, T);
    o->zero(en->be, en->moe, (size_t)T * (size_t)h);
    /* Experts in groups: as many as the source lets the engine hold at once (or,
     * for a backend that plans batches, holds for it already) and whose rows
     * fit the gather buffers; a backend with ffn_batch may run a group's FFNs at
     * once. Gets, puts and the sums into en->moe keep ascending expert order,
     * so the result is the same whatever the grouping. (The CPU backend gains
     * nothing from the reserved experts together, and the tier's predicted
     * reads lose the chances to start that each put gives.) */
    int held_max = o->ffn_batch && en->experts->max_held > 1 ? en->experts->max_held : 1;
    int held_free = o->ffn_batch && o->plans_batches ? reserved : 0;
    /* a backend that plans batches gets the shared expert with the first group
     * (backend.h: it may compute it while the CPU computes routed experts);
     * its result is added after the routed ones either way */
    int shared_in_batch = L->has_shared && o->ffn_batch && o->plans_batches, shared_done = 0;
    for (int i = 0; i < n_used;) {
        int g = 0, rows = 0, rc = 0;
        /* a source that reserves as the engine goes (reads ahead in a step
         * larger than its cache) may hold more of the rest by now */
        if (held_free <= i && o->ffn_batch && o->plans_batches && en->experts->reserved)
            held_free = i + en->experts->reserved(en->experts, l, en->used_experts + i,
                                                  n_used - i);
        while (i + g < n_used && (g < held_max || i + g < held_free)) {
            int x = en->used_experts[i + g], n = start[x + 1] - start[x];
            if (g > 0 && rows + n > en->gather_rows)
                break;
            expert_view *v = &en->group_views[g];
            if (expert_source_get(en->experts, l, x, v, e)) {
                rc = e && names_expert(e->msg, l, x) ? -1 : err_prefix(e, "layer %d expert %d: ", l, x);
                break;
            }
            en->x_origin[x] = v->origin;
            en->x_bytes[x] = v->bytes_read;
            en->x_stall[x] = v->stall_s;
            float *in = en->gath + (size_t)rows * (size_t)h;
            en->group_jobs[g] = (ffn_job){&v->gate, &v->up, &v->down, in, n,
                                          en->eout + (size_t)rows * (size_t)h, v->node,
                                          1 + l * E + x, 0};
            rows += n;
            g++;
        }
        /* the group's experts are consecutive in the dispatch order, so their
         * rows are one range of it: one gather and (below) one scatter-add for
         * all, which adds the rows in the order one per expert would */
        const int *tok = en->disp_tok + start[en->used_experts[i]];
        const float *tw = en->disp_w + start[en->used_experts[i]];
        if (!rc && rows)
            o->gather_rows(en->be, en->xn, tok, rows, h, en->gath);
        /* routed experts go through ffn_batch whenever the backend has it: their
         * memory is the tiers', reused after the put (backend.h); the layer's
         * last group carries the hints */
        if (!rc && o->ffn_batch) {
            int shared = shared_in_batch && !shared_done;
            if (shared)
                en->group_jobs[g] = (ffn_job){&L->shared.gate, &L->shared.up, &L->shared.down,
                                              en->xn, T, en->tmp, -1, 0, 1};
            shared_done |= shared;
            int hints = i + g == n_used && hints_wanted(en) ? hints_get(en, g + shared) : 0;
            o->ffn_batch(en->be, en->group_jobs, g + shared + hints);
            hints_put(en, g + shared, hints);
        } else if (!rc) {
            const ffn_job *j = &en->group_jobs[0];
            o->ffn(en->be, j->gate, j->up, j->down, j->x, j->T, j->out);
        }
        for (int k = 0; k < g; k++)
            expert_source_put(en->experts, l, en->used_experts[i + k]);
        if (rc)
            return rc;
        if (rows)
            o->scatter_add_rows(en->be, en->moe, tok, tw, rows, h, en->eout);
        en->stats.expert_calls += (uint64_t)g;
        en->stats.expert_groups++;
        i += g;
    }
    if (en->obs.on_experts)
        en->obs.on_experts(en->obs.ctx, l, pos0, T, en->x_origin, en->x_bytes, en->x_stall,
                           en->predicted_now, lookahead_depth(en));
    if (L->has_shared) {
        if (!shared_done)
            o->ffn(en->be, &L->shared.gate, &L->shared.up, &L->shared.down, en->xn, T, en->tmp);
        o->add(en->be, en->moe, en->tmp, (size_t)T * (size_t)h);
    }
    float *t = en->tmp;
    en->tmp = en->moe;
    en->moe = t;
    return 0;
}

/* The residual and the norm after it: x += add, xn = rmsnorm(x) with w, as
 * one backend operation where the backend has it (the same bits) */
static void add_rmsnorm(engine *en, const float *add, const float *w, int T)
{
    const backend_ops *o = OPS(en);
    int h = en->cfg->hidden_size;
    float eps = (float)en->cfg->rms_norm_eps;
    if (o->add_rmsnorm) {
        o->add_rmsnorm(en->be, en->x, add, w, h, T, eps, en->xn);
        return;
    }
    o->add(en->be, en->x, add, (size_t)T * (size_t)h);
    o->rmsnorm(en->be, en->x, h, w, h, T, eps, en->xn, h);
}

#define SWAP(a, b)                                                                                 \
    do {                                                                                           \
        __typeof__(a) swap_tmp = (a);                                                              \
        (a) = (b);                                                                                 \
        (b) = swap_tmp;                                                                            \
    } while (0)

/* Runs between_layers before layer l of a prefill step of T rows at pos0.
 * What the step keeps from one layer to the next (the residual stream, the
 * lookahead's predictions) is set aside by swapping buffers (its hints are
 * made and taken within one layer's moe()), and
 * the hooks are off, so that the steps run inside compute as on their own;
 * then the step's positions come back and its input norm is taken again from
 * the residual (add_rmsnorm's bits, by its contract). */
static void pause_prefill(engine *en, int l, int T, int pos0)
{
    void (*hook)(void *) = en->between_layers;
    int (*wanted)(void *) = en->pause_wanted;
    int (*stop)(void *) = en->stop_requested;
    void *stop_ctx = en->stop_ctx;
    SWAP(en->x, en->x_aside);
    SWAP(en->predicted, en->predicted_aside);
    memset(en->predicted, 0, predicted_bytes(en->cfg));
    en->between_layers = NULL;
    en->pause_wanted = NULL;
    en->stop_requested = NULL;
    en->step = ENGINE_STEP_NONE;
    double t0 = now_seconds();
    hook(en->between_ctx);
    en->paused_seconds += now_seconds() - t0;
    en->step = ENGINE_STEP_PREFILL;
    en->between_layers = hook;
    en->pause_wanted = wanted;
    en->stop_requested = stop;
    en->stop_ctx = stop_ctx;
    SWAP(en->x, en->x_aside);
    SWAP(en->predicted, en->predicted_aside);
    for (int t = 0; t < T; t++)
        en->pos[t] = pos0 + t;
    int h = en->cfg->hidden_size;
    OPS(en)->rmsnorm(en->be, en->x, h, en->mw->layers[l].attn_norm, h, T,
                     (float)en->cfg->rms_norm_eps, en->xn, h);
}

static int stopping(const engine *en)
{
    return en->stop_requested && en->stop_requested(en->stop_ctx);
}

/* One step of T rows: a chunk of the engine's own sequence (seqs NULL), or
 * a token of seqs[t] in each row (engine_decode_seqs, which checked them).
 * A prefill chunk stops between layers when stop_requested says so: 1,
 * nothing of it counted (its positions' cache rows are written again by the
 * next step). */
static int forward_rows(engine *en, engine_seq *const *seqs, const int *ids, int T, float *logits,
                        int all_logits, errbuf *e)
{
    const model_config *c = en->cfg;
    const model_weights *mw = en->mw;
    const backend_ops *o = OPS(en);
    int h = c->hidden_size, pos0 = seqs ? seqs[0]->n_past : en->n_past;
    float eps = (float)c->rms_norm_eps;
    for (int t = 0; !seqs && t < T; t++) {
        if (ids[t] < 0 || ids[t] >= c->vocab_size)
            return err_set(e, "token id %d at position %d is outside the vocabulary (0..%d)", ids[t],
                           pos0 + t, c->vocab_size - 1);
        en->pos[t] = pos0 + t;
        en->cached_ids[pos0 + t] = ids[t];
    }
    for (int t = 0; seqs && t < T; t++) {
        /* a sequence's rows are adjacent, its tokens in order */
        en->pos[t] = t > 0 && seqs[t] == seqs[t - 1] ? en->pos[t - 1] + 1 : seqs[t]->n_past;
        seqs[t]->cached_ids[en->pos[t]] = ids[t];
    }
    o->embed(en->be, &mw->embed, ids, T, en->x);
    o->rmsnorm(en->be, en->x, h, mw->layers[0].attn_norm, h, T, eps, en->xn, h);
    for (int l = 0; l < c->n_layers; l++) {
        const layer_weights *L = &mw->layers[l];
        /* (a long step's layers take seconds each on the CPU: a stop is heard
         * between them, before a pause's work and after it) */
        int between = en->step == ENGINE_STEP_PREFILL && l > 0;
        if (between && stopping(en))
            return 1;
        if (between && en->between_layers && en->x_aside &&
            (!en->pause_wanted || en->pause_wanted(en->between_ctx))) {
            pause_prefill(en, l, T, pos0);
            if (stopping(en))
                return 1;
        }
        attention(en, l, T, pos0, seqs);
        add_rmsnorm(en, en->tmp, L->ffn_norm, T);
        if (L->is_moe) {
            if (moe(en, l, T, pos0, e))
                return -1;
        } else {
            o->ffn(en->be, &L->dense.gate, &L->dense.up, &L->dense.down, en->xn, T, en->tmp);
        }
        /* the residual, then the next layer's input norm (none after the last) */
        const float *next_norm = l + 1 < c->n_layers ? mw->layers[l + 1].attn_norm : NULL;
        if (next_norm && !en->obs.on_layer_out) {
            add_rmsnorm(en, en->tmp, next_norm, T);
            continue;
        }
        o->add(en->be, en->x, en->tmp, (size_t)T * (size_t)h);
        if (en->obs.on_layer_out) {
            o->to_host(en->be, en->host_hidden, en->x, (size_t)T * (size_t)h);
            en->obs.on_layer_out(en->obs.ctx, l, pos0, T, en->host_hidden);
        }
        if (next_norm)
            o->rmsnorm(en->be, en->x, h, next_norm, h, T, eps, en->xn, h);
    }
    if (en->step == ENGINE_STEP_DECODE)
        for (int t = 0; t < T; t++)
            en->stats.kv_positions_decoded += (uint64_t)en->pos[t] + 1;
    if (seqs)
        for (int t = 0; t < T; t++)
            seqs[t]->n_past++;
    else
        en->n_past += T;
    if (!logits)
        return 0;
    /* only the rows asked for go through the final norm and lm_head, in
     * slices of logit_rows */
    size_t V = (size_t)c->vocab_size;
    for (int first = all_logits ? 0 : T - 1; first < T; first += en->logit_rows) {
        int n = T - first < en->logit_rows ? T - first : en->logit_rows;
        o->rmsnorm(en->be, en->x + (size_t)first * (size_t)h, h, mw->final_norm, h, n, eps, en->xn,
                   h);
        o->linear(en->be, &mw->lm_head, en->xn, n, en->logits_rows);
        o->to_host(en->be, logits, en->logits_rows, (size_t)n * V);
        logits += (size_t)n * V;
    }
    return 0;
}

/* The first of rows [rows][V] holding a NaN, or -1. A NaN row has no next
 * token: the sampler would silently pick one (the argmax skips NaN). */
static int first_nan_row(const float *rows, int n, size_t V)
{
    for (int t = 0; t < n; t++)
        for (size_t v = 0; v < V; v++)
            if (isnan(rows[(size_t)t * V + v]))
                return t;
    return -1;
}

/* Marks nan[0..n) for the rows of [n][V] holding a NaN. */
static void mark_nan_rows(const float *rows, int n, size_t V, unsigned char *nan)
{
    for (int t = 0; t < n; t++)
        nan[t] = first_nan_row(rows + (size_t)t * V, 1, V) == 0;
}

/* nan_rows (with all_logits): NULL, a NaN row is an error; else where the
 * rows holding one are marked, for the caller to judge (a step's guesses not
 * taken are never read). */
static int forward(engine *en, const int *ids, int T, float *logits, int all_logits,
                   unsigned char *nan_rows, int decode_step, errbuf *e)
{
    if (T < 1)
        return err_set(e, "no tokens to process");
    if (en->n_past + T > en->kv.max_ctx)
        return err_set(e, "context is full: %d cached + %d new tokens exceed the context size %d "
                       "(raise -c)", en->n_past, T, en->kv.max_ctx);
    double t0 = now_seconds(), paused0 = en->paused_seconds;
    size_t V = (size_t)en->cfg->vocab_size;
    int done = 0, stopped = 0, rc = 0;
    en->step = decode_step ? ENGINE_STEP_DECODE : ENGINE_STEP_PREFILL;
    while (done < T && !rc) {
        if (en->stop_requested && en->stop_requested(en->stop_ctx)) {
            stopped = 1;
            break;
        }
        int n = T - done < en->max_chunk ? T - done : en->max_chunk;
        int last = done + n == T;
        float *lg = NULL;
        if (logits && all_logits)
            lg = logits + (size_t)done * V;
        else if (logits && last)
            lg = logits;
        int frc = forward_rows(en, NULL, ids + done, n, lg, all_logits, e);
        if (frc == 1) {
            stopped = 1;
            break;
        }
        if (frc) {
            rc = -1;
            break;
        }
        int rows = all_logits ? n : 1, nan_row = -1;
        if (lg && nan_rows)
            mark_nan_rows(lg, rows, V, nan_rows + done);
        else if (lg)
            nan_row = first_nan_row(lg, rows, V);
        if (nan_row >= 0)
            rc = err_set(e, "the logits at position %d are NaN: " ENGINE_NAN_WHY,
                         en->n_past - rows + nan_row);
        done += n;
    }
    en->step = ENGINE_STEP_NONE;
    if (rc)
        return rc;
    double dt = now_seconds() - t0 - (en->paused_seconds - paused0);
    if (decode_step) {
        en->stats.tokens_decoded += (uint64_t)done;
        en->stats.decode_seconds += dt;
    } else {
        en->stats.tokens_prefilled += (uint64_t)done;
        en->stats.prefill_seconds += dt;
    }
    if (stopped) {
        err_set(e, "stopped after %d of %d tokens", done, T);
        return 1;
    }
    return 0;
}

int engine_forward(engine *en, const int *ids, int T, float *logits, int all_logits, errbuf *e)
{
    return forward(en, ids, T, logits, all_logits, NULL, 0, e);
}

int engine_decode(engine *en, int id, float *logits, errbuf *e)
{
    return forward(en, &id, 1, logits, 0, NULL, 1, e);
}

int engine_decode_tokens(engine *en, const int *ids, int T, float *logits, unsigned char *nan_rows,
                         errbuf *e)
{
    return forward(en, ids, T, logits, 1, nan_rows, 1, e);
}

int engine_drop_guesses(engine *en, int n, errbuf *e)
{
    if (n < 0 || n > en->n_past || (uint64_t)n > en->stats.tokens_decoded)
        return err_set(e, "cannot take back %d positions of %d (%llu decoded)", n, en->n_past,
                       (unsigned long long)en->stats.tokens_decoded);
    en->stats.tokens_decoded -= (uint64_t)n;
    return engine_truncate(en, en->n_past - n, e);
}

int engine_seq_create(const engine *en, engine_seq *s, errbuf *e)
{
    memset(s, 0, sizeof *s);
    if (kv_cache_create(&s->kv, en->be, en->kv.n_layers, en->kv.max_ctx, en->kv.row, en->kv.type,
                        e))
        return -1;
    s->cached_ids = malloc((size_t)en->kv.max_ctx * sizeof *s->cached_ids);
    if (!s->cached_ids) {
        kv_cache_destroy(&s->kv);
        return err_set(e, "out of memory for a sequence's token ids (%d positions)", en->kv.max_ctx);
    }
    return 0;
}

void engine_seq_destroy(engine_seq *s)
{
    if (s->kv.layer)
        kv_cache_destroy(&s->kv);
    free(s->cached_ids);
    memset(s, 0, sizeof *s);
}

void engine_seq_swap(engine *en, engine_seq *s)
{
    engine_seq own = {en->kv, en->n_past, en->cached_ids};
    en->kv = s->kv;
    en->n_past = s->n_past;
    en->cached_ids = s->cached_ids;
    *s = own;
}

int engine_step_rows(const engine *en)
{
    /* parts no larger than the backend gives each row its own bits in */
    int part = en->max_chunk;
    if (en->be->bitwise_rows > 0 && en->be->bitwise_rows < part)
        part = en->be->bitwise_rows;
    return part;
}

int engine_decode_seqs(engine *en, engine_seq *const *seqs, const int *ids, int S, float *logits,
                       unsigned char *nan_rows, errbuf *e)
{
    if (S < 1)
        return err_set(e, "no sequences to step");
    int V = en->cfg->vocab_size;
    /* the engine's own sequence as the others are, its count copied back */
    engine_seq own = {en->kv, en->n_past, en->cached_ids};
    int own_rows = 0;
    for (int i = 0, rows = 0; i < S; i++) {
        const engine_seq *q = seqs[i] ? seqs[i] : &own;
        /* its rows so far: a sequence's rows are adjacent, so a first row's
         * sequence is in no row before it */
        rows = i > 0 && seqs[i] == seqs[i - 1] ? rows + 1 : 1;
        for (int k = 0; rows == 1 && k < i; k++)
            if (seqs[k] == seqs[i])
                return err_set(e, "row %d's sequence%s is given in rows apart (row %d too)", i,
                               seqs[i] ? "" : " (the engine's own)", k);
        own_rows += !seqs[i];
        if (ids[i] < 0 || ids[i] >= V)
            return err_set(e, "token id %d of row %d is outside the vocabulary (0..%d)", ids[i], i,
                           V - 1);
        if (q->n_past + rows > q->kv.max_ctx)
            return err_set(e, "context is full: row %d's sequence holds %d tokens and takes %d in "
                           "this step, the context size is %d (raise -c)", i, q->n_past, rows,
                           q->kv.max_ctx);
    }
    double t0 = now_seconds();
    int rc = 0;
    int part = engine_step_rows(en);
    en->step = ENGINE_STEP_DECODE;
    for (int done = 0; done < S && !rc;) {
        int n = S - done < part ? S - done : part;
        for (int t = 0; t < n; t++)
            en->step_seqs[t] = seqs[done + t] ? seqs[done + t] : &own;
        float *lg = logits + (size_t)done * (size_t)V;
        rc = forward_rows(en, en->step_seqs, ids + done, n, lg, 1, e);
        int nan_row = -1;
        if (!rc && nan_rows)
            mark_nan_rows(lg, n, (size_t)V, nan_rows + done);
        else if (!rc)
            nan_row = first_nan_row(lg, n, (size_t)V);
        if (nan_row >= 0)
            rc = err_set(e, "the logits of the step's row %d are NaN: " ENGINE_NAN_WHY, done + nan_row);
        done += n;
    }
    en->step = ENGINE_STEP_NONE;
    if (own_rows)
        en->n_past = own.n_past;
    if (!rc) {
        en->stats.tokens_decoded += (uint64_t)S;
        en->stats.decode_seconds += now_seconds() - t0;
    }
    return rc;
}
