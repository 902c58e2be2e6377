/* cmd_perplexity: `moetier perplexity -m DIR (-f FILE | --ids LIST) [-c CTX] [--bos] [--json]`.
 *
 * The usual measure of a quantization or an engine against another, with
 * llama.cpp's windows so the figures compare: the tokens are cut into windows
 * of CTX, each run from an empty cache, and the tokens after the first half
 * (CTX/2 + 1 .. CTX - 1) are scored, each seeing at least CTX/2 tokens; --bos
 * puts BOS in each window's first place, as llama.cpp does for tokenizers that
 * add one. Sums are in double, from each row's own maximum, so a large
 * vocabulary loses nothing. */
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cJSON.h>

#include "cli_common.h"
#include "commands.h"
#include "core/base/stop_signal.h"
#include "core/text/tokenizer.h"

#define DEFAULT_WINDOW 512
/* logits rows held at once: 512 x K2's 163,840 entries is 335 MB */
#define MAX_SCORED_ROWS 512

static void usage(FILE *f)
{
    fprintf(f, "usage: moetier perplexity -m DIR (-f FILE | --ids LIST) [-c CTX] [--bos] [--json]\n"
               "                          [model and tier options]\n"
               "  Perplexity of a text under the model, in llama.cpp's windows: the tokens\n"
               "  are cut into windows of CTX tokens (a last, shorter one is left out); each\n"
               "  window starts from an empty cache and the tokens after its first half are\n"
               "  scored, each seeing at least CTX/2 tokens before it. The running figure goes\n"
               "  to stderr after each window, the result to stdout. Ctrl+C stops and prints\n"
               "  the result of the whole windows done.\n"
               "  -m DIR        checkpoint directory\n"
               "  -f FILE       text (- for standard input), encoded as plain text:\n"
               "                special-token names in it are text too\n"
               "  --ids LIST    comma-separated token ids instead of text\n"
               "  -c CTX        window in tokens (default %d; at least 3)\n"
               "  --bos         the config's BOS token in each window's first place (llama.cpp\n"
               "                does so when the tokenizer adds BOS)\n"
               "  --json        the result as one JSON object on stdout\n",
            DEFAULT_WINDOW);
    model_flags_usage_except(f, MF_HELP_CTX);
}

static int stop_requested(void *ctx)
{
    (void)ctx;
    return stop_signal_pending();
}

typedef struct score {
    double nll, nll_sq;     /* sums over the scored tokens, in nats */
    long n;
} score;

/* -log p(target) from one row of logits; -1 when the row cannot give one. */
static int score_row(const float *logits, int V, int target, score *s)
{
    float max = -INFINITY;
    for (int v = 0; v < V; v++) {
        if (isnan(logits[v]))
            return -1;
        if (logits[v] > max)
            max = logits[v];
    }
    if (!isfinite(max))
        return -1;
    double sum = 0;
    for (int v = 0; v < V; v++)
        sum += exp((double)logits[v] - (double)max);
    double nll = log(sum) + (double)max - (double)logits[target];
    s->nll += nll;
    s->nll_sq += nll * nll;
    s->n++;
    return 0;
}

static double perplexity_of(const score *s)
{
    return exp(s->nll / (double)s->n);
}

/* The perplexity's standard error: that of the mean NLL (from its sample
 * variance) carried through exp. */
static double perplexity_error(const score *s)
{
    if (s->n < 2)
        return 0;
    double mean = s->nll / (double)s->n;
    double var = (s->nll_sq / (double)s->n - mean * mean) * (double)s->n / (double)(s->n - 1);
    return perplexity_of(s) * sqrt(var > 0 ? var / (double)s->n : 0);
}

/* One window from an empty cache: its first half without logits, then the
 * rest in steps of at most MAX_SCORED_ROWS whose rows score the tokens after
 * them. Returns engine_forward's status. */
static int score_window(engine *en, const int *ids, int C, float *rows, score *s, errbuf *e)
{
    int V = en->cfg->vocab_size, first = C / 2;
    engine_reset(en);
    int rc = engine_forward(en, ids, first, NULL, 0, e);
    if (rc)
        return rc;
    for (int p = first; p < C - 1;) {
        int n = C - 1 - p < MAX_SCORED_ROWS ? C - 1 - p : MAX_SCORED_ROWS;
        if ((rc = engine_forward(en, ids + p, n, rows, 1, e)))
            return rc;
        for (int t = 0; t < n; t++)
            if (score_row(rows + (size_t)t * (size_t)V, V, ids[p + t + 1], s))
                return err_set(e, "the logits at position %d of a window are not finite", p + t);
        p += n;
    }
    return 0;
}

static void print_result(const score *s, int windows, int C, int n_tokens, int json)
{
    int left_out = n_tokens - windows * C;
    if (json) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "perplexity", perplexity_of(s));
        cJSON_AddNumberToObject(o, "perplexity_error", perplexity_error(s));
        cJSON_AddNumberToObject(o, "mean_nll", s->nll / (double)s->n);
        cJSON_AddNumberToObject(o, "tokens_scored", (double)s->n);
        cJSON_AddNumberToObject(o, "windows", windows);
        cJSON_AddNumberToObject(o, "window", C);
        cJSON_AddNumberToObject(o, "tokens", n_tokens);
        cJSON_AddNumberToObject(o, "tokens_left_out", left_out);
        char *text = cJSON_PrintUnformatted(o);
        printf("%s\n", text);
        free(text);
        cJSON_Delete(o);
    } else {
        printf("perplexity: %.4f +/- %.4f (mean NLL %.6f nats over %ld tokens: %d window%s of %d; "
               "%d token%s left out)\n", perplexity_of(s), perplexity_error(s),
               s->nll / (double)s->n, s->n, windows, windows == 1 ? "" : "s", C, left_out,
               left_out == 1 ? "" : "s");
    }
    fflush(stdout);
}

/* The tokens to score: --ids, or the text of -f encoded as plain text. */
static int read_tokens(const char *dir, const char *file, const char *ids_s, int **ids, int *n,
                       errbuf *e)
{
    if (ids_s)
        return cli_parse_ids(ids_s, ids, n) ? 2 : 0;
    char *text;
    size_t len;
    if (cli_read_text(file, &text, &len, e))
        return cli_fail(e);
    tokenizer tok;
    token_list l = {0};
    int rc = tokenizer_load(&tok, dir, e);
    if (rc == 0) {
        rc = tokenizer_encode(&tok, text, len, 0, &l, e);
        if (rc)
            err_prefix(e, "%s: ", strcmp(file, "-") ? file : "standard input");
        tokenizer_free(&tok);
    }
    free(text);
    if (rc)
        return cli_fail(e);
    *ids = l.ids;
    *n = (int)l.n;
    return 0;
}

int cmd_perplexity(int argc, char **argv)
{
    model_flags mf = {0};
    const char *ids_s = NULL, *file = NULL;
    int json = 0, bos = 0;
    for (int i = 1; i < argc; i++) {
        int r = model_flags_parse(&mf, argc, argv, &i);
        if (r < 0)
            return 2;
        if (r)
            continue;
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--ids")) {
            if (!(ids_s = cli_value(argc, argv, &i)))
                return 2;
        } else if (!strcmp(argv[i], "-f") || !strcmp(argv[i], "--file")) {
            if (!(file = cli_value(argc, argv, &i)))
                return 2;
        } else if (!strcmp(argv[i], "--json")) {
            json = 1;
        } else if (!strcmp(argv[i], "--bos")) {
            bos = 1;
        } else {
            fprintf(stderr, "moetier perplexity: unknown option '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    if (!mf.dir || !ids_s == !file) {
        fprintf(stderr, "moetier perplexity: -m and one of -f and --ids are required\n");
        usage(stderr);
        return 2;
    }
    if (!mf.ctx)
        mf.ctx = DEFAULT_WINDOW;
    if (mf.ctx < 3) {
        fprintf(stderr, "moetier perplexity: -c must be at least 3 (the tokens after half a "
                "window are scored)\n");
        return 2;
    }
    if (model_flags_check(&mf, "perplexity"))
        return 2;
    int C = mf.ctx, *ids = NULL, n_tokens = 0;
    errbuf e;
    cli_note_file(&mf, "-f", file);
    int rc = read_tokens(mf.dir, file, ids_s, &ids, &n_tokens, &e);
    if (rc)
        return rc;
    int windows = n_tokens / C;
    if (windows == 0) {
        fprintf(stderr, "moetier perplexity: %s has %d tokens, fewer than one window of %d (give a "
                "smaller -c, or more text)\n", file ? file : "--ids", n_tokens, C);
        free(ids);
        return 1;
    }
    cli_model m;
    if (cli_model_open(&m, &mf, &e)) {
        free(ids);
        return cli_fail(&e);
    }
    /* the last token of a window is only a target, never fed to the engine
     * (which checks what it is fed); the tokens after the last window are
     * neither */
    for (int i = 0; i < windows * C; i++)
        if (ids[i] >= m.mw.cfg.vocab_size) {
            if (file)
                err_set(&e, "%s: the tokenizer in %s gives token id %d (token %d), outside the "
                        "model's vocabulary (0..%d, config.json's 'vocab_size'): its tokenizer "
                        "files are not this checkpoint's", strcmp(file, "-") ? file : "standard input",
                        mf.dir, ids[i], i + 1, m.mw.cfg.vocab_size - 1);
            else
                err_set(&e, "--ids: token id %d (entry %d) is outside the vocabulary (0..%d)",
                        ids[i], i + 1, m.mw.cfg.vocab_size - 1);
            free(ids);
            cli_model_close(&m);
            return cli_fail(&e);
        }
    /* (checked here, where it is used: a config.json whose bos_token_id is
     * past the vocabulary still serves everything else) */
    if (bos && (m.mw.cfg.bos_token_id < 0 || m.mw.cfg.bos_token_id >= m.mw.cfg.vocab_size)) {
        if (m.mw.cfg.bos_token_id < 0)
            err_set(&e, "--bos: %s/config.json names no bos_token_id", mf.dir);
        else
            err_set(&e, "--bos: %s/config.json's bos_token_id %d is outside the vocabulary (0..%d, "
                    "its 'vocab_size')", mf.dir, m.mw.cfg.bos_token_id, m.mw.cfg.vocab_size - 1);
        free(ids);
        cli_model_close(&m);
        return cli_fail(&e);
    }
    int scored = C - 1 - C / 2, scored_rows = scored < MAX_SCORED_ROWS ? scored : MAX_SCORED_ROWS;
    float *rows = malloc((size_t)scored_rows * (size_t)m.mw.cfg.vocab_size * sizeof *rows);
    score s = {0};
    int done = 0, signalled = 0;
    rc = 1;
    if (!rows) {
        err_set(&e, "out of memory for %d rows of logits", scored_rows);
        goto out;
    }
    if (stop_signal_install()) {
        err_set(&e, "cannot set up the stop signals");
        goto out;
    }
    signalled = 1;
    m.en.stop_requested = stop_requested;
    fprintf(stderr, "perplexity: %d tokens, %d window%s of %d, %d tokens scored in each\n", n_tokens,
            windows, windows == 1 ? "" : "s", C, scored);
    int frc = 0;
    for (; done < windows; done++) {
        score w = s;
        int *window = ids + (size_t)done * (size_t)C;
        if (bos)
            window[0] = m.mw.cfg.bos_token_id;  /* never a target: only the first half's */
        frc = score_window(&m.en, window, C, rows, &w, &e);
        if (frc)
            break;
        s = w;
        fprintf(stderr, "[%d/%d] %.4f\n", done + 1, windows, perplexity_of(&s));
    }
    if (frc < 0)
        goto out;
    int sig = frc == 1 ? stop_signal_pending() : 0;
    if (frc == 1)
        fprintf(stderr, "moetier: %s: stopped after %d of %d windows\n",
                sig == SIGTERM ? "SIGTERM" : "SIGINT", done, windows);
    if (done > 0)
        print_result(&s, done, C, n_tokens, json);
    const engine_stats *st = &m.en.stats;
    fprintf(stderr, "prefill: %llu tokens in %.3f s (%.2f tok/s)\n",
            (unsigned long long)st->tokens_prefilled, st->prefill_seconds,
            st->prefill_seconds > 0 ? (double)st->tokens_prefilled / st->prefill_seconds : 0.0);
    rc = frc == 1 ? 128 + (sig ? sig : SIGINT) : 0;
out:
    if (rc == 1)
        cli_fail(&e);
    free(rows);
    free(ids);
    if (cli_model_close(&m) && rc == 0)
        rc = 1;     /* the --trace file could not be written */
    if (signalled)
        stop_signal_uninstall();
    return rc;
}
