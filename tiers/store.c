/* store: layout, fingerprint, index serialisation and opening (see store.h). */
#include "store.h"

#include <cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "core/base/fileutil.h"
#include "core/base/le_bytes.h"
#include "tiers/store_source.h"

const char *const store_part_names[3] = {"gate", "up", "down"};

#define INDEX_MAGIC "MOETIDX1"
#define FINGERPRINT_SAMPLES 16
#define FINGERPRINT_SAMPLE_BYTES 4096
#define INDEX_HEADER_BYTES 32   /* magic, version, n_rows, fingerprint, xxh3 of rows */

static uint64_t align_up(uint64_t v, uint64_t a)
{
    return (v + a - 1) / a * a;
}

static int same_shape(const linear_weight *a, const linear_weight *b)
{
    return a->fmt == b->fmt && a->rows == b->rows && a->cols == b->cols &&
           a->block_rows == b->block_rows && a->block_cols == b->block_cols &&
           a->group_size == b->group_size && a->row_words == b->row_words &&
           a->scale_cols == b->scale_cols;
}

int store_layout_for_model(const model_weights *mw, store_layout *out, errbuf *e)
{
    const model_config *c = &mw->cfg;
    memset(out, 0, sizeof *out);
    int first = 1;
    for (int l = 0; l < c->n_layers; l++) {
        if (!config_is_moe_layer(c, l))
            continue;
        for (int x = 0; x < c->n_routed_experts; x++) {
            const expert_view *v = &mw->experts[(size_t)l * (size_t)c->n_routed_experts + (size_t)x];
            const linear_weight *p[3] = {&v->gate, &v->up, &v->down};
            for (int k = 0; k < 3; k++) {
                if (first) {
                    out->part[k] = *p[k];
                    out->part[k].data = out->part[k].scale = NULL;
                } else if (!same_shape(&out->part[k], p[k])) {
                    return err_set(e, "layer %d expert %d: %s_proj is %s %dx%d, but the first routed "
                                   "expert's is %s %dx%d; the expert store needs one format and "
                                   "shape for every routed expert", l, x, store_part_names[k],
                                   weight_format_name(p[k]->fmt), p[k]->rows, p[k]->cols,
                                   weight_format_name(out->part[k].fmt), out->part[k].rows,
                                   out->part[k].cols);
                }
            }
            first = 0;
        }
    }
    if (first)
        return err_set(e, "the model has no routed experts: there is nothing to store");
    /* parts on 64-byte boundaries, so SIMD kernels may use aligned loads */
    uint64_t off = 0;
    for (int k = 0; k < 3; k++) {
        out->data_off[k] = off;
        off = align_up(off + linear_weight_data_bytes(&out->part[k]), 64);
        out->scale_off[k] = off;
        off = align_up(off + linear_weight_scale_bytes(&out->part[k]), 64);
    }
    out->blob_bytes = off;
    out->slot_bytes = align_up(off, STORE_ALIGN);
    return 0;
}

void store_layout_view(const store_layout *L, const void *blob, expert_view *out)
{
    linear_weight *p[3] = {&out->gate, &out->up, &out->down};
    const uint8_t *b = blob;
    for (int k = 0; k < 3; k++) {
        *p[k] = L->part[k];
        p[k]->data = b + L->data_off[k];
        p[k]->scale = linear_weight_scale_bytes(&L->part[k]) ? b + L->scale_off[k] : NULL;
    }
}

static void drop_pages(const void *p, uint64_t bytes)
{
    long pg = sysconf(_SC_PAGESIZE);
    uintptr_t a = ((uintptr_t)p + (uintptr_t)pg - 1) & ~((uintptr_t)pg - 1);
    uintptr_t b = ((uintptr_t)p + bytes) & ~((uintptr_t)pg - 1);
    if (b > a)
        madvise((void *)a, b - a, MADV_DONTNEED);
}

void store_layout_pack(const store_layout *L, const expert_view *v, uint8_t *buf)
{
    memset(buf, 0, L->slot_bytes);
    const linear_weight *p[3] = {&v->gate, &v->up, &v->down};
    for (int k = 0; k < 3; k++) {
        uint64_t db = linear_weight_data_bytes(p[k]), sb = linear_weight_scale_bytes(p[k]);
        memcpy(buf + L->data_off[k], p[k]->data, db);
        drop_pages(p[k]->data, db);
        if (sb) {
            memcpy(buf + L->scale_off[k], p[k]->scale, sb);
            drop_pages(p[k]->scale, sb);
        }
    }
}

static int by_path(const void *a, const void *b, void *files)
{
    const st_file *f = files;
    return strcmp(f[*(const int *)a].path, f[*(const int *)b].path);
}

/* with_config: also config.json's bytes first, as stores written before
 * 2026-12-04 did; in_index_order: the shards in the order the checkpoint's
 * index first names them, as stores written before 2026-12-08 did (the
 * shards are otherwise taken by name, so an index rewritten in another order
 * over the same shards is the same checkpoint) */
static int fingerprint(const model_weights *mw, int with_config, int in_index_order, uint64_t *out,
                       errbuf *e)
{
    int n_files = mw->ckpt.n_files;
    int *order = malloc((size_t)(n_files ? n_files : 1) * sizeof *order);
    XXH3_state_t *st = order ? XXH3_createState() : NULL;
    if (!st) {
        free(order);
        return err_set(e, "out of memory");
    }
    for (int i = 0; i < n_files; i++)
        order[i] = i;
    if (!in_index_order)
        qsort_r(order, (size_t)n_files, sizeof *order, by_path, (void *)mw->ckpt.files);
    XXH3_64bits_reset(st);
    if (with_config) {
        char path[4096];
        snprintf(path, sizeof path, "%s/config.json", mw->ckpt.dir);
        char *cfg;
        size_t n;
        if (file_read_regular(path, &cfg, &n, e)) {
            XXH3_freeState(st);
            free(order);
            return -1;
        }
        XXH3_64bits_update(st, cfg, n);
        free(cfg);
    }
    for (int i = 0; i < n_files; i++) {
        const st_file *f = &mw->ckpt.files[order[i]];
        const char *base = strrchr(f->path, '/');
        base = base ? base + 1 : f->path;
        XXH3_64bits_update(st, base, strlen(base) + 1);
        XXH3_64bits_update(st, &f->size, sizeof f->size);
        uint64_t hlen = 0;
        memcpy(&hlen, f->map, 8);   /* validated at open: 8 + hlen <= size */
        XXH3_64bits_update(st, f->map, 8 + hlen);
        /* headers say nothing of the values: a fine-tune or requantization with
         * the same shapes must not pass, so sample the data too (a few pages,
         * cheap even for a 1 TB checkpoint) */
        uint64_t begin = 8 + hlen, span = f->size - begin;
        for (int k = 0; k < FINGERPRINT_SAMPLES && span; k++) {
            uint64_t at = begin + span / FINGERPRINT_SAMPLES * (uint64_t)k;
            uint64_t len = f->size - at < FINGERPRINT_SAMPLE_BYTES ? f->size - at
                                                                   : FINGERPRINT_SAMPLE_BYTES;
            XXH3_64bits_update(st, f->map + at, len);
        }
    }
    *out = XXH3_64bits_digest(st);
    XXH3_freeState(st);
    free(order);
    return 0;
}

int store_fingerprint(const model_weights *mw, uint64_t *out, errbuf *e)
{
    return fingerprint(mw, 0, 0, out, e);
}

int store_fingerprints_before(const model_weights *mw, uint64_t out[STORE_FINGERPRINTS_BEFORE],
                              errbuf *e)
{
    if (fingerprint(mw, 1, 1, &out[0], e))
        return -1;
    if (mw->ckpt.n_files < 2) {   /* one shard: no order to differ */
        out[1] = out[0];
        return 0;
    }
    return fingerprint(mw, 0, 1, &out[1], e);
}

int store_fingerprint_was(const model_weights *mw, uint64_t fp, int *was, errbuf *e)
{
    uint64_t before[STORE_FINGERPRINTS_BEFORE];
    if (store_fingerprints_before(mw, before, e))
        return -1;
    *was = 0;
    for (int k = 0; k < STORE_FINGERPRINTS_BEFORE; k++)
        *was |= before[k] == fp;
    return 0;
}

uint64_t store_blobs_per_file(const store_layout *L, uint64_t max_file_bytes)
{
    uint64_t k = max_file_bytes / L->slot_bytes;
    return k ? k : 1;
}

int store_file_path(const char *dir, int file, char *buf, size_t n)
{
    return snprintf(buf, n, "%s/experts-%05d.bin", dir, file) >= (int)n ? -1 : 0;
}

int store_file_dangling(const char *path, errbuf *e)
{
    char target[4096];
    if (!file_dangling_link(path, target, sizeof target))
        return 0;
    return err_set(e, "expert store file %s is a symbolic link to %s, which does not exist (a disk "
                   "not mounted?)", path, target);
}

/* ---- index serialisation ---- */

#define ROW_BYTES 40

static cJSON *layout_json(const store_layout *L)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "blob_bytes", (double)L->blob_bytes);
    cJSON_AddNumberToObject(o, "slot_bytes", (double)L->slot_bytes);
    cJSON *parts = cJSON_AddArrayToObject(o, "parts");
    for (int k = 0; k < 3; k++) {
        const linear_weight *w = &L->part[k];
        cJSON *p = cJSON_CreateObject();
        cJSON_AddStringToObject(p, "name", store_part_names[k]);
        cJSON_AddStringToObject(p, "format", weight_format_name(w->fmt));
        cJSON_AddNumberToObject(p, "rows", w->rows);
        cJSON_AddNumberToObject(p, "cols", w->cols);
        cJSON_AddNumberToObject(p, "block_rows", w->block_rows);
        cJSON_AddNumberToObject(p, "block_cols", w->block_cols);
        cJSON_AddNumberToObject(p, "group_size", w->group_size);
        cJSON_AddNumberToObject(p, "data_offset", (double)L->data_off[k]);
        cJSON_AddNumberToObject(p, "data_bytes", (double)linear_weight_data_bytes(w));
        cJSON_AddNumberToObject(p, "scale_offset", (double)L->scale_off[k]);
        cJSON_AddNumberToObject(p, "scale_bytes", (double)linear_weight_scale_bytes(w));
        cJSON_AddItemToArray(parts, p);
    }
    return o;
}

int store_write_index(const char *dir, const store_layout *L, uint64_t fingerprint,
                      const model_config *cfg, const store_blob *blobs, int n_layers,
                      int n_experts, int n_files, const uint64_t *file_bytes,
                      uint64_t blobs_per_file, const cJSON *source_files, errbuf *e)
{
    size_t n_rows = 0;
    for (size_t i = 0; i < (size_t)n_layers * (size_t)n_experts; i++)
        n_rows += blobs[i].file != UINT32_MAX;
    size_t bin_bytes = INDEX_HEADER_BYTES + n_rows * ROW_BYTES;
    uint8_t *bin = calloc(1, bin_bytes);
    if (!bin)
        return err_set(e, "out of memory for the store index (%zu bytes)", bin_bytes);
    uint8_t *row = bin + INDEX_HEADER_BYTES;
    for (size_t i = 0; i < (size_t)n_layers * (size_t)n_experts; i++) {
        const store_blob *b = &blobs[i];
        if (b->file == UINT32_MAX)
            continue;
        le_put_u32(row, b->layer);
        le_put_u32(row + 4, b->expert);
        le_put_u32(row + 8, b->file);
        le_put_u32(row + 12, 0);
        le_put_u64(row + 16, b->offset);
        le_put_u64(row + 24, b->bytes);
        le_put_u64(row + 32, b->xxh3);
        row += ROW_BYTES;
    }
    uint64_t rows_xxh = XXH3_64bits(bin + INDEX_HEADER_BYTES, n_rows * ROW_BYTES);
    memcpy(bin, INDEX_MAGIC, 8);
    le_put_u32(bin + 8, STORE_VERSION);
    le_put_u32(bin + 12, (uint32_t)n_rows);
    le_put_u64(bin + 16, fingerprint);
    le_put_u64(bin + 24, rows_xxh);
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, STORE_INDEX_BIN);
    int rc = file_replace_atomic(path, bin, bin_bytes, e);
    free(bin);
    if (rc)
        return -1;

    char hex[32];
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "format", "moetier-expert-store");
    cJSON_AddNumberToObject(j, "version", STORE_VERSION);
    snprintf(hex, sizeof hex, "%016" PRIx64, fingerprint);
    cJSON_AddStringToObject(j, "source_fingerprint", hex);
    cJSON_AddStringToObject(j, "checksum", "xxh3-64");
    cJSON *m = cJSON_AddObjectToObject(j, "model");
    cJSON_AddNumberToObject(m, "num_hidden_layers", n_layers);
    cJSON_AddNumberToObject(m, "n_routed_experts", n_experts);
    cJSON_AddNumberToObject(m, "first_k_dense_replace", cfg->first_k_dense);
    cJSON_AddNumberToObject(m, "moe_layer_freq", cfg->moe_layer_freq);
    cJSON_AddItemToObject(j, "layout", layout_json(L));
    cJSON_AddNumberToObject(j, "blobs", (double)n_rows);
    cJSON_AddNumberToObject(j, "blobs_per_file", (double)blobs_per_file);
    cJSON *files = cJSON_AddArrayToObject(j, "files");
    for (int f = 0; f < n_files; f++) {
        char name[64];
        snprintf(name, sizeof name, "experts-%05d.bin", f);
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "name", name);
        cJSON_AddNumberToObject(o, "bytes", (double)file_bytes[f]);
        cJSON_AddItemToArray(files, o);
    }
    if (source_files)
        cJSON_AddItemToObject(j, "source_files", cJSON_Duplicate(source_files, 1));
    cJSON_AddStringToObject(j, "table", STORE_INDEX_BIN);
    snprintf(hex, sizeof hex, "%016" PRIx64, rows_xxh);
    cJSON_AddStringToObject(j, "table_xxh3", hex);
    char *text = cJSON_Print(j);
    cJSON_Delete(j);
    if (!text)
        return err_set(e, "out of memory for the store index");
    snprintf(path, sizeof path, "%s/%s", dir, STORE_INDEX_JSON);
    rc = file_replace_atomic(path, text, strlen(text), e);
    free(text);
    return rc;
}

/* ---- opening ---- */

static int json_u64(const cJSON *o, const char *key, const char *path, uint64_t *out, errbuf *e)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble > 9007199254740992.0 ||
        v->valuedouble != (double)(uint64_t)v->valuedouble)
        return err_set(e, "%s: field '%s' must be a non-negative integer", path, key);
    *out = (uint64_t)v->valuedouble;
    return 0;
}

static int json_hex(const cJSON *o, const char *key, const char *path, uint64_t *out, errbuf *e)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    char *end;
    if (!cJSON_IsString(v) || strlen(v->valuestring) != 16 ||
        (*out = strtoull(v->valuestring, &end, 16), *end))
        return err_set(e, "%s: field '%s' must be 16 hex digits", path, key);
    return 0;
}

static int check_layout(const cJSON *lj, const store_layout *want, const char *path, errbuf *e)
{
    uint64_t blob, slot;
    if (!cJSON_IsObject(lj))
        return err_set(e, "%s: field 'layout' must be an object", path);
    if (json_u64(lj, "blob_bytes", path, &blob, e) || json_u64(lj, "slot_bytes", path, &slot, e))
        return -1;
    const cJSON *parts = cJSON_GetObjectItemCaseSensitive(lj, "parts");
    if (!cJSON_IsArray(parts) || cJSON_GetArraySize(parts) != 3)
        return err_set(e, "%s: layout.parts must list gate, up and down", path);
    int ok = blob == want->blob_bytes && slot == want->slot_bytes;
    for (int k = 0; k < 3 && ok; k++) {
        const cJSON *p = cJSON_GetArrayItem(parts, k);
        const cJSON *fmt = cJSON_GetObjectItemCaseSensitive(p, "format");
        uint64_t rows, cols, doff, soff;
        if (json_u64(p, "rows", path, &rows, e) || json_u64(p, "cols", path, &cols, e) ||
            json_u64(p, "data_offset", path, &doff, e) || json_u64(p, "scale_offset", path, &soff, e))
            return -1;
        ok = cJSON_IsString(fmt) && !strcmp(fmt->valuestring, weight_format_name(want->part[k].fmt)) &&
             rows == (uint64_t)want->part[k].rows && cols == (uint64_t)want->part[k].cols &&
             doff == want->data_off[k] && soff == want->scale_off[k];
    }
    if (!ok)
        return err_set(e, "%s: the store's blob layout does not match this checkpoint's experts "
                       "(%s %dx%d, %" PRIu64 " bytes per blob); rebuild it with moetier convert",
                       path, weight_format_name(want->part[0].fmt), want->part[0].rows,
                       want->part[0].cols, want->blob_bytes);
    return 0;
}

static int read_table(store *s, const char *dir, uint64_t n_rows, uint64_t want_xxh, errbuf *e)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, STORE_INDEX_BIN);
    char *bin;
    size_t len;
    if (file_read_regular(path, &bin, &len, e))
        return STORE_UNREADABLE;
    const uint8_t *b = (const uint8_t *)bin;
    int rc = -1;
    if (len < INDEX_HEADER_BYTES || memcmp(b, INDEX_MAGIC, 8) || le_get_u32(b + 8) != STORE_VERSION) {
        err_set(e, "%s: not a version %d expert store table", path, STORE_VERSION);
    } else if (le_get_u32(b + 12) != n_rows || len != INDEX_HEADER_BYTES + n_rows * ROW_BYTES) {
        err_set(e, "%s: %zu bytes, expected %" PRIu64 " rows (%" PRIu64 " bytes); the table is "
                "truncated or from another store", path, len, n_rows,
                INDEX_HEADER_BYTES + n_rows * ROW_BYTES);
    } else if (le_get_u64(b + 16) != s->fingerprint ||
               XXH3_64bits(b + INDEX_HEADER_BYTES, n_rows * ROW_BYTES) != want_xxh ||
               le_get_u64(b + 24) != want_xxh) {
        err_set(e, "%s: checksum of the table does not match index.json (damaged or mixed store)",
                path);
    } else {
        rc = 0;
        for (uint64_t i = 0; i < n_rows && !rc; i++) {
            const uint8_t *r = b + INDEX_HEADER_BYTES + i * ROW_BYTES;
            uint32_t l = le_get_u32(r), x = le_get_u32(r + 4), f = le_get_u32(r + 8);
            if (l >= (uint32_t)s->n_layers || x >= (uint32_t)s->n_experts ||
                f >= (uint32_t)s->n_files) {
                rc = err_set(e, "%s: row %" PRIu64 " names layer %u expert %u file %u, outside "
                             "the store", path, i, l, x, f);
                break;
            }
            store_blob *d = &s->blobs[(size_t)l * (size_t)s->n_experts + x];
            if (d->file != UINT32_MAX) {
                rc = err_set(e, "%s: layer %u expert %u is listed twice", path, l, x);
                break;
            }
            d->layer = l;
            d->expert = x;
            d->file = f;
            d->offset = le_get_u64(r + 16);
            d->bytes = le_get_u64(r + 24);
            d->xxh3 = le_get_u64(r + 32);
            if (d->bytes != s->layout.blob_bytes || d->offset % STORE_ALIGN ||
                d->offset + s->layout.slot_bytes > s->file_bytes[f])
                rc = err_set(e, "%s: layer %u expert %u: %" PRIu64 " bytes at offset %" PRIu64
                             " does not fit the layout or file %s", path, l, x, d->bytes,
                             d->offset, s->file_paths[f]);
        }
    }
    free(bin);
    return rc;
}

int store_open(store *s, const char *dir, const model_weights *mw, errbuf *e)
{
    memset(s, 0, sizeof *s);
    const model_config *c = &mw->cfg;
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, STORE_INDEX_JSON);
    struct stat sb;
    if (stat(path, &sb) != 0) {
        if (errno != ENOENT) {
            err_set(e, "expert store %s cannot be used: %s: %s", dir, path, strerror(errno));
            return STORE_UNREADABLE;
        }
        char jpath[4096];
        snprintf(jpath, sizeof jpath, "%s/%s", dir, STORE_JOURNAL);
        if (stat(jpath, &sb) == 0)
            return err_set(e, "expert store %s is incomplete (its conversion was interrupted); "
                           "moetier convert -m CHECKPOINT -o %s completes it, given the checkpoint "
                           "it was begun from", dir, dir);
        char target[4096];
        if (file_dangling_link(dir, target, sizeof target))
            return err_set(e, "expert store %s is a symbolic link to %s, which does not exist (a "
                           "disk not mounted?)", dir, target);
        return err_set(e, "no expert store at %s (%s missing); create one with moetier convert -m "
                       "%s -o %s", dir, STORE_INDEX_JSON, mw->ckpt.dir, dir);
    }
    if (!S_ISREG(sb.st_mode)) {
        err_set(e, "%s is a %s, not an expert store's index", path, file_kind(sb.st_mode));
        return STORE_NOT_A_STORE;
    }
    s->dir = strdup(dir);
    if (!s->dir) {
        err_set(e, "out of memory");
        return STORE_UNREADABLE;
    }
    char *text = NULL;
    size_t len;
    cJSON *j = NULL;
    int rc = -1; /* (the verdict: damaged, or STORE_UNREADABLE) */
    if (file_read_regular(path, &text, &len, e)) {
        rc = STORE_UNREADABLE;
        goto fail;
    }
    j = cJSON_ParseWithLength(text, len);
    const cJSON *fmt = cJSON_GetObjectItemCaseSensitive(j, "format");
    uint64_t version, n_rows, per_file, table_xxh;
    if (!cJSON_IsString(fmt) || strcmp(fmt->valuestring, "moetier-expert-store")) {
        /* the index is replaced by rename, never left half-written: this is
         * someone else's file, which convert must not take for a damaged store */
        err_set(e, "%s is not an expert store's index (%s)", path,
                cJSON_IsObject(j) ? "no field 'format' \"moetier-expert-store\"" : "not a JSON object");
        cJSON_Delete(j);
        free(text);
        store_close(s);
        return STORE_NOT_A_STORE;
    }
    /* the source first: another checkpoint's store is that whatever its
     * version, and convert must not take it for a stale one of this checkpoint */
    uint64_t fp_store, fp_model;
    errbuf fp_err;
    int have_fp = json_hex(j, "source_fingerprint", path, &fp_store, &fp_err) == 0;
    if (store_fingerprint(mw, &fp_model, e)) {
        rc = STORE_UNREADABLE;
        goto fail;
    }
    if (json_u64(j, "version", path, &version, e))
        goto fail;
    if (version > STORE_VERSION && !(have_fp && fp_store != fp_model)) {
        /* a newer moetier's store may be whole: an older one must not take
         * it for a stale one and rebuild it */
        err_set(e, "%s: store version %" PRIu64 ", written by a newer moetier (this one reads "
                "version %d): open it with that moetier", path, version, STORE_VERSION);
        rc = STORE_NEWER;
        goto fail;
    }
    if (version != STORE_VERSION && !(have_fp && fp_store != fp_model)) {
        err_set(e, "%s: store version %" PRIu64 ", this moetier reads version %d; rebuild it with "
                "moetier convert", path, version, STORE_VERSION);
        goto fail;
    }
    if (!have_fp) {
        err_set(e, "%s", fp_err.msg);
        goto fail;
    }
    int was = 0;
    if (fp_store != fp_model && store_fingerprint_was(mw, fp_store, &was, e)) {
        rc = STORE_UNREADABLE;
        goto fail;
    }
    if (fp_store != fp_model && !was) {
        /* the checkpoint's own store is stale (the checkpoint changed); any
         * other may be all a user has of another checkpoint's */
        char own[4200];
        snprintf(own, sizeof own, "%s/%s", mw->ckpt.dir, DEFAULT_STORE_NAME);
        if (file_same(own, dir))
            err_set(e, "expert store %s was built from another checkpoint (fingerprint %016" PRIx64
                    ", %s has %016" PRIx64 "); rebuild it with moetier convert -m %s --force",
                    dir, fp_store, mw->ckpt.dir, fp_model, mw->ckpt.dir);
        else
            err_set(e, "expert store %s was built from another checkpoint (fingerprint %016" PRIx64
                    ", %s has %016" PRIx64 "); give --store the store of %s, or build one with "
                    "moetier convert -m %s -o ANOTHER_DIR",
                    dir, fp_store, mw->ckpt.dir, fp_model, mw->ckpt.dir, mw->ckpt.dir);
        cJSON_Delete(j);
        free(text);
        store_close(s);
        return STORE_OTHER_CHECKPOINT;
    }
    s->fingerprint = fp_store;
    if (store_layout_for_model(mw, &s->layout, e) ||
        check_layout(cJSON_GetObjectItemCaseSensitive(j, "layout"), &s->layout, path, e))
        goto fail;
    if (json_u64(j, "blobs", path, &n_rows, e) || json_u64(j, "blobs_per_file", path, &per_file, e) ||
        json_hex(j, "table_xxh3", path, &table_xxh, e))
        goto fail;
    s->blobs_per_file = per_file;
    const cJSON *files = cJSON_GetObjectItemCaseSensitive(j, "files");
    int nf = cJSON_GetArraySize(files);
    if (!cJSON_IsArray(files) || nf < 1 || nf > 1000000) {
        err_set(e, "%s: field 'files' must be a non-empty array", path);
        goto fail;
    }
    s->n_layers = c->n_layers;
    s->n_experts = c->n_routed_experts;
    s->n_files = nf;
    s->file_paths = calloc((size_t)nf, sizeof *s->file_paths);
    s->file_bytes = calloc((size_t)nf, sizeof *s->file_bytes);
    s->blobs = malloc((size_t)s->n_layers * (size_t)s->n_experts * sizeof *s->blobs);
    if (!s->file_paths || !s->file_bytes || !s->blobs) {
        err_set(e, "out of memory");
        rc = STORE_UNREADABLE;
        goto fail;
    }
    for (size_t i = 0; i < (size_t)s->n_layers * (size_t)s->n_experts; i++)
        s->blobs[i].file = UINT32_MAX;
    for (int f = 0; f < nf; f++) {
        uint64_t want;
        if (json_u64(cJSON_GetArrayItem(files, f), "bytes", path, &want, e))
            goto fail;
        char fpath[4096];
        store_file_path(dir, f, fpath, sizeof fpath);
        s->file_paths[f] = strdup(fpath);
        if (!s->file_paths[f]) {
            err_set(e, "out of memory");
            rc = STORE_UNREADABLE;
            goto fail;
        }
        if (stat(fpath, &sb) != 0) { /* (missing too: its disk may not be mounted) */
            int er = errno;
            if (!store_file_dangling(fpath, e))
                err_set(e, "expert store file %s: %s", fpath, strerror(er));
            rc = STORE_UNREADABLE;
            goto fail;
        }
        if (!S_ISREG(sb.st_mode)) {
            /* not the store's to cut: convert changes nothing on this verdict */
            err_set(e, "expert store file %s is a %s, not a file of the store: move it away",
                    fpath, file_kind(sb.st_mode));
            rc = STORE_UNREADABLE;
            goto fail;
        }
        if ((uint64_t)sb.st_size != want) {
            err_set(e, "expert store file %s is %lld bytes, the index says %" PRIu64
                    " (truncated or overwritten); rebuild the store with moetier convert", fpath,
                    (long long)sb.st_size, want);
            goto fail;
        }
        s->file_bytes[f] = want;
    }
    uint64_t expect_rows = 0;
    for (int l = 0; l < c->n_layers; l++)
        expect_rows += config_is_moe_layer(c, l) ? (uint64_t)c->n_routed_experts : 0;
    if (n_rows != expect_rows) {
        err_set(e, "%s: %" PRIu64 " blobs, this model has %" PRIu64 " routed experts", path, n_rows,
                expect_rows);
        goto fail;
    }
    int table = read_table(s, dir, n_rows, table_xxh, e);
    if (table) {
        rc = table;
        goto fail;
    }
    s->n_blobs = (int)n_rows;
    for (int l = 0; l < c->n_layers; l++)
        for (int x = 0; config_is_moe_layer(c, l) && x < c->n_routed_experts; x++)
            if (store_blob_at(s, l, x)->file == UINT32_MAX) {
                err_set(e, "%s/%s: layer %d expert %d is missing", dir, STORE_INDEX_BIN, l, x);
                goto fail;
            }
    store_source_compare(s, cJSON_GetObjectItemCaseSensitive(j, "source_files"), mw);
    cJSON_Delete(j);
    free(text);
    return 0;
fail:
    cJSON_Delete(j);
    free(text);
    store_close(s);
    return rc;
}

void store_close(store *s)
{
    if (s->file_paths)
        for (int f = 0; f < s->n_files; f++)
            free(s->file_paths[f]);
    free(s->file_paths);
    free(s->file_bytes);
    free(s->blobs);
    free(s->dir);
    memset(s, 0, sizeof *s);
}
