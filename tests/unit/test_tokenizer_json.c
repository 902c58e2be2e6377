/* tokenizer.json (Hugging Face byte-level BPE): small files written here
 * exercise what the DeepSeek-V3 family's file needs (merges ranked by pair,
 * ignore_merges, splits in turn, added tokens, reserved ids, the prompt's bos)
 * and every refusal; a randomized test compares the merge loops against a
 * plain definition. tests/server/tokenizer_test.mjs compares DeepSeek-V3's
 * own file with transformers.js. */
#include <cJSON.h>
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/text/tokenizer.h"
#include "core/text/tokenizer_json.h"
#include "hf_tokenizer_file.h"
#include "testutil.h"

static void set_json(cJSON *o, const char *key, const char *json)
{
    cJSON *v = cJSON_Parse(json);
    cr_assert_not_null(v, "%s", json);
    if (cJSON_GetObjectItemCaseSensitive(o, key))
        cJSON_ReplaceItemInObjectCaseSensitive(o, key, v);
    else
        cJSON_AddItemToObject(o, key, v);
}

static int load(tokenizer *t, cJSON *root, const char *config, int min_vocab, errbuf *e)
{
    char *text = cJSON_PrintUnformatted(root);
    int rc = tokenizer_json_parse(t, text, strlen(text), "t/tokenizer.json", config,
                                  config ? strlen(config) : 0, "t/tokenizer_config.json", min_vocab, e);
    free(text);
    return rc;
}

static void load_ok(tokenizer *t, cJSON *root, const char *config, int min_vocab)
{
    errbuf e;
    cr_assert_eq(load(t, root, config, min_vocab, &e), 0, "%s", e.msg);
}

static void expect_ids(const tokenizer *t, const char *text, int flags, const int *want, size_t n)
{
    token_list l = {0};
    errbuf e;
    cr_assert_eq(tokenizer_encode(t, text, strlen(text), flags, &l, &e), 0, "%s", e.msg);
    cr_expect_eq(l.n, n, "'%s': %zu ids, want %zu", text, l.n, n);
    for (size_t i = 0; i < n && i < l.n; i++)
        cr_expect_eq(l.ids[i], want[i], "'%s': id %zu is %d, want %d", text, i, l.ids[i], want[i]);
    token_list_free(&l);
}

Test(tokenizer_json, merges_join_only_the_pairs_they_list)
{
    /* "abc" is a token, made by "ab c" only: "a bc" is not listed, so after
     * "a b" the pieces stay "ab", "c". tiktoken's rule (any pair making a
     * token) would give "abc". */
    const char *extra[] = {"ab", "bc", "abc"}, *listed[] = {"a|b", "b|c", "a|bc"};
    cJSON *root = hf_tokenizer_file(extra, 3, listed, 3);
    tokenizer t;
    load_ok(&t, root, NULL, 0);
    expect_ids(&t, "abc", 0, (int[]){256, 'c'}, 2);
    expect_ids(&t, "bc", 0, (int[]){257}, 1);
    tokenizer_free(&t);
    /* ignore_merges: a piece that is a token is that token */
    set_json(cJSON_GetObjectItemCaseSensitive(root, "model"), "ignore_merges", "true");
    load_ok(&t, root, NULL, 0);
    expect_ids(&t, "abc", 0, (int[]){258}, 1);
    tokenizer_free(&t);
    /* the lower rank goes first: with "b c" before "a b", "abc" is "a", "bc",
     * then "a bc" makes "abc" */
    const char *reordered[] = {"b|c", "a|b", "a|bc"};
    cJSON_Delete(root);
    root = hf_tokenizer_file(extra, 3, reordered, 3);
    load_ok(&t, root, NULL, 0);
    expect_ids(&t, "abc", 0, (int[]){258}, 1);
    tokenizer_free(&t);
    /* the newer form of a merge, a pair of strings */
    set_json(cJSON_GetObjectItemCaseSensitive(root, "model"), "merges",
             "[[\"b\", \"c\"], [\"a\", \"b\"], [\"a\", \"bc\"]]");
    load_ok(&t, root, NULL, 0);
    expect_ids(&t, "abc", 0, (int[]){258}, 1);
    tokenizer_free(&t);
    cJSON_Delete(root);
}

/* The definition: while some adjacent pair is listed, join the one of lowest
 * rank (the leftmost of equals). */
static void naive_bpe(const int *ranks, const int *made, int n_sym, const char *text, int *out, int *n_out)
{
    int n = (int)strlen(text);
    for (int i = 0; i < n; i++)
        out[i] = (uint8_t)text[i];
    for (;;) {
        int best = -1, at = -1;
        for (int i = 0; i + 1 < n; i++) {
            int r = ranks[out[i] * n_sym + out[i + 1]];
            if (r >= 0 && (best < 0 || r < best))
                best = r, at = i;
        }
        if (best < 0)
            break;
        out[at] = made[out[at] * n_sym + out[at + 1]];
        memmove(out + at + 1, out + at + 2, (size_t)(n - at - 2) * sizeof *out);
        n--;
    }
    *n_out = n;
}

Test(tokenizer_json, merge_loops_match_the_definition)
{
    test_rng g = {11};
    for (int round = 0; round < 25; round++) {
        /* tokens over "abcde ", made by random listed joins (a token may be
         * made by more than one pair) */
        enum { MAX_TOK = 160 };
        static char tok[MAX_TOK][64];
        static char merge_text[MAX_TOK * 2][140];
        const char *extra[MAX_TOK], *merges[MAX_TOK * 2];
        int n_tok = 0, n_merge = 0;
        const char alphabet[] = "abcde ";
        int sym[MAX_TOK + 6]; /* the ids the joins draw on: the letters, then the tokens */
        int n_sym_ids = 0;
        for (int k = 0; alphabet[k]; k++)
            sym[n_sym_ids++] = (uint8_t)alphabet[k];
        int target = 20 + (int)test_rnd(&g, 120);
        while (n_tok < target && n_merge < MAX_TOK * 2) {
            int a = sym[test_rnd(&g, (unsigned)n_sym_ids)], b = sym[test_rnd(&g, (unsigned)n_sym_ids)];
            char sa[64], sb[64];
            snprintf(sa, sizeof sa, "%s", a < 256 ? (char[]){(char)a, 0} : tok[a - 256]);
            snprintf(sb, sizeof sb, "%s", b < 256 ? (char[]){(char)b, 0} : tok[b - 256]);
            if (strlen(sa) + strlen(sb) >= 40)
                continue;
            char joined[64];
            snprintf(joined, sizeof joined, "%s%s", sa, sb);
            int dup = 0;
            for (int m = 0; m < n_merge; m++) {
                char line[140];
                snprintf(line, sizeof line, "%s|%s", sa, sb);
                dup |= !strcmp(merge_text[m], line);
            }
            if (dup)
                continue;
            int exists = 0;
            for (int k = 0; k < n_tok; k++)
                exists |= !strcmp(tok[k], joined);
            if (!exists) {
                snprintf(tok[n_tok], sizeof tok[0], "%s", joined);
                extra[n_tok] = tok[n_tok];
                sym[n_sym_ids++] = 256 + n_tok;
                n_tok++;
            }
            snprintf(merge_text[n_merge], sizeof merge_text[0], "%s|%s", sa, sb);
            merges[n_merge] = merge_text[n_merge];
            n_merge++;
        }
        cJSON *root = hf_tokenizer_file(extra, n_tok, merges, n_merge);
        tokenizer t;
        load_ok(&t, root, NULL, 0);
        cJSON_Delete(root);
        /* the definition's tables: rank and id made of each pair of ids */
        int n_sym = 256 + n_tok;
        int *ranks = malloc((size_t)n_sym * n_sym * sizeof *ranks),
            *made = malloc((size_t)n_sym * n_sym * sizeof *made);
        for (int i = 0; i < n_sym * n_sym; i++)
            ranks[i] = -1;
        for (int m = n_merge - 1; m >= 0; m--) {
            char a[64], b[64], ab[128];
            const char *bar = strchr(merge_text[m], '|');
            snprintf(a, sizeof a, "%.*s", (int)(bar - merge_text[m]), merge_text[m]);
            snprintf(b, sizeof b, "%s", bar + 1);
            snprintf(ab, sizeof ab, "%s%s", a, b);
            int ia = -1, ib = -1, iab = -1;
            for (int k = 1; k < n_sym; k++) {
                const char *s = k < 256 ? (char[]){(char)k, 0} : tok[k - 256];
                ia = !strcmp(s, a) ? k : ia;
                ib = !strcmp(s, b) ? k : ib;
                iab = !strcmp(s, ab) ? k : iab;
            }
            ranks[ia * n_sym + ib] = m;
            made[ia * n_sym + ib] = iab;
        }
        for (int trial = 0; trial < 40; trial++) {
            char text[200];
            int n = 1 + (int)test_rnd(&g, trial < 20 ? 60 : 190);
            for (int i = 0; i < n; i++)
                text[i] = "abcde "[test_rnd(&g, 6)];
            text[n] = 0;
            int want[200], n_want;
            naive_bpe(ranks, made, n_sym, text, want, &n_want);
            token_list s = {0}, h = {0};
            cr_assert_eq(tokenizer_bpe_simple(&t, (const uint8_t *)text, (size_t)n, &s), 0);
            cr_assert_eq(tokenizer_bpe_heap(&t, (const uint8_t *)text, (size_t)n, &h), 0);
            cr_assert_eq((int)s.n, n_want, "round %d, '%s': %zu ids, the definition %d", round, text, s.n,
                         n_want);
            cr_assert_eq((int)h.n, n_want, "round %d, '%s' (heap)", round, text);
            for (int i = 0; i < n_want; i++) {
                cr_assert_eq(s.ids[i], want[i], "round %d, '%s': id %d", round, text, i);
                cr_assert_eq(h.ids[i], want[i], "round %d, '%s': id %d (heap)", round, text, i);
            }
            token_list_free(&s);
            token_list_free(&h);
        }
        free(ranks);
        free(made);
        tokenizer_free(&t);
    }
}

typedef struct pieces {
    char list[32][64];
    int n;
    const char *text;
} pieces;

static void add_piece(void *ctx, size_t a, size_t b)
{
    pieces *p = ctx;
    if (p->n < 32)
        snprintf(p->list[p->n++], sizeof p->list[0], "%.*s", (int)(b - a), p->text + a);
}

static void expect_pieces(const tokenizer *t, const char *text, const char *const *want, int n)
{
    pieces p = {.text = text};
    errbuf e;
    cr_assert_eq(tokenizer_split(t, text, strlen(text), add_piece, &p, &e), 0, "%s", e.msg);
    cr_expect_eq(p.n, n, "'%s': %d pieces, want %d", text, p.n, n);
    for (int i = 0; i < n && i < p.n; i++)
        cr_expect_str_eq(p.list[i], want[i], "'%s': piece %d", text, i);
}

Test(tokenizer_json, pre_tokenizers_split_in_turn)
{
    cJSON *root = hf_tokenizer_file(NULL, 0, NULL, 0);
    set_json(
        root, "pre_tokenizer",
        "{\"type\": \"Sequence\", \"pretokenizers\": ["
        "{\"type\": \"Split\", \"pattern\": {\"Regex\": \"\\\\p{N}{1,3}\"}, \"behavior\": \"Isolated\", \"invert\": false},"
        "{\"type\": \"Split\", \"pattern\": {\"String\": \"-+\"}, \"behavior\": \"Isolated\", \"invert\": false},"
        "{\"type\": \"Split\", \"pattern\": {\"Regex\": \"\\\\s+(?!\\\\S)|\\\\s+\"}, \"behavior\": \"Isolated\"},"
        "{\"type\": \"ByteLevel\", \"add_prefix_space\": false, \"use_regex\": false}]}");
    tokenizer t;
    load_ok(&t, root, NULL, 0);
    /* digits in threes, the literal "-+" (not a pattern), then whitespace
     * (the Unicode set: U+0085 is whitespace, as in tokenizers) */
    expect_pieces(&t, "ab12345-+cd-e", (const char *[]){"ab", "123", "45", "-+", "cd-e"}, 5);
    expect_pieces(&t, "x  y\xc2\x85z", (const char *[]){"x", " ", " ", "y", "\xc2\x85", "z"}, 6);
    tokenizer_free(&t);
    /* patterns that match empty: an empty match is a boundary, unless it is
     * where the last match ended, and empty pieces are none (as tokenizers
     * finds them; the end of a segment was once read past) */
    const char *empty_matching[][4] = {{"$", "ab", NULL}, {"(?=[A-Z])", "aBcDe", "a", "Bc"},
                                       {"\\\\b", "ab cd", "ab", " "}};
    const char *rest[] = {NULL, "De", "cd"};
    for (int i = 0; i < 3; i++) {
        char pre[160];
        snprintf(pre, sizeof pre,
                 "{\"type\": \"Split\", \"pattern\": {\"Regex\": \"%s\"}, \"behavior\": \"Isolated\"}",
                 empty_matching[i][0]);
        set_json(root, "pre_tokenizer", pre);
        load_ok(&t, root, NULL, 0);
        if (i == 0)
            expect_pieces(&t, "ab", (const char *[]){"ab"}, 1);
        else
            expect_pieces(&t, empty_matching[i][1],
                          (const char *[]){empty_matching[i][2], empty_matching[i][3], rest[i]}, 3);
        tokenizer_free(&t);
    }
    /* ByteLevel with use_regex (tokenizers' default) splits as GPT-2 */
    set_json(root, "pre_tokenizer", "{\"type\": \"ByteLevel\", \"add_prefix_space\": false}");
    load_ok(&t, root, NULL, 0);
    expect_pieces(&t, "Hello world's 42!!", (const char *[]){"Hello", " world", "'s", " 42", "!!"}, 5);
    tokenizer_free(&t);
    /* no pre-tokenizer: the text is one piece */
    set_json(root, "pre_tokenizer", "null");
    load_ok(&t, root, NULL, 0);
    expect_pieces(&t, "a b 12", (const char *[]){"a b 12"}, 1);
    tokenizer_free(&t);
    cJSON_Delete(root);
}

Test(tokenizer_json, added_tokens_reserved_ids_and_decoding)
{
    const char *extra[] = {" a", "hi"}, *merges[] = {" |a", "h|i"};
    cJSON *root = hf_tokenizer_file(extra, 2, merges, 2);
    set_json(root, "added_tokens",
             "[{\"id\": 300, \"content\": \"<|x|>\", \"special\": true, \"normalized\": false},"
             " {\"id\": 301, \"content\": \"<y>\", \"special\": false, \"normalized\": true}]");
    tokenizer t;
    load_ok(&t, root, NULL, 310);
    cr_expect_eq(t.v.n_vocab, 310);
    /* with specials allowed both added tokens are matched; else they are text */
    expect_ids(&t, "hi<|x|> a<y>", TOK_ALLOW_SPECIAL, (int[]){257, 300, 256, 301}, 4);
    expect_ids(&t, "<y>", 0, (int[]){'<', 'y', '>'}, 3);
    cr_expect_eq(vocab_token_flags(&t.v, 300), VOCAB_F_SPECIAL | VOCAB_F_NAMED | VOCAB_F_HF_SPECIAL);
    cr_expect_eq(vocab_token_flags(&t.v, 301), VOCAB_F_SPECIAL | VOCAB_F_NAMED);
    cr_expect_eq(vocab_token_flags(&t.v, 256), 0);
    /* ids the file names not, up to the model's vocab_size, are reserved */
    cr_expect_eq(vocab_token_flags(&t.v, 305), VOCAB_F_SPECIAL);
    cr_expect_str_eq(vocab_decode(&t.v, 305, NULL), "<|reserved_token_305|>");
    cr_expect_eq(vocab_find_special(&t.v, "<|reserved_token_305|>"), 305);
    /* but such a name in text is text, as tokenizers reads it: the file has
     * no token of that name */
    const char *made_up = "<|reserved_token_305|>";
    int bytes[32];
    for (size_t i = 0; i < strlen(made_up); i++)
        bytes[i] = (unsigned char)made_up[i];
    expect_ids(&t, made_up, TOK_ALLOW_SPECIAL, bytes, (int)strlen(made_up));
    cr_expect_eq(vocab_find_special(&t.v, "<y>"), 301);
    /* tokens decode to their bytes (the space, byte-level "Ġ", is a space) */
    size_t n;
    const char *s = vocab_decode(&t.v, 256, &n);
    cr_expect(n == 2 && !memcmp(s, " a", 2));
    s = vocab_decode(&t.v, '\n', &n);
    cr_expect(n == 1 && s[0] == '\n');
    tokenizer_free(&t);
    cJSON_Delete(root);
}

Test(tokenizer_json, a_raw_prompt_starts_as_the_config_says)
{
    cJSON *root = hf_tokenizer_file(NULL, 0, NULL, 0);
    set_json(
        root, "added_tokens",
        "[{\"id\": 256, \"content\": \"<s>\", \"special\": true}, {\"id\": 257, \"content\": \"</s>\", \"special\": true}]");
    struct {
        const char *config, *post;
        int bos;
    } cases[] = {
        {"{\"add_bos_token\": true, \"bos_token\": \"<s>\", \"eos_token\": {\"content\": \"</s>\"}}", NULL,
         256},
        {"{\"add_bos_token\": false, \"bos_token\": \"<s>\"}", NULL, -1},
        {"{\"bos_token\": \"<s>\"}", NULL, -1},
        {"{\"bos_token\": \"<s>\"}",
         "{\"type\": \"TemplateProcessing\", \"single\": [{\"SpecialToken\": {\"id\": \"<s>\", \"type_id\": 0}},"
         " {\"Sequence\": {\"id\": \"A\", \"type_id\": 0}}]}",
         256},
        {NULL, "{\"type\": \"ByteLevel\"}", -1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        set_json(root, "post_processor", cases[i].post ? cases[i].post : "null");
        tokenizer t;
        load_ok(&t, root, cases[i].config, 0);
        cr_expect_eq(t.bos_prefix, cases[i].bos, "case %zu", i);
        token_list l = {0};
        errbuf e;
        cr_assert_eq(tokenizer_encode_prompt(&t, "ab", 2, 0, &l, &e), 0, "%s", e.msg);
        cr_expect_eq(l.n, cases[i].bos >= 0 ? 3u : 2u, "case %zu", i);
        cr_expect_eq(l.ids[0], cases[i].bos >= 0 ? cases[i].bos : 'a', "case %zu", i);
        if (i == 0) {
            cr_expect_eq(t.v.bos_id, 256);
            cr_expect_eq(t.v.eos_id, 257);
            int stops[VOCAB_MAX_REPLY_STOPS];
            cr_expect_eq(vocab_reply_stop_ids(&t.v, NULL, 0, stops), 1, "the tokenizer's eos ends a reply");
            cr_expect_eq(stops[0], 257);
        }
        token_list_free(&l);
        tokenizer_free(&t);
    }
    cJSON_Delete(root);
}

Test(tokenizer_json, refusals_name_the_field)
{
    struct {
        const char *key, *value, *config, *want;
    } cases[] = {
        {"model", "{\"type\": \"WordPiece\", \"vocab\": {}}", NULL, "model 'WordPiece'"},
        {"model.unk_token", "\"<unk>\"", NULL, "model.unk_token"},
        {"model.byte_fallback", "true", NULL, "model.byte_fallback"},
        {"model.continuing_subword_prefix", "\"##\"", NULL, "model.continuing_subword_prefix"},
        {"model.merges", "[\"a\"]", NULL, "model.merges[0]"},
        {"model.merges", "[\"a q\"]", NULL,
         "t/tokenizer.json: model.merges[0] joins a pair whose join is no token"},
        {"model.merges", "{}", NULL, "model.merges must be a list"},
        {"model.vocab", "{\"a\": -1}", NULL, "model.vocab[\"a\"]"},
        {"model.vocab", "{\"\\u20ac\": 5}", NULL, "is not byte-level"},
        {"normalizer", "{\"type\": \"NFC\"}", NULL, "normalizer 'NFC'"},
        {"pre_tokenizer", "{\"type\": \"Metaspace\"}", NULL, "pre-tokenizer 'Metaspace'"},
        {"pre_tokenizer", "{\"type\": \"Split\", \"pattern\": {\"Regex\": \"a\"}, \"behavior\": \"Removed\"}",
         NULL, "behavior 'Removed'"},
        {"pre_tokenizer",
         "{\"type\": \"Split\", \"pattern\": {\"Regex\": \"a\"}, \"behavior\": \"Isolated\", "
         "\"invert\": true}",
         NULL, "inverted"},
        {"pre_tokenizer",
         "{\"type\": \"Split\", \"pattern\": {\"Regex\": \"\\\\h+\"}, \"behavior\": \"Isolated\"}", NULL,
         "pre_tokenizer: '\\h'"},
        {"pre_tokenizer",
         "{\"type\": \"Split\", \"pattern\": {\"Regex\": \"(a\"}, \"behavior\": \"Isolated\"}", NULL,
         "does not compile"},
        {"pre_tokenizer", "{\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Digits\"}]}", NULL,
         "pre_tokenizer.pretokenizers[0]: pre-tokenizer 'Digits'"},
        {"pre_tokenizer", "{\"type\": \"ByteLevel\", \"add_prefix_space\": true}", NULL, "add_prefix_space"},
        {"decoder", "{\"type\": \"Metaspace\"}", NULL, "decoder 'Metaspace'"},
        {"added_tokens", "[{\"id\": 300, \"content\": \"<x>\", \"lstrip\": true}]", NULL, "lstrip"},
        {"added_tokens", "[{\"id\": 300}]", NULL, "added_tokens[0]"},
        {"added_tokens", "[{\"id\": 300, \"content\": \"<x>\"}, {\"id\": 300, \"content\": \"<z>\"}]", NULL,
         "appears twice"},
        {"added_tokens", "[]", "{\"bos_token\": \"<s>\"}", "t/tokenizer_config.json: bos_token '<s>' is not one of the special tokens"},
        {"added_tokens", "[]", "{\"add_bos_token\": true}", "no bos_token"},
        {"added_tokens", "[]", "[1]", "t/tokenizer_config.json: not a JSON object"},
        /* a stray id far past the others would make millions of reserved names */
        {"added_tokens", "[{\"id\": 16000000, \"content\": \"<x>\"}]", NULL,
         "t/tokenizer.json: token id 16000000 leaves 15999744 ids below it unnamed"},
        {"model.vocab", "{\"a\": 0, \"b\": 9000000}", NULL, "token id 9000000 leaves"},
        {"added_tokens", "[{\"id\": 262401, \"content\": \"<x>\"}]", NULL, "token id 262401 leaves 262145 ids"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        cJSON *root = hf_tokenizer_file(NULL, 0, NULL, 0), *at = root;
        char key[64];
        snprintf(key, sizeof key, "%s", cases[i].key);
        char *dot = strchr(key, '.');
        if (dot) {
            *dot = 0;
            at = cJSON_GetObjectItemCaseSensitive(root, key);
        }
        set_json(at, dot ? dot + 1 : key, cases[i].value);
        tokenizer t;
        errbuf e;
        cr_expect_neq(load(&t, root, cases[i].config, 0, &e), 0, "case %zu accepted", i);
        cr_expect(strstr(e.msg, cases[i].want) != NULL, "case %zu: '%s' lacks '%s'", i, e.msg, cases[i].want);
        cr_expect(strstr(e.msg, "t/tokenizer") != NULL, "case %zu names no file: %s", i, e.msg);
        cJSON_Delete(root);
    }
    /* as many unnamed ids as the bound, or as the file names, are reserved ids */
    static const char *const fine[] = {"[{\"id\": 262400, \"content\": \"<x>\"}]", NULL};
    for (int k = 0; fine[k]; k++) {
        cJSON *root = hf_tokenizer_file(NULL, 0, NULL, 0);
        set_json(root, "added_tokens", fine[k]);
        tokenizer t;
        load_ok(&t, root, NULL, 0);
        cr_expect_eq(t.v.n_vocab, 262401);
        cr_expect_str_eq(vocab_decode(&t.v, 262399, NULL), "<|reserved_token_262399|>");
        tokenizer_free(&t);
        cJSON_Delete(root);
    }
    tokenizer t;
    errbuf e;
    cr_expect_neq(tokenizer_json_parse(&t, "[1", 2, "t/tokenizer.json", NULL, 0, NULL, 0, &e), 0);
    cr_expect(strstr(e.msg, "t/tokenizer.json: not valid JSON") != NULL, "%s", e.msg);
}

Test(tokenizer_json, patterns_read_as_oniguruma_reads_them)
{
    char out[512];
    errbuf e;
    cr_assert_eq(tokenizer_json_pattern("\\s+(?!\\S)|[^\\s\\p{L}]+|[]a]|\\\\s", out, sizeof out, &e), 0, "%s",
                 e.msg);
    cr_expect_str_eq(out, "[" TOKENIZER_WHITE_SPACE "]+(?![^" TOKENIZER_WHITE_SPACE
                          "])|[^" TOKENIZER_WHITE_SPACE "\\p{L}]+|[]a]|\\\\s");
    cr_expect_neq(tokenizer_json_pattern("[\\S]", out, sizeof out, &e), 0);
    cr_expect_neq(tokenizer_json_pattern("\\H", out, sizeof out, &e), 0);
    cr_expect_neq(tokenizer_json_pattern("[[:alpha:]]", out, sizeof out, &e), 0);
    /* nested classes and intersections, which PCRE2 would read as literals */
    cr_expect_neq(tokenizer_json_pattern("[[0-9]x]+", out, sizeof out, &e), 0);
    cr_expect(strstr(e.msg, "class inside a class"), "%s", e.msg);
    cr_expect_neq(tokenizer_json_pattern("[a-z&&[^aeiou]]+", out, sizeof out, &e), 0);
    cr_expect(strstr(e.msg, "intersection"), "%s", e.msg);
    cr_expect_eq(tokenizer_json_pattern("[\\[&a]&&", out, sizeof out, &e), 0, "%s", e.msg);
    cr_expect_str_eq(out, "[\\[&a]&&");
    cr_expect_neq(tokenizer_json_pattern("\\s\\s\\s\\s", out, 40, &e), 0, "too long for the buffer");
}
