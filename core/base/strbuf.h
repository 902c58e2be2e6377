/* strbuf: a growable, always NUL-terminated byte string, for text built
 * piece by piece (a rendered prompt, JSON printed by hand). A failed
 * allocation, or growing past limit, sets failed and drops what comes next,
 * so a writer checks once at the end. */
#ifndef MOETIER_STRBUF_H
#define MOETIER_STRBUF_H

#include <stddef.h>

typedef struct strbuf {
    char *p; /* malloc'd; NULL until the first byte */
    size_t len, cap;
    size_t limit; /* 0: none; else the most bytes the text may hold */
    int failed;   /* out of memory or past the limit: the text is incomplete */
} strbuf;

void strbuf_put(strbuf *b, const char *s, size_t n);
void strbuf_puts(strbuf *b, const char *s);

#endif
