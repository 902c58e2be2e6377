/* generate: see generate.h. */
#include "generate.h"

#include <errno.h>
#include <string.h>

static int is_stop(const gen_params *p, int id)
{
    for (int i = 0; i < p->n_stop; i++)
        if (p->stop_ids[i] == id)
            return 1;
    return 0;
}

int generate(cli_model *m, const tokenizer *tok, sampler *s, float *logits, const gen_params *p,
             token_list *out, errbuf *e)
{
    vocab_stream vs;
    if (tok)
        vocab_stream_init(&vs, &tok->v);
    int rc = 0;
    json_prefix answer;
    if (p->schema)
        json_prefix_init(&answer, p->schema);
    for (int k = 0; k < p->max_new; k++) {
        if (p->schema && !json_mask_logits(&answer, &tok->v, p->jv, p->stop_ids, p->n_stop, logits,
                                           m->mw.cfg.vocab_size))
            break;      /* the value is whole and no end token may end it */
        int next = sampler_sample(s, logits);
        if (p->schema && !is_stop(p, next)) {
            size_t n;
            const char *b = vocab_decode(&tok->v, next, &n);
            json_prefix_feed(&answer, b ? b : "", b ? n : 0);
        }
        sampler_accept_output(s, next);
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
        if (m->en.n_past >= m->en.kv.max_ctx) {
            rc = GEN_CONTEXT_FULL;
            break;
        }
        rc = engine_decode(&m->en, next, logits, e);
        if (rc)
            break;
    }
    if (tok && p->out)
        vocab_stream_flush(&vs, p->out);
    return rc;
}
