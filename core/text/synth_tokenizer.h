/* synth_tokenizer: the tokenizer files of a synthetic (random-weight) model.
 *
 * `moetier synth` writes a checkpoint that must be runnable end to end, so it
 * also writes a small but real tokenizer in Kimi's format: `tiktoken.model`
 * (lines "<base64 of the token bytes> <rank>") and `tokenizer_config.json`
 * (added_tokens_decoder, bos_token, eos_token, ...). The regular vocabulary is
 * byte-level BPE: ranks 0..255 are the single bytes 0..255 in byte order, then
 * merges trained at synth time on a built-in English corpus (pre-split on
 * spaces, a word keeps its leading space, so merges never cross words) until
 * no pair occurs twice or the regular range is full. Training is
 * deterministic, so the same config always gives the same files.
 *
 * Special tokens sit above the regular range, as in Kimi K2: [BOS] at
 * bos_token_id and [EOS] at eos_token_id (Kimi: 163584, 163585), then
 * <|im_end|>, <|im_user|>, <|im_assistant|>, <|im_system|>, the tool-call
 * markers (<|tool_calls_section_begin|>, <|tool_calls_section_end|>,
 * <|tool_call_begin|>, <|tool_call_argument_begin|>, <|tool_call_end|>) and
 * <|im_middle|> at Kimi's offsets from the lower of the two (+2, +3, +4, +10,
 * +11 to +15, +17), [UNK] and
 * [PAD] at the two highest ids, then the reasoning tags <think> and </think>
 * (+22, +23; added tokens that Hugging Face does not call special, as in
 * Kimi's file); a slot that is taken or out of range moves to
 * the next free id. Every other id from the end of the regular vocabulary up to
 * vocab_size is "<|reserved_token_N|>" (N = the id), which the loader
 * (core/text/vocab.h) derives the way Kimi's tokenizer does, so those ids are
 * not listed in the file. */
#ifndef MOETIER_SYNTH_TOKENIZER_H
#define MOETIER_SYNTH_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "core/base/errbuf.h"

#define SYNTH_TOK_MAX_NAMED 16

typedef struct synth_special {
    int id;
    const char *content;        /* static string */
} synth_special;

typedef struct synth_tokenizer {
    int vocab_size;
    int n_regular;              /* ranks 0..n_regular-1 */
    int first_special;          /* regular ranks are < first_special */
    uint8_t *bytes;             /* token bytes, back to back */
    uint32_t *offset;           /* [n_regular + 1] into bytes */
    synth_special named[SYNTH_TOK_MAX_NAMED];
    int n_named;
    int bos_id, eos_id;
} synth_tokenizer;

/* Trains the regular vocabulary and places the special tokens. bos_id/eos_id
 * may be -1 (then placed like the other named tokens); given ids must lie in
 * 256..vocab_size-1 and differ. */
int synth_tokenizer_build(synth_tokenizer *t, int vocab_size, int bos_id, int eos_id, errbuf *e);
/* Writes dir/tiktoken.model and dir/tokenizer_config.json (atomically). */
int synth_tokenizer_save(const synth_tokenizer *t, const char *dir, errbuf *e);
void synth_tokenizer_free(synth_tokenizer *t);

/* Build + save + free. */
int synth_tokenizer_write(const char *dir, int vocab_size, int bos_id, int eos_id, errbuf *e);

/* The built-in training text (plain ASCII English). */
const char *synth_tokenizer_corpus(void);

#endif
