/* config: config.json parsing and validation (see config.h). */
#include "config.h"

#include <cJSON.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/base/fileutil.h"
#include "core/base/json_alloc.h"

typedef struct cfg_reader {
    const cJSON *root;
    const char *path;
    errbuf *e;
} cfg_reader;

/* A field that is absent or JSON null. */
static int absent(const cJSON *j)
{
    return !j || cJSON_IsNull(j);
}

static int get_int(cfg_reader *r, const cJSON *obj, const char *key, int required, int def, int min,
                   int *out)
{
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (absent(j)) {
        if (required)
            return err_set(r->e, "%s: missing field '%s'", r->path, key);
        *out = def;
        return 0;
    }
    if (!cJSON_IsNumber(j) || floor(j->valuedouble) != j->valuedouble || j->valuedouble < min)
        return err_set(r->e, "%s: field '%s' must be an integer >= %d", r->path, key, min);
    if (j->valuedouble > 1e9)
        return err_set(r->e, "%s: field '%s' is %.17g; at most 1000000000 is read", r->path, key,
                       j->valuedouble);
    *out = (int)j->valuedouble;
    return 0;
}

static int get_num(cfg_reader *r, const cJSON *obj, const char *key, int required, double def,
                   double *out)
{
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (absent(j)) {
        if (required)
            return err_set(r->e, "%s: missing field '%s'", r->path, key);
        *out = def;
        return 0;
    }
    if (!cJSON_IsNumber(j) || !isfinite(j->valuedouble))
        return err_set(r->e, "%s: field '%s' must be a number", r->path, key);
    *out = j->valuedouble;
    return 0;
}

static int get_bool(cfg_reader *r, const cJSON *obj, const char *key, int def, int *out)
{
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (absent(j)) {
        *out = def;
        return 0;
    }
    if (!cJSON_IsBool(j))
        return err_set(r->e, "%s: field '%s' must be true or false", r->path, key);
    *out = cJSON_IsTrue(j);
    return 0;
}

static const char *get_str(const cJSON *obj, const char *key)
{
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(obj, key);
    return cJSON_IsString(j) ? j->valuestring : NULL;
}

static int by_key(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Readers disagree on repeated keys (first or last wins), so refuse them.
 * (Sorted, not compared pairwise: a file of many keys is read in a moment.) */
static int check_unique_keys(cfg_reader *r, const cJSON *obj)
{
    int n = cJSON_GetArraySize(obj), k = 0;
    const char **keys = malloc((size_t)(n ? n : 1) * sizeof *keys);
    if (!keys)
        return err_set(r->e, "%s: out of memory", r->path);
    for (const cJSON *a = obj->child; a; a = a->next)
        if (a->string)
            keys[k++] = a->string;
    qsort(keys, (size_t)k, sizeof *keys, by_key);
    int rc = 0;
    for (int i = 1; i < k && !rc; i++)
        if (!strcmp(keys[i - 1], keys[i]))
            rc = err_set(r->e, "%s: field '%s' appears twice", r->path, keys[i]);
    free(keys);
    return rc;
}

static int parse_rope(cfg_reader *r, const cJSON *o, model_config *c)
{
    rope_config *rc = &c->rope;
    if (get_num(r, o, "rope_theta", 0, 10000.0, &rc->theta))
        return -1;
    if (rc->theta <= 1.0)
        return err_set(r->e, "%s: field 'rope_theta' must be > 1", r->path);
    const cJSON *rs = cJSON_GetObjectItemCaseSensitive(o, "rope_scaling");
    if (absent(rs))
        return 0;
    if (!cJSON_IsObject(rs))
        return err_set(r->e, "%s: field 'rope_scaling' must be an object or null", r->path);
    const char *type = get_str(rs, "type");
    if (!type)
        type = get_str(rs, "rope_type");
    if (!type)
        return err_set(r->e, "%s: field 'rope_scaling.type' is missing", r->path);
    if (strcmp(type, "default") == 0)
        return 0;
    if (strcmp(type, "yarn") != 0)
        return err_set(r->e, "%s: field 'rope_scaling.type' is '%s'; supported: yarn, default",
                       r->path, type);
    rc->yarn = 1;
    if (get_num(r, rs, "factor", 1, 0, &rc->factor) ||
        get_int(r, rs, "original_max_position_embeddings", 1, 0, 1, &rc->original_max_pos) ||
        get_num(r, rs, "beta_fast", 0, 32.0, &rc->beta_fast) ||
        get_num(r, rs, "beta_slow", 0, 1.0, &rc->beta_slow) ||
        get_num(r, rs, "mscale", 0, 1.0, &rc->mscale) ||
        get_num(r, rs, "mscale_all_dim", 0, 0.0, &rc->mscale_all_dim))
        return err_prefix(r->e, "rope_scaling: ");
    if (rc->factor < 1.0)
        return err_set(r->e, "%s: field 'rope_scaling.factor' must be >= 1 (got %g)", r->path,
                       rc->factor);
    if (rc->beta_fast <= 0 || rc->beta_slow <= 0)
        return err_set(r->e, "%s: fields 'rope_scaling.beta_fast/beta_slow' must be > 0", r->path);
    /* YaRN scales by 0.1 m ln(factor) + 1, which must stay positive: the
     * cos/sin scale divides by it and the softmax scale squares it */
    const char *names[] = {"mscale", "mscale_all_dim"};
    double ms[] = {rc->mscale, rc->mscale_all_dim};
    for (int i = 0; i < 2; i++)
        if (rc->factor > 1.0 && !(0.1 * ms[i] * log(rc->factor) + 1.0 > 0))
            return err_set(r->e, "%s: field 'rope_scaling.%s' (%g) makes YaRN's scale "
                           "0.1 * %s * ln(factor) + 1 zero or negative", r->path, names[i], ms[i],
                           names[i]);
    return 0;
}

static int parse_quant(cfg_reader *r, const cJSON *o, model_config *c)
{
    const cJSON *q = cJSON_GetObjectItemCaseSensitive(o, "quantization_config");
    c->quant = QUANT_NONE;
    if (absent(q))
        return 0;
    if (!cJSON_IsObject(q))
        return err_set(r->e, "%s: field 'quantization_config' must be an object", r->path);
    const char *m = get_str(q, "quant_method");
    if (!m)
        return err_set(r->e, "%s: field 'quantization_config.quant_method' is missing", r->path);
    if (strcmp(m, "fp8") == 0) {
        const char *fmt = get_str(q, "fmt");
        if (fmt && strcmp(fmt, "e4m3") != 0)
            return err_set(r->e, "%s: field 'quantization_config.fmt' is '%s'; supported: e4m3",
                           r->path, fmt);
        const cJSON *bs = cJSON_GetObjectItemCaseSensitive(q, "weight_block_size");
        if (!cJSON_IsArray(bs) || cJSON_GetArraySize(bs) != 2 ||
            !cJSON_IsNumber(cJSON_GetArrayItem(bs, 0)) || !cJSON_IsNumber(cJSON_GetArrayItem(bs, 1)))
            return err_set(r->e,
                           "%s: field 'quantization_config.weight_block_size' must be [rows, cols]",
                           r->path);
        c->quant = QUANT_FP8_BLOCK;
        int *dims[] = {&c->fp8_block_rows, &c->fp8_block_cols};
        for (int i = 0; i < 2; i++) {
            double v = cJSON_GetArrayItem(bs, i)->valuedouble;
            if (floor(v) != v || v < 1 || v > 65536)
                return err_set(r->e, "%s: field 'quantization_config.weight_block_size' must hold "
                               "two integers in 1..65536 (got %g)", r->path, v);
            *dims[i] = (int)v;
        }
        return 0;
    }
    if (strcmp(m, "compressed-tensors") == 0) {
        const char *fmt = get_str(q, "format");
        if (!fmt || strcmp(fmt, "pack-quantized") != 0)
            return err_set(r->e, "%s: field 'quantization_config.format' is '%s'; supported: "
                           "pack-quantized", r->path, fmt ? fmt : "(missing)");
        const cJSON *groups = cJSON_GetObjectItemCaseSensitive(q, "config_groups");
        const cJSON *g = cJSON_IsObject(groups) ? groups->child : NULL;
        if (!g || g->next)
            return err_set(r->e, "%s: field 'quantization_config.config_groups' must hold exactly "
                           "one group", r->path);
        const cJSON *w = cJSON_GetObjectItemCaseSensitive(g, "weights");
        int bits, gs, sym = 0;
        cfg_reader wr = {w, r->path, r->e};
        if (!cJSON_IsObject(w))
            return err_set(r->e, "%s: field 'quantization_config.config_groups.%s.weights' is "
                           "missing", r->path, g->string);
        if (get_int(&wr, w, "num_bits", 1, 0, 1, &bits) || get_int(&wr, w, "group_size", 1, 0, 1, &gs) ||
            get_bool(&wr, w, "symmetric", 0, &sym))
            return err_prefix(r->e, "quantization_config.config_groups.%s.weights: ", g->string);
        const char *strategy = get_str(w, "strategy"), *type = get_str(w, "type");
        if (bits != 4 || !sym || (strategy && strcmp(strategy, "group") != 0) ||
            (type && strcmp(type, "int") != 0))
            return err_set(r->e, "%s: quantization_config weights: supported is symmetric int4 "
                           "with strategy 'group' (got num_bits %d, symmetric %s, strategy %s)",
                           r->path, bits, sym ? "true" : "false", strategy ? strategy : "?");
        if (gs % 8)
            return err_set(r->e, "%s: field 'group_size' (%d) must be a multiple of 8", r->path, gs);
        c->quant = QUANT_INT4_PACKED;
        c->int4_group_size = gs;
        return 0;
    }
    return err_set(r->e, "%s: field 'quantization_config.quant_method' is '%s'; supported: fp8, "
                   "compressed-tensors", r->path, m);
}

/* eos_token_id: an id, or a list of at most MAX_EOS ids (a list cut short
 * would leave an end token that does not end anything). */
static int parse_eos(cfg_reader *r, const cJSON *o, model_config *c)
{
    enum { MAX_EOS = sizeof c->eos_token_ids / sizeof c->eos_token_ids[0] };
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(o, "eos_token_id");
    c->n_eos = 0;
    if (absent(j))
        return 0;
    if (!cJSON_IsNumber(j) && !cJSON_IsArray(j))
        return err_set(r->e, "%s: field 'eos_token_id' must be an integer or a list", r->path);
    if (cJSON_IsArray(j) && cJSON_GetArraySize(j) > MAX_EOS)
        return err_set(r->e, "%s: field 'eos_token_id' lists %d ids; at most %d are taken", r->path,
                       cJSON_GetArraySize(j), MAX_EOS);
    const cJSON *it = cJSON_IsArray(j) ? j->child : j;
    for (; it; it = cJSON_IsArray(j) ? it->next : NULL) {
        if (!cJSON_IsNumber(it) || floor(it->valuedouble) != it->valuedouble ||
            it->valuedouble < 0 || it->valuedouble > 1e9)
            return err_set(r->e, "%s: field 'eos_token_id' must hold integers >= 0", r->path);
        c->eos_token_ids[c->n_eos++] = (int)it->valuedouble;
    }
    return 0;
}

/* A row of a tensor, and each width the engine sizes its buffers by, holds at
 * most 2^24 values (K2's widest is its vocabulary, 163,840): far from int's
 * range, whatever it is multiplied by. */
#define MAX_WIDTH (1 << 24)
#define MAX_LAYERS 4096
#define MAX_EXPERTS 65536

static int check_width(cfg_reader *r, const char *what, int64_t v)
{
    if (v > MAX_WIDTH)
        return err_set(r->e, "%s: %s is %lld; at most %d is supported", r->path, what,
                       (long long)v, MAX_WIDTH);
    return 0;
}

/* Relations between fields that each look fine alone. */
static int check_consistency(cfg_reader *r, model_config *c)
{
    const char *p = r->path;
    int64_t H = c->n_heads;
    for (int i = 0; i < c->n_eos; i++)
        if (c->eos_token_ids[i] >= c->vocab_size)
            return err_set(r->e, "%s: field 'eos_token_id' holds %d, outside the vocabulary of %d "
                           "('vocab_size'): the model could never end with it", p,
                           c->eos_token_ids[i], c->vocab_size);
    if (c->n_layers > MAX_LAYERS)
        return err_set(r->e, "%s: field 'num_hidden_layers' is %d; at most %d are supported", p,
                       c->n_layers, MAX_LAYERS);
    if (c->n_routed_experts > MAX_EXPERTS)
        return err_set(r->e, "%s: field 'n_routed_experts' is %d; at most %d are supported", p,
                       c->n_routed_experts, MAX_EXPERTS);
    if (check_width(r, "field 'vocab_size'", c->vocab_size) ||
        check_width(r, "field 'hidden_size'", c->hidden_size) ||
        check_width(r, "field 'intermediate_size'", c->intermediate_size) ||
        check_width(r, "field 'q_lora_rank'", c->q_lora_rank) ||
        check_width(r, "'kv_lora_rank' + 'qk_rope_head_dim'",
                    (int64_t)c->kv_lora_rank + c->qk_rope_dim) ||
        check_width(r, "'moe_intermediate_size' x max(1, 'n_shared_experts')",
                    (int64_t)c->moe_intermediate_size *
                        (c->n_shared_experts > 1 ? c->n_shared_experts : 1)) ||
        check_width(r, "'num_attention_heads' x ('qk_nope_head_dim' + 'qk_rope_head_dim')",
                    H * (c->qk_nope_dim + c->qk_rope_dim)) ||
        check_width(r, "'num_attention_heads' x ('qk_nope_head_dim' + 'v_head_dim')",
                    H * (c->qk_nope_dim + c->v_head_dim)))
        return -1;
    if (c->qk_rope_dim % 2)
        return err_set(r->e, "%s: field 'qk_rope_head_dim' (%d) must be even (RoPE rotates pairs)",
                       p, c->qk_rope_dim);
    if (c->first_k_dense > c->n_layers)
        return err_set(r->e, "%s: field 'first_k_dense_replace' (%d) exceeds 'num_hidden_layers' (%d)",
                       p, c->first_k_dense, c->n_layers);
    if (c->n_routed_experts > 0) {
        if (c->n_experts_per_tok < 1 || c->n_experts_per_tok > c->n_routed_experts)
            return err_set(r->e, "%s: field 'num_experts_per_tok' (%d) must be in 1..n_routed_experts (%d)",
                           p, c->n_experts_per_tok, c->n_routed_experts);
        if (c->n_group < 1 || c->n_routed_experts % c->n_group)
            return err_set(r->e, "%s: field 'n_group' (%d) must divide 'n_routed_experts' (%d)", p,
                           c->n_group, c->n_routed_experts);
        if (c->topk_group < 1 || c->topk_group > c->n_group)
            return err_set(r->e, "%s: field 'topk_group' (%d) must be in 1..n_group (%d)", p,
                           c->topk_group, c->n_group);
        if (c->n_experts_per_tok > c->topk_group * (c->n_routed_experts / c->n_group))
            return err_set(r->e, "%s: field 'num_experts_per_tok' (%d) exceeds the experts of the "
                           "'topk_group' kept groups (%d)", p, c->n_experts_per_tok,
                           c->topk_group * (c->n_routed_experts / c->n_group));
        if (c->moe_intermediate_size < 1)
            return err_set(r->e, "%s: field 'moe_intermediate_size' is missing or 0; the routed "
                           "experts need one of at least 1", p);
        if (c->topk == TOPK_NOAUX_TC && c->n_group > 1 && c->n_routed_experts / c->n_group < 2)
            return err_set(r->e, "%s: field 'n_group' leaves fewer than 2 experts per group, but "
                           "noaux_tc scores groups by their top-2", p);
    }
    if (c->first_k_dense > 0 || c->n_routed_experts == 0) {
        if (c->intermediate_size < 1)
            return err_set(r->e, "%s: field 'intermediate_size' is missing or 0; the dense layers "
                           "need one of at least 1", p);
    }
    return 0;
}

int config_parse(model_config *c, const char *json, const char *path, errbuf *e)
{
    memset(c, 0, sizeof *c);
    cJSON *root = json_parse_watched(json, strlen(json));
    if (!root)
        return err_set(e, "%s: %s", path, json_parse_failure("not valid JSON"));
    int rc = -1;
    cfg_reader r = {root, path, e};
    const cJSON *o = root;
    if (!cJSON_IsObject(root)) {
        err_set(e, "%s: not a JSON object", path);
        goto out;
    }
    const cJSON *tc = cJSON_GetObjectItemCaseSensitive(root, "text_config");
    if (cJSON_IsObject(tc)) {
        o = tc;        /* multimodal Kimi checkpoints nest the language model */
    } else if (!absent(tc)) {
        err_set(e, "%s: field 'text_config' must be an object", path);
        goto out;
    }
    if (check_unique_keys(&r, root) || (o != root && check_unique_keys(&r, o)))
        goto out;
    const char *arch = NULL;
    const cJSON *archs = cJSON_GetObjectItemCaseSensitive(o, "architectures");
    if (cJSON_IsArray(archs) && cJSON_IsString(cJSON_GetArrayItem(archs, 0))) {
        arch = cJSON_GetArrayItem(archs, 0)->valuestring;
    } else if (!absent(archs) && !(cJSON_IsArray(archs) && cJSON_GetArraySize(archs) == 0)) {
        err_set(e, "%s: field 'architectures' must be a list of class names, like "
                "[\"DeepseekV3ForCausalLM\"]", path);
        goto out;
    }
    const char *mt = get_str(o, "model_type");
    snprintf(c->model_type, sizeof c->model_type, "%s", mt ? mt : (arch ? arch : "?"));
    if (arch && strcmp(arch, "DeepseekV3ForCausalLM") != 0 && strcmp(arch, "DeepseekV2ForCausalLM") != 0) {
        err_set(e, "%s: field 'architectures' is '%s'; supported: DeepseekV3ForCausalLM", path, arch);
        goto out;
    }
    const char *act = get_str(o, "hidden_act");
    if (act && strcmp(act, "silu") != 0) {
        err_set(e, "%s: field 'hidden_act' is '%s'; supported: silu", path, act);
        goto out;
    }
    if (get_int(&r, o, "vocab_size", 1, 0, 1, &c->vocab_size) ||
        get_int(&r, o, "hidden_size", 1, 0, 1, &c->hidden_size) ||
        get_int(&r, o, "intermediate_size", 0, 0, 0, &c->intermediate_size) ||
        get_int(&r, o, "moe_intermediate_size", 0, 0, 0, &c->moe_intermediate_size) ||
        get_int(&r, o, "num_hidden_layers", 1, 0, 1, &c->n_layers) ||
        get_int(&r, o, "num_attention_heads", 1, 0, 1, &c->n_heads) ||
        get_int(&r, o, "q_lora_rank", 0, 0, 1, &c->q_lora_rank) ||
        get_int(&r, o, "kv_lora_rank", 1, 0, 1, &c->kv_lora_rank) ||
        get_int(&r, o, "qk_nope_head_dim", 1, 0, 1, &c->qk_nope_dim) ||
        get_int(&r, o, "qk_rope_head_dim", 1, 0, 2, &c->qk_rope_dim) ||
        get_int(&r, o, "v_head_dim", 1, 0, 1, &c->v_head_dim) ||
        get_int(&r, o, "n_routed_experts", 0, 0, 0, &c->n_routed_experts) ||
        get_int(&r, o, "num_experts_per_tok", c->n_routed_experts > 0, 0, 1, &c->n_experts_per_tok) ||
        get_int(&r, o, "n_shared_experts", 0, 0, 0, &c->n_shared_experts) ||
        get_int(&r, o, "n_group", 0, 1, 1, &c->n_group) ||
        get_int(&r, o, "topk_group", 0, 1, 1, &c->topk_group) ||
        get_int(&r, o, "first_k_dense_replace", 0, 0, 0, &c->first_k_dense) ||
        get_int(&r, o, "num_nextn_predict_layers", 0, 0, 0, &c->n_nextn_layers) ||
        get_int(&r, o, "moe_layer_freq", 0, 1, 1, &c->moe_layer_freq) ||
        get_bool(&r, o, "norm_topk_prob", 0, &c->norm_topk_prob) ||
        get_num(&r, o, "routed_scaling_factor", 0, 1.0, &c->routed_scaling_factor) ||
        get_num(&r, o, "rms_norm_eps", 1, 0, &c->rms_norm_eps) ||
        get_int(&r, o, "max_position_embeddings", 0, 4096, 1, &c->max_position_embeddings) ||
        get_bool(&r, o, "tie_word_embeddings", 0, &c->tie_word_embeddings) ||
        get_int(&r, o, "bos_token_id", 0, -1, 0, &c->bos_token_id) || parse_eos(&r, o, c) ||
        parse_rope(&r, o, c))
        goto out;
    /* quantization_config sits at the top level even when the model is nested */
    if (parse_quant(&r, cJSON_GetObjectItemCaseSensitive(o, "quantization_config") ? o : root, c))
        goto out;
    if (!(c->rms_norm_eps > 0)) {
        err_set(e, "%s: field 'rms_norm_eps' must be > 0", path);
        goto out;
    }
    const char *sf = get_str(o, "scoring_func");
    if (!sf || strcmp(sf, "softmax") == 0)
        c->scoring = SCORE_SOFTMAX;
    else if (strcmp(sf, "sigmoid") == 0)
        c->scoring = SCORE_SIGMOID;
    else {
        err_set(e, "%s: field 'scoring_func' is '%s'; supported: sigmoid, softmax", path, sf);
        goto out;
    }
    const char *tm = get_str(o, "topk_method");
    if (!tm || strcmp(tm, "greedy") == 0)
        c->topk = TOPK_GREEDY;
    else if (strcmp(tm, "noaux_tc") == 0)
        c->topk = TOPK_NOAUX_TC;
    else if (strcmp(tm, "group_limited_greedy") == 0)
        c->topk = TOPK_GROUP_LIMITED_GREEDY;
    else {
        err_set(e, "%s: field 'topk_method' is '%s'; supported: noaux_tc, greedy, "
                "group_limited_greedy", path, tm);
        goto out;
    }
    if (c->n_routed_experts > 0 && c->n_experts_per_tok == 0) {
        err_set(e, "%s: missing field 'num_experts_per_tok'", path);
        goto out;
    }
    rc = check_consistency(&r, c);
out:
    cJSON_Delete(root);
    return rc;
}

int config_load(model_config *c, const char *dir, errbuf *e)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    char *text;
    if (file_read_regular(path, &text, NULL, e) != 0)
        return -1;
    int rc = config_parse(c, text, path, e);
    free(text);
    return rc;
}

int config_is_moe_layer(const model_config *c, int layer)
{
    return c->n_routed_experts > 0 && layer >= c->first_k_dense && layer % c->moe_layer_freq == 0;
}

const char *quant_method_name(quant_method q)
{
    switch (q) {
    case QUANT_FP8_BLOCK: return "fp8-block";
    case QUANT_INT4_PACKED: return "int4-packed";
    default: return "none";
    }
}
