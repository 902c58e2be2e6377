/* ffn_cpu: FFNs, out = down(silu(gate x) * up x), on the CPU kernels: one, or
 * a batch (the routed experts of a layer) spread over the threads. */
#ifndef MOETIER_FFN_CPU_H
#define MOETIER_FFN_CPU_H
#include <stdatomic.h>

#include "core/engine/backend.h"
#include "linear_kernels.h"
#include "thread_pool.h"

/* floats of scratch ffn_cpu_run needs for these jobs with n_threads threads */
size_t ffn_cpu_scratch(const ffn_job *jobs, int n, int n_threads);
/* Runs jobs[0..n); each job's out is the same bits however they are spread. */
void ffn_cpu_run(kernel_path path, thread_pool *pool, const ffn_job *jobs, int n, float *scratch);
/* The job a worker on NUMA node `node` takes next, claiming it: the first
 * unclaimed one on its node, else the first unclaimed one; -1 when none is
 * left. */
int ffn_cpu_next_job(const ffn_job *jobs, int n, atomic_uchar *claimed, int node);

#endif
