/* The CUDA backend, operation by operation, against the scalar references on
 * random inputs: every weight format, odd shapes, partial FP8 blocks and INT4
 * groups, token counts across the GPU's 8-token tiles, attention across its
 * 256-position tiles. Skipped without a usable GPU (the build without CUDA
 * included); the golden and tier-invariance tests also run on the GPU
 * (test_golden.c, test_tiers.c). The weights of linear() and ffn() are kept
 * alive until the backend is gone: it keeps its copies by their address. */
#include <criterion/criterion.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/engine/kv_q8.h"
#include "core/model/dtype.h"
#include "core/model/synth.h"
#include "cpu_kernels/linear_ref.h"
#include "cpu_kernels/mla_ref.h"
#include "cpu_kernels/ops_ref.h"
#include "cpu_kernels/router_ref.h"
#include "core/app/cli_common.h"
#include "kernels/gpu_backend.h"
#include "kernels/gpu_layout.h"
#include "kernels/gpu_probe.h"
#include "kernels/gpu_twin.h"
#include "random_weight.h"
#include "testutil.h"

static backend gpu;

static void open_gpu(void)
{
    test_require_gpu();
    gpu_options o = {0};
    errbuf e;
    cr_assert_eq(gpu_backend_create(&gpu, &o, &e), 0, "%s", e.msg);
}

static void close_gpu(void)
{
    gpu.ops->destroy(&gpu);
}

static float *random_floats(size_t n)
{
    float *p = malloc((n ? n : 1) * sizeof *p);
    for (size_t i = 0; i < n; i++)
        p[i] = random_unit();
    return p;
}

static float *to_dev(const float *h, size_t n)
{
    float *d = gpu.ops->alloc(&gpu, n);
    cr_assert(d, "device allocation of %zu floats", n);
    gpu.ops->from_host(&gpu, d, h, n);
    return d;
}

static float *from_dev(const float *d, size_t n)
{
    float *h = malloc((n ? n : 1) * sizeof *h);
    gpu.ops->to_host(&gpu, h, d, n);
    return h;
}

static float max_abs(const float *p, size_t n)
{
    float m = 0;
    for (size_t i = 0; i < n; i++)
        m = fabsf(p[i]) > m ? fabsf(p[i]) : m;
    return m;
}

/* every |got - want| within rel of the largest |want| */
static void assert_close(const char *what, const float *got, const float *want, size_t n, float rel)
{
    float tol = rel * max_abs(want, n) + 1e-30f;
    for (size_t i = 0; i < n; i++)
        if (!(fabsf(got[i] - want[i]) <= tol))
            cr_assert_fail("%s: [%zu] = %.9g, reference %.9g (tolerance %.3g)", what, i, got[i],
                           want[i], tol);
}

/* ---- linear ---- */

typedef struct shape {
    weight_format fmt;
    int rows, cols, blk, gs;
} shape;

static const shape shapes[] = {
    {WF_F32, 37, 100, 0, 0},        {WF_F16, 37, 100, 0, 0},
    {WF_BF16, 70, 356, 0, 0},       {WF_FP8_BLOCK, 70, 356, 128, 0},
    {WF_FP8_BLOCK, 200, 130, 64, 0}, {WF_INT4_GROUP, 33, 200, 0, 32},
    {WF_INT4_GROUP, 65, 136, 0, 64}, {WF_INT4_GROUP, 9, 203, 0, 32},
    {WF_INT4_GROUP, 37, 256, 0, 32}, {WF_INT4_GROUP, 18, 384, 0, 128},
    {WF_FP8_BLOCK, 37, 256, 128, 0}, {WF_BF16, 38, 224, 0, 0},
    {WF_INT4_GROUP, 21, 600, 0, 24},   /* words per group not a power of two */
    {WF_FP8_BLOCK, 20, 120, 30, 0},    /* blocks not of whole words: a column per lane */
};
#define N_SHAPES (sizeof shapes / sizeof *shapes)

/* the kernel paths the twin dequantizes rows with here */
static int twin_paths(kernel_path *paths)
{
    int n = 0;
    for (int p = 0; p < KPATH_COUNT; p++)
        if (kernel_path_supported((kernel_path)p))
            paths[n++] = (kernel_path)p;
    return n;
}

/* the GPU's linear against the reference, and the CPU twin (gpu_twin.h) on
 * every CPU path against the GPU's bits */
Test(gpu, linear_matches_the_reference_and_the_twin_its_bits, .timeout = 120)
{
    open_gpu();
    static const int tokens[] = {1, 2, 4, 9, 17, 130};     /* 130: three slices of 64 */
    kernel_path paths[KPATH_COUNT];
    int n_paths = twin_paths(paths);
    thread_pool *pool;
    errbuf e;
    cr_assert_eq(thread_pool_create(&pool, 3, &e), 0, "%s", e.msg);
    random_weight w[N_SHAPES];
    for (size_t s = 0; s < N_SHAPES; s++) {
        const shape *sh = &shapes[s];
        w[s] = random_weight_make(sh->fmt, sh->rows, sh->cols, sh->blk, sh->gs);
        for (size_t k = 0; k < sizeof tokens / sizeof *tokens; k++) {
            int T = tokens[k];
            size_t nx = (size_t)T * sh->cols, ny = (size_t)T * sh->rows;
            float *x = random_floats(nx), *ref = malloc(ny * 4), *bound = malloc(ny * 4);
            float *row = malloc(gpu_twin_linear_scratch(sh->cols, T, 3) * 4), *twin = malloc(ny * 4);
            linear_ref_forward(&w[s].w, x, T, ref, row);
            random_weight_bounds(&w[s].w, x, T, bound);
            float *dx = to_dev(x, nx), *dy = gpu.ops->alloc(&gpu, ny);
            gpu.ops->linear(&gpu, &w[s].w, dx, T, dy);
            float *got = from_dev(dy, ny);
            for (size_t i = 0; i < ny; i++)
                if (!(fabsf(got[i] - ref[i]) <= 1e-5f * bound[i] + 1e-30f))
                    cr_assert_fail("%s %dx%d T %d: y[%zu] = %.9g, reference %.9g (bound %.3g)",
                                   weight_format_name(sh->fmt), sh->rows, sh->cols, T, i, got[i],
                                   ref[i], bound[i]);
            for (int p = 0; p < n_paths; p++) {
                gpu_twin_linear(paths[p], pool, &w[s].w, x, T, twin, row);
                for (size_t i = 0; i < ny; i++)
                    if (memcmp(&twin[i], &got[i], 4))
                        cr_assert_fail("%s %dx%d T %d, twin on %s: y[%zu] = %a, GPU %a",
                                       weight_format_name(sh->fmt), sh->rows, sh->cols, T,
                                       kernel_path_name(paths[p]), i, twin[i], got[i]);
            }
            free(twin);
            gpu.ops->release(&gpu, dx);
            gpu.ops->release(&gpu, dy);
            free(x);
            free(ref);
            free(bound);
            free(row);
            free(got);
        }
    }
    thread_pool_destroy(pool);
    close_gpu();
    for (size_t s = 0; s < N_SHAPES; s++)
        random_weight_free(&w[s]);
}

/* Resident weights go into the one allocation gpu_options.resident_bytes asks
 * for at create, as far as it holds them; those beyond get their own. Where a
 * weight lies does not change its bits. */
Test(gpu, resident_weights_fill_the_pool_the_plan_sized, .timeout = 120)
{
    random_weight w[3] = {
        random_weight_make(WF_BF16, 1024, 1024, 0, 0),      /* 2 MiB, more than the slack */
        random_weight_make(WF_BF16, 1024, 1030, 0, 0),
        random_weight_make(WF_FP8_BLOCK, 256, 512, 128, 0), /* fits in what the second left */
    };
    uint64_t bytes[3], total = 0;
    for (int k = 0; k < 3; k++)
        total += bytes[k] = linear_weight_bytes(&w[k].w);
    float *x = random_floats(1030), *want[3] = {0};
    /* no pool; a pool for all three; one for the first only */
    const uint64_t pools[] = {0, total, bytes[0]}, unpooled[] = {total, 0, bytes[1]};
    for (int c = 0; c < 3; c++) {
        gpu_options o = {.resident_bytes = pools[c]};
        errbuf e;
        test_require_gpu();
        cr_assert_eq(gpu_backend_create(&gpu, &o, &e), 0, "%s", e.msg);
        float *dx = to_dev(x, 1030), *dy = gpu.ops->alloc(&gpu, 1024);
        for (int k = 0; k < 3; k++) {
            gpu.ops->linear(&gpu, &w[k].w, dx, 1, dy);
            float *got = from_dev(dy, (size_t)w[k].w.rows);
            if (!want[k])
                want[k] = got;
            else {
                cr_assert_eq(memcmp(got, want[k], (size_t)w[k].w.rows * 4), 0,
                             "pool of %llu bytes: weight %d changed its bits",
                             (unsigned long long)pools[c], k);
                free(got);
            }
        }
        gpu_cache_stats s;
        gpu_backend_cache_stats(&gpu, &s);
        cr_assert_eq(gpu_backend_resident_bytes(&gpu), total);
        cr_assert_eq(s.resident_unpooled, unpooled[c], "pool of %llu bytes: %llu outside it, not %llu",
                     (unsigned long long)pools[c], (unsigned long long)s.resident_unpooled,
                     (unsigned long long)unpooled[c]);
        gpu.ops->release(&gpu, dx);
        gpu.ops->release(&gpu, dy);
        close_gpu();
    }
    for (int k = 0; k < 3; k++) {
        free(want[k]);
        random_weight_free(&w[k]);
    }
    free(x);
}

/* A create that fails says why and gives back the device memory it took: an
 * impossible resident pool; a pool that fits with an expert cache that does
 * not; a pool and a cache that fit with an unknown eviction policy. */
Test(gpu, create_that_fails_says_why_and_gives_back_its_memory, .timeout = 60)
{
    test_require_gpu();
    errbuf e;
    uint64_t free0, total, free1;
    cr_assert_eq(gpu_device_memory(0, &free0, &total, &e), 0, "%s", e.msg);
    const uint64_t pool = 64ull << 20, slot = 1ull << 20;
    struct {
        gpu_options o;
        const char *says;
    } cases[] = {
        {{.resident_bytes = total + 1}, "for the dense and attention weights"},
        {{.resident_bytes = pool, .expert_cache_bytes = 1ull << 50, .expert_slot_bytes = slot,
          .n_expert_keys = 1 << 30},
         "lower --vram-gb"},
        {{.resident_bytes = pool, .expert_cache_bytes = 4 * slot, .expert_slot_bytes = slot,
          .n_expert_keys = 8, .policy = "no-such-policy"},
         "'no-such-policy'"},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        e.msg[0] = 0;
        cr_assert_eq(gpu_backend_create(&gpu, &cases[c].o, &e), -1, "case %zu was created", c);
        cr_expect(strstr(e.msg, cases[c].says), "case %zu: \"%s\" does not say \"%s\"", c, e.msg,
                  cases[c].says);
        cr_assert_eq(gpu_device_memory(0, &free1, &total, &e), 0, "%s", e.msg);
        /* a device may keep a little for itself; the pool alone is 64 MB */
        cr_expect_geq(free1 + (4u << 20), free0, "case %zu: %.1f MB of device memory not given back",
                      c, ((double)free0 - (double)free1) / 1e6);
    }
}

/* After a kernel faults, every later call returns the fault, often first an
 * allocation. It must be reported as itself, not as "out of GPU memory",
 * which would send the debugging the wrong way. Faults are injected, so the
 * emulation alone runs this. Each case runs in a child, which aborts. */
void moetier_emu_sticky_fault(void) __attribute__((weak));

/* fn(arg) in a child whose standard error lands in out; its wait status */
static int in_child(void (*fn)(int), int arg, char *out, size_t cap)
{
    int fd[2];
    cr_assert_eq(pipe(fd), 0);
    fflush(NULL);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        dup2(fd[1], 2);
        close(fd[0]);
        fn(arg);
        _exit(0);
    }
    close(fd[1]);
    memset(out, 0, cap);
    size_t n = 0;
    ssize_t r;
    while (n < cap - 1 && (r = read(fd[0], out + n, cap - 1 - n)) > 0)
        n += (size_t)r;
    close(fd[0]);
    int status;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    return status;
}

static void fault_then_alloc(int as_weight)
{
    open_gpu();
    random_weight w = random_weight_make(WF_F32, 8, 32, 0, 0);
    float *x = gpu.ops->alloc(&gpu, 32), *y = gpu.ops->alloc(&gpu, 8);
    moetier_emu_sticky_fault();
    if (as_weight)
        gpu.ops->linear(&gpu, &w.w, x, 1, y);   /* makes the weight resident */
    else
        gpu.ops->alloc(&gpu, 1024);
}

Test(gpu, a_fault_is_not_reported_as_out_of_memory, .timeout = 60)
{
    test_require_gpu();
    if (!moetier_emu_sticky_fault)
        cr_skip_test("faults are injected by the CUDA emulation only (make test-gpu-emu)");
    for (int as_weight = 0; as_weight < 2; as_weight++) {
        char out[4096];
        int status = in_child(fault_then_alloc, as_weight, out, sizeof out);
        cr_expect(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT, "case %d: status %#x", as_weight,
                  status);
        cr_expect(strstr(out, "illegal memory access") && !strstr(out, "out of GPU memory"),
                  "case %d said: %s", as_weight, out);
    }
}

/* The emulation stops a block whose threads meet at different barriers, or
 * whose lanes meet at different shuffles: on a device the first hangs and the
 * second exchanges values between unrelated calls. Each case in a child. */
void moetier_emu_divergent_meeting(int which) __attribute__((weak));

Test(gpu, the_emulation_stops_threads_meeting_at_different_calls, .timeout = 60)
{
    if (!moetier_emu_divergent_meeting)
        cr_skip_test("a test of the CUDA emulation (make test-gpu-emu)");
    static const char *const said[] = {"threads wait at different barriers", "wait at different shuffles"};
    for (int which = 0; which < 2; which++) {
        char out[4096];
        int status = in_child(moetier_emu_divergent_meeting, which, out, sizeof out);
        cr_expect(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT, "case %d: status %#x", which, status);
        cr_expect(strstr(out, said[which]), "case %d said: %s", which, out);
    }
}

/* A block's static shared memory starts as 0xff bytes, as its dynamic shared
 * memory does, not as the block before left it: on a device it holds nothing
 * a kernel may count on. */
float moetier_emu_shared_seen_by_a_second_block(void) __attribute__((weak));

Test(gpu, the_emulation_starts_each_block_with_fresh_shared_memory)
{
    if (!moetier_emu_shared_seen_by_a_second_block)
        cr_skip_test("a test of the CUDA emulation (make test-gpu-emu)");
#ifdef __SANITIZE_ADDRESS__
    cr_skip_test("under ASan the static arrays keep their redzones instead (cuda_runtime.h)");
#endif
    float seen = moetier_emu_shared_seen_by_a_second_block();
    uint32_t bits;
    memcpy(&bits, &seen, sizeof bits);
    cr_expect_eq(bits, 0xffffffffu, "the second block read %g (%#x)", seen, bits);
}

Test(gpu, embedding_rows_are_the_reference_dequantization_exactly)
{
    open_gpu();
    random_weight w[N_SHAPES];
    const int ids[] = {3, 0, 8, 3};
    for (size_t s = 0; s < N_SHAPES; s++) {
        const shape *sh = &shapes[s];
        w[s] = random_weight_make(sh->fmt, sh->rows, sh->cols, sh->blk, sh->gs);
        size_t n = 4 * (size_t)sh->cols;
        float *d = gpu.ops->alloc(&gpu, n), *want = malloc(n * 4);
        gpu.ops->embed(&gpu, &w[s].w, ids, 4, d);
        for (int t = 0; t < 4; t++)
            linear_ref_dequant_row(&w[s].w, ids[t], want + (size_t)t * sh->cols);
        float *got = from_dev(d, n);
        cr_assert_eq(memcmp(got, want, n * 4), 0, "%s embedding rows differ",
                     weight_format_name(sh->fmt));
        gpu.ops->release(&gpu, d);
        free(want);
        free(got);
    }
    close_gpu();
    for (size_t s = 0; s < N_SHAPES; s++)
        random_weight_free(&w[s]);
}

/* Every E4M3 code in every byte of a word, through the linear kernel at one
 * and at two tokens (one-hot x: y is the code's value) and through the
 * embedding: the GPU decodes codes with integer operations and a multiply, the
 * reference with ldexpf. A NaN code anywhere in a row makes its sums NaN. */
Test(gpu, fp8_codes_decode_exactly_nan_included, .timeout = 60)
{
    open_gpu();
    enum { ROWS = 8, COLS = 256 };
    random_weight w = random_weight_make(WF_FP8_BLOCK, ROWS, COLS, 128, 0);
    uint8_t *codes = w.data;
    /* rows 0-3: code k at column k - r (every code in every byte of a word),
     * NaN codes as 0; rows 4-7: zeros but a NaN code in byte r - 4 of word r */
    for (int r = 0; r < ROWS; r++)
        for (int c = 0; c < COLS; c++) {
            uint8_t k = (uint8_t)(c + r);
            codes[r * COLS + c] = r >= 4 ? (c == 5 * (r - 4) ? (r & 1 ? 0xff : 0x7f) : 0)
                                  : (k & 0x7f) == 0x7f ? 0 : k;
        }
    ((float *)w.scale)[0] = ((float *)w.scale)[1] = 1.0f;
    for (int T = 1; T <= 2; T++)
        for (int c0 = 0; c0 < COLS; c0 += T) {
            float x[2 * COLS] = {0};
            for (int t = 0; t < T; t++)
                x[t * COLS + c0 + t] = 1.0f;
            float *dx = to_dev(x, (size_t)T * COLS), *dy = gpu.ops->alloc(&gpu, (size_t)T * ROWS);
            gpu.ops->linear(&gpu, &w.w, dx, T, dy);
            float *y = from_dev(dy, (size_t)T * ROWS);
            for (int t = 0; t < T; t++)
                for (int r = 0; r < ROWS; r++) {
                    float got = y[t * ROWS + r], want = e4m3_to_f32(codes[r * COLS + c0 + t]);
                    if (r >= 4)
                        cr_assert(isnan(got), "T %d: row %d (a NaN code) gave %g", T, r, got);
                    else
                        cr_assert(got == want, "T %d: code 0x%02x in byte %d gave %.9g, not %.9g", T,
                                  codes[r * COLS + c0 + t], (c0 + t) % 4, got, want);
                }
            gpu.ops->release(&gpu, dx);
            gpu.ops->release(&gpu, dy);
            free(y);
        }
    int ids[ROWS];
    for (int r = 0; r < ROWS; r++)
        ids[r] = r;
    float *d = gpu.ops->alloc(&gpu, (size_t)ROWS * COLS);
    gpu.ops->embed(&gpu, &w.w, ids, ROWS, d);
    float *got = from_dev(d, (size_t)ROWS * COLS);
    for (int i = 0; i < ROWS * COLS; i++) {
        float want = e4m3_to_f32(codes[i]);
        cr_assert(isnan(want) ? isnan(got[i]) : !memcmp(&got[i], &want, 4),
                  "embedding: code 0x%02x gave %.9g, not %.9g", codes[i], got[i], want);
    }
    gpu.ops->release(&gpu, d);
    free(got);
    close_gpu();
    random_weight_free(&w);
}

/* ---- FFN ---- */

typedef struct expert_mats {
    random_weight gate, up, down;
} expert_mats;

static expert_mats make_ffn(weight_format fmt, int hidden, int inter)
{
    int blk = 64, gs = 32;
    return (expert_mats){random_weight_make(fmt, inter, hidden, blk, gs),
                         random_weight_make(fmt, inter, hidden, blk, gs),
                         random_weight_make(fmt, hidden, inter, blk, gs)};
}

static void free_ffn(expert_mats *f)
{
    random_weight_free(&f->gate);
    random_weight_free(&f->up);
    random_weight_free(&f->down);
}

/* out = down(silu(gate x) * up x) with the scalar reference */
static float *ffn_reference(const expert_mats *f, const float *x, int T)
{
    int I = f->gate.w.rows, h = f->down.w.rows;
    float *g = malloc((size_t)T * I * 4), *u = malloc((size_t)T * I * 4);
    float *out = malloc((size_t)T * h * 4), *row = malloc((size_t)(I > h ? I : h) * 4 + 4 * 256);
    linear_ref_forward(&f->gate.w, x, T, g, row);
    linear_ref_forward(&f->up.w, x, T, u, row);
    silu_mul_ref(g, u, (size_t)T * I, g);
    linear_ref_forward(&f->down.w, g, T, out, row);
    free(u);
    free(g);
    free(row);
    return out;
}

Test(gpu, ffn_matches_the_reference, .timeout = 60)
{
    open_gpu();
    weight_format fmts[] = {WF_BF16, WF_FP8_BLOCK, WF_INT4_GROUP};
    expert_mats f[3];
    for (int k = 0; k < 3; k++) {
        int h = 136, I = 72, T = 5;
        f[k] = make_ffn(fmts[k], h, I);
        float *x = random_floats((size_t)T * h), *want = ffn_reference(&f[k], x, T);
        float *dx = to_dev(x, (size_t)T * h), *dout = gpu.ops->alloc(&gpu, (size_t)T * h);
        gpu.ops->ffn(&gpu, &f[k].gate.w, &f[k].up.w, &f[k].down.w, dx, T, dout);
        float *got = from_dev(dout, (size_t)T * h);
        assert_close(weight_format_name(fmts[k]), got, want, (size_t)T * h, 1e-5f);
        gpu.ops->release(&gpu, dx);
        gpu.ops->release(&gpu, dout);
        free(x);
        free(want);
        free(got);
    }
    close_gpu();
    for (int k = 0; k < 3; k++)
        free_ffn(&f[k]);
}

/* ffn_batch computes each job as ffn would, and reads the experts' bytes anew
 * on every call: a tier reuses their memory for other experts. */
Test(gpu, ffn_batch_reads_the_experts_bytes_on_every_call, .timeout = 60)
{
    open_gpu();
    int h = 136, I = 72, T[2] = {3, 1};
    expert_mats f[2] = {make_ffn(WF_INT4_GROUP, h, I), make_ffn(WF_FP8_BLOCK, h, I)};
    for (int round = 0; round < 2; round++) {
        if (round == 1)     /* the same memory now holds other experts */
            for (int k = 0; k < 2; k++) {
                expert_mats g = make_ffn(f[k].gate.w.fmt, h, I);
                random_weight *dst[3] = {&f[k].gate, &f[k].up, &f[k].down};
                random_weight *src[3] = {&g.gate, &g.up, &g.down};
                for (int m = 0; m < 3; m++) {
                    memcpy(dst[m]->data, src[m]->data, linear_weight_data_bytes(&src[m]->w));
                    memcpy(dst[m]->scale, src[m]->scale, linear_weight_scale_bytes(&src[m]->w));
                }
                free_ffn(&g);
            }
        ffn_job jobs[2];
        float *x[2], *want[2], *dx[2], *dout[2];
        for (int k = 0; k < 2; k++) {
            x[k] = random_floats((size_t)T[k] * h);
            want[k] = ffn_reference(&f[k], x[k], T[k]);
            dx[k] = to_dev(x[k], (size_t)T[k] * h);
            dout[k] = gpu.ops->alloc(&gpu, (size_t)T[k] * h);
            jobs[k] = (ffn_job){&f[k].gate.w, &f[k].up.w, &f[k].down.w, dx[k], T[k], dout[k], -1, 0,
                                0};
        }
        gpu.ops->ffn_batch(&gpu, jobs, 2);
        for (int k = 0; k < 2; k++) {
            float *got = from_dev(dout[k], (size_t)T[k] * h);
            assert_close(round ? "job after the bytes changed" : "job", got, want[k],
                         (size_t)T[k] * h, 1e-5f);
            gpu.ops->release(&gpu, dx[k]);
            gpu.ops->release(&gpu, dout[k]);
            free(got);
            free(x[k]);
            free(want[k]);
        }
    }
    close_gpu();
    free_ffn(&f[0]);
    free_ffn(&f[1]);
}

/* Keyed experts go through the VRAM cache: a miss copies into a slot, a hit
 * reuses it, LRU picks the slot to reuse, a job without a key is copied for its
 * call, and every result is the reference's. */
/* A batch of experts already in VRAM runs as three launches (gate and up of
 * all, the gating, down of all) with each expert's own tokens (1 to 70, so
 * every tiling of rows and tokens, and slices of 64 tokens that the others do
 * not reach), giving the bits of the same experts one per batch; INT4 and FP8 */
Test(gpu, experts_in_vram_run_in_three_launches_with_the_same_bits, .timeout = 60)
{
    test_require_gpu();
    enum { E = 4, H = 136, I = 72 };
    static const weight_format fmts[] = {WF_INT4_GROUP, WF_FP8_BLOCK};
    static const int tokens[3][E] = {{1, 3, 2, 9}, {2, 1, 1, 2}, {70, 3, 1, 9}};
    for (int fi = 0; fi < 2; fi++) {
        expert_mats f[E];
        for (int k = 0; k < E; k++)
            f[k] = make_ffn(fmts[fi], H, I);
        uint64_t slot = gpu_expert_slot_bytes(&f[0].gate.w, &f[0].up.w, &f[0].down.w);
        gpu_options o = {.expert_cache_bytes = E * slot, .expert_slot_bytes = slot,
                         .n_expert_keys = E, .cpu_tokens = 0};
        errbuf e;
        cr_assert_eq(gpu_backend_create(&gpu, &o, &e), 0, "%s", e.msg);
        for (int c = 0; c < 3; c++) {
            const int *T = tokens[c];
            float *dx[E], *dout[E], *one[E];
            ffn_job jobs[E];
            for (int k = 0; k < E; k++) {
                float *x = random_floats((size_t)T[k] * H);
                dx[k] = to_dev(x, (size_t)T[k] * H);
                dout[k] = gpu.ops->alloc(&gpu, (size_t)T[k] * H);
                jobs[k] = (ffn_job){&f[k].gate.w, &f[k].up.w, &f[k].down.w, dx[k], T[k], dout[k], -1,
                                    1 + k, 0};
                gpu.ops->ffn_batch(&gpu, &jobs[k], 1);     /* alone (a miss the first time) */
                one[k] = from_dev(dout[k], (size_t)T[k] * H);
                float *want = ffn_reference(&f[k], x, T[k]);
                assert_close("expert alone", one[k], want, (size_t)T[k] * H, 1e-5f);
                free(want);
                free(x);
                gpu.ops->zero(&gpu, dout[k], (size_t)T[k] * H);
            }
            gpu_cache_stats before, after;
            gpu_backend_cache_stats(&gpu, &before);
            gpu.ops->ffn_batch(&gpu, jobs, E);     /* all in VRAM now */
            gpu_backend_cache_stats(&gpu, &after);
            cr_assert_eq(after.hits - before.hits, E, "%s: the batch's experts were not all hits",
                         weight_format_name(fmts[fi]));
            cr_assert_eq(after.launches - before.launches, 3, "%s: %llu launches for %d experts",
                         weight_format_name(fmts[fi]),
                         (unsigned long long)(after.launches - before.launches), E);
            for (int k = 0; k < E; k++) {
                float *got = from_dev(dout[k], (size_t)T[k] * H);
                cr_assert_eq(memcmp(got, one[k], (size_t)T[k] * H * 4), 0,
                             "%s, tokens %d,%d,%d,%d: expert %d differs from its run alone",
                             weight_format_name(fmts[fi]), T[0], T[1], T[2], T[3], k);
                free(got);
                free(one[k]);
                gpu.ops->release(&gpu, dx[k]);
                gpu.ops->release(&gpu, dout[k]);
            }
        }
        close_gpu();
        for (int k = 0; k < E; k++)
            free_ffn(&f[k]);
    }
}

Test(gpu, expert_cache_hits_misses_and_results, .timeout = 60)
{
    test_require_gpu();
    int h = 136, I = 72, T = 2;
    expert_mats f[3];
    for (int k = 0; k < 3; k++)
        f[k] = make_ffn(WF_INT4_GROUP, h, I);
    uint64_t slot = gpu_expert_slot_bytes(&f[0].gate.w, &f[0].up.w, &f[0].down.w);
    gpu_options o = {.expert_cache_bytes = 2 * slot + slot / 2, .expert_slot_bytes = slot,
                     .n_expert_keys = 10};
    errbuf e;
    cr_assert_eq(gpu_backend_create(&gpu, &o, &e), 0, "%s", e.msg);
    float *x = random_floats((size_t)T * h), *want[3];
    for (int k = 0; k < 3; k++)
        want[k] = ffn_reference(&f[k], x, T);
    float *dx = to_dev(x, (size_t)T * h), *dout = gpu.ops->alloc(&gpu, (size_t)T * h);
    /* two slots: 0 miss, 1 miss, 0 hit, 2 miss (evicts 1), 1 miss (evicts 0), 2 hit, 2 unkeyed */
    const int order[] = {0, 1, 0, 2, 1, 2, 2};
    for (int i = 0; i < 7; i++) {
        int k = order[i];
        ffn_job j = {&f[k].gate.w, &f[k].up.w, &f[k].down.w, dx, T, dout, -1, i == 6 ? 0 : 1 + k,
                     0};
        gpu.ops->ffn_batch(&gpu, &j, 1);
        float *got = from_dev(dout, (size_t)T * h);
        char what[48];
        snprintf(what, sizeof what, "call %d (expert %d)", i, k);
        assert_close(what, got, want[k], (size_t)T * h, 1e-5f);
        free(got);
    }
    gpu_cache_stats st;
    gpu_backend_cache_stats(&gpu, &st);
    cr_assert_eq(st.slots, 2);
    cr_assert_eq(st.hits, 2, "hits %llu", (unsigned long long)st.hits);
    cr_assert_eq(st.misses, 4, "misses %llu", (unsigned long long)st.misses);
    cr_assert_eq(st.uncached, 1, "uncached %llu", (unsigned long long)st.uncached);
    uint64_t expert = linear_weight_bytes(&f[0].gate.w) + linear_weight_bytes(&f[0].up.w) +
                      linear_weight_bytes(&f[0].down.w);
    cr_assert_eq(st.bytes_copied, 5 * expert, "bytes copied %llu, expected %llu",
                 (unsigned long long)st.bytes_copied, (unsigned long long)(5 * expert));
    close_gpu();
    for (int k = 0; k < 3; k++) {
        free(want[k]);
        free_ffn(&f[k]);
    }
    free(x);
}

/* ---- the CPU twin: the GPU's bits on the CPU ---- */

/* Without a GPU too: every CPU path gives the twin the same bits (row
 * dequantization is exact on each, the lane sums are fused), within float32
 * rounding of the reference; an FFN through the twin is close to the reference. */
Test(gpu, twin_paths_agree_and_match_the_reference, .timeout = 60)
{
    kernel_path paths[KPATH_COUNT];
    int n_paths = twin_paths(paths);
    for (size_t s = 0; s < N_SHAPES; s++) {
        const shape *sh = &shapes[s];
        random_weight w = random_weight_make(sh->fmt, sh->rows, sh->cols, sh->blk, sh->gs);
        int T = 5;
        size_t ny = (size_t)T * sh->rows;
        float *x = random_floats((size_t)T * sh->cols), *ref = malloc(ny * 4), *bound = malloc(ny * 4);
        float *first = malloc(ny * 4), *y = malloc(ny * 4);
        float *scratch = malloc(gpu_twin_linear_scratch(sh->cols, T, 1) * 4);
        linear_ref_forward(&w.w, x, T, ref, scratch);
        random_weight_bounds(&w.w, x, T, bound);
        for (int p = 0; p < n_paths; p++) {
            gpu_twin_linear(paths[p], NULL, &w.w, x, T, p ? y : first, scratch);
            if (p)
                cr_assert_eq(memcmp(y, first, ny * 4), 0, "%s %dx%d: the twin on %s differs from %s",
                             weight_format_name(sh->fmt), sh->rows, sh->cols,
                             kernel_path_name(paths[p]), kernel_path_name(paths[0]));
        }
        for (size_t i = 0; i < ny; i++)
            cr_assert(fabsf(first[i] - ref[i]) <= 1e-5f * bound[i] + 1e-30f, "%s: y[%zu] %.9g, ref %.9g",
                      weight_format_name(sh->fmt), i, first[i], ref[i]);
        random_weight_free(&w);
        free(x);
        free(ref);
        free(bound);
        free(first);
        free(y);
        free(scratch);
    }
    int h = 136, I = 72, T = 3;
    expert_mats f = make_ffn(WF_INT4_GROUP, h, I);
    float *x = random_floats((size_t)T * h), *want = ffn_reference(&f, x, T), *got = malloc((size_t)T * h * 4);
    float *scratch = malloc(gpu_twin_ffn_scratch(&f.gate.w, &f.down.w, T, 1) * 4);
    gpu_twin_ffn(kernel_path_default(), NULL, &f.gate.w, &f.up.w, &f.down.w, x, T, got, scratch);
    assert_close("twin FFN", got, want, (size_t)T * h, 1e-5f);
    free_ffn(&f);
    free(x);
    free(want);
    free(got);
    free(scratch);
}

/* Without a GPU too: the SIMD twins (AVX-512: INT4 in registers, other
 * formats four rows at a time; AVX2: two rows at a time; the butterfly in
 * registers) against the one-lane-at-a-time reference, bit for bit, on random
 * formats, shapes (rows not a multiple of four, columns with and without whole
 * 32-blocks and 256-column INT4 passes), group sizes and tokens. */
/* n random cases of the given formats: each SIMD twin this CPU runs against
 * the one-lane-at-a-time reference, bit for bit */
static void check_twin_simd(int n, const weight_format *fmts, int n_fmts)
{
    kernel_path simd[2];
    int n_simd = 0;
    for (int p = KPATH_AVX2; p <= KPATH_AVX512; p++)
        if (kernel_path_supported((kernel_path)p))
            simd[n_simd++] = (kernel_path)p;
    if (!n_simd)
        cr_skip_test("this CPU has neither AVX2 nor AVX-512");
    thread_pool *pool;
    errbuf e;
    cr_assert_eq(thread_pool_create(&pool, 2, &e), 0, "%s", e.msg);
    for (int k = 0; k < n; k++) {
        weight_format fmt = fmts[random_u32() % (unsigned)n_fmts];
        int rows = 1 + (int)(random_u32() % 41), T = 1 + (int)(random_u32() % 7);
        /* INT4 words per group: powers of two (in registers) and 3 (one lane at a time) */
        static const int group_sizes[] = {8, 16, 24, 32, 32, 64, 128, 256};
        int gs = group_sizes[random_u32() % 8], blk = fmt == WF_FP8_BLOCK ? 32 << (random_u32() % 3) : 0;
        /* whole and partial 32-column blocks and 256-column INT4 passes */
        int cols = k % 2 ? 32 * (1 + (int)(random_u32() % 20)) : 1 + (int)(random_u32() % 700);
        random_weight w = random_weight_make(fmt, rows, cols, blk, fmt == WF_INT4_GROUP ? gs : 0);
        size_t ny = (size_t)T * (size_t)rows;
        float *x = random_floats((size_t)T * cols), *want = malloc(ny * 4), *got = malloc(ny * 4);
        float *scratch = malloc(gpu_twin_linear_scratch(cols, T, 2) * 4);
        gpu_twin_linear(KPATH_SCALAR, NULL, &w.w, x, T, want, scratch);
        for (int p = 0; p < n_simd; p++) {
            gpu_twin_linear(simd[p], k % 3 ? pool : NULL, &w.w, x, T, got, scratch);
            for (size_t i = 0; i < ny; i++)
                if (memcmp(&got[i], &want[i], 4))
                    cr_assert_fail("%s %s %dx%d (group %d, block %d), T %d: y[%zu] = %a, "
                                   "reference %a", kernel_path_name(simd[p]),
                                   weight_format_name(fmt), rows, cols, gs, blk, T, i, got[i],
                                   want[i]);
        }
        random_weight_free(&w);
        free(x);
        free(want);
        free(got);
        free(scratch);
    }
    thread_pool_destroy(pool);
}

Test(gpu, twin_simd_matches_the_lane_reference_on_random_shapes, .timeout = 120)
{
    const weight_format fmts[] = {WF_INT4_GROUP, WF_INT4_GROUP, WF_BF16, WF_FP8_BLOCK, WF_F32};
    check_twin_simd(80, fmts, 5);
}

/* AVX-512 without VBMI's byte tables takes AVX2's shuffles for FP8 */
Test(gpu, twin_simd_fp8_without_byte_tables, .timeout = 120)
{
    setenv("MOETIER_FP8_TABLES", "0", 1);
    cr_assert_not(kernel_fp8_lut_supported(), "MOETIER_FP8_TABLES=0 left the tables on");
    const weight_format fp8 = WF_FP8_BLOCK;
    check_twin_simd(40, &fp8, 1);
}

/* A batch where the cache misses some experts: those with few tokens run on
 * the CPU, the rest on the GPU, every output the bits of the all-GPU backend. */
Test(gpu, hybrid_batch_gives_the_all_gpu_bits, .timeout = 60)
{
    test_require_gpu();
    int h = 136, I = 72;
    const int T[4] = {2, 3, 1, 1};  /* the CPU jobs' scratch largest first */
    weight_format fmts[4] = {WF_INT4_GROUP, WF_FP8_BLOCK, WF_BF16, WF_INT4_GROUP};
    expert_mats f[4];
    float *x[4], *want[4];
    for (int k = 0; k < 4; k++) {
        f[k] = make_ffn(fmts[k], h, I);
        x[k] = random_floats((size_t)T[k] * h);
    }
    uint64_t slot = 0;
    for (int k = 0; k < 4; k++) {
        uint64_t b = gpu_expert_slot_bytes(&f[k].gate.w, &f[k].up.w, &f[k].down.w);
        slot = b > slot ? b : slot;
    }
    for (int hybrid = 0; hybrid < 2; hybrid++) {
        /* two slots; with hybrid, misses of up to 2 tokens on the CPU */
        gpu_options o = {.expert_cache_bytes = 2 * slot, .expert_slot_bytes = slot,
                         .n_expert_keys = 8, .cpu_tokens = hybrid ? 2 : 0, .cpu_threads = 2};
        errbuf e;
        cr_assert_eq(gpu_backend_create(&gpu, &o, &e), 0, "%s", e.msg);
        for (int round = 0; round < 2; round++) {
            ffn_job jobs[4];
            float *dx[4], *dout[4];
            for (int k = 0; k < 4; k++) {
                dx[k] = to_dev(x[k], (size_t)T[k] * h);
                dout[k] = gpu.ops->alloc(&gpu, (size_t)T[k] * h);
                jobs[k] = (ffn_job){&f[k].gate.w, &f[k].up.w, &f[k].down.w, dx[k], T[k], dout[k],
                                    -1, 1 + k, 0};
            }
            gpu.ops->ffn_batch(&gpu, jobs, 4);
            for (int k = 0; k < 4; k++) {
                float *got = from_dev(dout[k], (size_t)T[k] * h);
                if (!hybrid && round == 0) {
                    want[k] = got;
                } else {
                    cr_assert_eq(memcmp(got, want[k], (size_t)T[k] * h * 4), 0,
                                 "expert %d (%d tokens), round %d: hybrid bits differ", k, T[k], round);
                    free(got);
                }
                gpu.ops->release(&gpu, dx[k]);
                gpu.ops->release(&gpu, dout[k]);
            }
        }
        gpu_cache_stats st;
        gpu_backend_cache_stats(&gpu, &st);
        if (hybrid)     /* the 3-token expert takes a slot; the others stay on the CPU */
            cr_assert(st.on_cpu == 6 && st.misses == 1 && st.hits == 1,
                      "on CPU %llu, misses %llu, hits %llu", (unsigned long long)st.on_cpu,
                      (unsigned long long)st.misses, (unsigned long long)st.hits);
        else
            cr_assert_eq(st.on_cpu, 0);
        close_gpu();
    }
    for (int k = 0; k < 4; k++) {
        free(want[k]);
        free(x[k]);
        free_ffn(&f[k]);
    }
}

/* The VRAM cache evicts by the policy it is given (--policy): two slots, expert
 * 1 used three times and 2 once, then 3 needs a slot: LRU evicts 1 (used
 * longest ago), LFU evicts 2 (used least), so 1 is a hit next only with LFU. */
Test(gpu, vram_cache_evicts_by_its_policy, .timeout = 60)
{
    test_require_gpu();
    int h = 136, I = 72;
    expert_mats f = make_ffn(WF_INT4_GROUP, h, I);
    float *x = random_floats(h);
    uint64_t slot = gpu_expert_slot_bytes(&f.gate.w, &f.up.w, &f.down.w);
    const char *policies[2] = {"lru", "lfu"};
    const uint64_t want_hits[2] = {2, 3};
    for (int p = 0; p < 2; p++) {
        gpu_options o = {.expert_cache_bytes = 2 * slot, .expert_slot_bytes = slot,
                         .n_expert_keys = 4, .cpu_tokens = 0, .policy = policies[p],
                         .policy_layers = 1};
        errbuf e;
        cr_assert_eq(gpu_backend_create(&gpu, &o, &e), 0, "%s", e.msg);
        float *dx = to_dev(x, h), *dout = gpu.ops->alloc(&gpu, h);
        const int keys[] = {1, 1, 1, 2, 3, 1};
        for (int i = 0; i < 6; i++) {   /* the same bytes under each key: only the keys matter */
            ffn_job j = {&f.gate.w, &f.up.w, &f.down.w, dx, 1, dout, -1, keys[i], 0};
            gpu.ops->ffn_batch(&gpu, &j, 1);
        }
        gpu_cache_stats st;
        gpu_backend_cache_stats(&gpu, &st);
        cr_expect(st.hits == want_hits[p] && st.misses == 6 - want_hits[p], "%s: %llu hits, %llu "
                  "misses", policies[p], (unsigned long long)st.hits,
                  (unsigned long long)st.misses);
        cr_expect(st.policy && !strcmp(st.policy, policies[p]), "policy %s", st.policy);
        gpu.ops->release(&gpu, dx);
        gpu.ops->release(&gpu, dout);
        close_gpu();
    }
    free(x);
    free_ffn(&f);
}

/* A step (each begins with its embedding) that wants more experts than the
 * VRAM cache holds computes the rest from a staging buffer instead of evicting
 * the experts the cache held, so the next step finds them; plain LRU cycles
 * them out. Every call gives the same bits either way. */
Test(gpu, vram_cache_keeps_its_experts_through_a_scan, .timeout = 60)
{
    test_require_gpu();
    int h = 136, I = 72;
    expert_mats f = make_ffn(WF_INT4_GROUP, h, I);
    random_weight emb = random_weight_make(WF_BF16, 8, h, 0, 0);
    float *x = random_floats(h), *first = NULL;
    uint64_t slot = gpu_expert_slot_bytes(&f.gate.w, &f.up.w, &f.down.w);
    const char *policies[2] = {"lru", "lru-plain"};
    /* steps of keys: fill the 2 slots; use them and 2 more; use them again */
    const int steps[3][4] = {{1, 2, 0, 0}, {1, 2, 3, 4}, {1, 2, 0, 0}};
    const uint64_t want_hits[2] = {4, 2}, want_misses[2] = {2, 6}, want_uncached[2] = {2, 0};
    for (int p = 0; p < 2; p++) {
        gpu_options o = {.expert_cache_bytes = 2 * slot, .expert_slot_bytes = slot,
                         .n_expert_keys = 5, .cpu_tokens = 0, .policy = policies[p],
                         .policy_layers = 1};
        errbuf e;
        cr_assert_eq(gpu_backend_create(&gpu, &o, &e), 0, "%s", e.msg);
        float *dx = to_dev(x, h), *dout = gpu.ops->alloc(&gpu, h), *demb = gpu.ops->alloc(&gpu, h);
        const int id = 0;
        for (int s = 0; s < 3; s++) {
            gpu.ops->embed(&gpu, &emb.w, &id, 1, demb);
            for (int k = 0; k < 4 && steps[s][k]; k++) {
                /* the same bytes under each key: only the keys matter */
                ffn_job j = {&f.gate.w, &f.up.w, &f.down.w, dx, 1, dout, -1, steps[s][k], 0};
                gpu.ops->ffn_batch(&gpu, &j, 1);
                float *got = from_dev(dout, h);
                if (!first)
                    first = got;
                else {
                    cr_assert_eq(memcmp(got, first, (size_t)h * 4), 0, "%s: step %d key %d "
                                 "gave other bits", policies[p], s, steps[s][k]);
                    free(got);
                }
            }
        }
        gpu_cache_stats st;
        gpu_backend_cache_stats(&gpu, &st);
        cr_expect(st.hits == want_hits[p] && st.misses == want_misses[p] &&
                  st.uncached == want_uncached[p], "%s: %llu hits, %llu misses, %llu uncached",
                  policies[p], (unsigned long long)st.hits, (unsigned long long)st.misses,
                  (unsigned long long)st.uncached);
        gpu.ops->release(&gpu, dx);
        gpu.ops->release(&gpu, dout);
        gpu.ops->release(&gpu, demb);
        close_gpu();
    }
    free(first);
    free(x);
    random_weight_free(&emb);
    free_ffn(&f);
}

/* The shared expert in a batch (a resident job, from the model's weights, as
 * the engine hands it to a backend that plans batches) runs on the GPU while
 * the CPU computes a routed expert, with the bits ffn() gives it; it takes no
 * slot of the expert cache and is no miss, hit or CPU job. */
Test(gpu, shared_expert_in_a_batch_gives_the_bits_of_ffn, .timeout = 60)
{
    test_require_gpu();
    int h = 136, I = 72, T = 3;
    expert_mats routed = make_ffn(WF_INT4_GROUP, h, I), shared = make_ffn(WF_BF16, h, 2 * I);
    float *xr = random_floats(h), *xs = random_floats((size_t)T * h);
    uint64_t slot = gpu_expert_slot_bytes(&routed.gate.w, &routed.up.w, &routed.down.w);
    /* one slot; misses of one token on the CPU */
    gpu_options o = {.expert_cache_bytes = slot, .expert_slot_bytes = slot, .n_expert_keys = 4,
                     .cpu_tokens = 1, .cpu_threads = 2};
    errbuf e;
    cr_assert_eq(gpu_backend_create(&gpu, &o, &e), 0, "%s", e.msg);
    float *dxr = to_dev(xr, h), *dxs = to_dev(xs, (size_t)T * h);
    float *dwant = gpu.ops->alloc(&gpu, (size_t)T * h), *dr = gpu.ops->alloc(&gpu, h);
    float *ds = gpu.ops->alloc(&gpu, (size_t)T * h);
    gpu.ops->ffn(&gpu, &shared.gate.w, &shared.up.w, &shared.down.w, dxs, T, dwant);
    float *want = from_dev(dwant, (size_t)T * h);
    ffn_job jobs[2] = {{&routed.gate.w, &routed.up.w, &routed.down.w, dxr, 1, dr, -1, 1, 0},
                       {&shared.gate.w, &shared.up.w, &shared.down.w, dxs, T, ds, -1, 0, 1}};
    gpu.ops->ffn_batch(&gpu, jobs, 2);
    float *got = from_dev(ds, (size_t)T * h), *got_r = from_dev(dr, h);
    cr_expect_eq(memcmp(got, want, (size_t)T * h * 4), 0,
                 "the shared expert's bits differ from ffn()'s");
    float *want_r = ffn_reference(&routed, xr, 1);
    assert_close("the routed expert on the CPU", got_r, want_r, h, 1e-5f);
    gpu_cache_stats st;
    gpu_backend_cache_stats(&gpu, &st);
    cr_expect(st.on_cpu == 1 && st.hits == 0 && st.misses == 0 && st.uncached == 0,
              "on CPU %llu, hits %llu, misses %llu, uncached %llu", (unsigned long long)st.on_cpu,
              (unsigned long long)st.hits, (unsigned long long)st.misses,
              (unsigned long long)st.uncached);
    float *bufs[] = {dxr, dxs, dwant, dr, ds};
    for (int i = 0; i < 5; i++)
        gpu.ops->release(&gpu, bufs[i]);
    close_gpu();
    free(want);
    free(got);
    free(got_r);
    free(want_r);
    free(xr);
    free(xs);
    free_ffn(&routed);
    free_ffn(&shared);
}

/* Overwrites the experts' host bytes (as a tier reusing its memory would);
 * unscribble puts them back. */
static void *scribble(expert_mats *f, int n)
{
    char **saved = malloc((size_t)n * 6 * sizeof *saved);
    for (int k = 0; k < n; k++) {
        random_weight *m[3] = {&f[k].gate, &f[k].up, &f[k].down};
        for (int i = 0; i < 3; i++) {
            size_t nd = linear_weight_data_bytes(&m[i]->w), ns = linear_weight_scale_bytes(&m[i]->w);
            char **sv = saved + 6 * k + 2 * i;
            sv[0] = malloc(nd);
            sv[1] = malloc(ns);
            memcpy(sv[0], m[i]->data, nd);
            memcpy(sv[1], m[i]->scale, ns);
            memset(m[i]->data, 0x55, nd);
            memset(m[i]->scale, 0x55, ns);
        }
    }
    return saved;
}

static void unscribble(expert_mats *f, int n, void *saved_bytes)
{
    char **saved = saved_bytes;
    for (int k = 0; k < n; k++) {
        random_weight *m[3] = {&f[k].gate, &f[k].up, &f[k].down};
        for (int i = 0; i < 3; i++) {
            char **sv = saved + 6 * k + 2 * i;
            memcpy(m[i]->data, sv[0], linear_weight_data_bytes(&m[i]->w));
            memcpy(m[i]->scale, sv[1], linear_weight_scale_bytes(&m[i]->w));
            free(sv[0]);
            free(sv[1]);
        }
    }
    free(saved);
}

/* each expert's output for its x[k] (h floats, one token) on the all-GPU backend */
static void all_gpu_outputs(expert_mats *f, float **x, int n, int h, float **want)
{
    open_gpu();
    for (int k = 0; k < n; k++) {
        float *dx = to_dev(x[k], h), *dout = gpu.ops->alloc(&gpu, h);
        ffn_job j = {&f[k].gate.w, &f[k].up.w, &f[k].down.w, dx, 1, dout, -1, 0, 0};
        gpu.ops->ffn_batch(&gpu, &j, 1);
        want[k] = from_dev(dout, h);
        gpu.ops->release(&gpu, dx);
        gpu.ops->release(&gpu, dout);
    }
    close_gpu();
}

/* The cost model with given rates (a copy 1 s, the GPU 2 s per expert, the
 * CPU 0.3 s): every miss runs on the CPU, and as many as the copy engine's
 * idle time allows are copied into the cache as well (hybrid_plan.h works the
 * numbers out for these rates: 1 promoted of 4, then 2 of 3, then 2 of 2).
 * Promoted experts are hits the next time, with the all-GPU bits, even when
 * the tier changes the bytes right after the call that copied them. */
Test(gpu, cost_model_computes_misses_on_the_cpu_and_promotes_them, .timeout = 60)
{
    test_require_gpu();
    enum { N = 4, h = 136, I = 72 };
    expert_mats f[N];
    float *x[N], *want[N];
    for (int k = 0; k < N; k++) {
        f[k] = make_ffn(WF_INT4_GROUP, h, I);
        x[k] = random_floats(h);
    }
    uint64_t slot = gpu_expert_slot_bytes(&f[0].gate.w, &f[0].up.w, &f[0].down.w);
    double weights = 3.0 * h * I;
    hybrid_rates r = {.copy_pinned = (double)slot, .copy_pageable = (double)slot,
                      .gpu = (double)slot / 2, .cpu_row = 0, .cpu_token = 0.3 / weights};
    gpu_options o = {.expert_cache_bytes = 2 * slot, .expert_slot_bytes = slot, .n_expert_keys = 8,
                     .cpu_tokens = GPU_CPU_TOKENS_AUTO, .cpu_threads = 2, .rates = &r};
    all_gpu_outputs(f, x, N, h, want);     /* the bits to meet */
    errbuf e;
    cr_assert_eq(gpu_backend_create(&gpu, &o, &e), 0, "%s", e.msg);
    const struct {
        uint64_t on_cpu, promoted, hits;
    } after[3] = {{4, 1, 0}, {7, 3, 1}, {9, 5, 3}};
    for (int round = 0; round < 3; round++) {
        ffn_job jobs[N];
        float *dx[N], *dout[N];
        for (int k = 0; k < N; k++) {
            dx[k] = to_dev(x[k], h);
            dout[k] = gpu.ops->alloc(&gpu, h);
            jobs[k] = (ffn_job){&f[k].gate.w, &f[k].up.w, &f[k].down.w, dx[k], 1, dout[k], -1, 1 + k,
                                0};
        }
        gpu.ops->ffn_batch(&gpu, jobs, N);
        for (int k = 0; k < N; k++) {
            float *got = from_dev(dout[k], h);
            cr_assert_eq(memcmp(got, want[k], h * 4), 0, "round %d, expert %d: bits differ", round, k);
            free(got);
        }
        gpu_cache_stats st;
        gpu_backend_cache_stats(&gpu, &st);
        cr_assert(st.on_cpu == after[round].on_cpu && st.promoted == after[round].promoted &&
                  st.hits == after[round].hits && st.misses == 0 && st.uncached == 0,
                  "round %d: on CPU %llu, promoted %llu, hits %llu, misses %llu, uncached %llu", round,
                  (unsigned long long)st.on_cpu, (unsigned long long)st.promoted,
                  (unsigned long long)st.hits, (unsigned long long)st.misses,
                  (unsigned long long)st.uncached);
        /* the tier reuses the memory: scribbled over until the device has
         * finished everything queued (a release waits for it), then back */
        void *saved = scribble(f, N);
        for (int k = 0; k < N; k++) {
            gpu.ops->release(&gpu, dx[k]);
            gpu.ops->release(&gpu, dout[k]);
        }
        unscribble(f, N, saved);
    }
    close_gpu();
    for (int k = 0; k < N; k++) {
        free(want[k]);
        free(x[k]);
        free_ffn(&f[k]);
    }
}

/* Experts predicted for the next layer (jobs of no tokens) are copied into the
 * cache in the copy engine's idle time: copies of 0.1 s, the GPU 2 s per
 * expert, the CPU 0.25 s: the one real miss runs on the CPU (0.25 s), which
 * leaves time for both predicted experts (0.2 s) and not for promoting it.
 * The predicted experts are hits next time, with the all-GPU bits, though the
 * host bytes change right after the call that copied them. */
Test(gpu, predicted_experts_are_copied_ahead_in_idle_time, .timeout = 60)
{
    test_require_gpu();
    enum { N = 3, h = 136, I = 72 };
    expert_mats f[N];
    float *x[N], *want[N];
    for (int k = 0; k < N; k++) {
        f[k] = make_ffn(WF_INT4_GROUP, h, I);
        x[k] = random_floats(h);
    }
    uint64_t slot = gpu_expert_slot_bytes(&f[0].gate.w, &f[0].up.w, &f[0].down.w);
    hybrid_rates r = {.copy_pinned = slot / 0.1, .copy_pageable = slot / 0.1, .gpu = slot / 2.0,
                      .cpu_row = 0, .cpu_token = 0.25 / (3.0 * h * I)};
    gpu_options o = {.expert_cache_bytes = 3 * slot, .expert_slot_bytes = slot, .n_expert_keys = 8,
                     .cpu_tokens = GPU_CPU_TOKENS_AUTO, .cpu_threads = 2, .rates = &r};
    all_gpu_outputs(f, x, N, h, want);
    errbuf e;
    cr_assert_eq(gpu_backend_create(&gpu, &o, &e), 0, "%s", e.msg);
    float *dx[N], *dout[N];
    ffn_job jobs[N];
    for (int k = 0; k < N; k++) {
        dx[k] = to_dev(x[k], h);
        dout[k] = gpu.ops->alloc(&gpu, h);
        jobs[k] = (ffn_job){&f[k].gate.w, &f[k].up.w, &f[k].down.w, k ? NULL : dx[k], k ? 0 : 1,
                            k ? NULL : dout[k], -1, 1 + k, 0};
    }
    gpu.ops->ffn_batch(&gpu, jobs, N);  /* expert 0 computed, 1 and 2 predicted */
    float *got = from_dev(dout[0], h);
    cr_assert_eq(memcmp(got, want[0], h * 4), 0, "the computed expert's bits differ");
    free(got);
    gpu_cache_stats st;
    gpu_backend_cache_stats(&gpu, &st);
    cr_assert(st.on_cpu == 1 && st.prefetched == 2 && st.promoted == 0 && st.hits == 0,
              "on CPU %llu, prefetched %llu, promoted %llu, hits %llu", (unsigned long long)st.on_cpu,
              (unsigned long long)st.prefetched, (unsigned long long)st.promoted,
              (unsigned long long)st.hits);
    void *saved = scribble(f, N);
    gpu.ops->release(&gpu, gpu.ops->alloc(&gpu, 1));     /* waits for everything queued */
    unscribble(f, N, saved);
    for (int k = 1; k < N; k++)
        jobs[k] = (ffn_job){&f[k].gate.w, &f[k].up.w, &f[k].down.w, dx[k], 1, dout[k], -1, 1 + k,
                            0};
    gpu.ops->ffn_batch(&gpu, jobs + 1, N - 1);
    gpu_backend_cache_stats(&gpu, &st);
    cr_assert(st.hits == 2 && st.misses == 0 && st.on_cpu == 1, "hits %llu, misses %llu, on CPU %llu",
              (unsigned long long)st.hits, (unsigned long long)st.misses,
              (unsigned long long)st.on_cpu);
    for (int k = 1; k < N; k++) {
        got = from_dev(dout[k], h);
        cr_assert_eq(memcmp(got, want[k], h * 4), 0, "predicted expert %d: bits differ", k);
        free(got);
    }
    for (int k = 0; k < N; k++) {
        gpu.ops->release(&gpu, dx[k]);
        gpu.ops->release(&gpu, dout[k]);
        free(want[k]);
        free(x[k]);
        free_ffn(&f[k]);
    }
    close_gpu();
}

/* ---- the other operations ---- */

Test(gpu, rmsnorm_strided_and_in_place)
{
    open_gpu();
    int T = 3, n = 300, xs = 310, os = 305;
    float *x = random_floats((size_t)T * xs), *w = random_floats((size_t)n);
    float *want = calloc((size_t)T * os, 4);
    rmsnorm_ref(x, xs, w, n, T, 1e-6f, want, os);
    float *dx = to_dev(x, (size_t)T * xs), *dout = gpu.ops->alloc(&gpu, (size_t)T * os);
    gpu.ops->rmsnorm(&gpu, dx, xs, w, n, T, 1e-6f, dout, os);
    float *got = from_dev(dout, (size_t)T * os);
    assert_close("rmsnorm", got, want, (size_t)T * os, 1e-6f);
    free(got);
    rmsnorm_ref(x, xs, w, n, T, 1e-6f, x, xs);
    gpu.ops->rmsnorm(&gpu, dx, xs, w, n, T, 1e-6f, dx, xs);
    got = from_dev(dx, (size_t)T * xs);
    assert_close("rmsnorm in place", got, x, (size_t)T * xs, 1e-6f);
    close_gpu();
    free(got);
    free(x);
    free(w);
    free(want);
}

/* 600 gathers whose index arrays (4 KB each, 2.4 MB in all: the upload ring's
 * laps) are overwritten right after each call: every gather still reads its
 * own indices, and the host waited for the device only at the ring's laps,
 * not once per gather */
Test(gpu, gathers_queue_their_indices_without_waiting, .timeout = 60)
{
    open_gpu();
    enum { ROWS = 16, DIM = 4, N = 1024, CALLS = 600 };
    float src[ROWS * DIM];
    for (int i = 0; i < ROWS * DIM; i++)
        src[i] = (float)i;
    float *dsrc = to_dev(src, ROWS * DIM), *dg = gpu.ops->alloc(&gpu, (size_t)CALLS * N * DIM);
    int *idx = malloc(N * sizeof *idx);
    gpu_cache_stats before, after;
    gpu_backend_cache_stats(&gpu, &before);
    for (int c = 0; c < CALLS; c++) {
        for (int i = 0; i < N; i++)
            idx[i] = (i * 7 + c) % ROWS;
        gpu.ops->gather_rows(&gpu, dsrc, idx, N, DIM, dg + (size_t)c * N * DIM);
        memset(idx, 0xff, N * sizeof *idx);     /* would be out of range if read now */
    }
    gpu_backend_cache_stats(&gpu, &after);
    cr_assert(after.waits - before.waits <= 3, "the host waited %llu times for %d gathers",
              (unsigned long long)(after.waits - before.waits), CALLS);
    float *g = from_dev(dg, (size_t)CALLS * N * DIM);
    for (int c = 0; c < CALLS; c++)
        for (int i = 0; i < N; i++)
            for (int d = 0; d < DIM; d++)
                cr_assert_eq(g[((size_t)c * N + i) * DIM + d], src[((i * 7 + c) % ROWS) * DIM + d],
                             "gather %d, row %d", c, i);
    free(g);
    free(idx);
    close_gpu();
}

Test(gpu, rope_on_several_vectors_at_an_offset)
{
    open_gpu();
    int T = 3, n_vec = 4, vs = 24, ts = n_vec * vs, off = 8, dim = 16;
    const int pos[3] = {0, 7, 4000};
    float inv_freq[8];
    for (int i = 0; i < 8; i++)
        inv_freq[i] = powf(10000.0f, -(float)i / 8.0f);
    size_t n = (size_t)T * ts;
    float *x = random_floats(n), *dx = to_dev(x, n);
    rope_ref(x, T, n_vec, ts, vs, off, dim, pos, inv_freq, 1.3f);
    gpu.ops->rope(&gpu, dx, T, n_vec, ts, vs, off, dim, pos, inv_freq, 1.3f);
    float *got = from_dev(dx, n);
    assert_close("rope", got, x, n, 1e-5f);
    close_gpu();
    free(x);
    free(got);
}

/* the residual and the norm after it as one operation: the bits of add, then
 * rmsnorm (widths below, at and past one block's 256 threads) */
Test(gpu, add_rmsnorm_gives_the_bits_of_add_then_rmsnorm)
{
    const int widths[] = {7, 256, 1000};
    for (int k = 0; k < 3; k++) {
        open_gpu();     /* a new device per width: norm weights are found by their address */
        int n = widths[k], T = 3;
        size_t N = (size_t)T * n;
        float *y = random_floats(N), *x = random_floats(N), *w = random_floats((size_t)n);
        float *dy1 = to_dev(y, N), *dy2 = to_dev(y, N), *dx = to_dev(x, N);
        float *o1 = gpu.ops->alloc(&gpu, N), *o2 = gpu.ops->alloc(&gpu, N);
        gpu.ops->add(&gpu, dy1, dx, N);
        gpu.ops->rmsnorm(&gpu, dy1, n, w, n, T, 1e-6f, o1, n);
        gpu.ops->add_rmsnorm(&gpu, dy2, dx, w, n, T, 1e-6f, o2);
        float *y1 = from_dev(dy1, N), *y2 = from_dev(dy2, N);
        float *n1 = from_dev(o1, N), *n2 = from_dev(o2, N);
        cr_assert_eq(memcmp(y1, y2, N * 4), 0, "width %d: the sums differ", n);
        cr_assert_eq(memcmp(n1, n2, N * 4), 0, "width %d: the norms differ", n);
        float *want = malloc(N * 4);
        for (size_t i = 0; i < N; i++)
            y[i] += x[i];
        rmsnorm_ref(y, n, w, n, T, 1e-6f, want, n);
        assert_close("add_rmsnorm", n2, want, N, 1e-6f);
        free(want);
        free(y1);
        free(y2);
        free(n1);
        free(n2);
        free(y);
        free(x);
        free(w);
        gpu.ops->release(&gpu, dy1);
        gpu.ops->release(&gpu, dy2);
        gpu.ops->release(&gpu, dx);
        gpu.ops->release(&gpu, o1);
        gpu.ops->release(&gpu, o2);
        close_gpu();
    }
}

Test(gpu, zero_add_gather_scatter)
{
    open_gpu();
    int dim = 300, n = 5, rows = 7;
    const int idx[5] = {6, 0, 3, 3, 1};     /* a row twice: added in order */
    const float w[5] = {0.5f, -1.0f, 2.0f, 0.25f, 1.5f};
    size_t N = (size_t)rows * dim, M = (size_t)n * dim;
    float *src = random_floats(N), *acc = random_floats(N), *add = random_floats(N);
    float *dsrc = to_dev(src, N), *dacc = to_dev(acc, N), *dadd = to_dev(add, N);
    float *dg = gpu.ops->alloc(&gpu, M);
    gpu.ops->gather_rows(&gpu, dsrc, idx, n, dim, dg);
    float *g = from_dev(dg, M);
    for (int i = 0; i < n; i++)
        cr_assert_eq(memcmp(g + (size_t)i * dim, src + (size_t)idx[i] * dim, (size_t)dim * 4), 0,
                     "gathered row %d", i);
    gpu.ops->add(&gpu, dacc, dadd, N);
    gpu.ops->scatter_add_rows(&gpu, dacc, idx, w, n, dim, dg);
    for (size_t i = 0; i < N; i++)
        acc[i] += add[i];
    for (int i = 0; i < n; i++)
        for (int j = 0; j < dim; j++)
            acc[(size_t)idx[i] * dim + j] += w[i] * g[(size_t)i * dim + j];
    float *got = from_dev(dacc, N);
    assert_close("add + scatter_add", got, acc, N, 1e-6f);
    free(got);
    gpu.ops->zero(&gpu, dacc, N);
    got = from_dev(dacc, N);
    cr_assert_eq(max_abs(got, N), 0.0f, "zero left something");
    close_gpu();
    free(got);
    free(g);
    free(src);
    free(acc);
    free(add);
}

/* more rows than a grid dimension holds (a step of 8,192 tokens x top-8 of K2
 * gathers 65,536): every row still gathered */
Test(gpu, gather_past_the_grid_limit, .timeout = 120)
{
    open_gpu();
    int n = GPU_GRID_Y + 1000, rows = 97, dim = 2;
    int *idx = malloc((size_t)n * sizeof *idx);
    for (int i = 0; i < n; i++)
        idx[i] = (int)(random_u32() % (uint32_t)rows);
    float *src = random_floats((size_t)rows * dim), *dsrc = to_dev(src, (size_t)rows * dim);
    float *dg = gpu.ops->alloc(&gpu, (size_t)n * dim);
    gpu.ops->gather_rows(&gpu, dsrc, idx, n, dim, dg);
    float *g = from_dev(dg, (size_t)n * dim);
    for (int i = 0; i < n; i++)
        cr_assert_eq(memcmp(g + (size_t)i * dim, src + (size_t)idx[i] * dim, (size_t)dim * 4), 0,
                     "gathered row %d of %d", i, n);
    close_gpu();
    free(g);
    free(src);
    free(idx);
}

/* scatter_add_rows adds each destination's rows in the caller's order, with
 * the bits of fmaf one row after another: rows naming a destination several
 * times (a group of experts sharing tokens, here about 3 rows per destination
 * and 260 columns, past one block), the same rows in calls of one row, and
 * more destinations than a grid dimension holds (a step of 8,192 tokens x
 * top-8). Destinations go in parallel; the adds to one element must not. */
Test(gpu, scatter_add_keeps_each_rows_order_and_bits, .timeout = 120)
{
    open_gpu();
    const struct { int rows, n, dim; } cases[] = {{300, 900, 260},
                                                  {GPU_GRID_Y + 1000, GPU_GRID_Y + 1000, 2}};
    for (size_t c = 0; c < 2; c++) {
        int rows = cases[c].rows, n = cases[c].n, dim = cases[c].dim;
        int *idx = malloc((size_t)n * sizeof *idx);
        float *w = random_floats((size_t)n);
        for (int i = 0; i < n; i++)     /* the second shape: every destination once, shuffled */
            idx[i] = c == 0 ? (int)(random_u32() % (uint32_t)rows) : (int)((i * 7919L) % rows);
        size_t N = (size_t)rows * dim, M = (size_t)n * dim;
        float *acc = random_floats(N), *src = random_floats(M), *want = malloc(N * sizeof *want);
        memcpy(want, acc, N * sizeof *want);
        for (int i = 0; i < n; i++)
            for (int j = 0; j < dim; j++)
                want[(size_t)idx[i] * dim + j] = fmaf(w[i], src[(size_t)i * dim + j],
                                                      want[(size_t)idx[i] * dim + j]);
        float *dacc = to_dev(acc, N), *dsrc = to_dev(src, M);
        gpu.ops->scatter_add_rows(&gpu, dacc, idx, w, n, dim, dsrc);
        float *got = from_dev(dacc, N);
        for (size_t k = 0; k < N; k++)
            cr_assert(memcmp(&got[k], &want[k], 4) == 0, "shape %zu, row %zu column %zu: %.9g, in "
                      "order one by one %.9g", c, k / dim, k % dim, got[k], want[k]);
        free(got);
        if (c == 0) {       /* one row a call: the same bits */
            float *dacc1 = to_dev(acc, N);
            for (int i = 0; i < n; i++)
                gpu.ops->scatter_add_rows(&gpu, dacc1, idx + i, w + i, 1, dim,
                                          dsrc + (size_t)i * dim);
            got = from_dev(dacc1, N);
            cr_assert_eq(memcmp(got, want, N * 4), 0, "row by row differs from all at once");
            free(got);
            gpu.ops->release(&gpu, dacc1);
        }
        gpu.ops->release(&gpu, dacc);
        gpu.ops->release(&gpu, dsrc);
        free(idx);
        free(w);
        free(acc);
        free(src);
        free(want);
    }
    close_gpu();
}

Test(gpu, route_picks_what_the_reference_picks)
{
    open_gpu();
    route_params p = {.n_experts = 16, .top_k = 4, .n_group = 4, .topk_group = 2, .sigmoid = 1,
                      .group_by_top2 = 1, .use_groups = 1, .normalize = 1, .scaling = 2.5f};
    int T = 5;
    float *logits = random_floats((size_t)T * 16), *bias = random_floats(16);
    float *dl = to_dev(logits, (size_t)T * 16);
    int ids[20], want_ids[20];
    float wts[20], want_w[20], scores[80], want_s[80];
    float *scratch = malloc(route_ref_scratch(&p) * 4 + 4);
    for (int t = 0; t < T; t++)
        route_ref(&p, logits + t * 16, bias, want_ids + t * 4, want_w + t * 4, want_s + t * 16,
                  scratch);
    gpu.ops->route(&gpu, &p, dl, bias, T, ids, wts, scores);
    cr_assert_eq(memcmp(ids, want_ids, sizeof ids), 0, "expert ids differ");
    cr_assert_eq(memcmp(wts, want_w, sizeof wts), 0, "combine weights differ");
    cr_assert_eq(memcmp(scores, want_s, sizeof scores), 0, "scores differ");
    close_gpu();
    free(logits);
    free(bias);
    free(scratch);
}

/* ---- attention ---- */

_Static_assert(GPU_CHUNK_MIN % GPU_MLA_EXPANDED_TOKENS == 0,
               "the plan's steps would change which tokens take the expanded form");

/* tokens below expanded_tokens(T) against the expanded reference, the rest
 * against the absorbed one: each form's own rounding, so the test does not
 * hinge on how close the two forms are on random weights */
static int expanded_tokens(int T)
{
    return T / GPU_MLA_EXPANDED_TOKENS * GPU_MLA_EXPANDED_TOKENS;
}

/* type: the cache as float32, rounded to bf16 (--cache-type bf16) or
 * quantized to q8_0 (--cache-type q8_0), read so by both */
static void check_mla_cache(weight_format fmt, int T, int pos0, int H, int C, int nope, int rope,
                            int v, float scale, kv_type type)
{
    int qk = nope + rope, row = C + rope;
    random_weight kvb = random_weight_make(fmt, H * (nope + v), C, 32, 32);
    int S = pos0 + T;
    float *q = random_floats((size_t)T * H * qk), *cache = random_floats((size_t)S * row);
    float *want = malloc((size_t)T * H * v * 4);
    uint16_t *cache16 = malloc((size_t)S * row * sizeof *cache16);
    size_t q8_bytes = kv_q8_row_bytes(row);
    char *cache8 = malloc((size_t)S * q8_bytes);
    for (size_t i = 0; i < (size_t)S * row; i++)
        cache16[i] = f32_to_bf16(cache[i]);
    for (int s = 0; s < S; s++)
        kv_q8_quantize(cache + (size_t)s * row, row, cache8 + (size_t)s * q8_bytes);
    mla_args a = {.q = q, .T = T, .pos0 = pos0, .kv_cache = type == KV_F32 ? cache : NULL,
                  .kv_bf16 = type == KV_BF16 ? cache16 : NULL,
                  .kv_q8 = type == KV_Q8_0 ? cache8 : NULL, .kv_b = &kvb.w, .H = H,
                  .nope = nope, .rope = rope, .v = v, .kv_lora = C, .scale = scale, .out = want};
    size_t ns = mla_ref_naive_scratch(&a), as = mla_ref_absorbed_scratch(&a);
    float *scratch = malloc((ns > as ? ns : as) * 4);
    mla_ref_absorbed(&a, scratch);
    int ex = expanded_tokens(T);
    if (ex) {
        float *naive = malloc((size_t)T * H * v * 4);
        a.out = naive;
        mla_ref_naive(&a, scratch);
        a.out = want;
        memcpy(want, naive, (size_t)ex * H * v * 4);
        free(naive);
    }
    open_gpu();
    float *dq = to_dev(q, (size_t)T * H * qk);
    float *dc = type == KV_BF16   ? to_dev((const float *)cache16, (size_t)S * row / 2)
                : type == KV_Q8_0 ? to_dev((const float *)(const void *)cache8, S * q8_bytes / 4)
                                  : to_dev(cache, (size_t)S * row);
    float *dout = gpu.ops->alloc(&gpu, (size_t)T * H * v);
    mla_args g = a;
    g.q = dq;
    g.kv_cache = type == KV_F32 ? dc : NULL;
    g.kv_bf16 = type == KV_BF16 ? (const uint16_t *)(const void *)dc : NULL;
    g.kv_q8 = type == KV_Q8_0 ? dc : NULL;
    g.out = dout;
    gpu.ops->mla_attention(&gpu, &g);
    float *got = from_dev(dout, (size_t)T * H * v);
    char what[112];
    snprintf(what, sizeof what, "%s attention T %d pos0 %d, %d heads (%d+%d, %d), latent %d%s",
             weight_format_name(fmt), T, pos0, H, nope, rope, v, C,
             type == KV_F32 ? "" : type == KV_BF16 ? ", bf16 cache" : ", q8_0 cache");
    assert_close(what, got, want, (size_t)T * H * v, 2e-5f);
    close_gpu();
    random_weight_free(&kvb);
    free(q);
    free(cache);
    free(cache16);
    free(cache8);
    free(want);
    free(scratch);
    free(got);
}

static void check_mla_heads(weight_format fmt, int T, int pos0, int H, int C, int nope, int rope,
                            int v, float scale)
{
    check_mla_cache(fmt, T, pos0, H, C, nope, rope, v, scale, KV_F32);
}

static void check_mla(weight_format fmt, int T, int pos0, int H, int C)
{
    check_mla_heads(fmt, T, pos0, H, C, 16, 8, 12, 0.3f);
}

Test(gpu, attention_matches_the_reference, .timeout = 60)
{
    check_mla(WF_BF16, 1, 5, 3, 40);
    check_mla(WF_BF16, 3, 0, 3, 40);
    check_mla(WF_FP8_BLOCK, 7, 300, 3, 40);     /* positions in two 256-tiles */
    check_mla(WF_INT4_GROUP, 2, 600, 3, 40);
    /* heads in groups of 8 (two groups, the second partial), latent columns in
     * two passes of the threads; one head; a latent too wide for the groups */
    check_mla(WF_BF16, 2, 270, 11, 320);
    check_mla(WF_BF16, 1, 3, 1, 64);
    check_mla(WF_INT4_GROUP, 1, 40, 9, 544);
    /* one token, a context of four chunks: a block per chunk, then their merge */
    check_mla(WF_BF16, 1, 1000, 3, 40);
    check_mla(WF_FP8_BLOCK, 1, 700, 3, 544);
}

/* A bf16 cache (--cache-type bf16) read by every kernel that reads the cache:
 * decode, heads in groups, a context split in chunks, and a prefill step's
 * expanded form, whose blocks are widened for the expansion (one block, two). */
Test(gpu, attention_over_a_bf16_cache_matches_the_reference, .timeout = 300)
{
    check_mla_cache(WF_BF16, 1, 5, 3, 40, 16, 8, 12, 0.3f, KV_BF16);
    check_mla_cache(WF_BF16, 2, 270, 11, 320, 16, 8, 12, 0.3f, KV_BF16);
    check_mla_cache(WF_FP8_BLOCK, 1, 1000, 3, 40, 16, 8, 12, 0.3f, KV_BF16);
    check_mla_cache(WF_BF16, 300, 37, 3, 40, 16, 8, 12, 0.3f, KV_BF16);
    check_mla_cache(WF_INT4_GROUP, 256, 900, 3, 40, 16, 8, 12, 0.3f, KV_BF16);
}

/* A q8_0 cache (--cache-type q8_0) the same way: rows of 48 values (a block
 * and a partial one) and of 328 (ten and a partial one), every kernel that
 * reads the cache, the expanded form's blocks widened. */
Test(gpu, attention_over_a_q8_cache_matches_the_reference, .timeout = 300)
{
    check_mla_cache(WF_BF16, 1, 5, 3, 40, 16, 8, 12, 0.3f, KV_Q8_0);
    check_mla_cache(WF_BF16, 2, 270, 11, 320, 16, 8, 12, 0.3f, KV_Q8_0);
    check_mla_cache(WF_FP8_BLOCK, 1, 1000, 3, 40, 16, 8, 12, 0.3f, KV_Q8_0);
    check_mla_cache(WF_BF16, 300, 37, 3, 40, 16, 8, 12, 0.3f, KV_Q8_0);
    check_mla_cache(WF_INT4_GROUP, 256, 900, 3, 40, 16, 8, 12, 0.3f, KV_Q8_0);
}

/* The GPU's q8_0 rows are the host's, byte for byte (kv_q8_quantize): random
 * rows of 48 and 328 values over many magnitudes, a zero block, exact ties, a
 * NaN and an infinity (their blocks NaN), the padding zeroed. */
Test(gpu, q8_store_quantizes_as_the_host)
{
    const int rows[] = {48, 328, 11};
    for (size_t k = 0; k < sizeof rows / sizeof *rows; k++) {
        int row = rows[k], T = 37;
        size_t bytes = kv_q8_row_bytes(row);
        float *x = random_floats((size_t)T * (size_t)row);
        for (int i = 0; i < T * row; i++)
            x[i] *= ldexpf(1.0f, i % 41 - 20);
        for (int c = 0; c < row && c < 32; c++)
            x[c] = 0.0f;                            /* a zero block */
        x[row] = 127.0f;                            /* step 1 in row 1's first block: */
        x[row + 1] = 2.5f;                          /* ties to even */
        x[row + 2] = -3.5f;
        for (int c = 3; c < 32 && c < row; c++)
            x[row + c] = 1.0f;
        x[2 * row + 5] = NAN;
        x[3 * row + row - 1] = -INFINITY;
        char *want = malloc((size_t)T * bytes);
        for (int t = 0; t < T; t++)
            kv_q8_quantize(x + (size_t)t * row, row, want + (size_t)t * bytes);
        open_gpu();
        /* the rows' memory holding other bytes first */
        char *junk = malloc((size_t)T * bytes);
        memset(junk, 0xa5, (size_t)T * bytes);
        float *dx = to_dev(x, (size_t)T * row);
        float *dy = to_dev((const float *)(const void *)junk, T * bytes / 4);
        free(junk);
        gpu.ops->store_q8_0(&gpu, dy, dx, T, row);
        char *got = (char *)from_dev(dy, T * bytes / 4);
        cr_expect(memcmp(got, want, (size_t)T * bytes) == 0, "%d values a row: the GPU's q8_0 "
                  "rows differ from the host's", row);
        close_gpu();
        free(x);
        free(want);
        free(got);
    }
}

/* The rounding the GPU's cache rows get is the host's, bit for bit: every
 * finite float of a sweep of exponents, ties and NaN. */
Test(gpu, bf16_store_rounds_as_the_host)
{
    open_gpu();
    size_t n = 1 << 16;
    float *x = malloc(n * sizeof *x);
    for (size_t i = 0; i < n; i++) {
        uint32_t u = (uint32_t)(i * 2654435761u);
        if (i % 7 == 0)
            u = (u & 0xffff0000u) | 0x8000u;     /* exact ties */
        memcpy(&x[i], &u, sizeof u);
    }
    x[0] = NAN;
    x[1] = INFINITY;
    x[2] = -0.0f;
    float *dx = to_dev(x, n), *dy = gpu.ops->alloc(&gpu, n / 2);
    gpu.ops->store_bf16(&gpu, dy, dx, n);
    uint16_t *got = (uint16_t *)(void *)from_dev(dy, n / 2);
    size_t bad = 0;
    for (size_t i = 0; i < n; i++)
        bad += got[i] != f32_to_bf16(x[i]);
    cr_expect_eq(bad, 0, "%zu of %zu values rounded otherwise", bad, n);
    close_gpu();
    free(x);
    free(got);
}

static uint64_t launches_so_far(void)
{
    gpu_cache_stats s;
    gpu_backend_cache_stats(&gpu, &s);
    return s.launches;
}

/* A step of 256 tokens or more: its whole slices of 256 in the expanded form,
 * the rest absorbed, against the same reference. */
Test(gpu, attention_of_a_prefill_step_matches_the_reference, .timeout = 300)
{
    check_mla(WF_BF16, 300, 37, 3, 40);         /* 256 expanded, 44 absorbed */
    check_mla(WF_INT4_GROUP, 256, 900, 3, 40);  /* the cache expanded in two blocks */
    /* two slices, 16 thread blocks of tokens; the test's FP8 weights reach 1e5,
     * so a smaller softmax scale keeps the scores where float32 softmax is
     * well conditioned (at 0.3 it is one-hot and its near-ties decide) */
    check_mla_heads(WF_FP8_BLOCK, 512, 0, 2, 40, 16, 8, 12, 1e-5f);
    /* v of 100: the lanes' second group of columns, partly. v of 132 is past
     * the kernel's 128 and stays absorbed on the GPU; it is held to the
     * expanded reference all the same (on BF16 at 0.3 the forms are this close) */
    check_mla_heads(WF_BF16, 260, 5, 2, 64, 32, 16, 100, 0.3f);
    check_mla_heads(WF_BF16, 256, 3, 2, 40, 16, 8, 132, 0.3f);
}

/* A token's attention does not depend on the batch it came in: alone (few
 * blocks, so its context's chunks get blocks of their own and a merge) or in a
 * prefill batch (a block per token folds all its chunks), the bits are the
 * same. The launch counts show which path each call took. */
void moetier_emu_refuse_allocations(int on) __attribute__((weak));

Test(gpu, attention_of_a_token_has_the_same_bits_alone_and_in_a_batch, .timeout = 120)
{
    const struct { weight_format fmt; int H, C; } cases[] = {
        {WF_BF16, 3, 40},           /* 8 heads per block */
        {WF_INT4_GROUP, 3, 544},    /* a head per block */
    };
    int nope = 16, rope = 8, v = 12, S = 3 * 256 + 1;
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        open_gpu();
        /* the batch has at least a block per token: as many tokens as the device
         * has multiprocessors keep it whole (a split needs fewer blocks) */
        int sms = gpu_backend_multiprocessors(&gpu), T = sms > 12 ? sms : 12, pos0 = S - T;
        cr_assert_leq(T, 256, "%d multiprocessors: the batch's first token would have fewer "
                      "than 3 chunks", sms);
        int H = cases[k].H, C = cases[k].C, qk = nope + rope, row = C + rope;
        random_weight kvb = random_weight_make(cases[k].fmt, H * (nope + v), C, 32, 32);
        float *q = random_floats((size_t)T * H * qk), *cache = random_floats((size_t)S * row);
        float *dq = to_dev(q, (size_t)T * H * qk), *dc = to_dev(cache, (size_t)S * row);
        float *dout = gpu.ops->alloc(&gpu, (size_t)T * H * v);
        mla_args a = {.q = dq, .T = T, .pos0 = pos0, .kv_cache = dc, .kv_b = &kvb.w, .H = H,
                      .nope = nope, .rope = rope, .v = v, .kv_lora = C, .scale = 0.3f,
                      .out = dout};
        uint64_t before = launches_so_far();
        gpu.ops->mla_attention(&gpu, &a);
        cr_assert_eq(launches_so_far() - before, 3, "case %zu: the batch of %d tokens was split",
                     k, T);
        float *batch = from_dev(dout, (size_t)T * H * v);
        /* with no room on the device for the split's partial sums (they grow
         * with the context, step after step), a token runs whole: the same bits */
        if (moetier_emu_refuse_allocations) {
            mla_args one = a;
            int t = T - 1;
            one.q = dq + (size_t)t * H * qk;
            one.T = 1;
            one.pos0 = pos0 + t;
            moetier_emu_refuse_allocations(1);
            before = launches_so_far();
            gpu.ops->mla_attention(&gpu, &one);
            moetier_emu_refuse_allocations(0);
            cr_assert_eq(launches_so_far() - before, 3, "case %zu: a token without room was split", k);
            float *got = from_dev(dout, (size_t)H * v);
            cr_assert_eq(memcmp(got, batch + (size_t)t * H * v, (size_t)H * v * 4), 0,
                         "case %zu: the token run whole differs from the batch's", k);
            free(got);
        }
        /* the first token (3 chunks), the last (4, the fourth of one position), one between */
        int alone[] = {0, T - 1, T / 2};
        for (int i = 0; i < 3; i++) {
            int t = alone[i];
            mla_args one = a;
            one.q = dq + (size_t)t * H * qk;
            one.T = 1;
            one.pos0 = pos0 + t;
            before = launches_so_far();
            gpu.ops->mla_attention(&gpu, &one);
            cr_assert_eq(launches_so_far() - before, 4, "case %zu: token %d alone was not split", k,
                         t);
            float *got = from_dev(dout, (size_t)H * v);
            cr_assert_eq(memcmp(got, batch + (size_t)t * H * v, (size_t)H * v * 4), 0,
                         "case %zu: token %d alone differs from the same token in the batch", k, t);
            free(got);
        }
        close_gpu();
        random_weight_free(&kvb);
        free(q);
        free(cache);
        free(batch);
    }
}

/* A prefill token's attention has the same bits in a step of 600 tokens as in
 * steps of 256, 256 and 88 (each step's whole slices of 256 expanded: the same
 * tokens in both), and a step of 256 runs expanded (a product and the
 * attention kernel per block of the cache's positions). */
Test(gpu, attention_of_a_prefill_token_has_the_same_bits_in_any_step, .timeout = 300)
{
    int nope = 16, rope = 8, v = 12, H = 3, C = 40, T = 600, pos0 = 50, S = pos0 + T;
    int qk = nope + rope, row = C + rope;
    random_weight kvb = random_weight_make(WF_INT4_GROUP, H * (nope + v), C, 32, 32);
    float *q = random_floats((size_t)T * H * qk), *cache = random_floats((size_t)S * row);
    open_gpu();
    float *dq = to_dev(q, (size_t)T * H * qk), *dc = to_dev(cache, (size_t)S * row);
    float *dout = gpu.ops->alloc(&gpu, (size_t)T * H * v);
    mla_args a = {.q = dq, .T = T, .pos0 = pos0, .kv_cache = dc, .kv_b = &kvb.w, .H = H,
                  .nope = nope, .rope = rope, .v = v, .kv_lora = C, .scale = 0.3f, .out = dout};
    gpu.ops->mla_attention(&gpu, &a);
    float *whole = from_dev(dout, (size_t)T * H * v);
    int steps[] = {256, 256, 88};
    for (int i = 0, t = 0; i < 3; t += steps[i++]) {
        mla_args one = a;
        one.q = dq + (size_t)t * H * qk;
        one.T = steps[i];
        one.pos0 = pos0 + t;
        one.out = dout + (size_t)t * H * v;
        uint64_t before = launches_so_far();
        gpu.ops->mla_attention(&gpu, &one);
        if (steps[i] == 256)
            cr_assert_eq(launches_so_far() - before, 2, "a step of 256 tokens at %d positions "
                         "took %llu launches, not the expanded form's 2", pos0 + t + 256,
                         (unsigned long long)(launches_so_far() - before));
    }
    float *stepped = from_dev(dout, (size_t)T * H * v);
    for (int t = 0; t < T; t++)
        cr_assert_eq(memcmp(stepped + (size_t)t * H * v, whole + (size_t)t * H * v,
                            (size_t)H * v * 4), 0,
                     "token %d: steps of 256, 256, 88 and one of 600 differ", t);
    close_gpu();
    random_weight_free(&kvb);
    free(q);
    free(cache);
    free(whole);
    free(stepped);
}

/* ---- prefill through the engine ---- */

/* A small model of the family (hidden 64, a dense and a MoE layer of 8
 * experts), so that the emulation runs 580 tokens in seconds; its attention's
 * widths and heads as given. */
static void synth_shaped(const char *dir, const char *format, int kv_lora, int rope, int heads)
{
    char kv[48], rp[48], hd[48];
    snprintf(kv, sizeof kv, "kv_lora_rank=%d", kv_lora);
    snprintf(rp, sizeof rp, "qk_rope_head_dim=%d", rope);
    snprintf(hd, sizeof hd, "num_attention_heads=%d", heads);
    const char *sets[] = {"hidden_size=64", "intermediate_size=128", "moe_intermediate_size=32",
                          "n_routed_experts=8", "num_experts_per_tok=2", "n_group=1",
                          "topk_group=1", "q_lora_rank=32", kv, "qk_nope_head_dim=16", rp,
                          "v_head_dim=16", hd};
    synth_options o = synth_options_default();
    errbuf e;
    cr_assert_eq(synth_format_parse(format, &o.format, &e), 0, "%s", e.msg);
    o.out_dir = dir;
    o.force = 1;
    o.seed = 5;
    o.layers = 2;
    o.sets = sets;
    o.n_sets = (int)(sizeof sets / sizeof sets[0]);
    cr_assert_eq(synth_run(&o, &e), 0, "synth: %s", e.msg);
}

/* 2 heads, a latent of 32 and rope of 8 */
static void synth_small(const char *dir)
{
    synth_shaped(dir, "int4", 32, 8, 2);
}

#define PREFILL_A 600   /* a first prompt, then a continuation at position 600 */
#define PREFILL_B 280

/* every row's logits of the two prefills, `chunk` tokens a step (0: the plan's) */
static float *prefill_logits(const char *dir, const char *backend_name, int chunk, int *vocab)
{
    cli_model m;
    model_flags f = {.dir = dir, .ctx = 1024, .chunk = chunk, .quiet = 1,
                    .backend = backend_name};
    errbuf e;
    cr_assert_eq(cli_model_open(&m, &f, &e), 0, "%s", e.msg);
    int V = m.mw.cfg.vocab_size, ids[PREFILL_A + PREFILL_B];
    for (int i = 0; i < PREFILL_A + PREFILL_B; i++)
        ids[i] = (i * 41 + 9) % V;
    float *out = calloc((size_t)(PREFILL_A + PREFILL_B) * (size_t)V, sizeof *out);
    cr_assert_eq(engine_forward(&m.en, ids, PREFILL_A, out, 1, &e), 0, "%s", e.msg);
    cr_assert_eq(engine_forward(&m.en, ids + PREFILL_A, PREFILL_B, out + (size_t)PREFILL_A * V, 1,
                                &e), 0, "%s", e.msg);
    cli_model_close(&m);
    *vocab = V;
    return out;
}

/* The plan picks the prefill step from the GPU's memory, so the step must not
 * change the logits: steps of 256, 512 and 1,024 (each step's whole slices of
 * 256 tokens expanded, the rest absorbed: 256 + 256 + 88, 512 + 88 and 600 for
 * the prompt) give the same bits, through a prompt and its continuation, and
 * they match the CPU backend's to the strict tolerance. */
Test(gpu, prefill_logits_do_not_depend_on_the_step, .timeout = 300)
{
    test_require_gpu();
    char *dir = test_make_tmpdir("gpu_prefill");
    synth_small(dir);
    int V, rows = PREFILL_A + PREFILL_B;
    float *s256 = prefill_logits(dir, "cuda", 256, &V);
    int chunks[] = {512, 1024};
    for (int i = 0; i < 2; i++) {
        float *got = prefill_logits(dir, "cuda", chunks[i], &V);
        for (int t = 0; t < rows; t++)
            cr_assert_eq(memcmp(got + (size_t)t * V, s256 + (size_t)t * V, (size_t)V * 4), 0,
                         "row %d: steps of %d and of 256 give different logits", t, chunks[i]);
        free(got);
    }
    float *cpu = prefill_logits(dir, "cpu", 0, &V);
    logit_cmp r = test_compare_logits(cpu, s256, rows, V);
    cr_expect(r.max_over_std <= 1e-3 && r.rms_over_std <= 1e-4 && r.top1_agree == rows,
              "GPU against CPU: max|diff|/std %.3g, rms/std %.3g, top-1 %d/%d", r.max_over_std,
              r.rms_over_std, r.top1_agree, r.rows);
    free(cpu);
    free(s256);
    test_remove_tree(dir);
    free(dir);
}

/* The most device memory held since a reset: the CUDA emulation counts it (a
 * device does not say its peak). Weak, so that builds without the emulation
 * link; the test that needs them skips there. */
size_t moetier_emu_device_peak(int device) __attribute__((weak));
void moetier_emu_device_peak_reset(int device) __attribute__((weak));

/* The most device memory a run on the emulated GPU holds, from its backend's
 * weights and expert cache to its end (the rates measured before they arrive
 * left out): a prompt that fills the context but two positions in steps of `chunk`, then
 * two decode steps. *g: the plan of the run. */
static uint64_t run_device_peak(const char *dir, int ctx, int chunk, int slots, gpu_plan *g)
{
    model_flags f = {.dir = dir, .ctx = ctx, .chunk = chunk, .quiet = 1, .backend = "cuda"};
    errbuf e;
    model_weights mw;
    cr_assert_eq(model_weights_open(&mw, dir, &e), 0, "%s", e.msg);
    tier_plan tp;
    store st;
    tier_flags none = {0};
    cr_assert_eq(tier_plan_make(&tp, &mw, &none, &st, &e), 0, "%s", e.msg);
    f.tiers = (tier_flags){.vram_gb = 8, .vram_gb_set = 1};
    cr_assert_eq(cli_gpu_plan(&mw, &tp, &f, 0, g, &e), 0, "%s", e.msg);
    f.tiers.vram_gb = (double)(g->dense_bytes + g->kv_bytes + g->act_bytes +
                               (uint64_t)slots * g->slot_bytes + g->slot_bytes / 2) / 1e9;
    cr_assert_eq(cli_gpu_plan(&mw, &tp, &f, 0, g, &e), 0, "%s", e.msg);
    model_weights_close(&mw);
    cr_assert_eq(g->slots, slots, "the plan holds %d experts, not %d", g->slots, slots);
    moetier_emu_device_peak_reset(0);
    size_t before = moetier_emu_device_peak(0);
    cli_model m;
    cr_assert_eq(cli_model_open(&m, &f, &e), 0, "%s", e.msg);
    /* the rates' measurement, on the empty device, is not the run's */
    moetier_emu_device_peak_reset(0);
    int V = m.mw.cfg.vocab_size, *ids = malloc((size_t)ctx * sizeof *ids);
    for (int i = 0; i < ctx; i++)
        ids[i] = (i * 41 + 9) % V;
    float *out = calloc((size_t)V, sizeof *out);
    cr_assert_eq(engine_forward(&m.en, ids, ctx - 2, out, 0, &e), 0, "%s", e.msg);
    for (int t = ctx - 2; t < ctx; t++)
        cr_assert_eq(engine_forward(&m.en, ids + t, 1, out, 0, &e), 0, "%s", e.msg);
    cli_model_close(&m);
    free(out);
    free(ids);
    return moetier_emu_device_peak(0) - before;
}

/* The plan is what a run holds: whatever --vram-gb leaves for the expert cache
 * and the prefill step, a run holds no more device memory than the budget less
 * the reserves it cannot use, and each of the plan's parts that grows (with
 * the step, the cache's slots) grows at least as much as the run. A plan that leaves out a
 * buffer fails here, where on a device it would stop a run midway. */
Test(gpu, a_run_holds_no_more_device_memory_than_its_plan, .timeout = 300)
{
    test_require_gpu();
    if (!moetier_emu_device_peak)
        cr_skip_test("the peak of device memory is counted by the CUDA emulation only "
                     "(make test-gpu-emu)");
    char *dir = test_make_tmpdir("gpu_peak");
    synth_small(dir);
    gpu_plan a, b, c, d;
    uint64_t pa = run_device_peak(dir, 512, 256, 0, &a);
    uint64_t pb = run_device_peak(dir, 512, 512, 0, &b);
    uint64_t pc = run_device_peak(dir, 1024, 256, 0, &c);
    uint64_t pd = run_device_peak(dir, 512, 256, a.n_experts, &d);
    gpu_plan *g[] = {&a, &b, &c, &d};
    uint64_t held[] = {pa, pb, pc, pd};
    /* Of the margin, this run can use only the resident pool's slack (the
     * rest is for a device's rounding), and of split attention's reserve
     * nothing (it is for 100 K positions and more): without them it must
     * still fit, so a fixed buffer the plan leaves out fails here once it
     * passes the little the plan over-counts (the whole budget would hide 400
     * MB) */
    const uint64_t unused = GPU_MARGIN_BYTES - (gpu_pool_bytes(a.dense_bytes) - a.dense_bytes) +
                            (uint64_t)GPU_MLA_PART_BYTES * 5 / 4;
    for (int i = 0; i < 4; i++) {
        cr_log_info("run %d: held %.3f MB of a %.3f MB plan", i, held[i] / 1e6, g[i]->budget / 1e6);
        cr_expect_leq(held[i], g[i]->budget - unused, "run %d held %llu bytes, its plan allows %llu "
                      "besides the reserves it cannot use", i,
                      (unsigned long long)held[i], (unsigned long long)(g[i]->budget - unused));
    }
    /* what grows with the step and with the cache's slots (the context's
     * scratch beside the KV cache is capped, and counted whole) */
    cr_expect_leq(pb - pa, b.act_bytes - a.act_bytes, "steps of 512 hold %llu bytes more than "
                  "steps of 256; the plan counts %llu", (unsigned long long)(pb - pa),
                  (unsigned long long)(b.act_bytes - a.act_bytes));
    cr_expect_leq(pd - pa, (uint64_t)d.slots * d.slot_bytes, "%d cached experts hold %llu bytes; "
                  "the plan counts %llu", d.slots, (unsigned long long)(pd - pa),
                  (unsigned long long)d.slots * d.slot_bytes);
    cr_expect_gt(pb, pa, "the premise: longer steps hold more");
    test_remove_tree(dir);
    free(dir);
}

/* A latent wider than the attention kernel's shared memory holds is refused
 * when the backend opens (with auto: the CPU computes), not by an abort at the
 * first attention */
Test(gpu, attention_widths_past_the_kernel_are_refused_at_open, .timeout = 120)
{
    test_require_gpu();
    char *dir = test_make_tmpdir("gpu_wide");
    synth_shaped(dir, "bf16", 2048, 5632, 1);
    errbuf e;
    cli_model m;
    model_flags f = {.dir = dir, .ctx = 64, .quiet = 1, .backend = "cuda"};
    cr_assert_neq(cli_model_open(&m, &f, &e), 0, "--backend cuda took a 2048 + 5632 latent");
    cr_expect(strstr(e.msg, "kv_lora_rank + qk_rope_head_dim up to 7648 (this model: 2048 + 5632)"),
              "%s", e.msg);
    f.backend = "auto";
    cr_assert_eq(cli_model_open(&m, &f, &e), 0, "%s", e.msg);
    cr_expect_str_eq(m.be.name, "cpu");
    int ids[3] = {1, 2, 3};
    float *out = calloc((size_t)m.mw.cfg.vocab_size, sizeof *out);
    cr_expect_eq(engine_forward(&m.en, ids, 3, out, 0, &e), 0, "%s", e.msg);
    free(out);
    cli_model_close(&m);
    test_remove_tree(dir);
    free(dir);
}

/* A prompt and one decode step of a model opened with f, run on a thread of
 * its own; the logits of both steps. */
struct threaded_run {
    cli_model *m;
    float *out;
    int rc;
    errbuf e;
};

#define THREADED_PROMPT 9

static void *run_steps(void *p)
{
    struct threaded_run *r = p;
    int V = r->m->mw.cfg.vocab_size, ids[THREADED_PROMPT + 1];
    for (int i = 0; i <= THREADED_PROMPT; i++)
        ids[i] = (i * 37 + 5) % V;
    r->rc = engine_forward(&r->m->en, ids, THREADED_PROMPT, r->out, 1, &r->e);
    if (!r->rc)
        r->rc = engine_forward(&r->m->en, ids + THREADED_PROMPT, 1,
                               r->out + (size_t)THREADED_PROMPT * V, 1, &r->e);
    return NULL;
}

static float *logits_on_device(const char *dir, int device, int other_thread, char *name,
                               uint64_t *device0_free_while_open, int *vocab)
{
    cli_model m;
    model_flags f = {.dir = dir, .ctx = 64, .quiet = 1, .backend = "cuda", .device = device,
                     .device_set = 1};
    errbuf e;
    cr_assert_eq(cli_model_open(&m, &f, &e), 0, "device %d: %s", device, e.msg);
    snprintf(name, 256, "%s", gpu_backend_device(&m.be));
    *vocab = m.mw.cfg.vocab_size;
    struct threaded_run r = {.m = &m};
    r.out = calloc((size_t)(THREADED_PROMPT + 1) * (size_t)*vocab, sizeof *r.out);
    if (other_thread) {
        pthread_t t;
        cr_assert_eq(pthread_create(&t, NULL, run_steps, &r), 0);
        pthread_join(t, NULL);
    } else {
        run_steps(&r);
    }
    cr_assert_eq(r.rc, 0, "device %d: %s", device, r.e.msg);
    uint64_t total;
    /* this thread's current device becomes 0 here: closing must not depend on it */
    cr_assert_eq(gpu_device_memory(0, device0_free_while_open, &total, &e), 0, "%s", e.msg);
    cli_model_close(&m);
    return r.out;
}

/* --device: a model opened on device 1 by one thread and run by another (as
 * the server's engine thread runs it) computes there, with device 0's bits,
 * and leaves device 0's memory alone. The runtime's current device belongs to
 * each thread, so a backend that selected its device only at create would
 * launch the second thread's kernels on device 0 with device 1's memory (the
 * emulation stops that launch; a GPU faults). */
Test(gpu, second_device_from_another_thread, .timeout = 120)
{
    test_require_gpu();
    char why[1024];
    if (gpu_probe(why, sizeof why) < 2)
        cr_skip_test("needs two CUDA devices: %s", why);
    char *dir = test_make_tmpdir("gpu_device"), name0[256], name1[256];
    test_synth_tiny(dir, "int4");
    int V;
    uint64_t free0_before, free0_open, total, ignored;
    errbuf e;
    float *base = logits_on_device(dir, 0, 0, name0, &ignored, &V);
    cr_assert_eq(gpu_device_memory(0, &free0_before, &total, &e), 0, "%s", e.msg);
    float *got = logits_on_device(dir, 1, 1, name1, &free0_open, &V);
    cr_expect_eq(free0_open, free0_before, "device 0: %llu bytes free before, %llu with the model "
                 "open on device 1", (unsigned long long)free0_before,
                 (unsigned long long)free0_open);
    int rows = THREADED_PROMPT + 1;
    if (!strcmp(name0, name1)) {
        cr_expect_eq(memcmp(got, base, (size_t)rows * (size_t)V * sizeof *got), 0,
                     "two devices of one kind (%s) gave different logits", name0);
    } else {
        logit_cmp r = test_compare_logits(base, got, rows, V);
        cr_expect(r.max_over_std <= 1e-3 && r.rms_over_std <= 1e-4 && r.top1_agree == rows,
                  "%s against %s: max|diff|/std %.3g, rms/std %.3g, top-1 %d/%d", name1, name0,
                  r.max_over_std, r.rms_over_std, r.top1_agree, r.rows);
    }
    free(base);
    free(got);
    test_remove_tree(dir);
    free(dir);
}

/* --device: refused with the CPU backend and for a device this machine lacks
 * (even with auto, which otherwise falls back to the CPU), taken by inspect
 * and bench gpu */
Test(gpu, device_flag_is_checked, .timeout = 120)
{
    char *dir = test_make_tmpdir("gpu_device_flag"), *cmd, *out, *err, why[1024];
    test_synth_tiny(dir, "bf16");
    const char *bin = test_moetier_bin();
    int n = gpu_probe(why, sizeof why);
    char missing_n[16], missing[64], last[64], says_missing[96], on_last[48];
    snprintf(missing_n, sizeof missing_n, "%d", n);
    snprintf(missing, sizeof missing, "--backend auto --device %d", n);
    snprintf(last, sizeof last, "--backend cuda --device %d", n > 0 ? n - 1 : 0);
    snprintf(says_missing, sizeof says_missing, "--device %d: CUDA device %d does not exist", n, n);
    snprintf(on_last, sizeof on_last, "(device %d, experimental)", n > 0 ? n - 1 : 0);
    const struct {
        const char *command, *flags, *says;     /* says NULL: runs */
        int needs_gpu;
    } cases[] = {
        {"run", "--backend cpu --device 1", "--device is for the GPU backend", 0},
        {"run", "--backend auto --device x", "--device expects an integer", 0},
        {"run", "--backend auto --device -1", "--device expects an integer", 0},
        {"run", missing, n > 0 ? says_missing : NULL, 0},
        {"run", last, NULL, 1},
        {"bench gpu --mb 1 --seconds 0.01 --device", "x", "--device expects an integer", 0},
        {"bench gpu --mb 1 --seconds 0.01 --device", missing_n,
         n > 0 ? "does not exist" : "no GPU to measure", 0},
    };
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        if (cases[k].needs_gpu && n == 0)
            continue;
        if (!strcmp(cases[k].command, "run"))
            cr_assert(asprintf(&cmd, "%s run -m %s --ids 1,2 -n 2 --greedy %s", bin, dir,
                               cases[k].flags) > 0);
        else
            cr_assert(asprintf(&cmd, "%s %s %s", bin, cases[k].command, cases[k].flags) > 0);
        int rc = test_run_capture(cmd, &out, &err);
        if (cases[k].says)
            cr_assert(rc != 0 && strstr(err, cases[k].says), "%s: rc %d, %s", cmd, rc, err);
        else
            cr_assert_eq(rc, 0, "%s: %s", cmd, err);
        if (!cases[k].says && n > 0)
            cr_assert(strstr(err, on_last), "%s ran elsewhere: %s", cmd, err);
        free(cmd);
        free(out);
        free(err);
    }
    if (n > 0) {
        /* every device listed by number; the plan for the one asked for */
        cr_assert(asprintf(&cmd, "%s inspect -m %s --device %d", bin, dir, n - 1) > 0);
        cr_assert_eq(test_run_capture(cmd, &out, &err), 0, "%s", err);
        char listed[32], plan_on[32];
        snprintf(listed, sizeof listed, "; %d: ", n - 1);
        snprintf(plan_on, sizeof plan_on, "on device %d (--device)", n - 1);
        cr_assert(strstr(out, "device(s); 0: ") && strstr(out, listed), "%s", out);
        cr_assert(strstr(out, "GPU plan (") && (n < 2 || strstr(out, plan_on)), "%s", out);
        free(cmd);
        free(out);
        free(err);
        cr_assert(asprintf(&cmd, "%s bench gpu --json --mb 1 --seconds 0.01 --device %d", bin,
                           n - 1) > 0);
        cr_assert_eq(test_run_capture(cmd, &out, &err), 0, "%s", err);
        snprintf(listed, sizeof listed, "\"device %d: ", n - 1);
        cr_assert(strstr(out, listed), "%s", out);
        free(cmd);
        free(out);
        free(err);
    }
    test_remove_tree(dir);
    free(dir);
}

/* ---- without a GPU ---- */

/* --backend cuda refuses to run without a device, auto says so and uses the CPU */
Test(gpu, backend_choice_without_a_device)
{
    char why[256];
    if (gpu_probe(why, sizeof why) > 0)
        cr_skip_test("a GPU is present");
    char *dir = test_make_tmpdir("gpu_choice"), *cmd, *out, *err;
    test_synth_tiny(dir, "bf16");
    const char *bin = test_moetier_bin();
    cr_assert(asprintf(&cmd, "%s run -m %s --ids 1,2 -n 2 --greedy --backend cuda", bin, dir) > 0);
    int rc = test_run_capture(cmd, &out, &err);
    cr_assert_neq(rc, 0, "--backend cuda ran without a GPU");
    cr_assert(strstr(err, "--backend cuda: "), "no reason given: %s", err);
    free(cmd);
    free(out);
    free(err);
    cr_assert(asprintf(&cmd, "%s run -m %s --ids 1,2 -n 2 --greedy --backend auto", bin, dir) > 0);
    rc = test_run_capture(cmd, &out, &err);
    cr_assert_eq(rc, 0, "--backend auto failed: %s", err);
    cr_assert(strstr(err, "no GPU backend ("), "no notice: %s", err);
    cr_assert(strstr(err, "CPU backend:"), "did not fall back to the CPU: %s", err);
    free(cmd);
    free(out);
    free(err);
    test_remove_tree(dir);
    free(dir);
}

/* --cpu-tokens takes auto or a count; $MOETIER_HYBRID_RATES five positive
 * numbers: anything else is refused before a model is opened on any backend */
Test(gpu, hybrid_flags_are_checked)
{
    char *dir = test_make_tmpdir("gpu_flags"), *cmd, *out, *err;
    test_synth_tiny(dir, "bf16");
    const char *bin = test_moetier_bin();
    const struct {
        const char *env, *flags, *says;     /* says NULL: runs */
    } cases[] = {
        {"", "--cpu-tokens auto", NULL},
        {"", "--cpu-tokens 3", NULL},
        {"", "--cpu-tokens lots", "--cpu-tokens"},
        {"", "--cpu-tokens -2", "--cpu-tokens"},
        {"MOETIER_HYBRID_RATES=1,2", "", "MOETIER_HYBRID_RATES"},
        {"MOETIER_HYBRID_RATES=1,1,1,1,0", "", "MOETIER_HYBRID_RATES"},
        {"MOETIER_HYBRID_RATES=1,1,1,1,1x", "", "MOETIER_HYBRID_RATES"},
        {"MOETIER_HYBRID_RATES=20,5,2000,0.1,0.02", "", NULL},
    };
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        cr_assert(asprintf(&cmd, "%s %s run -m %s --ids 1,2 -n 2 --greedy --backend auto %s",
                           cases[k].env, bin, dir, cases[k].flags) > 0);
        int rc = test_run_capture(cmd, &out, &err);
        if (cases[k].says)
            cr_assert(rc != 0 && strstr(err, cases[k].says), "%s: rc %d, %s", cmd, rc, err);
        else
            cr_assert_eq(rc, 0, "%s: %s", cmd, err);
        free(cmd);
        free(out);
        free(err);
    }
    test_remove_tree(dir);
    free(dir);
}

/* `moetier bench gpu --json`: its fields, pinned and pageable rates measured */
Test(gpu, bench_gpu_json_lines)
{
    test_require_gpu();
    const char *bin = test_moetier_bin();
    char *cmd, *out, *err;
    cr_assert(asprintf(&cmd, "%s bench gpu --json --mb 1,3 --seconds 0.05", bin) > 0);
    cr_assert_eq(test_run_capture(cmd, &out, &err), 0, "%s", err);
    int lines = 0;
    for (char *l = out; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
        double pinned = 0, pageable = 0;
        const char *p = strstr(l, "\"pinned_gbps\": "), *q = strstr(l, "\"pageable_gbps\": ");
        cr_assert(p && q && strstr(l, "\"bench\": \"gpu_copy\"") && strstr(l, "\"ratio\": "),
                  "line %d: %s", lines, l);
        pinned = atof(p + 15);
        pageable = atof(q + 17);
        cr_assert(pinned > 0 && pageable > 0, "line %d: %s", lines, l);
        lines++;
    }
    cr_assert_eq(lines, 2, "%s", out);
    cr_assert(strstr(out, "\"bytes\": 1000000,") && strstr(out, "\"bytes\": 3000000,"), "%s", out);
    free(cmd);
    free(out);
    free(err);
}

/* `moetier bench gpu --overlap --json`: one line with the three timings, the
 * overlap computed from them and the copy rates */
Test(gpu, bench_gpu_overlap_json)
{
    test_require_gpu();
    const char *bin = test_moetier_bin();
    char *cmd, *out, *err;
    cr_assert(asprintf(&cmd, "%s bench gpu --overlap --json --shape 256,96 --experts 2,3 -t 2", bin) > 0);
    cr_assert_eq(test_run_capture(cmd, &out, &err), 0, "%s", err);
    const char *f[] = {"\"gpu_ms\": ", "\"cpu_ms\": ", "\"both_ms\": ", "\"overlap\": ",
                       "\"blob_gbps\": ", "\"pinned_gbps\": "};
    double v[6];
    for (int i = 0; i < 6; i++) {
        const char *p = strstr(out, f[i]);
        cr_assert(p, "no %s in %s", f[i], out);
        v[i] = atof(p + strlen(f[i]));
    }
    cr_assert(strstr(out, "\"bench\": \"gpu_overlap\"") && strstr(out, "\"hidden\": 256,") &&
              strstr(out, "\"gpu_experts\": 2,") && strstr(out, "\"cpu_experts\": 3,"), "%s", out);
    cr_assert(v[0] > 0 && v[1] > 0 && v[2] > 0 && v[4] > 0 && v[5] > 0, "%s", out);
    double shorter = v[0] < v[1] ? v[0] : v[1];
    cr_assert_float_eq(v[3], (v[0] + v[1] - v[2]) / shorter, 1e-3 * (1 + fabs(v[3])), "%s", out);
    free(cmd);
    free(out);
    free(err);
    cr_assert(asprintf(&cmd, "%s bench gpu --overlap --shape 250,96", bin) > 0);
    cr_assert_neq(test_run_capture(cmd, &out, &err), 0, "a shape not a multiple of 32 ran");
    cr_assert(strstr(err, "multiples of 32"), "%s", err);
    free(cmd);
    free(out);
    free(err);
}

/* `bench gpu WHICH OPTION` exits with 2 and names the flag, for each bad[i] =
 * {options, the flag the error must name} */
static void assert_bench_refuses(const char *bin, const char *which, const char *bad[][2], int n)
{
    for (int i = 0; i < n; i++) {
        char *cmd, *out, *err;
        cr_assert(asprintf(&cmd, "%s bench gpu %s %s", bin, which, bad[i][0]) > 0);
        cr_assert_eq(test_run_capture(cmd, &out, &err), 2, "'%s' ran: %s", bad[i][0], out);
        cr_assert(strstr(err, bad[i][1]), "'%s': %s", bad[i][0], err);
        free(cmd);
        free(out);
        free(err);
    }
}

/* `moetier bench gpu --linear --json`: a line per format, shape and token
 * count; the three variants give the same bits; ratio is ahead / HBM; bad lists
 * are refused with the flag's name */
Test(gpu, bench_gpu_linear_json)
{
    test_require_gpu();
    const char *bin = test_moetier_bin();
    char *cmd, *out, *err;
    cr_assert(asprintf(&cmd, "%s bench gpu --linear --json --formats int4,fp8 --shapes 40x70,9x300 "
                       "--tokens 1,9 --set-gb 0.00004", bin) > 0);
    cr_assert_eq(test_run_capture(cmd, &out, &err), 0, "%s", err);
    int lines = 0;
    for (char *l = out; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
        const char *f[] = {"\"ahead_gbps\": ", "\"plain_gbps\": ", "\"hbm_gbps\": ", "\"ratio\": ",
                           "\"matrices\": ", "\"one_row_gbps\": "};
        double v[6];
        for (int i = 0; i < 6; i++) {
            const char *p = strstr(l, f[i]);
            cr_assert(p, "no %s in line %d: %s", f[i], lines, l);
            v[i] = atof(p + strlen(f[i]));
        }
        cr_assert(v[0] > 0 && v[1] > 0 && v[2] > 0 && v[4] >= 1 && v[5] > 0, "line %d: %s", lines, l);
        cr_assert_float_eq(v[3], v[0] / v[2], 1e-3 * v[3] + 1e-4, "line %d: %s", lines, l);
        cr_assert(strstr(l, "\"same_bits\": true"), "line %d: %s", lines, l);
        cr_assert(strstr(l, lines < 4 ? "\"format\": \"int4\"" : "\"format\": \"fp8\""), "%s", l);
        cr_assert(strstr(l, lines % 4 < 2 ? "\"rows\": 40, \"cols\": 70," : "\"rows\": 9, \"cols\": 300,"),
                  "%s", l);
        cr_assert(strstr(l, lines % 2 ? "\"tokens\": 9," : "\"tokens\": 1,"), "%s", l);
        lines++;
    }
    cr_assert_eq(lines, 8, "%s", out);
    free(cmd);
    free(out);
    free(err);
    const char *bad[][2] = {{"--shapes 40", "--shapes"}, {"--formats int3", "--formats"},
                            {"--tokens 0", "--tokens"}, {"--set-gb -1", "--set-gb"}};
    assert_bench_refuses(bin, "--linear", bad, 4);
}

/* `moetier bench gpu --attention --json`: a line per context and token count;
 * both ways give the same bits; gain is whole / split; bad lists are refused
 * with the flag's name */
Test(gpu, bench_gpu_attention_json, .timeout = 120)
{
    test_require_gpu();
    const char *bin = test_moetier_bin();
    char *cmd, *out, *err;
    cr_assert(asprintf(&cmd, "%s bench gpu --attention --json --contexts 300 --tokens 1 "
                       "--set-gb 0.0001", bin) > 0);
    cr_assert_eq(test_run_capture(cmd, &out, &err), 0, "%s", err);
    const char *f[] = {"\"whole_ms\": ", "\"split_ms\": ", "\"whole_gbps\": ",
                       "\"split_gbps\": ", "\"hbm_gbps\": ", "\"gain\": ", "\"layers\": "};
    double v[7];
    for (int i = 0; i < 7; i++) {
        const char *p = strstr(out, f[i]);
        cr_assert(p, "no %s in %s", f[i], out);
        v[i] = atof(p + strlen(f[i]));
    }
    cr_assert(v[0] > 0 && v[1] > 0 && v[2] > 0 && v[3] > 0 && v[4] > 0 && v[6] >= 1, "%s", out);
    cr_assert_float_eq(v[5], v[0] / v[1], 1e-3 * v[5] + 1e-4, "%s", out);
    /* 300 positions of 512 latent and 64 rope floats */
    cr_assert(strstr(out, "\"context\": 300, \"tokens\": 1,") &&
              strstr(out, "\"cache_bytes\": 691200,") && strstr(out, "\"same_bits\": true"),
              "%s", out);
    cr_assert_eq(strchr(out, '\n') - out + 1, (long)strlen(out), "more than one line: %s", out);
    cr_expect(strstr(out, "\"cache_type\": \"f32\""), "%s", out);
    free(cmd);
    free(out);
    free(err);
    /* a bf16 cache: half the bytes, the two ways still the same bits */
    cr_assert(asprintf(&cmd, "%s bench gpu --attention --json --contexts 300 --tokens 1 "
                       "--set-gb 0.0001 --cache-type bf16", bin) > 0);
    cr_assert_eq(test_run_capture(cmd, &out, &err), 0, "%s", err);
    cr_expect(strstr(out, "\"cache_type\": \"bf16\", \"cache_bytes\": 345600,") &&
              strstr(out, "\"same_bits\": true"), "%s", out);
    free(cmd);
    free(out);
    free(err);
    /* a q8_0 cache: 648 bytes a position */
    cr_assert(asprintf(&cmd, "%s bench gpu --attention --json --contexts 300 --tokens 1 "
                       "--set-gb 0.0001 --cache-type q8_0", bin) > 0);
    cr_assert_eq(test_run_capture(cmd, &out, &err), 0, "%s", err);
    cr_expect(strstr(out, "\"cache_type\": \"q8_0\", \"cache_bytes\": 194400,") &&
              strstr(out, "\"same_bits\": true"), "%s", out);
    free(cmd);
    free(out);
    free(err);
    const char *bad[][2] = {{"--contexts 0", "--contexts"}, {"--tokens x", "--tokens"},
                            {"--set-gb -1", "--set-gb"}, {"--heads 3", "--heads"},
                            {"--cache-type q4", "--cache-type"}};
    assert_bench_refuses(bin, "--attention", bad, 5);
}

/* `moetier bench gpu --prefill-attention` refuses bad lists, and --set-gb
 * (one layer's cache, no set), with the flag's name; without a device or the
 * emulation's patience (K2's shapes at 256 tokens take it minutes) it is run
 * by the device session (bench/gpu_session.sh) */
Test(gpu, bench_gpu_prefill_attention_refuses_bad_lists)
{
    const char *bin = test_moetier_bin();
    const char *bad[][2] = {{"--contexts 0", "--contexts"}, {"--tokens x", "--tokens"},
                            {"--set-gb 1", "--set-gb"}, {"--heads 3", "--heads"}};
    assert_bench_refuses(bin, "--prefill-attention", bad, 4);
}

/* a step larger than the kernels' token grid is refused before anything runs */
Test(gpu, chunk_beyond_the_token_grid_is_refused)
{
    test_require_gpu();
    char *dir = test_make_tmpdir("gpu_chunk"), *cmd, *out, *err;
    test_synth_tiny(dir, "bf16");
    const char *bin = test_moetier_bin();
    cr_assert(asprintf(&cmd, "%s run -m %s --ids 1 -n 1 --backend cuda --chunk %d -c %d", bin, dir,
                       GPU_MAX_TOKENS + 1, GPU_MAX_TOKENS + 2) > 0);
    cr_assert_neq(test_run_capture(cmd, &out, &err), 0, "a chunk of %d was accepted", GPU_MAX_TOKENS + 1);
    cr_assert(strstr(err, "takes at most 65535 tokens per step"), "%s", err);
    free(cmd);
    free(out);
    free(err);
    test_remove_tree(dir);
    free(dir);
}

/* `run --stats` on the GPU backend prints the decode steps against their bound:
 * the bound is the longest of its three sides and bound / measured is their
 * ratio; without measured rates (--cpu-tokens N) it says why there is none */
Test(gpu, run_stats_print_the_decode_bound, .timeout = 120)
{
    test_require_gpu();
    char *dir = test_make_tmpdir("gpu_bound"), *cmd, *out, *err;
    test_synth_tiny(dir, "int4");
    const char *bin = test_moetier_bin();
    cr_assert(asprintf(&cmd, "%s run -m %s --ids 1,2,3 -n 4 --greedy --ignore-eos --backend cuda "
                       "--stats", bin, dir) > 0);
    cr_assert_eq(test_run_capture(cmd, &out, &err), 0, "%s", err);
    const char *line = strstr(err, "decode bound per token: ");
    cr_assert(line, "no decode bound: %s", err);
    double bound, gpu_ms, cpu_ms, copy_ms, measured, ratio;
    const char *p;
    cr_assert(sscanf(line, "decode bound per token: %lf ms = the longest of GPU reads %lf ms",
                     &bound, &gpu_ms) == 2, "%s", line);
    cr_assert((p = strstr(line, "CPU experts ")) && sscanf(p, "CPU experts %lf ms", &cpu_ms) == 1,
              "%s", line);
    /* the 3 decode steps, at positions 3, 4 and 5, read 4, 5 and 6 positions
     * of every layer's cache */
    double kv_mb;
    model_config c;
    errbuf e;
    cr_assert_eq(config_load(&c, dir, &e), 0, "%s", e.msg);
    double want_mb = 5.0 * c.n_layers * (c.kv_lora_rank + c.qk_rope_dim) * 4 / 1e6;
    cr_assert((p = strstr(line, "experts + ")) &&
              sscanf(p, "experts + %lf MB of KV cache", &kv_mb) == 1 &&
              fabs(kv_mb - want_mb) < 1e-3 * want_mb, "not %g MB: %s", want_mb, line);
    cr_assert((p = strstr(line, "copies ")) && sscanf(p, "copies %lf ms", &copy_ms) == 1, "%s", line);
    cr_assert((p = strstr(line, "measured ")) &&
              sscanf(p, "measured %lf ms (bound / measured %lf)", &measured, &ratio) == 2, "%s", line);
    double longest = fmax(gpu_ms, fmax(cpu_ms, copy_ms));
    cr_assert(bound > 0 && fabs(bound - longest) <= 1e-3, "%s", line);
    cr_assert(measured > 0 && fabs(ratio - bound / measured) <= 0.01, "%s", line);
    free(cmd);
    free(out);
    free(err);
    cr_assert(asprintf(&cmd, "%s run -m %s --ids 1,2,3 -n 4 --greedy --ignore-eos --backend cuda "
                       "--stats --cpu-tokens 2", bin, dir) > 0);
    cr_assert_eq(test_run_capture(cmd, &out, &err), 0, "%s", err);
    cr_assert(strstr(err, "decode bound: not computed") && !strstr(err, "decode bound per token"),
              "%s", err);
    free(cmd);
    free(out);
    free(err);
    test_remove_tree(dir);
    free(dir);
}

/* ---- the GPU plan (no device needed) ---- */

/* the plan's activation bytes with a float32 cache */
static uint64_t f32_act_bytes(const model_config *c, int chunk, uint64_t slot)
{
    return gpu_plan_activation_bytes(c, chunk, slot, KV_F32);
}

Test(gpu, plan_parts_slots_and_refusals)
{
    char *dir = test_make_tmpdir("gpu_plan");
    test_synth_tiny(dir, "int4");
    model_weights mw;
    errbuf e;
    cr_assert_eq(model_weights_open(&mw, dir, &e), 0, "%s", e.msg);
    const model_config *c = &mw.cfg;
    tier_flags none = {0};
    tier_plan p;
    store st;
    cr_assert_eq(tier_plan_make(&p, &mw, &none, &st, &e), 0, "%s", e.msg);
    expert_view v;
    int l = 0;
    while (!mw.layers[l].is_moe)
        l++;
    cr_assert_eq(model_weights_expert(&mw, l, 0, &v, &e), 0, "%s", e.msg);
    uint64_t slot = gpu_expert_slot_bytes(&v.gate, &v.up, &v.down);
    cr_assert_geq(slot, linear_weight_bytes(&v.gate) + linear_weight_bytes(&v.up) +
                            linear_weight_bytes(&v.down));
    gpu_plan g;
    tier_flags f = {.vram_gb = 1000, .vram_gb_set = 1};
    cr_assert_eq(gpu_plan_make(&g, &p, c, &f, 64, 4, slot, 0, 0, &e), 0, "%s", e.msg);
    cr_assert_eq(g.slots, p.n_experts, "a large budget holds every expert, no more");
    cr_assert_eq(g.kv_bytes, (uint64_t)c->n_layers * 64 * (uint64_t)(c->kv_lora_rank + c->qk_rope_dim) * 4);
    cr_assert_eq(g.act_bytes, gpu_plan_activation_bytes(c, 4, slot, KV_F32));
    uint64_t fixed = g.dense_bytes + g.kv_bytes + g.act_bytes;
    f.vram_gb = (double)(fixed + 5 * slot + slot / 2) / 1e9;
    cr_assert_eq(gpu_plan_make(&g, &p, c, &f, 64, 4, slot, 0, 0, &e), 0, "%s", e.msg);
    cr_assert_eq(g.slots, 5, "slots %d for the room of 5.5", g.slots);
    f.vram_gb = (double)fixed * 0.99 / 1e9;
    cr_assert_neq(gpu_plan_make(&g, &p, c, &f, 64, 4, slot, 0, 0, &e), 0);
    cr_assert(strstr(e.msg, "--vram-gb") && strstr(e.msg, "cannot hold") &&
              strstr(e.msg, "KV cache") && strstr(e.msg, "(-c 64)"), "%s", e.msg);
    f.vram_gb = 1.5;
    cr_assert_neq(gpu_plan_make(&g, &p, c, &f, 64, 4, slot, 1000000000, 2000000000, &e), 0);
    cr_assert(strstr(e.msg, "more than the 1.00 GB free"), "%s", e.msg);
    cr_assert_neq(gpu_plan_make(&g, &p, c, &none, 64, 4, slot, 0, 0, &e), 0);
    cr_assert(strstr(e.msg, "no GPU to plan for"), "%s", e.msg);
    cr_assert_eq(gpu_plan_make(&g, &p, c, &none, 64, 4, slot, 10000000000ull, 20000000000ull, &e), 0);
    cr_assert_eq(g.budget, 9000000000ull, "without --vram-gb: 0.9 of the free memory");
    /* without --chunk: the largest power of two from 256 to 4096 whose
     * activations beyond those of no tokens fit 1/16 of the budget, at most
     * the context; a given --chunk is kept, also cut to the context */
    uint64_t no_tokens = f32_act_bytes(c, 0, slot);
    const struct {
        int fits;           /* the budget: 16 x the activations of this many tokens, */
        int short_by;       /* less this many bytes */
        int ctx, chunk, want;
    } chunks[] = {{1024, 0, 8192, 0, 1024}, {1024, 16, 8192, 0, 512}, {2048, 0, 8192, 0, 2048},
                  {2048, 16, 8192, 0, 1024}, {65536, 0, 8192, 0, 4096}, {1024, 0, 700, 0, 700},
                  {1024, 0, 8192, 100, 100}, {1024, 0, 64, 100, 64}};
    for (size_t i = 0; i < sizeof chunks / sizeof chunks[0]; i++) {
        uint64_t budget = 16 * (f32_act_bytes(c, chunks[i].fits, slot) - no_tokens) -
                          (uint64_t)chunks[i].short_by;
        f.vram_gb = (double)budget / 1e9;
        cr_assert_eq(gpu_plan_make(&g, &p, c, &f, chunks[i].ctx, chunks[i].chunk, slot, 0, 0, &e), 0,
                     "case %zu: %s", i, e.msg);
        cr_expect_eq(g.chunk, chunks[i].want, "case %zu: chunk %d, expected %d", i, g.chunk,
                     chunks[i].want);
        cr_expect_eq(g.act_bytes, f32_act_bytes(c, chunks[i].want, slot), "case %zu", i);
    }
    /* a step the 1/16 rule allows but that does not fit beside the weights and
     * the KV cache gives way to a smaller one: a context that leaves room for
     * the activations of 512 tokens and not of 1,024 */
    uint64_t budget = 16 * (f32_act_bytes(c, 1024, slot) - no_tokens);
    uint64_t per_position = (uint64_t)c->n_layers * (uint64_t)(c->kv_lora_rank + c->qk_rope_dim) * 4;
    uint64_t room = budget - p.dense_bytes - f32_act_bytes(c, 512, slot);
    int ctx = (int)(room / per_position);
    cr_assert(p.dense_bytes + (uint64_t)ctx * per_position + f32_act_bytes(c, 1024, slot) >
              budget, "the case needs a context that crowds out 1,024 tokens");
    f.vram_gb = (double)budget / 1e9;
    cr_assert_eq(gpu_plan_make(&g, &p, c, &f, ctx, 0, slot, 0, 0, &e), 0, "%s", e.msg);
    cr_expect_eq(g.chunk, 512, "-c %d: chunk %d, expected 512", ctx, g.chunk);
    /* past 256 tokens, logits take 256 rows (the engine computes them in slices) */
    uint64_t logits_row = (uint64_t)c->vocab_size * 4;
    cr_expect_eq(f32_act_bytes(c, 512, slot) - f32_act_bytes(c, 256, slot),
                 f32_act_bytes(c, 256, slot) - no_tokens - 256 * logits_row);
    model_weights_close(&mw);
    test_remove_tree(dir);
    free(dir);
}

Test(gpu, inspect_and_run_with_vram_gb)
{
    char *dir = test_make_tmpdir("gpu_cli"), *cmd, *out, *err;
    test_synth_tiny(dir, "bf16");
    const char *bin = test_moetier_bin();
    cr_assert(asprintf(&cmd, "%s inspect -m %s --vram-gb 2", bin, dir) > 0);
    cr_assert_eq(test_run_capture(cmd, &out, &err), 0, "%s", err);
    cr_assert(strstr(out, "GPU plan (2.00 GB") && strstr(out, "expert cache:") &&
              strstr(out, "activations (--chunk "), "%s", out);
    free(cmd);
    free(out);
    free(err);
    cr_assert(asprintf(&cmd, "%s inspect -m %s --vram-gb 0.01", bin, dir) > 0);
    cr_assert_neq(test_run_capture(cmd, &out, &err), 0, "an impossible budget was accepted");
    cr_assert(strstr(err, "cannot hold what stays on the GPU"), "%s", err);
    free(cmd);
    free(out);
    free(err);
    /* refused as a bad option is, before the plan and the load */
    cr_assert(asprintf(&cmd, "%s run -m %s --ids 1,2 -n 1 --vram-gb 2", bin, dir) > 0);
    cr_assert_eq(test_run_capture(cmd, &out, &err), 2, "--vram-gb on the CPU backend: %s", err);
    cr_assert(strstr(err, "moetier run: --vram-gb is for the GPU backend") &&
              !strstr(err, "placement plan"), "%s", err);
    free(cmd);
    free(out);
    free(err);
    test_remove_tree(dir);
    free(dir);
}
