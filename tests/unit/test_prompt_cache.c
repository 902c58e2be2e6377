/* The prompt cache: a conversation whose KV rows come back from host memory
 * computes exactly as if its prefix had been run again; the byte budget, the
 * least-recently-used eviction and the replacement of a prefix by one that
 * extends it. */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/app/cli_common.h"
#include "core/base/fileutil.h"
#include "core/engine/prompt_cache.h"
#include "core/engine/prompt_cache_disk.h"
#include "testutil.h"

typedef struct fixture {
    char *dir;
    cli_model m;
    int V;
    float *logits;
    int prompt_end;     /* of the engine's conversation (prompt_cache_prepare) */
} fixture;

/* the cache type of the fixture's model (each test runs in its own process) */
static kv_type cache_type = KV_F32;

static void open_fixture(fixture *f, const char *backend_name)
{
    f->dir = test_make_tmpdir("prompt_cache");
    test_synth_tiny(f->dir, "int4");
    model_flags mf = {.dir = f->dir, .ctx = 256, .chunk = 8, .quiet = 1, .backend = backend_name,
                      .cache_type = cache_type};
    errbuf e;
    cr_assert_eq(cli_model_open(&f->m, &mf, &e), 0, "%s", e.msg);
    f->V = f->m.mw.cfg.vocab_size;
    f->logits = malloc((size_t)f->V * sizeof *f->logits);
    cr_assert(f->logits);
    f->prompt_end = 0;
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
    int reuse = prompt_cache_prepare(pc, en, ids, n, &f->prompt_end);
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

Test(prompt_cache, a_restored_conversation_computes_as_if_run_again_bf16_cache, .timeout = 120)
{
    cache_type = KV_BF16;
    restored_conversation(NULL);
}

Test(prompt_cache, a_restored_conversation_computes_as_if_run_again_q8_cache, .timeout = 120)
{
    cache_type = KV_Q8_0;
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

/* A conversation that grows a saved entry while the array of entries is full
 * (8 of 8: the array grows then) is saved, and what comes back from it is
 * what the engine computed: the entry it grows was read after the array had
 * moved (a use after free that crashed a server, found by ASan). */
Test(prompt_cache, a_save_that_grows_an_entry_as_the_entries_grow, .timeout = 120)
{
    fixture f;
    open_fixture(&f, NULL);
    engine *en = &f.m.en;
    int *c[9];
    for (int k = 0; k < 9; k++)
        c[k] = conversation(80, k + 1, 0, f.V);
    float *want = malloc((size_t)f.V * sizeof *want);
    errbuf e;
    /* the reference: c0's 80 in the steps the requests below take */
    cr_assert_eq(engine_forward(en, c[0], 40, want, 0, &e), 0, "%s", e.msg);
    cr_assert_eq(engine_forward(en, c[0] + 40, 20, want, 0, &e), 0, "%s", e.msg);
    cr_assert_eq(engine_forward(en, c[0] + 60, 20, want, 0, &e), 0, "%s", e.msg);
    engine_reset(en);

    prompt_cache pc;
    prompt_cache_init(&pc, (size_t)1 << 30);
    for (int k = 0; k < 8; k++)
        request(&f, &pc, c[k], 40);         /* each saves the one before */
    cr_expect_eq(pc.n, 7);
    cr_expect_eq(request(&f, &pc, c[0], 60), 40, "c0's 40 come back"); /* saves c7's: 8 of 8 */
    cr_assert_eq(pc.n, pc.cap, "the array is not full: the test proves nothing");
    request(&f, &pc, c[8], 40);             /* saves c0's 60, growing its 40 */
    int longest = 0;
    for (int i = 0; i < pc.n; i++)
        longest = pc.entries[i].n > longest ? pc.entries[i].n : longest;
    cr_expect_eq(longest, 60, "c0's 60 positions replace its 40");
    cr_expect_eq(request(&f, &pc, c[0], 80), 60, "c0's 60 come back");
    cr_expect_eq(memcmp(f.logits, want, (size_t)f.V * sizeof *want), 0,
                 "logits after the grown entry's rows differ from those of the engine's run");
    prompt_cache_free(&pc);
    for (int k = 0; k < 9; k++)
        free(c[k]);
    free(want);
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

/* One server of a model per directory: the second lock is refused, naming
 * the holder; another identity's lock is apart; a lock let go can be taken. */
Test(prompt_cache, one_server_of_a_model_per_directory)
{
    char *dir = test_make_tmpdir("prompt_lock");
    prompt_identity id = {.model = 5, .compute = "test"}, other = {.model = 6, .compute = "test"};
    errbuf e;
    int fd = prompt_cache_dir_lock(dir, &id, &e);
    cr_assert_geq(fd, 0, "%s", e.msg);
    cr_expect_eq(prompt_cache_dir_lock(dir, &id, &e), -1);
    char pid[32];
    snprintf(pid, sizeof pid, "process %ld", (long)getpid());
    cr_expect(strstr(e.msg, "in use by another server of this model") && strstr(e.msg, pid) &&
              strstr(e.msg, dir), "%s", e.msg);
    int fd_other = prompt_cache_dir_lock(dir, &other, &e);
    cr_expect_geq(fd_other, 0, "%s", e.msg);
    close(fd);
    fd = prompt_cache_dir_lock(dir, &id, &e);
    cr_expect_geq(fd, 0, "%s", e.msg);
    close(fd);
    close(fd_other);
    test_remove_tree(dir);
    free(dir);
}

static int count_files(const char *dir, const char *suffix)
{
    char *out, *err;
    cr_assert_eq(test_run_fmt(&out, &err, "ls -A '%s' | grep -c -- '%s$' || true", dir, suffix), 0);
    int n = atoi(out);
    free(out);
    free(err);
    return n;
}

/* prompt_cache_store_dir with files limited to limit bytes (RLIMIT_FSIZE: a
 * larger write fails with EFBIG, as on a disk that fills) */
static int store_dir_limited(prompt_cache *pc, const char *dir, const prompt_identity *id,
                             const engine *en, prompt_disk_counts *c, errbuf *e, size_t limit)
{
    struct rlimit old, small = {.rlim_cur = limit};
    getrlimit(RLIMIT_FSIZE, &old);
    small.rlim_max = old.rlim_max;
    signal(SIGXFSZ, SIG_IGN);
    cr_assert_eq(setrlimit(RLIMIT_FSIZE, &small), 0);
    int rc = prompt_cache_store_dir(pc, dir, id, en, c, e);
    setrlimit(RLIMIT_FSIZE, &old);
    return rc;
}

/* `serve --prompt-cache-dir`: the entries written at a stop come back at the
 * next start, the most recently used first, and compute as before; a damaged
 * file is skipped, then removed with those of entries gone; other files are
 * left alone, and a write that fails removes nothing of what is there. */
Test(prompt_cache, the_cache_is_kept_in_a_directory, .timeout = 120)
{
    fixture f;
    open_fixture(&f, NULL);
    engine *en = &f.m.en;
    size_t per = prompt_cache_position_bytes(en);
    int *a = conversation(70, 1, 0, f.V), *b = conversation(50, 2, 0, f.V);
    float *want = malloc((size_t)f.V * sizeof *want);
    errbuf e;
    cr_assert_eq(engine_forward(en, a, 60, want, 0, &e), 0, "%s", e.msg);
    cr_assert_eq(engine_forward(en, a + 60, 10, want, 0, &e), 0, "%s", e.msg);
    engine_reset(en);

    char dir[4200], path[4300];
    snprintf(dir, sizeof dir, "%s/kept", f.dir);
    cr_assert_eq(mkdir(dir, 0755), 0);
    snprintf(path, sizeof path, "%s/notes.txt", dir);
    test_write_file(path, "mine\n", 5);
    prompt_identity id = {.model = 7, .compute = "test"}, other = {.model = 8, .compute = "test"};
    prompt_cache pc;
    prompt_cache_init(&pc, 1u << 30);
    request(&f, &pc, a, 60);
    request(&f, &pc, b, 50);                /* saves a */
    prompt_cache_keep(&pc, en);             /* b, as at a stop */
    cr_assert_eq(pc.n, 2);
    prompt_disk_counts c;
    cr_assert_eq(prompt_cache_store_dir(&pc, dir, &other, en, &c, &e), 0, "%s", e.msg);
    cr_assert_eq(prompt_cache_store_dir(&pc, dir, &id, en, &c, &e), 0, "%s", e.msg);
    cr_expect_eq(c.written, 2, "another identity's files stood for this one's");
    cr_expect_eq(c.removed, 0, "another identity's files were removed");
    cr_assert_eq(prompt_cache_store_dir(&pc, dir, &id, en, &c, &e), 0, "%s", e.msg);
    cr_expect_eq(c.written, 0, "written again though on disk");
    /* the server's idle steps: one entry at a time, then nothing */
    cr_expect_eq(prompt_cache_write_pending(&pc, dir, &id, en, &e), 0);
    pc.entries[0].on_disk = 0;
    pc.entries[1].on_disk = 0;
    cr_expect_eq(prompt_cache_write_pending(&pc, dir, &id, en, &e), 1);
    cr_expect_eq(pc.entries[0].on_disk + pc.entries[1].on_disk, 1);
    cr_expect_eq(prompt_cache_write_pending(&pc, dir, &id, en, &e), 1);
    cr_expect_eq(prompt_cache_write_pending(&pc, dir, &id, en, &e), 0);
    /* a crash now: the idle writes went most recently used first, yet the
     * files' times are in the order of use, so room for one reads b */
    prompt_cache crashed;
    prompt_cache_init(&crashed, 65 * per);    /* a or b, not both */
    cr_assert_eq(prompt_cache_load_dir(&crashed, dir, &id, en, &c, &e), 0, "%s", e.msg);
    cr_expect(crashed.n == 1 && crashed.entries[0].n == 50, "after idle writes, %d entries, "
              "the first of %d positions", crashed.n, crashed.n ? crashed.entries[0].n : -1);
    prompt_cache_free(&crashed);
    /* the stop sets the files' times in the order of use again */
    cr_assert_eq(prompt_cache_store_dir(&pc, dir, &id, en, &c, &e), 0, "%s", e.msg);
    cr_expect_eq(c.written, 0);
    cr_expect_eq(count_files(dir, PROMPT_CACHE_FILE_SUFFIX), 4, "two per identity");
    prompt_cache_free(&pc);

    /* the next start: both back; a's next turn continues from its rows */
    engine_reset(en);
    prompt_cache_init(&pc, 1u << 30);
    cr_assert_eq(prompt_cache_load_dir(&pc, dir, &id, en, &c, &e), 0, "%s", e.msg);
    cr_expect_eq(c.files, 2);
    cr_expect_eq(c.loaded, 2);
    cr_expect_eq(c.loaded_tokens, 110);
    cr_assert_eq(pc.n, 2);
    const prompt_entry *ea = pc.entries[0].n == 60 ? &pc.entries[0] : &pc.entries[1];
    const prompt_entry *eb = pc.entries[0].n == 50 ? &pc.entries[0] : &pc.entries[1];
    cr_expect_gt(eb->last_used, ea->last_used, "b, used last before the stop, would go first");
    cr_expect_eq(request(&f, &pc, a, 70), 60);
    cr_expect_eq(memcmp(f.logits, want, (size_t)f.V * sizeof *want), 0,
                 "logits after rows read back differ from those of the prefix run again");
    prompt_cache_free(&pc);

    /* room for one: b, the one used last before the stop */
    engine_reset(en);
    prompt_cache_init(&pc, 55 * per);
    cr_assert_eq(prompt_cache_load_dir(&pc, dir, &id, en, &c, &e), 0, "%s", e.msg);
    cr_expect_eq(c.loaded, 1);
    cr_expect_eq(c.left_out, 1);
    cr_expect_eq(pc.n == 1 ? pc.entries[0].n : -1, 50);
    prompt_cache_free(&pc);

    /* a damaged file is skipped and said; at the next stop b, computed
     * again, is written over it, the file of a's 60 (replaced by its 70)
     * and what a write cut short left go, and nothing else */
    char name[64], bfile[4300];
    prompt_cache_file_name(&id, b, 50, name, sizeof name);
    snprintf(bfile, sizeof bfile, "%s/%s", dir, name);
    size_t n;
    unsigned char *bytes = test_read_file(bfile, &n);
    cr_assert(bytes, "no file %s for b", bfile);
    bytes[n / 2] ^= 1;
    test_write_file(bfile, bytes, n);
    free(bytes);
    engine_reset(en);
    prompt_cache_init(&pc, 1u << 30);
    cr_assert_eq(prompt_cache_load_dir(&pc, dir, &id, en, &c, &e), 0, "%s", e.msg);
    cr_expect_eq(c.loaded, 1);
    cr_expect_eq(c.damaged, 1, "a changed byte went unnoticed");
    cr_expect(strstr(c.first_damage, "checksum"), "%s", c.first_damage);
    char leftover[4400];                    /* what a write cut short left */
    snprintf(leftover, sizeof leftover, "%s.tmp.99999", bfile);
    test_write_file(leftover, "MTPROMPT", 8);
    request(&f, &pc, b, 50);
    request(&f, &pc, a, 70);
    prompt_cache_keep(&pc, en);             /* a's 70 replace its 60 */
    cr_assert_eq(prompt_cache_store_dir(&pc, dir, &id, en, &c, &e), 0, "%s", e.msg);
    cr_expect_eq(pc.n, 2);
    cr_expect_eq(c.written, 2);
    cr_expect_eq(c.removed, 2, "the file of a's 60, or the leftover, was not removed");
    cr_expect(!test_path_exists(leftover));
    cr_expect_eq(count_files(dir, PROMPT_CACHE_FILE_SUFFIX), 4);
    cr_expect(test_path_exists(path), "a file not the cache's was removed");
    prompt_cache_free(&pc);
    prompt_cache_init(&pc, 1u << 30);
    cr_assert_eq(prompt_cache_load_dir(&pc, dir, &id, en, &c, &e), 0, "%s", e.msg);
    cr_expect_eq(c.loaded, 2, "%d loaded, %d not used: %s", c.loaded, c.unusable, c.first_problem);

    /* a write that fails removes nothing of what is there */
    int *d = conversation(40, 3, 0, f.V);
    request(&f, &pc, d, 40);
    prompt_cache_keep(&pc, en);             /* d, not on disk yet */
    for (int i = 0; i < pc.n; i++)
        if (pc.entries[i].n == 70)
            pc.entries[i].on_disk = 0;      /* and a, to be written again */
    int rc = store_dir_limited(&pc, dir, &id, en, &c, &e, 4096);
    cr_expect_eq(rc, -1);
    cr_expect(strstr(e.msg, "write failed"), "%s", e.msg);
    cr_expect_eq(c.removed, 0);
    cr_expect_eq(count_files(dir, PROMPT_CACHE_FILE_SUFFIX), 4);
    prompt_cache_free(&pc);
    free(a);
    free(b);
    free(d);
    free(want);
    close_fixture(&f);
}

static void set_byte(const char *path, size_t at, unsigned char v)
{
    size_t n;
    unsigned char *bytes = test_read_file(path, &n);
    cr_assert(bytes && at < n, "%s", path);
    bytes[at] = v;
    test_write_file(path, bytes, n);
    free(bytes);
}

/* What --prompt-cache-dir cannot use now stays: files left out of a smaller
 * budget, through a stop, and one of a newer format; a damaged one goes. A
 * write that fails keeps the file holding the start of its conversation (the
 * entry it grew from), and what is stale besides still goes. (Each used to be
 * deleted, or to stop every deletion.) */
Test(prompt_cache, the_directory_keeps_what_it_cannot_use_now, .timeout = 120)
{
    fixture f;
    open_fixture(&f, NULL);
    engine *en = &f.m.en;
    size_t per = prompt_cache_position_bytes(en);
    int *a = conversation(70, 11, 0, f.V), *b = conversation(50, 12, 0, f.V),
        *d = conversation(40, 13, 0, f.V);
    errbuf e;
    char dir[4200], a60[4300], bfile[4300], name[64];
    snprintf(dir, sizeof dir, "%s/kept", f.dir);
    cr_assert_eq(dir_ensure_private(dir, &e), 0, "%s", e.msg);
    prompt_identity id = {.model = 9, .compute = "test"};
    prompt_cache_file_name(&id, a, 60, name, sizeof name);
    snprintf(a60, sizeof a60, "%s/%s", dir, name);
    prompt_cache_file_name(&id, b, 50, name, sizeof name);
    snprintf(bfile, sizeof bfile, "%s/%s", dir, name);
    prompt_cache pc;
    prompt_disk_counts c;
    prompt_cache_init(&pc, 1u << 30);
    request(&f, &pc, a, 60);
    request(&f, &pc, b, 50);                /* saves a's 60 */
    request(&f, &pc, d, 40);                /* saves b */
    prompt_cache_keep(&pc, en);             /* d */
    cr_assert_eq(pc.n, 3);
    cr_assert_eq(prompt_cache_store_dir(&pc, dir, &id, en, &c, &e), 0, "%s", e.msg);
    cr_assert_eq(count_files(dir, PROMPT_CACHE_FILE_SUFFIX), 3);
    /* they hold conversations: their owner's alone */
    struct stat sb;
    cr_assert_eq(stat(dir, &sb), 0);
    cr_expect_eq(sb.st_mode & 0777, 0700, "the directory is %o", sb.st_mode & 0777);
    cr_assert_eq(stat(a60, &sb), 0);
    cr_expect_eq(sb.st_mode & 0777, 0600, "a file is %o", sb.st_mode & 0777);
    prompt_cache_free(&pc);

    /* room for d alone, used last: the other two stay through a stop */
    engine_reset(en);
    prompt_cache_init(&pc, 45 * per);
    cr_assert_eq(prompt_cache_load_dir(&pc, dir, &id, en, &c, &e), 0, "%s", e.msg);
    cr_expect(c.loaded == 1 && c.left_out == 2, "%d loaded, %d left out", c.loaded, c.left_out);
    cr_assert_eq(prompt_cache_store_dir(&pc, dir, &id, en, &c, &e), 0, "%s", e.msg);
    cr_expect_eq(c.removed, 0, "files left out of the budget were deleted");
    cr_expect_eq(count_files(dir, PROMPT_CACHE_FILE_SUFFIX), 3);
    prompt_cache_free(&pc);

    /* a's file of a newer format stays; b's, damaged, goes */
    set_byte(a60, 8, 3);                    /* the format version */
    size_t n;
    unsigned char *bytes = test_read_file(bfile, &n);
    cr_assert_not_null(bytes);
    set_byte(bfile, n / 2, bytes[n / 2] ^ 1);
    free(bytes);
    engine_reset(en);
    prompt_cache_init(&pc, 1u << 30);
    cr_assert_eq(prompt_cache_load_dir(&pc, dir, &id, en, &c, &e), 0, "%s", e.msg);
    cr_expect(c.loaded == 1 && c.unusable == 1 && c.damaged == 1, "%d loaded, %d unusable, %d "
              "damaged", c.loaded, c.unusable, c.damaged);
    cr_expect(strstr(c.first_problem, "format version 3"), "%s", c.first_problem);
    cr_expect(strstr(c.first_damage, "checksum"), "%s", c.first_damage);
    cr_assert_eq(prompt_cache_store_dir(&pc, dir, &id, en, &c, &e), 0, "%s", e.msg);
    cr_expect_eq(c.removed, 1);
    cr_expect(test_path_exists(a60), "the newer format's file was deleted");
    cr_expect(!test_path_exists(bfile), "the damaged file was kept");
    prompt_cache_free(&pc);

    /* a's 60 read again; its 70 replace them in the cache, and their write
     * fails: the 60 stay on disk, a leftover of a write cut short goes */
    set_byte(a60, 8, 1);
    engine_reset(en);
    prompt_cache_init(&pc, 1u << 30);
    cr_assert_eq(prompt_cache_load_dir(&pc, dir, &id, en, &c, &e), 0, "%s", e.msg);
    cr_assert_eq(c.loaded, 2, "%s", c.first_problem);
    request(&f, &pc, a, 70);
    prompt_cache_keep(&pc, en);
    char leftover[4400];
    snprintf(leftover, sizeof leftover, "%s.tmp.99999", a60);
    test_write_file(leftover, "MTPROMPT", 8);
    int rc = store_dir_limited(&pc, dir, &id, en, &c, &e, 4096);
    cr_expect_eq(rc, -1);
    cr_expect(strstr(e.msg, "write failed"), "%s", e.msg);
    cr_expect_eq(c.removed, 1);
    cr_expect(!test_path_exists(leftover), "the leftover was kept");
    cr_expect(test_path_exists(a60), "the start of the conversation whose write failed was deleted");
    prompt_cache_free(&pc);
    /* and the next start has it */
    engine_reset(en);
    prompt_cache_init(&pc, 1u << 30);
    cr_assert_eq(prompt_cache_load_dir(&pc, dir, &id, en, &c, &e), 0, "%s", e.msg);
    cr_expect_eq(c.loaded, 2, "%s", c.first_problem);
    prompt_cache_free(&pc);
    free(a);
    free(b);
    free(d);
    close_fixture(&f);
}

/* A file left alone at a start (out of the budget) whose conversation an
 * entry then takes, its name the entry's, goes as the entry's own file would
 * once the entry is evicted. */
Test(prompt_cache, a_file_left_alone_then_taken_goes_with_its_entry, .timeout = 120)
{
    fixture f;
    open_fixture(&f, NULL);
    engine *en = &f.m.en;
    size_t per = prompt_cache_position_bytes(en);
    int *a = conversation(40, 21, 0, f.V), *b = conversation(40, 22, 0, f.V), *d = conversation(40, 23, 0, f.V);
    errbuf e;
    char dir[4200], afile[4300], name[64];
    snprintf(dir, sizeof dir, "%s/kept", f.dir);
    cr_assert_eq(dir_ensure_private(dir, &e), 0, "%s", e.msg);
    prompt_identity id = {.model = 11, .compute = "test"};
    prompt_cache_file_name(&id, a, 40, name, sizeof name);
    snprintf(afile, sizeof afile, "%s/%s", dir, name);
    prompt_cache pc;
    prompt_disk_counts c;
    prompt_cache_init(&pc, 1u << 30);
    request(&f, &pc, a, 40);
    request(&f, &pc, b, 40);
    prompt_cache_keep(&pc, en);
    cr_assert_eq(prompt_cache_store_dir(&pc, dir, &id, en, &c, &e), 0, "%s", e.msg);
    prompt_cache_free(&pc);
    /* room for one: b read, a left alone; then a asked for again, and d */
    engine_reset(en);
    prompt_cache_init(&pc, 45 * per);
    cr_assert_eq(prompt_cache_load_dir(&pc, dir, &id, en, &c, &e), 0, "%s", e.msg);
    cr_assert(c.loaded == 1 && c.left_out == 1, "%d loaded, %d left out", c.loaded, c.left_out);
    request(&f, &pc, a, 40);
    request(&f, &pc, d, 40);                /* keeps a, evicting b */
    cr_assert_eq(prompt_cache_store_dir(&pc, dir, &id, en, &c, &e), 0, "%s", e.msg);
    cr_expect_eq(count_files(dir, PROMPT_CACHE_FILE_SUFFIX), 1, "a's, written again");
    prompt_cache_keep(&pc, en);             /* d, evicting a */
    cr_assert_eq(prompt_cache_store_dir(&pc, dir, &id, en, &c, &e), 0, "%s", e.msg);
    cr_expect(!test_path_exists(afile), "a's file outlived its entry");
    cr_expect_eq(count_files(dir, PROMPT_CACHE_FILE_SUFFIX), 1, "d's");
    prompt_cache_free(&pc);
    free(a);
    free(b);
    free(d);
    close_fixture(&f);
}

/* A file left out of the budget that continues another keeps that one on
 * disk after its entry is evicted (else it could never be read again); a
 * file waiting for a start no file left holds goes, though another is left
 * out. */
Test(prompt_cache, a_continuation_left_alone_keeps_the_file_it_continues, .timeout = 120)
{
    fixture f;
    open_fixture(&f, NULL);
    engine *en = &f.m.en;
    size_t per = prompt_cache_position_bytes(en);
    int *a = conversation(90, 31, 40, f.V), *b = conversation(90, 32, 40, f.V), *d = conversation(40, 33, 0, f.V);
    errbuf e;
    char dir[4200], afile[4300], bfile[4300], dfile[4300], name[64];
    snprintf(dir, sizeof dir, "%s/kept", f.dir);
    cr_assert_eq(dir_ensure_private(dir, &e), 0, "%s", e.msg);
    prompt_identity id = {.model = 12, .compute = "test"};
    prompt_cache_file_name(&id, a, 90, name, sizeof name);
    snprintf(afile, sizeof afile, "%s/%s", dir, name);
    prompt_cache_file_name(&id, b, 90, name, sizeof name);
    snprintf(bfile, sizeof bfile, "%s/%s", dir, name);
    prompt_cache_file_name(&id, d, 40, name, sizeof name);
    snprintf(dfile, sizeof dfile, "%s/%s", dir, name);
    prompt_cache pc;
    prompt_disk_counts c;
    prompt_cache_init(&pc, 1u << 30);
    request(&f, &pc, a, 90);
    request(&f, &pc, b, 90);
    prompt_cache_keep(&pc, en);             /* b, on a's first 40 */
    cr_assert_eq(prompt_cache_store_dir(&pc, dir, &id, en, &c, &e), 0, "%s", e.msg);
    prompt_cache_free(&pc);
    /* room for a, not b: b left out; then d evicts a */
    engine_reset(en);
    prompt_cache_init(&pc, 100 * per);
    cr_assert_eq(prompt_cache_load_dir(&pc, dir, &id, en, &c, &e), 0, "%s", e.msg);
    cr_assert(c.loaded == 1 && c.left_out == 1, "%d loaded, %d left out", c.loaded, c.left_out);
    request(&f, &pc, d, 40);
    prompt_cache_keep(&pc, en);
    cr_assert_eq(pc.n, 1, "a was not evicted");
    cr_assert_eq(prompt_cache_store_dir(&pc, dir, &id, en, &c, &e), 0, "%s", e.msg);
    cr_expect(test_path_exists(afile), "the file b continues was deleted");
    cr_expect(test_path_exists(bfile) && test_path_exists(dfile));
    prompt_cache_free(&pc);
    engine_reset(en);
    prompt_cache_init(&pc, 1u << 30);
    cr_assert_eq(prompt_cache_load_dir(&pc, dir, &id, en, &c, &e), 0, "%s", e.msg);
    cr_expect_eq(c.loaded, 3, "%s", c.first_problem);
    prompt_cache_free(&pc);
    /* a's file gone: b waits for nothing; d, left out, does not hold its start */
    cr_assert_eq(unlink(afile), 0);
    engine_reset(en);
    prompt_cache_init(&pc, 30 * per);
    cr_assert_eq(prompt_cache_load_dir(&pc, dir, &id, en, &c, &e), 0, "%s", e.msg);
    cr_expect(c.loaded == 0 && c.left_out == 1 && c.unusable == 1, "%d loaded, %d left out, %d unusable",
              c.loaded, c.left_out, c.unusable);
    cr_assert_eq(prompt_cache_store_dir(&pc, dir, &id, en, &c, &e), 0, "%s", e.msg);
    cr_expect(!test_path_exists(bfile), "a file no start can be read for was kept");
    cr_expect(test_path_exists(dfile), "the file left out was deleted");
    prompt_cache_free(&pc);
    free(a);
    free(b);
    free(d);
    close_fixture(&f);
}

/* The same through a chain: c left out continues b, which continues a; both
 * evicted, both files stay (b's for c, a's for b), and the next start reads
 * all three. */
Test(prompt_cache, a_chain_left_alone_keeps_every_file_it_continues, .timeout = 120)
{
    fixture f;
    open_fixture(&f, NULL);
    engine *en = &f.m.en;
    size_t per = prompt_cache_position_bytes(en);
    int *a = conversation(90, 41, 40, f.V), *b = conversation(90, 42, 40, f.V), *c = conversation(90, 43, 0, f.V),
        *d = conversation(40, 44, 0, f.V), *g = conversation(40, 45, 0, f.V);
    memcpy(c, b, 50 * sizeof *c);           /* c: b's first 50, then its own */
    errbuf e;
    char dir[4200];
    snprintf(dir, sizeof dir, "%s/kept", f.dir);
    cr_assert_eq(dir_ensure_private(dir, &e), 0, "%s", e.msg);
    prompt_identity id = {.model = 13, .compute = "test"};
    prompt_cache pc;
    prompt_disk_counts cnt;
    prompt_cache_init(&pc, 1u << 30);
    request(&f, &pc, a, 90);
    request(&f, &pc, b, 90);
    request(&f, &pc, c, 90);
    prompt_cache_keep(&pc, en);
    cr_assert_eq(prompt_cache_store_dir(&pc, dir, &id, en, &cnt, &e), 0, "%s", e.msg);
    cr_assert_eq(count_files(dir, PROMPT_CACHE_FILE_SUFFIX), 3);
    prompt_cache_free(&pc);
    /* room for a and b's own rows: c left out; then d and g evict a and b */
    engine_reset(en);
    prompt_cache_init(&pc, 145 * per);
    cr_assert_eq(prompt_cache_load_dir(&pc, dir, &id, en, &cnt, &e), 0, "%s", e.msg);
    cr_assert(cnt.loaded == 2 && cnt.left_out == 1, "%d loaded, %d left out", cnt.loaded, cnt.left_out);
    request(&f, &pc, d, 40);
    request(&f, &pc, g, 40);
    prompt_cache_keep(&pc, en);
    cr_assert_eq(prompt_cache_store_dir(&pc, dir, &id, en, &cnt, &e), 0, "%s", e.msg);
    cr_expect_eq(count_files(dir, PROMPT_CACHE_FILE_SUFFIX), 5, "a file c needs was deleted");
    prompt_cache_free(&pc);
    engine_reset(en);
    prompt_cache_init(&pc, 1u << 30);
    cr_assert_eq(prompt_cache_load_dir(&pc, dir, &id, en, &cnt, &e), 0, "%s", e.msg);
    cr_expect_eq(cnt.loaded, 5, "%s", cnt.first_problem);
    prompt_cache_free(&pc);
    free(a);
    free(b);
    free(c);
    free(d);
    free(g);
    close_fixture(&f);
}

/* A conversation continuing another whose write failed is not written: its
 * file would hold positions from its base on, after a start no file holds,
 * and no later start could read it. (It was written, and the file that shared
 * its start deleted.) Once the other's write succeeds, both are. */
Test(prompt_cache, a_continuation_waits_for_the_file_it_continues, .timeout = 120)
{
    fixture f;
    open_fixture(&f, NULL);
    engine *en = &f.m.en;
    size_t rows = prompt_cache_position_bytes(en) - sizeof(int);
    int *a = conversation(100, 1, 40, f.V), *b = conversation(100, 2, 40, f.V);
    errbuf e;
    char dir[4200];
    snprintf(dir, sizeof dir, "%s/kept", f.dir);
    cr_assert_eq(dir_ensure_private(dir, &e), 0, "%s", e.msg);
    prompt_identity id = {.model = 10, .compute = "test"};
    prompt_cache pc;
    prompt_disk_counts c;
    prompt_cache_init(&pc, 1u << 30);
    request(&f, &pc, a, 90);
    request(&f, &pc, b, 90);                /* saves a's 90, whole */
    request(&f, &pc, a, 100);               /* saves b's 90 on a's first 40 */
    cr_assert_eq(pc.n, 2);
    /* room for b's file (50 positions of rows), not for a's (90) */
    int rc = store_dir_limited(&pc, dir, &id, en, &c, &e, PROMPT_FILE_HEADER + 90 * 4 + 8 + 50 * rows);
    cr_expect_eq(rc, -1);
    cr_expect_eq(c.written, 0, "b's file was written without a's");
    cr_expect_eq(count_files(dir, PROMPT_CACHE_FILE_SUFFIX), 0);
    cr_assert_eq(prompt_cache_store_dir(&pc, dir, &id, en, &c, &e), 0, "%s", e.msg);
    cr_expect_eq(c.written, 2);
    prompt_cache_free(&pc);
    engine_reset(en);
    prompt_cache_init(&pc, 1u << 30);
    cr_assert_eq(prompt_cache_load_dir(&pc, dir, &id, en, &c, &e), 0, "%s", e.msg);
    cr_expect_eq(c.loaded, 2, "%s", c.first_problem);
    prompt_cache_free(&pc);
    free(a);
    free(b);
    close_fixture(&f);
}

/* Conversations that share a long prefix (an agent's system prompt and tools)
 * hold its rows once: a conversation saved while another shares at least
 * PROMPT_CACHE_MIN_TOKENS positions with it keeps only the rows after them;
 * restored through that one, it computes as if run again. An entry others
 * depend on is not evicted before them, and the directory keeps whole
 * conversations that come back sharing again. */
static void shared_prefix_held_once(void)
{
    fixture f;
    open_fixture(&f, NULL);
    engine *en = &f.m.en;
    size_t per = prompt_cache_position_bytes(en), rows = per - sizeof(int), id4 = sizeof(int);
    /* 40 shared, then 50 each, then a next turn of 10 */
    int *a = conversation(100, 1, 40, f.V), *b = conversation(100, 2, 40, f.V);
    float *want_a = malloc((size_t)f.V * sizeof *want_a), *want_b = malloc((size_t)f.V * sizeof *want_b);
    errbuf e;
    cr_assert_eq(engine_forward(en, a, 90, want_a, 0, &e), 0, "%s", e.msg);
    cr_assert_eq(engine_forward(en, a + 90, 10, want_a, 0, &e), 0, "%s", e.msg);
    engine_reset(en);
    cr_assert_eq(engine_forward(en, b, 90, want_b, 0, &e), 0, "%s", e.msg);
    cr_assert_eq(engine_forward(en, b + 90, 10, want_b, 0, &e), 0, "%s", e.msg);
    float *want_b91 = malloc((size_t)f.V * sizeof *want_b91);
    cr_assert_eq(engine_truncate(en, 90, &e), 0, "%s", e.msg);
    cr_assert_eq(engine_forward(en, b + 90, 1, want_b91, 0, &e), 0, "%s", e.msg);
    engine_reset(en);

    prompt_cache pc;
    prompt_cache_init(&pc, 1u << 30);
    request(&f, &pc, a, 90);
    cr_expect_eq(request(&f, &pc, b, 90), 40);     /* saves a's 90, whole */
    cr_expect_eq(request(&f, &pc, a, 100), 90);    /* saves b's 90 on a's first 40 */
    cr_expect_eq(memcmp(f.logits, want_a, (size_t)f.V * sizeof *want_a), 0);
    cr_assert_eq(pc.n, 2);
    cr_expect_eq(pc.bytes, 90 * per + 90 * id4 + 50 * rows, "the shared 40 are held twice");
    /* b's next turn: its rows come from its own entry and a's */
    cr_expect_eq(request(&f, &pc, b, 100), 90);
    cr_expect_eq(memcmp(f.logits, want_b, (size_t)f.V * sizeof *want_b), 0,
                 "logits after rows restored through the shared entry differ");
    /* a's 100 are saved on a's 90, which b depends on: a third entry */
    cr_assert_eq(pc.n, 3);
    size_t three = 90 * per + (90 + 100) * id4 + (50 + 10) * rows;
    cr_expect_eq(pc.bytes, three);

    /* the same with room for just those three: an unrelated conversation
     * saves b's 100 in place of its 90 (on a's 90), and a's 100, the least
     * recently used entry nothing depends on, goes; a's 90 stays under b */
    int *c = conversation(60, 3, 0, f.V);
    prompt_cache_free(&pc);
    prompt_cache_init(&pc, three);
    engine_reset(en);
    request(&f, &pc, a, 90);
    request(&f, &pc, b, 90);
    request(&f, &pc, a, 100);
    request(&f, &pc, b, 100);
    cr_assert_eq(pc.n, 3);
    request(&f, &pc, c, 60);
    cr_expect_eq(pc.n, 2);
    cr_expect_eq(pc.evicted, 1);
    cr_expect(pc.bytes <= pc.budget);
    int longest = 0, shortest = 1000;
    for (int i = 0; i < pc.n; i++) {
        longest = pc.entries[i].n > longest ? pc.entries[i].n : longest;
        shortest = pc.entries[i].n < shortest ? pc.entries[i].n : shortest;
    }
    cr_expect(longest == 100 && shortest == 90, "%d and %d positions", shortest, longest);
    cr_expect_eq(request(&f, &pc, b, 100), 99, "b comes back through a's 90");
    cr_expect_eq(request(&f, &pc, a, 100), 90, "a's 90 are there");

    /* the directory: whole conversations, sharing again once read back */
    prompt_cache_free(&pc);
    prompt_cache_init(&pc, 1u << 30);
    engine_reset(en);
    request(&f, &pc, a, 90);
    request(&f, &pc, b, 90);
    request(&f, &pc, a, 100);
    request(&f, &pc, b, 100);
    prompt_cache_keep(&pc, en);             /* b's 100 replace its 90 */
    cr_assert_eq(pc.n, 3);
    size_t before = pc.bytes;
    char dir[4200];
    snprintf(dir, sizeof dir, "%s/kept", f.dir);
    cr_assert_eq(mkdir(dir, 0755), 0);
    prompt_identity id = {.model = 9, .compute = "test"};
    prompt_disk_counts dc;
    cr_assert_eq(prompt_cache_store_dir(&pc, dir, &id, en, &dc, &e), 0, "%s", e.msg);
    cr_expect_eq(dc.written, 3);
    prompt_cache_free(&pc);
    prompt_cache_init(&pc, 1u << 30);
    engine_reset(en);
    cr_assert_eq(prompt_cache_load_dir(&pc, dir, &id, en, &dc, &e), 0, "%s", e.msg);
    /* the entry the others continue is read first, and they share it again */
    cr_expect_eq(dc.loaded, 3, "%d loaded", dc.loaded);
    cr_expect_eq(pc.bytes, before, "%zu bytes, %zu before the stop", pc.bytes, before);
    cr_expect_lt(pc.bytes, (90 + 100 + 100) * per);
    cr_expect_eq(request(&f, &pc, a, 100), 99);
    /* b's first 90 from its 100, whose rows were its 90's, copied when the
     * 100 replaced them, then written and read back */
    engine_reset(en);
    cr_expect_eq(request(&f, &pc, b, 91), 90);
    cr_expect_eq(memcmp(f.logits, want_b91, (size_t)f.V * sizeof *want_b91), 0,
                 "logits after rows carried over from a replaced entry differ");
    prompt_cache_free(&pc);

    /* on disk too the shared rows are held once: a's 90 whole, b's 100 and
     * a's 100 their own rows (from 40 and from 90) */
    char name_a90[64], name_a100[64], name_b100[64], path[4400];
    prompt_cache_file_name(&id, a, 90, name_a90, sizeof name_a90);
    prompt_cache_file_name(&id, a, 100, name_a100, sizeof name_a100);
    prompt_cache_file_name(&id, b, 100, name_b100, sizeof name_b100);
    const char *names[3] = {name_a90, name_b100, name_a100};
    const int own_rows[3] = {90, 60, 10}, positions[3] = {90, 100, 100};
    for (int k = 0; k < 3; k++) {
        struct stat sb;
        snprintf(path, sizeof path, "%s/%s", dir, names[k]);
        cr_assert_eq(stat(path, &sb), 0, "%s", path);
        size_t want = PROMPT_FILE_HEADER + (size_t)positions[k] * 4 + 8 +
                      (size_t)own_rows[k] * (size_t)en->kv.n_layers *
                          (size_t)kv_cache_row_floats(&en->kv) * 4;
        cr_expect_eq((size_t)sb.st_size, want, "%s: %zu bytes, %zu expected", names[k],
                     (size_t)sb.st_size, want);
    }
    /* read back newest first with the one they continue the oldest: they
     * wait for it, and all three share as before */
    for (int k = 0; k < 3; k++) {
        struct timespec t[2] = {{.tv_sec = 1000000 + (k ? 100 * k : 0)}, {.tv_sec = 1000000 + 100 * k}};
        snprintf(path, sizeof path, "%s/%s", dir, names[k]);
        cr_assert_eq(utimensat(AT_FDCWD, path, t, 0), 0);
    }
    prompt_cache_init(&pc, 1u << 30);
    engine_reset(en);
    cr_assert_eq(prompt_cache_load_dir(&pc, dir, &id, en, &dc, &e), 0, "%s", e.msg);
    cr_expect(dc.loaded == 3 && pc.bytes == before, "%d loaded, %zu bytes (%zu before)", dc.loaded,
              pc.bytes, before);
    cr_expect_eq(request(&f, &pc, b, 91), 90);
    cr_expect_eq(memcmp(f.logits, want_b91, (size_t)f.V * sizeof *want_b91), 0,
                 "logits after rows read back in the other order differ");
    prompt_cache_free(&pc);
    /* without the file they continue, the other two cannot be used */
    snprintf(path, sizeof path, "%s/%s", dir, name_a90);
    cr_assert_eq(unlink(path), 0);
    prompt_cache_init(&pc, 1u << 30);
    cr_assert_eq(prompt_cache_load_dir(&pc, dir, &id, en, &dc, &e), 0, "%s", e.msg);
    cr_expect(dc.loaded == 0 && dc.unusable == 2 && pc.n == 0, "%d loaded, %d unusable",
              dc.loaded, dc.unusable);
    cr_expect(strstr(dc.first_problem, "continues a conversation") && strstr(dc.first_problem, dir), "%s",
              dc.first_problem);
    prompt_cache_free(&pc);
    free(want_b91);
    free(a);
    free(b);
    free(c);
    free(want_a);
    free(want_b);
    close_fixture(&f);
}

Test(prompt_cache, conversations_sharing_a_prefix_hold_it_once, .timeout = 120)
{
    shared_prefix_held_once();
}

/* a bf16 cache's rows (half the bytes a position) through shared entries and the directory */
Test(prompt_cache, conversations_sharing_a_prefix_hold_it_once_bf16_cache, .timeout = 120)
{
    cache_type = KV_BF16;
    shared_prefix_held_once();
}
