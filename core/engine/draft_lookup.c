/* draft_lookup: see draft_lookup.h. */
#include "draft_lookup.h"

#include "engine.h"

/* token i of the context ids[0..n) + last */
static int at(const int *ids, int n, int last, int i)
{
    return i < n ? ids[i] : last;
}

int draft_lookup(const int *ids, int n, int last, int max, int *out, int *match)
{
    if (match)
        *match = 0;
    int L = n + 1;
    for (int g = DRAFT_LOOKUP_MAX_NGRAM; g >= DRAFT_LOOKUP_MIN_NGRAM && max > 0; g--) {
        if (g >= L)
            continue;
        /* an occurrence ending at j, latest first; the context's own last
         * run (ending at L - 1) is not one */
        for (int j = L - 2; j >= g - 1; j--) {
            int k = 0;
            while (k < g && at(ids, n, last, j - k) == at(ids, n, last, L - 1 - k))
                k++;
            if (k < g)
                continue;
            while (k < DRAFT_LOOKUP_MATCH_MAX && j - k >= 0 &&
                   at(ids, n, last, j - k) == at(ids, n, last, L - 1 - k))
                k++;
            if (match)
                *match = k;
            int d = 0;
            for (; d < max && j + 1 + d < L; d++)
                out[d] = at(ids, n, last, j + 1 + d);
            return d;
        }
    }
    return 0;
}

int draft_lookup_step(const engine *en, int last, int want, int left, int *out, int *match)
{
    int max = want < ENGINE_DRAFT_MAX_T - 1 ? want : ENGINE_DRAFT_MAX_T - 1;
    int pass = engine_step_rows(en) - 1;    /* a second pass reads the weights again */
    max = max < pass ? max : pass;
    int room = en->kv.max_ctx - en->n_past - 1;
    max = max < room ? max : room;
    max = max < left ? max : left;
    if (match)
        *match = 0;
    return max > 0 ? draft_lookup(en->cached_ids, en->n_past, last, max, out, match) : 0;
}
