/* jinja_internal: what the template compiler (jinja_parse.c) hands the
 * renderer (jinja_render.c): an arena and the syntax tree. */
#ifndef MOETIER_JINJA_INTERNAL_H
#define MOETIER_JINJA_INTERNAL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "core/text/jinja.h"

/* ---- arena: everything of one template, or of one rendering, freed at once */

typedef struct jarena_chunk jarena_chunk;
typedef struct jarena {
    jarena_chunk *head;
    size_t used, limit; /* bytes taken; 0 limit = unbounded */
    int over;           /* the limit or malloc refused a request */
} jarena;

void *ja_alloc(jarena *a, size_t n); /* zeroed; NULL (and a->over) on failure */
char *ja_strdup(jarena *a, const char *s, size_t n);
void ja_free(jarena *a);

/* Sets e to "chat template line N: " and the formatted reason; returns -1. */
int jinja_error(errbuf *e, int line, const char *fmt, va_list ap);

/* ---- syntax tree ---------------------------------------------------------- */

typedef enum jnode_kind {
    /* statements */
    JN_TEXT,         /* str */
    JN_OUTPUT,       /* {{ a }} */
    JN_IF,           /* a: condition, body, orelse */
    JN_FOR,          /* names: targets, a: iterable, b: filter or NULL, body, orelse */
    JN_SET,          /* names[0] = a; names[0].names[1] = a (ival 0) or names... = a (ival 1) */
    JN_SET_BLOCK,    /* names[0], body */
    JN_FILTER_BLOCK, /* args: JN_FILTER nodes (a NULL), applied in turn to body's text */
    JN_MACRO,        /* str: name, names: parameters, args: defaults (NULL entries), body */
    JN_BREAK,
    JN_CONTINUE,
    /* expressions */
    JN_STR,   /* str, len */
    JN_INT,   /* ival */
    JN_FLOAT, /* fval */
    JN_BOOL,  /* ival */
    JN_NONE,
    JN_NAME,    /* str */
    JN_LIST,    /* args */
    JN_TUPLE,   /* args */
    JN_DICT,    /* args: key, value, key, value, ... */
    JN_ATTR,    /* a . str */
    JN_ITEM,    /* a [ b ] */
    JN_SLICE,   /* a [ args[0] : args[1] : args[2] ] (NULL entries for omitted) */
    JN_CALL,    /* a ( args, kwargs ) */
    JN_FILTER,  /* str: filter name, a: operand, args, kwargs */
    JN_TEST,    /* str: test name, a: operand, args, ival: negated */
    JN_NEG,     /* - a */
    JN_POS,     /* + a */
    JN_NOT,     /* not a */
    JN_AND,     /* a and b */
    JN_OR,      /* a or b */
    JN_BINOP,   /* a op b: + - * / // % ** ~ */
    JN_COMPARE, /* a op b (chained: a < b < c is (a < b) and (b < c), b once) */
    JN_COND,    /* b if a else c (c NULL: undefined) */
    JN_KWARG,   /* str = a (only inside kwargs) */
} jnode_kind;

typedef enum jop {
    JOP_ADD = 1,
    JOP_SUB,
    JOP_MUL,
    JOP_DIV,
    JOP_FLOORDIV,
    JOP_MOD,
    JOP_POW,
    JOP_CONCAT,
    JOP_EQ,
    JOP_NE,
    JOP_LT,
    JOP_LE,
    JOP_GT,
    JOP_GE,
    JOP_IN,
    JOP_NOTIN,
} jop;

typedef struct jnode jnode;
typedef struct jnodes {
    jnode **v;
    int n, cap;
} jnodes;

struct jnode {
    jnode_kind kind;
    jop op;
    int line;
    const char *str; /* arena copy, NUL-terminated */
    size_t len;
    int64_t ival;
    double fval;
    jnode *a, *b, *c;
    jnodes args, kwargs, body, orelse;
    const char **names;
    int nnames;
};

struct jinja_template {
    jarena arena;
    jnodes body;
};

#endif
