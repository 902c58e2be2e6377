/* store_source: whether the checkpoint an expert store was built from has
 * changed since.
 *
 * The fingerprint (store.c) reads each shard's header and a few sampled pages:
 * a new checkpoint fails it, but a change to part of a shard's experts can fall
 * between the samples, and the store would then serve the old experts. So the
 * store also records each shard's modification time when its conversion
 * begins. A shard whose time has moved since is reported at every open (it may
 * also be a mere copy), and `moetier convert --check` then packs every expert
 * of the checkpoint again and compares it with the store's checksums: when all
 * agree it records the new times, otherwise it names the experts that differ. */
#ifndef MOETIER_STORE_SOURCE_H
#define MOETIER_STORE_SOURCE_H

#include <cJSON.h>
#include <stdint.h>
#include <stdio.h>

#include "core/base/errbuf.h"
#include "core/model/model_weights.h"
#include "tiers/store.h"

/* [{"name", "bytes", "mtime_ns"}] of the checkpoint's shards as mapped, when
 * the model was opened: the bytes a conversion or a comparison reads (mtime_ns
 * a decimal string: nanoseconds do not fit a JSON double); NULL with e set. */
cJSON *store_source_files_json(const model_weights *mw, errbuf *e);

/* Whether a shard's path no longer names the file mapped as it was then
 * (written to, or another file renamed over it): its recorded time would
 * then vouch for bytes that were not read. */
int store_source_files_moved(const model_weights *mw);

/* Compares index.json's "source_files" (NULL: a store from before they were
 * recorded) with the checkpoint's shards now; sets s->source_times,
 * s->n_changed_sources and s->changed_source. */
void store_source_compare(store *s, const cJSON *source_files, const model_weights *mw);

/* What a run prints when a shard changed after the store was built. */
void store_source_warn(const store *s, const model_weights *mw, FILE *log);

/* Packs every expert of the checkpoint as a blob and compares its XXH3 with
 * the store's; each that differs is printed to log and counted in *n_differ.
 * Returns -1 only when the comparison cannot run. */
int store_source_check(const store *s, const model_weights *mw, FILE *log, uint64_t *n_differ,
                       errbuf *e);

/* Rewrites s's index.json with the shards' times `files`
 * (store_source_files_json, taken before a check found every expert the same). */
int store_source_record(const store *s, const cJSON *files, errbuf *e);

#endif
