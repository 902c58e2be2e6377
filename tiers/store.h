/* store: the expert store, every routed expert of a checkpoint as one blob.
 *
 * A store is a directory (docs/store-format.md):
 *   experts-NNNNN.bin   blobs back to back, each starting on a 4 KiB boundary and
 *                       padded to a whole number of 4 KiB pages (O_DIRECT reads)
 *   index.bin           binary blob table: layer, expert, file, offset, size, xxh3
 *   index.json          what the store is: version, source fingerprint, blob layout,
 *                       files; written last, so a store without it is incomplete
 * A blob holds gate, up and down of one expert, each as its checkpoint bytes
 * (weights, then scales) at fixed offsets, so a blob in memory is a ready
 * expert_view: nothing is converted when it is read back. */
#ifndef MOETIER_STORE_H
#define MOETIER_STORE_H

#include <cJSON.h>
#include <stdint.h>

#include "core/base/errbuf.h"
#include "core/model/model_weights.h"
#include "tiers/expert_source.h"

#define STORE_VERSION 1
#define STORE_ALIGN 4096u
#define STORE_INDEX_JSON "index.json"
/* The store convert writes and runs use when not told otherwise: CHECKPOINT/moetier-store */
#define DEFAULT_STORE_NAME "moetier-store"
#define STORE_INDEX_BIN "index.bin"
#define STORE_JOURNAL "convert.journal"
/* The checkpoint's shard times when a conversion began, kept beside its
 * journal so that a resumed one records those (store_source.h). */
#define STORE_JOURNAL_SOURCES "convert.sources.json"

/* Where gate/up/down live inside a blob; identical for every blob of a store. */
typedef struct store_layout {
    linear_weight part[3];      /* gate, up, down: format and shape; data/scale NULL */
    uint64_t data_off[3], scale_off[3];
    uint64_t blob_bytes;        /* payload */
    uint64_t slot_bytes;        /* payload rounded up to STORE_ALIGN: bytes per read */
} store_layout;

/* One row of index.bin (little-endian, 40 bytes). */
typedef struct store_blob {
    uint32_t layer, expert, file, reserved;
    uint64_t offset;
    uint64_t bytes;             /* payload bytes (slot_bytes are read) */
    uint64_t xxh3;              /* XXH3-64 of the payload */
} store_blob;

typedef struct store {
    char *dir;
    store_layout layout;
    uint64_t fingerprint;       /* of the source checkpoint */
    int n_layers, n_experts;    /* blob table is [n_layers][n_experts] */
    store_blob *blobs;          /* file == UINT32_MAX: no routed expert there */
    int n_blobs;
    int n_files;
    char **file_paths;
    uint64_t *file_bytes;
    uint64_t blobs_per_file;
    /* the checkpoint's shards against the times the store recorded when it
     * was built (store_source.h); source_times 0: the store has none */
    int source_times;
    int n_changed_sources;
    char changed_source[256];   /* the first that changed */
} store;

extern const char *const store_part_names[3];

/* Layout for the routed experts of mw: fails with the layer and expert whose
 * format or shape differs from the first one. */
int store_layout_for_model(const model_weights *mw, store_layout *out, errbuf *e);
/* The views of an expert whose blob is at `blob` in memory. */
void store_layout_view(const store_layout *L, const void *blob, expert_view *out);
/* Packs an expert's checkpoint bytes into a blob (buf: slot_bytes, the
 * padding zeroed), the inverse of store_layout_view. The source pages are
 * let go after (a conversion streams a checkpoint larger than RAM once). */
void store_layout_pack(const store_layout *L, const expert_view *v, uint8_t *buf);
/* Fingerprint of the checkpoint: every shard's name, size and header (names,
 * dtypes, shapes, offsets of all tensors) and 16 sampled pages of its data (so
 * a checkpoint with the same shapes but other values differs), the shards
 * taken by name (an index rewritten in another order names the same
 * checkpoint). Not config.json: an edit there (rope scaling for a longer
 * context, say) leaves the experts as they are, and what of it the store
 * depends on (which layers are MoE, how many experts, the blob layout) is
 * checked at open. */
int store_fingerprint(const model_weights *mw, uint64_t *out, errbuf *e);
/* The fingerprints earlier stores hold, which still open while what they
 * took in is unchanged: [0] config.json's bytes, then the shards in the order
 * the index names them (before 2026-12-04); [1] the shards in that order
 * (before 2026-12-08). */
#define STORE_FINGERPRINTS_BEFORE 2
int store_fingerprints_before(const model_weights *mw, uint64_t out[STORE_FINGERPRINTS_BEFORE],
                              errbuf *e);
/* *was: whether fp is one of those. */
int store_fingerprint_was(const model_weights *mw, uint64_t fp, int *was, errbuf *e);
/* Placement rule shared by the writer and the reader: blob i (in layer, expert
 * order) goes to file i / per_file at offset (i % per_file) * slot_bytes. */
uint64_t store_blobs_per_file(const store_layout *L, uint64_t max_file_bytes);
int store_file_path(const char *dir, int file, char *buf, size_t n);
/* -1 with e set when the data file at path is a symbolic link to nothing (as
 * behind a disk not mounted), else 0. */
int store_file_dangling(const char *path, errbuf *e);

/* Opens a complete store and checks it against the model it will serve:
 * fingerprint, layout, every file present and long enough. An incomplete,
 * stale or damaged store is refused with a reason naming what is wrong;
 * one built from another checkpoint with STORE_OTHER_CHECKPOINT, an
 * index.json that is not a store's with STORE_NOT_A_STORE, and a store that
 * could not be read (an I/O or permission error, a data file missing, as
 * behind a disk not mounted; out of memory) with STORE_UNREADABLE, and one
 * of a later store version with STORE_NEWER: convert rebuilds none of those
 * unless told to. */
#define STORE_OTHER_CHECKPOINT (-2)
#define STORE_NOT_A_STORE (-3)      /* index.json is not a store's */
#define STORE_UNREADABLE (-4)       /* what it is could not be read */
#define STORE_NEWER (-5)            /* written by a newer moetier */
int store_open(store *s, const char *dir, const model_weights *mw, errbuf *e);
void store_close(store *s);
static inline const store_blob *store_blob_at(const store *s, int layer, int expert)
{
    return &s->blobs[(size_t)layer * (size_t)s->n_experts + (size_t)expert];
}

/* Serialisation of the index, shared by the writer. source_files: the
 * checkpoint's shards and times when the conversion began
 * (store_source_files_json), copied into index.json; NULL leaves them out. */
int store_write_index(const char *dir, const store_layout *L, uint64_t fingerprint,
                      const model_config *cfg, const store_blob *blobs, int n_layers,
                      int n_experts, int n_files, const uint64_t *file_bytes,
                      uint64_t blobs_per_file, const cJSON *source_files, errbuf *e);

#endif
