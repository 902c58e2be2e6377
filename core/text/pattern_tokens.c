/* pattern_tokens: see pattern_tokens.h. */
#include "pattern_tokens.h"

#include <stdlib.h>
#include <string.h>

static void pattern_tokens_free(void *p)
{
    pattern_tokens *pt = p;
    if (!pt)
        return;
    token_groups_free(&pt->tg);
    free(pt->taken);
    free(pt);
}

/* The pattern's classes as token_groups takes them. */
static pattern_tokens *build(const json_regex *r, const vocab *v)
{
    int n_ranges = r->cls_at[r->n_cls];
    uint32_t *pairs = malloc(((size_t)2 * (size_t)n_ranges + 1) * sizeof *pairs);
    class_ranges *cls = malloc(((size_t)r->n_cls + 1) * sizeof *cls);
    pattern_tokens *pt = calloc(1, sizeof *pt);
    int ok = pairs && cls && pt;
    for (int i = 0; ok && i < n_ranges; i++) {
        pairs[2 * i] = r->ranges[i].lo;
        pairs[2 * i + 1] = r->ranges[i].hi;
    }
    for (int c = 0; ok && c < r->n_cls; c++)
        cls[c] = (class_ranges){pairs + 2 * r->cls_at[c], (uint32_t)(r->cls_at[c + 1] - r->cls_at[c]), 0};
    ok = ok && !token_groups_build(&pt->tg, v, cls, r->n_cls);
    free(pairs);
    free(cls);
    if (ok)
        ok = (pt->taken = calloc((size_t)pt->tg.n_groups + 1, 1)) != NULL;
    if (!ok) {
        pattern_tokens_free(pt);
        return NULL;
    }
    return pt;
}

pattern_tokens *pattern_tokens_get(const json_regex *r, const vocab *v)
{
    /* (the table is a memo kept with the pattern, which it does not change) */
    json_regex *keep = (json_regex *)r;
    pattern_tokens *pt = keep->memo_free == pattern_tokens_free ? keep->memo : NULL;
    if (pt && pt->tg.v == v && pt->tg.n_vocab == v->n_vocab)
        return pt;
    if (keep->memo_free)
        keep->memo_free(keep->memo);
    keep->memo = pt = build(r, v);
    keep->memo_free = pt ? pattern_tokens_free : NULL;
    return pt;
}

void pattern_tokens_reset(pattern_tokens *pt)
{
    memset(pt->taken, 0, (size_t)pt->tg.n_groups);
}

int pattern_tokens_taken(pattern_tokens *pt, int id, pattern_take_fn take, const void *state)
{
    int g = pt->tg.group[id];
    if (g < 0)
        return 0; /* (TG_NEVER; TG_SPLIT is the caller's) */
    if (!pt->taken[g])
        pt->taken[g] = take(state, pt->tg.cps + pt->tg.at[g], pt->tg.at[g + 1] - pt->tg.at[g]) ? 1 : -1;
    return pt->taken[g] > 0;
}
