/* test_vocab: the synthetic tokenizer and the token table / stream decoder.
 *
 * The synthetic tokenizer must load back id for id; the stream decoder must
 * never emit part of a UTF-8 sequence and must replace what cannot complete;
 * a malformed tiktoken.model must be reported with its line number; and the
 * real Kimi K2 tokenizer in the testdata must load with the ids and strings
 * its README and fixtures give (decode_cases.jsonl, vocab_checks.json). */
#include <criterion/criterion.h>
#include <cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/base/fileutil.h"
#include "core/text/synth_tokenizer.h"
#include "core/text/vocab.h"
#include "testutil.h"

static char *tmp_root;

static void setup(void)
{
    tmp_root = test_make_tmpdir("vocab");
    cr_assert_not_null(tmp_root, "cannot create a temporary directory");
}

static void teardown(void)
{
    if (tmp_root)
        test_remove_tree(tmp_root);
    free(tmp_root);
    tmp_root = NULL;
}

TestSuite(vocab, .init = setup, .fini = teardown);

static void write_file(const char *name, const char *text)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", tmp_root, name);
    errbuf e = {{0}};
    cr_assert_eq(file_write_atomic(path, text, strlen(text), &e), 0, "%s", e.msg);
}

static void load_tiny(vocab *v, synth_tokenizer *t)
{
    errbuf e = {{0}};
    cr_assert_eq(synth_tokenizer_build(t, 1024, 1000, 1001, &e), 0, "%s", e.msg);
    cr_assert_eq(synth_tokenizer_save(t, tmp_root, &e), 0, "%s", e.msg);
    cr_assert_eq(vocab_load(v, tmp_root, &e), 0, "%s", e.msg);
}

/* Whether s[0..n) is well-formed UTF-8 (Unicode Table 3-7). */
static int utf8_valid(const unsigned char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        unsigned char c = s[i];
        size_t len;
        unsigned char lo = 0x80, hi = 0xBF;
        if (c < 0x80) {
            i++;
            continue;
        } else if (c >= 0xC2 && c <= 0xDF) {
            len = 2;
        } else if (c >= 0xE0 && c <= 0xEF) {
            len = 3;
            lo = c == 0xE0 ? 0xA0 : 0x80;
            hi = c == 0xED ? 0x9F : 0xBF;
        } else if (c >= 0xF0 && c <= 0xF4) {
            len = 4;
            lo = c == 0xF0 ? 0x90 : 0x80;
            hi = c == 0xF4 ? 0x8F : 0xBF;
        } else {
            return 0;
        }
        if (i + len > n || s[i + 1] < lo || s[i + 1] > hi)
            return 0;
        for (size_t k = 2; k < len; k++)
            if (s[i + k] < 0x80 || s[i + k] > 0xBF)
                return 0;
        i += len;
    }
    return 1;
}

/* Stream-decodes ids into a malloc'd buffer (checking that every step emits
 * valid UTF-8 only); returns its length. */
static size_t stream_all(const vocab *v, const int *ids, int n, char **out)
{
    size_t cap = vocab_stream_bound(v) * ((size_t)n + 1) + 4, len = 0;
    char *buf = malloc(cap);
    vocab_stream s;
    vocab_stream_init(&s, v);
    for (int i = 0; i < n; i++) {
        size_t k;
        cr_assert_eq(vocab_stream_decode(&s, ids[i], buf + len, cap - len, &k), 0, "id %d", ids[i]);
        cr_assert(utf8_valid((unsigned char *)buf + len, k), "step %d emitted invalid UTF-8", i);
        len += k;
    }
    size_t k;
    cr_assert_eq(vocab_stream_finish(&s, buf + len, cap - len, &k), 0);
    len += k;
    buf[len] = 0;
    *out = buf;
    return len;
}

/* ---- synthetic tokenizer ------------------------------------------------ */

Test(vocab, synth_tokenizer_roundtrips)
{
    synth_tokenizer t;
    vocab v;
    load_tiny(&v, &t);
    cr_assert_eq(v.n_vocab, 1024);
    cr_assert_eq(v.n_ranks, t.n_regular);
    cr_assert_eq(t.n_regular, 1000, "the built-in corpus should fill the tiny vocabulary");
    for (int id = 0; id < t.n_regular; id++) {
        size_t n;
        const char *b = vocab_decode(&v, id, &n);
        cr_assert_not_null(b);
        cr_assert_eq(n, t.offset[id + 1] - t.offset[id], "id %d", id);
        cr_assert_eq(memcmp(b, t.bytes + t.offset[id], n), 0, "id %d", id);
        cr_assert(!vocab_is_special(&v, id));
        if (id < 256)
            cr_assert(n == 1 && (unsigned char)b[0] == id, "rank %d must be byte %d", id, id);
        else
            cr_assert_geq(n, 2);
        /* merges never cross words: a space may only lead a token */
        if (n > 1)
            cr_assert(!memchr(b + 1, ' ', n - 1), "token %d '%.*s' crosses a word", id, (int)n, b);
    }
    /* regular tokens are unique */
    for (int a = 256; a < t.n_regular; a++)
        for (int b = a + 1; b < t.n_regular; b++) {
            size_t la = t.offset[a + 1] - t.offset[a], lb = t.offset[b + 1] - t.offset[b];
            cr_assert(la != lb || memcmp(t.bytes + t.offset[a], t.bytes + t.offset[b], la),
                      "ids %d and %d are the same bytes", a, b);
        }
    cr_assert_eq(v.bos_id, 1000);
    cr_assert_eq(v.eos_id, 1001);
    cr_assert_str_eq(vocab_decode(&v, 1000, NULL), "[BOS]");
    cr_assert_str_eq(vocab_decode(&v, 1001, NULL), "[EOS]");
    cr_assert_eq(vocab_find_special(&v, "<|im_end|>"), 1002);
    cr_assert_eq(vocab_find_special(&v, "<|im_user|>"), 1003);
    cr_assert_eq(vocab_find_special(&v, "<|im_assistant|>"), 1004);
    cr_assert_eq(vocab_find_special(&v, "<|im_system|>"), 1010);
    cr_assert_eq(vocab_find_special(&v, "<|im_middle|>"), 1017);
    cr_assert_eq(vocab_find_special(&v, "[UNK]"), 1022);
    cr_assert_eq(vocab_find_special(&v, "[PAD]"), 1023);
    /* Kimi's reasoning tags: added tokens at the first free ids, not special to Hugging Face */
    cr_assert_eq(vocab_find_special(&v, "<think>"), 1005);
    cr_assert_eq(vocab_find_special(&v, "</think>"), 1006);
    cr_assert_eq(v.flags[1005] & VOCAB_F_HF_SPECIAL, 0);
    cr_assert_neq(v.flags[1002] & VOCAB_F_HF_SPECIAL, 0);
    cr_assert_str_eq(vocab_decode(&v, 1007, NULL), "<|reserved_token_1007|>");
    cr_assert_eq(vocab_find_special(&v, "<|reserved_token_1007|>"), 1007);
    cr_assert_eq(vocab_find_special(&v, "<|reserved_token_1002|>"), -1, "1002 is named");
    cr_assert_eq(vocab_find_special(&v, "<|nope|>"), -1);
    cr_assert(vocab_is_special(&v, 1000));
    cr_assert(vocab_is_special(&v, 1023));
    cr_assert_null(vocab_decode(&v, 1024, NULL));
    cr_assert_null(vocab_decode(&v, -1, NULL));
    /* a sentence of the corpus decodes through the multi-byte tokens */
    int ids[3];
    int k = 0;
    for (int id = 256; id < t.n_regular && k < 3; id++) {
        size_t n;
        if (vocab_decode(&v, id, &n) && n > 3)
            ids[k++] = id;
    }
    char *raw, *streamed;
    size_t rn;
    errbuf e = {{0}};
    cr_assert_eq(vocab_decode_ids(&v, ids, 3, &raw, &rn, &e), 0, "%s", e.msg);
    size_t sn = stream_all(&v, ids, 3, &streamed);
    cr_assert_eq(sn, rn);
    cr_assert_eq(memcmp(raw, streamed, rn), 0);
    free(raw);
    free(streamed);
    vocab_free(&v);
    synth_tokenizer_free(&t);
}

Test(vocab, synth_tokenizer_kimi_ids)
{
    synth_tokenizer t;
    errbuf e = {{0}};
    cr_assert_eq(synth_tokenizer_build(&t, 163840, 163584, 163585, &e), 0, "%s", e.msg);
    cr_assert_eq(synth_tokenizer_save(&t, tmp_root, &e), 0, "%s", e.msg);
    vocab v;
    cr_assert_eq(vocab_load(&v, tmp_root, &e), 0, "%s", e.msg);
    cr_assert_eq(v.n_vocab, 163840);
    cr_assert_gt(v.n_ranks, 1000);
    cr_assert_lt(v.n_ranks, 163584);
    cr_assert_eq(v.bos_id, 163584);
    cr_assert_eq(v.eos_id, 163585);
    cr_assert_eq(vocab_find_special(&v, "<|im_end|>"), 163586);
    cr_assert_eq(vocab_find_special(&v, "<|im_middle|>"), 163601);
    cr_assert_eq(v.pad_id, 163839);
    cr_assert_eq(v.unk_id, 163838);
    /* ids between the trained tokens and the specials are reserved */
    cr_assert(vocab_is_special(&v, 100000));
    cr_assert_str_eq(vocab_decode(&v, 100000, NULL), "<|reserved_token_100000|>");
    cr_assert_str_eq(vocab_decode(&v, 163600, NULL), "<|reserved_token_163600|>");
    vocab_free(&v);
    synth_tokenizer_free(&t);

    cr_assert_neq(synth_tokenizer_build(&t, 1024, 1000, 1000, &e), 0, "bos == eos accepted");
    cr_assert_neq(synth_tokenizer_build(&t, 1024, 100, 1001, &e), 0, "bos among the bytes");
    cr_assert(strstr(e.msg, "bos_token_id"), "%s", e.msg);
    cr_assert_neq(synth_tokenizer_build(&t, 1024, 1000, 2000, &e), 0, "eos outside the vocab");
}

/* ---- stream decoder ----------------------------------------------------- */

/* One step of the stream, by byte-valued ids of the tiny synthetic vocab. */
static size_t step(vocab_stream *s, int id, char *out)
{
    size_t n;
    cr_assert_eq(vocab_stream_decode(s, id, out, 4096, &n), 0);
    out[n] = 0;
    return n;
}

Test(vocab, stream_never_splits_utf8)
{
    synth_tokenizer t;
    vocab v;
    load_tiny(&v, &t);
    vocab_stream s;
    vocab_stream_init(&s, &v);
    char out[4096];
    /* U+1F600 = F0 9F 98 80, one byte per token */
    cr_assert_eq(step(&s, 'A', out), 1);
    cr_assert_eq(step(&s, 0xF0, out), 0);
    cr_assert_eq(step(&s, 0x9F, out), 0);
    cr_assert_eq(step(&s, 0x98, out), 0);
    cr_assert_eq(step(&s, 0x80, out), 4);
    cr_assert_str_eq(out, "\xF0\x9F\x98\x80");
    /* é split, then an ASCII token */
    cr_assert_eq(step(&s, 0xC3, out), 0);
    cr_assert_eq(step(&s, 0xA9, out), 2);
    cr_assert_str_eq(out, "\xC3\xA9");
    /* a lead byte followed by something that cannot continue it: U+FFFD, then
     * the byte itself */
    cr_assert_eq(step(&s, 0xE2, out), 0);
    cr_assert_eq(step(&s, 0x82, out), 0);
    cr_assert_eq(step(&s, 'x', out), 4);
    cr_assert_str_eq(out, "\xEF\xBF\xBDx");
    /* bytes that can never start a sequence are replaced at once */
    cr_assert_eq(step(&s, 0x80, out), 3);
    cr_assert_eq(step(&s, 0xFF, out), 3);
    cr_assert_eq(step(&s, 0xC0, out), 3);
    /* E0 80: overlong, so E0 is replaced when 80 arrives, and 80 too */
    cr_assert_eq(step(&s, 0xE0, out), 0);
    cr_assert_eq(step(&s, 0x80, out), 6);
    cr_assert_str_eq(out, "\xEF\xBF\xBD\xEF\xBF\xBD");
    /* ED A0 (a surrogate) and F4 90 (above U+10FFFF) are invalid too */
    cr_assert_eq(step(&s, 0xED, out), 0);
    cr_assert_eq(step(&s, 0xA0, out), 6);
    cr_assert_eq(step(&s, 0xF4, out), 0);
    cr_assert_eq(step(&s, 0x90, out), 6);
    /* a special token after a held-back prefix */
    cr_assert_eq(step(&s, 0xF0, out), 0);
    cr_assert_eq(step(&s, 1002, out), 3 + strlen("<|im_end|>"));
    cr_assert_str_eq(out, "\xEF\xBF\xBD<|im_end|>");
    /* an unfinished sequence at the end becomes one U+FFFD */
    cr_assert_eq(step(&s, 0xF0, out), 0);
    cr_assert_eq(step(&s, 0x9F, out), 0);
    size_t n;
    cr_assert_eq(vocab_stream_finish(&s, out, sizeof out, &n), 0);
    cr_assert_eq(n, 3);
    cr_assert_eq(vocab_stream_finish(&s, out, sizeof out, &n), 0);
    cr_assert_eq(n, 0);
    /* out-of-range ids change nothing */
    cr_assert_eq(step(&s, 0xC3, out), 0);
    cr_assert_neq(vocab_stream_decode(&s, 5000, out, sizeof out, &n), 0);
    cr_assert_neq(vocab_stream_decode(&s, 'a', out, 2, &n), 0, "too small a buffer accepted");
    cr_assert_eq(step(&s, 0xA9, out), 2);

    /* the FILE form prints the same */
    char *mem = NULL;
    size_t mlen = 0;
    FILE *f = open_memstream(&mem, &mlen);
    vocab_stream_init(&s, &v);
    const int ids[] = {'h', 0xF0, 0x9F, 0x98, 0x80, 'i', 0xC3};
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++)
        cr_assert_eq(vocab_stream_put(&s, ids[i], f), 0);
    cr_assert_neq(vocab_stream_put(&s, 1 << 20, f), 0);
    vocab_stream_flush(&s, f);
    fclose(f);
    cr_assert_eq(mlen, 1 + 4 + 1 + 3);
    cr_assert_eq(memcmp(mem, "h\xF0\x9F\x98\x80i\xEF\xBF\xBD", mlen), 0);
    free(mem);
    vocab_free(&v);
    synth_tokenizer_free(&t);
}

/* ---- malformed files ---------------------------------------------------- */

static void expect_bad_ranks(const char *content, const char *want1, const char *want2)
{
    write_file("tiktoken.model", content);
    write_file("tokenizer_config.json", "{\"added_tokens_decoder\": {}}");
    vocab v;
    errbuf e = {{0}};
    cr_assert_neq(vocab_load(&v, tmp_root, &e), 0, "accepted: %s", content);
    cr_assert(strstr(e.msg, "tiktoken.model"), "message should name the file: %s", e.msg);
    cr_assert(strstr(e.msg, want1), "message should say '%s': %s", want1, e.msg);
    if (want2)
        cr_assert(strstr(e.msg, want2), "message should say '%s': %s", want2, e.msg);
}

Test(vocab, malformed_tiktoken_lines)
{
    expect_bad_ranks("IQ== 0\nIg== 1\n!!!! 2\n", "line 3", "base64");
    expect_bad_ranks("IQ== 0\nIg==1\n", "line 2", NULL);
    expect_bad_ranks("IQ== 0\nIg== x1\n", "line 2", "rank");
    expect_bad_ranks("IQ== 0\nIg== 0\n", "line 2", "line 1");          /* duplicate rank */
    expect_bad_ranks("IQ== 0\nIg== 5\n", "line 2", "gaps");
    expect_bad_ranks("IQ== 16777216\n", "line 1", "2^24");
    expect_bad_ranks("IQ= 0\n", "line 1", "base64");                   /* bad length */
    expect_bad_ranks("IR== 0\n", "line 1", "base64");                  /* non-canonical */
    expect_bad_ranks("IQ== 0\n\nI=Q= 1\n", "line 3", "base64");        /* blank lines count */
    expect_bad_ranks("", "no tokens", NULL);

    /* a good file with a bad config */
    write_file("tiktoken.model", "IQ== 0\r\nIg== 1\r\n");
    vocab v;
    errbuf e = {{0}};
    write_file("tokenizer_config.json", "{\"added_tokens_decoder\": {\"x2\": {\"content\": \"[A]\"}}}");
    cr_assert_neq(vocab_load(&v, tmp_root, &e), 0);
    cr_assert(strstr(e.msg, "tokenizer_config.json") && strstr(e.msg, "x2"), "%s", e.msg);
    write_file("tokenizer_config.json", "{\"added_tokens_decoder\": {\"1\": {\"content\": \"[A]\"}}}");
    cr_assert_neq(vocab_load(&v, tmp_root, &e), 0, "an added token over a regular id");
    cr_assert(strstr(e.msg, "collides"), "%s", e.msg);
    write_file("tokenizer_config.json", "{\"added_tokens_decoder\": {\"3\": {\"content\": \"[A]\"}},"
               " \"bos_token\": \"[B]\"}");
    cr_assert_neq(vocab_load(&v, tmp_root, &e), 0, "an unknown bos_token");
    cr_assert(strstr(e.msg, "[B]"), "%s", e.msg);
    write_file("tokenizer_config.json", "{\"added_tokens_decoder\": {\"3\": {\"content\": \"[A]\"}},"
               " \"bos_token\": {\"content\": \"[A]\"}}");
    cr_assert_eq(vocab_load(&v, tmp_root, &e), 0, "%s", e.msg);       /* CRLF lines are fine */
    cr_assert_eq(v.n_vocab, 4);
    cr_assert_eq(v.bos_id, 3);
    cr_assert_str_eq(vocab_decode(&v, 2, NULL), "<|reserved_token_2|>");
    cr_assert_str_eq(vocab_decode(&v, 1, NULL), "\"");
    vocab_free(&v);
    /* a reserved name is one by its number: 2^32 + 2 is not id 2 (it was read
     * as 2 and then looked up 4 billion entries on) */
    write_file("tokenizer_config.json", "{\"added_tokens_decoder\": {\"3\": {\"content\": \"[A]\"}},"
               " \"bos_token\": \"<|reserved_token_2|>\"}");
    cr_assert_eq(vocab_load(&v, tmp_root, &e), 0, "%s", e.msg);
    cr_assert_eq(v.bos_id, 2);
    vocab_free(&v);
    const char *not_reserved[] = {"<|reserved_token_4294967298|>", "<|reserved_token_02|>",
                                  "<|reserved_token_|>", "<|reserved_token_-2|>"};
    for (size_t i = 0; i < sizeof not_reserved / sizeof *not_reserved; i++) {
        char cfg[160];
        snprintf(cfg, sizeof cfg, "{\"added_tokens_decoder\": {\"3\": {\"content\": \"[A]\"}}, \"bos_token\": \"%s\"}",
                 not_reserved[i]);
        write_file("tokenizer_config.json", cfg);
        cr_assert_neq(vocab_load(&v, tmp_root, &e), 0, "%s taken for a token", not_reserved[i]);
        cr_assert(strstr(e.msg, not_reserved[i]), "%s", e.msg);
    }
    write_file("tokenizer_config.json", "{\"added_tokens_decoder\": {\"3\": {\"content\": \"[A]\"},"
               " \"3\": {\"content\": \"[B]\"}}}");
    cr_assert_neq(vocab_load(&v, tmp_root, &e), 0, "an id named twice");
    cr_assert(strstr(e.msg, "twice"), "%s", e.msg);
    /* an added id far past the others would make millions of reserved names */
    write_file("tokenizer_config.json", "{\"added_tokens_decoder\": {\"16000000\": {\"content\": \"[A]\"}}}");
    cr_assert_neq(vocab_load(&v, tmp_root, &e), 0, "an id near 2^24 after two tokens");
    cr_assert(strstr(e.msg, "tokenizer_config.json: token id 16000000 leaves 15999998 ids below it unnamed"),
              "%s", e.msg);
    write_file("tokenizer_config.json", "{not json");
    cr_assert_neq(vocab_load(&v, tmp_root, &e), 0);
    cr_assert(strstr(e.msg, "tokenizer_config.json"), "%s", e.msg);
}

/* ---- the real Kimi K2 tokenizer ----------------------------------------- */

static int hexval(char c)
{
    return c <= '9' ? c - '0' : (c | 32) - 'a' + 10;
}

static size_t from_hex(const char *h, unsigned char *out)
{
    size_t n = strlen(h) / 2;
    for (size_t i = 0; i < n; i++)
        out[i] = (unsigned char)(hexval(h[2 * i]) << 4 | hexval(h[2 * i + 1]));
    return n;
}

Test(vocab, kimi_tokenizer)
{
    char *dir = test_data_path("kimi-tokenizer");
    char probe[4096];
    snprintf(probe, sizeof probe, "%s/tiktoken.model", dir);
    if (!test_path_exists(probe)) {
        free(dir);
        cr_skip_test("kimi-tokenizer testdata absent");
    }
    vocab v;
    errbuf e = {{0}};
    cr_assert_eq(vocab_load(&v, dir, &e), 0, "%s", e.msg);
    cr_assert_eq(v.n_vocab, 163840);
    cr_assert_eq(v.n_ranks, 163584);
    cr_assert_eq(v.max_token_len, 256);
    cr_assert_eq(v.bos_id, 163584);
    cr_assert_eq(v.eos_id, 163585);
    cr_assert_eq(v.unk_id, 163838);
    cr_assert_eq(v.pad_id, 163839);
    cr_assert_str_eq(vocab_decode(&v, 163584, NULL), "[BOS]");
    cr_assert_str_eq(vocab_decode(&v, 163585, NULL), "[EOS]");
    cr_assert_eq(vocab_find_special(&v, "<|im_end|>"), 163586);
    cr_assert_eq(vocab_find_special(&v, "<|im_user|>"), 163587);
    cr_assert_eq(vocab_find_special(&v, "<|im_assistant|>"), 163588);
    cr_assert_eq(vocab_find_special(&v, "<|im_system|>"), 163594);
    cr_assert_eq(vocab_find_special(&v, "<|im_middle|>"), 163601);
    cr_assert_eq(vocab_find_special(&v, "<think>"), 163606);
    cr_assert_str_eq(vocab_decode(&v, 163589, NULL), "<|reserved_token_163589|>");
    cr_assert(vocab_is_special(&v, 163584));
    cr_assert(!vocab_is_special(&v, 163583));
    cr_assert_eq(vocab_token_flags(&v, 163597), VOCAB_F_SPECIAL | VOCAB_F_NAMED,
                 "tool_call_begin is named with \"special\": false");
    cr_assert_eq(vocab_token_flags(&v, 163586), VOCAB_F_SPECIAL | VOCAB_F_NAMED | VOCAB_F_HF_SPECIAL);
    cr_assert_eq(vocab_token_flags(&v, 163589), VOCAB_F_SPECIAL);

    /* vocab_checks.json: sample ids and the single-byte tokens */
    char path[4096];
    snprintf(path, sizeof path, "%s/vocab_checks.json", dir);
    size_t n;
    char *text = test_read_file(path, &n);
    cr_assert_not_null(text, "%s is missing", path);
    {
        cJSON *j = cJSON_ParseWithLength(text, n);
        free(text);
        cr_assert_not_null(j);
        const cJSON *it;
        int k = 0;
        unsigned char want[1024];
        cJSON_ArrayForEach(it, cJSON_GetObjectItem(j, "samples"))
        {
            int id = cJSON_GetObjectItem(it, "id")->valueint;
            size_t wl = from_hex(cJSON_GetObjectItem(it, "bytes_hex")->valuestring, want), gl;
            const char *got = vocab_decode(&v, id, &gl);
            cr_assert(got && gl == wl && memcmp(got, want, wl) == 0, "sample id %d", id);
            k++;
        }
        cr_assert_eq(k, 400, "vocab_checks.json holds 400 samples");
        int b = 0;
        cJSON_ArrayForEach(it, cJSON_GetObjectItem(j, "single_byte_token_ids_by_byte_value"))
        {
            size_t gl;
            const char *got = vocab_decode(&v, it->valueint, &gl);
            cr_assert(got && gl == 1 && (unsigned char)got[0] == b, "byte %d", b);
            b++;
        }
        cr_assert_eq(b, 256);
        cJSON_ArrayForEach(it, cJSON_GetObjectItem(j, "special_tokens"))
            cr_assert_str_eq(vocab_decode(&v, atoi(it->string), NULL), it->valuestring);
        cJSON_Delete(j);
    }

    /* decode_cases.jsonl: exact bytes, and the stream gives the text */
    snprintf(path, sizeof path, "%s/decode_cases.jsonl", dir);
    text = test_read_file(path, &n);
    cr_assert_not_null(text, "missing %s", path);
    int cases = 0, valid = 0;
    unsigned char *want = malloc(n + 1);
    for (char *line = text, *nl; line && *line; line = nl ? nl + 1 : NULL) {
        nl = strchr(line, '\n');
        if (nl)
            *nl = 0;
        cJSON *c = cJSON_Parse(line);
        cr_assert_not_null(c, "bad fixture line");
        const cJSON *ja = cJSON_GetObjectItem(c, "ids");
        int m = cJSON_GetArraySize(ja);
        int *ids = malloc(((size_t)m + 1) * sizeof *ids);
        for (int i = 0; i < m; i++)
            ids[i] = cJSON_GetArrayItem(ja, i)->valueint;
        size_t wl = from_hex(cJSON_GetObjectItem(c, "bytes_hex")->valuestring, want);
        char *raw, *streamed;
        size_t rl;
        cr_assert_eq(vocab_decode_ids(&v, ids, m, &raw, &rl, &e), 0, "%s", e.msg);
        cr_assert(rl == wl && memcmp(raw, want, wl) == 0, "case %d: bytes differ", cases);
        size_t sl = stream_all(&v, ids, m, &streamed);
        if (cJSON_IsTrue(cJSON_GetObjectItem(c, "utf8_valid"))) {
            const char *txt = cJSON_GetObjectItem(c, "text")->valuestring;
            cr_assert(sl == wl && memcmp(streamed, want, wl) == 0, "case %d: stream gives '%s', "
                      "want '%s'", cases, streamed, txt);
            valid++;
        } else {
            cr_assert(memmem(streamed, sl, "\xEF\xBF\xBD", 3), "case %d: no U+FFFD", cases);
        }
        free(raw);
        free(streamed);
        free(ids);
        cJSON_Delete(c);
        cases++;
    }
    cr_assert_eq(cases, 405, "decode_cases.jsonl holds 405 cases");
    cr_assert_eq(valid, 337, "of which 337 decode to valid UTF-8");
    free(want);
    free(text);
    vocab_free(&v);
    free(dir);
}
