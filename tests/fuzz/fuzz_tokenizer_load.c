/* Fuzz target: the tokenizer loader (tiktoken.model ranks + tokenizer_config.json)
 * on arbitrary bytes. Input = ranks text, a NUL byte, config JSON (no NUL: ranks
 * only). Whatever loads must then encode and decode its own tokens. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/text/tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *nul = memchr(data, 0, size);
    size_t rl = nul ? (size_t)(nul - data) : size;
    vocab v;
    errbuf e;
    if (vocab_parse(&v, (const char *)data, rl, "fuzz/tiktoken.model", nul ? (const char *)nul + 1 : NULL,
                    nul ? size - rl - 1 : 0, "fuzz/tokenizer_config.json", 0, &e))
        return 0;
    tokenizer t;
    if (tokenizer_init(&t, &v, &e))
        return 0;
    token_list l = {0};
    tokenizer_encode(&t, "hello <|im_end|> world", 22, TOK_ALLOW_SPECIAL, &l, &e);
    token_list_free(&l);
    tokenizer_free(&t);
    return 0;
}
