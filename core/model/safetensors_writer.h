/* safetensors_writer: writes one .safetensors file, streaming the tensor data.
 *
 * Checkpoints are far larger than RAM, so the writer never holds tensor data:
 * every tensor is declared first (name, dtype, shape), the header is written
 * once from those declarations, and then the data is streamed in declaration
 * order in pieces of any size. The file is written under a temporary name and
 * renamed into place only by st_writer_close() after the byte count has been
 * checked and the data fsync'd, so an interrupted or wrong write never leaves a
 * valid-looking file under the real name.
 *
 * Layout (what core/model/safetensors.h reads): u64 little-endian header length
 * N, N bytes of JSON {"__metadata__": {"format": "pt"}, "<name>": {"dtype",
 * "shape", "data_offsets": [begin, end]}, ...} padded with spaces so that the
 * data region starts 8-byte aligned, then the tensors back to back.
 *
 * Usage:
 *     st_writer w;
 *     st_writer_open(&w, "dir/model-00001-of-00002.safetensors", e);
 *     st_writer_add(&w, "a.weight", DT_BF16, 2, (int64_t[]){4, 8}, e);  ...
 *     st_writer_begin_data(&w, e);
 *     st_writer_write(&w, bytes, n, e);  ...   (exactly the declared bytes)
 *     st_writer_close(&w, e);                  (or st_writer_abort on failure)
 * After any failure the writer is in a failed state: call st_writer_abort()
 * (st_writer_close() also cleans up and returns -1). */
#ifndef MOETIER_SAFETENSORS_WRITER_H
#define MOETIER_SAFETENSORS_WRITER_H

#include <stddef.h>
#include <stdint.h>

#include "core/base/errbuf.h"
#include "dtype.h"
#include "safetensors.h"

typedef struct st_writer_entry {
    char *name;
    dtype dt;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    uint64_t nbytes;
} st_writer_entry;

typedef struct st_writer {
    char *path;                 /* final name */
    char *tmp_path;             /* written here until close */
    int fd;
    int state;                  /* 0 declaring, 1 data, 2 failed */
    st_writer_entry *entries;
    int n_entries, cap_entries;
    uint32_t *slots;            /* hash set of the declared names */
    size_t n_slots;
    uint64_t data_bytes;        /* sum of the declared tensors' sizes */
    uint64_t written;           /* data bytes streamed so far */
    uint8_t *buf;               /* write buffer */
    size_t buf_len;
} st_writer;

/* Creates path's temporary file. */
int st_writer_open(st_writer *w, const char *path, errbuf *e);
/* Declares the next tensor; only before st_writer_begin_data. ndim may be 0 (a
 * scalar) up to ST_MAX_DIMS; names must be unique. */
int st_writer_add(st_writer *w, const char *name, dtype dt, int ndim, const int64_t *shape,
                  errbuf *e);
/* Writes the header; the data of the declared tensors follows in order. */
int st_writer_begin_data(st_writer *w, errbuf *e);
/* Streams n more bytes of tensor data; writing past the declared total fails. */
int st_writer_write(st_writer *w, const void *bytes, size_t n, errbuf *e);
/* Checks that exactly the declared bytes were written, fsyncs and renames the
 * file into place. On failure the temporary file is removed. The writer is
 * released either way. */
int st_writer_close(st_writer *w, errbuf *e);
/* Releases the writer and removes the temporary file (no-op after close). */
void st_writer_abort(st_writer *w);

#endif
