/* dram_tier: arena allocation, NUMA placement and locking (see dram_tier.h). */
#include "dram_tier.h"

#include <errno.h>
#include <numa.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>

int numa_policy_parse(const char *s, numa_policy *out)
{
    if (!strcmp(s, "auto"))
        *out = NUMA_AUTO;
    else if (!strcmp(s, "local"))
        *out = NUMA_LOCAL;
    else if (!strcmp(s, "interleave"))
        *out = NUMA_INTERLEAVE;
    else
        return -1;
    return 0;
}

int dram_arena_alloc(dram_arena *a, uint64_t bytes, numa_policy p, FILE *log, errbuf *e)
{
    memset(a, 0, sizeof *a);
    if (bytes == 0)
        return 0;
    void *m = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                   -1, 0);
    if (m == MAP_FAILED)
        return err_set(e, "cannot reserve %.2f GB for the DRAM tier: %s", bytes / 1e9,
                       strerror(errno));
    a->base = m;
    a->bytes = bytes;
    a->numa_nodes = numa_available() < 0 ? 1 : numa_num_configured_nodes();
    if (a->numa_nodes <= 1) {
        a->placement = "one NUMA node";
    } else if (p == NUMA_LOCAL) {
        numa_setlocal_memory(m, bytes);
        a->placement = "local NUMA node";
    } else {
        numa_interleave_memory(m, bytes, numa_all_nodes_ptr);
        a->placement = "interleaved across NUMA nodes";
    }
    madvise(m, bytes, MADV_HUGEPAGE);   /* fewer TLB misses when kernels stream blobs */
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

void dram_arena_free(dram_arena *a)
{
    if (a->base)
        munmap(a->base, a->bytes);
    memset(a, 0, sizeof *a);
}
