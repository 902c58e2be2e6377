/* Fuzz target: encoding arbitrary bytes with a small byte-level BPE built in
 * memory (256 byte tokens, merges, special names). Property checked: valid UTF-8
 * is accepted and decodes back to exactly the input, with and without special
 * tokens and slicing; anything else is refused with an error, never a crash. */
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/text/tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void b64(const uint8_t *in, size_t n, char *out)
{
    static const char tb[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < n ? (uint32_t)in[i + 1] << 8 : 0) |
                     (i + 2 < n ? in[i + 2] : 0);
        out[o++] = tb[v >> 18];
        out[o++] = tb[(v >> 12) & 63];
        out[o++] = i + 1 < n ? tb[(v >> 6) & 63] : '=';
        out[o++] = i + 2 < n ? tb[v & 63] : '=';
    }
    out[o] = 0;
}

static tokenizer *fuzz_tokenizer(void)
{
    static tokenizer t;
    static int ready;
    if (ready)
        return &t;
    static const char *merges[] = {"th", "he", "the", " t", " the", "in", "ing", "er", "an",
                                   " a", "on", "es", "  ", "    ", "\xe4\xb8", "\xe4\xb8\xad",
                                   "ll", "hello", "wor", "world", "==", "===="};
    size_t nm = sizeof merges / sizeof *merges;
    char *ranks = malloc(64 * (256 + nm)), line[64];
    size_t n = 0;
    for (int b = 0; b < 256; b++) {
        uint8_t byte = (uint8_t)b;
        b64(&byte, 1, line);
        n += (size_t)sprintf(ranks + n, "%s %d\n", line, b);
    }
    for (size_t i = 0; i < nm; i++) {
        b64((const uint8_t *)merges[i], strlen(merges[i]), line);
        n += (size_t)sprintf(ranks + n, "%s %zu\n", line, 256 + i);
    }
    const char *config = "{\"added_tokens_decoder\": {\"300\": {\"content\": \"<|im_end|>\"},"
                         "\"301\": {\"content\": \"[BOS]\"}, \"302\": {\"content\": \"<think>\"}},"
                         "\"bos_token\": \"[BOS]\"}";
    vocab v;
    errbuf e;
    if (vocab_parse(&v, ranks, n, "tiktoken.model", config, strlen(config), "config", 304, &e) ||
        tokenizer_init(&t, &v, &e)) {
        fprintf(stderr, "fuzz_tokenize: %s\n", e.msg);
        abort();
    }
    free(ranks);
    ready = 1;
    return &t;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    tokenizer *t = fuzz_tokenizer();
    int valid = utf8_validate(data, size) == size;
    for (int flags = 0; flags < 4; flags++) {
        token_list l = {0};
        errbuf e;
        int rc = tokenizer_encode(t, (const char *)data, size, flags, &l, &e);
        if (rc != 0 ? valid : !valid)
            abort();        /* valid UTF-8 must encode, invalid must be refused */
        if (rc == 0) {
            char *dec;
            size_t dn;
            if (vocab_decode_ids(&t->v, l.ids, (int)l.n, &dec, &dn, &e) || dn != size ||
                memcmp(dec, data, size) != 0)
                abort();    /* lossless round trip */
            free(dec);
        }
        token_list_free(&l);
    }
    return 0;
}
