/* json_mask: see json_mask.h. */
#include "json_mask.h"

#include <math.h>

static int is_end(int id, const int *end_ids, int n_end)
{
    for (int i = 0; i < n_end; i++)
        if (end_ids[i] == id)
            return 1;
    return 0;
}

int json_mask_logits(const json_prefix *j, const vocab *v, const int *end_ids, int n_end,
                     float *logits, int V)
{
    int complete = json_prefix_complete(j), possible = 0;
    for (int id = 0; id < V; id++) {
        int ok;
        if (is_end(id, end_ids, n_end) || vocab_is_special(v, id)) {
            ok = complete && is_end(id, end_ids, n_end);
        } else {
            size_t n;
            const char *b = vocab_decode(v, id, &n);
            json_prefix t;
            json_prefix_copy(&t, j);
            ok = b && n && json_prefix_feed(&t, b, n) == 0;
        }
        if (ok)
            possible++;
        else
            logits[id] = -INFINITY;
    }
    return possible;
}
