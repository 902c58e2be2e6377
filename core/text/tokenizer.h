/* tokenizer: text -> token ids for tiktoken-style byte-level BPE (Kimi K2).
 *
 * Encoding, as Kimi's TikTokenTokenizer.encode() does it:
 *  1. the input is cut into slices of at most 400,000 code points, and each
 *     slice wherever a run of whitespace or non-whitespace exceeds 25,000 code
 *     points (Python str.isspace); slices are encoded independently;
 *  2. special-token names (all of them, when allowed) are found leftmost-first
 *     and become their ids;
 *  3. the ordinary text between them is pre-split by the Kimi regex (PCRE2 with
 *     Unicode properties, a faithful translation of the original pattern: the
 *     class intersections become per-character lookaheads, Han is Script=Han,
 *     \s is White_Space spelled out);
 *  4. each piece is a token if it is one, otherwise its bytes are merged
 *     pairwise by lowest rank (leftmost on ties) with a heap, so long pieces
 *     stay O(n log n).
 * Decoding is vocab's (the tokenizer embeds its vocab). */
#ifndef MOETIER_TOKENIZER_H
#define MOETIER_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "core/base/errbuf.h"
#include "utf8.h"
#include "vocab.h"

typedef struct tokenizer {
    vocab v;
    void *re;                   /* pcre2_code * */
    int32_t *rank_table;        /* open addressing: regular token id or -1 */
    uint64_t rank_mask;
    int32_t *special_table;     /* special names -> id, same scheme */
    uint64_t special_mask;
    uint8_t special_first[256]; /* bytes a special name can start with */
    int special_lens[64];       /* distinct special name lengths, descending */
    int n_special_lens;
} tokenizer;

enum {
    TOK_ALLOW_SPECIAL = 1,      /* special-token names in the text become their ids */
    TOK_NO_CHUNKING = 2,        /* plain tiktoken: no 400k / 25k slicing */
};

/* Loads dir/tiktoken.model + dir/tokenizer_config.json (dir may be a model
 * directory or just a tokenizer folder). */
int tokenizer_load(tokenizer *t, const char *dir, errbuf *e);
/* Builds the encoder over a loaded vocab, taking ownership of it (v is left
 * empty, also on failure, where the vocab is freed). */
int tokenizer_init(tokenizer *t, vocab *v, errbuf *e);
void tokenizer_free(tokenizer *t);

/* Growable id list. */
typedef struct token_list {
    int *ids;
    size_t n, cap;
} token_list;

void token_list_free(token_list *l);
int token_list_push(token_list *l, int id);

/* Appends the ids of text[0..len) to out. Fails (nothing appended) on text
 * that is not valid UTF-8, naming the byte offset. */
int tokenizer_encode(const tokenizer *t, const char *text, size_t len, int flags, token_list *out,
                     errbuf *e);

/* The regex pieces of ordinary text (no special handling), for tests: calls
 * fn for each [start, end) byte range. */
int tokenizer_split(const tokenizer *t, const char *text, size_t len,
                    void (*fn)(void *ctx, size_t start, size_t end), void *ctx, errbuf *e);

/* BPE of one piece by the two algorithms (simple rescans / heap), for tests;
 * both append to out. */
int tokenizer_bpe_simple(const tokenizer *t, const uint8_t *p, size_t n, token_list *out);
int tokenizer_bpe_heap(const tokenizer *t, const uint8_t *p, size_t n, token_list *out);

#endif
