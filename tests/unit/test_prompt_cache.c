/* The prompt cache: a conversation whose KV rows come back from host memory
 * computes exactly as if its prefix had been run again; the byte budget, the
 * least-recently-used eviction and the replacement of a prefix by one that
 * extends it. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "core/app/cli_common.h"
#include "core/engine/prompt_cache.h"
#include "testutil.h"

typedef struct fixture {
    char *dir;
    cli_model m;
    int V;
    float *logits;
} fixture;

static void open_fixture(fixture *f, const char *backend_name)
{
    f->dir = test_make_tmpdir("prompt_cache");
    test_synth_tiny(f->dir, "int4");
    model_flags mf = {.dir = f->dir, .ctx = 256, .chunk = 8, .quiet = 1, .backend = backend_name};
    errbuf e;
    cr_assert_eq(cli_model_open(&f->m, &mf, &e), 0, "%s", e.msg);
    f->V = f->m.mw.cfg.vocab_size;
    f->logits = malloc((size_t)f->V * sizeof *f->logits);
    cr_assert(f->logits);
}

static void close_fixture(fixture *f)
{
    cli_model_close(&f->m);
    free(f->logits);
    test_remove_tree(f->dir);
    free(f->dir);
}

/* n ids from seed; the first `shared` those of seed 0 */
static int *conversation(int n, int seed, int shared, int V)
{
    int *ids = malloc((size_t)n * sizeof *ids);
    for (int i = 0; i < n; i++)
        ids[i] = ((i < shared ? 0 : seed) * 7919 + i * 37 + 11) % V;
    return ids;
}

/* A request as the server runs it: the prompt cache first, then the rest of
 * the prompt; the last position's logits into f->logits. Returns the reused
 * positions. */
static int request(fixture *f, prompt_cache *pc, const int *ids, int n)
{
    engine *en = &f->m.en;
    errbuf e;
    int reuse = prompt_cache_prepare(pc, en, ids, n);
    cr_assert_eq(engine_truncate(en, reuse, &e), 0, "%s", e.msg);
    cr_assert_eq(engine_forward(en, ids + reuse, n - reuse, f->logits, 0, &e), 0, "%s", e.msg);
    return reuse;
}

/* The rows go out of and back into the backend's own memory (the GPU's for
 * the CUDA backend). */
static void restored_conversation(const char *backend_name)
{
    fixture f;
    open_fixture(&f, backend_name);
    engine *en = &f.m.en;
    int *a = conversation(70, 1, 5, f.V), *b = conversation(50, 2, 5, f.V);
    float *want = malloc((size_t)f.V * sizeof *want);
    errbuf e;
    /* the reference: a's first 60, then its next turn, in one cache */
    cr_assert_eq(engine_forward(en, a, 60, want, 0, &e), 0, "%s", e.msg);
    cr_assert_eq(engine_forward(en, a + 60, 10, want, 0, &e), 0, "%s", e.msg);
    engine_reset(en);

    prompt_cache pc;
    prompt_cache_init(&pc, 1u << 30);
    cr_expect_eq(request(&f, &pc, a, 60), 0);
    cr_expect_eq(request(&f, &pc, b, 50), 5, "b shares its first 5 with a");
    cr_expect_eq(pc.n, 1, "a's 60 positions were saved before b cut them");
    cr_expect_eq(request(&f, &pc, a, 70), 60, "a's next turn continues from its saved rows");
    cr_expect_eq(pc.restored_tokens, 55, "rows 5..60 copied back, the shared 5 kept");
    cr_expect_eq(memcmp(f.logits, want, (size_t)f.V * sizeof *want), 0,
                 "logits after restored rows differ from those of a prefix run again");
    cr_expect_eq(pc.n, 2, "b was saved too");
    /* b again: its rows come back, and a (extended to 70) is saved in place
     * of its 60 */
    cr_expect_eq(request(&f, &pc, b, 50), 49, "at most n - 1, so that the forward yields logits");
    cr_expect_eq(pc.n, 2);
    int longest = 0;
    for (int i = 0; i < pc.n; i++)
        longest = pc.entries[i].n > longest ? pc.entries[i].n : longest;
    cr_expect_eq(longest, 70, "the 70 positions of a replace its 60");
    cr_expect_eq(pc.bytes, (size_t)(70 + 50) * prompt_cache_position_bytes(en));
    prompt_cache_free(&pc);

    /* off: the engine's own prefix only */
    prompt_cache_init(&pc, 0);
    engine_reset(en);
    request(&f, &pc, a, 60);
    request(&f, &pc, b, 50);
    cr_expect_eq(request(&f, &pc, a, 70), 5);
    cr_expect_eq(pc.n, 0);
    prompt_cache_free(&pc);
    free(a);
    free(b);
    free(want);
    close_fixture(&f);
}

Test(prompt_cache, a_restored_conversation_computes_as_if_run_again, .timeout = 120)
{
    restored_conversation(NULL);
}

Test(prompt_cache, a_restored_conversation_computes_as_if_run_again_gpu, .timeout = 300)
{
    test_require_gpu();
    restored_conversation("cuda");
}

Test(prompt_cache, the_budget_evicts_the_least_recently_used, .timeout = 120)
{
    fixture f;
    open_fixture(&f, NULL);
    engine *en = &f.m.en;
    size_t per = prompt_cache_position_bytes(en);
    int *a = conversation(60, 1, 0, f.V), *b = conversation(60, 2, 0, f.V), *c = conversation(60, 3, 0, f.V);
    prompt_cache pc;
    prompt_cache_init(&pc, 125 * per);      /* two conversations of 60, not three */
    request(&f, &pc, a, 60);
    request(&f, &pc, b, 60);                /* saves a */
    request(&f, &pc, c, 60);                /* saves b */
    cr_expect_eq(pc.n, 2);
    /* c is saved before a comes back: b, the least recently used, goes for
     * it, and a, the oldest, stays for the request that wants it */
    cr_expect_eq(request(&f, &pc, a, 60), 59, "a comes back");
    cr_expect_eq(pc.n, 2);
    cr_expect_eq(pc.evicted, 1);
    cr_expect_eq(request(&f, &pc, b, 60), 0, "b was evicted");
    cr_expect(pc.bytes <= pc.budget);
    /* a cut of fewer than PROMPT_CACHE_MIN_TOKENS positions is not saved */
    uint64_t saved = pc.saved;
    int *b2 = conversation(60, 2, 0, f.V);
    b2[59 - PROMPT_CACHE_MIN_TOKENS + 2] = (b2[59 - PROMPT_CACHE_MIN_TOKENS + 2] + 1) % f.V;
    request(&f, &pc, b2, 60);
    cr_expect_eq(pc.saved, saved);
    /* a conversation larger than the whole budget is not saved */
    prompt_cache_free(&pc);
    prompt_cache_init(&pc, 59 * per);
    request(&f, &pc, a, 60);
    request(&f, &pc, b, 60);
    cr_expect_eq(pc.n, 0);
    prompt_cache_free(&pc);
    free(a);
    free(b);
    free(b2);
    free(c);
    close_fixture(&f);
}

/* A save that cannot be made loses nothing: the engine's positions would need
 * the room of the entry about to be copied back, so they are not saved, and
 * the entry they extend stays (it was dropped first, then nothing saved). */
Test(prompt_cache, a_save_that_does_not_fit_loses_nothing, .timeout = 120)
{
    fixture f;
    open_fixture(&f, NULL);
    size_t per = prompt_cache_position_bytes(&f.m.en);
    int *x = conversation(80, 1, 0, f.V), *k = conversation(101, 2, 0, f.V);
    prompt_cache pc;
    prompt_cache_init(&pc, 140 * per);
    request(&f, &pc, x, 40);
    request(&f, &pc, k, 100);               /* saves x's 40 */
    cr_expect_eq(request(&f, &pc, x, 80), 40, "x's 40 come back"); /* saves k's 100 */
    cr_expect_eq(pc.n, 2);
    /* k again: x's 80 do not fit beside k's 100; x's 40 stay */
    cr_expect_eq(request(&f, &pc, k, 101), 100);
    cr_expect_eq(pc.n, 2, "%d entries", pc.n);
    cr_expect_eq(pc.evicted, 0);
    cr_expect_eq(request(&f, &pc, x, 80), 40, "x's 40 were lost");
    prompt_cache_free(&pc);
    free(x);
    free(k);
    close_fixture(&f);
}

/* A cut inside what was generated after the last prompt (a reply regenerated,
 * or its reasoning left out of the next turn's history) is not saved: no
 * later prompt is likely to start with it. A cut inside the prompt is. */
Test(prompt_cache, a_cut_in_the_reply_only_is_not_saved, .timeout = 120)
{
    fixture f;
    open_fixture(&f, NULL);
    engine *en = &f.m.en;
    int *p = conversation(100, 1, 0, f.V), *other = conversation(60, 2, 10, f.V);
    prompt_cache pc;
    prompt_cache_init(&pc, 1u << 30);
    errbuf e;
    request(&f, &pc, p, 50);
    for (int i = 0; i < 40; i++)            /* the reply */
        cr_assert_eq(engine_decode(en, (i * 13 + 5) % f.V, f.logits, &e), 0, "%s", e.msg);
    cr_expect_eq(request(&f, &pc, p, 60), 50, "the prompt is kept, the reply cut");
    cr_expect_eq(pc.saved, 0, "a reply of 40 tokens cut was saved");
    cr_expect_eq(request(&f, &pc, other, 60), 0);
    cr_expect_eq(pc.saved, 1, "a cut inside the prompt was not saved");
    prompt_cache_free(&pc);
    free(p);
    free(other);
    close_fixture(&f);
}
