/* Device memory of the CUDA emulation: host memory, counted against the
 * emulated device's size. cudaMemGetInfo then reports what is taken, an
 * allocation beyond the device fails as it does on a GPU (host memory would
 * overcommit), and tests can check that an operation gave back what it took.
 * Freeing a pointer that cudaMalloc did not return aborts: on a device it is
 * an error that cleanup code rarely checks. */
#include <mutex>
#include <unordered_map>

#include "cuda_runtime.h"

static std::mutex mu;
static std::unordered_map<void *, size_t> sizes;
static size_t used;

cudaError_t emu_device_malloc(void **p, size_t n)
{
    std::lock_guard<std::mutex> lock(mu);
    *p = NULL;
    if (n > EMU_DEVICE_BYTES - used)
        return cudaErrorMemoryAllocation;
    *p = malloc(n ? n : 1);
    if (!*p)
        return cudaErrorMemoryAllocation;
    sizes[*p] = n;
    used += n;
    return cudaSuccess;
}

void emu_device_free(void *p)
{
    if (!p)
        return;
    std::lock_guard<std::mutex> lock(mu);
    auto it = sizes.find(p);
    if (it == sizes.end()) {
        fprintf(stderr, "cuda emulation: cudaFree(%p): not a pointer cudaMalloc returned (freed "
                "twice?)\n", p);
        abort();
    }
    used -= it->second;
    sizes.erase(it);
    free(p);
}

size_t emu_device_used(void)
{
    std::lock_guard<std::mutex> lock(mu);
    return used;
}
