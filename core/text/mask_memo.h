/* mask_memo: the last few masks of an answer held to a grammar, by the state
 * they were made at. A mask depends only on the answer's state and on what
 * it is asked (the vocabulary, the end tokens); inside a free string or any
 * loop the state comes back token after token, and a mask met again costs a
 * pass over the logits instead of a walk of the vocabulary. The state is the
 * caller's key, bytes compared whole; the least recently met mask is
 * replaced. */
#ifndef MOETIER_MASK_MEMO_H
#define MOETIER_MASK_MEMO_H

#include <stddef.h>
#include <stdint.h>

#include "vocab.h"

#define MASK_MEMO_MAX_KEY 2048 /* longer keys are not kept */
#define MASK_MEMO_MAX_END 16   /* nor masks asked with more end tokens */

typedef struct mask_memo mask_memo;

/* Whether a mask with this key and these end tokens can be kept. */
int mask_memo_keeps(size_t key_n, int n_end);
/* Sets to -inf the logits[0, V) of the tokens the mask kept for this key and
 * question rules out, and returns how many may come; -1 (logits unchanged)
 * when none is kept. m may be NULL. */
int mask_memo_apply(mask_memo *m, const void *key, size_t key_n, const vocab *v, int V, const int *end_ids,
                    int n_end, float *logits);
/* Keeps ok[0, V) (each 0 or 1: whether the token may come) as the mask for this key and
 * question; *m is made on first use. Out of memory, nothing is kept (the next
 * mask there is made again). */
void mask_memo_keep(mask_memo **m, const void *key, size_t key_n, const vocab *v, int V, const int *end_ids,
                    int n_end, const uint8_t *ok, int possible);
/* Forgets every mask (the keys' meaning changed). */
void mask_memo_forget(mask_memo *m);
void mask_memo_free(mask_memo *m);

#endif
