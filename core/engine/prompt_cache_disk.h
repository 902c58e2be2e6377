/* prompt_cache_disk: the server's prompt cache kept in a directory across
 * restarts (`serve --prompt-cache-dir DIR`).
 *
 * Each entry is a prompt file (prompt_file.h, without logits) named
 * <identity hash>-<ids hash>.mtprompt holding the entry's own rows: from its
 * base on when it continues another entry, whose file holds the rest (and is
 * written first, and read first: a file waits until an entry holds the
 * positions it lacks, and is unusable when none does). The identity hash is
 * that of the checkpoint, backend and kernels: files another model, backend
 * or kernels made have another prefix and are left alone, so servers of different models
 * may share a directory (two of the same one may not: each would delete what
 * the other wrote, so a server locks its identity's part of it). At start
 * this identity's files are read into the cache, the most recently used
 * first, while they fit in its budget; those that do not, and those that
 * cannot be read now (another version's, an I/O error), are left as they are
 * for a later start; a damaged file is deleted. While the server is idle,
 * entries are written one at a time, then the files of entries gone
 * (evicted, or replaced by a longer conversation) and what unfinished writes
 * left are deleted, but for a file holding the start of an entry whose write
 * failed (all that is on disk of that conversation). After
 * each write the files' times are set in the order the entries were last
 * used (a crash keeps that order for the next start). At a clean stop the
 * conversations in the engine are kept as entries, and what is left is
 * written and deleted so. */
#ifndef MOETIER_PROMPT_CACHE_DISK_H
#define MOETIER_PROMPT_CACHE_DISK_H

#include "prompt_cache.h"
#include "prompt_file.h"

#define PROMPT_CACHE_FILE_SUFFIX ".mtprompt"

typedef struct prompt_disk_counts {
    int files;                  /* this identity's files found */
    int loaded;                 /* read into the cache */
    long long loaded_tokens;
    int unusable;               /* not read now (another version, an I/O error): left alone */
    int damaged;                /* never readable: deleted at the next sync */
    int left_out;               /* did not fit in the budget: left alone */
    int written, removed;       /* at the stop */
    char first_problem[256];    /* why the first unusable file was not used */
    char first_damage[256];     /* what the first damaged file showed */
} prompt_disk_counts;

/* Takes dir for this identity's server alone: a lock on dir/<identity>.lock
 * (holding the process id), kept while the returned descriptor is open (the
 * process's life; a crash lets it go). -1 with e set when another process
 * holds it: two servers of one model would delete each other's files. */
int prompt_cache_dir_lock(const char *dir, const prompt_identity *id, errbuf *e);

/* The name of the file of an entry with ids[0..n), for id. */
void prompt_cache_file_name(const prompt_identity *id, const int *ids, int n, char *out, size_t size);

/* Reads dir's files of identity id into pc (which must hold no entry yet),
 * and notes in pc those left alone. */
int prompt_cache_load_dir(prompt_cache *pc, const char *dir, const prompt_identity *id,
                          const engine *en, prompt_disk_counts *c, errbuf *e);
/* Writes the most recently used entry not in dir yet: 1; 0 when every entry
 * is there; -1 with e set when it could not be (it is tried again only by
 * prompt_cache_store_dir). The server writes them so while it has no
 * request, so that a crash loses little. */
int prompt_cache_write_pending(prompt_cache *pc, const char *dir, const prompt_identity *id,
                               const engine *en, errbuf *e);
/* Deletes dir's files of identity id that are no entry's, and what unfinished
 * writes left, but for the files left alone at start and those holding the
 * start of one of them or of an entry whose write failed; *removed counts them. */
int prompt_cache_remove_stale(const prompt_cache *pc, const char *dir, const prompt_identity *id,
                              const engine *en, int *removed, errbuf *e);
/* Writes pc's entries to dir as above, deletes what is stale, and writes again
 * those whose write failed when that freed room; -1 with e set when one could
 * not be written. */
int prompt_cache_store_dir(prompt_cache *pc, const char *dir, const prompt_identity *id,
                           const engine *en, prompt_disk_counts *c, errbuf *e);

#endif
