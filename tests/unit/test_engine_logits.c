/* A prefill that wants every position's logits gets them in slices of
 * ENGINE_LOGIT_ROWS rows (the engine's logits buffer is no larger): a step of
 * 600 tokens (three slices, the last partial) gives each row the logits of
 * steps of 8 tokens (one slice each), to within the strict golden tolerance
 * (the CPU kernels may sum 600 and 8 tokens in different orders), and its
 * last row is what a prefill asking only for the last row gets. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "core/app/cli_common.h"
#include "testutil.h"

#define T_PROMPT 600

/* the prompt's logits, every row ([T_PROMPT][vocab]) or the last */
static float *prefill(const char *dir, int chunk, int all, int *vocab)
{
    cli_model m;
    model_flags f = {.dir = dir, .ctx = 1024, .chunk = chunk, .quiet = 1};
    errbuf e;
    cr_assert_eq(cli_model_open(&m, &f, &e), 0, "%s", e.msg);
    int V = m.mw.cfg.vocab_size, ids[T_PROMPT];
    for (int i = 0; i < T_PROMPT; i++)
        ids[i] = (i * 29 + 3) % V;
    float *logits = calloc((size_t)(all ? T_PROMPT : 1) * (size_t)V, sizeof *logits);
    cr_assert_not_null(logits);
    cr_assert_eq(engine_forward(&m.en, ids, T_PROMPT, logits, all, &e), 0, "%s", e.msg);
    cli_model_close(&m);
    *vocab = V;
    return logits;
}

Test(engine_logits, every_row_of_a_long_step_in_slices, .timeout = 120)
{
    cr_assert_gt(T_PROMPT, 2 * ENGINE_LOGIT_ROWS, "the step should take more than two slices");
    char *dir = test_make_tmpdir("engine_logits");
    test_synth_tiny(dir, "int4");
    int V;
    float *sliced = prefill(dir, T_PROMPT, 1, &V), *small = prefill(dir, 8, 1, &V);
    float *last = prefill(dir, T_PROMPT, 0, &V);
    logit_cmp r = test_compare_logits(small, sliced, T_PROMPT, V);
    cr_expect(r.max_over_std <= 1e-3 && r.rms_over_std <= 1e-4 && r.top1_agree == T_PROMPT,
              "600-token step against 8-token steps: max|diff|/std %.3g, rms/std %.3g, top-1 %d/%d",
              r.max_over_std, r.rms_over_std, r.top1_agree, r.rows);
    r = test_compare_logits(last, sliced + (size_t)(T_PROMPT - 1) * (size_t)V, 1, V);
    cr_expect(r.max_over_std <= 1e-3 && r.top1_agree == 1, "the last row: max|diff|/std %.3g",
              r.max_over_std);
    free(sliced);
    free(small);
    free(last);
    test_remove_tree(dir);
    free(dir);
}
