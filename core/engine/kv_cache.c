/* kv_cache: see kv_cache.h. */
#include "kv_cache.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "kv_q8.h"

int kv_type_parse(const char *s, kv_type *out, errbuf *e)
{
    if (!strcasecmp(s, "f32") || !strcasecmp(s, "fp32") || !strcasecmp(s, "float32")) {
        *out = KV_F32;
        return 0;
    }
    if (!strcasecmp(s, "bf16") || !strcasecmp(s, "bfloat16")) {
        *out = KV_BF16;
        return 0;
    }
    if (!strcasecmp(s, "q8_0") || !strcasecmp(s, "q8")) {
        *out = KV_Q8_0;
        return 0;
    }
    return err_set(e, "--cache-type: '%s' is not a cache type (f32, bf16 or q8_0)", s);
}

const char *kv_type_name(kv_type t)
{
    return t == KV_BF16 ? "bf16" : t == KV_Q8_0 ? "q8_0" : "f32";
}

size_t kv_type_row_bytes(kv_type t, int n)
{
    if (t == KV_Q8_0)
        return kv_q8_row_bytes(n);
    return (size_t)n * (t == KV_BF16 ? 2 : 4);
}

int kv_cache_create(kv_cache *kv, backend *be, int n_layers, int max_ctx, int row, kv_type type,
                    errbuf *e)
{
    memset(kv, 0, sizeof *kv);
    kv->be = be;
    kv->max_ctx = max_ctx;
    kv->row = row;
    kv->type = type;
    if (type == KV_BF16 && row % 2)
        return err_set(e, "a bf16 KV cache needs an even number of values a position "
                       "(kv_lora_rank + qk_rope_head_dim = %d); use --cache-type f32", row);
    kv->layer = calloc((size_t)n_layers, sizeof *kv->layer);
    if (!kv->layer)
        return err_set(e, "out of memory for the KV cache");
    kv->n_layers = n_layers;
    for (int l = 0; l < n_layers; l++) {
        kv->layer[l] = be->ops->alloc(be, (size_t)max_ctx * (size_t)kv_cache_row_floats(kv));
        if (!kv->layer[l]) {
            double gb =
                (double)n_layers * (double)max_ctx * (double)kv_type_row_bytes(type, row) / 1e9;
            kv_cache_destroy(kv);
            return err_set(e, "cannot allocate the KV cache: %d layers x %d positions x %d %s "
                           "values = %.2f GB (lower -c)", n_layers, max_ctx, row,
                           kv_type_name(type), gb);
        }
    }
    return 0;
}

void kv_cache_destroy(kv_cache *kv)
{
    if (kv->layer)
        for (int l = 0; l < kv->n_layers; l++)
            if (kv->layer[l])
                kv->be->ops->release(kv->be, kv->layer[l]);
    free(kv->layer);
    memset(kv, 0, sizeof *kv);
}

int kv_cache_row_floats(const kv_cache *kv)
{
    return (int)(kv_type_row_bytes(kv->type, kv->row) / sizeof(float));
}

size_t kv_cache_position_bytes(const kv_cache *kv)
{
    return (size_t)kv->n_layers * (size_t)kv_cache_row_floats(kv) * sizeof(float);
}

void *kv_cache_row(const kv_cache *kv, int layer, int pos)
{
    return (float *)kv->layer[layer] + (size_t)pos * (size_t)kv_cache_row_floats(kv);
}

void kv_cache_save_layer(const kv_cache *kv, int layer, int from, int to, float *host)
{
    if (to > from)
        kv->be->ops->to_host(kv->be, host, kv_cache_row(kv, layer, from),
                             (size_t)(to - from) * (size_t)kv_cache_row_floats(kv));
}

void kv_cache_save(const kv_cache *kv, int from, int to, float *host)
{
    size_t row = (size_t)kv_cache_row_floats(kv);
    for (int l = 0; l < kv->n_layers; l++)
        kv_cache_save_layer(kv, l, from, to, host + (size_t)l * (size_t)(to - from) * row);
}

void kv_cache_load_layer(kv_cache *kv, int layer, int from, int to, const float *host)
{
    if (to > from)
        kv->be->ops->from_host(kv->be, kv_cache_row(kv, layer, from), host,
                               (size_t)(to - from) * (size_t)kv_cache_row_floats(kv));
}

void kv_cache_load(kv_cache *kv, int from, int to, const kv_span *s)
{
    size_t row = (size_t)kv_cache_row_floats(kv);
    for (int l = 0; l < kv->n_layers; l++)
        kv_cache_load_layer(kv, l, from, to,
                            s->rows + ((size_t)l * (size_t)s->stride + (size_t)(from - s->first)) * row);
}
