/* json_bounds: see json_bounds.h. Magnitudes are plain decimals ("120",
 * "0.25"); a sign's window is the interval of magnitudes the bounds leave to
 * numbers of that sign. */
#include "json_bounds.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* x's magnitude as the plain decimal of its shortest round-trip spelling */
static int plain_decimal(double x, char *out, size_t cap)
{
    char e[40];
    x = fabs(x);
    if (x == 0) {
        snprintf(out, cap, "0");
        return 0;
    }
    for (int p = 1; p <= 17; p++) {
        snprintf(e, sizeof e, "%.*e", p - 1, x);
        if (strtod(e, NULL) == x)
            break;
    }
    char digits[24];
    int n = 0;
    const char *c = e;
    for (; *c && *c != 'e'; c++)
        if (*c != '.')
            digits[n++] = *c;
    while (n > 1 && digits[n - 1] == '0')
        n--;
    int point = atoi(c + 1) + 1; /* digits before the decimal point */
    size_t len = point <= 0 ? (size_t)(2 - point + n) : point >= n ? (size_t)point : (size_t)n + 1;
    if (len + 1 > cap)
        return -1;
    char *o = out;
    if (point <= 0) {
        *o++ = '0';
        *o++ = '.';
        for (int k = 0; k < -point; k++)
            *o++ = '0';
        memcpy(o, digits, (size_t)n);
        o += n;
    } else if (point >= n) {
        memcpy(o, digits, (size_t)n);
        o += n;
        for (int k = n; k < point; k++)
            *o++ = '0';
    } else {
        memcpy(o, digits, (size_t)point);
        o += point;
        *o++ = '.';
        memcpy(o, digits + point, (size_t)(n - point));
        o += n - point;
    }
    *o = 0;
    return 0;
}

static int bound_set(json_bound *b, double x, int excl, const char *what, errbuf *e)
{
    b->set = 1;
    b->excl = (uint8_t)excl;
    b->neg = x < 0;
    if (plain_decimal(x, b->mag, sizeof b->mag))
        return err_set(e,
                       "the %s bound %g is a decimal of more than %d digits, past what this server "
                       "holds an answer to",
                       what, x, JSON_BOUND_DIGITS);
    return 0;
}

int json_bounds_init(json_bounds *b, int has_lo, double lo, int lo_excl, int has_hi, double hi, int hi_excl,
                     int integer, errbuf *e)
{
    memset(b, 0, sizeof *b);
    if (integer && has_lo) {
        lo = lo_excl ? floor(lo) + 1 : ceil(lo);
        lo_excl = 0;
    }
    if (integer && has_hi) {
        hi = hi_excl ? ceil(hi) - 1 : floor(hi);
        hi_excl = 0;
    }
    if (has_lo && bound_set(&b->lo, lo, lo_excl, "lower", e))
        return -1;
    if (has_hi && bound_set(&b->hi, hi, hi_excl, "upper", e))
        return -1;
    return 0;
}

/* magnitudes a[0, an) and b[0, bn) compared: <0, 0, >0 */
static int dec_cmp(const char *a, int an, const char *b, int bn)
{
    const char *ad = memchr(a, '.', (size_t)an), *bd = memchr(b, '.', (size_t)bn);
    int ai = ad ? (int)(ad - a) : an, bi = bd ? (int)(bd - b) : bn;
    const char *ap = a, *bp = b;
    int al = ai, bl = bi;
    while (al > 1 && *ap == '0')
        ap++, al--;
    while (bl > 1 && *bp == '0')
        bp++, bl--;
    if (al != bl)
        return al < bl ? -1 : 1;
    int c = memcmp(ap, bp, (size_t)al);
    if (c)
        return c < 0 ? -1 : 1;
    int af = ad ? an - ai - 1 : 0, bf = bd ? bn - bi - 1 : 0;
    for (int k = 0; k < af || k < bf; k++) {
        char x = k < af ? ad[1 + k] : '0', y = k < bf ? bd[1 + k] : '0';
        if (x != y)
            return x < y ? -1 : 1;
    }
    return 0;
}

static int is_zero(const json_bound *b)
{
    return !dec_cmp(b->mag, (int)strlen(b->mag), "0", 1);
}

/* The magnitudes a number of one sign may have: from lo to hi (has_hi 0:
 * no end), each end taken or not; empty when none. */
typedef struct window {
    const char *lo, *hi;
    int lo_in, hi_in, has_hi, empty;
} window;

static window window_of(const json_bounds *b, int neg)
{
    window w = {.lo = "0", .lo_in = 1};
    /* a '-' number's magnitude is bounded below by the upper bound, above by the lower one */
    const json_bound *below = neg ? &b->hi : &b->lo, *above = neg ? &b->lo : &b->hi;
    if (below->set && (below->neg == neg || is_zero(below))) {
        w.lo = below->mag;
        w.lo_in = !below->excl;
    }
    if (above->set && (above->neg == neg || is_zero(above))) {
        w.has_hi = 1;
        w.hi = above->mag;
        w.hi_in = !above->excl;
    } else if (above->set) {
        w.empty = 1; /* every number of this sign is past it */
    }
    if (w.has_hi && !w.empty) {
        int c = dec_cmp(w.lo, (int)strlen(w.lo), w.hi, (int)strlen(w.hi));
        w.empty = c > 0 || (c == 0 && !(w.lo_in && w.hi_in));
    }
    return w;
}

static int below_hi(const window *w, const char *x, int n)
{
    if (!w->has_hi)
        return 1;
    int c = dec_cmp(x, n, w->hi, (int)strlen(w->hi));
    return c < 0 || (c == 0 && w->hi_in);
}

/* whether [a, b) (b NULL: no end) meets the window: a is at most its top,
 * and its bottom is below b (a fraction or more digits reach any point between) */
static int meets(const window *w, const char *a, int an, const char *b, int bn)
{
    return !w->empty && below_hi(w, a, an) && (!b || dec_cmp(w->lo, (int)strlen(w->lo), b, bn) < 0);
}

/* t[0, n) with its last digit raised by one (carried over the point); the length */
static int next_up(const char *t, int n, char *out)
{
    memcpy(out + 1, t, (size_t)n);
    int k = n;
    while (k > 0) {
        char *d = &out[k];
        if (*d == '.') {
            k--;
            continue;
        }
        if (*d < '9') {
            (*d)++;
            break;
        }
        *d = '0';
        k--;
    }
    if (k > 0) {
        memmove(out, out + 1, (size_t)n);
        return n;
    }
    out[0] = '1';
    return n + 1;
}

int json_bounds_reachable(const json_bounds *b, int neg, const char *t, int n)
{
    window w = window_of(b, neg);
    char lo[JSON_NUMBER_MAX + 2], hi[JSON_NUMBER_MAX + 2];
    if (n == 0) /* '-': any magnitude (and "-0", 0) */
        return meets(&w, "0", 1, NULL, 0);
    const char *dot = memchr(t, '.', (size_t)n);
    if (dot && dot == t + n - 1) /* "I.": [I, I + 1) */
        return meets(&w, t, n - 1, hi, next_up(t, n - 1, hi));
    if (dot) /* "I.F": [I.F, I.F + one of its last digit) */
        return meets(&w, t, n, hi, next_up(t, n, hi));
    if (n == 1 && t[0] == '0') /* a leading zero takes only a fraction */
        return meets(&w, "0", 1, "1", 1);
    /* "I": I and its fractions, or more digits: [I, I + 1) x 10^k */
    memcpy(lo, t, (size_t)n);
    int hn = next_up(t, n, hi);
    for (int k = 0; n + k <= JSON_NUMBER_MAX; k++) {
        if (meets(&w, lo, n + k, hi, hn + k))
            return 1;
        if (!below_hi(&w, lo, n + k))
            return 0;
        lo[n + k] = '0';
        hi[hn + k] = '0';
    }
    return 0;
}

int json_bounds_hold(const json_bounds *b, int neg, const char *t, int n)
{
    window w = window_of(b, neg);
    if (w.empty || !below_hi(&w, t, n))
        return 0;
    int c = dec_cmp(t, n, w.lo, (int)strlen(w.lo));
    return c > 0 || (c == 0 && w.lo_in);
}

int json_bounds_satisfiable(const json_bounds *b)
{
    return !window_of(b, 0).empty || !window_of(b, 1).empty;
}
