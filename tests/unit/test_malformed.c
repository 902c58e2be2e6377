/* Malformed checkpoints: each kind of damage gives an error that names the file
 * and the tensor or field, and never a crash (this suite also runs under
 * ASan+UBSan). The base is a freshly synthesised k2-tiny checkpoint. */
#include <cJSON.h>
#include <criterion/criterion.h>
#include <sys/stat.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/model/model_weights.h"
#include "testutil.h"

static char *dir;

static void setup(void)
{
    dir = test_make_tmpdir("malformed");
    cr_assert_not_null(dir);
    test_synth_tiny(dir, "fp8");
}

static void teardown(void)
{
    test_remove_tree(dir);
    free(dir);
}

/* The shard file holding tensor `name`, per the index. */
static char *shard_of(const char *name)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    char *text = test_read_file(path, NULL);
    cJSON *root = cJSON_Parse(text);
    const cJSON *f = cJSON_GetObjectItem(cJSON_GetObjectItem(root, "weight_map"), name);
    cr_assert(cJSON_IsString(f), "%s not in the index", name);
    char *out = malloc(4096);
    snprintf(out, 4096, "%s/%s", dir, f->valuestring);
    cJSON_Delete(root);
    free(text);
    return out;
}

/* A shard read whole: its bytes, its header's length and the header parsed. */
typedef struct shard_file {
    uint8_t *buf;
    size_t n;
    uint64_t hl;
    cJSON *root;
} shard_file;

static shard_file shard_read(const char *path)
{
    shard_file s;
    s.buf = test_read_file(path, &s.n);
    cr_assert_not_null(s.buf, "%s", path);
    memcpy(&s.hl, s.buf, 8);
    s.root = cJSON_ParseWithLength((const char *)s.buf + 8, s.hl);
    cr_assert_not_null(s.root, "%s", path);
    return s;
}

/* Writes s back to path with its (edited) header, padded with spaces so that
 * the data starts at a multiple of 8 bytes (as safetensors writers pad it)
 * and then `skew` spaces more, and its data region less the bytes
 * [cut_from, cut_to) of it. */
static void shard_write_skewed(const char *path, const shard_file *s, size_t cut_from, size_t cut_to,
                               int skew)
{
    char *h = cJSON_PrintUnformatted(s->root);
    uint64_t nl = strlen(h), padded = (8 + nl + 7) / 8 * 8 - 8 + (uint64_t)skew;
    const uint8_t *data = s->buf + 8 + s->hl;
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f, "%s", path);
    fwrite(&padded, 8, 1, f);
    fwrite(h, 1, nl, f);
    for (uint64_t k = nl; k < padded; k++)
        fputc(' ', f);
    fwrite(data, 1, cut_from, f);
    fwrite(data + cut_to, 1, s->n - 8 - s->hl - cut_to, f);
    fclose(f);
    free(h);
}

static void shard_write(const char *path, const shard_file *s, size_t cut_from, size_t cut_to)
{
    shard_write_skewed(path, s, cut_from, cut_to, 0);
}

static void shard_free(shard_file *s)
{
    cJSON_Delete(s->root);
    free(s->buf);
}

/* Rewrites the JSON header of a shard through fn, keeping the data region. */
static void edit_header(const char *shard, void (*fn)(cJSON *root, void *ctx), void *ctx)
{
    shard_file s = shard_read(shard);
    fn(s.root, ctx);
    shard_write(shard, &s, 0, 0);
    shard_free(&s);
}

/* Rewrites a JSON file of the checkpoint (config, index) through fn. */
static void edit_json_file(const char *file, void (*fn)(cJSON *root, void *ctx), void *ctx)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    char *text = test_read_file(path, NULL);
    cr_assert_not_null(text, "%s", path);
    cJSON *root = cJSON_Parse(text);
    fn(root, ctx);
    char *out = cJSON_Print(root);
    FILE *f = fopen(path, "w");
    fputs(out, f);
    fclose(f);
    free(out);
    free(text);
    cJSON_Delete(root);
}

static void unmap_tensor(cJSON *root, void *name)
{
    cJSON_DeleteItemFromObject(cJSON_GetObjectItem(root, "weight_map"), name);
}

static void expect_open_error(const char *must1, const char *must2)
{
    model_weights m;
    errbuf e;
    int rc = model_weights_open(&m, dir, &e);
    if (rc == 0)
        model_weights_close(&m);
    cr_assert_neq(rc, 0, "damaged checkpoint was accepted");
    cr_expect(strstr(e.msg, must1) != NULL, "error '%s' lacks '%s'", e.msg, must1);
    if (must2)
        cr_expect(strstr(e.msg, must2) != NULL, "error '%s' lacks '%s'", e.msg, must2);
}

TestSuite(malformed, .init = setup, .fini = teardown);

Test(malformed, intact_base_loads)
{
    model_weights m;
    errbuf e;
    cr_assert_eq(model_weights_open(&m, dir, &e), 0, "%s", e.msg);
    model_weights_close(&m);
}

Test(malformed, truncated_shard)
{
    char *s = shard_of("lm_head.weight");
    size_t n;
    free(test_read_file(s, &n));
    cr_assert_eq(truncate(s, (off_t)(n / 2)), 0);
    expect_open_error(strrchr(s, '/') + 1, "past the end");
    free(s);
}

/* a FIFO in a shard's place is named at once (opening it waited for a writer) */
Test(malformed, a_fifo_shard_is_refused_not_waited_on, .timeout = 20)
{
    char *s = shard_of("lm_head.weight");
    cr_assert_eq(unlink(s), 0);
    cr_assert_eq(mkfifo(s, 0644), 0);
    expect_open_error(strrchr(s, '/') + 1, "is a FIFO, expected a regular file");
    free(s);
}

typedef struct edit {
    const char *tensor, *field;
    cJSON *value;
} edit;

static void set_field(cJSON *root, void *ctx)
{
    edit *ed = ctx;
    cJSON *t = cJSON_GetObjectItem(root, ed->tensor);
    cr_assert_not_null(t, "%s not in shard", ed->tensor);
    cJSON_ReplaceItemInObject(t, ed->field, ed->value);
}

static void apply(const char *tensor, const char *field, const char *json_value)
{
    char *s = shard_of(tensor);
    edit ed = {tensor, field, cJSON_Parse(json_value)};
    edit_header(s, set_field, &ed);
    free(s);
}

Test(malformed, header_lies_about_offsets)
{
    apply("model.layers.1.self_attn.o_proj.weight", "data_offsets", "[0, 99999999]");
    expect_open_error("model.layers.1.self_attn.o_proj.weight", "data_offsets");
}

Test(malformed, overlapping_tensors)
{
    /* give kv_b the byte range of another tensor of the same size in its shard */
    char *path = shard_of("model.layers.1.self_attn.kv_b_proj.weight");
    shard_file s = shard_read(path);
    const cJSON *kv = cJSON_GetObjectItem(s.root, "model.layers.1.self_attn.kv_b_proj.weight");
    cJSON *offs = cJSON_GetObjectItem(kv, "data_offsets");
    double b = cJSON_GetArrayItem(offs, 0)->valuedouble;
    char v[64];
    snprintf(v, sizeof v, "[%.0f, %.0f]", b + 1, b + 1 + cJSON_GetArrayItem(offs, 1)->valuedouble - b);
    shard_free(&s);
    free(path);
    apply("model.layers.1.self_attn.kv_b_proj.weight", "data_offsets", v);
    expect_open_error("overlap", "kv_b_proj");
}

/* kv_b shifted a byte into the next tensor, with an empty tensor placed between
 * the two: emptiness takes no room, so it must not hide the overlap. */
static void shift_around_empty(cJSON *root, void *ctx)
{
    cJSON *kv = cJSON_GetObjectItem(root, "model.layers.1.self_attn.kv_b_proj.weight");
    cJSON *offs = cJSON_GetObjectItem(kv, "data_offsets");
    double b = cJSON_GetArrayItem(offs, 0)->valuedouble, end = cJSON_GetArrayItem(offs, 1)->valuedouble;
    char v[160];
    snprintf(v, sizeof v, "[%.0f, %.0f]", b + 1, end + 1);
    cJSON_ReplaceItemInObject(kv, "data_offsets", cJSON_Parse(v));
    snprintf(v, sizeof v, "{\"dtype\": \"BF16\", \"shape\": [0], \"data_offsets\": [%.0f, %.0f]}",
             end - 1, end - 1);
    cJSON_AddItemToObject(root, "empty_between", cJSON_Parse(v));
}

Test(malformed, overlap_behind_an_empty_tensor)
{
    char *s = shard_of("model.layers.1.self_attn.kv_b_proj.weight");
    edit_header(s, shift_around_empty, NULL);
    free(s);
    expect_open_error("overlap", "kv_b_proj");
}

/* A norm weight that is NaN or infinite: the whole output would be NaN. */
Test(malformed, non_finite_norm_weight)
{
    const char *name = "model.layers.1.input_layernorm.weight";
    test_poke_nan(dir, name, 3);
    expect_open_error(name, "index 3");
}

/* A NaN that loading does not look for (one weight of lm_head): the logits it
 * reaches are an error, not a token (the sampler used to skip NaN and pick
 * one). */
Test(malformed, nan_logits_are_an_error)
{
    test_poke_nan(dir, "lm_head.weight", 5);
    char *out, *err, cmd[8400];
    snprintf(cmd, sizeof cmd, "%s run -m %s --ids 1,2 -n 2 --greedy --print-ids", test_moetier_bin(),
             dir);
    cr_expect_eq(test_run_capture(cmd, &out, &err), 1, "%s", err);
    cr_expect(strstr(err, "the logits at position 1 are NaN") != NULL, "%s", err);
    cr_expect_str_empty(out, "ids were printed: %s", out);
    free(out);
    free(err);
}

Test(malformed, size_inconsistent_with_shape)
{
    apply("model.layers.1.self_attn.kv_b_proj.weight", "shape", "[256, 65]");
    expect_open_error("kv_b_proj", "bytes");
}

Test(malformed, wrong_dtype_for_tensor)
{
    /* same byte size, so only the model-level check can catch it */
    apply("model.layers.1.mlp.gate.e_score_correction_bias", "dtype", "\"I32\"");
    expect_open_error("e_score_correction_bias", "I32");
}

Test(malformed, wrong_dtype_for_linear)
{
    apply("model.embed_tokens.weight", "dtype", "\"I16\"");
    expect_open_error("model.embed_tokens.weight", "Linear");
}

Test(malformed, wrong_shape_for_tensor)
{
    apply("model.layers.0.self_attn.q_a_proj.weight", "shape", "[256, 128]");
    expect_open_error("q_a_proj", "expected shape [128, 256]");
}

Test(malformed, unknown_dtype)
{
    apply("model.norm.weight", "dtype", "\"F7\"");
    expect_open_error("unknown dtype", "model.norm.weight");
}

static void drop_tensor(cJSON *root, void *ctx)
{
    cJSON_DeleteItemFromObject(root, ctx);
}

/* Takes tensor `name` out of its shard, header entry and bytes, the tensors
 * after it moved back: a whole shard that lacks it. */
static void remove_tensor(const char *name)
{
    char *path = shard_of(name);
    shard_file s = shard_read(path);
    cJSON *offs = cJSON_GetObjectItem(cJSON_GetObjectItem(s.root, name), "data_offsets");
    double b = cJSON_GetArrayItem(offs, 0)->valuedouble, e = cJSON_GetArrayItem(offs, 1)->valuedouble;
    cJSON_DeleteItemFromObject(s.root, name);
    cJSON *t;
    cJSON_ArrayForEach(t, s.root) {
        cJSON *o = cJSON_GetObjectItem(t, "data_offsets");
        for (int i = 0; o && i < 2; i++) {
            cJSON *x = cJSON_GetArrayItem(o, i);
            if (x->valuedouble >= e)
                cJSON_SetNumberValue(x, x->valuedouble - (e - b));
        }
    }
    shard_write(path, &s, (size_t)b, (size_t)e);
    shard_free(&s);
    free(path);
}

Test(malformed, missing_tensor)
{
    const char *name = "model.layers.2.self_attn.kv_b_proj.weight";
    remove_tensor(name);
    /* the index still lists it: the checkpoint is inconsistent */
    expect_open_error(name, "does not contain");
    /* and once the index forgets it too, the model misses it */
    edit_json_file("model.safetensors.index.json", unmap_tensor, (void *)name);
    expect_open_error("missing tensor", name);
}

Test(malformed, missing_fp8_scale)
{
    const char *name = "model.layers.3.mlp.experts.5.down_proj.weight_scale_inv";
    remove_tensor(name);
    edit_json_file("model.safetensors.index.json", unmap_tensor, (void *)name);
    expect_open_error("weight_scale_inv", "experts.5.down_proj");
}

/* The data region is covered exactly: bytes no tensor names (an entry lost
 * from the header, bytes appended, a header length one short, which shifts
 * every tensor by a byte and used to load into NaN logits) are refused. */
Test(malformed, data_not_covered_by_tensors)
{
    const char *name = "model.layers.2.self_attn.kv_b_proj.weight";
    char *s = shard_of(name);
    size_t n;
    uint8_t *intact = test_read_file(s, &n);
    edit_header(s, drop_tensor, (void *)name);
    expect_open_error("belong to no tensor", "the next is");
    FILE *f = fopen(s, "wb");
    fwrite(intact, 1, n, f);
    fwrite("appended", 1, 8, f);
    fclose(f);
    expect_open_error("the last 8 bytes belong to no tensor", s);
    uint64_t hl;
    memcpy(&hl, intact, 8);
    hl--;
    memcpy(intact, &hl, 8);
    f = fopen(s, "wb");
    fwrite(intact, 1, n, f);
    fclose(f);
    expect_open_error("header length is wrong", s);
    free(intact);
    free(s);
}

static void write_header_bytes(const char *shard, const void *hdr, size_t n)
{
    size_t len;
    uint8_t *buf = test_read_file(shard, &len);
    memcpy(buf, hdr, n);
    FILE *f = fopen(shard, "wb");
    fwrite(buf, 1, len, f);
    fclose(f);
    free(buf);
}

Test(malformed, absurd_header_length)
{
    char *s = shard_of("lm_head.weight");
    uint64_t huge = 1ull << 40;
    write_header_bytes(s, &huge, 8);
    expect_open_error("header length", strrchr(s, '/') + 1);
    free(s);
}

Test(malformed, header_not_json)
{
    char *s = shard_of("lm_head.weight");
    write_header_bytes(s, "\x10\0\0\0\0\0\0\0{{{{{{{{{{{{{{{{", 24);
    expect_open_error("not valid JSON", strrchr(s, '/') + 1);
    free(s);
}

static void map_to_missing_shard(cJSON *root, void *ctx)
{
    cJSON_ReplaceItemInObject(cJSON_GetObjectItem(root, "weight_map"), "lm_head.weight",
                              cJSON_CreateString("model-9-of-9.safetensors"));
}

Test(malformed, index_names_missing_shard)
{
    edit_json_file("model.safetensors.index.json", map_to_missing_shard, NULL);
    expect_open_error("model-9-of-9.safetensors", "cannot open");
}

static void drop_field(cJSON *root, void *name)
{
    cJSON_DeleteItemFromObject(root, name);
}

Test(malformed, bad_config)
{
    edit_json_file("config.json", drop_field, "kv_lora_rank");
    expect_open_error("kv_lora_rank", "config.json");
}

Test(malformed, not_a_checkpoint)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    unlink(path);
    expect_open_error("no model.safetensors.index.json", dir);
}

static void set_tied(cJSON *root, void *tied)
{
    cJSON_ReplaceItemInObject(root, "tie_word_embeddings", cJSON_CreateBool(*(int *)tied));
}

/* The logits of ids 1, 2 of the checkpoint (malloc'd, *n bytes). */
static uint8_t *logits_of(size_t *n)
{
    char *out, *err, path[4200];
    snprintf(path, sizeof path, "%s/logits.bin", dir);
    cr_assert_eq(test_run_fmt(&out, &err, "%s logits -m %s --ids 1,2 -o %s", test_moetier_bin(), dir,
                              path), 0, "%s", err);
    free(out);
    free(err);
    uint8_t *bytes = test_read_file(path, n);
    cr_assert_not_null(bytes);
    unlink(path);
    return bytes;
}

/* Tied embeddings: the output is the embedding, as the reference ties them,
 * also when the checkpoint holds an lm_head.weight of its own (that one was
 * used): the logits are those of the untied checkpoint whose lm_head holds
 * the embedding's bytes. */
Test(malformed, tied_embeddings_use_the_embedding_as_the_output, .timeout = 60)
{
    size_t n_own, n_tied, n_copied;
    uint8_t *own = logits_of(&n_own);
    int tied = 1;
    edit_json_file("config.json", set_tied, &tied);
    uint8_t *with_tie = logits_of(&n_tied);
    tied = 0;
    edit_json_file("config.json", set_tied, &tied);
    /* the embedding's bytes over lm_head's (same dtype and shape) */
    char *ep = shard_of("model.embed_tokens.weight"), *hp = shard_of("lm_head.weight");
    shard_file es = shard_read(ep), hs = shard_read(hp);
    const cJSON *et = cJSON_GetObjectItem(es.root, "model.embed_tokens.weight");
    const cJSON *ht = cJSON_GetObjectItem(hs.root, "lm_head.weight");
    cr_assert(cJSON_Compare(cJSON_GetObjectItem(et, "dtype"), cJSON_GetObjectItem(ht, "dtype"), 1) &&
              cJSON_Compare(cJSON_GetObjectItem(et, "shape"), cJSON_GetObjectItem(ht, "shape"), 1));
    size_t eo = (size_t)cJSON_GetArrayItem(cJSON_GetObjectItem(et, "data_offsets"), 0)->valuedouble;
    size_t ho = (size_t)cJSON_GetArrayItem(cJSON_GetObjectItem(ht, "data_offsets"), 0)->valuedouble;
    size_t bytes = (size_t)cJSON_GetArrayItem(cJSON_GetObjectItem(et, "data_offsets"), 1)->valuedouble - eo;
    memcpy(hs.buf + 8 + hs.hl + ho, es.buf + 8 + es.hl + eo, bytes);
    shard_write(hp, &hs, 0, 0);
    shard_free(&es);
    shard_free(&hs);
    free(ep);
    free(hp);
    uint8_t *copied = logits_of(&n_copied);
    cr_assert(n_own == n_tied && n_tied == n_copied && n_own > 0);
    cr_expect(memcmp(own, with_tie, n_own) != 0, "tied, the checkpoint's own lm_head was used");
    cr_expect(memcmp(with_tie, copied, n_own) == 0, "tied logits are not the embedding's");
    free(own);
    free(with_tie);
    free(copied);
}

typedef struct int_edit {
    const char *field;
    int delta;
} int_edit;

/* adds delta to an integer field (absent: 0) */
static void add_to_int(cJSON *root, void *ctx)
{
    const int_edit *ed = ctx;
    cJSON *f = cJSON_GetObjectItem(root, ed->field);
    int v = (f ? (int)f->valuedouble : 0) + ed->delta;
    if (f)
        cJSON_ReplaceItemInObject(root, ed->field, cJSON_CreateNumber(v));
    else
        cJSON_AddNumberToObject(root, ed->field, v);
}

/* stderr of a one-token run of the checkpoint (malloc'd) */
static char *run_says(void)
{
    char *out, *err;
    cr_assert_eq(test_run_fmt(&out, &err, "%s run -m %s --ids 1 -n 1 -t 1", test_moetier_bin(), dir), 0,
                 "%s", err);
    free(out);
    return err;
}

/* A config.json that describes less than the weights hold (a layer fewer) is
 * said, naming the first tensor not read; the layers of next-token prediction
 * (num_nextn_predict_layers) are not read by design and not said; nor is a
 * checkpoint read whole. */
Test(malformed, tensors_the_config_leaves_unread_are_said, .timeout = 60)
{
    char *said = run_says();
    cr_expect(!strstr(said, "not read"), "%s", said);
    free(said);
    int_edit layers = {"num_hidden_layers", -1}, nextn = {"num_nextn_predict_layers", 1};
    edit_json_file("config.json", add_to_int, &layers);
    said = run_says();
    cr_expect(strstr(said, "of the checkpoint are not read (the first: model.layers.3.") &&
              strstr(said, "config.json describes less than the weights hold"), "%s", said);
    free(said);
    edit_json_file("config.json", add_to_int, &nextn);
    said = run_says();
    cr_expect(!strstr(said, "not read"), "the prediction layer was said: %s", said);
    free(said);
    /* nor is the lm_head.weight that tied embeddings leave aside */
    int tied = 1;
    edit_json_file("config.json", set_tied, &tied);
    said = run_says();
    cr_expect(!strstr(said, "not read"), "the tied lm_head was said: %s", said);
    free(said);
}

/* A header that safetensors writers would pad, left unpadded, puts the
 * tensors at offsets the kernels cannot read their elements from in place:
 * refused naming the tensor and why (ASan+UBSan found the misaligned reads);
 * the same header padded loads, and so does a padded file whose odd-sized
 * FP8 tensors leave the tensors after them at odd offsets (what synth writes
 * for odd shapes: refused for a while). */
Test(malformed, tensors_at_misaligned_offsets_are_refused)
{
    char *s = shard_of("model.embed_tokens.weight");
    shard_file sf = shard_read(s);
    shard_write_skewed(s, &sf, 0, 0, 1);
    expect_open_error("model.embed_tokens.weight", "not a multiple of its 2-byte elements");
    shard_write_skewed(s, &sf, 0, 0, 8);
    model_weights m;
    errbuf e;
    cr_expect_eq(model_weights_open(&m, dir, &e), 0, "%s", e.msg);
    model_weights_close(&m);
    shard_free(&sf);
    free(s);

    char odd[4200], *out, *err;
    snprintf(odd, sizeof odd, "%s/odd", dir);
    int rc = test_run_fmt(&out, &err, "%s synth --format fp8 -o %s --set qk_nope_head_dim=31 --set "
                          "kv_lora_rank=63 --set num_attention_heads=3 --set num_key_value_heads=3 "
                          "--set moe_intermediate_size=33", test_moetier_bin(), odd);
    cr_assert_eq(rc, 0, "%s", err);
    free(out);
    free(err);
    cr_expect_eq(model_weights_open(&m, odd, &e), 0, "%s", e.msg);
    model_weights_close(&m);
}

typedef struct tensor_bytes {
    const char *name, *dtype;
    const void *bytes;
    size_t n;
} tensor_bytes;

static int by_first_offset(const void *a, const void *b)
{
    double x = cJSON_GetArrayItem(cJSON_GetObjectItem(*(cJSON *const *)a, "data_offsets"), 0)->valuedouble;
    double y = cJSON_GetArrayItem(cJSON_GetObjectItem(*(cJSON *const *)b, "data_offsets"), 0)->valuedouble;
    return (x > y) - (x < y);
}

/* Rewrites the shard holding tensor r.name with that tensor's dtype and
 * bytes replaced, the others' data moved to make room. */
static void replace_tensor(const tensor_bytes *r)
{
    char *path = shard_of(r->name);
    shard_file sf = shard_read(path);
    int n = 0;
    cJSON *t, **ts = malloc(4096 * sizeof *ts);
    cJSON_ArrayForEach(t, sf.root)
        if (strcmp(t->string, "__metadata__")) {
            cr_assert_lt(n, 4096, "%s holds more tensors than the test takes", path);
            ts[n++] = t;
        }
    qsort(ts, (size_t)n, sizeof *ts, by_first_offset);
    const uint8_t *data = sf.buf + 8 + sf.hl;
    uint8_t *out = malloc(sf.n + r->n);
    size_t at = 0;
    for (int i = 0; i < n; i++) {
        cJSON *off = cJSON_GetObjectItem(ts[i], "data_offsets");
        size_t a = (size_t)cJSON_GetArrayItem(off, 0)->valuedouble;
        size_t b = (size_t)cJSON_GetArrayItem(off, 1)->valuedouble;
        const void *src = data + a;
        size_t len = b - a;
        if (!strcmp(ts[i]->string, r->name)) {
            src = r->bytes;
            len = r->n;
            cJSON_ReplaceItemInObject(ts[i], "dtype", cJSON_CreateString(r->dtype));
        }
        memcpy(out + at, src, len);
        cJSON_ReplaceItemInObject(ts[i], "data_offsets",
                                  cJSON_CreateDoubleArray((double[]){(double)at, (double)(at + len)}, 2));
        at += len;
    }
    char *h = cJSON_PrintUnformatted(sf.root);
    uint64_t nl = (strlen(h) + 7) / 8 * 8;
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f, "%s", path);
    fwrite(&nl, 8, 1, f);
    fprintf(f, "%-*s", (int)nl, h);
    fwrite(out, 1, at, f);
    fclose(f);
    free(h);
    free(out);
    free(ts);
    shard_free(&sf);
    free(path);
}

/* compressed-tensors writes a weight's shape as I64 by default (Kimi's
 * checkpoints hold I32): both load, and an I64 shape that is not the
 * weight's is refused. */
Test(malformed, int4_weight_shape_in_i64)
{
    char *keep = dir;
    dir = test_make_tmpdir("malformed-int4");
    test_synth_tiny(dir, "int4");
    const char *name = "model.layers.1.mlp.experts.3.up_proj.weight_shape";
    model_weights m;
    errbuf e;
    cr_assert_eq(model_weights_open(&m, dir, &e), 0, "%s", e.msg);
    const st_tensor *t = checkpoint_find(&m.ckpt, name);
    cr_assert(t && t->dt == DT_I32 && t->numel == 2);
    int32_t s32[2];
    memcpy(s32, t->data, sizeof s32);
    model_weights_close(&m);
    int64_t s64[2] = {s32[0], s32[1]};
    replace_tensor(&(tensor_bytes){name, "I64", s64, sizeof s64});
    cr_expect_eq(model_weights_open(&m, dir, &e), 0, "%s", e.msg);
    model_weights_close(&m);
    s64[1] += 1ll << 32;   /* (the same low word) */
    replace_tensor(&(tensor_bytes){name, "I64", s64, sizeof s64});
    expect_open_error(name, "expected [");
    test_remove_tree(dir);
    free(dir);
    dir = keep;
}

/* A config.json naming far more experts than the checkpoint holds is said
 * before the tables of that many are allocated (4,096 layers of 65,536
 * experts took 56 GB and ended "out of memory", naming nothing). */
Test(malformed, more_experts_than_tensors)
{
    int_edit experts = {"n_routed_experts", 65536 - 32}, layers = {"num_hidden_layers", 4092};
    edit_json_file("config.json", add_to_int, &experts);
    edit_json_file("config.json", add_to_int, &layers);
    expect_open_error("config.json", "n_routed_experts");
}
