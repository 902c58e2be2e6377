/* tokenizer: see tokenizer.h. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "tokenizer.h"

#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <xxhash.h>

#include "tokenizer_json.h"

/* The Kimi pre-tokenizer pattern (tokenization_kimi.py) in PCRE2 form. Three
 * rewrites keep the original meaning under PCRE2 10.42:
 *  - [X&&[^\p{Han}]] (class intersection) -> (?:(?!\p{sc:Han})[X]) per character;
 *  - \p{Han} -> \p{sc:Han} (a bare script name means Script_Extensions in PCRE2,
 *    which would also take CJK punctuation);
 *  - \s -> the White_Space set spelled out (PCRE2's UCP \s adds U+180E). */
#define WS TOKENIZER_WHITE_SPACE
#define UPPERISH "(?:(?!\\p{sc:Han})[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}])"
#define LOWERISH "(?:(?!\\p{sc:Han})[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}])"
#define CONTRACTION "(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
static const char kimi_pattern[] =
    "[\\p{sc:Han}]+"
    "|[^\\r\\n\\p{L}\\p{N}]?" UPPERISH "*" LOWERISH "+" CONTRACTION
    "|[^\\r\\n\\p{L}\\p{N}]?" UPPERISH "+" LOWERISH "*" CONTRACTION
    "|\\p{N}{1,3}"
    "| ?[^" WS "\\p{L}\\p{N}]+[\\r\\n]*"
    "|[" WS "]*[\\r\\n]+"
    "|[" WS "]+(?![^" WS "])"
    "|[" WS "]+";

/* Kimi's Python wrapper limits (tokenization_kimi.py). */
#define MAX_SLICE_CODEPOINTS 400000
#define MAX_RUN_CODEPOINTS 25000
/* Pieces up to this many bytes use the simple rescanning merge. */
#define BPE_SIMPLE_MAX 64

/* ---- hash tables: token bytes -> id ------------------------------------- */

static uint64_t table_slot(const uint8_t *p, size_t n, uint64_t mask)
{
    return XXH3_64bits(p, n) & mask;
}

/* Whether id's name is matched in text as the token (with specials allowed).
 * Kimi's reserved ids have names its Python tokenizer matches; the ids a
 * tokenizer.json leaves unnamed are no tokens of the file (tokenizers reads
 * "<|reserved_token_N|>" as text), so their made-up names are only decoded. */
static int matched_as_special(const tokenizer *t, int id)
{
    int fl = vocab_token_flags(&t->v, id);
    return (fl & VOCAB_F_SPECIAL) && (t->kind == TOKENIZER_TIKTOKEN || (fl & VOCAB_F_NAMED));
}

/* The table of the special names matched in text (special 1) or of the
 * regular tokens. */
static int table_build(const tokenizer *t, int special, int32_t **table, uint64_t *mask, errbuf *e)
{
    const vocab *v = &t->v;
    uint64_t cap = 1024;
    while (cap < 3ull * (uint64_t)(v->n_vocab + 1))
        cap <<= 1;
    int32_t *tb = malloc(cap * sizeof *tb);
    if (!tb)
        return err_set(e, "out of memory for the tokenizer tables");
    memset(tb, 0xff, cap * sizeof *tb);
    for (int id = 0; id < v->n_vocab; id++) {
        if (special ? !matched_as_special(t, id) : vocab_is_special(v, id))
            continue;
        size_t n;
        const uint8_t *p = (const uint8_t *)vocab_decode(v, id, &n);
        uint64_t h = table_slot(p, n, cap - 1);
        while (tb[h] >= 0)
            h = (h + 1) & (cap - 1);
        tb[h] = id;
    }
    *table = tb;
    *mask = cap - 1;
    return 0;
}

static int table_find(const vocab *v, const int32_t *tb, uint64_t mask, const uint8_t *p, size_t n)
{
    for (uint64_t h = table_slot(p, n, mask);; h = (h + 1) & mask) {
        int id = tb[h];
        if (id < 0)
            return -1;
        if (v->tok_len[id] == n && memcmp(v->arena + v->tok_off[id], p, n) == 0)
            return id;
    }
}

static int rank_of(const tokenizer *t, const uint8_t *p, size_t n)
{
    return table_find(&t->v, t->rank_table, t->rank_mask, p, n);
}

/* ---- loading ----------------------------------------------------------- */

int tokenizer_load(tokenizer *t, const char *dir, errbuf *e)
{
    char path[4096];
    struct stat st;
    snprintf(path, sizeof path, "%s/tiktoken.model", dir);
    if (stat(path, &st) != 0) {
        snprintf(path, sizeof path, "%s/tokenizer.json", dir);
        if (stat(path, &st) == 0)
            return tokenizer_json_load(t, dir, e);
        if (stat(dir, &st) == 0 && S_ISDIR(st.st_mode))
            return err_set(e, "%s: no tokenizer (tiktoken.model, or a Hugging Face tokenizer.json)", dir);
    }
    vocab v;
    if (vocab_load(&v, dir, e))
        return -1;
    if (tokenizer_init(t, &v, e))
        return err_prefix(e, "%s: ", dir);
    return 0;
}

/* The token tables and the special names' first bytes and lengths, over t->v. */
static int tables_build(tokenizer *t, errbuf *e)
{
    if (table_build(t, 0, &t->rank_table, &t->rank_mask, e) ||
        table_build(t, 1, &t->special_table, &t->special_mask, e))
        return -1;
    for (int b = 0; b < 256; b++) {
        uint8_t byte = (uint8_t)b;
        if (rank_of(t, &byte, 1) < 0)
            return err_set(e, "no token for the single byte 0x%02x (byte-level BPE needs all 256)", b);
    }
    for (int id = 0; id < t->v.n_vocab; id++) {
        if (!matched_as_special(t, id))
            continue;
        size_t n;
        const char *name = vocab_decode(&t->v, id, &n);
        if (n == 0)
            return err_set(e, "special token %d has an empty name", id);
        t->special_first[(uint8_t)name[0]] = 1;
        int k = 0;
        while (k < t->n_special_lens && t->special_lens[k] != (int)n)
            k++;
        if (k == t->n_special_lens) {
            if (k == (int)(sizeof t->special_lens / sizeof *t->special_lens))
                return err_set(e, "special token names have too many distinct lengths");
            t->special_lens[t->n_special_lens++] = (int)n;
        }
    }
    /* longest first, so a name that extends another wins */
    for (int i = 0; i < t->n_special_lens; i++)
        for (int j = i + 1; j < t->n_special_lens; j++)
            if (t->special_lens[j] > t->special_lens[i]) {
                int x = t->special_lens[i];
                t->special_lens[i] = t->special_lens[j];
                t->special_lens[j] = x;
            }
    return 0;
}

/* Compiles a pre-split pattern as t->splits[t->n_splits]. */
static int split_add(tokenizer *t, const char *pattern, int literal, errbuf *e)
{
    int err;
    PCRE2_SIZE off;
    if (t->n_splits == TOKENIZER_MAX_SPLITS)
        return err_set(e, "more than %d pre-tokenizer patterns", TOKENIZER_MAX_SPLITS);
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED,
                                   PCRE2_UTF | (literal ? PCRE2_LITERAL : PCRE2_UCP), &err, &off, NULL);
    if (!re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(err, msg, sizeof msg);
        return err_set(e, "pre-tokenizer pattern %d does not compile at %zu: %s", t->n_splits + 1,
                       (size_t)off, (char *)msg);
    }
    pcre2_jit_compile(re, PCRE2_JIT_COMPLETE);   /* optional: the interpreter is the fallback */
    t->splits[t->n_splits++] = re;
    return 0;
}

/* Takes ownership of *v (left empty). */
static void tokenizer_start(tokenizer *t, vocab *v, tokenizer_kind kind)
{
    memset(t, 0, sizeof *t);
    t->v = *v;
    memset(v, 0, sizeof *v);
    t->kind = kind;
    t->bos_prefix = -1;
}

int tokenizer_init(tokenizer *t, vocab *v, errbuf *e)
{
    tokenizer_start(t, v, TOKENIZER_TIKTOKEN);
    if (tables_build(t, e) || split_add(t, kimi_pattern, 0, e)) {
        tokenizer_free(t);
        return -1;
    }
    return 0;
}

static uint64_t merge_hash(uint64_t key, uint64_t mask)
{
    return XXH3_64bits(&key, sizeof key) & mask;
}

/* The merge of tokens a and b: its rank, and in *id the token it makes; -1
 * when the merges do not list the pair. */
static int merge_find(const tokenizer *t, int a, int b, int *id)
{
    uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    for (uint64_t h = merge_hash(key, t->merge_mask);; h = (h + 1) & t->merge_mask) {
        if (t->merge_key[h] == UINT64_MAX)
            return -1;
        if (t->merge_key[h] == key) {
            *id = t->merge_id[h];
            return t->merge_rank[h];
        }
    }
}

static int merges_build(tokenizer *t, const tokenizer_bpe_spec *spec, errbuf *e)
{
    uint64_t cap = 1024;
    while (cap < 2ull * (uint64_t)spec->n_merges + 1)
        cap <<= 1;
    t->merge_key = malloc(cap * sizeof *t->merge_key);
    t->merge_rank = malloc(cap * sizeof *t->merge_rank);
    t->merge_id = malloc(cap * sizeof *t->merge_id);
    uint8_t *joined = malloc(2 * (size_t)t->v.max_token_len + 1);
    if (!t->merge_key || !t->merge_rank || !t->merge_id || !joined) {
        free(joined);
        return err_set(e, "out of memory for the merges");
    }
    memset(t->merge_key, 0xff, cap * sizeof *t->merge_key);
    t->merge_mask = cap - 1;
    int rc = 0;
    for (int i = 0; i < spec->n_merges && !rc; i++) {
        const bpe_merge *m = &spec->merges[i];
        int a = m->left_len <= (uint32_t)t->v.max_token_len ? rank_of(t, m->left, m->left_len) : -1;
        int b = m->right_len <= (uint32_t)t->v.max_token_len ? rank_of(t, m->right, m->right_len) : -1;
        int ab = -1;
        if (a >= 0 && b >= 0) {
            memcpy(joined, m->left, m->left_len);
            memcpy(joined + m->left_len, m->right, m->right_len);
            ab = rank_of(t, joined, (size_t)m->left_len + m->right_len);
        }
        if (a < 0 || b < 0 || ab < 0) {
            rc = err_set(e, "model.merges[%d] joins %s: not two tokens of the vocabulary making a third", i,
                         a < 0 ? "a left part that is no token" :
                         b < 0 ? "a right part that is no token" : "a pair whose join is no token");
            break;
        }
        /* (a pair listed twice takes its last rank, as tokenizers' map keeps it) */
        uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
        uint64_t h = merge_hash(key, t->merge_mask);
        while (t->merge_key[h] != UINT64_MAX && t->merge_key[h] != key)
            h = (h + 1) & t->merge_mask;
        t->merge_key[h] = key;
        t->merge_rank[h] = i;
        t->merge_id[h] = ab;
    }
    free(joined);
    return rc;
}

int tokenizer_init_bpe(tokenizer *t, vocab *v, const tokenizer_bpe_spec *spec, errbuf *e)
{
    tokenizer_start(t, v, TOKENIZER_HF_BPE);
    t->ignore_merges = spec->ignore_merges;
    t->bos_prefix = spec->bos_prefix;
    int rc = tables_build(t, e) || merges_build(t, spec, e);
    for (int i = 0; !rc && i < spec->n_patterns; i++)
        rc = split_add(t, spec->patterns[i], spec->literal[i], e);
    if (rc) {
        tokenizer_free(t);
        return -1;
    }
    return 0;
}

void tokenizer_free(tokenizer *t)
{
    for (int i = 0; i < t->n_splits; i++)
        pcre2_code_free(t->splits[i]);
    free(t->rank_table);
    free(t->special_table);
    free(t->merge_key);
    free(t->merge_rank);
    free(t->merge_id);
    vocab_free(&t->v);
    memset(t, 0, sizeof *t);
}

/* ---- token lists -------------------------------------------------------- */

void token_list_free(token_list *l)
{
    free(l->ids);
    memset(l, 0, sizeof *l);
}

int token_list_push(token_list *l, int id)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 64;
        int *p = realloc(l->ids, cap * sizeof *p);
        if (!p)
            return -1;
        l->ids = p;
        l->cap = cap;
    }
    l->ids[l->n++] = id;
    return 0;
}

/* ---- BPE ---------------------------------------------------------------- */

/* The rank of joining the parts [a, m) and [m, end) of p, whose ids are
 * ida and idb; the id the join makes in *id. -1: they do not join. tiktoken
 * joins any two parts that make a token, by that token's rank; a Hugging
 * Face BPE only the pairs its merges list, by the merge's rank. */
static int pair_rank(const tokenizer *t, const uint8_t *p, size_t a, size_t end, int ida, int idb, int *id)
{
    if (t->kind == TOKENIZER_HF_BPE)
        return merge_find(t, ida, idb, id);
    return *id = rank_of(t, p + a, end - a);
}

/* Rescan the pair ranks, merge the lowest (leftmost on ties). */
int tokenizer_bpe_simple(const tokenizer *t, const uint8_t *p, size_t n, token_list *out)
{
    size_t start[BPE_SIMPLE_MAX + 1];
    int rank[BPE_SIMPLE_MAX + 1], made[BPE_SIMPLE_MAX + 1], id[BPE_SIMPLE_MAX + 1];
    if (n == 0)
        return 0;
    if (n > BPE_SIMPLE_MAX)
        return tokenizer_bpe_heap(t, p, n, out);
    size_t count = n + 1;     /* boundaries */
    for (size_t i = 0; i <= n; i++) {
        start[i] = i;
        id[i] = i < n ? rank_of(t, p + i, 1) : -1;
        rank[i] = made[i] = -1;
    }
    /* parts are [start[i], start[i+1]) with ids id[i]; rank[i] joins parts i
     * and i+1 into made[i] */
    for (size_t i = 0; i + 1 < n; i++)
        rank[i] = pair_rank(t, p, i, i + 2, id[i], id[i + 1], &made[i]);
    for (;;) {
        int best = -1;
        size_t bi = 0;
        for (size_t i = 0; i + 2 < count; i++)
            if (rank[i] >= 0 && (best < 0 || rank[i] < best)) {
                best = rank[i];
                bi = i;
            }
        if (best < 0)
            break;
        id[bi] = made[bi];
        memmove(start + bi + 1, start + bi + 2, (count - bi - 2) * sizeof *start);
        memmove(rank + bi + 1, rank + bi + 2, (count - bi - 2) * sizeof *rank);
        memmove(made + bi + 1, made + bi + 2, (count - bi - 2) * sizeof *made);
        memmove(id + bi + 1, id + bi + 2, (count - bi - 2) * sizeof *id);
        count--;
        rank[bi] = bi + 2 < count
                       ? pair_rank(t, p, start[bi], start[bi + 2], id[bi], id[bi + 1], &made[bi])
                       : -1;
        if (bi > 0)
            rank[bi - 1] = pair_rank(t, p, start[bi - 1], start[bi + 1], id[bi - 1], id[bi], &made[bi - 1]);
    }
    for (size_t i = 0; i + 1 < count; i++)
        if (token_list_push(out, id[i]))
            return -1;
    return 0;
}

typedef struct heap_entry {
    int rank, made;
    uint32_t left, right, vl, vr;
} heap_entry;

static int entry_less(const heap_entry *a, const heap_entry *b)
{
    return a->rank != b->rank ? a->rank < b->rank : a->left < b->left;
}

static void heap_push(heap_entry *h, size_t *n, heap_entry x)
{
    size_t i = (*n)++;
    while (i > 0 && entry_less(&x, &h[(i - 1) / 2])) {
        h[i] = h[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    h[i] = x;
}

static heap_entry heap_pop(heap_entry *h, size_t *n)
{
    heap_entry top = h[0], x = h[--*n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= *n)
            break;
        if (c + 1 < *n && entry_less(&h[c + 1], &h[c]))
            c++;
        if (!entry_less(&h[c], &x))
            break;
        h[i] = h[c];
        i = c;
    }
    h[i] = x;
    return top;
}

/* Merge with a heap of candidate pairs and a linked list of parts: each merge
 * invalidates the entries of its two parts (version stamps) and pushes the two
 * new neighbour pairs, so a piece of n bytes costs O(n log n). Node i is the
 * part starting at byte i; its end is the start of its successor. */
int tokenizer_bpe_heap(const tokenizer *t, const uint8_t *p, size_t n, token_list *out)
{
    if (n == 0)
        return 0;
    uint32_t *next = malloc(n * sizeof *next), *prev = malloc(n * sizeof *prev);
    uint32_t *ver = calloc(n, sizeof *ver);
    int *id = malloc(n * sizeof *id);
    /* at most n - 1 initial pairs plus 2 per merge */
    heap_entry *h = malloc(3 * n * sizeof *h);
    int rc = -1;
    if (!next || !prev || !ver || !id || !h)
        goto out;
    const uint32_t NONE = UINT32_MAX;
    for (size_t i = 0; i < n; i++) {
        next[i] = i + 1 < n ? (uint32_t)(i + 1) : NONE;
        prev[i] = i > 0 ? (uint32_t)(i - 1) : NONE;
        id[i] = rank_of(t, p + i, 1);
    }
    size_t hn = 0;
#define END_OF(i) (next[i] == NONE ? n : (size_t)next[i])
#define PUSH_PAIR(a)                                                                               \
    do {                                                                                           \
        uint32_t b_ = next[a];                                                                     \
        int m_, r_ = pair_rank(t, p, (a), END_OF(b_), id[a], id[b_], &m_);                         \
        if (r_ >= 0)                                                                               \
            heap_push(h, &hn, (heap_entry){r_, m_, (a), b_, ver[a], ver[b_]});                     \
    } while (0)
    for (uint32_t i = 0; i + 1 < n; i++)
        PUSH_PAIR(i);
    while (hn > 0) {
        heap_entry x = heap_pop(h, &hn);
        uint32_t a = x.left, b = x.right;
        /* stale: a or b changed or died since the entry was pushed */
        if (ver[a] != x.vl || ver[b] != x.vr || next[a] != b)
            continue;
        id[a] = x.made;
        next[a] = next[b];
        if (next[b] != NONE)
            prev[next[b]] = a;
        ver[a]++;
        ver[b] = UINT32_MAX;        /* dead: matches no pushed version */
        next[b] = NONE;
        if (next[a] != NONE)
            PUSH_PAIR(a);
        if (prev[a] != NONE)
            PUSH_PAIR(prev[a]);
    }
#undef PUSH_PAIR
#undef END_OF
    for (uint32_t i = 0; i != NONE; i = next[i])
        if (token_list_push(out, id[i]))
            goto out;
    rc = 0;
out:
    free(next);
    free(prev);
    free(ver);
    free(id);
    free(h);
    return rc;
}

static int bpe_piece(const tokenizer *t, const uint8_t *p, size_t n, token_list *out)
{
    if (t->kind == TOKENIZER_TIKTOKEN || t->ignore_merges) {
        int id = rank_of(t, p, n);
        if (id >= 0)
            return token_list_push(out, id);
    }
    return n <= BPE_SIMPLE_MAX ? tokenizer_bpe_simple(t, p, n, out)
                               : tokenizer_bpe_heap(t, p, n, out);
}

/* ---- pre-splitting and the encode driver ------------------------------- */

/* Decodes the code point at s[*i] (valid UTF-8) and advances *i. */
static uint32_t next_codepoint(const uint8_t *s, size_t *i)
{
    uint8_t c = s[*i];
    if (c < 0x80) {
        (*i)++;
        return c;
    }
    int need = (c & 0xe0) == 0xc0 ? 1 : (c & 0xf0) == 0xe0 ? 2 : 3;
    uint32_t cp = c & (0x3f >> need);
    for (int k = 1; k <= need; k++)
        cp = (cp << 6) | (s[*i + k] & 0x3f);
    *i += (size_t)need + 1;
    return cp;
}

/* Python str.isspace(). */
static int py_isspace(uint32_t c)
{
    return (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x20) || c == 0x85 || c == 0xa0 ||
           c == 0x1680 || (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 ||
           c == 0x202f || c == 0x205f || c == 0x3000;
}

typedef struct encode_ctx {
    const tokenizer *t;
    const uint8_t *text;
    pcre2_match_data *md;
    pcre2_match_context *mc;
    pcre2_jit_stack *js;
    token_list *out;
    int flags;
    int (*leaf)(struct encode_ctx *c, size_t a, size_t b);  /* each piece of the last split */
    void (*piece_fn)(void *ctx, size_t start, size_t end);   /* tokenizer_split */
    void *piece_ctx;
    errbuf *e;
} encode_ctx;

/* Splits text[s, end) by pre-split pattern k (a match, and the text between
 * matches, each a piece), each piece again by pattern k + 1, and calls
 * c->leaf on the pieces of the last. A segment is matched as a string of its
 * own (a lookahead must not see past it). Matches are found as Hugging Face's
 * tokenizers find them: an empty match right where the last match ended is
 * passed over (the search moves on one code point), any other empty match is
 * a boundary, and empty pieces are no pieces; so "(?=[A-Z])" cuts "aBc" into
 * "a" and "Bc", and "$" leaves "ab" whole. */
static int split_level(encode_ctx *c, int k, size_t s, size_t end)
{
    if (k == c->t->n_splits)
        return c->leaf(c, s, end);
    const pcre2_code *re = c->t->splits[k];
    const uint8_t *sub = c->text + s;
    size_t n = end - s, pos = 0, prev = 0;    /* search from pos; the next piece starts at prev */
    int matched = 0;
    size_t last_end = 0;                      /* where the last match ended, when matched */
    while (pos <= n) {
        int rc = pcre2_match(re, sub, n, pos, PCRE2_NO_UTF_CHECK, c->md, c->mc);
        if (rc == PCRE2_ERROR_JIT_STACKLIMIT)
            rc = pcre2_match(re, sub, n, pos, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, c->md, c->mc);
        if (rc == PCRE2_ERROR_NOMATCH)
            break;
        if (rc < 0) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(rc, msg, sizeof msg);
            return err_set(c->e, "pre-tokenizer failed at byte %zu: %s", s + pos, (char *)msg);
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(c->md);
        size_t ms = ov[0], me = ov[1];
        if (me == ms && matched && me == last_end) {
            if (pos >= n)
                break;
            next_codepoint(sub, &pos);
            continue;
        }
        if (ms > prev && split_level(c, k + 1, s + prev, s + ms))
            return -1;
        if (me > ms && split_level(c, k + 1, s + ms, s + me))
            return -1;
        prev = pos = last_end = me;
        matched = 1;
    }
    return prev < n ? split_level(c, k + 1, s + prev, end) : 0;
}

static int encode_piece(encode_ctx *c, size_t a, size_t b)
{
    if (bpe_piece(c->t, c->text + a, b - a, c->out))
        return err_set(c->e, "out of memory while encoding");
    return 0;
}

/* Leftmost special-token name in text[from, end): its id and length, or -1. */
static int find_special(const tokenizer *t, const uint8_t *text, size_t from, size_t end,
                        size_t *at, size_t *len)
{
    for (size_t i = from; i < end; i++) {
        if (!t->special_first[text[i]])
            continue;
        for (int k = 0; k < t->n_special_lens; k++) {
            size_t L = (size_t)t->special_lens[k];
            if (i + L > end)
                continue;
            int id = table_find(&t->v, t->special_table, t->special_mask, text + i, L);
            if (id >= 0) {
                *at = i;
                *len = L;
                return id;
            }
        }
    }
    return -1;
}

/* One slice: special names and the ordinary text between them. */
static int encode_slice(encode_ctx *c, size_t s, size_t end)
{
    while (s < end) {
        size_t at = end, len = 0;
        int id = (c->flags & TOK_ALLOW_SPECIAL) ? find_special(c->t, c->text, s, end, &at, &len) : -1;
        if (id < 0)
            at = end;
        if (at > s && split_level(c, 0, s, at))
            return -1;
        if (id < 0)
            break;
        if (token_list_push(c->out, id))
            return err_set(c->e, "out of memory while encoding");
        s = at + len;
    }
    return 0;
}

/* Kimi's slicing: 400,000-code-point windows, each cut where a run of
 * whitespace or non-whitespace would exceed 25,000 code points. */
static int encode_chunked(encode_ctx *c, size_t len)
{
    size_t pos = 0;
    while (pos < len) {
        size_t end = pos;
        for (int k = 0; k < MAX_SLICE_CODEPOINTS && end < len; k++)
            next_codepoint(c->text, &end);
        size_t i = pos, start = pos;
        long run = 0;
        int run_space = py_isspace(next_codepoint(c->text, &(size_t){pos}));
        while (i < end) {
            size_t here = i;
            int sp = py_isspace(next_codepoint(c->text, &i));
            if (sp != run_space) {
                run = 1;
                run_space = sp;
            } else if (++run > MAX_RUN_CODEPOINTS) {
                if (encode_slice(c, start, here))
                    return -1;
                start = here;
                run = 1;
            }
        }
        if (encode_slice(c, start, end))
            return -1;
        pos = end;
    }
    return 0;
}

static int with_matcher(encode_ctx *c, int (*fn)(encode_ctx *c, size_t a, size_t b), size_t len)
{
    int rc = -1;
    c->md = pcre2_match_data_create(1, NULL);
    c->mc = pcre2_match_context_create(NULL);
    /* long letter runs recurse in the JIT; give it room (allocated lazily) */
    c->js = pcre2_jit_stack_create(32 * 1024, 64 * 1024 * 1024, NULL);
    if (!c->md || !c->mc || !c->js) {
        err_set(c->e, "out of memory for the pre-tokenizer");
        goto out;
    }
    pcre2_jit_stack_assign(c->mc, NULL, c->js);
    rc = fn(c, 0, len);
out:
    pcre2_jit_stack_free(c->js);
    pcre2_match_context_free(c->mc);
    pcre2_match_data_free(c->md);
    return rc;
}

static int encode_all(encode_ctx *c, size_t a, size_t b)
{
    /* (the slicing is Kimi's Python wrapper's, not tokenizers') */
    return (c->flags & TOK_NO_CHUNKING) || c->t->kind != TOKENIZER_TIKTOKEN ? encode_slice(c, a, b)
                                                                          : encode_chunked(c, b);
}

int tokenizer_encode(const tokenizer *t, const char *text, size_t len, int flags, token_list *out,
                     errbuf *e)
{
    size_t bad = utf8_validate((const uint8_t *)text, len);
    if (bad < len)
        return err_set(e, "text is not valid UTF-8 at byte %zu", bad);
    size_t n0 = out->n;
    encode_ctx c = {.t = t, .text = (const uint8_t *)text, .out = out, .flags = flags, .leaf = encode_piece,
                    .e = e};
    if (with_matcher(&c, encode_all, len)) {
        out->n = n0;
        return -1;
    }
    return 0;
}

static int split_report(encode_ctx *c, size_t a, size_t b)
{
    c->piece_fn(c->piece_ctx, a, b);
    return 0;
}

static int split_all(encode_ctx *c, size_t a, size_t b)
{
    return split_level(c, 0, a, b);
}

int tokenizer_split(const tokenizer *t, const char *text, size_t len,
                    void (*fn)(void *ctx, size_t start, size_t end), void *ctx, errbuf *e)
{
    size_t bad = utf8_validate((const uint8_t *)text, len);
    if (bad < len)
        return err_set(e, "text is not valid UTF-8 at byte %zu", bad);
    encode_ctx c = {.t = t, .text = (const uint8_t *)text, .leaf = split_report, .piece_fn = fn,
                    .piece_ctx = ctx, .e = e};
    return with_matcher(&c, split_all, len);
}

int tokenizer_encode_prompt(const tokenizer *t, const char *text, size_t len, int flags, token_list *out,
                            errbuf *e)
{
    size_t n0 = out->n;
    if (t->bos_prefix >= 0 && token_list_push(out, t->bos_prefix))
        return err_set(e, "out of memory while encoding");
    if (tokenizer_encode(t, text, len, flags, out, e)) {
        out->n = n0;
        return -1;
    }
    return 0;
}
