/* stop_filter: see stop_filter.h. */
#include "stop_filter.h"

#include <stdlib.h>
#include <string.h>

#include "core/text/utf8.h"

void stop_filter_init(stop_filter *f, const char *const *stop, int n_stop)
{
    memset(f, 0, sizeof *f);
    f->stop = stop;
    f->n_stop = n_stop;
}

/* Length of the longest tail of p[0..n) that is a proper prefix of a stop string. */
static size_t stop_prefix_tail(const stop_filter *f, const char *p, size_t n)
{
    size_t best = 0;
    for (int i = 0; i < f->n_stop; i++) {
        size_t sl = strlen(f->stop[i]);
        for (size_t k = sl - 1 < n ? sl - 1 : n; k > best; k--)
            if (!memcmp(p + n - k, f->stop[i], k)) {
                best = k;
                break;
            }
    }
    return best;
}

static int reserve(char **buf, size_t *cap, size_t need)
{
    if (need <= *cap)
        return 0;
    size_t nc = need * 2;
    char *nb = realloc(*buf, nc);
    if (!nb)
        return -1;
    *buf = nb;
    *cap = nc;
    return 0;
}

/* Moves the first n held bytes to the release buffer. */
static int release(stop_filter *f, size_t n, const char **out, size_t *out_len)
{
    if (reserve(&f->out, &f->out_cap, n + 1))
        return -1;
    memcpy(f->out, f->held, n);
    f->out[n] = 0;
    memmove(f->held, f->held + n, f->held_len - n);
    f->held_len -= n;
    f->base += n;
    *out = f->out;
    *out_len = n;
    return 0;
}

static int feed(stop_filter *f, const char *p, size_t n, int early, const char **out, size_t *out_len)
{
    *out = "";
    *out_len = 0;
    if (f->stopped)
        return 1;
    if (reserve(&f->held, &f->held_cap, f->held_len + n + 1))
        return -1;
    memcpy(f->held + f->held_len, p, n);
    f->held_len += n;
    if (early)
        f->dead = f->base + f->held_len;
    /* the stop string that completes first (as if bytes came one at a time, so
     * the result does not depend on how the text is cut); on a tie, the longer.
     * One may end only after the early bytes: it starts at dead - sl + 1 or later. */
    size_t cut = f->held_len, end = (size_t)-1;
    int which = -1;
    for (int i = 0; i < f->n_stop; i++) {
        size_t sl = strlen(f->stop[i]);
        size_t from = f->dead + 1 > f->base + sl ? f->dead + 1 - sl - f->base : 0;
        const char *hit = from >= f->held_len ? NULL
                                              : memmem(f->held + from, f->held_len - from, f->stop[i], sl);
        size_t at = hit ? (size_t)(hit - f->held) : 0;
        if (hit && (at + sl < end || (at + sl == end && at < cut))) {
            end = at + sl;
            cut = at;
            which = i;
        }
    }
    if (cut < f->held_len) {
        f->stopped = 1;
        f->which = which;
        f->held_len = cut;
        return release(f, cut, out, out_len) ? -1 : 1;
    }
    size_t keep = stop_prefix_tail(f, f->held, f->held_len);
    size_t partial = utf8_unfinished_tail(f->held, f->held_len - keep);
    return release(f, f->held_len - keep - partial, out, out_len);
}

int stop_filter_feed(stop_filter *f, const char *p, size_t n, const char **out, size_t *out_len)
{
    return feed(f, p, n, 0, out, out_len);
}

int stop_filter_feed_early(stop_filter *f, const char *p, size_t n, const char **out, size_t *out_len)
{
    return feed(f, p, n, 1, out, out_len);
}

void stop_filter_finish(stop_filter *f, const char **out, size_t *out_len)
{
    *out = "";
    *out_len = 0;
    if (f->held_len && release(f, f->held_len, out, out_len))
        f->held_len = 0;
}

void stop_filter_free(stop_filter *f)
{
    free(f->held);
    free(f->out);
    memset(f, 0, sizeof *f);
}
