/* utf8: checking and repairing UTF-8, for the tokenizer (which takes only
 * valid text) and for text from the model (any bytes) that goes into JSON or
 * back into a prompt. */
#ifndef MOETIER_UTF8_H
#define MOETIER_UTF8_H

#include <stddef.h>
#include <stdint.h>

/* A character read byte by byte (RFC 3629: no overlong form, surrogate or
 * code point past U+10FFFF): utf8_lead takes its first byte b (not ASCII)
 * and sets *left, the continuation bytes to come, and [*lo, *hi], the next
 * one's range; it returns the bits b holds, or -1 when b begins no
 * character. Each continuation byte then adds 6 bits, the range after the
 * first being 0x80-0xBF. */
int utf8_lead(uint8_t b, uint8_t *left, uint8_t *lo, uint8_t *hi);
/* The code points such a character may still be: bits cp so far, left > 0
 * bytes to come, the next in [lo, hi]. */
void utf8_range(uint32_t cp, int left, uint8_t lo, uint8_t hi, uint32_t *first, uint32_t *last);
/* Byte offset of the first invalid UTF-8 sequence, or len when valid. */
size_t utf8_validate(const uint8_t *s, size_t len);
/* A malloc'd, NUL-terminated copy of text[0, n) in which each broken
 * character becomes one U+FFFD: a byte that begins none (a NUL included), or
 * a first byte with the continuation bytes that follow it as far as they could
 * still have made a character (Unicode's maximal subpart, as Python's
 * errors="replace" and the streaming decoder make them); NULL when out of
 * memory. */
char *utf8_clean(const char *text, size_t n);
/* The character at p[0, n) (n > 0): its length, and *cp its code point; a
 * byte that begins no valid character is one of its own, *cp U+FFFD. */
size_t utf8_char_at(const char *p, size_t n, uint32_t *cp);
/* The character that ends at p + n (n > 0), as utf8_char_at reads it. */
size_t utf8_char_before(const char *p, size_t n, uint32_t *cp);
/* Python's str.isspace() of one code point: ASCII's whitespace, the
 * separators U+001C-U+001F, U+0085, and Unicode's spaces and line and
 * paragraph separators (U+00A0, U+2003, U+3000, ...). */
int unicode_is_space(uint32_t cp);
/* Counts the characters of a text that comes piece by piece, as utf8_clean
 * would make them of the whole: a valid character one, a broken one one
 * (U+FFFD). Zero-initialise. */
typedef struct {
    size_t n;                   /* characters begun in the pieces so far */
    uint8_t open;               /* 1 while a character begun is not yet complete */
    uint8_t left, lo, hi;       /* its bytes to come, the next one's range */
} utf8_chars;
/* Adds piece p[0, len); *before (may be NULL) is the characters begun before
 * it (a character the pieces before left open counts, whether the piece
 * completes or breaks it). */
void utf8_chars_feed(utf8_chars *c, const char *p, size_t len, size_t *before);
/* The bytes at the end of p[0, n) that begin a character not yet complete
 * (0 to 3): held back from a piece of text so that what goes out is whole
 * characters. */
size_t utf8_unfinished_tail(const char *p, size_t n);
/* Writes code point cp (at most U+10FFFF) as 1 to 4 bytes at out; returns how many. */
size_t utf8_encode(uint32_t cp, char *out);

#endif
