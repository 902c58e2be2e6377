/* thread_pool: every run calls each worker once and returns after all have
 * ended, their writes seen by the caller; with runs back to back (the
 * workers spinning), after pauses longer than the spin (the workers asleep,
 * woken by the run) and with one worker slower than the spin (the caller
 * asleep, woken by the last to end); pool_split's parts cover [0, n) once. */
#include <criterion/criterion.h>
#include <string.h>
#include <time.h>

#include "cpu_kernels/thread_pool.h"

enum { MAX_WORKERS = 6, RUNS = 3000 };

typedef struct run_ctx {
    long seen[MAX_WORKERS][16]; /* (a cache line each) runs each worker took */
    int workers;                /* n_workers the run was called with */
    int run, slow;              /* the run's number; its slow worker (-1: none) */
} run_ctx;

static void sleep_ms(int ms)
{
    struct timespec t = {0, ms * 1000000L};
    nanosleep(&t, NULL);
}

static void count(void *arg, int worker, int n_workers)
{
    run_ctx *c = arg;
    if (worker == c->slow)
        sleep_ms(2);
    c->seen[worker][0] += c->run + 1; /* (each worker's own slot: no race) */
    if (worker == 0)
        c->workers = n_workers;
}

Test(thread_pool, every_worker_once_per_run_awake_or_asleep, .timeout = 60)
{
    for (int n = 1; n <= MAX_WORKERS; n++) {
        thread_pool *p;
        errbuf e;
        cr_assert_eq(thread_pool_create(&p, n, &e), 0, "%s", e.msg);
        cr_assert_eq(thread_pool_size(p), n);
        static run_ctx c;
        memset(&c, 0, sizeof c);
        long want = 0;
        for (int r = 0; r < RUNS; r++) {
            c.run = r;
            c.slow = r % 500 == 7 ? r % n : -1; /* the caller waits past its spin */
            if (r % 500 == 250)
                sleep_ms(3); /* the workers wait past theirs */
            thread_pool_run(p, count, &c);
            want += r + 1;
            for (int w = 0; w < n; w++) /* every worker's part is done and seen */
                cr_assert_eq(c.seen[w][0], want, "%d workers, run %d: worker %d took %ld of %ld", n, r, w,
                             c.seen[w][0], want);
            cr_assert_eq(c.workers, n);
        }
        thread_pool_destroy(p);
    }
}

Test(thread_pool, split_covers_each_index_once)
{
    for (int n = 0; n < 300; n += 7)
        for (int align = 1; align <= 64; align *= 4)
            for (int k = 1; k <= 9; k++) {
                int next = 0;
                for (int w = 0; w < k; w++) {
                    int b, en;
                    pool_split(n, align, w, k, &b, &en);
                    cr_assert_eq(b, next, "n %d, align %d, %d parts: part %d starts at %d", n, align, k, w, b);
                    cr_assert(en >= b && (en == n || en % align == 0), "part %d: [%d, %d)", w, b, en);
                    next = en;
                }
                cr_assert_eq(next, n, "n %d, align %d, %d parts end at %d", n, align, k, next);
            }
}
