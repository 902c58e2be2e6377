/* dram_tier: arena allocation, NUMA placement and locking (see dram_tier.h). */
#include "dram_tier.h"

#include <errno.h>
#include <numa.h>
#include <numaif.h>
#include <pthread.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

int numa_policy_parse(const char *s, numa_policy *out)
{
    if (!strcmp(s, "auto"))
        *out = NUMA_AUTO;
    else if (!strcmp(s, "local"))
        *out = NUMA_LOCAL;
    else if (!strcmp(s, "interleave"))
        *out = NUMA_INTERLEAVE;
    else if (!strcmp(s, "split"))
        *out = NUMA_SPLIT;
    else
        return -1;
    return 0;
}

void dram_split_starts(int n_units, int n_nodes, int *start)
{
    start[0] = 0;
    for (int k = 0; k < n_nodes; k++)     /* node k holds the slots i with i % n_nodes == k */
        start[k + 1] = start[k] + (n_units - k + n_nodes - 1) / n_nodes;
}

int dram_split_position(const int *start, int n_nodes, int i)
{
    return start[i % n_nodes] + i / n_nodes;
}

/* The nodes that have both memory this process may use and CPUs. */
static int nodes_with_cpus(int *os)
{
    int n = 0;
    struct bitmask *cpus = numa_allocate_cpumask();
    if (!cpus)
        return 0;
    for (int node = 0; node <= numa_max_node() && node < DRAM_MAX_NODES; node++)
        if (numa_bitmask_isbitset(numa_all_nodes_ptr, (unsigned)node) &&
            numa_node_to_cpus(node, cpus) == 0 && numa_bitmask_weight(cpus) > 0)
            os[n++] = node;
    numa_free_cpumask(cpus);
    return n;
}

/* Each node's share of the slots prefers that node (preferred, not bound: a
 * full node spills over instead of failing). */
static void place_split(dram_arena *a, FILE *log)
{
    dram_split_starts(a->n_units, a->n_split, a->start);
    for (int k = 0; k < a->n_split; k++) {
        uint64_t len = (uint64_t)(a->start[k + 1] - a->start[k]) * a->unit;
        unsigned long mask[DRAM_MAX_NODES / (8 * sizeof(unsigned long)) + 1] = {0};
        mask[a->node_os[k] / (8 * (int)sizeof(unsigned long))] |=
            1ul << (a->node_os[k] % (8 * (int)sizeof(unsigned long)));
        if (len && mbind(a->base + (uint64_t)a->start[k] * a->unit, len, MPOL_PREFERRED, mask,
                         8 * sizeof mask, 0) != 0 && log)
            fprintf(log, "moetier: could not place the DRAM tier's share on NUMA node %d: %s\n",
                    a->node_os[k], strerror(errno));
    }
}

/* The arena's pages faulted in by every core at once. mlock alone faults them
 * on the calling thread, and the kernel zeroes each page it hands out: one
 * core zeroing a K2-sized tier of hundreds of GB takes minutes (this 2-vCPU
 * VM: 0.6-1.5 GB/s). A write, not a read, so a real page (not the shared zero
 * page) is mapped; the bytes stay zero. */
typedef struct touch_range {
    volatile uint8_t *p;
    uint64_t bytes;
} touch_range;

static void *touch_pages(void *arg)
{
    touch_range *r = arg;
    for (uint64_t off = 0; off < r->bytes; off += 4096)
        r->p[off] = 0;
    return NULL;
}

#define TOUCH_THREADS_MAX 256
#define TOUCH_MIN_BYTES (256ull << 20)

static void touch_parallel(uint8_t *base, uint64_t bytes)
{
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    int n = cpus < 1 ? 1 : cpus > TOUCH_THREADS_MAX ? TOUCH_THREADS_MAX : (int)cpus;
    if (bytes < TOUCH_MIN_BYTES || n < 2)
        return;     /* mlock faults them */
    pthread_t th[TOUCH_THREADS_MAX];
    touch_range r[TOUCH_THREADS_MAX];
    uint64_t share = (bytes / (uint64_t)n + 4095) & ~4095ull;
    for (int i = 0; i < n; i++) {
        uint64_t off = (uint64_t)i * share;
        r[i] = (touch_range){base + off, off >= bytes ? 0 : bytes - off < share ? bytes - off : share};
    }
    int started = 0;
    for (int i = 1; i < n; i++) {
        if (pthread_create(&th[started], NULL, touch_pages, &r[i]) == 0)
            started++;
        else
            touch_pages(&r[i]);     /* no thread: this one does that share */
    }
    touch_pages(&r[0]);
    for (int i = 0; i < started; i++)
        pthread_join(th[i], NULL);
}

int dram_arena_alloc(dram_arena *a, int n_units, uint64_t unit, numa_policy p, FILE *log,
                     errbuf *e)
{
    memset(a, 0, sizeof *a);
    uint64_t bytes = (uint64_t)n_units * unit;
    if (bytes == 0)
        return 0;
    void *m = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                   -1, 0);
    if (m == MAP_FAILED)
        return err_set(e, "cannot reserve %.2f GB for the DRAM tier: %s", bytes / 1e9,
                       strerror(errno));
    a->base = m;
    a->bytes = bytes;
    a->unit = unit;
    a->n_units = n_units;
    a->numa_nodes = numa_available() < 0 ? 1 : numa_num_configured_nodes();
    int os[DRAM_MAX_NODES], n_os = a->numa_nodes > 1 ? nodes_with_cpus(os) : 0;
    if (a->numa_nodes <= 1) {
        a->placement = "one NUMA node";
    } else if (p == NUMA_LOCAL) {
        numa_setlocal_memory(m, bytes);
        a->placement = "local NUMA node";
    } else if (p == NUMA_INTERLEAVE || n_os < 2 || n_units < n_os) {
        numa_interleave_memory(m, bytes, numa_all_nodes_ptr);
        a->placement = "interleaved across NUMA nodes";
    } else {
        a->n_split = n_os;
        memcpy(a->node_os, os, (size_t)n_os * sizeof *os);
        place_split(a, log);
        a->placement = "split by slot across NUMA nodes";
    }
    madvise(m, bytes, MADV_HUGEPAGE);   /* fewer TLB misses when kernels stream blobs */
    /* (a local placement means the node of this thread: it faults them all) */
    if (p != NUMA_LOCAL || a->numa_nodes <= 1)
        touch_parallel(m, bytes);
    if (mlock(m, bytes) == 0) {
        a->locked = 1;
    } else if (log) {
        struct rlimit rl;
        getrlimit(RLIMIT_MEMLOCK, &rl);
        if (errno == ENOMEM || errno == EPERM)
            fprintf(log, "moetier: could not lock the %.2f GB DRAM tier (RLIMIT_MEMLOCK %.0f MB): "
                    "it may be swapped out; raise the limit with ulimit -l\n", bytes / 1e9,
                    rl.rlim_cur == RLIM_INFINITY ? -1.0 : rl.rlim_cur / 1e6);
        else
            fprintf(log, "moetier: could not lock the DRAM tier: %s\n", strerror(errno));
    }
    return 0;
}

uint8_t *dram_arena_unit(const dram_arena *a, int i)
{
    int pos = a->n_split ? dram_split_position(a->start, a->n_split, i) : i;
    return a->base + (uint64_t)pos * a->unit;
}

int dram_arena_node(const dram_arena *a, int i)
{
    return a->n_split ? a->node_os[i % a->n_split] : -1;
}

void dram_arena_free(dram_arena *a)
{
    if (a->base)
        munmap(a->base, a->bytes);
    memset(a, 0, sizeof *a);
}
