/* json_prefix: see json_prefix.h. A pushdown automaton over bytes: the stack
 * holds the open containers, the state what may come next. */
#include "json_prefix.h"

#include <string.h>

enum {
    S_START,            /* before the object: whitespace or '{' */
    S_VALUE,            /* a value: after ':', or after ',' in an array */
    S_ARRAY_FIRST,      /* after '[': a value or ']' */
    S_KEY_FIRST,        /* after '{': a key or '}' */
    S_KEY,              /* after ',' in an object: a key */
    S_COLON,            /* after a key */
    S_AFTER,            /* after a value in a container: ',' or its close */
    S_STRING,
    S_ESCAPE,           /* after a backslash */
    S_HEX,              /* in \uXXXX: sub digits read */
    S_TRUE, S_FALSE, S_NULL,    /* sub letters of the literal read */
    S_MINUS,            /* numbers: after '-' */
    S_ZERO,             /* a leading 0 (no digit may follow it) */
    S_INT,
    S_DOT,              /* after '.': a digit must follow */
    S_FRAC,
    S_EXP,              /* after 'e': a sign or a digit */
    S_EXP_SIGN,
    S_EXP_DIGITS,
    S_DONE              /* the object is closed */
};

static const char *const literal[] = {"true", "false", "null"};

void json_prefix_init(json_prefix *j)
{
    memset(j, 0, sizeof *j);
    j->state = S_START;
}

int json_prefix_complete(const json_prefix *j)
{
    return j->state == S_DONE;
}

static int is_ws(unsigned char b)
{
    return b == ' ' || b == '\t' || b == '\n' || b == '\r';
}

static int is_digit(unsigned char b)
{
    return b >= '0' && b <= '9';
}

static int is_hex(unsigned char b)
{
    return is_digit(b) || (b >= 'a' && b <= 'f') || (b >= 'A' && b <= 'F');
}

static int push(json_prefix *j, unsigned char open, int state)
{
    if (j->depth == JSON_PREFIX_MAX_DEPTH)
        return -1;
    j->stack[j->depth++] = open;
    j->state = (uint8_t)state;
    return 0;
}

/* A value ended: the container goes on, or the object is complete. */
static int end_value(json_prefix *j)
{
    j->state = j->depth ? S_AFTER : S_DONE;
    return 0;
}

static int close_container(json_prefix *j, unsigned char open)
{
    if (!j->depth || j->stack[j->depth - 1] != open)
        return -1;
    j->depth--;
    return end_value(j);
}

static int begin_value(json_prefix *j, unsigned char b)
{
    switch (b) {
    case '{': return push(j, '{', S_KEY_FIRST);
    case '[': return push(j, '[', S_ARRAY_FIRST);
    case '"':
        j->state = S_STRING;
        j->in_key = 0;
        return 0;
    case '-': j->state = S_MINUS; return 0;
    case '0': j->state = S_ZERO; return 0;
    case 't': j->state = S_TRUE; j->sub = 1; return 0;
    case 'f': j->state = S_FALSE; j->sub = 1; return 0;
    case 'n': j->state = S_NULL; j->sub = 1; return 0;
    default:
        if (b >= '1' && b <= '9') {
            j->state = S_INT;
            return 0;
        }
        return -1;
    }
}

/* A string's byte: UTF-8 checked as it goes (the ranges of RFC 3629). */
static int string_byte(json_prefix *j, unsigned char b)
{
    if (j->utf8_left) {
        if (b < j->utf8_lo || b > j->utf8_hi)
            return -1;
        j->utf8_left--;
        j->utf8_lo = 0x80;
        j->utf8_hi = 0xbf;
        return 0;
    }
    if (b == '"') {
        if (j->in_key) {
            j->state = S_COLON;
            return 0;
        }
        return end_value(j);
    }
    if (b == '\\') {
        j->state = S_ESCAPE;
        return 0;
    }
    if (b < 0x20)
        return -1;
    if (b < 0x80)
        return 0;
    j->utf8_lo = 0x80;
    j->utf8_hi = 0xbf;
    if (b >= 0xc2 && b <= 0xdf)
        j->utf8_left = 1;
    else if (b >= 0xe0 && b <= 0xef)
        j->utf8_left = 2;
    else if (b >= 0xf0 && b <= 0xf4)
        j->utf8_left = 3;
    else
        return -1;
    if (b == 0xe0)
        j->utf8_lo = 0xa0;          /* no overlong forms */
    else if (b == 0xed)
        j->utf8_hi = 0x9f;          /* no surrogates */
    else if (b == 0xf0)
        j->utf8_lo = 0x90;
    else if (b == 0xf4)
        j->utf8_hi = 0x8f;          /* nothing past U+10FFFF */
    return 0;
}

/* A number's byte, or the byte after it: a number ends at the first byte
 * that cannot continue it, when what it has is whole. */
static int number_byte(json_prefix *j, unsigned char b, int *ended)
{
    int digit = is_digit(b), e = b == 'e' || b == 'E';
    *ended = 0;
    switch (j->state) {
    case S_MINUS:
        if (!digit)
            return -1;
        j->state = b == '0' ? S_ZERO : S_INT;
        return 0;
    case S_ZERO:
    case S_INT:
        if (digit && j->state == S_INT)
            return 0;
        if (b == '.')
            j->state = S_DOT;
        else if (e)
            j->state = S_EXP;
        else
            *ended = 1;
        return 0;
    case S_DOT:
        if (!digit)
            return -1;
        j->state = S_FRAC;
        return 0;
    case S_FRAC:
        if (e)
            j->state = S_EXP;
        else if (!digit)
            *ended = 1;
        return 0;
    case S_EXP:
        if (b == '+' || b == '-')
            j->state = S_EXP_SIGN;
        else if (digit)
            j->state = S_EXP_DIGITS;
        else
            return -1;
        return 0;
    case S_EXP_SIGN:
        if (!digit)
            return -1;
        j->state = S_EXP_DIGITS;
        return 0;
    default:    /* S_EXP_DIGITS */
        if (!digit)
            *ended = 1;
        return 0;
    }
}

static int step(json_prefix *j, unsigned char b)
{
    if (j->state >= S_MINUS && j->state <= S_EXP_DIGITS) {
        int ended;
        if (number_byte(j, b, &ended))
            return -1;
        if (!ended)
            return 0;
        j->state = S_AFTER;     /* numbers are inside containers: the byte goes on there */
    }
    switch (j->state) {
    case S_STRING:
        return string_byte(j, b);
    case S_ESCAPE:
        if (b == 'u') {
            j->state = S_HEX;
            j->sub = 0;
            return 0;
        }
        if (!strchr("\"\\/bfnrt", b) || !b)
            return -1;
        j->state = S_STRING;
        return 0;
    case S_HEX:
        if (!is_hex(b))
            return -1;
        if (++j->sub == 4)
            j->state = S_STRING;
        return 0;
    case S_TRUE:
    case S_FALSE:
    case S_NULL: {
        const char *lit = literal[j->state - S_TRUE];
        if (b != (unsigned char)lit[j->sub])
            return -1;
        if (lit[++j->sub])
            return 0;
        return end_value(j);
    }
    case S_DONE:
        return -1;
    default:
        break;
    }
    /* the structural states: whitespace, then what each takes */
    if (is_ws(b))
        return ++j->ws > JSON_PREFIX_MAX_WS ? -1 : 0;
    j->ws = 0;
    switch (j->state) {
    case S_START:
        return b == '{' ? push(j, '{', S_KEY_FIRST) : -1;
    case S_VALUE:
        return begin_value(j, b);
    case S_ARRAY_FIRST:
        return b == ']' ? close_container(j, '[') : begin_value(j, b);
    case S_KEY_FIRST:
        if (b == '}')
            return close_container(j, '{');
        /* fall through */
    case S_KEY:
        if (b != '"')
            return -1;
        j->state = S_STRING;
        j->in_key = 1;
        return 0;
    case S_COLON:
        if (b != ':')
            return -1;
        j->state = S_VALUE;
        return 0;
    default:    /* S_AFTER */
        if (b == ',') {
            j->state = j->stack[j->depth - 1] == '{' ? S_KEY : S_VALUE;
            return 0;
        }
        if (b == '}' || b == ']')
            return close_container(j, b == '}' ? '{' : '[');
        return -1;
    }
}

int json_prefix_feed(json_prefix *j, const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (step(j, (unsigned char)p[i]))
            return -1;
    return 0;
}
