/* Batch-invariant mode (--batch-invariant; cpu_options.batch_invariant): a
 * prompt's logits at every position have the same bits prefilled in one step,
 * in chunks of other sizes (each after a cached prefix), and one token at a
 * time as decode steps, on the tiny synthetic model of every format. Sixty
 * tokens over 32 experts with top-8 give several experts more tokens than the
 * row kernels take in one step, and the attention projections 60 rows: the
 * steps that reach the batched products and the attention's expanded form
 * without the mode. Every kernel path this CPU runs. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "core/app/cli_common.h"
#include "testutil.h"

#define N 60

static void open_invariant(cli_model *m, const char *dir, const char *kernels)
{
    model_flags f = {.dir = dir, .ctx = 128, .chunk = 64, .quiet = 1, .kernels = kernels,
                     .batch_invariant = 1};
    errbuf e;
    cr_assert_eq(cli_model_open(m, &f, &e), 0, "%s", e.msg);
}

/* [N][vocab]: the logits of every position, the prompt given in steps of
 * the sizes in `steps` (0-terminated; 1s after the first step are decode steps) */
static void logits_in_steps(engine *en, const int *ids, const int *steps, float *out)
{
    size_t V = (size_t)en->cfg->vocab_size;
    errbuf e;
    engine_reset(en);
    int done = 0;
    for (int k = 0; steps[k]; k++) {
        float *rows = out + (size_t)done * V;
        int rc = k > 0 && steps[k] == 1 ? engine_decode(en, ids[done], rows, &e)
                                         : engine_forward(en, ids + done, steps[k], rows, 1, &e);
        cr_assert_eq(rc, 0, "%s", e.msg);
        done += steps[k];
    }
    cr_assert_eq(done, N);
}

static void invariant_on(const char *dir, const char *format, kernel_path path)
{
    cli_model m;
    open_invariant(&m, dir, kernel_path_name(path));
    size_t V = (size_t)m.mw.cfg.vocab_size;
    int ids[N];
    for (int i = 0; i < N; i++)
        ids[i] = (i * 53 + 11) % (int)V;
    static const int whole[] = {N, 0}, chunks[] = {1, 20, 7, 32, 0};
    int singles[N + 1];
    for (int i = 0; i < N; i++)
        singles[i] = 1;
    singles[N] = 0;
    const int *ways[] = {chunks, singles};
    const char *names[] = {"in chunks of 1, 20, 7 and 32", "one token at a time"};
    float *want = malloc(N * V * sizeof *want), *got = malloc(N * V * sizeof *got);
    cr_assert(want && got);
    logits_in_steps(&m.en, ids, whole, want);
    for (int w = 0; w < 2; w++) {
        logits_in_steps(&m.en, ids, ways[w], got);
        for (int p = 0; p < N; p++)
            cr_expect(memcmp(want + (size_t)p * V, got + (size_t)p * V, V * sizeof *want) == 0,
                      "%s, %s kernels: position %d's logits %s differ from the whole prompt's",
                      format, kernel_path_name(path), p, names[w]);
    }
    free(want);
    free(got);
    cli_model_close(&m);
}

static void invariant(const char *format)
{
    char *dir = test_make_tmpdir("batch_invariant");
    test_synth_tiny(dir, format);
    for (int path = 0; path < KPATH_COUNT; path++)
        if (kernel_path_supported((kernel_path)path))
            invariant_on(dir, format, (kernel_path)path);
    test_remove_tree(dir);
    free(dir);
}

Test(batch_invariant, int4, .timeout = 120) { invariant("int4"); }
Test(batch_invariant, fp8, .timeout = 120) { invariant("fp8"); }
Test(batch_invariant, bf16, .timeout = 120) { invariant("bf16"); }

/* The CUDA backend's sums depend on a step's size: the mode refuses it
 * before anything loads. */
Test(batch_invariant, refuses_the_cuda_backend)
{
    model_flags f = {.dir = "unused", .backend = "cuda", .batch_invariant = 1};
    cr_expect_eq(model_flags_check(&f, "run"), 2);
}
