/* gbnf: grammars in llama.cpp's GBNF, compiled for holding an answer to them
 * (grammar_answer.h).
 *
 * A grammar is rules `name ::= alternatives`, the answer being what `root`
 * matches as a whole. Alternatives are separated by `|`; a sequence's items
 * are string literals ("..."), character classes ([a-z], [^"\\]), `.` (any
 * character), rule names and parenthesized groups, each optionally repeated
 * (`*`, `+`, `?`, `{m}`, `{m,}`, `{m,n}`). `#` starts a comment. Escapes:
 * \n \r \t \\ \" \' \[ \] \- \^ \/ \. \xHH \uHHHH \UHHHHHHHH. A rule goes on
 * over line breaks inside parentheses and after `::=` or `|`, and over any
 * line break that no `name ::=` follows (llama.cpp's grammars parse, and so
 * do grammars whose lines start with `|`).
 *
 * Compiled, each rule is a run of elements: its alternatives' terminals and
 * rule references, GB_ALT between alternatives, GB_END after the last.
 * Groups and repetitions become rules of their own, as llama.cpp makes them
 * (x* is r ::= x r | ""). A rule used but not defined, a missing root,
 * left recursion (a rule that can reach itself without consuming a
 * character, which would loop) and an alternative no text ends (a class with
 * no character but NUL, a rule every text of which needs more of itself: an
 * answer could begin it and never finish) are refused with the rule's name. */
#ifndef MOETIER_GBNF_H
#define MOETIER_GBNF_H

#include <stddef.h>
#include <stdint.h>

#include "core/base/errbuf.h"

enum { GB_END, GB_ALT, GB_REF, GB_CHARS };

typedef struct gbnf_elem {
    uint8_t kind; /* GB_* */
    int32_t arg;  /* GB_REF: the rule; GB_CHARS: the class */
} gbnf_elem;

/* A set of code points: sorted, disjoint [lo, hi] pairs, or their complement. */
typedef struct gbnf_class {
    uint32_t at, n; /* ranges[2 * at ...], n pairs */
    uint8_t negated;
} gbnf_class;

typedef struct gbnf {
    gbnf_elem *elems;
    int n_elems;
    int *rule_start; /* [n_rules] the rule's first element */
    int *alt_first;  /* [n_rules + 1] rule r's alternatives are alts[alt_first[r] ...] */
    int *alts;       /* each alternative's first element (GB_ALT or GB_END: it is empty) */
    int n_rules;
    int root;
    uint32_t *ranges;
    gbnf_class *classes;
    int n_classes;
    /* what a user of the grammar keeps with it (grammar_trie.h), freed by
     * memo_free in gbnf_free; NULL: nothing */
    void *memo;
    void (*memo_free)(void *memo);
} gbnf;

/* The grammars a request may bring are capped: elements after repetitions
 * are expanded, and the count a {m,n} may give. */
#define GBNF_MAX_ELEMS (1 << 20)
#define GBNF_MAX_REPEAT 10000
/* Rules that start with rules, nested at most this deep (an answer's parse
 * expands them before each character: grammar_answer.h's nesting bound). */
#define GBNF_MAX_NESTING 10000

/* Compiles text[0, len) (UTF-8). -1 with e naming the line and what was
 * expected. */
int gbnf_compile(gbnf *g, const char *text, size_t len, errbuf *e);
void gbnf_free(gbnf *g);
/* 1 when class c holds code point cp. */
int gbnf_class_has(const gbnf *g, int c, uint32_t cp);
/* 1 when class c holds one of the code points [lo, hi]. */
int gbnf_class_meets(const gbnf *g, int c, uint32_t lo, uint32_t hi);

#endif
