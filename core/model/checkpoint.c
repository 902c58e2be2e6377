/* checkpoint: shard discovery through the index, global tensor lookup. */
#include "checkpoint.h"

#include <cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/base/fileutil.h"
#include "core/base/json_alloc.h"

static int by_name_cmp(const void *a, const void *b)
{
    return strcmp((*(const st_tensor *const *)a)->name, (*(const st_tensor *const *)b)->name);
}

/* Appends file name fn to the list; returns its index or -1. */
static int add_file_name(char ***names, int *n, const char *fn)
{
    char **nn = realloc(*names, ((size_t)*n + 1) * sizeof *nn);
    if (!nn)
        return -1;
    *names = nn;
    nn[*n] = strdup(fn);
    if (!nn[*n])
        return -1;
    return (*n)++;
}

typedef struct named_at {
    const char *name;
    int at;   /* where the weight_map first names it */
} named_at;

static int by_name_then_at(const void *a, const void *b)
{
    const named_at *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    return c ? c : (x->at > y->at) - (x->at < y->at);
}

static int by_at(const void *a, const void *b)
{
    const named_at *x = a, *y = b;
    return (x->at > y->at) - (x->at < y->at);
}

/* The shard files the weight_map names (its values, checked to be strings),
 * each once, in the order it first names them. (Sorted, not searched entry
 * by entry: an index of many shard names is read in a moment.) */
static int shard_names_in_order(const cJSON *wm, char ***names, int *n)
{
    int total = cJSON_GetArraySize(wm), k = 0, u = 0;
    named_at *all = malloc((size_t)(total ? total : 1) * sizeof *all);
    if (!all)
        return -1;
    for (const cJSON *it = wm->child; it; it = it->next, k++)
        all[k] = (named_at){it->valuestring, k};
    qsort(all, (size_t)k, sizeof *all, by_name_then_at);
    for (int i = 0; i < k; i++)
        if (i == 0 || strcmp(all[i - 1].name, all[i].name))
            all[u++] = all[i];
    qsort(all, (size_t)u, sizeof *all, by_at);
    *names = calloc((size_t)(u ? u : 1), sizeof **names);
    int rc = *names ? 0 : -1;
    for (int i = 0; i < u && !rc; i++) {
        (*names)[i] = strdup(all[i].name);
        rc = (*names)[i] ? 0 : -1;
        *n += !rc;
    }
    free(all);
    return rc;
}

static int safe_shard_name(const char *fn)
{
    return fn[0] && fn[0] != '/' && !strstr(fn, "..");
}

/* Reads the index (if any) into a list of shard names; *index_out keeps the
 * parsed JSON so the weight_map can be checked against the shards afterwards. */
static int read_shard_list(const char *dir, char ***names, int *n, cJSON **index_out, errbuf *e)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    *index_out = NULL;
    struct stat st;
    if (stat(path, &st) != 0) {
        snprintf(path, sizeof path, "%s/model.safetensors", dir);
        if (stat(path, &st) != 0)
            return err_set(e,
                           "%s: no model.safetensors.index.json and no model.safetensors "
                           "(is this a Hugging Face checkpoint directory?)",
                           dir);
        return add_file_name(names, n, "model.safetensors") < 0 ? err_set(e, "out of memory") : 0;
    }
    char *text = NULL;
    size_t len = 0;
    if (file_read_regular(path, &text, &len, e) != 0)
        return -1;
    cJSON *root = json_parse_watched(text, len);
    free(text);
    if (!root)
        return err_set(e, "%s: %s", path, json_parse_failure("not valid JSON"));
    const cJSON *wm = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
    if (!cJSON_IsObject(wm)) {
        cJSON_Delete(root);
        return err_set(e, "%s: missing object 'weight_map'", path);
    }
    const cJSON *it;
    cJSON_ArrayForEach(it, wm)
        if (!cJSON_IsString(it) || !safe_shard_name(it->valuestring)) {
            err_set(e, "%s: weight_map entry '%s' must name a shard file inside the directory",
                    path, it->string);
            cJSON_Delete(root);
            return -1;
        }
    if (shard_names_in_order(wm, names, n)) {
        cJSON_Delete(root);
        return err_set(e, "out of memory");
    }
    if (*n == 0) {
        cJSON_Delete(root);
        return err_set(e, "%s: weight_map is empty", path);
    }
    *index_out = root;
    return 0;
}

int checkpoint_open(checkpoint *c, const char *dir, errbuf *e)
{
    memset(c, 0, sizeof *c);
    char **names = NULL;
    int n = 0, rc = -1;
    cJSON *index = NULL;
    c->dir = strdup(dir);
    if (!c->dir || read_shard_list(dir, &names, &n, &index, e) != 0)
        goto out;
    c->files = calloc((size_t)n, sizeof *c->files);
    if (!c->files) {
        err_set(e, "out of memory");
        goto out;
    }
    int total = 0;
    for (int i = 0; i < n; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        if (st_file_open(&c->files[i], path, e) != 0)
            goto out;
        c->n_files++;
        for (int k = 0; k < c->files[i].n_tensors; k++)
            c->files[i].tensors[k].file_index = i;
        total += c->files[i].n_tensors;
    }
    c->by_name = malloc(((size_t)total + 1) * sizeof *c->by_name);
    if (!c->by_name) {
        err_set(e, "out of memory");
        goto out;
    }
    for (int i = 0; i < c->n_files; i++)
        for (int k = 0; k < c->files[i].n_tensors; k++)
            c->by_name[c->n_tensors++] = &c->files[i].tensors[k];
    qsort(c->by_name, (size_t)c->n_tensors, sizeof *c->by_name, by_name_cmp);
    for (int i = 1; i < c->n_tensors; i++)
        if (strcmp(c->by_name[i - 1]->name, c->by_name[i]->name) == 0) {
            err_set(e, "%s: tensor '%s' is stored in both %s and %s", dir, c->by_name[i]->name,
                    checkpoint_path_of(c, c->by_name[i - 1]), checkpoint_path_of(c, c->by_name[i]));
            goto out;
        }
    if (index) {
        const cJSON *it;
        cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(index, "weight_map"))
        {
            const st_tensor *t = checkpoint_find(c, it->string);
            if (!t || strcmp(c->files[t->file_index].path + strlen(dir) + 1, it->valuestring) != 0) {
                err_set(e,
                        "%s/model.safetensors.index.json: tensor '%s' is mapped to %s, but that "
                        "shard does not contain it",
                        dir, it->string, it->valuestring);
                goto out;
            }
        }
    }
    /* (the index's check above is no read of the weights) */
    if (!(c->found = calloc((size_t)c->n_tensors + 1, 1))) {
        err_set(e, "out of memory");
        goto out;
    }
    rc = 0;
out:
    for (int i = 0; i < n; i++)
        free(names[i]);
    free(names);
    cJSON_Delete(index);
    if (rc != 0)
        checkpoint_close(c);
    return rc;
}

void checkpoint_close(checkpoint *c)
{
    for (int i = 0; i < c->n_files; i++)
        st_file_close(&c->files[i]);
    free(c->files);
    free(c->by_name);
    free(c->found);
    free(c->dir);
    memset(c, 0, sizeof *c);
}

const st_tensor *checkpoint_find(const checkpoint *c, const char *name)
{
    st_tensor key = {.name = (char *)name};
    const st_tensor *kp = &key;
    const st_tensor **r = bsearch(&kp, c->by_name, (size_t)c->n_tensors, sizeof kp, by_name_cmp);
    if (!r)
        return NULL;
    if (c->found)
        c->found[r - c->by_name] = 1;
    return *r;
}

const char *checkpoint_path_of(const checkpoint *c, const st_tensor *t)
{
    return (t->file_index >= 0 && t->file_index < c->n_files) ? c->files[t->file_index].path : "?";
}
