/* thread_pool: persistent workers that run one function on every thread at once.
 *
 * The calling thread is worker 0 and the pool adds n - 1 workers, each pinned to
 * its own core with hwloc when the machine allows (otherwise left to the
 * scheduler), the NUMA nodes taken in turn (workers 0, 1, 2, 3 on nodes A, B, A,
 * B of a two-node machine; worker 0 is only counted on its node, not bound). thread_pool_run(fn, ctx) calls fn(ctx, i, n) on every worker i and
 * returns when all have finished, so a kernel splits its rows by i. Workers
 * (and the caller, waiting for them) spin 0.2 ms before sleeping, because a
 * forward pass issues thousands of short runs back to back; a run takes the
 * mutex only when a thread sleeps. */
#ifndef MOETIER_THREAD_POOL_H
#define MOETIER_THREAD_POOL_H

#include "core/base/errbuf.h"

typedef struct thread_pool thread_pool;
typedef void (*pool_fn)(void *ctx, int worker, int n_workers);

/* n_threads <= 0: one per core of the machine. */
int thread_pool_create(thread_pool **out, int n_threads, errbuf *e);
void thread_pool_destroy(thread_pool *p);
int thread_pool_size(const thread_pool *p);
/* Whether workers are pinned to cores (for the run banner). */
int thread_pool_pinned(const thread_pool *p);
/* The OS number of worker's NUMA node (-1: unknown), and how many distinct
 * nodes the workers are on (1 without a topology). */
int thread_pool_worker_node(const thread_pool *p, int worker);
int thread_pool_nodes(const thread_pool *p);
void thread_pool_run(thread_pool *p, pool_fn fn, void *ctx);
/* Splits [0, n) into n_workers nearly equal parts, each a multiple of `align`
 * (except the last); sets [*begin, *end) of part i. */
void pool_split(int n, int align, int worker, int n_workers, int *begin, int *end);

#endif
