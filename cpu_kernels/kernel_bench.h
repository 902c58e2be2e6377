/* kernel_bench: the CPU expert-kernel benchmark behind `moetier bench kernels`
 * and bench/bench_kernels.
 *
 * For Kimi K2 expert shapes (7168 -> 2048 -> 7168, gate+up then down), per
 * format (INT4 g32, FP8 128x128, BF16), thread count and token count, it times
 * the expert FFN and reports weight GB/s and GFLOP/s next to yardsticks measured
 * in the same run: the machine's read bandwidth (a STREAM-like read of a buffer
 * far larger than the caches, with the same threads) and the FMA peak of the
 * kernel path's vector width. Decode runs the k2 layer (8 experts chosen at
 * random per token from a set much larger than the caches); the batched rows run
 * one expert on many tokens. One JSON object per line:
 *   {"bench":"kernels","path","kernels","format","threads","tokens","experts",
 *    "gbps","gflops","read_bw_gbps","ratio","peak_gflops","peak_ratio","seconds"}
 * ("kernels": "cpu", or "twin" for the GPU backend's CPU twin). On a CPU with
 * AMX the batched rows run twice, the FMA product ("cpu") and then AMX
 * ("amx", with "fma_ratio": its GFLOP/s over the FMA row's). */
#ifndef MOETIER_KERNEL_BENCH_H
#define MOETIER_KERNEL_BENCH_H

#include <stdio.h>

#include "linear_kernels.h"

typedef struct kernel_bench_options {
    kernel_path path;
    int threads[8], n_threads;  /* thread counts to run */
    int tokens[8], n_tokens;    /* token counts to run */
    const char *formats;        /* comma list of int4,fp8,bf16 */
    double seconds;             /* per measurement */
    double set_gb;              /* bytes of distinct experts per format */
    int json;                   /* JSON lines (else a table) */
    int twin;                   /* the GPU backend's CPU twin (kernels/gpu_twin.h), one
                                 * expert after another as its hybrid side runs them */
    int fp8_subnormal;          /* FP8: one code in this many subnormal (0: none) */
    FILE *out;
} kernel_bench_options;

void kernel_bench_defaults(kernel_bench_options *o);
int kernel_bench_run(const kernel_bench_options *o, errbuf *e);
/* The machine's read bandwidth in GB/s as the benchmark measures it (a 1 GiB
 * STREAM-like read with `threads` threads and path's widest loads); -1 with e
 * set when the buffer cannot be had. */
double kernel_bench_read_bw(kernel_path path, int threads, errbuf *e);
/* The FMA peak in GFLOP/s the benchmark measures (back-to-back FMAs of path's
 * vector width on `threads` threads, a few milliseconds); 0 for the scalar
 * path, -1 with e set when the threads cannot be had. */
double kernel_bench_fma_peak(kernel_path path, int threads, errbuf *e);

#endif
