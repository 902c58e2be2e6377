/* gpu_probe (CUDA build): asks the runtime for devices; see gpu_probe.h. */
#include <cuda_runtime.h>
#include <stdio.h>

#include "gpu_probe.h"

/* "NAME, sm_90, 79.6 GB" for device d, or why its properties are unavailable */
static int properties(int d, char *desc, size_t n)
{
    cudaDeviceProp p;
    cudaError_t err = cudaGetDeviceProperties(&p, d);
    if (err != cudaSuccess) {
        snprintf(desc, n, "properties unavailable (%s)", cudaGetErrorString(err));
        cudaGetLastError();
        return -1;
    }
    snprintf(desc, n, "%s, sm_%d%d, %.1f GB", p.name, p.major, p.minor,
             (double)p.totalGlobalMem / 1e9);
    return 0;
}

/* the device count, or 0 with why there is none in desc */
static int device_count(char *desc, size_t n)
{
    int count = 0;
    cudaError_t err = cudaGetDeviceCount(&count);
    if (err != cudaSuccess || count == 0) {
        snprintf(desc, n, "CUDA build, no usable GPU (%s)",
                 err != cudaSuccess ? cudaGetErrorString(err) : "no devices");
        cudaGetLastError();
        return 0;
    }
    return count;
}

extern "C" int gpu_probe(char *desc, size_t n)
{
    int count = device_count(desc, n);
    if (!count)
        return 0;
    size_t used = (size_t)snprintf(desc, n, "%d device(s)", count);
    for (int d = 0; d < count && used < n; d++) {
        char one[320];
        properties(d, one, sizeof one);
        used += (size_t)snprintf(desc + used, n - used, "; %d: %s", d, one);
    }
    return count;
}

extern "C" int gpu_describe(int device, char *desc, size_t n)
{
    int count = device_count(desc, n);
    if (!count)
        return -1;
    if (device < 0 || device >= count) {
        snprintf(desc, n, "CUDA device %d does not exist (this machine has %d: 0..%d)", device,
                 count, count - 1);
        return -1;
    }
    char one[320];
    int rc = properties(device, one, sizeof one);
    snprintf(desc, n, "device %d: %s", device, one);
    return rc;
}
