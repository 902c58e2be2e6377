/* cmd_bench_model: `moetier bench model -m DIR`: a model's prefill and decode
 * speed as `run` gets them, in the manner of llama-bench.
 *
 * For each setting (DRAM tier, VRAM budget and KV cache type: each opens the
 * model anew; threads, on the CPU backend, only take a new pool of threads on
 * the model already open), every test runs once untimed (the warm-up: page
 * tables, the tiers' caches, the GPU's rates) and then -r times: ppP
 * prefills a prompt of P tokens, tgN decodes N tokens one step each, both
 * after D tokens already in the cache (-d, prefilled untimed); with
 * --parallel S, decode steps S conversations together as serve --parallel
 * does (engine_decode_seqs).
 * Results are the mean and standard deviation of the repetitions' tokens per
 * second (of all conversations together).
 *
 * Tokens are random ids, different in every repetition, so a cache never sees
 * a repetition's routing before; or a text's (-f), in order, each repetition
 * further on in it, so the routing is that of real text.
 *
 * A decode row also gives its yardstick, measured in the same run: on the CPU
 * backend the bytes a token reads (the dense weights but the embedding table,
 * once a step of up to engine_step_rows conversations, the routed experts the
 * steps ran, and the KV cache up to its position) at the RAM read bandwidth
 * measured before and after its repetitions (the bound when the experts are
 * in RAM); on the GPU backend, for one conversation, the decode bound of
 * kernels/decode_bound.h. */
#include <cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli_common.h"
#include "commands.h"
#include "core/base/progress.h"
#include "core/text/tokenizer.h"
#include "cpu_kernels/cpu_backend.h"
#include "cpu_kernels/kernel_bench.h"
#include "tiers/store_read_rate.h"
#include "tiers/tiered_source.h"

#define MAX_VALUES 8
#define MAX_REPS 100
#define MAX_PARALLEL 64

static void usage(FILE *f)
{
    fprintf(f,
            "usage: moetier bench model -m DIR [-p LIST] [-n LIST] [-d LIST] [--parallel LIST]\n"
            "                           [-r N] [-f FILE] [--seed S] [--no-warmup] [--json]\n"
            "                           [-t LIST]"
 " [--dram-gb LIST] [--vram-gb LIST] [model flags]\n"
            "  Prefill and decode speed of the model as run gets them (like llama-bench):\n"
            "  for each setting, each test once untimed, then R timed repetitions, as\n"
            "  mean +- standard deviation of tokens/s. Decode rows also give the weights\n"
            "  read per token and the speed they bound it to: the slowest of those reads\n"
            "  at the RAM read bandwidth, the DRAM tier's reads at the store's and the\n"
            "  token's multiply-adds at the FMA peak, each measured in the same run (CPU\n"
            "  backend), or the GPU backend's decode bound; `bound by` names which.\n"
            "  -p LIST         prompt lengths, one prefill each (ppP; default 512; 0: none)\n"
            "  -n LIST         decode lengths, one token a step (tgN; default 128; 0: none)\n"
            "  -d LIST         tokens already in the cache before each test (default 0)\n"
            "  --parallel LIST decode tests of S conversations stepped together, as serve\n"
            "                  --parallel runs them (tgN xS; t/s of all; default 1)\n"
            "  -r N            timed repetitions (default 3)\n"
            "  -f FILE         tokens of this text, in order (the routing of real text);\n"
            "                  default: random ids, new in every repetition\n"
            "  --seed S        the random ids' seed (default 0)\n"
            "  --no-warmup     no untimed run before each test's repetitions\n"
            "  --json          one JSON object per test and setting (model, backend, threads,\n"
            "                  dram_gb, vram_gb, cache_type, test, depth, parallel, reps,\n"
            "                  tps, tps_sd, samples, dram_hit_rate, vram_hit_rate,\n"
            "                  gb_per_token, kv_gb_per_token, gflop_per_token,\n"
            "                  attn_gflop_per_token, peak_gflops, bound_tps,\n"
            "                  ratio = tps / bound_tps, bound_by: ram, store, fma, gpu,\n"
            "                  cpu or copy, ...)\n"
            "  -t LIST         CPU threads, one setting each (default: one per core); on the\n"
            "                  CPU backend they run on the model as opened for the first\n"
            "  --dram-gb LIST  DRAM tier sizes, one setting each (needs an expert store)\n"
            "  --vram-gb LIST  GPU budgets, one setting each (--backend cuda|auto)\n"
            "  --cache-type LIST  KV cache types (f32, bf16, q8_0), one setting each; -ctk too\n"
            "  (settings nest in the order --dram-gb, --vram-gb, --cache-type, -t; the\n"
            "  model flags below apply; -c, each conversation's context, defaults to what\n"
            "  the tests need)\n");
    model_flags_usage_except(f, MF_HELP_TRACE | MF_HELP_LISTS);
}

typedef struct bench_opts {
    int prompt[MAX_VALUES], n_prompt;
    int gen[MAX_VALUES], n_gen;
    int depth[MAX_VALUES], n_depth;
    int reps, warmup, json;
    const char *file;
    unsigned long long seed;
    int parallel[MAX_VALUES], n_parallel;
    int threads[MAX_VALUES], n_threads;
    double dram[MAX_VALUES], vram[MAX_VALUES];
    int n_dram, n_vram;
    kv_type cache[MAX_VALUES];
    int n_cache;
} bench_opts;

/* Where a test's tokens come from: the k-th of a text, or a random id. */
typedef struct token_stream {
    const int *text;
    int n_text;
    unsigned long long seed;
    int vocab;
} token_stream;

static int stream_token(const token_stream *s, unsigned long long k)
{
    if (s->text)
        return s->text[k % (unsigned long long)s->n_text];
    /* splitmix64 of the seed and k: every token drawn on its own */
    unsigned long long z = s->seed + (k + 1) * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return (int)((z ^ (z >> 31)) % (unsigned long long)s->vocab);
}

typedef struct test_result {
    double tps[MAX_REPS];
    int n;
    uint64_t expert_calls;      /* routed experts run by the timed decode steps */
    uint64_t tokens;            /* tokens the timed steps decoded */
    uint64_t passes;            /* reads of the dense weights they took: one a step of up
                                 * to engine_step_rows conversations */
    uint64_t hits, wanted;      /* their DRAM tier's hits, of the experts it gave (with an
                                 * expert store; an early read is no hit) */
    uint64_t bytes_read;        /* the store's reads, on demand and early (used or not) */
    uint64_t kv_positions;      /* of the KV caches, read by their attention, per layer */
    uint64_t vram_hits, vram_all;   /* GPU backend: experts found in VRAM, of all they ran */
    decode_work gpu;            /* GPU backend, one conversation: what the timed steps did */
    int gpu_counted;            /* repetitions in gpu */
} test_result;

/* What a test runs: len tokens after depth, prefilled at once (pp) or decoded
 * one a step by each of S conversations stepped together (tg). */
typedef struct test_spec {
    int depth, len, decode, S;
} test_spec;

/* A test's conversations (seq[0] NULL: the engine's own) and buffers. */
typedef struct test_state {
    engine_seq store[MAX_PARALLEL];
    engine_seq *seq[MAX_PARALLEL];
    int *ids;                   /* [depth + len] */
    int step_ids[MAX_PARALLEL];
    float *logits;              /* [S][vocab] */
} test_state;

/* The counts a decode test's yardsticks are differences of. */
typedef struct counts {
    uint64_t calls, kv_positions;
    tier_layer_stats dram;
    gpu_cache_stats g;
} counts;

static void take_counts(cli_model *m, counts *c)
{
    memset(c, 0, sizeof *c);
    c->calls = m->en.stats.expert_calls;
    c->kv_positions = m->en.stats.kv_positions_decoded;
    tiered_source_totals(&m->src, &c->dram);   /* (zero without a store) */
    if (!strcmp(m->be.name, "cuda"))
        gpu_backend_cache_stats(&m->be, &c->g);
}

static void add_decode_counts(cli_model *m, const test_spec *t, const counts *c0, test_result *r)
{
    counts c;
    take_counts(m, &c);
    r->expert_calls += c.calls - c0->calls;
    r->tokens += (uint64_t)t->len * (uint64_t)t->S;
    int rows = engine_step_rows(&m->en);
    r->passes += (uint64_t)t->len * (uint64_t)((t->S + rows - 1) / rows);
    r->hits += c.dram.hits - c0->dram.hits;
    r->wanted += (c.dram.hits + c.dram.early + c.dram.misses) -
                 (c0->dram.hits + c0->dram.early + c0->dram.misses);
    r->bytes_read += c.dram.bytes_read - c0->dram.bytes_read;
    r->kv_positions += c.kv_positions - c0->kv_positions;
    r->vram_hits += c.g.hits - c0->g.hits;
    r->vram_all += (c.g.hits + c.g.misses + c.g.uncached + c.g.on_cpu) -
                   (c0->g.hits + c0->g.misses + c0->g.uncached + c0->g.on_cpu);
    /* the decode bound takes a CPU expert to have one token: one conversation's */
    decode_work w = {0};
    decode_bound b;
    if (t->S == 1 && (cli_model_decode_bound(m, &w, &b) == 0 || w.tokens)) {
        r->gpu.tokens += w.tokens;
        r->gpu.seconds += w.seconds;
        r->gpu.resident_bytes = w.resident_bytes;
        r->gpu.gpu_experts += w.gpu_experts;
        r->gpu.cpu_experts += w.cpu_experts;
        r->gpu.expert_bytes = w.expert_bytes;
        r->gpu.expert_weights = w.expert_weights;
        r->gpu.bytes_copied += w.bytes_copied;
        r->gpu.kv_bytes += w.kv_bytes;
        r->gpu_counted++;
    }
}

/* One repetition: each conversation's cache emptied and depth tokens
 * prefilled untimed, then the test timed. Conversation c takes the stream's
 * tokens from first + c * (depth + len); r (NULL for the warm-up) takes the
 * speed and, for decode, the counts. */
static int run_once(cli_model *m, const token_stream *ts, const test_spec *t, test_state *st,
                    unsigned long long first, test_result *r, errbuf *e)
{
    engine *en = &m->en;
    unsigned long long span = (unsigned long long)(t->depth + t->len);
    for (int c = 0; c < t->S; c++) {
        unsigned long long from = first + (unsigned long long)c * span;
        for (int k = 0; k < t->depth + (t->decode ? 0 : t->len); k++)
            st->ids[k] = stream_token(ts, from + (unsigned long long)k);
        if (c)
            engine_seq_swap(en, st->seq[c]);
        engine_reset(en);
        int rc = t->depth ? engine_forward(en, st->ids, t->depth, st->logits, 0, e) : 0;
        if (c)
            engine_seq_swap(en, st->seq[c]);
        if (rc)
            return -1;
    }
    counts c0;
    take_counts(m, &c0);
    /* the GPU's counts of the decode steps alone, not the prefill's */
    if (t->decode)
        cli_model_decode_starts(m);
    double t0 = now_seconds();
    if (!t->decode && engine_forward(en, st->ids + t->depth, t->len, st->logits, 0, e))
        return -1;
    for (int k = 0; t->decode && k < t->len; k++) {
        for (int c = 0; c < t->S; c++)
            st->step_ids[c] = stream_token(ts, first + (unsigned long long)c * span +
                                                   (unsigned long long)(t->depth + k));
        if (t->S == 1 ? engine_decode(en, st->step_ids[0], st->logits, e)
                      : engine_decode_seqs(en, st->seq, st->step_ids, t->S, st->logits, NULL, e))
            return -1;
    }
    double seconds = now_seconds() - t0;
    if (r) {
        r->tps[r->n++] = (double)t->len * (double)t->S / seconds;
        if (t->decode)
            add_decode_counts(m, t, &c0, r);
    }
    return 0;
}

static int run_test(cli_model *m, const bench_opts *o, const token_stream *ts, const test_spec *t,
                    test_result *r, errbuf *e)
{
    test_state st = {0};
    int rc = 0, made = 1;
    st.ids = malloc((size_t)(t->depth + t->len) * sizeof *st.ids);
    st.logits = malloc((size_t)t->S * (size_t)m->mw.cfg.vocab_size * sizeof *st.logits);
    if (!st.ids || !st.logits)
        rc = err_set(e, "out of memory");
    for (; made < t->S && !rc; made++) {
        rc = engine_seq_create(&m->en, &st.store[made], e);
        st.seq[made] = &st.store[made];
    }
    memset(r, 0, sizeof *r);
    /* each repetition (the warm-up the first) further on in the stream */
    unsigned long long rep = (unsigned long long)(t->depth + t->len) * (unsigned long long)t->S;
    if (!rc && o->warmup)
        rc = run_once(m, ts, t, &st, 0, NULL, e);
    for (int k = 0; k < o->reps && !rc; k++)
        rc = run_once(m, ts, t, &st, rep * (unsigned long long)(k + 1), r, e);
    for (int c = 1; c < made; c++)
        engine_seq_destroy(&st.store[c]);
    free(st.ids);
    free(st.logits);
    return rc;
}

static void mean_sd(const double *v, int n, double *mean, double *sd)
{
    double s = 0, q = 0;
    for (int k = 0; k < n; k++)
        s += v[k];
    *mean = n ? s / n : 0;
    for (int k = 0; k < n; k++)
        q += (v[k] - *mean) * (v[k] - *mean);
    *sd = n > 1 ? sqrt(q / (n - 1)) : 0;
}

/* the bytes of the routed experts' weights, all of them (as the model counted them at open) */
static uint64_t routed_expert_bytes(const cli_model *m)
{
    uint64_t n = 0;
    for (int k = 0; k < WF_COUNT; k++)
        n += m->mw.expert_bytes_by_format[k];
    return n;
}

/* A decode test's yardstick: the bytes a token read, and the speed they
 * bound it to. */
typedef struct yardstick {
    double gb_per_token;
    double kv_gb_per_token;     /* of gb_per_token, the KV cache's */
    double bound_tps;           /* 0: not measured */
    const char *bound_by;       /* which side sets bound_tps: "ram", "store" or "fma" */
    double read_bw;             /* CPU backend: GB/s, the mean of the two reads */
    double store_gb_per_token;  /* CPU backend with a store: the DRAM tier's reads */
    double store_bw;            /* GB/s of the store's reads, measured at the setting's start */
    double gflop_per_token;     /* CPU backend: the products' and attention's */
    double attn_gflop_per_token;    /* of gflop_per_token, attention's over the cache */
    double peak_gflops;         /* the FMA peak, measured at the setting's start */
} yardstick;

/* A decode token's floating-point operations (a multiply-add counts two):
 * every linear weight it multiplies (the dense ones, routers included, but
 * the embedding table, which it only reads a row of, and its top-k experts in
 * each MoE layer) and attention's absorbed form over the cache, per head and
 * position the latent's and the rope key's products for its score and the
 * latent's for its output. Norms, rope and the softmax are left out: a bound
 * from less work than a step does is still a bound. */
static void decode_flops(const cli_model *m, const test_result *r, yardstick *y)
{
    const model_config *c = &m->mw.cfg;
    uint64_t table = m->mw.lm_head.data != m->mw.embed.data
                         ? (uint64_t)m->mw.embed.rows * (uint64_t)m->mw.embed.cols : 0;
    double one_expert = m->plan.n_experts ? (double)m->mw.expert_elements / m->plan.n_experts : 0;
    double weights = (double)(m->mw.dense_elements - table) +
                     (double)m->plan.moe_layers * m->plan.top_k * one_expert;
    double per_position = (double)c->n_heads * (2.0 * c->kv_lora_rank + c->qk_rope_dim);
    y->attn_gflop_per_token = 2 * per_position * (double)r->kv_positions * c->n_layers /
                              (double)r->tokens / 1e9;
    y->gflop_per_token = 2 * weights / 1e9 + y->attn_gflop_per_token;
}

/* The bound: the longest of reading the weights a token ran from RAM, its
 * DRAM tier's reads from the store (on demand and early, used or not: the
 * bytes the store delivered), which at best go on at once, and its
 * multiply-adds at the FMA peak (which long contexts' attention reaches
 * first on a CPU: 64 heads at 32 K positions are 280 GFLOP a K2 token). */
static void cpu_yardstick(cli_model *m, const test_result *r, double bw_before, double bw_after,
                          double store_bw, double peak, yardstick *y)
{
    uint64_t table = m->mw.lm_head.data != m->mw.embed.data ? linear_weight_bytes(&m->mw.embed) : 0;
    if (!r->tokens)
        return;
    decode_flops(m, r, y);
    y->peak_gflops = peak > 0 ? peak : 0;
    /* a step of several conversations reads the dense weights and each
     * expert it runs once for all of them */
    double per_token = (double)r->passes / (double)r->tokens,
           experts = (double)r->expert_calls / (double)r->tokens,
           one_expert = m->plan.n_experts ? (double)routed_expert_bytes(m) / m->plan.n_experts : 0;
    y->kv_gb_per_token = (double)r->kv_positions * (double)kv_cache_position_bytes(&m->en.kv) /
                         (double)r->tokens / 1e9;
    y->gb_per_token = (per_token * (double)(m->plan.dense_bytes - table) + experts * one_expert) /
                      1e9 + y->kv_gb_per_token;
    y->read_bw = bw_before > 0 && bw_after > 0 ? (bw_before + bw_after) / 2 : 0;
    if (y->read_bw <= 0)
        return;
    double seconds = y->gb_per_token / y->read_bw;
    y->bound_by = "ram";
    if (m->plan.use_store && store_bw > 0) {
        y->store_bw = store_bw;
        y->store_gb_per_token = (double)r->bytes_read / 1e9 / (double)r->tokens;
        if (y->store_gb_per_token / store_bw > seconds) {
            seconds = y->store_gb_per_token / store_bw;
            y->bound_by = "store";
        }
    }
    if (y->peak_gflops > 0 && y->gflop_per_token / y->peak_gflops > seconds) {
        seconds = y->gflop_per_token / y->peak_gflops;
        y->bound_by = "fma";
    }
    y->bound_tps = 1 / seconds;
}

/* The GPU backend's decode bound over the repetitions' steps. */
static void gpu_yardstick(cli_model *m, const test_result *r, yardstick *y)
{
    const decode_work *w = &r->gpu;
    hybrid_rates rates;
    decode_bound b;
    gpu_backend_rates(&m->be, &rates);
    if (!w->tokens)
        return;
    /* every routed expert a token ran, on the GPU or on the CPU */
    double experts = (double)(w->gpu_experts + w->cpu_experts) / (double)w->tokens;
    y->kv_gb_per_token = (double)w->kv_bytes / (double)w->tokens / 1e9;
    y->gb_per_token = ((double)w->resident_bytes + experts * (double)w->expert_bytes) / 1e9 +
                      y->kv_gb_per_token;
    if (decode_bound_compute(&rates, w, &b) == 0) {
        y->bound_tps = 1 / b.bound;
        y->bound_by = b.bound == b.gpu ? "gpu" : b.bound == b.cpu ? "cpu" : "copy";
    }
}

typedef struct setting {
    const char *model;          /* -m, as a JSON string */
    const char *backend;
    io_mode io;                 /* --io: how the store is read */
    int threads;                /* 0: not a CPU count to report */
    double dram_gb;             /* the DRAM tier's size; < 0: no tier (experts mapped) */
    double vram_gb;             /* --vram-gb; < 0: not given (the default budget) */
    kv_type cache;              /* --cache-type */
} setting;

/* The model's shape above the table: what the rows are of. */
static void print_header(const cli_model *m, const char *dir)
{
    const model_config *c = &m->mw.cfg;
    printf("model %s: %d layers (%d MoE, %d routed experts each, top %d), %.2f GB of dense "
           "weights, %.2f GB of routed experts\n\n", dir, c->n_layers, m->plan.moe_layers,
           c->n_routed_experts, c->n_experts_per_tok, (double)m->plan.dense_bytes / 1e9,
           (double)routed_expert_bytes(m) / 1e9);
    printf("| backend | threads | dram GB | vram GB | test | t/s | GB/token | DRAM hits "
           "| VRAM hits | bound t/s | of bound | bound by |\n"
           "|---|---|---|---|---|---|---|---|---|---|---|---|\n");
}

/* share of all, or -1 when there were none */
static double rate(uint64_t part, uint64_t all)
{
    return all ? (double)part / (double)all : -1;
}

static void print_json_row(const setting *s, const test_spec *t, const char *test,
                           const test_result *r, const yardstick *y, double mean, double sd)
{
    printf("{\"bench\": \"model\", \"model\": %s, \"backend\": \"%s\", \"threads\": %d, ",
           s->model, s->backend, s->threads);
    if (s->dram_gb < 0)
        printf("\"dram_gb\": null, ");
    else
        printf("\"dram_gb\": %.6g, ", s->dram_gb);
    if (s->vram_gb < 0)
        printf("\"vram_gb\": null, ");
    else
        printf("\"vram_gb\": %.6g, ", s->vram_gb);
    printf("\"cache_type\": \"%s\", \"test\": \"%s\", \"depth\": %d, \"parallel\": %d, "
           "\"reps\": %d, \"tps\": %.4f, \"tps_sd\": %.4f, \"samples\": [",
           kv_type_name(s->cache), test, t->depth, t->S, r->n, mean, sd);
    for (int k = 0; k < r->n; k++)
        printf("%s%.4f", k ? ", " : "", r->tps[k]);
    printf("]");
    if (rate(r->hits, r->wanted) >= 0)
        printf(", \"dram_hit_rate\": %.4f", rate(r->hits, r->wanted));
    if (rate(r->vram_hits, r->vram_all) >= 0)
        printf(", \"vram_hit_rate\": %.4f", rate(r->vram_hits, r->vram_all));
    if (y) {
        printf(", \"gb_per_token\": %.6g, \"kv_gb_per_token\": %.6g", y->gb_per_token,
               y->kv_gb_per_token);
        if (y->read_bw > 0)
            printf(", \"read_bw_gbps\": %.6g", y->read_bw);
        if (y->store_bw > 0)
            printf(", \"store_gb_per_token\": %.6g, \"store_read_gbps\": %.6g",
                   y->store_gb_per_token, y->store_bw);
        if (y->gflop_per_token > 0)
            printf(", \"gflop_per_token\": %.6g, \"attn_gflop_per_token\": %.6g",
                   y->gflop_per_token, y->attn_gflop_per_token);
        if (y->peak_gflops > 0)
            printf(", \"peak_gflops\": %.6g", y->peak_gflops);
        if (y->bound_tps > 0)
            printf(", \"bound_tps\": %.6g, \"ratio\": %.4f, \"bound_by\": \"%s\"", y->bound_tps,
                   mean / y->bound_tps, y->bound_by);
    }
    printf("}\n");
}

/* A test's row: ppP or tgN, "xS" for S conversations stepped together, "@ dD"
 * after D tokens of context; tokens/s are all conversations' together. */
static void print_row(const bench_opts *o, const setting *s, const test_spec *t,
                      const test_result *r, const yardstick *y)
{
    double mean, sd;
    mean_sd(r->tps, r->n, &mean, &sd);
    char test[32], name[64];
    snprintf(test, sizeof test, "%s%d", t->decode ? "tg" : "pp", t->len);
    if (o->json) {
        print_json_row(s, t, test, r, y, mean, sd);
        fflush(stdout);
        return;
    }
    int at = snprintf(name, sizeof name, "%s", test);
    if (t->S > 1)
        at += snprintf(name + at, sizeof name - (size_t)at, " x%d", t->S);
    if (t->depth)
        snprintf(name + at, sizeof name - (size_t)at, " @ d%d", t->depth);
    char dram[32] = "-", vram[32] = "-", threads[16] = "-", gb[32] = "", dhit[32] = "",
         vhit[32] = "", bound[32] = "", ratio[32] = "";
    const char *by = "";
    if (s->dram_gb >= 0)
        snprintf(dram, sizeof dram, "%.4g", s->dram_gb);
    if (s->vram_gb >= 0)
        snprintf(vram, sizeof vram, "%.4g", s->vram_gb);
    if (s->threads)
        snprintf(threads, sizeof threads, "%d", s->threads);
    if (rate(r->hits, r->wanted) >= 0)
        snprintf(dhit, sizeof dhit, "%.1f%%", 100 * rate(r->hits, r->wanted));
    if (rate(r->vram_hits, r->vram_all) >= 0)
        snprintf(vhit, sizeof vhit, "%.1f%%", 100 * rate(r->vram_hits, r->vram_all));
    if (y)
        snprintf(gb, sizeof gb, "%.4g", y->gb_per_token);
    if (y && y->bound_tps > 0) {
        snprintf(bound, sizeof bound, "%.2f", y->bound_tps);
        snprintf(ratio, sizeof ratio, "%.3f", mean / y->bound_tps);
        by = y->bound_by;
    }
    char cache[32] = "";
    if (s->cache != KV_F32)
        snprintf(cache, sizeof cache, ", %s KV cache", kv_type_name(s->cache));
    printf("| %s%s | %s | %s | %s | %s | %.2f ± %.2f | %s | %s | %s | %s | %s | %s |\n",
           s->backend, cache, threads, dram, vram, name, mean, sd, gb, dhit, vhit, bound, ratio,
           by);
    fflush(stdout);
}

/* Every test of one opened setting. */
static int run_setting(cli_model *m, const bench_opts *o, const token_stream *ts, const setting *s,
                       errbuf *e)
{
    int cpu = !strcmp(m->be.name, "cpu");
    double store_bw = 0;
    int decodes = 0;
    for (int k = 0; k < o->n_gen; k++)
        decodes += o->gen[k] > 0;
    if (cpu && decodes && m->plan.use_store &&
        (store_bw = store_read_gbps(&m->st, s->io, m->plan.top_k, e)) < 0)
        return -1;
    /* the threads' FMA peak (a bound left out when they cannot be had, as
     * the read bandwidth's) */
    double peak = cpu && decodes ? kernel_bench_fma_peak(cpu_backend_path(&m->be), s->threads, e)
                                 : 0;
    for (int di = 0; di < o->n_depth; di++) {
        int d = o->depth[di];
        for (int k = 0; k < o->n_prompt; k++) {
            test_spec t = {.depth = d, .len = o->prompt[k], .S = 1};
            test_result r;
            if (!t.len)
                continue;
            if (run_test(m, o, ts, &t, &r, e))
                return -1;
            print_row(o, s, &t, &r, NULL);
        }
        for (int k = 0; k < o->n_gen; k++)
            for (int pi = 0; pi < o->n_parallel; pi++) {
                test_spec t = {.depth = d, .len = o->gen[k], .decode = 1, .S = o->parallel[pi]};
                test_result r;
                yardstick y = {0};
                if (!t.len)
                    continue;
                kernel_path path = cpu ? cpu_backend_path(&m->be) : KPATH_SCALAR;
                double bw0 = cpu ? kernel_bench_read_bw(path, s->threads, e) : 0;
                if (run_test(m, o, ts, &t, &r, e))
                    return -1;
                if (cpu)
                    cpu_yardstick(m, &r, bw0, kernel_bench_read_bw(path, s->threads, e), store_bw,
                                  peak, &y);
                else if (r.gpu_counted)
                    gpu_yardstick(m, &r, &y);
                print_row(o, s, &t, &r, cpu || r.gpu_counted ? &y : NULL);
            }
    }
    return 0;
}

/* The context every test of the run fits in: the deepest depth and the
 * longest test, plus one position. */
static int needed_context(const bench_opts *o)
{
    int len = 0, depth = 0;
    for (int k = 0; k < o->n_prompt; k++)
        len = o->prompt[k] > len ? o->prompt[k] : len;
    for (int k = 0; k < o->n_gen; k++)
        len = o->gen[k] > len ? o->gen[k] : len;
    for (int k = 0; k < o->n_depth; k++)
        depth = o->depth[k] > depth ? o->depth[k] : depth;
    return depth + len + 1;
}

/* The text's tokens for -f (plain text, no special tokens). */
static int read_text_tokens(const char *dir, const char *file, token_list *out, errbuf *e)
{
    char *text;
    size_t len;
    if (cli_read_text(file, &text, &len, e))
        return -1;
    tokenizer tok;
    int rc = tokenizer_load(&tok, dir, e);
    if (rc == 0) {
        if ((rc = tokenizer_encode(&tok, text, len, 0, out, e)))
            err_prefix(e, "-f %s: ", file);
        tokenizer_free(&tok);
    }
    free(text);
    if (rc)
        return -1;
    if (out->n == 0)
        return err_set(e, "-f %s: the text has no tokens", file);
    return 0;
}

/* --cache-type's comma-separated types into o */
static int cache_type_list(const char *v, bench_opts *o)
{
    char item[32];
    o->n_cache = 0;
    for (const char *p = v;;) {
        size_t len = strcspn(p, ",");
        errbuf e;
        if (o->n_cache == MAX_VALUES || len >= sizeof item) {
            fprintf(stderr, "moetier bench model: --cache-type: at most %d types, each f32 or "
                    "bf16 (got '%s')\n", MAX_VALUES, v);
            return -1;
        }
        memcpy(item, p, len);
        item[len] = 0;
        if (kv_type_parse(item, &o->cache[o->n_cache++], &e)) {
            fprintf(stderr, "moetier bench model: %s\n", e.msg);
            return -1;
        }
        if (!p[len])
            return 0;
        p += len + 1;
    }
}

/* Takes bench model's own flags at argv[*i]: 1 when one was, -1 on a bad value. */
static int parse_own_flag(bench_opts *o, int argc, char **argv, int *i)
{
    const char *a = argv[*i], *v;
    if (!strcmp(a, "--json")) {
        o->json = 1;
        return 1;
    }
    if (!strcmp(a, "--no-warmup")) {
        o->warmup = 0;
        return 1;
    }
    static const char *const valued[] = {"-p", "-n", "-d", "-r", "-f", "--seed", "--parallel",
                                         "-t", "--threads", "--dram-gb", "--vram-gb",
                                         "--cache-type", "-ctk"};
    size_t k = 0;
    while (k < sizeof valued / sizeof *valued && strcmp(a, valued[k]))
        k++;
    if (k == sizeof valued / sizeof *valued)
        return 0;
    if (!(v = cli_value(argc, argv, i)))
        return -1;
    if (!strcmp(a, "-p"))
        return cli_int_list(a, v, o->prompt, &o->n_prompt, MAX_VALUES, 0, 1 << 20) ? -1 : 1;
    if (!strcmp(a, "-n"))
        return cli_int_list(a, v, o->gen, &o->n_gen, MAX_VALUES, 0, 1 << 20) ? -1 : 1;
    if (!strcmp(a, "-d"))
        return cli_int_list(a, v, o->depth, &o->n_depth, MAX_VALUES, 0, 1 << 22) ? -1 : 1;
    if (!strcmp(a, "--parallel"))
        return cli_int_list(a, v, o->parallel, &o->n_parallel, MAX_VALUES, 1, MAX_PARALLEL) ? -1
                                                                                              : 1;
    if (!strcmp(a, "-r"))
        return cli_int(a, v, 1, MAX_REPS, &o->reps) ? -1 : 1;
    if (!strcmp(a, "-f")) {
        o->file = v;
        return 1;
    }
    if (!strcmp(a, "--seed"))
        return cli_u64(a, v, &o->seed) ? -1 : 1;
    if (!strcmp(a, "--dram-gb"))
        return cli_float_list(a, v, o->dram, &o->n_dram, MAX_VALUES, 0, 1e6) ? -1 : 1;
    if (!strcmp(a, "--vram-gb"))
        return cli_float_list(a, v, o->vram, &o->n_vram, MAX_VALUES, 0, 1e6) ? -1 : 1;
    if (!strcmp(a, "--cache-type") || !strcmp(a, "-ctk"))
        return cache_type_list(v, o) ? -1 : 1;
    return cli_int_list(a, v, o->threads, &o->n_threads, MAX_VALUES, 1, 4096) ? -1 : 1;
}

int cmd_bench_model(int argc, char **argv)
{
    bench_opts o = {.prompt = {512}, .n_prompt = 1, .gen = {128}, .n_gen = 1, .depth = {0},
                    .n_depth = 1, .parallel = {1}, .n_parallel = 1, .reps = 3, .warmup = 1};
    model_flags mf = {0};
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage(stdout);
            return 0;
        }
        int r = parse_own_flag(&o, argc, argv, &i);
        if (!r)
            r = model_flags_parse(&mf, argc, argv, &i);
        if (r < 0)
            return 2;
        if (!r) {
            fprintf(stderr, "moetier bench model: unknown option '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    if (!mf.dir) {
        fprintf(stderr, "moetier bench model: -m DIR is required\n");
        return 2;
    }
    if (mf.trace) {
        fprintf(stderr, "moetier bench model: --trace is not taken (record a trace with run)\n");
        return 2;
    }
    if (model_flags_check(&mf, "bench model"))
        return 2;
    int need = needed_context(&o), measured = 0;
    for (int k = 0; k < o.n_prompt; k++)
        measured |= o.prompt[k] > 0;
    for (int k = 0; k < o.n_gen; k++)
        measured |= o.gen[k] > 0;
    if (!measured) {    /* (whatever -d is) */
        fprintf(stderr, "moetier bench model: -p and -n are all 0: there is nothing to measure\n");
        return 2;
    }
    if (mf.ctx && mf.ctx < need) {
        fprintf(stderr, "moetier bench model: -c %d is too small for the tests: the deepest -d and "
                "the longest -p or -n take %d positions\n", mf.ctx, need);
        return 2;
    }
    if (!mf.ctx)
        mf.ctx = need;
    /* each of --parallel's conversations holds the whole context: the model
     * opens for the most of them, as serve --parallel does for its slots
     * (whose -c they share), so that the plan counts all their caches */
    int most = 1;
    for (int k = 0; k < o.n_parallel; k++)
        most = o.parallel[k] > most ? o.parallel[k] : most;
    if (most > 1) {
        mf.ctx = (mf.ctx < CLI_MIN_SEQ_CONTEXT ? CLI_MIN_SEQ_CONTEXT : mf.ctx) * most;
        mf.seqs = most;
    }

    errbuf e;
    token_list text = {0};
    if (o.file && read_text_tokens(mf.dir, o.file, &text, &e))
        return cli_fail(&e);
    /* the directory as a JSON string, quotes and all escaped */
    cJSON *dir = cJSON_CreateString(mf.dir);
    char *model_json = dir ? cJSON_PrintUnformatted(dir) : NULL;
    cJSON_Delete(dir);
    if (!model_json) {
        token_list_free(&text);
        err_set(&e, "out of memory");
        return cli_fail(&e);
    }
    int n_t = o.n_threads ? o.n_threads : 1, n_d = o.n_dram ? o.n_dram : 1,
        n_v = o.n_vram ? o.n_vram : 1, n_c = o.n_cache ? o.n_cache : 1, rc = 0, first = 1;
    for (int di = 0; di < n_d && !rc; di++)
        for (int vc = 0; vc < n_v * n_c && !rc; vc++) {
            int vi = vc / n_c;
            model_flags f = mf;
            if (o.n_cache)
                f.cache_type = o.cache[vc % n_c];
            if (o.n_dram) {
                f.tiers.dram_gb = o.dram[di];
                f.tiers.dram_gb_set = 1;
            }
            if (o.n_vram) {
                f.tiers.vram_gb = o.vram[vi];
                f.tiers.vram_gb_set = 1;
            }
            cli_model m;
            int open = 0;
            for (int ti = 0; ti < n_t && !rc; ti++) {
                f.threads = o.n_threads ? o.threads[ti] : f.threads;
                /* the CPU backend changes its threads on the open model (its
                 * weights loaded, its tiers as warm as the last setting left
                 * them; each test's warm-up runs on the new pool); another
                 * backend opens anew */
                if (open && !strcmp(m.be.name, "cpu")) {
                    if (cpu_backend_set_threads(&m.be, f.threads, &e)) {
                        rc = cli_fail(&e);
                        break;
                    }
                    fprintf(stderr, "moetier bench model: -t %d on the model as opened\n",
                            cpu_backend_threads(&m.be));
                } else {
                    if (open && cli_model_close(&m)) {
                        open = 0;
                        rc = 1;
                        break;
                    }
                    /* the plan and notices once: every setting's would repeat them */
                    f.quiet = !first;
                    if (cli_model_open(&m, &f, &e)) {
                        open = 0;
                        rc = cli_fail(&e);
                        break;
                    }
                    open = 1;
                }
                if (first && !o.json)
                    print_header(&m, mf.dir);
                first = 0;
                token_stream ts = {.text = text.ids, .n_text = (int)text.n, .seed = o.seed,
                                   .vocab = m.mw.cfg.vocab_size};
                int cpu = !strcmp(m.be.name, "cpu");
                setting s = {
                    .model = model_json,
                    .backend = m.be.name,
                    .io = f.tiers.io,
                    .threads = cpu ? cpu_backend_threads(&m.be) : f.threads,
                    .dram_gb = m.plan.use_store ? (double)m.plan.dram_slots *
                                                      (double)m.plan.slot_bytes / 1e9 : -1,
                    .vram_gb = o.n_vram ? o.vram[vi] : -1,
                    .cache = m.en.kv.type,
                };
                if (run_setting(&m, &o, &ts, &s, &e))
                    rc = cli_fail(&e);
            }
            if (open && cli_model_close(&m) && !rc)
                rc = 1;
        }
    token_list_free(&text);
    free(model_json);
    return rc;
}
