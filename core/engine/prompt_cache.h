/* prompt_cache: the KV caches of earlier conversations, kept in host memory.
 *
 * The engine holds one KV cache, so a server answering two conversations in
 * turn would prefill each one's whole history again at every turn (for K2,
 * minutes for a long one). Before a request cuts positions out of the engine's
 * cache, those positions are saved here; a request whose prompt starts like a
 * saved conversation gets its rows copied back instead of computed. Rows are
 * the engine's own for the same token ids, so what follows computes exactly
 * as if the prefix had been run again (tested against that).
 *
 * Entries are conversations: all their token ids, and the rows of the
 * positions no other entry holds for them. An entry saved while another one
 * shares at least PROMPT_CACHE_MIN_TOKENS leading positions with it keeps only
 * the rows after those and names that one as its parent (the system prompt
 * and tools that an agent's conversations share are held once); one that
 * extends a saved conversation with no such dependants replaces it. Entries
 * are evicted least recently used first to stay within a byte budget, an
 * entry only once no other depends on it. */
#ifndef MOETIER_PROMPT_CACHE_H
#define MOETIER_PROMPT_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "engine.h"

/* positions a cut must lose before they are saved: fewer cost little to compute */
#define PROMPT_CACHE_MIN_TOKENS 32

typedef struct prompt_entry {
    uint64_t id;                /* unique, never 0 */
    uint64_t parent;            /* the entry holding positions [0, base); 0: none */
    int *ids;                   /* [n] all of the conversation's ids */
    int n, base;
    float *rows;                /* [n_layers][n - base][row]: positions [base, n) */
    size_t rows_bytes;
    size_t bytes;               /* ids and rows */
    int children;               /* entries whose parent this one is */
    uint64_t last_used;
    int on_disk;                /* 1: in the --prompt-cache-dir (prompt_cache_disk.h);
                                 * -1: a write failed, tried again at the stop */
    int failed_writes;
    int held;                   /* scratch: not to be evicted by the save under way */
} prompt_entry;

/* A file the directory keeps though no entry holds it (prompt_cache_disk.c). */
typedef struct prompt_left_alone {
    char name[64];
    int base;                   /* a continuation's first position of its own; 0: none (or unread) */
    uint64_t start;             /* XXH3 of its first base ids, which the file it continues holds */
} prompt_left_alone;

typedef struct prompt_cache {
    size_t budget;              /* bytes; 0: off */
    size_t bytes;               /* held now */
    int n, cap;
    prompt_entry *entries;
    uint64_t clock, next_id;
    uint64_t changes;           /* entries added or dropped, ever */
    uint64_t saved, evicted, restored_tokens;   /* for metrics */
    /* --prompt-cache-dir (prompt_cache_disk.h): the files read at start that
     * became no entry and are not damaged (left out of the budget, of another
     * version, unreadable, waiting for a file not read): never deleted, nor
     * the files that hold their starts */
    prompt_left_alone *left_alone;
    int n_left_alone;
} prompt_cache;

void prompt_cache_init(prompt_cache *pc, size_t budget);
/* The entry with this id; NULL for none (0 names none). */
prompt_entry *prompt_cache_find(const prompt_cache *pc, uint64_t id);
void prompt_cache_free(prompt_cache *pc);

/* An entry's rows: anonymous memory asking for transparent huge pages, so a
 * save into it takes a page fault every 2 MB, not every 4 KB (the faults are
 * most of a save's time: docs/benchmarks.md). NULL when there is none. */
float *prompt_cache_rows_alloc(size_t bytes);
void prompt_cache_rows_free(float *rows, size_t bytes);

/* Bytes one position takes in an entry, for en's model. */
size_t prompt_cache_position_bytes(const engine *en);

/* Before a prompt of n ids runs: saves what of en's cache it would cut (when
 * that is at least PROMPT_CACHE_MIN_TOKENS positions and the cut lies inside
 * the last prompt, not only in what was generated after it), then copies in the
 * saved prefix that shares most with ids, if it shares more than en does.
 * Returns how many leading ids en's cache then holds (at most n - 1, as
 * engine_reusable_prefix); the caller truncates to that and runs the rest.
 * *prompt_end: the length of the last prompt of the conversation en holds
 * (0: none), set to n; each conversation (a server's slot) keeps its own,
 * or one slot's short prompt would make another's cut seem to lie in what was
 * generated and its conversation would go unsaved. Memory that cannot be had
 * only means nothing is saved. */
int prompt_cache_prepare(prompt_cache *pc, engine *en, const int *ids, int n, int *prompt_end);

/* Saves en's cached positions as an entry (when they are at least
 * PROMPT_CACHE_MIN_TOKENS), as a cut would: before the server stops. */
void prompt_cache_keep(prompt_cache *pc, const engine *en);

/* Writes positions [base, n) of every layer of a conversation being added
 * into rows, laid out [n_layers][n - base][row]: 0, or -1 with e set. */
typedef int (*prompt_fill_fn)(void *ctx, int base, float *rows, errbuf *e);

/* Adds a conversation of n ids (read from a file), sharing with the entries
 * held as a save does, evicting nothing; fill writes the rows it keeps: 0
 * with *added the entry; 1 when an entry holds all its positions already;
 * -1 when it does not fit (or no memory); -2 with e set when fill failed. */
int prompt_cache_add(prompt_cache *pc, const engine *en, const int *ids, int n, prompt_fill_fn fill,
                     void *ctx, prompt_entry **added, errbuf *e);

/* The spans holding x's rows for positions [0, n) (n <= x->n), in order of
 * position, into out (room for pc->n): x's and its parents'. Returns their
 * count. */
int prompt_cache_spans(const prompt_cache *pc, const prompt_entry *x, int n, kv_span *out);

#endif
