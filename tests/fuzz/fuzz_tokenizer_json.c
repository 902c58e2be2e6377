/* Fuzz target: the tokenizer.json reader (tokenizer_json.h) on arbitrary
 * bytes. Input = tokenizer.json, a NUL byte, tokenizer_config.json (no NUL:
 * the first file only). Whatever loads must then encode a text with its
 * added tokens and decode what it made. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/text/tokenizer_json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *nul = memchr(data, 0, size);
    size_t jl = nul ? (size_t)(nul - data) : size;
    tokenizer t;
    errbuf e;
    if (tokenizer_json_parse(&t, (const char *)data, jl, "fuzz/tokenizer.json",
                             nul ? (const char *)nul + 1 : NULL, nul ? size - jl - 1 : 0,
                             "fuzz/tokenizer_config.json", 0, &e))
        return 0;
    static const char text[] = "Hello <s> wörld 12345\n\t  ab<|x|>中文 ";
    token_list l = {0};
    if (tokenizer_encode_prompt(&t, text, sizeof text - 1, TOK_ALLOW_SPECIAL, &l, &e) == 0) {
        char *back;
        size_t n;
        if (vocab_decode_ids(&t.v, l.ids, (int)l.n, &back, &n, &e) == 0)
            free(back);
    }
    token_list_free(&l);
    tokenizer_free(&t);
    return 0;
}
