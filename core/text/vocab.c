/* vocab: tiktoken.model / tokenizer_config.json loading and UTF-8-safe
 * decoding (see vocab.h). */
#define _POSIX_C_SOURCE 200809L
#include "vocab.h"

#include <cJSON.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/base/fileutil.h"
#include "core/base/json_alloc.h"

/* ---- tiktoken.model ----------------------------------------------------- */

static int b64_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

/* Strict base64 (padded, as Python's b64decode wants it); returns the decoded
 * length or -1. */
static long b64_decode(const char *s, size_t n, uint8_t *out)
{
    if (n == 0 || n % 4)
        return -1;
    size_t pad = 0;
    if (s[n - 1] == '=')
        pad = s[n - 2] == '=' ? 2 : 1;
    size_t o = 0;
    for (size_t i = 0; i < n; i += 4) {
        int last = i + 4 == n;
        uint32_t v = 0;
        for (int k = 0; k < 4; k++) {
            int d;
            if (last && k >= 4 - (int)pad)
                d = 0;
            else if ((d = b64_value((unsigned char)s[i + k])) < 0)
                return -1;
            v = (v << 6) | (uint32_t)d;
        }
        out[o++] = (uint8_t)(v >> 16);
        if (!last || pad < 2)
            out[o++] = (uint8_t)(v >> 8);
        if (!last || pad < 1)
            out[o++] = (uint8_t)v;
        /* the bits the padding drops must be zero (canonical encoding) */
        if (last && ((pad == 2 && (v & 0xffff)) || (pad == 1 && (v & 0xff))))
            return -1;
    }
    return (long)o;
}

typedef struct load_state {
    vocab *v;
    int *line_of;               /* [n_ranks] line number of each rank, for messages */
    size_t arena_cap;
} load_state;

static int arena_reserve(load_state *ls, size_t more, errbuf *e)
{
    vocab *v = ls->v;
    if (v->arena_len + more <= ls->arena_cap)
        return 0;
    size_t cap = ls->arena_cap ? ls->arena_cap : 1 << 16;
    while (cap < v->arena_len + more)
        cap *= 2;
    char *na = realloc(v->arena, cap);
    if (!na)
        return err_set(e, "out of memory for the vocabulary");
    v->arena = na;
    ls->arena_cap = cap;
    return 0;
}

static int parse_ranks(load_state *ls, const char *path, const char *text, size_t len, errbuf *e)
{
    vocab *v = ls->v;
    int n_lines = 0;
    for (size_t i = 0; i < len; i++)
        n_lines += text[i] == '\n';
    n_lines++;
    v->tok_off = malloc((size_t)n_lines * sizeof *v->tok_off);
    v->tok_len = malloc((size_t)n_lines * sizeof *v->tok_len);
    ls->line_of = calloc((size_t)n_lines, sizeof *ls->line_of);
    if (!v->tok_off || !v->tok_len || !ls->line_of || arena_reserve(ls, len + (size_t)n_lines + 1, e))
        return err_set(e, "%s: out of memory", path);
    /* first count the entries: ranks must be exactly 0..count-1 */
    int count = 0;
    for (size_t i = 0; i < len;) {
        size_t j = i;
        while (j < len && text[j] != '\n')
            j++;
        size_t end = j;
        if (end > i && text[end - 1] == '\r')
            end--;
        count += end > i;
        i = j + 1;
    }
    if (count == 0)
        return err_set(e, "%s: no tokens", path);
    if (count > VOCAB_MAX_RANKS)
        return err_set(e, "%s: %d tokens, more than the %d supported", path, count, VOCAB_MAX_RANKS);
    int line = 0;
    for (size_t i = 0; i < len;) {
        size_t j = i;
        while (j < len && text[j] != '\n')
            j++;
        line++;
        size_t end = j;
        if (end > i && text[end - 1] == '\r')
            end--;
        const char *s = text + i;
        size_t n = end - i;
        i = j + 1;
        if (n == 0)
            continue;           /* blank lines are skipped, as tiktoken does */
        const char *sp = memchr(s, ' ', n);
        if (!sp)
            return err_set(e, "%s: line %d: expected '<base64> <rank>'", path, line);
        size_t bl = (size_t)(sp - s);
        const char *r = sp + 1;
        size_t rl = n - bl - 1;
        if (rl == 0 || rl > 9)
            return err_set(e, "%s: line %d: rank is missing or too long", path, line);
        long rank = 0;
        for (size_t k = 0; k < rl; k++) {
            if (r[k] < '0' || r[k] > '9')
                return err_set(e, "%s: line %d: rank '%.*s' is not a non-negative integer", path,
                               line, (int)rl, r);
            rank = rank * 10 + (r[k] - '0');
        }
        if (rank >= VOCAB_MAX_RANKS)
            return err_set(e, "%s: line %d: rank %ld is not below 2^24", path, line, rank);
        if (rank >= count)
            return err_set(e, "%s: line %d: rank %ld, but the file has %d tokens (ranks must be "
                           "0..%d without gaps)", path, line, rank, count, count - 1);
        if (ls->line_of[rank])
            return err_set(e, "%s: line %d: rank %ld already given on line %d", path, line, rank,
                           ls->line_of[rank]);
        long bn = b64_decode(s, bl, (uint8_t *)v->arena + v->arena_len);
        if (bn <= 0)
            return err_set(e, "%s: line %d: '%.*s' is not valid base64 of a non-empty token", path,
                           line, bl > 64 ? 64 : (int)bl, s);
        ls->line_of[rank] = line;
        v->tok_off[rank] = (uint32_t)v->arena_len;
        v->tok_len[rank] = (uint32_t)bn;
        v->arena_len += (size_t)bn;
        v->arena[v->arena_len++] = 0;
        if (bn > v->max_token_len)
            v->max_token_len = (int)bn;
    }
    v->n_ranks = count;
    return 0;
}

int vocab_check_unnamed(const char *path, int top, int n_named, errbuf *e)
{
    long unnamed = (long)top - n_named;
    if (unnamed <= VOCAB_MAX_UNNAMED || unnamed <= n_named)
        return 0;
    return err_set(e,
                   "%s: token id %d leaves %ld ids below it unnamed, more than the %d the file names "
                   "(and than %d): is that id a mistake?",
                   path, top - 1, unnamed, n_named, VOCAB_MAX_UNNAMED);
}

/* ---- tokenizer_config.json ---------------------------------------------- */

typedef struct named_tok {
    int id;
    const char *content;        /* into the cJSON tree */
    int hf_special;
} named_tok;

static int named_cmp(const void *a, const void *b)
{
    const named_tok *x = a, *y = b;
    return (x->id > y->id) - (x->id < y->id);
}

/* "bos_token": "[BOS]" or {"content": "[BOS]", ...} or null. */
static const char *token_field(const cJSON *root, const char *key)
{
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(root, key);
    if (cJSON_IsObject(j))
        j = cJSON_GetObjectItemCaseSensitive(j, "content");
    return cJSON_IsString(j) ? j->valuestring : NULL;
}

static int parse_specials(load_state *ls, const char *path, const cJSON *root, int min_vocab,
                          errbuf *e)
{
    vocab *v = ls->v;
    const cJSON *atd = cJSON_GetObjectItemCaseSensitive(root, "added_tokens_decoder");
    if (atd && !cJSON_IsObject(atd))
        return err_set(e, "%s: 'added_tokens_decoder' must be an object", path);
    int n = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, atd) n++;
    named_tok *nt = calloc((size_t)n + 1, sizeof *nt);
    if (!nt)
        return err_set(e, "%s: out of memory", path);
    int k = 0, max_id = -1;
    cJSON_ArrayForEach(it, atd)
    {
        const char *key = it->string;
        char *endp;
        long id = strtol(key, &endp, 10);
        if (!key[0] || *endp || key[0] == '-' || key[0] == '+' || id >= VOCAB_MAX_RANKS) {
            free(nt);
            return err_set(e, "%s: added_tokens_decoder key '%s' is not a token id", path, key);
        }
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(it, "content");
        if (!cJSON_IsString(c) || !c->valuestring[0]) {
            free(nt);
            return err_set(e, "%s: added_tokens_decoder[\"%s\"] has no 'content' string", path, key);
        }
        if (id < v->n_ranks) {
            free(nt);
            return err_set(e, "%s: added token %ld '%s' collides with regular token %ld of "
                           "tiktoken.model (%d regular tokens)", path, id, c->valuestring, id,
                           v->n_ranks);
        }
        const cJSON *sp = cJSON_GetObjectItemCaseSensitive(it, "special");
        nt[k].id = (int)id;
        nt[k].content = c->valuestring;
        nt[k].hf_special = !sp || cJSON_IsTrue(sp);
        if (id > max_id)
            max_id = (int)id;
        k++;
    }
    qsort(nt, (size_t)n, sizeof *nt, named_cmp);
    for (int i = 1; i < n; i++)
        if (nt[i].id == nt[i - 1].id) {
            int dup = nt[i].id;
            free(nt);
            return err_set(e, "%s: added token id %d appears twice", path, dup);
        }
    int nv = v->n_ranks;
    if (max_id + 1 > nv)
        nv = max_id + 1;
    if (vocab_check_unnamed(path, nv, v->n_ranks + n, e)) {
        free(nt);
        return -1;
    }
    if (min_vocab > nv)
        nv = min_vocab;
    uint32_t *no = realloc(v->tok_off, (size_t)nv * sizeof *no);
    if (no)
        v->tok_off = no;
    uint32_t *nl = realloc(v->tok_len, (size_t)nv * sizeof *nl);
    if (nl)
        v->tok_len = nl;
    v->flags = calloc((size_t)nv, 1);
    v->named = malloc(((size_t)n + 1) * sizeof *v->named);
    size_t need = (size_t)(nv - v->n_ranks) * 32;
    for (int i = 0; i < n; i++)
        need += strlen(nt[i].content) + 1;
    if (!no || !nl || !v->flags || !v->named || arena_reserve(ls, need, e)) {
        free(nt);
        return err_set(e, "%s: out of memory", path);
    }
    v->n_vocab = nv;
    int j = 0;
    for (int id = v->n_ranks; id < nv; id++) {
        v->tok_off[id] = (uint32_t)v->arena_len;
        int len;
        v->flags[id] = VOCAB_F_SPECIAL;
        if (j < n && nt[j].id == id) {
            len = (int)strlen(nt[j].content);
            memcpy(v->arena + v->arena_len, nt[j].content, (size_t)len + 1);
            v->flags[id] |= VOCAB_F_NAMED | (nt[j].hf_special ? VOCAB_F_HF_SPECIAL : 0);
            v->named[v->n_named++] = id;
            j++;
        } else {
            len = snprintf(v->arena + v->arena_len, 32, "<|reserved_token_%d|>", id);
        }
        v->tok_len[id] = (uint32_t)len;
        v->arena_len += (size_t)len + 1;
        if (len > v->max_token_len)
            v->max_token_len = len;
    }
    free(nt);
    return vocab_read_roles(v, root, path, e);
}

int vocab_read_roles(vocab *v, const struct cJSON *config, const char *config_name, errbuf *e)
{
    struct {
        const char *key;
        int *id;
    } roles[] = {{"bos_token", &v->bos_id}, {"eos_token", &v->eos_id}, {"pad_token", &v->pad_id},
                 {"unk_token", &v->unk_id}};
    for (size_t r = 0; r < sizeof roles / sizeof roles[0]; r++) {
        const char *name = token_field(config, roles[r].key);
        if (!name)
            continue;
        *roles[r].id = vocab_find_special(v, name);
        if (*roles[r].id < 0)
            return err_set(e, "%s: %s '%s' is not one of the special tokens", config_name, roles[r].key,
                           name);
    }
    return 0;
}

/* ---- loading ------------------------------------------------------------ */

int vocab_parse(vocab *v, const char *ranks, size_t ranks_len, const char *ranks_name,
                const char *config, size_t config_len, const char *config_name, int min_vocab,
                errbuf *e)
{
    memset(v, 0, sizeof *v);
    v->bos_id = v->eos_id = v->pad_id = v->unk_id = -1;
    load_state ls = {v, NULL, 0};
    cJSON *root = NULL;
    int rc = -1;
    if (parse_ranks(&ls, ranks_name, ranks, ranks_len, e))
        goto out;
    if (config) {
        root = json_parse_watched(config, config_len);
        if (!root || !cJSON_IsObject(root)) {
            err_set(e, "%s: %s", config_name,
                    root ? "not a valid JSON object" : json_parse_failure("not a valid JSON object"));
            goto out;
        }
    } else {
        root = cJSON_CreateObject();
    }
    if (parse_specials(&ls, config ? config_name : "(no tokenizer config)", root, min_vocab, e))
        goto out;
    rc = 0;
out:
    free(ls.line_of);
    cJSON_Delete(root);
    if (rc)
        vocab_free(v);
    return rc;
}

int vocab_load_files(vocab *v, const char *tiktoken_path, const char *config_json, int min_vocab,
                     errbuf *e)
{
    char *ranks = NULL, *config = NULL;
    size_t rl = 0, cl = 0;
    int rc = -1;
    memset(v, 0, sizeof *v);
    if (file_read_regular(tiktoken_path, &ranks, &rl, e) ||
        (config_json && file_read_regular(config_json, &config, &cl, e)))
        goto out;
    rc = vocab_parse(v, ranks, rl, tiktoken_path, config, cl, config_json, min_vocab, e);
out:
    free(ranks);
    free(config);
    return rc;
}

int vocab_model_size(const char *dir)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    char *text;
    size_t len;
    struct stat st;
    if (stat(path, &st) != 0 || file_read_regular(path, &text, &len, NULL))
        return 0;
    cJSON *root = cJSON_ParseWithLength(text, len);
    free(text);
    const cJSON *o = root, *tc = cJSON_GetObjectItemCaseSensitive(root, "text_config");
    if (cJSON_IsObject(tc))
        o = tc;
    const cJSON *vs = cJSON_GetObjectItemCaseSensitive(o, "vocab_size");
    int n = cJSON_IsNumber(vs) && vs->valuedouble > 0 && vs->valuedouble < VOCAB_MAX_RANKS
                ? (int)vs->valuedouble : 0;
    cJSON_Delete(root);
    return n;
}

int vocab_load(vocab *v, const char *dir, errbuf *e)
{
    char tk[4096], cfg[4096];
    snprintf(tk, sizeof tk, "%s/tiktoken.model", dir);
    snprintf(cfg, sizeof cfg, "%s/tokenizer_config.json", dir);
    struct stat st;
    memset(v, 0, sizeof *v);
    if (stat(dir, &st) != 0)
        return err_set(e, "%s: %s", dir, strerror(errno));
    if (!S_ISDIR(st.st_mode))
        return err_set(e, "%s: not a directory", dir);
    if (stat(tk, &st) != 0)
        return err_set(e, "%s: no tiktoken.model (not a tiktoken tokenizer directory)", dir);
    if (stat(cfg, &st) != 0)
        return err_set(e, "%s: no tokenizer_config.json next to tiktoken.model", dir);
    return vocab_load_files(v, tk, cfg, vocab_model_size(dir), e);
}

void vocab_free(vocab *v)
{
    free(v->arena);
    free(v->tok_off);
    free(v->tok_len);
    free(v->flags);
    free(v->named);
    memset(v, 0, sizeof *v);
}

/* ---- lookups ------------------------------------------------------------ */

const char *vocab_decode(const vocab *v, int id, size_t *len)
{
    if (id < 0 || id >= v->n_vocab)
        return NULL;
    if (len)
        *len = v->tok_len[id];
    return v->arena + v->tok_off[id];
}

int vocab_is_special(const vocab *v, int id)
{
    return id >= 0 && id < v->n_vocab && (v->flags[id] & VOCAB_F_SPECIAL);
}

int vocab_token_flags(const vocab *v, int id)
{
    return id >= 0 && id < v->n_vocab ? v->flags[id] : 0;
}

int vocab_find_special(const vocab *v, const char *content)
{
    for (int i = 0; i < v->n_named; i++)
        if (strcmp(v->arena + v->tok_off[v->named[i]], content) == 0)
            return v->named[i];
    static const char pre[] = "<|reserved_token_";
    if (strncmp(content, pre, sizeof pre - 1) == 0) {
        /* the number is read only as far as the vocabulary reaches: a longer
         * one is no token's (and would overflow an int) */
        const char *d = content + sizeof pre - 1;
        long id = 0;
        while (*d >= '0' && *d <= '9' && id < v->n_vocab)
            id = id * 10 + (*d++ - '0');
        if (d > content + sizeof pre - 1 && strcmp(d, "|>") == 0 && vocab_is_special(v, (int)id) &&
            strcmp(v->arena + v->tok_off[id], content) == 0)
            return (int)id;
    }
    return -1;
}

int vocab_reply_stop_ids(const vocab *v, const int *eos, int n_eos, int *out)
{
    int cand[VOCAB_MAX_REPLY_STOPS], n_cand = 0, n = 0;
    cand[n_cand++] = vocab_find_special(v, "<|im_end|>");
    cand[n_cand++] = vocab_find_special(v, "[EOS]");
    cand[n_cand++] = v->eos_id;     /* the tokenizer's own (a tokenizer.json's end of sentence) */
    for (int i = 0; i < n_eos && n_cand < VOCAB_MAX_REPLY_STOPS; i++)
        cand[n_cand++] = eos[i];
    for (int i = 0; i < n_cand; i++) {
        int dup = cand[i] < 0;
        for (int k = 0; k < n && !dup; k++)
            dup = out[k] == cand[i];
        if (!dup)
            out[n++] = cand[i];
    }
    return n;
}

int vocab_decode_ids(const vocab *v, const int *ids, int n, char **out, size_t *len, errbuf *e)
{
    size_t total = 0;
    *out = NULL;
    for (int i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= v->n_vocab)
            return err_set(e, "token id %d at position %d is outside the vocabulary (0..%d)",
                           ids[i], i, v->n_vocab - 1);
        total += v->tok_len[ids[i]];
    }
    char *buf = malloc(total + 1);
    if (!buf)
        return err_set(e, "out of memory");
    size_t o = 0;
    for (int i = 0; i < n; i++) {
        memcpy(buf + o, v->arena + v->tok_off[ids[i]], v->tok_len[ids[i]]);
        o += v->tok_len[ids[i]];
    }
    buf[o] = 0;
    *out = buf;
    if (len)
        *len = o;
    return 0;
}

/* ---- stream decoding ---------------------------------------------------- */

/* Where decoded bytes go: a buffer, or a FILE through a small buffer. */
typedef struct sink {
    char *buf;
    size_t cap, len;
    FILE *f;
    char local[512];
} sink;

static void sink_put(sink *k, const void *p, size_t n)
{
    if (k->f) {
        if (k->len + n > sizeof k->local) {
            fwrite(k->local, 1, k->len, k->f);
            k->len = 0;
        }
        if (n > sizeof k->local) {
            fwrite(p, 1, n, k->f);
            return;
        }
        memcpy(k->local + k->len, p, n);
        k->len += n;
        return;
    }
    memcpy(k->buf + k->len, p, n);      /* capacity was checked by the caller */
    k->len += n;
}

static void sink_done(sink *k)
{
    if (k->f && k->len) {
        fwrite(k->local, 1, k->len, k->f);
        k->len = 0;
    }
}

static const char replacement[3] = {(char)0xEF, (char)0xBF, (char)0xBD};   /* U+FFFD */

/* Length of the sequence a lead byte starts (0: not a lead byte). */
static int utf8_seq_len(uint8_t b)
{
    if (b >= 0xC2 && b <= 0xDF)
        return 2;
    if (b >= 0xE0 && b <= 0xEF)
        return 3;
    if (b >= 0xF0 && b <= 0xF4)
        return 4;
    return 0;
}

/* Whether b may follow the lead byte at position pos (1..3) of a sequence
 * (Unicode Table 3-7: no overlongs, no surrogates, nothing above U+10FFFF). */
static int utf8_cont_ok(uint8_t lead, int pos, uint8_t b)
{
    uint8_t lo = 0x80, hi = 0xBF;
    if (pos == 1) {
        if (lead == 0xE0)
            lo = 0xA0;
        else if (lead == 0xED)
            hi = 0x9F;
        else if (lead == 0xF0)
            lo = 0x90;
        else if (lead == 0xF4)
            hi = 0x8F;
    }
    return b >= lo && b <= hi;
}

static void stream_byte(vocab_stream *s, uint8_t b, sink *k)
{
    if (s->n_pend) {
        if (utf8_cont_ok(s->pend[0], s->n_pend, b)) {
            s->pend[s->n_pend++] = b;
            if (s->n_pend == s->need) {
                sink_put(k, s->pend, (size_t)s->n_pend);
                s->n_pend = 0;
            }
            return;
        }
        /* the held-back prefix cannot complete: one U+FFFD for it, then b
         * starts afresh */
        sink_put(k, replacement, 3);
        s->n_pend = 0;
    }
    if (b < 0x80) {
        char c = (char)b;
        sink_put(k, &c, 1);
        return;
    }
    int need = utf8_seq_len(b);
    if (!need) {
        sink_put(k, replacement, 3);
        return;
    }
    s->pend[0] = b;
    s->n_pend = 1;
    s->need = need;
}

static void stream_token(vocab_stream *s, int id, sink *k)
{
    const uint8_t *p = (const uint8_t *)s->v->arena + s->v->tok_off[id];
    uint32_t n = s->v->tok_len[id];
    for (uint32_t i = 0; i < n; i++) {
        /* fast path: ASCII runs with nothing pending */
        if (!s->n_pend && p[i] < 0x80) {
            uint32_t j = i;
            while (j < n && p[j] < 0x80)
                j++;
            sink_put(k, p + i, j - i);
            i = j - 1;
            continue;
        }
        stream_byte(s, p[i], k);
    }
}

void vocab_stream_init(vocab_stream *s, const vocab *v)
{
    memset(s, 0, sizeof *s);
    s->v = v;
}

int vocab_stream_put(vocab_stream *s, int id, FILE *out)
{
    if (id < 0 || id >= s->v->n_vocab)
        return -1;
    sink k = {.f = out};
    stream_token(s, id, &k);
    sink_done(&k);
    return 0;
}

void vocab_stream_flush(vocab_stream *s, FILE *out)
{
    if (s->n_pend)
        fwrite(replacement, 1, 3, out);
    s->n_pend = 0;
}

size_t vocab_stream_bound(const vocab *v)
{
    /* every byte of the token and of a held-back prefix may become U+FFFD */
    return 3 * ((size_t)v->max_token_len + 4);
}

int vocab_stream_decode(vocab_stream *s, int id, char *out, size_t cap, size_t *n_out)
{
    *n_out = 0;
    if (id < 0 || id >= s->v->n_vocab || cap < vocab_stream_bound(s->v))
        return -1;
    sink k = {.buf = out, .cap = cap};
    stream_token(s, id, &k);
    *n_out = k.len;
    return 0;
}

int vocab_stream_finish(vocab_stream *s, char *out, size_t cap, size_t *n_out)
{
    *n_out = 0;
    if (cap < 3)
        return -1;
    if (s->n_pend) {
        memcpy(out, replacement, 3);
        *n_out = 3;
    }
    s->n_pend = 0;
    return 0;
}
