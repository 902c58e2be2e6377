/* gpu_probe (build without CUDA): there is never a device; see gpu_probe.h. */
#include <stdio.h>

#include "gpu_probe.h"

int gpu_probe(char *desc, size_t n)
{
    snprintf(desc, n, "built without CUDA (CUDA=0 or no nvcc)");
    return 0;
}

int gpu_describe(int device, char *desc, size_t n)
{
    (void)device;
    return gpu_probe(desc, n) - 1;
}
