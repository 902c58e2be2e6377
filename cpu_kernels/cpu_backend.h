/* cpu_backend: the backend interface implemented on the CPU in float32.
 *
 * Linear layers (dense, attention projections, experts, lm_head) run the
 * fastest kernel path this CPU has (linear_kernels.h), split by rows over a
 * pool of pinned threads; the other operations run the scalar reference.
 * Optionally batch-invariant (cpu_options). */
#ifndef MOETIER_CPU_BACKEND_H
#define MOETIER_CPU_BACKEND_H

#include "core/base/errbuf.h"
#include "core/engine/backend.h"

#include "cpu_kernels/linear_kernels.h"

typedef struct cpu_options {
    int threads;                /* <= 0: one per core */
    kernel_path path;           /* used when path_set; else kernel_path_default() */
    int path_set;
    /* 1: a token's results have the same bits whatever the step it is in (a
     * prompt in one prefill or in chunks, a prompt's last token or the same
     * token decoded): products and FFNs of more tokens than the row kernels
     * take go in parts they take (linear_forward_invariant), and attention
     * always takes the absorbed form (whose products are each query's own);
     * prefill runs slower */
    int batch_invariant;
} cpu_options;

/* Defaults: every core, the fastest kernel path (or MOETIER_KERNELS). */
int cpu_backend_create(backend *b, errbuf *e);
/* Fails when the requested kernel path is not supported by this CPU. */
int cpu_backend_create_opts(backend *b, const cpu_options *o, errbuf *e);
kernel_path cpu_backend_path(const backend *b);
int cpu_backend_threads(const backend *b);
/* Whether it runs batch-invariant (cpu_options.batch_invariant). */
int cpu_backend_invariant(const backend *b);
/* A new pool of `threads` (<= 0: one per core) for the calls from now on (none
 * may be running); the old pool stays on failure. */
int cpu_backend_set_threads(backend *b, int threads, errbuf *e);

#endif
