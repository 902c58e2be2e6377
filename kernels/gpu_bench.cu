/* gpu_bench: see gpu_bench.h. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gpu_ops.cuh"

extern "C" {
#include "kernels/gpu_bench.h"
}

static double seconds_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* GB/s of copies from src to dst for about `seconds` (at least 3 copies) */
static double copy_rate(void *dst, const void *src, uint64_t bytes, double seconds, int *copies)
{
    GPU_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice));     /* warm-up */
    GPU_CHECK(cudaDeviceSynchronize());
    double t0 = seconds_now(), t;
    int n = 0;
    do {
        GPU_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice));
        n++;
        t = seconds_now() - t0;
    } while (n < 3 || t < seconds);
    GPU_CHECK(cudaDeviceSynchronize());
    t = seconds_now() - t0;
    *copies = n;
    return (double)bytes * n / t / 1e9;
}

extern "C" int gpu_bench_copy(int device, uint64_t bytes, double seconds, gpu_copy_result *r, errbuf *e)
{
    memset(r, 0, sizeof *r);
    r->bytes = bytes;
    cudaError_t err = cudaSetDevice(device);
    void *dev = NULL, *pinned = NULL, *pageable = NULL;
    if (err == cudaSuccess)
        err = cudaMalloc(&dev, bytes);
    if (err == cudaSuccess)
        err = cudaMallocHost(&pinned, bytes);
    if (err != cudaSuccess) {
        cudaGetLastError();
        if (dev)
            cudaFree(dev);
        return err_set(e, "cannot set up a copy of %.1f MB on device %d: %s", bytes / 1e6, device,
                       cudaGetErrorString(err));
    }
    pageable = malloc(bytes);
    if (!pageable) {
        cudaFree(dev);
        cudaFreeHost(pinned);
        return err_set(e, "out of memory for %.1f MB of host memory", bytes / 1e6);
    }
    memset(pinned, 0x5a, bytes);    /* pages present: the copies measure the bus, not faults */
    memset(pageable, 0x5a, bytes);
    int n;
    r->pinned_gbps = copy_rate(dev, pinned, bytes, seconds, &n);
    r->copies = n;
    r->pageable_gbps = copy_rate(dev, pageable, bytes, seconds, &n);
    free(pageable);
    cudaFreeHost(pinned);
    cudaFree(dev);
    return 0;
}
