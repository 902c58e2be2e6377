/* synth: config construction, tensor plan, sharding and streamed generation of
 * a random-weight checkpoint (see synth.h). */
#define _POSIX_C_SOURCE 200809L
#include "synth.h"

#include <cJSON.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "core/base/fileutil.h"
#include "core/base/json_hf.h"
#include "core/base/progress.h"
#include "core/text/synth_tokenizer.h"
#include "dtype.h"
#include "safetensors_writer.h"

#define SYNTH_DEFAULT_SHARD_BYTES 2000000000ull
#define SYNTH_CHUNK_ELEMS ((uint64_t)1 << 20)

synth_options synth_options_default(void)
{
    synth_options o;
    memset(&o, 0, sizeof o);
    o.preset = "k2-tiny";
    o.format = SYNTH_BF16;
    o.seed = 1;
    o.tokenizer = 1;
    return o;
}

int synth_format_parse(const char *name, synth_format *out, errbuf *e)
{
    if (strcmp(name, "bf16") == 0)
        *out = SYNTH_BF16;
    else if (strcmp(name, "fp8") == 0)
        *out = SYNTH_FP8;
    else if (strcmp(name, "int4") == 0)
        *out = SYNTH_INT4;
    else
        return err_set(e, "unknown format '%s' (formats: bf16, fp8, int4)", name);
    return 0;
}

const char *synth_format_name(synth_format f)
{
    switch (f) {
    case SYNTH_FP8: return "fp8";
    case SYNTH_INT4: return "int4";
    default: return "bf16";
    }
}

/* ---- config ------------------------------------------------------------- */

static int json_same_type(const cJSON *a, const cJSON *b)
{
    if (cJSON_IsBool(a) && cJSON_IsBool(b))
        return 1;
    return (a->type & 0xff) == (b->type & 0xff);
}

static const char *json_type_name(const cJSON *j)
{
    if (cJSON_IsBool(j))
        return "a boolean";
    if (cJSON_IsNumber(j))
        return "a number";
    if (cJSON_IsString(j))
        return "a string";
    if (cJSON_IsArray(j))
        return "an array";
    if (cJSON_IsObject(j))
        return "an object";
    return "null";
}

/* Applies one "key=value" override to the config object. */
static int apply_set(cJSON *root, const char *set, errbuf *e)
{
    const char *eq = strchr(set, '=');
    if (!eq || eq == set)
        return err_set(e, "--set '%s': expected key=value", set);
    char key[256];
    size_t kl = (size_t)(eq - set);
    if (kl >= sizeof key)
        return err_set(e, "--set '%s': key too long", set);
    memcpy(key, set, kl);
    key[kl] = 0;
    const char *val = eq + 1;
    cJSON *parent = root;
    char *seg = key;
    for (char *dot; (dot = strchr(seg, '.')) != NULL; seg = dot + 1) {
        *dot = 0;
        cJSON *child = cJSON_GetObjectItemCaseSensitive(parent, seg);
        if (!cJSON_IsObject(child))
            return err_set(e, "--set: unknown config key '%.*s' (no object '%s' in the preset's "
                           "config.json)", (int)kl, set, seg);
        *dot = '.';
        parent = child;
    }
    cJSON *old = cJSON_GetObjectItemCaseSensitive(parent, seg);
    if (!old)
        return err_set(e, "--set: unknown config key '%s' (not in the preset's config.json)", key);
    cJSON *nv = cJSON_ParseWithOpts(val, NULL, 1);
    if (!nv)
        nv = cJSON_CreateString(val);    /* a bare word: scoring_func=softmax */
    if (!nv)
        return err_set(e, "out of memory");
    if (cJSON_IsNumber(nv) && !isfinite(nv->valuedouble)) {
        cJSON_Delete(nv);   /* (config.json would hold null: the default, silently) */
        return err_set(e, "--set %s=%s: not a finite number", key, val);
    }
    /* a number may become a list (eos_token_id=[1, 2]); config_parse judges the rest */
    int list_ok = cJSON_IsNumber(old) && cJSON_IsArray(nv);
    if (!cJSON_IsNull(nv) && !cJSON_IsNull(old) && !json_same_type(old, nv) && !list_ok) {
        const char *want = json_type_name(old), *got = json_type_name(nv);
        cJSON_Delete(nv);
        return err_set(e, "--set %s=%s: '%s' is %s in config.json, got %s", key, val, key, want,
                       got);
    }
    cJSON_ReplaceItemInObjectCaseSensitive(parent, seg, nv);   /* keeps the key */
    return 0;
}

static int set_names_key(const synth_options *o, const char *key)
{
    size_t kl = strlen(key);
    for (int i = 0; i < o->n_sets; i++)
        if (strncmp(o->sets[i], key, kl) == 0 && o->sets[i][kl] == '=')
            return 1;
    return 0;
}

/* Preset + layers + overrides -> validated config text and parsed form. */
static int build_config(const synth_options *o, char **text_out, model_config *cfg, errbuf *e)
{
    *text_out = NULL;
    cJSON *root = synth_preset_config(o->preset ? o->preset : "k2-tiny", o->format, e);
    if (!root)
        return -1;
    int rc = -1;
    char *text = NULL;
    if (o->layers < 0) {
        err_set(e, "layers must be >= 1 (got %d)", o->layers);
        goto out;
    }
    if (o->layers > 0)
        cJSON_ReplaceItemInObjectCaseSensitive(root, "num_hidden_layers",
                                               cJSON_CreateNumber(o->layers));
    for (int i = 0; i < o->n_sets; i++)
        if (apply_set(root, o->sets[i], e))
            goto out;
    if (!set_names_key(o, "num_key_value_heads")) {
        cJSON *h = cJSON_GetObjectItemCaseSensitive(root, "num_attention_heads");
        cJSON_ReplaceItemInObjectCaseSensitive(root, "num_key_value_heads", cJSON_Duplicate(h, 1));
    }
    text = json_print_hf(root);
    if (!text) {
        err_set(e, "out of memory");
        goto out;
    }
    if (config_parse(cfg, text, "config.json", e)) {
        err_prefix(e, "the synthesized config is not valid: ");
        goto out;
    }
    quant_method want = o->format == SYNTH_FP8 ? QUANT_FP8_BLOCK
                        : o->format == SYNTH_INT4 ? QUANT_INT4_PACKED : QUANT_NONE;
    if (cfg->quant != want) {
        err_set(e, "--set quantization_config contradicts --format %s (config says %s)",
                synth_format_name(o->format), quant_method_name(cfg->quant));
        goto out;
    }
    *text_out = text;
    text = NULL;
    rc = 0;
out:
    free(text);
    cJSON_Delete(root);
    return rc;
}

int synth_config_json(const synth_options *o, char **json, model_config *cfg, errbuf *e)
{
    model_config tmp;
    return build_config(o, json, cfg ? cfg : &tmp, e);
}

/* ---- tensor plan -------------------------------------------------------- */

typedef enum { V_LINEAR, V_EMBED, V_NORM, V_BIAS, V_INV_FREQ } value_kind;
typedef enum { ENC_BF16, ENC_F32, ENC_FP8, ENC_INT4 } encoding;

/* One logical tensor; fp8 and int4 ones expand to 2 or 3 stored tensors. */
typedef struct plan_tensor {
    char name[96];              /* the bf16 layout's name */
    value_kind kind;
    encoding enc;
    int ndim;                   /* 1 or 2 */
    int64_t rows, cols;         /* 1-D: [rows], cols = 1 */
    float amp;                  /* uniform amplitude (norms: of the noise) */
    uint64_t bytes;             /* stored bytes, companions included */
    int shard;
} plan_tensor;

typedef struct plan {
    plan_tensor *t;
    int n, cap;
    uint64_t total;             /* tensor data bytes */
    int n_stored;               /* stored tensors (companions counted) */
    const model_config *cfg;
    synth_format format;
} plan;

static int64_t ceil_div(int64_t a, int64_t b)
{
    return (a + b - 1) / b;
}

static uint64_t tensor_bytes(const plan *p, const plan_tensor *t)
{
    const model_config *c = p->cfg;
    uint64_t n = (uint64_t)t->rows * (uint64_t)t->cols;
    switch (t->enc) {
    case ENC_F32: return 4 * n;
    case ENC_FP8:
        return n + 4 * (uint64_t)ceil_div(t->rows, c->fp8_block_rows) *
                       (uint64_t)ceil_div(t->cols, c->fp8_block_cols);
    case ENC_INT4:
        return 4 * (uint64_t)t->rows * (uint64_t)ceil_div(t->cols, 8) +
               2 * (uint64_t)t->rows * (uint64_t)ceil_div(t->cols, c->int4_group_size) + 8;
    default: return 2 * n;
    }
}

static int plan_add(plan *p, const char *name, value_kind kind, encoding enc, int ndim,
                    int64_t rows, int64_t cols)
{
    if (p->n == p->cap) {
        int cap = p->cap ? 2 * p->cap : 256;
        plan_tensor *nt = realloc(p->t, (size_t)cap * sizeof *nt);
        if (!nt)
            return -1;
        p->t = nt;
        p->cap = cap;
    }
    plan_tensor *t = &p->t[p->n];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    t->kind = kind;
    t->enc = enc;
    t->ndim = ndim;
    t->rows = rows;
    t->cols = ndim == 2 ? cols : 1;
    switch (kind) {
    case V_LINEAR: t->amp = (float)sqrt(3.0 / (double)cols); break;
    case V_EMBED: t->amp = (float)sqrt(3.0); break;
    case V_NORM: t->amp = 0.05f; break;
    case V_BIAS: t->amp = (float)(0.01 * sqrt(3.0)); break;
    default: t->amp = 0; break;
    }
    t->bytes = tensor_bytes(p, t);
    p->total += t->bytes;
    p->n_stored += enc == ENC_FP8 ? 2 : enc == ENC_INT4 ? 3 : 1;
    p->n++;
    return 0;
}

/* A Linear weight: quantized where the format quantizes that role. */
static int plan_linear(plan *p, const char *name, int64_t rows, int64_t cols, int quant_fp8,
                       int quant_int4)
{
    encoding enc = ENC_BF16;
    if (p->format == SYNTH_FP8 && quant_fp8)
        enc = ENC_FP8;
    else if (p->format == SYNTH_INT4 && quant_int4)
        enc = ENC_INT4;
    return plan_add(p, name, V_LINEAR, enc, 2, rows, cols);
}

static int plan_build(plan *p, const model_config *c, synth_format f)
{
    memset(p, 0, sizeof *p);
    p->cfg = c;
    p->format = f;
    int64_t h = c->hidden_size, H = c->n_heads, qk = c->qk_nope_dim + c->qk_rope_dim;
    char n[128];
    int rc = plan_add(p, "model.embed_tokens.weight", V_EMBED, ENC_BF16, 2, c->vocab_size, h);
    for (int l = 0; rc == 0 && l < c->n_layers; l++) {
#define NAME(...) (snprintf(n, sizeof n, __VA_ARGS__), n)
        rc |= plan_add(p, NAME("model.layers.%d.input_layernorm.weight", l), V_NORM, ENC_BF16, 1,
                       h, 1);
        if (c->q_lora_rank > 0) {
            rc |= plan_linear(p, NAME("model.layers.%d.self_attn.q_a_proj.weight", l),
                              c->q_lora_rank, h, 1, 0);
            rc |= plan_add(p, NAME("model.layers.%d.self_attn.q_a_layernorm.weight", l), V_NORM,
                           ENC_BF16, 1, c->q_lora_rank, 1);
            rc |= plan_linear(p, NAME("model.layers.%d.self_attn.q_b_proj.weight", l), H * qk,
                              c->q_lora_rank, 1, 0);
        } else {
            rc |= plan_linear(p, NAME("model.layers.%d.self_attn.q_proj.weight", l), H * qk, h, 1,
                              0);
        }
        rc |= plan_linear(p, NAME("model.layers.%d.self_attn.kv_a_proj_with_mqa.weight", l),
                          c->kv_lora_rank + c->qk_rope_dim, h, 1, 0);
        rc |= plan_add(p, NAME("model.layers.%d.self_attn.kv_a_layernorm.weight", l), V_NORM,
                       ENC_BF16, 1, c->kv_lora_rank, 1);
        rc |= plan_linear(p, NAME("model.layers.%d.self_attn.kv_b_proj.weight", l),
                          H * (c->qk_nope_dim + c->v_head_dim), c->kv_lora_rank, 1, 0);
        rc |= plan_linear(p, NAME("model.layers.%d.self_attn.o_proj.weight", l), h,
                          H * c->v_head_dim, 1, 0);
        /* real Kimi-K2-Instruct (bf16 and fp8) shards carry this unused buffer */
        if (f != SYNTH_INT4)
            rc |= plan_add(p, NAME("model.layers.%d.self_attn.rotary_emb.inv_freq", l), V_INV_FREQ,
                           ENC_BF16, 1, c->qk_rope_dim / 2, 1);
        rc |= plan_add(p, NAME("model.layers.%d.post_attention_layernorm.weight", l), V_NORM,
                       ENC_BF16, 1, h, 1);
        if (!config_is_moe_layer(c, l)) {
            int64_t I = c->intermediate_size;
            rc |= plan_linear(p, NAME("model.layers.%d.mlp.gate_proj.weight", l), I, h, 1, 0);
            rc |= plan_linear(p, NAME("model.layers.%d.mlp.up_proj.weight", l), I, h, 1, 0);
            rc |= plan_linear(p, NAME("model.layers.%d.mlp.down_proj.weight", l), h, I, 1, 0);
            continue;
        }
        int64_t E = c->n_routed_experts, mi = c->moe_intermediate_size;
        rc |= plan_linear(p, NAME("model.layers.%d.mlp.gate.weight", l), E, h, 0, 0);
        rc |= plan_add(p, NAME("model.layers.%d.mlp.gate.e_score_correction_bias", l), V_BIAS,
                       ENC_F32, 1, E, 1);
        if (c->n_shared_experts > 0) {
            int64_t si = (int64_t)c->n_shared_experts * mi;
            rc |= plan_linear(p, NAME("model.layers.%d.mlp.shared_experts.gate_proj.weight", l), si,
                              h, 1, 0);
            rc |= plan_linear(p, NAME("model.layers.%d.mlp.shared_experts.up_proj.weight", l), si,
                              h, 1, 0);
            rc |= plan_linear(p, NAME("model.layers.%d.mlp.shared_experts.down_proj.weight", l), h,
                              si, 1, 0);
        }
        for (int x = 0; x < E; x++) {
            rc |= plan_linear(p, NAME("model.layers.%d.mlp.experts.%d.gate_proj.weight", l, x), mi,
                              h, 1, 1);
            rc |= plan_linear(p, NAME("model.layers.%d.mlp.experts.%d.up_proj.weight", l, x), mi, h,
                              1, 1);
            rc |= plan_linear(p, NAME("model.layers.%d.mlp.experts.%d.down_proj.weight", l, x), h,
                              mi, 1, 1);
        }
#undef NAME
    }
    rc |= plan_add(p, "model.norm.weight", V_NORM, ENC_BF16, 1, h, 1);
    if (!c->tie_word_embeddings)
        rc |= plan_linear(p, "lm_head.weight", c->vocab_size, h, 0, 0);
    return rc ? -1 : 0;
}

static void plan_free(plan *p)
{
    free(p->t);
    memset(p, 0, sizeof *p);
}

/* Shards in plan order; returns the number of shards. With --shard-mb the
 * limit is strict (a shard only exceeds it when one tensor alone does). The
 * automatic size aims at max(2, ceil(total / 2000 MB)) shards of equal size,
 * cutting before the tensor whose middle would cross the target, so even a
 * tiny model gets 2 shards (and tensors of one layer may straddle shards, as
 * in real repositories). */
static int plan_shard(plan *p, const synth_options *o)
{
    uint64_t limit;
    int strict = o->shard_mb > 0;
    if (strict) {
        double b = o->shard_mb * 1e6;
        limit = b < 1 ? 1 : b >= 1.8e19 ? UINT64_MAX : (uint64_t)b;   /* (no cast past its range) */
    } else {
        uint64_t target = (p->total + SYNTH_DEFAULT_SHARD_BYTES - 1) / SYNTH_DEFAULT_SHARD_BYTES;
        if (target < 2)
            target = 2;
        limit = p->total / target + 1;
    }
    int shard = 0;
    uint64_t cur = 0;
    for (int i = 0; i < p->n; i++) {
        uint64_t b = p->t[i].bytes;
        if (cur > 0 && (strict ? cur + b > limit : cur + b / 2 > limit)) {
            shard++;
            cur = 0;
        }
        p->t[i].shard = shard;
        cur += b;
    }
    return shard + 1;
}

/* Bytes beyond the tensor data: shard headers, index, config, tokenizer. */
static uint64_t overhead_bytes(const plan *p)
{
    return (uint64_t)p->n_stored * 200 + 64 * 1024;
}

/* ---- random values ------------------------------------------------------ */

static uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t tensor_key(uint64_t seed, const char *name)
{
    uint64_t h = 1469598103934665603ull;       /* FNV-1a of the name */
    for (const char *s = name; *s; s++)
        h = (h ^ (uint8_t)*s) * 1099511628211ull;
    return mix64(mix64(seed + 0x9e3779b97f4a7c15ull) ^ h);
}

/* Elements [first, first + n) of t: a pure function of (seed, name, index). */
static void fill_values(const plan *p, const plan_tensor *t, uint64_t key, uint64_t first,
                        uint64_t n, float *out)
{
    if (t->kind == V_INV_FREQ) {
        double d = (double)p->cfg->qk_rope_dim;
        for (uint64_t i = 0; i < n; i++)
            out[i] = (float)pow(p->cfg->rope.theta, -2.0 * (double)(first + i) / d);
        return;
    }
    float amp = t->amp, base = t->kind == V_NORM ? 1.0f : 0.0f;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t x = mix64(key + (first + i + 1) * 0x9e3779b97f4a7c15ull);
        /* top 24 bits -> an odd integer in (-2^24, 2^24): exact in float,
         * symmetric around 0, never 0 */
        int32_t r = (int32_t)(x >> 40);
        float u = (float)(2 * r + 1 - 16777216) * (1.0f / 16777216.0f);
        out[i] = base + u * amp;
    }
}

/* ---- writing ------------------------------------------------------------ */

typedef struct gen_ctx {
    const plan *p;
    uint64_t seed;
    st_writer *w;
    progress *prog;
    float *f;                   /* value buffer */
    uint8_t *b;                 /* encoded buffer */
    size_t f_cap, b_cap;        /* elements / bytes */
    errbuf *e;
} gen_ctx;

static int ensure_buffers(gen_ctx *g, size_t nf, size_t nb)
{
    if (nf > g->f_cap) {
        float *nfp = realloc(g->f, nf * sizeof *nfp);
        if (!nfp)
            return err_set(g->e, "out of memory (%zu values)", nf);
        g->f = nfp;
        g->f_cap = nf;
    }
    if (nb > g->b_cap) {
        uint8_t *nbp = realloc(g->b, nb);
        if (!nbp)
            return err_set(g->e, "out of memory (%zu bytes)", nb);
        g->b = nbp;
        g->b_cap = nb;
    }
    return 0;
}

static int emit(gen_ctx *g, const void *data, size_t n)
{
    if (st_writer_write(g->w, data, n, g->e))
        return -1;
    progress_advance(g->prog, n);
    return 0;
}

/* Base name of a Linear (without ".weight") + suffix. */
static void companion(char *out, size_t cap, const char *name, const char *suffix)
{
    size_t n = strlen(name);
    if (n > 7 && strcmp(name + n - 7, ".weight") == 0)
        n -= 7;
    snprintf(out, cap, "%.*s.%s", (int)n, name, suffix);
}

static int declare(st_writer *w, const plan *p, const plan_tensor *t, errbuf *e)
{
    const model_config *c = p->cfg;
    int64_t shape[2] = {t->rows, t->cols};
    char n[160];
    switch (t->enc) {
    case ENC_BF16: return st_writer_add(w, t->name, DT_BF16, t->ndim, shape, e);
    case ENC_F32: return st_writer_add(w, t->name, DT_F32, t->ndim, shape, e);
    case ENC_FP8: {
        int64_t s[2] = {ceil_div(t->rows, c->fp8_block_rows), ceil_div(t->cols, c->fp8_block_cols)};
        companion(n, sizeof n, t->name, "weight_scale_inv");
        return st_writer_add(w, t->name, DT_F8_E4M3, 2, shape, e) ||
                       st_writer_add(w, n, DT_F32, 2, s, e) ? -1 : 0;
    }
    case ENC_INT4: {
        int64_t pk[2] = {t->rows, ceil_div(t->cols, 8)};
        int64_t sc[2] = {t->rows, ceil_div(t->cols, c->int4_group_size)};
        int64_t two = 2;
        companion(n, sizeof n, t->name, "weight_packed");
        if (st_writer_add(w, n, DT_I32, 2, pk, e))
            return -1;
        companion(n, sizeof n, t->name, "weight_scale");
        if (st_writer_add(w, n, DT_BF16, 2, sc, e))
            return -1;
        companion(n, sizeof n, t->name, "weight_shape");
        return st_writer_add(w, n, DT_I32, 1, &two, e);
    }
    }
    return err_set(e, "internal: bad encoding");
}

static int gen_plain(gen_ctx *g, const plan_tensor *t, uint64_t key)
{
    uint64_t total = (uint64_t)t->rows * (uint64_t)t->cols;
    int f32 = t->enc == ENC_F32;
    size_t chunk = (size_t)(total < SYNTH_CHUNK_ELEMS ? total : SYNTH_CHUNK_ELEMS);
    if (ensure_buffers(g, chunk, chunk * 4))
        return -1;
    for (uint64_t i = 0; i < total; i += chunk) {
        size_t n = (size_t)(total - i < chunk ? total - i : chunk);
        fill_values(g->p, t, key, i, n, g->f);
        if (f32) {
            for (size_t k = 0; k < n; k++)
                memcpy(g->b + 4 * k, &g->f[k], 4);     /* little-endian host */
        } else {
            for (size_t k = 0; k < n; k++) {
                uint16_t h = f32_to_bf16(g->f[k]);
                memcpy(g->b + 2 * k, &h, 2);
            }
        }
        if (emit(g, g->b, n * (f32 ? 4 : 2)))
            return -1;
    }
    return 0;
}

/* Block FP8: one stripe of block_rows rows at a time; per block scale =
 * amax/448, q = e4m3(w / scale); the scales follow the weight. */
static int gen_fp8(gen_ctx *g, const plan_tensor *t, uint64_t key)
{
    const model_config *c = g->p->cfg;
    int64_t br = c->fp8_block_rows, bc = c->fp8_block_cols, cols = t->cols;
    int64_t nrb = ceil_div(t->rows, br), ncb = ceil_div(cols, bc);
    float *scales = malloc((size_t)(nrb * ncb) * sizeof *scales);
    if (!scales || ensure_buffers(g, (size_t)(br * cols), (size_t)(br * cols))) {
        free(scales);
        return scales ? -1 : err_set(g->e, "out of memory");
    }
    for (int64_t rb = 0; rb < nrb; rb++) {
        int64_t r0 = rb * br, rs = t->rows - r0 < br ? t->rows - r0 : br;
        fill_values(g->p, t, key, (uint64_t)(r0 * cols), (uint64_t)(rs * cols), g->f);
        for (int64_t cb = 0; cb < ncb; cb++) {
            int64_t c0 = cb * bc, c1 = c0 + bc < cols ? c0 + bc : cols;
            float amax = 0;
            for (int64_t r = 0; r < rs; r++)
                for (int64_t j = c0; j < c1; j++) {
                    float a = fabsf(g->f[r * cols + j]);
                    amax = a > amax ? a : amax;
                }
            float s = amax > 0 ? amax / 448.0f : 1.0f;
            scales[rb * ncb + cb] = s;
            for (int64_t r = 0; r < rs; r++)
                for (int64_t j = c0; j < c1; j++)
                    g->b[r * cols + j] = f32_to_e4m3(g->f[r * cols + j] / s);
        }
        if (emit(g, g->b, (size_t)(rs * cols))) {
            free(scales);
            return -1;
        }
    }
    int rc = emit(g, scales, (size_t)(nrb * ncb) * sizeof *scales);
    free(scales);
    return rc;
}

/* INT4 pack-quantized: per row and group, scale = bf16(amax/7),
 * q = clamp(round(w / scale), -8, 7), nibble q + 8, value 8c + k in bits
 * [4k, 4k+4) of word c; then the scales, then the [out, in] shape. */
static int gen_int4(gen_ctx *g, const plan_tensor *t, uint64_t key)
{
    int64_t gs = g->p->cfg->int4_group_size, cols = t->cols;
    int64_t words = ceil_div(cols, 8), ng = ceil_div(cols, gs);
    uint16_t *scales = malloc((size_t)(t->rows * ng) * sizeof *scales);
    int64_t rows_per = (int64_t)SYNTH_CHUNK_ELEMS / cols;
    if (rows_per < 1)
        rows_per = 1;
    if (!scales || ensure_buffers(g, (size_t)(rows_per * cols), (size_t)(rows_per * words * 4))) {
        free(scales);
        return scales ? -1 : err_set(g->e, "out of memory");
    }
    for (int64_t r0 = 0; r0 < t->rows; r0 += rows_per) {
        int64_t rs = t->rows - r0 < rows_per ? t->rows - r0 : rows_per;
        fill_values(g->p, t, key, (uint64_t)(r0 * cols), (uint64_t)(rs * cols), g->f);
        memset(g->b, 0, (size_t)(rs * words * 4));
        for (int64_t r = 0; r < rs; r++) {
            const float *v = g->f + r * cols;
            uint8_t *row = g->b + r * words * 4;
            for (int64_t q0 = 0; q0 < cols; q0 += gs) {
                int64_t q1 = q0 + gs < cols ? q0 + gs : cols;
                float amax = 0;
                for (int64_t j = q0; j < q1; j++)
                    amax = fabsf(v[j]) > amax ? fabsf(v[j]) : amax;
                uint16_t sb = f32_to_bf16(amax / 7.0f);
                float s = bf16_to_f32(sb);
                scales[(r0 + r) * ng + q0 / gs] = sb;
                for (int64_t j = q0; j < q1; j++) {
                    long q = s > 0 ? lrintf(v[j] / s) : 0;
                    q = q < -8 ? -8 : q > 7 ? 7 : q;
                    row[4 * (j / 8) + (j % 8) / 2] |= (uint8_t)((q + 8) << (4 * (j % 2)));
                }
            }
            /* nibbles past the end of a row (cols not a multiple of 8) are q = 0 */
            for (int64_t j = cols; j < words * 8; j++)
                row[4 * (j / 8) + (j % 8) / 2] |= (uint8_t)(8 << (4 * (j % 2)));
        }
        if (emit(g, g->b, (size_t)(rs * words * 4))) {
            free(scales);
            return -1;
        }
    }
    int rc = emit(g, scales, (size_t)(t->rows * ng) * sizeof *scales);
    free(scales);
    if (rc)
        return -1;
    int32_t shape[2] = {(int32_t)t->rows, (int32_t)cols};
    return emit(g, shape, sizeof shape);
}

static int gen_tensor(gen_ctx *g, const plan_tensor *t)
{
    uint64_t key = tensor_key(g->seed, t->name);
    switch (t->enc) {
    case ENC_FP8: return gen_fp8(g, t, key);
    case ENC_INT4: return gen_int4(g, t, key);
    default: return gen_plain(g, t, key);
    }
}

static void shard_name(char *out, size_t cap, int i, int n)
{
    snprintf(out, cap, "model-%05d-of-%05d.safetensors", i + 1, n);
}

static int write_shard(gen_ctx *g, const char *dir, int shard, int n_shards, int *cursor)
{
    const plan *p = g->p;
    char fn[64], path[4096];
    shard_name(fn, sizeof fn, shard, n_shards);
    snprintf(path, sizeof path, "%s/%s", dir, fn);
    st_writer w;
    if (st_writer_open(&w, path, g->e))
        return -1;
    int first = *cursor, end = first;
    while (end < p->n && p->t[end].shard == shard)
        end++;
    for (int i = first; i < end; i++)
        if (declare(&w, p, &p->t[i], g->e)) {
            st_writer_abort(&w);
            return -1;
        }
    if (st_writer_begin_data(&w, g->e)) {
        st_writer_abort(&w);
        return -1;
    }
    g->w = &w;
    for (int i = first; i < end; i++)
        if (gen_tensor(g, &p->t[i])) {
            st_writer_abort(&w);
            return err_prefix(g->e, "tensor '%s': ", p->t[i].name);
        }
    g->w = NULL;
    *cursor = end;
    return st_writer_close(&w, g->e);
}

typedef struct map_entry {
    char name[160];
    int shard;
} map_entry;

static int map_cmp(const void *a, const void *b)
{
    return strcmp(((const map_entry *)a)->name, ((const map_entry *)b)->name);
}

static int write_index(const plan *p, const char *dir, int n_shards, errbuf *e)
{
    map_entry *m = malloc(((size_t)p->n_stored + 1) * sizeof *m);
    if (!m)
        return err_set(e, "out of memory");
    int k = 0;
    for (int i = 0; i < p->n; i++) {
        const plan_tensor *t = &p->t[i];
        static const char *const fp8_sfx[] = {NULL, "weight_scale_inv"};
        static const char *const int4_sfx[] = {"weight_packed", "weight_scale", "weight_shape"};
        int nc = t->enc == ENC_FP8 ? 2 : t->enc == ENC_INT4 ? 3 : 1;
        for (int c = 0; c < nc; c++) {
            const char *sfx = t->enc == ENC_FP8 ? fp8_sfx[c] : t->enc == ENC_INT4 ? int4_sfx[c] : NULL;
            if (sfx)
                companion(m[k].name, sizeof m[k].name, t->name, sfx);
            else
                snprintf(m[k].name, sizeof m[k].name, "%s", t->name);
            m[k++].shard = t->shard;
        }
    }
    qsort(m, (size_t)k, sizeof *m, map_cmp);
    cJSON *root = cJSON_CreateObject();
    cJSON *meta = cJSON_AddObjectToObject(root, "metadata");
    cJSON_AddNumberToObject(meta, "total_size", (double)p->total);
    cJSON *wm = cJSON_AddObjectToObject(root, "weight_map");
    char fn[64];
    for (int i = 0; i < k; i++) {
        shard_name(fn, sizeof fn, m[i].shard, n_shards);
        cJSON_AddStringToObject(wm, m[i].name, fn);
    }
    free(m);
    char *text = json_print_hf(root);
    cJSON_Delete(root);
    if (!text)
        return err_set(e, "out of memory");
    char path[4096];
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    int rc = file_replace_atomic(path, text, strlen(text), e);
    free(text);
    return rc;
}

/* mkdir -p */
static int make_dirs(const char *path, errbuf *e)
{
    char buf[4096];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf)
        return err_set(e, "%s: path too long", path);
    for (char *s = buf + 1; *s; s++)
        if (*s == '/') {
            *s = 0;
            if (mkdir(buf, 0755) != 0 && errno != EEXIST)
                return err_set(e, "%s: cannot create directory: %s", buf, strerror(errno));
            *s = '/';
        }
    return dir_ensure(buf, e);
}

/* Whether nm is a name of a checkpoint's weights as synth writes them (and
 * Hugging Face repositories name them): the index, a shard
 * model-NNNNN-of-NNNNN.safetensors, or a shard's temporary file
 * (.tmp.PID, safetensors_writer.c); *pid: that PID, else 0. Only these are
 * ever removed: a user's model-finetuned.safetensors is not synth's. */
static int synth_file_name(const char *nm, long *pid)
{
    *pid = 0;
    if (!strcmp(nm, "model.safetensors.index.json"))
        return 1;
    static const char shape[] = "model-#####-of-#####.safetensors";
    size_t n = sizeof shape - 1;
    if (strlen(nm) < n)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (shape[i] == '#' ? !isdigit((unsigned char)nm[i]) : nm[i] != shape[i])
            return 0;
    const char *rest = nm + n;
    if (!*rest)
        return 1;
    if (strncmp(rest, ".tmp.", 5) || !rest[5])
        return 0;
    for (const char *c = rest + 5; *c; c++)
        if (!isdigit((unsigned char)*c))
            return 0;
    *pid = atol(rest + 5);
    return 1;
}

/* Removes from dir the files synth_file_name names: all of them (a
 * checkpoint being replaced, --force: none of its shards left behind under a
 * name the new index does not list), or only the temporary files of a synth
 * that is no longer running (an interrupted one: up to a shard's size each). */
static int remove_synth_files(const char *dir, int all, errbuf *e)
{
    char path[4096];
    DIR *d = opendir(dir);
    if (!d)
        return errno == ENOENT && !all ? 0 : err_set(e, "%s: cannot list: %s", dir, strerror(errno));
    struct dirent *de;
    int rc = 0;
    while ((de = readdir(d)) != NULL) {
        long pid;
        if (!synth_file_name(de->d_name, &pid))
            continue;
        if (!all && !(pid > 0 && kill((pid_t)pid, 0) != 0 && errno == ESRCH))
            continue;
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        if (unlink(path) != 0 && errno != ENOENT) {
            rc = err_set(e, "%s: cannot remove: %s", path, strerror(errno));
            break;
        }
    }
    closedir(d);
    return rc;
}

/* Removes the shards and index of a checkpoint being replaced (--force),
 * config.json first, so an interrupted rewrite is not mistaken for a
 * checkpoint. */
static int clear_old_checkpoint(const char *dir, errbuf *e)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    if (unlink(path) != 0 && errno != ENOENT)
        return err_set(e, "%s: cannot remove: %s", path, strerror(errno));
    return remove_synth_files(dir, 1, e);
}

static int is_full_preset(const synth_options *o)
{
    const char *name = o->preset ? o->preset : "k2-tiny";
    for (const synth_preset *p = synth_presets(); p->name; p++)
        if (strcmp(p->name, name) == 0)
            return p->needs_force;
    return 0;
}

int synth_estimate_bytes(const synth_options *o, uint64_t *bytes, errbuf *e)
{
    char *text;
    model_config cfg;
    if (build_config(o, &text, &cfg, e))
        return -1;
    free(text);
    plan p;
    if (plan_build(&p, &cfg, o->format)) {
        plan_free(&p);
        return err_set(e, "out of memory");
    }
    *bytes = p.total + overhead_bytes(&p);
    plan_free(&p);
    return 0;
}

int synth_run(const synth_options *o, errbuf *e)
{
    if (!o->out_dir || !o->out_dir[0])
        return err_set(e, "no output directory given");
    char *text = NULL;
    model_config cfg;
    if (build_config(o, &text, &cfg, e))
        return -1;
    plan p;
    synth_tokenizer tok;
    memset(&tok, 0, sizeof tok);
    gen_ctx g;
    memset(&g, 0, sizeof g);
    int rc = -1;
    if (plan_build(&p, &cfg, o->format)) {
        err_set(e, "out of memory");
        goto out;
    }
    uint64_t need = p.total + overhead_bytes(&p);
    if (is_full_preset(o) && !o->force) {
        err_set(e, "preset '%s' would write %.1f GB (%d layers, %s); pass --force to write it, or "
                "use k2-slice with --layers N for the real dimensions at a smaller size",
                o->preset, (double)need / 1e9, cfg.n_layers, synth_format_name(o->format));
        goto out;
    }
    if (o->tokenizer) {
        int eos = cfg.n_eos > 0 ? cfg.eos_token_ids[0] : -1;
        if (synth_tokenizer_build(&tok, cfg.vocab_size, cfg.bos_token_id, eos, e))
            goto out;
    }
    const char *dir = o->out_dir;
    char path[4096];
    struct stat st;
    snprintf(path, sizeof path, "%s/config.json", dir);
    if (stat(path, &st) == 0) {
        if (!o->force) {
            err_set(e, "%s already holds a checkpoint (config.json); pass --force to overwrite it",
                    dir);
            goto out;
        }
        if (clear_old_checkpoint(dir, e))
            goto out;
    }
    if (make_dirs(dir, e) || remove_synth_files(dir, 0, e))
        goto out;
    struct statvfs vfs;
    if (statvfs(dir, &vfs) == 0 && !o->force) {
        double avail = (double)vfs.f_bavail * (double)vfs.f_frsize;
        if (avail < (double)need) {
            err_set(e, "%s: the checkpoint needs %.2f GB but only %.2f GB are free (pass --force to "
                    "try anyway)", dir, (double)need / 1e9, avail / 1e9);
            goto out;
        }
    }
    int n_shards = plan_shard(&p, o);
    progress prog;
    char what[128];
    snprintf(what, sizeof what, "synth %s %s", o->preset ? o->preset : "k2-tiny",
             synth_format_name(o->format));
    progress_begin(&prog, o->progress, what, p.total);
    g.p = &p;
    g.seed = o->seed;
    g.prog = &prog;
    g.e = e;
    int cursor = 0;
    for (int s = 0; s < n_shards; s++)
        if (write_shard(&g, dir, s, n_shards, &cursor))
            goto out;
    progress_end(&prog);
    if (write_index(&p, dir, n_shards, e))
        goto out;
    if (o->tokenizer && synth_tokenizer_save(&tok, dir, e))
        goto out;
    /* last: its presence marks a complete checkpoint */
    if (file_replace_atomic(path, text, strlen(text), e))
        goto out;
    rc = 0;
out:
    free(g.f);
    free(g.b);
    synth_tokenizer_free(&tok);
    plan_free(&p);
    free(text);
    return rc;
}

int synth_tensor_values(uint64_t seed, const model_config *cfg, const char *name, uint64_t first,
                        uint64_t n, float *out, errbuf *e)
{
    plan p;
    if (plan_build(&p, cfg, SYNTH_BF16)) {
        plan_free(&p);
        return err_set(e, "out of memory");
    }
    int rc = -1;
    for (int i = 0; i < p.n; i++) {
        const plan_tensor *t = &p.t[i];
        if (strcmp(t->name, name) != 0)
            continue;
        if (first > (uint64_t)(t->rows * t->cols) || n > (uint64_t)(t->rows * t->cols) - first)
            err_set(e, "tensor '%s': elements [%llu, %llu) are outside its %lld", name,
                    (unsigned long long)first, (unsigned long long)(first + n),
                    (long long)(t->rows * t->cols));
        else {
            fill_values(&p, t, tensor_key(seed, name), first, n, out);
            rc = 0;
        }
        plan_free(&p);
        return rc;
    }
    plan_free(&p);
    return err_set(e, "synth writes no tensor named '%s'", name);
}
