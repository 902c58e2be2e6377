/* cli_common: see cli_common.h. */
#include "cli_common.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/base/decimal.h"
#include "core/base/fileutil.h"
#include "core/base/progress.h"
#include "core/engine/backend_profile.h"
#include "cpu_kernels/cpu_backend.h"
#include "kernels/decode_bound.h"
#include "kernels/gpu_backend.h"
#include "kernels/gpu_layout.h"
#include "kernels/gpu_probe.h"
#include "tiers/store_source.h"
#include "tiers/tiered_source.h"

const char *cli_value(int argc, char **argv, int *i)
{
    if (*i + 1 >= argc) {
        fprintf(stderr, "moetier: %s needs a value\n", argv[*i]);
        return NULL;
    }
    return argv[++*i];
}

int cli_int(const char *flag, const char *s, long min, long max, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < min || v > max) {
        fprintf(stderr, "moetier: %s expects an integer in %ld..%ld, got '%s'\n", flag, min, max, s);
        return -1;
    }
    *out = (int)v;
    return 0;
}

int cli_float(const char *flag, const char *s, float *out)
{
    char *end;
    errno = 0;
    double v = decimal_parse(s, &end);
    if (end == s || *end || isnan(v)) {
        fprintf(stderr, "moetier: %s expects a number, got '%s'\n", flag, s);
        return -1;
    }
    /* finite as a float too: 1e39 is not */
    if ((errno && fabs(v) > 1) || !isfinite(v) || fabs(v) > FLT_MAX) {
        fprintf(stderr, "moetier: %s expects a number of at most %g in size, got '%s'\n", flag,
                FLT_MAX, s);
        return -1;
    }
    *out = (float)v;
    return 0;
}

/* The next item of comma-separated list s at *t (advanced past it) into
 * item: 1 when there is one, 0 at the end, -1 (said on stderr) for an empty
 * item ("1,,2" is refused, not skipped), one too long or past max items.
 * Spaces after a comma are passed over ("1, 2"). */
static int next_list_item(const char *flag, const char *s, const char **t, int k, int max,
                          char *item, size_t size)
{
    if (!*t)
        return 0;
    if (*t != s)
        while (**t == ' ')
            ++*t;
    size_t len = strcspn(*t, ",");
    if (k >= max) {
        fprintf(stderr, "moetier: %s takes at most %d values\n", flag, max);
        return -1;
    }
    if (len == 0) {
        fprintf(stderr, "moetier: %s has an empty value in '%s'\n", flag, s);
        return -1;
    }
    if (len >= size) {
        fprintf(stderr, "moetier: %s: '%.*s' is not a value it takes\n", flag, (int)len, *t);
        return -1;
    }
    snprintf(item, size, "%.*s", (int)len, *t);
    *t = (*t)[len] ? *t + len + 1 : NULL;
    return 1;
}

int cli_int_list(const char *flag, const char *s, int *out, int *n, int max, int lo, int hi)
{
    char item[32];
    int r;
    *n = 0;
    for (const char *t = s; (r = next_list_item(flag, s, &t, *n, max, item, sizeof item)) == 1;)
        if (cli_int(flag, item, lo, hi, &out[(*n)++]))
            return -1;
    return r;
}

int cli_float_list(const char *flag, const char *s, double *out, int *n, int max, double lo,
                   double hi)
{
    char item[64];
    int r;
    *n = 0;
    for (const char *t = s; (r = next_list_item(flag, s, &t, *n, max, item, sizeof item)) == 1;) {
        float v;
        if (cli_float(flag, item, &v))
            return -1;
        if (!(v >= lo && v <= hi)) {
            fprintf(stderr, "moetier: %s expects values from %g to %g, got '%s'\n", flag, lo, hi,
                    item);
            return -1;
        }
        out[(*n)++] = v;
    }
    return r;
}

int cli_u64(const char *flag, const char *s, unsigned long long *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end || s[0] == '-' || isspace((unsigned char)s[0])) {
        fprintf(stderr, "moetier: %s expects a non-negative integer, got '%s'\n", flag, s);
        return -1;
    }
    *out = v;
    return 0;
}

int cli_read_text(const char *path, char **out, size_t *len, errbuf *e)
{
    if (!strcmp(path, "-"))
        return stream_read_all(stdin, "standard input", out, len, e);
    return file_read_all(path, out, len, e);
}

int cli_parse_ids(const char *s, int **ids, int *n)
{
    *ids = NULL;
    *n = 0;
    size_t cap = 1;
    for (const char *p = s; *p; p++)
        cap += *p == ',';
    int *v = malloc(cap * sizeof *v);
    if (!v) {
        fprintf(stderr, "moetier: out of memory\n");
        return -1;
    }
    const char *p = s;
    int k = 0;
    while (*p) {
        char *end;
        errno = 0;
        long x = strtol(p, &end, 10);
        if (errno || end == p || x < 0 || x > INT_MAX || (*end && *end != ',')) {
            fprintf(stderr, "moetier: --ids expects comma-separated non-negative integers, bad "
                            "entry %d in '%s'\n", k + 1, s);
            free(v);
            return -1;
        }
        v[k++] = (int)x;
        p = *end ? end + 1 : end;
        if (*end == ',' && !*p) {
            fprintf(stderr, "moetier: --ids ends with a comma\n");
            free(v);
            return -1;
        }
    }
    if (k == 0) {
        fprintf(stderr, "moetier: --ids is empty\n");
        free(v);
        return -1;
    }
    *ids = v;
    *n = k;
    return 0;
}

int cli_fail(const errbuf *e)
{
    fprintf(stderr, "moetier: %s\n", e->msg);
    return 1;
}

/* Prints usage text but the entries (a line "  FLAG ..." and the deeper
 * indented lines after it) of the flags in skip (NULL-terminated). */
static void print_usage_entries(FILE *f, const char *text, const char *const *skip)
{
    int skipping = 0;
    for (const char *l = text; *l;) {
        size_t len = strcspn(l, "\n") + (l[strcspn(l, "\n")] == '\n');
        if (!strncmp(l, "  -", 3)) {
            size_t flag = strcspn(l + 2, " \n");
            skipping = 0;
            for (int k = 0; skip && skip[k]; k++)
                skipping |= strlen(skip[k]) == flag && !strncmp(l + 2, skip[k], flag);
        }
        if (!skipping)
            fwrite(l, 1, len, f);
        l += len;
    }
}

static const char model_flags_text[] =
    "  --chunk N            prompt tokens per prefill step (default on the CPU: 4096, 2048\n"
    "                       or 1024, the longest whose activations take at most a quarter\n"
    "                       of the memory left after the plan; 1024 with serve --parallel;\n"
    "                       on the GPU the largest power of two from 256 to 4096 whose\n"
    "                       activations take at most 1/16 of its memory budget)\n"
    "  -t N                 CPU threads (default: one per core)\n"
    "  --kernels PATH       CPU kernels: scalar, avx2 or avx512 (default: the fastest\n"
    "                       this CPU runs); the CPU backend's (auto then takes the CPU)\n"
    "  --backend NAME       cpu, cuda (every operation on the GPU, experimental) or auto\n"
    "                       (cuda when a GPU is usable, else cpu with a notice); default\n"
    "                       cpu, or $MOETIER_BACKEND\n"
    "  --device N           GPU backend: the CUDA device to run on, by its number\n"
    "                       (default 0; `moetier inspect` lists them)\n"
    "  --cpu-tokens auto|N  GPU backend: which experts not in VRAM the CPU computes\n"
    "                       (to the GPU's bits) while the GPU computes the others:\n"
    "                       auto (default) by a cost model with measured copy and\n"
    "                       compute rates, copying some into VRAM too; N: those with\n"
    "                       at most N tokens; 0: every expert is copied to the GPU\n"
    "  --batch-invariant    a token's logits have the same bits whatever step it is in\n"
    "                       (a prompt in one prefill or in chunks, after a cached\n"
    "                       prefix or not, alone or beside other conversations);\n"
    "                       CPU backend only, prefill runs slower\n"
    "  --profile            print where prefill and decode time went at the end, by part\n"
    "                       of the model (attention, experts, lm_head, ...), with the\n"
    "                       GB each read (on a GPU each operation is waited for: the\n"
    "                       run is slower)\n"
    "  --cache-type TYPE    the KV cache's values: f32 (default, the model's exact math),\n"
    "                       bf16 (rounded when written: half the cache's memory) or q8_0\n"
    "                       (int8 in blocks of 32 with a scale each: 28 % of f32's);\n"
    "                       the logits change slightly; -ctk too\n";

void model_flags_usage_except(FILE *f, int leave_out)
{
    /* bench model takes lists for these, described in its own usage */
    static const char *const lists[] = {"-t", "--dram-gb", "--vram-gb", "--cache-type", NULL};
    if (!(leave_out & MF_HELP_CTX))
        fputs("  -c CTX               context size (default: min(4096, max_position_embeddings))\n", f);
    print_usage_entries(f, model_flags_text, leave_out & MF_HELP_LISTS ? lists : NULL);
    if (!(leave_out & MF_HELP_TRACE))
        fputs("  --trace FILE         record each token's routing (moetier trace stats|replay)\n", f);
    print_usage_entries(f, tier_flags_usage, leave_out & MF_HELP_LISTS ? lists : NULL);
}

void model_flags_usage(FILE *f)
{
    model_flags_usage_except(f, 0);
}

int chat_template_flag_parse(const char **name, int argc, char **argv, int *i)
{
    if (strcmp(argv[*i], "--chat-template"))
        return 0;
    return (*name = cli_value(argc, argv, i)) ? 1 : -1;
}

void chat_template_flag_usage(FILE *f)
{
    fprintf(f, "  --chat-template NAME the chat format: auto (default: the model's own template;\n"
               "                       Kimi K2.5's family natively, any other interpreted as\n"
               "                       Hugging Face renders it), kimi-k2.5 (that format for any\n"
               "                       checkpoint), jinja (the model's template interpreted, even\n"
               "                       K2.5's) or the path of a Jinja template file to use instead\n");
}

int cli_chat_template(const char *dir, const char *name, chat_template *out, errbuf *e)
{
    if (chat_template_open(dir, name, out, e) == 0)
        return 0;
    if (name && strcmp(name, "auto"))
        return -1;
    char why[sizeof e->msg];
    snprintf(why, sizeof why, "%s", e->msg);
    return err_set(e, "%s; --chat-template kimi-k2.5 renders chats in Kimi K2.5's format instead", why);
}

int model_flags_parse(model_flags *f, int argc, char **argv, int *i)
{
    const char *a = argv[*i], *v;
    int t = tier_flags_parse(&f->tiers, argc, argv, i);
    if (t != 0)
        return t;
    if (!strcmp(a, "-m") || !strcmp(a, "--model")) {
        if (!(v = cli_value(argc, argv, i)))
            return -1;
        f->dir = v;
        return 1;
    }
    if (!strcmp(a, "-c") || !strcmp(a, "--ctx-size")) {
        if (!(v = cli_value(argc, argv, i)) || cli_int(a, v, 1, 1 << 24, &f->ctx))
            return -1;
        return 1;
    }
    if (!strcmp(a, "-t") || !strcmp(a, "--threads")) {
        if (!(v = cli_value(argc, argv, i)) || cli_int(a, v, 1, 4096, &f->threads))
            return -1;
        return 1;
    }
    if (!strcmp(a, "--trace")) {
        if (!(v = cli_value(argc, argv, i)))
            return -1;
        f->trace = v;
        return 1;
    }
    if (!strcmp(a, "--kernels")) {
        kernel_path kp;
        if (!(v = cli_value(argc, argv, i)))
            return -1;
        if (kernel_path_parse(v, &kp)) {
            fprintf(stderr, "moetier: --kernels expects scalar, avx2 or avx512, got '%s'\n", v);
            return -1;
        }
        f->kernels = v;
        return 1;
    }
    if (!strcmp(a, "--backend")) {
        if (!(v = cli_value(argc, argv, i)))
            return -1;
        if (backend_choice_parse(v) < 0) {
            fprintf(stderr, "moetier: --backend expects cpu, cuda or auto, got '%s'\n", v);
            return -1;
        }
        f->backend = v;
        return 1;
    }
    if (!strcmp(a, "--device")) {
        if (!(v = cli_value(argc, argv, i)) || cli_int(a, v, 0, 1023, &f->device))
            return -1;
        f->device_set = 1;
        return 1;
    }
    if (!strcmp(a, "--cpu-tokens")) {
        if (!(v = cli_value(argc, argv, i)))
            return -1;
        if (!strcmp(v, "auto"))
            f->cpu_tokens = GPU_CPU_TOKENS_AUTO;
        else if (cli_int(a, v, 0, 1 << 20, &f->cpu_tokens))
            return -1;
        f->cpu_tokens_set = 1;
        return 1;
    }
    if (!strcmp(a, "--batch-invariant")) {
        f->batch_invariant = 1;
        return 1;
    }
    if (!strcmp(a, "--profile")) {
        f->profile = 1;
        return 1;
    }
    if (!strcmp(a, "--cache-type") || !strcmp(a, "-ctk")) {
        errbuf e;
        if (!(v = cli_value(argc, argv, i)))
            return -1;
        if (kv_type_parse(v, &f->cache_type, &e)) {
            fprintf(stderr, "moetier: %s\n", e.msg);
            return -1;
        }
        return 1;
    }
    if (!strcmp(a, "--chunk")) {
        if (!(v = cli_value(argc, argv, i)) || cli_int(a, v, 1, 1 << 20, &f->chunk))
            return -1;
        return 1;
    }
    return 0;
}

/* Engine observer: one trace event per token and MoE layer, experts in router order. */
static void record_route(void *ctx, int layer, int pos, const int *ids, const float *weights,
                         const float *scores)
{
    cli_model *m = ctx;
    uint16_t ex[64];
    errbuf ignored;
    for (uint32_t k = 0; k < m->trace.top_k; k++)
        ex[k] = (uint16_t)ids[k];
    if (pos <= m->trace_last_pos[layer]) {
        m->trace_stream++;
        for (uint32_t l = 0; l < m->trace.n_layers; l++)
            m->trace_last_pos[l] = -1;
    }
    m->trace_last_pos[layer] = pos;
    if (!m->trace_error &&
        trace_append(&m->trace, m->trace_stream, (uint32_t)pos, (uint16_t)layer, ex, weights, &ignored))
        m->trace_error = 1;
}

/* Engine observer: where the last T events' experts were found, the bytes and
 * wait of each read (charged to the first token of the chunk that used it) and
 * which of their experts were predicted at each distance. */
static void record_experts(void *ctx, int layer, int pos0, int T, const unsigned char *origin,
                           const uint32_t *bytes, const float *stall,
                           const unsigned char *predicted, int depth)
{
    (void)pos0;
    (void)depth;    /* the trace keeps its own depth (<= the engine's) */
    cli_model *m = ctx;
    routing_trace *t = &m->trace;
    if (m->trace_error || t->n < (uint64_t)T)
        return;
    uint32_t E = t->n_experts, K = t->top_k;
    memset(m->trace_charged, 0, E);
    uint16_t count[TRACE_MAX_DEPTH] = {0};
    for (uint32_t d = 0; d < t->depth; d++)
        for (uint32_t x = 0; x < E; x++)
            count[d] = (uint16_t)(count[d] + predicted[(size_t)d * E + x]);
    for (uint64_t i = t->n - (uint64_t)T; i < t->n; i++) {
        if (t->layer[i] != layer)
            continue;
        uint8_t org[64];
        uint64_t b = 0;
        double s = 0;
        for (uint32_t k = 0; k < K; k++) {
            uint16_t x = t->experts[i * K + k];
            org[k] = origin[x];
            if (!m->trace_charged[x]) {
                m->trace_charged[x] = 1;
                b += bytes[x];
                s += stall[x];
            }
        }
        trace_set_tiers(t, i, org, b > UINT32_MAX ? UINT32_MAX : (uint32_t)b, (float)s);
        for (uint32_t d = 0; d < t->depth; d++) {
            uint64_t mask = 0;
            for (uint32_t k = 0; k < K; k++)
                if (predicted[(size_t)d * E + t->experts[i * K + k]])
                    mask |= 1ull << k;
            trace_set_predicted(t, i, d + 1, mask, count[d]);
        }
    }
}

int backend_choice_parse(const char *s)
{
    if (!strcmp(s, "cpu"))
        return BACKEND_CPU;
    if (!strcmp(s, "cuda"))
        return BACKEND_CUDA;
    if (!strcmp(s, "auto"))
        return BACKEND_AUTO;
    return -1;
}

int cli_context_size(const model_flags *f, const model_config *c)
{
    if (f->ctx)
        return f->ctx;
    return c->max_position_embeddings < 4096 ? c->max_position_embeddings : 4096;
}

int cli_seq_context_size(const model_flags *f, const model_config *c)
{
    return cli_context_size(f, c) / (f->seqs > 1 ? f->seqs : 1);
}

/* The CPU backend's step without --chunk (cli_common.h) */
static int cpu_default_chunk(const model_config *c, const tier_plan *p, const model_flags *f)
{
    if (f->seqs > 1)
        return CLI_CPU_CHUNK;
    uint64_t tier = p->use_store ? (uint64_t)p->dram_slots * p->slot_bytes : 0;
    uint64_t taken = p->dense_bytes + p->kv_bytes + tier;
    uint64_t left = p->mem_available > taken ? p->mem_available - taken : 0;
    for (int chunk = CLI_CPU_CHUNK_MAX; chunk > CLI_CPU_CHUNK; chunk /= 2)
        if (2 * engine_activation_bytes(c, chunk) <= left / 4)
            return chunk;
    return CLI_CPU_CHUNK;
}

int cli_cpu_chunk(const model_config *c, const tier_plan *p, const model_flags *f)
{
    int ctx = cli_seq_context_size(f, c), chunk = f->chunk ? f->chunk : cpu_default_chunk(c, p, f);
    return chunk < ctx ? chunk : ctx;
}

/* one routed expert's bytes in a VRAM slot (0 without MoE layers) */
static uint64_t vram_slot_bytes(const model_weights *mw, errbuf *e)
{
    const model_config *c = &mw->cfg;
    for (int l = 0; l < c->n_layers; l++)
        if (mw->layers[l].is_moe) {
            expert_view v;
            if (model_weights_expert(mw, l, 0, &v, e))
                return 0;
            return gpu_expert_slot_bytes(&v.gate, &v.up, &v.down);
        }
    return 0;
}

int cli_gpu_plan(const model_weights *mw, const tier_plan *p, const model_flags *f, int device,
                 gpu_plan *g, errbuf *e)
{
    uint64_t dev_free = 0, dev_total = 0;
    errbuf dev_err;
    if (gpu_device_memory(device, &dev_free, &dev_total, &dev_err) && !f->tiers.vram_gb_set)
        return err_set(e, "%s", dev_err.msg);
    tier_flags tf = f->tiers;
    cli_kv_flags(f, &mw->cfg, &tf);
    return gpu_plan_make(g, p, &mw->cfg, &tf, cli_context_size(f, &mw->cfg), f->chunk,
                         vram_slot_bytes(mw, e), dev_free, dev_total, e);
}

/* The DRAM tier's memory registered with the GPU, so expert copies from it are
 * asynchronous at full speed; a refusal only slows copies down. The driver
 * pins every page, which takes a while for hundreds of GB: the log says so
 * before, and how long it took after. */
static void register_dram_tier(cli_model *m, FILE *log)
{
    const dram_arena *a = tiered_source_arena(&m->src);
    errbuf e;
    if (!a || !a->bytes)
        return;
    if (log) {
        fprintf(log, "DRAM tier: registering %.2f GB with the GPU for asynchronous copies...\n",
                a->bytes / 1e9);
        fflush(log);
    }
    double t0 = now_seconds();
    if (gpu_backend_register_host(&m->be, a->base, a->bytes, &e)) {
        if (log)
            fprintf(log, "moetier: the DRAM tier is not registered with the GPU: %s; expert copies "
                    "from it are staged by the driver (slower)\n", e.msg);
    } else if (log) {
        fprintf(log, "DRAM tier: registered in %.1f s\n", now_seconds() - t0);
    }
}

/* $MOETIER_HYBRID_RATES="copy_registered,copy_pageable,gpu,cpu_row,cpu_token"
 * (GB/s, GB/s, GB/s, ns per weight, ns per weight and token) replaces the
 * cost model's measured rates: for tests and for tuning by hand. */
static int hybrid_rates_from_env(hybrid_rates *r, int *set, errbuf *e)
{
    const char *s = getenv("MOETIER_HYBRID_RATES");
    *set = 0;
    if (!s || !*s)
        return 0;
    double v[5];
    char *end = (char *)s;
    for (int i = 0; i < 5; i++) {
        v[i] = decimal_parse(end, &end);
        if (!(v[i] > 0) || !isfinite(v[i]) || *end != (i < 4 ? ',' : '\0'))
            return err_set(e, "MOETIER_HYBRID_RATES is '%s'; expected five positive numbers: copy "
                           "GB/s from registered and from pageable memory, GPU GB/s, CPU ns per "
                           "weight, CPU ns per weight and token", s);
        end++;
    }
    *r = (hybrid_rates){v[0] * 1e9, v[1] * 1e9, v[2] * 1e9, v[3] * 1e-9, v[4] * 1e-9};
    *set = 1;
    return 0;
}

/* The backend --backend or $MOETIER_BACKEND names; -1 for an unknown name, or
 * for a flag only a GPU backend takes given with the CPU one. */
static int backend_choice_checked(const model_flags *f, errbuf *e)
{
    const char *name = f->backend ? f->backend : getenv("MOETIER_BACKEND");
    int choice = name && *name ? backend_choice_parse(name) : BACKEND_CPU;
    if (choice < 0)
        return err_set(e, "MOETIER_BACKEND is '%s'; expected cpu, cuda or auto", name);
    if (choice == BACKEND_CPU && f->tiers.vram_gb_set)
        return err_set(e, "--vram-gb is for the GPU backend (add --backend cuda or auto)");
    if (choice == BACKEND_CPU && f->device_set)
        return err_set(e, "--device is for the GPU backend (add --backend cuda or auto)");
    if (choice == BACKEND_CPU && f->cpu_tokens_set)
        return err_set(e, "--cpu-tokens is for the GPU backend (add --backend cuda or auto)");
    if (choice == BACKEND_CUDA && f->batch_invariant)
        return err_set(e, "--batch-invariant runs on the CPU backend (the CUDA backend's sums "
                       "depend on a step's size): run with --backend cpu");
    if (choice == BACKEND_CUDA && f->kernels)
        return err_set(e, "--kernels picks the CPU backend's kernels (the CUDA backend's CPU side "
                       "computes the GPU's sums in its own): run with --backend cpu");
    return choice;
}

/* the flag that takes --backend auto to the CPU, or NULL */
static const char *cpu_only_flag(const model_flags *f)
{
    return f->batch_invariant ? "--batch-invariant" : f->kernels ? "--kernels" : NULL;
}

void cli_kv_flags(const model_flags *f, const model_config *c, tier_flags *tf)
{
    errbuf e;
    char gpu[256];
    int choice = backend_choice_checked(f, &e);
    tf->kv_on_device = choice == BACKEND_CUDA ||
                       (choice == BACKEND_AUTO && !cpu_only_flag(f) &&
                        gpu_describe(f->device, gpu, sizeof gpu) == 0);
    /* the engine's sequence and each further one (--parallel) hold their share */
    int seqs = f->seqs > 1 ? f->seqs : 1;
    tf->kv_positions = choice < 0 ? 0 : cli_seq_context_size(f, c) * seqs;
    tf->kv_type = f->cache_type;
}

int model_flags_check(const model_flags *f, const char *cmd)
{
    errbuf e;
    if (backend_choice_checked(f, &e) >= 0)
        return 0;
    fprintf(stderr, "moetier %s: %s\n", cmd, e.msg);
    return 2;
}

/* --backend (or $MOETIER_BACKEND): cuda fails without a usable GPU, auto then
 * says so in one line and computes on the CPU. A GPU budget that cannot work
 * is an error either way. */
static int open_backend(cli_model *m, const model_flags *f, FILE *log, errbuf *e)
{
    int choice = backend_choice_checked(f, e);
    if (choice < 0)
        return -1;
    if (cpu_only_flag(f) && choice == BACKEND_AUTO) {
        if (log)
            fprintf(log, "moetier: %s: computing on the CPU\n", cpu_only_flag(f));
        choice = BACKEND_CPU;
    }
    if (choice != BACKEND_CPU) {
        gpu_options go = {.device = f->device};
        uint64_t free_b, total;
        gpu_plan gp;
        hybrid_rates rates;
        int rates_set;
        if (hybrid_rates_from_env(&rates, &rates_set, e))
            return -1;
        if (rates_set)
            go.rates = &rates;
        int usable = !gpu_device_memory(go.device, &free_b, &total, e);
        char devices[64];
        /* a device number this machine lacks is a mistake, not a reason to fall back */
        if (!usable && f->device_set && gpu_probe(devices, sizeof devices) > 0)
            return err_prefix(e, "--device %d: ", f->device);
        char why[256];
        if (usable && !gpu_attention_fits(m->mw.cfg.kv_lora_rank, m->mw.cfg.qk_rope_dim, why,
                                          sizeof why)) {
            usable = 0;     /* a model the GPU's kernels cannot take: said before it loads */
            err_set(e, "%s", why);
        }
        if (usable) {
            if (f->chunk > GPU_MAX_TOKENS)
                return err_set(e, "--chunk %d: the GPU backend takes at most %d tokens per step",
                               f->chunk, GPU_MAX_TOKENS);
            if (cli_gpu_plan(&m->mw, &m->plan, f, go.device, &gp, e))
                return -1;
            if (log)
                gpu_plan_print(&gp, log);
            m->chunk = gp.chunk;
            go.resident_bytes = gp.dense_bytes;
            go.expert_slot_bytes = gp.slot_bytes;
            go.expert_cache_bytes = (uint64_t)gp.slots * gp.slot_bytes;
            go.n_expert_keys = m->mw.cfg.n_layers * m->mw.cfg.n_routed_experts;
            go.policy = f->tiers.policy;
            go.policy_layers = m->mw.cfg.n_layers;
            go.cpu_tokens = f->cpu_tokens_set ? f->cpu_tokens : GPU_CPU_TOKENS_AUTO;
            go.cpu_threads = f->threads;
            for (int l = 0; l < m->mw.cfg.n_layers && !go.expert_like; l++)
                if (config_is_moe_layer(&m->mw.cfg, l))
                    go.expert_like = &m->mw.experts[(size_t)l * (size_t)m->mw.cfg.n_routed_experts].gate;
        }
        if (usable && !gpu_backend_create(&m->be, &go, e)) {
            if (log)
                fprintf(log, "CUDA backend: %s (device %d, experimental)\n",
                        gpu_backend_device(&m->be), go.device);
            if (log && go.cpu_tokens == GPU_CPU_TOKENS_AUTO) {
                hybrid_rates r;
                gpu_backend_rates(&m->be, &r);
                fprintf(log, "hybrid cost model: copies %.1f GB/s (registered) / %.1f (pageable), "
                        "GPU %.1f GB/s, CPU %.3f ns per weight + %.3f per weight and token\n",
                        r.copy_pinned / 1e9, r.copy_pageable / 1e9, r.gpu / 1e9, r.cpu_row * 1e9,
                        r.cpu_token * 1e9);
            }
            register_dram_tier(m, log);
            return 0;
        }
        if (choice == BACKEND_CUDA)
            return err_prefix(e, "--backend cuda: ");
        if (log)
            fprintf(log, "moetier: no GPU backend (%s); computing on the CPU\n", e->msg);
    }
    m->chunk = cli_cpu_chunk(&m->mw.cfg, &m->plan, f);
    cpu_options co = {.threads = f->threads, .batch_invariant = f->batch_invariant};
    if (f->kernels) {
        kernel_path_parse(f->kernels, &co.path);
        co.path_set = 1;
    }
    if (cpu_backend_create_opts(&m->be, &co, e))
        return -1;
    char kernels[128];
    kernel_path_describe(cpu_backend_path(&m->be), kernels, sizeof kernels);
    if (log)
        fprintf(log, "CPU backend: %s, %d thread%s%s, prefill steps of %d tokens\n", kernels,
                cpu_backend_threads(&m->be), cpu_backend_threads(&m->be) == 1 ? "" : "s",
                f->batch_invariant ? ", batch-invariant" : "", m->chunk);
    return 0;
}

/* What the model is read from: the checkpoint's config, index and shards,
 * and the tokenizer's files (an output written into the model directory
 * under another name stays allowed). */
static int is_model_input(const char *name)
{
    size_t n = strlen(name);
    return !strcmp(name, "config.json") || !strcmp(name, "model.safetensors.index.json") ||
           (n > 12 && !strcmp(name + n - 12, ".safetensors")) || !strcmp(name, "tiktoken.model") ||
           !strcmp(name, "tokenizer.json") ||
           !strcmp(name, "tokenizer_config.json") || !strcmp(name, "chat_template.jinja");
}

/* Whether out is a regular file of dir (of those `keep` selects, or any);
 * its name there in *name. */
static int is_file_in(const char *dir, int (*keep)(const char *), const char *out, char *name,
                      size_t n)
{
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    int same = 0;
    for (struct dirent *de; !same && (de = readdir(d));) {
        if (keep && !keep(de->d_name))
            continue;
        char path[8400];
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        struct stat st;
        same = stat(path, &st) == 0 && S_ISREG(st.st_mode) && file_same(path, out);
        if (same)
            snprintf(name, n, "%s", de->d_name);
    }
    closedir(d);
    return same;
}

int cli_check_output(const char *flag, const char *out, const model_flags *f, errbuf *e)
{
    struct stat st;
    if (!f->dir || stat(out, &st) != 0 || !S_ISREG(st.st_mode))
        return 0;
    char store_dir[4200], name[256];
    snprintf(store_dir, sizeof store_dir, "%s/%s", f->dir, DEFAULT_STORE_NAME);
    if (is_file_in(f->dir, is_model_input, out, name, sizeof name))
        return err_set(e, "%s %s is the checkpoint's %s: give another path", flag, out, name);
    if (is_file_in(f->tiers.store_dir ? f->tiers.store_dir : store_dir, NULL, out, name,
                   sizeof name))
        return err_set(e, "%s %s is the expert store's %s: give another path", flag, out, name);
    return 0;
}

/* path with its directory resolved (it may not exist yet), into out */
static void resolved(const char *path, char *out, size_t n)
{
    char dir[PATH_MAX], real[PATH_MAX];
    const char *slash = strrchr(path, '/');
    snprintf(dir, sizeof dir, "%.*s", slash ? (int)(slash - path) + (slash == path) : 1,
             slash ? path : ".");
    if (realpath(dir, real))
        snprintf(out, n, "%s/%s", real, slash ? slash + 1 : path);
    else
        snprintf(out, n, "%s", path);
}

/* Whether a and b name one file, or would once written */
static int one_file(const char *a, const char *b)
{
    if (file_same(a, b))
        return 1;
    char ra[PATH_MAX + 256], rb[PATH_MAX + 256];
    resolved(a, ra, sizeof ra);
    resolved(b, rb, sizeof rb);
    return !strcmp(ra, rb);
}

void cli_note_file(model_flags *f, const char *flag, const char *path)
{
    if (path && f->n_files < (int)(sizeof f->files / sizeof *f->files)) {
        f->file_flags[f->n_files] = flag;
        f->files[f->n_files++] = path;
    }
}

void cli_note_template(model_flags *f, const char *name)
{
    struct stat st;
    if (name && stat(name, &st) == 0 && S_ISREG(st.st_mode))    /* not a format's name */
        cli_note_file(f, "--chat-template", name);
}

int cli_model_plan(const model_flags *f, tier_plan *p, errbuf *e)
{
    model_weights mw;
    store st;
    if (!f->dir)
        return err_set(e, "no model given (use -m DIR)");
    if (model_weights_open(&mw, f->dir, e))
        return -1;
    tier_flags tf = f->tiers;
    cli_kv_flags(f, &mw.cfg, &tf);
    int rc = tier_plan_make(p, &mw, &tf, &st, e);
    if (!rc && p->use_store)
        store_close(&st);
    model_weights_close(&mw);
    return rc;
}

int cli_model_open(cli_model *m, const model_flags *f, errbuf *e)
{
    memset(m, 0, sizeof *m);
    if (!f->dir)
        return err_set(e, "no model given (use -m DIR)");
    /* before the load and the run, not after them */
    if (f->trace && cli_check_output("--trace", f->trace, f, e))
        return -1;
    for (int k = 0; f->trace && k < f->n_files; k++)
        if (one_file(f->trace, f->files[k]))
            return err_set(e, "--trace %s is the %s file too: give another path", f->trace,
                           f->file_flags[k]);
    if (f->trace && file_check_writable(f->trace, e))
        return err_prefix(e, "--trace: ");
    if (model_weights_open(&m->mw, f->dir, e))
        return -1;
    if (f->seqs > 1 && cli_seq_context_size(f, &m->mw.cfg) < CLI_MIN_SEQ_CONTEXT) {
        err_set(e, "-c %d shared by --parallel %d leaves %d positions to each request; it needs "
                "at least %d (raise -c)", cli_context_size(f, &m->mw.cfg), f->seqs,
                cli_seq_context_size(f, &m->mw.cfg), CLI_MIN_SEQ_CONTEXT);
        model_weights_close(&m->mw);
        return -1;
    }
    tier_flags tf = f->tiers;
    cli_kv_flags(f, &m->mw.cfg, &tf);
    if (tier_plan_make(&m->plan, &m->mw, &tf, &m->st, e)) {
        model_weights_close(&m->mw);
        return -1;
    }
    FILE *log = f->quiet ? NULL : stderr;
    if (log)
        tier_plan_print(&m->plan, log);
    if (m->plan.use_store)
        store_source_warn(&m->st, &m->mw, log);
    const model_config *mc = &m->mw.cfg;
    if (log && cli_seq_context_size(f, mc) > mc->max_position_embeddings)
        fprintf(log, "moetier: -c %d goes past the %d positions the model was trained for "
                "(max_position_embeddings): expect worse output beyond them\n",
                cli_seq_context_size(f, mc), mc->max_position_embeddings);
    if (log && m->mw.n_unread)
        fprintf(log, "moetier: %d tensor%s of the checkpoint %s not read (the first: %s): "
                "config.json describes less than the weights hold\n", m->mw.n_unread,
                m->mw.n_unread == 1 ? "" : "s", m->mw.n_unread == 1 ? "is" : "are",
                m->mw.first_unread);
    uint64_t want, moved, locked;
    model_weights_make_dense_resident(&m->mw, f->tiers.numa != NUMA_LOCAL, &want, &moved, &locked);
    if (log && locked < want)
        fprintf(log, "moetier: locked %.2f of %.2f GB of dense weights in RAM (RLIMIT_MEMLOCK); "
                "the rest may be paged out and read again from disk\n", locked / 1e9, want / 1e9);
    m->print_stats = f->tiers.stats;
    m->quiet = f->quiet;
    int lookahead = f->tiers.lookahead_set ? f->tiers.lookahead : TIER_DEFAULT_LOOKAHEAD;
    if (m->plan.use_store) {
        tiered_options to = {.dram_slots = m->plan.dram_slots, .numa = f->tiers.numa,
                             .policy = f->tiers.policy, .log = log,
                             .spec_slots = lookahead ? 0 : -1};
        nvme_options_default(&to.io);
        to.io.mode = f->tiers.io;
        to.io.log = log;
        if (nvme_fault_from_env(&to.io.fault, e) || tiered_source_open(&m->src, &m->st, &to, e)) {
            store_close(&m->st);
            model_weights_close(&m->mw);
            return -1;
        }
    } else {
        model_weights_expert_source(&m->mw, &m->src);
    }
    if (open_backend(m, f, log, e)) {
        if (m->src.destroy)
            m->src.destroy(&m->src);
        store_close(&m->st);
        model_weights_close(&m->mw);
        return -1;
    }
    if (engine_create(&m->en, &m->mw, &m->be, &m->src, cli_seq_context_size(f, &m->mw.cfg), m->chunk,
                      f->cache_type, e)) {
        m->be.ops->destroy(&m->be);
        if (m->src.destroy)
            m->src.destroy(&m->src);
        store_close(&m->st);
        model_weights_close(&m->mw);
        return -1;
    }
    m->en.lookahead = lookahead;
    if (f->profile && backend_profile_attach(&m->en, &m->mw, &m->profile, e)) {
        m->opened = 1;
        cli_model_close(m);
        return -1;
    }
    if (f->trace) {
        const model_config *c = &m->mw.cfg;
        uint32_t depth = lookahead < TRACE_MAX_DEPTH ? (uint32_t)lookahead : TRACE_MAX_DEPTH;
        uint32_t flags = TRACE_FLAG_WEIGHTS | TRACE_FLAG_TIERS | (depth ? TRACE_FLAG_PREDICTED : 0);
        if (c->n_routed_experts == 0 || c->n_experts_per_tok > 64 ||
            trace_init(&m->trace, (uint32_t)c->n_layers, (uint32_t)c->n_routed_experts,
                       (uint32_t)c->n_experts_per_tok, flags, depth, e) ||
            !(m->trace_charged = malloc((size_t)c->n_routed_experts)) ||
            !(m->trace_last_pos = malloc((size_t)c->n_layers * sizeof *m->trace_last_pos))) {
            if (m->trace.top_k && (!m->trace_charged || !m->trace_last_pos))
                err_set(e, "out of memory");
            if (c->n_routed_experts == 0 || c->n_experts_per_tok > 64)
                err_set(e, "--trace: this model has no routing to record (or top_k > 64)");
            m->opened = 1;
            cli_model_close(m);
            return -1;
        }
        for (int l = 0; l < c->n_layers; l++)
            m->trace_last_pos[l] = -1;
        m->trace_path = f->trace;
        m->en.obs = (engine_observer){.ctx = m, .on_route = record_route,
                                      .on_experts = record_experts};
    }
    m->opened = 1;
    return 0;
}

void cli_model_decode_starts(cli_model *m)
{
    if (!strcmp(m->be.name, "cuda")) {
        gpu_backend_cache_stats(&m->be, &m->gpu_at_decode);
        m->decoded_at_mark = m->en.stats.tokens_decoded;
        m->decode_seconds_at_mark = m->en.stats.decode_seconds;
        m->kv_positions_at_mark = m->en.stats.kv_positions_decoded;
        m->decode_marked = 1;
    }
}

int cli_model_decode_bound(cli_model *m, decode_work *w, decode_bound *b)
{
    if (strcmp(m->be.name, "cuda") || !m->decode_marked)
        return -1;
    const model_config *c = &m->mw.cfg;
    gpu_cache_stats g, *s = &m->gpu_at_decode;
    gpu_backend_cache_stats(&m->be, &g);
    hybrid_rates r;
    gpu_backend_rates(&m->be, &r);
    errbuf e;
    /* a token reads one row of the embedding table, unless the head is tied to it */
    uint64_t resident = gpu_backend_resident_bytes(&m->be);
    uint64_t table = m->mw.lm_head.data != m->mw.embed.data ? linear_weight_bytes(&m->mw.embed) : 0;
    *w = (decode_work){
        .tokens = m->en.stats.tokens_decoded - m->decoded_at_mark,
        .seconds = m->en.stats.decode_seconds - m->decode_seconds_at_mark,
        .resident_bytes = resident > table ? resident - table : resident,
        .gpu_experts = (g.hits + g.misses + g.uncached) - (s->hits + s->misses + s->uncached),
        .cpu_experts = g.on_cpu - s->on_cpu,
        .expert_bytes = vram_slot_bytes(&m->mw, &e),
        .expert_weights = 3ull * (uint64_t)c->hidden_size * (uint64_t)c->moe_intermediate_size,
        .bytes_copied = g.bytes_copied - s->bytes_copied,
        .kv_bytes = (m->en.stats.kv_positions_decoded - m->kv_positions_at_mark) *
                    (uint64_t)kv_cache_position_bytes(&m->en.kv),
    };
    return decode_bound_compute(&r, w, b);
}

/* The decode steps against their bound, from the counts since decode began. */
static void print_decode_bound(cli_model *m)
{
    hybrid_rates r;
    gpu_backend_rates(&m->be, &r);
    decode_work w;
    decode_bound b;
    if (cli_model_decode_bound(m, &w, &b)) {
        fprintf(stderr, "  decode bound: not computed (no decode steps, or the cost model's rates "
                        "were not measured: --cpu-tokens N turns it off)\n");
        return;
    }
    fprintf(stderr, "  decode bound per token: %.3f ms = the longest of GPU reads %.3f ms (%.2f GB "
            "resident + %.1f experts + %.4g MB of KV cache at %.1f GB/s), CPU experts %.3f ms "
            "(%.1f), copies %.3f ms (%.1f MB at %.1f GB/s); measured %.3f ms (bound / measured "
            "%.3f)\n",
            b.bound * 1e3, b.gpu * 1e3, w.resident_bytes / 1e9,
            (double)w.gpu_experts / (double)w.tokens,
            (double)w.kv_bytes / (double)w.tokens / 1e6, r.gpu / 1e9, b.cpu * 1e3,
            (double)w.cpu_experts / (double)w.tokens, b.copy * 1e3,
            (double)w.bytes_copied / (double)w.tokens / 1e6, r.copy_pinned / 1e9, b.measured * 1e3,
            b.fraction);
}

int cli_model_close(cli_model *m)
{
    int rc = 0;
    if (!m->opened)
        return 0;
    if (m->print_stats) {
        if (m->src.print_stats)
            m->src.print_stats(&m->src, stderr);
        else
            fprintf(stderr, "tier statistics: experts come from the checkpoint mapping (no expert "
                            "store), so there are no tiers to report\n");
        if (!strcmp(m->be.name, "cuda")) {
            gpu_cache_stats g;
            gpu_backend_cache_stats(&m->be, &g);
            fprintf(stderr, "VRAM expert cache: %d slots (%s); %llu hits, %llu misses, %llu copied "
                    "for one call, %llu computed on the CPU (%llu of them also copied into the "
                    "cache), %llu predicted and copied ahead; %.3f GB of experts copied to the "
                    "GPU; %llu kernels launched, the host waited for the GPU %llu times\n",
                    g.slots, g.policy ? g.policy : "no policy", (unsigned long long)g.hits,
                    (unsigned long long)g.misses,
                    (unsigned long long)g.uncached, (unsigned long long)g.on_cpu,
                    (unsigned long long)g.promoted, (unsigned long long)g.prefetched,
                    g.bytes_copied / 1e9, (unsigned long long)g.launches,
                    (unsigned long long)g.waits);
            fprintf(stderr, "  resident weights: %.3f GB on the GPU, %.3f GB of them outside the "
                    "pool the plan sized\n", gpu_backend_resident_bytes(&m->be) / 1e9,
                    g.resident_unpooled / 1e9);
            hybrid_rates r;
            gpu_backend_rates(&m->be, &r);
            if (r.gpu > 0)
                fprintf(stderr, "  hybrid cost model after the batches: GPU %.1f GB/s, CPU %.3f ns "
                        "per weight + %.3f per weight and token\n", r.gpu / 1e9, r.cpu_row * 1e9,
                        r.cpu_token * 1e9);
            if (m->decode_marked)
                print_decode_bound(m);
        }
        const engine_stats *s = &m->en.stats;
        if (s->expert_groups)
            fprintf(stderr, "  routed experts: %llu computed in %llu backend calls (%.1f per "
                    "call)\n", (unsigned long long)s->expert_calls,
                    (unsigned long long)s->expert_groups,
                    (double)s->expert_calls / (double)s->expert_groups);
        if (s->la_predicted)
            fprintf(stderr, "  lookahead predictions: %llu experts predicted, %llu chosen, recall "
                    "%.1f%%, precision %.1f%%\n", (unsigned long long)s->la_predicted,
                    (unsigned long long)s->la_chosen,
                    100.0 * (double)s->la_correct / (double)(s->la_chosen ? s->la_chosen : 1),
                    100.0 * (double)s->la_correct / (double)s->la_predicted);
    }
    if (m->trace_path) {
        errbuf e;
        if (m->trace_error)
            fprintf(stderr, "moetier: --trace: out of memory, the trace was cut short\n");
        if (trace_write(&m->trace, m->trace_path, &e)) {
            fprintf(stderr, "moetier: --trace: %s\n", e.msg);
            rc = -1;
        } else if (!m->quiet) {
            fprintf(stderr, "moetier: %llu routing events -> %s\n",
                    (unsigned long long)m->trace.n, m->trace_path);
        }
    }
    if (m->profile) {
        backend_profile_print(m->profile, stderr);
        backend_profile_detach(m->profile);
        m->profile = NULL;
    }
    trace_free(&m->trace);
    free(m->trace_charged);
    free(m->trace_last_pos);
    engine_destroy(&m->en);
    /* the backend first: it unregisters the DRAM tier's memory from the GPU
     * (after its copies are done) before the source unmaps it */
    m->be.ops->destroy(&m->be);
    if (m->src.destroy)
        m->src.destroy(&m->src);
    store_close(&m->st);
    model_weights_close(&m->mw);
    m->opened = 0;
    return rc;
}
