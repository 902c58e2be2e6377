/* nvme_tier: io_uring / pread-pool reads of store blobs (see nvme_tier.h). */
#include "nvme_tier.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <liburing.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include "core/base/fileutil.h"
#include "core/base/progress.h"

#define ERR_CHECKSUM (-1)
#define ERR_EOF (-2)
#define ERR_RING (-3)
#define REFUSED_SUBMIT_RETRIES 2000  /* 1 ms apart: a ring that takes no read for 2 s is broken */
#define RING_DRAIN_SECONDS 10       /* a read the kernel has not ended by then may never end */
#define REG_PIECE_MAX (1ull << 30)   /* the kernel's limit for one registered buffer */

struct nvme_tier {
    const store *st;
    uint64_t slot_bytes;
    nvme_options opt;
    int n_files;
    int *fd_direct, *fd_buffered;
    int direct;                 /* O_DIRECT accepted */
    int uring;
    int ring_err;               /* errno of a ring that failed: no read starts again */
    struct io_uring ring;
    struct iovec *reg;          /* registered pieces */
    int n_reg;
    nvme_read *backlog_head, *backlog_tail;  /* queued, not started (FIFO) */
    int inflight;               /* started, not completed */
    uint64_t attempt_no, eio_injected, submit_no, wait_no;
    nvme_stats stats;
    /* pread pool */
    pthread_t *threads;
    int n_threads;
    pthread_mutex_t mu;
    pthread_cond_t work_cv, done_cv;
    nvme_read *work_head, *work_tail, *done_head;
    int stop;
};

void nvme_options_default(nvme_options *o)
{
    memset(o, 0, sizeof *o);
    o->mode = IO_AUTO;
    o->verify = 1;
}

#define FAULT_NAMES "eio, eio_max, short, einval, refuse, ring"

int nvme_fault_from_env(nvme_fault *f, errbuf *e)
{
    memset(f, 0, sizeof *f);
    const char *s = getenv("MOETIER_IO_FAULT");
    if (!s || !*s)
        return 0;
    char *copy = strdup(s), *save = NULL;
    if (!copy)
        return err_set(e, "out of memory");
    int rc = 0;
    for (char *tok = strtok_r(copy, ",", &save); tok && !rc; tok = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(tok, '='), *end = NULL;
        long v = eq ? strtol(eq + 1, &end, 10) : -1;
        if (!eq || end == eq + 1 || *end || v < 0 || v > 1000000) {
            rc = err_set(e, "MOETIER_IO_FAULT: '%s' is not name=count (" FAULT_NAMES ")", tok);
            break;
        }
        *eq = 0;
        if (!strcmp(tok, "eio"))
            f->eio_every = (int)v;
        else if (!strcmp(tok, "eio_max"))
            f->eio_max = (int)v;
        else if (!strcmp(tok, "short"))
            f->short_every = (int)v;
        else if (!strcmp(tok, "einval"))
            f->einval_every = (int)v;
        else if (!strcmp(tok, "refuse"))
            f->refuse_every = (int)v;
        else if (!strcmp(tok, "ring"))
            f->ring_fail_at = (int)v;
        else
            rc = err_set(e, "MOETIER_IO_FAULT: unknown fault '%s' (" FAULT_NAMES ")", tok);
    }
    free(copy);
    return rc;
}

static int fd_of(const nvme_tier *t, const nvme_read *r)
{
    return r->direct ? t->fd_direct[r->blob->file] : t->fd_buffered[r->blob->file];
}

/* ---- pread pool: workers run one attempt each and hand the result back ---- */

static void *pool_main(void *arg)
{
    nvme_tier *t = arg;
    pthread_mutex_lock(&t->mu);
    while (!t->stop) {
        nvme_read *r = t->work_head;
        if (!r) {
            pthread_cond_wait(&t->work_cv, &t->mu);
            continue;
        }
        t->work_head = r->next;
        if (!t->work_head)
            t->work_tail = NULL;
        pthread_mutex_unlock(&t->mu);
        ssize_t n = pread(fd_of(t, r), r->dst + r->done, t->slot_bytes - r->done,
                          (off_t)(r->blob->offset + r->done));
        r->last_res = n < 0 ? -(int64_t)errno : (int64_t)n;
        pthread_mutex_lock(&t->mu);
        r->next = t->done_head;
        t->done_head = r;
        pthread_cond_broadcast(&t->done_cv);
    }
    pthread_mutex_unlock(&t->mu);
    return NULL;
}

/* ---- starting attempts ---- */

static void backlog_push(nvme_tier *t, nvme_read *r, int front)
{
    r->next = NULL;
    if (!t->backlog_head) {
        t->backlog_head = t->backlog_tail = r;
    } else if (front) {
        r->next = t->backlog_head;
        t->backlog_head = r;
    } else {
        t->backlog_tail->next = r;
        t->backlog_tail = r;
    }
}

static int reg_index(const nvme_tier *t, const uint8_t *p, uint64_t len)
{
    for (int i = 0; i < t->n_reg; i++) {
        const uint8_t *b = t->reg[i].iov_base;
        if (p >= b && p + len <= b + t->reg[i].iov_len)
            return i;
    }
    return -1;
}

static int depth(const nvme_tier *t)
{
    return t->opt.queue_depth > 0 ? t->opt.queue_depth : 32;
}

/* Hands the ring's unsent reads to the kernel. io_uring_submit can leave some
 * or all of them in the ring (EAGAIN when the kernel is short of memory, EBUSY
 * while completions overflow); they stay there and a later call sends them.
 * Returns 0, or the error that kept some unsent. */
static int send_unsent(nvme_tier *t)
{
    if (io_uring_sq_ready(&t->ring) == 0)
        return 0;
    const nvme_fault *f = &t->opt.fault;
    int rc;
    if (f->refuse_every && ++t->submit_no % (uint64_t)f->refuse_every == 0)
        rc = -EAGAIN;       /* injected: left in the ring, as a refusal leaves them */
    else
        rc = io_uring_submit(&t->ring);
    if (io_uring_sq_ready(&t->ring) > 0)
        t->stats.refused++;
    return rc < 0 ? rc : 0;
}

void nvme_tier_flush(nvme_tier *t)
{
    if (t->ring_err)
        return;
    if (t->uring) {
        while (t->backlog_head && t->inflight < depth(t)) {
            struct io_uring_sqe *sqe = io_uring_get_sqe(&t->ring);
            if (!sqe)
                break;
            nvme_read *r = t->backlog_head;
            t->backlog_head = r->next;
            if (!t->backlog_head)
                t->backlog_tail = NULL;
            uint8_t *dst = r->dst + r->done;
            unsigned len = (unsigned)(t->slot_bytes - r->done);
            uint64_t off = r->blob->offset + r->done;
            int bi = reg_index(t, dst, len);
            if (bi >= 0)
                io_uring_prep_read_fixed(sqe, fd_of(t, r), dst, len, off, bi);
            else
                io_uring_prep_read(sqe, fd_of(t, r), dst, len, off);
            io_uring_sqe_set_data(sqe, r);
            t->inflight++;
        }
        send_unsent(t);
        return;
    }
    if (!t->backlog_head)
        return;
    pthread_mutex_lock(&t->mu);
    while (t->backlog_head) {
        nvme_read *r = t->backlog_head;
        t->backlog_head = r->next;
        r->next = NULL;
        if (t->work_tail)
            t->work_tail->next = r;
        else
            t->work_head = r;
        t->work_tail = r;
        t->inflight++;
    }
    t->backlog_tail = NULL;
    pthread_cond_broadcast(&t->work_cv);
    pthread_mutex_unlock(&t->mu);
}

void nvme_tier_submit(nvme_tier *t, nvme_read *r)
{
    r->done = 0;
    r->attempts = 0;
    r->direct = t->direct;
    if (t->ring_err) {
        r->state = NVME_FAILED;
        r->err = ERR_RING;
        return;
    }
    r->state = NVME_PENDING;
    r->err = 0;
    t->stats.reads++;
    backlog_push(t, r, 0);
}

/* ---- finishing attempts ---- */

/* With eio=N > 1 the errors are transient: a read's last attempt is never
 * failed, whatever the completion order (with a global count alone, N reads in
 * flight completing round-robin could fail one of them every time). */
static int64_t inject(nvme_tier *t, const nvme_read *r, int64_t res)
{
    const nvme_fault *f = &t->opt.fault;
    uint64_t k = ++t->attempt_no;
    if (f->einval_every && r->direct && k % (uint64_t)f->einval_every == 0)
        return -EINVAL;
    if (f->eio_every && k % (uint64_t)f->eio_every == 0 &&
        (f->eio_every == 1 || r->attempts < NVME_MAX_RETRIES) &&
        (!f->eio_max || t->eio_injected < (uint64_t)f->eio_max)) {
        t->eio_injected++;
        return -EIO;
    }
    if (f->short_every && k % (uint64_t)f->short_every == 0 && res > (int64_t)STORE_ALIGN)
        return res / 2 / STORE_ALIGN * STORE_ALIGN;
    return res;
}

/* One attempt of r ended with res (bytes, or -errno): continue, retry or end it. */
static void finish_attempt(nvme_tier *t, nvme_read *r, int64_t res)
{
    res = inject(t, r, res);
    if (res == -EINTR || res == -EAGAIN) {
        backlog_push(t, r, 1);
        return;
    }
    if (res == -EINVAL && r->direct) {
        /* Some devices and file systems open with O_DIRECT and then refuse the
         * reads (logical blocks over 4 KiB, some FUSE mounts): this read and
         * every later one go through the page cache, and this one does not
         * count as a failed attempt. */
        r->direct = 0;
        if (t->direct && t->opt.log)
            fprintf(t->opt.log, "moetier: %s refuses O_DIRECT reads (%s): reading the store "
                    "through the page cache\n", t->st->file_paths[r->blob->file], strerror(EINVAL));
        t->direct = 0;
        backlog_push(t, r, 1);
        return;
    }
    if (res < 0) {
        r->err = (int)-res;
        if (++r->attempts > NVME_MAX_RETRIES) {
            r->state = NVME_FAILED;
            return;
        }
        t->stats.retries++;
        backlog_push(t, r, 1);
        return;
    }
    if (res == 0) {
        r->err = ERR_EOF;
        r->state = NVME_FAILED;
        return;
    }
    r->done += (uint64_t)res;
    t->stats.bytes += (uint64_t)res;
    if (r->done < t->slot_bytes) {
        t->stats.short_reads++;
        /* O_DIRECT needs aligned offsets; an odd remainder continues buffered */
        if (r->done % STORE_ALIGN)
            r->direct = 0;
        backlog_push(t, r, 1);
        return;
    }
    if (t->opt.verify && XXH3_64bits(r->dst, r->blob->bytes) != r->blob->xxh3) {
        r->err = ERR_CHECKSUM;
        r->state = NVME_FAILED;
        return;
    }
    r->state = NVME_DONE;
}

/* Waits for a completion. While every read in flight is still in the ring
 * (none reached the kernel, so none would complete) it sends them again, 1 ms
 * apart, and gives up after REFUSED_SUBMIT_RETRIES. Returns 0 or -errno. */
static int ring_wait(nvme_tier *t, struct io_uring_cqe **cqe)
{
    if (t->opt.fault.ring_fail_at && ++t->wait_no == (uint64_t)t->opt.fault.ring_fail_at)
        return -EIO;        /* injected: the reads the kernel took stay in flight */
    for (int tries = 0;; tries++) {
        int rc = send_unsent(t);
        if ((unsigned)t->inflight > io_uring_sq_ready(&t->ring)) {
            do
                rc = io_uring_wait_cqe(&t->ring, cqe);
            while (rc == -EINTR);
            if (rc != -EAGAIN && rc != -EBUSY)
                return rc;
        }
        if (tries == REFUSED_SUBMIT_RETRIES)
            return rc < 0 ? rc : -EAGAIN;
        nanosleep(&(struct timespec){.tv_nsec = 1000000}, NULL);
    }
}

/* The ring failed: the kernel may still write into the buffers of the reads it
 * holds, so no read starts again (a freed slot could be refilled under it).
 * The queued reads fail now, those in the ring when they are waited for. */
static void ring_failed(nvme_tier *t, int rc)
{
    t->ring_err = -rc;
    for (nvme_read *r = t->backlog_head; r; r = r->next) {
        r->state = NVME_FAILED;
        r->err = ERR_RING;
    }
    t->backlog_head = t->backlog_tail = NULL;
}

/* Waits for one attempt to end and handles it; returns 0, or -1 when nothing is
 * in flight or the ring failed. */
static int complete_one(nvme_tier *t)
{
    nvme_tier_flush(t);
    if (t->inflight == 0 || t->ring_err)
        return -1;
    if (t->uring) {
        struct io_uring_cqe *cqe;
        int rc = ring_wait(t, &cqe);
        if (rc < 0) {
            ring_failed(t, rc);
            return -1;
        }
        nvme_read *r = io_uring_cqe_get_data(cqe);
        int64_t res = cqe->res;
        io_uring_cqe_seen(&t->ring, cqe);
        t->inflight--;
        finish_attempt(t, r, res);
        return 0;
    }
    pthread_mutex_lock(&t->mu);
    while (!t->done_head)
        pthread_cond_wait(&t->done_cv, &t->mu);
    nvme_read *r = t->done_head;
    t->done_head = r->next;
    pthread_mutex_unlock(&t->mu);
    t->inflight--;
    finish_attempt(t, r, r->last_res);
    return 0;
}

int nvme_tier_poll(nvme_tier *t)
{
    for (;;) {
        nvme_read *r = NULL;
        int64_t res = 0;
        if (t->inflight == 0 || t->ring_err)
            break;
        if (t->uring) {
            struct io_uring_cqe *cqe;
            if (io_uring_peek_cqe(&t->ring, &cqe) != 0)
                break;
            r = io_uring_cqe_get_data(cqe);
            res = cqe->res;
            io_uring_cqe_seen(&t->ring, cqe);
        } else {
            pthread_mutex_lock(&t->mu);
            r = t->done_head;
            if (r)
                t->done_head = r->next;
            pthread_mutex_unlock(&t->mu);
            if (!r)
                break;
            res = r->last_res;
        }
        t->inflight--;
        finish_attempt(t, r, res);
    }
    nvme_tier_flush(t);
    return t->inflight + (t->backlog_head != NULL);
}

int nvme_read_error(const nvme_tier *t, const nvme_read *r, errbuf *e)
{
    const store_blob *b = r->blob;
    const char *path = t->st->file_paths[b->file];
    if (r->err == ERR_CHECKSUM)
        return err_set(e, "checksum mismatch for layer %u expert %u in %s at offset %" PRIu64
                       " (%" PRIu64 " bytes): the store is damaged; moetier convert --check lists "
                       "every bad blob", b->layer, b->expert, path, b->offset, b->bytes);
    if (r->err == ERR_RING)
        return err_set(e, "cannot read layer %u expert %u from %s: the io_uring ring failed (%s), "
                       "so no read starts again; run with --io pread", b->layer, b->expert, path,
                       strerror(t->ring_err));
    if (r->err == ERR_EOF)
        return err_set(e, "%s ends inside layer %u expert %u (offset %" PRIu64 ", %" PRIu64
                       " bytes): the store file is truncated", path, b->layer, b->expert,
                       b->offset, t->slot_bytes);
    return err_set(e, "I/O error reading layer %u expert %u from %s at offset %" PRIu64
                   " (%d attempts): %s", b->layer, b->expert, path, b->offset, r->attempts,
                   strerror(r->err));
}

int nvme_tier_ring_failed(const nvme_tier *t)
{
    return t->ring_err != 0;
}

int nvme_tier_wait(nvme_tier *t, nvme_read *r, errbuf *e)
{
    while (r->state == NVME_PENDING)
        if (complete_one(t) != 0) {
            r->state = NVME_FAILED;
            r->err = t->ring_err ? ERR_RING : EIO;
            break;
        }
    if (r->state == NVME_DONE)
        return 0;
    return nvme_read_error(t, r, e);
}

/* ---- set-up ---- */

int nvme_tier_open(nvme_tier **out, const store *s, const nvme_options *o, errbuf *e)
{
    nvme_tier *t = calloc(1, sizeof *t);
    if (!t)
        return err_set(e, "out of memory");
    t->st = s;
    t->slot_bytes = s->layout.slot_bytes;
    t->opt = *o;
    t->n_files = s->n_files;
    t->fd_direct = malloc((size_t)s->n_files * sizeof(int));
    t->fd_buffered = malloc((size_t)s->n_files * sizeof(int));
    pthread_mutex_init(&t->mu, NULL);
    pthread_cond_init(&t->work_cv, NULL);
    pthread_cond_init(&t->done_cv, NULL);
    if (!t->fd_direct || !t->fd_buffered) {
        free(t->fd_direct);
        free(t->fd_buffered);
        free(t);
        return err_set(e, "out of memory");
    }
    for (int f = 0; f < s->n_files; f++)
        t->fd_direct[f] = t->fd_buffered[f] = -1;
    t->direct = 1;
    fd_limit_make_room(2 * s->n_files);    /* each file is open twice */
    for (int f = 0; f < s->n_files; f++) {
        int err = 0;
        t->fd_buffered[f] = open(s->file_paths[f], O_RDONLY | O_CLOEXEC);
        if (t->fd_buffered[f] < 0)
            err = errno;
        else if (t->direct &&
                 (t->fd_direct[f] = open(s->file_paths[f], O_RDONLY | O_CLOEXEC | O_DIRECT)) < 0)
            err = errno;
        if (t->fd_buffered[f] < 0 || err == EMFILE) {
            err_set(e, "expert store file %s: %s%s", s->file_paths[f], strerror(err),
                    err == EMFILE ? " (the store's files are each open twice: raise `ulimit -n`, "
                                    "or convert with a larger --file-gb)" : "");
            nvme_tier_close(t);
            return -1;
        }
        if (err) {
            if (o->log)
                fprintf(o->log, "moetier: %s refuses O_DIRECT (%s): reading the store through "
                        "the page cache\n", s->file_paths[f], strerror(err));
            t->direct = 0;
        }
    }
    if (o->mode != IO_PREAD) {
        int rc = io_uring_queue_init((unsigned)depth(t), &t->ring, 0);
        if (rc == 0) {
            t->uring = 1;
        } else if (o->mode == IO_URING) {
            err_set(e, "io_uring is unavailable here (%s); use --io pread", strerror(-rc));
            nvme_tier_close(t);
            return -1;
        } else if (o->log) {
            fprintf(o->log, "moetier: io_uring is unavailable (%s): reading the store with a "
                    "pread thread pool\n", strerror(-rc));
        }
    }
    if (!t->uring) {
        int n = o->threads > 0 ? o->threads : 4;
        t->threads = calloc((size_t)n, sizeof *t->threads);
        if (!t->threads) {
            nvme_tier_close(t);
            return err_set(e, "out of memory");
        }
        for (int i = 0; i < n; i++) {
            int rc = pthread_create(&t->threads[i], NULL, pool_main, t);
            if (rc != 0) {
                nvme_tier_close(t);
                return err_set(e, "cannot start the pread threads: %s", strerror(rc));
            }
            t->n_threads++;
        }
    }
    *out = t;
    return 0;
}

void nvme_tier_register(nvme_tier *t, void *base, uint64_t bytes, uint64_t unit)
{
    if (!t->uring || t->n_reg || !bytes || unit > REG_PIECE_MAX)
        return;
    uint64_t piece = REG_PIECE_MAX / unit * unit;
    int n = (int)((bytes + piece - 1) / piece);
    struct iovec *v = calloc((size_t)n, sizeof *v);
    if (!v)
        return;
    for (int i = 0; i < n; i++) {
        uint64_t off = (uint64_t)i * piece;
        v[i].iov_base = (uint8_t *)base + off;
        v[i].iov_len = bytes - off < piece ? bytes - off : piece;
    }
    if (io_uring_register_buffers(&t->ring, v, (unsigned)n) == 0) {
        t->reg = v;
        t->n_reg = n;
    } else {
        free(v);    /* plain reads still work, only a little slower */
    }
}

/* Reads the kernel took (those left unsent in the ring never reach it). */
static int reads_in_the_kernel(nvme_tier *t)
{
    return t->inflight - (int)io_uring_sq_ready(&t->ring);
}

/* After the ring failed, the reads the kernel took may still write their
 * buffers: waits for their completions, RING_DRAIN_SECONDS at most. Returns
 * how many are still out. */
static int drain_failed_ring(nvme_tier *t)
{
    double give_up = now_seconds() + RING_DRAIN_SECONDS;
    while (reads_in_the_kernel(t) > 0) {
        struct io_uring_cqe *cqe;
        struct __kernel_timespec tick = {.tv_nsec = 100000000};
        int rc = io_uring_wait_cqe_timeout(&t->ring, &cqe, &tick);
        if (rc == 0) {
            io_uring_cqe_seen(&t->ring, cqe);
            t->inflight--;
        } else if ((rc != -ETIME && rc != -EINTR) || now_seconds() > give_up) {
            break;
        }
    }
    return reads_in_the_kernel(t);
}

/* Buffers that reads still in the kernel may write: never freed, and kept
 * reachable here so that leak checkers stay quiet. */
static void *left_to_the_kernel[16];

int nvme_tier_close(nvme_tier *t)
{
    if (!t)
        return 0;
    while (t->inflight > 0 && complete_one(t) == 0) {
    }
    int out = t->uring && t->ring_err ? drain_failed_ring(t) : 0;
    if (out) {
        /* the ring stays open too: unregistering its buffers or leaving it
         * would wait for those reads, or not hold the pages they write */
        if (t->opt.log)
            fprintf(t->opt.log, "moetier: %d reads were still in the kernel after the io_uring "
                    "ring failed: their buffers are left allocated\n", out);
        t->uring = 0;
    }
    if (t->n_threads) {
        pthread_mutex_lock(&t->mu);
        t->stop = 1;
        pthread_cond_broadcast(&t->work_cv);
        pthread_mutex_unlock(&t->mu);
        for (int i = 0; i < t->n_threads; i++)
            pthread_join(t->threads[i], NULL);
    }
    free(t->threads);
    if (t->uring) {
        if (t->n_reg)
            io_uring_unregister_buffers(&t->ring);
        io_uring_queue_exit(&t->ring);
    }
    free(t->reg);
    for (int f = 0; f < t->n_files; f++) {
        if (t->fd_direct[f] >= 0)
            close(t->fd_direct[f]);
        if (t->fd_buffered[f] >= 0)
            close(t->fd_buffered[f]);
    }
    free(t->fd_direct);
    free(t->fd_buffered);
    pthread_mutex_destroy(&t->mu);
    pthread_cond_destroy(&t->work_cv);
    pthread_cond_destroy(&t->done_cv);
    free(t);
    return out ? -1 : 0;
}

void nvme_tier_close_and_free(nvme_tier *t, void *buf)
{
    if (nvme_tier_close(t) == 0) {
        free(buf);
        return;
    }
    for (int i = 0; i < 16; i++)
        if (!left_to_the_kernel[i]) {
            left_to_the_kernel[i] = buf;
            return;
        }
}

int nvme_tier_uses_uring(const nvme_tier *t)
{
    return t->uring;
}

int nvme_tier_uses_direct(const nvme_tier *t)
{
    return t->direct;
}

const nvme_stats *nvme_tier_stats(const nvme_tier *t)
{
    return &t->stats;
}
