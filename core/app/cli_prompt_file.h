/* cli_prompt_file: `run --prompt-cache FILE`, llama.cpp's flag: the prompt's
 * KV cache kept in FILE, so that a run whose prompt starts as the last one's
 * did computes only the rest (core/engine/prompt_file.h).
 *
 * The file is checked before the model loads: one that is not a prompt cache
 * is never overwritten. One made by another checkpoint, backend or kernels, or
 * damaged, is said and not used (and replaced). After the prompt (or, with
 * --prompt-cache-all, after the reply) the cache is written unless
 * --prompt-cache-ro or the file holds those positions already (it may hold
 * more); a prompt stopped part way keeps the positions it reached,
 * so the next run goes on from there. A save that fails is a warning: the
 * file is a cache, and the old one stays. */
#ifndef MOETIER_CLI_PROMPT_FILE_H
#define MOETIER_CLI_PROMPT_FILE_H

#include "cli_common.h"
#include "core/engine/prompt_file.h"

typedef struct cli_prompt_cache {
    const char *path;           /* --prompt-cache; NULL: off */
    int read_only;              /* --prompt-cache-ro */
    int all;                    /* --prompt-cache-all: the reply too */
    int exists;                 /* a prompt file was there at the check */
    prompt_identity id;
    int have_id;
    int restored;               /* positions the last restore copied in */
    int *file_ids, file_n;      /* what the file held (a copy), for the save */
} cli_prompt_cache;

/* What computed m's rows: the checkpoint (store.h's fingerprint: shard
 * headers and sampled values) with config.json, whose fields shape the math
 * too; and the backend with its kernels, whose sums round differently (the
 * thread count does not change them). */
int cli_model_prompt_identity(const cli_model *m, prompt_identity *id, errbuf *e);

/* If argv[*i] is one of the flags, consumes it (and its value) and returns 1;
 * -1 when its value is missing; 0 when not one of them. */
int cli_prompt_cache_parse(cli_prompt_cache *pc, int argc, char **argv, int *i);
/* Before the model loads: -1 with e set when the path cannot be read or
 * written as a prompt cache. */
int cli_prompt_cache_check(cli_prompt_cache *pc, errbuf *e);
/* Into m's empty engine, what the file holds of ids[0..n): returns the
 * positions restored (n: logits hold the kept ones), or -1 with e set. A file
 * that cannot be used is said on stderr (unless m is quiet) and 0 returned. */
int cli_prompt_cache_restore(cli_prompt_cache *pc, cli_model *m, const int *ids, int n,
                             float *logits, errbuf *e);
/* Writes m's cached positions with logits (NULL: none kept), unless the file
 * holds them all already (a prompt that the file's extends keeps the longer
 * file); a failure is said on stderr. */
void cli_prompt_cache_save(cli_prompt_cache *pc, cli_model *m, const float *logits);
void cli_prompt_cache_free(cli_prompt_cache *pc);

#endif
