/* vocab: the token table of a byte-level BPE tokenizer, for decoding ids back
 * to text: tiktoken's (Kimi K2 and the synthetic models), loaded here, or a
 * Hugging Face tokenizer.json's (the DeepSeek-V3 family, tokenizer_json.h).
 *
 * Loads `tiktoken.model` (one "<base64 of the token bytes> <rank>" per line; the
 * rank is the token id) and the special tokens of `tokenizer_config.json`
 * ("added_tokens_decoder": {"<id>": {"content": ..., "special": ...}},
 * "bos_token", "eos_token", ...). Every file is validated completely: a bad line
 * is reported with the file name and line number; ranks must be unique,
 * contiguous from 0 and below 2^24.
 *
 * Ids: 0..n_ranks-1 are the regular (BPE) tokens; ids n_ranks..n_vocab-1 are
 * special: those named in added_tokens_decoder decode to their name, every
 * other one is "<|reserved_token_N|>" (N = the id), as Kimi's tokenizer builds
 * them. n_vocab is the largest of n_ranks, the highest named id + 1 and the
 * vocab_size of a config.json in the same directory (if there is one).
 *
 * Decoding: a token's bytes are often part of a UTF-8 character. vocab_decode()
 * gives the raw bytes of one id; the stream decoder (vocab_stream) concatenates
 * tokens and emits only complete UTF-8 sequences, holding back an incomplete
 * tail until the next token completes it; bytes that cannot become valid UTF-8
 * are emitted as U+FFFD (one per maximal invalid subpart, as Python's
 * errors="replace") as soon as that is certain. Encoding is not here. */
#ifndef MOETIER_VOCAB_H
#define MOETIER_VOCAB_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "core/base/errbuf.h"

#define VOCAB_MAX_RANKS (1 << 24)
/* A tokenizer file may leave ids unnamed below its largest (reserved: named
 * "<|reserved_token_N|>"), up to as many as it names or this many (a few
 * names at the end of a vocabulary the size of the largest models', as a
 * synthetic model's tokenizer has them): a stray id near 2^24 in a small
 * file would otherwise make 16 million names (half a gigabyte). */
#define VOCAB_MAX_UNNAMED (1 << 18)

/* Token flags. */
enum {
    VOCAB_F_SPECIAL = 1,        /* not text: an added (or reserved) token, never made by BPE */
    VOCAB_F_NAMED = 2,          /* named by the tokenizer (added_tokens_decoder, added_tokens) */
    VOCAB_F_HF_SPECIAL = 4,     /* added_tokens_decoder says "special": true */
};

typedef struct vocab {
    int n_vocab;                /* ids 0..n_vocab-1 */
    int n_ranks;                /* regular tokens: ids below n_ranks (tiktoken: all of them;
                                 * tokenizer.json: its added tokens may sit among them,
                                 * VOCAB_F_SPECIAL says which) */
    char *arena;                /* every token's bytes, each followed by a NUL */
    size_t arena_len;
    uint32_t *tok_off;          /* [n_vocab] offset into arena */
    uint32_t *tok_len;          /* [n_vocab] bytes (without the NUL) */
    uint8_t *flags;             /* [n_vocab] VOCAB_F_* */
    int *named;                 /* ids named in added_tokens_decoder, ascending */
    int n_named;
    int max_token_len;
    int bos_id, eos_id, pad_id, unk_id;   /* -1 when the config names none */
} vocab;

/* Loads dir/tiktoken.model and dir/tokenizer_config.json (and reads
 * vocab_size from dir/config.json when present). */
int vocab_load(vocab *v, const char *dir, errbuf *e);
/* Same with explicit paths; config_json may be NULL (no special tokens);
 * min_vocab extends n_vocab with reserved ids (0: no minimum). */
int vocab_load_files(vocab *v, const char *tiktoken_path, const char *config_json, int min_vocab,
                     errbuf *e);
/* The same from memory (the fuzz entry point); config may be NULL; the names
 * are only used in messages. */
int vocab_parse(vocab *v, const char *ranks, size_t ranks_len, const char *ranks_name,
                const char *config, size_t config_len, const char *config_name, int min_vocab,
                errbuf *e);
void vocab_free(vocab *v);
/* Sets bos_id, eos_id, pad_id and unk_id from a tokenizer_config.json's
 * bos_token, eos_token, ... ("<s>" or {"content": "<s>"}; absent or null: -1
 * stays). A name that is not a special token of v is an error naming
 * config_name and the field. */
struct cJSON;
int vocab_read_roles(vocab *v, const struct cJSON *config, const char *config_name, errbuf *e);
/* 0 when a file whose largest id is top - 1 and that names n_named ids
 * leaves few enough unnamed (VOCAB_MAX_UNNAMED); else -1 with e naming path
 * and the id. */
int vocab_check_unnamed(const char *path, int top, int n_named, errbuf *e);
/* vocab_size of dir/config.json (or its text_config), 0 when unknown: ids up
 * to it exist even when the tokenizer names none of them. */
int vocab_model_size(const char *dir);

/* The bytes of token id (a special token: its name), NUL-terminated for
 * convenience (a token may itself contain NUL bytes: use *len). NULL when id is
 * outside the vocabulary. len may be NULL. */
const char *vocab_decode(const vocab *v, int id, size_t *len);
/* 1 when id is not text: a special token, named or reserved (VOCAB_F_SPECIAL). */
int vocab_is_special(const vocab *v, int id);
/* The id of the special token named content ("<|im_end|>", "[BOS]",
 * "<|reserved_token_163600|>"), or -1. */
int vocab_find_special(const vocab *v, const char *content);
/* The ids that end a chat reply, each once: the end of a turn (<|im_end|>),
 * [EOS], the tokenizer config's eos_token, then the model config's eos ids;
 * returns how many (at most VOCAB_MAX_REPLY_STOPS). */
#define VOCAB_MAX_REPLY_STOPS 10
int vocab_reply_stop_ids(const vocab *v, const int *eos, int n_eos, int *out);
/* VOCAB_F_* of id; 0 when out of range. */
int vocab_token_flags(const vocab *v, int id);

/* Concatenates the raw bytes of ids (no UTF-8 handling) into a malloc'd,
 * NUL-terminated buffer. */
int vocab_decode_ids(const vocab *v, const int *ids, int n, char **out, size_t *len, errbuf *e);

/* Incremental decoder of a token stream into valid UTF-8. */
typedef struct vocab_stream {
    const vocab *v;
    uint8_t pend[4];            /* valid prefix of an unfinished UTF-8 sequence */
    int n_pend;
    int need;                   /* total length of that sequence */
} vocab_stream;

void vocab_stream_init(vocab_stream *s, const vocab *v);
/* Writes the text that token id completes to out. Returns 0, or -1 (nothing
 * written, state unchanged) when id is outside the vocabulary. */
int vocab_stream_put(vocab_stream *s, int id, FILE *out);
/* Emits what is still held back (an unfinished sequence becomes U+FFFD) and
 * resets the stream. */
void vocab_stream_flush(vocab_stream *s, FILE *out);

/* Bytes vocab_stream_decode may produce for one token, at most. */
size_t vocab_stream_bound(const vocab *v);
/* Buffer forms of put/flush: write at most cap bytes to out and set *n_out.
 * vocab_stream_decode returns -1 (nothing consumed) for an id outside the
 * vocabulary or when cap < vocab_stream_bound(v); vocab_stream_finish needs
 * cap >= 3. */
int vocab_stream_decode(vocab_stream *s, int id, char *out, size_t cap, size_t *n_out);
int vocab_stream_finish(vocab_stream *s, char *out, size_t cap, size_t *n_out);

#endif
