/* regex_answer: an answer held to a regular expression as a whole (vLLM's
 * guided_regex and guided_choice): the text's code points go through the
 * pattern's automaton (json_regex.h) as the tokens come, a character split
 * across tokens checked by the range of code points its bytes so far allow,
 * so no token is taken that no match continues; an end token only once the
 * text matches. The answer's bytes are UTF-8 (no overlong forms, surrogates
 * or code points past U+10FFFF) without NUL. */
#ifndef MOETIER_REGEX_ANSWER_H
#define MOETIER_REGEX_ANSWER_H

#include <stddef.h>
#include <stdint.h>

#include "json_mask.h"
#include "json_regex.h"
#include "mask_memo.h"
#include "vocab.h"

typedef struct regex_answer {
    const json_regex *re;
    json_regex_set set;
    uint32_t cp;    /* the bits of the character being read */
    uint8_t left;   /* its continuation bytes to come */
    uint8_t lo, hi; /* the next one's range */
} regex_answer;

/* The pattern of a guided_regex: the whole answer must match it (a leading
 * '^' and a trailing '$' are taken and change nothing). -1 with e set when
 * it is not held (json_regex.h says what is). */
int regex_answer_compile(json_regex *r, const char *regex, errbuf *e);
/* The pattern of a guided_choice: exactly one of the n strings. */
int regex_answer_choices(json_regex *r, const char *const *choices, int n, errbuf *e);

void regex_answer_init(regex_answer *a, const json_regex *re);
/* Takes bytes b[0, n): 0 when the text is still the start of a match, -1
 * when not (a is then undefined: feed a copy to try). */
int regex_answer_feed(regex_answer *a, const char *b, size_t n);
/* 1 when the text so far matches. */
int regex_answer_complete(const regex_answer *a);
/* Sets to -inf the logits[0, V) of the tokens that cannot come next (special
 * tokens but end_ids, which may come once the text matches); jv: the token
 * table (first bytes), or NULL. kept: the answer's memo of masks by state
 * (mask_memo.h: inside a loop of the pattern the state comes back token after
 * token), made on first use and freed by the caller; or NULL. Returns how
 * many tokens may. */
int regex_answer_mask(const regex_answer *a, struct mask_memo **kept, const vocab *v, const json_vocab *jv,
                      const int *end_ids, int n_end, float *logits, int V);

#endif
