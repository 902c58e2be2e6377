/* errbuf: the error channel of the library.
 *
 * Library functions never print or exit on failure; they return -1 and leave a
 * human-readable reason in an errbuf supplied by the caller. The reason names the
 * file, tensor or field at fault and what was expected, so that the CLI can print
 * it as is. */
#ifndef MOETIER_ERRBUF_H
#define MOETIER_ERRBUF_H

#include <stdarg.h>

typedef struct errbuf {
    char msg[1024];
} errbuf;

/* Formats the reason into e (when e is not NULL) and returns -1, so a failing
 * function can end with `return err_set(e, ...)`. */
int err_set(errbuf *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Prepends context ("while loading X: ") to an existing reason; returns -1. */
int err_prefix(errbuf *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
