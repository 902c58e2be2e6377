/* tune_model: predicted decode speed per DRAM budget, from a routing trace and
 * two numbers measured on this machine.
 *
 * A decode token costs the compute of every layer (dense, attention, the experts
 * it runs) plus a cost per expert read from the store (the wait, and what the
 * read takes from the CPUs). Both come from two measured decode runs at a small
 * and a large DRAM tier: the line through their (misses per token, seconds per
 * token). Misses per token at each budget come from replaying the routing
 * through the DRAM tier's own cache (one cache for all layers, the tier's
 * policy), which gives the live tier's counts exactly (tests/unit/test_tiers.c,
 * replay_equals_live); a tier that holds every expert is filled at start and
 * misses nothing. The model is for runs without lookahead (reads start when a
 * layer routes), and the check runs that way. */
#ifndef MOETIER_TUNE_MODEL_H
#define MOETIER_TUNE_MODEL_H

#include <stdint.h>

#include "prefetch/routing_trace.h"

typedef struct tune_calibration {
    double compute_s;           /* seconds per decode token without waiting for reads */
    double stall_per_miss_s;    /* seconds waited per expert read from the store */
} tune_calibration;

/* One measured decode run: `tokens` steps in decode_s seconds, of which stall_s
 * waiting for `misses` store reads. */
typedef struct tune_sample {
    int tokens;
    double decode_s, stall_s;
    uint64_t misses;
} tune_sample;

/* The line through a run at a small and one at a large DRAM tier. When they
 * missed about alike, the small run's measured wait per miss is the slope;
 * when the line would give no compute time at zero misses, the measured waits
 * give both (the compute stays positive whenever the large run took time). */
tune_calibration tune_calibrate(const tune_sample *small, const tune_sample *large);

typedef struct tune_point {
    int slots;                  /* experts the DRAM tier holds */
    double gb;                  /* its size */
    double hit_rate;
    double misses_per_token;
    double tokens_per_s;        /* predicted */
} tune_point;

/* Tokens (decode steps) in a trace: the events of its first MoE layer. */
uint64_t tune_trace_tokens(const routing_trace *t);

/* Fills every point's hit rate, misses per token and predicted speed (slots
 * and gb set by the caller); n_blobs: the experts of the model. */
int tune_predict(const routing_trace *t, const char *policy, const tune_calibration *c,
                 int n_blobs, tune_point *pts, int n, errbuf *e);

/* The recommended point: the smallest budget of at most max_slots predicted
 * within `within` (e.g. 0.05) of the fastest such budget; -1 when none fits. */
int tune_recommend(const tune_point *pts, int n, int max_slots, double within);

#endif
