/* kv_cache: the MLA latent cache, one row per position and layer.
 *
 * A row is the rms-normed latent (kv_lora_rank values) followed by the rotated
 * shared rope key (qk_rope_head_dim values): 576 values per token per layer for
 * Kimi K2, against 64 * (192 + 128) for an uncompressed cache.
 *
 * The values are float32 (the default: the model's exact math), or, with
 * `--cache-type bf16`, rounded to bfloat16 when written (half the memory and
 * half the bytes attention reads, as the reference implementation keeps its
 * cache in its default dtype), or with `--cache-type q8_0` int8 in blocks of
 * 32 with a scale each (kv_q8.h: 28 % of float32's bytes). Rows go to and
 * from the host as the cache holds them, kv_cache_row_floats floats a
 * position (a bf16 cache's values two to a float, a q8_0 row's bytes four),
 * so saved prompts keep every bit and take the memory and disk of the cache. */
#ifndef MOETIER_KV_CACHE_H
#define MOETIER_KV_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "backend.h"
#include "core/base/errbuf.h"

typedef enum kv_type { KV_F32, KV_BF16, KV_Q8_0 } kv_type;

/* "f32" / "bf16" / "q8_0" (also "fp32", "float32", "bfloat16", "q8") -> 0;
 * else -1 with a message */
int kv_type_parse(const char *s, kv_type *out, errbuf *e);
const char *kv_type_name(kv_type t);
/* bytes a row of n values takes (a multiple of 4 for an even n) */
size_t kv_type_row_bytes(kv_type t, int n);

typedef struct kv_cache {
    backend *be;
    int n_layers;
    int max_ctx;
    int row;                /* values per position */
    kv_type type;
    void **layer;           /* [n_layers] -> [max_ctx] rows of float, bf16 or q8_0 */
} kv_cache;

int kv_cache_create(kv_cache *kv, backend *be, int n_layers, int max_ctx, int row, kv_type type,
                    errbuf *e);
void kv_cache_destroy(kv_cache *kv);
/* layer's row for position pos (float *, uint16_t * or a q8_0 row, as the type says) */
void *kv_cache_row(const kv_cache *kv, int layer, int pos);
/* floats one row takes, in backend memory and in host copies (half the
 * values for bf16, whose rows are an even count: kv_cache_create refuses
 * others; a q8_0 row's bytes over 4) */
int kv_cache_row_floats(const kv_cache *kv);
/* bytes of one position's rows in every layer */
size_t kv_cache_position_bytes(const kv_cache *kv);
/* Host rows of positions [first, end): layer l's row for position p at
 * rows + (l * stride + p - first) * kv_cache_row_floats (stride >= end - first). */
typedef struct kv_span {
    const float *rows;
    int first, end, stride;
} kv_span;

/* Positions [from, to) of every layer to host, laid out [n_layers][to - from][row floats]. */
void kv_cache_save(const kv_cache *kv, int from, int to, float *host);
/* Positions [from, to) of one layer to host, rows one after another. */
void kv_cache_save_layer(const kv_cache *kv, int layer, int from, int to, float *host);
/* Positions [from, to) of every layer from s, which holds them. */
void kv_cache_load(kv_cache *kv, int from, int to, const kv_span *s);
/* Positions [from, to) of one layer from host, rows one after another. */
void kv_cache_load_layer(kv_cache *kv, int layer, int from, int to, const float *host);

#endif
