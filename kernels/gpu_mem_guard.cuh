/* gpu_mem_guard: the unused bytes of device allocations that hold several
 * arrays (the resident pool, the expert slots, the staging buffers) marked off
 * limits where something can check them.
 *
 * Under the CUDA emulation built with AddressSanitizer, device memory is host
 * memory, but ASan knows only each cudaMalloc's bounds: a kernel reading past
 * one weight into the alignment gap or the next weight of the same allocation
 * goes unseen, as it does on a GPU, where it reads the neighbour's bytes.
 * These allocations therefore start poisoned and each array's bytes are
 * opened as it is placed, so such a read fails the sanitized emulated tests.
 * Bytes are never closed again: a kernel still queued may read the old
 * occupant of a slot, and every expert of a model has the same shape, so its
 * bytes land where the old ones were. In every other build these do nothing. */
#ifndef MOETIER_GPU_MEM_GUARD_CUH
#define MOETIER_GPU_MEM_GUARD_CUH

#if defined(__SANITIZE_ADDRESS__)   /* gcc */
#define MOETIER_ASAN 1
#elif defined(__has_feature)        /* clang */
#if __has_feature(address_sanitizer)
#define MOETIER_ASAN 1
#endif
#endif

#if defined(MOETIER_CUDA_EMU) && defined(MOETIER_ASAN)
#include <sanitizer/asan_interface.h>
#define GPU_MEM_CLOSE(p, n) ASAN_POISON_MEMORY_REGION((p), (n))
#define GPU_MEM_OPEN(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
#define GPU_MEM_CLOSE(p, n) ((void)(p), (void)(n))
#define GPU_MEM_OPEN(p, n) ((void)(p), (void)(n))
#endif

#endif
