/* kv_cache: see kv_cache.h. */
#include "kv_cache.h"

#include <stdlib.h>
#include <string.h>

int kv_cache_create(kv_cache *kv, backend *be, int n_layers, int max_ctx, int row, errbuf *e)
{
    memset(kv, 0, sizeof *kv);
    kv->be = be;
    kv->max_ctx = max_ctx;
    kv->row = row;
    kv->layer = calloc((size_t)n_layers, sizeof *kv->layer);
    if (!kv->layer)
        return err_set(e, "out of memory for the KV cache");
    kv->n_layers = n_layers;
    for (int l = 0; l < n_layers; l++) {
        kv->layer[l] = be->ops->alloc(be, (size_t)max_ctx * (size_t)row);
        if (!kv->layer[l]) {
            double gb = (double)n_layers * (double)max_ctx * (double)row * 4 / 1e9;
            kv_cache_destroy(kv);
            return err_set(e, "cannot allocate the KV cache: %d layers x %d positions x %d floats "
                           "= %.2f GB (lower -c)", n_layers, max_ctx, row, gb);
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

float *kv_cache_row(const kv_cache *kv, int layer, int pos)
{
    return kv->layer[layer] + (size_t)pos * (size_t)kv->row;
}

void kv_cache_save_layer(const kv_cache *kv, int layer, int from, int to, float *host)
{
    if (to > from)
        kv->be->ops->to_host(kv->be, host, kv_cache_row(kv, layer, from),
                             (size_t)(to - from) * (size_t)kv->row);
}

void kv_cache_save(const kv_cache *kv, int from, int to, float *host)
{
    for (int l = 0; l < kv->n_layers; l++)
        kv_cache_save_layer(kv, l, from, to, host + (size_t)l * (size_t)(to - from) * (size_t)kv->row);
}

void kv_cache_load_layer(kv_cache *kv, int layer, int from, int to, const float *host)
{
    if (to > from)
        kv->be->ops->from_host(kv->be, kv_cache_row(kv, layer, from), host,
                               (size_t)(to - from) * (size_t)kv->row);
}

void kv_cache_load(kv_cache *kv, int from, int to, const kv_span *s)
{
    size_t row = (size_t)kv->row;
    for (int l = 0; l < kv->n_layers; l++)
        kv_cache_load_layer(kv, l, from, to,
                            s->rows + ((size_t)l * (size_t)s->stride + (size_t)(from - s->first)) * row);
}
