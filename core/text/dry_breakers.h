/* dry_breakers: DRY's sequence breakers (llama.cpp's --dry-sequence-breaker,
 * dry_sequence_breakers) made into the token sequences the sampler matches
 * (sampler_breakers, sampler.h), as llama.cpp makes them.
 *
 * A token whose text holds a breaker whole is a breaker by itself. A token
 * whose text ends with the start of a breaker begins one: it is followed by
 * the tokens of the breaker's rest (at most DRY_MAX_TAIL of them). A breaker
 * is cut to its first DRY_MAX_BREAKER bytes; an empty one is skipped. */
#ifndef MOETIER_DRY_BREAKERS_H
#define MOETIER_DRY_BREAKERS_H

#include "core/base/errbuf.h"
#include "core/engine/sampler.h"
#include "tokenizer.h"

#define DRY_MAX_BREAKER 40
#define DRY_MAX_TAIL 20
#define DRY_MAX_BREAKERS 64 /* strings in one request */

/* llama.cpp's default breakers: a line break, ':', '"' and '*'. */
extern const char *const dry_default_breakers[4];

typedef struct dry_breakers {
    int n, cap;
    int *head, *at; /* [n], [n + 1] */
    int *tail;
    int n_tail, cap_tail;
} dry_breakers;

/* The sequences of breakers strs[0, n) (NUL-terminated) over t's vocabulary. */
int dry_breakers_build(dry_breakers *b, const tokenizer *t, const char *const *strs, int n, errbuf *e);
void dry_breakers_free(dry_breakers *b);
/* The sequences as sampler_params takes them (valid while b is). */
sampler_breakers dry_breakers_view(const dry_breakers *b);

#endif
