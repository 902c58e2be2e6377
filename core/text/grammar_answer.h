/* grammar_answer: an answer held to a GBNF grammar as a whole (llama.cpp's
 * `grammar`, vLLM's guided_grammar): no token is taken that no text of the
 * grammar's root continues, and an end token comes only once the text is
 * one.
 *
 * The parse is a set of stacks, as llama.cpp keeps it: each stack the
 * positions where matching goes on, innermost first, its top a character
 * class. A character moves every stack whose top takes it past that class,
 * expanding rule references into each alternative and returning from
 * finished rules; a stack that empties means the text so far is whole.
 * Stacks are persistent lists whose frames are shared and interned, so two
 * parses that agree share their memory and a set never holds the same stack
 * twice. The answer's bytes are UTF-8 (no overlong forms, surrogates or code
 * points past U+10FFFF) without NUL; a character split across tokens is
 * judged by the code points its bytes so far allow.
 *
 * The mask walks a trie of the vocabulary (grammar_trie.h): tokens the
 * grammar's classes do not tell apart are fed once as a group, tokens that
 * begin alike are fed their shared start once, and a start no stack takes
 * drops every token under it. The answer keeps its last few masks by the
 * state they were made at: inside a free string or any loop the state comes
 * back token after token, and such a mask costs a pass over the logits.
 */
#ifndef MOETIER_GRAMMAR_ANSWER_H
#define MOETIER_GRAMMAR_ANSWER_H

#include <stddef.h>
#include <stdint.h>

#include "gbnf.h"
#include "json_mask.h"
#include "vocab.h"

/* The parses one answer may hold at once, and how deep rule references may
 * nest before a character; an answer whose parse grows past them is an error
 * (GRAMMAR_TOO_COMPLEX), not a guess. */
#define GRAMMAR_MAX_STACKS 65536
#define GRAMMAR_MAX_NESTING GBNF_MAX_NESTING
/* the frames one character may visit (a grammar's few parses can still
 * reach a great many through nested rules) */
#define GRAMMAR_MAX_TAKE_STEPS (1L << 24)
/* A mask's work: stacks moved by a character, summed over the trie's nodes
 * it walks. A free text walks the trie with one or two (2 M for K2's
 * vocabulary, about 15 ms); a grammar holding hundreds of parses at once
 * would take seconds per token, and past this (about a second here) its mask
 * is an error (GRAMMAR_TOO_COMPLEX) rather than a stall. */
#define GRAMMAR_MAX_MASK_WORK 100000000L

typedef struct gb_frame {
    int32_t pos;     /* the element where matching goes on */
    uint32_t parent; /* the frame below, GB_NO_FRAME at the bottom */
} gb_frame;

typedef struct grammar_answer {
    const gbnf *g;
    /* interned frames: the table maps (pos, parent) to the one frame */
    gb_frame *frames;
    uint32_t n_frames, cap_frames, kept; /* kept: frames when last compacted */
    uint32_t *table, table_mask;
    uint32_t *stamp, gen; /* [cap_frames] the set being built expanded frame f when stamp[f] == gen */
    uint32_t *set;        /* the stacks after the text so far (their top frames) */
    int n_set, cap_set;
    int complete;         /* the text so far is a whole text of root */
    long work, max_work;  /* the mask's so far, and its bound (GRAMMAR_MAX_MASK_WORK; a test's own) */
    uint32_t cp;          /* a character being read: its bits so far */
    uint8_t left, lo, hi; /* its continuation bytes to come, the next one's range */
    /* the mask's sets, one per byte of the token being walked */
    uint32_t **level;
    int *level_cap, n_levels;
    struct take_memo *memo; /* a mask's: what a character did to a set (grammar_answer.c) */
    int memo_live;          /* a mask is walking the trie: its memo holds */
    struct mask_memo *masks; /* the last masks, by the state they were made at (mask_memo.h) */
    unsigned long masks_met; /* masks taken from there (tests and benchmarks read it) */
    int ungrouped;          /* walk the vocabulary's own trie, not its groups (a benchmark's yardstick) */
    int walk_always;        /* walk for every mask, none taken from `masks` (a yardstick, a test's reference) */
} grammar_answer;

#define GRAMMAR_TOO_COMPLEX (-2)
#define GRAMMAR_NO_MEMORY (-3)

/* 0; GRAMMAR_TOO_COMPLEX when the parses of the empty answer pass the limits
 * already, GRAMMAR_NO_MEMORY. The grammar must outlive the answer. */
int grammar_answer_init(grammar_answer *a, const gbnf *g);
/* Whether an answer can be held to g at all: grammar_answer_init's result,
 * the answer freed (a compiled grammar is checked so before it is taken). */
int grammar_answer_check(const gbnf *g);
void grammar_answer_free(grammar_answer *a);
/* Takes bytes b[0, n): 0 when the text is still the start of a text of the
 * grammar (the state moved on); -1 when not, GRAMMAR_TOO_COMPLEX or
 * GRAMMAR_NO_MEMORY, the state then unchanged. */
int grammar_answer_feed(grammar_answer *a, const char *b, size_t n);
/* 1 when the text so far is whole. */
int grammar_answer_complete(const grammar_answer *a);
/* Sets to -inf the logits[0, V) of the tokens that cannot come next (special
 * tokens but end_ids, which may come once the text is whole); jv: the
 * vocabulary's tables, whose trie is built on first use, or NULL (each
 * token's bytes are then fed). Returns how many tokens may come,
 * GRAMMAR_TOO_COMPLEX or GRAMMAR_NO_MEMORY. */
int grammar_answer_mask(grammar_answer *a, const vocab *v, const json_vocab *jv, const int *end_ids,
                        int n_end, float *logits, int V);

/* What GRAMMAR_TOO_COMPLEX or GRAMMAR_NO_MEMORY means, for the user. */
const char *grammar_answer_strerror(int rc);

#endif
