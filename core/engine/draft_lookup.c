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
        /* the occurrence ending at j whose run matches the context's furthest
         * back (up to DRAFT_LOOKUP_MATCH_MAX: its guesses are the likeliest
         * kept), the latest of those; the context's own last run (ending at
         * L - 1) is not one */
        int best = -1, best_k = 0;
        for (int j = L - 2; j >= g - 1 && best_k < DRAFT_LOOKUP_MATCH_MAX; j--) {
            int k = 0;
            while (k < DRAFT_LOOKUP_MATCH_MAX && j - k >= 0 &&
                   at(ids, n, last, j - k) == at(ids, n, last, L - 1 - k))
                k++;
            if (k >= g && k > best_k) {
                best = j;
                best_k = k;
            }
        }
        if (best < 0)
            continue;
        if (match)
            *match = best_k;
        int d = 0;
        for (; d < max && best + 1 + d < L; d++)
            out[d] = at(ids, n, last, best + 1 + d);
        return d;
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
