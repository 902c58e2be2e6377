/* testutil: see testutil.h. */
#include "testutil.h"

#include <cJSON.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/text/synth_tokenizer.h"
#include "core/text/tokenizer.h"

#include "core/base/fileutil.h"
#include "core/engine/sampler.h"
#include "core/model/safetensors.h"
#include "core/model/synth.h"
#include "kernels/gpu_probe.h"

const char *test_testdata_dir(void)
{
    const char *d = getenv("MOETIER_TESTDATA");
    return d && *d ? d : "../shared/testdata";
}

char *test_data_path(const char *rel)
{
    char *p = NULL;
    if (asprintf(&p, "%s/%s", test_testdata_dir(), rel) < 0)
        return NULL;
    return p;
}

int test_sanitized(void)
{
#if defined(__SANITIZE_ADDRESS__)
    return 1;
#else
    return 0;
#endif
}

int test_rounds(int n)
{
    return test_sanitized() ? (n / 4 > 1 ? n / 4 : 1) : n;
}

int test_path_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

char *test_testdata_model_or_skip(const char *variant)
{
    char rel[64];
    snprintf(rel, sizeof rel, "k2-tiny-%s", variant);
    char *dir = test_data_path(rel);
    if (!test_path_exists(dir)) {
        free(dir);
        cr_skip_test("testdata %s is absent (set MOETIER_TESTDATA to ../shared/testdata)", rel);
    }
    return dir;
}

void test_kimi_tokenizer_or_skip(tokenizer *tok)
{
    char *dir = test_data_path("kimi-tokenizer");
    if (!test_path_exists(dir)) {
        free(dir);
        cr_skip_test("kimi-tokenizer testdata is absent (../shared/testdata/kimi-tokenizer)");
    }
    errbuf e;
    int rc = tokenizer_load(tok, dir, &e);
    free(dir);
    cr_assert_eq(rc, 0, "%s", e.msg);
}

void *test_read_file(const char *path, size_t *n)
{
    char *buf;
    errbuf e;
    if (file_read_all(path, &buf, n, &e))
        return NULL;
    return buf;
}

struct cJSON *test_read_json(const char *path)
{
    size_t n;
    char *text = test_read_file(path, &n);
    cr_assert_not_null(text, "cannot read %s", path);
    cJSON *j = cJSON_ParseWithLength(text, n);
    free(text);
    cr_assert_not_null(j, "%s is not JSON", path);
    return j;
}

static void put_b64(char *out, size_t *o, const unsigned char *s, size_t n)
{
    static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned)s[i] << 16 | (i + 1 < n ? (unsigned)s[i + 1] << 8 : 0) |
                     (i + 2 < n ? s[i + 2] : 0);
        out[(*o)++] = a[v >> 18 & 63];
        out[(*o)++] = a[v >> 12 & 63];
        out[(*o)++] = i + 1 < n ? a[v >> 6 & 63] : '=';
        out[(*o)++] = i + 2 < n ? a[v & 63] : '=';
    }
}

void test_vocab_of(vocab *v, const char *const *extra, int n_extra)
{
    size_t cap = 256 * 16 + 1;
    for (int i = 0; i < n_extra; i++)
        cap += strlen(extra[i]) / 3 * 4 + 4 + 16;
    char *ranks = malloc(cap);
    cr_assert_not_null(ranks);
    size_t o = 0;
    for (int b = 0; b < 256 + n_extra; b++) {
        unsigned char c = (unsigned char)b;
        if (b < 256)
            put_b64(ranks, &o, &c, 1);
        else
            put_b64(ranks, &o, (const unsigned char *)extra[b - 256], strlen(extra[b - 256]));
        o += (size_t)snprintf(ranks + o, cap - o, " %d\n", b);
    }
    errbuf e = {{0}};
    cr_assert_eq(vocab_parse(v, ranks, o, "ranks", NULL, 0, NULL, 0, &e), 0, "%s", e.msg);
    free(ranks);
}

void test_synth_tokenizer(tokenizer *tok)
{
    char *dir = test_make_tmpdir("synth_tokenizer");
    errbuf e;
    cr_assert_eq(synth_tokenizer_write(dir, 2048, 2000, 2001, &e), 0, "%s", e.msg);
    cr_assert_eq(tokenizer_load(tok, dir, &e), 0, "%s", e.msg);
    test_remove_tree(dir);
    free(dir);
}

void test_write_file(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f, "cannot write %s", path);
    cr_assert_eq(fwrite(data, 1, n, f), n, "writing %s", path);
    cr_assert_eq(fclose(f), 0, "writing %s", path);
}

char *test_make_tmpdir(const char *tag)
{
    const char *base = getenv("MOETIER_TMP");
    if (!base || !*base)
        base = "/tmp";
    mkdir(base, 0755);
    char *p = NULL;
    if (asprintf(&p, "%s/%s.XXXXXX", base, tag) < 0)
        return NULL;
    if (!mkdtemp(p)) {
        free(p);
        return NULL;
    }
    return p;
}

void test_remove_tree(const char *path)
{
    char *cmd = NULL;
    if (asprintf(&cmd, "rm -rf '%s'", path) >= 0) {
        int rc = system(cmd);
        (void)rc;
    }
    free(cmd);
}

void test_synth_tiny(const char *dir, const char *format)
{
    synth_options o = synth_options_default();
    errbuf e;
    cr_assert_eq(synth_format_parse(format, &o.format, &e), 0, "%s", e.msg);
    o.out_dir = dir;
    o.force = 1;
    o.seed = 3;
    cr_assert_eq(synth_run(&o, &e), 0, "synth %s: %s", format, e.msg);
}

void test_poke_nan(const char *dir, const char *name, size_t index)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    cJSON *root = test_read_json(path);
    const cJSON *shard = cJSON_GetObjectItem(cJSON_GetObjectItem(root, "weight_map"), name);
    cr_assert(cJSON_IsString(shard), "%s is not in %s", name, path);
    snprintf(path, sizeof path, "%s/%s", dir, shard->valuestring);
    cJSON_Delete(root);
    st_file f;
    errbuf e;
    cr_assert_eq(st_file_open(&f, path, &e), 0, "%s", e.msg);
    const st_tensor *t = st_file_find(&f, name);
    cr_assert(t && index < t->numel && (t->dt == DT_F32 || t->dt == DT_BF16 || t->dt == DT_F16),
              "%s: no element %zu of a float tensor", name, index);
    size_t width = t->dt == DT_F32 ? 4 : 2;
    off_t at = (off_t)(t->file_offset + index * width);
    st_file_close(&f);
    static const uint32_t nan32 = 0x7fc00000u;
    static const uint16_t nan16 = 0x7fc0u;     /* BF16's NaN; F16's too (0x7c00 with a fraction) */
    int fd = open(path, O_WRONLY);
    cr_assert(fd >= 0 && pwrite(fd, width == 4 ? (const void *)&nan32 : &nan16, width, at) == (ssize_t)width,
              "%s: %s", path, strerror(errno));
    close(fd);
}

logit_cmp test_compare_logits(const float *g, const float *c, int rows, int n_vocab)
{
    logit_cmp r = {0};
    size_t n = (size_t)rows * (size_t)n_vocab;
    double mean = 0, var = 0, mx = 0, ss = 0;
    for (size_t i = 0; i < n; i++)
        mean += g[i];
    mean /= (double)n;
    for (size_t i = 0; i < n; i++) {
        var += (g[i] - mean) * (g[i] - mean);
        double d = isfinite(c[i]) ? fabs((double)g[i] - (double)c[i]) : INFINITY;
        mx = d > mx ? d : mx;
        ss += d * d;
    }
    double sd = sqrt(var / (double)n);
    r.max_over_std = mx / sd;
    r.rms_over_std = sqrt(ss / (double)n) / sd;
    r.rows = rows;
    for (int t = 0; t < rows; t++)
        r.top1_agree += argmax_f32(g + (size_t)t * n_vocab, n_vocab) == argmax_f32(c + (size_t)t * n_vocab, n_vocab);
    return r;
}

static char *slurp_fd(int fd)
{
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (n + 1 >= cap)
            buf = realloc(buf, cap *= 2);
        ssize_t r = read(fd, buf + n, cap - n - 1);
        if (r <= 0)
            break;
        n += (size_t)r;
    }
    buf[n] = 0;
    return buf;
}

int test_run_capture(const char *cmd, char **out, char **err)
{
    char *ofile = test_make_tmpdir("cap"), *full = NULL;
    if (asprintf(&full, "(%s) >'%s/out' 2>'%s/err'", cmd, ofile, ofile) < 0)
        return -1;
    int st = system(full);
    free(full);
    char path[4096];
    snprintf(path, sizeof path, "%s/out", ofile);
    FILE *f = fopen(path, "r");
    *out = f ? slurp_fd(fileno(f)) : strdup("");
    if (f)
        fclose(f);
    snprintf(path, sizeof path, "%s/err", ofile);
    f = fopen(path, "r");
    char *e = f ? slurp_fd(fileno(f)) : strdup("");
    if (f)
        fclose(f);
    if (err)
        *err = e;
    else
        free(e);
    test_remove_tree(ofile);
    free(ofile);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

int test_run_fmt(char **out, char **err, const char *fmt, ...)
{
    char cmd[16384];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    return test_run_capture(cmd, out, err);
}

const char *test_moetier_bin(void)
{
    const char *b = getenv("MOETIER_BIN");
    if (b && *b)
        return b;
    cr_assert(access("build/moetier", X_OK) == 0,
              "no moetier binary: MOETIER_BIN is not set and build/moetier does not exist "
              "(run through make test)");
    return "build/moetier";
}

void test_require_gpu(void)
{
    char why[256];
    if (gpu_probe(why, sizeof why) == 0)
        cr_skip_test("needs a CUDA device: %s", why);
    setenv("MOETIER_BACKEND", "cuda", 1);
}

unsigned test_rnd(test_rng *g, unsigned n)
{
    g->s = g->s * 6364136223846793005ull + 1442695040888963407ull;
    return (unsigned)(g->s >> 33) % n;
}

void test_random_pattern(test_rng *g, char *out, size_t cap, int depth)
{
    static const char *const atoms[] = {"a",    "b",   "c",      ".",   "[ab]",
                                        "[^a]", "\\d", "[a-c1]", "\\.", "\xc3\xa9"};
    static const char *const quants[] = {"", "", "", "?", "*", "+", "{2}", "{1,3}", "{0,2}", "{2,}", "*?"};
    char a[256], b[256];
    switch (depth > 2 ? 0 : test_rnd(g, 5)) {
    case 0:
    case 1: snprintf(out, cap, "%s%s", atoms[test_rnd(g, 10)], quants[test_rnd(g, 11)]); return;
    case 2:
        test_random_pattern(g, a, sizeof a, depth + 1);
        test_random_pattern(g, b, sizeof b, depth + 1);
        snprintf(out, cap, "(%s|%s)%s", a, b, quants[test_rnd(g, 11)]);
        return;
    default:
        test_random_pattern(g, a, sizeof a, depth + 1);
        test_random_pattern(g, b, sizeof b, depth + 1);
        snprintf(out, cap, "%s%s", a, b);
        return;
    }
}
