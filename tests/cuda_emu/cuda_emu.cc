/* cuda_emu: the threads of an emulated block (see cuda_runtime.h here).
 *
 * Each thread is a fiber on its own small stack, started by switching the stack
 * pointer and resumed with _setjmp/_longjmp (no system call per switch). The
 * scheduler runs every live thread up to its next meeting point (__syncthreads
 * or a warp shuffle), then starts the next round; a thread that returns leaves
 * the block. Shuffles exchange through two buffers used in alternate rounds,
 * so a thread's write for the next round never overwrites a value a slower
 * thread has still to read. */
#include <setjmp.h>

#include "cuda_runtime.h"

dim3 threadIdx, blockIdx, blockDim, gridDim;

#define MAX_THREADS 1024
#define STACK_BYTES (64 * 1024)

static jmp_buf scheduler, fiber[MAX_THREADS];
static char *stacks;
static unsigned char finished[MAX_THREADS], started[MAX_THREADS];
static unsigned current, round_no;
static float exchange[2][MAX_THREADS];
static void (*block_body)(void *);
static void *block_ctx;
static char *dyn_smem;
static size_t dyn_smem_bytes;

static void meet(void)
{
    if (!_setjmp(fiber[current]))
        _longjmp(scheduler, 1);
}

void __syncthreads(void)
{
    meet();
}

float __shfl_xor_sync(unsigned, float v, int lane_mask)
{
    unsigned t = current, r = round_no & 1;
    exchange[r][t] = v;
    meet();     /* every live thread has written this round's value */
    return exchange[r][(t & ~31u) | ((t & 31u) ^ (unsigned)lane_mask)];
}

static void fiber_main(void)
{
    block_body(block_ctx);
    finished[current] = 1;
    _longjmp(scheduler, 1);
}

__attribute__((noinline)) static void start_on_stack(char *top)
{
    __asm__ volatile("mov %0, %%rsp\n\tcall *%1\n\tud2" : : "r"(top), "r"(fiber_main) : "memory");
}

void *emu_dynamic_smem(void)
{
    return dyn_smem;
}

void emu_set_dynamic_smem(size_t bytes)
{
    if (bytes > dyn_smem_bytes) {
        free(dyn_smem);
        dyn_smem = (char *)aligned_alloc(64, (bytes + 63) / 64 * 64);
        dyn_smem_bytes = bytes;
    }
}

void emu_run_block(void (*body)(void *), void *ctx, unsigned n)
{
    if (n > MAX_THREADS) {
        fprintf(stderr, "cuda_emu: a block of %u threads (at most %d)\n", n, MAX_THREADS);
        abort();
    }
    if (!stacks && !(stacks = (char *)aligned_alloc(64, (size_t)MAX_THREADS * STACK_BYTES)))
        abort();
    block_body = body;
    block_ctx = ctx;
    memset(finished, 0, n);
    memset(started, 0, n);
    for (int live = 1; live; round_no++) {
        live = 0;
        for (unsigned i = 0; i < n; i++) {
            if (finished[i])
                continue;
            current = i;
            threadIdx = dim3(i % blockDim.x, i / blockDim.x % blockDim.y,
                             i / (blockDim.x * blockDim.y));
            if (!_setjmp(scheduler)) {
                if (!started[i]) {
                    started[i] = 1;
                    start_on_stack(stacks + (size_t)(i + 1) * STACK_BYTES - 64);
                }
                _longjmp(fiber[i], 1);
            }
            live += !finished[i];
        }
    }
}
