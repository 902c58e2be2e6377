/* json_bounds: a number's bounds (JSON Schema's minimum, maximum,
 * exclusiveMinimum, exclusiveMaximum) held exactly while a JSON number is
 * written digit by digit.
 *
 * A bound is kept as the plain decimal of its shortest spelling that reads
 * back as the same double (0.3 is "0.3", as Python's json module and
 * JavaScript read the schema and the answer), so comparing the answer's
 * digits with it is exact: no rounding decides whether 0.3 is at most 0.3.
 * What the answer may still become is a union of intervals of its magnitude
 * (its digits so far, more digits, a fraction), and a prefix is taken only
 * when one of them meets the bounds: an answer held so never reaches a
 * number it cannot finish. Exponents are not taken in a bounded number. */
#ifndef MOETIER_JSON_BOUNDS_H
#define MOETIER_JSON_BOUNDS_H

#include <stdint.h>

#include "core/base/errbuf.h"

#define JSON_BOUND_DIGITS 40 /* a bound's plain decimal, at most */
#define JSON_NUMBER_MAX 48   /* a bounded number's digits and point, at most */

typedef struct json_bound {
    uint8_t set, excl, neg;
    char mag[JSON_BOUND_DIGITS + 1]; /* "12", "0.5": no sign, no exponent */
} json_bound;

typedef struct json_bounds {
    json_bound lo, hi;
} json_bounds;

/* Builds b from a schema's lower and upper limits (has_lo, has_hi: given;
 * *_excl: exclusive); integer: moved inward to whole numbers. -1 with e set
 * when a limit's plain decimal is longer than JSON_BOUND_DIGITS. */
int json_bounds_init(json_bounds *b, int has_lo, double lo, int lo_excl, int has_hi, double hi, int hi_excl,
                     int integer, errbuf *e);
/* 1 when some number lies within the bounds (an integer one when integer). */
int json_bounds_satisfiable(const json_bounds *b);
/* The number written so far, without its sign: digits[0, n) of digits and
 * at most one '.'; neg: it began with '-'; n 0: only the sign. 1 when some
 * number it may still become lies within the bounds. */
int json_bounds_reachable(const json_bounds *b, int neg, const char *digits, int n);
/* 1 when the number written (whole) lies within the bounds. */
int json_bounds_hold(const json_bounds *b, int neg, const char *digits, int n);

#endif
