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
 * Entries are whole prefixes (token ids and every layer's rows), evicted least
 * recently used first to stay within a byte budget. A saved prefix that
 * another one extends is dropped for it. */
#ifndef MOETIER_PROMPT_CACHE_H
#define MOETIER_PROMPT_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "engine.h"

/* positions a cut must lose before they are saved: fewer cost little to compute */
#define PROMPT_CACHE_MIN_TOKENS 32

typedef struct prompt_entry {
    int *ids;
    int n;
    float *rows;                /* [n_layers][n][row] */
    size_t rows_bytes;
    size_t bytes;
    uint64_t last_used;
    int on_disk;                /* in the --prompt-cache-dir (prompt_cache_disk.h) */
} prompt_entry;

typedef struct prompt_cache {
    size_t budget;              /* bytes; 0: off */
    size_t bytes;               /* held now */
    int n, cap;
    prompt_entry *entries;
    uint64_t clock;
    int prompt_end;             /* the last prompt's length (what followed was generated) */
    uint64_t saved, evicted, restored_tokens;   /* for metrics */
} prompt_cache;

void prompt_cache_init(prompt_cache *pc, size_t budget);
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
 * Memory that cannot be had only means nothing is saved. */
int prompt_cache_prepare(prompt_cache *pc, engine *en, const int *ids, int n);

/* Saves en's cached positions as an entry (when they are at least
 * PROMPT_CACHE_MIN_TOKENS), as a cut would: before the server stops. */
void prompt_cache_keep(prompt_cache *pc, const engine *en);

/* Takes x (ids malloc'd, rows from prompt_cache_rows_alloc, n, rows_bytes
 * set) as the most recently used entry when it fits beside those held,
 * evicting nothing: 0; -1 when it does not fit (x stays the caller's). */
int prompt_cache_adopt(prompt_cache *pc, prompt_entry x);

#endif
