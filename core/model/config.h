/* config: the model hyperparameters, read from a checkpoint's config.json.
 *
 * Covers DeepseekV3ForCausalLM as used by DeepSeek-V3/R1 and Kimi K2 (Instruct,
 * Base, Thinking), including the nested "text_config" form of the multimodal Kimi
 * checkpoints. Nothing is assumed: a missing field or a contradiction between
 * fields is an error naming the field. */
#ifndef MOETIER_CONFIG_H
#define MOETIER_CONFIG_H

#include "core/base/errbuf.h"

typedef enum { SCORE_SIGMOID, SCORE_SOFTMAX } score_func;
typedef enum { TOPK_NOAUX_TC, TOPK_GREEDY, TOPK_GROUP_LIMITED_GREEDY } topk_method;
typedef enum { QUANT_NONE, QUANT_FP8_BLOCK, QUANT_INT4_PACKED } quant_method;

typedef struct rope_config {
    double theta;
    int yarn;                   /* 0: plain RoPE */
    double factor;
    int original_max_pos;
    double beta_fast, beta_slow;
    double mscale, mscale_all_dim;
} rope_config;

typedef struct model_config {
    char model_type[64];
    int vocab_size;
    int hidden_size;
    int intermediate_size;      /* dense layers' FFN */
    int moe_intermediate_size;
    int n_layers;
    int n_heads;
    int q_lora_rank;            /* 0: plain q_proj */
    int kv_lora_rank;
    int qk_nope_dim, qk_rope_dim, v_head_dim;
    int n_routed_experts;       /* 0: no MoE layers */
    int n_experts_per_tok;
    int n_shared_experts;
    int n_group, topk_group;
    int first_k_dense;
    int n_nextn_layers;         /* num_nextn_predict_layers: layers past the model's, not read */
    int moe_layer_freq;
    int norm_topk_prob;
    double routed_scaling_factor;
    score_func scoring;
    topk_method topk;
    double rms_norm_eps;
    rope_config rope;
    int max_position_embeddings;
    int tie_word_embeddings;
    int bos_token_id;           /* -1 when absent */
    int eos_token_ids[8];
    int n_eos;
    /* weights */
    quant_method quant;
    int fp8_block_rows, fp8_block_cols;
    int int4_group_size;
} model_config;

int config_load(model_config *c, const char *dir, errbuf *e);
/* Parses config.json text; path is used in messages. */
int config_parse(model_config *c, const char *json, const char *path, errbuf *e);
int config_is_moe_layer(const model_config *c, int layer);
const char *quant_method_name(quant_method q);

#endif
