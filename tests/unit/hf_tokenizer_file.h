/* hf_tokenizer_file: small Hugging Face tokenizer.json files for tests
 * (byte-level BPE, as the DeepSeek-V3 family's). */
#ifndef MOETIER_TEST_HF_TOKENIZER_FILE_H
#define MOETIER_TEST_HF_TOKENIZER_FILE_H

#include <cJSON.h>
#include <stddef.h>

/* bytes as byte-level text (GPT-2's bytes_to_unicode, UTF-8) into out
 * (room for 2 n + 1 bytes) */
void hf_byte_level(const char *bytes, size_t n, char *out);
/* A tokenizer.json: the 256 bytes (ids 0-255), then extra tokens (ids 256
 * on), and the merges ("a|b": two tokens' raw bytes), no pre-tokenizer and
 * no added tokens. */
cJSON *hf_tokenizer_file(const char *const *extra, int n_extra, const char *const *merges, int n_merges);

#endif
