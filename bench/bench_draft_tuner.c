/* bench_draft_tuner: --draft-lookup's decode loop over texts whose repeats
 * are continued more or less often, with no guesses (the yardstick, in the
 * same run), every guess found checked, and the guesses the tuner
 * (draft_tuner) picks from the chances and step times it learns.
 *
 * The model is bench_decode_seqs's (Kimi K2's experts, 7168 -> 2048 -> 7168 in
 * INT4, 64 per layer with top-8, 1 dense + 2 MoE layers). Each text's first
 * 32 tokens are the prompt, distinct random ids; the rest are copies of
 * earlier spans of the text, each starting at a random earlier position and
 * going on after each token with a given chance (a lookup's guess is then kept
 * as long as the span goes on: with a chance of 96 % most are, with 33 % few),
 * or fresh random ids (no lookup finds anything), or long spans then short
 * ones.
 * Every step feeds the text's next token with its guesses, and a guess is
 * kept where the text goes on with it (as the server's forced answers do: the
 * model's rows are computed, the text picks the token). Each way runs twice,
 * interleaved with the others (the VM's speed drifts by 10 % over minutes).
 * Prints one JSON line per text and way: tokens/s (the mean of the runs), the
 * ratio to no guesses, steps, guesses checked and kept (of the last run).
 *
 * Usage: bench_draft_tuner [DIR]; DIR defaults to $MOETIER_BENCH_DIR or
 * build/bench-scratch; the model is removed at the end. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/app/cli_common.h"
#include "core/base/progress.h"
#include "core/engine/draft_tuner.h"
#include "bench_model.h"

#define PROMPT 32
#define DECODED 96
#define RUNS 2
#define TEXT (PROMPT + DECODED)

enum { NO_GUESSES, CHECK_ALL, TUNED };
static const char *const way_names[] = {"no guesses", "every guess", "tuned"};

typedef struct result {
    double tok_s;
    int steps, guessed, kept;
} result;

/* Decodes text[PROMPT..TEXT) after its prompt, taking the text's tokens. */
static int decode_text(cli_model *m, const int *text, int way, result *r, errbuf *e)
{
    engine *en = &m->en;
    size_t V = (size_t)en->cfg->vocab_size;
    float *rows = malloc(ENGINE_DRAFT_MAX_T * V * sizeof *rows);
    if (!rows)
        return err_set(e, "out of memory");
    engine_reset(en);
    if (engine_forward(en, text, PROMPT, NULL, 0, e)) {
        free(rows);
        return -1;
    }
    draft_tuner t;
    draft_tuner_init(&t);
    t.cost.check_all = way == CHECK_ALL;
    *r = (result){0};
    double t0 = now_seconds();
    for (int p = PROMPT; p < TEXT - 1;) {
        int ids[ENGINE_DRAFT_MAX_T] = {text[p]}, g = 0;
        if (way != NO_GUESSES)
            g = draft_tuner_guesses(&t, en, text[p], DRAFT_GUESS_MAX, TEXT - 2 - p, ids + 1);
        double s0 = now_seconds();
        if (engine_decode_tokens(en, ids, 1 + g, rows, NULL, e)) {
            free(rows);
            return -1;
        }
        draft_cost_add(&t.cost, 1 + g, now_seconds() - s0);
        int kept = 0;
        while (kept < g && ids[1 + kept] == text[p + 1 + kept])
            kept++;
        for (int k = 0; k <= kept && p + 1 + k < TEXT; k++)
            draft_accept_token(&t.accept, text[p + 1 + k]);
        if (kept < g && engine_drop_guesses(en, g - kept, e)) {
            free(rows);
            return -1;
        }
        r->steps++;
        r->guessed += g;
        r->kept += kept;
        p += 1 + kept;
    }
    r->tok_s = (TEXT - 1 - PROMPT) / (now_seconds() - t0);
    free(rows);
    return 0;
}

int main(int argc, char **argv)
{
    char model[4096];
    errbuf e;
    if (bench_k2_experts_model(argc, argv, "draft-tuner-model", model, sizeof model, &e))
        return fprintf(stderr, "bench_draft_tuner: %s\n", e.msg), 1;
    cli_model m;
    model_flags f = {.dir = model, .ctx = TEXT + ENGINE_DRAFT_MAX_T, .quiet = 1};
    if (cli_model_open(&m, &f, &e))
        return fprintf(stderr, "bench_draft_tuner: %s\n", e.msg), 1;
    enum { LONG, SHORT, FRESH, LONG_THEN_SHORT, N_TEXTS };
    static const char *const text_names[] = {"spans going on 96 %", "spans going on 33 %",
                                             "no repeats", "spans going on 96 %, then 33 %"};
    static int texts[N_TEXTS][TEXT];
    srand(11);
    for (int x = 0; x < N_TEXTS; x++) {
        int V = m.en.cfg->vocab_size, from = 0, left = 0;
        for (int i = 0; i < TEXT; i++) {
            int go_on = x == LONG || (x == LONG_THEN_SHORT && i < PROMPT + DECODED / 2) ? 96 : 33;
            if (i < PROMPT || x == FRESH) {
                texts[x][i] = 1000 + rand() % (V - 1000);
                continue;
            }
            if (i == PROMPT + DECODED / 2)
                left = 0;       /* (the long spans end where the short ones begin) */
            if (left == 0) {    /* a new span */
                from = rand() % (i - 4);
                for (left = 1; rand() % 100 < go_on; left++)
                    ;
            }
            texts[x][i] = texts[x][from++];
            left--;
        }
    }
    result warm;
    if (decode_text(&m, texts[FRESH], NO_GUESSES, &warm, &e))    /* pages the weights in */
        return fprintf(stderr, "bench_draft_tuner: %s\n", e.msg), 1;
    for (int x = 0; x < N_TEXTS; x++) {
        result r[TUNED + 1];
        double tok_s[TUNED + 1] = {0};
        for (int run = 0; run < RUNS; run++)
            for (int way = NO_GUESSES; way <= TUNED; way++) {
                if (decode_text(&m, texts[x], way, &r[way], &e))
                    return fprintf(stderr, "bench_draft_tuner: %s\n", e.msg), 1;
                tok_s[way] += r[way].tok_s / RUNS;
            }
        for (int way = NO_GUESSES; way <= TUNED; way++) {
            printf("{\"bench\":\"draft_tuner\",\"text\":\"%s\",\"guesses\":\"%s\",\"tok_s\":%.3f,"
                   "\"ratio\":%.3f,\"steps\":%d,\"guessed\":%d,\"kept\":%d,\"cores\":%ld}\n",
                   text_names[x], way_names[way], tok_s[way], tok_s[way] / tok_s[NO_GUESSES],
                   r[way].steps, r[way].guessed, r[way].kept, sysconf(_SC_NPROCESSORS_ONLN));
            fflush(stdout);
        }
    }
    cli_model_close(&m);
    bench_remove_tree(model);
    return 0;
}
