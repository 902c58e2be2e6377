/* bench_thread_pool: the cost of one fork/join of the CPU kernels' thread
 * pool (thread_pool_run), which a forward pass pays thousands of times a
 * token (each kernel of each layer is a run), with every worker's part empty
 * and with a small part (a few hundred ns of arithmetic each). The yardstick,
 * measured in the same run: a round trip of one flag between two threads
 * spinning on it (the least a run can cost: the workers must hear of it and
 * the caller of their end). ratio = run / round trip. One JSON line per
 * thread count (argument: the counts, default 2 and the cores). */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/base/progress.h"
#include "cpu_kernels/thread_pool.h"

enum { RUNS = 200000 };

static _Atomic int ball;

static void *pong(void *arg)
{
    long n = (long)arg;
    for (long i = 0; i < n; i++) {
        while (atomic_load_explicit(&ball, memory_order_acquire) != 1)
            ;
        atomic_store_explicit(&ball, 0, memory_order_release);
    }
    return NULL;
}

/* ns of one round trip of a flag between two spinning threads */
static double round_trip_ns(void)
{
    pthread_t t;
    atomic_store(&ball, 0);
    if (pthread_create(&t, NULL, pong, (void *)(long)RUNS))
        return 0;
    double t0 = now_seconds();
    for (int i = 0; i < RUNS; i++) {
        atomic_store_explicit(&ball, 1, memory_order_release);
        while (atomic_load_explicit(&ball, memory_order_acquire) != 0)
            ;
    }
    double s = now_seconds() - t0;
    pthread_join(t, NULL);
    return s * 1e9 / RUNS;
}

static void empty(void *ctx, int worker, int n_workers)
{
    (void)ctx;
    (void)worker;
    (void)n_workers;
}

static void small(void *ctx, int worker, int n_workers)
{
    volatile float *sink = ctx;
    float x = (float)worker;
    for (int i = 0; i < 200; i++)
        x = x * 0.999f + 1.0f;
    sink[worker * 16] = x + (float)n_workers;
}

int main(int argc, char **argv)
{
    int counts[16], n_counts = 0;
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    if (argc > 1) {
        for (char *s = strtok(argv[1], ","); s && n_counts < 16; s = strtok(NULL, ","))
            counts[n_counts++] = atoi(s);
    } else {
        counts[n_counts++] = 2;
        if (cores > 2)
            counts[n_counts++] = (int)cores;
    }
    double trip = round_trip_ns();
    static float sink[64 * 16];
    for (int c = 0; c < n_counts; c++) {
        thread_pool *p;
        errbuf e;
        if (counts[c] < 1 || counts[c] > 64 || thread_pool_create(&p, counts[c], &e)) {
            fprintf(stderr, "bench_thread_pool: %d threads: %s\n", counts[c], counts[c] < 1 || counts[c] > 64 ? "1 to 64" : e.msg);
            return 2;
        }
        double ns[2];
        for (int k = 0; k < 2; k++) {
            pool_fn fn = k ? small : empty;
            for (int i = 0; i < RUNS / 10; i++) /* (the workers awake and spinning) */
                thread_pool_run(p, fn, sink);
            double t0 = now_seconds();
            for (int i = 0; i < RUNS; i++)
                thread_pool_run(p, fn, sink);
            ns[k] = (now_seconds() - t0) * 1e9 / RUNS;
        }
        printf("{\"bench\": \"thread_pool\", \"threads\": %d, \"pinned\": %d, \"run_ns\": %.0f, "
               "\"run_small_ns\": %.0f, \"round_trip_ns\": %.0f, \"ratio\": %.2f}\n",
               counts[c], thread_pool_pinned(p), ns[0], ns[1], trip, ns[0] / trip);
        thread_pool_destroy(p);
    }
    return 0;
}
