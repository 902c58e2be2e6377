/* safetensors: read-only access to one .safetensors file.
 *
 * The file is mmap'd; tensors point straight into the mapping (no copies). The
 * header is parsed with cJSON and validated completely before anything is used:
 * known dtype, integral non-negative shape, offsets inside the file, byte size
 * equal to numel * element size, no two tensors overlapping, no duplicate names.
 * Any violation is an error naming the file and the tensor. */
#ifndef MOETIER_SAFETENSORS_H
#define MOETIER_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "core/base/errbuf.h"
#include "dtype.h"

#define ST_MAX_DIMS 8

typedef struct st_tensor {
    char *name;
    dtype dt;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    uint64_t numel;
    uint64_t nbytes;
    uint64_t file_offset;       /* absolute offset of the data in the file */
    const uint8_t *data;        /* into the mapping; NULL when parsed without data */
    int file_index;             /* which file of a checkpoint holds it */
} st_tensor;

typedef struct st_file {
    char *path;
    uint8_t *map;               /* whole file, or NULL for st_file_parse */
    uint64_t size;
    uint64_t data_start;        /* where the data begins: 8 + the header's length */
    st_tensor *tensors;         /* sorted by name */
    int n_tensors;
    /* the file mapped, as it was when opened (st_file_open): a later change
     * of the path (a write, or another file renamed over it) shows against these */
    uint64_t dev, ino, mtime_ns;
} st_file;

/* Opens and validates path. On failure f is left closed and e says why. */
int st_file_open(st_file *f, const char *path, errbuf *e);
/* Validates an in-memory image of a whole file (the fuzz entry point); tensor
 * data pointers point into buf. path is only used in messages. */
int st_file_parse(st_file *f, const uint8_t *buf, uint64_t size, const char *path, errbuf *e);
void st_file_close(st_file *f);
const st_tensor *st_file_find(const st_file *f, const char *name);

/* "BF16[128, 256]" into buf, for messages and inspect. */
const char *st_tensor_describe(const st_tensor *t, char *buf, size_t n);

#endif
