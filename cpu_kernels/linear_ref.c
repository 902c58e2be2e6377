/* linear_ref: scalar dequantization and matrix-vector products (see linear_ref.h). */
#include "linear_ref.h"

#include <string.h>

#include "core/model/dtype.h"

static uint16_t load_u16(const uint8_t *p)
{
    uint16_t v;
    memcpy(&v, p, 2);
    return v;
}

void linear_ref_dequant_row(const linear_weight *w, int r, float *out)
{
    const uint8_t *base = w->data;
    size_t cols = (size_t)w->cols;
    switch (w->fmt) {
    case WF_F32:
        memcpy(out, base + (size_t)r * cols * 4, cols * 4);
        return;
    case WF_BF16:
        for (size_t j = 0; j < cols; j++)
            out[j] = bf16_to_f32(load_u16(base + ((size_t)r * cols + j) * 2));
        return;
    case WF_F16:
        for (size_t j = 0; j < cols; j++)
            out[j] = f16_to_f32(load_u16(base + ((size_t)r * cols + j) * 2));
        return;
    case WF_FP8_BLOCK: {
        const uint8_t *q = base + (size_t)r * cols;
        const uint8_t *srow = (const uint8_t *)w->scale +
                              (size_t)(r / w->block_rows) * (size_t)w->scale_cols * 4;
        for (size_t j = 0; j < cols; j++) {
            float s;
            memcpy(&s, srow + (j / (size_t)w->block_cols) * 4, 4);
            out[j] = e4m3_to_f32(q[j]) * s;
        }
        return;
    }
    case WF_INT4_GROUP: {
        const uint8_t *words = base + (size_t)r * (size_t)w->row_words * 4;
        const uint8_t *srow = (const uint8_t *)w->scale + (size_t)r * (size_t)w->scale_cols * 2;
        for (size_t j = 0; j < cols; j++) {
            uint32_t word;
            memcpy(&word, words + (j / 8) * 4, 4);
            int q = (int)((word >> (4 * (j % 8))) & 0xf) - 8;
            out[j] = (float)q * bf16_to_f32(load_u16(srow + (j / (size_t)w->group_size) * 2));
        }
        return;
    }
    default:
        memset(out, 0, cols * sizeof *out);
    }
}

float dot_f32(const float *a, const float *b, int n)
{
    /* Eight independent partial sums: a fixed, vectorisable summation order. */
    float s[8] = {0};
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; k++)
            s[k] += a[i + k] * b[i + k];
    float t = 0;
    for (; i < n; i++)
        t += a[i] * b[i];
    return ((s[0] + s[4]) + (s[1] + s[5])) + ((s[2] + s[6]) + (s[3] + s[7])) + t;
}

void linear_ref_forward(const linear_weight *w, const float *x, int T, float *y, float *row)
{
    for (int r = 0; r < w->rows; r++) {
        linear_ref_dequant_row(w, r, row);
        for (int t = 0; t < T; t++)
            y[(size_t)t * (size_t)w->rows + (size_t)r] = dot_f32(row, x + (size_t)t * (size_t)w->cols, w->cols);
    }
}
