/* decimal: decimal-notation numbers (see decimal.h). */
#include "decimal.h"

#include <ctype.h>
#include <stdlib.h>

/* Past the decimal number at s, or s when there is none. */
static const char *decimal_end(const char *s)
{
    const char *p = s;
    if (*p == '+' || *p == '-')
        p++;
    const char *digits = p;
    while (isdigit((unsigned char)*p))
        p++;
    int whole = p > digits;
    if (*p == '.') {
        const char *frac = ++p;
        while (isdigit((unsigned char)*p))
            p++;
        if (!whole && p == frac)
            return s;
    } else if (!whole) {
        return s;
    }
    if (*p == 'e' || *p == 'E') {
        const char *q = p + 1;
        if (*q == '+' || *q == '-')
            q++;
        if (isdigit((unsigned char)*q)) {
            while (isdigit((unsigned char)*q))
                q++;
            p = q;
        }
    }
    return p;
}

double decimal_parse(const char *s, char **end)
{
    const char *stop = decimal_end(s);
    if (stop == s) {
        *end = (char *)s;
        return 0;
    }
    char *e;
    double v = strtod(s, &e);
    /* (strtod reads the same span: a decimal number is one of its forms) */
    *end = e == stop ? e : (char *)s;
    return e == stop ? v : 0;
}
