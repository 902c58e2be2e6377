/* grammar_trie: see grammar_trie.h. */
#include "grammar_trie.h"

#include <stdlib.h>
#include <string.h>

#include "token_groups.h"
#include "utf8.h"

typedef struct grammar_trie {
    const vocab *v; /* the vocabulary it was built for */
    int n_vocab;
    vocab_trie t;
} grammar_trie;

static void grammar_trie_free(void *p)
{
    grammar_trie *gt = p;
    if (!gt)
        return;
    vocab_trie_free(&gt->t);
    free(gt);
}

/* One key per group (its first token, the others chained after it) and one
 * per token fed as bytes. */
static grammar_trie *build(const gbnf *g, const vocab *v)
{
    class_ranges *cls = malloc(((size_t)g->n_classes + 1) * sizeof *cls);
    if (!cls)
        return NULL;
    for (int c = 0; c < g->n_classes; c++) {
        const gbnf_class *k = &g->classes[c];
        cls[c] = (class_ranges){k->n ? g->ranges + 2 * k->at : NULL, k->n, k->negated};
    }
    token_groups tg;
    int rc = token_groups_build(&tg, v, cls, g->n_classes);
    free(cls);
    if (rc)
        return NULL;
    int V = v->n_vocab, G = tg.n_groups;
    char *utf8 = malloc((size_t)tg.at[G] * 4 + 1); /* the groups' keys */
    trie_key *keys = malloc(((size_t)V + 1) * sizeof *keys);
    int *last = malloc(((size_t)G + 1) * sizeof *last); /* each group's last token so far */
    grammar_trie *gt = calloc(1, sizeof *gt);
    int ok = utf8 && keys && last && gt, n_keys = 0;
    size_t o = 0;
    for (int k = 0; ok && k < G; k++)
        last[k] = -1;
    for (int id = 0; ok && id < V; id++) {
        int k = tg.group[id];
        size_t n;
        const char *b = vocab_decode(v, id, &n);
        if (k == TG_SPLIT && b && n && !vocab_is_special(v, id)) {
            keys[n_keys++] = (trie_key){b, n, id};
        } else if (k >= 0 && last[k] < 0) {
            size_t start = o;
            for (int i = tg.at[k]; i < tg.at[k + 1]; i++)
                o += utf8_encode(tg.cps[i], utf8 + o);
            keys[n_keys++] = (trie_key){utf8 + start, o - start, id};
            last[k] = id;
        }
    }
    errbuf e;
    ok = ok && !vocab_trie_build_keys(&gt->t, V, keys, n_keys, &e);
    if (ok) { /* the groups' other tokens chained behind their first, in order */
        for (int k = 0; k < G; k++)
            last[k] = -1;
        for (int id = 0; id < V; id++) {
            int k = tg.group[id];
            if (k < 0)
                continue;
            if (last[k] >= 0)
                gt->t.same[last[k]] = id;
            last[k] = id;
        }
        gt->v = v;
        gt->n_vocab = V;
    }
    free(utf8);
    free(keys);
    free(last);
    token_groups_free(&tg);
    if (!ok) {
        grammar_trie_free(gt);
        return NULL;
    }
    return gt;
}

const vocab_trie *grammar_trie_get(const gbnf *g, const vocab *v)
{
    /* (the trie is a memo kept with the grammar, which it does not change) */
    gbnf *keep = (gbnf *)g;
    grammar_trie *gt = keep->memo_free == grammar_trie_free ? keep->memo : NULL;
    if (gt && gt->v == v && gt->n_vocab == v->n_vocab)
        return &gt->t;
    if (keep->memo_free)
        keep->memo_free(keep->memo);
    keep->memo = gt = build(g, v);
    keep->memo_free = gt ? grammar_trie_free : NULL;
    return gt ? &gt->t : NULL;
}
