/* tokenizer_json: see tokenizer_json.h. */
#include "tokenizer_json.h"

#include <cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/base/fileutil.h"
#include "core/base/json_alloc.h"

/* GPT-2's pattern, which a ByteLevel pre-tokenizer with use_regex applies */
static const char gpt2_pattern[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

/* ---- byte-level text: GPT-2's map of the 256 bytes onto printable characters */

/* The byte code point cp stands for, or -1. The printable bytes ('!'..'~',
 * 0xA1..0xAC, 0xAE..0xFF) stand for themselves; the other 68 (0x00..0x20,
 * 0x7F..0xA0, 0xAD), in order, for U+0100 onwards. */
static int byte_of(uint32_t cp)
{
    if (cp < 256)
        return (cp >= '!' && cp <= '~') || (cp >= 0xa1 && cp <= 0xac) || cp >= 0xae ? (int)cp : -1;
    uint32_t n = cp - 256;
    return n <= 0x20 ? (int)n : n < 0x21 + 0x22 ? (int)(0x7f + n - 0x21) : n == 0x43 ? 0xad : -1;
}

/* s (UTF-8, NUL-terminated) as the bytes its characters stand for, into out
 * (at least strlen(s) bytes); their count, or -1 when a character stands for
 * none. */
static long byte_level_decode(const char *s, uint8_t *out)
{
    long n = 0;
    const uint8_t *p = (const uint8_t *)s;
    while (*p) {
        uint32_t cp;
        int len = *p < 0x80 ? 1 : (*p & 0xe0) == 0xc0 ? 2 : (*p & 0xf0) == 0xe0 ? 3 : 4;
        cp = len == 1 ? *p : (uint32_t)(*p & (0x7f >> len));
        for (int k = 1; k < len; k++) {
            if ((p[k] & 0xc0) != 0x80)
                return -1;
            cp = cp << 6 | (p[k] & 0x3f);
        }
        int b = byte_of(cp);
        if (b < 0)
            return -1;
        out[n++] = (uint8_t)b;
        p += len;
    }
    return n;
}

/* ---- patterns -------------------------------------------------------------- */

int tokenizer_json_pattern(const char *pattern, char *out, size_t cap, errbuf *e)
{
    size_t o = 0;
    int in_class = 0;
#define PUT(str)                                                                                             \
    do {                                                                                                     \
        size_t l_ = strlen(str);                                                                             \
        if (o + l_ + 1 > cap)                                                                                \
            return err_set(e, "the pattern is too long");                                                    \
        memcpy(out + o, str, l_);                                                                            \
        o += l_;                                                                                             \
    } while (0)
    for (const char *p = pattern; *p; p++) {
        char one[3] = {*p, 0, 0};
        if (*p == '\\' && p[1]) {
            char c = *++p;
            if (c == 's')
                PUT(in_class ? TOKENIZER_WHITE_SPACE : "[" TOKENIZER_WHITE_SPACE "]");
            else if (c == 'S' && !in_class)
                PUT("[^" TOKENIZER_WHITE_SPACE "]");
            else if (c == 'S' || c == 'h' || c == 'H')
                return err_set(e,
                               "'\\%c'%s is not supported (its meaning differs between "
                               "regular expression engines)",
                               c, in_class ? " inside a class" : "");
            else {
                one[1] = c;
                PUT(one);
            }
            continue;
        }
        if (*p == '[' && !in_class) {
            in_class = 1;
            PUT("[");
            if (p[1] == '^') {
                PUT("^");
                p++;
            }
            if (p[1] == ']') { /* a ']' first in a class is itself */
                PUT("]");
                p++;
            }
            continue;
        }
        if (*p == ']' && in_class)
            in_class = 0;
        else if (*p == '[' && in_class && p[1] == ':')
            return err_set(e, "POSIX classes ('[:') are not supported");
        /* Oniguruma nests a class in a class and intersects with '&&'; PCRE2
         * would end the class early and read the rest as literals */
        else if (*p == '[' && in_class)
            return err_set(e, "a class inside a class ('[' within '[...]', unescaped) is not supported");
        else if (*p == '&' && in_class && p[1] == '&')
            return err_set(e, "class intersection ('&&' within '[...]') is not supported");
        PUT(one);
    }
#undef PUT
    out[o] = 0;
    return 0;
}

/* ---- the file ------------------------------------------------------------- */

typedef struct json_reader {
    const char *name;
    errbuf *e;
    tokenizer_bpe_spec spec;
    char patterns[TOKENIZER_MAX_SPLITS][4096];
    bpe_merge *merges;
    uint8_t *merge_bytes; /* the merges' parts, decoded */
} json_reader;

static const char *type_of(const cJSON *o)
{
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(o, "type");
    return cJSON_IsString(t) ? t->valuestring : NULL;
}

/* A field that must be absent, null, false, or the empty string. */
static int unset(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return !v || cJSON_IsNull(v) || cJSON_IsFalse(v) || (cJSON_IsString(v) && !v->valuestring[0]);
}

static int add_pattern(json_reader *r, const char *where, const char *src, int literal)
{
    tokenizer_bpe_spec *s = &r->spec;
    if (s->n_patterns == TOKENIZER_MAX_SPLITS)
        return err_set(r->e, "%s: %s: more than %d split patterns", r->name, where, TOKENIZER_MAX_SPLITS);
    char *out = r->patterns[s->n_patterns];
    if (literal) {
        if (strlen(src) + 1 > sizeof r->patterns[0])
            return err_set(r->e, "%s: %s: the pattern is too long", r->name, where);
        strcpy(out, src);
    } else if (tokenizer_json_pattern(src, out, sizeof r->patterns[0], r->e)) {
        return err_prefix(r->e, "%s: %s: ", r->name, where);
    }
    s->patterns[s->n_patterns] = out;
    s->literal[s->n_patterns++] = literal;
    return 0;
}

static int read_pre_tokenizer(json_reader *r, const cJSON *pt, const char *where)
{
    if (!pt || cJSON_IsNull(pt))
        return 0;
    const char *type = type_of(pt);
    if (type && !strcmp(type, "Sequence")) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(pt, "pretokenizers"), *x;
        if (!cJSON_IsArray(list))
            return err_set(r->e, "%s: %s: a Sequence needs a 'pretokenizers' list", r->name, where);
        int i = 0;
        cJSON_ArrayForEach(x, list) {
            char inner[96];
            snprintf(inner, sizeof inner, "%s.pretokenizers[%d]", where, i++);
            if (read_pre_tokenizer(r, x, inner))
                return -1;
        }
        return 0;
    }
    if (type && !strcmp(type, "Split")) {
        const cJSON *pat = cJSON_GetObjectItemCaseSensitive(pt, "pattern");
        const cJSON *re = cJSON_GetObjectItemCaseSensitive(pat, "Regex");
        const cJSON *str = cJSON_GetObjectItemCaseSensitive(pat, "String");
        const cJSON *beh = cJSON_GetObjectItemCaseSensitive(pt, "behavior");
        if (!cJSON_IsString(re) && !cJSON_IsString(str))
            return err_set(r->e, "%s: %s: a Split needs a 'pattern' with a 'Regex' or 'String'", r->name,
                           where);
        if (!cJSON_IsString(beh) || strcmp(beh->valuestring, "Isolated"))
            return err_set(r->e, "%s: %s: Split behavior '%s' is not supported (only Isolated)", r->name,
                           where, cJSON_IsString(beh) ? beh->valuestring : "(none)");
        if (!unset(pt, "invert"))
            return err_set(r->e, "%s: %s: an inverted Split is not supported", r->name, where);
        return add_pattern(r, where, cJSON_IsString(re) ? re->valuestring : str->valuestring,
                           !cJSON_IsString(re));
    }
    if (type && !strcmp(type, "ByteLevel")) {
        if (!unset(pt, "add_prefix_space"))
            return err_set(r->e, "%s: %s: ByteLevel's add_prefix_space is not supported", r->name, where);
        const cJSON *ur = cJSON_GetObjectItemCaseSensitive(pt, "use_regex");
        if (!ur || cJSON_IsTrue(ur)) /* (tokenizers' default: true) */
            return add_pattern(r, where, gpt2_pattern, 0);
        return 0;
    }
    return err_set(r->e,
                   "%s: %s: pre-tokenizer '%s' is not supported (byte-level BPE: Split, ByteLevel, "
                   "Sequence)",
                   r->name, where, type ? type : "(no type)");
}

static int read_normalizer(json_reader *r, const cJSON *n)
{
    if (!n || cJSON_IsNull(n))
        return 0;
    const char *type = type_of(n);
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(n, "normalizers");
    if (type && !strcmp(type, "Sequence") && cJSON_IsArray(list) && !cJSON_GetArraySize(list))
        return 0;
    return err_set(r->e, "%s: normalizer '%s' is not supported (the text is encoded as given)", r->name,
                   type ? type : "(no type)");
}

static int read_decoder(json_reader *r, const cJSON *d)
{
    if (!d || cJSON_IsNull(d))
        return 0;
    const char *type = type_of(d);
    if (type && !strcmp(type, "ByteLevel"))
        return 0;
    if (type && !strcmp(type, "Sequence")) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(d, "decoders"), *x;
        cJSON_ArrayForEach(x, list)
            if (read_decoder(r, x))
                return -1;
        return 0;
    }
    return err_set(r->e, "%s: decoder '%s' is not supported (byte-level BPE decodes its bytes)", r->name,
                   type ? type : "(no type)");
}

static int read_model(json_reader *r, const cJSON *m)
{
    const char *type = type_of(m);
    if (!cJSON_IsObject(m) || (type && strcmp(type, "BPE")))
        return err_set(r->e, "%s: model '%s' is not supported (only BPE)", r->name,
                       type                ? type
                       : cJSON_IsObject(m) ? "(no type)"
                                           : "(none)");
    static const char *const refused[] = {"unk_token", "byte_fallback", "dropout",
                                          "continuing_subword_prefix", "end_of_word_suffix"};
    for (size_t i = 0; i < sizeof refused / sizeof *refused; i++)
        if (!unset(m, refused[i]))
            return err_set(r->e, "%s: model.%s is not supported (byte-level BPE without it)", r->name,
                           refused[i]);
    r->spec.ignore_merges = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(m, "ignore_merges"));
    return 0;
}

/* The merges' parts, decoded into r->merges. */
static int read_merges(json_reader *r, const cJSON *list)
{
    if (!cJSON_IsArray(list))
        return err_set(r->e, "%s: model.merges must be a list", r->name);
    int n = cJSON_GetArraySize(list);
    size_t bytes = 0;
    const cJSON *x;
    cJSON_ArrayForEach(x, list) {
        if (cJSON_IsString(x))
            bytes += strlen(x->valuestring);
        else if (cJSON_IsArray(x) && cJSON_GetArraySize(x) == 2 && cJSON_IsString(x->child) &&
                 cJSON_IsString(x->child->next))
            bytes += strlen(x->child->valuestring) + strlen(x->child->next->valuestring);
    }
    r->merges = malloc((size_t)(n ? n : 1) * sizeof *r->merges);
    r->merge_bytes = malloc(bytes + 1);
    if (!r->merges || !r->merge_bytes)
        return err_set(r->e, "%s: out of memory for the merges", r->name);
    size_t at = 0;
    int i = 0;
    cJSON_ArrayForEach(x, list) {
        const char *left = NULL, *right = NULL;
        char *split = NULL;
        if (cJSON_IsString(x) && (split = strchr(x->valuestring, ' ')) && !strchr(split + 1, ' '))
            left = x->valuestring, right = split + 1;
        else if (cJSON_IsArray(x) && cJSON_GetArraySize(x) == 2 && cJSON_IsString(x->child) &&
                 cJSON_IsString(x->child->next))
            left = x->child->valuestring, right = x->child->next->valuestring;
        if (!left)
            return err_set(r->e, "%s: model.merges[%d] is not \"a b\" or [\"a\", \"b\"]", r->name, i);
        if (split)
            *split = 0; /* (the tree is ours) */
        bpe_merge *m = &r->merges[i];
        long nl = byte_level_decode(left, r->merge_bytes + at);
        m->left = r->merge_bytes + at;
        at += nl > 0 ? (size_t)nl : 0;
        long nr = nl > 0 ? byte_level_decode(right, r->merge_bytes + at) : -1;
        m->right = r->merge_bytes + at;
        at += nr > 0 ? (size_t)nr : 0;
        if (split)
            *split = ' ';
        if (nl <= 0 || nr <= 0)
            return err_set(r->e, "%s: model.merges[%d] is not two byte-level tokens", r->name, i);
        m->left_len = (uint32_t)nl;
        m->right_len = (uint32_t)nr;
        i++;
    }
    r->spec.merges = r->merges;
    r->spec.n_merges = n;
    return 0;
}

/* An id of the file: a whole number in [0, VOCAB_MAX_RANKS). */
static int token_id(const cJSON *v)
{
    return cJSON_IsNumber(v) && v->valuedouble >= 0 && v->valuedouble < VOCAB_MAX_RANKS &&
                   v->valuedouble == (double)(int)v->valuedouble
               ? (int)v->valuedouble
               : -1;
}

typedef struct slot {
    const char *text; /* the token's string in the file, NULL: unnamed */
    int added, special;
} slot;

/* The vocabulary: model.vocab's tokens (their bytes) and added_tokens (their
 * names, specials), ids up to min_vocab reserved. */
static int read_vocab(json_reader *r, const cJSON *model, const cJSON *added, int min_vocab, vocab *v)
{
    const cJSON *mv = cJSON_GetObjectItemCaseSensitive(model, "vocab"), *x;
    if (!cJSON_IsObject(mv))
        return err_set(r->e, "%s: model.vocab must be an object of token -> id", r->name);
    if (added && !cJSON_IsArray(added))
        return err_set(r->e, "%s: added_tokens must be a list", r->name);
    int nv = 0, n_regular = 0, n_named = 0;
    cJSON_ArrayForEach(x, mv) {
        int id = token_id(x);
        if (id < 0 || !x->string[0])
            return err_set(r->e, "%s: model.vocab[\"%.40s\"] is not a token id", r->name, x->string);
        nv = id + 1 > nv ? id + 1 : nv;
        n_named++;
    }
    int i = 0;
    cJSON_ArrayForEach(x, added) {
        int id = token_id(cJSON_GetObjectItemCaseSensitive(x, "id"));
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(x, "content");
        if (id < 0 || !cJSON_IsString(c) || !c->valuestring[0])
            return err_set(r->e, "%s: added_tokens[%d] needs an 'id' and a non-empty 'content'", r->name, i);
        static const char *const refused[] = {"lstrip", "rstrip", "single_word"};
        for (size_t k = 0; k < sizeof refused / sizeof *refused; k++)
            if (!unset(x, refused[k]))
                return err_set(r->e, "%s: added_tokens[%d] ('%s'): %s matching is not supported", r->name, i,
                               c->valuestring, refused[k]);
        nv = id + 1 > nv ? id + 1 : nv;
        i++;
    }
    /* (an id in both lists counts twice here: the bound is loose by at most their number) */
    if (vocab_check_unnamed(r->name, nv, n_named + i, r->e))
        return -1;
    nv = min_vocab > nv ? min_vocab : nv;
    slot *sl = calloc((size_t)nv, sizeof *sl);
    if (!sl)
        return err_set(r->e, "%s: out of memory", r->name);
    int rc = 0;
    cJSON_ArrayForEach(x, added) {
        int id = token_id(cJSON_GetObjectItemCaseSensitive(x, "id"));
        if (sl[id].added) {
            rc = err_set(r->e, "%s: added token id %d appears twice", r->name, id);
            goto out;
        }
        sl[id] = (slot){cJSON_GetObjectItemCaseSensitive(x, "content")->valuestring, 1,
                        cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(x, "special"))};
    }
    size_t arena = 0;
    cJSON_ArrayForEach(x, mv) {
        int id = token_id(x);
        if (sl[id].added)
            continue; /* (an added token in the vocab too: its name holds) */
        if (sl[id].text) {
            rc = err_set(r->e, "%s: model.vocab gives id %d to two tokens", r->name, id);
            goto out;
        }
        sl[id].text = x->string;
        n_regular = id + 1 > n_regular ? id + 1 : n_regular;
    }
    for (int id = 0; id < nv; id++)
        arena += (sl[id].text ? strlen(sl[id].text) : 32) + 1;
    memset(v, 0, sizeof *v);
    v->bos_id = v->eos_id = v->pad_id = v->unk_id = -1;
    v->arena = malloc(arena);
    v->tok_off = malloc((size_t)nv * sizeof *v->tok_off);
    v->tok_len = malloc((size_t)nv * sizeof *v->tok_len);
    v->flags = calloc((size_t)nv, 1);
    v->named = malloc((size_t)nv * sizeof *v->named);
    if (!v->arena || !v->tok_off || !v->tok_len || !v->flags || !v->named) {
        rc = err_set(r->e, "%s: out of memory", r->name);
        goto out;
    }
    v->n_vocab = nv;
    v->n_ranks = n_regular;
    for (int id = 0; id < nv; id++) {
        char *at = v->arena + v->arena_len;
        long len;
        if (sl[id].added) {
            len = (long)strlen(sl[id].text);
            memcpy(at, sl[id].text, (size_t)len);
            v->flags[id] = VOCAB_F_SPECIAL | VOCAB_F_NAMED | (sl[id].special ? VOCAB_F_HF_SPECIAL : 0);
            v->named[v->n_named++] = id;
        } else if (sl[id].text) {
            if ((len = byte_level_decode(sl[id].text, (uint8_t *)at)) <= 0) {
                rc = err_set(r->e, "%s: model.vocab[\"%.40s\"] (id %d) is not byte-level text", r->name,
                             sl[id].text, id);
                goto out;
            }
        } else {
            len = snprintf(at, 32, "<|reserved_token_%d|>", id);
            v->flags[id] = VOCAB_F_SPECIAL;
        }
        at[len] = 0;
        v->tok_off[id] = (uint32_t)v->arena_len;
        v->tok_len[id] = (uint32_t)len;
        v->arena_len += (size_t)len + 1;
        if (len > v->max_token_len)
            v->max_token_len = (int)len;
    }
out:
    free(sl);
    return rc;
}

/* tokenizer_config.json's roles, and the token a raw prompt starts with. */
static int read_roles(json_reader *r, const cJSON *config, const char *config_name, const cJSON *post,
                      vocab *v)
{
    if (vocab_read_roles(v, config, config_name, r->e))
        return -1;
    r->spec.bos_prefix = -1;
    const cJSON *add = cJSON_GetObjectItemCaseSensitive(config, "add_bos_token");
    if (cJSON_IsBool(add)) {
        if (cJSON_IsTrue(add) && v->bos_id < 0)
            return err_set(r->e, "%s: add_bos_token is true, but no bos_token is named", config_name);
        r->spec.bos_prefix = cJSON_IsTrue(add) ? v->bos_id : -1;
        return 0;
    }
    /* a TemplateProcessing post-processor: the special token its single
     * sequence starts with */
    const char *type = type_of(post);
    const cJSON *single = cJSON_GetObjectItemCaseSensitive(post, "single");
    const cJSON *first = cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(single, 0), "SpecialToken");
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(first, "id");
    if (type && !strcmp(type, "TemplateProcessing") && cJSON_IsString(name) &&
        (r->spec.bos_prefix = vocab_find_special(v, name->valuestring)) < 0)
        return err_set(r->e, "%s: post_processor starts with '%s', not one of the added tokens", r->name,
                       name->valuestring);
    return 0;
}

int tokenizer_json_parse(tokenizer *t, const char *json, size_t len, const char *name, const char *config,
                         size_t config_len, const char *config_name, int min_vocab, errbuf *e)
{
    memset(t, 0, sizeof *t);
    json_reader *r = calloc(1, sizeof *r);
    if (!r)
        return err_set(e, "%s: out of memory", name);
    r->name = name;
    r->e = e;
    vocab v = {0};
    cJSON *root = json_parse_watched(json, len), *cfg = NULL;
    int rc = -1;
    if (!cJSON_IsObject(root)) {
        err_set(e, "%s: %s", name, root ? "not a JSON object" : json_parse_failure("not valid JSON"));
        goto out;
    }
    if (config) {
        cfg = json_parse_watched(config, config_len);
        if (!cJSON_IsObject(cfg)) {
            err_set(e, "%s: %s", config_name,
                    cfg ? "not a JSON object" : json_parse_failure("not valid JSON"));
            goto out;
        }
    }
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    if (read_model(r, model) || read_normalizer(r, cJSON_GetObjectItemCaseSensitive(root, "normalizer")) ||
        read_pre_tokenizer(r, cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer"), "pre_tokenizer") ||
        read_decoder(r, cJSON_GetObjectItemCaseSensitive(root, "decoder")) ||
        read_merges(r, cJSON_GetObjectItemCaseSensitive(model, "merges")) ||
        read_vocab(r, model, cJSON_GetObjectItemCaseSensitive(root, "added_tokens"), min_vocab, &v) ||
        read_roles(r, cfg, config ? config_name : name,
                   cJSON_GetObjectItemCaseSensitive(root, "post_processor"), &v))
        goto out;
    rc = tokenizer_init_bpe(t, &v, &r->spec, e);
    if (rc)
        err_prefix(e, "%s: ", name);
out:
    vocab_free(&v);
    cJSON_Delete(root);
    cJSON_Delete(cfg);
    free(r->merges);
    free(r->merge_bytes);
    free(r);
    return rc;
}

int tokenizer_json_load(tokenizer *t, const char *dir, errbuf *e)
{
    char path[4096], cfg_path[4096];
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    snprintf(cfg_path, sizeof cfg_path, "%s/tokenizer_config.json", dir);
    char *json = NULL, *config = NULL;
    size_t len = 0, config_len = 0;
    struct stat st;
    memset(t, 0, sizeof *t);
    int has_config = stat(cfg_path, &st) == 0;
    int rc = -1;
    if (!file_read_regular(path, &json, &len, e) &&
        !(has_config && file_read_regular(cfg_path, &config, &config_len, e)))
        rc = tokenizer_json_parse(t, json, len, path, config, config_len, cfg_path, vocab_model_size(dir), e);
    free(json);
    free(config);
    return rc;
}
