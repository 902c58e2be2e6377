/* routing_trace: which experts each token chose in each MoE layer, on disk and in
 * memory.
 *
 * File format (docs/traces.md): a 64-byte header ("MOETTRC1", version, flags,
 * layers, experts per layer, top_k, event and chunk counts), then chunks of
 * events, each chunk lz4-compressed with its raw size, compressed size and the
 * XXH64 of the raw bytes in front. An event is one (stream, token, layer): u32
 * stream (a prompt or conversation), u32 token position, u16 layer, then top_k
 * u16 expert ids in the order the router chose them, then top_k f32 routing
 * weights when the WEIGHTS flag is set. */
#ifndef MOETIER_ROUTING_TRACE_H
#define MOETIER_ROUTING_TRACE_H

#include <stdint.h>
#include <stdio.h>

#include "core/base/errbuf.h"

#define TRACE_VERSION 1
#define TRACE_FLAG_WEIGHTS 1u

typedef struct routing_trace {
    uint32_t n_layers;          /* layer ids are 0..n_layers-1 */
    uint32_t n_experts;         /* expert ids are 0..n_experts-1 */
    uint32_t top_k;
    uint32_t flags;
    uint64_t n;                 /* events */
    uint64_t cap;
    uint32_t *stream, *token;   /* [n] */
    uint16_t *layer;            /* [n] */
    uint16_t *experts;          /* [n][top_k] */
    float *weights;             /* [n][top_k] with TRACE_FLAG_WEIGHTS, else NULL */
} routing_trace;

int trace_init(routing_trace *t, uint32_t n_layers, uint32_t n_experts, uint32_t top_k,
               uint32_t flags, errbuf *e);
void trace_free(routing_trace *t);
/* Appends one event (weights may be NULL when the trace has none). */
int trace_append(routing_trace *t, uint32_t stream, uint32_t token, uint16_t layer,
                 const uint16_t *experts, const float *weights, errbuf *e);

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
