/* safetensors: header parsing and validation, mmap of the data (see safetensors.h).
 *
 * File layout: u64 little-endian header length N, N bytes of JSON, then the data
 * region; every data_offsets pair is relative to the start of the data region. */
#include "safetensors.h"

#include <cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/base/fileutil.h"
#include "core/base/json_alloc.h"

/* A header larger than this is not a real checkpoint (the safetensors spec caps
 * it at 100 MB too); refusing early avoids parsing garbage lengths. */
#define ST_MAX_HEADER (100u * 1000u * 1000u)

static int tensor_name_cmp(const void *a, const void *b)
{
    return strcmp(((const st_tensor *)a)->name, ((const st_tensor *)b)->name);
}

static int tensor_offset_cmp(const void *a, const void *b)
{
    const st_tensor *x = *(const st_tensor *const *)a, *y = *(const st_tensor *const *)b;
    return (x->file_offset > y->file_offset) - (x->file_offset < y->file_offset);
}

/* A JSON number that is an exact non-negative integer below 2^53. */
static int json_get_u64(const cJSON *j, uint64_t *out)
{
    if (!cJSON_IsNumber(j))
        return -1;
    double d = j->valuedouble;
    if (!(d >= 0) || d > 9007199254740992.0 || floor(d) != d)
        return -1;
    *out = (uint64_t)d;
    return 0;
}

static int parse_tensor(st_tensor *t, const cJSON *item, uint64_t data_size, const char *path,
                        errbuf *e)
{
    const char *nm = item->string;
    if (!cJSON_IsObject(item))
        return err_set(e, "%s: tensor '%s': header entry is not a JSON object", path, nm);
    const cJSON *jd = cJSON_GetObjectItemCaseSensitive(item, "dtype");
    const cJSON *js = cJSON_GetObjectItemCaseSensitive(item, "shape");
    const cJSON *jo = cJSON_GetObjectItemCaseSensitive(item, "data_offsets");
    if (!cJSON_IsString(jd))
        return err_set(e, "%s: tensor '%s': missing or non-string 'dtype'", path, nm);
    t->dt = dtype_from_name(jd->valuestring);
    if (t->dt == DT_INVALID)
        return err_set(e, "%s: tensor '%s': unknown dtype '%s'", path, nm, jd->valuestring);
    if (!cJSON_IsArray(js))
        return err_set(e, "%s: tensor '%s': missing or non-array 'shape'", path, nm);
    int nd = cJSON_GetArraySize(js);
    if (nd > ST_MAX_DIMS)
        return err_set(e, "%s: tensor '%s': %d dimensions (at most %d supported)", path, nm, nd,
                       ST_MAX_DIMS);
    t->ndim = nd;
    uint64_t numel = 1;
    int i = 0;
    const cJSON *dim;
    cJSON_ArrayForEach(dim, js)
    {
        uint64_t v;
        if (json_get_u64(dim, &v) != 0)
            return err_set(e, "%s: tensor '%s': shape[%d] is not a non-negative integer", path, nm,
                           i);
        if (v != 0 && numel > UINT64_MAX / 64 / v)
            return err_set(e, "%s: tensor '%s': shape is absurdly large", path, nm);
        numel *= v;
        t->shape[i++] = (int64_t)v;
    }
    t->numel = numel;
    uint64_t bits = numel * (uint64_t)dtype_bits(t->dt);
    if (bits % 8)
        return err_set(e, "%s: tensor '%s': %llu elements of %s do not fill whole bytes", path, nm,
                       (unsigned long long)numel, dtype_name(t->dt));
    t->nbytes = bits / 8;
    uint64_t b, en;
    if (!cJSON_IsArray(jo) || cJSON_GetArraySize(jo) != 2 ||
        json_get_u64(cJSON_GetArrayItem(jo, 0), &b) || json_get_u64(cJSON_GetArrayItem(jo, 1), &en))
        return err_set(e, "%s: tensor '%s': 'data_offsets' must be two non-negative integers", path,
                       nm);
    if (en < b)
        return err_set(e, "%s: tensor '%s': data_offsets end %llu is before begin %llu", path, nm,
                       (unsigned long long)en, (unsigned long long)b);
    if (en > data_size)
        return err_set(e,
                       "%s: tensor '%s': data_offsets [%llu, %llu] run past the end of the data "
                       "(%llu bytes; file truncated?)",
                       path, nm, (unsigned long long)b, (unsigned long long)en,
                       (unsigned long long)data_size);
    if (en - b != t->nbytes) {
        char d[96];
        return err_set(e, "%s: tensor '%s': %s needs %llu bytes but data_offsets span %llu", path,
                       nm, st_tensor_describe(t, d, sizeof d), (unsigned long long)t->nbytes,
                       (unsigned long long)(en - b));
    }
    t->file_offset = b;     /* made absolute by the caller */
    return 0;
}

static int parse_header(st_file *f, const uint8_t *buf, uint64_t size, errbuf *e)
{
    const char *path = f->path;
    if (size < 8)
        return err_set(e, "%s: file is %llu bytes, too short for a safetensors header", path,
                       (unsigned long long)size);
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--)
        hl = (hl << 8) | buf[i];
    if (hl > ST_MAX_HEADER || hl > size - 8)
        return err_set(e,
                       "%s: header length %llu is impossible for a file of %llu bytes "
                       "(truncated or not a safetensors file)",
                       path, (unsigned long long)hl, (unsigned long long)size);
    cJSON *root = json_parse_watched((const char *)buf + 8, (size_t)hl);
    if (!root)
        return err_set(e, "%s: header: %s", path, json_parse_failure("not valid JSON"));
    int rc = -1;
    if (!cJSON_IsObject(root)) {
        err_set(e, "%s: header is not a JSON object", path);
        goto out;
    }
    uint64_t data_start = 8 + hl, data_size = size - data_start;
    f->data_start = data_start;
    int n = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, root) n++;
    f->tensors = calloc((size_t)n + 1, sizeof *f->tensors);
    if (!f->tensors) {
        err_set(e, "%s: out of memory for %d tensor entries", path, n);
        goto out;
    }
    cJSON_ArrayForEach(it, root)
    {
        if (!it->string) {
            err_set(e, "%s: header entry without a name", path);
            goto out;
        }
        if (strcmp(it->string, "__metadata__") == 0) {
            if (!cJSON_IsObject(it)) {
                err_set(e, "%s: '__metadata__' is not a JSON object", path);
                goto out;
            }
            continue;
        }
        st_tensor *t = &f->tensors[f->n_tensors];
        if (parse_tensor(t, it, data_size, path, e) != 0)
            goto out;
        t->name = strdup(it->string);
        if (!t->name) {
            err_set(e, "%s: out of memory", path);
            goto out;
        }
        t->file_offset += data_start;
        t->data = buf + t->file_offset;
        f->n_tensors++;
    }
    qsort(f->tensors, (size_t)f->n_tensors, sizeof *f->tensors, tensor_name_cmp);
    for (int i = 1; i < f->n_tensors; i++)
        if (strcmp(f->tensors[i - 1].name, f->tensors[i].name) == 0) {
            err_set(e, "%s: tensor '%s' appears twice in the header", path, f->tensors[i].name);
            goto out;
        }
    /* Sorted by offset, no tensor may overlap another (empty ones take no
     * room), and then each must start where the one before ended and the last
     * end where the file does: the format covers its data exactly, so a gap or
     * bytes left over mean a damaged file or a wrong header length (which would
     * shift every tensor and give garbage numbers, not an error). */
    st_tensor **by_off = malloc(((size_t)f->n_tensors + 1) * sizeof *by_off);
    if (!by_off) {
        err_set(e, "%s: out of memory", path);
        goto out;
    }
    for (int i = 0; i < f->n_tensors; i++)
        by_off[i] = &f->tensors[i];
    qsort(by_off, (size_t)f->n_tensors, sizeof *by_off, tensor_offset_cmp);
    const st_tensor *last = NULL;   /* the one ending furthest */
    int bad = 0;
    for (int i = 0; i < f->n_tensors && !bad; i++) {
        const st_tensor *b = by_off[i];
        if (!b->nbytes)
            continue;
        if (last && b->file_offset < last->file_offset + last->nbytes)
            bad = err_set(e, "%s: tensors '%s' and '%s' overlap in the data region", path,
                          last->name, b->name);
        last = b;
    }
    uint64_t end = data_start;      /* where the tensors so far end */
    for (int i = 0; i < f->n_tensors && !bad; i++) {
        const st_tensor *b = by_off[i];
        if (b->nbytes && b->file_offset > end)
            bad = err_set(e, "%s: data bytes %llu to %llu belong to no tensor (the next is '%s'): "
                          "the file is damaged or its header length is wrong", path,
                          (unsigned long long)(end - data_start),
                          (unsigned long long)(b->file_offset - data_start), b->name);
        if (b->nbytes)
            end = b->file_offset + b->nbytes;
    }
    free(by_off);
    if (!bad && end != size)
        bad = err_set(e, "%s: the last %llu bytes belong to no tensor: the file is damaged or its "
                      "header length is wrong", path, (unsigned long long)(size - end));
    if (bad)
        goto out;
    rc = 0;
out:
    cJSON_Delete(root);
    return rc;
}

static void st_file_free_tensors(st_file *f)
{
    for (int i = 0; i < f->n_tensors; i++)
        free(f->tensors[i].name);
    free(f->tensors);
    f->tensors = NULL;
    f->n_tensors = 0;
}

int st_file_parse(st_file *f, const uint8_t *buf, uint64_t size, const char *path, errbuf *e)
{
    memset(f, 0, sizeof *f);
    f->path = strdup(path ? path : "<memory>");
    f->size = size;
    if (!f->path)
        return err_set(e, "out of memory");
    if (parse_header(f, buf, size, e) != 0) {
        st_file_close(f);
        return -1;
    }
    return 0;
}

int st_file_open(st_file *f, const char *path, errbuf *e)
{
    memset(f, 0, sizeof *f);
    int fd = file_open_regular(path, O_RDONLY, 0, e);   /* a FIFO is refused, not waited on */
    if (fd < 0)
        return -1;
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int err = errno;
        close(fd);
        return err_set(e, "%s: cannot stat: %s", path, strerror(err));
    }
    uint64_t size = (uint64_t)st.st_size;
    if (size < 8) {
        close(fd);
        return err_set(e, "%s: file is %llu bytes, too short for a safetensors header", path,
                       (unsigned long long)size);
    }
    void *map = mmap(NULL, size, PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    if (map == MAP_FAILED)
        return err_set(e, "%s: mmap failed: %s", path, strerror(errno));
    if (st_file_parse(f, map, size, path, e) != 0) {
        munmap(map, size);
        return -1;
    }
    f->map = map;
    f->dev = (uint64_t)st.st_dev;
    f->ino = (uint64_t)st.st_ino;
    f->mtime_ns = file_mtime_ns(&st);
    return 0;
}

void st_file_close(st_file *f)
{
    st_file_free_tensors(f);
    if (f->map)
        munmap(f->map, f->size);
    free(f->path);
    memset(f, 0, sizeof *f);
}

const st_tensor *st_file_find(const st_file *f, const char *name)
{
    st_tensor key = {.name = (char *)name};
    return bsearch(&key, f->tensors, (size_t)f->n_tensors, sizeof key, tensor_name_cmp);
}

const char *st_tensor_describe(const st_tensor *t, char *buf, size_t n)
{
    int k = snprintf(buf, n, "%s[", dtype_name(t->dt));
    for (int i = 0; i < t->ndim && k > 0 && (size_t)k < n; i++)
        k += snprintf(buf + k, n - (size_t)k, "%s%lld", i ? ", " : "", (long long)t->shape[i]);
    if (k > 0 && (size_t)k < n)
        snprintf(buf + k, n - (size_t)k, "]");
    return buf;
}
