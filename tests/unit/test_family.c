/* Other members of the family, with no golden files: synthesised checkpoints
 * with other shapes (plain q_proj, several dense layers, group-limited routing,
 * dims that are not multiples of 128, softmax scoring, no YaRN, several shared
 * experts) must give the logits of the independent float64 reference model, in
 * chunked prefill and in step-by-step decode. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/app/cli_common.h"
#include "core/model/synth.h"
#include "reference_model.h"
#include "testutil.h"

#define T_FAM 10

static void check_family(const char *format, const char *const *sets, int n_sets, uint64_t seed)
{
    char *dir = test_make_tmpdir("family");
    synth_options o = synth_options_default();
    errbuf e;
    cr_assert_eq(synth_format_parse(format, &o.format, &e), 0);
    o.out_dir = dir;
    o.force = 1;
    o.seed = seed;
    o.sets = sets;
    o.n_sets = n_sets;
    o.tokenizer = 0;
    cr_assert_eq(synth_run(&o, &e), 0, "synth: %s", e.msg);
    cli_model m;
    model_flags f = {.dir = dir, .ctx = 64, .chunk = 3, .quiet = 1};
    cr_assert_eq(cli_model_open(&m, &f, &e), 0, "open: %s", e.msg);
    const model_config *c = &m.mw.cfg;
    int V = c->vocab_size, ids[T_FAM];
    for (int t = 0; t < T_FAM; t++)
        ids[t] = (int)((t * 7919u + 13) % (unsigned)V);
    double *ref = malloc((size_t)T_FAM * V * sizeof *ref);
    reference_forward(&m.mw, ids, T_FAM, ref);
    /* engine: chunked prefill of all but the last 3 tokens, then decode steps */
    float *mine = malloc((size_t)T_FAM * V * sizeof *mine);
    int pre = T_FAM - 3;
    cr_assert_eq(engine_forward(&m.en, ids, pre, mine, 1, &e), 0, "%s", e.msg);
    for (int t = pre; t < T_FAM; t++)
        cr_assert_eq(engine_forward(&m.en, ids + t, 1, mine + (size_t)t * V, 0, &e), 0, "%s", e.msg);
    float *reff = malloc((size_t)T_FAM * V * sizeof *reff);
    for (size_t i = 0; i < (size_t)T_FAM * V; i++)
        reff[i] = (float)ref[i];
    logit_cmp r = test_compare_logits(reff, mine, T_FAM, V);
    cr_log_info("%s family: max|diff|/std %.3g rms/std %.3g", format, r.max_over_std, r.rms_over_std);
    cr_expect_leq(r.max_over_std, 1e-3, "max|diff|/std %.3g", r.max_over_std);
    cr_expect_leq(r.rms_over_std, 1e-4, "rms/std %.3g", r.rms_over_std);
    cr_expect_eq(r.top1_agree, T_FAM);
    free(reff);
    free(mine);
    free(ref);
    cli_model_close(&m);
    test_remove_tree(dir);
    free(dir);
}

Test(family, plain_q_groups_dense_layers_odd_dims_fp8)
{
    const char *sets[] = {"q_lora_rank=null", "n_group=4", "topk_group=2",
                          "first_k_dense_replace=2", "hidden_size=200", "intermediate_size=300",
                          "moe_intermediate_size=96", "num_hidden_layers=4"};
    check_family("fp8", sets, sizeof sets / sizeof *sets, 11);
}

Test(family, softmax_greedy_no_yarn_int4)
{
    const char *sets[] = {"scoring_func=\"softmax\"", "topk_method=\"greedy\"",
                          "rope_scaling=null", "norm_topk_prob=false", "routed_scaling_factor=1.0",
                          "n_routed_experts=16", "num_experts_per_tok=3", "num_attention_heads=3",
                          "qk_rope_head_dim=8", "v_head_dim=24"};
    check_family("int4", sets, sizeof sets / sizeof *sets, 12);
}

Test(family, groups_shared_experts_yarn_variant_bf16)
{
    const char *sets[] = {"n_shared_experts=2", "n_routed_experts=24", "num_experts_per_tok=4",
                          "n_group=8", "topk_group=3", "rope_scaling.factor=40",
                          "rope_scaling.beta_fast=32", "rope_scaling.mscale=0.707",
                          "rope_scaling.mscale_all_dim=0.707", "rms_norm_eps=1e-5",
                          "kv_lora_rank=48", "q_lora_rank=96"};
    check_family("bf16", sets, sizeof sets / sizeof *sets, 13);
}
