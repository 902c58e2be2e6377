/* generate: see generate.h. */
#include "generate.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/base/progress.h"
#include "core/engine/draft_tuner.h"
#include "core/text/grammar_answer.h"

static int is_stop(const gen_params *p, int id)
{
    for (int i = 0; i < p->n_stop; i++)
        if (p->stop_ids[i] == id)
            return 1;
    return 0;
}

/* A checked draft: the step's ids (the generated token, then the guesses)
 * and its rows of logits; rows [0, used] have been sampled from, the ids
 * after ids[used] are in the cache but not (yet) the answer's. */
typedef struct draft_step {
    int ids[ENGINE_DRAFT_MAX_T];
    int n, used;
    float *rows;
    unsigned char nan[ENGINE_DRAFT_MAX_T];  /* the rows holding a NaN */
} draft_step;

/* The row the next token is drawn from is row `used`: one holding a NaN is
 * the error a plain decode step would give (the rows of guesses not taken are
 * never read, whatever they hold). */
static int nan_at_used(const engine *en, const draft_step *d, errbuf *e)
{
    if (!d->nan[d->used])
        return 0;
    return err_set(e, "the logits at position %d are NaN: " ENGINE_NAN_WHY, en->n_past - d->n + d->used);
}

/* The cache back to the answer's tokens: positions of guesses not taken go. */
static int drop_unused(engine *en, draft_step *d, errbuf *e)
{
    int extra = d->n ? d->n - 1 - d->used : 0;
    d->n = 0;
    return extra ? engine_drop_guesses(en, extra, e) : 0;
}

int generate(cli_model *m, const tokenizer *tok, sampler *s, float *logits, const gen_params *p,
             token_list *out, errbuf *e)
{
    vocab_stream vs;
    if (tok)
        vocab_stream_init(&vs, &tok->v);
    int rc = 0, V = m->mw.cfg.vocab_size;
    json_prefix answer;
    grammar_answer text = {0};
    reasoning_gate gate;
    int held = p->schema || p->grammar;
    if (p->schema)
        json_prefix_init(&answer, p->schema);
    int parse = p->grammar ? grammar_answer_init(&text, p->grammar) : 0;
    if (parse)
        return err_set(e, "%s", grammar_answer_strerror(parse));
    if (held)
        reasoning_gate_init(&gate, p->reasoning, p->think_begin);
    draft_step d = {.n = 0};
    draft_tuner own, *tu = p->tuner ? p->tuner : &own;
    if (!p->tuner)
        draft_tuner_init(&own);
    draft_accept_restart(&tu->accept);
    if (p->draft > 0 && !(d.rows = malloc(ENGINE_DRAFT_MAX_T * (size_t)V * sizeof *d.rows))) {
        grammar_answer_free(&text);
        return err_set(e, "out of memory for %d rows of logits (--draft-lookup)", ENGINE_DRAFT_MAX_T);
    }
    /* the masks and the sampler change the row they are given: they get a
     * copy, so that logits ends as the model's (a prompt file keeps them) */
    float *work = malloc((size_t)V * sizeof *work);
    if (!work) {
        free(d.rows);
        grammar_answer_free(&text);
        return err_set(e, "out of memory for a row of logits");
    }
    float *cur = logits;    /* the distribution the next token is drawn from */
    for (int k = 0; k < p->max_new; k++) {
        memcpy(work, cur, (size_t)V * sizeof *work);
        if (held && gate.reasoning) {
            /* (a grammar takes the whitespace after "</think>" itself) */
            reasoning_end_mask(&gate.end, &tok->v, p->grammar != NULL, work, V);
            if (p->section_begin >= 0)
                work[p->section_begin] = -INFINITY; /* (a section would end it, the value unwritten) */
        } else if (held) {
            int may = p->schema ? json_mask_logits(&answer, &tok->v, p->jv, p->stop_ids, p->n_stop, work, V)
                                : grammar_answer_mask(&text, &tok->v, p->jv, p->stop_ids, p->n_stop, work, V);
            if (may < 0) {
                rc = err_set(e, "%s", grammar_answer_strerror(may));
                break;
            }
            if (!may)
                break;  /* the value is whole and no end token may end it */
            if (gate.may_open)
                work[gate.think_begin] = cur[gate.think_begin];
        }
        int next = sampler_sample(s, work);
        if (held && !is_stop(p, next)) {
            size_t n, after = 0;
            const char *b = vocab_decode(&tok->v, next, &n);
            int part = reasoning_gate_feed(&gate, next, b ? b : "", b ? n : 0, &after);
            if (part != GATE_REASONING && p->schema)
                json_prefix_feed(&answer, b ? b + after : "", b ? n - after : 0);
            if (part != GATE_REASONING && p->grammar)
                grammar_answer_feed(&text, b ? b + after : "", b ? n - after : 0);
        }
        sampler_accept_output(s, next);
        if (p->draft)
            draft_accept_token(&tu->accept, next);
        if (token_list_push(out, next)) {
            rc = err_set(e, "out of memory");
            break;
        }
        if (p->on_token)
            p->on_token(p->ctx, next);
        if (tok && p->out && (p->show_special || !vocab_is_special(&tok->v, next))) {
            vocab_stream_put(&vs, next, p->out);
            if (fflush(p->out) != 0 || ferror(p->out)) {
                /* nobody reads the text any more (or the disk is full) */
                rc = err_set(e, "writing the generated text: %s", strerror(errno));
                break;
            }
        }
        if (is_stop(p, next) || k + 1 == p->max_new)
            break;
        /* the token drawn is the next guess of a checked step: the logits
         * after it are computed already */
        if (d.n && d.used + 1 < d.n && next == d.ids[d.used + 1]) {
            d.used++;
            if ((rc = nan_at_used(&m->en, &d, e)))
                break;
            cur = d.rows + (size_t)d.used * (size_t)V;
            if (p->draft_stats)
                p->draft_stats->accepted++;
            continue;
        }
        if ((rc = drop_unused(&m->en, &d, e)))
            break;
        if (m->en.n_past >= m->en.kv.max_ctx) {
            rc = GEN_CONTEXT_FULL;     /* (cur, a checked step's row perhaps, is copied below) */
            break;
        }
        cur = logits;
        int n_guess = p->draft ? draft_tuner_guesses(tu, &m->en, next, p->draft, p->max_new - k - 2,
                                                     d.ids + 1)
                               : 0;
        double t0 = now_seconds();
        if (!n_guess) {
            rc = engine_decode(&m->en, next, logits, e);
            if (rc)
                break;
            draft_cost_add(&tu->cost, 1, now_seconds() - t0);
            continue;
        }
        d.ids[0] = next;
        d.n = n_guess + 1;
        d.used = 0;
        int before = m->en.n_past;
        rc = engine_decode_tokens(&m->en, d.ids, d.n, d.rows, d.nan, e);
        if (rc) {
            /* stopped (Ctrl+C) after a chunk of a step cut in several: the
             * cache as a stop before the token's step leaves it */
            errbuf ignored;
            if (m->en.n_past > before)
                engine_drop_guesses(&m->en, m->en.n_past - before, &ignored);
            d.n = 0;
            break;
        }
        draft_cost_add(&tu->cost, d.n, now_seconds() - t0);
        if ((rc = nan_at_used(&m->en, &d, e)))
            break;
        cur = d.rows;
        if (p->draft_stats) {
            p->draft_stats->drafted += (unsigned long long)n_guess;
            p->draft_stats->steps++;
        }
    }
    /* the cache ends at the answer's last token fed back (a step's guesses
     * dropped after an error too), and, when the answer ended or filled the
     * context, logits hold the distribution after it (the one the last token
     * was drawn from) */
    if (d.n) {
        errbuf ignored;
        int dropped = drop_unused(&m->en, &d, rc ? &ignored : e);
        rc = rc ? rc : dropped;
    }
    if (cur != logits && (!rc || rc == GEN_CONTEXT_FULL))
        memcpy(logits, cur, (size_t)V * sizeof *logits);
    free(work);
    free(d.rows);
    grammar_answer_free(&text);
    if (tok && p->out)
        vocab_stream_flush(&vs, p->out);
    return rc;
}

void gen_draft_stats_print(const gen_draft_stats *st, FILE *f)
{
    fprintf(f, "draft lookup: %llu tokens guessed in %llu steps, %llu kept (%.1f %%)\n",
            st->drafted, st->steps, st->accepted,
            st->drafted ? 100.0 * (double)st->accepted / (double)st->drafted : 0.0);
}
