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
