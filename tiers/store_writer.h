/* store_writer: `moetier convert` (build or complete an expert store) and
 * `moetier convert --check` (verify every blob's checksum).
 *
 * Conversion streams one expert at a time from the mmap'd checkpoint, so it
 * needs memory for one blob, not for the model. Blobs are written in a fixed
 * order to fixed places; a journal records the blobs already on disk (after
 * their data is synced), so an interrupted conversion resumes where the journal
 * ends, and index.json, the mark of a complete store, is written last. */
#ifndef MOETIER_STORE_WRITER_H
#define MOETIER_STORE_WRITER_H

#include <stdint.h>
#include <stdio.h>

#include "tiers/nvme_tier.h"
#include "tiers/store.h"

typedef struct convert_options {
    const char *out_dir;
    uint64_t max_file_bytes;    /* per data file; 0: 64 GiB */
    int force;                  /* rebuild even a complete, matching store */
    long stop_after;            /* test hook: fail after this many new blobs (0: off) */
    FILE *log;                  /* progress; NULL: silent */
} convert_options;

int store_convert(const model_weights *mw, const convert_options *o, errbuf *e);

/* Reads every blob and checks its XXH3; each mismatch is printed to log.
 * *n_bad counts them. Returns -1 only when the check itself cannot run. */
int store_check(const store *s, const nvme_options *io, FILE *log, uint64_t *n_bad, errbuf *e);

#endif
