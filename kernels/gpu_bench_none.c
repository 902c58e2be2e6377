/* gpu_bench (build without CUDA): nothing to measure; see gpu_bench.h. */
#include "gpu_bench.h"

int gpu_bench_copy(int device, uint64_t bytes, double seconds, gpu_copy_result *r, errbuf *e)
{
    (void)device;
    (void)bytes;
    (void)seconds;
    (void)r;
    return err_set(e, "this build has no CUDA backend (built with CUDA=0 or without nvcc)");
}

int gpu_bench_overlap(int device, int hidden, int inter, int gpu_experts, int cpu_experts,
                      int threads, int reps, gpu_overlap_result *r, errbuf *e)
{
    (void)device;
    (void)hidden;
    (void)inter;
    (void)gpu_experts;
    (void)cpu_experts;
    (void)threads;
    (void)reps;
    (void)r;
    return err_set(e, "this build has no CUDA backend (built with CUDA=0 or without nvcc)");
}

int gpu_bench_linear(int device, int fmt, int rows, int cols, int tokens, uint64_t set_bytes,
                     int reps, gpu_linear_result *r, errbuf *e)
{
    (void)device;
    (void)fmt;
    (void)rows;
    (void)cols;
    (void)tokens;
    (void)set_bytes;
    (void)reps;
    (void)r;
    return err_set(e, "this build has no CUDA backend (built with CUDA=0 or without nvcc)");
}

int gpu_bench_attention(int device, int context, int tokens, uint64_t set_bytes, int reps,
                        kv_type cache_type, gpu_attention_result *r, errbuf *e)
{
    (void)cache_type;
    (void)device;
    (void)context;
    (void)tokens;
    (void)set_bytes;
    (void)reps;
    (void)r;
    return err_set(e, "this build has no CUDA backend (built with CUDA=0 or without nvcc)");
}

int gpu_bench_prefill_attention(int device, int context, int tokens, int reps,
                                gpu_prefill_attention_result *r, errbuf *e)
{
    (void)device;
    (void)context;
    (void)tokens;
    (void)reps;
    (void)r;
    return err_set(e, "this build has no CUDA backend (built with CUDA=0 or without nvcc)");
}
