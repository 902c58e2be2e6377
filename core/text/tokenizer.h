/* tokenizer: text -> token ids for byte-level BPE, of two kinds.
 *
 * tiktoken (Kimi K2), as Kimi's TikTokenTokenizer.encode() does it:
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
 *     stay O(n log n). A pair's rank is the rank of the token it makes.
 *
 * A Hugging Face tokenizer.json (the DeepSeek-V3 family; tokenizer_json.h
 * reads the file), as its tokenizers library encodes: no slicing; the added
 * tokens (when allowed) as step 2; the text between them split by each
 * pattern of its pre-tokenizer in turn, every piece of one split again by the
 * next (a match and the text between matches each a piece); each piece's
 * bytes merged by the rank of the pair in the file's merges (a pair the
 * merges do not list is never merged, even when it would make a token), the
 * whole piece looked up first only when the file says ignore_merges.
 *
 * Decoding is vocab's (the tokenizer embeds its vocab). */
#ifndef MOETIER_TOKENIZER_H
#define MOETIER_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "core/base/errbuf.h"
#include "utf8.h"
#include "vocab.h"

#define TOKENIZER_MAX_SPLITS 8
/* Unicode's White_Space set as the inside of a PCRE2 class: what Python's,
 * Rust's and Oniguruma's \s mean (PCRE2's own \s adds U+180E). */
#define TOKENIZER_WHITE_SPACE                                                                      \
    "\\t-\\r\\x{20}\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}"

typedef enum tokenizer_kind { TOKENIZER_TIKTOKEN, TOKENIZER_HF_BPE } tokenizer_kind;

typedef struct tokenizer {
    vocab v;
    tokenizer_kind kind;
    void *splits[TOKENIZER_MAX_SPLITS]; /* pcre2_code *: the pre-split patterns, in turn */
    int n_splits;
    /* the Hugging Face merges: (left id << 32 | right id) -> rank and the id
     * made, open addressing (UINT64_MAX: empty) */
    uint64_t *merge_key;
    int32_t *merge_rank, *merge_id;
    uint64_t merge_mask;
    int ignore_merges;          /* a piece that is a token is that token, unmerged */
    int bos_prefix;             /* the id a raw prompt starts with (tokenizer_config's
                                 * add_bos_token), -1: none */
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

/* Loads dir/tiktoken.model + dir/tokenizer_config.json, or else
 * dir/tokenizer.json (+ its tokenizer_config.json when present); dir may be a
 * model directory or just a tokenizer folder. */
int tokenizer_load(tokenizer *t, const char *dir, errbuf *e);
/* Builds the tiktoken encoder over a loaded vocab, taking ownership of it (v
 * is left empty, also on failure, where the vocab is freed). */
int tokenizer_init(tokenizer *t, vocab *v, errbuf *e);

/* A merge of a Hugging Face BPE: the two tokens' bytes. */
typedef struct bpe_merge {
    const uint8_t *left, *right;
    uint32_t left_len, right_len;
} bpe_merge;

/* What a tokenizer.json says beyond its vocab. */
typedef struct tokenizer_bpe_spec {
    const char *patterns[TOKENIZER_MAX_SPLITS]; /* PCRE2 (UTF, UCP) sources */
    int literal[TOKENIZER_MAX_SPLITS];          /* pattern i is a plain string */
    int n_patterns;
    const bpe_merge *merges;    /* in rank order */
    int n_merges;
    int ignore_merges;
    int bos_prefix;             /* -1: none */
} tokenizer_bpe_spec;

/* The same for a Hugging Face BPE (tokenizer_json.h), v's ownership as
 * above. Each merge must join two regular tokens into a third, or it is
 * refused naming it. */
int tokenizer_init_bpe(tokenizer *t, vocab *v, const tokenizer_bpe_spec *spec, errbuf *e);
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

/* A raw prompt's ids: its text's, after bos_prefix when the tokenizer has
 * one (a chat template writes its own). */
int tokenizer_encode_prompt(const tokenizer *t, const char *text, size_t len, int flags, token_list *out,
                            errbuf *e);

/* BPE of one piece by the two algorithms (simple rescans / heap), for tests;
 * both append to out. */
int tokenizer_bpe_simple(const tokenizer *t, const uint8_t *p, size_t n, token_list *out);
int tokenizer_bpe_heap(const tokenizer *t, const uint8_t *p, size_t n, token_list *out);

#endif
