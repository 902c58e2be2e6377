/* fileutil: whole-file reads and atomic writes (write to a temporary name, fsync,
 * rename), so a crash never leaves a half-written file under the real name. */
#ifndef MOETIER_FILEUTIL_H
#define MOETIER_FILEUTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include "errbuf.h"

/* Reads the whole file into a NUL-terminated malloc'd buffer; files over 1 GiB
 * are refused. */
int file_read_all(const char *path, char **out, size_t *len, errbuf *e);
/* The same for a file that must be a regular one (a model's or a store's): a
 * FIFO, device or directory is refused at once instead of read or waited on. */
int file_read_regular(const char *path, char **out, size_t *len, errbuf *e);
struct stat;
/* A file's modification time in nanoseconds (what a store records of the
 * checkpoint's shards). */
uint64_t file_mtime_ns(const struct stat *sb);
/* "directory", "FIFO", "socket" or "special file": what a path that is not a
 * regular file is, for errors. */
const char *file_kind(mode_t m);
/* open(2) of a file that must be a regular one, with the same refusal;
 * O_CLOEXEC is added. Returns the descriptor, or -1 with e set. */
int file_open_regular(const char *path, int flags, mode_t mode, errbuf *e);
/* The same for an open stream (standard input), up to its end; `name` is what
 * errors call it. */
int stream_read_all(FILE *f, const char *name, char **out, size_t *len, errbuf *e);
/* write(2) of all len bytes, retrying short and interrupted writes; -1 with
 * errno on a failure. */
int fd_write_all(int fd, const void *data, size_t len);
/* Writes the whole file atomically (file_output: a device or FIFO at path is
 * written through). */
int file_write_atomic(const char *path, const void *data, size_t len, errbuf *e);
/* The same for a file that must be a regular one (a store's index, a model's
 * files): a FIFO, device or directory at path is refused. */
int file_replace_atomic(const char *path, const void *data, size_t len, errbuf *e);

/* An output file, written so that a failure leaves what was at the path as it
 * was and nothing but that file changes: the bytes go to a temporary name
 * beside it, renamed over it at the end. A symbolic link's target is the file
 * written (the link stays a link); a device, FIFO or socket (/dev/null, a
 * pipe) and whatever a descriptor path names (/dev/stdout, /dev/fd/N: maybe a
 * file opened with >>) are written through, appending, never replaced. */
typedef struct file_output {
    char path[4096];    /* the file written: the path, or its link's target */
    char tmp[4200];     /* where the bytes go (path itself when written through) */
    int through;
} file_output;
/* The temporary name beside path (this process's). */
void file_output_temp_name(const char *path, char *out, size_t n);
/* Returns the descriptor to write to, or -1 with e set (a directory, a link
 * to nothing, no permission). */
int file_output_open(file_output *o, const char *path, errbuf *e);
/* The same, but a new file is readable by its owner only (what it holds is
 * private: a conversation). */
int file_output_open_private(file_output *o, const char *path, errbuf *e);
/* After the last byte: fsync and rename into place (the caller closes fd). */
int file_output_commit(file_output *o, int fd, errbuf *e);
/* After a failure: the temporary file goes (the caller closes fd). */
void file_output_abort(file_output *o);
/* Whether an output could be written there, checked before a long run; a pipe
 * or a device is not opened (that could wait for a reader). */
int file_check_writable(const char *path, errbuf *e);
/* Whether both paths exist and are the same file (links followed). */
int file_same(const char *a, const char *b);
/* fsync of the directory holding path, so that a rename or unlink in it is
 * durable; best effort (some file systems refuse it). */
void file_sync_parent_dir(const char *path);
/* Whether path is a symbolic link to nothing; target gets what it names. */
int file_dangling_link(const char *path, char *target, size_t n);
/* Creates the directory unless it is one; a file there, or a symbolic link to
 * nothing, is an error naming it. */
int dir_ensure(const char *path, errbuf *e);
/* The same, a directory it creates being its owner's alone. */
int dir_ensure_private(const char *path, errbuf *e);
/* Raises the soft limit on open files (up to the hard one) so that n more
 * descriptors fit beside a reserve for the rest of the process; best effort:
 * an open past the limit still fails, with EMFILE. */
void fd_limit_make_room(int n);

#endif
