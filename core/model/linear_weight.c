/* linear_weight: names and sizes of the weight formats (see linear_weight.h). */
#include "linear_weight.h"

#include <stddef.h>

const char *weight_format_name(weight_format f)
{
    static const char *names[WF_COUNT] = {"f32", "f16", "bf16", "fp8-block", "int4-group"};
    return (f >= 0 && f < WF_COUNT) ? names[f] : "?";
}

uint64_t linear_weight_data_bytes(const linear_weight *w)
{
    uint64_t n = (uint64_t)w->rows * (uint64_t)w->cols;
    switch (w->fmt) {
    case WF_F32: return 4 * n;
    case WF_F16:
    case WF_BF16: return 2 * n;
    case WF_FP8_BLOCK: return n;
    case WF_INT4_GROUP: return 4ull * (uint64_t)w->rows * (uint64_t)w->row_words;
    default: return 0;
    }
}

uint64_t linear_weight_scale_bytes(const linear_weight *w)
{
    switch (w->fmt) {
    case WF_FP8_BLOCK:
        return 4ull * (uint64_t)((w->rows + w->block_rows - 1) / w->block_rows) *
               (uint64_t)w->scale_cols;
    case WF_INT4_GROUP: return 2ull * (uint64_t)w->rows * (uint64_t)w->scale_cols;
    default: return 0;
    }
}

uint64_t linear_weight_bytes(const linear_weight *w)
{
    return linear_weight_data_bytes(w) + linear_weight_scale_bytes(w);
}

int linear_weight_rows(const linear_weight *w, int r0, int n, linear_weight *out)
{
    const uint8_t *data = w->data, *scale = w->scale;
    size_t r = (size_t)r0, cols = (size_t)w->cols;
    *out = *w;
    out->rows = n;
    switch (w->fmt) {
    case WF_F32: out->data = data + r * cols * 4; return 1;
    case WF_F16:
    case WF_BF16: out->data = data + r * cols * 2; return 1;
    case WF_FP8_BLOCK:
        if (r0 % w->block_rows)
            return 0;
        out->data = data + r * cols;
        out->scale = scale + (r / (size_t)w->block_rows) * (size_t)w->scale_cols * 4;
        return 1;
    case WF_INT4_GROUP:
        out->data = data + r * (size_t)w->row_words * 4;
        out->scale = scale + r * (size_t)w->scale_cols * 2;
        return 1;
    default: return 0;
    }
}
