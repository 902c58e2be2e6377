/* draft_lookup: a guess at the next tokens from the context itself (prompt
 * lookup): the tokens that followed the latest earlier occurrence of the
 * context's last few tokens. Text that quotes or repeats what came before
 * (code being edited, a summary citing its source, lists) is often continued
 * the same way; a guess is only ever checked, never taken on trust. */
#ifndef MOETIER_DRAFT_LOOKUP_H
#define MOETIER_DRAFT_LOOKUP_H

/* the longest and shortest runs of last tokens looked up, longest first (a
 * single token matches too often to be worth a step's extra experts) */
#define DRAFT_LOOKUP_MAX_NGRAM 3
#define DRAFT_LOOKUP_MIN_NGRAM 2

/* The context is ids[0..n) followed by last. Writes to out at most max tokens
 * that followed the latest earlier occurrence of its last
 * DRAFT_LOOKUP_MAX_NGRAM tokens (else of fewer, down to
 * DRAFT_LOOKUP_MIN_NGRAM) and returns how many; 0 when none occurs. */
int draft_lookup(const int *ids, int n, int last, int max, int *out);

/* After a checked step whose guesses were all rejected, the next lookups are
 * skipped: 1 step, then twice as many after each further such step in a row,
 * up to DRAFT_BACKOFF_MAX; a kept guess ends it. A checked step reads the
 * experts of every row in it (K2 with 3 guesses: up to about twice the bytes
 * of a one-token step), so where the context's repeats are not continued
 * (prose whose 2-token runs recur) at most one step in 17 pays that once the
 * misses go on, and where they are continued nothing is skipped. */
#define DRAFT_BACKOFF_MAX 16
typedef struct draft_backoff {
    int misses;     /* checked steps in a row that kept no guess */
    int skip;       /* steps left before the next lookup */
} draft_backoff;
/* whether this step may look up guesses (a skipped step counts down) */
int draft_backoff_allows(draft_backoff *b);
/* after a step that checked `guessed` guesses and kept `kept` of them */
void draft_backoff_after(draft_backoff *b, int guessed, int kept);

struct engine;
/* The guesses for a step of last and them on the engine's cache: at most
 * want, ENGINE_DRAFT_MAX_T - 1, the rows one pass of a step has after last
 * (engine_step_rows: --chunk 2 leaves 1), what the context has room for
 * after last, and left (tokens the answer may still take after the step's
 * first). */
int draft_lookup_step(const struct engine *en, int last, int want, int left, int *out);

/* Cuts the guesses g[0..n) of n sequences stepped together to at most room in
 * all, taking one guess of each in turn (a sequence's first guesses are the
 * likeliest to be kept): the step then stays within rows the backend computes
 * in one pass (engine_step_rows), as a second pass would read the dense
 * weights again for a few guesses. */
void draft_lookup_share(int *g, int n, int room);

#endif
