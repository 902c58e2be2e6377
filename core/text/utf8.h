/* utf8: checking and repairing UTF-8, for the tokenizer (which takes only
 * valid text) and for text from the model (any bytes) that goes into JSON or
 * back into a prompt. */
#ifndef MOETIER_UTF8_H
#define MOETIER_UTF8_H

#include <stddef.h>
#include <stdint.h>

/* Byte offset of the first invalid UTF-8 sequence, or len when valid. */
size_t utf8_validate(const uint8_t *s, size_t len);
/* A malloc'd, NUL-terminated copy of text[0, n) in which each byte that does
 * not start a valid character (a NUL included) becomes U+FFFD; NULL when out
 * of memory. */
char *utf8_clean(const char *text, size_t n);

#endif
