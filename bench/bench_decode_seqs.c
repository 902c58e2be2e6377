/* bench_decode_seqs: decode steps of S conversations at once (the server's
 * --parallel, engine_decode_seqs) against one at a time, in the same run.
 *
 * A synthetic model (Kimi K2's experts, 7168 -> 2048 -> 7168 in INT4, 64 per
 * layer with top-8, hidden 7168 trimmed to 2 MoE layers after the dense one)
 * is written once into the scratch directory. S = 1, 2, 4, 8, 15, 16, 24 conversations,
 * each prefilled with its own 32 tokens, then 16 steps of all S together on
 * every core. Prints one JSON line per S: the aggregate tokens/s, the ratio
 * to S = 1 (the yardstick, measured in the same run: 1 means stepping S at
 * once is no faster than one after another), the experts a step runs (their
 * union over the S tokens) and the token rows each expert call gets. Then
 * steps of S = 1, 2, 3 conversations with R = 2 and 4 rows each (a token and
 * the guesses after it, serve --draft-lookup): the step's time against the
 * step of one row each (R = 1, the same S, the same run). A guessed step pays
 * where the tokens it keeps on average (1 + the guesses kept) exceed that
 * ratio.
 *
 * Usage: bench_decode_seqs [DIR]; DIR defaults to $MOETIER_BENCH_DIR or
 * build/bench-scratch; the model is removed at the end. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/app/cli_common.h"
#include "core/base/progress.h"
#include "bench_model.h"

#define PROMPT 32
#define STEPS 16
#define MAX_S 24
#define MAX_R ENGINE_DRAFT_MAX_T     /* rows per conversation: a token and its guesses */

typedef struct result {
    double tok_s, step_s, experts_per_step, rows_per_call;
} result;

/* STEPS steps of S conversations with R rows each (their tokens in order) */
static int run(cli_model *m, int S, int R, result *r, errbuf *e)
{
    engine *en = &m->en;
    int V = en->cfg->vocab_size, moe = 0;
    for (int l = 0; l < en->cfg->n_layers; l++)
        moe += m->mw.layers[l].is_moe;
    engine_seq seqs[MAX_S];
    engine_seq *step[MAX_S * MAX_R];
    float *logits = malloc((size_t)S * (size_t)R * (size_t)V * sizeof *logits);
    if (!logits)
        return err_set(e, "out of memory");
    engine_reset(en);
    for (int s = 0; s < S; s++) {
        int ids[PROMPT];
        for (int i = 0; i < PROMPT; i++)
            ids[i] = (i * 131 + s * 977 + 7) % V;
        if (s && engine_seq_create(en, &seqs[s], e))
            return -1;
        for (int k = 0; k < R; k++)
            step[s * R + k] = s ? &seqs[s] : NULL;
        if (s)
            engine_seq_swap(en, &seqs[s]);
        int rc = engine_forward(en, ids, PROMPT, NULL, 0, e);
        if (s)
            engine_seq_swap(en, &seqs[s]);
        if (rc)
            return -1;
    }
    engine_stats before = en->stats;
    double t0 = now_seconds();
    for (int k = 0; k < STEPS; k++) {
        int ids[MAX_S * MAX_R];
        for (int i = 0; i < S * R; i++)
            ids[i] = ((k * R + i % R) * 31 + i / R * 53 + 3) % V;
        if (engine_decode_seqs(en, step, ids, S * R, logits, NULL, e))
            return -1;
    }
    double dt = now_seconds() - t0;
    uint64_t calls = en->stats.expert_calls - before.expert_calls;
    r->tok_s = S * R * STEPS / dt;
    r->step_s = dt / STEPS;
    r->experts_per_step = (double)calls / STEPS / (moe ? moe : 1);
    r->rows_per_call =
        calls ? (double)S * R * STEPS * en->cfg->n_experts_per_tok * moe / (double)calls : 0;
    for (int s = 1; s < S; s++)
        engine_seq_destroy(&seqs[s]);
    free(logits);
    return 0;
}

int main(int argc, char **argv)
{
    char model[4096];
    errbuf e;
    if (bench_k2_experts_model(argc, argv, "decode-seqs-model", model, sizeof model, &e))
        return fprintf(stderr, "bench_decode_seqs: %s\n", e.msg), 1;
    cli_model m;
    model_flags f = {.dir = model, .ctx = PROMPT + STEPS * MAX_R + 1, .quiet = 1};
    if (cli_model_open(&m, &f, &e))
        return fprintf(stderr, "bench_decode_seqs: %s\n", e.msg), 1;
    /* 16 and 24: steps the CPU backend cuts into parts of 15 (bitwise_rows) */
    const int sizes[] = {1, 2, 4, 8, 15, 16, 24};
    double one = 0;
    result warm;
    if (run(&m, 1, 1, &warm, &e))       /* pages the weights in */
        return fprintf(stderr, "bench_decode_seqs: %s\n", e.msg), 1;
    for (int k = 0; k < (int)(sizeof sizes / sizeof *sizes); k++) {
        result r;
        if (run(&m, sizes[k], 1, &r, &e))
            return fprintf(stderr, "bench_decode_seqs: %s\n", e.msg), 1;
        if (sizes[k] == 1)
            one = r.tok_s;
        printf("{\"bench\":\"decode_seqs\",\"sequences\":%d,\"tok_s\":%.2f,\"ratio\":%.3f,"
               "\"experts_per_step\":%.1f,\"rows_per_expert_call\":%.2f,\"cores\":%ld}\n",
               sizes[k], r.tok_s, r.tok_s / one, r.experts_per_step, r.rows_per_call,
               sysconf(_SC_NPROCESSORS_ONLN));
        fflush(stdout);
    }
    /* guessed rows: each S's one-row step again, next to its steps of R rows */
    const int guessed[] = {1, 2, 3};     /* up to 12 rows: one pass of 15 */
    for (int k = 0; k < (int)(sizeof guessed / sizeof *guessed); k++) {
        int S = guessed[k];
        result plain;
        if (run(&m, S, 1, &plain, &e))
            return fprintf(stderr, "bench_decode_seqs: %s\n", e.msg), 1;
        for (int R = 2; R <= MAX_R; R += 2) {
            result r;
            if (run(&m, S, R, &r, &e))
                return fprintf(stderr, "bench_decode_seqs: %s\n", e.msg), 1;
            printf("{\"bench\":\"decode_seqs_guessed\",\"sequences\":%d,\"rows_per_sequence\":%d,"
                   "\"step_s\":%.4f,\"one_row_step_s\":%.4f,\"step_ratio\":%.3f,"
                   "\"experts_per_step\":%.1f,\"cores\":%ld}\n",
                   S, R, r.step_s, plain.step_s, r.step_s / plain.step_s, r.experts_per_step,
                   sysconf(_SC_NPROCESSORS_ONLN));
            fflush(stdout);
        }
    }
    cli_model_close(&m);
    bench_remove_tree(model);
    return 0;
}
