/* cuda_emu: the threads of an emulated block (see cuda_runtime.h here).
 *
 * Each thread is a fiber on its own small stack; a switch between the
 * scheduler and a fiber is a few instructions inline (emu_switch; glibc's
 * _setjmp/_longjmp took two thirds of the emulation's time); a thread that
 * returns leaves the block. Between two __syncthreads the warps
 * run one after another, each to the barrier, in a pseudo-random order: that
 * is one of the orders a device may take (warps are only ever in step at a
 * barrier), so a kernel that reads what another warp writes without a barrier
 * between gets wrong numbers here. Within a warp the lanes meet at every
 * shuffle: each round runs every lane of the warp up to its next shuffle or
 * the barrier, in a new order. Shuffles exchange through two buffers used in
 * alternate rounds of the warp, so a lane's write for the next round never
 * overwrites a value a slower lane has still to read; a lane missing from a
 * shuffle (at the barrier, returned), or at another shuffle call, stops the
 * program (check_converged), as do threads at different barrier calls
 * (check_one_barrier).
 * Launches run their blocks in a pseudo-random order too (cuda_runtime.h), and
 * a block's shared memory starts as 0xff bytes (static arrays not under ASan:
 * cuda_runtime.h). The orders are the
 * same on every run (a fixed seed), so a failure repeats.
 *
 * Under AddressSanitizer (make test-gpu-emu SANITIZE=1) every switch between
 * the scheduler's stack and a fiber's is announced to it, so that it checks the
 * kernels' reads and writes of device memory, shared memory and their own
 * locals as it checks host code: what compute-sanitizer's memcheck does on a
 * device, here on the CPU. */
#include "cuda_runtime.h"

#ifndef __x86_64__
#error "the emulation's fiber switch (emu_switch) is written for x86-64"
#endif

#if defined(__SANITIZE_ADDRESS__)
#define EMU_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define EMU_ASAN 1
#endif
#endif
#ifdef EMU_ASAN
#include <sanitizer/common_interface_defs.h>
#endif

dim3 threadIdx, blockIdx, blockDim, gridDim;

#define MAX_THREADS 1024
#define MAX_WARPS (MAX_THREADS / 32)
#ifdef EMU_ASAN
#define STACK_BYTES (256 * 1024)    /* the sanitizer's redzones make frames larger */
#else
#define STACK_BYTES (64 * 1024)
#endif

/* the stack pointers of the scheduler and of each fiber while it is switched out */
static void *scheduler_sp, *fiber_sp[MAX_THREADS];
static char *stacks;
static unsigned char finished[MAX_THREADS], started[MAX_THREADS], at_barrier[MAX_THREADS];
/* where each thread called the barrier or shuffle it waits at: threads that
 * meet must have called the same one */
static void *waits_at[MAX_THREADS];
static unsigned current, warp_round[MAX_WARPS];
static dim3 thread_index[MAX_THREADS];  /* worked out once a block, not at every switch */
static float exchange[2][MAX_THREADS];
static void (*block_body)(void *);
static void *block_ctx;
static char *dyn_smem;
static size_t dyn_smem_bytes;
static uint32_t order_state = 0x9e3779b9u;

static unsigned emu_random(void)
{
    order_state ^= order_state << 13;     /* xorshift32 */
    order_state ^= order_state >> 17;
    order_state ^= order_state << 5;
    return order_state;
}

void emu_shuffle(unsigned *v, unsigned n)
{
    for (unsigned i = 0; i < n; i++)
        v[i] = i;
    for (unsigned i = n; i > 1; i--) {     /* Fisher-Yates */
        unsigned j = emu_random() % i, t = v[i - 1];
        v[i - 1] = v[j];
        v[j] = t;
    }
}

/* The four sides of a switch, announced to AddressSanitizer (nothing without
 * it): the scheduler leaving for fiber i, a fiber arriving (the first time
 * with no fake stack to take up), a fiber leaving for the scheduler (one that
 * has finished leaves its fake stack behind) and the scheduler arriving back. */
#ifdef EMU_ASAN
static const void *scheduler_bottom;
static size_t scheduler_size;
static void *scheduler_fake, *fiber_fake[MAX_THREADS];
static void leave_for_fiber(unsigned i)
{
    __sanitizer_start_switch_fiber(&scheduler_fake, stacks + (size_t)i * STACK_BYTES, STACK_BYTES);
}
static void arrive_in_fiber(int first)
{
    __sanitizer_finish_switch_fiber(first ? NULL : fiber_fake[current], &scheduler_bottom,
                                    &scheduler_size);
}
static void leave_for_scheduler(int done)
{
    __sanitizer_start_switch_fiber(done ? NULL : &fiber_fake[current], scheduler_bottom,
                                   scheduler_size);
}
static void arrive_in_scheduler(void)
{
    __sanitizer_finish_switch_fiber(scheduler_fake, NULL, NULL);
}
#else
static void leave_for_fiber(unsigned) {}
static void arrive_in_fiber(int) {}
static void leave_for_scheduler(int) {}
static void arrive_in_scheduler(void) {}
#endif

/* Switches to the stack to_sp, leaving this one's pointer in *from_sp: pushes
 * the frame pointer and where to go on, takes to_sp, pops what the other side
 * pushed and jumps there. Inline, without a call: a call's return would
 * land somewhere else and miss the processor's return prediction (and every
 * return after it), where here each switch site's jump is predicted for
 * itself, and a warp's lanes return from a shuffle to the one place the
 * first lane called it from. The other registers are named as clobbered, so
 * the compiler keeps what it needs of them on the stack itself. It steps over
 * the red zone below the stack pointer, which the code around may use. */
__attribute__((always_inline)) static inline void emu_switch(void **from_sp, void *to_sp)
{
    __asm__ volatile("leaq -128(%%rsp), %%rsp\n\t"
                     "pushq %%rbp\n\t"
                     "leaq 1f(%%rip), %%rax\n\t"
                     "pushq %%rax\n\t"
                     "movq %%rsp, (%%rdi)\n\t"
                     "movq %%rsi, %%rsp\n\t"
                     "popq %%rax\n\t"
                     "popq %%rbp\n\t"
                     "jmpq *%%rax\n"
                     "1:\n\t"
                     "leaq 128(%%rsp), %%rsp"
                     : "+D"(from_sp), "+S"(to_sp)
                     :
                     : "rax", "rbx", "rcx", "rdx", "r8", "r9", "r10", "r11", "r12", "r13", "r14",
                       "r15", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7",
                       "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15",
                       "st", "st(1)", "st(2)", "st(3)", "st(4)", "st(5)", "st(6)", "st(7)",
                       "memory", "cc");
}

static void meet(void)
{
    leave_for_scheduler(0);
    emu_switch(&fiber_sp[current], scheduler_sp);
    arrive_in_fiber(0);
}

__attribute__((noinline)) void __syncthreads(void)
{
    at_barrier[current] = 1;
    waits_at[current] = __builtin_return_address(0);
    meet();
}

__attribute__((noinline)) float __shfl_xor_sync(unsigned, float v, int lane_mask)
{
    unsigned t = current, r = warp_round[t / 32] & 1;
    waits_at[t] = __builtin_return_address(0);
    exchange[r][t] = v;
    meet();     /* every lane of the warp has written this round's value */
    return exchange[r][(t & ~31u) | ((t & 31u) ^ (unsigned)lane_mask)];
}

/* a fiber's first frame: entered by a switch's jump, never returns */
static void fiber_main(void)
{
    arrive_in_fiber(1);
    block_body(block_ctx);
    finished[current] = 1;
    leave_for_scheduler(1);
    emu_switch(&fiber_sp[current], scheduler_sp);
    __builtin_trap();   /* a finished fiber is never resumed */
}

/* fiber i's stack as a switch leaves one: fiber_main to go on at, a zero
 * frame pointer (backtraces end there), and the slot of the return address a
 * call would have pushed, so that fiber_main starts with the stack aligned
 * as a called function's. */
static void *first_frame(unsigned i)
{
    void **sp = (void **)(stacks + (size_t)(i + 1) * STACK_BYTES - 64 + 8);
    sp[0] = (void *)fiber_main;
    sp[1] = NULL;
    sp[2] = NULL;
    return sp;
}

void *emu_dynamic_smem(void)
{
    return dyn_smem;
}

/* exactly the launch's bytes, so that a kernel reading or writing past them
 * reaches the allocator's redzone (under AddressSanitizer) */
void emu_set_dynamic_smem(size_t bytes)
{
    if (bytes != dyn_smem_bytes) {
        free(dyn_smem);
        dyn_smem = NULL;
        if (bytes && posix_memalign((void **)&dyn_smem, 64, bytes))
            abort();
        dyn_smem_bytes = bytes;
    }
}

/* runs thread i up to its next meeting point (or its end) */
__attribute__((always_inline)) static inline void resume(unsigned i)
{
    current = i;
    threadIdx = thread_index[i];
    if (!started[i]) {
        started[i] = 1;
        fiber_sp[i] = first_frame(i);
    }
    leave_for_fiber(i);
    emu_switch(&scheduler_sp, fiber_sp[i]);
    arrive_in_scheduler();
}

/* After a round of warp w: lanes that neither returned nor reached the barrier
 * wait at a shuffle, which (with the full mask the kernels pass) needs all 32
 * lanes there. One at the barrier or gone meanwhile is a divergent shuffle: on
 * a device it hangs or reads garbage, so here it stops the program. */
static void check_converged(unsigned w, unsigned width)
{
    unsigned waiting = 0, away = 0;
    for (unsigned l = 0; l < width; l++) {
        unsigned i = 32 * w + l;
        if (finished[i] || at_barrier[i])
            away++;
        else
            waiting++;
    }
    if (waiting && (away || width < 32)) {
        fprintf(stderr, "cuda_emu: block (%u, %u, %u), warp %u: %u lanes wait at a shuffle while "
                "%u of its %u lanes are at a barrier, have returned or do not exist "
                "(a divergent shuffle)\n", blockIdx.x, blockIdx.y, blockIdx.z, w, waiting,
                away + 32 - width, 32u);
        abort();
    }
    for (unsigned l = 1; waiting && l < width; l++)
        if (waits_at[32 * w + l] != waits_at[32 * w]) {
            fprintf(stderr, "cuda_emu: block (%u, %u, %u), warp %u: its lanes wait at different "
                    "shuffles (%p, %p): a divergent shuffle\n", blockIdx.x, blockIdx.y, blockIdx.z, w,
                    waits_at[32 * w], waits_at[32 * w + l]);
            abort();
        }
}

/* Every thread not returned waits at a barrier: the same one (threads at
 * different __syncthreads calls, in divergent branches, hang a device). */
static void check_one_barrier(unsigned n)
{
    void *site = NULL;
    for (unsigned i = 0; i < n; i++) {
        if (!at_barrier[i])
            continue;
        if (site && waits_at[i] != site) {
            fprintf(stderr, "cuda_emu: block (%u, %u, %u): threads wait at different barriers (%p, "
                    "%p): __syncthreads in a divergent branch\n", blockIdx.x, blockIdx.y, blockIdx.z,
                    site, waits_at[i]);
            abort();
        }
        site = waits_at[i];
    }
}

/* the static __shared__ arrays of every kernel (cuda_runtime.h), bounded by
 * the linker (weak: a program with none has no such section) */
extern "C" char __start_emu_shared[] __attribute__((weak)), __stop_emu_shared[] __attribute__((weak));

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
    memset(at_barrier, 0, n);
    for (unsigned i = 0; i < n; i++)
        thread_index[i] = dim3(i % blockDim.x, i / blockDim.x % blockDim.y,
                               i / (blockDim.x * blockDim.y));
    if (dyn_smem)
        memset(dyn_smem, 0xff, dyn_smem_bytes);
    if (__start_emu_shared)
        memset(__start_emu_shared, 0xff, (size_t)(__stop_emu_shared - __start_emu_shared));
    unsigned n_warps = (n + 31) / 32, warps[MAX_WARPS], lanes[32];
    for (int live = 1; live;) {
        emu_shuffle(warps, n_warps);
        for (unsigned k = 0; k < n_warps; k++) {
            unsigned w = warps[k], width = n - 32 * w < 32 ? n - 32 * w : 32;
            for (int ran = 1; ran; warp_round[w]++) {
                ran = 0;
                emu_shuffle(lanes, width);
                for (unsigned l = 0; l < width; l++) {
                    unsigned i = 32 * w + lanes[l];
                    if (!finished[i] && !at_barrier[i]) {
                        resume(i);
                        ran = 1;
                    }
                }
                check_converged(w, width);
            }
        }
        /* every thread is at the barrier or done: release the barrier */
        check_one_barrier(n);
        live = 0;
        for (unsigned i = 0; i < n; i++)
            if (at_barrier[i]) {
                at_barrier[i] = 0;
                live = 1;
            }
    }
}

/* For the tests of the emulation itself: a block of 64 threads whose halves
 * call different barriers (which 0) or whose lanes call different shuffles
 * (1); either stops the run. (The two sides differ around the call, so that
 * the compiler keeps two calls.) */
extern "C" void moetier_emu_divergent_meeting(int which)
{
    gridDim = dim3(1);
    blockIdx = dim3(0);
    blockDim = dim3(64);
    emu_run_block([](void *p) {
        static volatile float side[MAX_THREADS];
        unsigned t = threadIdx.x;
        if (*(int *)p == 0) {
            if (t < 32) {
                side[t] = 1;
                __syncthreads();
                side[t] += 2;
            } else {
                side[t] = 5;
                __syncthreads();
                side[t] *= 3;
            }
        } else if (t & 1) {
            side[t] = __shfl_xor_sync(~0u, side[t] + 1, 1) - 7;
        } else {
            side[t] = __shfl_xor_sync(~0u, side[t] * 3, 1) + 11;
        }
    }, &which, 64);
}

/* For the tests of the emulation itself: what a second block of one thread
 * reads from a static __shared__ value the first block wrote 42 into. */
extern "C" float moetier_emu_shared_seen_by_a_second_block(void)
{
    static float seen;
    gridDim = dim3(2);
    blockDim = dim3(1);
    for (unsigned b = 0; b < 2; b++) {
        blockIdx = dim3(b);
        emu_run_block([](void *p) {
            __shared__ float s[1];
            *(float *)p = s[0];
            s[0] = 42.0f;
        }, &seen, 1);
    }
    return seen;
}
