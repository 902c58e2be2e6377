/* tokenizer_json: a Hugging Face tokenizer.json read into a tokenizer
 * (tokenizer.h): the byte-level BPE of the DeepSeek-V3 family (DeepSeek-V3,
 * -R1, -V3.1), as the tokenizers library encodes it.
 *
 * Read: model (BPE: vocab, merges as "a b" strings or [a, b] pairs,
 * ignore_merges), added_tokens (each a special token of the vocab: matched in
 * text when specials are allowed, never made by BPE, shown in answers only
 * when asked, as Kimi's added tokens are), normalizer (none, or an empty
 * Sequence), pre_tokenizer (Split by a Regex or String with behavior
 * Isolated, ByteLevel without add_prefix_space, a Sequence of those), decoder
 * (ByteLevel, or none); tokenizer_config.json beside it for bos_token,
 * eos_token, pad_token, unk_token and add_bos_token (else a TemplateProcessing
 * post_processor that starts with a special token: that token starts a raw
 * prompt). Ids up to the model's vocab_size that the file names not are
 * reserved specials ("<|reserved_token_N|>").
 *
 * Refused, naming the field, rather than encoded otherwise than the file says:
 * any other model, normalizer, pre-tokenizer or decoder type; BPE with an
 * unk_token, byte_fallback, dropout, a continuing-subword prefix or an
 * end-of-word suffix; added tokens that strip whitespace or match single
 * words; a regular token that is not byte-level text; merges that do not join
 * two tokens into a third.
 *
 * Patterns are Oniguruma's (tokenizers' engine) run by PCRE2 with Unicode
 * properties: \s and \S become the Unicode White_Space set spelled out (as
 * the Kimi pattern has it; PCRE2's own \s differs at U+180E), \h and \H,
 * which differ between the two, are refused. */
#ifndef MOETIER_TOKENIZER_JSON_H
#define MOETIER_TOKENIZER_JSON_H

#include <stddef.h>

#include "core/base/errbuf.h"
#include "tokenizer.h"

/* dir/tokenizer.json, with dir/tokenizer_config.json when present and the
 * vocab_size of dir/config.json. */
int tokenizer_json_load(tokenizer *t, const char *dir, errbuf *e);
/* The same from memory (the fuzz entry point): config may be NULL; names are
 * for messages; min_vocab as vocab_load_files'. */
int tokenizer_json_parse(tokenizer *t, const char *json, size_t len, const char *name, const char *config,
                         size_t config_len, const char *config_name, int min_vocab, errbuf *e);
/* pattern (Oniguruma's syntax) as PCRE2 in out (cap bytes): 0, or -1 with e
 * set when it holds what is refused or does not fit. */
int tokenizer_json_pattern(const char *pattern, char *out, size_t cap, errbuf *e);

#endif
