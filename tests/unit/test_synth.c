/* test_synth: the safetensors writer and `moetier synth`.
 *
 * Every synthesized checkpoint must load with model_weights_open() (the same
 * validation a real download gets); the k2-tiny preset must reproduce the
 * testdata's layout exactly (config keys and values, tensor names, dtypes,
 * shapes); the quantized formats must hold exactly the quantization of the
 * generator's values; output must be deterministic per seed and independent
 * of sharding; and the refusals (k2 without --force, unknown --set keys,
 * overwriting a checkpoint, short writes) must say why. */
#include <criterion/criterion.h>
#include <cJSON.h>
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/base/fileutil.h"
#include "core/model/checkpoint.h"
#include "core/model/dtype.h"
#include "core/model/model_weights.h"
#include "core/model/safetensors.h"
#include "core/model/safetensors_writer.h"
#include "core/model/synth.h"
#include "core/text/vocab.h"
#include "testutil.h"

static char *tmp_root;

static void setup(void)
{
    tmp_root = test_make_tmpdir("synth");
    cr_assert_not_null(tmp_root, "cannot create a temporary directory");
}

static void teardown(void)
{
    if (tmp_root)
        test_remove_tree(tmp_root);
    free(tmp_root);
    tmp_root = NULL;
}

TestSuite(synth, .init = setup, .fini = teardown);

static char *tmp_path(const char *name)
{
    char *p = NULL;
    cr_assert(asprintf(&p, "%s/%s", tmp_root, name) > 0);
    return p;
}

/* Synthesizes k2-tiny into tmp_root/name (a nested path, so that mkdir -p is
 * exercised); returns the directory (malloc'd). */
static char *synth_into(const char *name, synth_format f, uint64_t seed, const char **sets,
                        int n_sets, double shard_mb)
{
    char *dir = NULL;
    cr_assert(asprintf(&dir, "%s/out/%s", tmp_root, name) > 0);
    synth_options o = synth_options_default();
    o.format = f;
    o.out_dir = dir;
    o.seed = seed;
    o.sets = sets;
    o.n_sets = n_sets;
    o.shard_mb = shard_mb;
    errbuf e = {{0}};
    int rc = synth_run(&o, &e);
    cr_assert_eq(rc, 0, "synth %s: %s", name, e.msg);
    return dir;
}

static void open_weights(model_weights *m, const char *dir)
{
    errbuf e = {{0}};
    int rc = model_weights_open(m, dir, &e);
    cr_assert_eq(rc, 0, "model_weights_open(%s): %s", dir, e.msg);
}

static int count_shards(const char *dir)
{
    DIR *d = opendir(dir);
    cr_assert_not_null(d);
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)))
        n += strncmp(de->d_name, "model-", 6) == 0 && strstr(de->d_name, ".safetensors") &&
             !strstr(de->d_name, ".tmp.");
    closedir(d);
    return n;
}

/* ---- safetensors writer ------------------------------------------------- */

Test(synth, writer_roundtrip)
{
    char *path = tmp_path("w.safetensors");
    errbuf e = {{0}};
    st_writer w;
    cr_assert_eq(st_writer_open(&w, path, &e), 0, "%s", e.msg);
    int64_t s1[2] = {2, 3}, s2[1] = {5};
    cr_assert_eq(st_writer_add(&w, "a.weight", DT_BF16, 2, s1, &e), 0, "%s", e.msg);
    cr_assert_eq(st_writer_add(&w, "b.bias", DT_F32, 1, s2, &e), 0, "%s", e.msg);
    cr_assert_eq(st_writer_add(&w, "c.scalar", DT_I32, 0, NULL, &e), 0, "%s", e.msg);
    cr_assert_neq(st_writer_add(&w, "a.weight", DT_F32, 1, s2, &e), 0, "duplicate accepted");
    cr_assert(strstr(e.msg, "a.weight"), "%s", e.msg);
    cr_assert_eq(st_writer_begin_data(&w, &e), 0, "%s", e.msg);
    uint16_t a[6];
    for (int i = 0; i < 6; i++)
        a[i] = f32_to_bf16((float)i - 2.5f);
    float b[5] = {1, -2, 3.5f, 1e-3f, 7};
    int32_t c = -12345;
    /* odd piece sizes, crossing tensor boundaries */
    uint8_t all[12 + 20 + 4];
    memcpy(all, a, 12);
    memcpy(all + 12, b, 20);
    memcpy(all + 32, &c, 4);
    cr_assert_eq(st_writer_write(&w, all, 7, &e), 0, "%s", e.msg);
    cr_assert_eq(st_writer_write(&w, all + 7, 20, &e), 0, "%s", e.msg);
    cr_assert_eq(st_writer_write(&w, all + 27, 9, &e), 0, "%s", e.msg);
    cr_assert_eq(st_writer_close(&w, &e), 0, "%s", e.msg);

    st_file f;
    cr_assert_eq(st_file_open(&f, path, &e), 0, "%s", e.msg);
    cr_assert_eq(f.n_tensors, 3);
    const st_tensor *ta = st_file_find(&f, "a.weight"), *tb = st_file_find(&f, "b.bias"),
                    *tc = st_file_find(&f, "c.scalar");
    cr_assert(ta && tb && tc);
    cr_assert_eq(ta->dt, DT_BF16);
    cr_assert_eq(ta->ndim, 2);
    cr_assert_eq(ta->shape[0], 2);
    cr_assert_eq(ta->shape[1], 3);
    cr_assert_eq(ta->file_offset % 8, 0, "data region not 8-byte aligned");
    cr_assert_eq(memcmp(ta->data, a, 12), 0);
    cr_assert_eq(memcmp(tb->data, b, 20), 0);
    cr_assert_eq(tc->ndim, 0);
    cr_assert_eq(memcmp(tc->data, &c, 4), 0);
    cr_assert_eq(f.size, ta->file_offset + 36, "no trailing bytes");
    /* the header says format pt */
    uint64_t hl;
    memcpy(&hl, f.map, 8);
    cr_assert(memmem(f.map + 8, hl, "\"__metadata__\":{\"format\":\"pt\"}", 30));
    st_file_close(&f);
    free(path);
}

Test(synth, writer_refuses_byte_count_mismatch)
{
    char *path = tmp_path("short.safetensors");
    errbuf e = {{0}};
    st_writer w;
    int64_t s[1] = {4};
    cr_assert_eq(st_writer_open(&w, path, &e), 0, "%s", e.msg);
    cr_assert_eq(st_writer_add(&w, "x", DT_F32, 1, s, &e), 0, "%s", e.msg);
    cr_assert_eq(st_writer_begin_data(&w, &e), 0, "%s", e.msg);
    float v[4] = {1, 2, 3, 4};
    cr_assert_eq(st_writer_write(&w, v, 8, &e), 0, "%s", e.msg);
    cr_assert_neq(st_writer_close(&w, &e), 0, "a short write was accepted");
    cr_assert(strstr(e.msg, "16"), "message should give the declared size: %s", e.msg);
    cr_assert(!test_path_exists(path), "a short file was left under the final name");

    /* too many bytes fail at once */
    cr_assert_eq(st_writer_open(&w, path, &e), 0, "%s", e.msg);
    cr_assert_eq(st_writer_add(&w, "x", DT_F32, 1, s, &e), 0, "%s", e.msg);
    cr_assert_eq(st_writer_begin_data(&w, &e), 0, "%s", e.msg);
    float big[5] = {0};
    cr_assert_neq(st_writer_write(&w, big, sizeof big, &e), 0, "an overlong write was accepted");
    cr_assert_neq(st_writer_close(&w, &e), 0);
    cr_assert(!test_path_exists(path));

    /* no temporary files are left behind */
    DIR *d = opendir(tmp_root);
    struct dirent *de;
    while ((de = readdir(d)))
        cr_assert(!strstr(de->d_name, ".tmp."), "left over: %s", de->d_name);
    closedir(d);
    free(path);
}

/* ---- k2-tiny in each format --------------------------------------------- */

static void check_tiny_format(synth_format f, const char *fmt_name)
{
    char *dir = synth_into(fmt_name, f, 1, NULL, 0, 0);
    model_weights m;
    open_weights(&m, dir);
    const model_config *c = &m.cfg;
    cr_assert_eq(c->vocab_size, 1024);
    cr_assert_eq(c->hidden_size, 256);
    cr_assert_eq(c->n_layers, 4);
    cr_assert_eq(c->n_routed_experts, 32);
    cr_assert_eq(c->bos_token_id, 1000);
    cr_assert_eq(c->eos_token_ids[0], 1001);
    cr_assert_geq(m.ckpt.n_files, 2, "the tiny preset must produce at least 2 shards");
    cr_assert_eq(count_shards(dir), m.ckpt.n_files);
    uint64_t sum = 0;
    for (int i = 0; i < m.ckpt.n_tensors; i++)
        sum += m.ckpt.by_name[i]->nbytes;
    char path[4096];
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    cJSON *idx = test_read_json(path);
    const cJSON *ts = cJSON_GetObjectItem(cJSON_GetObjectItem(idx, "metadata"), "total_size");
    cr_assert(cJSON_IsNumber(ts));
    cr_assert_eq((uint64_t)ts->valuedouble, sum, "total_size %.0f != %llu", ts->valuedouble,
                 (unsigned long long)sum);
    if (f == SYNTH_INT4)
        cr_assert_eq(m.n_linear_by_format[WF_INT4_GROUP], 3 * 32 * 3);
    if (f == SYNTH_FP8)
        cr_assert_gt(m.n_linear_by_format[WF_FP8_BLOCK], 3 * 32 * 3);

    /* the tokenizer loads and matches the config */
    vocab v;
    errbuf e = {{0}};
    cr_assert_eq(vocab_load(&v, dir, &e), 0, "%s", e.msg);
    cr_assert_eq(v.n_vocab, 1024);
    cr_assert_eq(v.bos_id, 1000);
    cr_assert_eq(v.eos_id, 1001);
    vocab_free(&v);

    /* against the testdata checkpoint of the same format: same config (every
     * key and value), same tensor names, dtypes and shapes */
    char rel[64];
    snprintf(rel, sizeof rel, "k2-tiny-%s", fmt_name);
    char *ref = test_data_path(rel);
    char refcfg[4096];
    snprintf(refcfg, sizeof refcfg, "%s/config.json", ref);
    if (test_path_exists(refcfg)) {
        snprintf(path, sizeof path, "%s/config.json", dir);
        cJSON *mine = test_read_json(path), *theirs = test_read_json(refcfg);
        char *a = cJSON_PrintUnformatted(mine);
        cr_assert(cJSON_Compare(mine, theirs, 1), "config.json differs from %s:\n%s", refcfg, a);
        free(a);
        cJSON_Delete(mine);
        cJSON_Delete(theirs);
        model_config rc;
        cr_assert_eq(config_load(&rc, ref, &e), 0, "%s", e.msg);
        cr_assert_eq(memcmp(&rc, c, sizeof rc), 0, "parsed config differs from the testdata's");
        checkpoint ck;
        cr_assert_eq(checkpoint_open(&ck, ref, &e), 0, "%s", e.msg);
        cr_assert_eq(ck.n_tensors, m.ckpt.n_tensors);
        for (int i = 0; i < ck.n_tensors; i++) {
            const st_tensor *r = ck.by_name[i], *t = m.ckpt.by_name[i];
            char dr[96], dt[96];
            cr_assert_str_eq(t->name, r->name);
            cr_assert_str_eq(st_tensor_describe(t, dt, sizeof dt), st_tensor_describe(r, dr, sizeof dr),
                             "%s", t->name);
        }
        checkpoint_close(&ck);
    }
    free(ref);
    cJSON_Delete(idx);
    model_weights_close(&m);
    free(dir);
}

Test(synth, tiny_bf16_loads)
{
    check_tiny_format(SYNTH_BF16, "bf16");
}

Test(synth, tiny_fp8_loads)
{
    check_tiny_format(SYNTH_FP8, "fp8");
}

Test(synth, tiny_int4_loads)
{
    check_tiny_format(SYNTH_INT4, "int4");
}

/* ---- determinism -------------------------------------------------------- */

static int files_equal(const char *a, const char *b)
{
    size_t na, nb;
    char *x = test_read_file(a, &na), *y = test_read_file(b, &nb);
    int eq = x && y && na == nb && memcmp(x, y, na) == 0;
    free(x);
    free(y);
    return eq;
}

Test(synth, same_seed_same_bytes)
{
    char *d1 = synth_into("s7a", SYNTH_FP8, 7, NULL, 0, 0);
    char *d2 = synth_into("s7b", SYNTH_FP8, 7, NULL, 0, 0);
    char *d3 = synth_into("s8", SYNTH_FP8, 8, NULL, 0, 0);
    DIR *d = opendir(d1);
    struct dirent *de;
    int n = 0;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.')
            continue;
        char a[4096], b[4096], c[4096];
        snprintf(a, sizeof a, "%s/%s", d1, de->d_name);
        snprintf(b, sizeof b, "%s/%s", d2, de->d_name);
        snprintf(c, sizeof c, "%s/%s", d3, de->d_name);
        cr_assert(files_equal(a, b), "%s differs between two runs with the same seed", de->d_name);
        if (strstr(de->d_name, ".safetensors") && !strstr(de->d_name, "index"))
            cr_assert(!files_equal(a, c), "%s is the same with another seed", de->d_name);
        n++;
    }
    closedir(d);
    cr_assert_geq(n, 6);
    free(d1);
    free(d2);
    free(d3);
}

Test(synth, values_independent_of_sharding)
{
    char *d1 = synth_into("auto", SYNTH_INT4, 3, NULL, 0, 0);
    char *d2 = synth_into("small", SYNTH_INT4, 3, NULL, 0, 1.0);
    errbuf e = {{0}};
    checkpoint a, b;
    cr_assert_eq(checkpoint_open(&a, d1, &e), 0, "%s", e.msg);
    cr_assert_eq(checkpoint_open(&b, d2, &e), 0, "%s", e.msg);
    cr_assert_gt(b.n_files, a.n_files, "--shard-mb 1 should give more shards");
    for (int i = 0; i < b.n_files; i++)
        cr_assert_leq(b.files[i].size, 1000000 + 600000,
                      "a 1 MB shard holds more than its largest tensor");
    cr_assert_eq(a.n_tensors, b.n_tensors);
    for (int i = 0; i < a.n_tensors; i++) {
        const st_tensor *x = a.by_name[i], *y = b.by_name[i];
        cr_assert_str_eq(x->name, y->name);
        cr_assert_eq(x->nbytes, y->nbytes);
        cr_assert_eq(memcmp(x->data, y->data, x->nbytes), 0, "%s differs", x->name);
    }
    checkpoint_close(&a);
    checkpoint_close(&b);
    free(d1);
    free(d2);
}

/* ---- quantization ------------------------------------------------------- */

static const st_tensor *find(const checkpoint *ck, const char *name)
{
    const st_tensor *t = checkpoint_find(ck, name);
    cr_assert_not_null(t, "missing tensor %s", name);
    return t;
}

/* Every block of an FP8 weight: scale_inv = amax/448 and q = e4m3(w / scale)
 * exactly, and the dequantized value within E4M3 rounding of w. */
static void check_fp8_weight(const model_weights *m, uint64_t seed, const char *name)
{
    const checkpoint *ck = &m->ckpt;
    const st_tensor *q = find(ck, name);
    char sn[256];
    snprintf(sn, sizeof sn, "%s_scale_inv", name);
    const st_tensor *s = find(ck, sn);
    cr_assert_eq(q->dt, DT_F8_E4M3);
    int64_t rows = q->shape[0], cols = q->shape[1], sc = s->shape[1];
    cr_assert_eq(s->shape[0], (rows + 127) / 128);
    cr_assert_eq(sc, (cols + 127) / 128);
    float *w = malloc((size_t)(rows * cols) * sizeof *w);
    errbuf e = {{0}};
    cr_assert_eq(synth_tensor_values(seed, &m->cfg, name, 0, (uint64_t)(rows * cols), w, &e), 0,
                 "%s", e.msg);
    for (int64_t rb = 0; rb < s->shape[0]; rb++)
        for (int64_t cb = 0; cb < sc; cb++) {
            float scale, amax = 0;
            memcpy(&scale, s->data + 4 * (rb * sc + cb), 4);
            for (int64_t r = rb * 128; r < rows && r < rb * 128 + 128; r++)
                for (int64_t j = cb * 128; j < cols && j < cb * 128 + 128; j++)
                    amax = fmaxf(amax, fabsf(w[r * cols + j]));
            cr_assert_eq(scale, amax / 448.0f, "%s block (%lld, %lld): scale %g, amax/448 %g", name,
                         (long long)rb, (long long)cb, scale, amax / 448.0f);
            for (int64_t r = rb * 128; r < rows && r < rb * 128 + 128; r++)
                for (int64_t j = cb * 128; j < cols && j < cb * 128 + 128; j++) {
                    float v = w[r * cols + j];
                    uint8_t code = q->data[r * cols + j];
                    cr_assert_eq(code, f32_to_e4m3(v / scale), "%s[%lld][%lld]", name,
                                 (long long)r, (long long)j);
                    float deq = e4m3_to_f32(code) * scale;
                    /* E4M3: 3 mantissa bits (half ulp 2^-4 relative), subnormal
                     * step 2^-9 */
                    float tol = fabsf(v) * 0.0625f + scale * (1.0f / 1024.0f) + 1e-30f;
                    cr_assert_leq(fabsf(deq - v), tol, "%s[%lld][%lld]: %g vs %g", name,
                                  (long long)r, (long long)j, deq, v);
                }
        }
    free(w);
}

Test(synth, fp8_blocks_quantize_exactly)
{
    char *dir = synth_into("fp8q", SYNTH_FP8, 11, NULL, 0, 0);
    model_weights m;
    open_weights(&m, dir);
    check_fp8_weight(&m, 11, "model.layers.1.mlp.experts.5.gate_proj.weight");
    check_fp8_weight(&m, 11, "model.layers.2.mlp.experts.31.down_proj.weight");
    check_fp8_weight(&m, 11, "model.layers.0.self_attn.kv_a_proj_with_mqa.weight"); /* 80 rows */
    check_fp8_weight(&m, 11, "model.layers.0.mlp.down_proj.weight");
    check_fp8_weight(&m, 11, "model.layers.3.mlp.shared_experts.up_proj.weight");
    /* unquantized roles stay BF16 */
    cr_assert_eq(find(&m.ckpt, "model.layers.1.mlp.gate.weight")->dt, DT_BF16);
    cr_assert_eq(find(&m.ckpt, "lm_head.weight")->dt, DT_BF16);
    cr_assert_eq(find(&m.ckpt, "model.layers.1.mlp.gate.e_score_correction_bias")->dt, DT_F32);
    model_weights_close(&m);
    free(dir);
}

static void check_int4_weight(const model_weights *m, uint64_t seed, const char *base)
{
    const checkpoint *ck = &m->ckpt;
    char n[256];
    snprintf(n, sizeof n, "%s.weight_packed", base);
    const st_tensor *p = find(ck, n);
    snprintf(n, sizeof n, "%s.weight_scale", base);
    const st_tensor *s = find(ck, n);
    snprintf(n, sizeof n, "%s.weight_shape", base);
    const st_tensor *sh = find(ck, n);
    int32_t shape[2];
    memcpy(shape, sh->data, 8);
    int64_t rows = shape[0], cols = shape[1], words = (cols + 7) / 8, ng = (cols + 31) / 32;
    cr_assert_eq(p->shape[0], rows);
    cr_assert_eq(p->shape[1], words);
    cr_assert_eq(s->shape[1], ng);
    float *w = malloc((size_t)(rows * cols) * sizeof *w);
    errbuf e = {{0}};
    snprintf(n, sizeof n, "%s.weight", base);
    cr_assert_eq(synth_tensor_values(seed, &m->cfg, n, 0, (uint64_t)(rows * cols), w, &e), 0, "%s",
                 e.msg);
    uint32_t *repack = calloc((size_t)words, sizeof *repack);
    for (int64_t r = 0; r < rows; r++) {
        memset(repack, 0, (size_t)words * sizeof *repack);
        for (int64_t j = 0; j < words * 8; j++) {
            uint32_t word;
            memcpy(&word, p->data + 4 * (r * words + j / 8), 4);
            int q = (int)((word >> (4 * (j % 8))) & 0xF) - 8;
            if (j >= cols) {
                cr_assert_eq(q, 0);
                repack[j / 8] |= 8u << (4 * (j % 8));
                continue;
            }
            uint16_t sb;
            memcpy(&sb, s->data + 2 * (r * ng + j / 32), 2);
            float scale = bf16_to_f32(sb), amax = 0;
            for (int64_t k = j / 32 * 32; k < cols && k < j / 32 * 32 + 32; k++)
                amax = fmaxf(amax, fabsf(w[r * cols + k]));
            cr_assert_eq(sb, f32_to_bf16(amax / 7.0f), "%s scale [%lld][%lld]", base, (long long)r,
                         (long long)(j / 32));
            float v = w[r * cols + j];
            long want = lrintf(v / scale);
            want = want < -8 ? -8 : want > 7 ? 7 : want;
            cr_assert_eq(q, want, "%s[%lld][%lld]: q %d, want %ld", base, (long long)r,
                         (long long)j, q, want);
            cr_assert_leq(fabsf(q * scale - v), 0.5f * scale * 1.02f + fabsf(v - 7 * scale) * (q == 7),
                          "%s[%lld][%lld]", base, (long long)r, (long long)j);
            /* nibble u = q + 8 at bits [4k, 4k+4) of word j / 8 */
            repack[j / 8] |= (uint32_t)(q + 8) << (4 * (j % 8));
        }
        cr_assert_eq(memcmp(repack, p->data + 4 * r * words, (size_t)words * 4), 0,
                     "%s row %lld does not re-pack to the same words", base, (long long)r);
    }
    free(repack);
    free(w);
}

Test(synth, int4_packing_roundtrips)
{
    char *dir = synth_into("int4q", SYNTH_INT4, 5, NULL, 0, 0);
    model_weights m;
    open_weights(&m, dir);
    check_int4_weight(&m, 5, "model.layers.1.mlp.experts.0.gate_proj");
    check_int4_weight(&m, 5, "model.layers.3.mlp.experts.17.down_proj");
    /* only routed experts are quantized */
    cr_assert_eq(find(&m.ckpt, "model.layers.1.mlp.shared_experts.up_proj.weight")->dt, DT_BF16);
    cr_assert_eq(find(&m.ckpt, "model.layers.0.self_attn.o_proj.weight")->dt, DT_BF16);
    cr_assert_null(checkpoint_find(&m.ckpt, "model.layers.1.mlp.experts.0.gate_proj.weight"));
    model_weights_close(&m);
    free(dir);
}

/* ---- overrides ---------------------------------------------------------- */

Test(synth, set_q_lora_rank_null)
{
    const char *sets[] = {"q_lora_rank=null"};
    char *dir = synth_into("noqlora", SYNTH_FP8, 1, sets, 1, 0);
    model_weights m;
    open_weights(&m, dir);
    cr_assert_eq(m.cfg.q_lora_rank, 0);
    cr_assert_not_null(checkpoint_find(&m.ckpt, "model.layers.0.self_attn.q_proj.weight"));
    cr_assert_not_null(checkpoint_find(&m.ckpt, "model.layers.0.self_attn.q_proj.weight_scale_inv"));
    cr_assert_null(checkpoint_find(&m.ckpt, "model.layers.0.self_attn.q_a_proj.weight"));
    cr_assert_eq(m.layers[0].q_proj.rows, 4 * 48);
    model_weights_close(&m);
    free(dir);
}

Test(synth, set_groups_and_dense_layers)
{
    const char *sets[] = {"n_group=4", "topk_group=2", "first_k_dense_replace=2"};
    char *dir = synth_into("groups", SYNTH_INT4, 1, sets, 3, 0);
    model_weights m;
    open_weights(&m, dir);
    cr_assert_eq(m.cfg.n_group, 4);
    cr_assert_eq(m.cfg.topk_group, 2);
    cr_assert_eq(m.cfg.first_k_dense, 2);
    cr_assert(!m.layers[1].is_moe);
    cr_assert(m.layers[2].is_moe);
    cr_assert_not_null(checkpoint_find(&m.ckpt, "model.layers.1.mlp.gate_proj.weight"));
    cr_assert_null(checkpoint_find(&m.ckpt, "model.layers.1.mlp.experts.0.up_proj.weight_packed"));
    cr_assert_not_null(checkpoint_find(&m.ckpt, "model.layers.2.mlp.experts.0.up_proj.weight_packed"));
    model_weights_close(&m);
    free(dir);
}

Test(synth, set_hidden_200_partial_blocks)
{
    const char *sets[] = {"hidden_size=200"};
    char *dir = synth_into("h200", SYNTH_FP8, 2, sets, 1, 0);
    model_weights m;
    open_weights(&m, dir);
    cr_assert_eq(m.cfg.hidden_size, 200);
    const st_tensor *s = find(&m.ckpt, "model.layers.0.self_attn.o_proj.weight_scale_inv");
    cr_assert_eq(s->shape[0], 2);
    cr_assert_eq(s->shape[1], 1);
    /* partial blocks on both edges */
    check_fp8_weight(&m, 2, "model.layers.0.self_attn.o_proj.weight");           /* [200, 128] */
    check_fp8_weight(&m, 2, "model.layers.0.self_attn.kv_a_proj_with_mqa.weight"); /* [80, 200] */
    check_fp8_weight(&m, 2, "model.layers.2.mlp.experts.9.down_proj.weight");     /* [200, 128] */
    model_weights_close(&m);
    free(dir);

    /* int4 with 200 inputs: 25 words, 7 groups (the last one partial) */
    dir = synth_into("h200i4", SYNTH_INT4, 2, sets, 1, 0);
    open_weights(&m, dir);
    check_int4_weight(&m, 2, "model.layers.1.mlp.experts.3.gate_proj");
    model_weights_close(&m);
    free(dir);
}

Test(synth, layers_option)
{
    char *dir = NULL;
    cr_assert(asprintf(&dir, "%s/two", tmp_root) > 0);
    synth_options o = synth_options_default();
    o.out_dir = dir;
    o.layers = 2;
    errbuf e = {{0}};
    cr_assert_eq(synth_run(&o, &e), 0, "%s", e.msg);
    model_weights m;
    open_weights(&m, dir);
    cr_assert_eq(m.cfg.n_layers, 2);
    model_weights_close(&m);
    free(dir);
}

/* ---- refusals ----------------------------------------------------------- */

Test(synth, k2_refuses_without_force)
{
    char *dir = tmp_path("k2");
    synth_options o = synth_options_default();
    o.preset = "k2";
    o.format = SYNTH_INT4;
    o.out_dir = dir;
    errbuf e = {{0}};
    cr_assert_neq(synth_run(&o, &e), 0, "the full k2 preset ran without --force");
    cr_assert(strstr(e.msg, "GB"), "message should give the size in GB: %s", e.msg);
    cr_assert(strstr(e.msg, "force"), "message should mention --force: %s", e.msg);
    cr_assert(!test_path_exists(dir), "nothing may be written");
    free(dir);
}

Test(synth, unknown_set_key)
{
    const char *sets[] = {"n_experts_total=4"};
    synth_options o = synth_options_default();
    o.out_dir = tmp_path("bad");
    o.sets = sets;
    o.n_sets = 1;
    errbuf e = {{0}};
    cr_assert_neq(synth_run(&o, &e), 0);
    cr_assert(strstr(e.msg, "n_experts_total"), "message should name the key: %s", e.msg);

    const char *nested[] = {"rope_scaling.fator=4"};
    o.sets = nested;
    cr_assert_neq(synth_run(&o, &e), 0);
    cr_assert(strstr(e.msg, "rope_scaling.fator"), "%s", e.msg);

    const char *typed[] = {"hidden_size=big"};
    o.sets = typed;
    cr_assert_neq(synth_run(&o, &e), 0);
    cr_assert(strstr(e.msg, "hidden_size"), "%s", e.msg);

    /* valid keys, invalid result: config_parse decides */
    const char *bad[] = {"num_experts_per_tok=64"};
    o.sets = bad;
    cr_assert_neq(synth_run(&o, &e), 0);
    cr_assert(strstr(e.msg, "num_experts_per_tok"), "%s", e.msg);

    /* a number past a double's range would be written as null: the default */
    const char *huge[] = {"rope_theta=1e400"};
    o.sets = huge;
    cr_assert_neq(synth_run(&o, &e), 0);
    cr_assert(strstr(e.msg, "rope_theta=1e400: not a finite number"), "%s", e.msg);

    const char *contra[] = {"quantization_config=null"};
    o.sets = contra;
    o.format = SYNTH_FP8;
    cr_assert_neq(synth_run(&o, &e), 0);
    cr_assert(strstr(e.msg, "quantization_config"), "%s", e.msg);
    cr_assert(!test_path_exists(o.out_dir));
    free((char *)o.out_dir);
}

Test(synth, nested_and_string_sets)
{
    const char *sets[] = {"rope_scaling.factor=40", "rms_norm_eps=1e-5", "scoring_func=\"sigmoid\"",
                          "topk_method=noaux_tc", "eos_token_id=[1001, 1002]"};
    char *json = NULL;
    synth_options o = synth_options_default();
    o.sets = sets;
    o.n_sets = 5;
    model_config c;
    errbuf e = {{0}};
    cr_assert_eq(synth_config_json(&o, &json, &c, &e), 0, "%s", e.msg);
    cr_assert_eq(c.rope.factor, 40.0);
    cr_assert_eq(c.rms_norm_eps, 1e-5);
    cr_assert_eq(c.n_eos, 2);
    cr_assert_eq(c.eos_token_ids[1], 1002);
    free(json);
}

Test(synth, refuses_to_overwrite_without_force)
{
    char *dir = synth_into("again", SYNTH_BF16, 1, NULL, 0, 0);
    synth_options o = synth_options_default();
    o.out_dir = dir;
    o.format = SYNTH_INT4;
    errbuf e = {{0}};
    cr_assert_neq(synth_run(&o, &e), 0, "an existing checkpoint was overwritten");
    cr_assert(strstr(e.msg, "force"), "%s", e.msg);
    o.force = 1;
    cr_assert_eq(synth_run(&o, &e), 0, "%s", e.msg);
    model_weights m;
    open_weights(&m, dir);
    cr_assert_eq(m.cfg.quant, QUANT_INT4_PACKED);
    model_weights_close(&m);
    free(dir);
}

/* --force replaces synth's own files only: a user's file whose name merely
 * starts like a shard's stays; an interrupted synth's temporary shard (its
 * process gone) goes at the next synth into the directory, with or without
 * --force, and a running one's stays. */
Test(synth, replaces_only_its_own_files)
{
    char *dir = synth_into("own", SYNTH_BF16, 1, NULL, 0, 0);
    static const char *const kept[] = {"model-finetuned.safetensors", "model_lora.safetensors.bak",
                                       "modelcard.safetensors.txt", "model-00001-of-00002.safetensors.bak"};
    char path[4200];
    for (size_t i = 0; i < sizeof kept / sizeof *kept; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, kept[i]);
        test_write_file(path, "mine", 4);
    }
    /* a temporary shard of a process that is gone (PIDs are below 2^22) */
    snprintf(path, sizeof path, "%s/model-00003-of-00003.safetensors.tmp.99999999", dir);
    test_write_file(path, "x", 1);
    synth_options o = synth_options_default();
    o.out_dir = dir;
    o.force = 1;
    o.shard_mb = 5;
    errbuf e = {{0}};
    cr_assert_eq(synth_run(&o, &e), 0, "%s", e.msg);
    for (size_t i = 0; i < sizeof kept / sizeof *kept; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, kept[i]);
        cr_expect(test_path_exists(path), "--force removed %s", kept[i]);
    }
    snprintf(path, sizeof path, "%s/model-00003-of-00003.safetensors.tmp.99999999", dir);
    cr_expect(!test_path_exists(path), "a gone synth's temporary shard stayed");
    /* without --force, into a new directory holding a gone synth's leftover */
    char *fresh = NULL;
    cr_assert(asprintf(&fresh, "%s/out/fresh", tmp_root) > 0);
    cr_assert_eq(mkdir(fresh, 0755), 0);
    snprintf(path, sizeof path, "%s/model-00001-of-00002.safetensors.tmp.99999999", fresh);
    test_write_file(path, "x", 1);
    char live[4200];    /* (the parent's: running, and writing no shard here) */
    snprintf(live, sizeof live, "%s/model-00002-of-00002.safetensors.tmp.%ld", fresh, (long)getppid());
    test_write_file(live, "x", 1);
    o = synth_options_default();
    o.out_dir = fresh;
    cr_assert_eq(synth_run(&o, &e), 0, "%s", e.msg);
    cr_expect(!test_path_exists(path), "a gone synth's temporary shard stayed");
    cr_expect(test_path_exists(live), "a running synth's temporary shard was removed");
    free(fresh);
    free(dir);
}

/* A shard limit past what 64 bits count is one shard (it was a cast out of
 * range: a shard per tensor). */
Test(synth, a_huge_shard_limit_is_one_shard)
{
    char *dir = synth_into("huge-shards", SYNTH_BF16, 1, NULL, 0, 1e30);
    cr_expect_eq(count_shards(dir), 1);
    free(dir);
}

Test(synth, estimates)
{
    synth_options o = synth_options_default();
    uint64_t b;
    errbuf e = {{0}};
    o.preset = "k2-slice";
    o.format = SYNTH_INT4;
    cr_assert_eq(synth_estimate_bytes(&o, &b, &e), 0, "%s", e.msg);
    /* 384 experts x 3 x 7168 x 2048 at 4.5 bits (9.5 GB), embeddings and lm_head
     * in BF16 (4.7 GB), the dense layer and attention (1.5 GB) */
    cr_assert(b > 14e9 && b < 17e9, "k2-slice int4 2 layers: %.2f GB", b / 1e9);
    o.preset = "k2";
    cr_assert_eq(synth_estimate_bytes(&o, &b, &e), 0, "%s", e.msg);
    cr_assert(b > 5e11 && b < 7e11, "k2 int4: %.1f GB", b / 1e9);
    o.format = SYNTH_FP8;
    cr_assert_eq(synth_estimate_bytes(&o, &b, &e), 0, "%s", e.msg);
    cr_assert(b > 9e11 && b < 1.2e12, "k2 fp8: %.1f GB", b / 1e9);
    o.preset = "k2-tiny";
    o.format = SYNTH_BF16;
    cr_assert_eq(synth_estimate_bytes(&o, &b, &e), 0, "%s", e.msg);
    cr_assert(b > 22370752 && b < 23500000, "k2-tiny bf16: %llu", (unsigned long long)b);
    o.preset = "k3";
    cr_assert_neq(synth_estimate_bytes(&o, &b, &e), 0);
    cr_assert(strstr(e.msg, "k3"), "%s", e.msg);
}

/* ---- stored values ------------------------------------------------------ */

/* A BF16/F32 tensor holds the generator's values rounded; returns their mean
 * and standard deviation. */
static void check_plain_tensor(const model_weights *m, uint64_t seed, const char *name,
                               double *mean, double *sd)
{
    const st_tensor *t = find(&m->ckpt, name);
    float *w = malloc((size_t)t->numel * sizeof *w);
    errbuf e = {{0}};
    cr_assert_eq(synth_tensor_values(seed, &m->cfg, name, 0, t->numel, w, &e), 0, "%s", e.msg);
    double s = 0, ss = 0;
    for (uint64_t i = 0; i < t->numel; i++) {
        if (t->dt == DT_BF16) {
            uint16_t h;
            memcpy(&h, t->data + 2 * i, 2);
            cr_assert_eq(h, f32_to_bf16(w[i]), "%s[%llu]", name, (unsigned long long)i);
        } else {
            cr_assert_eq(t->dt, DT_F32);
            cr_assert_eq(memcmp(t->data + 4 * i, &w[i], 4), 0, "%s[%llu]", name,
                         (unsigned long long)i);
        }
        s += w[i];
        ss += (double)w[i] * w[i];
    }
    *mean = s / (double)t->numel;
    *sd = sqrt(ss / (double)t->numel - *mean * *mean);
    free(w);
}

Test(synth, values_are_scaled)
{
    char *dir = synth_into("scaled", SYNTH_BF16, 9, NULL, 0, 0);
    model_weights m;
    open_weights(&m, dir);
    double mean, sd;
    check_plain_tensor(&m, 9, "model.embed_tokens.weight", &mean, &sd);
    cr_assert(fabs(mean) < 0.01 && fabs(sd - 1) < 0.02, "embedding mean %g std %g", mean, sd);
    check_plain_tensor(&m, 9, "model.layers.1.mlp.experts.2.down_proj.weight", &mean, &sd);
    cr_assert(fabs(sd * sqrt(128) - 1) < 0.03, "down_proj std %g, want 1/sqrt(128)", sd);
    check_plain_tensor(&m, 9, "model.layers.0.mlp.down_proj.weight", &mean, &sd);
    cr_assert(fabs(sd * sqrt(512) - 1) < 0.03, "dense down_proj std %g, want 1/sqrt(512)", sd);
    check_plain_tensor(&m, 9, "model.layers.2.mlp.gate.weight", &mean, &sd);
    cr_assert(fabs(sd * sqrt(256) - 1) < 0.03, "router std %g, want 1/sqrt(256)", sd);
    check_plain_tensor(&m, 9, "model.layers.2.input_layernorm.weight", &mean, &sd);
    cr_assert(fabs(mean - 1) < 0.01 && sd > 0.005 && sd < 0.05, "norm mean %g std %g", mean, sd);
    check_plain_tensor(&m, 9, "model.layers.2.mlp.gate.e_score_correction_bias", &mean, &sd);
    cr_assert(sd > 0.005 && sd < 0.02, "router bias std %g", sd);
    check_plain_tensor(&m, 9, "lm_head.weight", &mean, &sd);
    cr_assert(fabs(sd * sqrt(256) - 1) < 0.03, "lm_head std %g", sd);
    /* the unused rotary buffer of the bf16/fp8 layouts: base frequencies */
    const st_tensor *f = find(&m.ckpt, "model.layers.0.self_attn.rotary_emb.inv_freq");
    cr_assert_eq(f->numel, 8);
    uint16_t h;
    memcpy(&h, f->data, 2);
    cr_assert_eq(bf16_to_f32(h), 1.0f);
    model_weights_close(&m);
    free(dir);
}
