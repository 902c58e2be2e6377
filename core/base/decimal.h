/* decimal: numbers as a user writes them on a command line or in a setting,
 * in decimal notation only. strtod alone also takes leading white space,
 * hexadecimal ("0x10" is 16), "inf", "nan" and "infinity": a mistyped flag
 * such as --dram-gb 0x10 would then run with a budget nobody meant. */
#ifndef MOETIER_DECIMAL_H
#define MOETIER_DECIMAL_H

/* Reads [+-]digits[.digits][(e|E)[+-]digits] (digits on one side of the point
 * at least) from s, as strtod does (errno ERANGE past a double's range); *end
 * is set past it, or to s (and 0 returned) when s does not start with one or
 * strtod would read more ("0x10" is none). */
double decimal_parse(const char *s, char **end);

#endif
