/* gpu_probe (CUDA build): asks the runtime for devices; see gpu_probe.h. */
#include <cuda_runtime.h>
#include <stdio.h>

#include "gpu_probe.h"

extern "C" int gpu_probe(char *desc, size_t n)
{
    int count = 0;
    cudaError_t err = cudaGetDeviceCount(&count);
    if (err != cudaSuccess || count == 0) {
        snprintf(desc, n, "CUDA build, no usable GPU (%s)",
                 err != cudaSuccess ? cudaGetErrorString(err) : "no devices");
        return 0;
    }
    cudaDeviceProp p;
    if (cudaGetDeviceProperties(&p, 0) != cudaSuccess) {
        snprintf(desc, n, "CUDA build, %d device(s), properties unavailable", count);
        return count;
    }
    snprintf(desc, n, "%d device(s); 0: %s, sm_%d%d, %.1f GB", count, p.name, p.major, p.minor,
             (double)p.totalGlobalMem / 1e9);
    return count;
}
