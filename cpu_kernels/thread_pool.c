/* thread_pool: generation-counted fork/join over persistent workers (see thread_pool.h). */
#include "thread_pool.h"

#include <errno.h>
#include <hwloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* How long a thread waiting for a run (or for its end) spins before it
 * sleeps: a forward pass's runs follow each other within microseconds, and a
 * sleeping thread costs the next run a wake (several µs). */
#define SPIN_NS 200000

/* a spinning thread's hint to the core (x86's PAUSE: the sibling hyperthread
 * keeps the core's resources, and leaving the loop costs no misprediction
 * storm) */
#if defined(__x86_64__) || defined(__i386__)
#define SPIN_PAUSE() __builtin_ia32_pause()
#else
#define SPIN_PAUSE() ((void)0)
#endif

/* A spin's clock: the time is read every 64 rounds (a PAUSE lasts from a few
 * ns to 40 depending on the core, so a count of rounds would not be a time). */
typedef struct spin {
    unsigned rounds;
    uint64_t until; /* ns; 0 until the first reading */
} spin;

static int spin_on(spin *s)
{
    SPIN_PAUSE();
    if (++s->rounds % 64)
        return 1;
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    uint64_t now = (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
    if (!s->until)
        s->until = now + SPIN_NS;
    return now < s->until;
}

/* A run is a handshake through two cache lines: the caller bumps
 * `generation` (which every spinning worker reads) and the workers count
 * `remaining` down (which the spinning caller reads). Each sits on a line of
 * its own, so the workers' count does not take the line the others spin on
 * away from them. The mutex and the condition variables are only for threads
 * that stopped spinning and sleep: `sleepers` counts them, and a run or its
 * end takes the mutex only when one does (with sequentially consistent
 * atomics, a thread about to sleep sees the new generation, or the count of
 * its end, after counting itself as a sleeper; or the other side sees it
 * counted). */
struct thread_pool {
    int n;
    int *core;                  /* [n] the core each worker is placed on, -1: none */
    int *node;                  /* [n] the OS number of that core's NUMA node, -1: unknown */
    int n_nodes;                /* distinct nodes among the workers */
    pthread_t *threads;
    hwloc_topology_t topo;
    int have_topo, pinned;
    pthread_mutex_t mu;
    pthread_cond_t wake, done_cv;
    pool_fn fn;                 /* the run's (written before generation moves) */
    void *ctx;
    _Alignas(64) atomic_uint generation;
    atomic_int stop;
    _Alignas(64) atomic_int remaining;
    _Alignas(64) atomic_int sleepers;   /* workers asleep on `wake`, and the caller on `done_cv` */
};

typedef struct worker_arg {
    thread_pool *p;
    int index;
} worker_arg;

static void pin_self(thread_pool *p, int index)
{
    if (!p->pinned || p->core[index] < 0)
        return;
    hwloc_obj_t core = hwloc_get_obj_by_type(p->topo, HWLOC_OBJ_CORE, (unsigned)p->core[index]);
    if (core && core->cpuset && hwloc_set_cpubind(p->topo, core->cpuset, HWLOC_CPUBIND_THREAD) != 0)
        p->pinned = 0;
}

/* Places worker i on a core, taking the NUMA nodes in turn (worker 0 on node A,
 * 1 on node B, 2 on A, ...): with fewer threads than cores every node's memory
 * bandwidth is still used, and each node's threads compute the experts its
 * memory holds (ffn_cpu). With one node this is core i. */
static void place_workers(thread_pool *p)
{
    for (int i = 0; i < p->n; i++)
        p->core[i] = p->node[i] = -1;
    int cores = p->have_topo ? hwloc_get_nbobjs_by_type(p->topo, HWLOC_OBJ_CORE) : 0;
    if (cores < 1)
        return;
    int *core_node = malloc((size_t)cores * sizeof *core_node),
        *nodes = malloc((size_t)cores * sizeof *nodes), *used = calloc((size_t)cores, sizeof *used);
    if (!core_node || !nodes || !used) {
        free(core_node);
        free(nodes);
        free(used);
        return;
    }
    int nn = 0;
    for (int c = 0; c < cores; c++) {
        hwloc_obj_t o = hwloc_get_obj_by_type(p->topo, HWLOC_OBJ_CORE, (unsigned)c);
        core_node[c] = o && o->nodeset ? hwloc_bitmap_first(o->nodeset) : -1;
        int k = 0;
        while (k < nn && nodes[k] != core_node[c])
            k++;
        if (k == nn)
            nodes[nn++] = core_node[c];
    }
    /* worker i: node i % nn, that node's next free core (all taken: start over) */
    for (int i = 0; i < p->n; i++) {
        int want = nodes[i % nn], pick = -1;
        for (int round = 0; round < 2 && pick < 0; round++) {
            for (int c = 0; c < cores && pick < 0; c++)
                if (core_node[c] == want && !used[c])
                    pick = c;
            if (pick < 0)
                for (int c = 0; c < cores; c++)
                    if (core_node[c] == want)
                        used[c] = 0;
        }
        used[pick] = 1;
        p->core[i] = pick;
        p->node[i] = want;
    }
    p->n_nodes = nn < p->n ? nn : p->n;
    free(core_node);
    free(nodes);
    free(used);
}

static void *worker_main(void *arg)
{
    worker_arg *w = arg;
    thread_pool *p = w->p;
    int index = w->index;
    free(w);
    pin_self(p, index);
    unsigned seen = 0;
    for (;;) {
        unsigned g;
        spin sp = {0, 0};
        while ((g = atomic_load_explicit(&p->generation, memory_order_acquire)) == seen &&
               !atomic_load_explicit(&p->stop, memory_order_relaxed) && spin_on(&sp))
            ;
        if (g == seen && !atomic_load(&p->stop)) {
            pthread_mutex_lock(&p->mu);
            atomic_fetch_add(&p->sleepers, 1);
            while ((g = atomic_load(&p->generation)) == seen && !atomic_load(&p->stop))
                pthread_cond_wait(&p->wake, &p->mu);
            atomic_fetch_sub(&p->sleepers, 1);
            pthread_mutex_unlock(&p->mu);
        }
        if (atomic_load(&p->stop))
            return NULL;
        seen = g;
        p->fn(p->ctx, index, p->n);
        /* the last to end wakes the caller if it sleeps */
        if (atomic_fetch_sub(&p->remaining, 1) == 1 && atomic_load(&p->sleepers) > 0) {
            pthread_mutex_lock(&p->mu);
            pthread_cond_broadcast(&p->done_cv);
            pthread_mutex_unlock(&p->mu);
        }
    }
}

int thread_pool_create(thread_pool **out, int n_threads, errbuf *e)
{
    /* (its counters' cache lines: calloc aligns to 16 bytes only) */
    size_t bytes = (sizeof(thread_pool) + 63) / 64 * 64;
    thread_pool *p = aligned_alloc(64, bytes);
    if (!p)
        return err_set(e, "out of memory");
    memset(p, 0, bytes);
    if (hwloc_topology_init(&p->topo) == 0 && hwloc_topology_load(p->topo) == 0)
        p->have_topo = 1;
    if (n_threads <= 0) {
        int cores = p->have_topo ? hwloc_get_nbobjs_by_type(p->topo, HWLOC_OBJ_CORE) : 0;
        n_threads = cores > 0 ? cores : (int)sysconf(_SC_NPROCESSORS_ONLN);
        if (n_threads < 1)
            n_threads = 1;
    }
    p->n = n_threads;
    p->n_nodes = 1;
    /* a topology that is not this machine's (HWLOC_SYNTHETIC, for tests) places
     * the workers but cannot bind them */
    p->pinned = p->have_topo && hwloc_topology_is_thissystem(p->topo);
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->wake, NULL);
    pthread_cond_init(&p->done_cv, NULL);
    p->threads = calloc((size_t)n_threads, sizeof *p->threads);
    p->core = malloc((size_t)n_threads * sizeof *p->core);
    p->node = malloc((size_t)n_threads * sizeof *p->node);
    if (p->core && p->node)
        place_workers(p);
    if (!p->threads || !p->core || !p->node) {
        thread_pool_destroy(p);
        return err_set(e, "out of memory");
    }
    /* the calling thread (worker 0) is left to the scheduler: threads it starts
     * later (I/O) inherit its affinity */
    for (int i = 1; i < n_threads; i++) {
        worker_arg *w = malloc(sizeof *w);
        if (!w) {
            p->n = i;
            thread_pool_destroy(p);
            return err_set(e, "out of memory");
        }
        w->p = p;
        w->index = i;
        int rc = pthread_create(&p->threads[i], NULL, worker_main, w);
        if (rc != 0) {     /* pthread_create returns its error; errno is not set */
            free(w);
            p->n = i;
            thread_pool_destroy(p);
            return err_set(e, "cannot start worker thread %d of %d: %s", i, n_threads,
                           strerror(rc));
        }
    }
    *out = p;
    return 0;
}

void thread_pool_run(thread_pool *p, pool_fn fn, void *ctx)
{
    if (p->n == 1) {
        fn(ctx, 0, 1);
        return;
    }
    p->fn = fn;
    p->ctx = ctx;
    atomic_store(&p->remaining, p->n - 1);
    atomic_fetch_add(&p->generation, 1);
    if (atomic_load(&p->sleepers) > 0) { /* (the mutex: a worker between its check and its wait) */
        pthread_mutex_lock(&p->mu);
        pthread_cond_broadcast(&p->wake);
        pthread_mutex_unlock(&p->mu);
    }
    fn(ctx, 0, p->n);
    spin sp = {0, 0};
    while (atomic_load_explicit(&p->remaining, memory_order_acquire) > 0 && spin_on(&sp))
        ;
    if (atomic_load(&p->remaining) > 0) {
        pthread_mutex_lock(&p->mu);
        atomic_fetch_add(&p->sleepers, 1);
        while (atomic_load(&p->remaining) > 0)
            pthread_cond_wait(&p->done_cv, &p->mu);
        atomic_fetch_sub(&p->sleepers, 1);
        pthread_mutex_unlock(&p->mu);
    }
}

void thread_pool_destroy(thread_pool *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    atomic_store(&p->stop, 1);
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    for (int i = 1; i < p->n; i++)
        if (p->threads && p->threads[i])
            pthread_join(p->threads[i], NULL);
    free(p->threads);
    free(p->core);
    free(p->node);
    if (p->have_topo)
        hwloc_topology_destroy(p->topo);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->wake);
    pthread_cond_destroy(&p->done_cv);
    free(p);
}

int thread_pool_size(const thread_pool *p)
{
    return p->n;
}

int thread_pool_pinned(const thread_pool *p)
{
    return p->pinned && p->n > 1;
}

int thread_pool_worker_node(const thread_pool *p, int worker)
{
    return p->node[worker];
}

int thread_pool_nodes(const thread_pool *p)
{
    return p->n_nodes;
}

void pool_split(int n, int align, int worker, int n_workers, int *begin, int *end)
{
    if (align < 1)
        align = 1;
    int units = (n + align - 1) / align;
    int b = (int)((long long)units * worker / n_workers) * align;
    int en = (int)((long long)units * (worker + 1) / n_workers) * align;
    *begin = b < n ? b : n;
    *end = en < n ? en : n;
}
