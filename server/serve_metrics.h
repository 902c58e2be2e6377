/* serve_metrics: the counters behind GET /metrics, printed in Prometheus'
 * text format. The server updates them under its own lock; printing takes a
 * copy. */
#ifndef MOETIER_SERVE_METRICS_H
#define MOETIER_SERVE_METRICS_H

#include <stdint.h>

#include "core/engine/backend_profile.h"
#include "core/engine/draft_tuner.h"

#define SERVE_METRICS_STATUSES 10
/* decode steps of up to this many rows are timed by row count */
#define SERVE_METRICS_STEP_ROWS 64

/* A latency histogram as Prometheus counts one: observations at most each
 * bucket's bound (cumulative when printed), their sum and count. */
enum { SERVE_LATENCY_TTFT, SERVE_LATENCY_TPOT, SERVE_LATENCY_E2E, SERVE_LATENCY_QUEUE, SERVE_LATENCIES };
#define SERVE_HISTOGRAM_BUCKETS 16
typedef struct serve_histogram {
    uint64_t bucket[SERVE_HISTOGRAM_BUCKETS];   /* observations in (bound[i-1], bound[i]] */
    double sum;
    uint64_t count;
} serve_histogram;

typedef struct serve_metrics {
    int status_code[SERVE_METRICS_STATUSES];   /* HTTP statuses seen, in first-seen order */
    uint64_t status_count[SERVE_METRICS_STATUSES];
    uint64_t requests_cancelled;                /* clients gone before the answer ended */
    uint64_t prompt_tokens, prompt_tokens_cached, completion_tokens;
    uint64_t prompt_tokens_restored;            /* of the cached: from the prompt cache */
    uint64_t prompt_tokens_shared;              /* of the cached: from another slot's cache */
    uint64_t prompt_cache_bytes;
    int prompt_cache_entries;
    /* per request: time to first token (from arrival), time per output token
     * after the first, end to end (arrival to the end), in the queue (arrival
     * to its slot) */
    serve_histogram latency[SERVE_LATENCIES];
    double prefill_seconds, decode_seconds;
    double last_decode_tokens_per_second;
    int queue_depth;                            /* waiting or running */
    int running;                                /* in a slot (serve --parallel) */
    uint64_t decode_steps, decode_step_rows;    /* steps, and the requests they stepped */
    uint64_t decode_steps_in_prefill;           /* of the steps: between a prefill chunk's layers */
    uint64_t prompts_between_layers;            /* short new prompts prefilled there */
    /* a decode step's recent seconds by its rows (requests and the guesses
     * checked with them); 0: no step of that many rows yet */
    double step_seconds[SERVE_METRICS_STEP_ROWS + 1];
    uint64_t draft_tokens, draft_tokens_accepted;   /* --draft-lookup: guessed, kept */
    /* the chance of each guess position being kept by match class, as the last
     * finished request learned it (draft_tuner); 0: no request finished yet */
    double draft_chance[DRAFT_MATCH_CLASSES][DRAFT_GUESS_MAX];
    /* --profile: the engine's time and reads by part of the model, [0] prefill
     * and [1] decode, as of the last pass */
    int have_profile;
    profile_part profile[2][PROFILE_PARTS];
    /* expert tiers (only with a tiered expert source) */
    int have_tiers;
    uint64_t dram_hits, dram_misses, nvme_bytes_read;
    double stall_seconds;
} serve_metrics;

void serve_metrics_count_status(serve_metrics *m, int status);
/* Adds an observation of latency `which` (SERVE_LATENCY_*), in seconds. */
void serve_metrics_observe(serve_metrics *m, int which, double seconds);
/* Prometheus text into a malloc'd string (NULL when out of memory). */
char *serve_metrics_render(const serve_metrics *m);

#endif
