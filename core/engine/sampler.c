/* sampler: see sampler.h. */
#include "sampler.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* e^-18: on K2's vocabulary the candidates below it hold at most ~0.3 % of
 * the probability, and a language model's far less */
#define HEAD_SPAN 18.0f

sampler_params sampler_defaults(void)
{
    return (sampler_params){.temperature = 0.6f, .top_k = 0, .top_p = 1.0f, .min_p = 0.0f,
                            .repeat_penalty = 1.0f, .repeat_last_n = 64, .dry_base = 1.75f,
                            .dry_allowed_length = 2, .dry_penalty_last_n = -1, .top_n_sigma = -1.0f,
                            .xtc_threshold = 0.1f, .typical_p = 1.0f, .dynatemp_exponent = 1.0f,
                            .mirostat_tau = 5.0f, .mirostat_eta = 0.1f, .seed = 0};
}

int sampler_check(const sampler_params *p, errbuf *e)
{
    if (!(p->temperature >= 0) || !isfinite(p->temperature))
        return err_set(e, "--temp must be >= 0 (got %g)", p->temperature);
    if (p->top_k < 0)
        return err_set(e, "--top-k must be >= 0 (got %d)", p->top_k);
    if (!(p->top_p > 0 && p->top_p <= 1))
        return err_set(e, "--top-p must be in (0, 1] (got %g)", p->top_p);
    if (!(p->min_p >= 0 && p->min_p < 1))
        return err_set(e, "--min-p must be in [0, 1) (got %g)", p->min_p);
    if (!(p->repeat_penalty > 0) || !isfinite(p->repeat_penalty))
        return err_set(e, "--repeat-penalty must be > 0 (got %g)", p->repeat_penalty);
    if (p->repeat_last_n < 0)
        return err_set(e, "--repeat-last-n must be >= 0 (got %d)", p->repeat_last_n);
    if (!isfinite(p->presence_penalty))
        return err_set(e, "--presence-penalty must be a finite number (got %g)", p->presence_penalty);
    if (!isfinite(p->frequency_penalty))
        return err_set(e, "--frequency-penalty must be a finite number (got %g)", p->frequency_penalty);
    if (!(p->dry_multiplier >= 0) || !isfinite(p->dry_multiplier))
        return err_set(e, "--dry-multiplier must be >= 0 (got %g)", p->dry_multiplier);
    if (!(p->dry_base >= 1) || !isfinite(p->dry_base))
        return err_set(e, "--dry-base must be >= 1 (got %g)", p->dry_base);
    if (p->dry_allowed_length < 0)
        return err_set(e, "--dry-allowed-length must be >= 0 (got %d)", p->dry_allowed_length);
    if (p->dry_penalty_last_n < -1)
        return err_set(e, "--dry-penalty-last-n must be >= -1 (got %d)", p->dry_penalty_last_n);
    if (!isfinite(p->top_n_sigma))
        return err_set(e, "--top-nsigma must be a finite number (got %g)", p->top_n_sigma);
    if (!(p->xtc_probability >= 0 && p->xtc_probability <= 1))
        return err_set(e, "--xtc-probability must be in [0, 1] (got %g)", p->xtc_probability);
    if (!(p->xtc_threshold >= 0 && p->xtc_threshold <= 1))
        return err_set(e, "--xtc-threshold must be in [0, 1] (got %g)", p->xtc_threshold);
    if (!(p->typical_p >= 0 && p->typical_p <= 1))
        return err_set(e, "--typical must be in [0, 1] (got %g)", p->typical_p);
    if (!(p->dynatemp_range >= 0) || !isfinite(p->dynatemp_range))
        return err_set(e, "--dynatemp-range must be >= 0 (got %g)", p->dynatemp_range);
    if (!isfinite(p->dynatemp_exponent))
        return err_set(e, "--dynatemp-exp must be a finite number (got %g)", p->dynatemp_exponent);
    if (p->mirostat < 0 || p->mirostat > 2)
        return err_set(e, "--mirostat must be 0, 1 or 2 (got %d)", p->mirostat);
    if (!isfinite(p->mirostat_tau) || !isfinite(p->mirostat_eta))
        return err_set(e, "--mirostat-ent and --mirostat-lr must be finite numbers (got %g and %g)",
                       p->mirostat_tau, p->mirostat_eta);
    for (int i = 0; i < p->n_bias; i++)
        if (!isfinite(p->bias[i].bias))
            return err_set(e, "the logit bias of token %d must be a finite number (got %g)",
                           p->bias[i].id, p->bias[i].bias);
    return 0;
}

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

/* xoshiro256** */
static uint64_t rng_next(uint64_t *s)
{
    uint64_t r = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return r;
}

static double rng_uniform(uint64_t *s)
{
    return (double)(rng_next(s) >> 11) * (1.0 / 9007199254740992.0);
}

/* A candidate in typical's order: how far its surprise is from the
 * entropy, then its place by logit (c); at: where it was. */
struct typical_rank {
    float score;
    int at;
    sampler_cand c;
};

static const sampler_breakers *sort_brk; /* (qsort has no context argument) */

static int by_head(const void *a, const void *b)
{
    int x = *(const int *)a, y = *(const int *)b;
    int hx = sort_brk->head[x], hy = sort_brk->head[y];
    return hx != hy ? (hx > hy) - (hx < hy) : x - y;
}

/* DRY's state: the window of tokens, the breakers sorted by head, scratch. */
static int dry_create(sampler *s, const sampler_params *p, errbuf *e)
{
    s->p.dry_breakers = (sampler_breakers){0};
    if (p->dry_multiplier == 0 || p->dry_penalty_last_n == 0)
        return 0;
    const sampler_breakers *b = &p->dry_breakers;
    if (p->dry_penalty_last_n < 0) /* (-1, the context: its size is the caller's to give) */
        return err_set(e, "the DRY window must be given as the context's size, not -1");
    int W = p->dry_penalty_last_n, n_tail = b->n ? b->at[b->n] - b->at[0] : 0;
    for (int i = 0; i < b->n; i++)
        if (b->head[i] < 0 || b->head[i] >= s->vocab || b->at[i + 1] < b->at[i])
            return err_set(e, "DRY sequence breaker %d is not a token sequence of this vocabulary", i);
    s->dry_tokens = malloc(2 * (size_t)W * sizeof *s->dry_tokens);
    s->dry_z = malloc((size_t)W * sizeof *s->dry_z);
    s->dry_hit = malloc((size_t)W * sizeof *s->dry_hit);
    s->dry_len = calloc((size_t)s->vocab, sizeof *s->dry_len);
    s->brk_head = malloc(((size_t)b->n + 1) * sizeof *s->brk_head);
    s->brk_at = malloc(((size_t)b->n + 1) * sizeof *s->brk_at);
    s->brk_tail = malloc(((size_t)n_tail + 1) * sizeof *s->brk_tail);
    int *order = malloc(((size_t)b->n + 1) * sizeof *order);
    if (!s->dry_tokens || !s->dry_z || !s->dry_hit || !s->dry_len || !s->brk_head || !s->brk_at ||
        !s->brk_tail || !order) {
        free(order);
        return err_set(e, "out of memory for the DRY penalty's window of %d tokens", W);
    }
    for (int i = 0; i < b->n; i++)
        order[i] = i;
    sort_brk = b;
    qsort(order, (size_t)b->n, sizeof *order, by_head);
    int t = 0;
    for (int k = 0; k < b->n; k++) {
        int i = order[k];
        s->brk_head[k] = b->head[i];
        s->brk_at[k] = t;
        for (int j = b->at[i]; j < b->at[i + 1]; j++)
            s->brk_tail[t++] = b->tail[j];
    }
    s->brk_at[b->n] = t;
    s->n_brk = b->n;
    free(order);
    return 0;
}

int sampler_create(sampler *s, const sampler_params *p, int vocab, errbuf *e)
{
    memset(s, 0, sizeof *s);
    if (sampler_check(p, e))
        return -1;
    s->p = *p;
    s->vocab = vocab;
    s->head_span = HEAD_SPAN;
    uint64_t x = p->seed;
    for (int i = 0; i < 4; i++)
        s->rng[i] = splitmix64(&x);
    s->cand = malloc((size_t)vocab * sizeof *s->cand);
    s->prob = malloc((size_t)vocab * sizeof *s->prob);
    s->seen = calloc((size_t)vocab, 1);
    s->history = malloc(((size_t)p->repeat_last_n + 1) * sizeof *s->history);
    s->bias = malloc(((size_t)p->n_bias + 1) * sizeof *s->bias);
    int counting = p->presence_penalty != 0 || p->frequency_penalty != 0;
    if (counting) {
        s->count = calloc((size_t)vocab, sizeof *s->count);
        s->answer_ids = malloc((size_t)vocab * sizeof *s->answer_ids);
    }
    if (!s->cand || !s->prob || !s->seen || !s->history || !s->bias ||
        (counting && (!s->count || !s->answer_ids))) {
        sampler_destroy(s);
        return err_set(e, "out of memory for the sampler");
    }
    for (int i = 0; i < p->n_bias; i++) {
        if (p->bias[i].id < 0 || p->bias[i].id >= vocab) {
            int id = p->bias[i].id;
            sampler_destroy(s);
            return err_set(e, "a logit bias names token %d: the vocabulary has tokens 0 to %d", id,
                           vocab - 1);
        }
        s->bias[i] = p->bias[i];
    }
    s->p.bias = s->bias;
    s->mu = 2.0f * p->mirostat_tau;
    if (p->typical_p < 1 && !(s->rank = malloc((size_t)vocab * sizeof *s->rank))) {
        sampler_destroy(s);
        return err_set(e, "out of memory for the sampler");
    }
    if (dry_create(s, p, e)) {
        sampler_destroy(s);
        return -1;
    }
    return 0;
}

void sampler_destroy(sampler *s)
{
    free(s->cand);
    free(s->prob);
    free(s->seen);
    free(s->history);
    free(s->bias);
    free(s->count);
    free(s->answer_ids);
    free(s->dry_tokens);
    free(s->brk_head);
    free(s->brk_at);
    free(s->brk_tail);
    free(s->dry_z);
    free(s->dry_len);
    free(s->dry_hit);
    free(s->rank);
    memset(s, 0, sizeof *s);
}

void sampler_accept(sampler *s, int token)
{
    if (s->dry_tokens) {
        int W = s->p.dry_penalty_last_n;
        if (s->dry_n == 2 * W) { /* (the window moved back once per W tokens) */
            memmove(s->dry_tokens, s->dry_tokens + W, (size_t)W * sizeof *s->dry_tokens);
            s->dry_n = W;
        }
        s->dry_tokens[s->dry_n++] = token;
    }
    int n = s->p.repeat_last_n;
    if (n <= 0)
        return;
    s->history[s->history_next] = token;
    s->history_next = (s->history_next + 1) % n;
    if (s->n_history < n)
        s->n_history++;
}

void sampler_accept_output(sampler *s, int token)
{
    sampler_accept(s, token);
    if (!s->count || token < 0 || token >= s->vocab)
        return;
    if (s->count[token]++ == 0)
        s->answer_ids[s->n_answer_ids++] = token;
}

void sampler_forget(sampler *s)
{
    s->n_history = s->history_next = s->dry_n = 0;
    for (int i = 0; i < s->n_answer_ids; i++)
        s->count[s->answer_ids[i]] = 0;
    s->n_answer_ids = 0;
}

int argmax_f32(const float *x, int n)
{
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best] || x[best] != x[best])   /* a NaN is never the best */
            best = i;
    return best;
}

/* The repetition penalty: each distinct token of the window once. */
static void apply_repeat_penalty(sampler *s, float *logits)
{
    float r = s->p.repeat_penalty;
    if (r == 1.0f)
        return;
    for (int i = 0; i < s->n_history; i++) {
        int t = s->history[i];
        if (t < 0 || t >= s->vocab || s->seen[t])
            continue;
        s->seen[t] = 1;
        logits[t] = logits[t] > 0 ? logits[t] / r : logits[t] * r;
    }
    for (int i = 0; i < s->n_history; i++)
        if (s->history[i] >= 0 && s->history[i] < s->vocab)
            s->seen[s->history[i]] = 0;
}

/* The first breaker whose head is token t, or where it would be. */
static int first_breaker(const sampler *s, int t)
{
    int lo = 0, hi = s->n_brk;
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (s->brk_head[mid] < t)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* How many of the window's last tokens a repeat may hold: those after the
 * last breaker in the window (the longest of the breakers ending there),
 * or all n. r[-i] is the token i places before the last. */
static int dry_limit(const sampler *s, const int *r, int n)
{
    for (int i = 0; i < n; i++) {
        int longest = -1;
        for (int b = first_breaker(s, r[-i]); b < s->n_brk && s->brk_head[b] == r[-i]; b++) {
            int len = s->brk_at[b + 1] - s->brk_at[b], match = len > longest && len <= i;
            for (int o = 0; o < len && match; o++)
                match = s->brk_tail[s->brk_at[b] + o] == r[-(i - o - 1)];
            if (match)
                longest = len;
        }
        if (longest >= 0)
            return i - longest;
    }
    return n;
}

/* llama.cpp's DRY. A token that follows an earlier occurrence of the
 * window's last L tokens (L at least dry_allowed_length, no breaker among
 * them) would repeat them: it loses multiplier x base^(L - allowed), for its
 * longest L. The L of each earlier position is the Z-function of the window
 * read backwards (z[k]: how many tokens before position k match the last
 * ones), so the window costs linear time. */
static void apply_dry(sampler *s, float *logits)
{
    const sampler_params *p = &s->p;
    if (!s->dry_tokens)
        return;
    int n = s->dry_n < p->dry_penalty_last_n ? s->dry_n : p->dry_penalty_last_n;
    int allowed = p->dry_allowed_length, *z = s->dry_z;
    if (n <= allowed)
        return;
    const int *r = s->dry_tokens + s->dry_n - 1;
    int limit = dry_limit(s, r, n), hits = 0;
    if (limit < allowed)
        return;
    int left = 0, right = 0; /* the match found furthest right: r[-left..-right) */
    for (int k = 1; k < n; k++) {
        int m = k < right ? (right - k < z[k - left] ? right - k : z[k - left]) : 0;
        while (k + m < n && r[-m] == r[-(k + m)])
            m++;
        z[k] = m;
        if (k + m > right) {
            left = k;
            right = k + m;
        }
        int len = m < limit ? m : limit, t = r[-(k - 1)];
        if (len < allowed || t < 0 || t >= s->vocab)
            continue;
        if (!s->dry_len[t])
            s->dry_hit[hits++] = t;
        if (len + 1 > s->dry_len[t])
            s->dry_len[t] = len + 1;
    }
    /* (base^exponent kept below FLT_MAX, as llama.cpp bounds it) */
    int max_exp = p->dry_base > 1.000001f ? (int)(88.7228391f / logf(p->dry_base)) : 0;
    for (int i = 0; i < hits; i++) {
        int t = s->dry_hit[i], one_token = 0;
        for (int b = first_breaker(s, t); b < s->n_brk && s->brk_head[b] == t && !one_token; b++)
            one_token = s->brk_at[b + 1] == s->brk_at[b];
        int x = s->dry_len[t] - 1 - allowed;
        s->dry_len[t] = 0;
        if (one_token)
            continue;
        if (max_exp > 0 && x > max_exp)
            x = max_exp;
        logits[t] -= (float)((double)p->dry_multiplier * pow((double)p->dry_base, (double)x));
    }
}

/* Top-n-sigma: the tokens whose logit is below the best's by more than
 * top_n_sigma standard deviations of the logits (those above -inf) are left
 * out. */
static void apply_top_n_sigma(sampler *s, float *logits)
{
    float nsig = s->p.top_n_sigma;
    if (!(nsig > 0) || s->vocab <= 1)
        return;
    float mx = -INFINITY;
    double sum = 0, acc = 0;
    long count = 0;
    for (int i = 0; i < s->vocab; i++)
        if (logits[i] > -INFINITY) { /* (a NaN is neither counted nor cut: it is impossible anyway) */
            mx = logits[i] > mx ? logits[i] : mx;
            sum += logits[i];
            count++;
        }
    if (!count)
        return;
    double mean = sum / (double)count;
    for (int i = 0; i < s->vocab; i++)
        if (logits[i] > -INFINITY)
            acc += ((double)logits[i] - mean) * ((double)logits[i] - mean);
    float cut = (float)((double)mx - nsig * sqrt(acc / (double)count));
    for (int i = 0; i < s->vocab; i++)
        if (logits[i] < cut)
            logits[i] = -INFINITY;
}

/* The logit biases, the repetition penalty, the presence and frequency
 * penalties, DRY, then top-n-sigma (in llama.cpp's order). */
static void apply_penalty(sampler *s, float *logits)
{
    for (int i = 0; i < s->p.n_bias; i++)
        logits[s->bias[i].id] += s->bias[i].bias;
    apply_repeat_penalty(s, logits);
    for (int i = 0; i < s->n_answer_ids; i++) {
        int t = s->answer_ids[i];
        logits[t] -= s->p.presence_penalty + s->p.frequency_penalty * (float)s->count[t];
    }
    apply_dry(s, logits);
    apply_top_n_sigma(s, logits);
}

/* Whether XTC cuts this draw of n candidates: its own draw from the
 * generator, made only when it may cut (as llama.cpp's). */
static int xtc_fires(sampler *s, int n)
{
    const sampler_params *p = &s->p;
    return p->xtc_probability > 0 && p->xtc_threshold <= 0.5f && n >= 2 &&
           rng_uniform(s->rng) <= p->xtc_probability;
}

/* Whether XTC counts a candidate of probability q (at temperature 1) as one
 * at or above its threshold: an impossible one never is (a threshold of 0
 * would otherwise leave only a masked token). */
static int xtc_above(float q, float threshold)
{
    return q >= threshold && q > 0;
}

static int by_logit_desc(const void *a, const void *b)
{
    const sampler_cand *x = a, *y = b;
    if (x->logit != y->logit)
        return x->logit < y->logit ? 1 : -1;
    return x->id - y->id;
}

/* Candidate i's probability, in the order by logit (best first). */
typedef float (*prob_fn)(void *ctx, int i);

/* The report of a draw that could take one token only. */
static int report_one(sampler *s, int id)
{
    sampler_report *r = s->report;
    if (r) {
        r->n = r->max > 0;
        if (r->n)
            r->top[0] = (sampler_kept){id, 1.0f};
        r->chosen = 1.0f;
    }
    return id;
}

/* The report of a draw from candidates [lo, hi) of s->cand (their
 * probabilities prob, summing to sum, best first), candidate pick drawn.
 * Those of probability 0 (ruled out by a bias, a mask or top-n-sigma) were
 * not kept. */
static int report_set(sampler *s, int lo, int hi, prob_fn prob, void *ctx, double sum, int pick)
{
    sampler_report *r = s->report;
    if (r) {
        r->n = 0;
        for (int i = lo; i < hi && r->n < r->max; i++) {
            float q = (float)(prob(ctx, i) / sum); /* (first: it may sort the candidates up to i) */
            if (q <= 0.0f)
                break;
            r->top[r->n++] = (sampler_kept){s->cand[i].id, q};
        }
        r->chosen = (float)(prob(ctx, pick) / sum);
    }
    return s->cand[pick].id;
}

/* llama.cpp's Mirostat over candidates [0, n) in order: version 2 keeps those
 * whose surprise (-log2 p) is within mu, version 1 the top k that Zipf's
 * exponent, estimated from the 100 best, gives for the target; a draw among
 * them, then mu learns from the surprise of the one drawn. The candidate's
 * place. */
static int mirostat_pick(sampler *s, int n, prob_fn prob, void *ctx)
{
    const sampler_params *p = &s->p;
    int m = 0;
    if (p->mirostat == 2) {
        while (m < n && !(-log2f(prob(ctx, m)) > s->mu))
            m++;
    } else {
        float tb = 0, tt = 0;
        for (int i = 0; i < 99 && i < n - 1; i++) {
            float t = logf((float)(i + 2) / (float)(i + 1)), b = logf(prob(ctx, i) / prob(ctx, i + 1));
            tb += t * b;
            tt += t * t;
        }
        float zipf = tb / tt, eps = zipf - 1;
        float k = powf((eps * powf(2, s->mu)) / (1 - powf((float)s->vocab, -eps)), 1 / zipf);
        m = !(k >= 1) ? 1 : k >= (float)n ? n : (int)k; /* (NaN: one) */
    }
    if (m < 1)
        m = 1;
    double sum = 0;
    for (int i = 0; i < m; i++)
        sum += prob(ctx, i);
    double r = rng_uniform(s->rng) * sum, acc = 0;
    int pick = m - 1;
    for (int i = 0; i < m; i++) {
        acc += prob(ctx, i);
        if (r < acc) {
            pick = i;
            break;
        }
    }
    s->mu -= p->mirostat_eta * (-log2f((float)(prob(ctx, pick) / sum)) - p->mirostat_tau);
    report_set(s, 0, m, prob, ctx, sum, pick);
    return pick;
}

/* The dynamic temperature over candidates c[0, n) (best logit mx): within
 * +-dynatemp_range of the temperature by the entropy of their softmax at
 * temperature 1, normalized by its largest, ln n, to the power
 * dynatemp_exponent (llama.cpp's). */
static float dynamic_temperature(const sampler_params *p, const sampler_cand *c, int n, float mx)
{
    if (n <= 1)
        return p->temperature;
    double z = 0, w = 0; /* the entropy, ln z - sum(e (l - mx)) / z, in one pass */
    for (int i = 0; i < n; i++) {
        float e = expf(c[i].logit - mx);
        if (e > 0) {
            z += e;
            w += (double)e * (c[i].logit - mx);
        }
    }
    double norm = (log(z) - w / z) / log((double)n);
    norm = norm > 0 ? (norm < 1 ? norm : 1) : 0; /* (rounding may leave it a hair outside) */
    float lo = p->temperature > p->dynatemp_range ? p->temperature - p->dynatemp_range : 0.0f;
    float hi = p->temperature + p->dynatemp_range;
    float t = lo + (hi - lo) * powf((float)norm, p->dynatemp_exponent);
    /* a negative exponent over no entropy (one possible token) is infinite:
     * the largest finite temperature leaves the impossible ones impossible
     * (and the possible ones nearly alike, as the formula says); a range that
     * rounds to nothing times that infinity is NaN: no range */
    if (t != t)
        return lo;
    return t <= FLT_MAX ? t : FLT_MAX;
}

static int by_rank(const void *a, const void *b)
{
    const struct typical_rank *x = a, *y = b;
    if (x->score != y->score)
        return x->score < y->score ? -1 : 1;
    return by_logit_desc(&x->c, &y->c);
}

/* Typical: candidates [0, n) (in order, their probabilities in s->prob) by
 * how far their surprise is from the entropy, kept until they hold more than
 * typical_p; the kept ones stay in order, renormalized. How many. */
static int typical_keep(sampler *s, int n)
{
    double h = 0;
    for (int i = 0; i < n; i++)
        if (s->prob[i] > 0)
            h -= s->prob[i] * log(s->prob[i]);
    for (int i = 0; i < n; i++)
        s->rank[i] = (struct typical_rank){fabsf(-logf(s->prob[i]) - (float)h), i, s->cand[i]};
    qsort(s->rank, (size_t)n, sizeof *s->rank, by_rank);
    double cum = 0;
    int keep = n;
    for (int i = 0; i < n; i++) {
        cum += s->prob[s->rank[i].at];
        if (cum > s->p.typical_p) {
            keep = i + 1;
            break;
        }
    }
    for (int i = 0; i < n; i++)
        s->seen[i] = 0;
    for (int i = 0; i < keep; i++)
        s->seen[s->rank[i].at] = 1;
    int m = 0;
    double sum = 0;
    for (int i = 0; i < n; i++)
        if (s->seen[i]) {
            s->cand[m] = s->cand[i];
            s->prob[m] = s->prob[i];
            sum += s->prob[m++];
        }
    for (int i = 0; i < n; i++)
        s->seen[i] = 0;
    for (int i = 0; i < m; i++)
        s->prob[i] = (float)(s->prob[i] / sum);
    return m;
}

static float prob_sorted(void *ctx, int i)
{
    return ((const float *)ctx)[i];
}

static int draw_filtered(sampler *s, int n);

/* The draw on the whole vocabulary sorted (after the penalties; not greedy):
 * the definition, and the way for what the partial sort does not do (a
 * dynamic temperature after top-k). */
static int draw_sorted(sampler *s, float *logits)
{
    const sampler_params *p = &s->p;
    int V = s->vocab;
    int n = V;
    for (int i = 0; i < V; i++) /* (a NaN is impossible) */
        s->cand[i] = (sampler_cand){logits[i] == logits[i] ? logits[i] : -INFINITY, i};
    qsort(s->cand, (size_t)V, sizeof *s->cand, by_logit_desc);
    if (isinf(s->cand[0].logit))    /* the first +inf is certain; all -inf: the first */
        return report_one(s, s->cand[0].id);
    if (!p->mirostat && p->top_k > 0 && p->top_k < n)
        n = p->top_k;
    float mx = s->cand[0].logit, t = p->temperature;
    if (!p->mirostat && p->dynatemp_range > 0 && (t = dynamic_temperature(p, s->cand, n, mx)) <= 0)
        return report_one(s, s->cand[0].id);
    double sum = 0;
    for (int i = 0; i < n; i++) {
        s->prob[i] = expf((s->cand[i].logit - mx) / t);
        sum += s->prob[i];
    }
    for (int i = 0; i < n; i++)
        s->prob[i] = (float)(s->prob[i] / sum);
    if (p->mirostat)
        return s->cand[mirostat_pick(s, n, prob_sorted, s->prob)].id;
    if (p->typical_p < 1.0f)
        n = typical_keep(s, n);
    return draw_filtered(s, n);
}

/* Top-p, min-p, XTC and the draw, over candidates [0, n) in order, their
 * probabilities in s->prob. */
static int draw_filtered(sampler *s, int n)
{
    const sampler_params *p = &s->p;
    if (p->top_p < 1.0f) {
        double acc = 0;
        for (int i = 0; i < n; i++) {
            acc += s->prob[i];
            if (acc >= p->top_p) {
                n = i + 1;
                break;
            }
        }
    }
    if (p->min_p > 0) {
        float cut = p->min_p * s->prob[0];
        int m = 1;
        while (m < n && s->prob[m] >= cut)
            m++;
        n = m;
    }
    int lo = 0; /* XTC: the candidates at or above its threshold, at temperature 1, but the last */
    if (xtc_fires(s, n)) {
        /* (its softmax over the candidates kept, from their best: typical may
         * have left out the best of all, far above them) */
        float top = s->cand[0].logit;
        double z1 = 0;
        for (int i = 0; i < n; i++)
            z1 += expf(s->cand[i].logit - top);
        while (lo + 1 < n && xtc_above((float)(expf(s->cand[lo + 1].logit - top) / z1), p->xtc_threshold))
            lo++;
    }
    double sum = 0;
    for (int i = lo; i < n; i++)
        sum += s->prob[i];
    if (!(sum > 0))     /* at a low temperature the chances of all left after XTC round to 0 */
        return report_one(s, s->cand[lo].id);
    double r = rng_uniform(s->rng) * sum, acc = 0;
    for (int i = lo; i < n; i++) {
        acc += s->prob[i];
        if (r < acc)
            return report_set(s, lo, n, prob_sorted, s->prob, sum, i);
    }
    return report_set(s, lo, n, prob_sorted, s->prob, sum, n - 1);
}

int sampler_sample_reference(sampler *s, float *logits)
{
    apply_penalty(s, logits);
    if (s->p.temperature == 0.0f)
        return report_one(s, argmax_f32(logits, s->vocab));
    return draw_sorted(s, logits);
}

/* ---- the same draw, sorting only what it reaches ----
 * Sorting K2's 163,840 candidates for every token took ~30 ms. The candidates
 * within e^-head_span of the best's probability (the head) are sorted; the
 * rest, each below that, are sorted only when top-p, min-p or the draw gets
 * past the head, and the result is the reference's. */

typedef struct cands {
    sampler_cand *c;
    int n;                  /* in play: the top-k, or all */
    int sorted;             /* c[0, sorted) is in the reference's order */
    float mx, t;
    double z;               /* the softmax's sum over c[0, n) */
} cands;

/* Moves the candidates with logit >= thr to the front; returns how many, and
 * in *rest_max the largest logit of the others (-inf when none). */
static int partition_at(sampler_cand *c, int n, float thr, float *rest_max)
{
    int h = 0;
    *rest_max = -INFINITY;
    for (int i = 0; i < n; i++) {
        if (c[i].logit >= thr) {
            sampler_cand t = c[h];
            c[h++] = c[i];
            c[i] = t;
        } else if (c[i].logit > *rest_max) {
            *rest_max = c[i].logit;
        }
    }
    return h;
}

/* Heap selection, for candidates by logit and for typical's order: moves
 * the k first of base[0, n) in the order cmp to its front, unordered (a heap
 * of the first seen, the last of them at its root). */
_Static_assert(sizeof(sampler_cand) <= sizeof(struct typical_rank), "the heap's swap space holds either");

static void sift_down(char *base, size_t size, int n, int i, int (*cmp)(const void *, const void *))
{
    char t[sizeof(struct typical_rank)];
    for (;;) {
        int w = i, l = 2 * i + 1, r = l + 1;
        if (l < n && cmp(base + (size_t)l * size, base + (size_t)w * size) > 0)
            w = l;
        if (r < n && cmp(base + (size_t)r * size, base + (size_t)w * size) > 0)
            w = r;
        if (w == i)
            return;
        memcpy(t, base + (size_t)i * size, size);
        memcpy(base + (size_t)i * size, base + (size_t)w * size, size);
        memcpy(base + (size_t)w * size, t, size);
        i = w;
    }
}

static void select_first(void *base, size_t size, int n, int k, int (*cmp)(const void *, const void *))
{
    char *b = base, t[sizeof(struct typical_rank)];
    for (int i = k / 2 - 1; i >= 0; i--)
        sift_down(b, size, k, i, cmp);
    for (int i = k; i < n; i++)
        if (cmp(b + (size_t)i * size, b) < 0) {
            memcpy(t, b, size);
            memcpy(b, b + (size_t)i * size, size);
            memcpy(b + (size_t)i * size, t, size);
            sift_down(b, size, k, 0, cmp);
        }
}

/* The k best of c[0, n) to its front, unordered. */
static void select_best(sampler_cand *c, int n, int k)
{
    select_first(c, sizeof *c, n, k, by_logit_desc);
}

/* The reference's probability of c[i] (its expression, so its bits). */
static float prob_of(const cands *k, float logit)
{
    return (float)(expf((logit - k->mx) / k->t) / k->z);
}

/* Makes c[i] the reference's i-th candidate: the sorted start grows to
 * twice what is asked (at least 256 more), the best of the rest picked before
 * they are sorted, so a walk a little past the head (Mirostat 1's 100 best,
 * a top-p near 1) does not sort the whole vocabulary. */
static float prob_at(cands *k, int i)
{
    if (i >= k->sorted) {
        int rest = k->n - k->sorted, take = 2 * (i + 1) - k->sorted;
        take = take < 256 ? 256 : take;
        if (take < rest / 2) {
            select_best(k->c + k->sorted, rest, take);
            rest = take;
        }
        qsort(k->c + k->sorted, (size_t)rest, sizeof *k->c, by_logit_desc);
        k->sorted += rest;
    }
    return prob_of(k, k->c[i].logit);
}

static float prob_partial(void *ctx, int i)
{
    return prob_at(ctx, i);
}

/* Typical on the candidates of k (the top-k, or all) without sorting them
 * all: their probabilities and entropy in a pass, then typical's order taken
 * a growing run at a time (the 256 first, then as many again as are taken)
 * until the run holds more than typical_p. Only those kept are sorted by
 * logit, for the filters and the draw after it: the reference's set, in its
 * order. */
static int draw_typical(sampler *s, cands *k)
{
    int n = k->n;
    if (n < s->vocab)
        select_best(s->cand, s->vocab, n);
    for (int i = 0; i < n; i++) {
        s->prob[i] = expf((s->cand[i].logit - k->mx) / k->t);
        k->z += s->prob[i];
    }
    double h = 0;
    for (int i = 0; i < n; i++) {
        s->prob[i] = (float)(s->prob[i] / k->z);   /* (prob_of's bits) */
        if (s->prob[i] > 0)
            h -= s->prob[i] * log(s->prob[i]);
    }
    for (int i = 0; i < n; i++)
        s->rank[i] = (struct typical_rank){fabsf(-logf(s->prob[i]) - (float)h), i, s->cand[i]};
    double cum = 0;
    int sorted = 0, keep = 0;
    while (!keep && sorted < n) {
        int rest = n - sorted, take = sorted > 256 ? sorted : 256;
        if (take < rest / 2) {
            select_first(s->rank + sorted, sizeof *s->rank, rest, take, by_rank);
            rest = take;
        }
        qsort(s->rank + sorted, (size_t)rest, sizeof *s->rank, by_rank);
        for (int i = sorted; i < sorted + rest && !keep; i++) {
            cum += s->prob[s->rank[i].at];
            if (cum > s->p.typical_p)
                keep = i + 1;
        }
        sorted += rest;
    }
    if (!keep)
        keep = n;
    for (int i = 0; i < keep; i++)
        s->cand[i] = s->rank[i].c;
    qsort(s->cand, (size_t)keep, sizeof *s->cand, by_logit_desc);
    double sum = 0;
    for (int i = 0; i < keep; i++) {
        s->prob[i] = prob_of(k, s->cand[i].logit);
        sum += s->prob[i];
    }
    for (int i = 0; i < keep; i++)
        s->prob[i] = (float)(s->prob[i] / sum);
    return draw_filtered(s, keep);
}

int sampler_sample(sampler *s, float *logits)
{
    const sampler_params *p = &s->p;
    int V = s->vocab;
    apply_penalty(s, logits);
    if (p->temperature == 0.0f)
        return report_one(s, argmax_f32(logits, V));
    int top_k = !p->mirostat && p->top_k > 0 && p->top_k < V, dynamic = !p->mirostat && p->dynatemp_range > 0;
    if (dynamic && top_k)
        return draw_sorted(s, logits);
    cands k = {.c = s->cand, .n = top_k ? p->top_k : V, .mx = -INFINITY, .t = p->temperature};
    for (int i = 0; i < V; i++) {
        float l = logits[i] == logits[i] ? logits[i] : -INFINITY;   /* NaN: impossible */
        s->cand[i] = (sampler_cand){l, i};
        if (l > k.mx)
            k.mx = l;
    }
    if (isinf(k.mx))    /* a +inf is certain; all -inf: none is possible, take the first */
        for (int i = 0; i < V; i++)
            if (s->cand[i].logit == k.mx)
                return report_one(s, i);
    if (dynamic && (k.t = dynamic_temperature(p, s->cand, V, k.mx)) <= 0)
        return report_one(s, argmax_f32(logits, V));
    if (p->typical_p < 1.0f && !p->mirostat)   /* (Mirostat replaces the filters) */
        return draw_typical(s, &k);
    /* the head, or the top-k when the head holds fewer */
    float rest_max;
    int h = partition_at(s->cand, V, k.mx - s->head_span * k.t, &rest_max);
    if (h < k.n && k.n < V) {
        select_best(s->cand, V, k.n);
        h = k.n;
    }
    qsort(s->cand, (size_t)h, sizeof *s->cand, by_logit_desc);
    k.sorted = h < k.n ? h : k.n;
    for (int i = 0; i < k.n; i++)
        k.z += expf((s->cand[i].logit - k.mx) / k.t);
    if (p->mirostat)
        return s->cand[mirostat_pick(s, k.n, prob_partial, &k)].id;
    int n = k.n;
    if (p->top_p < 1.0f) {
        double acc = 0;
        for (int i = 0; i < n; i++) {
            acc += prob_at(&k, i);
            if (acc >= p->top_p) {
                n = i + 1;
                break;
            }
        }
    }
    if (p->min_p > 0) {
        float cut = p->min_p * prob_at(&k, 0);
        /* past the head nothing reaches the cut when its best does not */
        float rest_best = rest_max == -INFINITY ? 0.0f : prob_of(&k, rest_max);
        int m = 1;
        while (m < n && !(m >= k.sorted && rest_best < cut) && prob_at(&k, m) >= cut)
            m++;
        n = m;
    }
    int lo = 0;
    if (xtc_fires(s, n)) {
        double z1 = 0;
        for (int i = 0; i < n; i++)
            z1 += expf(s->cand[i].logit - k.mx);
        while (lo + 1 < n) {
            prob_at(&k, lo + 1); /* (sorts the candidates it reaches) */
            if (!xtc_above((float)(expf(s->cand[lo + 1].logit - k.mx) / z1), p->xtc_threshold))
                break;
            lo++;
        }
    }
    double sum = 0;
    for (int i = lo; i < n; i++)
        sum += prob_of(&k, s->cand[i].logit);
    if (!(sum > 0))     /* (as draw_filtered) */
        return report_one(s, s->cand[lo].id);
    double r = rng_uniform(s->rng) * sum, acc = 0;
    for (int i = lo; i < n; i++) {
        acc += prob_at(&k, i);
        if (r < acc)
            return report_set(s, lo, n, prob_partial, &k, sum, i);
    }
    prob_at(&k, n - 1);     /* sorts so far: the reference's last candidate */
    return report_set(s, lo, n, prob_partial, &k, sum, n - 1);
}
