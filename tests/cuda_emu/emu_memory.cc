/* Device memory of the CUDA emulation: host memory, counted against the size
 * of the device current at the allocation. cudaMemGetInfo then reports what is
 * taken, an allocation beyond the device fails as it does on a GPU (host
 * memory would overcommit), and tests can check that an operation gave back
 * what it took, and the most a run held against its plan. Each allocation
 * remembers its device, for the launch check (emu_device.cc). Freeing a
 * pointer that cudaMalloc did not return aborts: on a device it is an error
 * that cleanup code rarely checks. */
#include <map>
#include <mutex>

#include "cuda_runtime.h"

struct allocation {
    size_t bytes;
    int device;
};

static std::mutex mu;
static std::map<const char *, allocation> allocations;   /* by address, for lookups inside */
static size_t used[EMU_MAX_DEVICES], peak[EMU_MAX_DEVICES];
static bool faulted, refusing;

cudaError_t emu_device_malloc(void **p, size_t n)
{
    std::lock_guard<std::mutex> lock(mu);
    int d = emu_current_device();
    *p = NULL;
    if (faulted)
        return cudaErrorIllegalAddress;
    if (refusing || n > EMU_DEVICE_BYTES - used[d])
        return cudaErrorMemoryAllocation;
    *p = malloc(n ? n : 1);
    if (!*p)
        return cudaErrorMemoryAllocation;
    allocations[(const char *)*p] = allocation{n, d};
    used[d] += n;
    if (used[d] > peak[d])
        peak[d] = used[d];
    return cudaSuccess;
}

void emu_device_free(void *p)
{
    if (!p)
        return;
    std::lock_guard<std::mutex> lock(mu);
    auto it = allocations.find((const char *)p);
    if (it == allocations.end()) {
        fprintf(stderr, "cuda emulation: cudaFree(%p): not a pointer cudaMalloc returned (freed "
                "twice?)\n", p);
        abort();
    }
    used[it->second.device] -= it->second.bytes;
    allocations.erase(it);
    free(p);
}

size_t emu_device_used(int device)
{
    std::lock_guard<std::mutex> lock(mu);
    return used[device];
}

extern "C" size_t moetier_emu_device_peak(int device)
{
    std::lock_guard<std::mutex> lock(mu);
    return peak[device];
}

/* What a device's context is after a kernel faults: every later call returns
 * the fault (here, allocations). A faulting kernel stops the emulation at
 * once, so tests inject it. */
extern "C" void moetier_emu_sticky_fault(void)
{
    std::lock_guard<std::mutex> lock(mu);
    faulted = true;
}

/* A device whose memory is all taken, while on: every allocation fails as
 * out of memory (tests of what an operation does without room). */
extern "C" void moetier_emu_refuse_allocations(int on)
{
    std::lock_guard<std::mutex> lock(mu);
    refusing = on != 0;
}

extern "C" void moetier_emu_device_peak_reset(int device)
{
    std::lock_guard<std::mutex> lock(mu);
    peak[device] = used[device];
}

int emu_device_of(const void *p)
{
    std::lock_guard<std::mutex> lock(mu);
    auto it = allocations.upper_bound((const char *)p);
    if (it == allocations.begin())
        return -1;
    --it;
    const char *c = (const char *)p;
    return c < it->first + it->second.bytes ? it->second.device : -1;
}
