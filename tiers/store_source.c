/* store_source: see store_source.h. */
#include "store_source.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <xxhash.h>

#include "core/base/fileutil.h"
#include "core/base/progress.h"

static const char *base_name(const char *path)
{
    const char *b = strrchr(path, '/');
    return b ? b + 1 : path;
}

static int mtime_ns(const char *path, char *out, size_t n)
{
    struct stat sb;
    if (stat(path, &sb) != 0)
        return -1;
    snprintf(out, n, "%" PRIu64, file_mtime_ns(&sb));
    return 0;
}

cJSON *store_source_files_json(const model_weights *mw, errbuf *e)
{
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; a && i < mw->ckpt.n_files; i++) {
        const st_file *f = &mw->ckpt.files[i];
        char t[32];
        snprintf(t, sizeof t, "%" PRIu64, f->mtime_ns);
        cJSON *o = cJSON_CreateObject();
        if (!o || !cJSON_AddStringToObject(o, "name", base_name(f->path)) ||
            !cJSON_AddNumberToObject(o, "bytes", (double)f->size) || !cJSON_AddStringToObject(o, "mtime_ns", t)) {
            cJSON_Delete(o);
            break;
        }
        cJSON_AddItemToArray(a, o);
    }
    if (!a || cJSON_GetArraySize(a) != mw->ckpt.n_files) {
        cJSON_Delete(a);
        err_set(e, "out of memory");
        return NULL;
    }
    return a;
}

int store_source_files_moved(const model_weights *mw)
{
    for (int i = 0; i < mw->ckpt.n_files; i++) {
        const st_file *f = &mw->ckpt.files[i];
        struct stat sb;
        if (stat(f->path, &sb) != 0 || (uint64_t)sb.st_dev != f->dev || (uint64_t)sb.st_ino != f->ino ||
            file_mtime_ns(&sb) != f->mtime_ns)
            return 1;
    }
    return 0;
}

void store_source_compare(store *s, const cJSON *source_files, const model_weights *mw)
{
    s->source_times = cJSON_IsArray(source_files);
    s->n_changed_sources = 0;
    s->changed_source[0] = 0;
    if (!s->source_times)
        return;
    for (int i = 0; i < mw->ckpt.n_files; i++) {
        const char *path = mw->ckpt.files[i].path, *name = base_name(path);
        const cJSON *rec = NULL, *it;
        cJSON_ArrayForEach(it, source_files) {
            const cJSON *nm = cJSON_GetObjectItemCaseSensitive(it, "name");
            if (cJSON_IsString(nm) && !strcmp(nm->valuestring, name))
                rec = it;
        }
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(rec, "mtime_ns");
        char now[32];
        if (cJSON_IsString(t) && mtime_ns(path, now, sizeof now) == 0 && !strcmp(now, t->valuestring))
            continue;
        if (!s->n_changed_sources++)
            snprintf(s->changed_source, sizeof s->changed_source, "%s", name);
    }
}

void store_source_warn(const store *s, const model_weights *mw, FILE *log)
{
    if (!log || !s->n_changed_sources)
        return;
    char more[48] = "";
    if (s->n_changed_sources > 1)
        snprintf(more, sizeof more, " and %d more of its files", s->n_changed_sources - 1);
    int one = s->n_changed_sources == 1;
    fprintf(log, "moetier: warning: %s/%s%s changed after the expert store %s was built (%s "
            "modification time%s moved); the store is used as it is, and if experts changed, the "
            "output is the old checkpoint's. `moetier convert -m %s -o %s --check` compares the "
            "experts (and records the new times when they agree); --force rebuilds the store\n",
            mw->ckpt.dir, s->changed_source, more, s->dir, one ? "its" : "their", one ? "" : "s",
            mw->ckpt.dir, s->dir);
}

int store_source_check(const store *s, const model_weights *mw, FILE *log, uint64_t *n_differ,
                       errbuf *e)
{
    *n_differ = 0;
    uint8_t *buf = malloc(s->layout.slot_bytes);
    if (!buf)
        return err_set(e, "out of memory for one blob (%" PRIu64 " bytes)", s->layout.slot_bytes);
    progress p;
    progress_begin(&p, log, "comparing with the checkpoint", (uint64_t)s->n_blobs * s->layout.blob_bytes);
    for (int l = 0; l < s->n_layers; l++)
        for (int x = 0; x < s->n_experts; x++) {
            const store_blob *b = store_blob_at(s, l, x);
            if (b->file == UINT32_MAX)
                continue;
            store_layout_pack(&s->layout, &mw->experts[(size_t)l * (size_t)s->n_experts + (size_t)x], buf);
            if (XXH3_64bits(buf, s->layout.blob_bytes) != b->xxh3) {
                (*n_differ)++;
                if (log)
                    fprintf(log, "moetier: layer %d expert %d of the checkpoint differs from the store's\n",
                            l, x);
            }
            progress_advance(&p, s->layout.blob_bytes);
        }
    progress_end(&p);
    free(buf);
    return 0;
}

int store_source_record(const store *s, const cJSON *files, errbuf *e)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", s->dir, STORE_INDEX_JSON);
    char *text;
    size_t len;
    if (file_read_regular(path, &text, &len, e))
        return -1;
    cJSON *j = cJSON_ParseWithLength(text, len);
    free(text);
    if (!j)
        return err_set(e, "%s: not valid JSON", path);
    cJSON_DeleteItemFromObjectCaseSensitive(j, "source_files");
    cJSON *copy = cJSON_Duplicate(files, 1);
    if (!copy || !cJSON_AddItemToObject(j, "source_files", copy)) {
        cJSON_Delete(copy);
        cJSON_Delete(j);
        return err_set(e, "out of memory");
    }
    char *out = cJSON_Print(j);
    cJSON_Delete(j);
    if (!out)
        return err_set(e, "out of memory");
    int rc = file_replace_atomic(path, out, strlen(out), e);
    free(out);
    return rc;
}
