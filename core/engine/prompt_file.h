/* prompt_file: a prompt's KV cache kept in a file (`run --prompt-cache`), so
 * that a later run whose prompt starts the same way computes only the rest.
 *
 * The rows a file holds are this model's for its ids as one backend with one
 * set of kernels computed them, so a restore continues exactly as the run
 * that wrote it would have. The file names what made it (the checkpoint's
 * fingerprint and config.json, the backend and kernels, the cache's type),
 * and a file made otherwise is not used. The logits after its last position are kept too:
 * a prompt that is the whole file computes nothing and samples from the very
 * bits the run that wrote it did, so the same command gives the same output.
 *
 * Layout (little-endian): a header of PROMPT_FILE_HEADER bytes (magic,
 * version, identity, shape, counts), the ids as int32, the last position's
 * logits when kept, the rows [n_layers][n - base][row] as the cache holds
 * them (row: its floats a position, a bf16 cache's values two to one), and the
 * XXH3-64 of all the bytes before it. A file of version 1 holds every
 * position's rows (base 0); one of version 2 only those from base on, the
 * others being another file's (the server's directory: a conversation that
 * continues another one's first base positions). Files are written under a temporary name and
 * renamed into place, so a failed or interrupted save leaves the old one. */
#ifndef MOETIER_PROMPT_FILE_H
#define MOETIER_PROMPT_FILE_H

#include <stddef.h>
#include <stdint.h>

#include "core/base/errbuf.h"
#include "engine.h"

#define PROMPT_FILE_MAGIC "MTPROMPT"
#define PROMPT_FILE_VERSION 2         /* the newest read; whole files are written as 1 */
#define PROMPT_FILE_HEADER 128

/* What computed the rows: a file is used only by a run with the same. */
typedef struct prompt_identity {
    uint64_t model;             /* the checkpoint's fingerprint and its config.json */
    char compute[32];           /* the backend and its kernels: "cpu avx512", "cuda" */
} prompt_identity;

typedef struct prompt_file {
    char path[4096];
    int fd;
    size_t size;
    int n;                      /* positions */
    int base;                   /* the first position whose rows the file holds */
    int32_t *ids;               /* [n] */
    float *logits;              /* [vocab] after position n - 1; NULL: not kept */
    int layers, row;
    uint64_t rows_at;           /* where the rows begin in the file */
    uint64_t sum;               /* the checksum the file ends with */
    void *st;                   /* the checksum of the bytes before the rows (XXH3 state) */
} prompt_file;

/* Where prompt_file_read_rows hands the rows: positions [first, first +
 * count) of one layer, [count][row] floats, valid during the call. */
typedef void (*prompt_rows_sink)(void *ctx, int layer, int first, int count, const float *rows);

/* Before anything loads: 1 when path holds a prompt file, 0 when there is
 * nothing to read yet (no file, or an empty one), -1 with e set when what is
 * there is not a regular file, not a prompt file, or one of a server's
 * directory that holds only part of its conversation (it is not overwritten). */
int prompt_file_probe(const char *path, errbuf *e);

/* What prompt_file_open and prompt_file_read_rows return when the file's
 * bytes are wrong (cut short, a damaged header, an id out of range, a
 * checksum that does not match): it can never be used, unlike a file another
 * model, kernels or version made, or one the system failed to read (-1). */
#define PROMPT_FILE_DAMAGED -2

/* Opens the file and checks its header against id and en's model, reading
 * its ids and logits: 0; -1 or PROMPT_FILE_DAMAGED with e saying why it
 * cannot be used (another model, backend or kernels, another shape, cut
 * short, an id out of range). */
int prompt_file_open(prompt_file *pf, const char *path, const prompt_identity *id,
                     const engine *en, errbuf *e);
void prompt_file_close(prompt_file *pf);

/* Reads the rows once, a piece at a time (read, not a mapping: a file cut
 * short meanwhile is an error, not a crash), each piece hashed and handed to
 * sink (may be NULL), then checks the checksum over the whole file: 0; -1 or
 * PROMPT_FILE_DAMAGED with e set, and then what sink got must not be used. */
int prompt_file_read_rows(prompt_file *pf, prompt_rows_sink sink, void *ctx, errbuf *e);

/* Copies into en (which holds nothing yet) the rows of a whole file (base 0;
 * one that holds only some is refused) for the leading ids
 * it shares with ids[0..n): all n with the kept logits into `logits` when the
 * file is exactly ids, else at most n - 1 (so that a forward over the rest
 * yields logits). Returns the positions restored (n: the logits are there
 * too; 0: none, the rows not read), or -1 with e set (damaged: en holds
 * nothing). Reads the rows, so once per open. */
int prompt_file_restore(prompt_file *pf, engine *en, const int *ids, int n, float *logits,
                        errbuf *e);

/* Writes en's cached positions to path, with the logits after the last one
 * (NULL: none kept). A directory, FIFO or device at path is refused. */
int prompt_file_save(const char *path, const prompt_identity *id, const engine *en,
                     const float *logits, errbuf *e);
/* The same for the rows of positions [base, n) held in host memory by spans
 * that cover them in order (a prompt cache entry's own, or with those of the
 * entries it continues from 0), without logits; all n ids are written. */
int prompt_file_save_spans(const char *path, const prompt_identity *id, const engine *en,
                           const int *ids, int n, int base, const kv_span *spans, int n_spans,
                           errbuf *e);

#endif
