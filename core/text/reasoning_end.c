/* reasoning_end: see reasoning_end.h. */
#include "reasoning_end.h"

#include <math.h>
#include <string.h>

static const char close_tag[] = "</think>";
#define CLOSE_LEN ((int)sizeof close_tag - 1)

void reasoning_end_init(reasoning_end *m)
{
    m->matched = 0;
}

/* the match after byte c: '<' only starts the tag, so a mismatch falls back
 * to 1 on '<' and to 0 otherwise */
static int step(int matched, char c)
{
    return c == close_tag[matched] ? matched + 1 : c == '<';
}

int reasoning_end_feed(reasoning_end *m, const char *b, size_t n, size_t *after)
{
    for (size_t i = 0; i < n; i++) {
        m->matched = step(m->matched, b[i]);
        if (m->matched == CLOSE_LEN) {
            *after = i + 1;
            return 1;
        }
    }
    return 0;
}

static int whitespace(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

void reasoning_end_mask(const reasoning_end *m, const vocab *v, int bare, float *logits, int n_logits)
{
    for (int t = 0; t < n_logits; t++) {
        size_t n;
        const char *b = vocab_decode(v, t, &n);
        int k = m->matched;
        /* a token closes the tag only by going on with the match or by
         * starting one: most have neither */
        if (!b || !n || (b[0] != close_tag[k] && !memchr(b, '<', n)))
            continue;
        for (size_t i = 0; i < n; i++) {
            k = step(k, b[i]);
            if (k < CLOSE_LEN)
                continue;
            while (++i < n && !bare && whitespace(b[i]))
                ;
            if (i < n)
                logits[t] = -INFINITY;
            break;
        }
    }
}

void reasoning_gate_init(reasoning_gate *g, reasoning_start start, int think_begin)
{
    g->reasoning = start == REASONING_OPEN;
    g->may_open = start == REASONING_MODEL && think_begin >= 0;
    g->think_begin = think_begin;
    reasoning_end_init(&g->end);
}

int reasoning_gate_feed(reasoning_gate *g, int id, const char *b, size_t n, size_t *after)
{
    int opens = g->may_open && id == g->think_begin;
    g->may_open = 0;
    if (opens) {
        g->reasoning = 1;
        return GATE_REASONING;
    }
    if (!g->reasoning)
        return GATE_ANSWER;
    if (!reasoning_end_feed(&g->end, b, n, after))
        return GATE_REASONING;
    g->reasoning = 0;
    return GATE_CLOSED;
}
