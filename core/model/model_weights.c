/* model_weights: tensor lookup, format detection and validation (see model_weights.h). */
#include "model_weights.h"

#include <limits.h>
#include <math.h>
#include <numa.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "dtype.h"

/* A matrix the kernels read in place: [r, c]; and not behind a header left
 * unpadded (safetensors writers pad it to 8 bytes, so that a file whose
 * tensors come largest element first has every one aligned; without that,
 * all of them would be read at misaligned addresses). */
static int expect_matrix(const checkpoint *ck, const st_tensor *t, int64_t r, int64_t c, errbuf *e)
{
    char d[96];
    if (t->ndim != 2 || t->shape[0] != r || t->shape[1] != c)
        return err_set(e, "%s: tensor '%s' is %s, expected shape [%lld, %lld]",
                       checkpoint_path_of(ck, t), t->name, st_tensor_describe(t, d, sizeof d),
                       (long long)r, (long long)c);
    int elem = dtype_bits(t->dt) / 8;
    uint64_t data_start = ck->files[t->file_index].data_start;
    if (elem > 1 && t->file_offset % (uint64_t)elem && data_start % 8)
        return err_set(e, "%s: tensor '%s' (%s) starts at byte %llu of the file, not a multiple of "
                       "its %d-byte elements: the file's header (%llu bytes) is not padded to a "
                       "multiple of 8 as safetensors writers pad it (save the file again)",
                       checkpoint_path_of(ck, t), t->name, dtype_name(t->dt),
                       (unsigned long long)t->file_offset, elem,
                       (unsigned long long)(data_start - 8));
    return 0;
}

static int expect_dtype(const checkpoint *ck, const st_tensor *t, dtype want, errbuf *e)
{
    if (t->dt == want)
        return 0;
    return err_set(e, "%s: tensor '%s' has dtype %s, expected %s", checkpoint_path_of(ck, t),
                   t->name, dtype_name(t->dt), dtype_name(want));
}

static const st_tensor *find_suffix(const checkpoint *ck, const char *base, const char *suffix)
{
    char name[512];
    snprintf(name, sizeof name, "%s.%s", base, suffix);
    return checkpoint_find(ck, name);
}

/* Builds the view of Linear `base` (without ".weight"), whatever its format, and
 * checks it is [rows, cols]. */
static int resolve_linear(const model_weights *m, const char *base, int rows, int cols,
                          linear_weight *w, errbuf *e)
{
    const checkpoint *ck = &m->ckpt;
    const model_config *c = &m->cfg;
    memset(w, 0, sizeof *w);
    w->rows = rows;
    w->cols = cols;
    const st_tensor *t = find_suffix(ck, base, "weight");
    if (t) {
        if (expect_matrix(ck, t, rows, cols, e))
            return -1;
        w->data = t->data;
        switch (t->dt) {
        case DT_F32: w->fmt = WF_F32; return 0;
        case DT_F16: w->fmt = WF_F16; return 0;
        case DT_BF16: w->fmt = WF_BF16; return 0;
        case DT_F8_E4M3: break;
        default:
            return err_set(e, "%s: tensor '%s' has dtype %s; a Linear weight must be F32, F16, "
                           "BF16 or F8_E4M3", checkpoint_path_of(ck, t), t->name, dtype_name(t->dt));
        }
        if (c->quant != QUANT_FP8_BLOCK)
            return err_set(e, "%s: tensor '%s' is F8_E4M3 but config.json has no fp8 "
                           "quantization_config (weight_block_size unknown)",
                           checkpoint_path_of(ck, t), t->name);
        const st_tensor *s = find_suffix(ck, base, "weight_scale_inv");
        if (!s)
            return err_set(e, "%s: missing tensor '%s.weight_scale_inv' (scales of the FP8 weight)",
                           ck->dir, base);
        int br = c->fp8_block_rows, bc = c->fp8_block_cols;
        if (expect_dtype(ck, s, DT_F32, e) ||
            expect_matrix(ck, s, (rows + br - 1) / br, (cols + bc - 1) / bc, e))
            return -1;
        w->fmt = WF_FP8_BLOCK;
        w->scale = s->data;
        w->block_rows = br;
        w->block_cols = bc;
        w->scale_cols = (cols + bc - 1) / bc;
        return 0;
    }
    const st_tensor *p = find_suffix(ck, base, "weight_packed");
    if (!p)
        return err_set(e, "%s: missing tensor '%s.weight'", ck->dir, base);
    if (c->quant != QUANT_INT4_PACKED)
        return err_set(e, "%s: tensor '%s' is pack-quantized but config.json has no "
                       "compressed-tensors quantization_config", checkpoint_path_of(ck, p), p->name);
    const st_tensor *s = find_suffix(ck, base, "weight_scale");
    const st_tensor *sh = find_suffix(ck, base, "weight_shape");
    if (!s || !sh)
        return err_set(e, "%s: missing tensor '%s.%s' (int4 pack-quantized weights need "
                       "weight_packed, weight_scale and weight_shape)",
                       ck->dir, base, s ? "weight_shape" : "weight_scale");
    /* (I32 as Kimi's checkpoints hold it; I64 as compressed-tensors writes
     * a torch shape by default) */
    if (sh->dt != DT_I32 && sh->dt != DT_I64)
        return err_set(e, "%s: tensor '%s' has dtype %s, expected I32 or I64",
                       checkpoint_path_of(ck, sh), sh->name, dtype_name(sh->dt));
    if (sh->numel != 2)
        return err_set(e, "%s: tensor '%s' must hold 2 values [out, in]", checkpoint_path_of(ck, sh),
                       sh->name);
    long long shape[2];
    for (int k = 0; k < 2; k++) {
        int32_t v32;
        int64_t v64;
        if (sh->dt == DT_I32)
            memcpy(&v32, sh->data + 4 * k, 4), shape[k] = v32;
        else
            memcpy(&v64, sh->data + 8 * k, 8), shape[k] = v64;
    }
    if (shape[0] != rows || shape[1] != cols)
        return err_set(e, "%s: tensor '%s' says [%lld, %lld], expected [%d, %d]",
                       checkpoint_path_of(ck, sh), sh->name, shape[0], shape[1], rows, cols);
    int gs = c->int4_group_size;
    if (expect_dtype(ck, p, DT_I32, e) || expect_matrix(ck, p, rows, (cols + 7) / 8, e) ||
        expect_dtype(ck, s, DT_BF16, e) || expect_matrix(ck, s, rows, (cols + gs - 1) / gs, e))
        return -1;
    w->fmt = WF_INT4_GROUP;
    w->data = p->data;
    w->scale = s->data;
    w->group_size = gs;
    w->row_words = (cols + 7) / 8;
    w->scale_cols = (cols + gs - 1) / gs;
    return 0;
}

/* A 1-D vector (norm weight, router bias) converted to a malloc'd float array. */
static int resolve_vector(const model_weights *m, const char *name, int n, float **out, errbuf *e)
{
    const checkpoint *ck = &m->ckpt;
    const st_tensor *t = checkpoint_find(ck, name);
    *out = NULL;
    if (!t)
        return err_set(e, "%s: missing tensor '%s'", ck->dir, name);
    if (t->ndim != 1 || t->shape[0] != n) {
        char d[96];
        return err_set(e, "%s: tensor '%s' is %s, expected shape [%d]", checkpoint_path_of(ck, t),
                       name, st_tensor_describe(t, d, sizeof d), n);
    }
    float *v = malloc((size_t)n * sizeof *v);
    if (!v)
        return err_set(e, "out of memory");
    for (int i = 0; i < n; i++) {
        if (t->dt == DT_F32)
            memcpy(&v[i], t->data + 4 * (size_t)i, 4);
        else if (t->dt == DT_BF16 || t->dt == DT_F16) {
            uint16_t h;
            memcpy(&h, t->data + 2 * (size_t)i, 2);
            v[i] = t->dt == DT_BF16 ? bf16_to_f32(h) : f16_to_f32(h);
        } else {
            free(v);
            return err_set(e, "%s: tensor '%s' has dtype %s, expected F32, BF16 or F16",
                           checkpoint_path_of(ck, t), name, dtype_name(t->dt));
        }
        if (!isfinite(v[i])) {      /* norms and router biases of a sound checkpoint never are */
            double bad = v[i];
            free(v);
            return err_set(e, "%s: tensor '%s' holds %g at index %d: the checkpoint is damaged",
                           checkpoint_path_of(ck, t), name, bad, i);
        }
    }
    *out = v;
    return 0;
}

static void count_weight(model_weights *m, const linear_weight *w, int expert)
{
    (expert ? m->expert_bytes_by_format : m->bytes_by_format)[w->fmt] += linear_weight_bytes(w);
    m->n_linear_by_format[w->fmt]++;
    *(expert ? &m->expert_elements : &m->dense_elements) += (uint64_t)w->rows * (uint64_t)w->cols;
}

static int resolve_ffn(model_weights *m, const char *base, int inter, ffn_weights *f, errbuf *e)
{
    char n[256];
    int h = m->cfg.hidden_size;
    snprintf(n, sizeof n, "%s.gate_proj", base);
    if (resolve_linear(m, n, inter, h, &f->gate, e))
        return -1;
    snprintf(n, sizeof n, "%s.up_proj", base);
    if (resolve_linear(m, n, inter, h, &f->up, e))
        return -1;
    snprintf(n, sizeof n, "%s.down_proj", base);
    return resolve_linear(m, n, h, inter, &f->down, e);
}

static int resolve_layer(model_weights *m, int l, errbuf *e)
{
    const model_config *c = &m->cfg;
    layer_weights *L = &m->layers[l];
    char p[128], n[256];
    snprintf(p, sizeof p, "model.layers.%d", l);
    int h = c->hidden_size, H = c->n_heads;
    int qk = c->qk_nope_dim + c->qk_rope_dim;
#define LIN(field, suffix, r, cc)                                                                  \
    do {                                                                                           \
        snprintf(n, sizeof n, "%s.%s", p, suffix);                                                 \
        if (resolve_linear(m, n, r, cc, &L->field, e))                                             \
            return -1;                                                                             \
        count_weight(m, &L->field, 0);                                                             \
    } while (0)
#define VEC(field, suffix, len)                                                                    \
    do {                                                                                           \
        snprintf(n, sizeof n, "%s.%s", p, suffix);                                                 \
        if (resolve_vector(m, n, len, &L->field, e))                                               \
            return -1;                                                                             \
    } while (0)
    VEC(attn_norm, "input_layernorm.weight", h);
    VEC(ffn_norm, "post_attention_layernorm.weight", h);
    if (c->q_lora_rank > 0) {
        LIN(q_a, "self_attn.q_a_proj", c->q_lora_rank, h);
        VEC(q_a_norm, "self_attn.q_a_layernorm.weight", c->q_lora_rank);
        LIN(q_b, "self_attn.q_b_proj", H * qk, c->q_lora_rank);
    } else {
        LIN(q_proj, "self_attn.q_proj", H * qk, h);
    }
    LIN(kv_a, "self_attn.kv_a_proj_with_mqa", c->kv_lora_rank + c->qk_rope_dim, h);
    VEC(kv_a_norm, "self_attn.kv_a_layernorm.weight", c->kv_lora_rank);
    LIN(kv_b, "self_attn.kv_b_proj", H * (c->qk_nope_dim + c->v_head_dim), c->kv_lora_rank);
    LIN(o_proj, "self_attn.o_proj", h, H * c->v_head_dim);
    L->is_moe = config_is_moe_layer(c, l);
    if (!L->is_moe) {
        snprintf(n, sizeof n, "%s.mlp", p);
        if (resolve_ffn(m, n, c->intermediate_size, &L->dense, e))
            return -1;
        count_weight(m, &L->dense.gate, 0);
        count_weight(m, &L->dense.up, 0);
        count_weight(m, &L->dense.down, 0);
        return 0;
    }
    LIN(router, "mlp.gate", c->n_routed_experts, h);
    snprintf(n, sizeof n, "%s.mlp.gate.e_score_correction_bias", p);
    if (checkpoint_find(&m->ckpt, n)) {
        if (resolve_vector(m, n, c->n_routed_experts, &L->router_bias, e))
            return -1;
    } else if (c->topk == TOPK_NOAUX_TC) {
        return err_set(e, "%s: missing tensor '%s' (topk_method noaux_tc needs the router bias)",
                       m->ckpt.dir, n);
    }
    if (c->n_shared_experts > 0) {
        L->has_shared = 1;
        snprintf(n, sizeof n, "%s.mlp.shared_experts", p);
        if (resolve_ffn(m, n, c->n_shared_experts * c->moe_intermediate_size, &L->shared, e))
            return -1;
        count_weight(m, &L->shared.gate, 0);
        count_weight(m, &L->shared.up, 0);
        count_weight(m, &L->shared.down, 0);
    }
    for (int x = 0; x < c->n_routed_experts; x++) {
        expert_view *v = &m->experts[(size_t)l * (size_t)c->n_routed_experts + (size_t)x];
        ffn_weights f;
        snprintf(n, sizeof n, "%s.mlp.experts.%d", p, x);
        if (resolve_ffn(m, n, c->moe_intermediate_size, &f, e))
            return -1;
        v->gate = f.gate;
        v->up = f.up;
        v->down = f.down;
        count_weight(m, &v->gate, 1);
        count_weight(m, &v->up, 1);
        count_weight(m, &v->down, 1);
    }
    return 0;
#undef LIN
#undef VEC
}

int model_weights_open(model_weights *m, const char *dir, errbuf *e)
{
    memset(m, 0, sizeof *m);
    if (config_load(&m->cfg, dir, e))
        return -1;
    if (checkpoint_open(&m->ckpt, dir, e))
        return -1;
    const model_config *c = &m->cfg;
    /* an expert is three tensors at least: a config.json that names more
     * than the checkpoint holds is said before its tables are allocated
     * (4,096 layers of 65,536 experts are 56 GB of them) */
    uint64_t moe_layers = 0;
    for (int l = 0; l < c->n_layers; l++)
        moe_layers += config_is_moe_layer(c, l);
    if (moe_layers * (uint64_t)c->n_routed_experts * 3 > (uint64_t)m->ckpt.n_tensors) {
        err_set(e, "%s/config.json: %llu MoE layers of %d experts (num_hidden_layers, "
                "first_k_dense_replace, moe_layer_freq, n_routed_experts) need %llu tensors at "
                "least, but the checkpoint holds %d", dir, (unsigned long long)moe_layers,
                c->n_routed_experts, (unsigned long long)(moe_layers * (uint64_t)c->n_routed_experts * 3),
                m->ckpt.n_tensors);
        model_weights_close(m);
        return -1;
    }
    m->layers = calloc((size_t)c->n_layers, sizeof *m->layers);
    m->experts = calloc((size_t)c->n_layers * (size_t)c->n_routed_experts + 1, sizeof *m->experts);
    if (!m->layers || !m->experts) {
        model_weights_close(m);
        return err_set(e, "out of memory");
    }
    if (resolve_linear(m, "model.embed_tokens", c->vocab_size, c->hidden_size, &m->embed, e) ||
        resolve_vector(m, "model.norm.weight", c->hidden_size, &m->final_norm, e))
        goto fail;
    count_weight(m, &m->embed, 0);
    if (c->tie_word_embeddings) {
        /* tied, the output is the embedding's, as the reference ties them:
         * an lm_head.weight the checkpoint holds too is not read */
        m->lm_head = m->embed;
    } else {
        if (resolve_linear(m, "lm_head", c->vocab_size, c->hidden_size, &m->lm_head, e))
            goto fail;
        count_weight(m, &m->lm_head, 0);
    }
    for (int l = 0; l < c->n_layers; l++)
        if (resolve_layer(m, l, e))
            goto fail;
    /* (rotary_emb.inv_freq: a buffer some exports save, which the config's
     * rope fields give) */
    static const char inv_freq[] = ".rotary_emb.inv_freq";
    for (int k = 0; k < m->ckpt.n_tensors; k++) {
        const char *name = m->ckpt.by_name[k]->name, *inv = strstr(name, inv_freq);
        int layer;
        if (m->ckpt.found[k] || (inv && !inv[sizeof inv_freq - 1]) ||
            (c->tie_word_embeddings && !strcmp(name, "lm_head.weight")) ||
            (sscanf(name, "model.layers.%d.", &layer) == 1 && layer >= c->n_layers &&
             layer < c->n_layers + c->n_nextn_layers))
            continue;
        if (!m->n_unread++)
            m->first_unread = name;
    }
    return 0;
fail:
    model_weights_close(m);
    return -1;
}

void model_weights_close(model_weights *m)
{
    if (m->layers)
        for (int l = 0; l < m->cfg.n_layers; l++) {
            layer_weights *L = &m->layers[l];
            free(L->attn_norm);
            free(L->ffn_norm);
            free(L->q_a_norm);
            free(L->kv_a_norm);
            free(L->router_bias);
        }
    free(m->layers);
    free(m->experts);
    free(m->final_norm);
    checkpoint_close(&m->ckpt);
    memset(m, 0, sizeof *m);
}

int model_weights_expert(const model_weights *m, int layer, int expert, expert_view *out, errbuf *e)
{
    const model_config *c = &m->cfg;
    if (layer < 0 || layer >= c->n_layers || !config_is_moe_layer(c, layer) || expert < 0 ||
        expert >= c->n_routed_experts)
        return err_set(e, "no routed expert %d in layer %d", expert, layer);
    *out = m->experts[(size_t)layer * (size_t)c->n_routed_experts + (size_t)expert];
    return 0;
}

static int checkpoint_source_get(expert_source *s, int layer, int expert, expert_view *out,
                                 errbuf *e)
{
    if (model_weights_expert(s->impl, layer, expert, out, e))
        return -1;
    out->origin = EXPERT_MAPPED;
    out->bytes_read = 0;
    out->stall_s = 0;
    out->node = -1;     /* the page cache's pages, wherever they are */
    return 0;
}

int model_weights_expert_source(model_weights *m, expert_source *out)
{
    memset(out, 0, sizeof *out);
    out->name = "checkpoint-mmap";
    out->impl = m;
    out->max_held = INT_MAX;    /* nothing is ever evicted */
    out->get = checkpoint_source_get;
    return 0;
}

/* Routed experts are the tensors under "<layer>.mlp.experts.<n>."; shared experts
 * ("shared_experts") and the router ("gate") are dense. */
static int is_routed_expert(const char *name)
{
    return strstr(name, ".mlp.experts.") != NULL;
}

#define HUGE_PAGE (2ull << 20)

/* Moves [a, a + len) of a file mapping into anonymous memory at the same address:
 * a copy aligned like the destination modulo 2 MB (so transparent huge pages
 * survive the move), then mremap over the file pages. */
static int move_to_anonymous(uint8_t *a, size_t len, int interleave)
{
    uint8_t *raw = mmap(NULL, len + HUGE_PAGE, PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (raw == MAP_FAILED)
        return -1;
    size_t off = (size_t)(((uintptr_t)a % HUGE_PAGE + HUGE_PAGE - (uintptr_t)raw % HUGE_PAGE) % HUGE_PAGE);
    uint8_t *tmp = raw + off;
    if (off)
        munmap(raw, off);
    munmap(tmp + len, HUGE_PAGE - off);
    madvise(tmp, len, MADV_HUGEPAGE);
    if (interleave)
        numa_interleave_memory(tmp, len, numa_all_nodes_ptr);
    madvise(a, len, MADV_WILLNEED);
    memcpy(tmp, a, len);
    if (mremap(tmp, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, a) == MAP_FAILED) {
        munmap(tmp, len);
        return -1;
    }
    return 0;
}

void model_weights_make_dense_resident(const model_weights *m, int interleave, uint64_t *wanted,
                                       uint64_t *moved, uint64_t *locked)
{
    uintptr_t pg = (uintptr_t)sysconf(_SC_PAGESIZE);
    interleave = interleave && numa_available() >= 0 && numa_num_configured_nodes() > 1;
    *wanted = *moved = *locked = 0;
    for (int i = 0; i < m->ckpt.n_tensors; i++) {
        const st_tensor *t = m->ckpt.by_name[i];
        if (is_routed_expert(t->name) || !t->data || !t->nbytes)
            continue;
        *wanted += t->nbytes;
        /* whole pages only: a page shared with a neighbour stays file-backed */
        uintptr_t a = ((uintptr_t)t->data + pg - 1) & ~(pg - 1);
        uintptr_t b = ((uintptr_t)t->data + t->nbytes) & ~(pg - 1);
        if (b > a && move_to_anonymous((uint8_t *)a, b - a, interleave) == 0)
            *moved += b - a;
        uintptr_t la = (uintptr_t)t->data & ~(pg - 1);
        uintptr_t lb = ((uintptr_t)t->data + t->nbytes + pg - 1) & ~(pg - 1);
        if (mlock((void *)la, lb - la) == 0)
            *locked += t->nbytes;
    }
}
