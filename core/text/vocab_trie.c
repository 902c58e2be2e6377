/* vocab_trie: see vocab_trie.h. */
#include "vocab_trie.h"

#include <stdlib.h>
#include <string.h>

static int by_bytes(const void *a, const void *b)
{
    const trie_key *x = a, *y = b;
    int c = memcmp(x->b, y->b, x->n < y->n ? x->n : y->n);
    if (c)
        return c;
    return x->n < y->n ? -1 : x->n > y->n ? 1 : x->id - y->id;
}

int vocab_trie_build(vocab_trie *t, const vocab *v, errbuf *e)
{
    int V = v->n_vocab, n_keys = 0;
    trie_key *keys = malloc((size_t)(V ? V : 1) * sizeof *keys);
    if (!keys) {
        memset(t, 0, sizeof *t);
        return err_set(e, "out of memory for the token trie");
    }
    for (int id = 0; id < V; id++) {
        size_t n;
        const char *b = vocab_decode(v, id, &n);
        if (b && n && !vocab_is_special(v, id))
            keys[n_keys++] = (trie_key){b, n, id};
    }
    int rc = vocab_trie_build_keys(t, V, keys, n_keys, e);
    free(keys);
    return rc;
}

int vocab_trie_build_keys(vocab_trie *t, int n_vocab, trie_key *keys, int n_keys, errbuf *e)
{
    memset(t, 0, sizeof *t);
    int V = n_vocab;
    size_t bytes = 0, max_len = 0;
    for (int i = 0; i < n_keys; i++) {
        bytes += keys[i].n;
        max_len = keys[i].n > max_len ? keys[i].n : max_len;
    }
    qsort(keys, (size_t)n_keys, sizeof *keys, by_bytes);
    size_t cap = bytes + 1;
    t->child = malloc(cap * sizeof *t->child);
    t->sibling = malloc(cap * sizeof *t->sibling);
    t->token = malloc(cap * sizeof *t->token);
    t->byte = malloc(cap);
    t->same = malloc((size_t)(V ? V : 1) * sizeof *t->same);
    int32_t *last = malloc(cap * sizeof *last); /* each node's last child so far */
    int32_t *path = malloc((max_len + 1) * sizeof *path);
    if (!t->child || !t->sibling || !t->token || !t->byte || !t->same || !last || !path) {
        free(last);
        free(path);
        vocab_trie_free(t);
        return err_set(e, "out of memory for the token trie");
    }
    t->n_vocab = V;
    memset(t->same, -1, (size_t)V * sizeof *t->same);
    t->child[0] = t->sibling[0] = t->token[0] = last[0] = -1;
    t->byte[0] = 0;
    t->n = 1;
    path[0] = 0;
    const char *prev = NULL;
    size_t prev_n = 0;
    for (int i = 0; i < n_keys; i++) {
        size_t n = keys[i].n;
        const char *b = keys[i].b;
        size_t common = 0; /* the start it shares with the key before: its path is there */
        while (prev && common < n && common < prev_n && b[common] == prev[common])
            common++;
        for (size_t d = common; d < n; d++) {
            int32_t node = t->n++, up = path[d];
            t->child[node] = t->sibling[node] = t->token[node] = last[node] = -1;
            t->byte[node] = (uint8_t)b[d];
            if (last[up] < 0)
                t->child[up] = node;
            else
                t->sibling[last[up]] = node;
            last[up] = node;
            path[d + 1] = node;
        }
        int32_t end = path[n];
        if (t->token[end] < 0) {
            t->token[end] = keys[i].id;
        } else { /* the same bytes as a key before: chained to it */
            int32_t k = t->token[end];
            while (t->same[k] >= 0)
                k = t->same[k];
            t->same[k] = keys[i].id;
        }
        prev = b;
        prev_n = n;
    }
    free(last);
    free(path);
    return 0;
}
void vocab_trie_free(vocab_trie *t)
{
    free(t->child);
    free(t->sibling);
    free(t->token);
    free(t->same);
    free(t->byte);
    memset(t, 0, sizeof *t);
}
