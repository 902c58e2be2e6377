/* kv_cache: the MLA latent cache, one row per position and layer.
 *
 * A row is the rms-normed latent (kv_lora_rank values) followed by the rotated
 * shared rope key (qk_rope_head_dim values): 576 floats per token per layer for
 * Kimi K2, against 64 * (192 + 128) for an uncompressed cache. */
#ifndef MOETIER_KV_CACHE_H
#define MOETIER_KV_CACHE_H

#include "backend.h"
#include "core/base/errbuf.h"

typedef struct kv_cache {
    backend *be;
    int n_layers;
    int max_ctx;
    int row;                /* floats per position */
    float **layer;          /* [n_layers] -> [max_ctx][row] */
} kv_cache;

int kv_cache_create(kv_cache *kv, backend *be, int n_layers, int max_ctx, int row, errbuf *e);
void kv_cache_destroy(kv_cache *kv);
float *kv_cache_row(const kv_cache *kv, int layer, int pos);
/* Host rows of positions [first, end): layer l's row for position p at
 * rows + (l * stride + p - first) * row (stride >= end - first). */
typedef struct kv_span {
    const float *rows;
    int first, end, stride;
} kv_span;

/* Positions [from, to) of every layer to host, laid out [n_layers][to - from][row]. */
void kv_cache_save(const kv_cache *kv, int from, int to, float *host);
/* Positions [from, to) of one layer to host, rows one after another. */
void kv_cache_save_layer(const kv_cache *kv, int layer, int from, int to, float *host);
/* Positions [from, to) of every layer from s, which holds them. */
void kv_cache_load(kv_cache *kv, int from, int to, const kv_span *s);
/* Positions [from, to) of one layer from host, rows one after another. */
void kv_cache_load_layer(kv_cache *kv, int layer, int from, int to, const float *host);

#endif
