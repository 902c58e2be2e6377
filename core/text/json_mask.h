/* json_mask: the tokens that may come next in an answer constrained to JSON
 * (response_format json_object or json_schema).
 *
 * A regular token may come when the automaton takes its bytes after the
 * answer so far; a special token never, except an end token once the value
 * is whole (and then nothing else, unless a number may still go on). Every token is tried (K2's 163,840 in a
 * few milliseconds, measured by bench_sampler), so the draw is exactly the
 * sampler's over the tokens left. */
#ifndef MOETIER_JSON_MASK_H
#define MOETIER_JSON_MASK_H

#include "json_prefix.h"
#include "vocab.h"

/* Sets to -inf the logits[0, V) of the tokens that cannot follow the answer
 * held in j; end_ids[0, n_end) end it. Returns how many tokens may follow. */
int json_mask_logits(const json_prefix *j, const vocab *v, const int *end_ids, int n_end,
                     float *logits, int V);

#endif
