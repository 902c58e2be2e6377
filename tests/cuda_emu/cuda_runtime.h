/* cuda_runtime.h for the CPU emulation of the CUDA backend (make test-gpu-emu).
 *
 * The CUDA sources in kernels/ compile as C++ against this header, so the GPU
 * backend's tests (tests/unit/test_gpu.c, the golden and tier tests with
 * MOETIER_BACKEND=cuda) run on machines without a GPU. Only what the kernels
 * use is here: device memory is host memory (filled with 0xff bytes, so reading
 * what nobody wrote shows; counted against the device's size, emu_memory.cc),
 * copies are memmove; two emulated devices, each thread with its current one,
 * and a launch given another device's memory or stream aborts (emu_device.cc).
 * A launch runs its blocks one after another, in a pseudo-random order; a
 * block's threads are fibers (cuda_emu.cc) that all meet at every
 * __syncthreads and every warp shuffle, in a new order every round. Kernels and the default stream's synchronous work run at once;
 * its asynchronous copies run at its next operation (a pinned source is read
 * then, a pageable one at the call, as the driver stages it), and a copy queued
 * on a created stream runs only when something waits for it (an event or the
 * stream), so a kernel that reads a copy's destination without waiting sees
 * what was there before, and a pinned buffer changed before the copy runs gives
 * the copy its new bytes (emu_stream.cc); with MOETIER_EMU_COPIES_FIRST=1 the
 * default stream's kernels wait instead and created streams run at once, so
 * a copy that does not wait for the kernels still reading its destination
 * lands first. A launch beyond the device's limits
 * aborts. This checks indexing, reductions, shared memory use, launch shapes
 * and the ordering between streams, not the device's timing, memory model or
 * rounding of its math library. */
#ifndef MOETIER_CUDA_EMU_RUNTIME_H
#define MOETIER_CUDA_EMU_RUNTIME_H

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
/* One block runs at a time, so a static is exactly one block's shared memory.
 * In the plain build they all lie in one section, which each block starts
 * with as 0xff bytes (a device's shared memory holds nothing of the block
 * before). Under ASan they do not: a global in a named section gets no
 * redzones, and an overrun of the array is what that build is for. (A
 * template's or an inline function's static would leave the section or
 * conflict with it: keep static __shared__ arrays in plain kernels.) */
#ifdef __SANITIZE_ADDRESS__
#define __shared__ static
#else
#define __shared__ static __attribute__((section("emu_shared")))
#endif

struct dim3 {
    unsigned x, y, z;
    dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};
extern dim3 threadIdx, blockIdx, blockDim, gridDim;
struct alignas(16) float4 {
    float x, y, z, w;
};
inline float4 make_float4(float x, float y, float z, float w) { return float4{x, y, z, w}; }

/* streams and events: emu_stream.cc */
typedef struct emu_stream *cudaStream_t;
typedef struct emu_event *cudaEvent_t;
#define cudaStreamNonBlocking 0x1u
#define cudaEventDisableTiming 0x2u
#define cudaHostRegisterDefault 0x0u
typedef enum {
    cudaSuccess = 0,
    cudaErrorMemoryAllocation = 2,
    cudaErrorInvalidDevice = 101,
    cudaErrorInvalidResourceHandle = 400,
    cudaErrorNotReady = 600,
    cudaErrorIllegalAddress = 700,
    cudaErrorUnknown = 999
} cudaError_t;
typedef enum { cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost, cudaMemcpyDeviceToDevice } cudaMemcpyKind;
struct cudaDeviceProp {
    char name[256];
    int major, minor;
    size_t totalGlobalMem;
    int multiProcessorCount;
};

#define EMU_DEVICE_BYTES (16ull << 30)   /* each device's */
#define EMU_MAX_DEVICES 8
/* few, so that the tests' small attention calls take the split path too;
 * $MOETIER_EMU_MULTIPROCESSORS sets another count (132: an H100's or H200's),
 * to check that no test depends on this one */
inline int emu_multiprocessors(void)
{
    const char *v = getenv("MOETIER_EMU_MULTIPROCESSORS");
    int n = v ? atoi(v) : 0;
    return n > 0 ? n : 4;
}

inline const char *cudaGetErrorString(cudaError_t e)
{
    switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorInvalidResourceHandle: return "invalid resource handle";
    case cudaErrorNotReady: return "device not ready";
    case cudaErrorIllegalAddress: return "an illegal memory access was encountered";
    default: return "unknown error";
    }
}
inline cudaError_t cudaGetLastError(void) { return cudaSuccess; }
cudaError_t cudaDeviceSynchronize(void);
/* runs the default stream's queued work: before anything it does next */
void emu_default_stream_flush(void);
/* MOETIER_EMU_COPIES_FIRST=1: the default stream queues its kernels too, and
 * created streams run their work as soon as their waits allow (emu_stream.cc) */
bool emu_copies_first(void);
void emu_default_stream_push(std::function<void()> op);
/* host memory the device may read or write later (cudaMallocHost, cudaHostRegister) */
void emu_pin(void *p, size_t n);
void emu_unpin(const void *p);
/* the devices and each thread's current one (emu_device.cc) */
int emu_device_count(void);
int emu_current_device(void);
cudaError_t cudaGetDeviceCount(int *n);
cudaError_t cudaSetDevice(int d);
cudaError_t cudaGetDevice(int *d);
cudaError_t cudaGetDeviceProperties(cudaDeviceProp *p, int d);
/* device memory of the current device, counted against its EMU_DEVICE_BYTES
 * (emu_memory.cc); emu_device_of: the device whose memory holds p, -1 for
 * memory that is not a device's */
cudaError_t emu_device_malloc(void **p, size_t n);
void emu_device_free(void *p);
size_t emu_device_used(int device);
/* the most device memory held since the start or the last reset; C names, for
 * the unit tests (test_gpu.c) */
extern "C" size_t moetier_emu_device_peak(int device);
extern "C" void moetier_emu_device_peak_reset(int device);
extern "C" void moetier_emu_sticky_fault(void);
extern "C" void moetier_emu_divergent_meeting(int which);
int emu_device_of(const void *p);
inline cudaError_t cudaMemGetInfo(size_t *free_b, size_t *total)
{
    *total = EMU_DEVICE_BYTES;
    *free_b = EMU_DEVICE_BYTES - emu_device_used(emu_current_device());
    return cudaSuccess;
}
template <typename T> cudaError_t cudaMalloc(T **p, size_t n)
{
    void *v;
    cudaError_t err = emu_device_malloc(&v, n);
    *p = (T *)v;
    if (err == cudaSuccess)
        memset(v, 0xff, n);
    return err;
}
/* like the device, freeing waits for the queued work first */
inline cudaError_t cudaFree(void *p)
{
    cudaDeviceSynchronize();
    emu_device_free(p);
    return cudaSuccess;
}
inline cudaError_t cudaMallocHost(void **p, size_t n)
{
    *p = malloc(n ? n : 1);
    if (*p)
        emu_pin(*p, n ? n : 1);
    return *p ? cudaSuccess : cudaErrorMemoryAllocation;
}
inline cudaError_t cudaFreeHost(void *p)
{
    cudaDeviceSynchronize();
    emu_unpin(p);
    free(p);
    return cudaSuccess;
}
inline cudaError_t cudaHostRegister(void *p, size_t n, unsigned) { emu_pin(p, n); return cudaSuccess; }
inline cudaError_t cudaHostUnregister(void *p) { emu_unpin(p); return cudaSuccess; }
inline cudaError_t cudaMemcpy(void *d, const void *s, size_t n, cudaMemcpyKind)
{
    emu_default_stream_flush();
    memmove(d, s, n);
    return cudaSuccess;
}
cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned flags);
/* the device a stream belongs to (0: the current device's default stream) */
int emu_stream_device(cudaStream_t s);
cudaError_t cudaStreamDestroy(cudaStream_t s);
cudaError_t cudaStreamSynchronize(cudaStream_t s);
cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t ev, unsigned flags = 0);
cudaError_t cudaMemcpyAsync(void *d, const void *s, size_t n, cudaMemcpyKind, cudaStream_t st = 0);
cudaError_t cudaEventCreateWithFlags(cudaEvent_t *ev, unsigned flags);
inline cudaError_t cudaEventCreate(cudaEvent_t *ev) { return cudaEventCreateWithFlags(ev, 0); }
cudaError_t cudaEventDestroy(cudaEvent_t ev);
cudaError_t cudaEventRecord(cudaEvent_t ev, cudaStream_t s = 0);
cudaError_t cudaEventSynchronize(cudaEvent_t ev);
cudaError_t cudaEventQuery(cudaEvent_t ev);
cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t start, cudaEvent_t end);
inline cudaError_t cudaMemset(void *d, int v, size_t n)
{
    emu_default_stream_flush();
    memset(d, v, n);
    return cudaSuccess;
}
inline cudaError_t cudaMemsetAsync(void *d, int v, size_t n, cudaStream_t)
{
    if (emu_copies_first()) {
        emu_default_stream_push([d, v, n] { memset(d, v, n); });
    } else {
        emu_default_stream_flush();
        memset(d, v, n);
    }
    return cudaSuccess;
}

/* (never fused into an add after it, as nvcc never fuses __fmul_rn: the
 * volatile ends the expression a compiler allowed to contract would fuse) */
inline float __fmul_rn(float a, float b) { volatile float p = a * b; return p; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __uint_as_float(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
inline float __int_as_float(int i) { float f; memcpy(&f, &i, 4); return f; }
inline uint32_t __float_as_uint(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
void __syncthreads(void);
float __shfl_xor_sync(unsigned mask, float v, int lane_mask);

/* runs body(ctx) as every thread of the current block */
void emu_run_block(void (*body)(void *), void *ctx, unsigned nthreads);
void *emu_dynamic_smem(void);
void emu_set_dynamic_smem(size_t bytes);
/* v[0..n) = a pseudo-random permutation of 0..n-1 (the same sequence every run) */
void emu_shuffle(unsigned *v, unsigned n);

/* A launch the device would refuse (sm_90's limits: 1024 threads per block,
 * 65535 blocks in y and z, 48 KB of dynamic shared memory without opting in)
 * aborts with its shape, as the device's launch error would stop the backend. */
inline void emu_check_launch(dim3 grid, dim3 block, size_t smem)
{
    unsigned long long threads = (unsigned long long)block.x * block.y * block.z;
    if (threads == 0 || threads > 1024 || block.z > 64 || grid.x == 0 || grid.y == 0 ||
        grid.z == 0 || grid.x > 2147483647u || grid.y > 65535 || grid.z > 65535 ||
        smem > 48 * 1024) {
        fprintf(stderr, "CUDA emulation: a launch of grid %u x %u x %u, block %u x %u x %u, "
                "%zu bytes of shared memory is beyond the device's limits\n", grid.x, grid.y,
                grid.z, block.x, block.y, block.z, smem);
        abort();
    }
}

/* aborts unless the stream and every pointer given are the current device's
 * (or not a device's); emu_device.cc */
void emu_check_launch_device(int stream_device, const void *const *pointers, size_t n);

template <typename T> void emu_collect_pointer(const T &arg, std::vector<const void *> &out)
{
    if constexpr (std::is_pointer_v<T>)
        out.push_back((const void *)arg);
}

/* GPU_LAUNCH(kernel, grid, block, smem, stream)(args...) in the emulation.
 * Only pointer arguments are checked for their device: those inside a struct
 * argument are not. */
template <typename... P> struct emu_launch_t {
    void (*kernel)(P...);
    dim3 grid, block;
    size_t smem;
    cudaStream_t stream;
    template <typename... A> void operator()(A &&...args) const
    {
        struct call {
            void (*kernel)(P...);
            std::tuple<P...> args;
        } c{kernel, std::tuple<P...>(std::forward<A>(args)...)};
        emu_check_launch(grid, block, smem);
        if ((unsigned long long)grid.x * grid.y * grid.z > 0xffffffffull) {
            fprintf(stderr, "cuda_emu: a grid of more than 2^32 blocks\n");
            abort();
        }
        std::vector<const void *> pointers;
        std::apply([&](const P &...a) { (emu_collect_pointer(a, pointers), ...); }, c.args);
        emu_check_launch_device(emu_stream_device(stream), pointers.data(), pointers.size());
        dim3 g = grid, b = block;
        size_t sm = smem;
        auto run = [c, g, b, sm]() mutable {
            gridDim = g;
            blockDim = b;
            emu_set_dynamic_smem(sm);
            /* the blocks in a pseudo-random order: no kernel may depend on theirs */
            unsigned n = g.x * g.y * g.z;
            std::vector<unsigned> order(n);
            emu_shuffle(order.data(), n);
            for (unsigned k : order) {
                blockIdx = dim3(k % g.x, k / g.x % g.y, k / (g.x * g.y));
                emu_run_block([](void *p) {
                    call *kc = (call *)p;
                    std::apply(kc->kernel, kc->args);
                }, &c, b.x * b.y * b.z);
            }
        };
        if (!stream && emu_copies_first()) {
            emu_default_stream_push(run);
        } else {
            emu_default_stream_flush();
            run();
        }
    }
};
template <typename... P>
emu_launch_t<P...> emu_launcher(void (*kernel)(P...), dim3 grid, dim3 block, size_t smem,
                                cudaStream_t stream)
{
    return emu_launch_t<P...>{kernel, grid, block, smem, stream};
}

#endif
