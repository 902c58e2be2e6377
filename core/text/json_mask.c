/* json_mask: see json_mask.h. */
#include "json_mask.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "pattern_tokens.h"
#include "vocab_trie.h"

static int is_end(int id, const int *end_ids, int n_end)
{
    for (int i = 0; i < n_end; i++)
        if (end_ids[i] == id)
            return 1;
    return 0;
}

int json_vocab_build(json_vocab *jv, const vocab *v, errbuf *e)
{
    json_schema any;
    jv->n = v->n_vocab;
    jv->trie = NULL;
    jv->first = calloc((size_t)jv->n + 1, 1);
    jv->plain = calloc((size_t)jv->n + 1, 1);
    jv->chars = calloc((size_t)jv->n + 1, 1);
    jv->raw = calloc((size_t)jv->n + 1, 1);
    if (!jv->first || !jv->plain || !jv->chars || !jv->raw || json_schema_any_object(&any, e)) {
        json_vocab_free(jv);
        return err_set(e, "out of memory for the JSON token table");
    }
    /* plain text: what a free string takes whole, and is again a free string after */
    json_prefix in_string;
    json_prefix_init(&in_string, &any);
    json_prefix_feed(&in_string, "{\"a\":\"", 6);
    for (int id = 0; id < jv->n; id++) {
        size_t n;
        const char *b = vocab_decode(v, id, &n);
        if (!b || !n || vocab_is_special(v, id))
            continue;
        jv->first[id] = (uint8_t)b[0];
        json_prefix t;
        json_prefix_copy(&t, &in_string);
        jv->plain[id] = json_prefix_feed(&t, b, n) == 0 && json_prefix_string_room(&t) >= 0;
        /* its characters as a string counts them ("\\n" is one) */
        jv->chars[id] = (uint8_t)(jv->plain[id] && t.str_len < 255 ? t.str_len : 255);
        jv->raw[id] = jv->plain[id] && !memchr(b, '\\', n);
    }
    json_schema_free(&any);
    return 0;
}

void json_vocab_free(json_vocab *jv)
{
    free(jv->first);
    free(jv->plain);
    free(jv->chars);
    free(jv->raw);
    if (jv->trie)
        vocab_trie_free(jv->trie);
    free(jv->trie);
    jv->trie = NULL;
    jv->first = jv->plain = jv->chars = jv->raw = NULL;
    jv->n = 0;
}

/* The most bytes that may come next for which the mask tries the pairs
 * (256 feeds each). */
#define PAIR_FIRSTS 32

static int pattern_takes(const void *j, const uint32_t *cp, int n)
{
    return json_prefix_pattern_takes_cps(j, cp, (size_t)n) == 1;
}

int json_mask_logits(const json_prefix *j, const vocab *v, const json_vocab *jv, const int *end_ids,
                     int n_end, float *logits, int V)
{
    int complete = json_prefix_complete(j), possible = 0, room = json_prefix_string_room(j);
    const json_regex *re = json_prefix_pattern(j);
    int pattern = re != NULL;
    /* a pattern's string: its raw tokens tried a group at a time */
    pattern_tokens *pt = pattern && jv ? pattern_tokens_get(re, v) : NULL;
    if (pt)
        pattern_tokens_reset(pt);
    uint8_t first_ok[256];
    int n_first = 0;
    for (int b = 0; b < 256; b++) {
        json_prefix t;
        char c = (char)b;
        json_prefix_copy(&t, j);
        first_ok[b] = b && json_prefix_feed(&t, &c, 1) == 0;
        n_first += first_ok[b];
    }
    /* Where few bytes may come next (between values, in a number), most
     * tokens that pass their first byte fail at their second (" the" after a
     * value): the pairs after those few bytes are tried once, here, and a
     * token whose first two fail is not fed. Inside a string nearly every byte
     * may come, and the plain-text table decides instead. */
    uint8_t(*second_ok)[256] = NULL;
    if (jv && n_first <= PAIR_FIRSTS && (second_ok = calloc(256, sizeof *second_ok)))
        for (int b = 1; b < 256; b++) {
            if (!first_ok[b])
                continue;
            json_prefix after;
            char c = (char)b;
            json_prefix_copy(&after, j);
            json_prefix_feed(&after, &c, 1);
            for (int d = 0; d < 256; d++) {
                json_prefix t;
                char c2 = (char)d;
                json_prefix_copy(&t, &after);
                second_ok[b][d] = d && json_prefix_feed(&t, &c2, 1) == 0;
            }
        }

    for (int id = 0; id < V; id++) {
        int ok;
        if (is_end(id, end_ids, n_end) || vocab_is_special(v, id)) {
            ok = complete && is_end(id, end_ids, n_end);
        } else if (jv && id < jv->n && !first_ok[jv->first[id]]) {
            ok = 0;
        } else if (jv && id < jv->n && room >= 0 && jv->plain[id]) {
            ok = jv->chars[id] <= room;     /* (its characters are whole) */
        } else if (pt && id < pt->tg.n_vocab && jv->raw[id] && pt->tg.group[id] != TG_SPLIT) {
            ok = pattern_tokens_taken(pt, id, pattern_takes, j);
        } else if (jv && id < jv->n && pattern && jv->raw[id]) {
            size_t n;   /* a pattern's string: raw text is its code points */
            const char *b = vocab_decode(v, id, &n);
            ok = json_prefix_pattern_takes(j, b, n) == 1;
        } else {
            size_t n;
            const char *b = vocab_decode(v, id, &n);
            json_prefix t;
            if (second_ok && b && n >= 2 && !second_ok[(uint8_t)b[0]][(uint8_t)b[1]]) {
                ok = 0;
            } else {
                json_prefix_copy(&t, j);
                ok = b && n && json_prefix_feed(&t, b, n) == 0;
            }
        }
        if (ok)
            possible++;
        else
            logits[id] = -INFINITY;
    }
    free(second_ok);
    return possible;
}
