/* draft_lookup: see draft_lookup.h. */
#include "draft_lookup.h"

/* token i of the context ids[0..n) + last */
static int at(const int *ids, int n, int last, int i)
{
    return i < n ? ids[i] : last;
}

int draft_lookup(const int *ids, int n, int last, int max, int *out)
{
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
            int d = 0;
            for (; d < max && j + 1 + d < L; d++)
                out[d] = at(ids, n, last, j + 1 + d);
            return d;
        }
    }
    return 0;
}
