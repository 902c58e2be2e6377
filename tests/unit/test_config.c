/* config.json parsing: every family member's shape parses, and each missing or
 * contradictory field is an error that names the field. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include <cJSON.h>
#include <stdlib.h>

#include "core/base/json_alloc.h"
#include "core/model/config.h"

/* A DeepSeek-V3 config (real dimensions), with %s spliced in for variations. */
static const char *base_fmt =
    "{\"architectures\": [\"DeepseekV3ForCausalLM\"], \"model_type\": \"deepseek_v3\","
    "\"vocab_size\": 129280, \"hidden_size\": 7168, \"intermediate_size\": 18432,"
    "\"moe_intermediate_size\": 2048, \"num_hidden_layers\": 61, \"num_attention_heads\": 128,"
    "\"kv_lora_rank\": 512, \"qk_nope_head_dim\": 128, \"qk_rope_head_dim\": 64,"
    "\"v_head_dim\": 128, \"n_routed_experts\": 256, \"num_experts_per_tok\": 8,"
    "\"n_shared_experts\": 1, \"first_k_dense_replace\": 3, \"moe_layer_freq\": 1,"
    "\"norm_topk_prob\": true, \"routed_scaling_factor\": 2.5, \"scoring_func\": \"sigmoid\","
    "\"topk_method\": \"noaux_tc\", \"rms_norm_eps\": 1e-06, \"rope_theta\": 10000,"
    "\"max_position_embeddings\": 163840, \"bos_token_id\": 0, \"eos_token_id\": 1,"
    "\"hidden_act\": \"silu\", \"tie_word_embeddings\": false %s}";

/* The base config with the fields of `extra` (", \"k\": v, ...") set or replaced. */
static int parse_with(const char *extra, model_config *c, errbuf *e)
{
    char json[8192], obj[4096];
    snprintf(json, sizeof json, base_fmt, "");
    snprintf(obj, sizeof obj, "{%s}", extra[0] == ',' ? extra + 1 : extra);
    cJSON *base = cJSON_Parse(json), *add = cJSON_Parse(obj);
    cr_assert(base && add, "bad test JSON %s", obj);
    cJSON *it;
    cJSON_ArrayForEach(it, add)
    {
        cJSON_DeleteItemFromObjectCaseSensitive(base, it->string);
        cJSON_AddItemToObject(base, it->string, cJSON_Duplicate(it, 1));
    }
    char *text = cJSON_Print(base);
    int rc = config_parse(c, text, "config.json", e);
    free(text);
    cJSON_Delete(base);
    cJSON_Delete(add);
    return rc;
}

Test(config, deepseek_v3_groups_and_yarn)
{
    model_config c;
    errbuf e;
    cr_assert_eq(parse_with(", \"q_lora_rank\": 1536, \"n_group\": 8, \"topk_group\": 4,"
                            "\"rope_scaling\": {\"type\": \"yarn\", \"factor\": 40,"
                            "\"original_max_position_embeddings\": 4096, \"beta_fast\": 32,"
                            "\"beta_slow\": 1, \"mscale\": 1.0, \"mscale_all_dim\": 1.0},"
                            "\"quantization_config\": {\"activation_scheme\": \"dynamic\","
                            "\"fmt\": \"e4m3\", \"quant_method\": \"fp8\","
                            "\"weight_block_size\": [128, 128]}",
                            &c, &e),
                 0, "%s", e.msg);
    cr_expect_eq(c.n_group, 8);
    cr_expect_eq(c.topk_group, 4);
    cr_expect_eq(c.first_k_dense, 3);
    cr_expect_eq(c.rope.yarn, 1);
    cr_expect_eq(c.rope.factor, 40.0);      /* integer-typed JSON number */
    cr_expect_eq(c.rope.beta_fast, 32.0);
    cr_expect_eq(c.quant, QUANT_FP8_BLOCK);
    cr_expect_eq(c.fp8_block_rows, 128);
    cr_expect_eq(c.q_lora_rank, 1536);
    cr_expect(!config_is_moe_layer(&c, 2));
    cr_expect(config_is_moe_layer(&c, 3));
}

Test(config, q_lora_null_and_no_rope_scaling)
{
    model_config c;
    errbuf e;
    cr_assert_eq(parse_with(", \"q_lora_rank\": null, \"rope_scaling\": null", &c, &e), 0, "%s",
                 e.msg);
    cr_expect_eq(c.q_lora_rank, 0);
    cr_expect_eq(c.rope.yarn, 0);
}

Test(config, nested_text_config_and_eos_list)
{
    const char *json =
        "{\"architectures\": [\"KimiK25ForConditionalGeneration\"], \"text_config\": {"
        "\"architectures\": [\"DeepseekV3ForCausalLM\"], \"vocab_size\": 1024, \"hidden_size\": 256,"
        "\"intermediate_size\": 512, \"moe_intermediate_size\": 128, \"num_hidden_layers\": 2,"
        "\"num_attention_heads\": 4, \"q_lora_rank\": 128, \"kv_lora_rank\": 64,"
        "\"qk_nope_head_dim\": 32, \"qk_rope_head_dim\": 16, \"v_head_dim\": 32,"
        "\"n_routed_experts\": 8, \"num_experts_per_tok\": 2, \"first_k_dense_replace\": 1,"
        "\"rms_norm_eps\": 1e-5, \"scoring_func\": \"sigmoid\", \"topk_method\": \"noaux_tc\","
        "\"eos_token_id\": [7, 9]},"
        "\"quantization_config\": {\"quant_method\": \"compressed-tensors\", \"format\": "
        "\"pack-quantized\", \"config_groups\": {\"group_0\": {\"weights\": {\"num_bits\": 4,"
        "\"group_size\": 32, \"symmetric\": true, \"strategy\": \"group\", \"type\": \"int\"}}}}}";
    model_config c;
    errbuf e;
    cr_assert_eq(config_parse(&c, json, "config.json", &e), 0, "%s", e.msg);
    cr_expect_eq(c.hidden_size, 256);
    cr_expect_eq(c.n_eos, 2);
    cr_expect_eq(c.eos_token_ids[1], 9);
    cr_expect_eq(c.quant, QUANT_INT4_PACKED);
    cr_expect_eq(c.int4_group_size, 32);
    cr_expect_float_eq(c.rms_norm_eps, 1e-5, 1e-12);
}

/* Each bad config must fail with a message naming the field. */
static void expect_error(const char *extra, const char *field)
{
    model_config c;
    errbuf e;
    cr_assert_neq(parse_with(extra, &c, &e), 0, "config with '%s' was accepted", extra);
    cr_expect(strstr(e.msg, field) != NULL, "error '%s' does not name '%s'", e.msg, field);
    cr_expect(strstr(e.msg, "config.json") != NULL, "error '%s' does not name the file", e.msg);
}

Test(config, contradictions_name_the_field)
{
    expect_error(", \"n_group\": 3", "n_group");                      /* 256 % 3 != 0 */
    expect_error(", \"n_group\": 8, \"topk_group\": 9", "topk_group");
    expect_error(", \"num_experts_per_tok\": 300", "num_experts_per_tok");
    expect_error(", \"qk_rope_head_dim\": 63", "qk_rope_head_dim");
    expect_error(", \"first_k_dense_replace\": 70", "first_k_dense_replace");
    expect_error(", \"scoring_func\": \"relu\"", "scoring_func");
    expect_error(", \"topk_method\": \"magic\"", "topk_method");
    expect_error(", \"hidden_act\": \"gelu\"", "hidden_act");
    expect_error(", \"rope_scaling\": {\"type\": \"linear\", \"factor\": 2}", "rope_scaling");
    expect_error(", \"rope_scaling\": {\"type\": \"yarn\"}", "factor");
    expect_error(", \"quantization_config\": {\"quant_method\": \"gptq\"}", "quant_method");
    expect_error(", \"rms_norm_eps\": -1", "rms_norm_eps");
    expect_error(", \"num_experts_per_tok\": 8, \"n_group\": 8, \"topk_group\": 0", "topk_group");
    /* an end id that is not one (1.5 used to end at id 1), or a list cut short */
    expect_error(", \"eos_token_id\": 1.5", "eos_token_id");
    expect_error(", \"eos_token_id\": -5", "eos_token_id");
    expect_error(", \"eos_token_id\": 1e30", "eos_token_id");
    expect_error(", \"eos_token_id\": [1, \"2\"]", "eos_token_id");
    expect_error(", \"eos_token_id\": [1, 2, 3, 4, 5, 6, 7, 8, 9]", "at most 8");
    expect_error(", \"eos_token_id\": [1, 129280]", "holds 129280, outside the vocabulary of 129280");
}

/* Sizes the engine multiplies stay far inside int: each field below 1e9 can
 * still give a product that wraps (65536 x 65536 = 2^32 is 0 in int, and the
 * tensors of shape [0, ...] would then load). */
Test(config, sizes_that_would_overflow_are_refused)
{
    expect_error(", \"num_attention_heads\": 65536, \"qk_nope_head_dim\": 65534, "
                 "\"qk_rope_head_dim\": 2, \"v_head_dim\": 2", "num_attention_heads");
    expect_error(", \"num_hidden_layers\": 1000000000", "num_hidden_layers");
    expect_error(", \"n_routed_experts\": 1048576", "n_routed_experts");
    expect_error(", \"vocab_size\": 100000000", "vocab_size");
    /* past what is read at all: said so, not "must be an integer >= 1" */
    expect_error(", \"vocab_size\": 2147483647", "'vocab_size' is 2147483647; at most 1000000000 is read");
    expect_error(", \"moe_intermediate_size\": 0", "'moe_intermediate_size' is missing or 0");
    expect_error(", \"kv_lora_rank\": 999999999", "kv_lora_rank");
    expect_error(", \"n_shared_experts\": 100000", "n_shared_experts");
    const char *blocks[] = {"[128.7, 128]", "[1e10, 128]", "[128, 0]", "[128, -128]"};
    for (int i = 0; i < 4; i++) {
        char extra[200];
        snprintf(extra, sizeof extra, ", \"quantization_config\": {\"quant_method\": \"fp8\", "
                 "\"weight_block_size\": %s}", blocks[i]);
        expect_error(extra, "weight_block_size");
    }
    /* YaRN's 0.1 m ln(factor) + 1 at or below zero */
    expect_error(", \"rope_scaling\": {\"type\": \"yarn\", \"factor\": 40, "
                 "\"original_max_position_embeddings\": 4096, \"mscale_all_dim\": -3}",
                 "mscale_all_dim");
    model_config c;
    errbuf e;
    cr_expect_eq(parse_with(", \"rope_scaling\": {\"type\": \"yarn\", \"factor\": 40, "
                            "\"original_max_position_embeddings\": 4096, \"mscale\": 1, "
                            "\"mscale_all_dim\": 1}", &c, &e), 0, "%s", e.msg);
}

Test(config, architectures_and_text_config_must_have_their_shape)
{
    expect_error(", \"architectures\": \"LlamaForCausalLM\"", "architectures");
    expect_error(", \"architectures\": [5]", "architectures");
    expect_error(", \"text_config\": 5", "text_config");
    model_config c;
    errbuf e;
    cr_expect_eq(parse_with(", \"architectures\": []", &c, &e), 0, "%s", e.msg);
    cr_expect_eq(parse_with(", \"text_config\": null", &c, &e), 0, "%s", e.msg);
}

Test(config, missing_and_mistyped_fields)
{
    model_config c;
    errbuf e;
    const char *fields[] = {"hidden_size", "kv_lora_rank", "num_hidden_layers", "vocab_size",
                            "rms_norm_eps"};
    for (size_t i = 0; i < sizeof fields / sizeof *fields; i++) {
        char json[8192], *p;
        snprintf(json, sizeof json, base_fmt, "");
        char key[64];
        snprintf(key, sizeof key, "\"%s\"", fields[i]);
        p = strstr(json, key);
        cr_assert_not_null(p);
        memcpy(p, "\"ignored_x", 10);       /* rename the key: the field is now missing */
        cr_assert_neq(config_parse(&c, json, "config.json", &e), 0, "%s", fields[i]);
        cr_expect(strstr(e.msg, fields[i]) && strstr(e.msg, "missing"), "%s: '%s'", fields[i],
                  e.msg);
    }
    cr_assert_neq(parse_with(", \"n_shared_experts\": \"one\"", &c, &e), 0);
    cr_expect(strstr(e.msg, "n_shared_experts") != NULL, "%s", e.msg);
    cr_assert_neq(config_parse(&c, "{not json", "config.json", &e), 0);
    cr_expect(strstr(e.msg, "JSON") != NULL, "%s", e.msg);
    cr_assert_neq(config_parse(&c, "[1, 2]", "config.json", &e), 0);
    /* a repeated key would silently disagree with other readers of the file */
    char json[8192];
    snprintf(json, sizeof json, base_fmt, ", \"hidden_size\": 1024");
    cr_assert_neq(config_parse(&c, json, "config.json", &e), 0);
    cr_expect(strstr(e.msg, "hidden_size") && strstr(e.msg, "twice"), "%s", e.msg);
}

/* A config that cannot be parsed for want of memory says so, not that the
 * file is bad: each allocation of the parse fails in turn. */
Test(config, memory_running_out_is_not_bad_json)
{
    char json[8192];
    snprintf(json, sizeof json, base_fmt, "");
    json_alloc_install();
    int n, failed = 0;
    for (n = 1; n < 10000; n++) {
        model_config c;
        errbuf e;
        json_alloc_fail_at(n);
        int rc = config_parse(&c, json, "config.json", &e);
        json_alloc_fail_at(0);
        if (rc == 0)
            break;
        failed++;
        cr_expect(strstr(e.msg, "config.json: out of memory"), "allocation %d: %s", n, e.msg);
    }
    cr_expect_lt(n, 10000, "the config never parsed");
    cr_expect_gt(failed, 10, "only %d allocations failed", failed);
}
