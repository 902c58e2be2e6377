/* synth_presets: the architecture presets of `moetier synth` as config.json
 * objects.
 *
 * Each preset is Kimi-K2-Instruct's config.json with its sizes replaced; every
 * key of the real config is present (including the ones an engine ignores, such
 * as auto_map and aux_loss_alpha) in the real file's order, so a synthetic
 * checkpoint exercises the same parsing as a downloaded one. The
 * quantization_config blocks are copied from the real fp8 (Kimi-K2-Instruct)
 * and int4 (Kimi-K2-Thinking, compressed-tensors) configs. */
#include <cJSON.h>
#include <string.h>

#include "synth.h"

/* The presets' names and descriptions; dims_table below holds their sizes in
 * the same order. */
static const synth_preset preset_list[] = {
    {"k2-tiny", "Kimi K2 scaled down (hidden 256, 4 layers, 32 experts; the testdata's tiny "
     "model)", 4, 0},
    {"k2-slice", "real Kimi K2 dimensions (hidden 7168, 384 experts) with few layers "
     "(default 2)", 2, 0},
    {"k2", "the full 61-layer Kimi K2 (about 1 TB in fp8, 0.6 TB in int4)", 61, 1},
    {NULL, NULL, 0, 0},
};

typedef struct preset_dims {
    int vocab, hidden, inter, moe_inter, layers, experts, topk, shared, heads;
    int q_lora, kv_lora, nope, rope, v;
    int first_k_dense;
    int bos, eos;
} preset_dims;

static const preset_dims dims_table[] = {
    /* k2-tiny */
    {1024, 256, 512, 128, 4, 32, 8, 1, 4, 128, 64, 32, 16, 32, 1, 1000, 1001},
    /* k2-slice */
    {163840, 7168, 18432, 2048, 2, 384, 8, 1, 64, 1536, 512, 128, 64, 128, 1, 163584, 163585},
    /* k2 */
    {163840, 7168, 18432, 2048, 61, 384, 8, 1, 64, 1536, 512, 128, 64, 128, 1, 163584, 163585},
};

#define N_PRESETS ((int)(sizeof dims_table / sizeof dims_table[0]))

const synth_preset *synth_presets(void)
{
    return preset_list;
}

static cJSON *fp8_quant(void)
{
    cJSON *q = cJSON_CreateObject();
    cJSON_AddStringToObject(q, "activation_scheme", "dynamic");
    cJSON_AddStringToObject(q, "fmt", "e4m3");
    cJSON_AddStringToObject(q, "quant_method", "fp8");
    int bs[2] = {128, 128};
    cJSON_AddItemToObject(q, "weight_block_size", cJSON_CreateIntArray(bs, 2));
    return q;
}

static cJSON *int4_quant(void)
{
    cJSON *q = cJSON_CreateObject();
    cJSON *groups = cJSON_AddObjectToObject(q, "config_groups");
    cJSON *g0 = cJSON_AddObjectToObject(groups, "group_0");
    cJSON_AddNullToObject(g0, "input_activations");
    cJSON_AddNullToObject(g0, "output_activations");
    const char *targets[] = {"Linear"};
    cJSON_AddItemToObject(g0, "targets", cJSON_CreateStringArray(targets, 1));
    cJSON *w = cJSON_AddObjectToObject(g0, "weights");
    cJSON_AddNullToObject(w, "actorder");
    cJSON_AddNullToObject(w, "block_structure");
    cJSON_AddBoolToObject(w, "dynamic", 0);
    cJSON_AddNumberToObject(w, "group_size", 32);
    cJSON_AddNumberToObject(w, "num_bits", 4);
    cJSON_AddStringToObject(w, "observer", "minmax");
    cJSON_AddObjectToObject(w, "observer_kwargs");
    cJSON_AddStringToObject(w, "strategy", "group");
    cJSON_AddBoolToObject(w, "symmetric", 1);
    cJSON_AddStringToObject(w, "type", "int");
    cJSON_AddStringToObject(q, "format", "pack-quantized");
    const char *ignore[] = {"lm_head", "re:.*self_attn.*", "re:.*shared_experts.*",
                            "re:.*mlp\\.(gate|up|gate_up|down)_proj.*"};
    cJSON_AddItemToObject(q, "ignore", cJSON_CreateStringArray(ignore, 4));
    cJSON_AddNullToObject(q, "kv_cache_scheme");
    cJSON_AddStringToObject(q, "quant_method", "compressed-tensors");
    cJSON_AddStringToObject(q, "quantization_status", "compressed");
    return q;
}

cJSON *synth_preset_config(const char *preset, synth_format f, errbuf *e)
{
    const preset_dims *d = NULL;
    for (int i = 0; i < N_PRESETS; i++)
        if (strcmp(preset_list[i].name, preset) == 0)
            d = &dims_table[i];
    if (!d) {
        char names[256] = "";
        for (int i = 0; i < N_PRESETS; i++) {
            strncat(names, i ? ", " : "", sizeof names - strlen(names) - 1);
            strncat(names, preset_list[i].name, sizeof names - strlen(names) - 1);
        }
        err_set(e, "unknown preset '%s' (presets: %s)", preset, names);
        return NULL;
    }
    cJSON *c = cJSON_CreateObject();
    const char *arch[] = {"DeepseekV3ForCausalLM"};
    cJSON_AddItemToObject(c, "architectures", cJSON_CreateStringArray(arch, 1));
    cJSON_AddBoolToObject(c, "attention_bias", 0);
    cJSON_AddNumberToObject(c, "attention_dropout", 0.0);
    cJSON *am = cJSON_AddObjectToObject(c, "auto_map");
    cJSON_AddStringToObject(am, "AutoConfig", "configuration_deepseek.DeepseekV3Config");
    cJSON_AddStringToObject(am, "AutoModel", "modeling_deepseek.DeepseekV3Model");
    cJSON_AddStringToObject(am, "AutoModelForCausalLM", "modeling_deepseek.DeepseekV3ForCausalLM");
    cJSON_AddNumberToObject(c, "aux_loss_alpha", 0.001);
    cJSON_AddNumberToObject(c, "bos_token_id", d->bos);
    cJSON_AddNumberToObject(c, "eos_token_id", d->eos);
    cJSON_AddNumberToObject(c, "first_k_dense_replace", d->first_k_dense);
    cJSON_AddStringToObject(c, "hidden_act", "silu");
    cJSON_AddNumberToObject(c, "hidden_size", d->hidden);
    cJSON_AddNumberToObject(c, "initializer_range", 0.02);
    cJSON_AddNumberToObject(c, "intermediate_size", d->inter);
    cJSON_AddNumberToObject(c, "kv_lora_rank", d->kv_lora);
    cJSON_AddNumberToObject(c, "max_position_embeddings", 131072);
    cJSON_AddStringToObject(c, "model_type", "kimi_k2");
    cJSON_AddNumberToObject(c, "moe_intermediate_size", d->moe_inter);
    cJSON_AddNumberToObject(c, "moe_layer_freq", 1);
    cJSON_AddNumberToObject(c, "n_group", 1);
    cJSON_AddNumberToObject(c, "n_routed_experts", d->experts);
    cJSON_AddNumberToObject(c, "n_shared_experts", d->shared);
    cJSON_AddBoolToObject(c, "norm_topk_prob", 1);
    cJSON_AddNumberToObject(c, "num_attention_heads", d->heads);
    cJSON_AddNumberToObject(c, "num_experts_per_tok", d->topk);
    cJSON_AddNumberToObject(c, "num_hidden_layers", d->layers);
    cJSON_AddNumberToObject(c, "num_key_value_heads", d->heads);
    cJSON_AddNumberToObject(c, "num_nextn_predict_layers", 0);
    cJSON_AddNumberToObject(c, "pretraining_tp", 1);
    cJSON_AddNumberToObject(c, "q_lora_rank", d->q_lora);
    cJSON_AddNumberToObject(c, "qk_nope_head_dim", d->nope);
    cJSON_AddNumberToObject(c, "qk_rope_head_dim", d->rope);
    if (f == SYNTH_FP8)
        cJSON_AddItemToObject(c, "quantization_config", fp8_quant());
    else if (f == SYNTH_INT4)
        cJSON_AddItemToObject(c, "quantization_config", int4_quant());
    cJSON_AddNumberToObject(c, "rms_norm_eps", 1e-6);
    cJSON_AddNumberToObject(c, "rope_theta", 50000.0);
    cJSON_AddNumberToObject(c, "routed_scaling_factor", 2.827);
    cJSON *rs = cJSON_AddObjectToObject(c, "rope_scaling");
    cJSON_AddNumberToObject(rs, "beta_fast", 1.0);
    cJSON_AddNumberToObject(rs, "beta_slow", 1.0);
    cJSON_AddNumberToObject(rs, "factor", 32.0);
    cJSON_AddNumberToObject(rs, "mscale", 1.0);
    cJSON_AddNumberToObject(rs, "mscale_all_dim", 1.0);
    cJSON_AddNumberToObject(rs, "original_max_position_embeddings", 4096);
    cJSON_AddStringToObject(rs, "type", "yarn");
    cJSON_AddStringToObject(c, "scoring_func", "sigmoid");
    cJSON_AddBoolToObject(c, "seq_aux", 1);
    cJSON_AddBoolToObject(c, "tie_word_embeddings", 0);
    cJSON_AddNumberToObject(c, "topk_group", 1);
    cJSON_AddStringToObject(c, "topk_method", "noaux_tc");
    cJSON_AddStringToObject(c, "torch_dtype", "bfloat16");
    cJSON_AddStringToObject(c, "transformers_version", "4.48.3");
    cJSON_AddBoolToObject(c, "use_cache", 1);
    cJSON_AddNumberToObject(c, "v_head_dim", d->v);
    cJSON_AddNumberToObject(c, "vocab_size", d->vocab);
    return c;
}
