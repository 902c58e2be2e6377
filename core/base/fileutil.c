/* fileutil: see fileutil.h. */
#include "fileutil.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
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

uint64_t file_mtime_ns(const struct stat *sb)
{
    return (uint64_t)sb->st_mtim.tv_sec * 1000000000u + (uint64_t)sb->st_mtim.tv_nsec;
}

const char *file_kind(mode_t m)
{
    return S_ISDIR(m) ? "directory" : S_ISFIFO(m) ? "FIFO" : S_ISSOCK(m) ? "socket" : "special file";
}

int file_open_regular(const char *path, int flags, mode_t mode, errbuf *e)
{
    /* O_NONBLOCK: opening a FIFO for reading would wait for a writer */
    int fd = open(path, flags | O_NONBLOCK | O_CLOEXEC, mode);
    if (fd < 0)
        return err_set(e, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int err = errno;
        close(fd);
        return err_set(e, "%s: cannot stat: %s", path, strerror(err));
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return err_set(e, "%s: is a %s, expected a regular file", path, file_kind(sb.st_mode));
    }
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) != 0) {
        int err = errno;
        close(fd);
        return err_set(e, "%s: cannot open: %s", path, strerror(err));
    }
    return fd;
}

int file_read_regular(const char *path, char **out, size_t *len, errbuf *e)
{
    *out = NULL;
    int fd = file_open_regular(path, O_RDONLY, 0, e);
    if (fd < 0)
        return -1;
    FILE *f = fdopen(fd, "rb");
    if (!f) {
        close(fd);
        return err_set(e, "%s: cannot open: %s", path, strerror(errno));
    }
    int rc = stream_read_all(f, path, out, len, e);
    fclose(f);
    return rc;
}

int fd_write_all(int fd, const void *data, size_t len)
{
    const char *p = data;
    while (len) {
        ssize_t w = write(fd, p, len);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

void file_output_temp_name(const char *path, char *out, size_t n)
{
    snprintf(out, n, "%s.tmp.%ld", path, (long)getpid());
}

/* Whether path names a descriptor rather than a file (/dev/stdout,
 * /dev/fd/N, /proc/self/fd/N, or a link to one): the shell opened what is
 * behind it, maybe for appending (`>> f`), so it is written through. */
static int names_a_descriptor(const char *path)
{
    char cur[PATH_MAX], link[PATH_MAX];
    snprintf(cur, sizeof cur, "%s", path);
    for (int hops = 0; hops < 40; hops++) {
        if (!strncmp(cur, "/proc/", 6) || !strncmp(cur, "/dev/fd/", 8))
            return 1;
        struct stat st;
        if (lstat(cur, &st) != 0 || !S_ISLNK(st.st_mode))
            return 0;
        ssize_t n = readlink(cur, link, sizeof link - 1);
        if (n < 0)
            return 0;
        link[n] = 0;
        if (link[0] == '/') {
            snprintf(cur, sizeof cur, "%s", link);
        } else {
            char *slash = strrchr(cur, '/');
            char dir[PATH_MAX];
            snprintf(dir, sizeof dir, "%.*s", slash ? (int)(slash - cur) : 1, slash ? cur : ".");
            snprintf(cur, sizeof cur, "%s/%s", dir, link);
        }
    }
    return 0;
}

/* file_output_open, a new file being made with mode (before the umask) */
static int output_open(file_output *o, const char *path, mode_t mode, errbuf *e)
{
    memset(o, 0, sizeof *o);
    if (!path[0])
        return err_set(e, "an output file name is empty");
    snprintf(o->path, sizeof o->path, "%s", path);
    struct stat st;
    int exists = stat(path, &st) == 0;
    if (exists && S_ISDIR(st.st_mode))
        return err_set(e, "%s is a directory", path);
    o->through = exists && (!S_ISREG(st.st_mode) || names_a_descriptor(path));
    if (o->through) {
        /* appending: a regular file behind a descriptor may have been opened
         * with >> (one opened with > is empty) */
        snprintf(o->tmp, sizeof o->tmp, "%s", path);
        int fd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC);
        if (fd < 0)
            return err_set(e, "%s: cannot open: %s", path, strerror(errno));
        return fd;
    }
    struct stat lst;
    if (lstat(path, &lst) == 0 && S_ISLNK(lst.st_mode)) {
        char target[PATH_MAX];
        if (!realpath(path, target))
            return err_set(e, "%s: a symbolic link to nothing writable (%s)", path, strerror(errno));
        snprintf(o->path, sizeof o->path, "%s", target);
    }
    file_output_temp_name(o->path, o->tmp, sizeof o->tmp);
    int fd = open(o->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0)
        return err_set(e, "%s: cannot create: %s", o->path, strerror(errno));
    if (exists)
        fchmod(fd, st.st_mode & 07777);     /* the file replaced keeps its permissions */
    return fd;
}

int file_output_open(file_output *o, const char *path, errbuf *e)
{
    return output_open(o, path, 0644, e);
}

int file_output_open_private(file_output *o, const char *path, errbuf *e)
{
    return output_open(o, path, 0600, e);
}

int file_output_commit(file_output *o, int fd, errbuf *e)
{
    if (o->through)
        return 0;
    if (fsync(fd) != 0) {
        int er = errno;
        unlink(o->tmp);
        return err_set(e, "%s: cannot flush: %s", o->path, strerror(er));
    }
    if (rename(o->tmp, o->path) != 0) {
        int er = errno;
        unlink(o->tmp);
        return err_set(e, "%s: cannot rename into place: %s", o->path, strerror(er));
    }
    file_sync_parent_dir(o->path);
    return 0;
}

void file_output_abort(file_output *o)
{
    if (!o->through)
        unlink(o->tmp);
}

int file_check_writable(const char *path, errbuf *e)
{
    struct stat sb;
    if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode))
        return err_set(e, "%s is a directory", path);
    if (stat(path, &sb) == 0 && !S_ISREG(sb.st_mode)) {
        /* a pipe or a device: opening it could wait for a reader */
        if (access(path, W_OK) != 0)
            return err_set(e, "%s: cannot write there: %s", path, strerror(errno));
        return 0;
    }
    file_output o;
    int fd = file_output_open(&o, path, e);
    if (fd < 0)
        return -1;
    close(fd);
    file_output_abort(&o);
    return 0;
}

int file_write_atomic(const char *path, const void *data, size_t len, errbuf *e)
{
    file_output o;
    int fd = file_output_open(&o, path, e);
    if (fd < 0)
        return -1;
    if (fd_write_all(fd, data, len) != 0) {
        int er = errno;
        close(fd);
        file_output_abort(&o);
        return err_set(e, "%s: write failed: %s", o.path, strerror(er));
    }
    int rc = file_output_commit(&o, fd, e);
    close(fd);      /* after fsync: nothing is left for close to report */
    return rc;
}

int file_replace_atomic(const char *path, const void *data, size_t len, errbuf *e)
{
    struct stat sb;
    if (stat(path, &sb) == 0 && !S_ISREG(sb.st_mode))
        return err_set(e, "%s: is a %s, expected a regular file", path, file_kind(sb.st_mode));
    return file_write_atomic(path, data, len, e);
}

int file_same(const char *a, const char *b)
{
    struct stat sa, sb;
    return stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
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

int file_dangling_link(const char *path, char *target, size_t n)
{
    struct stat st;
    if (lstat(path, &st) != 0 || !S_ISLNK(st.st_mode) || stat(path, &st) == 0 || errno != ENOENT)
        return 0;
    ssize_t k = readlink(path, target, n - 1);
    target[k < 0 ? 0 : k] = 0;
    return 1;
}

static int dir_make(const char *path, mode_t mode, errbuf *e)
{
    struct stat st;
    char target[4096];
    if (stat(path, &st) == 0)
        return S_ISDIR(st.st_mode) ? 0 : err_set(e, "%s: exists and is not a directory", path);
    if (file_dangling_link(path, target, sizeof target))
        return err_set(e, "%s: is a symbolic link to %s, which does not exist: create that "
                       "directory or remove the link", path, target);
    if (mkdir(path, mode) != 0 && errno != EEXIST)
        return err_set(e, "%s: cannot create directory: %s", path, strerror(errno));
    return 0;
}

int dir_ensure(const char *path, errbuf *e)
{
    return dir_make(path, 0755, e);
}

int dir_ensure_private(const char *path, errbuf *e)
{
    return dir_make(path, 0700, e);
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
