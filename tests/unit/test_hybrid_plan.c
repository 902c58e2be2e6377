/* The hybrid cost model (kernels/hybrid_plan.c): which missed experts the CPU
 * computes and which of those are copied into VRAM too. Checked on fixed cases
 * worked out by hand and on random batches against the rules the plan
 * promises: experts in VRAM stay on the GPU, the batch is never predicted
 * slower than with every miss copied, no single further move would shorten it,
 * and promotions fit in the copy engine's idle time. No GPU needed. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/decode_bound.h"
#include "kernels/hybrid_plan.h"

/* one second per expert copy (1 GB at 1 GB/s); the GPU's compute per read and
 * the CPU's per token are set per test */
static hybrid_rates rates(double gpu_s, double cpu_token_s)
{
    hybrid_rates r = {.copy_pinned = 1e9, .copy_pageable = 1e9, .gpu = 1e9 / gpu_s,
                      .cpu_row = 0, .cpu_token = cpu_token_s / 1e6};
    return r;
}

static hybrid_job job(int tokens, int in_vram)
{
    hybrid_job j = {.bytes = 1000000000ull, .weights = 1000000, .tokens = tokens,
                    .in_vram = in_vram, .pinned = 1, .cacheable = 1};
    return j;
}

static int count(const unsigned char *place, int n, int what)
{
    int c = 0;
    for (int i = 0; i < n; i++)
        c += place[i] == what;
    return c;
}

Test(hybrid_plan, a_slow_cpu_gets_nothing)
{
    hybrid_rates r = rates(1e-3, 10);    /* 10 s on the CPU vs a 1 s copy */
    hybrid_job j[4] = {job(1, 0), job(1, 0), job(1, 1), job(1, 0)};
    unsigned char place[4];
    int order[4];
    double t = hybrid_plan_batch(&r, j, 4, place, order);
    cr_assert_eq(count(place, 4, HYBRID_GPU), 4);
    cr_assert_float_eq(t, 3.0, 1e-2, "three copies of 1 s: %g", t);
}

/* Copies of 1 s, 0.3 s per expert on the CPU: moving misses to the CPU pays
 * until the CPU side would pass the copies left (3 of 4 move: 1 s). */
Test(hybrid_plan, misses_move_while_the_batch_gets_shorter)
{
    hybrid_rates r = rates(1e-6, 0.3);
    hybrid_job j[4] = {job(1, 0), job(1, 0), job(1, 0), job(1, 0)};
    unsigned char place[4];
    int order[4];
    double t = hybrid_plan_batch(&r, j, 4, place, order);
    cr_assert_eq(count(place, 4, HYBRID_GPU), 1, "one copy left");
    cr_assert_eq(count(place, 4, HYBRID_CPU), 3);
    cr_assert_float_eq(t, 1.0, 1e-3, "%g", t);
}

/* Fewer tokens cost the CPU less: the 1-token expert moves, the 40-token one
 * (12 s on the CPU) is copied. */
Test(hybrid_plan, the_fewest_tokens_move_first)
{
    hybrid_rates r = rates(1e-6, 0.3);
    hybrid_job j[2] = {job(40, 0), job(1, 0)};
    unsigned char place[2];
    int order[2];
    hybrid_plan_batch(&r, j, 2, place, order);
    cr_assert(place[0] == HYBRID_GPU && place[1] != HYBRID_GPU, "placed %d %d", place[0], place[1]);
}

/* A pageable source copies at a tenth of the speed: the batch of
 * misses_move_while_the_batch_gets_shorter then computes every miss on the
 * CPU (1.2 s instead of 10 s of copies). */
Test(hybrid_plan, pageable_sources_favour_the_cpu)
{
    hybrid_rates r = rates(1e-6, 0.3);
    r.copy_pageable = r.copy_pinned / 10;
    hybrid_job j[4] = {job(1, 0), job(1, 0), job(1, 0), job(1, 0)};
    unsigned char place[4];
    int order[4];
    hybrid_plan_batch(&r, j, 4, place, order);
    cr_assert_eq(count(place, 4, HYBRID_GPU), 1, "registered: one copy");
    for (int i = 0; i < 4; i++)
        j[i].pinned = 0;
    hybrid_plan_batch(&r, j, 4, place, order);
    cr_assert_eq(count(place, 4, HYBRID_GPU), 0, "pageable: every miss on the CPU");
}

/* The GPU is busy 2 s per expert (a long prefill): every miss goes to the CPU
 * (0.3 s each) and the copy engine, idle for the batch's 2 s of the expert
 * in VRAM, copies two of them into the cache, the most tokens first. */
Test(hybrid_plan, idle_copies_promote_the_busiest_cpu_experts)
{
    hybrid_rates r = rates(2.0, 0.1);
    hybrid_job j[4] = {job(1, 1), job(1, 0), job(3, 0), job(2, 0)};
    unsigned char place[4];
    int order[4];
    double t = hybrid_plan_batch(&r, j, 4, place, order);
    cr_assert_float_eq(t, 2.0, 1e-3, "the GPU's expert: %g", t);
    cr_assert_eq(place[0], HYBRID_GPU);
    cr_assert_eq(place[1], HYBRID_CPU, "the 1-token expert is computed, not copied");
    cr_assert_eq(place[2], HYBRID_CPU_PROMOTE);
    cr_assert_eq(place[3], HYBRID_CPU_PROMOTE);
    j[2].cacheable = 0;     /* no key: nothing to keep */
    hybrid_plan_batch(&r, j, 4, place, order);
    cr_assert(place[2] == HYBRID_CPU && place[1] == HYBRID_CPU_PROMOTE &&
              place[3] == HYBRID_CPU_PROMOTE, "placed %d %d %d", place[1], place[2], place[3]);
}

/* The batch of idle_copies_promote_the_busiest_cpu_experts with two predicted
 * experts of the next layer: they take the idle 2 s before any promotion; one
 * already in VRAM is left alone. */
Test(hybrid_plan, predicted_experts_are_copied_before_promotions)
{
    hybrid_rates r = rates(2.0, 0.1);
    hybrid_job j[7] = {job(1, 1), job(1, 0), job(3, 0), job(2, 0), job(0, 0), job(0, 1), job(0, 0)};
    unsigned char place[7];
    int order[7];
    double t = hybrid_plan_batch(&r, j, 7, place, order);
    cr_assert_float_eq(t, 2.0, 1e-3, "predicted experts change the batch: %g", t);
    cr_assert(place[4] == HYBRID_PREFETCH && place[5] == HYBRID_SKIP && place[6] == HYBRID_PREFETCH,
              "predicted: %d %d %d", place[4], place[5], place[6]);
    cr_assert(place[1] == HYBRID_CPU && place[2] == HYBRID_CPU && place[3] == HYBRID_CPU,
              "no idle time left to promote: %d %d %d", place[1], place[2], place[3]);
    hybrid_plan_fixed(j, 7, 2, place);
    cr_assert(place[4] == HYBRID_SKIP && place[6] == HYBRID_SKIP, "the fixed rule prefetched");
}

Test(hybrid_plan, the_fixed_rule_is_a_token_threshold)
{
    hybrid_job j[4] = {job(1, 0), job(3, 0), job(2, 1), job(2, 0)};
    unsigned char place[4];
    hybrid_plan_fixed(j, 4, 2, place);
    cr_assert(place[0] == HYBRID_CPU && place[1] == HYBRID_GPU && place[2] == HYBRID_GPU &&
              place[3] == HYBRID_CPU, "placed %d %d %d %d", place[0], place[1], place[2], place[3]);
    hybrid_plan_fixed(j, 4, 0, place);
    cr_assert_eq(count(place, 4, HYBRID_GPU), 4);
}

static double urand(unsigned *s)
{
    *s = *s * 1103515245u + 12345u;
    return (double)(*s >> 8) / (double)(1u << 24);
}

/* the predicted seconds of a placement, as the model defines them */
static double batch_seconds(const hybrid_rates *r, const hybrid_job *j, int n,
                            const unsigned char *place, double *copy_out)
{
    double copy = 0, gpu = 0, cpu = 0;
    for (int i = 0; i < n; i++)
        if (place[i] == HYBRID_GPU) {
            gpu += hybrid_gpu_seconds(r, &j[i]);
            copy += j[i].in_vram ? 0 : hybrid_copy_seconds(r, &j[i]);
        } else if (place[i] == HYBRID_CPU || place[i] == HYBRID_CPU_PROMOTE) {
            cpu += hybrid_cpu_seconds(r, &j[i]);
        }
    *copy_out = copy;
    double m = copy > gpu ? copy : gpu;
    return m > cpu ? m : cpu;
}

Test(hybrid_plan, random_batches_keep_the_rules)
{
    unsigned s = 7;
    for (int round = 0; round < 2000; round++) {
        hybrid_rates r = {.copy_pinned = 1e9 * (1 + 60 * urand(&s)),
                          .copy_pageable = 1e9 * (1 + 20 * urand(&s)),
                          .gpu = 1e11 * (1 + 30 * urand(&s)), .cpu_row = 1e-10 * (1 + 20 * urand(&s)),
                          .cpu_token = 1e-11 * (1 + 50 * urand(&s))};
        int n = 1 + (int)(urand(&s) * 40);
        hybrid_job j[40];
        for (int i = 0; i < n; i++) {
            j[i].weights = (uint64_t)(1e6 + urand(&s) * 4e7);
            j[i].bytes = j[i].weights * (urand(&s) < 0.5 ? 1 : 2) / 2;
            double u = urand(&s);   /* a fifth are predicted experts, no tokens */
            j[i].tokens = u < 0.2 ? 0 : u < 0.7 ? 1 + (int)(urand(&s) * 4) : 1 + (int)(urand(&s) * 500);
            j[i].in_vram = urand(&s) < 0.3;
            j[i].pinned = urand(&s) < 0.7;
            j[i].cacheable = urand(&s) < 0.9;
        }
        unsigned char place[40], all_gpu[40];
        int order[40];
        double t = hybrid_plan_batch(&r, j, n, place, order), copy, copy_all;
        double t_check = batch_seconds(&r, j, n, place, &copy);
        cr_assert_float_eq(t, t_check, 1e-9 * t + 1e-300, "round %d: reported %g, placement takes %g",
                           round, t, t_check);
        for (int i = 0; i < n; i++)
            all_gpu[i] = j[i].tokens ? HYBRID_GPU : HYBRID_SKIP;
        cr_assert_leq(t, batch_seconds(&r, j, n, all_gpu, &copy_all) * (1 + 1e-12),
                      "round %d: slower than copying every miss", round);
        double promoted = 0;
        for (int i = 0; i < n; i++) {
            if (!j[i].tokens) {
                cr_assert(place[i] == HYBRID_SKIP || place[i] == HYBRID_PREFETCH,
                          "round %d: a predicted expert placed %d", round, place[i]);
                cr_assert(place[i] == HYBRID_SKIP || (j[i].cacheable && !j[i].in_vram),
                          "round %d: prefetched one in VRAM or without a key", round);
            } else {
                cr_assert(place[i] <= HYBRID_CPU_PROMOTE, "round %d: a job left alone", round);
                cr_assert(!(j[i].in_vram && place[i] != HYBRID_GPU),
                          "round %d: expert in VRAM on the CPU", round);
            }
            if (place[i] == HYBRID_CPU_PROMOTE || place[i] == HYBRID_PREFETCH) {
                cr_assert(j[i].cacheable, "round %d: promoted without a key", round);
                promoted += hybrid_copy_seconds(&r, &j[i]);
            }
            if (place[i] == HYBRID_CPU || place[i] == HYBRID_CPU_PROMOTE) {
                unsigned char was = place[i];
                place[i] = HYBRID_GPU;  /* nor the move back */
                double c2, t2 = batch_seconds(&r, j, n, place, &c2);
                cr_assert_geq(t2, t * (1 - 1e-12), "round %d: moving expert %d to the GPU shortens "
                              "%g to %g", round, i, t, t2);
                place[i] = was;
            }
            if (place[i] != HYBRID_GPU || j[i].in_vram)
                continue;
            place[i] = HYBRID_CPU;      /* one more move must not help */
            double c2, t2 = batch_seconds(&r, j, n, place, &c2);
            cr_assert_geq(t2, t * (1 - 1e-12), "round %d: moving expert %d shortens %g to %g", round,
                          i, t, t2);
            place[i] = HYBRID_GPU;
        }
        cr_assert_leq(promoted, (t - copy) * (1 + 1e-12) + 1e-15, "round %d: copies ahead %g s, idle %g",
                      round, promoted, t - copy);
    }
}

Test(hybrid_plan, measured_cpu_rates_are_positive_and_adjust)
{
    hybrid_rates r = {0};
    hybrid_measure_cpu(&r, kernel_path_default(), NULL, NULL);
    cr_assert(r.cpu_row > 0 && r.cpu_token > 0 && isfinite(r.cpu_row) && isfinite(r.cpu_token),
              "row %g, token %g", r.cpu_row, r.cpu_token);
    hybrid_rates before = r;
    hybrid_update_cpu(&r, 1.0, 2.0);    /* twice as slow as predicted: a quarter of the way */
    cr_assert_float_eq(r.cpu_row, before.cpu_row * 1.25, 1e-20);
    cr_assert_float_eq(r.cpu_token, before.cpu_token * 1.25, 1e-20);
    hybrid_update_cpu(&r, 0, 2.0);      /* nothing predicted: nothing learnt */
    cr_assert_float_eq(r.cpu_row, before.cpu_row * 1.25, 1e-20);
    /* the GPU's rate (bytes/s) the same way: slower means a lower rate */
    r.gpu = 1e12;
    hybrid_update_gpu(&r, 1.0, 2.0);
    cr_assert_float_eq(r.gpu, 1e12 / 1.25, 1);
    hybrid_update_gpu(&r, 1.0, 100.0);  /* at most ten times: 0.75 + 2.5 */
    cr_assert_float_eq(r.gpu, 1e12 / 1.25 / 3.25, 1);
    hybrid_update_gpu(&r, 1.0, 0);      /* nothing measured: nothing learnt */
    cr_assert_float_eq(r.gpu, 1e12 / 1.25 / 3.25, 1);
    /* measured on a matrix like the model's experts, whatever their format */
    const linear_weight like[] = {
        {.fmt = WF_FP8_BLOCK, .cols = 448, .block_rows = 128, .block_cols = 128},
        {.fmt = WF_BF16, .cols = 320},
        {.fmt = WF_INT4_GROUP, .cols = 200, .group_size = 64},
        {.fmt = WF_F16, .cols = 99},
        {.fmt = WF_F32, .cols = 64},
    };
    for (int i = 0; i < 5; i++) {
        hybrid_rates f = {0};
        hybrid_measure_cpu(&f, kernel_path_default(), NULL, &like[i]);
        cr_assert(f.cpu_row > 0 && f.cpu_token > 0 && isfinite(f.cpu_row) && isfinite(f.cpu_token),
                  "%s: row %g, token %g", weight_format_name(like[i].fmt), f.cpu_row, f.cpu_token);
    }
}

/* The decode bound by hand: per token the GPU reads 20 GB resident + 6 experts
 * of 25 MB + 150 MB of KV cache at 1 TB/s (20.3 ms), the CPU computes 2
 * experts of 4.4 M weights at 1 + 2 ns per weight (26.4 ms), 0.25 GB is
 * copied at 25 GB/s (10 ms); the CPU's is the longest; 10 tokens in 0.5 s
 * make 50 ms each. */
Test(hybrid_plan, decode_bound_is_the_longest_side)
{
    hybrid_rates r = {.copy_pinned = 25e9, .copy_pageable = 10e9, .gpu = 1e12, .cpu_row = 1e-9,
                      .cpu_token = 2e-9};
    decode_work w = {.tokens = 10, .seconds = 0.5, .resident_bytes = 20000000000ull,
                     .gpu_experts = 60, .cpu_experts = 20, .expert_bytes = 25000000,
                     .expert_weights = 4400000, .bytes_copied = 2500000000ull,
                     .kv_bytes = 1500000000ull};
    decode_bound b;
    cr_assert_eq(decode_bound_compute(&r, &w, &b), 0);
    cr_assert_float_eq(b.gpu, 20.3e-3, 1e-9);
    cr_assert_float_eq(b.cpu, 26.4e-3, 1e-9);
    cr_assert_float_eq(b.copy, 10e-3, 1e-9);
    cr_assert_float_eq(b.bound, 26.4e-3, 1e-9);
    cr_assert_float_eq(b.measured, 50e-3, 1e-9);
    cr_assert_float_eq(b.fraction, 0.528, 1e-9);
    /* fewer CPU experts and more copies: the copies are the longest */
    w.cpu_experts = 0;
    w.bytes_copied = 10000000000ull;
    cr_assert_eq(decode_bound_compute(&r, &w, &b), 0);
    cr_assert_float_eq(b.bound, 40e-3, 1e-9);
    cr_assert_float_eq(b.cpu, 0, 1e-12);
    /* a long context: 30 GB of KV cache a token make the GPU's the longest */
    w.kv_bytes = 300000000000ull;
    cr_assert_eq(decode_bound_compute(&r, &w, &b), 0);
    cr_assert_float_eq(b.bound, 50.15e-3, 1e-9);
    w.kv_bytes = 0;
    /* no CPU rates are needed without CPU experts; nothing to bound otherwise */
    r.cpu_row = r.cpu_token = 0;
    cr_assert_eq(decode_bound_compute(&r, &w, &b), 0);
    w.cpu_experts = 1;
    cr_assert_eq(decode_bound_compute(&r, &w, &b), -1, "CPU experts without CPU rates");
    w.cpu_experts = 0;
    r.gpu = 0;
    cr_assert_eq(decode_bound_compute(&r, &w, &b), -1, "no GPU rate");
    r.gpu = 1e12;
    w.tokens = 0;
    cr_assert_eq(decode_bound_compute(&r, &w, &b), -1, "no tokens");
}
