/* vocab_trie: see vocab_trie.h. */
#include "vocab_trie.h"

#include <stdlib.h>
#include <string.h>

static const vocab *sort_vocab; /* (qsort has no context argument) */

static int by_bytes(const void *a, const void *b)
{
    size_t na, nb;
    const char *x = vocab_decode(sort_vocab, *(const int *)a, &na);
    const char *y = vocab_decode(sort_vocab, *(const int *)b, &nb);
    int c = memcmp(x, y, na < nb ? na : nb);
    if (c)
        return c;
    return na < nb ? -1 : na > nb ? 1 : *(const int *)a - *(const int *)b;
}

int vocab_trie_build(vocab_trie *t, const vocab *v, errbuf *e)
{
    memset(t, 0, sizeof *t);
    int V = v->n_vocab, n_ids = 0;
    size_t bytes = 0;
    int *ids = malloc((size_t)(V ? V : 1) * sizeof *ids);
    if (!ids)
        return err_set(e, "out of memory for the token trie");
    for (int id = 0; id < V; id++) {
        size_t n;
        const char *b = vocab_decode(v, id, &n);
        if (b && n && !vocab_is_special(v, id)) {
            ids[n_ids++] = id;
            bytes += n;
        }
    }
    sort_vocab = v;
    qsort(ids, (size_t)n_ids, sizeof *ids, by_bytes);
    size_t cap = bytes + 1;
    t->child = malloc(cap * sizeof *t->child);
    t->sibling = malloc(cap * sizeof *t->sibling);
    t->token = malloc(cap * sizeof *t->token);
    t->byte = malloc(cap);
    t->same = malloc((size_t)(V ? V : 1) * sizeof *t->same);
    int32_t *last = malloc(cap * sizeof *last); /* each node's last child so far */
    size_t max_len = 0;
    for (int i = 0; i < n_ids; i++) {
        size_t n;
        vocab_decode(v, ids[i], &n);
        if (n > max_len)
            max_len = n;
    }
    int32_t *path = malloc((max_len + 1) * sizeof *path);
    if (!t->child || !t->sibling || !t->token || !t->byte || !t->same || !last || !path) {
        free(ids);
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
    for (int i = 0; i < n_ids; i++) {
        size_t n;
        const char *b = vocab_decode(v, ids[i], &n);
        size_t common = 0; /* the start it shares with the token before: its path is there */
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
            t->token[end] = ids[i];
        } else { /* the same bytes as a token before: chained to it */
            int32_t k = t->token[end];
            while (t->same[k] >= 0)
                k = t->same[k];
            t->same[k] = ids[i];
        }
        prev = b;
        prev_n = n;
    }
    free(ids);
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
