/* A prompt's KV cache in a file (`run --prompt-cache`): a prompt that starts
 * as the file's continues exactly as if its prefix had been run again, the
 * whole file gives back the very logits it was written with, a file made by
 * another model, backend or kernels, or damaged, is not used, a file that is
 * not a prompt cache is never overwritten, and a failed save leaves the old
 * file. */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "core/app/cli_common.h"
#include "core/engine/prompt_file.h"
#include "cpu_kernels/linear_kernels.h"
#include "testutil.h"

typedef struct fixture {
    char *dir, path[4200];
    cli_model m;
    int V;
    prompt_identity id;
} fixture;

static void open_typed_fixture(fixture *f, const char *backend_name, kv_type type)
{
    f->dir = test_make_tmpdir("prompt_file");
    test_synth_tiny(f->dir, "int4");
    model_flags mf = {.dir = f->dir, .ctx = 256, .chunk = 8, .quiet = 1, .backend = backend_name,
                      .cache_type = type};
    errbuf e;
    cr_assert_eq(cli_model_open(&f->m, &mf, &e), 0, "%s", e.msg);
    f->V = f->m.mw.cfg.vocab_size;
    f->id = (prompt_identity){.model = 0x1234, .compute = "test kernels"};
    snprintf(f->path, sizeof f->path, "%s/prompt.bin", f->dir);
}

static void open_fixture(fixture *f, const char *backend_name)
{
    open_typed_fixture(f, backend_name, KV_F32);
}

static void close_fixture(fixture *f)
{
    cli_model_close(&f->m);
    test_remove_tree(f->dir);
    free(f->dir);
}

static int *some_ids(int n, int seed, int V)
{
    int *ids = malloc((size_t)n * sizeof *ids);
    for (int i = 0; i < n; i++)
        ids[i] = (seed * 7919 + i * 37 + 11) % V;
    return ids;
}

static float *vec(int V)
{
    float *v = malloc((size_t)V * sizeof *v);
    cr_assert(v);
    return v;
}

/* A fresh open of the fixture's file restored into en (reset first): a
 * restore reads the rows, once per open. */
static int restore_from(fixture *f, const int *ids, int n, float *logits)
{
    prompt_file pf;
    errbuf e;
    cr_assert_eq(prompt_file_open(&pf, f->path, &f->id, &f->m.en, &e), 0, "%s", e.msg);
    engine_reset(&f->m.en);
    int k = prompt_file_restore(&pf, &f->m.en, ids, n, logits, &e);
    cr_expect_geq(k, 0, "%s", e.msg);
    prompt_file_close(&pf);
    return k;
}

static void restored_prompt(const char *backend_name, kv_type type)
{
    fixture f;
    open_typed_fixture(&f, backend_name, type);
    engine *en = &f.m.en;
    int V = f.V, *ids = some_ids(70, 1, V);
    float *after_p = vec(V), *after_pq = vec(V), *after_decode = vec(V), *got = vec(V);
    errbuf e;
    /* the reference: the prompt's first 60 (written to the file), then one
     * decode step; again, then the next 10 as one forward */
    cr_assert_eq(engine_forward(en, ids, 60, after_p, 0, &e), 0, "%s", e.msg);
    cr_assert_eq(prompt_file_save(f.path, &f.id, en, after_p, &e), 0, "%s", e.msg);
    cr_assert_eq(engine_decode(en, ids[60], after_decode, &e), 0, "%s", e.msg);
    engine_reset(en);
    cr_assert_eq(engine_forward(en, ids, 60, got, 0, &e), 0, "%s", e.msg);
    cr_assert_eq(engine_forward(en, ids + 60, 10, after_pq, 0, &e), 0, "%s", e.msg);

    /* a longer prompt: the file's 60, then the rest computed */
    cr_expect_eq(restore_from(&f, ids, 70, got), 60);
    cr_assert_eq(engine_forward(en, ids + 60, 10, got, 0, &e), 0, "%s", e.msg);
    cr_expect_eq(memcmp(got, after_pq, (size_t)V * sizeof *got), 0,
                 "logits after restored rows differ from those of the prefix run again");
    /* the file's own prompt: all of it, with its logits, and a decode step
     * after it as after the run that wrote it */
    memset(got, 0, (size_t)V * sizeof *got);
    cr_expect_eq(restore_from(&f, ids, 60, got), 60);
    cr_expect_eq(en->n_past, 60);
    cr_expect_eq(memcmp(got, after_p, (size_t)V * sizeof *got), 0, "the kept logits differ");
    cr_assert_eq(engine_decode(en, ids[60], got, &e), 0, "%s", e.msg);
    cr_expect_eq(memcmp(got, after_decode, (size_t)V * sizeof *got), 0);
    /* a shorter prompt: at most n - 1, so that a forward yields its logits
     * (the rows those of the file's run, cut); one that leaves the file at
     * 20: those 20 */
    float *after_29 = vec(V);
    engine_reset(en);
    cr_assert_eq(engine_forward(en, ids, 60, NULL, 0, &e), 0, "%s", e.msg);
    cr_assert_eq(engine_truncate(en, 29, &e), 0, "%s", e.msg);
    cr_assert_eq(engine_forward(en, ids + 29, 1, after_29, 0, &e), 0, "%s", e.msg);
    cr_expect_eq(restore_from(&f, ids, 30, got), 29);
    cr_assert_eq(engine_forward(en, ids + 29, 1, got, 0, &e), 0, "%s", e.msg);
    cr_expect_eq(memcmp(got, after_29, (size_t)V * sizeof *got), 0,
                 "logits after part of the file's rows differ");
    free(after_29);
    int *other = some_ids(40, 1, V);
    other[20] = (other[20] + 1) % V;
    cr_expect_eq(restore_from(&f, other, 40, got), 20);
    cr_expect_eq(en->n_past, 20);
    other[0] = (other[0] + 1) % V;
    cr_expect_eq(restore_from(&f, other, 40, got), 0);
    cr_expect_eq(en->n_past, 0);
    free(other);
    free(ids);
    free(after_p);
    free(after_pq);
    free(after_decode);
    free(got);
    close_fixture(&f);
}

Test(prompt_file, a_restored_prompt_computes_as_if_run_again, .timeout = 120)
{
    restored_prompt(NULL, KV_F32);
}

/* A bf16 cache's rows go to the file widened and come back with the same bits. */
Test(prompt_file, a_restored_prompt_computes_as_if_run_again_bf16_cache, .timeout = 120)
{
    restored_prompt(NULL, KV_BF16);
}

/* A q8_0 cache's rows, scales and padding included, the same way. */
Test(prompt_file, a_restored_prompt_computes_as_if_run_again_q8_cache, .timeout = 120)
{
    restored_prompt(NULL, KV_Q8_0);
}

/* The rows come back into the GPU's memory, written from it. */
Test(prompt_file, a_restored_prompt_computes_as_if_run_again_gpu, .timeout = 300)
{
    test_require_gpu();
    restored_prompt("cuda", KV_F32);
}

/* A file saved without logits (a prompt stopped part way) gives back at most
 * n - 1 positions even for its own prompt. */
Test(prompt_file, without_logits_the_last_position_is_computed, .timeout = 120)
{
    fixture f;
    open_fixture(&f, NULL);
    engine *en = &f.m.en;
    int *ids = some_ids(40, 2, f.V);
    float *got = vec(f.V);
    errbuf e;
    cr_assert_eq(engine_forward(en, ids, 40, got, 0, &e), 0, "%s", e.msg);
    cr_assert_eq(prompt_file_save(f.path, &f.id, en, NULL, &e), 0, "%s", e.msg);
    prompt_file pf;
    cr_assert_eq(prompt_file_open(&pf, f.path, &f.id, en, &e), 0, "%s", e.msg);
    cr_expect_null(pf.logits);
    engine_reset(en);
    cr_expect_eq(prompt_file_restore(&pf, en, ids, 40, got, &e), 39);
    prompt_file_close(&pf);
    free(got);
    free(ids);
    close_fixture(&f);
}

/* whether the file opens and its rows read back with the checksum agreeing */
static int usable(fixture *f, const prompt_identity *id, errbuf *e)
{
    prompt_file pf;
    if (prompt_file_open(&pf, f->path, id, &f->m.en, e))
        return 0;
    int ok = prompt_file_read_rows(&pf, NULL, NULL, e) == 0;
    prompt_file_close(&pf);
    return ok;
}

static void expect_unusable(fixture *f, const prompt_identity *id, const char *needle)
{
    errbuf e;
    cr_expect(!usable(f, id, &e), "used, expected '%s'", needle);
    cr_expect(strstr(e.msg, needle) != NULL, "'%s' lacks '%s'", e.msg, needle);
    cr_expect(strstr(e.msg, f->path) != NULL, "'%s' does not name the file", e.msg);
}

/* the file's bytes with one changed, the checksum at the end made right
 * again when `fix_sum` (so that only the field's own check can catch it) */
static void write_changed(const fixture *f, const unsigned char *orig, size_t n, size_t at,
                          unsigned char value, int fix_sum)
{
    unsigned char *b = malloc(n);
    memcpy(b, orig, n);
    b[at] = value;
    if (fix_sum) {
        uint64_t sum = XXH3_64bits(b, n - 8);
        for (int i = 0; i < 8; i++)
            b[n - 8 + i] = (unsigned char)(sum >> (8 * i));
    }
    test_write_file(f->path, b, n);
    free(b);
}

Test(prompt_file, a_file_made_otherwise_or_damaged_is_not_used, .timeout = 120)
{
    fixture f;
    open_fixture(&f, NULL);
    engine *en = &f.m.en;
    int *ids = some_ids(20, 3, f.V);
    float *logits = vec(f.V);
    errbuf e;
    cr_assert_eq(engine_forward(en, ids, 20, logits, 0, &e), 0, "%s", e.msg);
    cr_assert_eq(prompt_file_save(f.path, &f.id, en, logits, &e), 0, "%s", e.msg);
    size_t n;
    unsigned char *orig = test_read_file(f.path, &n);
    cr_assert(orig);
    size_t rows_at = PROMPT_FILE_HEADER + 20 * 4 + (size_t)f.V * 4;
    cr_expect_eq(n, rows_at + (size_t)en->kv.n_layers * 20 * (size_t)en->kv.row * 4 + 8);

    prompt_identity other = f.id;
    other.model++;
    expect_unusable(&f, &other, "another checkpoint");
    other = f.id;
    snprintf(other.compute, sizeof other.compute, "cpu avx2");
    expect_unusable(&f, &other, "made with the test kernels kernels; this run computes with the cpu avx2");

    write_changed(&f, orig, n, rows_at + 5, orig[rows_at + 5] ^ 1, 0);
    expect_unusable(&f, &f.id, "checksum");
    /* a restore that finds it so leaves the engine empty */
    prompt_file pf;
    cr_assert_eq(prompt_file_open(&pf, f.path, &f.id, en, &e), 0, "%s", e.msg);
    engine_reset(en);
    cr_expect_eq(prompt_file_restore(&pf, en, ids, 20, logits, &e), -1);
    cr_expect_eq(en->n_past, 0);
    prompt_file_close(&pf);
    write_changed(&f, orig, n, 8, 3, 1);                /* version */
    expect_unusable(&f, &f.id, "version 3");
    write_changed(&f, orig, n, 12, 64, 1);              /* header bytes */
    expect_unusable(&f, &f.id, "a header of 64 bytes (version 1's has 128)");
    write_changed(&f, orig, n, 8, 2, 1);                /* version 2 with no base */
    expect_unusable(&f, &f.id, "damaged header (20 positions from 0");
    write_changed(&f, orig, n, 56, orig[56] + 1, 1);    /* layers */
    expect_unusable(&f, &f.id, "layers");
    write_changed(&f, orig, n, PROMPT_FILE_HEADER + 4 * 7 + 3, 0x80, 1);   /* id 7 < 0 */
    expect_unusable(&f, &f.id, "at position 7");
    test_write_file(f.path, orig, n - 4);
    expect_unusable(&f, &f.id, "where its header describes");
    test_write_file(f.path, orig, 64);
    expect_unusable(&f, &f.id, "cut short");
    test_write_file(f.path, orig, n);
    cr_expect(usable(&f, &f.id, &e), "%s", e.msg);
    (void)pf;
    free(orig);
    free(ids);
    free(logits);
    close_fixture(&f);
}

typedef struct seen_rows {
    int first, end, calls;
} seen_rows;

static void note_rows(void *ctx, int layer, int first, int count, const float *rows)
{
    seen_rows *r = ctx;
    (void)rows;
    if (layer == 0) {
        r->first = r->calls++ ? r->first : first;
        r->end = first + count;
    }
}

/* A file of a server's directory that continues another conversation (version
 * 2, rows from position `base` on): its size counts those rows only, its rows
 * read back from base with the checksum agreeing, a base changed in its header
 * makes it damaged, and `run --prompt-cache` refuses to restore it. */
Test(prompt_file, a_file_holding_rows_from_a_base_on, .timeout = 120)
{
    fixture f;
    open_fixture(&f, NULL);
    engine *en = &f.m.en;
    int *ids = some_ids(30, 5, f.V);
    errbuf e;
    cr_assert_eq(engine_forward(en, ids, 30, NULL, 0, &e), 0, "%s", e.msg);
    size_t row = (size_t)en->kv.row, L = (size_t)en->kv.n_layers;
    float *host = malloc(L * 30 * row * sizeof *host);
    cr_assert_not_null(host);
    kv_cache_save(&en->kv, 0, 30, host);
    kv_span span = {.rows = host, .first = 0, .end = 30, .stride = 30};
    cr_assert_eq(prompt_file_save_spans(f.path, &f.id, en, ids, 30, 12, &span, 1, &e), 0, "%s",
                 e.msg);
    size_t n;
    unsigned char *orig = test_read_file(f.path, &n);
    cr_assert(orig);
    cr_expect_eq(n, PROMPT_FILE_HEADER + 30 * 4 + L * 18 * row * 4 + 8, "%zu bytes", n);
    cr_expect_eq(orig[8], 2, "version %d", orig[8]);
    prompt_file pf;
    cr_assert_eq(prompt_file_open(&pf, f.path, &f.id, en, &e), 0, "%s", e.msg);
    cr_expect(pf.base == 12 && pf.n == 30, "base %d of %d", pf.base, pf.n);
    seen_rows r = {0};
    cr_expect_eq(prompt_file_read_rows(&pf, note_rows, &r, &e), 0, "%s", e.msg);
    cr_expect(r.first == 12 && r.end == 30, "rows %d..%d", r.first, r.end);
    prompt_file_close(&pf);
    cr_assert_eq(prompt_file_open(&pf, f.path, &f.id, en, &e), 0, "%s", e.msg);
    engine_reset(en);
    cr_expect_eq(prompt_file_restore(&pf, en, ids, 30, NULL, &e), -1);
    cr_expect(strstr(e.msg, "positions 12 to 30 only"), "%s", e.msg);
    cr_expect_eq(en->n_past, 0);
    prompt_file_close(&pf);
    write_changed(&f, orig, n, 76, 11, 1);              /* base 11: one row short */
    expect_unusable(&f, &f.id, "where its header describes");
    write_changed(&f, orig, n, 76, 30, 1);              /* base past the end */
    expect_unusable(&f, &f.id, "damaged header");
    cr_expect_eq(prompt_file_save_spans(f.path, &f.id, en, ids, 30, 30, &span, 1, &e), -1);
    free(orig);
    free(host);
    free(ids);
    close_fixture(&f);
}

Test(prompt_file, only_a_prompt_file_is_read_or_replaced)
{
    char *dir = test_make_tmpdir("prompt_probe");
    char p[4200];
    errbuf e;
    snprintf(p, sizeof p, "%s/none", dir);
    cr_expect_eq(prompt_file_probe(p, &e), 0, "no file: nothing to read yet");
    test_write_file(p, "", 0);
    cr_expect_eq(prompt_file_probe(p, &e), 0, "an empty file: nothing to read yet");
    test_write_file(p, "MTPROMPT", 8);
    cr_expect_eq(prompt_file_probe(p, &e), 1);
    test_write_file(p, "MTPROMPT\1\0\0\0", 12);
    cr_expect_eq(prompt_file_probe(p, &e), 1);
    test_write_file(p, "MTPROMPT\2\0\0\0", 12);
    cr_expect_eq(prompt_file_probe(p, &e), -1, "a server directory's part of a conversation");
    cr_expect(strstr(e.msg, "--prompt-cache-dir") && strstr(e.msg, p), "%s", e.msg);
    test_write_file(p, "my notes\n", 9);
    cr_expect_eq(prompt_file_probe(p, &e), -1);
    cr_expect(strstr(e.msg, "is not a moetier prompt cache") && strstr(e.msg, p), "%s", e.msg);
    cr_expect_eq(prompt_file_probe(dir, &e), -1);
    cr_expect(strstr(e.msg, "directory"), "%s", e.msg);
    snprintf(p, sizeof p, "%s/fifo", dir);
    cr_assert_eq(mkfifo(p, 0600), 0);
    cr_expect_eq(prompt_file_probe(p, &e), -1);
    cr_expect(strstr(e.msg, "FIFO") || strstr(e.msg, "fifo"), "%s", e.msg);
    snprintf(p, sizeof p, "%s/link", dir);
    cr_assert_eq(symlink("nowhere", p), 0);
    cr_expect_eq(prompt_file_probe(p, &e), -1);
    cr_expect(strstr(e.msg, "symbolic link to nothing"), "%s", e.msg);
    test_remove_tree(dir);
    free(dir);
}

/* A save that fails part way (here: past the file size limit) leaves the
 * file that was there, and no temporary file beside it. */
Test(prompt_file, a_failed_save_leaves_the_old_file, .timeout = 120)
{
    fixture f;
    open_fixture(&f, NULL);
    engine *en = &f.m.en;
    int *ids = some_ids(60, 4, f.V);
    errbuf e;
    cr_assert_eq(engine_forward(en, ids, 2, NULL, 0, &e), 0, "%s", e.msg);
    cr_assert_eq(prompt_file_save(f.path, &f.id, en, NULL, &e), 0, "%s", e.msg);
    size_t n_before;
    void *before = test_read_file(f.path, &n_before);
    cr_assert_eq(engine_forward(en, ids + 2, 58, NULL, 0, &e), 0, "%s", e.msg);
    struct rlimit old, small = {.rlim_cur = n_before + 4096};
    getrlimit(RLIMIT_FSIZE, &old);
    small.rlim_max = old.rlim_max;
    signal(SIGXFSZ, SIG_IGN);
    cr_assert_eq(setrlimit(RLIMIT_FSIZE, &small), 0);
    int rc = prompt_file_save(f.path, &f.id, en, NULL, &e);
    setrlimit(RLIMIT_FSIZE, &old);
    cr_expect_eq(rc, -1);
    cr_expect(strstr(e.msg, "write failed"), "%s", e.msg);
    size_t n_after;
    void *after = test_read_file(f.path, &n_after);
    cr_expect(n_after == n_before && !memcmp(before, after, n_before), "the old file changed");
    char *out, *err;
    cr_expect_eq(test_run_fmt(&out, &err, "ls -A '%s' | grep -c prompt.bin", f.dir), 0);
    cr_expect_eq(atoi(out), 1, "files beside it: %s", out);
    free(out);
    free(err);
    free(before);
    free(after);
    free(ids);
    close_fixture(&f);
}

static char *last_line(char *out)
{
    size_t L = strlen(out);
    while (L && out[L - 1] == '\n')
        out[--L] = 0;
    return strrchr(out, '\n') ? strrchr(out, '\n') + 1 : out;
}

/* For `run --prompt-cache`: a synthesized model in a new directory (returned),
 * a prompt of 50 ids (ids, 512 bytes) and the file's path there (pc) */
static char *run_fixture(const char *name, char *ids, char *pc, size_t pc_cap)
{
    char *dir = test_make_tmpdir(name);
    test_synth_tiny(dir, "int4");
    ids[0] = 0;
    for (int i = 0; i < 50; i++)
        sprintf(ids + strlen(ids), "%s%d", i ? "," : "", 100 + 3 * i);
    snprintf(pc, pc_cap, "%s/p.cache", dir);
    return dir;
}

/* A file made with the FMA prefill products is not used by a run on the AMX
 * tiles (their bits differ), and the other way round: the identity names them. */
Test(prompt_file, files_of_the_fma_and_amx_products_are_kept_apart, .timeout = 120)
{
    if (!kernel_amx_supported())
        cr_skip_test("this CPU has no AMX: its prefill products cannot be compared here");
    char ids[512], pc[4200];
    char *dir = run_fixture("prompt_amx", ids, pc, sizeof pc);
    const char *bin = test_moetier_bin();
    char *out, *err;
    const char *cmd = "MOETIER_AMX=%d %s run -m %s --ids %s -n 2 --greedy --prompt-cache %s";
    cr_assert_eq(test_run_fmt(&out, &err, cmd, 0, bin, dir, ids, pc), 0, "%s", err);
    cr_expect(strstr(err, "50 positions written"), "%s", err);
    free(out);
    free(err);
    cr_assert_eq(test_run_fmt(&out, &err, cmd, 1, bin, dir, ids, pc), 0, "%s", err);
    cr_expect(strstr(err, "made with the cpu avx512 kernels; this run computes with the cpu avx512+amx ones") &&
                  strstr(err, "prefill: 50 tokens"), "%s", err);
    free(out);
    free(err);
    cr_assert_eq(test_run_fmt(&out, &err, cmd, 0, bin, dir, ids, pc), 0, "%s", err);
    cr_expect(strstr(err, "made with the cpu avx512+amx kernels; this run computes with the cpu avx512 ones"),
              "%s", err);
    free(out);
    free(err);
    test_remove_tree(dir);
    free(dir);
}

/* `run --prompt-cache`: the same command gives the same output without
 * computing the prompt, a longer prompt computes only its new tokens,
 * --prompt-cache-ro leaves the file, --prompt-cache-all keeps the reply, and
 * a file that is not a prompt cache is refused before the model loads. */
Test(prompt_file, run_keeps_the_prompt_in_a_file, .timeout = 120)
{
    char ids[512], pc[4200];
    char *dir = run_fixture("prompt_cli", ids, pc, sizeof pc);
    const char *bin = test_moetier_bin();
    char *out, *err, first[256];
    const char *cmd = "%s run -m %s --ids %s -n 6 --temp 0.9 --seed 7 --print-ids --prompt-cache %s%s";
    cr_assert_eq(test_run_fmt(&out, &err, cmd, bin, dir, ids, pc, ""), 0, "%s", err);
    snprintf(first, sizeof first, "%s", last_line(out));
    cr_expect(strstr(err, "nothing saved yet") && strstr(err, "50 positions written"), "%s", err);
    free(out);
    free(err);
    cr_assert_eq(test_run_fmt(&out, &err, cmd, bin, dir, ids, pc, ""), 0, "%s", err);
    cr_expect_str_eq(last_line(out), first, "the same command, another output");
    cr_expect(strstr(err, "50 of the prompt's 50 tokens restored") && strstr(err, "prefill: 0 tokens"),
              "%s", err);
    cr_expect(!strstr(err, "written"), "nothing new to write: %s", err);
    free(out);
    free(err);
    /* read only: used, not written */
    size_t n0, n1;
    void *b0 = test_read_file(pc, &n0);
    cr_assert_eq(test_run_fmt(&out, &err, cmd, bin, dir, "100,103,106,1,2,3", pc, " --prompt-cache-ro"),
                 0, "%s", err);
    cr_expect(strstr(err, "3 of the prompt's 6 tokens restored") && strstr(err, "prefill: 3 tokens"),
              "%s", err);
    void *b1 = test_read_file(pc, &n1);
    cr_expect(n0 == n1 && !memcmp(b0, b1, n0), "--prompt-cache-ro wrote the file");
    free(b0);
    free(b1);
    free(out);
    free(err);
    /* with the reply: a prompt that is the last one and its reply (but the
     * last token, not yet run) computes nothing, and greedy picks that token;
     * (top-n-sigma rules tokens out of the rows it samples: not of the file's) */
    cr_assert_eq(test_run_fmt(&out, &err, "%s run -m %s --ids %s -n 6 --greedy --top-nsigma 0.01 --print-ids "
                              "--prompt-cache %s --prompt-cache-all", bin, dir, ids, pc), 0, "%s", err);
    cr_expect(strstr(err, "55 positions written"), "%s", err);
    char reply[256], longer[1024], *last;
    snprintf(reply, sizeof reply, "%s", last_line(out));
    last = strrchr(reply, ',');
    cr_assert(last);
    *last++ = 0;
    snprintf(longer, sizeof longer, "%s,%s", ids, reply);
    free(out);
    free(err);
    cr_assert_eq(test_run_fmt(&out, &err, "%s run -m %s --ids %s -n 1 --greedy --print-ids "
                              "--prompt-cache %s", bin, dir, longer, pc), 0, "%s", err);
    cr_expect(strstr(err, "55 of the prompt's 55 tokens restored"), "%s", err);
    cr_expect_str_eq(last_line(out), last);
    free(out);
    free(err);
    /* the restored logits are the model's: sampled, what a run without the file draws */
    const char *sampled = "%s run -m %s --ids %s -n 3 --temp 1.5 --seed %d --print-ids%s%s";
    for (int seed = 1; seed <= 3; seed++) {
        char *fresh;
        cr_assert_eq(test_run_fmt(&fresh, &err, sampled, bin, dir, longer, seed, "", ""), 0, "%s", err);
        free(err);
        cr_assert_eq(test_run_fmt(&out, &err, sampled, bin, dir, longer, seed, " --prompt-cache-ro --prompt-cache ",
                                  pc), 0, "%s", err);
        cr_expect(strstr(err, "55 of the prompt's 55 tokens restored"), "%s", err);
        cr_expect_str_eq(last_line(out), last_line(fresh), "seed %d", seed);
        free(fresh);
        free(out);
        free(err);
    }
    /* a prompt the file's extends: restored, and the longer file kept */
    cr_assert_eq(test_run_fmt(&out, &err, cmd, bin, dir, ids, pc, ""), 0, "%s", err);
    cr_expect(strstr(err, "49 of the prompt's 50 tokens restored (it held 55)") &&
              strstr(err, "kept as it is") && !strstr(err, "written"), "%s", err);
    free(out);
    free(err);
    cr_assert_eq(test_run_fmt(&out, &err, "%s run -m %s --ids %s -n 1 --greedy --print-ids "
                              "--prompt-cache %s", bin, dir, longer, pc), 0, "%s", err);
    cr_expect(strstr(err, "55 of the prompt's 55 tokens restored"), "%s", err);
    free(out);
    free(err);
    /* a changed byte among the rows: said, not used (the prompt computed), replaced */
    size_t n2;
    unsigned char *bytes = test_read_file(pc, &n2);
    bytes[n2 - 100] ^= 0x40;
    test_write_file(pc, bytes, n2);
    free(bytes);
    cr_assert_eq(test_run_fmt(&out, &err, cmd, bin, dir, ids, pc, ""), 0, "%s", err);
    cr_expect(strstr(err, "damaged (its checksum") && strstr(err, "not used, it will be replaced") &&
              strstr(err, "prefill: 50 tokens") && strstr(err, "50 positions written"), "%s", err);
    free(out);
    free(err);
    /* not a prompt cache: refused, left as it is */
    char notes[4200];
    snprintf(notes, sizeof notes, "%s/notes.txt", dir);
    test_write_file(notes, "keep me\n", 8);
    cr_expect_eq(test_run_fmt(&out, &err, cmd, bin, dir, ids, notes, ""), 1);
    cr_expect(strstr(err, "is not a moetier prompt cache") && !strstr(err, "CPU backend"),
              "refused before the model loads: %s", err);
    void *kept = test_read_file(notes, &n0);
    cr_expect(n0 == 8 && !memcmp(kept, "keep me\n", 8));
    free(kept);
    free(out);
    free(err);
    char cfg[4200];
    snprintf(cfg, sizeof cfg, "%s/config.json", dir);
    cr_expect_eq(test_run_fmt(&out, &err, cmd, bin, dir, ids, cfg, ""), 1);
    cr_expect(strstr(err, "is the checkpoint's config.json"), "%s", err);
    free(out);
    free(err);
    cr_expect_eq(test_run_fmt(&out, &err, "%s run -m %s --ids 1,2 --prompt-cache-ro", bin, dir), 2);
    cr_expect(strstr(err, "need --prompt-cache FILE"), "%s", err);
    free(out);
    free(err);
    test_remove_tree(dir);
    free(dir);
}

/* `chat --prompt-cache`: the conversation is kept at the end (and at
 * /reset), and a later chat with the same system message restores it and
 * computes only its own message. */
Test(prompt_file, chat_keeps_the_conversation_in_a_file, .timeout = 120)
{
    char *dir = test_make_tmpdir("prompt_chat");
    test_synth_tiny(dir, "int4");
    const char *bin = test_moetier_bin();
    char sys[2048] = "", pc[4200], *out, *err;
    for (int i = 0; i < 60; i++)
        sprintf(sys + strlen(sys), "%srule%d", i ? " " : "", i);
    snprintf(pc, sizeof pc, "%s/chat.cache", dir);
    const char *cmd = "printf '%s\\n' | %s chat -m %s --system '%s' -n 4 --prompt-cache %s";
    cr_assert_eq(test_run_fmt(&out, &err, cmd, "hello there", bin, dir, sys, pc), 0, "%s", err);
    cr_expect(strstr(err, "nothing saved yet") && strstr(err, "positions written"), "%s", err);
    free(out);
    free(err);
    cr_assert_eq(test_run_fmt(&out, &err, cmd, "something else\\n/reset\\nthird", bin, dir, sys, pc),
                 0, "%s", err);
    /* the system message (60 words, more tokens) comes back, twice: the
     * second conversation from what /reset wrote */
    int restored = 0, of = 0, turns = 0;
    for (const char *p = err; (p = strstr(p, "prompt cache ")); p++) {
        const char *q = strstr(p, ": ");
        if (q && sscanf(q, ": %d of the prompt's %d tokens restored", &restored, &of) == 2) {
            cr_expect_gt(restored, 60, "%s", err);
            cr_expect_lt(restored, of, "%s", err);
            turns++;
        }
    }
    cr_expect_eq(turns, 2, "%s", err);
    free(out);
    free(err);
    cr_expect_eq(test_run_fmt(&out, &err, "%s chat -m %s --prompt-cache %s --prompt-cache-all < /dev/null",
                              bin, dir, pc), 2);
    cr_expect(strstr(err, "--prompt-cache-all is run's"), "%s", err);
    free(out);
    free(err);
    test_remove_tree(dir);
    free(dir);
}
