/* utf8: see utf8.h. */
#include "utf8.h"

#include <stdlib.h>
#include <string.h>

int utf8_lead(uint8_t b, uint8_t *left, uint8_t *lo, uint8_t *hi)
{
    *lo = 0x80;
    *hi = 0xbf;
    if (b >= 0xc2 && b <= 0xdf)
        *left = 1;
    else if (b >= 0xe0 && b <= 0xef)
        *left = 2;
    else if (b >= 0xf0 && b <= 0xf4)
        *left = 3;
    else
        return -1;
    if (b == 0xe0)
        *lo = 0xa0;     /* no overlong forms */
    else if (b == 0xed)
        *hi = 0x9f;     /* no surrogates */
    else if (b == 0xf0)
        *lo = 0x90;
    else if (b == 0xf4)
        *hi = 0x8f;     /* nothing past U+10FFFF */
    return b & (0x3f >> *left);
}

void utf8_range(uint32_t cp, int left, uint8_t lo, uint8_t hi, uint32_t *first, uint32_t *last)
{
    int rest = 6 * (left - 1);
    *first = (cp << 6 | (lo & 0x3fu)) << rest;
    *last = (cp << 6 | (hi & 0x3fu)) << rest | ((1u << rest) - 1);
}

/* Length of the valid UTF-8 character at p (1..4; a NUL is one), 0 when the
 * bytes there are not one: a stray continuation byte, an overlong form, a
 * surrogate, past U+10FFFF, or cut short by the end. */
static size_t char_len(const unsigned char *p, size_t n)
{
    unsigned c = p[0];
    if (c < 0x80)
        return 1;
    size_t len;
    unsigned min;
    if (c >= 0xC2 && c <= 0xDF) {
        len = 2;
        min = 0x80;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        min = 0x800;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        min = 0x10000;
    } else {
        return 0;
    }
    if (len > n)
        return 0;
    unsigned cp = c & (0x7F >> len);
    for (size_t i = 1; i < len; i++) {
        if ((p[i] & 0xC0) != 0x80)
            return 0;
        cp = cp << 6 | (p[i] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return len;
}

size_t utf8_validate(const uint8_t *s, size_t len)
{
    size_t i = 0, k;
    while (i < len && (k = char_len(s + i, len - i)))
        i += k;
    return i;
}

size_t utf8_char_at(const char *p, size_t n, uint32_t *cp)
{
    const unsigned char *u = (const unsigned char *)p;
    size_t k = char_len(u, n);
    if (!k) {
        *cp = 0xFFFD;
        return 1;
    }
    uint32_t c = k == 1 ? u[0] : u[0] & (0x7Fu >> k);
    for (size_t i = 1; i < k; i++)
        c = c << 6 | (u[i] & 0x3Fu);
    *cp = c;
    return k;
}

size_t utf8_char_before(const char *p, size_t n, uint32_t *cp)
{
    /* the longest valid character that ends there (a lead byte at most 3
     * before the end), else the last byte alone */
    for (size_t k = n < 4 ? n : 4; k > 1; k--)
        if (char_len((const unsigned char *)p + n - k, k) == k)
            return utf8_char_at(p + n - k, k, cp);
    return utf8_char_at(p + n - 1, 1, cp);
}

int unicode_is_space(uint32_t c)
{
    return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
           c == 0x3000;
}

/* Bytes of the broken character at p[0, n) that one U+FFFD replaces: its
 * first byte and the continuation bytes after it that could still have made
 * a character (Unicode's "maximal subpart", as Python's and Rust's decoders
 * and the streaming decoder replace them); 1 for a byte that begins none. */
static size_t broken_len(const unsigned char *p, size_t n)
{
    uint8_t left, lo, hi;
    if (!p[0] || p[0] < 0x80 || utf8_lead(p[0], &left, &lo, &hi) < 0)
        return 1;
    size_t k = 1;
    while (k < n && left && p[k] >= lo && p[k] <= hi) {
        k++;
        left--;
        lo = 0x80;
        hi = 0xbf;
    }
    return k;
}

char *utf8_clean(const char *text, size_t n)
{
    char *out = malloc(n * 3 + 1);
    if (!out)
        return NULL;
    size_t o = 0;
    const unsigned char *p = (const unsigned char *)text;
    for (size_t i = 0; i < n;) {
        size_t k = p[i] ? char_len(p + i, n - i) : 0;
        if (k) {
            memcpy(out + o, p + i, k);
            o += k;
            i += k;
        } else {
            memcpy(out + o, "\xEF\xBF\xBD", 3);
            o += 3;
            i += broken_len(p + i, n - i);
        }
    }
    out[o] = 0;
    return out;
}

void utf8_chars_feed(utf8_chars *c, const char *p, size_t len, size_t *before)
{
    /* a character is counted at its first byte, and a broken one is one
     * U+FFFD: what came before is known at once */
    if (before)
        *before = c->n;
    for (size_t i = 0; i < len; i++) {
        uint8_t b = (uint8_t)p[i];
        if (c->open) {
            if (b >= c->lo && b <= c->hi) {
                c->lo = 0x80;
                c->hi = 0xbf;
                if (--c->left == 0)
                    c->open = 0;
                continue;
            }
            c->open = 0;        /* broken: b begins what comes next */
        }
        c->n++;
        if (b >= 0x80 && utf8_lead(b, &c->left, &c->lo, &c->hi) >= 0)
            c->open = 1;
    }
}

size_t utf8_unfinished_tail(const char *p, size_t n)
{
    for (size_t k = 1; k <= 3 && k <= n; k++) {
        unsigned char c = (unsigned char)p[n - k];
        if ((c & 0xC0) == 0x80)
            continue;               /* a continuation byte: look further back */
        size_t need = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
        return need > k ? k : 0;
    }
    return 0;
}

size_t utf8_encode(uint32_t cp, char *out)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | cp >> 6);
        out[1] = (char)(0x80 | (cp & 63));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | cp >> 12);
        out[1] = (char)(0x80 | (cp >> 6 & 63));
        out[2] = (char)(0x80 | (cp & 63));
        return 3;
    }
    out[0] = (char)(0xF0 | cp >> 18);
    out[1] = (char)(0x80 | (cp >> 12 & 63));
    out[2] = (char)(0x80 | (cp >> 6 & 63));
    out[3] = (char)(0x80 | (cp & 63));
    return 4;
}
