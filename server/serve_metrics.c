/* serve_metrics: see serve_metrics.h. */
#include "serve_metrics.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

void serve_metrics_count_status(serve_metrics *m, int status)
{
    for (int i = 0; i < SERVE_METRICS_STATUSES; i++) {
        if (m->status_code[i] == status || m->status_code[i] == 0) {
            m->status_code[i] = status;
            m->status_count[i]++;
            return;
        }
    }
}

typedef struct text {
    char *p;
    size_t len, cap;
    int oom;
} text;

static void put(text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(text *t, const char *fmt, ...)
{
    for (int pass = 0; pass < 2 && !t->oom; pass++) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(t->p ? t->p + t->len : NULL, t->p ? t->cap - t->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0) {
            t->oom = 1;
            return;
        }
        if (t->p && t->len + (size_t)n < t->cap) {
            t->len += (size_t)n;
            return;
        }
        size_t cap = (t->cap + (size_t)n + 1) * 2;
        char *np = realloc(t->p, cap);
        if (!np) {
            t->oom = 1;
            return;
        }
        t->p = np;
        t->cap = cap;
    }
}

static void metric(text *t, const char *name, const char *type, const char *help)
{
    put(t, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* the latencies' names, help and bucket bounds (seconds; a CPU prefill of a
 * long prompt takes minutes, a decode step a tenth of a second or more) */
static const struct latency {
    const char *name, *help;
    double bound[SERVE_HISTOGRAM_BUCKETS];
} latencies[SERVE_LATENCIES] = {
    {"moetier_time_to_first_token_seconds", "from a request's arrival to its first generated token",
     {0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160, 320, 640, 1280, 2560}},
    {"moetier_request_time_per_output_token_seconds",
     "a request's mean time per generated token after its first",
     {0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1, 2, 5, 10}},
    {"moetier_e2e_request_latency_seconds", "from a request's arrival to its end",
     {0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160, 320, 640, 1280, 2560, 5120, 10240}},
    {"moetier_request_queue_time_seconds", "from a request's arrival to its slot",
     {0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160, 320, 640, 1280}},
};

void serve_metrics_observe(serve_metrics *m, int which, double seconds)
{
    serve_histogram *h = &m->latency[which];
    const double *b = latencies[which].bound;
    int i = 0;
    while (i < SERVE_HISTOGRAM_BUCKETS && seconds > b[i])
        i++;
    if (i < SERVE_HISTOGRAM_BUCKETS)
        h->bucket[i]++;
    h->sum += seconds;
    h->count++;
}

static void put_histogram(text *t, const serve_histogram *h, int which)
{
    const struct latency *l = &latencies[which];
    metric(t, l->name, "histogram", l->help);
    uint64_t below = 0;
    for (int i = 0; i < SERVE_HISTOGRAM_BUCKETS; i++) {
        below += h->bucket[i];
        put(t, "%s_bucket{le=\"%g\"} %llu\n", l->name, l->bound[i], (unsigned long long)below);
    }
    put(t, "%s_bucket{le=\"+Inf\"} %llu\n", l->name, (unsigned long long)h->count);
    put(t, "%s_sum %.6f\n", l->name, h->sum);
    put(t, "%s_count %llu\n", l->name, (unsigned long long)h->count);
}

char *serve_metrics_render(const serve_metrics *m)
{
    text t = {0};
    metric(&t, "moetier_requests_total", "counter", "HTTP requests answered, by status");
    for (int i = 0; i < SERVE_METRICS_STATUSES && m->status_code[i]; i++)
        put(&t, "moetier_requests_total{status=\"%d\"} %llu\n", m->status_code[i],
            (unsigned long long)m->status_count[i]);
    metric(&t, "moetier_requests_cancelled_total", "counter",
           "completions whose client went away before the end");
    put(&t, "moetier_requests_cancelled_total %llu\n", (unsigned long long)m->requests_cancelled);
    metric(&t, "moetier_queue_depth", "gauge", "completion requests waiting or running");
    put(&t, "moetier_queue_depth %d\n", m->queue_depth);
    metric(&t, "moetier_requests_running", "gauge", "completion requests in a slot (--parallel)");
    put(&t, "moetier_requests_running %d\n", m->running);
    metric(&t, "moetier_decode_steps_total", "counter", "decode steps (each steps every request "
           "generating at the time)");
    put(&t, "moetier_decode_steps_total %llu\n", (unsigned long long)m->decode_steps);
    metric(&t, "moetier_decode_steps_in_prefill_total", "counter",
           "of the decode steps, those taken between the layers of a prompt's prefill chunk "
           "(--decode-interval)");
    put(&t, "moetier_decode_steps_in_prefill_total %llu\n",
        (unsigned long long)m->decode_steps_in_prefill);
    metric(&t, "moetier_prompts_between_layers_total", "counter",
           "short new prompts prefilled between the layers of another prompt's chunk");
    put(&t, "moetier_prompts_between_layers_total %llu\n",
        (unsigned long long)m->prompts_between_layers);
    metric(&t, "moetier_decode_step_requests_total", "counter",
           "requests the decode steps stepped (over moetier_decode_steps_total: the mean batch)");
    put(&t, "moetier_decode_step_requests_total %llu\n", (unsigned long long)m->decode_step_rows);
    metric(&t, "moetier_decode_step_seconds", "gauge",
           "recent time of a decode step by its rows (requests, and guesses checked with them)");
    for (int r = 1; r <= SERVE_METRICS_STEP_ROWS; r++)
        if (m->step_seconds[r] > 0)
            put(&t, "moetier_decode_step_seconds{rows=\"%d\"} %.6f\n", r, m->step_seconds[r]);
    metric(&t, "moetier_prompt_tokens_total", "counter", "prompt tokens of served requests");
    put(&t, "moetier_prompt_tokens_total %llu\n", (unsigned long long)m->prompt_tokens);
    metric(&t, "moetier_prompt_tokens_cached_total", "counter",
           "prompt tokens taken from the KV cache instead of prefilled");
    put(&t, "moetier_prompt_tokens_cached_total %llu\n", (unsigned long long)m->prompt_tokens_cached);
    metric(&t, "moetier_prompt_tokens_restored_total", "counter",
           "of those, prompt tokens copied back from an earlier conversation's saved KV cache");
    put(&t, "moetier_prompt_tokens_restored_total %llu\n", (unsigned long long)m->prompt_tokens_restored);
    metric(&t, "moetier_prompt_tokens_shared_total", "counter",
           "of those, prompt tokens copied from another slot's cache holding the same prefix");
    put(&t, "moetier_prompt_tokens_shared_total %llu\n", (unsigned long long)m->prompt_tokens_shared);
    metric(&t, "moetier_draft_tokens_total", "counter",
           "tokens guessed from the conversation and checked in a decode step (--draft-lookup)");
    put(&t, "moetier_draft_tokens_total %llu\n", (unsigned long long)m->draft_tokens);
    metric(&t, "moetier_draft_tokens_accepted_total", "counter",
           "of those, tokens the sampler picked, each a decode step saved");
    put(&t, "moetier_draft_tokens_accepted_total %llu\n", (unsigned long long)m->draft_tokens_accepted);
    if (m->draft_chance[0][0] > 0) {
        metric(&t, "moetier_draft_chance", "gauge",
               "chance a guess is kept once those before it are, by the tokens its lookup matched "
               "and its position, as the last finished request learned it (--draft-lookup)");
        for (int c = 0; c < DRAFT_MATCH_CLASSES; c++)
            for (int j = 0; j < DRAFT_GUESS_MAX; j++)
                put(&t, "moetier_draft_chance{match=\"%s\",guess=\"%d\"} %.4f\n",
                    draft_match_class_names[c], j + 1, m->draft_chance[c][j]);
    }
    if (m->have_profile) {
        static const char *const phases[2] = {"prefill", "decode"};
        metric(&t, "moetier_profile_seconds_total", "counter",
               "the engine's time in the backend's operations by phase and part of the model "
               "(--profile)");
        for (int ph = 0; ph < 2; ph++)
            for (int k = 0; k < PROFILE_PARTS; k++)
                put(&t, "moetier_profile_seconds_total{phase=\"%s\",part=\"%s\"} %.6f\n",
                    phases[ph], profile_part_names[k], m->profile[ph][k].seconds);
        metric(&t, "moetier_profile_bytes_total", "counter",
               "weights and latent cache those operations read (--profile)");
        for (int ph = 0; ph < 2; ph++)
            for (int k = 0; k < PROFILE_PARTS; k++)
                put(&t, "moetier_profile_bytes_total{phase=\"%s\",part=\"%s\"} %.0f\n",
                    phases[ph], profile_part_names[k], m->profile[ph][k].bytes);
    }
    metric(&t, "moetier_prompt_cache_bytes", "gauge", "host memory holding earlier conversations' KV caches");
    put(&t, "moetier_prompt_cache_bytes %llu\n", (unsigned long long)m->prompt_cache_bytes);
    metric(&t, "moetier_prompt_cache_entries", "gauge", "earlier conversations' KV caches held");
    put(&t, "moetier_prompt_cache_entries %d\n", m->prompt_cache_entries);
    metric(&t, "moetier_completion_tokens_total", "counter", "generated tokens");
    put(&t, "moetier_completion_tokens_total %llu\n", (unsigned long long)m->completion_tokens);
    for (int k = 0; k < SERVE_LATENCIES; k++)
        put_histogram(&t, &m->latency[k], k);
    metric(&t, "moetier_prefill_seconds_total", "counter",
           "requests' time in prompt prefill (summed: requests run at once overlap)");
    put(&t, "moetier_prefill_seconds_total %.6f\n", m->prefill_seconds);
    metric(&t, "moetier_decode_seconds_total", "counter",
           "requests' time generating tokens (summed: requests run at once overlap)");
    put(&t, "moetier_decode_seconds_total %.6f\n", m->decode_seconds);
    metric(&t, "moetier_decode_tokens_per_second", "gauge",
           "decode speed of the last finished request");
    put(&t, "moetier_decode_tokens_per_second %.3f\n", m->last_decode_tokens_per_second);
    if (m->have_tiers) {
        uint64_t n = m->dram_hits + m->dram_misses;
        metric(&t, "moetier_tier_hits_total", "counter",
               "routed expert reads served by a tier (dram) or read through it (nvme)");
        put(&t, "moetier_tier_hits_total{tier=\"dram\"} %llu\n", (unsigned long long)m->dram_hits);
        put(&t, "moetier_tier_hits_total{tier=\"nvme\"} %llu\n", (unsigned long long)m->dram_misses);
        metric(&t, "moetier_tier_hit_rate", "gauge", "fraction of expert reads a tier served");
        put(&t, "moetier_tier_hit_rate{tier=\"dram\"} %.6f\n", n ? (double)m->dram_hits / (double)n : 0.0);
        metric(&t, "moetier_tier_bytes_read_total", "counter", "bytes read from a tier's storage");
        put(&t, "moetier_tier_bytes_read_total{tier=\"nvme\"} %llu\n",
            (unsigned long long)m->nvme_bytes_read);
        metric(&t, "moetier_tier_stall_seconds_total", "counter",
               "time the engine waited for expert reads");
        put(&t, "moetier_tier_stall_seconds_total %.6f\n", m->stall_seconds);
    }
    if (t.oom) {
        free(t.p);
        return NULL;
    }
    return t.p;
}
