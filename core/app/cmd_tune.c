/* cmd_tune: `moetier tune -m DIR` measures this machine, predicts decode speed
 * for a sweep of DRAM tier sizes, recommends one and checks the prediction there.
 *
 * 1. Measures: the read bandwidth of RAM (the kernel benchmark's STREAM-like
 *    read) and of the expert store (raw blob reads, top_k at a time).
 * 2. Calibrates: decode runs of --tokens steps (one token per step, no
 *    lookahead) at a small DRAM tier and at the largest that fits give the
 *    compute time per token and the cost per expert read from the store (the
 *    line through the two; extrapolating beyond them is not trusted: a run
 *    with every expert in RAM does no I/O at all and is faster than any line
 *    through runs that do); the small run records its routing.
 * 3. Predicts (prefetch/tune_model.h) tokens/s and hit rate for each budget by
 *    replaying that trace (or --trace FILE) through the tier's cache policy.
 * 4. Recommends the smallest budget predicted within 10 % of the fastest that
 *    fits in the memory the planner sees free (the knee of the curve: more RAM
 *    buys little after it), runs the same decode there and prints the measured
 *    speed next to the prediction. When that size is a calibration point, a
 *    second check runs at the sweep size between the two calibration points,
 *    where the model was not fitted. Writes the plot (--svg). */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cJSON.h"
#include "cli_common.h"
#include "core/base/decimal.h"
#include "core/base/fileutil.h"
#include "commands.h"
#include "core/base/progress.h"
#include "cpu_kernels/cpu_backend.h"
#include "cpu_kernels/kernel_bench.h"
#include "prefetch/tune_model.h"
#include "prefetch/tune_plot.h"
#include "tiers/nvme_tier.h"
#include "tiers/store_read_rate.h"
#include "tiers/tiered_source.h"

#define MAX_POINTS 32

static void usage(FILE *f)
{
    fprintf(f,
            "usage: moetier tune -m DIR [--tokens N] [--budgets LIST] [--trace FILE]\n"
            "                    [--svg FILE] [--json] [--no-check]\n"
            "  Measures this machine, predicts decode tokens/s and the DRAM hit rate for a\n"
            "  sweep of DRAM tier sizes, recommends the smallest within 10%% of the fastest\n"
            "  that fits (--dram-gb caps it) and checks the prediction there by a measured\n"
            "  run. The model needs an expert store (moetier convert). The sizes leave\n"
            "  room for the KV cache of -c positions (--cache-type).\n"
            "  --tokens N     decode steps of the calibration and check runs (default 96)\n"
            "  --budgets LIST DRAM tier sizes in GB, comma-separated (default: 10 sizes from\n"
            "                 2 x top_k experts to all of them)\n"
            "  --trace FILE   routing to replay (a recorded trace of this model; default: the\n"
            "                 calibration run's own routing)\n"
            "  --svg FILE     the plot of tokens/s and hit rate against size (default tune.svg)\n"
            "  --json         one JSON object per budget, then one with the recommendation\n"
            "  --no-check     predict only, no measured run at the recommended size\n"
            "  (the model flags below apply)\n");
    model_flags_usage_except(f, MF_HELP_TRACE);
}

typedef struct decode_result {
    int slots;
    uint64_t hits;
    tune_sample s;
} decode_result;

static int argmax(const float *v, int n)
{
    int b = 0;
    for (int i = 1; i < n; i++)
        if (v[i] > v[b])
            b = i;
    return b;
}

/* Greedy decode of `tokens` steps from token 1, one token per step, no
 * lookahead, with a DRAM tier of `slots` experts; records routing to trace_out
 * when set. */
static int decode_run(const model_flags *base, int slots, uint64_t slot_bytes, int tokens,
                      const char *trace_out, decode_result *r, errbuf *e)
{
    model_flags f = *base;
    f.quiet = 1;
    f.chunk = 1;
    f.ctx = tokens + 1;
    f.trace = trace_out;
    f.tiers.dram_gb = (double)slots * (double)slot_bytes / 1e9 * 1.000001;
    f.tiers.dram_gb_set = 1;
    f.tiers.lookahead = 0;
    f.tiers.lookahead_set = 1;
    f.tiers.stats = 0;
    cli_model m;
    if (cli_model_open(&m, &f, e))
        return -1;
    memset(r, 0, sizeof *r);
    r->slots = m.plan.dram_slots;
    int V = m.mw.cfg.vocab_size, id = 1 % V, rc = 0;
    float *logits = malloc((size_t)V * sizeof *logits);
    if (!logits)
        rc = err_set(e, "out of memory");
    for (int k = 0; k < tokens && !rc; k++) {
        rc = engine_decode(&m.en, id, logits, e);
        id = argmax(logits, V);
    }
    r->s.decode_s = m.en.stats.decode_seconds;
    r->s.tokens = tokens;
    tier_layer_stats all;
    tiered_source_totals(&m.src, &all);
    r->hits += all.hits;
    r->s.misses += all.misses + all.early;   /* (reads all; tune runs without lookahead) */
    r->s.stall_s += all.stall_seconds;
    free(logits);
    cli_model_close(&m);
    return rc;
}

/* The default plot's name holds a file tune did not write: it is not replaced
 * unless --svg names it (only what the user named is replaced). */
static int refuse_foreign_plot(const char *svg, errbuf *e)
{
    struct stat st;
    if (stat(svg, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size == 0)
        return 0;
    char head[4096] = {0};
    FILE *f = fopen(svg, "r");
    size_t got = f ? fread(head, 1, sizeof head - 1, f) : 0;
    if (f)
        fclose(f);
    head[got] = 0;
    if (strstr(head, TUNE_PLOT_MARK))
        return 0;
    return err_set(e, "%s is there and is not a plot of moetier tune's: it is left as it is; "
                   "give --svg FILE for the plot", svg);
}

/* Expert slots gb GB holds (as many as an int counts: more than any store) */
/* --dram-gb's text for `slots` experts of slot_bytes: the fewest decimals
 * whose value, rounded up, still holds them and no more (%.3f of a small
 * budget lost experts: 0.0014 printed as 0.001). */
static void budget_text(int slots, uint64_t slot_bytes, char *out, size_t size)
{
    double gb = (double)slots * (double)slot_bytes / 1e9, slot_gb = (double)slot_bytes / 1e9;
    for (int k = 3; k < 12; k++) {
        double scale = pow(10, k), up = ceil(gb * scale * (1 + 1e-12)) / scale;
        if (up < gb + slot_gb || k == 11) {
            snprintf(out, size, "%.*f", k, up);
            return;
        }
    }
}

static int slots_in(double gb, uint64_t slot_bytes)
{
    double slots = gb * 1e9 / (double)slot_bytes;
    return slots >= INT_MAX ? INT_MAX : (int)slots;
}

static int parse_budgets(const char *s, double *gb, int *n)
{
    *n = 0;
    const char *p = s;
    do {
        char *end;
        errno = 0;
        double v = decimal_parse(p, &end);
        if (errno || end == p || !(v > 0) || v > 1e9 || *n == MAX_POINTS ||
            (*end && (*end != ',' || !end[1]))) {
            fprintf(stderr, "moetier: --budgets expects up to %d sizes in GB (above 0, at most "
                            "1e9), comma-separated, got '%s'\n", MAX_POINTS, s);
            return -1;
        }
        gb[(*n)++] = v;
        p = *end ? end + 1 : end;
    } while (*p);
    return 0;
}

/* The calibration's trace, in $TMPDIR: removed when a signal ends tune too
 * (with trace_write's own temporary name), then the signal takes its course. */
static char tmp_trace[4096], tmp_trace_part[4200];
static const int tmp_signals[] = {SIGINT, SIGTERM, SIGHUP};

static void remove_tmp_trace_and_die(int sig)
{
    unlink(tmp_trace);
    unlink(tmp_trace_part);
    signal(sig, SIG_DFL);
    raise(sig);
}

static int make_tmp_trace(void)
{
    const char *dir = getenv("TMPDIR");
    snprintf(tmp_trace, sizeof tmp_trace, "%s/moetier-tune-XXXXXX", dir && *dir ? dir : "/tmp");
    int fd = mkstemp(tmp_trace);
    if (fd < 0) {
        fprintf(stderr, "moetier tune: temporary trace %s: %s\n", tmp_trace, strerror(errno));
        return -1;
    }
    close(fd);
    file_output_temp_name(tmp_trace, tmp_trace_part, sizeof tmp_trace_part);
    for (size_t i = 0; i < sizeof tmp_signals / sizeof *tmp_signals; i++)
        signal(tmp_signals[i], remove_tmp_trace_and_die);
    return 0;
}

static void remove_tmp_trace(void)
{
    for (size_t i = 0; i < sizeof tmp_signals / sizeof *tmp_signals; i++)
        signal(tmp_signals[i], SIG_DFL);
    unlink(tmp_trace);
}

static int cmp_point(const void *a, const void *b)
{
    const tune_point *x = a, *y = b;
    return (x->slots > y->slots) - (x->slots < y->slots);
}

int cmd_tune(int argc, char **argv)
{
    model_flags mf = {0};
    const char *budgets_s = NULL, *trace_in = NULL, *svg = "tune.svg";
    int svg_named = 0;
    int tokens = 96, json = 0, check = 1;
    for (int i = 1; i < argc; i++) {
        int r = model_flags_parse(&mf, argc, argv, &i);
        if (r < 0)
            return 2;
        if (r > 0)
            continue;
        const char *a = argv[i], *v;
        if (!strcmp(a, "--tokens")) {
            if (!(v = cli_value(argc, argv, &i)) || cli_int(a, v, 2, 100000, &tokens))
                return 2;
        } else if (!strcmp(a, "--budgets")) {
            if (!(budgets_s = cli_value(argc, argv, &i)))
                return 2;
        } else if (!strcmp(a, "--svg")) {
            svg_named = 1;
            if (!(svg = cli_value(argc, argv, &i)))
                return 2;
        } else if (!strcmp(a, "--json")) {
            json = 1;
        } else if (!strcmp(a, "--no-check")) {
            check = 0;
        } else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "moetier tune: unexpected '%s'\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (!mf.dir) {
        fprintf(stderr, "moetier tune: -m DIR is required\n");
        usage(stderr);
        return 2;
    }
    /* its model is the CPU's compute and the DRAM tier's misses (and it reads
     * the CPU backend's threads and kernels): every run on the CPU, whatever
     * $MOETIER_BACKEND says (so set before the flags are checked against it) */
    if (mf.backend && strcmp(mf.backend, "cpu")) {
        fprintf(stderr, "moetier tune: it sizes the DRAM tier for the CPU backend; --backend %s "
                "is not taken (use bench model --vram-gb for the GPU's cache)\n", mf.backend);
        return 2;
    }
    mf.backend = "cpu";
    if (model_flags_check(&mf, "tune"))
        return 2;
    /* --trace FILE is a model flag (record); tune reads it instead */
    if (mf.trace) {
        trace_in = mf.trace;
        mf.trace = NULL;
    }
    double gb_list[MAX_POINTS];
    int n_gb = 0;
    if (budgets_s && parse_budgets(budgets_s, gb_list, &n_gb))
        return 2;
    errbuf e;
    /* a trace that cannot serve, or a plot that cannot be written, fails now,
     * not after minutes of measuring */
    if (cli_check_output("--svg", svg, &mf, &e) || file_check_writable(svg, &e) ||
        (!svg_named && refuse_foreign_plot(svg, &e)))
        return cli_fail(&e);
    routing_trace given;
    if (trace_in && trace_read(&given, trace_in, &e))
        return cli_fail(&e);

    /* the plan with the automatic budget: sizes, what fits, the store (at the
     * context -c names: the automatic budget leaves its KV cache room, as it
     * will for the runs the recommendation is for); the model that measures
     * opens with the least DRAM tier (at the automatic budget it would touch
     * and lock all of it, and read the whole store when every expert fits) */
    tier_plan plan;
    cli_model probe;
    model_flags pf = mf;
    pf.quiet = 1;
    pf.tiers.lookahead = 0;
    pf.tiers.lookahead_set = 1;
    int probe_failed = cli_model_plan(&mf, &plan, &e);
    if (!probe_failed && plan.use_store) {
        pf.tiers.dram_gb = (double)plan.top_k * (double)plan.slot_bytes / 1e9 * 1.000001;
        pf.tiers.dram_gb_set = 1;
    }
    if (probe_failed || cli_model_open(&probe, &pf, &e)) {
        if (trace_in)
            trace_free(&given);
        return cli_fail(&e);
    }
    if (plan.kv_left_out)
        fprintf(stderr, "moetier tune: the sizes stop short of %.2f GB for the KV cache "
                "(%d positions: -c, --cache-type)\n", plan.kv_bytes / 1e9, plan.kv_positions);
    if (trace_in) {
        const model_config *mc = &probe.mw.cfg;
        int fits = (int)given.n_experts == mc->n_routed_experts &&
                   (int)given.top_k == mc->n_experts_per_tok && (int)given.n_layers <= mc->n_layers;
        if (!fits)
            fprintf(stderr, "moetier tune: %s records %u layers of %u experts, top %u; the model "
                    "has %d layers of %d, top %d\n", trace_in, given.n_layers, given.n_experts,
                    given.top_k, mc->n_layers, mc->n_routed_experts, mc->n_experts_per_tok);
        trace_free(&given);
        if (!fits) {
            cli_model_close(&probe);
            return 1;
        }
    }
    if (!plan.use_store) {
        cli_model_close(&probe);
        fprintf(stderr, "moetier tune: %s has no expert store; make one with `moetier convert -m "
                        "%s` (tune sizes the DRAM tier in front of it)\n", mf.dir, mf.dir);
        return 1;
    }
    for (int i = 0; i < n_gb; i++) {
        int slots = slots_in(gb_list[i], plan.slot_bytes);
        if (slots < plan.top_k) {
            cli_model_close(&probe);
            fprintf(stderr, "moetier tune: %.3g GB holds %d experts, fewer than the %d one token "
                            "uses at once\n", gb_list[i], slots, plan.top_k);
            return 2;
        }
    }
    int threads = cpu_backend_threads(&probe.be);
    kernel_path path = cpu_backend_path(&probe.be);
    fprintf(stderr, "measuring: RAM read bandwidth (%d thread%s) ...\n", threads,
            threads == 1 ? "" : "s");
    double ram_gbps = kernel_bench_read_bw(path, threads, &e);
    if (ram_gbps < 0) {
        cli_model_close(&probe);
        return cli_fail(&e);
    }
    fprintf(stderr, "measuring: expert store reads (%d at a time) ...\n", plan.top_k);
    double store_gbps = store_read_gbps(&probe.st, mf.tiers.io, plan.top_k, &e);
    int n_blobs = probe.st.n_blobs;
    cli_model_close(&probe);
    if (store_gbps < 0)
        return cli_fail(&e);
    uint64_t sb = plan.slot_bytes;
    int max_slots = plan.dram_slots < n_blobs ? plan.dram_slots : n_blobs;

    /* calibration at a small tier: most experts come from the store */
    int calib = 2 * plan.top_k > n_blobs / 10 ? 2 * plan.top_k : n_blobs / 10;
    if (calib > max_slots)
        calib = max_slots;
    if (make_tmp_trace())
        return 1;
    decode_result cal, big;
    fprintf(stderr, "calibrating: %d decode steps with %d of %d experts in DRAM ...\n", tokens,
            calib, n_blobs);
    if (decode_run(&mf, calib, sb, tokens, tmp_trace, &cal, &e)) {
        remove_tmp_trace();
        return cli_fail(&e);
    }
    fprintf(stderr, "calibrating: %d decode steps with %d of %d experts in DRAM ...\n", tokens,
            max_slots, n_blobs);
    if (decode_run(&mf, max_slots, sb, tokens, NULL, &big, &e)) {
        remove_tmp_trace();
        return cli_fail(&e);
    }
    tune_calibration c = tune_calibrate(&cal.s, &big.s);
    routing_trace t;
    int rc = trace_read(&t, trace_in ? trace_in : tmp_trace, &e);
    remove_tmp_trace();
    if (rc)
        return cli_fail(&e);

    /* the sweep */
    tune_point pts[MAX_POINTS + 2];
    int n = 0;
    if (n_gb) {
        for (int i = 0; i < n_gb; i++) {
            int s = slots_in(gb_list[i], sb);     /* >= top_k: checked above */
            pts[n++].slots = s < n_blobs ? s : n_blobs;
        }
    } else {
        int lo = 2 * plan.top_k < n_blobs ? 2 * plan.top_k : n_blobs;
        for (int i = 0; i < 10; i++)
            pts[n++].slots = (int)lround(lo * pow((double)n_blobs / lo, i / 9.0));
    }
    pts[n++].slots = calib;     /* so the plot shows where the calibration ran */
    pts[n++].slots = max_slots;
    qsort(pts, (size_t)n, sizeof *pts, cmp_point);
    int m = 0;
    for (int i = 0; i < n; i++)
        if (!m || pts[i].slots != pts[m - 1].slots)
            pts[m++] = pts[i];
    n = m;
    for (int i = 0; i < n; i++)
        pts[i].gb = (double)pts[i].slots * (double)sb / 1e9;
    const char *policy = mf.tiers.policy ? mf.tiers.policy : "lru";
    if (tune_predict(&t, policy, &c, n_blobs, pts, n, &e)) {
        trace_free(&t);
        return cli_fail(&e);
    }
    trace_free(&t);
    int rec = tune_recommend(pts, n, max_slots, 0.10);

    /* the checks: the recommended size, and one the model was not fitted at */
    int val = -1;
    if (rec >= 0 && (pts[rec].slots == calib || pts[rec].slots == max_slots)) {
        double target = sqrt((double)calib * (double)max_slots);
        for (int i = 0; i < n; i++)
            if (pts[i].slots > calib && pts[i].slots < max_slots &&
                (val < 0 || fabs(pts[i].slots - target) < fabs(pts[val].slots - target)))
                val = i;
    }
    decode_result chk = {0}, vchk = {0};
    double measured = 0, vmeasured = 0;
    for (int k = 0; check && k < 2; k++) {
        int at = k ? val : rec;
        if (at < 0)
            continue;
        decode_result *d = k ? &vchk : &chk;
        fprintf(stderr, "checking: %d decode steps with %d experts in DRAM (%.3g GB) ...\n",
                tokens, pts[at].slots, pts[at].gb);
        if (decode_run(&mf, pts[at].slots, sb, tokens, NULL, d, &e))
            return cli_fail(&e);
        *(k ? &vmeasured : &measured) = d->s.decode_s > 0 ? tokens / d->s.decode_s : 0;
    }

    if (json) {
        for (int i = 0; i < n; i++) {
            cJSON *j = cJSON_CreateObject();
            cJSON_AddNumberToObject(j, "dram_gb", pts[i].gb);
            cJSON_AddNumberToObject(j, "slots", pts[i].slots);
            cJSON_AddNumberToObject(j, "hit_rate", pts[i].hit_rate);
            cJSON_AddNumberToObject(j, "misses_per_token", pts[i].misses_per_token);
            cJSON_AddNumberToObject(j, "predicted_tok_s", pts[i].tokens_per_s);
            cJSON_AddBoolToObject(j, "fits", pts[i].slots <= max_slots);
            char *s = cJSON_PrintUnformatted(j);
            puts(s);
            free(s);
            cJSON_Delete(j);
        }
        cJSON *j = cJSON_CreateObject();
        cJSON_AddNumberToObject(j, "ram_read_gbps", ram_gbps);
        cJSON_AddNumberToObject(j, "store_read_gbps", store_gbps);
        cJSON_AddNumberToObject(j, "compute_s_per_token", c.compute_s);
        cJSON_AddNumberToObject(j, "stall_s_per_miss", c.stall_per_miss_s);
        if (rec >= 0) {
            char at[32];
            budget_text(pts[rec].slots, sb, at, sizeof at);
            cJSON_AddNumberToObject(j, "recommended_dram_gb", strtod(at, NULL));   /* (as --dram-gb takes it) */
            cJSON_AddNumberToObject(j, "recommended_experts", pts[rec].slots);
            cJSON_AddNumberToObject(j, "predicted_tok_s", pts[rec].tokens_per_s);
            if (measured > 0) {
                cJSON_AddNumberToObject(j, "measured_tok_s", measured);
                cJSON_AddNumberToObject(j, "measured_hit_rate",
                                        chk.hits + chk.s.misses ? (double)chk.hits /
                                        (double)(chk.hits + chk.s.misses) : 0);
                cJSON_AddNumberToObject(j, "error", pts[rec].tokens_per_s / measured - 1);
            }
            if (vmeasured > 0) {
                cJSON_AddNumberToObject(j, "validation_dram_gb", pts[val].gb);
                cJSON_AddNumberToObject(j, "validation_predicted_tok_s", pts[val].tokens_per_s);
                cJSON_AddNumberToObject(j, "validation_measured_tok_s", vmeasured);
                cJSON_AddNumberToObject(j, "validation_error",
                                        pts[val].tokens_per_s / vmeasured - 1);
            }
        }
        char *s = cJSON_PrintUnformatted(j);
        puts(s);
        free(s);
        cJSON_Delete(j);
    } else {
        printf("this machine: RAM read %.1f GB/s (%d thread%s), expert store read %.2f GB/s (%d "
               "at a time)\n", ram_gbps, threads, threads == 1 ? "" : "s", store_gbps, plan.top_k);
        printf("calibration (%d steps with %d and with %d of %d experts in DRAM): %.2f ms "
               "compute per token, %.3f ms per expert read from the store (%.2f MB each)\n",
               tokens, cal.slots, big.slots, n_blobs, 1e3 * c.compute_s,
               1e3 * c.stall_per_miss_s, sb / 1e6);
        printf("%10s %8s %9s %12s %14s\n", "DRAM GB", "experts", "hit rate", "misses/token",
               "predicted tok/s");
        for (int i = 0; i < n; i++)
            printf("%10.3f %8d %8.1f%% %12.2f %14.2f%s%s\n", pts[i].gb, pts[i].slots,
                   100 * pts[i].hit_rate, pts[i].misses_per_token, pts[i].tokens_per_s,
                   i == rec ? "  <- recommended" : "",
                   pts[i].slots > max_slots ? "  (more than is free: extrapolated)" : "");
        if (rec >= 0) {
            char at[32];
            budget_text(pts[rec].slots, sb, at, sizeof at);
            printf("recommended: --dram-gb %s (%d experts): predicted %.2f tok/s, hit rate "
                   "%.1f%%\n", at, pts[rec].slots, pts[rec].tokens_per_s, 100 * pts[rec].hit_rate);
            if (measured > 0)
                printf("measured there: %.2f tok/s, hit rate %.1f%% (prediction %+.1f%%)\n",
                       measured, chk.hits + chk.s.misses ? 100.0 * (double)chk.hits /
                       (double)(chk.hits + chk.s.misses) : 0.0,
                       100 * (pts[rec].tokens_per_s / measured - 1));
            if (val >= 0 && vmeasured > 0) {
                budget_text(pts[val].slots, sb, at, sizeof at);
                printf("between the calibration points, at --dram-gb %s (%d experts): predicted "
                       "%.2f tok/s, measured %.2f (prediction %+.1f%%)\n", at, pts[val].slots,
                       pts[val].tokens_per_s, vmeasured, 100 * (pts[val].tokens_per_s / vmeasured - 1));
            }
        } else {
            printf("recommended: none of these sizes fits in the memory free here\n");
        }
    }
    char title[512];
    snprintf(title, sizeof title, "moetier tune: %s", mf.dir);
    if (tune_write_svg(svg, title, pts, n, rec, measured, &e))
        return cli_fail(&e);
    fprintf(stderr, "plot: %s\n", svg);
    return 0;
}
