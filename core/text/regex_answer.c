/* regex_answer: see regex_answer.h. */
#include "regex_answer.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pattern_tokens.h"
#include "utf8.h"

int regex_answer_compile(json_regex *r, const char *regex, errbuf *e)
{
    size_t n = strlen(regex), from = regex[0] == '^';
    if (n > from && regex[n - 1] == '$') {
        size_t bs = 0; /* a '$' not escaped */
        while (bs + 1 < n && regex[n - 2 - bs] == '\\')
            bs++;
        n -= bs % 2 == 0;
    }
    size_t len = n - from + 8;
    char *whole = malloc(len + 1);
    if (!whole)
        return err_set(e, "out of memory for the pattern");
    snprintf(whole, len + 1, "^(?:%.*s)$", (int)(n - from), regex + from);
    int rc = json_regex_compile(r, whole, strlen(whole), e);
    free(whole);
    return rc;
}

int regex_answer_choices(json_regex *r, const char *const *choices, int n, errbuf *e)
{
    size_t cap = 8;
    for (int i = 0; i < n; i++)
        cap += 2 * strlen(choices[i]) + 1;
    char *alt = malloc(cap), *o = alt;
    if (!alt)
        return err_set(e, "out of memory for the choices");
    *o++ = '^';
    *o++ = '(';
    for (int i = 0; i < n; i++) {
        if (i)
            *o++ = '|';
        for (const char *c = choices[i]; *c; c++) { /* each choice as literal text */
            if (strchr("\\^$.|?*+()[]{}/-", *c))
                *o++ = '\\';
            *o++ = *c;
        }
    }
    *o++ = ')';
    *o++ = '$';
    int rc = json_regex_compile(r, alt, (size_t)(o - alt), e);
    free(alt);
    return rc;
}

void regex_answer_init(regex_answer *a, const json_regex *re)
{
    memset(a, 0, sizeof *a);
    a->re = re;
    json_regex_start(&a->set);
}

/* A character whose bytes so far allow [lo, hi]: may one of them come? */
static int range_may(const regex_answer *a, uint32_t lo, uint32_t hi)
{
    return json_regex_may_take(a->re, &a->set, lo, hi, 0, -1);
}

static int byte(regex_answer *a, unsigned char b)
{
    if (a->left) {
        if (b < a->lo || b > a->hi)
            return -1;
        a->cp = a->cp << 6 | (b & 0x3fu);
        a->lo = 0x80;
        a->hi = 0xbf;
        if (--a->left) {
            uint32_t first, last;
            utf8_range(a->cp, a->left, a->lo, a->hi, &first, &last);
            return range_may(a, first, last) ? 0 : -1;
        }
        return json_regex_take(a->re, &a->set, a->cp, 0, -1) ? 0 : -1;
    }
    if (b < 0x80)   /* (no NUL: the answer is text) */
        return b && json_regex_take(a->re, &a->set, b, 0, -1) ? 0 : -1;
    int bits = utf8_lead(b, &a->left, &a->lo, &a->hi);
    if (bits < 0)
        return -1;
    a->cp = (uint32_t)bits;
    uint32_t first, last;
    utf8_range(a->cp, a->left, a->lo, a->hi, &first, &last);
    return range_may(a, first, last) ? 0 : -1;
}

int regex_answer_feed(regex_answer *a, const char *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (byte(a, (unsigned char)b[i]))
            return -1;
    return 0;
}

int regex_answer_complete(const regex_answer *a)
{
    return !a->left && json_regex_accepts(a->re, &a->set);
}

/* Whether a's state takes code points cp[0, n) (whole characters). */
static int takes_cps(const void *state, const uint32_t *cp, int n)
{
    regex_answer t = *(const regex_answer *)state;
    for (int i = 0; i < n; i++)
        if (!json_regex_take(t.re, &t.set, cp[i], 0, -1))
            return 0;
    return 1;
}

/* A state as mask_memo's key: the pattern, its positions, and the character
 * being read (none between characters: the last one's bits then count for
 * nothing, and a loop over characters of any script comes back to one key). */
typedef struct state_key {
    const json_regex *re;
    json_regex_set set;
    uint32_t cp;
    uint8_t left, lo, hi, pad;
} state_key;

int regex_answer_mask(const regex_answer *a, mask_memo **kept, const vocab *v, const json_vocab *jv,
                      const int *end_ids, int n_end, float *logits, int V)
{
    state_key key;
    memset(&key, 0, sizeof key); /* (the padding too: keys compare as bytes) */
    key.re = a->re;
    key.set = a->set;
    if (a->left) {
        key.cp = a->cp;
        key.left = a->left;
        key.lo = a->lo;
        key.hi = a->hi;
    }
    int met = kept ? mask_memo_apply(*kept, &key, sizeof key, v, V, end_ids, n_end, logits) : -1;
    if (met >= 0)
        return met;
    uint8_t *took = kept ? malloc((size_t)(V ? V : 1)) : NULL; /* (no memory: nothing kept) */
    int complete = regex_answer_complete(a), possible = 0;
    /* between characters, tokens of whole characters are tried a group at a time */
    pattern_tokens *pt = a->left ? NULL : pattern_tokens_get(a->re, v);
    if (pt)
        pattern_tokens_reset(pt);
    uint8_t first_ok[256];
    for (int b = 0; b < 256; b++) {
        regex_answer t = *a;
        first_ok[b] = b && byte(&t, (unsigned char)b) == 0;
    }
    for (int id = 0; id < V; id++) {
        int ok = 0, end = 0;
        for (int k = 0; k < n_end; k++)
            end |= end_ids[k] == id;
        if (end || vocab_is_special(v, id)) {
            ok = end && complete;
        } else if (jv && id < jv->n && !first_ok[jv->first[id]]) {
            ok = 0;
        } else if (pt && id < pt->tg.n_vocab && pt->tg.group[id] != TG_SPLIT) {
            ok = pattern_tokens_taken(pt, id, takes_cps, a);
        } else {
            size_t n;
            const char *b = vocab_decode(v, id, &n);
            regex_answer t = *a;
            ok = b && n && regex_answer_feed(&t, b, n) == 0;
        }
        if (ok)
            possible++;
        else
            logits[id] = -INFINITY;
        if (took)
            took[id] = (uint8_t)(ok != 0);
    }
    if (took)
        mask_memo_keep(kept, &key, sizeof key, v, V, end_ids, n_end, took, possible);
    free(took);
    return possible;
}
