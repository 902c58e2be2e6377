/* bench_tokenizer [FIXTURES [TOKENIZER]]: single-thread encode throughput of
 * the Kimi tokenizer (or the one in TOKENIZER: a tokenizer.json's) on a
 * mixed multilingual corpus (every text of the encode fixtures: English, code,
 * Chinese, Japanese, Korean, Cyrillic, Arabic, emoji, JSON, long texts),
 * repeated to about 8 MB. The yardstick, measured in the same run on the same
 * bytes, is the regex pre-split alone: ratio = encode MB/s / pre-split MB/s
 * says how much the BPE merges cost on top of the scan. One JSON line. */
#include <cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/base/fileutil.h"
#include "core/base/progress.h"
#include "core/text/tokenizer.h"

static void count_piece(void *ctx, size_t a, size_t b)
{
    (void)a;
    (void)b;
    ++*(size_t *)ctx;
}

int main(int argc, char **argv)
{
    const char *dir = argc > 1 ? argv[1] : "../shared/testdata/kimi-tokenizer";
    char path[4096];
    snprintf(path, sizeof path, "%s/encode_cases.jsonl", dir);
    char *cases;
    errbuf e;
    if (file_read_all(path, &cases, NULL, &e)) {
        fprintf(stderr, "bench_tokenizer: %s (give the kimi-tokenizer folder as argument)\n", e.msg);
        return 2;
    }
    size_t cap = 9u << 20, n = 0;
    char *corpus = malloc(cap);
    if (!corpus) {
        fprintf(stderr, "bench_tokenizer: out of memory\n");
        return 2;
    }
    while (n < (8u << 20)) {
        size_t before = n;
        char *copy = strdup(cases), *save = NULL;
        if (!copy) {
            fprintf(stderr, "bench_tokenizer: out of memory\n");
            return 2;
        }
        for (char *line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
            cJSON *c = cJSON_Parse(line);
            const cJSON *t = cJSON_GetObjectItem(c, "text");
            size_t l = cJSON_IsString(t) ? strlen(t->valuestring) : 0;
            if (l && n + l < cap) {
                memcpy(corpus + n, t->valuestring, l);
                n += l;
            }
            cJSON_Delete(c);
        }
        free(copy);
        if (n == before) {   /* another pass would add nothing either */
            fprintf(stderr, "bench_tokenizer: encode_cases.jsonl holds no \"text\" to encode "
                    "(give the kimi-tokenizer folder as argument)\n");
            return 2;
        }
    }
    tokenizer tok;
    if (tokenizer_load(&tok, argc > 2 ? argv[2] : dir, &e)) {
        fprintf(stderr, "bench_tokenizer: %s\n", e.msg);
        return 1;
    }
    double best_enc = 1e9, best_split = 1e9;
    size_t n_ids = 0, n_pieces = 0;
    for (int rep = 0; rep < 3; rep++) {
        token_list l = {0};
        double t0 = now_seconds();
        if (tokenizer_encode(&tok, corpus, n, TOK_ALLOW_SPECIAL, &l, &e)) {
            fprintf(stderr, "bench_tokenizer: %s\n", e.msg);
            return 1;
        }
        double t1 = now_seconds();
        n_pieces = 0;
        tokenizer_split(&tok, corpus, n, count_piece, &n_pieces, &e);
        double t2 = now_seconds();
        best_enc = t1 - t0 < best_enc ? t1 - t0 : best_enc;
        best_split = t2 - t1 < best_split ? t2 - t1 : best_split;
        n_ids = l.n;
        token_list_free(&l);
    }
    double mb = (double)n / 1e6;
    printf("{\"bench\": \"tokenizer_encode\", \"tokenizer\": \"%s\", \"threads\": 1, \"bytes\": %zu, "
           "\"tokens\": %zu, "
           "\"pieces\": %zu, \"encode_mb_per_s\": %.2f, \"presplit_mb_per_s\": %.2f, "
           "\"ratio\": %.3f, \"tokens_per_s\": %.0f}\n",
           tok.kind == TOKENIZER_TIKTOKEN ? "tiktoken" : "tokenizer.json", n, n_ids, n_pieces, mb / best_enc,
           mb / best_split, best_split / best_enc, (double)n_ids / best_enc);
    tokenizer_free(&tok);
    free(corpus);
    free(cases);
    return 0;
}
