/* dry_breakers: see dry_breakers.h. */
#include "dry_breakers.h"

#include <stdlib.h>
#include <string.h>

const char *const dry_default_breakers[4] = {"\n", ":", "\"", "*"};

static int push_tail(dry_breakers *b, int id)
{
    if (b->n_tail == b->cap_tail) {
        int cap = b->cap_tail ? 2 * b->cap_tail : 64;
        int *t = realloc(b->tail, (size_t)cap * sizeof *t);
        if (!t)
            return -1;
        b->tail = t;
        b->cap_tail = cap;
    }
    b->tail[b->n_tail++] = id;
    return 0;
}

/* Adds breaker head + tail[0, n) unless head already has that tail. */
static int add(dry_breakers *b, int head, const int *tail, int n)
{
    for (int i = b->n - 1; i >= 0 && b->head[i] == head; i--)
        if (b->at[i + 1] - b->at[i] == n &&
            (!n || !memcmp(b->tail + b->at[i], tail, (size_t)n * sizeof *tail)))
            return 0;
    if (b->n + 1 >= b->cap) {
        int cap = b->cap ? 2 * b->cap : 64;
        int *h = realloc(b->head, (size_t)cap * sizeof *h);
        if (h)
            b->head = h;
        int *a = realloc(b->at, ((size_t)cap + 1) * sizeof *a);
        if (a)
            b->at = a;
        if (!h || !a)
            return -1;
        b->cap = cap;
    }
    for (int i = 0; i < n; i++)
        if (push_tail(b, tail[i]))
            return -1;
    b->head[b->n] = head;
    b->at[++b->n] = b->n_tail;
    return 0;
}

/* The tokens of text[0, n) (text cut inside a character is taken as bytes). */
static int tokens_of(const tokenizer *t, const char *text, size_t n, token_list *out, errbuf *e)
{
    out->n = 0;
    if (tokenizer_encode(t, text, n, 0, out, e) == 0)
        return 0;
    out->n = 0;
    return tokenizer_bpe_heap(t, (const uint8_t *)text, n, out);
}

static int build_one(dry_breakers *b, const tokenizer *t, const char *str, size_t len, token_list *rest,
                     int *rest_known, errbuf *e)
{
    const vocab *v = &t->v;
    for (int id = 0; id < v->n_vocab; id++) {
        size_t wn;
        const char *w = vocab_decode(v, id, &wn);
        if (!w || !wn)
            continue;
        if (memmem(w, wn, str, len)) {
            if (add(b, id, NULL, 0))
                return err_set(e, "out of memory for the DRY sequence breakers");
            continue;
        }
        /* each place the token's text ends with the breaker's start */
        for (size_t pos = 0; pos < wn; pos++) {
            size_t k = wn - pos;
            if (k >= len || memcmp(w + pos, str, k))
                continue;
            if (!rest_known[k]) {
                if (tokens_of(t, str + k, len - k, &rest[k], e))
                    return err_set(e, "DRY sequence breaker '%.*s': its end cannot be tokenized", (int)len,
                                   str);
                if (rest[k].n > DRY_MAX_TAIL)
                    rest[k].n = DRY_MAX_TAIL;
                rest_known[k] = 1;
            }
            if (add(b, id, rest[k].ids, (int)rest[k].n))
                return err_set(e, "out of memory for the DRY sequence breakers");
        }
    }
    return 0;
}

int dry_breakers_build(dry_breakers *b, const tokenizer *t, const char *const *strs, int n, errbuf *e)
{
    memset(b, 0, sizeof *b);
    if (!(b->at = calloc(1, sizeof *b->at)))
        return err_set(e, "out of memory for the DRY sequence breakers");
    token_list rest[DRY_MAX_BREAKER];
    memset(rest, 0, sizeof rest);
    int rc = 0;
    for (int i = 0; i < n && !rc; i++) {
        size_t len = strlen(strs[i]);
        if (len > DRY_MAX_BREAKER)
            len = DRY_MAX_BREAKER;
        if (!len)
            continue;
        int rest_known[DRY_MAX_BREAKER] = {0};
        rc = build_one(b, t, strs[i], len, rest, rest_known, e);
    }
    for (int k = 0; k < DRY_MAX_BREAKER; k++)
        token_list_free(&rest[k]);
    if (rc)
        dry_breakers_free(b);
    return rc ? -1 : 0;
}

void dry_breakers_free(dry_breakers *b)
{
    free(b->head);
    free(b->at);
    free(b->tail);
    memset(b, 0, sizeof *b);
}

sampler_breakers dry_breakers_view(const dry_breakers *b)
{
    return (sampler_breakers){b->n, b->head, b->at, b->tail};
}
