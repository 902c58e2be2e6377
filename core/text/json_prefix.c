/* json_prefix: see json_prefix.h. A pushdown automaton over bytes: the stack
 * holds the open containers with their schema nodes, the state what may come
 * next. A value's schema node is checked where the value begins (its first
 * byte), keys as they are written, and a container's bounds (required keys,
 * item counts) where it goes on or closes. */
#include "json_prefix.h"

#include <limits.h>
#include <stddef.h>
#include <string.h>

#include "utf8.h"

enum {
    S_START,            /* before the value: whitespace or its first byte */
    S_VALUE,            /* a value: after ':', or after ',' in an array */
    S_ARRAY_FIRST,      /* after '[': a value or ']' */
    S_KEY_FIRST,        /* after '{': a key or '}' */
    S_KEY,              /* after ',' in an object: a key */
    S_COLON,            /* after a key */
    S_AFTER,            /* after a value in a container: ',' or its close */
    S_STRING,
    S_ESCAPE,           /* after a backslash */
    S_HEX,              /* in a \u escape: sub of its four hex digits read */
    S_TRUE, S_FALSE, S_NULL,    /* sub letters of the literal read */
    S_ENUM,             /* in an enum's value: pos bytes of the candidates read */
    S_MINUS,            /* numbers: after '-' */
    S_ZERO,             /* a leading 0 (no digit may follow it) */
    S_INT,
    S_DOT,              /* after '.': a digit must follow */
    S_FRAC,
    S_EXP,              /* after 'e': a sign or a digit */
    S_EXP_SIGN,
    S_EXP_DIGITS,
    S_DONE              /* the value is whole; nothing may follow */
};

static const char *const literal[] = {"true", "false", "null"};

static const js_node *node(const json_prefix *j, int i)
{
    return &j->schema->node[i];
}

static json_frame *top(json_prefix *j)
{
    return &j->frame[j->depth - 1];
}

void json_prefix_init(json_prefix *j, const json_schema *s)
{
    memset(j, 0, offsetof(json_prefix, re));
    j->schema = s;
    j->state = S_START;
    j->value_node = (int16_t)s->root;
}

void json_prefix_copy(json_prefix *dst, const json_prefix *src)
{
    memcpy(dst, src, offsetof(json_prefix, re));
    if (src->state >= S_STRING && src->state <= S_HEX && node(src, src->str_node)->re)
        dst->re = src->re;
    if (src->state >= S_MINUS && src->state <= S_EXP_DIGITS)
        memcpy(dst->num, src->num, src->num_len);
    memcpy(dst->stack, src->stack, src->depth);
    memcpy(dst->frame, src->frame, (size_t)src->depth * sizeof src->frame[0]);
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

static int number_whole(int state)
{
    return state == S_ZERO || state == S_INT || state == S_FRAC || state == S_EXP_DIGITS;
}

/* an enum value of the candidates is whole after pos bytes */
static int enum_whole(const json_prefix *j)
{
    const js_node *n = node(j, j->enum_node);
    for (int k = 0; k < n->n_enum; k++)
        if ((j->cand >> k & 1) && n->enum_len[k] == j->pos)
            return 1;
    return 0;
}

/* the whole number written lies within its node's bounds (if any) */
static int number_holds(const json_prefix *j)
{
    return !node(j, j->num_node)->bounded ||
           json_bounds_hold(&node(j, j->num_node)->bounds, j->num_neg, j->num, j->num_len);
}

int json_prefix_complete(const json_prefix *j)
{
    return j->state == S_DONE ||
           (j->depth == 0 &&
            ((number_whole(j->state) && number_holds(j)) || (j->state == S_ENUM && enum_whole(j))));
}

int json_prefix_string_room(const json_prefix *j)
{
    if (j->state != S_STRING || j->in_key || j->utf8_left || node(j, j->str_node)->re)
        return -1;
    int max = node(j, j->str_node)->max_len;
    return max == INT_MAX ? INT_MAX : max - (int)j->str_len;
}

static int has_first(const js_node *n, unsigned char b)
{
    return n->first[b >> 3] >> (b & 7) & 1;
}

/* A value ended: the container goes on, or the value is whole. */
static int end_value(json_prefix *j)
{
    j->state = j->depth ? S_AFTER : S_DONE;
    return 0;
}

static int push(json_prefix *j, unsigned char open, int n)
{
    if (j->depth == JSON_PREFIX_MAX_DEPTH)
        return -1;
    j->stack[j->depth] = open;
    j->frame[j->depth++] = (json_frame){.node = (int16_t)n, .prop = -1};
    if (open == '[') {
        j->state = S_ARRAY_FIRST;
        j->value_node = (int16_t)node(j, n)->items;
    } else {
        j->state = S_KEY_FIRST;
    }
    return 0;
}

/* whether the open object may close: every required property given */
static int object_may_close(json_prefix *j)
{
    return (node(j, top(j)->node)->required & ~top(j)->seen) == 0;
}

/* whether the open object may take another key */
static int object_may_go_on(json_prefix *j)
{
    const js_node *n = node(j, top(j)->node);
    uint64_t all = n->n_props == 64 ? ~0ull : (1ull << n->n_props) - 1;
    return n->extra >= 0 || (top(j)->seen & all) != all;
}

static int close_container(json_prefix *j, unsigned char open)
{
    if (!j->depth || j->stack[j->depth - 1] != open)
        return -1;
    if (open == '{' ? !object_may_close(j) : top(j)->count < node(j, top(j)->node)->min_items)
        return -1;
    j->depth--;
    return end_value(j);
}

static int begin_value(json_prefix *j, unsigned char b)
{
    int n = j->value_node;
    if (j->depth && j->stack[j->depth - 1] == '[' &&
        top(j)->count++ == node(j, top(j)->node)->max_items)
        return -1;
    while (node(j, n)->n_alt) {     /* anyOf: the one alternative that begins so */
        const js_node *a = node(j, n);
        int k = 0;
        while (k < a->n_alt && !has_first(node(j, a->alt[k]), b))
            k++;
        if (k == a->n_alt)
            return -1;
        n = a->alt[k];
    }
    const js_node *nd = node(j, n);
    if (!has_first(nd, b))
        return -1;
    if (nd->n_enum) {
        j->state = S_ENUM;
        j->enum_node = (int16_t)n;
        j->cand = 0;
        for (int k = 0; k < nd->n_enum; k++)
            if ((unsigned char)nd->enum_text[k][0] == b)
                j->cand |= 1ull << k;
        j->pos = 1;     /* a one-byte JSON value is a digit: it may go on */
        return 0;
    }
    switch (b) {
    case '{':
    case '[':
        return push(j, b, n);
    case '"':
        j->state = S_STRING;
        j->in_key = 0;
        j->str_node = (int16_t)n;
        j->str_len = 0;
        j->esc_hi = 0;
        if (nd->re)
            json_regex_start(&j->re);
        return 0;
    case 't': j->state = S_TRUE; j->sub = 1; return 0;
    case 'f': j->state = S_FALSE; j->sub = 1; return 0;
    case 'n': j->state = S_NULL; j->sub = 1; return 0;
    default:    /* '-' or a digit: the first set allowed it */
        j->int_only = !(nd->types & JT_NUMBER);
        j->state = b == '-' ? S_MINUS : b == '0' ? S_ZERO : S_INT;
        j->num_node = (int16_t)n;
        j->num_neg = b == '-';
        j->num_len = 0;
        if (b != '-')
            j->num[j->num_len++] = (char)b;
        return nd->bounded && !json_bounds_reachable(&nd->bounds, j->num_neg, j->num, j->num_len) ? -1 : 0;
    }
}

/* An enum value's next byte: -1 refused, 0 taken, 1 the value had ended
 * before it (a whole number) and the byte goes on after it. */
static int enum_byte(json_prefix *j, unsigned char b)
{
    const js_node *n = node(j, j->enum_node);
    uint64_t next = 0;
    for (int k = 0; k < n->n_enum; k++)
        if ((j->cand >> k & 1) && n->enum_len[k] > j->pos && (unsigned char)n->enum_text[k][j->pos] == b)
            next |= 1ull << k;
    if (!next)
        return enum_whole(j) ? 1 : -1;
    j->cand = next;
    j->pos++;
    /* a value that is whole ends now unless it is a number (only a number
     * can be the beginning of another JSON value) */
    for (int k = 0; k < n->n_enum; k++)
        if ((next >> k & 1) && n->enum_len[k] == j->pos && !is_digit(b))
            return end_value(j);
    return 0;
}

/* A key's byte as written (escapes too): the properties it may still name;
 * refused when it can name none and no other key is allowed. */
static int key_byte(json_prefix *j, unsigned char b)
{
    const js_node *n = node(j, top(j)->node);
    uint64_t next = 0;
    for (int k = 0; k < n->n_props; k++)
        if ((j->cand >> k & 1) && n->key_len[k] > j->pos && (unsigned char)n->key[k][j->pos] == b)
            next |= 1ull << k;
    j->cand = next;
    j->pos++;
    /* an escape that names no property as it is written: the key could still
     * decode to one of them ("\u0061" for "a") and so skip that property's
     * schema (or be a key twice): refused, where properties are named */
    if (b == '\\' && !next && n->n_props)
        return -1;
    return n->extra < 0 && !(next & ~top(j)->seen) ? -1 : 0;
}

/* The closing quote of a key: the property it names (not given before), or
 * another key where the schema allows them. */
static int key_end(json_prefix *j)
{
    const js_node *n = node(j, top(j)->node);
    json_frame *f = top(j);
    f->prop = -1;
    for (int k = 0; k < n->n_props; k++)
        if ((j->cand >> k & 1) && n->key_len[k] == j->pos)
            f->prop = (int16_t)k;
    if (f->prop >= 0 && (f->seen >> f->prop & 1))
        return -1;      /* a key twice */
    if (f->prop < 0 && n->extra < 0)
        return -1;
    if (f->prop >= 0)
        f->seen |= 1ull << f->prop;
    j->value_node = (int16_t)(f->prop >= 0 ? n->prop[f->prop] : n->extra);
    j->in_key = 0;
    j->state = S_COLON;
    return 0;
}

/* A string value's character begins (a byte, a lead byte, an escape read
 * whole): -1 past its maxLength. */
static int char_begins(json_prefix *j)
{
    if (j->str_len >= (uint32_t)node(j, j->str_node)->max_len)
        return -1;
    j->str_len++;
    j->esc_hi = 0;
    return 0;
}

/* With a pattern or format: whether a code point in [lo, hi] (no surrogate)
 * may come after the before characters of the string so far, with a
 * completion within its lengths. */
static int pattern_may(const json_prefix *j, uint32_t lo, uint32_t hi, uint32_t before)
{
    const js_node *n = node(j, j->str_node);
    if (!n->re)
        return 1;
    long min = (long)n->min_len - (long)before;
    long max = n->max_len == INT_MAX ? -1 : (long)n->max_len - (long)before;
    return (lo < 0xd800 && json_regex_may_take(n->re, &j->re, lo, hi < 0xd7ff ? hi : 0xd7ff, min, max)) ||
           (hi > 0xdfff && json_regex_may_take(n->re, &j->re, lo > 0xe000 ? lo : 0xe000, hi, min, max));
}

/* With a pattern or format: takes code point c (no surrogate) after the
 * before characters of the string so far; 0 when it has no room for it. */
static int pattern_take(json_regex_set *set, const js_node *n, uint32_t c, uint32_t before)
{
    long min = (long)n->min_len - (long)before;
    long max = n->max_len == INT_MAX ? -1 : (long)n->max_len - (long)before;
    return (c < 0xd800 || c > 0xdfff) && json_regex_take(n->re, set, c, min, max);
}

/* Inside a string value held to a pattern, between characters: its node;
 * else NULL. */
static const js_node *pattern_node(const json_prefix *j)
{
    const js_node *sn = node(j, j->str_node);
    return j->state != S_STRING || j->in_key || j->utf8_left || !sn->re ? NULL : sn;
}

const json_regex *json_prefix_pattern(const json_prefix *j)
{
    const js_node *sn = pattern_node(j);
    return sn ? sn->re : NULL;
}

int json_prefix_pattern_takes_cps(const json_prefix *j, const uint32_t *cp, size_t n)
{
    const js_node *sn = pattern_node(j);
    if (!sn)
        return -1;
    json_regex_set set = j->re;
    for (size_t i = 0; i < n; i++)
        if (!pattern_take(&set, sn, cp[i], j->str_len + (uint32_t)i))
            return 0;
    return 1;
}

int json_prefix_pattern_takes(const json_prefix *j, const char *t, size_t n)
{
    const js_node *sn = pattern_node(j);
    if (!sn)
        return -1;
    json_regex_set set = j->re;
    uint32_t len = j->str_len;
    for (size_t i = 0; i < n; len++) {
        unsigned char b = (unsigned char)t[i];
        int k = b < 0x80 ? 1 : b >= 0xf0 ? 4 : b >= 0xe0 ? 3 : 2;
        uint32_t cp = k == 1 ? b : b & (0x3fu >> (k - 1));
        for (int m = 1; m < k && i + (size_t)m < n; m++)
            cp = cp << 6 | ((unsigned char)t[i + (size_t)m] & 0x3fu);
        i += (size_t)k;
        if (!pattern_take(&set, sn, cp, len))
            return 0;
    }
    return 1;
}

/* With a pattern or format: the code point read whole (j->cp, counted), or
 * the range the one being read (utf8_left bytes to go, the next in
 * [utf8_lo, utf8_hi]) lies in; -1 when the pattern has no room for it. */
static int pattern_char(json_prefix *j)
{
    const js_node *n = node(j, j->str_node);
    if (j->in_key || !n->re)
        return 0;
    if (!j->utf8_left)
        return pattern_take(&j->re, n, j->cp, j->str_len - 1) ? 0 : -1;
    uint32_t first, last;
    utf8_range(j->cp, j->utf8_left, j->utf8_lo, j->utf8_hi, &first, &last);
    return pattern_may(j, first, last, j->str_len - 1) ? 0 : -1;
}

/* A \u escape's hex digit (the sub-th, value v) in a string value: at the
 * string's maxLength after a high surrogate's escape, only a low surrogate
 * (\uDC00 to \uDFFF, no character more) may be written. */
static int escape_digit(json_prefix *j, int v)
{
    j->hex = (uint16_t)(j->hex << 4 | v);
    if (j->in_key)
        return 0;
    int rest = 4 * (3 - j->sub);    /* with a pattern: code points it may still become */
    uint32_t from = (uint32_t)j->hex << rest;
    if (!pattern_may(j, from, from | ((1u << rest) - 1), j->str_len))
        return -1;
    int full = j->esc_hi && j->str_len >= (uint32_t)node(j, j->str_node)->max_len;
    if (full && ((j->sub == 0 && v != 0xd) || (j->sub == 1 && v < 0xc)))
        return -1;
    if (j->sub < 3)
        return 0;
    if (j->esc_hi && j->hex >= 0xdc00 && j->hex <= 0xdfff) {
        j->esc_hi = 0;      /* the pair is one character */
        return 0;
    }
    if (char_begins(j))
        return -1;
    j->esc_hi = j->hex >= 0xd800 && j->hex <= 0xdbff;
    j->cp = j->hex;
    return pattern_char(j);
}

static int hex_value(unsigned char b)
{
    return is_digit(b) ? b - '0' : (b | 0x20) - 'a' + 10;
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
        j->cp = j->cp << 6 | (b & 0x3fu);
        return pattern_char(j);
    }
    const js_node *sn = node(j, j->str_node);
    if (b == '"' && !j->in_key &&
        (j->str_len < (uint32_t)sn->min_len || (sn->re && !json_regex_accepts(sn->re, &j->re))))
        return -1;
    if (b == '"')
        return j->in_key ? key_end(j) : end_value(j);
    if (b == '\\') {
        /* (after a high surrogate's escape, one of a low surrogate adds no character) */
        if (!j->in_key && ((!j->esc_hi && j->str_len >= (uint32_t)sn->max_len) ||
                           !pattern_may(j, 0, 0xffff, j->str_len)))
            return -1;
        j->state = S_ESCAPE;
        return 0;
    }
    if (b < 0x20)
        return -1;
    if (!j->in_key && char_begins(j) < 0)
        return -1;
    int bits = b < 0x80 ? b : utf8_lead(b, &j->utf8_left, &j->utf8_lo, &j->utf8_hi);
    if (bits < 0)
        return -1;
    j->cp = (uint32_t)bits;
    return pattern_char(j);
}

/* The number's grammar (number_byte): e, the byte may begin an exponent. */
static int number_syntax(json_prefix *j, unsigned char b, int digit, int e, int *ended)
{
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
        if (b == '.' && !j->int_only)
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

/* Near JSON_NUMBER_MAX, where a bounded number cannot grow much more:
 * whether it holds now, or (a character left) with one digit more.
 * (Reachability alone would take "0.000...0" under an exclusive minimum of 0
 * up to the cap, where no digit may follow.) */
static int completes_within_cap(const json_prefix *j, const json_bounds *b)
{
    if (j->num[j->num_len - 1] != '.' && json_bounds_hold(b, j->num_neg, j->num, j->num_len))
        return 1;
    if (j->num_len == JSON_NUMBER_MAX)
        return 0;
    char t[JSON_NUMBER_MAX];
    memcpy(t, j->num, (size_t)j->num_len);
    for (char d = '0'; d <= '9'; d++) {
        t[j->num_len] = d;
        if (json_bounds_hold(b, j->num_neg, t, j->num_len + 1))
            return 1;
    }
    return 0;
}

/* A number's byte, or the byte after it: a number ends at the first byte
 * that cannot continue it, when what it has is whole; an integer takes no
 * fraction or exponent. */
static int number_byte(json_prefix *j, unsigned char b, int *ended)
{
    const js_node *n = node(j, j->num_node);
    int digit = is_digit(b), e = (b == 'e' || b == 'E') && !j->int_only && !n->bounded;
    if (n->bounded) {   /* held to the bounds digit by digit */
        int rc = number_syntax(j, b, digit, e, ended);
        if (rc || *ended)
            return rc || !number_holds(j) ? -1 : 0;
        if (j->num_len + (b == '.' ? 2 : 1) > JSON_NUMBER_MAX)
            return -1;      /* (a point needs a digit after it) */
        j->num[j->num_len++] = (char)b;
        if (!json_bounds_reachable(&n->bounds, j->num_neg, j->num, j->num_len))
            return -1;
        return j->num_len < JSON_NUMBER_MAX - 1 || completes_within_cap(j, &n->bounds) ? 0 : -1;
    }
    return number_syntax(j, b, digit, e, ended);
}

static int step(json_prefix *j, unsigned char b)
{
    if (j->state >= S_MINUS && j->state <= S_EXP_DIGITS) {
        int ended;
        if (number_byte(j, b, &ended))
            return -1;
        if (!ended)
            return 0;
        end_value(j);       /* the byte goes on after the number */
    } else if (j->state == S_ENUM) {
        int rc = enum_byte(j, b);
        if (rc <= 0)
            return rc;
        end_value(j);
    }
    if (j->in_key && (j->state == S_ESCAPE || j->state == S_HEX ||
                      (j->state == S_STRING && (b != '"' || j->utf8_left))) &&
        key_byte(j, b))
        return -1;
    switch (j->state) {
    case S_STRING:
        return string_byte(j, b);
    case S_ESCAPE:
        if (b == 'u') {
            j->state = S_HEX;
            j->sub = 0;
            j->hex = 0;
            return 0;
        }
        static const char letters[] = "\"\\/bfnrt", meant[] = "\"\\/\b\f\n\r\t";
        const char *esc = b ? strchr(letters, b) : NULL;
        if (!esc || (!j->in_key && char_begins(j)))
            return -1;
        j->state = S_STRING;
        j->cp = (unsigned char)meant[esc - letters];
        return pattern_char(j);
    case S_HEX:
        if (!is_hex(b) || escape_digit(j, hex_value(b)))
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
    case S_VALUE:
        return begin_value(j, b);
    case S_ARRAY_FIRST:
        return b == ']' ? close_container(j, '[') : begin_value(j, b);
    case S_KEY_FIRST:
        if (b == '}')
            return close_container(j, '{');
        /* fall through */
    case S_KEY:
        if (b != '"' || !object_may_go_on(j))
            return -1;
        j->state = S_STRING;
        j->in_key = 1;
        j->cand = ~0ull;
        j->pos = 0;
        return 0;
    case S_COLON:
        if (b != ':')
            return -1;
        j->state = S_VALUE;
        return 0;
    default:    /* S_AFTER */
        if (b == ',') {
            if (j->stack[j->depth - 1] == '{') {
                if (!object_may_go_on(j))
                    return -1;
                j->state = S_KEY;
            } else {
                if (top(j)->count >= node(j, top(j)->node)->max_items)
                    return -1;
                j->state = S_VALUE;
                j->value_node = (int16_t)node(j, top(j)->node)->items;
            }
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
