/* The expert store and the DRAM/NVMe tiers.
 *
 * Tier invariance: logits are bitwise identical whether experts come from the
 * checkpoint, from a DRAM tier holding them all, from a DRAM tier of a few
 * slots (most reads from NVMe), through the pread fallback, or through injected
 * short reads and transient EIO, with and without the router lookahead reading
 * predicted experts early. Faults that cannot be recovered (persistent
 * EIO, a corrupted blob, a truncated file, a store of another checkpoint, an
 * interrupted conversion) give their documented errors. An interrupted
 * conversion resumes to the same bytes as an uninterrupted one. */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/app/cli_common.h"
#include "core/base/meminfo.h"
#include "core/model/synth.h"
#include "kernels/gpu_backend.h"
#include "kernels/gpu_layout.h"
#include "prefetch/cache_sim.h"
#include "tiers/store_source.h"
#include "tiers/store_writer.h"
#include "tiers/tiered_source.h"
#include "testutil.h"

#define T_PROMPT 10
#define T_STEPS 4

/* A conversion of the model with o's options; with log, its log in *log
 * (malloc'd); its error in *e. */
static int convert_with(const char *model, convert_options o, char **log, errbuf *e)
{
    model_weights mw;
    cr_assert_eq(model_weights_open(&mw, model, e), 0, "%s", e->msg);
    size_t n;
    if (log) {
        o.log = open_memstream(log, &n);
        cr_assert_not_null(o.log);
    }
    int rc = store_convert(&mw, &o, e);
    if (log)
        fclose(o.log);
    model_weights_close(&mw);
    return rc;
}

static int convert_logged(const char *model, const char *out, uint64_t max_file, int force,
                          char **log, errbuf *e)
{
    convert_options o = {.out_dir = out, .max_file_bytes = max_file, .force = force};
    return convert_with(model, o, log, e);
}

static void convert_store(const char *model, const char *out, uint64_t max_file, long stop_after)
{
    errbuf e;
    convert_options o = {.out_dir = out, .max_file_bytes = max_file, .stop_after = stop_after};
    int rc = convert_with(model, o, NULL, &e);
    if (stop_after)
        cr_assert_neq(rc, 0, "the stop hook did not stop the conversion");
    else
        cr_assert_eq(rc, 0, "convert %s: %s", model, e.msg);
}

/* Prefill + a few decode steps; logits of every position into out (or the
 * open/forward error into err and a non-zero return). */
/* The logits of a fixed prompt and steps; with gs and es, the GPU backend's
 * cache statistics and the engine's after the run too. */
static int run_logits_stats(const model_flags *f, float *out, gpu_cache_stats *gs,
                            engine_stats *es, errbuf *err)
{
    cli_model m;
    if (cli_model_open(&m, f, err))
        return -1;
    int V = m.mw.cfg.vocab_size, ids[T_PROMPT + T_STEPS];
    for (int i = 0; i < T_PROMPT + T_STEPS; i++)
        ids[i] = (i * 37 + 5) % V;
    int rc = engine_forward(&m.en, ids, T_PROMPT, out, 1, err);
    for (int k = 0; k < T_STEPS && !rc; k++)
        rc = engine_forward(&m.en, &ids[T_PROMPT + k], 1, out + (size_t)(T_PROMPT + k) * V, 0, err);
    if (gs)
        gpu_backend_cache_stats(&m.be, gs);
    if (es)
        *es = m.en.stats;
    cli_model_close(&m);
    return rc;
}

static int run_logits_flags(const model_flags *f, float *out, errbuf *err)
{
    return run_logits_stats(f, out, NULL, NULL, err);
}

static int run_logits_threads(const char *model, const tier_flags *tf, int threads, float *out,
                              errbuf *err)
{
    model_flags f = {.dir = model, .ctx = 64, .chunk = 4, .quiet = 1, .threads = threads};
    if (tf)
        f.tiers = *tf;
    return run_logits_flags(&f, out, err);
}

static int run_logits(const char *model, const tier_flags *tf, float *out, errbuf *err)
{
    return run_logits_threads(model, tf, 0, out, err);
}

static int vocab_of(const char *model)
{
    model_weights mw;
    errbuf e;
    cr_assert_eq(model_weights_open(&mw, model, &e), 0, "%s", e.msg);
    int v = mw.cfg.vocab_size;
    model_weights_close(&mw);
    return v;
}

static int moe_layer_count(const char *model)
{
    model_weights mw;
    errbuf e;
    cr_assert_eq(model_weights_open(&mw, model, &e), 0, "%s", e.msg);
    int n = 0;
    for (int l = 0; l < mw.cfg.n_layers; l++)
        n += config_is_moe_layer(&mw.cfg, l);
    model_weights_close(&mw);
    return n;
}

/* Every tier configuration against the checkpoint-mapping run, bit for bit. */
static void check_invariance(const char *model, const char *tag)
{
    char *tmp = test_make_tmpdir(tag);
    char store_dir[4096];
    snprintf(store_dir, sizeof store_dir, "%s/store", tmp);
    convert_store(model, store_dir, 0, 0);
    int V = vocab_of(model);
    size_t n = (size_t)(T_PROMPT + T_STEPS) * (size_t)V;
    float *ref = calloc(n, sizeof *ref), *got = calloc(n, sizeof *got);
    errbuf e;
    cr_assert_eq(run_logits(model, NULL, ref, &e), 0, "%s", e.msg);

    model_weights mw;
    cr_assert_eq(model_weights_open(&mw, model, &e), 0, "%s", e.msg);
    store_layout L;
    cr_assert_eq(store_layout_for_model(&mw, &L, &e), 0, "%s", e.msg);
    double slot_gb = (double)L.slot_bytes / 1e9, topk = mw.cfg.n_experts_per_tok;
    model_weights_close(&mw);

    struct {
        const char *what;
        double gb;
        io_mode io;
        const char *fault;
        const char *policy;
        int lookahead;          /* -1: the default */
        int threads;            /* 0: one per core */
    } cases[] = {
        /* the experts of a layer spread over the threads (whole rounds, the
         * rest with rows split) against the reference run's split */
        {"all in DRAM, 1 thread", 1000, IO_AUTO, NULL, NULL, -1, 1},
        {"all in DRAM, 3 threads", 1000, IO_AUTO, NULL, NULL, -1, 3},
        {"all in DRAM, 4 threads", 1000, IO_AUTO, NULL, NULL, -1, 4},
        {"few slots, 3 threads", topk * slot_gb, IO_AUTO, NULL, NULL, -1, 3},
        {"all experts in DRAM", 1000, IO_AUTO, NULL, NULL, -1, 0},
        {"DRAM of top_k slots (most reads from NVMe)", topk * slot_gb, IO_AUTO, NULL, NULL, -1, 0},
        {"DRAM of top_k + 3 slots", (topk + 3) * slot_gb, IO_AUTO, NULL, NULL, -1, 0},
        {"pread fallback, few slots", topk * slot_gb, IO_PREAD, NULL, NULL, -1, 0},
        {"pread fallback, all in DRAM", 1000, IO_PREAD, NULL, NULL, -1, 0},
        {"short reads", topk * slot_gb, IO_AUTO, "short=2", NULL, -1, 0},
        {"short reads, pread", topk * slot_gb, IO_PREAD, "short=3", NULL, -1, 0},
        {"transient EIO", topk * slot_gb, IO_AUTO, "eio=3,eio_max=20", NULL, -1, 0},
        {"O_DIRECT reads refused (EINVAL)", topk * slot_gb, IO_AUTO, "einval=1", NULL, -1, 0},
        {"io_uring submissions refused at times", topk * slot_gb, IO_AUTO, "refuse=2", NULL, -1, 0},
        {"LFU eviction, few slots", (topk + 2) * slot_gb, IO_AUTO, NULL, "lfu", -1, 0},
        {"no lookahead, few slots", (topk + 3) * slot_gb, IO_AUTO, NULL, NULL, 0, 0},
        {"lookahead 1, few slots", (topk + 3) * slot_gb, IO_AUTO, NULL, NULL, 1, 0},
        {"lookahead 1, transient EIO", 2 * topk * slot_gb, IO_AUTO, "eio=3,eio_max=20", NULL, 1, 0},
        {"lookahead 1, LFU", 3 * topk * slot_gb, IO_AUTO, NULL, "lfu", 1, 0},
        {"lookahead 1, LRU without scan resistance", (topk + 3) * slot_gb, IO_AUTO, NULL,
         "lru-plain", 1, 0},
        {"lookahead 3, top_k slots", topk * slot_gb, IO_AUTO, NULL, NULL, 3, 0},
        {"lookahead 2, 4 x top_k slots", 4 * topk * slot_gb, IO_AUTO, NULL, NULL, 2, 0},
        {"lookahead 2, short reads, pread", 2 * topk * slot_gb, IO_PREAD, "short=2", NULL, 2, 0},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        tier_flags tf = {.store_dir = store_dir, .dram_gb = cases[c].gb * 1.0000001,
                         .dram_gb_set = 1, .io = cases[c].io, .policy = cases[c].policy,
                         .lookahead = cases[c].lookahead,
                         .lookahead_set = cases[c].lookahead >= 0};
        if (cases[c].fault)
            setenv("MOETIER_IO_FAULT", cases[c].fault, 1);
        else
            unsetenv("MOETIER_IO_FAULT");
        memset(got, 0, n * sizeof *got);
        cr_assert_eq(run_logits_threads(model, &tf, cases[c].threads, got, &e), 0, "%s: %s",
                     cases[c].what, e.msg);
        cr_expect(memcmp(ref, got, n * sizeof *ref) == 0, "%s (%s): logits differ from the "
                  "checkpoint's", tag, cases[c].what);
    }
    unsetenv("MOETIER_IO_FAULT");
    free(ref);
    free(got);
    test_remove_tree(tmp);
    free(tmp);
}

/* A bf16 or q8_0 KV cache keeps the invariance: a DRAM tier of top_k slots
 * (most reads from NVMe) with the lookahead, and 3 threads, give the
 * checkpoint run's bits. */
static void cache_type_invariance(kv_type type)
{
    char *model = test_testdata_model_or_skip("int4"), *tmp = test_make_tmpdir("typed_cache");
    char store_dir[4096];
    snprintf(store_dir, sizeof store_dir, "%s/store", tmp);
    convert_store(model, store_dir, 0, 0);
    errbuf e;
    model_weights mw;
    cr_assert_eq(model_weights_open(&mw, model, &e), 0, "%s", e.msg);
    store_layout L;
    cr_assert_eq(store_layout_for_model(&mw, &L, &e), 0, "%s", e.msg);
    double slots_gb = (double)L.slot_bytes / 1e9 * mw.cfg.n_experts_per_tok * 1.0000001;
    model_weights_close(&mw);
    size_t n = (size_t)(T_PROMPT + T_STEPS) * (size_t)vocab_of(model);
    float *ref = calloc(n, sizeof *ref), *got = calloc(n, sizeof *got), *f32 = calloc(n, sizeof *f32);
    model_flags f = {.dir = model, .ctx = 64, .chunk = 4, .quiet = 1};
    cr_assert_eq(run_logits_flags(&f, f32, &e), 0, "%s", e.msg);
    f.cache_type = type;
    cr_assert_eq(run_logits_flags(&f, ref, &e), 0, "%s", e.msg);
    cr_expect(memcmp(ref, f32, n * sizeof *ref), "the %s cache gave the f32 logits",
              kv_type_name(type));
    f.tiers = (tier_flags){.store_dir = store_dir, .dram_gb = slots_gb, .dram_gb_set = 1,
                           .lookahead = 2, .lookahead_set = 1};
    f.threads = 3;
    cr_assert_eq(run_logits_flags(&f, got, &e), 0, "%s", e.msg);
    cr_expect(memcmp(ref, got, n * sizeof *ref) == 0, "%s cache: logits from a DRAM tier of "
              "top_k slots differ from the checkpoint's", kv_type_name(type));
    free(ref);
    free(got);
    free(f32);
    test_remove_tree(tmp);
    free(tmp);
    free(model);
}

Test(tiers, invariance_bf16_cache, .timeout = 120) { cache_type_invariance(KV_BF16); }
Test(tiers, invariance_q8_cache, .timeout = 120) { cache_type_invariance(KV_Q8_0); }

static void testdata_invariance(const char *variant)
{
    char *model = test_testdata_model_or_skip(variant), rel[64];
    snprintf(rel, sizeof rel, "k2-tiny-%s", variant);
    check_invariance(model, rel);
    free(model);
}

Test(tiers, invariance_testdata_bf16, .timeout = 120) { testdata_invariance("bf16"); }
Test(tiers, invariance_testdata_fp8, .timeout = 120) { testdata_invariance("fp8"); }
Test(tiers, invariance_testdata_int4, .timeout = 120) { testdata_invariance("int4"); }

/* within the GPU backend too (skipped without a GPU) */
Test(tiers, invariance_testdata_gpu_bf16, .timeout = 900) { test_require_gpu(); testdata_invariance("bf16"); }
Test(tiers, invariance_testdata_gpu_fp8, .timeout = 900) { test_require_gpu(); testdata_invariance("fp8"); }
Test(tiers, invariance_testdata_gpu_int4, .timeout = 900) { test_require_gpu(); testdata_invariance("int4"); }

/* --vram-gb that leaves room for `slots` experts in the GPU's expert cache
 * (the budget of run_logits' context and chunk) */
static double vram_gb_for_slots(const char *model, int slots, kv_type kv)
{
    model_weights mw;
    errbuf e;
    cr_assert_eq(model_weights_open(&mw, model, &e), 0, "%s", e.msg);
    tier_flags none = {0}, f = {.vram_gb = 1e6, .vram_gb_set = 1, .kv_type = kv};
    tier_plan p;
    store st;
    cr_assert_eq(tier_plan_make(&p, &mw, &none, &st, &e), 0, "%s", e.msg);
    int l = 0;
    while (!mw.layers[l].is_moe)
        l++;
    expert_view v;
    cr_assert_eq(model_weights_expert(&mw, l, 0, &v, &e), 0, "%s", e.msg);
    uint64_t slot = gpu_expert_slot_bytes(&v.gate, &v.up, &v.down);
    gpu_plan g;
    cr_assert_eq(gpu_plan_make(&g, &p, &mw.cfg, &f, 64, 4, slot, 0, 0, &e), 0, "%s", e.msg);
    model_weights_close(&mw);
    return (double)(g.dense_bytes + g.kv_bytes + g.act_bytes + (uint64_t)slots * slot + slot / 2) / 1e9;
}

/* Logits on the GPU do not depend on how many experts its cache holds, on a
 * DRAM tier behind it, nor on which missed experts the CPU computes and copies
 * into the cache: by a token threshold, or by the cost model with measured
 * rates or with rates that make the GPU the slow side (most misses on the CPU,
 * many of them promoted, predicted experts copied ahead: from the checkpoint
 * mapping, from a DRAM tier holding every expert, and peeked from one that
 * evicts). */
static void gpu_vram_invariance(const char *variant, kv_type kv)
{
    char *model = test_testdata_model_or_skip(variant);
    char *tmp = test_make_tmpdir("vram");
    char store_dir[4096];
    snprintf(store_dir, sizeof store_dir, "%s/store", tmp);
    convert_store(model, store_dir, 0, 0);
    int V = vocab_of(model), moe_layers = moe_layer_count(model);
    size_t n = (size_t)(T_PROMPT + T_STEPS) * (size_t)V;
    float *ref = calloc(n, sizeof *ref), *got = calloc(n, sizeof *got);
    errbuf e;
    /* the reference: every expert on the GPU, all of them cached */
    model_flags f = {.dir = model, .ctx = 64, .chunk = 4, .quiet = 1, .cpu_tokens_set = 1,
                     .cache_type = kv};
    cr_assert_eq(run_logits_flags(&f, ref, &e), 0, "%s", e.msg);
    const int AUTO = GPU_CPU_TOKENS_AUTO;
    const char *slow_gpu = "1,1,0.1,0.1,0.3";  /* $MOETIER_HYBRID_RATES */
    const struct {
        int slots, dram;    /* VRAM cache slots; a DRAM tier of `dram` slots (0: none) */
        int cpu_tokens;     /* misses with at most this many tokens on the CPU; AUTO */
        const char *rates;  /* the cost model's rates; NULL: measured */
    } cases[] = {{0, 0, 0, NULL}, {1, 0, 0, NULL}, {17, 0, 0, NULL}, {1, 8, 0, NULL},
                 {8, 8, 0, NULL}, {0, 0, 1, NULL}, {8, 0, 1, NULL}, {17, 0, 3, NULL},
                 {1, 8, 8, NULL}, {8, 0, AUTO, NULL}, {0, 0, AUTO, slow_gpu},
                 {3, 0, AUTO, slow_gpu}, {8, 8, AUTO, slow_gpu}, {8, 60, AUTO, slow_gpu},
                 {8, 100000, AUTO, slow_gpu}};
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        tier_flags tf = {.vram_gb = vram_gb_for_slots(model, cases[k].slots, kv), .vram_gb_set = 1};
        if (cases[k].dram) {
            store_layout L;
            model_weights mw;
            cr_assert_eq(model_weights_open(&mw, model, &e), 0, "%s", e.msg);
            cr_assert_eq(store_layout_for_model(&mw, &L, &e), 0, "%s", e.msg);
            model_weights_close(&mw);
            tf.store_dir = store_dir;
            tf.dram_gb = (cases[k].dram + 0.5) * (double)L.slot_bytes / 1e9;
            tf.dram_gb_set = 1;
        }
        memset(got, 0, n * sizeof *got);
        f.tiers = tf;
        f.cpu_tokens = cases[k].cpu_tokens;
        if (cases[k].rates)
            setenv("MOETIER_HYBRID_RATES", cases[k].rates, 1);
        else
            unsetenv("MOETIER_HYBRID_RATES");
        gpu_cache_stats gs;
        engine_stats es;
        cr_assert_eq(run_logits_stats(&f, got, &gs, &es, &e), 0, "%s", e.msg);
        /* a DRAM tier that evicts (8 or 60 of the 96 experts) still hands the
         * GPU the experts it reserved for a layer in one batch; with 60 it holds
         * many of the next layer's when they are predicted, so some are peeked
         * and copied ahead */
        if (cases[k].dram && cases[k].dram < 96)
            cr_expect_lt(es.expert_groups, es.expert_calls, "%s: DRAM tier of %d: %llu experts "
                         "in %llu backend calls", variant, cases[k].dram,
                         (unsigned long long)es.expert_calls,
                         (unsigned long long)es.expert_groups);
        /* without one, a layer's experts go in one call, prefill chunks (4 tokens
         * x top-k rows) included */
        if (!cases[k].dram)
            cr_expect_eq(es.expert_groups, (unsigned long long)moe_layers *
                         ((T_PROMPT + f.chunk - 1) / f.chunk + T_STEPS), "%s: %llu backend calls "
                         "for %d MoE layers", variant, (unsigned long long)es.expert_groups,
                         moe_layers);
        if (cases[k].dram == 60)
            cr_expect_gt(gs.prefetched, 0, "%s: no predicted expert was peeked from the "
                         "evicting DRAM tier and copied ahead", variant);
        cr_expect(memcmp(ref, got, n * sizeof *ref) == 0, "%s: %d VRAM slots, DRAM tier of %d, "
                  "CPU up to %d tokens (-1: cost model, rates %s): logits differ", variant,
                  cases[k].slots, cases[k].dram, cases[k].cpu_tokens,
                  cases[k].rates ? cases[k].rates : "measured");
    }
    unsetenv("MOETIER_HYBRID_RATES");
    free(ref);
    free(got);
    test_remove_tree(tmp);
    free(tmp);
    free(model);
}

Test(tiers, invariance_gpu_vram_cache_bf16, .timeout = 600) { test_require_gpu(); gpu_vram_invariance("bf16", KV_F32); }
Test(tiers, invariance_gpu_vram_cache_fp8, .timeout = 600) { test_require_gpu(); gpu_vram_invariance("fp8", KV_F32); }
Test(tiers, invariance_gpu_vram_cache_int4, .timeout = 600) { test_require_gpu(); gpu_vram_invariance("int4", KV_F32); }
/* with a bf16 KV cache (--cache-type bf16) */
Test(tiers, invariance_gpu_vram_cache_int4_bf16_cache, .timeout = 600) { test_require_gpu(); gpu_vram_invariance("int4", KV_BF16); }
Test(tiers, invariance_gpu_vram_cache_int4_q8_cache, .timeout = 600) { test_require_gpu(); gpu_vram_invariance("int4", KV_Q8_0); }

/* A larger synthetic model: more experts and layers than the vectors. */
static char *synth_larger(const char *format, int experts, int moe_inter, int layers)
{
    char *dir = test_make_tmpdir("larger");
    char sets[2][64];
    snprintf(sets[0], sizeof sets[0], "n_routed_experts=%d", experts);
    snprintf(sets[1], sizeof sets[1], "moe_intermediate_size=%d", moe_inter);
    const char *set_list[4] = {sets[0], sets[1], "n_group=1", "topk_group=1"};
    synth_options o = synth_options_default();
    errbuf e;
    cr_assert_eq(synth_format_parse(format, &o.format, &e), 0, "%s", e.msg);
    o.out_dir = dir;
    o.force = 1;
    o.seed = 11;
    o.layers = layers;
    o.sets = set_list;
    o.n_sets = 4;
    cr_assert_eq(synth_run(&o, &e), 0, "synth: %s", e.msg);
    return dir;
}

Test(tiers, invariance_larger_synthetic, .timeout = 240)
{
    const char *formats[] = {"int4", "fp8"};
    /* (under the sanitizers int4 alone: the tiers do not look at the format) */
    for (int f = 0; f < (test_sanitized() ? 1 : 2); f++) {
        char *dir = synth_larger(formats[f], 64, 192, 6);
        check_invariance(dir, formats[f]);
        test_remove_tree(dir);
        free(dir);
    }
}

/* Bytes of one expert slot in the model's store, and how many MoE layers it has. */
static uint64_t store_slot_bytes(const char *model, int *moe_layers)
{
    store_layout L;
    model_weights mw;
    errbuf e;
    cr_assert_eq(model_weights_open(&mw, model, &e), 0, "%s", e.msg);
    cr_assert_eq(store_layout_for_model(&mw, &L, &e), 0, "%s", e.msg);
    if (moe_layers) {
        *moe_layers = 0;
        for (int l = 0; l < mw.cfg.n_layers; l++)
            *moe_layers += mw.layers[l].is_moe;
    }
    model_weights_close(&mw);
    return L.slot_bytes;
}

/* The lookahead's predictions are scored against the experts then chosen, and
 * its reads stay within their bound. Random weights make routing unrealistic,
 * so recall here is only logged (docs/benchmarks.md has it on a larger model). */
/* Prefills `prompt` made-up tokens, then decodes one at a time up to `total`
 * (<= 64), asserting every step succeeds. */
static void prefill_and_decode(cli_model *m, int prompt, int total)
{
    int V = m->mw.cfg.vocab_size, ids[64];
    for (int i = 0; i < total; i++)
        ids[i] = (i * 53 + 7) % V;
    float *logits = malloc((size_t)V * sizeof *logits);
    errbuf e;
    cr_assert_eq(engine_forward(&m->en, ids, prompt, logits, 0, &e), 0, "%s", e.msg);
    for (int k = prompt; k < total; k++)
        cr_assert_eq(engine_forward(&m->en, &ids[k], 1, logits, 0, &e), 0, "%s", e.msg);
    free(logits);
}

/* (tl: the DRAM tier's counts over its layers) */
static void lookahead_run(const char *model, const char *store_dir, double gb, int lookahead,
                          engine_stats *es, tier_spec_stats *ss, tier_layer_stats *tl)
{
    cli_model m;
    model_flags f = {.dir = model, .ctx = 64, .chunk = 4, .quiet = 1};
    f.tiers = (tier_flags){.store_dir = store_dir, .dram_gb = gb, .dram_gb_set = 1,
                           .lookahead = lookahead, .lookahead_set = 1};
    errbuf e;
    cr_assert_eq(cli_model_open(&m, &f, &e), 0, "%s", e.msg);
    prefill_and_decode(&m, 8, 24);
    *es = m.en.stats;
    const tier_spec_stats *s = tiered_source_spec_stats(&m.src);
    cr_assert_not_null(s, "the store did not give a tiered source");
    *ss = *s;
    cr_assert_eq(tiered_source_totals(&m.src, tl), 0);
    cli_model_close(&m);
}

Test(tiers, lookahead_is_scored_and_bounded, .timeout = 120)
{
    char *dir = synth_larger("int4", 64, 192, 6);
    char store_dir[4300];
    snprintf(store_dir, sizeof store_dir, "%s/store", dir);
    convert_store(dir, store_dir, 0, 0);
    int moe_layers;
    uint64_t slot = store_slot_bytes(dir, &moe_layers);
    /* a quarter of the experts fit */
    double gb = moe_layers * 64 / 4 * (double)slot / 1e9 * 1.0000001;
    for (int la = 1; la <= 3; la++) {
        engine_stats es;
        tier_spec_stats ss;
        tier_layer_stats tl;
        lookahead_run(dir, store_dir, gb, la, &es, &ss, &tl);
        cr_assert_gt(es.la_predicted, 0, "lookahead %d predicted nothing", la);
        cr_assert_gt(es.la_chosen, 0);
        cr_assert_leq(es.la_correct, es.la_chosen);
        cr_assert_leq(es.la_correct, es.la_predicted);
        cr_assert_gt(ss.max_in_flight, 0, "speculation is off with lookahead %d", la);
        cr_assert_gt(ss.reads, 0, "no expert was read early with lookahead %d", la);
        cr_assert_leq(ss.peak_in_flight, ss.max_in_flight, "%d predicted reads in flight, bound %d",
                      ss.peak_in_flight, ss.max_in_flight);
        cr_assert_leq(ss.used, ss.reads);
        /* an early read the engine used is counted as one, not as a hit (which
         * made lookahead seem to save the reads it only moved), and every
         * read's bytes are counted once */
        cr_assert_gt(ss.used, 0, "lookahead %d: no early read was used: the counts below prove "
                     "nothing", la);
        cr_expect_eq(tl.early, ss.used, "lookahead %d: %llu used early reads counted early of %llu",
                     la, (unsigned long long)tl.early, (unsigned long long)ss.used);
        cr_expect_eq(tl.bytes_read, (tl.misses + ss.reads) * slot, "lookahead %d: %llu bytes read "
                     "for %llu reads on demand and %llu early", la,
                     (unsigned long long)tl.bytes_read, (unsigned long long)tl.misses,
                     (unsigned long long)ss.reads);
        cr_log_info("lookahead %d: recall %.3f, precision %.3f; %llu early reads, %llu used, peak "
                    "%d of %d in flight; %llu hits, %llu early, %llu misses", la,
                    (double)es.la_correct / (double)es.la_chosen,
                    (double)es.la_correct / (double)es.la_predicted,
                    (unsigned long long)ss.reads, (unsigned long long)ss.used,
                    ss.peak_in_flight, ss.max_in_flight, (unsigned long long)tl.hits,
                    (unsigned long long)tl.early, (unsigned long long)tl.misses);
    }
    engine_stats es;
    tier_spec_stats ss;
    tier_layer_stats tl;
    lookahead_run(dir, store_dir, gb, 0, &es, &ss, &tl);
    cr_expect_eq(tl.early, 0);
    cr_expect_eq(es.la_predicted, 0, "lookahead 0 still predicted");
    cr_expect_eq(ss.max_in_flight, 0, "lookahead 0 still reads early");
    cr_expect_eq(ss.reads, 0);
    test_remove_tree(dir);
    free(dir);
}

/* A live run (no lookahead) records its routing in steps of `chunk` tokens;
 * replaying that trace through the same policy, size and steps gives the live
 * DRAM tier's hits and misses exactly. Returns the live counts. */
static sim_result live_equals_replay(const char *dir, const char *store_dir, double gb,
                                     const char *policy, int chunk, int prompt, int total)
{
    char trace_path[4300];
    snprintf(trace_path, sizeof trace_path, "%s/live.trace", dir);
    cli_model m;
    model_flags f = {.dir = dir, .ctx = 64, .chunk = chunk, .quiet = 1, .trace = trace_path};
    f.tiers = (tier_flags){.store_dir = store_dir, .dram_gb = gb, .dram_gb_set = 1,
                           .policy = policy, .lookahead = 0, .lookahead_set = 1};
    errbuf e;
    cr_assert_eq(cli_model_open(&m, &f, &e), 0, "%s", e.msg);
    prefill_and_decode(&m, prompt, total);
    int slots = m.plan.dram_slots;
    tier_layer_stats all;
    cr_assert_eq(tiered_source_totals(&m.src, &all), 0);
    sim_result live = {.hits = all.hits, .misses = all.misses};
    cli_model_close(&m);    /* writes the trace */
    routing_trace t;
    cr_assert_eq(trace_read(&t, trace_path, &e), 0, "%s", e.msg);
    sim_result sim;
    cr_assert_eq(sim_replay(&t, policy, slots, 1, SIM_HITS_FIRST, chunk, &sim, &e), 0, "%s",
                 e.msg);
    cr_log_info("%s, %d slots, steps of %d: live %llu hits / %llu misses, replay %llu / %llu",
                policy, slots, chunk, (unsigned long long)live.hits,
                (unsigned long long)live.misses, (unsigned long long)sim.hits,
                (unsigned long long)sim.misses);
    cr_assert_gt(live.misses, 0, "the budget held every expert: nothing to compare");
    cr_expect_eq(sim.hits, live.hits, "%s, steps of %d: replay %llu hits, live %llu", policy,
                 chunk, (unsigned long long)sim.hits, (unsigned long long)live.hits);
    cr_expect_eq(sim.misses, live.misses, "%s, steps of %d: replay %llu misses, live %llu",
                 policy, chunk, (unsigned long long)sim.misses, (unsigned long long)live.misses);
    trace_free(&t);
    return live;
}

/* Decode (every token its own step) and prefill in steps of 16 tokens, which
 * want more experts than the tier holds: the prefill steps take the tier's
 * scan-resistant path and its reads ahead, and still replay exactly. Scan
 * resistance keeps hits that plain LRU loses there, and changes nothing in
 * decode, where a step fits the tier. */
Test(tiers, replay_equals_live, .timeout = 180)
{
    char *dir = synth_larger("int4", 64, 192, 6);
    char store_dir[4300];
    snprintf(store_dir, sizeof store_dir, "%s/store", dir);
    convert_store(dir, store_dir, 0, 0);
    double gb = 40 * (double)store_slot_bytes(dir, NULL) / 1e9 * 1.0000001;  /* 40 of 320 */
    const char *policies[] = {"lru", "lfu", "lru-plain"};
    sim_result decode[3], prefill[3];
    for (int pi = 0; pi < 3; pi++) {
        decode[pi] = live_equals_replay(dir, store_dir, gb, policies[pi], 1, 1, 20);
        prefill[pi] = live_equals_replay(dir, store_dir, gb, policies[pi], 16, 64, 64);
    }
    cr_expect_eq(decode[0].hits, decode[2].hits, "scan resistance changed decode: %llu hits "
                 "against %llu", (unsigned long long)decode[0].hits,
                 (unsigned long long)decode[2].hits);
    cr_expect_gt(prefill[0].hits, prefill[2].hits + prefill[2].hits / 2 + 10,
                 "prefill: %llu hits with scan resistance, %llu without",
                 (unsigned long long)prefill[0].hits, (unsigned long long)prefill[2].hits);
    test_remove_tree(dir);
    free(dir);
}

/* ---- faults and refusals ---- */

typedef struct fixture {
    char *tmp, *model, *store;
} fixture;

static fixture make_fixture(const char *tag)
{
    fixture f;
    f.tmp = test_make_tmpdir(tag);
    f.model = malloc(4200);
    f.store = malloc(4200);
    snprintf(f.model, 4200, "%s/model", f.tmp);
    snprintf(f.store, 4200, "%s/store", f.tmp);
    test_synth_tiny(f.model, "int4");
    convert_store(f.model, f.store, 0, 0);
    return f;
}

static void free_fixture(fixture *f)
{
    test_remove_tree(f->tmp);
    free(f->tmp);
    free(f->model);
    free(f->store);
}

static void expect_error(const fixture *f, const tier_flags *tf, const char *needle,
                         const char *needle2)
{
    int V = vocab_of(f->model);
    float *out = calloc((size_t)(T_PROMPT + T_STEPS) * (size_t)V, sizeof *out);
    errbuf e = {{0}};
    cr_expect_neq(run_logits(f->model, tf, out, &e), 0, "expected a failure mentioning '%s'", needle);
    cr_expect(strstr(e.msg, needle) != NULL, "error '%s' does not mention '%s'", e.msg, needle);
    if (needle2)
        cr_expect(strstr(e.msg, needle2) != NULL, "error '%s' does not mention '%s'", e.msg, needle2);
    free(out);
}

static double few_slots_gb(const fixture *f)
{
    store_layout L;
    model_weights mw;
    errbuf e;
    cr_assert_eq(model_weights_open(&mw, f->model, &e), 0, "%s", e.msg);
    cr_assert_eq(store_layout_for_model(&mw, &L, &e), 0, "%s", e.msg);
    double gb = (mw.cfg.n_experts_per_tok + 1) * (double)L.slot_bytes / 1e9;
    model_weights_close(&mw);
    return gb;
}

Test(tiers, persistent_eio_is_an_error, .timeout = 60)
{
    fixture f = make_fixture("eio");
    io_mode modes[] = {IO_AUTO, IO_PREAD};
    setenv("MOETIER_IO_FAULT", "eio=1", 1);
    for (int m = 0; m < 2; m++) {
        tier_flags tf = {.store_dir = f.store, .dram_gb = few_slots_gb(&f), .dram_gb_set = 1,
                         .io = modes[m]};
        expect_error(&f, &tf, "I/O error", "experts-00000.bin");
    }
    unsetenv("MOETIER_IO_FAULT");
    free_fixture(&f);
}

/* The first two layers of the store that hold routed experts. */
static void moe_layers_of(const store *st, int *a, int *b)
{
    *a = *b = -1;
    for (int l = 0; l < st->n_layers && *b < 0; l++)
        if (store_blob_at(st, l, 0)->file != UINT32_MAX) {
            if (*a < 0)
                *a = l;
            else
                *b = l;
        }
    cr_assert_geq(*b, 0, "the model has fewer than two MoE layers");
}

/* Opens the fixture's checkpoint and store; la, lb: its first two MoE layers. */
static void open_store(const fixture *f, model_weights *mw, store *st, int *la, int *lb)
{
    errbuf e;
    cr_assert_eq(model_weights_open(mw, f->model, &e), 0, "%s", e.msg);
    cr_assert_eq(store_open(st, f->store, mw, &e), 0, "%s", e.msg);
    moe_layers_of(st, la, lb);
}

static void close_store(fixture *f, model_weights *mw, store *st)
{
    store_close(st);
    model_weights_close(mw);
    free_fixture(f);
}

/* A ring that takes no read (every submission refused, as the kernel does when
 * it is short of memory) must end in an error that says so, not in a wait for
 * completions of reads the kernel never took. */
Test(tiers, refused_submissions_end_in_an_error_not_a_hang, .timeout = 60)
{
    fixture f = make_fixture("refuse");
    tier_flags tf = {.store_dir = f.store, .dram_gb = few_slots_gb(&f), .dram_gb_set = 1,
                     .io = IO_URING};
    setenv("MOETIER_IO_FAULT", "refuse=1", 1);
    model_weights mw;
    store st;
    errbuf e;
    int la, lb;
    open_store(&f, &mw, &st, &la, &lb);
    nvme_options o;
    nvme_options_default(&o);
    o.mode = IO_URING;
    nvme_tier *probe;
    if (nvme_tier_open(&probe, &st, &o, &e) != 0)
        cr_skip_test("%s", e.msg);
    nvme_tier_close(probe);
    expect_error(&f, &tf, "io_uring ring failed", "--io pread");
    /* `convert --check` stops there, saying so, rather than counting every
     * blob after it as damaged */
    cr_assert_eq(nvme_fault_from_env(&o.fault, &e), 0, "%s", e.msg);
    uint64_t bad = 0;
    cr_expect_neq(store_check(&st, &o, NULL, &bad, &e), 0, "the check went on without a ring");
    cr_expect(strstr(e.msg, "io_uring ring failed") && strstr(e.msg, "the check stopped"), "%s", e.msg);
    cr_expect_eq(bad, 0, "%llu blobs counted damaged", (unsigned long long)bad);
    unsetenv("MOETIER_IO_FAULT");
    close_store(&f, &mw, &st);
}

/* A ring that fails while the kernel holds reads: those reads may still write
 * their buffers, so close waits for them, and says it had to leave the buffers
 * allocated only when they do not end; here they end, and land whole. */
Test(tiers, close_after_a_failed_ring_waits_for_the_reads_the_kernel_took, .timeout = 60)
{
    enum { Q = 8 };
    fixture f = make_fixture("ringfail");
    model_weights mw;
    store st;
    errbuf e;
    int la, lb;
    open_store(&f, &mw, &st, &la, &lb);
    size_t sb = st.layout.slot_bytes;
    uint8_t *buf = aligned_alloc(STORE_ALIGN, Q * sb), *want = malloc(sb);
    memset(buf, 0xa5, Q * sb);
    char *log_text = NULL;
    size_t log_len = 0;
    nvme_options o;
    nvme_options_default(&o);
    o.mode = IO_URING;
    o.fault.ring_fail_at = 1;
    o.log = open_memstream(&log_text, &log_len);
    nvme_tier *t;
    if (nvme_tier_open(&t, &st, &o, &e) != 0)
        cr_skip_test("%s", e.msg);
    nvme_read r[Q];
    for (int x = 0; x < Q; x++) {
        r[x] = (nvme_read){.blob = store_blob_at(&st, lb, x), .dst = buf + (size_t)x * sb};
        nvme_tier_submit(t, &r[x]);
    }
    nvme_tier_flush(t);
    cr_expect_neq(nvme_tier_wait(t, &r[0], &e), 0, "the injected ring failure did not happen");
    cr_expect(strstr(e.msg, "io_uring ring failed") != NULL, "%s", e.msg);
    cr_expect_eq(nvme_tier_close(t), 0, "close left reads in the kernel");
    fflush(o.log);
    cr_expect_eq(log_len, 0, "%s", log_text);
    for (int x = 0; x < Q; x++) {
        const store_blob *b = r[x].blob;
        int fd = open(st.file_paths[b->file], O_RDONLY);
        cr_assert_geq(fd, 0);
        cr_assert_eq(pread(fd, want, b->bytes, (off_t)b->offset), (ssize_t)b->bytes);
        close(fd);
        cr_expect(!memcmp(buf + (size_t)x * sb, want, b->bytes), "read %d did not land", x);
    }
    fclose(o.log);
    free(log_text);
    free(want);
    free(buf);
    close_store(&f, &mw, &st);
}

/* The faults the invariance runs inject do happen, and are handled: short
 * reads continued, transient EIO retried, refused submissions sent again
 * (io_uring only); every read ends whole, with its checksum. */
Test(tiers, injected_faults_happen, .timeout = 60)
{
    fixture f = make_fixture("faults");
    model_weights mw;
    store st;
    errbuf e;
    int la, lb;
    open_store(&f, &mw, &st, &la, &lb);
    uint8_t *buf = aligned_alloc(STORE_ALIGN, 4 * st.layout.slot_bytes);
    const char *faults[] = {"short=2", "eio=3,eio_max=20", "refuse=2"};
    io_mode modes[] = {IO_AUTO, IO_PREAD};
    for (int m = 0; m < 2; m++)
        for (int k = 0; k < 3; k++) {
            if (k == 2 && modes[m] == IO_PREAD)
                continue;       /* no ring to refuse */
            nvme_options o;
            nvme_options_default(&o);
            o.mode = modes[m];
            setenv("MOETIER_IO_FAULT", faults[k], 1);
            cr_assert_eq(nvme_fault_from_env(&o.fault, &e), 0, "%s", e.msg);
            nvme_tier *t;
            cr_assert_eq(nvme_tier_open(&t, &st, &o, &e), 0, "%s", e.msg);
            if (modes[m] == IO_AUTO && !nvme_tier_uses_uring(t))
                cr_skip_test("io_uring is unavailable here");
            nvme_read r[4];
            for (int x = 0; x < 4; x++) {
                r[x] = (nvme_read){.blob = store_blob_at(&st, lb, x),
                                   .dst = buf + (size_t)x * st.layout.slot_bytes};
                nvme_tier_submit(t, &r[x]);
                nvme_tier_flush(t);     /* one submission each */
            }
            for (int x = 0; x < 4; x++)
                cr_expect_eq(nvme_tier_wait(t, &r[x], &e), 0, "%s, mode %d: %s", faults[k], m, e.msg);
            const nvme_stats *s = nvme_tier_stats(t);
            uint64_t seen = k == 0 ? s->short_reads : k == 1 ? s->retries : s->refused;
            cr_expect_gt(seen, 0, "%s, mode %d: the fault never happened", faults[k], m);
            nvme_tier_close(t);
        }
    unsetenv("MOETIER_IO_FAULT");
    free(buf);
    close_store(&f, &mw, &st);
}

/* A store that opens with O_DIRECT but whose reads are refused (EINVAL: blocks
 * over 4 KiB, some FUSE mounts) is read through the page cache, said once, and
 * the refusals are not counted as failed attempts. */
Test(tiers, o_direct_refused_by_the_reads_falls_back_to_buffered, .timeout = 60)
{
    fixture f = make_fixture("einval");
    model_weights mw;
    store st;
    errbuf e;
    int la, lb;
    open_store(&f, &mw, &st, &la, &lb);
    uint8_t *buf = aligned_alloc(STORE_ALIGN, st.layout.slot_bytes);
    io_mode modes[] = {IO_AUTO, IO_PREAD};
    for (int m = 0; m < 2; m++) {
        char *log_text = NULL;
        size_t log_len = 0;
        nvme_options o;
        nvme_options_default(&o);
        o.mode = modes[m];
        o.fault.einval_every = 1;
        o.log = open_memstream(&log_text, &log_len);
        nvme_tier *t;
        cr_assert_eq(nvme_tier_open(&t, &st, &o, &e), 0, "%s", e.msg);
        if (!nvme_tier_uses_direct(t))
            cr_skip_test("the test directory refuses O_DIRECT at open");
        for (int x = 0; x < 3; x++) {
            nvme_read r = {.blob = store_blob_at(&st, lb, x), .dst = buf};
            nvme_tier_submit(t, &r);
            nvme_tier_flush(t);
            cr_expect_eq(nvme_tier_wait(t, &r, &e), 0, "io mode %d, expert %d: %s", m, x, e.msg);
        }
        cr_expect_eq(nvme_tier_uses_direct(t), 0, "io mode %d: still reading with O_DIRECT", m);
        cr_expect_eq(nvme_tier_stats(t)->retries, 0, "io mode %d: refusals counted as failures", m);
        fflush(o.log);
        const char *said = strstr(log_text, "refuses O_DIRECT reads");
        cr_expect(said && !strstr(said + 1, "refuses"), "io mode %d: not said once: '%s'", m,
                  log_text);
        nvme_tier_close(t);
        fclose(o.log);
        free(log_text);
    }
    free(buf);
    close_store(&f, &mw, &st);
}

/* A predicted read that the layer's announcement (prefetch) also pinned, failing
 * for good while later predictions are pumped: its slot is freed with both pins,
 * and get() reads the expert again and reports the I/O error. (The freed slot
 * used to leave the announcement's pin behind: get() then found no slot and read
 * the slot tables at index -1.) */
Test(tiers, failed_predicted_read_that_was_also_announced, .timeout = 60)
{
    fixture f = make_fixture("specfail");
    model_weights mw;
    store st;
    errbuf e;
    int la, lb;
    open_store(&f, &mw, &st, &la, &lb);
    io_mode modes[] = {IO_AUTO, IO_PREAD};
    setenv("MOETIER_IO_FAULT", "eio=1", 1);
    for (int m = 0; m < 2; m++) {
        tiered_options o = {.dram_slots = 8, .spec_slots = 2};
        nvme_options_default(&o.io);
        o.io.mode = modes[m];
        cr_assert_eq(nvme_fault_from_env(&o.io.fault, &e), 0, "%s", e.msg);
        expert_source src;
        cr_assert_eq(tiered_source_open(&src, &st, &o, &e), 0, "%s", e.msg);
        cr_assert_not_null(src.speculate, "no speculation with 8 slots");
        int x = 3, y = 5;
        expert_source_speculate(&src, lb, &x, 1);  /* its read starts */
        expert_source_prefetch(&src, lb, &x, 1);   /* and the announcement pins it too */
        /* predictions for another layer pump the reads: x's fails for good */
        for (int i = 0; i < 100; i++) {
            usleep(1000);
            expert_source_speculate(&src, la, &y, 1);
        }
        expert_view v;
        errbuf ge = {{0}};
        cr_expect_neq(expert_source_get(&src, lb, x, &v, &ge), 0, "the failed read was served");
        cr_expect(strstr(ge.msg, "I/O error") != NULL, "error '%s' is not the I/O error", ge.msg);
        src.destroy(&src);
    }
    unsetenv("MOETIER_IO_FAULT");
    close_store(&f, &mw, &st);
}

/* prefetch() reserves the announced experts from the first while slots allow
 * and says how many; peek() hands over a resident expert's views (the bytes
 * get() would give) without a pin, a hit or a change to what LRU evicts next,
 * and nothing for one that is not resident. */
Test(tiers, prefetch_counts_reserved_and_peek_changes_nothing, .timeout = 60)
{
    fixture f = make_fixture("peek");
    model_weights mw;
    store st;
    errbuf e;
    int la, lb;
    open_store(&f, &mw, &st, &la, &lb);
    tiered_options o = {.dram_slots = 4, .spec_slots = -1, .policy = "lru"};
    nvme_options_default(&o.io);
    expert_source src;
    cr_assert_eq(tiered_source_open(&src, &st, &o, &e), 0, "%s", e.msg);
    cr_assert_eq(src.max_held, 1, "4 slots hold every expert of the model");
    cr_assert_not_null(src.peek);
    int six[] = {0, 1, 2, 3, 4, 5};
    cr_expect_eq(expert_source_prefetch(&src, la, six, 6), 4, "4 slots: 4 reserved");
    expert_view v[4], p;
    for (int i = 0; i < 4; i++)     /* all four held at once, as the engine may */
        cr_assert_eq(expert_source_get(&src, la, i, &v[i], &e), 0, "%s", e.msg);
    for (int i = 0; i < 4; i++)
        expert_source_put(&src, la, i);
    cr_expect_eq(expert_source_prefetch(&src, la, six + 1, 2), 2);
    for (int i = 1; i < 3; i++) {
        cr_assert_eq(expert_source_get(&src, la, i, &v[i], &e), 0, "%s", e.msg);
        expert_source_put(&src, la, i);
    }
    /* LRU order now, oldest first: 0, 3, 1, 2 */
    int n_layers;
    const tier_layer_stats *ls = tiered_source_stats(&src, &n_layers);
    uint64_t hits = ls[la].hits, misses = ls[la].misses;
    cr_assert_eq(src.peek(&src, la, 0, &p), 0, "expert 0 is resident");
    cr_expect_eq(p.gate.data, v[0].gate.data, "peek gives other bytes than get");
    cr_expect_eq(p.down.data, v[0].down.data);
    cr_expect_eq(p.origin, EXPERT_DRAM);
    cr_expect_neq(src.peek(&src, la, 5, &p), 0, "expert 5 was never read");
    cr_expect_neq(src.peek(&src, lb, 0, &p), 0, "layer %d expert 0 was never read", lb);
    cr_expect_neq(src.peek(&src, -1, 0, &p), 0);
    cr_expect_neq(src.peek(&src, la, st.n_experts, &p), 0);
    cr_expect_eq(ls[la].hits, hits, "peek counted a hit");
    cr_expect_eq(ls[la].misses, misses);
    /* a new expert evicts the oldest, 0, as if the peek had not happened */
    cr_assert_eq(expert_source_get(&src, la, 6, &p, &e), 0, "%s", e.msg);
    expert_source_put(&src, la, 6);
    cr_expect_neq(src.peek(&src, la, 0, &p), 0, "the peek kept expert 0 from being evicted");
    cr_expect_eq(src.peek(&src, la, 3, &p), 0, "expert 3 was evicted instead of 0");
    src.destroy(&src);
    close_store(&f, &mw, &st);
}

static void flip_byte(const char *path, long offset)
{
    int fd = open(path, O_RDWR);
    cr_assert_geq(fd, 0, "open %s", path);
    unsigned char b;
    cr_assert_eq(pread(fd, &b, 1, offset), 1);
    b ^= 0x40;
    cr_assert_eq(pwrite(fd, &b, 1, offset), 1);
    close(fd);
}

/* A step that wants more experts than the tier holds: prefetch reserves what
 * the free slots take, then the tier keeps TIER_READ_AHEAD of the rest reserved
 * ahead of the engine as it takes them (reserved() reports the run), and the
 * next step finds most of the first step's experts still there, where plain LRU
 * has cycled them out. */
static uint64_t scan_two_steps(const store *st, int layer, const char *policy, int slots)
{
    tiered_options o = {.dram_slots = slots, .spec_slots = -1, .policy = policy};
    nvme_options_default(&o.io);
    expert_source src;
    errbuf e;
    cr_assert_eq(tiered_source_open(&src, st, &o, &e), 0, "%s", e.msg);
    cr_assert_not_null(src.reserved);
    int n = st->n_experts, list[512];
    cr_assert_gt(n, slots + TIER_READ_AHEAD, "the test wants more experts than slots");
    for (int x = 0; x < n; x++)
        list[x] = x;
    int n_layers;
    const tier_layer_stats *ls = tiered_source_stats(&src, &n_layers);
    for (int step = 0; step < 2; step++) {
        int r = expert_source_prefetch(&src, layer, list, n);
        cr_expect_eq(src.reserved(&src, layer, list, n), r, "%s: prefetch reserved %d", policy, r);
        if (step == 0)
            cr_expect_eq(r, slots, "%s: the free slots are reserved at once", policy);
        for (int k = 0; k < n; k++) {
            expert_view v;
            cr_assert_eq(expert_source_get(&src, layer, k, &v, &e), 0, "%s", e.msg);
            int ahead = src.reserved(&src, layer, list + k + 1, n - k - 1);
            int want = n - k - 1 < TIER_READ_AHEAD ? n - k - 1 : TIER_READ_AHEAD;
            cr_expect_geq(ahead, want, "%s, step %d: %d reserved ahead after expert %d", policy,
                          step, ahead, k);
            expert_source_put(&src, layer, k);
        }
    }
    uint64_t second_step_hits = ls[layer].hits;
    src.destroy(&src);
    return second_step_hits;
}

Test(tiers, reads_ahead_of_the_engine_in_a_step_larger_than_the_tier, .timeout = 60)
{
    fixture f = make_fixture("scan");
    model_weights mw;
    store st;
    int la, lb;
    open_store(&f, &mw, &st, &la, &lb);
    uint64_t lru = scan_two_steps(&st, la, "lru", 12);
    uint64_t plain = scan_two_steps(&st, la, "lru-plain", 12);
    cr_log_info("second step of %d experts through 12 slots: %llu hits with scan resistance, %llu "
                "without", st.n_experts, (unsigned long long)lru, (unsigned long long)plain);
    cr_expect_eq(plain, 0, "plain LRU kept %llu of a cycle larger than it",
                 (unsigned long long)plain);
    /* the 12 slots less the reads ahead and the one in use */
    cr_expect_geq(lru, 12 - TIER_READ_AHEAD - 1, "%llu hits", (unsigned long long)lru);
    close_store(&f, &mw, &st);
}

/* prefetch() may wait for predicted reads to free a slot; one that fails takes
 * its expert's reservation along (prefetch had reserved it as a hit), and the
 * count prefetch returns must leave it out: a backend that plans batches holds
 * that many experts at once without more slots. */
Test(tiers, prefetch_count_leaves_out_a_reservation_a_failed_read_took, .timeout = 60)
{
    fixture f = make_fixture("specresv");
    model_weights mw;
    store st;
    errbuf e;
    int la, lb;
    open_store(&f, &mw, &st, &la, &lb);
    int predicted[] = {3, 20}, announced[] = {3, 10, 11, 12};
    const store_blob *b = store_blob_at(&st, lb, predicted[0]);
    flip_byte(st.file_paths[b->file], (long)(b->offset + 100));
    tiered_options o = {.dram_slots = 4, .spec_slots = 2};
    nvme_options_default(&o.io);
    expert_source src;
    cr_assert_eq(tiered_source_open(&src, &st, &o, &e), 0, "%s", e.msg);
    cr_assert_not_null(src.speculate, "no speculation with 4 slots");
    expert_source_speculate(&src, lb, predicted, 2);
    /* 3 is in flight: reserved as a hit; 12 finds every slot taken, and waiting
     * for the predicted reads fails 3's */
    int held = expert_source_prefetch(&src, lb, announced, 4);
    int truly = src.reserved(&src, lb, announced, 4);
    cr_expect_eq(held, truly, "prefetch says it holds %d experts, it holds %d", held, truly);
    expert_view v;
    errbuf ge = {{0}};
    cr_expect_neq(expert_source_get(&src, lb, 3, &v, &ge), 0, "the damaged expert was served");
    src.destroy(&src);
    close_store(&f, &mw, &st);
}

/* A damaged blob whose predicted read get() finds in flight, while the engine
 * reads ahead of it: waiting for the predictions (the slots are few) fails that
 * read and frees its slot, which the next announced expert takes. get() must
 * report the damage, not hand over the bytes that expert's read put there. */
Test(tiers, failed_predicted_read_never_serves_another_experts_bytes, .timeout = 60)
{
    fixture f = make_fixture("specother");
    model_weights mw;
    store st;
    errbuf e;
    int la, lb;
    open_store(&f, &mw, &st, &la, &lb);
    const store_blob *b = store_blob_at(&st, lb, 3);
    flip_byte(st.file_paths[b->file], (long)(b->offset + 100));
    io_mode modes[] = {IO_AUTO, IO_PREAD};
    for (int m = 0; m < 2; m++) {
        tiered_options o = {.dram_slots = 4, .spec_slots = 1};
        nvme_options_default(&o.io);
        o.io.mode = modes[m];
        expert_source src;
        cr_assert_eq(tiered_source_open(&src, &st, &o, &e), 0, "%s", e.msg);
        cr_assert_not_null(src.speculate, "no speculation with 4 slots");
        int x = 3, announced[] = {3, 10, 11, 12, 13};
        expert_source_speculate(&src, lb, &x, 1);
        expert_source_prefetch(&src, lb, announced, 5);
        expert_view v;
        errbuf ge = {{0}};
        int rc = expert_source_get(&src, lb, x, &v, &ge);
        cr_expect_neq(rc, 0, "io mode %d: the damaged expert was served (its gate bytes are %s)", m,
                      rc ? "-" : !memcmp(v.gate.data, mw.experts[lb * st.n_experts + 13].gate.data,
                                         64) ? "expert 13's" : "other");
        cr_expect(strstr(ge.msg, "checksum") != NULL, "error '%s' is not the checksum's", ge.msg);
        src.destroy(&src);
    }
    close_store(&f, &mw, &st);
}

/* Random steps through few slots, with damaged experts, predictions for the
 * layer and for another, and predictions pumped between gets: a damaged expert
 * always fails with the read's own error, never "the budget is too small", and
 * every other expert comes with its own bytes. */
Test(tiers, damaged_experts_in_random_steps_fail_with_the_damage, .timeout = 120)
{
    fixture f = make_fixture("randfail");
    model_weights mw;
    store st;
    errbuf e;
    int la, lb;
    open_store(&f, &mw, &st, &la, &lb);
    int E = st.n_experts, order[512];
    cr_assert_leq(E, 512);
    test_rng g = {0x5eed};
    for (int round = 0; round < 60; round++) {
        int bad[2];
        for (int i = 0; i < 2; i++) {
            do
                bad[i] = (int)test_rnd(&g, (unsigned)E);
            while (i && bad[i] == bad[0]);
            const store_blob *b = store_blob_at(&st, lb, bad[i]);
            flip_byte(st.file_paths[b->file], (long)(b->offset + 100));
        }
        tiered_options o = {.dram_slots = 2 + (int)test_rnd(&g, 5),
                            .spec_slots = 1 + (int)test_rnd(&g, 2)};
        nvme_options_default(&o.io);
        o.io.mode = round % 2 ? IO_PREAD : IO_AUTO;
        expert_source src;
        cr_assert_eq(tiered_source_open(&src, &st, &o, &e), 0, "%s", e.msg);
        for (int step = 0; step < 6; step++) {
            int layer = step % 2 ? la : lb, other = step % 2 ? lb : la;
            int n = 2 + (int)test_rnd(&g, (unsigned)(E - 2));
            for (int i = 0; i < E; i++)
                order[i] = i;
            for (int i = 0; i < n; i++) {
                int j = i + (int)test_rnd(&g, (unsigned)(E - i));
                int tmp = order[i];
                order[i] = order[j];
                order[j] = tmp;
            }
            expert_source_speculate(&src, layer, bad, 2);
            expert_source_prefetch(&src, layer, order, n);
            for (int k = 0; k < n; k++) {
                if (test_rnd(&g, 2)) {
                    usleep(200);
                    expert_source_speculate(&src, other, bad, 2);
                }
                expert_view v;
                errbuf ge = {{0}};
                int x = order[k], rc = expert_source_get(&src, layer, x, &v, &ge);
                int damaged = layer == lb && (x == bad[0] || x == bad[1]);
                if (damaged)
                    cr_expect(rc != 0 && strstr(ge.msg, "checksum"), "round %d, %d slots: expert "
                              "%d of %d: '%s' is not the damage", round, o.dram_slots, k, n,
                              rc ? ge.msg : "served");
                else
                    cr_expect(rc == 0 && !memcmp(v.gate.data, mw.experts[layer * E + x].gate.data,
                                                 64), "round %d, %d slots: expert %d of %d: %s",
                              round, o.dram_slots, k, n, rc ? ge.msg : "other bytes");
                if (rc == 0)
                    expert_source_put(&src, layer, x);
            }
        }
        src.destroy(&src);
        for (int i = 0; i < 2; i++) {
            const store_blob *b = store_blob_at(&st, lb, bad[i]);
            flip_byte(st.file_paths[b->file], (long)(b->offset + 100));
        }
    }
    close_store(&f, &mw, &st);
}

/* A failed predicted read of a reserved expert, in a step that announces every
 * expert of a layer through fewer slots: the expert is read again when the
 * engine reaches it, and the reservation list (one entry per expert of a layer)
 * must not take it twice. Under ASan an overflow of the list is reported here. */
Test(tiers, reservation_lost_to_a_failed_read_is_listed_once, .timeout = 60)
{
    fixture f = make_fixture("relist");
    model_weights mw;
    store st;
    errbuf e;
    int la, lb;
    open_store(&f, &mw, &st, &la, &lb);
    int E = st.n_experts, x = 10, *all = malloc((size_t)E * sizeof *all);
    for (int i = 0; i < E; i++)
        all[i] = i;
    const store_blob *b = store_blob_at(&st, lb, x);
    tiered_options o = {.dram_slots = E / 2, .spec_slots = 4};
    nvme_options_default(&o.io);
    expert_source src;
    cr_assert_eq(tiered_source_open(&src, &st, &o, &e), 0, "%s", e.msg);
    expert_view v;
    /* layer la fills every slot, so layer lb's step scans the tier */
    expert_source_prefetch(&src, la, all, E / 2);
    for (int i = 0; i < E / 2; i++) {
        cr_assert_eq(expert_source_get(&src, la, i, &v, &e), 0, "%s", e.msg);
        expert_source_put(&src, la, i);
    }
    flip_byte(st.file_paths[b->file], (long)(b->offset + 100));
    expert_source_speculate(&src, lb, &x, 1);       /* x's predicted read will fail */
    expert_source_prefetch(&src, lb, all, E);       /* reserves x, in flight, out of turn */
    int other[] = {0, 1, 2, 3};
    const tier_spec_stats *ss = tiered_source_spec_stats(&src);
    for (int i = 0; ss->failed == 0 && i < 20000; i++) {   /* pumping reaps x's failure */
        usleep(1000);
        expert_source_speculate(&src, la, other, 4);
    }
    cr_assert_eq(ss->failed, 1, "%llu predicted reads failed, expected x's",
                 (unsigned long long)ss->failed);
    flip_byte(st.file_paths[b->file], (long)(b->offset + 100));   /* the damage was passing */
    for (int i = 0; i < E; i++) {
        errbuf ge = {{0}};
        cr_expect_eq(expert_source_get(&src, lb, i, &v, &ge), 0, "expert %d: %s", i, ge.msg);
        expert_source_put(&src, lb, i);
    }
    src.destroy(&src);
    free(all);
    close_store(&f, &mw, &st);
}

Test(tiers, corrupted_blob_names_expert_and_offset, .timeout = 60)
{
    fixture f = make_fixture("corrupt");
    store st;
    model_weights mw;
    errbuf e;
    cr_assert_eq(model_weights_open(&mw, f.model, &e), 0, "%s", e.msg);
    cr_assert_eq(store_open(&st, f.store, &mw, &e), 0, "%s", e.msg);
    /* damage the blob of layer 2, expert 5 */
    const store_blob *b = store_blob_at(&st, 2, 5);
    char want[128];
    snprintf(want, sizeof want, "offset %llu", (unsigned long long)b->offset);
    flip_byte(st.file_paths[b->file], (long)(b->offset + 100));
    nvme_options io;
    nvme_options_default(&io);
    uint64_t bad = 0;
    cr_assert_eq(store_check(&st, &io, NULL, &bad, &e), 0, "%s", e.msg);
    cr_expect_eq(bad, 1, "--check found %llu bad blobs, expected 1", (unsigned long long)bad);
    store_close(&st);
    model_weights_close(&mw);

    /* every expert is read at load when all fit, so the damage is found there */
    tier_flags all = {.store_dir = f.store, .dram_gb = 1000, .dram_gb_set = 1};
    expect_error(&f, &all, "checksum", want);

    /* with a small tier, during the run: the error names its expert once */
    cr_assert_eq(model_weights_open(&mw, f.model, &e), 0, "%s", e.msg);
    cr_assert_eq(store_open(&st, f.store, &mw, &e), 0, "%s", e.msg);
    for (int i = 0; i < st.n_files; i++) {
        struct stat sb;
        cr_assert_eq(stat(st.file_paths[i], &sb), 0);
        for (long at = 100; at < (long)sb.st_size; at += 4096)
            flip_byte(st.file_paths[i], at);
    }
    store_close(&st);
    model_weights_close(&mw);
    tier_flags small = {.store_dir = f.store, .dram_gb = 0.001, .dram_gb_set = 1};
    float *out = calloc((size_t)(T_PROMPT + T_STEPS) * (size_t)vocab_of(f.model), sizeof *out);
    cr_assert_neq(run_logits(f.model, &small, out, &e), 0, "a damaged store gave logits");
    cr_expect(!strncmp(e.msg, "checksum mismatch for layer ", 28), "%s", e.msg);
    free(out);
    free_fixture(&f);
}

Test(tiers, truncated_store_file_is_refused, .timeout = 60)
{
    fixture f = make_fixture("trunc");
    char path[4300];
    snprintf(path, sizeof path, "%s/experts-00000.bin", f.store);
    cr_assert_eq(truncate(path, 8192), 0);
    tier_flags tf = {.store_dir = f.store};
    expect_error(&f, &tf, "truncated", "experts-00000.bin");
    free_fixture(&f);
}

/* A checkpoint of the fixture's shapes with other weights, in f.tmp/other. */
static void synth_other_checkpoint(const fixture *f, char *other, size_t size)
{
    snprintf(other, size, "%s/other", f->tmp);
    synth_options o = synth_options_default();
    errbuf e;
    synth_format_parse("int4", &o.format, &e);
    o.out_dir = other;
    o.force = 1;
    o.seed = 4;
    cr_assert_eq(synth_run(&o, &e), 0, "%s", e.msg);
}

Test(tiers, store_of_another_checkpoint_is_refused, .timeout = 60)
{
    fixture f = make_fixture("other");
    char other[4300];
    synth_other_checkpoint(&f, other, sizeof other);
    errbuf e;
    tier_flags tf = {.store_dir = f.store};
    fixture g = f;
    g.model = other;
    expect_error(&g, &tf, "another checkpoint", "-o ANOTHER_DIR");
    /* converting the other checkpoint there keeps the store unless told
     * (a mistyped -m used to wipe it before writing anything) */
    char *log = NULL;
    cr_expect_neq(convert_logged(other, f.store, 0, 0, &log, &e), 0, "the store was replaced");
    cr_expect(strstr(e.msg, "another checkpoint") && strstr(e.msg, "--force"), "%s", e.msg);
    free(log);
    store st;
    model_weights mw;
    cr_assert_eq(model_weights_open(&mw, f.model, &e), 0, "%s", e.msg);
    cr_expect_eq(store_open(&st, f.store, &mw, &e), 0, "the refused conversion damaged the store: %s",
                 e.msg);
    store_close(&st);
    model_weights_close(&mw);
    /* of another store version too: it is still another checkpoint's */
    char ipath[4400];
    snprintf(ipath, sizeof ipath, "%s/%s", f.store, STORE_INDEX_JSON);
    size_t n;
    char *index = test_read_file(ipath, &n), *v = strstr(index, "\"version\":\t1,");
    cr_assert_not_null(v, "%s", index);
    v[11] = '7';
    FILE *fi = fopen(ipath, "w");
    cr_assert_not_null(fi);
    fwrite(index, 1, n, fi);
    fclose(fi);
    free(index);
    cr_expect_neq(convert_logged(other, f.store, 0, 0, &log, &e), 0, "a version 7 store was replaced");
    cr_expect(strstr(e.msg, "another checkpoint"), "%s", e.msg);
    free(log);
    cr_assert_eq(convert_logged(other, f.store, 0, 1, &log, &e), 0, "--force: %s", e.msg);
    free(log);
    cr_assert_eq(model_weights_open(&mw, other, &e), 0, "%s", e.msg);
    cr_expect_eq(store_open(&st, f.store, &mw, &e), 0, "--force did not rebuild it: %s", e.msg);
    store_close(&st);
    model_weights_close(&mw);
    free_fixture(&f);
}

/* A complete store that cannot be read whole (a data file behind a link to
 * a disk not mounted, an I/O error) may be all there is of hours of
 * conversion: convert says why and changes nothing (it used to take it for a
 * damaged one and empty every file to rebuild it); once it can be read it is
 * complete again. */
Test(tiers, convert_keeps_a_store_it_cannot_read, .timeout = 60)
{
    fixture f = make_fixture("unreadable");
    char file0[4400], moved[4400], link_to[4400];
    store_file_path(f.store, 0, file0, sizeof file0);
    snprintf(moved, sizeof moved, "%s/experts-moved.bin", f.tmp);
    snprintf(link_to, sizeof link_to, "%s/not-mounted/experts-00000.bin", f.tmp);
    struct stat before;
    cr_assert_eq(stat(file0, &before), 0);
    cr_assert_eq(rename(file0, moved), 0);
    cr_assert_eq(symlink(link_to, file0), 0);
    errbuf e;
    char *log = NULL;
    cr_expect_neq(convert_logged(f.model, f.store, 0, 0, &log, &e), 0, "the store was rebuilt");
    cr_expect(strstr(e.msg, "symbolic link") && strstr(e.msg, "not mounted") && strstr(e.msg, "nothing was changed"),
              "%s", e.msg);
    free(log);
    struct stat sb;
    cr_expect_neq(stat(link_to, &sb), 0, "convert wrote through the link to nothing");
    char ipath[4400];
    snprintf(ipath, sizeof ipath, "%s/%s", f.store, STORE_INDEX_JSON);
    cr_expect_eq(stat(ipath, &sb), 0, "the index was removed");
    cr_assert_eq(unlink(file0), 0);
    cr_assert_eq(rename(moved, file0), 0);
    cr_assert_eq(stat(file0, &sb), 0);
    cr_expect_eq(sb.st_size, before.st_size, "the data file was cut");
    /* a directory in a data file's place: named and kept, nothing changed (its
     * size was taken for a damaged file's, and the store rebuilt over it) */
    cr_assert_eq(rename(file0, moved), 0);
    cr_assert_eq(mkdir(file0, 0755), 0);
    cr_expect_neq(convert_logged(f.model, f.store, 0, 0, &log, &e), 0, "the store was rebuilt");
    cr_expect(strstr(e.msg, "is a directory") && strstr(e.msg, "nothing was changed"), "%s", e.msg);
    free(log);
    cr_expect_eq(stat(ipath, &sb), 0, "the index was removed");
    cr_assert_eq(rmdir(file0), 0);
    cr_assert_eq(rename(moved, file0), 0);
    store st;
    model_weights mw;
    cr_assert_eq(model_weights_open(&mw, f.model, &e), 0, "%s", e.msg);
    cr_expect_eq(store_open(&st, f.store, &mw, &e), 0, "the store is not whole again: %s", e.msg);
    store_close(&st);
    model_weights_close(&mw);
    free_fixture(&f);
}

/* What is not a usable store is said to be so, and kept: an index.json of
 * someone else's in convert's -o, a FIFO in place of the index (reading it
 * waited forever), a file where the default store's folder would be, a link
 * to nothing. */
Test(tiers, what_is_not_a_store_is_named_and_kept, .timeout = 60)
{
    fixture f = make_fixture("notstore");
    char dir[4400], ipath[4500];
    snprintf(dir, sizeof dir, "%s/out", f.tmp);
    snprintf(ipath, sizeof ipath, "%s/%s", dir, STORE_INDEX_JSON);
    cr_assert_eq(mkdir(dir, 0755), 0);
    const char *theirs = "{\"my\": \"data\"}\n";
    test_write_file(ipath, theirs, strlen(theirs));
    char *log = NULL;
    errbuf e;
    cr_expect_neq(convert_logged(f.model, dir, 0, 0, &log, &e), 0, "another index.json was replaced");
    cr_expect(strstr(e.msg, "not an expert store") && strstr(e.msg, "--force"), "%s", e.msg);
    free(log);
    size_t n;
    char *kept = test_read_file(ipath, &n);
    cr_expect_str_eq(kept, theirs);
    free(kept);
    cr_expect_eq(convert_logged(f.model, dir, 0, 1, &log, &e), 0, "--force: %s", e.msg);
    free(log);

    /* a FIFO as the index: an error at once, from run and convert alike */
    snprintf(ipath, sizeof ipath, "%s/%s", f.store, STORE_INDEX_JSON);
    cr_assert_eq(unlink(ipath), 0);
    cr_assert_eq(mkfifo(ipath, 0644), 0);
    tier_flags tf = {.store_dir = f.store};
    expect_error(&f, &tf, "FIFO", ipath);
    cr_expect_neq(convert_logged(f.model, f.store, 0, 0, &log, &e), 0, "a FIFO index was taken");
    cr_expect(strstr(e.msg, "FIFO"), "%s", e.msg);
    free(log);

    /* a FIFO or directory where convert writes a file of its own: refused at
     * once, --force or not, and kept (writing or reading one waited forever,
     * or failed after the whole conversion) */
    const char *own_files[] = {STORE_JOURNAL, STORE_INDEX_BIN, STORE_JOURNAL_SOURCES, STORE_INDEX_JSON};
    for (int i = 0; i < 4; i++)
        for (int force = 0; force < 2; force++) {
            char fresh[4400], p[4500];
            snprintf(fresh, sizeof fresh, "%s/own%d%d", f.tmp, i, force);
            snprintf(p, sizeof p, "%s/%s", fresh, own_files[i]);
            cr_assert_eq(mkdir(fresh, 0755), 0);
            cr_assert_eq(i == 3 ? mkdir(p, 0755) : mkfifo(p, 0644), 0);
            cr_expect_neq(convert_logged(f.model, fresh, 0, force, &log, &e), 0, "%s was taken", p);
            cr_expect(strstr(e.msg, p) && strstr(e.msg, i == 3 ? "is a directory" : "is a FIFO") &&
                      strstr(e.msg, "move it away"), "%s", e.msg);
            free(log);
            struct stat sb;
            cr_expect(stat(p, &sb) == 0 && !S_ISREG(sb.st_mode), "%s was replaced", p);
        }
    /* a data file, the first or a later one: refused before any expert is
     * written (a later one was found after all the files before it) */
    for (int file = 0; file < 2; file++) {
        char fresh[4400], data[4500];
        snprintf(fresh, sizeof fresh, "%s/owndata%d", f.tmp, file);
        cr_assert_eq(mkdir(fresh, 0755), 0);
        store_file_path(fresh, file, data, sizeof data);
        cr_assert_eq(mkfifo(data, 0644), 0);
        cr_expect_neq(convert_logged(f.model, fresh, 20 * 57344, 0, &log, &e), 0,
                      "a FIFO data file was taken");
        cr_expect(strstr(e.msg, data) && strstr(e.msg, "is a FIFO, where an expert store keeps a "
                                                       "data file"), "%s", e.msg);
        free(log);
        char first[4500];
        store_file_path(fresh, 0, first, sizeof first);
        cr_expect(file == 0 || !test_path_exists(first), "experts were written before the refusal");
    }

    /* the default store's folder is a file: not "there is none" */
    char own[4400];
    snprintf(own, sizeof own, "%s/%s", f.model, DEFAULT_STORE_NAME);
    test_write_file(own, "x", 1);
    tier_flags none = {0};
    expect_error(&f, &none, "cannot be used", "Not a directory");

    /* a symbolic link to nothing (a disk not mounted), as the default store,
     * as --store and as convert's -o: named as such, not run without it or
     * reported as a missing temporary file */
    cr_assert_eq(unlink(own), 0);
    char gone[4400];
    snprintf(gone, sizeof gone, "%s/unmounted", f.tmp);
    cr_assert_eq(symlink(gone, own), 0);
    expect_error(&f, &none, "symbolic link", gone);
    tier_flags linked = {.store_dir = own};
    expect_error(&f, &linked, "symbolic link", gone);
    cr_expect_neq(convert_logged(f.model, own, 0, 0, &log, &e), 0, "a link to nothing was converted into");
    cr_expect(strstr(e.msg, "symbolic link") && strstr(e.msg, gone), "%s", e.msg);
    free(log);
    free_fixture(&f);
}

/* Flips one byte of the data of layer l expert x's gate in its shard, one the
 * fingerprint's samples do not read (the change the fingerprint can miss);
 * returns the shard's index, *at the byte's offset. */
static int flip_unsampled_expert_byte(const char *model, int l, int x, long *at)
{
    model_weights mw;
    errbuf e;
    cr_assert_eq(model_weights_open(&mw, model, &e), 0, "%s", e.msg);
    uint64_t fp0, fp;
    cr_assert_eq(store_fingerprint(&mw, &fp0, &e), 0, "%s", e.msg);
    const linear_weight *g = &mw.experts[(size_t)l * (size_t)mw.cfg.n_routed_experts + (size_t)x].gate;
    uint64_t bytes = linear_weight_data_bytes(g);
    int shard = -1;
    for (int i = 0; i < mw.ckpt.n_files; i++)
        if ((const uint8_t *)g->data >= mw.ckpt.files[i].map &&
            (const uint8_t *)g->data < mw.ckpt.files[i].map + mw.ckpt.files[i].size)
            shard = i;
    cr_assert_geq(shard, 0);
    char path[4200];
    snprintf(path, sizeof path, "%s", mw.ckpt.files[shard].path);
    long base = (long)((const uint8_t *)g->data - mw.ckpt.files[shard].map);
    model_weights_close(&mw);
    for (uint64_t k = 0; k < bytes; k += 512) {
        flip_byte(path, base + (long)k);
        cr_assert_eq(model_weights_open(&mw, model, &e), 0, "%s", e.msg);
        cr_assert_eq(store_fingerprint(&mw, &fp, &e), 0, "%s", e.msg);
        model_weights_close(&mw);
        if (fp == fp0) {
            *at = base + (long)k;
            return shard;
        }
        flip_byte(path, base + (long)k);
    }
    cr_assert_fail("every byte of the expert is in a sampled page");
    return -1;
}

static void expect_changed_sources(const fixture *f, int n, const char *name)
{
    model_weights mw;
    store st;
    errbuf e;
    cr_assert_eq(model_weights_open(&mw, f->model, &e), 0, "%s", e.msg);
    cr_assert_eq(store_open(&st, f->store, &mw, &e), 0, "%s", e.msg);
    cr_expect(st.source_times, "the store has no times");
    cr_expect_eq(st.n_changed_sources, n, "%d shards changed, expected %d", st.n_changed_sources, n);
    if (name)
        cr_expect_str_eq(st.changed_source, name);
    store_close(&st);
    model_weights_close(&mw);
}

/* Compares the store with the checkpoint; *first gets the first line. */
static uint64_t source_differences(const fixture *f, int record, char *first, size_t n)
{
    model_weights mw;
    store st;
    errbuf e;
    cr_assert_eq(model_weights_open(&mw, f->model, &e), 0, "%s", e.msg);
    cr_assert_eq(store_open(&st, f->store, &mw, &e), 0, "%s", e.msg);
    char *text = NULL;
    size_t len = 0;
    FILE *log = open_memstream(&text, &len);
    uint64_t differ = 0;
    cJSON *before = store_source_files_json(&mw, &e);
    cr_assert(before, "%s", e.msg);
    cr_assert_eq(store_source_check(&st, &mw, log, &differ, &e), 0, "%s", e.msg);
    fclose(log);
    snprintf(first, n, "%.*s", (int)strcspn(text, "\n"), text);
    free(text);
    if (record && !differ)
        cr_assert_eq(store_source_record(&st, before, &e), 0, "%s", e.msg);
    cJSON_Delete(before);
    store_close(&st);
    model_weights_close(&mw);
    return differ;
}

/* A change to part of a checkpoint's experts that the fingerprint's samples
 * miss: the store served the old experts without a word. The shard's time
 * moved, so every open says so, and the comparison with the checkpoint names
 * the expert; when they agree again, the new times are recorded and the
 * warning stops. A store from before the times were recorded has none. */
Test(tiers, a_checkpoint_changed_after_conversion_is_reported, .timeout = 60)
{
    fixture f = make_fixture("source");
    expect_changed_sources(&f, 0, NULL);
    long at;
    struct timespec pause = {0, 20 * 1000 * 1000};   /* a time the file system can tell apart */
    nanosleep(&pause, NULL);
    int shard = flip_unsampled_expert_byte(f.model, 1, 3, &at);
    model_weights mw;
    errbuf e;
    cr_assert_eq(model_weights_open(&mw, f.model, &e), 0, "%s", e.msg);
    char path[4200], name[256];
    snprintf(path, sizeof path, "%s", mw.ckpt.files[shard].path);
    snprintf(name, sizeof name, "%s", strrchr(path, '/') + 1);
    model_weights_close(&mw);
    expect_changed_sources(&f, 1, name);
    char first[512];
    cr_expect_eq(source_differences(&f, 1, first, sizeof first), 1);
    cr_expect_str_eq(first, "moetier: layer 1 expert 3 of the checkpoint differs from the store's");
    expect_changed_sources(&f, 1, name);        /* nothing recorded while they differ */

    nanosleep(&pause, NULL);
    flip_byte(path, at);                        /* back as it was, at a later time */
    expect_changed_sources(&f, 1, name);
    cr_expect_eq(source_differences(&f, 1, first, sizeof first), 0, "%s", first);
    expect_changed_sources(&f, 0, NULL);

    /* the times recorded are those taken before a comparison: a shard
     * written to during it stays reported */
    store st;
    cr_assert_eq(model_weights_open(&mw, f.model, &e), 0, "%s", e.msg);
    cr_assert_eq(store_open(&st, f.store, &mw, &e), 0, "%s", e.msg);
    cJSON *before = store_source_files_json(&mw, &e);
    cr_assert(before, "%s", e.msg);
    nanosleep(&pause, NULL);
    flip_byte(path, at);
    flip_byte(path, at);
    cr_assert_eq(store_source_record(&st, before, &e), 0, "%s", e.msg);
    cJSON_Delete(before);
    store_close(&st);
    model_weights_close(&mw);
    expect_changed_sources(&f, 1, name);

    /* an index without source_files */
    char ipath[4400];
    snprintf(ipath, sizeof ipath, "%s/%s", f.store, STORE_INDEX_JSON);
    size_t n;
    char *text = test_read_file(ipath, &n);
    cJSON *j = cJSON_Parse(text);
    free(text);
    cJSON_DeleteItemFromObject(j, "source_files");
    text = cJSON_Print(j);
    cJSON_Delete(j);
    test_write_file(ipath, text, strlen(text));
    free(text);
    cr_assert_eq(model_weights_open(&mw, f.model, &e), 0, "%s", e.msg);
    cr_assert_eq(store_open(&st, f.store, &mw, &e), 0, "%s", e.msg);
    cr_expect_eq(st.source_times, 0);
    cr_expect_eq(st.n_changed_sources, 0);
    store_close(&st);
    model_weights_close(&mw);
    free_fixture(&f);
}

/* A shard changed while a conversion stood interrupted: the experts written
 * before come from the old bytes, so the store records the times from when
 * the conversion began (it used to record the resumption's and tell
 * nothing). Without those times kept, it records none. */
Test(tiers, a_change_while_a_conversion_is_interrupted_is_reported, .timeout = 120)
{
    fixture f = make_fixture("resumesource");
    char part[4300], sources[4400], *log = NULL;
    snprintf(part, sizeof part, "%s/partial", f.tmp);
    snprintf(sources, sizeof sources, "%s/%s", part, STORE_JOURNAL_SOURCES);
    convert_store(f.model, part, 0, 37);
    cr_assert(test_path_exists(sources), "no times kept beside the journal");
    struct timespec pause = {0, 20 * 1000 * 1000};
    nanosleep(&pause, NULL);
    long at;
    int shard = flip_unsampled_expert_byte(f.model, 1, 3, &at);    /* written before the stop */
    errbuf e;
    cr_assert_eq(convert_logged(f.model, part, 0, 0, &log, &e), 0, "%s", e.msg);
    cr_expect(strstr(log, "37 of 96 experts already written"), "%s", log);
    free(log);
    cr_expect(!test_path_exists(sources), "the kept times outlived a complete conversion");
    model_weights mw;
    cr_assert_eq(model_weights_open(&mw, f.model, &e), 0, "%s", e.msg);
    char name[256];
    snprintf(name, sizeof name, "%s", strrchr(mw.ckpt.files[shard].path, '/') + 1);
    model_weights_close(&mw);
    fixture resumed = f;
    resumed.store = part;
    expect_changed_sources(&resumed, 1, name);
    char first[512];
    cr_expect_eq(source_differences(&resumed, 1, first, sizeof first), 1);
    cr_expect_str_eq(first, "moetier: layer 1 expert 3 of the checkpoint differs from the store's");

    /* an interruption that kept no times */
    char bare[4300];
    snprintf(bare, sizeof bare, "%s/bare", f.tmp);
    snprintf(sources, sizeof sources, "%s/%s", bare, STORE_JOURNAL_SOURCES);
    convert_store(f.model, bare, 0, 37);
    cr_assert_eq(unlink(sources), 0);
    cr_assert_eq(convert_logged(f.model, bare, 0, 0, &log, &e), 0, "%s", e.msg);
    cr_expect(strstr(log, "cannot report a later change"), "%s", log);
    free(log);
    store st;
    cr_assert_eq(model_weights_open(&mw, f.model, &e), 0, "%s", e.msg);
    cr_assert_eq(store_open(&st, bare, &mw, &e), 0, "%s", e.msg);
    cr_expect_eq(st.source_times, 0);
    store_close(&st);
    model_weights_close(&mw);
    free_fixture(&f);
}

/* What `convert --check` records is vouched for by the files as mapped: a
 * shard written to, or another file renamed over it (a fresh download), after
 * the model was opened no longer matches, even with the same bytes and a time
 * that did not move since (the comparison read the old file). */
Test(tiers, a_shard_replaced_after_opening_shows_as_moved, .timeout = 60)
{
    char *dir = test_make_tmpdir("moved");
    char model[4300];
    snprintf(model, sizeof model, "%s/model", dir);
    test_synth_tiny(model, "int4");
    model_weights mw;
    errbuf e;
    cr_assert_eq(model_weights_open(&mw, model, &e), 0, "%s", e.msg);
    cr_expect_eq(store_source_files_moved(&mw), 0);
    char copy[4400], shard[4300];
    snprintf(shard, sizeof shard, "%s", mw.ckpt.files[mw.ckpt.n_files - 1].path);
    snprintf(copy, sizeof copy, "%s.download", shard);
    size_t n;
    char *bytes = test_read_file(shard, &n);
    test_write_file(copy, bytes, n);
    free(bytes);
    struct stat sb;
    cr_assert_eq(stat(shard, &sb), 0);
    struct timespec same[2] = {sb.st_atim, sb.st_mtim};
    cr_assert_eq(utimensat(AT_FDCWD, copy, same, 0), 0);
    cr_assert_eq(rename(copy, shard), 0);
    cr_expect_eq(store_source_files_moved(&mw), 1, "a file renamed over a shard went unseen");
    model_weights_close(&mw);
    cr_assert_eq(model_weights_open(&mw, model, &e), 0, "%s", e.msg);
    cr_expect_eq(store_source_files_moved(&mw), 0);
    struct timespec pause = {0, 20 * 1000 * 1000};
    nanosleep(&pause, NULL);
    cr_assert_eq(utimensat(AT_FDCWD, shard, NULL, 0), 0);    /* a touch: written to */
    cr_expect_eq(store_source_files_moved(&mw), 1, "a touched shard went unseen");
    model_weights_close(&mw);
    test_remove_tree(dir);
    free(dir);
}

static int store_opens(const fixture *f, errbuf *e)
{
    model_weights mw;
    store st;
    cr_assert_eq(model_weights_open(&mw, f->model, e), 0, "%s", e->msg);
    int rc = store_open(&st, f->store, &mw, e);
    if (rc == 0)
        store_close(&st);
    model_weights_close(&mw);
    return rc;
}

static void append_to_config(const fixture *f, const char *text)
{
    char path[4400];
    snprintf(path, sizeof path, "%s/config.json", f->model);
    FILE *c = fopen(path, "a");
    cr_assert_not_null(c);
    fputs(text, c);
    fclose(c);
}

/* The fingerprint of f's checkpoint, and those earlier versions wrote. */
static uint64_t fingerprints(const fixture *f, uint64_t before[STORE_FINGERPRINTS_BEFORE])
{
    model_weights mw;
    errbuf e;
    uint64_t fp;
    cr_assert_eq(model_weights_open(&mw, f->model, &e), 0, "%s", e.msg);
    cr_assert_eq(store_fingerprint(&mw, &fp, &e), 0, "%s", e.msg);
    cr_assert_eq(store_fingerprints_before(&mw, before, &e), 0, "%s", e.msg);
    model_weights_close(&mw);
    return fp;
}

/* Writes fp as f's store's fingerprint, in index.json and in index.bin's
 * header, as a store of an earlier version holds it. */
static void set_store_fingerprint(const fixture *f, uint64_t fp)
{
    char path[4400], hex[32];
    snprintf(path, sizeof path, "%s/%s", f->store, STORE_INDEX_JSON);
    size_t n;
    char *text = test_read_file(path, &n);
    cJSON *j = cJSON_Parse(text);
    free(text);
    snprintf(hex, sizeof hex, "%016" PRIx64, fp);
    cJSON_ReplaceItemInObject(j, "source_fingerprint", cJSON_CreateString(hex));
    text = cJSON_Print(j);
    cJSON_Delete(j);
    test_write_file(path, text, strlen(text));
    free(text);
    snprintf(path, sizeof path, "%s/%s", f->store, STORE_INDEX_BIN);
    uint8_t *bin = test_read_file(path, &n);
    for (int k = 0; k < 8; k++)
        bin[16 + k] = (uint8_t)(fp >> (8 * k));
    test_write_file(path, bin, n);
    free(bin);
}

/* An edit of config.json leaves the experts as they are: the store stays
 * this checkpoint's (it was refused as another's, a rebuild of a whole
 * store). A store fingerprinted the older way, with config.json's bytes,
 * still opens while they are unchanged. */
Test(tiers, a_config_edit_keeps_the_store, .timeout = 60)
{
    fixture f = make_fixture("cfgedit");
    errbuf e;
    append_to_config(&f, "\n\n");
    cr_expect_eq(store_opens(&f, &e), 0, "%s", e.msg);

    uint64_t before[STORE_FINGERPRINTS_BEFORE];
    fingerprints(&f, before);
    set_store_fingerprint(&f, before[0]);
    cr_expect_eq(store_opens(&f, &e), 0, "the older fingerprint: %s", e.msg);
    append_to_config(&f, " ");
    cr_expect_eq(store_opens(&f, &e), STORE_OTHER_CHECKPOINT, "an older store after a config edit");
    free_fixture(&f);
}

static int by_shard_up(const void *a, const void *b)
{
    return strcmp((*(cJSON *const *)a)->valuestring, (*(cJSON *const *)b)->valuestring);
}

static int by_shard_down(const void *a, const void *b)
{
    return by_shard_up(b, a);
}

/* The index's weight_map rewritten with its entries sorted by shard, in the
 * shards' name order (down: the reverse): the same shards, named in another
 * order. */
static void sort_weight_map(const fixture *f, int down)
{
    char path[4400];
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", f->model);
    cJSON *j = test_read_json(path), *map = cJSON_GetObjectItemCaseSensitive(j, "weight_map");
    int n = cJSON_GetArraySize(map);
    cr_assert(cJSON_IsObject(map) && n > 0);
    cJSON **items = malloc((size_t)n * sizeof *items);
    for (int i = 0; i < n; i++)
        items[i] = cJSON_DetachItemFromArray(map, 0);
    qsort(items, (size_t)n, sizeof *items, down ? by_shard_down : by_shard_up);
    for (int i = 0; i < n; i++)
        cJSON_AddItemToArray(map, items[i]);   /* (keeps each item's key) */
    free(items);
    char *text = cJSON_Print(j);
    cJSON_Delete(j);
    test_write_file(path, text, strlen(text));
    free(text);
}

/* An index rewritten in another order over the same shards is the same
 * checkpoint: its store opens (it was refused as another's, and convert
 * would not resume or keep it without --force). A store that holds the
 * fingerprint of the shards in the index's order, as stores did before,
 * still opens while that order is unchanged. */
Test(tiers, an_index_in_another_order_keeps_the_store, .timeout = 60)
{
    fixture f = make_fixture("reorder");
    errbuf e;
    uint64_t up[STORE_FINGERPRINTS_BEFORE], down[STORE_FINGERPRINTS_BEFORE];
    sort_weight_map(&f, 0);
    uint64_t fp_up = fingerprints(&f, up);
    cr_expect_eq(store_opens(&f, &e), 0, "%s", e.msg);
    sort_weight_map(&f, 1);
    cr_expect_eq(fingerprints(&f, down), fp_up);
    cr_assert_neq(up[1], down[1], "the index's order is not in the older fingerprint: the test "
                  "proves nothing");
    cr_expect_eq(store_opens(&f, &e), 0, "%s", e.msg);

    set_store_fingerprint(&f, down[1]);
    cr_expect_eq(store_opens(&f, &e), 0, "the fingerprint in the index's order: %s", e.msg);
    sort_weight_map(&f, 0);
    cr_expect_eq(store_opens(&f, &e), STORE_OTHER_CHECKPOINT,
                 "an older store after its index changed order");
    free_fixture(&f);
}

/* A store of a later store version may be whole: convert keeps it (it was
 * taken for a damaged one and rebuilt), and --force replaces it. */
Test(tiers, a_newer_store_is_kept_by_convert, .timeout = 60)
{
    fixture f = make_fixture("newer");
    char path[4400];
    snprintf(path, sizeof path, "%s/%s", f.store, STORE_INDEX_JSON);
    cJSON *j = test_read_json(path);
    cJSON_ReplaceItemInObject(j, "version", cJSON_CreateNumber(STORE_VERSION + 1));
    char *text = cJSON_Print(j);
    cJSON_Delete(j);
    test_write_file(path, text, strlen(text));
    errbuf e;
    cr_expect_eq(store_opens(&f, &e), STORE_NEWER);
    cr_expect(strstr(e.msg, "newer moetier"), "%s", e.msg);

    char *out, *err;
    int rc = test_run_fmt(&out, &err, "%s convert -m %s -o %s", test_moetier_bin(), f.model, f.store);
    cr_expect_neq(rc, 0, "convert over a newer store: %s%s", out, err);
    cr_expect(strstr(err, "newer moetier") && strstr(err, "--force"), "%s", err);
    size_t n;
    char *kept = test_read_file(path, &n);
    cr_expect(kept && n == strlen(text) && !memcmp(kept, text, n), "the newer store's index changed");
    free(kept);
    free(out);
    free(err);
    rc = test_run_fmt(&out, &err, "%s convert -m %s -o %s --force", test_moetier_bin(), f.model,
                      f.store);
    cr_expect_eq(rc, 0, "%s%s", out, err);
    cr_expect_eq(store_opens(&f, &e), 0, "%s", e.msg);
    free(out);
    free(err);
    free(text);
    free_fixture(&f);
}

/* The index and data files of store a are those of store b, byte for byte. */
static void expect_same_store(const char *a_dir, const char *b_dir)
{
    const char *names[] = {"index.bin", "experts-00000.bin", "experts-00001.bin",
                           "experts-00002.bin", "experts-00003.bin"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char a[4400], b[4400];
        snprintf(a, sizeof a, "%s/%s", a_dir, names[i]);
        snprintf(b, sizeof b, "%s/%s", b_dir, names[i]);
        size_t na, nb;
        void *da = test_read_file(a, &na), *db = test_read_file(b, &nb);
        cr_assert(da && db, "missing %s", names[i]);
        cr_expect(na == nb && memcmp(da, db, na) == 0, "%s of %s differs", names[i], a_dir);
        free(da);
        free(db);
    }
}

Test(tiers, interrupted_conversion_resumes_to_identical_bytes, .timeout = 120)
{
    fixture f = make_fixture("resume");
    char part[4300];
    snprintf(part, sizeof part, "%s/partial", f.tmp);
    /* several files, so resuming crosses a file boundary */
    uint64_t max_file = 20 * 57344;
    convert_store(f.model, part, max_file, 37);
    tier_flags tf = {.store_dir = part};
    expect_error(&f, &tf, "incomplete", NULL);
    /* a torn journal record at the end must be ignored, not trusted */
    char jpath[4400];
    snprintf(jpath, sizeof jpath, "%s/%s", part, STORE_JOURNAL);
    FILE *j = fopen(jpath, "ab");
    cr_assert(j);
    fwrite("garbage-record-garbage-record-garbage-record-xx", 1, 48, j);
    fclose(j);
    /* it goes on from the 37th, past the whole first file (a whole file
     * before the last journalled one used to count as cut, so all but the
     * first file were written again) */
    char *log = NULL;
    errbuf e;
    cr_assert_eq(convert_logged(f.model, part, max_file, 0, &log, &e), 0, "%s", e.msg);
    cr_expect(strstr(log, "37 of 96 experts already written") && !strstr(log, "cut or deleted"),
              "%s", log);
    free(log);
    char full[4300];
    snprintf(full, sizeof full, "%s/full", f.tmp);
    convert_store(f.model, full, max_file, 0);
    expect_same_store(part, full);
    cr_expect(!test_path_exists(jpath), "the journal outlived a complete conversion");
    free_fixture(&f);
}

/* An interrupted conversion at the default place is no store, but said: the
 * plan names it, and --dram-gb's refusal says to finish it. */
Test(tiers, an_interrupted_default_store_is_said, .timeout = 120)
{
    fixture f = make_fixture("resumedefault");
    char part[4300];
    snprintf(part, sizeof part, "%s/%s", f.model, DEFAULT_STORE_NAME);
    convert_store(f.model, part, 20 * 57344, 37);
    tier_flags budget = {.dram_gb = 1, .dram_gb_set = 1};
    expect_error(&f, &budget, "only an interrupted conversion", "finish it with moetier convert");
    tier_plan p;
    tier_flags none = {0};
    model_weights mw;
    store st;
    errbuf e;
    cr_assert_eq(model_weights_open(&mw, f.model, &e), 0, "%s", e.msg);
    cr_assert_eq(tier_plan_make(&p, &mw, &none, &st, &e), 0, "%s", e.msg);
    model_weights_close(&mw);
    cr_expect(!p.use_store && p.store_interrupted);
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);
    tier_plan_print(&p, out);
    fclose(out);
    cr_expect(strstr(text, "was interrupted: moetier convert -m on this model finishes it"), "%s", text);
    free(text);
    free_fixture(&f);
}

/* An interrupted conversion is kept unless asked: one of another checkpoint
 * (a mistyped -m) or with another --file-gb is refused, not restarted, and a
 * resumption without --file-gb goes on with the experts per file it began
 * with (each used to restart from zero, unasked). */
Test(tiers, interrupted_conversion_is_restarted_only_when_asked, .timeout = 120)
{
    fixture f = make_fixture("resumeown");
    char other[4300], part[4300], jpath[4400], *log = NULL;
    synth_other_checkpoint(&f, other, sizeof other);
    uint64_t max_file = 20 * 57344;     /* 20 blobs per file */
    errbuf e;
    snprintf(part, sizeof part, "%s/partial", f.tmp);
    snprintf(jpath, sizeof jpath, "%s/%s", part, STORE_JOURNAL);
    convert_store(f.model, part, max_file, 37);
    size_t n_before, n_after;
    void *journal = test_read_file(jpath, &n_before);
    cr_assert_not_null(journal);
    cr_expect_neq(convert_logged(other, part, 0, 0, &log, &e), 0, "another checkpoint's restarted it");
    cr_expect(strstr(e.msg, "interrupted conversion of another checkpoint") &&
              strstr(e.msg, "--force"), "%s", e.msg);
    free(log);
    cr_expect_neq(convert_logged(f.model, part, 30 * 57344, 0, &log, &e), 0,
                  "another --file-gb restarted it");
    cr_expect(strstr(e.msg, "20 experts per file, not the 30"), "%s", e.msg);
    free(log);
    void *after = test_read_file(jpath, &n_after);
    cr_expect(after && n_after == n_before && memcmp(journal, after, n_before) == 0,
              "a refused conversion changed the journal");
    free(after);
    free(journal);
    /* no --file-gb: it goes on where it stopped, 20 per file */
    cr_assert_eq(convert_logged(f.model, part, 0, 0, &log, &e), 0, "%s", e.msg);
    cr_expect(strstr(log, "going on with the interrupted conversion's 20 experts per file") &&
              strstr(log, "37 of 96 experts already written"), "%s", log);
    free(log);
    char full[4300];
    snprintf(full, sizeof full, "%s/full", f.tmp);
    convert_store(f.model, full, max_file, 0);
    expect_same_store(part, full);
    /* a journal from before the header named its checkpoint and files: with
     * another --file-gb it is refused too, with its own it resumes */
    char part3[4300], jpath3[4400];
    snprintf(part3, sizeof part3, "%s/partial3", f.tmp);
    snprintf(jpath3, sizeof jpath3, "%s/%s", part3, STORE_JOURNAL);
    convert_store(f.model, part3, max_file, 37);
    FILE *jf = fopen(jpath3, "r+b");
    cr_assert_not_null(jf);
    cr_assert_eq(fseek(jf, 16, SEEK_SET), 0);
    fwrite((char[16]){0}, 1, 16, jf);
    fclose(jf);
    cr_expect_neq(convert_logged(f.model, part3, 0, 0, &log, &e), 0, "an older journal restarted");
    cr_expect(strstr(e.msg, "with the --file-gb it began with"), "%s", e.msg);
    free(log);
    cr_assert_eq(convert_logged(f.model, part3, max_file, 0, &log, &e), 0, "%s", e.msg);
    cr_expect(strstr(log, "37 of 96 experts already written"), "%s", log);
    free(log);
    expect_same_store(part3, full);
    /* --force starts over, here with the other checkpoint */
    char part2[4300];
    snprintf(part2, sizeof part2, "%s/partial2", f.tmp);
    convert_store(f.model, part2, max_file, 37);
    cr_assert_eq(convert_logged(other, part2, 0, 1, &log, &e), 0, "%s", e.msg);
    cr_expect(strstr(log, "starting over") && !strstr(log, "already written"), "%s", log);
    free(log);
    model_weights mw;
    store st;
    cr_assert_eq(model_weights_open(&mw, other, &e), 0, "%s", e.msg);
    cr_expect_eq(store_open(&st, part2, &mw, &e), 0, "%s", e.msg);
    store_close(&st);
    model_weights_close(&mw);
    free_fixture(&f);
}

/* A data file cut short or deleted between an interrupted conversion and its
 * resumption: the journal still lists its blobs, but they are written again
 * (a trusted journal used to finish a store of zero-filled blobs, refused only
 * when read). */
Test(tiers, resumed_conversion_rewrites_what_the_data_files_lost, .timeout = 120)
{
    fixture f = make_fixture("resumelost");
    uint64_t max_file = 20 * 57344;     /* 20 blobs per file */
    char full[4300];
    snprintf(full, sizeof full, "%s/full", f.tmp);
    convert_store(f.model, full, max_file, 0);
    for (int damage = 0; damage < 2; damage++) {
        char part[4300], data[4400];
        snprintf(part, sizeof part, "%s/partial%d", f.tmp, damage);
        convert_store(f.model, part, max_file, 37);     /* file 0 whole, 17 blobs in file 1 */
        if (damage == 0) {
            snprintf(data, sizeof data, "%s/experts-00000.bin", part);
            cr_assert_eq(truncate(data, 5 * 57344 + 1000), 0);
        } else {
            snprintf(data, sizeof data, "%s/experts-00001.bin", part);
            cr_assert_eq(unlink(data), 0);
        }
        convert_store(f.model, part, max_file, 0);
        expect_same_store(part, full);
    }
    free_fixture(&f);
}

Test(tiers, impossible_budgets_are_refused, .timeout = 60)
{
    fixture f = make_fixture("budget");
    tier_flags tiny = {.store_dir = f.store, .dram_gb = 1e-6, .dram_gb_set = 1};
    expect_error(&f, &tiny, "--dram-gb at least", NULL);
    /* the least it names is enough, and a budget just short of it does not
     * print as the same number */
    int V = vocab_of(f.model);
    float *out = calloc((size_t)(T_PROMPT + T_STEPS) * (size_t)V, sizeof *out);
    errbuf e = {{0}};
    cr_assert_neq(run_logits(f.model, &tiny, out, &e), 0);
    const char *at = strstr(e.msg, "at least ");
    cr_assert_not_null(at, "%s", e.msg);
    double least = strtod(at + 9, NULL);
    tier_flags just_short = {.store_dir = f.store, .dram_gb = least * 0.97, .dram_gb_set = 1};
    cr_assert_neq(run_logits(f.model, &just_short, out, &e), 0, "%g GB was enough", least * 0.97);
    double said = strtod(strstr(e.msg, "budget ") + 7, NULL);
    cr_expect_lt(said, least, "%s", e.msg);
    tier_flags enough = {.store_dir = f.store, .dram_gb = least, .dram_gb_set = 1};
    cr_expect_eq(run_logits(f.model, &enough, out, &e), 0, "the %g GB it asked for: %s", least, e.msg);
    free(out);
    /* a machine of 2 MB: the store (96 experts of 57 KB) and the dense weights do not fit */
    char meminfo[4300];
    snprintf(meminfo, sizeof meminfo, "%s/meminfo", f.tmp);
    FILE *mf = fopen(meminfo, "w");
    cr_assert_not_null(mf);
    fputs("MemTotal:           2048 kB\nMemAvailable:       1024 kB\n", mf);
    fclose(mf);
    setenv("MOETIER_MEMINFO", meminfo, 1);
    tier_flags huge = {.store_dir = f.store, .dram_gb = 1e3, .dram_gb_set = 1};
    expect_error(&f, &huge, "more than this machine's", "lower --dram-gb");
    unsetenv("MOETIER_MEMINFO");
    char none[4300];
    snprintf(none, sizeof none, "%s/nowhere", f.tmp);
    tier_flags missing = {.store_dir = none};
    expect_error(&f, &missing, "no expert store", NULL);
    tier_flags nostore = {.dram_gb = 1, .dram_gb_set = 1};
    expect_error(&f, &nostore, "needs an expert store", NULL);
    free_fixture(&f);
}

/* A container's memory limit is the machine the plans fit: the least of
 * /proc/meminfo's and the cgroup's (v2's memory.max less memory.current, the
 * page cache it may drop not counted; v1's files; "max" and v1's near-2^63
 * are none), and a --dram-gb past it is refused before the run. */
Test(tiers, a_containers_memory_limit_is_the_machine, .timeout = 60)
{
    char *tmp = test_make_tmpdir("cgroup");
    char meminfo[4300], cg[4300], path[4400];
    snprintf(meminfo, sizeof meminfo, "%s/meminfo", tmp);
    test_write_file(meminfo, "MemTotal: 8000000 kB\nMemAvailable: 6000000 kB\n", 46);
    snprintf(cg, sizeof cg, "%s/cg", tmp);
    cr_assert_eq(mkdir(cg, 0700), 0);
    setenv("MOETIER_MEMINFO", meminfo, 1);
    setenv("MOETIER_CGROUP", cg, 1);
    static const struct {
        const char *file, *text, *file2, *text2;
        uint64_t total, avail;
    } cases[] = {
        {"memory.max", "3000000000\n", "memory.current", "1000000000\n", 3000000000ull, 2200000000ull},
        {"memory.max", "max\n", "memory.current", "1000000000\n", 8192000000ull, 6144000000ull},
        {"memory.limit_in_bytes", "9223372036854771712\n", "memory.usage_in_bytes", "1\n", 8192000000ull,
         6144000000ull},
        {"memory.limit_in_bytes", "4000000000\n", "memory.usage_in_bytes", "3900000000\n", 4000000000ull,
         300000000ull},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        for (const char *const *n = (const char *const[]){"memory.max", "memory.current", "memory.limit_in_bytes",
                                                            "memory.usage_in_bytes", NULL}; *n; n++) {
            snprintf(path, sizeof path, "%s/%s", cg, *n);
            unlink(path);
        }
        snprintf(path, sizeof path, "%s/%s", cg, cases[i].file);
        test_write_file(path, cases[i].text, strlen(cases[i].text));
        snprintf(path, sizeof path, "%s/%s", cg, cases[i].file2);
        test_write_file(path, cases[i].text2, strlen(cases[i].text2));
        snprintf(path, sizeof path, "%s/memory.stat", cg);
        test_write_file(path, "anon 5\ninactive_file 200000000\n", 31);
        uint64_t total, avail;
        meminfo_read(&total, &avail);
        cr_expect(total == cases[i].total && avail == cases[i].avail, "case %zu: %" PRIu64 " of %" PRIu64, i,
                  avail, total);
    }
    /* and a plan past it refused: a container of 2 MB (the store's 96
     * experts of 57 KB and the dense weights do not fit) */
    snprintf(path, sizeof path, "%s/memory.limit_in_bytes", cg);
    test_write_file(path, "2000000\n", 8);
    fixture f = make_fixture("cgroup_plan");
    tier_flags huge = {.store_dir = f.store, .dram_gb = 5, .dram_gb_set = 1};
    expect_error(&f, &huge, "more than this machine's", "lower --dram-gb");
    free_fixture(&f);
    unsetenv("MOETIER_MEMINFO");
    unsetenv("MOETIER_CGROUP");
    test_remove_tree(tmp);
    free(tmp);
}

/* The server's prompt cache grows as conversations come: an automatic DRAM
 * budget leaves it room (the tier took 85 % of what was free, the cache came
 * on top); a --dram-gb the user gave is theirs. */
static int planned_slots(const fixture *f, const tier_flags *tf, tier_plan *p)
{
    model_weights mw;
    store st;
    errbuf e;
    cr_assert_eq(model_weights_open(&mw, f->model, &e), 0, "%s", e.msg);
    cr_assert_eq(tier_plan_make(p, &mw, tf, &st, &e), 0, "%s", e.msg);
    if (p->use_store)
        store_close(&st);
    model_weights_close(&mw);
    return p->dram_slots;
}

/* A machine (MOETIER_MEMINFO, in f's directory) of total_kb whose free memory
 * holds p's dense weights and n experts at the automatic budget's 85 %. */
static void fake_memory(const fixture *f, const tier_plan *p, unsigned long long total_kb, int n)
{
    char meminfo[4300];
    snprintf(meminfo, sizeof meminfo, "%s/meminfo", f->tmp);
    FILE *mf = fopen(meminfo, "w");
    cr_assert_not_null(mf);
    fprintf(mf, "MemTotal: %llu kB\nMemAvailable: %llu kB\n", total_kb,
            (unsigned long long)((p->dense_bytes + (uint64_t)n * p->slot_bytes) / 0.85 / 1024 + 1));
    fclose(mf);
    setenv("MOETIER_MEMINFO", meminfo, 1);
}

/* The server's prompt cache (the reserve) is held against the machine as the
 * weights are: past it alone, with a --dram-gb, and when it leaves the
 * automatic budget too little, refused naming --prompt-cache-gb. */
Test(tiers, the_prompt_cache_is_held_against_the_machine, .timeout = 60)
{
    fixture f = make_fixture("reserve_machine");
    tier_plan p;
    tier_flags tf = {.store_dir = f.store};
    planned_slots(&f, &tf, &p);
    /* (and a decode token reads the dense weights but the embedding table) */
    model_weights mw;
    errbuf e;
    cr_assert_eq(model_weights_open(&mw, f.model, &e), 0, "%s", e.msg);
    cr_expect(mw.lm_head.data != mw.embed.data, "the fixture ties its embedding: the check proves nothing");
    cr_expect_eq(p.dense_read_bytes, p.dense_bytes - linear_weight_bytes(&mw.embed));
    model_weights_close(&mw);
    fake_memory(&f, &p, (p.dense_bytes + 40 * p.slot_bytes) / 1024, 30);
    tier_flags past = {.store_dir = f.store, .reserve_bytes = p.dense_bytes + 50 * p.slot_bytes};
    expect_error(&f, &past, "the prompt cache", "lower --prompt-cache-gb");
    tier_flags with_budget = {.store_dir = f.store, .reserve_bytes = 20 * p.slot_bytes,
                              .dram_gb = 30.0 * p.slot_bytes / 1e9, .dram_gb_set = 1};
    expect_error(&f, &with_budget, "more than this machine's", "or --prompt-cache-gb");
    tier_flags left = {.store_dir = f.store, .reserve_bytes = 30 * p.slot_bytes};
    expect_error(&f, &left, "leaves after the dense weights", "or lower -c or --prompt-cache-gb");
    unsetenv("MOETIER_MEMINFO");
    free_fixture(&f);
}

Test(tiers, an_automatic_budget_leaves_the_reserve, .timeout = 60)
{
    fixture f = make_fixture("reserve");
    tier_plan p;
    tier_flags tf = {.store_dir = f.store};
    planned_slots(&f, &tf, &p);
    fake_memory(&f, &p, 1ull << 30, 60);
    int without = planned_slots(&f, &tf, &p);
    cr_expect_eq(without, 60);
    tf.reserve_bytes = 20 * p.slot_bytes;
    int with = planned_slots(&f, &tf, &p);
    cr_expect(with == 40 || with == 39, "%d slots with 20 experts' bytes kept, %d without", with, without);
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);
    tier_plan_print(&p, out);
    fclose(out);
    cr_expect(strstr(text, "leaves 1.") || strstr(text, "leaves 0."), "%s", text);
    cr_expect(strstr(text, "prompt cache"), "%s", text);
    free(text);
    tf.dram_gb = 50 * p.slot_bytes / 1e9;
    tf.dram_gb_set = 1;
    cr_expect_eq(planned_slots(&f, &tf, &p), 50, "a given --dram-gb lost the reserve");
    unsetenv("MOETIER_MEMINFO");
    free_fixture(&f);
}

/* The CPU backend's KV cache lives in RAM beside the tier: an automatic
 * budget leaves it room, the plan shows it, and a budget that with it passes
 * the machine's memory is refused naming it. */
Test(tiers, an_automatic_budget_leaves_the_kv_cache, .timeout = 60)
{
    fixture f = make_fixture("kv-reserve");
    tier_plan p;
    tier_flags tf = {.store_dir = f.store};
    planned_slots(&f, &tf, &p);
    /* a machine of the dense weights and 70 experts */
    fake_memory(&f, &p, (p.dense_bytes + 70 * p.slot_bytes) / 1024, 60);
    /* the positions of at most 25 experts' bytes */
    model_config cfg;
    errbuf e;
    cr_assert_eq(config_load(&cfg, f.model, &e), 0, "%s", e.msg);
    tf.kv_positions = (int)(25 * p.slot_bytes / kv_cache_bytes(&cfg, 1, 4));
    int with = planned_slots(&f, &tf, &p);
    cr_expect(with == 35 || with == 34, "%d slots with 25 experts' bytes of KV cache", with);
    cr_expect_eq(p.kv_bytes, kv_cache_bytes(&cfg, tf.kv_positions, 4));
    char *text = NULL, want[64];
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);
    tier_plan_print(&p, out);
    fclose(out);
    snprintf(want, sizeof want, "KV cache: %d positions, when full", tf.kv_positions);
    cr_expect(strstr(text, want), "%s", text);
    cr_expect(strstr(text, "for the KV cache"), "%s", text);
    free(text);
    /* a cache on the GPU takes nothing from the host's budget */
    tf.kv_on_device = 1;
    int on_device = planned_slots(&f, &tf, &p);
    cr_expect(on_device >= 59 && on_device <= 60 && p.kv_bytes == 0,
              "%d slots with the KV cache on the GPU", on_device);
    tf.kv_on_device = 0;
    /* 60 experts given, plus the dense weights and the KV cache: past the
     * machine's 70 experts' worth */
    tf.dram_gb = 60 * p.slot_bytes / 1e9;
    tf.dram_gb_set = 1;
    model_weights mw;
    store st;
    cr_assert_eq(model_weights_open(&mw, f.model, &e), 0, "%s", e.msg);
    cr_expect_neq(tier_plan_make(&p, &mw, &tf, &st, &e), 0, "a plan past the machine's memory");
    snprintf(want, sizeof want, "%d positions", tf.kv_positions);
    cr_expect(strstr(e.msg, "the KV cache") && strstr(e.msg, want) && strstr(e.msg, "or -c"), "%s",
              e.msg);
    model_weights_close(&mw);
    unsetenv("MOETIER_MEMINFO");
    free_fixture(&f);
}

/* ---- memory: a run stays within its DRAM budget ---- */

static long peak_rss_kb(char *const argv[])
{
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        int devnull = open("/dev/null", O_WRONLY);
        dup2(devnull, 1);
        dup2(devnull, 2);
        execv(argv[0], argv);
        _exit(127);
    }
    int status;
    struct rusage ru;
    cr_assert_eq(wait4(pid, &status, 0, &ru), pid);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "%s %s failed (status %d)", argv[0],
              argv[1], status);
    return ru.ru_maxrss;
}

Test(tiers, peak_rss_stays_within_budget, .timeout = 300)
{
    const char *bin = test_moetier_bin();
    /* experts: 5 MoE layers x 96 x 3 x 256 x 1024 x 2 bytes = 755 MB of BF16 */
    char *dir = synth_larger("bf16", 96, 1024, 6);
    char store_dir[4300], out[4300];
    snprintf(store_dir, sizeof store_dir, "%s/store", dir);
    snprintf(out, sizeof out, "%s/logits.bin", dir);
    convert_store(dir, store_dir, 0, 0);
    uint64_t slot = store_slot_bytes(dir, NULL);
    double all_mb = 5.0 * 96 * slot / 1e6;
    char small[32], big[32];
    double small_gb = 8 * slot / 1e9 * 1.001, big_gb = all_mb / 1e3 / 5;
    snprintf(small, sizeof small, "%.6f", small_gb);
    snprintf(big, sizeof big, "%.6f", big_gb);
    const char *ids = "1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20";
    char *a1[] = {(char *)bin, "logits", "-m", dir, "--ids", (char *)ids, "-o", out, "--store",
                  store_dir, "--dram-gb", small, NULL};
    char *a2[] = {(char *)bin, "logits", "-m", dir, "--ids", (char *)ids, "-o", out, "--store",
                  store_dir, "--dram-gb", big, NULL};
    long base = peak_rss_kb(a1), with = peak_rss_kb(a2);
    double base_mb = base / 1024.0 * 1.024, with_mb = with / 1024.0 * 1.024;
    cr_log_info("peak RSS %.1f MB with %.1f MB of DRAM tier, %.1f MB with %.1f MB (experts %.0f MB)",
                base_mb, small_gb * 1e3, with_mb, big_gb * 1e3, all_mb);
    /* the fixed overhead (binary, dense weights, activations) is what the
     * smallest budget costs; a larger budget adds at most itself (+ 16 MB) */
    cr_expect_leq(with_mb, base_mb + big_gb * 1e3 + 16, "peak RSS %.1f MB exceeds %.1f MB + budget "
                  "%.1f MB + 16 MB", with_mb, base_mb, big_gb * 1e3);
    cr_expect_lt(with_mb, all_mb, "peak RSS %.1f MB: the experts (%.0f MB) were loaded anyway",
                 with_mb, all_mb);
#if !defined(__SANITIZE_ADDRESS__)
    cr_expect_lt(base_mb, 200, "fixed overhead %.1f MB is larger than stated (200 MB)", base_mb);
#endif
    test_remove_tree(dir);
    free(dir);
}
