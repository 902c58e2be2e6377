/* synth: writes a random-weight checkpoint of the DeepSeek-V3 / Kimi K2
 * architecture in the real Hugging Face layout (`moetier synth`).
 *
 * Users size their hardware with it and the tests exercise real file layouts
 * without downloading 600 GB. The output directory gets exactly what a real
 * Kimi K2 repository holds: config.json (every key of Kimi-K2-Instruct's config,
 * with the quantization_config of the chosen format), model.safetensors.index.json
 * ({"metadata": {"total_size"}, "weight_map"}), shards named
 * model-0000X-of-0000N.safetensors, and a small real tokenizer (tiktoken.model,
 * tokenizer_config.json; see core/text/synth_tokenizer.h).
 *
 * Formats (the three layouts of ../shared/testdata/README.md):
 *   bf16  every tensor BF16, e_score_correction_bias F32;
 *   fp8   every *_proj.weight of attention, dense MLP, routed and shared experts
 *         F8_E4M3 with <name>_scale_inv F32 [ceil(out/128), ceil(in/128)],
 *         scale = amax(block)/448 (Kimi-K2-Instruct); the rest BF16;
 *   int4  routed experts as compressed-tensors pack-quantized int4 g32
 *         (weight_packed I32 [out, in/8], weight_scale BF16 [out, in/32],
 *         weight_shape I32 [2]; q = round(w/scale) in [-8, 7], scale = amax/7 of
 *         each group; Kimi-K2-Thinking); the rest BF16.
 * The block and group sizes are read back from the generated config, so a
 * --set of quantization_config's sizes is honoured.
 *
 * Weights are random but deterministic: element i of tensor T is a function of
 * (seed, T's name, i) only (splitmix64 counter), so the files do not depend on
 * sharding, and the three formats of one seed hold the same underlying values,
 * quantized differently. Scales keep activations sane: Linear weights uniform
 * with std 1/sqrt(in_features), embeddings std 1, router std 1/sqrt(hidden),
 * norms 1 + U(-0.05, 0.05), e_score_correction_bias std 0.01.
 *
 * Everything is streamed tensor by tensor (at most one 128-row stripe of a
 * weight is in memory), files are written under temporary names and renamed
 * when complete, and config.json is written last, so an interrupted run never
 * leaves a directory that looks like a finished checkpoint. */
#ifndef MOETIER_SYNTH_H
#define MOETIER_SYNTH_H

#include <stdint.h>
#include <stdio.h>

#include "config.h"
#include "core/base/errbuf.h"

struct cJSON;

typedef enum synth_format { SYNTH_BF16, SYNTH_FP8, SYNTH_INT4 } synth_format;

typedef struct synth_options {
    const char *preset;         /* "k2-tiny" (default), "k2-slice", "k2" */
    synth_format format;        /* default SYNTH_BF16 */
    const char *out_dir;        /* created if missing (with parents) */
    int layers;                 /* num_hidden_layers; 0 = the preset's (k2-tiny 4,
                                   k2-slice 2, k2 61) */
    uint64_t seed;              /* default 1 */
    int force;                  /* overwrite a directory holding a config.json; write
                                   the full k2 preset; ignore a free-space shortfall */
    const char *const *sets;    /* n_sets "key=value" config overrides, applied in
                                   order after the preset and `layers`: key is a
                                   config.json key, dotted for nested objects
                                   ("rope_scaling.factor"); value is JSON (a number,
                                   true/false, null, "string", [..]) or a bare string.
                                   The key must exist in the preset's config and keep
                                   its JSON type (null is always allowed, a number
                                   may become a list).
                                   num_key_value_heads follows num_attention_heads
                                   unless set itself. */
    int n_sets;
    double shard_mb;            /* shard size limit in MB (1e6 bytes), strict unless a
                                   single tensor is larger; 0 = auto: equal shards of
                                   about 2000 MB, and at least 2 */
    int tokenizer;              /* write tiktoken.model + tokenizer_config.json
                                   (default 1) */
    FILE *progress;             /* progress in bytes (core/base/progress.h); NULL:
                                   silent */
} synth_options;

synth_options synth_options_default(void);

/* "bf16", "fp8", "int4" -> format; -1 with a message for anything else. */
int synth_format_parse(const char *name, synth_format *out, errbuf *e);
const char *synth_format_name(synth_format f);

/* The final config.json text (preset + layers + overrides, validated with
 * config_parse) as malloc'd *json, and optionally its parsed form *cfg. */
int synth_config_json(const synth_options *o, char **json, model_config *cfg, errbuf *e);

/* Bytes the checkpoint will take on disk (tensor data plus an estimate of the
 * shard headers and small files), without writing anything. Also reports the
 * configuration errors synth_run would. */
int synth_estimate_bytes(const synth_options *o, uint64_t *bytes, errbuf *e);

/* Writes the checkpoint. Refuses (-1, message in e): an unknown preset or
 * override key, a config that config_parse rejects, the full k2 preset without
 * force (the message gives the size in GB), an out_dir holding a config.json
 * without force. */
int synth_run(const synth_options *o, errbuf *e);

/* The unquantized random values synth stores in tensor `name` (the bf16
 * layout's name, e.g. "model.layers.1.mlp.experts.3.up_proj.weight"), elements
 * [first, first + n) in row-major order, for the config cfg. Tests check the
 * quantized formats against these. */
int synth_tensor_values(uint64_t seed, const model_config *cfg, const char *name, uint64_t first,
                        uint64_t n, float *out, errbuf *e);

/* ---- presets (synth_presets.c) ---- */

typedef struct synth_preset {
    const char *name;
    const char *description;
    int default_layers;
    int needs_force;            /* too big to write by accident */
} synth_preset;

/* The presets, terminated by an entry with name NULL. */
const synth_preset *synth_presets(void);
/* The preset's config.json as a cJSON object (caller deletes) with the
 * quantization_config of format f; NULL with a message for an unknown preset. */
struct cJSON *synth_preset_config(const char *preset, synth_format f, errbuf *e);

#endif
