/* ffn_cpu: see ffn_cpu.h. */
#include "ffn_cpu.h"

#include "ops_ref.h"

/* Decode-sized FFNs (a few tokens each: the experts of one layer) go one per
 * worker, each streaming whole matrices: splitting every matrix's rows over the
 * threads synchronised them 24 times per layer of 8 experts and gave each a
 * shorter stream (2 threads, K2 INT4 experts: 28 -> 34-36 GB/s). A row is
 * computed by the same kernel either way, so the results are the same bits.
 * Whole rounds of one job per worker run that way, the rest with rows split. */
#define SPREAD_MAX_T 4

/* floats one FFN needs with nt threads splitting its rows */
static size_t one_scratch(const ffn_job *j, int nt)
{
    size_t k1 = linear_forward_scratch(j->gate, j->T, nt),
           k2 = linear_forward_scratch(j->up, j->T, nt),
           k3 = linear_forward_scratch(j->down, j->T, nt);
    size_t k = k1 > k2 ? k1 : k2;
    return 2 * (size_t)j->T * (size_t)j->gate->rows + (k > k3 ? k : k3);
}

/* one FFN, its rows split over pool (NULL: on the calling thread) */
static void run_one(kernel_path path, thread_pool *pool, const ffn_job *j, float *scratch)
{
    size_t n = (size_t)j->T * (size_t)j->gate->rows;
    float *g = scratch, *u = g + n, *lin = u + n;
    linear_forward(path, pool, j->gate, j->x, j->T, g, lin);
    linear_forward(path, pool, j->up, j->x, j->T, u, lin);
    silu_mul_ref(g, u, n, g);
    linear_forward(path, pool, j->down, g, j->T, j->out, lin);
}

/* how many of the jobs go one per worker */
static int spread_count(const ffn_job *jobs, int n, int nt)
{
    if (nt < 2)
        return 0;
    for (int i = 0; i < n; i++)
        if (jobs[i].T > SPREAD_MAX_T)
            return 0;
    return n / nt * nt;
}

/* floats of each worker's part when jobs go one per worker, on whole lines */
static size_t worker_part(const ffn_job *jobs, int n)
{
    size_t part = 0;
    for (int i = 0; i < n; i++) {
        size_t k = one_scratch(&jobs[i], 1);
        part = k > part ? k : part;
    }
    return (part + 15) / 16 * 16;
}

size_t ffn_cpu_scratch(const ffn_job *jobs, int n, int n_threads)
{
    int spread = spread_count(jobs, n, n_threads);
    size_t need = spread ? worker_part(jobs, spread) * (size_t)n_threads : 0;
    for (int i = spread; i < n; i++) {
        size_t k = one_scratch(&jobs[i], n_threads);
        need = k > need ? k : need;
    }
    return need;
}

typedef struct spread_ctx {
    kernel_path path;
    const ffn_job *jobs;
    int n;
    float *scratch;
    size_t part;
} spread_ctx;

static void spread_worker(void *ctx, int worker, int n_workers)
{
    spread_ctx *c = ctx;
    for (int i = worker; i < c->n; i += n_workers)
        run_one(c->path, NULL, &c->jobs[i], c->scratch + (size_t)worker * c->part);
}

void ffn_cpu_run(kernel_path path, thread_pool *pool, const ffn_job *jobs, int n, float *scratch)
{
    int spread = spread_count(jobs, n, pool ? thread_pool_size(pool) : 1);
    if (spread) {
        spread_ctx c = {path, jobs, spread, scratch, worker_part(jobs, spread)};
        thread_pool_run(pool, spread_worker, &c);
    }
    for (int i = spread; i < n; i++)
        run_one(path, pool, &jobs[i], scratch);
}
