/* reference_model: see reference_model.h. */
#include "reference_model.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_kernels/linear_ref.h"

/* y[T][rows] = W x[T][cols] in double. */
static void lin(const linear_weight *w, const double *x, int T, double *y)
{
    float *row = malloc((size_t)w->cols * sizeof *row);
    for (int r = 0; r < w->rows; r++) {
        linear_ref_dequant_row(w, r, row);
        for (int t = 0; t < T; t++) {
            double s = 0;
            for (int c = 0; c < w->cols; c++)
                s += (double)row[c] * x[(size_t)t * w->cols + c];
            y[(size_t)t * w->rows + r] = s;
        }
    }
    free(row);
}

static void rms(const double *x, const float *w, int n, double eps, double *out)
{
    double ss = 0;
    for (int i = 0; i < n; i++)
        ss += x[i] * x[i];
    double inv = 1.0 / sqrt(ss / n + eps);
    for (int i = 0; i < n; i++)
        out[i] = w[i] * x[i] * inv;
}

static double mscale_of(double f, double m)
{
    return f <= 1 ? 1 : 0.1 * m * log(f) + 1;
}

/* YaRN / plain inverse frequencies straight from the README formulas. */
static void inv_freqs(const model_config *c, double *inv)
{
    int d = c->qk_rope_dim;
    const rope_config *r = &c->rope;
    for (int i = 0; i < d / 2; i++)
        inv[i] = pow(r->theta, -2.0 * i / d);
    if (!r->yarn)
        return;
    double corr_fast = d * log(r->original_max_pos / (2 * M_PI * r->beta_fast)) / (2 * log(r->theta));
    double corr_slow = d * log(r->original_max_pos / (2 * M_PI * r->beta_slow)) / (2 * log(r->theta));
    double lo = fmax(floor(corr_fast), 0), hi = fmin(ceil(corr_slow), d - 1);
    if (lo == hi)
        hi += 0.001;
    for (int i = 0; i < d / 2; i++) {
        double ramp = fmin(fmax((i - lo) / (hi - lo), 0), 1);
        inv[i] = inv[i] / r->factor * ramp + inv[i] * (1 - ramp);
    }
}

static void rope(double *v, int d, int pos, const double *inv, double ms)
{
    for (int i = 0; i < d / 2; i++) {
        double a = pos * inv[i];
        double c = cos(a) * ms, s = sin(a) * ms, x = v[2 * i], y = v[2 * i + 1];
        v[2 * i] = x * c - y * s;
        v[2 * i + 1] = x * s + y * c;
    }
}

static void ffn(const linear_weight *g, const linear_weight *u, const linear_weight *d,
                const double *x, double *out)
{
    int I = g->rows;
    double *a = malloc((size_t)I * sizeof *a), *b = malloc((size_t)I * sizeof *b);
    lin(g, x, 1, a);
    lin(u, x, 1, b);
    for (int i = 0; i < I; i++)
        a[i] = a[i] / (1 + exp(-a[i])) * b[i];
    lin(d, a, 1, out);
    free(a);
    free(b);
}

void reference_route(const route_params *p, const float *logits, const float *bias, int *ids,
                     float *w)
{
    int E = p->n_experts, per = E / p->n_group;
    double *s = malloc((size_t)E * sizeof *s), *b = malloc((size_t)E * sizeof *b);
    int *allowed = malloc((size_t)E * sizeof *allowed);
    double mx = -1e300, sum = 0;
    for (int i = 0; i < E; i++)
        mx = fmax(mx, logits[i]);
    for (int i = 0; i < E; i++) {
        s[i] = p->sigmoid ? 1.0 / (1.0 + exp(-(double)logits[i])) : exp((double)logits[i] - mx);
        sum += s[i];
    }
    for (int i = 0; i < E; i++) {
        if (!p->sigmoid)
            s[i] /= sum;
        b[i] = s[i] + (bias ? bias[i] : 0);
        allowed[i] = 1;
    }
    if (p->use_groups && p->n_group > 1) {
        double *gscore = malloc((size_t)p->n_group * sizeof *gscore);
        for (int g = 0; g < p->n_group; g++) {
            double m1 = -1e300, m2 = -1e300;
            for (int i = g * per; i < (g + 1) * per; i++) {
                if (b[i] > m1) {
                    m2 = m1;
                    m1 = b[i];
                } else if (b[i] > m2) {
                    m2 = b[i];
                }
            }
            gscore[g] = p->group_by_top2 ? m1 + m2 : m1;
        }
        for (int g = 0; g < p->n_group; g++) {
            int better = 0;
            for (int h = 0; h < p->n_group; h++)
                better += gscore[h] > gscore[g];
            if (better >= p->topk_group)
                for (int i = g * per; i < (g + 1) * per; i++)
                    allowed[i] = 0;
        }
        free(gscore);
    }
    double wsum = 0;
    for (int k = 0; k < p->top_k; k++) {
        int best = -1;
        for (int i = 0; i < E; i++)
            if (allowed[i] && (best < 0 || b[i] > b[best]))
                best = i;
        ids[k] = best;
        w[k] = (float)s[best];
        wsum += s[best];
        allowed[best] = 0;
    }
    for (int k = 0; k < p->top_k; k++)
        w[k] = (float)((p->normalize ? w[k] / wsum : w[k]) * p->scaling);
    free(s);
    free(b);
    free(allowed);
}

void reference_forward(const model_weights *m, const int *ids, int T, double *logits)
{
    const model_config *c = &m->cfg;
    int h = c->hidden_size, H = c->n_heads, nope = c->qk_nope_dim, rd = c->qk_rope_dim;
    int vd = c->v_head_dim, C = c->kv_lora_rank, qk = nope + rd;
    double eps = c->rms_norm_eps;
    double *x = calloc((size_t)T * h, sizeof *x), *xn = malloc((size_t)h * sizeof *xn);
    double *q = malloc((size_t)T * H * qk * sizeof *q);
    double *k = malloc((size_t)T * H * qk * sizeof *k), *v = malloc((size_t)T * H * vd * sizeof *v);
    double *o = malloc((size_t)H * vd * sizeof *o), *tmp = malloc((size_t)h * sizeof *tmp);
    double *acc = malloc((size_t)h * sizeof *acc), *p = malloc((size_t)T * sizeof *p);
    double *qa = malloc(((size_t)c->q_lora_rank + 1) * sizeof *qa);
    double *kva = malloc((size_t)(C + rd) * sizeof *kva), *kvn = malloc((size_t)C * sizeof *kvn);
    double *kv = malloc((size_t)H * (nope + vd) * sizeof *kv);
    double inv[256];
    inv_freqs(c, inv);
    double cs = 1, scale = 1.0 / sqrt((double)qk);
    if (c->rope.yarn) {
        cs = mscale_of(c->rope.factor, c->rope.mscale) / mscale_of(c->rope.factor, c->rope.mscale_all_dim);
        if (c->rope.mscale_all_dim != 0)
            scale *= pow(mscale_of(c->rope.factor, c->rope.mscale_all_dim), 2);
    }
    float *row = malloc((size_t)h * sizeof *row);
    for (int t = 0; t < T; t++) {
        linear_ref_dequant_row(&m->embed, ids[t], row);
        for (int i = 0; i < h; i++)
            x[(size_t)t * h + i] = row[i];
    }
    route_params rp = {.n_experts = c->n_routed_experts, .top_k = c->n_experts_per_tok,
                       .n_group = c->n_group, .topk_group = c->topk_group,
                       .sigmoid = c->scoring == SCORE_SIGMOID,
                       .group_by_top2 = c->topk == TOPK_NOAUX_TC, .use_groups = c->topk != TOPK_GREEDY,
                       .normalize = c->norm_topk_prob, .scaling = (float)c->routed_scaling_factor};
    for (int l = 0; l < c->n_layers; l++) {
        const layer_weights *L = &m->layers[l];
        /* projections of every token */
        for (int t = 0; t < T; t++) {
            rms(x + (size_t)t * h, L->attn_norm, h, eps, xn);
            if (c->q_lora_rank) {
                lin(&L->q_a, xn, 1, qa);
                rms(qa, L->q_a_norm, c->q_lora_rank, eps, qa);
                lin(&L->q_b, qa, 1, q + (size_t)t * H * qk);
            } else {
                lin(&L->q_proj, xn, 1, q + (size_t)t * H * qk);
            }
            lin(&L->kv_a, xn, 1, kva);
            rms(kva, L->kv_a_norm, C, eps, kvn);
            lin(&L->kv_b, kvn, 1, kv);
            rope(kva + C, rd, t, inv, cs);
            for (int hh = 0; hh < H; hh++) {
                double *qh = q + ((size_t)t * H + hh) * qk, *kh = k + ((size_t)t * H + hh) * qk;
                rope(qh + nope, rd, t, inv, cs);
                memcpy(kh, kv + (size_t)hh * (nope + vd), (size_t)nope * sizeof *kh);
                memcpy(kh + nope, kva + C, (size_t)rd * sizeof *kh);
                memcpy(v + ((size_t)t * H + hh) * vd, kv + (size_t)hh * (nope + vd) + nope,
                       (size_t)vd * sizeof *v);
            }
        }
        /* causal attention, then the residual; the FFN per token */
        double *xnew = malloc((size_t)T * h * sizeof *xnew);
        for (int t = 0; t < T; t++) {
            for (int hh = 0; hh < H; hh++) {
                double mx = -1e300, z = 0;
                for (int s = 0; s <= t; s++) {
                    double d = 0;
                    for (int i = 0; i < qk; i++)
                        d += q[((size_t)t * H + hh) * qk + i] * k[((size_t)s * H + hh) * qk + i];
                    p[s] = d * scale;
                    mx = fmax(mx, p[s]);
                }
                for (int s = 0; s <= t; s++)
                    z += (p[s] = exp(p[s] - mx));
                for (int j = 0; j < vd; j++) {
                    double a = 0;
                    for (int s = 0; s <= t; s++)
                        a += p[s] / z * v[((size_t)s * H + hh) * vd + j];
                    o[hh * vd + j] = a;
                }
            }
            lin(&L->o_proj, o, 1, tmp);
            for (int i = 0; i < h; i++)
                xnew[(size_t)t * h + i] = x[(size_t)t * h + i] + tmp[i];
        }
        for (int t = 0; t < T; t++) {
            double *xt = xnew + (size_t)t * h;
            rms(xt, L->ffn_norm, h, eps, xn);
            if (!L->is_moe) {
                ffn(&L->dense.gate, &L->dense.up, &L->dense.down, xn, tmp);
                for (int i = 0; i < h; i++)
                    xt[i] += tmp[i];
                continue;
            }
            double *lg = malloc((size_t)c->n_routed_experts * sizeof *lg);
            float *lgf = malloc((size_t)c->n_routed_experts * sizeof *lgf);
            lin(&L->router, xn, 1, lg);
            for (int e = 0; e < c->n_routed_experts; e++)
                lgf[e] = (float)lg[e];
            int sel[64];
            float w[64];
            reference_route(&rp, lgf, L->router_bias, sel, w);
            memset(acc, 0, (size_t)h * sizeof *acc);
            for (int kk = 0; kk < c->n_experts_per_tok; kk++) {
                const expert_view *ev = &m->experts[(size_t)l * c->n_routed_experts + sel[kk]];
                ffn(&ev->gate, &ev->up, &ev->down, xn, tmp);
                for (int i = 0; i < h; i++)
                    acc[i] += w[kk] * tmp[i];
            }
            if (L->has_shared) {
                ffn(&L->shared.gate, &L->shared.up, &L->shared.down, xn, tmp);
                for (int i = 0; i < h; i++)
                    acc[i] += tmp[i];
            }
            for (int i = 0; i < h; i++)
                xt[i] += acc[i];
            free(lg);
            free(lgf);
        }
        memcpy(x, xnew, (size_t)T * h * sizeof *x);
        free(xnew);
    }
    for (int t = 0; t < T; t++) {
        rms(x + (size_t)t * h, m->final_norm, h, eps, xn);
        lin(&m->lm_head, xn, 1, logits + (size_t)t * c->vocab_size);
    }
    free(row);
    free(x);
    free(xn);
    free(q);
    free(k);
    free(v);
    free(o);
    free(tmp);
    free(acc);
    free(p);
    free(qa);
    free(kva);
    free(kvn);
    free(kv);
}
