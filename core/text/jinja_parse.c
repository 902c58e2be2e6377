/* jinja_parse: template text -> syntax tree (jinja_internal.h).
 *
 * The lexer applies Jinja2's whitespace rules as Hugging Face sets them up:
 * newlines normalised to "\n" and one trailing newline dropped
 * (keep_trailing_newline off); "-" at a tag's edge strips all whitespace on
 * that side; trim_blocks drops the first "\n" after a block or comment tag;
 * lstrip_blocks drops spaces and tabs between a line's start and a block or
 * comment tag ("+" keeps them). The parser is recursive descent with Jinja2's
 * precedence: conditional < or < and < not < comparisons < + - < ~ < * / // %
 * < ** < unary minus < filters, tests, calls, attributes and items. */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/text/jinja_internal.h"
#include "core/text/utf8.h"

/* ---- arena ------------------------------------------------------------- */

struct jarena_chunk {
    jarena_chunk *next;
    size_t used, cap;
    _Alignas(16) unsigned char data[];
};

void *ja_alloc(jarena *a, size_t n)
{
    n = (n + 15) & ~(size_t)15;
    if (a->over)
        return NULL;
    if (a->limit && a->used + n > a->limit) {
        a->over = 1;
        return NULL;
    }
    jarena_chunk *c = a->head;
    if (!c || c->cap - c->used < n) {
        size_t cap = n > 65536 ? n : 65536;
        c = malloc(sizeof *c + cap);
        if (!c) {
            a->over = 1;
            return NULL;
        }
        c->next = a->head;
        c->used = 0;
        c->cap = cap;
        a->head = c;
    }
    void *p = c->data + c->used;
    c->used += n;
    a->used += n;
    memset(p, 0, n);
    return p;
}

char *ja_strdup(jarena *a, const char *s, size_t n)
{
    char *p = ja_alloc(a, n + 1);
    if (p) {
        memcpy(p, s, n);
        p[n] = 0;
    }
    return p;
}

void ja_free(jarena *a)
{
    for (jarena_chunk *c = a->head, *next; c; c = next) {
        next = c->next;
        free(c);
    }
    a->head = NULL;
    a->used = 0;
    a->over = 0;
}

/* ---- tokens ------------------------------------------------------------ */

typedef enum tkind {
    TK_TEXT,
    TK_VAR_BEGIN,
    TK_VAR_END,
    TK_BLOCK_BEGIN,
    TK_BLOCK_END,
    TK_NAME,
    TK_STRING,
    TK_INT,
    TK_FLOAT,
    TK_OP,
    TK_EOF,
} tkind;

typedef struct tok {
    tkind k;
    int line;
    const char *s; /* TEXT, NAME, STRING (unescaped), OP */
    size_t n;
    int64_t i;
    double f;
} tok;

typedef struct parser {
    jarena *a;
    errbuf *e;
    int failed;
    tok *t;
    size_t n, cap, at;
    int depth; /* nesting of expressions and blocks */
    int loops; /* for loops around the statement being parsed (break, continue) */
} parser;

#define MAX_NESTING 200

static int fail(parser *p, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(parser *p, int line, const char *fmt, ...)
{
    if (p->failed)
        return -1;
    p->failed = 1;
    va_list ap;
    va_start(ap, fmt);
    jinja_error(p->e, line, fmt, ap);
    va_end(ap);
    return -1;
}

int jinja_error(errbuf *e, int line, const char *fmt, va_list ap)
{
    char msg[900];
    vsnprintf(msg, sizeof msg, fmt, ap);
    return err_set(e, "chat template line %d: %s", line, msg);
}

static tok *push(parser *p, tkind k, int line)
{
    if (p->n == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 256;
        tok *nt = realloc(p->t, cap * sizeof *nt);
        if (!nt) {
            fail(p, line, "out of memory");
            return NULL;
        }
        p->t = nt;
        p->cap = cap;
    }
    tok *t = &p->t[p->n++];
    memset(t, 0, sizeof *t);
    t->k = k;
    t->line = line;
    return t;
}

/* ---- lexer ------------------------------------------------------------- */

typedef struct lexer {
    parser *p;
    const char *s;
    size_t n, pos;
    int line;
    int line_starting; /* the last tag consumed ended a line (lstrip_blocks) */
} lexer;

static int is_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

static int count_lines(const char *s, size_t n)
{
    int k = 0;
    for (size_t i = 0; i < n; i++)
        k += s[i] == '\n';
    return k;
}

/* The text before a tag, with the tag's whitespace control applied: "-" strips
 * all trailing whitespace; a block or comment tag without "+" strips the spaces
 * and tabs of its own line when nothing else precedes it there. */
static size_t text_before_tag(const lexer *L, size_t from, size_t to, char tag, char mod)
{
    if (mod == '-') {
        while (to > from && is_ws(L->s[to - 1]))
            to--;
        return to;
    }
    if ((tag == '%' || tag == '#') && mod != '+') {
        size_t l = to;
        while (l > from && L->s[l - 1] != '\n')
            l--;
        int at_line_start = l > from || L->line_starting;
        size_t k = l;
        while (k < to &&
               (L->s[k] == ' ' || L->s[k] == '\t' || L->s[k] == '\f' || L->s[k] == '\v' || L->s[k] == '\r'))
            k++;
        if (at_line_start && k == to)
            return l;
    }
    return to;
}

static int emit_text(lexer *L, size_t from, size_t to)
{
    if (to > from) {
        tok *t = push(L->p, TK_TEXT, L->line);
        if (!t)
            return -1;
        t->s = L->s + from;
        t->n = to - from;
    }
    return 0;
}

/* After a tag's end marker: "-" eats all whitespace; a block or comment end
 * without "+" eats one newline (trim_blocks). */
static void after_tag(lexer *L, size_t end, char tag, char mod)
{
    size_t q = end;
    if (mod == '-') {
        while (q < L->n && is_ws(L->s[q]))
            q++;
    } else if (tag != '{' && mod != '+' && q < L->n && L->s[q] == '\n') {
        q++;
    }
    L->line += count_lines(L->s + L->pos, q - L->pos);
    L->line_starting = q > 0 && L->s[q - 1] == '\n';
    L->pos = q;
}

static int hexval(char c)
{
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

/* A string literal at L->s[q] (its quote); Python's escapes, unknown ones kept
 * as written. Returns the index after the closing quote, 0 on error. */
static size_t lex_string(lexer *L, size_t q)
{
    char quote = L->s[q];
    size_t i = q + 1, end = i;
    while (end < L->n && L->s[end] != quote) /* the literal's extent: escapes never grow it */
        end += L->s[end] == '\\' ? 2 : 1;
    char *out = ja_alloc(L->p->a, (end < L->n ? end : L->n) - q + 1);
    if (!out) {
        fail(L->p, L->line, "out of memory");
        return 0;
    }
    size_t o = 0;
    int line = L->line;
    for (;; i++) {
        if (i >= L->n) {
            fail(L->p, line, "unterminated string literal");
            return 0;
        }
        char c = L->s[i];
        if (c == quote)
            break;
        if (c == '\n')
            L->line++;
        if (c != '\\' || i + 1 >= L->n) {
            out[o++] = c;
            continue;
        }
        char d = L->s[++i];
        int digits = d == 'x' ? 2 : d == 'u' ? 4 : d == 'U' ? 8 : 0;
        if (digits) {
            unsigned cp = 0;
            int k = 0;
            for (; k < digits && i + 1 + k < L->n && hexval(L->s[i + 1 + k]) >= 0; k++)
                cp = cp * 16 + (unsigned)hexval(L->s[i + 1 + k]);
            if (k < digits || cp > 0x10FFFF || (cp >= 0xD800 && cp < 0xE000)) {
                fail(L->p, line, "bad \\%c escape in a string literal", d);
                return 0;
            }
            o += utf8_encode(cp, out + o);
            i += (size_t)digits;
            continue;
        }
        if (d >= '0' && d <= '7') {
            unsigned cp = 0;
            int k = 0;
            for (; k < 3 && i + k < L->n && L->s[i + k] >= '0' && L->s[i + k] <= '7'; k++)
                cp = cp * 8 + (unsigned)(L->s[i + k] - '0');
            o += utf8_encode(cp, out + o);
            i += (size_t)k - 1;
            continue;
        }
        const char *from = "ntr\\'\"abfv\n", *to = "\n\t\r\\'\"\a\b\f\v";
        const char *hit = strchr(from, d);
        if (hit && d) {
            if (d != '\n')
                out[o++] = to[hit - from];
            else
                L->line++; /* backslash-newline: a line continuation */
        } else {
            out[o++] = '\\';
            out[o++] = d;
        }
    }
    tok *t = push(L->p, TK_STRING, line);
    if (!t)
        return 0;
    out[o] = 0;
    t->s = out;
    t->n = o;
    return i + 1;
}

static size_t lex_number(lexer *L, size_t q)
{
    /* the literal's extent: digits (with '_'), a fraction, an exponent */
    size_t i = q;
    int is_float = 0;
    while (i < L->n && (isdigit((unsigned char)L->s[i]) || L->s[i] == '_'))
        i++;
    if (i + 1 < L->n && L->s[i] == '.' && isdigit((unsigned char)L->s[i + 1])) {
        is_float = 1;
        for (i++; i < L->n && (isdigit((unsigned char)L->s[i]) || L->s[i] == '_');)
            i++;
    }
    if (i < L->n && (L->s[i] == 'e' || L->s[i] == 'E')) {
        size_t j = i + 1;
        if (j < L->n && (L->s[j] == '+' || L->s[j] == '-'))
            j++;
        if (j < L->n && isdigit((unsigned char)L->s[j])) {
            is_float = 1;
            for (i = j; i < L->n && isdigit((unsigned char)L->s[i]);)
                i++;
        }
    }
    char buf[128];
    size_t b = 0;
    if (i - q >= sizeof buf) {
        fail(L->p, L->line, "a number literal of %zu characters is too long", i - q);
        return 0;
    }
    for (size_t k = q; k < i; k++)
        if (L->s[k] != '_')
            buf[b++] = L->s[k];
    buf[b] = 0;
    tok *t = push(L->p, is_float ? TK_FLOAT : TK_INT, L->line);
    if (!t)
        return 0;
    if (is_float) {
        t->f = strtod(buf, NULL);
    } else {
        errno = 0;
        t->i = strtoll(buf, NULL, 10);
        if (errno == ERANGE) {
            fail(L->p, L->line, "integer literal %s is too large", buf);
            return 0;
        }
    }
    return i;
}

/* The inside of {{ }} or {% %} from L->pos; stops before the end marker at
 * bracket depth 0 and returns its position (the marker's modifier in *mod). */
static int lex_tag_body(lexer *L, char tag, size_t *end, char *mod)
{
    int depth = 0;
    size_t i = L->pos;
    const char close = tag == '{' ? '}' : '%';
    for (;;) {
        while (i < L->n && is_ws(L->s[i])) {
            L->line += L->s[i] == '\n';
            i++;
        }
        if (i >= L->n)
            return fail(L->p, L->line, "'%s' is never closed", tag == '{' ? "{{" : "{%");
        const char *c = L->s + i;
        size_t left = L->n - i;
        if (depth == 0) {
            if (left >= 3 && (c[0] == '-' || (c[0] == '+' && tag == '%')) && c[1] == close && c[2] == '}') {
                *mod = c[0];
                *end = i + 3;
                return 0;
            }
            if (left >= 2 && c[0] == close && c[1] == '}') {
                *mod = 0;
                *end = i + 2;
                return 0;
            }
        }
        if (isalpha((unsigned char)c[0]) || c[0] == '_') {
            size_t j = i;
            while (j < L->n && (isalnum((unsigned char)L->s[j]) || L->s[j] == '_'))
                j++;
            tok *t = push(L->p, TK_NAME, L->line);
            if (!t)
                return -1;
            t->s = ja_strdup(L->p->a, c, j - i);
            t->n = j - i;
            i = j;
            continue;
        }
        if (isdigit((unsigned char)c[0])) {
            i = lex_number(L, i);
            if (!i)
                return -1;
            continue;
        }
        if (c[0] == '\'' || c[0] == '"') {
            i = lex_string(L, i);
            if (!i)
                return -1;
            continue;
        }
        static const char *const two[] = {"**", "//", "==", "!=", "<=", ">="};
        size_t len = 0;
        for (size_t k = 0; k < sizeof two / sizeof two[0]; k++)
            if (left >= 2 && c[0] == two[k][0] && c[1] == two[k][1])
                len = 2;
        if (!len && strchr("+-*/%~<>()[]{},.:|=", c[0]))
            len = 1;
        if (!len || !c[0])
            return fail(L->p, L->line, "unexpected character '%c' in a tag",
                        isprint((unsigned char)c[0]) ? c[0] : '?');
        if (strchr("([{", c[0]))
            depth++;
        else if (strchr(")]}", c[0]) && --depth < 0)
            return fail(L->p, L->line, "unbalanced '%c'", c[0]);
        tok *t = push(L->p, TK_OP, L->line);
        if (!t)
            return -1;
        t->s = c;
        t->n = len;
        i += len;
    }
}

/* {% raw %} at s[p] (after its modifier): the text up to {% endraw %} is one
 * text token. Returns 1 when the tag was a raw block, 0 when not, -1 on error. */
static int lex_raw(lexer *L, size_t body)
{
    size_t i = body;
    while (i < L->n && is_ws(L->s[i]))
        i++;
    if (L->n - i < 3 || memcmp(L->s + i, "raw", 3) ||
        (i + 3 < L->n && (isalnum((unsigned char)L->s[i + 3]) || L->s[i + 3] == '_')))
        return 0;
    i += 3;
    while (i < L->n && is_ws(L->s[i]))
        i++;
    int strip = 0;
    if (i < L->n && L->s[i] == '-') {
        strip = 1;
        i++;
    }
    if (L->n - i < 2 || L->s[i] != '%' || L->s[i + 1] != '}')
        return fail(L->p, L->line, "expected '%%}' after 'raw'");
    i += 2;
    if (strip)
        while (i < L->n && is_ws(L->s[i]))
            i++;
    int line = L->line + count_lines(L->s + L->pos, i - L->pos);
    for (size_t k = i; k + 1 < L->n; k++) {
        if (L->s[k] != '{' || L->s[k + 1] != '%')
            continue;
        size_t j = k + 2;
        char mod = 0;
        if (j < L->n && (L->s[j] == '-' || L->s[j] == '+'))
            mod = L->s[j++];
        while (j < L->n && is_ws(L->s[j]))
            j++;
        if (L->n - j < 6 || memcmp(L->s + j, "endraw", 6))
            continue;
        j += 6;
        while (j < L->n && is_ws(L->s[j]))
            j++;
        char emod = 0;
        if (j < L->n && (L->s[j] == '-' || L->s[j] == '+'))
            emod = L->s[j++];
        if (L->n - j < 2 || L->s[j] != '%' || L->s[j + 1] != '}')
            continue;
        lexer at = *L;
        at.line_starting = 0;
        size_t to = text_before_tag(&at, i, k, '%', mod);
        L->line = line;
        if (to > i) {
            tok *t = push(L->p, TK_TEXT, line);
            if (!t)
                return -1;
            t->s = L->s + i;
            t->n = to - i;
        }
        L->pos = k;
        after_tag(L, j + 2, '%', emod);
        return 1;
    }
    return fail(L->p, L->line, "'raw' is never closed by 'endraw'");
}

static int lex(parser *p, const char *src, size_t n)
{
    /* newlines normalised; one trailing newline dropped */
    char *s = ja_alloc(p->a, n + 1);
    if (!s)
        return fail(p, 1, "out of memory");
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        if (src[i] == '\r') {
            s[m++] = '\n';
            if (i + 1 < n && src[i + 1] == '\n')
                i++;
        } else {
            s[m++] = src[i];
        }
    }
    if (m && s[m - 1] == '\n')
        m--;
    lexer L = {.p = p, .s = s, .n = m, .line = 1, .line_starting = 1};
    while (L.pos < L.n) {
        size_t q = L.pos;
        while (q + 1 < L.n && !(s[q] == '{' && (s[q + 1] == '{' || s[q + 1] == '%' || s[q + 1] == '#')))
            q++;
        if (q + 1 >= L.n) {
            if (emit_text(&L, L.pos, L.n))
                return -1;
            break;
        }
        char tag = s[q + 1];
        char mod = q + 2 < L.n && (s[q + 2] == '-' || s[q + 2] == '+') ? s[q + 2] : 0;
        if (tag == '{' && mod == '+')
            mod = 0; /* "{{+" is not a modifier: the + belongs to the expression */
        size_t to = text_before_tag(&L, L.pos, q, tag, mod);
        if (emit_text(&L, L.pos, to))
            return -1;
        L.line += count_lines(s + L.pos, q - L.pos);
        L.pos = q;
        size_t body = q + 2 + (mod ? 1 : 0);
        if (tag == '#') {
            const char *close = NULL;
            for (size_t k = body; k + 1 < L.n; k++)
                if (s[k] == '#' && s[k + 1] == '}') {
                    close = s + k;
                    break;
                }
            if (!close)
                return fail(p, L.line, "comment is never closed");
            char emod = close > s + body && (close[-1] == '-' || close[-1] == '+') ? close[-1] : 0;
            after_tag(&L, (size_t)(close - s) + 2, '#', emod);
            continue;
        }
        if (tag == '%') {
            int raw = lex_raw(&L, body);
            if (raw < 0)
                return -1;
            if (raw)
                continue;
        }
        if (!push(p, tag == '{' ? TK_VAR_BEGIN : TK_BLOCK_BEGIN, L.line))
            return -1;
        L.pos = body;
        size_t end = 0;
        char emod = 0;
        size_t mark = L.pos;
        int line0 = L.line;
        if (lex_tag_body(&L, tag, &end, &emod))
            return -1;
        if (!push(p, tag == '{' ? TK_VAR_END : TK_BLOCK_END, L.line))
            return -1;
        L.pos = mark;
        L.line = line0;
        after_tag(&L, end, tag, emod);
    }
    return push(p, TK_EOF, L.line) ? 0 : -1;
}

/* ---- parser ------------------------------------------------------------ */

static tok *peek(parser *p)
{
    return &p->t[p->at];
}

static tok *next(parser *p)
{
    tok *t = &p->t[p->at];
    if (t->k != TK_EOF)
        p->at++;
    return t;
}

static int is_op(const tok *t, const char *op)
{
    return t->k == TK_OP && t->n == strlen(op) && !memcmp(t->s, op, t->n);
}

static int is_name(const tok *t, const char *name)
{
    return t->k == TK_NAME && !strcmp(t->s, name);
}

static int accept_op(parser *p, const char *op)
{
    if (!is_op(peek(p), op))
        return 0;
    next(p);
    return 1;
}

static int accept_name(parser *p, const char *name)
{
    if (!is_name(peek(p), name))
        return 0;
    next(p);
    return 1;
}

static const char *describe(const tok *t, char *buf, size_t cap)
{
    switch (t->k) {
    case TK_TEXT: return "template text";
    case TK_VAR_BEGIN: return "'{{'";
    case TK_VAR_END: return "'}}'";
    case TK_BLOCK_BEGIN: return "'{%'";
    case TK_BLOCK_END: return "'%}'";
    case TK_EOF: return "the end of the template";
    case TK_STRING: return "a string";
    case TK_INT:
    case TK_FLOAT: return "a number";
    default: snprintf(buf, cap, "'%.*s'", (int)(t->n < 40 ? t->n : 40), t->s); return buf;
    }
}

static int expect_op(parser *p, const char *op)
{
    if (accept_op(p, op))
        return 0;
    char b[64];
    return fail(p, peek(p)->line, "expected '%s', found %s", op, describe(peek(p), b, sizeof b));
}

static jnode *node(parser *p, jnode_kind k, int line)
{
    jnode *n = ja_alloc(p->a, sizeof *n);
    if (!n) {
        fail(p, line, "out of memory");
        return NULL;
    }
    n->kind = k;
    n->line = line;
    return n;
}

static int add(parser *p, jnodes *l, jnode *n)
{
    if (l->n == l->cap) {
        int cap = l->cap ? l->cap * 2 : 4;
        jnode **v = ja_alloc(p->a, (size_t)cap * sizeof *v);
        if (!v)
            return fail(p, n ? n->line : 0, "out of memory");
        if (l->n)
            memcpy(v, l->v, (size_t)l->n * sizeof *v);
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n++] = n;
    return 0;
}

static jnode *parse_expr(parser *p);
static jnode *parse_or(parser *p);
static jnode *parse_unary(parser *p, int with_filter);

static const char *name_token(parser *p, const char *what)
{
    tok *t = peek(p);
    if (t->k != TK_NAME) {
        char b[64];
        fail(p, t->line, "expected %s, found %s", what, describe(t, b, sizeof b));
        return NULL;
    }
    next(p);
    return t->s;
}

/* ( args, name=value ) after the opening parenthesis was consumed. */
static int parse_call_args(parser *p, jnode *n)
{
    while (!accept_op(p, ")")) {
        if (n->args.n || n->kwargs.n)
            if (expect_op(p, ","))
                return -1;
        if (accept_op(p, ")"))
            break;
        tok *t = peek(p);
        if (t->k == TK_NAME && is_op(&p->t[p->at + 1], "=")) {
            next(p);
            next(p);
            jnode *kw = node(p, JN_KWARG, t->line);
            if (!kw || !(kw->a = parse_expr(p)))
                return -1;
            kw->str = t->s;
            if (add(p, &n->kwargs, kw))
                return -1;
        } else {
            if (n->kwargs.n)
                return fail(p, t->line, "a positional argument follows keyword arguments");
            jnode *v = parse_expr(p);
            if (!v || add(p, &n->args, v))
                return -1;
        }
    }
    return 0;
}

static jnode *parse_primary(parser *p)
{
    tok *t = next(p);
    jnode *n = NULL;
    char b[64];
    switch (t->k) {
    case TK_NAME:
        if (!strcmp(t->s, "true") || !strcmp(t->s, "True") || !strcmp(t->s, "false") ||
            !strcmp(t->s, "False")) {
            if ((n = node(p, JN_BOOL, t->line)))
                n->ival = t->s[0] == 't' || t->s[0] == 'T';
        } else if (!strcmp(t->s, "none") || !strcmp(t->s, "None")) {
            n = node(p, JN_NONE, t->line);
        } else if ((n = node(p, JN_NAME, t->line))) {
            n->str = t->s;
        }
        return n;
    case TK_STRING: {
        /* adjacent literals join, as in Python */
        size_t len = t->n;
        size_t k = p->at;
        while (p->t[k].k == TK_STRING)
            len += p->t[k++].n;
        char *s = ja_alloc(p->a, len + 1);
        if (!s || !(n = node(p, JN_STR, t->line))) {
            fail(p, t->line, "out of memory");
            return NULL;
        }
        memcpy(s, t->s, t->n);
        size_t o = t->n;
        while (peek(p)->k == TK_STRING) {
            tok *u = next(p);
            memcpy(s + o, u->s, u->n);
            o += u->n;
        }
        s[o] = 0;
        n->str = s;
        n->len = o;
        return n;
    }
    case TK_INT:
        if ((n = node(p, JN_INT, t->line)))
            n->ival = t->i;
        return n;
    case TK_FLOAT:
        if ((n = node(p, JN_FLOAT, t->line)))
            n->fval = t->f;
        return n;
    case TK_OP:
        if (is_op(t, "(")) {
            if (accept_op(p, ")"))
                return node(p, JN_TUPLE, t->line);
            jnode *first = parse_expr(p);
            if (!first)
                return NULL;
            if (accept_op(p, ")"))
                return first;
            if (!(n = node(p, JN_TUPLE, t->line)) || add(p, &n->args, first))
                return NULL;
            while (accept_op(p, ",")) {
                if (is_op(peek(p), ")"))
                    break;
                jnode *v = parse_expr(p);
                if (!v || add(p, &n->args, v))
                    return NULL;
            }
            return expect_op(p, ")") ? NULL : n;
        }
        if (is_op(t, "[")) {
            if (!(n = node(p, JN_LIST, t->line)))
                return NULL;
            while (!accept_op(p, "]")) {
                if (n->args.n && expect_op(p, ","))
                    return NULL;
                if (accept_op(p, "]"))
                    break;
                jnode *v = parse_expr(p);
                if (!v || add(p, &n->args, v))
                    return NULL;
            }
            return n;
        }
        if (is_op(t, "{")) {
            if (!(n = node(p, JN_DICT, t->line)))
                return NULL;
            while (!accept_op(p, "}")) {
                if (n->args.n && expect_op(p, ","))
                    return NULL;
                if (accept_op(p, "}"))
                    break;
                jnode *k = parse_expr(p);
                if (!k || expect_op(p, ":"))
                    return NULL;
                jnode *v = parse_expr(p);
                if (!v || add(p, &n->args, k) || add(p, &n->args, v))
                    return NULL;
            }
            return n;
        }
        /* fall through */
    default: fail(p, t->line, "expected an expression, found %s", describe(t, b, sizeof b)); return NULL;
    }
}

/* Each link of a chain (a ~ b ~ c, x.a.b, x|f|g) puts the tree a level
 * deeper on its left, which the renderer walks by recursion: the links count
 * as nesting while the rest of the expression is read (the caller takes
 * *links off p->depth when the chain ends). */
static int chain_link(parser *p, int *links, int line)
{
    (*links)++;
    if (++p->depth > MAX_NESTING) {
        fail(p, line, "expressions nest too deeply");
        return -1;
    }
    return 0;
}

/* x.name, x[key], x[a:b:c], x(args) */
static jnode *parse_postfix(parser *p, jnode *n)
{
    int links = 0;
    while (n) {
        tok *t = peek(p);
        if ((is_op(t, ".") || is_op(t, "[") || is_op(t, "(")) && chain_link(p, &links, t->line))
            return NULL;
        if (is_op(t, ".")) {
            next(p);
            tok *u = next(p);
            jnode *a = node(p, JN_ATTR, t->line);
            if (!a)
                return NULL;
            a->a = n;
            if (u->k == TK_NAME) {
                a->str = u->s;
            } else if (u->k == TK_INT) { /* x.0 is x[0] */
                a->kind = JN_ITEM;
                if (!(a->b = node(p, JN_INT, u->line)))
                    return NULL;
                a->b->ival = u->i;
            } else {
                char b[64];
                fail(p, u->line, "expected a name after '.', found %s", describe(u, b, sizeof b));
                return NULL;
            }
            n = a;
        } else if (is_op(t, "[")) {
            next(p);
            jnode *parts[3] = {0};
            int colons = 0;
            for (;;) {
                if (is_op(peek(p), ":")) {
                    if (++colons > 2) {
                        fail(p, t->line, "a slice has at most two ':'");
                        return NULL;
                    }
                    next(p);
                    continue;
                }
                if (is_op(peek(p), "]"))
                    break;
                if (parts[colons]) {
                    expect_op(p, "]");
                    return NULL;
                }
                if (!(parts[colons] = parse_expr(p)))
                    return NULL;
            }
            next(p);
            jnode *a = node(p, colons ? JN_SLICE : JN_ITEM, t->line);
            if (!a)
                return NULL;
            a->a = n;
            if (colons) {
                for (int k = 0; k < 3; k++)
                    if (add(p, &a->args, parts[k]))
                        return NULL;
            } else if (!(a->b = parts[0])) {
                fail(p, t->line, "expected an index inside '[]'");
                return NULL;
            }
            n = a;
        } else if (is_op(t, "(")) {
            next(p);
            jnode *c = node(p, JN_CALL, t->line);
            if (!c)
                return NULL;
            c->a = n;
            if (parse_call_args(p, c))
                return NULL;
            n = c;
        } else {
            break;
        }
    }
    p->depth -= links;
    return n;
}

/* | filter(args) and is [not] test(args) */
static jnode *parse_filters(parser *p, jnode *n)
{
    int links = 0;
    while (n) {
        tok *t = peek(p);
        if ((is_op(t, "|") || is_name(t, "is")) && chain_link(p, &links, t->line))
            return NULL;
        if (is_op(t, "|")) {
            next(p);
            const char *name = name_token(p, "a filter name");
            jnode *f = name ? node(p, JN_FILTER, t->line) : NULL;
            if (!f)
                return NULL;
            f->str = name;
            f->a = n;
            if (accept_op(p, "(") && parse_call_args(p, f))
                return NULL;
            n = f;
        } else if (is_name(t, "is")) {
            next(p);
            int neg = accept_name(p, "not");
            const char *name = name_token(p, "a test name");
            jnode *f = name ? node(p, JN_TEST, t->line) : NULL;
            if (!f)
                return NULL;
            f->str = name;
            f->a = n;
            f->ival = neg;
            if (accept_op(p, "(")) {
                if (parse_call_args(p, f))
                    return NULL;
            } else {
                /* a single argument without parentheses: "is divisibleby 3" */
                tok *u = peek(p);
                int takes =
                    u->k == TK_STRING || u->k == TK_INT || u->k == TK_FLOAT ||
                    (u->k == TK_NAME && !is_name(u, "else") && !is_name(u, "or") && !is_name(u, "and") &&
                     !is_name(u, "if") && !is_name(u, "is") && !is_name(u, "in") && !is_name(u, "not"));
                if (takes) {
                    jnode *arg = parse_postfix(p, parse_primary(p));
                    if (!arg || add(p, &f->args, arg))
                        return NULL;
                }
            }
            n = f;
        } else {
            break;
        }
    }
    p->depth -= links;
    return n;
}

static jnode *parse_unary(parser *p, int with_filter)
{
    tok *t = peek(p);
    jnode *n;
    if (is_op(t, "-") || is_op(t, "+")) {
        next(p);
        if (++p->depth > MAX_NESTING) {
            fail(p, t->line, "expressions nest too deeply");
            return NULL;
        }
        n = node(p, is_op(t, "-") ? JN_NEG : JN_POS, t->line);
        if (!n || !(n->a = parse_unary(p, 0)))
            return NULL;
        p->depth--;
    } else {
        n = parse_postfix(p, parse_primary(p));
    }
    return with_filter ? parse_filters(p, n) : n;
}

static jnode *binop(parser *p, jnode_kind k, jop op, jnode *a, jnode *b, int line)
{
    if (!a || !b)
        return NULL;
    jnode *n = node(p, k, line);
    if (n) {
        n->op = op;
        n->a = a;
        n->b = b;
    }
    return n;
}

static jnode *parse_pow(parser *p)
{
    jnode *n = parse_unary(p, 1);
    int links = 0;
    while (n && is_op(peek(p), "**")) {
        int line = next(p)->line;
        if (chain_link(p, &links, line))
            return NULL;
        n = binop(p, JN_BINOP, JOP_POW, n, parse_unary(p, 1), line);
    }
    p->depth -= links;
    return n;
}

static jnode *parse_math2(parser *p)
{
    jnode *n = parse_pow(p);
    int links = 0;
    for (;;) {
        tok *t = peek(p);
        jop op = is_op(t, "*")    ? JOP_MUL
                 : is_op(t, "/")  ? JOP_DIV
                 : is_op(t, "//") ? JOP_FLOORDIV
                 : is_op(t, "%")  ? JOP_MOD
                                  : 0;
        if (!n || !op) {
            p->depth -= links;
            return n;
        }
        next(p);
        if (chain_link(p, &links, t->line))
            return NULL;
        n = binop(p, JN_BINOP, op, n, parse_pow(p), t->line);
    }
}

static jnode *parse_concat(parser *p)
{
    jnode *n = parse_math2(p);
    int links = 0;
    while (n && is_op(peek(p), "~")) {
        int line = next(p)->line;
        if (chain_link(p, &links, line))
            return NULL;
        n = binop(p, JN_BINOP, JOP_CONCAT, n, parse_math2(p), line);
    }
    p->depth -= links;
    return n;
}

static jnode *parse_math1(parser *p)
{
    jnode *n = parse_concat(p);
    int links = 0;
    for (;;) {
        tok *t = peek(p);
        jop op = is_op(t, "+") ? JOP_ADD : is_op(t, "-") ? JOP_SUB : 0;
        if (!n || !op) {
            p->depth -= links;
            return n;
        }
        next(p);
        if (chain_link(p, &links, t->line))
            return NULL;
        n = binop(p, JN_BINOP, op, n, parse_concat(p), t->line);
    }
}

/* Comparisons chain as in Python: the chain is a list of JN_COMPARE nodes
 * joined by JN_AND whose middle operands are evaluated once (the renderer
 * caches the right operand of each link: see JN_COMPARE there). */
static jnode *parse_compare(parser *p)
{
    jnode *n = parse_math1(p);
    jnode *chain = NULL, *last = NULL;
    int links = 0;
    for (;;) {
        tok *t = peek(p);
        jop op = is_op(t, "==")     ? JOP_EQ
                 : is_op(t, "!=")   ? JOP_NE
                 : is_op(t, "<")    ? JOP_LT
                 : is_op(t, "<=")   ? JOP_LE
                 : is_op(t, ">")    ? JOP_GT
                 : is_op(t, ">=")   ? JOP_GE
                 : is_name(t, "in") ? JOP_IN
                                    : 0;
        if (!op && is_name(t, "not") && is_name(&p->t[p->at + 1], "in")) {
            next(p);
            op = JOP_NOTIN;
        }
        if (!n || !op)
            break;
        next(p);
        if (chain_link(p, &links, t->line))
            return NULL;
        jnode *left = last ? last->b : n;
        jnode *c = binop(p, JN_COMPARE, op, left, parse_math1(p), t->line);
        if (!c)
            return NULL;
        if (!last)
            chain = c;
        else if (!(chain = binop(p, JN_AND, 0, chain, c, t->line)))
            return NULL;
        if (last)
            c->ival = 1; /* its left operand is the previous link's right one */
        last = c;
    }
    p->depth -= links;
    return chain ? chain : n;
}

static jnode *parse_not(parser *p)
{
    tok *t = peek(p);
    if (is_name(t, "not")) {
        next(p);
        if (++p->depth > MAX_NESTING) {
            fail(p, t->line, "expressions nest too deeply");
            return NULL;
        }
        jnode *n = node(p, JN_NOT, t->line);
        if (!n || !(n->a = parse_not(p)))
            return NULL;
        p->depth--;
        return n;
    }
    return parse_compare(p);
}

static jnode *parse_and(parser *p)
{
    jnode *n = parse_not(p);
    int links = 0;
    while (n && is_name(peek(p), "and")) {
        int line = next(p)->line;
        if (chain_link(p, &links, line))
            return NULL;
        n = binop(p, JN_AND, 0, n, parse_not(p), line);
    }
    p->depth -= links;
    return n;
}

static jnode *parse_or(parser *p)
{
    jnode *n = parse_and(p);
    int links = 0;
    while (n && is_name(peek(p), "or")) {
        int line = next(p)->line;
        if (chain_link(p, &links, line))
            return NULL;
        n = binop(p, JN_OR, 0, n, parse_and(p), line);
    }
    p->depth -= links;
    return n;
}

static jnode *parse_expr(parser *p)
{
    if (++p->depth > MAX_NESTING) {
        fail(p, peek(p)->line, "expressions nest too deeply");
        return NULL;
    }
    jnode *n = parse_or(p);
    int links = 0;
    while (n && is_name(peek(p), "if")) {
        int line = next(p)->line;
        if (chain_link(p, &links, line))
            return NULL;
        jnode *c = node(p, JN_COND, line);
        if (!c || !(c->a = parse_or(p)))
            return NULL;
        c->b = n;
        if (accept_name(p, "else") && !(c->c = parse_expr(p)))
            return NULL;
        n = c;
    }
    p->depth -= 1 + links;
    return n;
}

/* ---- statements -------------------------------------------------------- */

static int parse_body(parser *p, jnodes *body, const char *const *ends, const char **ended);

static int end_block(parser *p)
{
    tok *t = peek(p);
    if (t->k == TK_BLOCK_END) {
        next(p);
        return 0;
    }
    char b[64];
    return fail(p, t->line, "expected '%%}', found %s", describe(t, b, sizeof b));
}

static int parse_targets(parser *p, jnode *n)
{
    int paren = accept_op(p, "(");
    const char *names[16];
    int k = 0;
    do {
        if (k == 16)
            return fail(p, n->line, "too many loop targets");
        if (!(names[k++] = name_token(p, "a variable name")))
            return -1;
    } while (accept_op(p, ","));
    if (paren && expect_op(p, ")"))
        return -1;
    n->names = ja_alloc(p->a, (size_t)k * sizeof *n->names);
    if (!n->names)
        return fail(p, n->line, "out of memory");
    memcpy(n->names, names, (size_t)k * sizeof *names);
    n->nnames = k;
    return 0;
}

static jnode *parse_if(parser *p, int line)
{
    jnode *n = node(p, JN_IF, line);
    if (!n || !(n->a = parse_expr(p)) || end_block(p))
        return NULL;
    static const char *const ends[] = {"elif", "else", "endif", NULL};
    const char *ended;
    if (parse_body(p, &n->body, ends, &ended))
        return NULL;
    if (!strcmp(ended, "elif")) {
        jnode *elif = parse_if(p, peek(p)->line);
        if (!elif || add(p, &n->orelse, elif))
            return NULL;
        return n; /* the innermost elif consumed the endif */
    }
    if (!strcmp(ended, "else")) {
        static const char *const endif[] = {"endif", NULL};
        if (end_block(p) || parse_body(p, &n->orelse, endif, &ended))
            return NULL;
    }
    return end_block(p) ? NULL : n;
}

static jnode *parse_for(parser *p, int line)
{
    jnode *n = node(p, JN_FOR, line);
    if (!n || parse_targets(p, n))
        return NULL;
    if (!accept_name(p, "in")) {
        fail(p, line, "expected 'in' after the loop variables");
        return NULL;
    }
    /* the iterable stops before a trailing "if" filter (no conditional expression there) */
    if (!(n->a = parse_or(p)))
        return NULL;
    if (accept_name(p, "if") && !(n->b = parse_expr(p)))
        return NULL;
    if (accept_name(p, "recursive")) {
        fail(p, line, "recursive loops are not supported");
        return NULL;
    }
    if (end_block(p))
        return NULL;
    static const char *const ends[] = {"else", "endfor", NULL};
    const char *ended;
    p->loops++;
    int rc = parse_body(p, &n->body, ends, &ended);
    p->loops--;
    if (rc)
        return NULL;
    if (!strcmp(ended, "else")) {
        static const char *const endfor[] = {"endfor", NULL};
        if (end_block(p) || parse_body(p, &n->orelse, endfor, &ended))
            return NULL;
    }
    return end_block(p) ? NULL : n;
}

static jnode *parse_set(parser *p, int line)
{
    jnode *n = node(p, JN_SET, line);
    const char *name = n ? name_token(p, "a variable name") : NULL;
    if (!name)
        return NULL;
    n->names = ja_alloc(p->a, 2 * sizeof *n->names);
    if (!n->names) {
        fail(p, line, "out of memory");
        return NULL;
    }
    n->names[0] = name;
    n->nnames = 1;
    if (accept_op(p, ".")) {
        if (!(n->names[1] = name_token(p, "an attribute name")))
            return NULL;
        n->nnames = 2;
    }
    if (n->nnames == 1 && is_op(peek(p), ",")) { /* set a, b = x, y */
        const char *names[16] = {name};
        int k = 1;
        while (accept_op(p, ",")) {
            if (k == 16) {
                fail(p, line, "too many names in 'set'");
                return NULL;
            }
            if (!(names[k++] = name_token(p, "a variable name")))
                return NULL;
        }
        if (!(n->names = ja_alloc(p->a, (size_t)k * sizeof *n->names))) {
            fail(p, line, "out of memory");
            return NULL;
        }
        memcpy(n->names, names, (size_t)k * sizeof *names);
        n->nnames = k;
        n->ival = 1;
    }
    if (peek(p)->k == TK_BLOCK_END && n->nnames == 1) {
        next(p);
        n->kind = JN_SET_BLOCK;
        static const char *const ends[] = {"endset", NULL};
        const char *ended;
        if (parse_body(p, &n->body, ends, &ended))
            return NULL;
        return end_block(p) ? NULL : n;
    }
    if (expect_op(p, "=") || !(n->a = parse_expr(p)))
        return NULL;
    if (is_op(peek(p), ",")) { /* a bare tuple: set x = 1, 2 */
        jnode *t = node(p, JN_TUPLE, line);
        if (!t || add(p, &t->args, n->a))
            return NULL;
        while (accept_op(p, ",")) {
            if (peek(p)->k == TK_BLOCK_END)
                break;
            jnode *v = parse_expr(p);
            if (!v || add(p, &t->args, v))
                return NULL;
        }
        n->a = t;
    }
    return end_block(p) ? NULL : n;
}

static jnode *parse_macro(parser *p, int line)
{
    jnode *n = node(p, JN_MACRO, line);
    if (!n || !(n->str = name_token(p, "a macro name")) || expect_op(p, "("))
        return NULL;
    const char *names[64];
    int k = 0;
    while (!accept_op(p, ")")) {
        if (k && expect_op(p, ","))
            return NULL;
        if (accept_op(p, ")"))
            break;
        if (k == 64) {
            fail(p, line, "a macro takes at most 64 parameters");
            return NULL;
        }
        if (!(names[k] = name_token(p, "a parameter name")))
            return NULL;
        jnode *def = NULL;
        if (accept_op(p, "=") && !(def = parse_expr(p)))
            return NULL;
        if (add(p, &n->args, def))
            return NULL;
        k++;
    }
    n->names = ja_alloc(p->a, (size_t)(k ? k : 1) * sizeof *n->names);
    if (!n->names) {
        fail(p, line, "out of memory");
        return NULL;
    }
    memcpy(n->names, names, (size_t)k * sizeof *names);
    n->nnames = k;
    if (end_block(p))
        return NULL;
    static const char *const ends[] = {"endmacro", NULL};
    const char *ended;
    int loops = p->loops; /* a macro's body is outside the loops around its definition */
    p->loops = 0;
    int rc = parse_body(p, &n->body, ends, &ended);
    p->loops = loops;
    if (rc)
        return NULL;
    /* "{% endmacro name %}" is allowed */
    if (peek(p)->k == TK_NAME && strcmp(next(p)->s, n->str)) {
        fail(p, line, "'endmacro' names another macro than '%s'", n->str);
        return NULL;
    }
    return end_block(p) ? NULL : n;
}

/* {% filter name(args) | name ... %} body {% endfilter %} */
static jnode *parse_filter_block(parser *p, int line)
{
    jnode *n = node(p, JN_FILTER_BLOCK, line);
    if (!n)
        return NULL;
    do {
        jnode *f = node(p, JN_FILTER, peek(p)->line);
        if (!f || !(f->str = name_token(p, "a filter name")) ||
            (accept_op(p, "(") && parse_call_args(p, f)) || add(p, &n->args, f))
            return NULL;
    } while (accept_op(p, "|"));
    if (end_block(p))
        return NULL;
    static const char *const ends[] = {"endfilter", NULL};
    const char *ended;
    if (parse_body(p, &n->body, ends, &ended))
        return NULL;
    return end_block(p) ? NULL : n;
}

/* One {% ... %} statement after its keyword; the statement node, or NULL with
 * p->failed. Block-closing keywords are handled by parse_body. */
static jnode *parse_statement(parser *p, tok *kw)
{
    const char *k = kw->s;
    if (!strcmp(k, "if"))
        return parse_if(p, kw->line);
    if (!strcmp(k, "for"))
        return parse_for(p, kw->line);
    if (!strcmp(k, "set"))
        return parse_set(p, kw->line);
    if (!strcmp(k, "macro"))
        return parse_macro(p, kw->line);
    if (!strcmp(k, "filter"))
        return parse_filter_block(p, kw->line);
    if (!strcmp(k, "break") || !strcmp(k, "continue")) {
        if (!p->loops) {
            fail(p, kw->line, "'%s' outside a loop", k);
            return NULL;
        }
        jnode *n = node(p, k[0] == 'b' ? JN_BREAK : JN_CONTINUE, kw->line);
        return n && !end_block(p) ? n : NULL;
    }
    fail(p, kw->line, "unknown or unsupported statement '%s'", k);
    return NULL;
}

static int in_list(const char *s, const char *const *list)
{
    for (; list && *list; list++)
        if (!strcmp(s, *list))
            return 1;
    return 0;
}

/* The word that closes a block: the last of the words that end its body. */
static const char *closer(const char *const *ends)
{
    const char *last = ends[0];
    for (; *ends; ends++)
        last = *ends;
    return last;
}

static int parse_body(parser *p, jnodes *body, const char *const *ends, const char **ended)
{
    if (++p->depth > MAX_NESTING)
        return fail(p, peek(p)->line, "blocks nest too deeply");
    for (;;) {
        tok *t = next(p);
        if (t->k == TK_EOF) {
            if (ends)
                return fail(p, t->line, "the template ends inside a block: expected '%s'", closer(ends));
            break;
        }
        jnode *n = NULL;
        if (t->k == TK_TEXT) {
            if ((n = node(p, JN_TEXT, t->line))) {
                n->str = t->s;
                n->len = t->n;
            }
        } else if (t->k == TK_VAR_BEGIN) {
            if ((n = node(p, JN_OUTPUT, t->line)) && (n->a = parse_expr(p)) && peek(p)->k != TK_VAR_END) {
                char b[64];
                fail(p, peek(p)->line, "expected '}}', found %s", describe(peek(p), b, sizeof b));
                return -1;
            }
            next(p);
        } else if (t->k == TK_BLOCK_BEGIN) {
            tok *kw = next(p);
            if (kw->k != TK_NAME) {
                char b[64];
                return fail(p, kw->line, "expected a statement name, found %s", describe(kw, b, sizeof b));
            }
            if (in_list(kw->s, ends)) {
                *ended = kw->s;
                break;
            }
            if (!strcmp(kw->s, "generation")) {
                /* Hugging Face's marker of assistant text: its body renders in place */
                static const char *const endgen[] = {"endgeneration", NULL};
                const char *e2;
                if (end_block(p) || parse_body(p, body, endgen, &e2) || end_block(p))
                    return -1;
                continue;
            }
            if (!strncmp(kw->s, "end", 3) || !strcmp(kw->s, "elif") || !strcmp(kw->s, "else"))
                return fail(p, kw->line, "unexpected '%s'%s%s", kw->s, ends ? ": expected " : "",
                            ends ? closer(ends) : "");
            n = parse_statement(p, kw);
        } else {
            char b[64];
            return fail(p, t->line, "unexpected %s", describe(t, b, sizeof b));
        }
        if (!n || add(p, body, n))
            return -1;
    }
    p->depth--;
    return 0;
}

jinja_template *jinja_compile(const char *text, size_t len, errbuf *e)
{
    jinja_template *t = calloc(1, sizeof *t);
    if (!t) {
        err_set(e, "chat template: out of memory");
        return NULL;
    }
    parser p = {.a = &t->arena, .e = e};
    if (lex(&p, text ? text : "", text ? len : 0) == 0)
        parse_body(&p, &t->body, NULL, NULL);
    free(p.t);
    if (p.failed) {
        jinja_free(t);
        return NULL;
    }
    return t;
}

void jinja_free(jinja_template *t)
{
    if (!t)
        return;
    ja_free(&t->arena);
    free(t);
}
