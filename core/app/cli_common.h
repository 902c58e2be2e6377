/* cli_common: what every moetier command shares: flag parsing helpers and
 * opening a model with its backend, expert source and engine. */
#ifndef MOETIER_CLI_COMMON_H
#define MOETIER_CLI_COMMON_H

#include <stdio.h>

#include "core/engine/engine.h"
#include "core/model/model_weights.h"
#include "core/text/chat_template.h"
#include "kernels/decode_bound.h"
#include "kernels/gpu_backend.h"
#include "tiers/expert_source.h"
#include "prefetch/routing_trace.h"
#include "tiers/planner.h"

typedef struct cli_model {
    model_weights mw;
    backend be;
    expert_source src;
    store st;
    tier_plan plan;
    int print_stats;
    const char *trace_path;     /* --trace: routing recorded here at close */
    routing_trace trace;
    int trace_error;            /* an event could not be recorded (out of memory) */
    unsigned char *trace_charged;   /* [n_experts] scratch: expert's read already charged */
    /* the stream the next events belong to, and the last position recorded
     * in it per layer: a position that does not move forward starts a new
     * stream (a perplexity window, a server request, a truncated chat) */
    uint32_t trace_stream;
    int *trace_last_pos;        /* [n_layers] */
    engine en;
    int opened;
    int quiet;                  /* model_flags.quiet */
    /* the GPU backend's counts when decode began (cli_model_decode_starts) */
    gpu_cache_stats gpu_at_decode;
    uint64_t decoded_at_mark;       /* engine_stats.tokens_decoded then */
    double decode_seconds_at_mark;
    uint64_t kv_positions_at_mark;  /* engine_stats.kv_positions_decoded then */
    int decode_marked;
    int chunk;                  /* prompt tokens per prefill step (--chunk, or the
                                 * backend's default) */
    struct backend_profile *profile;    /* --profile */
} cli_model;

/* Options that select and size a model session. */
typedef struct model_flags {
    const char *dir;        /* -m */
    int ctx;                /* -c; 0: min(4096, max_position_embeddings) */
    int chunk;              /* --chunk: prompt tokens per prefill step */
    tier_flags tiers;       /* --store, --dram-gb, --io, --numa, --stats */
    int quiet;              /* no plan, progress or notices on stderr (library callers) */
    int threads;            /* -t; 0: one per core */
    const char *kernels;    /* --kernels scalar|avx2|avx512; NULL: the fastest */
    const char *trace;      /* --trace FILE: record every token's routing */
    const char *backend;    /* --backend cpu|cuda|auto; NULL: $MOETIER_BACKEND, else cpu */
    int device;             /* --device: the CUDA device's number (default 0) */
    int device_set;
    int cpu_tokens;         /* --cpu-tokens, when cpu_tokens_set (GPU backend;
                             * GPU_CPU_TOKENS_AUTO: the cost model) */
    int cpu_tokens_set;
    /* conversations that share the context (serve --parallel): the engine's
     * KV cache, and each further one, holds the context / seqs positions;
     * 0 or 1: one */
    int seqs;
    int batch_invariant;    /* --batch-invariant (CPU backend; cpu_options) */
    int profile;            /* --profile: where prefill and decode time went, at close */
    kv_type cache_type;     /* --cache-type: the KV cache's values (default f32) */
    /* the command's other files (-f, -o, --prompt-cache...), which --trace
     * must not replace (cli_note_file) */
    const char *files[8], *file_flags[8];
    int n_files;
} model_flags;

enum { BACKEND_CPU, BACKEND_CUDA, BACKEND_AUTO };
/* "cpu", "cuda", "auto" -> BACKEND_*; -1 for anything else */
int backend_choice_parse(const char *s);

/* The CPU backend's prefill step: each step reads every routed expert its
 * tokens chose once, and a prompt's tokens choose nearly all of a layer's, so
 * longer steps read the experts fewer times (from NVMe when the DRAM tier
 * cannot hold them all) and give each expert more tokens for the batched
 * products; measured on a k2-slice, docs/benchmarks.md. Without --chunk, the
 * longest of CLI_CPU_CHUNK_MAX, half of it, ... down to CLI_CPU_CHUNK whose
 * activations (twice the engine's, for the backend's scratch) take at most
 * a quarter of the memory the plan leaves; CLI_CPU_CHUNK with several
 * conversations (serve --parallel), whose decode steps wait for a step. */
#define CLI_CPU_CHUNK 1024
#define CLI_CPU_CHUNK_MAX 4096

/* -c (or min(4096, max_position_embeddings)) */
int cli_context_size(const model_flags *f, const model_config *c);
/* the fewest positions a conversation of several sharing the context may get */
#define CLI_MIN_SEQ_CONTEXT 16
/* The positions of one conversation: the context size / seqs. */
int cli_seq_context_size(const model_flags *f, const model_config *c);
/* The CPU backend's prefill step: --chunk, or the default above for the plan;
 * at most a conversation's context. */
int cli_cpu_chunk(const model_config *c, const tier_plan *p, const model_flags *f);
/* The GPU side of the placement for device (or for --vram-gb alone when there is none). */
int cli_gpu_plan(const model_weights *mw, const tier_plan *p, const model_flags *f, int device,
                 gpu_plan *g, errbuf *e);

/* Prints the usage lines of the model and tier flags shared by run, logits and chat. */
void model_flags_usage(FILE *f);
/* The same without the lines of flags a command describes itself. */
/* MF_HELP_LISTS: -t, --dram-gb and --vram-gb (bench model's lists) */
enum { MF_HELP_CTX = 1, MF_HELP_TRACE = 2, MF_HELP_LISTS = 4 };
void model_flags_usage_except(FILE *f, int leave_out);

/* If argv[*i] is one of the model flags, consumes it (and its value) and
 * returns 1; returns -1 on a bad value, 0 when not a model flag. */
int model_flags_parse(model_flags *f, int argc, char **argv, int *i);

/* --chat-template NAME (run, chat, serve): consumed into *name as above. */
int chat_template_flag_parse(const char **name, int argc, char **argv, int *i);
void chat_template_flag_usage(FILE *f);
/* The chat format for the model in dir (chat_template_open): the one
 * --chat-template names, or (name NULL or "auto") the model's own template;
 * -1 with e saying why, and that --chat-template can name a format. */
int cli_chat_template(const char *dir, const char *name, chat_template *out, errbuf *e);
/* Once parsed: flags that cannot go together (the GPU backend's with the CPU
 * one, an unknown $MOETIER_BACKEND) said on stderr as `moetier CMD: ...`
 * before anything loads; 2 then (the exit status), else 0. */
int model_flags_check(const model_flags *f, const char *cmd);
/* The run's KV cache into tf, for the plans: every sequence's positions, the
 * bytes of a value (--cache-type) and whether it lives on the GPU (the host
 * plan leaves a cache in host memory out of an automatic DRAM budget). */
void cli_kv_flags(const model_flags *f, const model_config *c, tier_flags *tf);
/* The plan cli_model_open would make, made alone (nothing loaded, no DRAM
 * tier filled): 0, or -1 with e set. */
int cli_model_plan(const model_flags *f, tier_plan *p, errbuf *e);
int cli_model_open(cli_model *m, const model_flags *f, errbuf *e);
/* The prompt is in: with --stats on the GPU backend, close then prints the
 * decode steps' time against their bound (kernels/decode_bound.h). */
void cli_model_decode_starts(cli_model *m);
/* On the GPU backend, what the decode steps since cli_model_decode_starts did
 * (w, filled on that backend once marked) and their bound; -1 on another
 * backend, before that mark or when the bound cannot be computed
 * (kernels/decode_bound.h). */
int cli_model_decode_bound(cli_model *m, decode_work *w, decode_bound *b);
/* Returns -1 when the --trace file could not be written (said on stderr). */
int cli_model_close(cli_model *m);

/* Value of flag argv[*i] (advances *i); prints an error and returns NULL when missing. */
const char *cli_value(int argc, char **argv, int *i);
int cli_int(const char *flag, const char *s, long min, long max, int *out);
int cli_float(const char *flag, const char *s, float *out);
int cli_u64(const char *flag, const char *s, unsigned long long *out);
/* A comma-separated list of at most max values in [lo, hi] into out[0..*n);
 * an empty list or value ("1,,2") is refused, not skipped; -1 said on stderr. */
int cli_int_list(const char *flag, const char *s, int *out, int *n, int max, int lo, int hi);
int cli_float_list(const char *flag, const char *s, double *out, int *n, int max, double lo,
                   double hi);
/* "1,2,3" -> malloc'd array; prints an error and returns -1 on bad input. */
int cli_parse_ids(const char *s, int **ids, int *n);
/* The whole of text file `path` ("-": standard input), NUL-terminated, for
 * prompts too long for one argument (Linux caps one at 128 KiB). */
int cli_read_text(const char *path, char **out, size_t *len, errbuf *e);
/* An output path (flag names it in the error) that is a file the model is read
 * from (checkpoint, tokenizer, expert store) would replace it: -1 with e set. */
int cli_check_output(const char *flag, const char *out, const model_flags *f, errbuf *e);
/* Notes a file the command reads or writes (path may be NULL: none), which
 * --trace must not replace; cli_model_open refuses the run when it would. */
void cli_note_file(model_flags *f, const char *flag, const char *path);
/* The same for --chat-template NAME when NAME is a template file. */
void cli_note_template(model_flags *f, const char *name);
/* Prints "moetier: <reason>" to stderr; returns 1 (the exit status). */
int cli_fail(const errbuf *e);

#endif
