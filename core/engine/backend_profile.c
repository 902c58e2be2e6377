/* backend_profile: see backend_profile.h. */
#include "backend_profile.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "core/base/progress.h"

enum part {
    PART_ATTN_PROJ, PART_ATTENTION, PART_ROUTER, PART_DENSE, PART_SHARED, PART_ROUTED,
    PART_LM_HEAD, PART_OTHER, PART_COUNT
};
_Static_assert(PART_COUNT == PROFILE_PARTS, "a name for every part");

const char *const profile_part_names[PROFILE_PARTS] = {
    "attention projections", "attention (latent cache)", "router", "dense FFN",
    "shared experts", "routed experts", "lm_head", "norms, rope, embedding, copies",
};

struct backend_profile {
    backend *be;
    const backend_ops *inner;   /* the backend's own operations */
    backend_ops ops;            /* the timed ones, in front of them */
    const model_weights *mw;
    const engine *en;
    profile_part total[2][PART_COUNT];    /* [prefill, decode] */
};

static backend_profile *profile_of(backend *b)
{
    return b->profile;
}

/* A call's start: on a backend that queues its work, once the work queued
 * before it is done, so that its time is its own. */
static double start(backend *b)
{
    const backend_ops *inner = profile_of(b)->inner;
    if (inner->finish)
        inner->finish(b);
    return now_seconds();
}

/* a call within a prefill or decode step (a prompt cache's copies between
 * steps are neither), once what it queued is done */
static void count(backend *b, int part, double t0, double bytes)
{
    backend_profile *p = profile_of(b);
    if (p->inner->finish)
        p->inner->finish(b);
    if (p->en->step == ENGINE_STEP_NONE)
        return;
    profile_part *t = &p->total[p->en->step == ENGINE_STEP_DECODE][part];
    t->calls++;
    t->seconds += now_seconds() - t0;
    t->bytes += bytes;
}

/* The part of the model whose weight w is: a field of a layer of the model's
 * weights, the lm_head, or else a routed expert's (the tiers hold those). */
static int part_of(const backend_profile *p, const linear_weight *w)
{
    const model_weights *mw = p->mw;
    if (w == &mw->lm_head)
        return PART_LM_HEAD;
    const char *at = (const char *)w, *first = (const char *)mw->layers;
    if (at < first || at >= first + (size_t)mw->cfg.n_layers * sizeof *mw->layers)
        return PART_ROUTED;
    size_t off = (size_t)(at - first) % sizeof *mw->layers;
    size_t dense = offsetof(layer_weights, dense), shared = offsetof(layer_weights, shared);
    if (off == offsetof(layer_weights, router))
        return PART_ROUTER;
    if (off >= dense && off < dense + sizeof(ffn_weights))
        return PART_DENSE;
    if (off >= shared && off < shared + sizeof(ffn_weights))
        return PART_SHARED;
    return PART_ATTN_PROJ;
}

static double ffn_bytes(const linear_weight *gate, const linear_weight *up,
                        const linear_weight *down)
{
    return (double)(linear_weight_bytes(gate) + linear_weight_bytes(up) + linear_weight_bytes(down));
}

static void t_embed(backend *b, const linear_weight *emb, const int *ids, int T, float *out)
{
    double t0 = start(b);
    profile_of(b)->inner->embed(b, emb, ids, T, out);
    count(b, PART_OTHER, t0, 0);
}

static void t_rmsnorm(backend *b, const float *x, int x_stride, const float *w, int n, int T,
                      float eps, float *out, int out_stride)
{
    double t0 = start(b);
    profile_of(b)->inner->rmsnorm(b, x, x_stride, w, n, T, eps, out, out_stride);
    count(b, PART_OTHER, t0, 0);
}

static void t_linear(backend *b, const linear_weight *w, const float *x, int T, float *y)
{
    double t0 = start(b);
    profile_of(b)->inner->linear(b, w, x, T, y);
    count(b, part_of(profile_of(b), w), t0, (double)linear_weight_bytes(w));
}

static void t_rope(backend *b, float *x, int T, int n_vec, int tok_stride, int vec_stride,
                   int offset, int dim, const int *pos, const float *inv_freq, float mscale)
{
    double t0 = start(b);
    profile_of(b)->inner->rope(b, x, T, n_vec, tok_stride, vec_stride, offset, dim, pos, inv_freq,
                               mscale);
    count(b, PART_OTHER, t0, 0);
}

static void t_ffn(backend *b, const linear_weight *gate, const linear_weight *up,
                  const linear_weight *down, const float *x, int T, float *out)
{
    double t0 = start(b);
    profile_of(b)->inner->ffn(b, gate, up, down, x, T, out);
    count(b, part_of(profile_of(b), gate), t0, ffn_bytes(gate, up, down));
}

static void t_ffn_batch(backend *b, const ffn_job *jobs, int n)
{
    double t0 = start(b), bytes = 0;
    profile_of(b)->inner->ffn_batch(b, jobs, n);
    for (int k = 0; k < n; k++)
        if (jobs[k].T > 0)
            bytes += ffn_bytes(jobs[k].gate, jobs[k].up, jobs[k].down);
    count(b, PART_ROUTED, t0, bytes);
}

static void t_mla_attention(backend *b, const mla_args *a)
{
    double t0 = start(b);
    profile_of(b)->inner->mla_attention(b, a);
    kv_type kv = a->kv_q8 ? KV_Q8_0 : a->kv_bf16 ? KV_BF16 : KV_F32;
    double cache = (double)(a->pos0 + a->T) * (double)kv_type_row_bytes(kv, a->kv_lora + a->rope);
    count(b, PART_ATTENTION, t0, cache + (double)linear_weight_bytes(a->kv_b));
}

static void t_route(backend *b, const route_params *rp, const float *logits, const float *bias,
                    int T, int *ids, float *weights, float *scores)
{
    double t0 = start(b);
    profile_of(b)->inner->route(b, rp, logits, bias, T, ids, weights, scores);
    count(b, PART_ROUTER, t0, 0);
}

static void t_zero(backend *b, float *x, size_t n)
{
    double t0 = start(b);
    profile_of(b)->inner->zero(b, x, n);
    count(b, PART_OTHER, t0, 0);
}

static void t_add(backend *b, float *y, const float *x, size_t n)
{
    double t0 = start(b);
    profile_of(b)->inner->add(b, y, x, n);
    count(b, PART_OTHER, t0, 0);
}

static void t_gather_rows(backend *b, const float *src, const int *idx, int n, int dim, float *dst)
{
    double t0 = start(b);
    profile_of(b)->inner->gather_rows(b, src, idx, n, dim, dst);
    count(b, PART_OTHER, t0, 0);
}

static void t_scatter_add_rows(backend *b, float *dst, const int *idx, const float *w, int n,
                               int dim, const float *src)
{
    double t0 = start(b);
    profile_of(b)->inner->scatter_add_rows(b, dst, idx, w, n, dim, src);
    count(b, PART_ROUTED, t0, 0);
}

static void t_to_host(backend *b, float *host, const float *buf, size_t n)
{
    double t0 = start(b);
    profile_of(b)->inner->to_host(b, host, buf, n);
    count(b, PART_OTHER, t0, 0);
}

static void t_from_host(backend *b, float *buf, const float *host, size_t n)
{
    double t0 = start(b);
    profile_of(b)->inner->from_host(b, buf, host, n);
    count(b, PART_OTHER, t0, 0);
}

static void t_store_bf16(backend *b, float *dst, const float *src, size_t n)
{
    double t0 = start(b);
    profile_of(b)->inner->store_bf16(b, dst, src, n);
    count(b, PART_ATTENTION, t0, 0);
}

static void t_store_q8_0(backend *b, float *dst, const float *src, int T, int row)
{
    double t0 = start(b);
    profile_of(b)->inner->store_q8_0(b, dst, src, T, row);
    count(b, PART_ATTENTION, t0, 0);
}

static void t_add_rmsnorm(backend *b, float *y, const float *x, const float *w, int n, int T,
                          float eps, float *out)
{
    double t0 = start(b);
    profile_of(b)->inner->add_rmsnorm(b, y, x, w, n, T, eps, out);
    count(b, PART_OTHER, t0, 0);
}

int backend_profile_attach(engine *en, const model_weights *mw, backend_profile **out, errbuf *e)
{
    backend *be = en->be;
    if (strcmp(be->name, "cpu") && !be->ops->finish)
        return err_set(e, "--profile: the %s backend queues its work and returns, and cannot be "
                       "waited for, so its calls' times are not its operations' (profile it with "
                       "the device's own tools)", be->name);
    backend_profile *p = calloc(1, sizeof *p);
    if (!p)
        return err_set(e, "out of memory");
    p->be = be;
    p->inner = be->ops;
    p->mw = mw;
    p->en = en;
    /* the same table, each operation timed; optional ones stay absent */
    p->ops = *be->ops;
    p->ops.embed = t_embed;
    p->ops.rmsnorm = t_rmsnorm;
    p->ops.linear = t_linear;
    p->ops.rope = t_rope;
    p->ops.ffn = t_ffn;
    p->ops.ffn_batch = be->ops->ffn_batch ? t_ffn_batch : NULL;
    p->ops.mla_attention = t_mla_attention;
    p->ops.route = t_route;
    p->ops.zero = t_zero;
    p->ops.add = t_add;
    p->ops.gather_rows = t_gather_rows;
    p->ops.scatter_add_rows = t_scatter_add_rows;
    p->ops.to_host = t_to_host;
    p->ops.from_host = t_from_host;
    p->ops.store_bf16 = be->ops->store_bf16 ? t_store_bf16 : NULL;
    p->ops.add_rmsnorm = be->ops->add_rmsnorm ? t_add_rmsnorm : NULL;
    p->ops.store_q8_0 = be->ops->store_q8_0 ? t_store_q8_0 : NULL;
    be->profile = p;
    be->ops = &p->ops;
    *out = p;
    return 0;
}

static void print_phase(const backend_profile *p, int decode, FILE *f)
{
    const profile_part *t = p->total[decode];
    const engine_stats *s = &p->en->stats;
    double ops = 0, all = decode ? s->decode_seconds : s->prefill_seconds;
    unsigned long long tokens = decode ? s->tokens_decoded : s->tokens_prefilled;
    for (int k = 0; k < PART_COUNT; k++)
        ops += t[k].seconds;
    if (!tokens || ops <= 0)
        return;
    fprintf(f, "profile of %s: %llu tokens, %.3f s in the engine, %.3f s of it in the backend's "
            "operations\n", decode ? "decode" : "prefill", tokens, all, ops);
    fprintf(f, "  %-31s %9s %9s %7s %10s %9s %7s\n", "part", "calls", "seconds", "share",
            "ms/token", "GB/token", "GB/s");
    for (int k = 0; k < PART_COUNT; k++) {
        if (!t[k].calls)
            continue;
        char gb[16] = "", rate[16] = "";
        if (t[k].bytes > 0) {
            snprintf(gb, sizeof gb, "%.4g", t[k].bytes / 1e9 / (double)tokens);
            snprintf(rate, sizeof rate, "%.1f",
                     t[k].seconds > 0 ? t[k].bytes / 1e9 / t[k].seconds : 0);
        }
        fprintf(f, "  %-31s %9llu %9.3f %6.1f%% %10.3f %9s %7s\n", profile_part_names[k],
                t[k].calls, t[k].seconds, 100 * t[k].seconds / (all > ops ? all : ops),
                1e3 * t[k].seconds / (double)tokens, gb, rate);
    }
    if (all > ops)
        fprintf(f, "  %-31s %9s %9.3f %6.1f%% %10.3f\n", "engine: dispatch, tier waits", "",
                all - ops, 100 * (all - ops) / all, 1e3 * (all - ops) / (double)tokens);
}

void backend_profile_print(const backend_profile *p, FILE *f)
{
    print_phase(p, 0, f);
    print_phase(p, 1, f);
}

void backend_profile_snapshot(const backend_profile *p, profile_part out[2][PROFILE_PARTS])
{
    memcpy(out, p->total, sizeof p->total);
}

void backend_profile_detach(backend_profile *p)
{
    if (!p)
        return;
    p->be->ops = p->inner;
    p->be->profile = NULL;
    free(p);
}
