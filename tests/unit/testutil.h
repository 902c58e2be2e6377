/* testutil: helpers shared by the test files: locating test data, reading
 * binary golden files, comparing logits the way the testdata README defines,
 * scratch directories. */
#ifndef MOETIER_TESTUTIL_H
#define MOETIER_TESTUTIL_H

#include <stddef.h>

/* ../shared/testdata or $MOETIER_TESTDATA. */
const char *test_testdata_dir(void);
/* The testdata dir joined with a relative path (malloc'd). */
char *test_data_path(const char *rel);
int test_path_exists(const char *path);
/* The testdata checkpoint k2-tiny-<variant> (malloc'd path); skips the test
 * with a message when the testdata is absent. */
char *test_testdata_model_or_skip(const char *variant);
/* Loads Kimi's tokenizer from the testdata (the test fails if it cannot be
 * read); skips the test with a message when the testdata is absent. */
struct tokenizer;
void test_kimi_tokenizer_or_skip(struct tokenizer *tok);
/* A vocabulary of the 256 bytes (ids 0-255) and then tokens extra[0,
 * n_extra) (NUL-terminated bytes, ids 256 on); the test fails if it cannot
 * be made. */
struct vocab;
void test_vocab_of(struct vocab *v, const char *const *extra, int n_extra);
/* Loads the tokenizer moetier synth writes (2,048 tokens: the bytes, English
 * merges, special tokens) into tok; the test fails if it cannot. */
void test_synth_tokenizer(struct tokenizer *tok);
/* Reads a whole file; NULL when missing. */
void *test_read_file(const char *path, size_t *n);
/* The JSON in a file (the test fails when it cannot be read or parsed). */
struct cJSON *test_read_json(const char *path);
/* Writes n bytes as the whole file (the test fails if it cannot). */
void test_write_file(const char *path, const void *data, size_t n);
/* A fresh directory under $MOETIER_TMP (or /tmp); malloc'd path. */
char *test_make_tmpdir(const char *tag);
void test_remove_tree(const char *path);

/* Whether this build runs under ASan (make test SANITIZE=1), where the
 * compute runs 10 to 30 times slower: the heaviest repeated tests take fewer
 * rounds there and the plain run all of them (the sanitizers look at the
 * code paths, which the fewer rounds take too). */
int test_sanitized(void);
/* n rounds, or under the sanitizers n / 4 (at least 1). */
int test_rounds(int n);

/* A small deterministic generator for randomized tests (an LCG's high bits). */
typedef struct test_rng {
    unsigned long long s;
} test_rng;
/* A number in [0, n). */
unsigned test_rnd(test_rng *g, unsigned n);
/* A random pattern (json_regex.h's subset: literals, classes, escapes, '.',
 * groups, '|', quantifiers; no anchors) of at most about cap bytes; nested
 * up to 3 - depth levels. */
void test_random_pattern(test_rng *g, char *out, size_t cap, int depth);

typedef struct logit_cmp {
    double max_over_std, rms_over_std;
    int top1_agree, rows;
} logit_cmp;

/* std is the population std of the golden array (as compare.py). */
logit_cmp test_compare_logits(const float *golden, const float *cand, int rows, int vocab);

/* Writes a k2-tiny checkpoint (format "bf16", "fp8", "int4") into dir with
 * moetier synth's library entry point; asserts success. */
void test_synth_tiny(const char *dir, const char *format);
/* Writes a NaN into element `index` of tensor `name` (F32, BF16 or F16) of the
 * checkpoint in dir, in place; asserts success. */
void test_poke_nan(const char *dir, const char *name, size_t index);

/* Runs a command line through /bin/sh, capturing stdout and stderr (malloc'd);
 * returns the exit status. */
int test_run_capture(const char *cmd, char **out, char **err);
/* The same for a printf-formatted command line. */
int test_run_fmt(char **out, char **err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* The moetier binary the command-line tests run: $MOETIER_BIN (make test sets
 * it to the build being tested), else build/moetier when it exists; fails the
 * test when neither does. */
const char *test_moetier_bin(void);

/* Skips the test (with the reason) unless a CUDA device is usable; otherwise
 * sets MOETIER_BACKEND=cuda, so models the test opens compute on the GPU. */
void test_require_gpu(void);

#endif
