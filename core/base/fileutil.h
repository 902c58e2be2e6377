/* fileutil: whole-file reads and atomic writes (write to a temporary name, fsync,
 * rename), so a crash never leaves a half-written file under the real name. */
#ifndef MOETIER_FILEUTIL_H
#define MOETIER_FILEUTIL_H

#include <stddef.h>
#include <stdio.h>

#include "errbuf.h"

/* Reads the whole file into a NUL-terminated malloc'd buffer; files over 1 GiB
 * are refused. */
int file_read_all(const char *path, char **out, size_t *len, errbuf *e);
/* The same for an open stream (standard input), up to its end; `name` is what
 * errors call it. */
int stream_read_all(FILE *f, const char *name, char **out, size_t *len, errbuf *e);
int file_write_atomic(const char *path, const void *data, size_t len, errbuf *e);
/* fsync of the directory holding path, so that a rename or unlink in it is
 * durable; best effort (some file systems refuse it). */
void file_sync_parent_dir(const char *path);
int dir_ensure(const char *path, errbuf *e);
/* Raises the soft limit on open files (up to the hard one) so that n more
 * descriptors fit beside a reserve for the rest of the process; best effort:
 * an open past the limit still fails, with EMFILE. */
void fd_limit_make_room(int n);

#endif
