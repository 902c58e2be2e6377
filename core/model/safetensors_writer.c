/* safetensors_writer: declaration, header, streamed data, atomic rename (see
 * safetensors_writer.h). */
#define _POSIX_C_SOURCE 200809L
#include "safetensors_writer.h"

#include <cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/base/fileutil.h"

#define ST_WRITER_BUF (1u << 20)

enum { W_DECLARING, W_DATA, W_FAILED };


static int fail(st_writer *w, errbuf *e, const char *what)
{
    w->state = W_FAILED;
    return err_set(e, "%s: %s: %s", w->tmp_path ? w->tmp_path : "?", what, strerror(errno));
}

int st_writer_open(st_writer *w, const char *path, errbuf *e)
{
    memset(w, 0, sizeof *w);
    w->fd = -1;
    size_t n = strlen(path) + 32;
    w->path = strdup(path);
    w->tmp_path = malloc(n);
    w->buf = malloc(ST_WRITER_BUF);
    if (w->tmp_path)
        snprintf(w->tmp_path, n, "%s.tmp.%ld", path, (long)getpid());
    if (!w->path || !w->tmp_path || !w->buf) {
        free(w->tmp_path);      /* nothing was created: nothing to unlink */
        w->tmp_path = NULL;
        st_writer_abort(w);
        return err_set(e, "%s: out of memory", path);
    }
    w->fd = open(w->tmp_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (w->fd < 0) {
        int er = errno;
        err_set(e, "%s: cannot create: %s", w->tmp_path, strerror(er));
        free(w->tmp_path);      /* nothing to unlink */
        w->tmp_path = NULL;
        st_writer_abort(w);
        return -1;
    }
    w->state = W_DECLARING;
    return 0;
}

static uint64_t name_hash(const char *s)
{
    uint64_t h = 1469598103934665603ull;       /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 1099511628211ull;
    return h;
}

/* Open-addressing set of declared names (slots hold entry index + 1), so that
 * declaring the hundreds of thousands of tensors of a big shard stays linear. */
static int name_seen(const st_writer *w, const char *name)
{
    if (!w->slots)
        return 0;
    size_t mask = w->n_slots - 1;
    for (size_t i = name_hash(name) & mask; w->slots[i]; i = (i + 1) & mask)
        if (strcmp(w->entries[w->slots[i] - 1].name, name) == 0)
            return 1;
    return 0;
}

static void slot_put(uint32_t *slots, size_t n_slots, const char *name, uint32_t v)
{
    size_t mask = n_slots - 1, i = name_hash(name) & mask;
    while (slots[i])
        i = (i + 1) & mask;
    slots[i] = v;
}

static int name_insert(st_writer *w, int idx)
{
    if ((size_t)(idx + 1) * 2 > w->n_slots) {
        size_t ns = w->n_slots ? w->n_slots * 2 : 256;
        uint32_t *sl = calloc(ns, sizeof *sl);
        if (!sl)
            return -1;
        for (int i = 0; i < idx; i++)
            slot_put(sl, ns, w->entries[i].name, (uint32_t)i + 1);
        free(w->slots);
        w->slots = sl;
        w->n_slots = ns;
    }
    slot_put(w->slots, w->n_slots, w->entries[idx].name, (uint32_t)idx + 1);
    return 0;
}

int st_writer_add(st_writer *w, const char *name, dtype dt, int ndim, const int64_t *shape,
                  errbuf *e)
{
    if (w->state != W_DECLARING)
        return err_set(e, "%s: tensor '%s' declared after the data was begun", w->path, name);
    if (dtype_bits(dt) <= 0)
        return err_set(e, "%s: tensor '%s': invalid dtype", w->path, name);
    if (ndim < 0 || ndim > ST_MAX_DIMS)
        return err_set(e, "%s: tensor '%s': %d dimensions (0..%d supported)", w->path, name, ndim,
                       ST_MAX_DIMS);
    if (!name[0] || strcmp(name, "__metadata__") == 0)
        return err_set(e, "%s: invalid tensor name '%s'", w->path, name);
    if (name_seen(w, name))
        return err_set(e, "%s: tensor '%s' declared twice", w->path, name);
    uint64_t numel = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0)
            return err_set(e, "%s: tensor '%s': negative shape[%d]", w->path, name, i);
        if (shape[i] && numel > (UINT64_MAX / 64) / (uint64_t)shape[i])
            return err_set(e, "%s: tensor '%s': shape too large", w->path, name);
        numel *= (uint64_t)shape[i];
    }
    uint64_t bits = numel * (uint64_t)dtype_bits(dt);
    if (bits % 8)
        return err_set(e, "%s: tensor '%s': %llu elements of %s do not fill whole bytes", w->path,
                       name, (unsigned long long)numel, dtype_name(dt));
    if (w->n_entries == w->cap_entries) {
        int cap = w->cap_entries ? 2 * w->cap_entries : 64;
        st_writer_entry *ne = realloc(w->entries, (size_t)cap * sizeof *ne);
        if (!ne)
            return err_set(e, "%s: out of memory", w->path);
        w->entries = ne;
        w->cap_entries = cap;
    }
    st_writer_entry *t = &w->entries[w->n_entries];
    memset(t, 0, sizeof *t);
    t->name = strdup(name);
    if (!t->name)
        return err_set(e, "%s: out of memory", w->path);
    t->dt = dt;
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++)
        t->shape[i] = shape[i];
    t->nbytes = bits / 8;
    if (name_insert(w, w->n_entries)) {
        free(t->name);
        return err_set(e, "%s: out of memory", w->path);
    }
    w->data_bytes += t->nbytes;
    w->n_entries++;
    return 0;
}

/* The JSON header text (unpadded), malloc'd; NULL when out of memory. */
static char *header_json(const st_writer *w)
{
    cJSON *root = cJSON_CreateObject();
    cJSON *meta = cJSON_AddObjectToObject(root, "__metadata__");
    int ok = root && meta && cJSON_AddStringToObject(meta, "format", "pt");
    uint64_t off = 0;
    for (int i = 0; ok && i < w->n_entries; i++) {
        const st_writer_entry *t = &w->entries[i];
        cJSON *o = cJSON_AddObjectToObject(root, t->name);
        cJSON *shape = o ? cJSON_AddArrayToObject(o, "shape") : NULL;
        ok = o && cJSON_AddStringToObject(o, "dtype", dtype_name(t->dt)) && shape;
        for (int d = 0; ok && d < t->ndim; d++) {
            cJSON *n = cJSON_CreateNumber((double)t->shape[d]);
            ok = n && cJSON_AddItemToArray(shape, n);
        }
        cJSON *offs = ok ? cJSON_AddArrayToObject(o, "data_offsets") : NULL;
        cJSON *b = cJSON_CreateNumber((double)off), *en = cJSON_CreateNumber((double)(off + t->nbytes));
        ok = ok && offs && b && en;
        if (ok) {
            cJSON_AddItemToArray(offs, b);
            cJSON_AddItemToArray(offs, en);
        } else {
            cJSON_Delete(b);
            cJSON_Delete(en);
        }
        off += t->nbytes;
    }
    char *text = ok ? cJSON_PrintUnformatted(root) : NULL;
    cJSON_Delete(root);
    return text;
}

int st_writer_begin_data(st_writer *w, errbuf *e)
{
    if (w->state != W_DECLARING)
        return err_set(e, "%s: header already written or writer failed", w->path);
    if (w->data_bytes > (1ull << 53))
        return err_set(e, "%s: %llu bytes of data are more than a safetensors offset can hold",
                       w->path, (unsigned long long)w->data_bytes);
    char *json = header_json(w);
    if (!json) {
        w->state = W_FAILED;
        return err_set(e, "%s: out of memory for the header", w->path);
    }
    size_t jl = strlen(json);
    size_t hl = (jl + 7) & ~(size_t)7;     /* 8 + hl is then a multiple of 8 */
    uint8_t len8[8];
    for (int i = 0; i < 8; i++)
        len8[i] = (uint8_t)((uint64_t)hl >> (8 * i));
    char *pad = malloc(hl - jl + 1);
    int rc = 0;
    if (!pad) {
        w->state = W_FAILED;
        rc = err_set(e, "%s: out of memory", w->path);
    } else {
        memset(pad, ' ', hl - jl);
        if (fd_write_all(w->fd, len8, 8) || fd_write_all(w->fd, json, jl) ||
            fd_write_all(w->fd, pad, hl - jl))
            rc = fail(w, e, "write failed");
        else
            w->state = W_DATA;
    }
    free(pad);
    free(json);
    return rc;
}

static int flush_buf(st_writer *w, errbuf *e)
{
    if (w->buf_len && fd_write_all(w->fd, w->buf, w->buf_len))
        return fail(w, e, "write failed");
    w->buf_len = 0;
    return 0;
}

int st_writer_write(st_writer *w, const void *bytes, size_t n, errbuf *e)
{
    if (w->state != W_DATA)
        return err_set(e, "%s: data written %s", w->path,
                       w->state == W_DECLARING ? "before st_writer_begin_data" : "after a failure");
    if (n > w->data_bytes - w->written) {
        w->state = W_FAILED;
        return err_set(e, "%s: %llu more data bytes would exceed the %llu declared", w->path,
                       (unsigned long long)n, (unsigned long long)w->data_bytes);
    }
    w->written += n;
    const uint8_t *p = bytes;
    if (w->buf_len + n <= ST_WRITER_BUF) {
        memcpy(w->buf + w->buf_len, p, n);
        w->buf_len += n;
        return 0;
    }
    if (flush_buf(w, e))
        return -1;
    if (n >= ST_WRITER_BUF)
        return fd_write_all(w->fd, p, n) ? fail(w, e, "write failed") : 0;
    memcpy(w->buf, p, n);
    w->buf_len = n;
    return 0;
}

static void writer_release(st_writer *w)
{
    if (w->fd >= 0)
        close(w->fd);
    for (int i = 0; i < w->n_entries; i++)
        free(w->entries[i].name);
    free(w->entries);
    free(w->slots);
    free(w->buf);
    free(w->path);
    free(w->tmp_path);
    memset(w, 0, sizeof *w);
    w->fd = -1;
}

int st_writer_close(st_writer *w, errbuf *e)
{
    int rc = 0;
    if (w->state == W_DECLARING)
        rc = err_set(e, "%s: closed before st_writer_begin_data", w->path);
    else if (w->state == W_FAILED)
        rc = err_set(e, "%s: not written (an earlier write failed)", w->path);
    else if (w->written != w->data_bytes)
        rc = err_set(e, "%s: %llu data bytes written, but the declared tensors need %llu", w->path,
                     (unsigned long long)w->written, (unsigned long long)w->data_bytes);
    else if (flush_buf(w, e))
        rc = -1;
    else if (fsync(w->fd) != 0)
        rc = fail(w, e, "fsync failed");
    else {
        int c = close(w->fd);
        w->fd = -1;
        if (c != 0)
            rc = fail(w, e, "close failed");
        else if (rename(w->tmp_path, w->path) != 0)
            rc = err_set(e, "%s: cannot rename into place: %s", w->path, strerror(errno));
    }
    if (rc == 0) {
        file_sync_parent_dir(w->path);
        free(w->tmp_path);      /* renamed: nothing left to remove */
        w->tmp_path = NULL;
        writer_release(w);
        return 0;
    }
    st_writer_abort(w);
    return -1;
}

void st_writer_abort(st_writer *w)
{
    if (w->fd >= 0) {
        close(w->fd);
        w->fd = -1;
    }
    if (w->tmp_path)
        unlink(w->tmp_path);
    writer_release(w);
}
