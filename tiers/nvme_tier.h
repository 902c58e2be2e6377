/* nvme_tier: reads whole expert blobs from the store files.
 *
 * io_uring (liburing) with O_DIRECT into the caller's 4 KiB-aligned buffers,
 * registered with the ring when the kernel allows; many reads in flight, submitted
 * in batches (all the experts one layer needs) and completed while the caller
 * computes. Where io_uring is unavailable (old kernel, seccomp) a pread thread
 * pool does the same job; where O_DIRECT is refused, at open (tmpfs) or by the
 * reads (EINVAL), reads are buffered. Each is said once on the log.
 *
 * A read is whole or it fails: short reads are continued, EIO and other errors
 * are retried NVME_MAX_RETRIES times, a payload whose XXH3 differs from the index
 * fails with a "checksum mismatch" naming the expert, file and offset. A failed
 * read never hands out its bytes. Reads the kernel refuses to take are sent
 * again for 2 s; after that, or when the ring itself fails, every read fails
 * with an error that says so (the kernel may still hold buffers). */
#ifndef MOETIER_NVME_TIER_H
#define MOETIER_NVME_TIER_H

#include <stdint.h>
#include <stdio.h>

#include "core/base/errbuf.h"
#include "tiers/store.h"

#define NVME_MAX_RETRIES 3

typedef enum io_mode { IO_AUTO, IO_URING, IO_PREAD } io_mode;

/* Injected faults, for the fault-injection tests (MOETIER_IO_FAULT, see
 * nvme_fault_from_env): every Nth read attempt fails with EIO (at most eio_max
 * times when eio_max > 0; with N > 1 never a read's last attempt, so the error
 * is transient, while N = 1 is a dead disk) or returns only part of what was
 * asked; every Nth attempt through O_DIRECT fails with EINVAL; every Nth
 * io_uring submission is refused (EAGAIN), leaving the reads in the ring; the
 * Nth wait for an io_uring completion fails (ring=N), as a broken ring does,
 * with the reads the kernel took still in flight. */
typedef struct nvme_fault {
    int eio_every, eio_max;
    int short_every;
    int einval_every;
    int refuse_every;
    int ring_fail_at;
} nvme_fault;

typedef enum { NVME_IDLE, NVME_PENDING, NVME_DONE, NVME_FAILED } nvme_state;

typedef struct nvme_read {
    /* set by the caller */
    const store_blob *blob;     /* what to read: file, offset, payload size, checksum */
    uint8_t *dst;               /* slot_bytes, STORE_ALIGN-aligned */
    void *user;
    /* owned by the tier */
    nvme_state state;
    uint64_t done;              /* bytes read so far */
    int attempts;               /* failed attempts */
    int err;                    /* errno of the last failure; -1: checksum mismatch */
    int direct;                 /* continuing on the O_DIRECT descriptor */
    int64_t last_res;           /* result of the last attempt (pread pool) */
    struct nvme_read *next;     /* queue link */
} nvme_read;

typedef struct nvme_stats {
    uint64_t reads, bytes, retries, short_reads;
    uint64_t refused;           /* io_uring submissions that left reads in the ring */
} nvme_stats;

typedef struct nvme_tier nvme_tier;

typedef struct nvme_options {
    io_mode mode;
    int queue_depth;            /* reads in flight; 0: 32 */
    int threads;                /* pread pool size; 0: 4 */
    int verify;                 /* check XXH3 of every payload (default on) */
    nvme_fault fault;
    FILE *log;                  /* notices (fallbacks); NULL: silent */
} nvme_options;

void nvme_options_default(nvme_options *o);
/* Parses MOETIER_IO_FAULT ("eio=N,eio_max=M,short=K,einval=I,refuse=R,ring=W") into
 * o->fault; returns -1 with a message on a malformed value. */
int nvme_fault_from_env(nvme_fault *f, errbuf *e);

int nvme_tier_open(nvme_tier **out, const store *s, const nvme_options *o, errbuf *e);
/* Ends every read and frees the tier. Returns -1 when the io_uring ring failed
 * and reads the kernel took had not ended after a wait of seconds: the buffers
 * they write must then stay allocated (the caller leaves them). */
int nvme_tier_close(nvme_tier *t);
/* nvme_tier_close, then free(buf) unless it must stay allocated. */
void nvme_tier_close_and_free(nvme_tier *t, void *buf);
/* Registers [base, base + bytes) with the ring for fixed-buffer reads, in pieces
 * of whole `unit`s (a unit never straddles two pieces); best effort. */
void nvme_tier_register(nvme_tier *t, void *base, uint64_t bytes, uint64_t unit);
/* Queues r (state becomes PENDING); nvme_tier_flush starts everything queued. */
void nvme_tier_submit(nvme_tier *t, nvme_read *r);
void nvme_tier_flush(nvme_tier *t);
/* Handles completions until r is DONE or FAILED; returns 0 when DONE, else -1
 * with the reason. */
int nvme_tier_wait(nvme_tier *t, nvme_read *r, errbuf *e);
/* Handles the completions that have already arrived, without waiting; returns
 * the number of reads still in flight or queued. */
int nvme_tier_poll(nvme_tier *t);
int nvme_tier_uses_uring(const nvme_tier *t);
int nvme_tier_uses_direct(const nvme_tier *t);
const nvme_stats *nvme_tier_stats(const nvme_tier *t);
/* The failure reason of a FAILED read. */
int nvme_read_error(const nvme_tier *t, const nvme_read *r, errbuf *e);
/* Whether the io_uring ring failed: no read starts again (reads still in the
 * kernel may yet write their buffers). */
int nvme_tier_ring_failed(const nvme_tier *t);

#endif
