/* draft_lookup: a guess at the next tokens from the context itself (prompt
 * lookup): the tokens that followed an earlier occurrence of the context's
 * last few tokens, the one that matches the context furthest back. Text that quotes or repeats what came before
 * (code being edited, a summary citing its source, lists) is often continued
 * the same way; a guess is only ever checked, never taken on trust. */
#ifndef MOETIER_DRAFT_LOOKUP_H
#define MOETIER_DRAFT_LOOKUP_H

/* the longest and shortest runs of last tokens looked up, longest first (a
 * single token matches too often to be worth a step's extra experts) */
#define DRAFT_LOOKUP_MAX_NGRAM 3
#define DRAFT_LOOKUP_MIN_NGRAM 2

/* the run a match is measured along stops here: a guess after 8 or more
 * matched tokens is kept about 3 times in 4 in prose and code, after 2 about
 * 1 in 3 (docs/benchmarks.md) */
#define DRAFT_LOOKUP_MATCH_MAX 8

/* The context is ids[0..n) followed by last. Writes to out at most max tokens
 * that followed an earlier occurrence of its last DRAFT_LOOKUP_MAX_NGRAM
 * tokens (else of fewer, down to DRAFT_LOOKUP_MIN_NGRAM) and returns how
 * many; 0 when none occurs. Of several occurrences it takes the one that
 * shares the most last tokens with the context (up to DRAFT_LOOKUP_MATCH_MAX),
 * the latest of those: on code it kept 5-7 % more guesses per lookup than
 * the latest occurrence, at a scan of the context per lookup (microseconds
 * at 100 K tokens; docs/benchmarks.md). *match (unless NULL): how many last
 * tokens it shares, up to DRAFT_LOOKUP_MATCH_MAX (0 when none occurs). */
int draft_lookup(const int *ids, int n, int last, int max, int *out, int *match);

struct engine;
/* The guesses for a step of last and them on the engine's cache: at most
 * want, ENGINE_DRAFT_MAX_T - 1, the rows one pass of a step has after last
 * (engine_step_rows: --chunk 2 leaves 1), what the context has room for
 * after last, and left (tokens the answer may still take after the step's
 * first); *match as draft_lookup's. */
int draft_lookup_step(const struct engine *en, int last, int want, int left, int *out, int *match);

#endif
