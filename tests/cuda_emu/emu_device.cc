/* Devices of the CUDA emulation (cuda_runtime.h here): $MOETIER_EMU_DEVICES of
 * them, 2 unless set, so that the tests can put a backend on a device other
 * than the one each thread starts on. As in the runtime, the current device
 * belongs to the thread and starts at 0; memory, streams and events belong to
 * the device current when they were made (emu_memory.cc, emu_stream.cc).
 * A launch whose stream or pointer arguments belong to another device aborts
 * with both devices named: on a GPU (no peer access enabled) the kernel would
 * fault or fail, from whichever thread forgot to select the device. */
#include "cuda_runtime.h"

static thread_local int current;

int emu_device_count(void)
{
    const char *v = getenv("MOETIER_EMU_DEVICES");
    int n = v ? atoi(v) : 0;
    return n > 0 && n <= EMU_MAX_DEVICES ? n : 2;
}

int emu_current_device(void)
{
    return current;
}

cudaError_t cudaGetDeviceCount(int *n)
{
    *n = emu_device_count();
    return cudaSuccess;
}

cudaError_t cudaSetDevice(int d)
{
    if (d < 0 || d >= emu_device_count())
        return cudaErrorInvalidDevice;
    current = d;
    return cudaSuccess;
}

cudaError_t cudaGetDevice(int *d)
{
    *d = current;
    return cudaSuccess;
}

cudaError_t cudaGetDeviceProperties(cudaDeviceProp *p, int d)
{
    if (d < 0 || d >= emu_device_count())
        return cudaErrorInvalidDevice;
    snprintf(p->name, sizeof p->name, "CPU emulation");
    p->major = 9;
    p->minor = 0;
    p->totalGlobalMem = EMU_DEVICE_BYTES;
    p->multiProcessorCount = emu_multiprocessors();
    return cudaSuccess;
}

void emu_check_launch_device(int stream_device, const void *const *pointers, size_t n)
{
    if (stream_device != current) {
        fprintf(stderr, "CUDA emulation: a kernel launched on a stream of device %d while device "
                "%d is this thread's current one\n", stream_device, current);
        abort();
    }
    for (size_t i = 0; i < n; i++) {
        int d = emu_device_of(pointers[i]);
        if (d >= 0 && d != current) {
            fprintf(stderr, "CUDA emulation: a kernel launched on device %d is given memory of "
                    "device %d (argument %zu, %p)\n", current, d, i + 1, pointers[i]);
            abort();
        }
    }
}
