/* NUMA placement: workers take the nodes in turn, each node's workers take the
 * experts in its memory first, and the DRAM tier's split placement puts every
 * slot in one place, consecutive slots on alternate nodes. Machines with one
 * node stand in for two through a synthetic hwloc topology (HWLOC_SYNTHETIC,
 * which places workers but binds nothing); criterion runs each test in its own
 * process, so the variable stays in the test that sets it. */
#include <criterion/criterion.h>
#include <sys/mman.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/model/dtype.h"
#include "cpu_kernels/ffn_cpu.h"
#include "tiers/dram_tier.h"

#define TWO_NODES "pack:2 numa:1 core:2 pu:1"

static thread_pool *pool_on(const char *topology, int n)
{
    if (topology)
        setenv("HWLOC_SYNTHETIC", topology, 1);
    else
        unsetenv("HWLOC_SYNTHETIC");
    thread_pool *p;
    errbuf e;
    cr_assert_eq(thread_pool_create(&p, n, &e), 0, "%s", e.msg);
    return p;
}

Test(numa, workers_take_the_nodes_in_turn)
{
    int counts[] = {1, 2, 4, 6};
    for (int c = 0; c < 4; c++) {
        thread_pool *p = pool_on(TWO_NODES, counts[c]);
        cr_expect_eq(thread_pool_nodes(p), counts[c] < 2 ? 1 : 2, "%d workers", counts[c]);
        for (int i = 0; i < counts[c]; i++)
            cr_expect_eq(thread_pool_worker_node(p, i), i % 2, "%d workers: worker %d on node %d",
                         counts[c], i, thread_pool_worker_node(p, i));
        cr_expect_not(thread_pool_pinned(p), "a synthetic topology was bound to");
        thread_pool_destroy(p);
    }
    thread_pool *one = pool_on("pack:1 numa:1 core:4 pu:1", 3);
    cr_expect_eq(thread_pool_nodes(one), 1);
    for (int i = 0; i < 3; i++)
        cr_expect_eq(thread_pool_worker_node(one, i), 0);
    thread_pool_destroy(one);
}

Test(numa, next_job_takes_its_own_node_first)
{
    ffn_job jobs[6];
    int nodes[6] = {1, 0, 1, -1, 0, 1};
    for (int i = 0; i < 6; i++)
        jobs[i] = (ffn_job){.node = nodes[i]};
    atomic_uchar claimed[6];
    for (int i = 0; i < 6; i++)
        atomic_init(&claimed[i], 0);
    /* two workers, on nodes 1 and 0, taking turns */
    int want[7][2] = {{1, 0}, {0, 1}, {1, 2}, {0, 4}, {1, 5}, {0, 3}, {1, -1}};
    for (int s = 0; s < 7; s++) {
        int got = ffn_cpu_next_job(jobs, 6, claimed, want[s][0]);
        cr_expect_eq(got, want[s][1], "turn %d (node %d): job %d, expected %d", s, want[s][0],
                     got, want[s][1]);
    }
    cr_expect_eq(ffn_cpu_next_job(jobs, 6, claimed, 0), -1, "a job was handed out twice");
}

/* ---- the node-aware spread gives each job's single-thread bits ---- */

typedef struct expert {
    linear_weight m[3];
    uint16_t *data[3];
} expert;

static uint64_t rng = 0x9e3779b97f4a7c15ull;

static float frand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (float)((rng >> 40) & 0xffff) / 32768.0f - 1.0f;
}

static void make_expert(expert *x, int hidden, int inter)
{
    int rows[3] = {inter, inter, hidden}, cols[3] = {hidden, hidden, inter};
    for (int k = 0; k < 3; k++) {
        size_t n = (size_t)rows[k] * (size_t)cols[k];
        x->data[k] = malloc(n * 2);
        for (size_t i = 0; i < n; i++)
            x->data[k][i] = f32_to_bf16(frand() * 0.1f);
        x->m[k] = (linear_weight){.fmt = WF_BF16, .rows = rows[k], .cols = cols[k],
                                  .data = x->data[k]};
    }
}

static void run_jobs(thread_pool *pool, expert *ex, const int *nodes, int n, int T,
                     const float *x, float *out, int hidden)
{
    ffn_job jobs[8];
    for (int i = 0; i < n; i++)
        jobs[i] = (ffn_job){&ex[i].m[0], &ex[i].m[1], &ex[i].m[2], x, T,
                            out + (size_t)i * (size_t)T * (size_t)hidden, nodes[i], 0, 0};
    for (size_t i = 0; i < (size_t)n * (size_t)T * (size_t)hidden; i++)
        out[i] = NAN;   /* a job left out stays NaN */
    size_t k = ffn_cpu_scratch(jobs, n, pool ? thread_pool_size(pool) : 1);
    float *scratch = malloc((k + 64) * sizeof *scratch);
    ffn_cpu_run(kernel_path_default(), pool, jobs, n, scratch);
    free(scratch);
}

Test(numa, spread_over_nodes_gives_the_single_thread_bits, .timeout = 60)
{
    enum { H = 96, I = 40, N = 8 };
    expert ex[N];
    for (int i = 0; i < N; i++)
        make_expert(&ex[i], H, I);
    float x[4 * H];
    for (int i = 0; i < 4 * H; i++)
        x[i] = frand();
    int mixed[N] = {0, 1, 1, -1, 0, 1, 0, 0}, all_on_one[N] = {1, 1, 1, 1, 1, 1, 1, 1};
    const int *tags[2] = {mixed, all_on_one};
    size_t n_out = (size_t)N * 4 * H;
    float *ref = malloc(n_out * sizeof *ref), *got = malloc(n_out * sizeof *got);
    int threads[2] = {2, 3};
    for (int T = 1; T <= 4; T += 3) {
        run_jobs(NULL, ex, mixed, N, T, x, ref, H);
        for (size_t i = 0; i < (size_t)N * (size_t)T * H; i++)
            cr_assert(!isnan(ref[i]), "the single-thread run left job output %zu unset", i);
        for (int p = 0; p < 2; p++) {
            thread_pool *pool = pool_on(TWO_NODES, threads[p]);
            for (int g = 0; g < 2; g++) {
                run_jobs(pool, ex, tags[g], N, T, x, got, H);
                cr_expect(memcmp(ref, got, (size_t)N * (size_t)T * H * sizeof *ref) == 0,
                          "%d threads on two nodes, %d tokens, %s: outputs differ from one "
                          "thread's", threads[p], T, g ? "every expert on node 1" : "mixed nodes");
            }
            thread_pool_destroy(pool);
        }
    }
    free(ref);
    free(got);
    for (int i = 0; i < N; i++)
        for (int k = 0; k < 3; k++)
            free(ex[i].data[k]);
}

/* ---- the DRAM tier's split placement ---- */

Test(numa, split_places_every_slot_once_alternating_nodes)
{
    for (int nn = 1; nn <= 5; nn++)
        for (int n = nn; n <= 41; n++) {
            int start[DRAM_MAX_NODES + 1];
            dram_split_starts(n, nn, start);
            cr_assert_eq(start[0], 0);
            cr_assert_eq(start[nn], n, "%d slots over %d nodes end at %d", n, nn, start[nn]);
            char *seen = calloc((size_t)n, 1);
            for (int i = 0; i < n; i++) {
                int pos = dram_split_position(start, nn, i), k = i % nn;
                cr_assert(pos >= start[k] && pos < start[k + 1], "%d slots over %d nodes: slot %d "
                          "at %d, outside node %d's share [%d, %d)", n, nn, i, pos, k, start[k],
                          start[k + 1]);
                cr_assert(!seen[pos], "%d slots over %d nodes: position %d given twice", n, nn, pos);
                seen[pos] = 1;
            }
            free(seen);
        }
}

Test(numa, one_node_arena_is_not_split)
{
    dram_arena a;
    errbuf e;
    cr_assert_eq(dram_arena_alloc(&a, 5, 8192, NUMA_SPLIT, NULL, &e), 0, "%s", e.msg);
    if (a.numa_nodes > 1)
        cr_skip_test("this machine has %d NUMA nodes", a.numa_nodes);
    cr_expect_eq(a.n_split, 0);
    for (int i = 0; i < 5; i++) {
        cr_expect_eq(dram_arena_unit(&a, i), a.base + (size_t)i * 8192);
        cr_expect_eq(dram_arena_node(&a, i), -1);
    }
    dram_arena_free(&a);
}

/* An arena large enough for its pages to be faulted in by every core at once
 * (a length that is no whole number of pages): every page is there, zero, and
 * writable to its last byte. */
Test(numa, a_large_arena_is_resident_and_zero)
{
    dram_arena a;
    errbuf e;
    uint64_t unit = (100ull << 20) + 4115;
    cr_assert_eq(dram_arena_alloc(&a, 3, unit, NUMA_AUTO, NULL, &e), 0, "%s", e.msg);
    size_t page = 4096, pages = (a.bytes + page - 1) / page;
    unsigned char *in = malloc(pages);
    cr_assert_not_null(in);
    cr_assert_eq(mincore(a.base, a.bytes, in), 0);
    size_t missing = 0;
    for (size_t i = 0; i < pages; i++)
        missing += !(in[i] & 1);
    cr_expect_eq(missing, 0, "%zu of %zu pages not resident", missing, pages);
    for (uint64_t off = 0; off < a.bytes; off += 1000003)
        cr_expect_eq(a.base[off], 0, "byte %llu", (unsigned long long)off);
    a.base[a.bytes - 1] = 7;
    cr_expect_eq(a.base[a.bytes - 1], 7);
    free(in);
    dram_arena_free(&a);
}
