/* What the engine hands a backend that plans batches (backend.h,
 * plans_batches): each MoE layer's shared expert goes with the layer's first
 * batch of routed experts, as one job flagged resident, after the routed jobs
 * and before the predicted ones (jobs of no tokens), and never through ffn();
 * the logits are those of the same backend without batches, bit for bit.
 * The backend here is the CPU backend with its table wrapped. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "core/app/cli_common.h"
#include "testutil.h"

#define T_PROMPT 9
#define T_STEPS 3
#define CHUNK 4             /* prompt tokens a step: the prompt takes 3 */

/* what the wrapped table saw */
static struct {
    const backend_ops *cpu;     /* the CPU backend's own table */
    int n_experts;
    int layer;                  /* of the last batch, -1 at a step's start */
    int tokens;                 /* of the step running */
    int batches, resident_jobs, ffn_calls, hints;
} seen;

static int job_layer(const ffn_job *j)
{
    return (j->cache_key - 1) / seen.n_experts;
}

/* a step of the forward pass starts with its embedding */
static void recording_embed(backend *b, const linear_weight *emb, const int *ids, int T, float *out)
{
    seen.layer = -1;
    seen.tokens = T;
    seen.cpu->embed(b, emb, ids, T, out);
}

static void recording_ffn(backend *b, const linear_weight *gate, const linear_weight *up,
                          const linear_weight *down, const float *x, int T, float *out)
{
    seen.ffn_calls++;
    seen.cpu->ffn(b, gate, up, down, x, T, out);
}

/* checks the batch's order, then computes its jobs with tokens on the CPU */
static void recording_ffn_batch(backend *b, const ffn_job *jobs, int n)
{
    cr_assert_gt(n, 0);
    cr_assert(jobs[0].T > 0 && !jobs[0].resident, "a batch starts with a routed expert");
    int layer = job_layer(&jobs[0]), first = layer != seen.layer, resident = 0, routed = 1;
    for (int i = 1; i < n; i++) {
        const ffn_job *j = &jobs[i];
        if (j->resident) {
            cr_assert(first, "layer %d: the shared expert came with a later batch", layer);
            cr_assert_eq(resident, 0, "layer %d: two shared jobs", layer);
            cr_assert_eq(j->T, seen.tokens, "layer %d: the shared job has %d tokens of %d", layer,
                         j->T, seen.tokens);
            cr_assert(j->cache_key == 0 && routed == i, "layer %d: the shared job is not right "
                      "after the routed ones", layer);
            resident = 1;
        } else if (j->T > 0) {
            cr_assert(routed == i, "layer %d: a routed expert after the shared or a predicted one",
                      layer);
            cr_assert_eq(job_layer(j), layer);
            routed++;
        } else {
            cr_assert(j->x == NULL && j->out == NULL && job_layer(j) > layer,
                      "layer %d: a predicted expert not of a later layer", layer);
            seen.hints++;
        }
    }
    seen.resident_jobs += resident;
    seen.batches++;
    seen.layer = layer;
    seen.cpu->ffn_batch(b, jobs, routed + resident);
}

/* logits of a prompt and steps (malloc'd, [rows][vocab]); with `batches`,
 * through the wrapped table, the source holding at most `held` experts at
 * once (0: as it says) */
static float *run(const char *dir, int batches, int held, size_t *n, int *moe_layers,
                  int *dense_layers)
{
    cli_model m;
    model_flags f = {.dir = dir, .ctx = 64, .chunk = CHUNK, .quiet = 1};
    errbuf e;
    cr_assert_eq(cli_model_open(&m, &f, &e), 0, "%s", e.msg);
    static backend_ops wrapped;
    const model_config *c = &m.mw.cfg;
    *moe_layers = *dense_layers = 0;
    for (int l = 0; l < c->n_layers; l++) {
        cr_assert(!config_is_moe_layer(c, l) || m.mw.layers[l].has_shared,
                  "the test wants a model whose MoE layers have a shared expert");
        *moe_layers += config_is_moe_layer(c, l);
        *dense_layers += !config_is_moe_layer(c, l);
    }
    if (batches) {
        seen.cpu = m.be.ops;
        seen.n_experts = c->n_routed_experts;
        wrapped = *m.be.ops;
        wrapped.embed = recording_embed;
        wrapped.ffn = recording_ffn;
        wrapped.ffn_batch = recording_ffn_batch;
        wrapped.plans_batches = 1;
        m.be.ops = &wrapped;
        /* the engine sized its buffers for the plain table: again for this one */
        engine_destroy(&m.en);
        cr_assert_eq(engine_create(&m.en, &m.mw, &m.be, &m.src, f.ctx, f.chunk, KV_F32, &e), 0, "%s",
                     e.msg);
        m.en.lookahead = 1;
        if (held)
            m.src.max_held = held;
    }
    int V = c->vocab_size, ids[T_PROMPT + T_STEPS];
    for (int i = 0; i < T_PROMPT + T_STEPS; i++)
        ids[i] = (i * 41 + 7) % V;
    *n = (size_t)(T_PROMPT + T_STEPS) * (size_t)V;
    float *logits = calloc(*n, sizeof *logits);
    cr_assert_not_null(logits);
    cr_assert_eq(engine_forward(&m.en, ids, T_PROMPT, logits, 1, &e), 0, "%s", e.msg);
    for (int k = 0; k < T_STEPS; k++)
        cr_assert_eq(engine_forward(&m.en, &ids[T_PROMPT + k], 1,
                                    logits + (size_t)(T_PROMPT + k) * V, 0, &e), 0, "%s", e.msg);
    if (batches)
        m.be.ops = seen.cpu;
    cli_model_close(&m);
    return logits;
}

Test(engine_batches, shared_expert_goes_with_the_first_batch_and_changes_no_bit, .timeout = 120)
{
    char *dir = test_make_tmpdir("engine_batches");
    test_synth_tiny(dir, "int4");
    size_t n;
    int moe, dense, forwards = (T_PROMPT + CHUNK - 1) / CHUNK + T_STEPS;
    float *want = run(dir, 0, 0, &n, &moe, &dense);
    /* all of a layer's experts in one batch with the predicted ones; then at
     * most 2 held at once: several batches per layer, no predictions */
    const int held[2] = {0, 2};
    for (int k = 0; k < 2; k++) {
        memset(&seen, 0, sizeof seen);
        float *got = run(dir, 1, held[k], &n, &moe, &dense);
        cr_expect(memcmp(want, got, n * sizeof *want) == 0, "held %d: the logits differ from the "
                  "run without batches", held[k]);
        cr_expect_eq(seen.resident_jobs, forwards * moe, "held %d: %d shared jobs in %d forwards "
                     "of %d MoE layers", held[k], seen.resident_jobs, forwards, moe);
        cr_expect_eq(seen.ffn_calls, forwards * dense, "held %d: ffn() ran %d times; the dense "
                     "layers alone take %d", held[k], seen.ffn_calls, forwards * dense);
        if (held[k])
            cr_expect_gt(seen.batches, forwards * moe, "held 2 still gave one batch per layer");
        else
            cr_expect_gt(seen.hints, 0, "no predicted experts were handed over");
        free(got);
    }
    free(want);
    test_remove_tree(dir);
    free(dir);
}
