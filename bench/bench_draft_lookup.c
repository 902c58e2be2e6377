/* bench_draft_lookup: how often prompt lookup's guesses would be kept on real
 * text, by how many last tokens the lookup matched (the classes
 * --draft-lookup's tuner learns apart). Each file is tokenized with the given
 * tokenizer and read as an answer that goes on token by token: at every
 * position draft_lookup guesses the next 3 tokens from what came before, and
 * a guess counts as kept while the text goes on with it (as a sampler that
 * picked the text's tokens would keep it). Prints one JSON line per file and
 * match class: lookups, and the chance of each guess position once the ones
 * before it were kept; then one per file with every class together: the
 * guesses kept per lookup, and the lookups' time (ns per lookup, against the
 * tokens of context they searched).
 *
 * Usage: bench_draft_lookup [TOKENIZER_DIR FILE...]; without arguments the
 * Kimi tokenizer of $MOETIER_TESTDATA (default ../shared/testdata) on this
 * project's README.md, docs/server.md, core/engine/engine.c and
 * server/serve_job.c (skipped, saying so, when the tokenizer is absent). */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "core/base/fileutil.h"
#include "core/engine/draft_lookup.h"
#include "core/engine/draft_tuner.h"
#include "core/text/tokenizer.h"

int main(int argc, char **argv)
{
    char dir[4096];
    const char *td = getenv("MOETIER_TESTDATA");
    snprintf(dir, sizeof dir, "%s/kimi-tokenizer", td && *td ? td : "../shared/testdata");
    char *defaults[] = {argv[0], dir, "README.md", "docs/server.md", "core/engine/engine.c",
                        "server/serve_job.c"};
    if (argc == 1) {
        if (access(dir, R_OK) != 0)
            return printf("bench_draft_lookup: skipped: no tokenizer at %s\n", dir), 0;
        argc = (int)(sizeof defaults / sizeof *defaults);
        argv = defaults;
    }
    if (argc < 3)
        return fprintf(stderr, "usage: bench_draft_lookup [TOKENIZER_DIR FILE...]\n"), 2;
    tokenizer tok;
    errbuf e;
    if (tokenizer_load(&tok, argv[1], &e))
        return fprintf(stderr, "bench_draft_lookup: %s\n", e.msg), 1;
    for (int f = 2; f < argc; f++) {
        char *text;
        size_t len;
        token_list ids = {0};
        if (file_read_all(argv[f], &text, &len, &e) ||
            tokenizer_encode(&tok, text, len, 0, &ids, &e))
            return fprintf(stderr, "bench_draft_lookup: %s: %s\n", argv[f], e.msg), 1;
        free(text);
        long lookups[DRAFT_MATCH_CLASSES] = {0};
        long judged[DRAFT_MATCH_CLASSES][DRAFT_GUESS_MAX] = {{0}};
        long kept[DRAFT_MATCH_CLASSES][DRAFT_GUESS_MAX] = {{0}};
        long all_lookups = 0, all_kept = 0;
        double seconds = 0;
        /* the answer so far is ids[0..p], its last token ids[p] */
        for (size_t p = 1; p + 1 < ids.n; p++) {
            int guess[DRAFT_GUESS_MAX], match;
            struct timespec t0, t1;
            clock_gettime(CLOCK_MONOTONIC, &t0);
            int n = draft_lookup(ids.ids, (int)p, ids.ids[p], DRAFT_GUESS_MAX, guess, &match);
            clock_gettime(CLOCK_MONOTONIC, &t1);
            seconds += (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
            if (!n)
                continue;
            all_lookups++;
            int c = draft_match_class(match);
            lookups[c]++;
            for (int j = 0; j < n && p + 1 + (size_t)j < ids.n; j++) {
                judged[c][j]++;
                if (guess[j] != ids.ids[p + 1 + (size_t)j])
                    break;
                kept[c][j]++;
                all_kept++;
            }
        }
        for (int c = 0; c < DRAFT_MATCH_CLASSES; c++) {
            printf("{\"bench\":\"draft_lookup\",\"file\":\"%s\",\"tokens\":%zu,\"match\":\"%s\","
                   "\"lookups\":%ld,\"chance\":[", argv[f], ids.n, draft_match_class_names[c],
                   lookups[c]);
            for (int j = 0; j < DRAFT_GUESS_MAX; j++)
                printf("%s%.3f", j ? "," : "", judged[c][j] ? (double)kept[c][j] / (double)judged[c][j] : 0.0);
            printf("]}\n");
        }
        printf("{\"bench\":\"draft_lookup\",\"file\":\"%s\",\"tokens\":%zu,\"match\":\"all\","
               "\"lookups\":%ld,\"kept\":%ld,\"kept_per_lookup\":%.4f,\"ns_per_lookup\":%.0f}\n",
               argv[f], ids.n, all_lookups, all_kept,
               all_lookups ? (double)all_kept / (double)all_lookups : 0.0,
               ids.n > 2 ? seconds * 1e9 / (double)(ids.n - 2) : 0.0);
        token_list_free(&ids);
    }
    tokenizer_free(&tok);
    return 0;
}
