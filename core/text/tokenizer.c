/* tokenizer: see tokenizer.h. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "tokenizer.h"

#include <pcre2.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

/* The Kimi pre-tokenizer pattern (tokenization_kimi.py) in PCRE2 form. Three
 * rewrites keep the original meaning under PCRE2 10.42:
 *  - [X&&[^\p{Han}]] (class intersection) -> (?:(?!\p{sc:Han})[X]) per character;
 *  - \p{Han} -> \p{sc:Han} (a bare script name means Script_Extensions in PCRE2,
 *    which would also take CJK punctuation);
 *  - \s -> the White_Space set spelled out (PCRE2's UCP \s adds U+180E). */
#define WS "\\t-\\r\\x{20}\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}"
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

static int table_build(const vocab *v, int first, int last, int32_t **table, uint64_t *mask,
                       errbuf *e)
{
    uint64_t cap = 1024;
    while (cap < 3ull * (uint64_t)(last - first + 1))
        cap <<= 1;
    int32_t *tb = malloc(cap * sizeof *tb);
    if (!tb)
        return err_set(e, "out of memory for the tokenizer tables");
    memset(tb, 0xff, cap * sizeof *tb);
    for (int id = first; id < last; id++) {
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
    vocab v;
    if (vocab_load(&v, dir, e))
        return -1;
    if (tokenizer_init(t, &v, e))
        return err_prefix(e, "%s: ", dir);
    return 0;
}

int tokenizer_init(tokenizer *t, vocab *v, errbuf *e)
{
    memset(t, 0, sizeof *t);
    t->v = *v;
    memset(v, 0, sizeof *v);
    int rc = -1;
    if (table_build(&t->v, 0, t->v.n_ranks, &t->rank_table, &t->rank_mask, e) ||
        table_build(&t->v, t->v.n_ranks, t->v.n_vocab, &t->special_table, &t->special_mask, e))
        goto out;
    for (int b = 0; b < 256; b++) {
        uint8_t byte = (uint8_t)b;
        if (rank_of(t, &byte, 1) < 0) {
            err_set(e, "tiktoken.model: no token for the single byte 0x%02x (byte-level BPE "
                    "needs all 256)", b);
            goto out;
        }
    }
    for (int id = t->v.n_ranks; id < t->v.n_vocab; id++) {
        size_t n;
        const char *name = vocab_decode(&t->v, id, &n);
        if (n == 0) {
            err_set(e, "special token %d has an empty name", id);
            goto out;
        }
        t->special_first[(uint8_t)name[0]] = 1;
        int k = 0;
        while (k < t->n_special_lens && t->special_lens[k] != (int)n)
            k++;
        if (k == t->n_special_lens) {
            if (k == (int)(sizeof t->special_lens / sizeof *t->special_lens)) {
                err_set(e, "special token names have too many distinct lengths");
                goto out;
            }
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
    int err;
    PCRE2_SIZE off;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)kimi_pattern, PCRE2_ZERO_TERMINATED,
                                   PCRE2_UTF | PCRE2_UCP, &err, &off, NULL);
    if (!re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(err, msg, sizeof msg);
        err_set(e, "pre-tokenizer pattern does not compile at %zu: %s", (size_t)off, (char *)msg);
        goto out;
    }
    pcre2_jit_compile(re, PCRE2_JIT_COMPLETE);   /* optional: the interpreter is the fallback */
    t->re = re;
    rc = 0;
out:
    if (rc)
        tokenizer_free(t);
    return rc;
}

void tokenizer_free(tokenizer *t)
{
    if (t->re)
        pcre2_code_free(t->re);
    free(t->rank_table);
    free(t->special_table);
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

/* tiktoken's merge: rescan the pair ranks, merge the lowest (leftmost on ties). */
int tokenizer_bpe_simple(const tokenizer *t, const uint8_t *p, size_t n, token_list *out)
{
    size_t start[BPE_SIMPLE_MAX + 1];
    int rank[BPE_SIMPLE_MAX + 1];
    if (n == 0)
        return 0;
    if (n > BPE_SIMPLE_MAX)
        return tokenizer_bpe_heap(t, p, n, out);
    size_t count = n + 1;     /* boundaries */
    for (size_t i = 0; i <= n; i++) {
        start[i] = i;
        rank[i] = i + 2 <= n ? rank_of(t, p + i, 2) : -1;
    }
    for (;;) {
        /* parts are [start[i], start[i+1]); rank[i] joins parts i and i+1 */
        int best = -1;
        size_t bi = 0;
        for (size_t i = 0; i + 2 < count; i++)
            if (rank[i] >= 0 && (best < 0 || rank[i] < best)) {
                best = rank[i];
                bi = i;
            }
        if (best < 0)
            break;
        memmove(start + bi + 1, start + bi + 2, (count - bi - 2) * sizeof *start);
        memmove(rank + bi + 1, rank + bi + 2, (count - bi - 2) * sizeof *rank);
        count--;
        rank[bi] = bi + 2 < count ? rank_of(t, p + start[bi], start[bi + 2] - start[bi]) : -1;
        if (bi > 0)
            rank[bi - 1] = rank_of(t, p + start[bi - 1], start[bi + 1] - start[bi - 1]);
    }
    for (size_t i = 0; i + 1 < count; i++)
        if (token_list_push(out, rank_of(t, p + start[i], start[i + 1] - start[i])))
            return -1;
    return 0;
}

typedef struct heap_entry {
    int rank;
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
    /* at most n - 1 initial pairs plus 2 per merge */
    heap_entry *h = malloc(3 * n * sizeof *h);
    int rc = -1;
    if (!next || !prev || !ver || !h)
        goto out;
    const uint32_t NONE = UINT32_MAX;
    for (size_t i = 0; i < n; i++) {
        next[i] = i + 1 < n ? (uint32_t)(i + 1) : NONE;
        prev[i] = i > 0 ? (uint32_t)(i - 1) : NONE;
    }
    size_t hn = 0;
#define END_OF(i) (next[i] == NONE ? n : (size_t)next[i])
#define PUSH_PAIR(a)                                                                               \
    do {                                                                                           \
        uint32_t b_ = next[a];                                                                     \
        int r_ = rank_of(t, p + (a), END_OF(b_) - (a));                                            \
        if (r_ >= 0)                                                                               \
            heap_push(h, &hn, (heap_entry){r_, (a), b_, ver[a], ver[b_]});                         \
    } while (0)
    for (uint32_t i = 0; i + 1 < n; i++)
        PUSH_PAIR(i);
    while (hn > 0) {
        heap_entry x = heap_pop(h, &hn);
        uint32_t a = x.left, b = x.right;
        /* stale: a or b changed or died since the entry was pushed */
        if (ver[a] != x.vl || ver[b] != x.vr || next[a] != b)
            continue;
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
    for (uint32_t i = 0; i != NONE; i = next[i])
        if (token_list_push(out, rank_of(t, p + i, END_OF(i) - i)))
            goto out;
#undef END_OF
    rc = 0;
out:
    free(next);
    free(prev);
    free(ver);
    free(h);
    return rc;
}

static int bpe_piece(const tokenizer *t, const uint8_t *p, size_t n, token_list *out)
{
    int id = rank_of(t, p, n);
    if (id >= 0)
        return token_list_push(out, id);
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
    void (*piece_fn)(void *ctx, size_t start, size_t end);   /* tokenizer_split */
    void *piece_ctx;
    errbuf *e;
} encode_ctx;

/* Calls fn on each regex piece of text[s, end); the segment is matched as a
 * string of its own (the lookahead must not see past it). */
static int split_segment(encode_ctx *c, size_t s, size_t end,
                         int (*fn)(encode_ctx *c, size_t a, size_t b))
{
    const uint8_t *sub = c->text + s;
    size_t n = end - s, off = 0;
    while (off < n) {
        int rc = pcre2_match(c->t->re, sub, n, off, PCRE2_NO_UTF_CHECK, c->md, c->mc);
        if (rc == PCRE2_ERROR_JIT_STACKLIMIT)
            rc = pcre2_match(c->t->re, sub, n, off, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, c->md, c->mc);
        if (rc == PCRE2_ERROR_NOMATCH)
            return fn(c, s + off, end);   /* cannot happen for this pattern: keep every byte */
        if (rc < 0) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(rc, msg, sizeof msg);
            return err_set(c->e, "pre-tokenizer failed at byte %zu: %s", s + off, (char *)msg);
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(c->md);
        size_t ms = ov[0], me = ov[1];
        if (ms > off && fn(c, s + off, s + ms))
            return -1;
        if (me == ms) {               /* an empty match would loop: take one code point */
            size_t k = ms;
            next_codepoint(sub, &k);
            me = k;
        }
        if (fn(c, s + ms, s + me))
            return -1;
        off = me;
    }
    return 0;
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
        if (at > s && split_segment(c, s, at, encode_piece))
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
    return (c->flags & TOK_NO_CHUNKING) ? encode_slice(c, a, b) : encode_chunked(c, b);
}

int tokenizer_encode(const tokenizer *t, const char *text, size_t len, int flags, token_list *out,
                     errbuf *e)
{
    size_t bad = utf8_validate((const uint8_t *)text, len);
    if (bad < len)
        return err_set(e, "text is not valid UTF-8 at byte %zu", bad);
    size_t n0 = out->n;
    encode_ctx c = {.t = t, .text = (const uint8_t *)text, .out = out, .flags = flags, .e = e};
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
    return split_segment(c, a, b, split_report);
}

int tokenizer_split(const tokenizer *t, const char *text, size_t len,
                    void (*fn)(void *ctx, size_t start, size_t end), void *ctx, errbuf *e)
{
    size_t bad = utf8_validate((const uint8_t *)text, len);
    if (bad < len)
        return err_set(e, "text is not valid UTF-8 at byte %zu", bad);
    encode_ctx c = {.t = t, .text = (const uint8_t *)text, .piece_fn = fn, .piece_ctx = ctx, .e = e};
    return with_matcher(&c, split_all, len);
}
