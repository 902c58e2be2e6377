/* fileutil: see fileutil.h. */
#include "fileutil.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#define FILE_READ_MAX ((size_t)1 << 30)

int stream_read_all(FILE *f, const char *name, char **out, size_t *len, errbuf *e)
{
    *out = NULL;
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap + 1);
    while (buf) {
        size_t r = fread(buf + n, 1, cap - n, f);
        n += r;
        if (r == 0)
            break;
        if (n == cap) {
            if (cap >= FILE_READ_MAX) {
                free(buf);
                return err_set(e, "%s: larger than %zu bytes", name, FILE_READ_MAX);
            }
            cap *= 2;
            char *nb = realloc(buf, cap + 1);
            if (!nb)
                free(buf);
            buf = nb;
        }
    }
    if (!buf)
        return err_set(e, "%s: out of memory", name);
    if (ferror(f)) {
        free(buf);
        return err_set(e, "%s: cannot read: %s", name, strerror(errno));
    }
    buf[n] = 0;
    *out = buf;
    if (len)
        *len = n;
    return 0;
}

int file_read_all(const char *path, char **out, size_t *len, errbuf *e)
{
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f)
        return err_set(e, "%s: cannot open: %s", path, strerror(errno));
    int rc = stream_read_all(f, path, out, len, e);
    fclose(f);
    return rc;
}

int file_write_atomic(const char *path, const void *data, size_t len, errbuf *e)
{
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return err_set(e, "%s: cannot create: %s", tmp, strerror(errno));
    const char *p = data;
    size_t left = len;
    while (left) {
        ssize_t w = write(fd, p, left);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            int er = errno;
            close(fd);
            unlink(tmp);
            return err_set(e, "%s: write failed: %s", tmp, strerror(er));
        }
        p += w;
        left -= (size_t)w;
    }
    if (fsync(fd) != 0 || close(fd) != 0) {
        unlink(tmp);
        return err_set(e, "%s: cannot flush: %s", tmp, strerror(errno));
    }
    if (rename(tmp, path) != 0) {
        int er = errno;
        unlink(tmp);
        return err_set(e, "%s: cannot rename into place: %s", path, strerror(er));
    }
    file_sync_parent_dir(path);
    return 0;
}

void file_sync_parent_dir(const char *path)
{
    char *copy = strdup(path);
    if (!copy)
        return;
    int fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
    free(copy);
}

int dir_ensure(const char *path, errbuf *e)
{
    struct stat st;
    if (stat(path, &st) == 0)
        return S_ISDIR(st.st_mode) ? 0 : err_set(e, "%s: exists and is not a directory", path);
    if (mkdir(path, 0755) != 0 && errno != EEXIST)
        return err_set(e, "%s: cannot create directory: %s", path, strerror(errno));
    return 0;
}

void fd_limit_make_room(int n)
{
    struct rlimit r;
    if (n <= 0 || getrlimit(RLIMIT_NOFILE, &r) != 0)
        return;
    rlim_t want = (rlim_t)n + 256;  /* sockets, shards, logs */
    if (r.rlim_cur != RLIM_INFINITY && r.rlim_cur < want) {
        r.rlim_cur = r.rlim_max == RLIM_INFINITY || r.rlim_max > want ? want : r.rlim_max;
        setrlimit(RLIMIT_NOFILE, &r);
    }
}
