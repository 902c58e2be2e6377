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

/* Adds file name fn to the list unless present; returns its index or -1. */
static int add_file_name(char ***names, int *n, const char *fn)
{
    for (int i = 0; i < *n; i++)
        if (strcmp((*names)[i], fn) == 0)
            return i;
    char **nn = realloc(*names, ((size_t)*n + 1) * sizeof *nn);
    if (!nn)
        return -1;
    *names = nn;
    nn[*n] = strdup(fn);
    if (!nn[*n])
        return -1;
    return (*n)++;
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
    {
        if (!cJSON_IsString(it) || !safe_shard_name(it->valuestring)) {
            err_set(e, "%s: weight_map entry '%s' must name a shard file inside the directory",
                    path, it->string);
            cJSON_Delete(root);
            return -1;
        }
        if (add_file_name(names, n, it->valuestring) < 0) {
            cJSON_Delete(root);
            return err_set(e, "out of memory");
        }
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
