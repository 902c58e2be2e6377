/* routing_trace: which experts each token chose in each MoE layer, on disk and in
 * memory.
 *
 * File format (docs/traces.md): a 64-byte header ("MOETTRC1", version, flags,
 * layers, experts per layer, top_k, event and chunk counts), then chunks of
 * events, each chunk lz4-compressed with its raw size, compressed size and the
 * XXH64 of the raw bytes in front. An event is one (stream, token, layer): u32
 * stream (a prompt or conversation), u32 token position, u16 layer, then top_k
 * u16 expert ids in the order the router chose them, then top_k f32 routing
 * weights when the WEIGHTS flag is set; with TIERS, where each expert was found
 * (u8 each: trace_origin), the bytes read from the store for the event's
 * experts (u32) and the seconds the engine waited for them (f32); with
 * PREDICTED, for each lookahead distance d = 1..depth (header field), a u64
 * mask of which of the chosen experts had been predicted at distance d and the
 * u16 number of experts predicted there. Version 2 added TIERS and PREDICTED;
 * version 1 files read the same. */
#ifndef MOETIER_ROUTING_TRACE_H
#define MOETIER_ROUTING_TRACE_H

#include <stdint.h>
#include <stdio.h>

#include "core/base/errbuf.h"

#define TRACE_VERSION 2
#define TRACE_FLAG_WEIGHTS 1u
#define TRACE_FLAG_TIERS 2u
#define TRACE_FLAG_PREDICTED 4u
#define TRACE_MAX_DEPTH 8
/* layers x experts at most (K2: 61 x 384 = 23,424), so keys fit an int */
#define TRACE_MAX_KEYS (1u << 24)

/* Where an event's expert was found. */
typedef enum trace_origin {
    ORIGIN_MAPPED = 0,          /* the checkpoint mapping (no tiers) */
    ORIGIN_DRAM = 1,            /* a DRAM tier hit */
    ORIGIN_STORE = 2,           /* read from the store when the layer asked */
    ORIGIN_EARLY = 3,           /* read from the store early, on a prediction */
} trace_origin;

typedef struct routing_trace {
    uint32_t n_layers;          /* layer ids are 0..n_layers-1 */
    uint32_t n_experts;         /* expert ids are 0..n_experts-1 */
    uint32_t top_k;
    uint32_t flags;
    uint32_t depth;             /* PREDICTED: lookahead distances recorded */
    uint64_t n;                 /* events */
    uint64_t cap;
    uint32_t *stream, *token;   /* [n] */
    uint16_t *layer;            /* [n] */
    uint16_t *experts;          /* [n][top_k] */
    float *weights;             /* [n][top_k] with TRACE_FLAG_WEIGHTS, else NULL */
    uint8_t *origin;            /* TIERS: [n][top_k] trace_origin */
    uint32_t *bytes;            /* TIERS: [n] */
    float *stall;               /* TIERS: [n] seconds */
    uint64_t *pred_mask;        /* PREDICTED: [n][depth] */
    uint16_t *pred_count;       /* PREDICTED: [n][depth] */
} routing_trace;

/* depth: lookahead distances with TRACE_FLAG_PREDICTED (1..TRACE_MAX_DEPTH), else
 * ignored. Appended events start with no tier or prediction data (zeros). */
int trace_init(routing_trace *t, uint32_t n_layers, uint32_t n_experts, uint32_t top_k,
               uint32_t flags, uint32_t depth, errbuf *e);
void trace_free(routing_trace *t);
/* How many layers have events: layer ids count dense layers and any a trace
 * leaves out, so n_layers is only their bound. */
uint32_t trace_layers_routed(const routing_trace *t);
/* Appends one event (weights may be NULL when the trace has none). */
int trace_append(routing_trace *t, uint32_t stream, uint32_t token, uint16_t layer,
                 const uint16_t *experts, const float *weights, errbuf *e);

/* TIERS: where event i's experts were found (top_k trace_origin values, in the
 * order of its experts), bytes read and seconds waited for them. */
void trace_set_tiers(routing_trace *t, uint64_t i, const uint8_t *origin, uint32_t bytes,
                     float stall);
/* PREDICTED: at distance d (1..depth), which of event i's experts were predicted
 * (bit k for its k-th expert) and how many experts were predicted for it. */
void trace_set_predicted(routing_trace *t, uint64_t i, uint32_t d, uint64_t mask,
                         uint16_t count);

int trace_write(const routing_trace *t, const char *path, errbuf *e);
/* Reads and validates a whole trace; a damaged or truncated file is refused
 * with the offset and what was wrong. */
int trace_read(routing_trace *t, const char *path, errbuf *e);

/* The CSV of ../shared/testdata/routing-traces: header "prompt,token,layer,experts",
 * experts space-separated. Layer and expert counts are taken from the data
 * (max id + 1); every row must have the same number of experts. `name` is for
 * messages. */
int trace_import_csv(routing_trace *t, FILE *in, const char *name, errbuf *e);

#endif
