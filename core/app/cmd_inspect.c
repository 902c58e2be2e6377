/* cmd_inspect: `moetier inspect -m DIR`: what a checkpoint is and what it costs.
 *
 * Prints the architecture from config.json, the shards and tensor counts, and
 * the bytes per weight format split by tier: the dense/attention weights that
 * stay resident, and the routed experts that the expert tiers hold. */
#include <stdio.h>
#include <string.h>

#include "cli_common.h"
#include "commands.h"
#include "core/text/tokenizer.h"
#include "kernels/gpu_probe.h"
#include "tiers/store_source.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: moetier inspect -m DIR [--store DIR] [--dram-gb X] [--vram-gb G]\n"
               "                      [--device N] [-c CTX] [--chunk N] [--numa P]\n"
               "  Prints the architecture, tensor counts and bytes per format and tier, the\n"
               "  GPUs by number, and with a GPU (or --vram-gb) the GPU side of the placement\n"
               "  on device N (default 0), for a context of CTX and prefill steps of N tokens.\n");
}

static void print_bytes_row(const char *what, const uint64_t *by_fmt)
{
    uint64_t total = 0;
    printf("  %-28s", what);
    for (int f = 0; f < WF_COUNT; f++) {
        printf(" %12.3f", (double)by_fmt[f] / 1e9);
        total += by_fmt[f];
    }
    printf(" %12.3f\n", (double)total / 1e9);
}

int cmd_inspect(int argc, char **argv)
{
    model_flags mf = {0};
    for (int i = 1; i < argc; i++) {
        int r = model_flags_parse(&mf, argc, argv, &i);
        if (r < 0)
            return 2;
        if (r)
            continue;
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage(stdout);
            return 0;
        }
        fprintf(stderr, "moetier inspect: unknown option '%s'\n", argv[i]);
        usage(stderr);
        return 2;
    }
    if (!mf.dir) {
        fprintf(stderr, "moetier inspect: -m DIR is required\n");
        return 2;
    }
    /* the model flags that only a run uses would be silently ignored here */
    const char *idle = mf.trace ? "--trace" : mf.backend ? "--backend" : mf.threads ? "-t"
                     : mf.kernels ? "--kernels" : mf.cpu_tokens_set ? "--cpu-tokens"
                     : mf.batch_invariant ? "--batch-invariant" : mf.profile ? "--profile"
                     : mf.tiers.stats ? "--stats" : mf.tiers.lookahead_set ? "--lookahead"
                     : mf.tiers.policy ? "--policy" : mf.tiers.io != IO_AUTO ? "--io" : NULL;
    if (idle) {
        fprintf(stderr, "moetier inspect: %s applies to the commands that run the model, not to "
                "inspect\n", idle);
        return 2;
    }
    errbuf e;
    model_weights mw;
    if (model_weights_open(&mw, mf.dir, &e))
        return cli_fail(&e);
    const model_config *c = &mw.cfg;
    int n_moe = 0;
    for (int l = 0; l < c->n_layers; l++)
        n_moe += mw.layers[l].is_moe;
    printf("model        %s (%s)\n", mf.dir, c->model_type);
    printf("layers       %d (%d dense, %d MoE)\n", c->n_layers, c->n_layers - n_moe, n_moe);
    printf("hidden       %d, vocab %d, heads %d\n", c->hidden_size, c->vocab_size, c->n_heads);
    printf("attention    MLA: q_lora_rank %d%s, kv_lora_rank %d, head dims nope %d rope %d v %d\n",
           c->q_lora_rank, c->q_lora_rank ? "" : " (plain q_proj)", c->kv_lora_rank,
           c->qk_nope_dim, c->qk_rope_dim, c->v_head_dim);
    printf("rope         theta %g, %s", c->rope.theta, c->rope.yarn ? "yarn" : "plain");
    if (c->rope.yarn)
        printf(" factor %g, original context %d, beta %g/%g, mscale %g/%g", c->rope.factor,
               c->rope.original_max_pos, c->rope.beta_fast, c->rope.beta_slow, c->rope.mscale,
               c->rope.mscale_all_dim);
    printf(", max positions %d\n", c->max_position_embeddings);
    printf("dense FFN    intermediate %d\n", c->intermediate_size);
    printf("MoE          %d routed experts (top %d), %d shared, intermediate %d\n",
           c->n_routed_experts, c->n_experts_per_tok, c->n_shared_experts,
           c->moe_intermediate_size);
    printf("routing      %s scores, %s, groups %d (keep %d), norm_topk_prob %s, scaling %g\n",
           c->scoring == SCORE_SIGMOID ? "sigmoid" : "softmax",
           c->topk == TOPK_NOAUX_TC ? "noaux_tc" : c->topk == TOPK_GREEDY ? "greedy" :
                                                                            "group_limited_greedy",
           c->n_group, c->topk_group, c->norm_topk_prob ? "true" : "false",
           c->routed_scaling_factor);
    printf("quantization %s", quant_method_name(c->quant));
    if (c->quant == QUANT_FP8_BLOCK)
        printf(" (E4M3, %dx%d blocks)", c->fp8_block_rows, c->fp8_block_cols);
    if (c->quant == QUANT_INT4_PACKED)
        printf(" (int4 symmetric, group %d)", c->int4_group_size);
    printf("\nshards       %d files, %d tensors\n", mw.ckpt.n_files, mw.ckpt.n_tensors);
    /* which tokenizer the model's text goes through, and what it gives a prompt */
    tokenizer tok;
    errbuf ke;
    if (tokenizer_load(&tok, mf.dir, &ke) == 0) {
        int named = 0, reserved = 0;
        for (int id = 0; id < tok.v.n_vocab; id++) {
            int fl = vocab_token_flags(&tok.v, id);
            named += (fl & VOCAB_F_NAMED) != 0;
            reserved += (fl & VOCAB_F_SPECIAL) && !(fl & VOCAB_F_NAMED);
        }
        printf("tokenizer    %s, %d tokens: %d by BPE, %d named special, %d reserved",
               tok.kind == TOKENIZER_TIKTOKEN ? "tiktoken.model" : "tokenizer.json (merges by pair)",
               tok.v.n_vocab, tok.v.n_vocab - named - reserved, named, reserved);
        if (tok.bos_prefix >= 0)
            printf("; a raw prompt starts with %s", vocab_decode(&tok.v, tok.bos_prefix, NULL));
        if (vocab_find_special(&tok.v, "<｜fim▁begin｜>") >= 0 ||
            vocab_find_special(&tok.v, "<|fim_prefix|>") >= 0)
            printf("; fill-in-the-middle tokens (/infill)");
        printf("\n");
        tokenizer_free(&tok);
    } else {
        printf("tokenizer    none: %s\n", ke.msg);
    }
    /* before a server is started on it: whether its chats can be rendered */
    chat_template tpl;
    errbuf te;
    if (cli_chat_template(mf.dir, NULL, &tpl, &te) == 0) {
        printf("chat format  %s\n", tpl.label);
        chat_template_close(&tpl);
    } else
        printf("chat format  none: %s\n", te.msg);
    printf("\nlinear weights per format (count):");
    for (int f = 0; f < WF_COUNT; f++)
        printf(" %s %llu", weight_format_name((weight_format)f),
               (unsigned long long)mw.n_linear_by_format[f]);
    printf("\n\nGB by tier and format:\n  %-28s", "tier");
    for (int f = 0; f < WF_COUNT; f++)
        printf(" %12s", weight_format_name((weight_format)f));
    printf(" %12s\n", "total");
    print_bytes_row("resident (dense, attention)", mw.bytes_by_format);
    print_bytes_row("routed experts", mw.expert_bytes_by_format);
    uint64_t per_expert = 0;
    if (c->n_routed_experts && n_moe) {
        for (int f = 0; f < WF_COUNT; f++)
            per_expert += mw.expert_bytes_by_format[f];
        per_expert /= (uint64_t)c->n_routed_experts * (uint64_t)n_moe;
        printf("\none routed expert: %.2f MB; a token touches %d x %d = %d experts (%.2f GB)\n",
               (double)per_expert / 1e6, c->n_experts_per_tok, n_moe, c->n_experts_per_tok * n_moe,
               (double)per_expert * c->n_experts_per_tok * n_moe / 1e9);
    }
    printf("KV cache: %d %s values per token per layer (%.1f KB per token)\n",
           c->kv_lora_rank + c->qk_rope_dim, kv_type_name(mf.cache_type),
           (double)kv_cache_bytes(c, 1, mf.cache_type) / 1e3);
    char cpu[128];
    kernel_path_describe(kernel_path_default(), cpu, sizeof cpu);
    printf("CPU: %s\n", cpu);
    char gpu[1024];
    int n_gpu = gpu_probe(gpu, sizeof gpu);
    printf("GPU: %s%s\n", gpu, n_gpu ? " (computes with --backend cuda or auto)" : "");
    printf("\n");
    tier_plan plan;
    store st;
    int rc = 0;
    cli_kv_flags(&mf, c, &mf.tiers);
    if (tier_plan_make(&plan, &mw, &mf.tiers, &st, &e)) {
        rc = cli_fail(&e);
    } else {
        fflush(stdout);
        tier_plan_print(&plan, stdout);
        int chunk = cli_cpu_chunk(c, &plan, &mf);
        printf("CPU prefill steps of %d tokens (activations %.2f GB; --chunk sets them)\n", chunk,
               2 * engine_activation_bytes(c, chunk) / 1e9);
        if (plan.use_store) {
            fflush(stdout);
            store_source_warn(&st, &mw, stderr);
            store_close(&st);
        }
        gpu_plan gp;
        if (n_gpu > 0 || mf.tiers.vram_gb_set) {
            if (cli_gpu_plan(&mw, &plan, &mf, mf.device, &gp, &e)) {
                rc = cli_fail(&e);
            } else {
                if (n_gpu > 1)
                    printf("on device %d (--device):\n", mf.device);
                gpu_plan_print(&gp, stdout);
            }
        }
    }
    model_weights_close(&mw);
    return rc;
}
