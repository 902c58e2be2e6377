/* hybrid_plan: see hybrid_plan.h. */
#include "hybrid_plan.h"

#include <stdint.h>
#include <stdlib.h>

#include "core/base/progress.h"
#include "kernels/gpu_twin.h"

double hybrid_copy_seconds(const hybrid_rates *r, const hybrid_job *j)
{
    return (double)j->bytes / (j->pinned ? r->copy_pinned : r->copy_pageable);
}

double hybrid_gpu_seconds(const hybrid_rates *r, const hybrid_job *j)
{
    int reads = (j->tokens + HYBRID_GPU_TOKENS_PER_READ - 1) / HYBRID_GPU_TOKENS_PER_READ;
    return (double)j->bytes * (double)(reads > 0 ? reads : 1) / r->gpu;
}

double hybrid_cpu_seconds(const hybrid_rates *r, const hybrid_job *j)
{
    return (double)j->weights * (r->cpu_row + r->cpu_token * (double)j->tokens);
}

static double max2(double a, double b)
{
    return a > b ? a : b;
}

/* CPU seconds per second of copy saved: the cheapest moves first */
static double move_cost(const hybrid_rates *r, const hybrid_job *j)
{
    return hybrid_cpu_seconds(r, j) / hybrid_copy_seconds(r, j);
}

/* The three sides of a batch being placed */
typedef struct sides {
    double copy, gpu, cpu;
} sides;

static double longest(const sides *s)
{
    return max2(max2(s->copy, s->gpu), s->cpu);
}

/* Moves miss i to the other side if that shortens the batch (by more than
 * rounding); returns whether it did. */
static int try_move(const hybrid_rates *r, const hybrid_job *j, unsigned char *place, sides *s)
{
    double to_cpu = *place == HYBRID_GPU ? 1 : -1;
    sides t = {s->copy - to_cpu * hybrid_copy_seconds(r, j), s->gpu - to_cpu * hybrid_gpu_seconds(r, j),
               s->cpu + to_cpu * hybrid_cpu_seconds(r, j)};
    if (!(longest(&t) < longest(s) * (1 - 1e-12)))
        return 0;
    *place = to_cpu > 0 ? HYBRID_CPU : HYBRID_GPU;
    *s = t;
    return 1;
}

double hybrid_plan_batch(const hybrid_rates *r, const hybrid_job *jobs, int n, unsigned char *place,
                         int *order)
{
    sides s = {0, 0, 0};
    int m = 0;
    for (int i = 0; i < n; i++) {
        place[i] = jobs[i].tokens ? HYBRID_GPU : HYBRID_SKIP;
        if (!jobs[i].tokens)
            continue;
        s.gpu += hybrid_gpu_seconds(r, &jobs[i]);
        if (jobs[i].in_vram)
            continue;
        s.copy += hybrid_copy_seconds(r, &jobs[i]);
        /* insertion sort by move cost; ties keep the batch's order */
        double c = move_cost(r, &jobs[i]);
        int k = m++;
        while (k > 0 && move_cost(r, &jobs[order[k - 1]]) > c) {
            order[k] = order[k - 1];
            k--;
        }
        order[k] = i;
    }
    for (int k = 0; k < m; k++)
        try_move(r, &jobs[order[k]], &place[order[k]], &s);
    /* a move taken early can be worth undoing once the CPU side has grown, and
     * that can make another move pay: single moves either way, in the same
     * order, until none shortens the batch (each does, by more than rounding,
     * so this ends; a pass or two in practice) */
    for (int pass = 0, moved = 1; moved && pass < m; pass++) {
        moved = 0;
        for (int k = 0; k < m; k++)
            moved |= try_move(r, &jobs[order[k]], &place[order[k]], &s);
    }
    double batch = longest(&s), idle = batch - s.copy;
    /* while the copy engine would otherwise wait: the predicted experts in
     * their order, then the CPU's experts with the most tokens first */
    for (int i = 0; i < n; i++)
        if (!jobs[i].tokens && !jobs[i].in_vram && jobs[i].cacheable &&
            hybrid_copy_seconds(r, &jobs[i]) <= idle) {
            place[i] = HYBRID_PREFETCH;
            idle -= hybrid_copy_seconds(r, &jobs[i]);
        }
    for (;;) {
        int best = -1;
        for (int i = 0; i < n; i++)
            if (place[i] == HYBRID_CPU && jobs[i].cacheable &&
                hybrid_copy_seconds(r, &jobs[i]) <= idle &&
                (best < 0 || jobs[i].tokens > jobs[best].tokens))
                best = i;
        if (best < 0)
            break;
        place[best] = HYBRID_CPU_PROMOTE;
        idle -= hybrid_copy_seconds(r, &jobs[best]);
    }
    return batch;
}

void hybrid_plan_fixed(const hybrid_job *jobs, int n, int max_tokens, unsigned char *place)
{
    for (int i = 0; i < n; i++)
        place[i] = !jobs[i].tokens ? HYBRID_SKIP
                   : !jobs[i].in_vram && jobs[i].tokens <= max_tokens ? HYBRID_CPU : HYBRID_GPU;
}

/* best of three runs of the twin on w at T tokens */
static double time_twin(kernel_path path, thread_pool *pool, const linear_weight *w, const float *x,
                        int T, float *y, float *scratch)
{
    double best = 1e30;
    for (int rep = 0; rep < 3; rep++) {
        double t0 = now_seconds();
        gpu_twin_linear(path, pool, w, x, T, y, scratch);
        double t = now_seconds() - t0;
        best = t < best ? t : best;
    }
    return best;
}

/* A matrix of `rows` rows shaped like `like` (its format, width, groups or
 * blocks), its bytes pseudo-random but its values ordinary (no NaN codes, no
 * huge scales); data and scale are malloc'd. */
static int sample_matrix(const linear_weight *like, int rows, linear_weight *w)
{
    *w = (linear_weight){.fmt = like->fmt, .rows = rows, .cols = like->cols};
    size_t n = (size_t)rows * (size_t)like->cols, data_bytes, scale_count = 0;
    switch (like->fmt) {
    case WF_F32:
        data_bytes = n * 4;
        break;
    case WF_F16:
    case WF_BF16:
        data_bytes = n * 2;
        break;
    case WF_FP8_BLOCK:
        data_bytes = n;
        w->block_rows = like->block_rows > 0 ? like->block_rows : 128;
        w->block_cols = like->block_cols > 0 ? like->block_cols : 128;
        w->scale_cols = (like->cols + w->block_cols - 1) / w->block_cols;
        scale_count = (size_t)((rows + w->block_rows - 1) / w->block_rows) * (size_t)w->scale_cols;
        break;
    case WF_INT4_GROUP:
        w->group_size = like->group_size > 0 ? like->group_size : 32;
        w->row_words = (like->cols + 7) / 8;
        w->scale_cols = (like->cols + w->group_size - 1) / w->group_size;
        data_bytes = (size_t)rows * (size_t)w->row_words * 4;
        scale_count = (size_t)rows * (size_t)w->scale_cols;
        break;
    default:
        return -1;
    }
    uint8_t *data = malloc(data_bytes);
    void *scale = scale_count ? malloc(scale_count * 4) : NULL;
    if (!data || (scale_count && !scale)) {
        free(data);
        free(scale);
        return -1;
    }
    uint32_t s = 0x12345678u;
    for (size_t i = 0; i < data_bytes; i++) {
        s = s * 1664525u + 1013904223u;
        data[i] = (uint8_t)(s >> 24);
    }
    if (like->fmt == WF_FP8_BLOCK)
        for (size_t i = 0; i < n; i++)
            data[i] = (data[i] & 0x7f) == 0x7f ? 0x7e : data[i];    /* no NaN code */
    if (like->fmt == WF_F16 || like->fmt == WF_BF16)
        for (size_t i = 1; i < data_bytes; i += 2)
            data[i] &= 0xbb;    /* the high byte: a small exponent, |v| < 2 */
    if (like->fmt == WF_F32)
        for (size_t i = 3; i < data_bytes; i += 4)
            data[i] &= 0xbb;
    for (size_t i = 0; i < scale_count; i++) {
        if (like->fmt == WF_FP8_BLOCK)
            ((float *)scale)[i] = 0x1p-7f;
        else
            ((uint16_t *)scale)[i] = 0x3c00;    /* bf16 2^-7 */
    }
    w->data = data;
    w->scale = scale;
    return 0;
}

void hybrid_measure_cpu(hybrid_rates *r, kernel_path path, thread_pool *pool, const linear_weight *like)
{
    enum { ROWS = 1024, T_MANY = 16 };
    const linear_weight int4 = {.fmt = WF_INT4_GROUP, .cols = 2048, .group_size = 32};
    if (!like || like->cols < 1)
        like = &int4;
    int threads = pool ? thread_pool_size(pool) : 1, cols = like->cols;
    linear_weight w;
    int have_w = !sample_matrix(like, ROWS, &w);
    float *x = malloc((size_t)T_MANY * cols * sizeof *x), *y = malloc((size_t)T_MANY * ROWS * sizeof *y);
    float *scratch = malloc(gpu_twin_linear_scratch(cols, T_MANY, threads) * sizeof *scratch);
    /* the defaults stand when there is no memory to measure with */
    r->cpu_row = 1e-9;
    r->cpu_token = 2.5e-10;
    if (have_w && x && y && scratch) {
        for (size_t i = 0; i < (size_t)T_MANY * cols; i++)
            x[i] = (float)((int)(i % 13) - 6) * 0.125f;
        double W = (double)ROWS * cols;
        time_twin(path, pool, &w, x, 1, y, scratch);     /* warm the pool and the caches */
        double t1 = time_twin(path, pool, &w, x, 1, y, scratch);
        double tm = time_twin(path, pool, &w, x, T_MANY, y, scratch);
        double per_token = (tm - t1) / ((T_MANY - 1) * W);
        if (per_token > 0 && t1 / W > per_token) {
            r->cpu_token = per_token;
            r->cpu_row = t1 / W - per_token;
        } else if (t1 > 0) {    /* noise: keep the default split of the time */
            r->cpu_row = 0.8 * t1 / W;
            r->cpu_token = 0.2 * t1 / W;
        }
    }
    if (have_w) {
        free((void *)w.data);
        free((void *)w.scale);
    }
    free(x);
    free(y);
    free(scratch);
}

/* the factor that moves a rate a quarter of the way towards what was measured
 * (a tenth to ten times the prediction at most); 1 when nothing was predicted */
static double quarter_way(double predicted, double seconds)
{
    if (!(predicted > 0) || !(seconds > 0))
        return 1;
    double f = seconds / predicted;
    f = f < 0.1 ? 0.1 : f > 10 ? 10 : f;
    return 0.75 + 0.25 * f;
}

void hybrid_update_cpu(hybrid_rates *r, double predicted, double seconds)
{
    double k = quarter_way(predicted, seconds);
    r->cpu_row *= k;
    r->cpu_token *= k;
}

void hybrid_update_gpu(hybrid_rates *r, double predicted, double seconds)
{
    r->gpu /= quarter_way(predicted, seconds);
}
