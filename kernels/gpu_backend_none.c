/* gpu_backend (build without CUDA): there is no device to run on; see gpu_backend.h. */
#include "gpu_backend.h"

int gpu_backend_create(backend *b, const gpu_options *o, errbuf *e)
{
    (void)b;
    (void)o;
    return err_set(e, "this build has no CUDA backend (built with CUDA=0 or without nvcc)");
}

const char *gpu_backend_device(const backend *b)
{
    (void)b;
    return "none";
}

int gpu_backend_multiprocessors(const backend *b)
{
    (void)b;
    return 0;
}

uint64_t gpu_backend_resident_bytes(const backend *b)
{
    (void)b;
    return 0;
}

int gpu_device_memory(int device, uint64_t *free_bytes, uint64_t *total_bytes, errbuf *e)
{
    (void)device;
    *free_bytes = *total_bytes = 0;
    return err_set(e, "this build has no CUDA backend (built with CUDA=0 or without nvcc)");
}

void gpu_backend_cache_stats(const backend *b, gpu_cache_stats *s)
{
    (void)b;
    *s = (gpu_cache_stats){0};
}

int gpu_backend_register_host(backend *b, void *p, uint64_t bytes, errbuf *e)
{
    (void)b;
    (void)p;
    (void)bytes;
    return err_set(e, "this build has no CUDA backend (built with CUDA=0 or without nvcc)");
}

void gpu_backend_rates(const backend *b, hybrid_rates *r)
{
    (void)b;
    *r = (hybrid_rates){0};
}
