/* ffn_cpu: see ffn_cpu.h. */
#include "ffn_cpu.h"

#include "ops_ref.h"

/* Decode-sized FFNs (a few tokens each: the experts of one layer) go one per
 * worker, each streaming whole matrices: splitting every matrix's rows over the
 * threads synchronised them 24 times per layer of 8 experts and gave each a
 * shorter stream (2 threads, K2 INT4 experts: 28 -> 34-36 GB/s). A row is
 * computed by the same kernel either way, so the results are the same bits.
 * Whole rounds of one job per worker run that way, the rest with rows split.
 * Workers claim jobs one at a time, those whose weights are on their own NUMA
 * node first (ffn_cpu_next_job), so with the DRAM tier split over the nodes
 * each node's threads stream local memory and take remote work only when their
 * node has none left. */
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

int ffn_cpu_next_job(const ffn_job *jobs, int n, atomic_uchar *claimed, int node)
{
    for (int pass = 0; pass < 2; pass++)
        for (int i = 0; i < n; i++)
            if ((pass || jobs[i].node == node) && !atomic_load_explicit(&claimed[i],
                                                                        memory_order_relaxed) &&
                !atomic_exchange(&claimed[i], 1))
                return i;
    return -1;
}

typedef struct spread_ctx {
    kernel_path path;
    const ffn_job *jobs;
    int n;
    atomic_uchar *claimed;
    const thread_pool *pool;
    float *scratch;
    size_t part;
} spread_ctx;

static void spread_worker(void *ctx, int worker, int n_workers)
{
    (void)n_workers;
    spread_ctx *c = ctx;
    int node = thread_pool_worker_node(c->pool, worker);
    for (int i; (i = ffn_cpu_next_job(c->jobs, c->n, c->claimed, node)) >= 0;)
        run_one(c->path, NULL, &c->jobs[i], c->scratch + (size_t)worker * c->part);
}

/* claim flags for the jobs of one batch; a layer has at most a few hundred */
#define CLAIM_MAX 1024

void ffn_cpu_run(kernel_path path, thread_pool *pool, const ffn_job *jobs, int n, float *scratch)
{
    int spread = spread_count(jobs, n, pool ? thread_pool_size(pool) : 1);
    for (int done = 0; spread && done < spread;) {
        int m = spread - done < CLAIM_MAX ? spread - done : CLAIM_MAX;
        atomic_uchar claimed[CLAIM_MAX];
        for (int i = 0; i < m; i++)
            atomic_init(&claimed[i], 0);
        spread_ctx c = {path, jobs + done, m, claimed, pool, scratch, worker_part(jobs, spread)};
        thread_pool_run(pool, spread_worker, &c);
        done += m;
    }
    for (int i = spread; i < n; i++)
        run_one(path, pool, &jobs[i], scratch);
}
