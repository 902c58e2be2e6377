/* The moetier binary as scripts drive it: `logits` writes exactly the golden
 * logits and nothing on stdout, `run --print-ids` ends stdout with the greedy ids,
 * every command has --help, and bad arguments fail with a clear message. */
#include <cJSON.h>
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "core/app/cli_common.h"
#include "core/base/decimal.h"
#include "core/text/grammar_answer.h"
#include "core/text/json_prefix.h"
#include "core/text/utf8.h"
#include "cpu_kernels/linear_kernels.h"
#include "prefetch/routing_trace.h"
#include "testutil.h"

/* a command line, printf-formatted: its exit status, stdout and stderr */
#define run test_run_fmt

static const char *bin(void)
{
    return test_moetier_bin();
}

/* The golden prompt as "1000,5,..." (malloc'd). */
static char *golden_ids_csv(const char *dir, const char *file, int n)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/golden/%s", dir, file);
    size_t len;
    int *ids = test_read_file(path, &len);
    cr_assert_eq(len, (size_t)n * 4);
    char *s = malloc((size_t)n * 12 + 1);
    s[0] = 0;
    for (int i = 0; i < n; i++)
        sprintf(s + strlen(s), "%s%d", i ? "," : "", ids[i]);
    free(ids);
    return s;
}


Test(cli, logits_matches_golden_and_prints_nothing)
{
    char *d = test_testdata_model_or_skip("fp8"), *ids = golden_ids_csv(d, "prompt_ids.i32.bin", 24);
    char *tmp = test_make_tmpdir("cli"), *out, *err;
    int rc = run(&out, &err, "%s logits -m %s --ids %s -o %s/l.f32", bin(), d, ids, tmp);
    cr_assert_eq(rc, 0, "stderr: %s", err);
    cr_expect_str_empty(out, "logits printed on stdout: %s", out);
    char path[4096];
    size_t n, gn;
    snprintf(path, sizeof path, "%s/l.f32", tmp);
    float *mine = test_read_file(path, &n);
    snprintf(path, sizeof path, "%s/golden/prefill_logits.f32.bin", d);
    float *gold = test_read_file(path, &gn);
    cr_assert_eq(n, gn, "logits file is %zu bytes, golden %zu", n, gn);
    logit_cmp c = test_compare_logits(gold, mine, 24, (int)(n / 4 / 24));
    cr_expect_leq(c.max_over_std, 1e-3);
    cr_expect_eq(c.top1_agree, 24);
    free(mine);
    free(gold);
    free(out);
    free(err);
    test_remove_tree(tmp);
    free(tmp);
    free(ids);
    free(d);
}

Test(cli, run_print_ids_is_golden_greedy)
{
    char *d = test_testdata_model_or_skip("int4"), *ids = golden_ids_csv(d, "prompt_ids.i32.bin", 24);
    char *want = golden_ids_csv(d, "generated_ids.i32.bin", 16), *out, *err;
    int rc = run(&out, &err, "%s run -m %s --ids %s -n 16 --greedy --ignore-eos --print-ids", bin(),
                 d, ids);
    cr_assert_eq(rc, 0, "stderr: %s", err);
    size_t L = strlen(out);
    while (L && out[L - 1] == '\n')
        out[--L] = 0;
    const char *last = strrchr(out, '\n') ? strrchr(out, '\n') + 1 : out;
    cr_expect_str_eq(last, want);
    cr_expect(strstr(err, "tok/s") != NULL, "no speed report on stderr: %s", err);
    free(out);
    free(err);
    free(want);
    free(ids);
    free(d);
}

Test(cli, every_command_has_help)
{
    const char *cmds[] = {"run", "logits", "perplexity", "inspect", "synth", "tokenize", "chat",
                          "convert", "bench", "tune", "serve", "trace", "trace stats",
                          "trace replay", "trace import", "bench gpu", "bench model"};
    for (size_t i = 0; i < sizeof cmds / sizeof *cmds; i++) {
        char *out, *err;
        int rc = run(&out, &err, "%s %s --help", bin(), cmds[i]);
        cr_expect_eq(rc, 0, "%s --help: %d", cmds[i], rc);
        cr_expect(strstr(out, "usage: moetier") != NULL, "%s --help: %s", cmds[i], out);
        /* each flag is described once in its usage section (shared lists once
         * repeated a command's own) */
        for (const char *l = out; (l = strstr(l, "\n  -")); l++) {
            char flag[32], again[40];
            snprintf(flag, sizeof flag, "%.*s", (int)strcspn(l + 3, " ,\n"), l + 3);
            snprintf(again, sizeof again, "\n  %s ", flag);
            const char *second = strstr(l + 1, again), *next_section = strstr(l, "\nusage:");
            cr_expect(!second || (next_section && next_section < second), "%s --help describes %s twice",
                      cmds[i], flag);
        }
        free(out);
        free(err);
    }
    char *out, *err;
    cr_expect_eq(run(&out, &err, "%s --help", bin()), 0);
    free(out);
    free(err);
    cr_expect_eq(run(&out, &err, "%s frobnicate", bin()), 2);
    cr_expect(strstr(err, "unknown command") != NULL);
    free(out);
    free(err);
}

/* What scripts read stays clean: a failed run prints nothing on stdout, output
 * that cannot be written is a failure, and --trace leaves only its file. */
Test(cli, stdout_is_clean_and_its_failures_count)
{
    char *d = test_testdata_model_or_skip("bf16"), *tmp = test_make_tmpdir("cli-out"), *out, *err;
    cr_expect_eq(run(&out, &err, "%s run -m %s --ids 1,99999 -n 2 --print-ids", bin(), d), 1);
    cr_expect_str_empty(out, "a failed run printed '%s'", out);
    cr_expect_null(strstr(err, "prefill:"), "%s", err);
    free(out);
    free(err);
    cr_expect_eq(run(&out, &err, "%s run -m %s --ids 1,2 -n 2 --print-ids >/dev/full", bin(), d), 1);
    cr_expect(strstr(err, "writing") != NULL, "%s", err);
    free(out);
    free(err);
    cr_expect_eq(run(&out, &err, "%s tokenize -m %s --text hello >/dev/full", bin(), d), 1);
    free(out);
    free(err);
    cr_assert_eq(run(&out, &err, "%s run -m %s --ids 1,2 -n 3 --trace %s/r.trace", bin(), d, tmp),
                 0, "%s", err);
    free(out);
    free(err);
    cr_assert_eq(run(&out, &err, "ls %s", tmp), 0);
    cr_expect_str_eq(out, "r.trace\n", "beside the trace: %s", out);
    free(out);
    free(err);
    cr_expect_eq(run(&out, &err, "%s trace replay %s/r.trace --cache 1e400", bin(), tmp), 2);
    free(out);
    free(err);
    cr_expect_eq(run(&out, &err, "%s trace replay %s/r.trace --cache 1e30", bin(), tmp), 0, "%s",
                 err);
    cr_expect(strstr(out, "hit rate") != NULL, "a cache past every expert holds them all: %s", out);
    free(out);
    free(err);
    /* k2-tiny routes in layers 1-3 (layer 0 is dense): a shared cache of 50 %
     * is half of 3 x 32 experts, and the trace has 3 layers */
    cr_expect_eq(run(&out, &err, "%s trace replay %s/r.trace --cache 50%% --shared --json", bin(), tmp), 0,
                 "%s", err);
    cr_expect(strstr(out, "\"cache\":48,") != NULL, "%s", out);
    free(out);
    free(err);
    cr_expect_eq(run(&out, &err, "%s trace stats %s/r.trace", bin(), tmp), 0, "%s", err);
    cr_expect(strstr(out, " 3 layers of 32 experts") != NULL, "%s", out);
    free(out);
    free(err);
    test_remove_tree(tmp);
    free(tmp);
    free(d);
}

static void expect_failure(int want_rc, const char *needle, const char *fmt, const char *a1,
                           const char *a2)
{
    char *out, *err;
    int rc = run(&out, &err, fmt, bin(), a1, a2);
    cr_expect_eq(rc, want_rc, "'%s %s': exit %d, stderr %s", a1, a2, rc, err);
    cr_expect(strstr(err, needle) != NULL, "'%s %s': stderr '%s' lacks '%s'", a1, a2, err, needle);
    free(out);
    free(err);
}

/* An output path replaces only a regular file: a FIFO, a device and a
 * symbolic link's target are written through the path (they used to become
 * regular files: `-o /dev/null` as root replaced the device); a path that is
 * one of the model's files, or the CSV being imported, is refused. */
Test(cli, outputs_replace_only_what_they_name, .timeout = 60)
{
    char *tmp = test_make_tmpdir("cli-outputs"), model[4300], path[4400], *out, *err;
    snprintf(model, sizeof model, "%s/model", tmp);
    test_synth_tiny(model, "bf16");
    const long bytes = 2L * 1024 * 4;   /* two rows of k2-tiny's 1,024 logits */
    struct stat st;
    /* a FIFO, read on the other side */
    cr_assert_eq(run(&out, &err, "cd %s && mkfifo fifo && (cat fifo > from-fifo &) && "
                     "%s logits -m %s --ids 1,2 -o fifo && sleep 0.3", tmp, bin(), model),
                 0, "%s", err);
    free(out);
    free(err);
    snprintf(path, sizeof path, "%s/fifo", tmp);
    cr_expect(stat(path, &st) == 0 && S_ISFIFO(st.st_mode), "the FIFO was replaced");
    snprintf(path, sizeof path, "%s/from-fifo", tmp);
    cr_expect(stat(path, &st) == 0 && st.st_size == bytes, "the FIFO's reader got %ld bytes",
              (long)st.st_size);
    /* an empty name is refused before anything runs (a temporary file in the
     * working directory was left to fail its rename at the end) */
    cr_expect_eq(run(&out, &err, "cd %s && %s logits -m %s --ids 1,2 -o ''; echo rc $?; ls", tmp, bin(),
                     model), 0, "%s", err);
    cr_expect(strstr(err, "empty") && strstr(out, "rc 1\n") && !strstr(out, ".tmp."), "%s%s", err, out);
    free(out);
    free(err);
    /* /dev/stdout into a pipe, and appended to a file (`>>`): written through,
     * appending (it was resolved to the file behind it, and replaced) */
    cr_assert_eq(run(&out, &err, "cd %s && %s logits -m %s --ids 1,2 -o /dev/stdout | cat > "
                     "piped && printf 0123456789 > appended && %s logits -m %s --ids 1,2 -o "
                     "/dev/stdout >> appended", tmp, bin(), model, bin(), model),
                 0, "%s", err);
    free(out);
    free(err);
    snprintf(path, sizeof path, "%s/piped", tmp);
    cr_expect(stat(path, &st) == 0 && st.st_size == bytes, "through a pipe: %ld bytes",
              (long)st.st_size);
    snprintf(path, sizeof path, "%s/appended", tmp);
    size_t n_app;
    char *app = test_read_file(path, &n_app);
    cr_expect(app && n_app == 10 + (size_t)bytes && !memcmp(app, "0123456789", 10),
              ">> /dev/stdout: %zu bytes", n_app);
    free(app);
    /* a character device (mknod needs root: skipped without it) */
    snprintf(path, sizeof path, "%s/null", tmp);
    if (mknod(path, S_IFCHR | 0666, makedev(1, 3)) == 0) {
        cr_expect_eq(run(&out, &err, "%s logits -m %s --ids 1,2 -o %s", bin(), model, path), 0,
                     "%s", err);
        free(out);
        free(err);
        cr_expect(stat(path, &st) == 0 && S_ISCHR(st.st_mode), "the device was replaced");
    }
    /* a symbolic link: it stays one, its target gets the logits and keeps its mode */
    cr_assert_eq(run(&out, &err, "cd %s && echo keep > target && chmod 600 target && ln -s target "
                     "link && %s logits -m %s --ids 1,2 -o link", tmp, bin(), model), 0, "%s", err);
    free(out);
    free(err);
    snprintf(path, sizeof path, "%s/link", tmp);
    cr_expect(lstat(path, &st) == 0 && S_ISLNK(st.st_mode), "the link was replaced");
    snprintf(path, sizeof path, "%s/target", tmp);
    cr_expect(stat(path, &st) == 0 && st.st_size == bytes && (st.st_mode & 0777) == 0600,
              "target: %ld bytes, mode %o", (long)st.st_size, st.st_mode & 0777);
    cr_expect_eq(run(&out, &err, "cd %s && ln -s nowhere/x dangling && "
                     "%s logits -m %s --ids 1,2 -o dangling", tmp, bin(), model), 1);
    cr_expect(strstr(err, "dangling: a symbolic link to nothing writable") != NULL, "%s", err);
    free(out);
    free(err);
    /* the model's own files, under their names or another (a hard link) */
    size_t n_before, n_after;
    snprintf(path, sizeof path, "%s/config.json", model);
    char *config = test_read_file(path, &n_before);
    cr_expect_eq(run(&out, &err, "%s logits -m %s --ids 1,2 -o %s/config.json", bin(), model,
                     model), 1);
    cr_expect(strstr(err, "is the checkpoint's config.json: give another path") != NULL, "%s", err);
    free(out);
    free(err);
    char *after = test_read_file(path, &n_after);
    cr_expect(after && n_after == n_before && !memcmp(config, after, n_before),
              "config.json changed");
    free(after);
    free(config);
    /* an output of an earlier run in the model directory is not one of them */
    cr_expect_eq(run(&out, &err, "%s logits -m %s --ids 1 -o %s/l.f32 && "
                     "%s logits -m %s --ids 2 -o %s/l.f32", bin(), model, model, bin(), model,
                     model), 0, "%s", err);
    free(out);
    free(err);
    cr_expect_eq(run(&out, &err, "cd %s && ln model/tiktoken.model hard && "
                     "%s run -m %s --ids 1 -n 1 --trace hard", tmp, bin(), model), 1);
    cr_expect(strstr(err, "--trace hard is the checkpoint's tiktoken.model") != NULL, "%s", err);
    free(out);
    free(err);
    cr_expect_eq(run(&out, &err, "%s convert -m %s >/dev/null 2>&1; %s logits -m %s --ids 1 -o "
                     "%s/moetier-store/index.json", bin(), model, bin(), model, model), 1);
    cr_expect(strstr(err, "is the expert store's index.json") != NULL, "%s", err);
    free(out);
    free(err);
    /* the CSV a trace is imported from */
    cr_expect_eq(run(&out, &err, "cd %s && printf 'token,layer,e0\\n0,0,1\\n' > t.csv && %s trace "
                     "import --csv t.csv -o t.csv", tmp, bin()), 2);
    cr_expect(strstr(err, "is the --csv file") != NULL, "%s", err);
    free(out);
    free(err);
    /* --trace over the command's own files: the prompt read, the logits
     * written (it used to replace them, exit 0) */
    cr_expect_eq(run(&out, &err, "cd %s && echo 'a prompt' > p.txt && %s run -m %s -f p.txt -n 1 "
                     "--trace p.txt", tmp, bin(), model), 1);
    cr_expect(strstr(err, "--trace p.txt is the -f file too") != NULL, "%s", err);
    free(out);
    free(err);
    snprintf(path, sizeof path, "%s/p.txt", tmp);
    char *prompt = test_read_file(path, &n_after);
    cr_expect(prompt && n_after == 9 && !memcmp(prompt, "a prompt\n", 9), "the prompt was replaced");
    free(prompt);
    cr_expect_eq(run(&out, &err, "cd %s && %s logits -m %s --ids 1 -o l.bin --trace ./l.bin", tmp,
                     bin(), model), 1);
    cr_expect(strstr(err, "is the -o file too") != NULL, "%s", err);
    free(out);
    free(err);
    cr_expect_eq(run(&out, &err, "cd %s && echo '{{ 1 }}' > t.jinja && %s run -m %s -p hi -n 1 "
                     "--chat --chat-template t.jinja --trace t.jinja", tmp, bin(), model), 1);
    cr_expect(strstr(err, "--trace t.jinja is the --chat-template file too") != NULL, "%s", err);
    free(out);
    free(err);
    /* chat's /save over the model's files, or over a file of the user's */
    snprintf(path, sizeof path, "%s/config.json", model);
    config = test_read_file(path, &n_before);
    cr_expect_eq(run(&out, &err, "cd %s && echo precious > mine.txt && printf '/save %s/config.json\n"
                     "/save mine.txt\n' | %s chat -m %s -n 1", tmp, model, bin(), model), 0, "%s", err);
    cr_expect(strstr(err, "is the checkpoint's config.json: give another path") != NULL, "%s", err);
    cr_expect(strstr(err, "mine.txt holds something other than a saved conversation") != NULL, "%s",
              err);
    free(out);
    free(err);
    after = test_read_file(path, &n_after);
    cr_expect(after && n_after == n_before && !memcmp(config, after, n_before), "config.json changed");
    free(after);
    free(config);
    snprintf(path, sizeof path, "%s/mine.txt", tmp);
    char *mine = test_read_file(path, &n_after);
    cr_expect(mine && n_after == 9 && !memcmp(mine, "precious\n", 9), "mine.txt was replaced");
    free(mine);
    test_remove_tree(tmp);
    free(tmp);
}

/* A closed standard input is not something else's descriptor: chat ends (it
 * used to poll its own signal pipe, which took descriptor 0, forever) and a
 * prompt read from it fails. */
Test(cli, closed_standard_input_ends_chat, .timeout = 60)
{
    char *tmp = test_make_tmpdir("cli-closed"), model[4300], *out, *err;
    snprintf(model, sizeof model, "%s/model", tmp);
    test_synth_tiny(model, "bf16");
    int rc = run(&out, &err, "timeout 20 %s chat -m %s <&-", bin(), model);
    cr_expect(rc == 0, "chat with stdin closed: status %d (124: it waited): %s", rc, err);
    free(out);
    free(err);
    cr_expect_eq(run(&out, &err, "%s run -m %s -f - <&-", bin(), model), 1);
    cr_expect(strstr(err, "standard input: cannot read") != NULL, "%s", err);
    free(out);
    free(err);
    test_remove_tree(tmp);
    free(tmp);
}

/* The speed line counts a prompt's tokens as prefill, a prompt of one too
 * (its step was counted as decode). */
Test(cli, a_one_token_prompt_is_prefill, .timeout = 60)
{
    char *tmp = test_make_tmpdir("cli-one"), *out, *err;
    test_synth_tiny(tmp, "bf16");
    cr_assert_eq(run(&out, &err, "%s run -m %s --ids 1023 -n 3 --ignore-eos", bin(), tmp), 0, "%s",
                 err);
    cr_expect(strstr(err, "prefill: 1 tokens") && strstr(err, "decode: 2 tokens"), "%s", err);
    free(out);
    free(err);
    test_remove_tree(tmp);
    free(tmp);
}

/* A grammar or schema file that reads once (standard input, a pipe) is read
 * once: it was read again after the model opened, and found empty. */
Test(cli, a_held_file_is_read_once)
{
    char *d = test_make_tmpdir("cli-held-once"), *out, *err;
    test_synth_tiny(d, "int4");
    cr_expect_eq(run(&out, &err, "printf 'root ::= \"a\" \"b\"' | %s run -m %s -p hi -n 4 --greedy "
                     "--grammar-file -", bin(), d), 0, "%s", err);
    cr_expect_str_eq(out, "ab\n");
    free(out);
    free(err);
    cr_expect_eq(run(&out, &err, "printf '{\"enum\": [\"yes\"]}' | %s run -m %s -p hi -n 6 --greedy "
                     "--json-schema-file -", bin(), d), 0, "%s", err);
    cr_expect(strstr(out, "\"yes\""), "%s", out);  /* (after any whitespace JSON allows) */
    free(out);
    free(err);
    test_remove_tree(d);
    free(d);
}

Test(cli, bad_arguments_fail_clearly)
{
    char *d = test_testdata_model_or_skip("bf16");
    expect_failure(2, "--ids", "%s run -m %s --ids %s -n 2", d, "1,,2");
    expect_failure(2, "--ids", "%s run -m %s --ids %s -n 2", d, "1,x");
    expect_failure(2, "unknown option", "%s run -m %s --ids 1 %s", d, "--bogus");
    expect_failure(2, "-n", "%s run -m %s --ids 1 -n %s", d, "-5");
    expect_failure(2, "--top-p", "%s run -m %s --ids 1 %s", d, "--top-p 7");
    /* a number too large for a float is said to be one */
    expect_failure(2, "--temp expects a number of at most", "%s run -m %s --ids 1 %s", d, "--temp 1e308");
    expect_failure(2, "--temp expects a number, got 'x'", "%s run -m %s --ids 1 %s", d, "--temp x");
    expect_failure(2, "--temp", "%s run -m %s --ids 1 %s", d, "--temp 1e39");   /* inf as a float */
    expect_failure(2, "--presence-penalty", "%s run -m %s --ids 1 %s", d, "--presence-penalty 1e39");
    expect_failure(2, "--frequency-penalty", "%s run -m %s --ids 1 %s", d, "--frequency-penalty x");
    expect_failure(2, "--dry-base must be >= 1", "%s run -m %s --ids 1 %s", d, "--dry-base 0.5");
    expect_failure(2, "--dry-penalty-last-n", "%s run -m %s --ids 1 %s", d, "--dry-penalty-last-n -2");
    expect_failure(2, "--dry-allowed-length", "%s run -m %s --ids 1 %s", d, "--dry-allowed-length -1");
    expect_failure(2, "--xtc-probability must be in [0, 1]", "%s run -m %s --ids 1 %s", d, "--xtc-probability 1.5");
    expect_failure(2, "--top-nsigma", "%s run -m %s --ids 1 %s", d, "--top-nsigma x");
    expect_failure(2, "--mirostat", "%s run -m %s --ids 1 %s", d, "--mirostat 3");
    expect_failure(2, "--typical must be in [0, 1]", "%s run -m %s --ids 1 %s", d, "--typical 2");
    expect_failure(2, "--dynatemp-range must be >= 0", "%s run -m %s --ids 1 %s", d, "--dynatemp-range -1");
    expect_failure(2, "--dry-sequence-breaker", "%s run -m %s --ids 1 %s", d, "--dry-sequence-breaker");
    expect_failure(2, "'multipleOf' is not enforced", "%s run -m %s --ids 1 %s", d,
                   "--json-schema '{\"type\": \"integer\", \"multipleOf\": 2}'");
    expect_failure(2, "--json-schema: not JSON", "%s run -m %s --ids 1 %s", d, "--json-schema '{\"type\":'");
    expect_failure(1, "--json-schema-file", "%s run -m %s --ids 1 %s", d, "--json-schema-file /nonexistent");
    expect_failure(2, "--grammar: grammar line 2: rule 'item' is used but not defined", "%s run -m %s --ids 1 %s",
                   d, "--grammar 'root ::= \"a\"\n  item'");
    expect_failure(1, "--grammar-file", "%s run -m %s --ids 1 %s", d, "--grammar-file /nonexistent");
    /* options the command would have no use for */
    expect_failure(2, "--chat-template goes with --chat or --system", "%s run -m %s --ids 1 %s", d,
                   "--chat-template kimi-k2.5");
    expect_failure(2, "--chat-template go with --chat", "%s tokenize -m %s --text hi %s", d,
                   "--chat-template kimi-k2.5");
    expect_failure(2, "--profile applies to the commands that run the model", "%s inspect -m %s %s", d,
                   "--profile");
    expect_failure(2, "--io goes with --check", "%s convert -m %s -o /nonexistent/s %s", d, "--io pread");
    expect_failure(2, "--force goes without --check", "%s convert -m %s --check %s", d, "--force");
    expect_failure(2, "--kernels picks the CPU backend's kernels", "%s run -m %s --ids 1 %s", d,
                   "--backend cuda --kernels scalar");
    expect_failure(2, "moetier tune: -m DIR is required", "%s tune %s %s", "-t", "1");
    /* tune runs on the CPU whatever $MOETIER_BACKEND says: its --kernels are taken */
    expect_failure(1, "/nonexistent/config.json", "MOETIER_BACKEND=cuda %s tune %s %s", "-m /nonexistent",
                   "--kernels scalar");
    expect_failure(2, "--file-gb goes without --check", "%s convert -m %s --check %s", d, "--file-gb 1");
    expect_failure(2, "unknown option '--foo'", "%s synth %s %s", "--foo", "");
    expect_failure(2, "--preset nope is not one of: k2-tiny", "%s synth %s %s", "--preset nope", "-o /nonexistent/x");
    expect_failure(2, "unknown config key 'n_experts_total'", "%s synth %s %s", "--set n_experts_total=4",
                   "-o /nonexistent/x");
    /* standard input reads once: not for both the prompt and the grammar */
    expect_failure(2, "-f - and --grammar-file - would both read standard input",
                   "printf 'root ::= \"a\"' | %s run -m %s -f - %s", d, "--grammar-file -");
    expect_failure(2, "give one of --json-schema", "%s run -m %s --ids 1 %s", d,
                   "--grammar 'root ::= \"a\"' --json-schema '{}'");
    expect_failure(2, "moetier chat: give one of --json-schema", "%s chat -m %s %s </dev/null", d,
                   "--grammar 'root ::= \"a\"' --json-schema '{}'");
    expect_failure(2, "--json-schema: not JSON", "%s chat -m %s %s </dev/null", d, "--json-schema '{'");
    expect_failure(2, "--dram-gb", "%s run -m %s --ids 1 %s", d, "--dram-gb 1e300");
    /* numbers in decimal notation only: strtod took these (0x10 as 16 GB) */
    expect_failure(2, "--dram-gb", "%s run -m %s --ids 1 %s", d, "--dram-gb 0x10");
    expect_failure(2, "--dram-gb", "%s run -m %s --ids 1 %s", d, "--dram-gb ' 1'");
    expect_failure(2, "--temp", "%s run -m %s --ids 1 %s", d, "--temp infinity");
    expect_failure(2, "--policy", "%s run -m %s --ids 1 %s", d, "--policy lfu:0x2");
    expect_failure(2, "--policy", "%s run -m %s --ids 1 %s", d, "--policy lfu:inf");
    expect_failure(2, "--cpu-tokens is for the GPU", "%s run -m %s --ids 1 %s", d,
                   "--cpu-tokens 3");
    expect_failure(2, "--trace applies", "%s inspect -m %s %s", d, "--trace x");
    expect_failure(2, "--budgets", "%s tune -m %s %s", d, "--budgets ''");
    expect_failure(2, "--budgets", "%s tune -m %s %s", d, "--budgets 0.5,");
    /* --trace where it cannot be written fails before the model is loaded */
    expect_failure(1, "--trace", "%s run -m %s --ids 1 %s", d, "--trace /nonexistent/t.trace");
    expect_failure(1, "outside the vocabulary", "%s run -m %s --ids %s -n 1", d, "1,99999");
    expect_failure(1, "/nonexistent: No such file", "%s run -m %s%s --ids 1", "/nonexistent", "");
    expect_failure(2, "required", "%s logits -m %s %s", d, "--ids 1");
    expect_failure(1, "context is full", "%s run -m %s --ids 1,2,3 -c %s", d, "2");
    free(d);
}

Test(cli, inspect_reports_formats_and_tiers)
{
    char *d = test_testdata_model_or_skip("fp8"), *out, *err;
    cr_assert_eq(run(&out, &err, "%s inspect -m %s", bin(), d), 0, "%s", err);
    cr_expect(strstr(out, "fp8-block") != NULL, "%s", out);
    cr_expect(strstr(out, "routed experts") != NULL, "%s", out);
    cr_expect(strstr(out, "4 (1 dense, 3 MoE)") != NULL, "%s", out);
    cr_expect(strstr(out, "chat format  kimi-k2.5") != NULL, "%s", out);
    cr_expect(strstr(out, "tokenizer    none: ") && strstr(out, "tokenizer.json"), "(the vectors have no tokenizer) %s", out);
    /* the CPU line: the kernels this CPU runs, and AMX where it has it */
    char cpu[160];
    snprintf(cpu, sizeof cpu, "\nCPU: %s kernels", kernel_path_name(kernel_path_default()));
    cr_expect(strstr(out, cpu) != NULL, "no '%s' in %s", cpu + 1, out);
    cr_expect_eq(strstr(out, "prefill on AMX tiles") != NULL, kernel_amx_supported(), "%s", out);
    /* the CPU's prefill step: the default for the plan (the vectors' model: small
     * activations, so the longest, cut to the context), or --chunk */
    cr_expect(strstr(out, "\nCPU prefill steps of 4096 tokens (activations ") != NULL, "%s", out);
    free(out);
    free(err);
    cr_assert_eq(run(&out, &err, "%s inspect -m %s --chunk 300 -c 1000", bin(), d), 0, "%s", err);
    cr_expect(strstr(out, "\nCPU prefill steps of 300 tokens") != NULL, "%s", out);
    free(out);
    free(err);
    cr_assert_eq(run(&out, &err, "%s inspect -m %s -c 1000", bin(), d), 0, "%s", err);
    cr_expect(strstr(out, "\nCPU prefill steps of 1000 tokens") != NULL, "at most the context: %s", out);
    free(out);
    free(err);
    cr_assert_eq(run(&out, &err, "MOETIER_AMX=0 MOETIER_KERNELS=avx2 %s inspect -m %s", bin(), d), 0, "%s", err);
    if (kernel_path_supported(KPATH_AVX2))
        cr_expect(strstr(out, "\nCPU: avx2 kernels\n") != NULL, "%s", out);
    cr_expect(!strstr(out, "AMX"), "%s", out);
    free(out);
    free(err);
    free(d);
}

Test(cli, tokenize_prints_ids_on_one_line)
{
    char *d = test_data_path("kimi-tokenizer"), *out, *err;
    if (!test_path_exists(d)) {
        free(d);
        cr_skip_test("kimi-tokenizer testdata absent");
    }
    cr_assert_eq(run(&out, &err, "%s tokenize -m %s --text 'The quick brown fox jumps over the lazy "
                                 "dog.'", bin(), d), 0, "%s", err);
    cr_expect_str_eq(out, "1008,5072,16331,69275,60062,1312,276,29292,7751,13\n");
    free(out);
    free(err);
    cr_assert_eq(run(&out, &err, "%s tokenize -m %s --text '<|im_end|>hi' --special", bin(), d), 0);
    cr_expect_str_eq(out, "163586,9663\n");
    free(out);
    free(err);
    cr_assert_eq(run(&out, &err, "%s tokenize -m %s --text '<|im_end|>hi'", bin(), d), 0);
    cr_expect_str_eq(out, "27,91,348,11129,91,29,9663\n", "without --special names are text");
    free(out);
    free(err);
    cr_assert_eq(run(&out, &err, "printf 'The quick' | %s tokenize -m %s --file -", bin(), d), 0);
    cr_expect_str_eq(out, "1008,5072\n");
    free(out);
    free(err);
    cr_assert_eq(run(&out, &err, "%s tokenize -m %s --text ''", bin(), d), 0);
    cr_expect_str_eq(out, "\n");
    free(out);
    free(err);
    cr_expect_eq(run(&out, &err, "printf 'a\\377b' | %s tokenize -m %s --file -", bin(), d), 1);
    cr_expect(strstr(err, "--file -: text is not valid UTF-8 at byte 1") != NULL,
              "the file is named: %s", err);
    free(out);
    free(err);
    /* --jsonl: a text a line, as --text gives each */
    cr_assert_eq(run(&out, &err, "printf '\"The quick\"\\n{\"text\": \"<|im_end|>hi\"}\\n\"\"\\n' | "
                                 "%s tokenize -m %s --special --jsonl -", bin(), d), 0, "%s", err);
    cr_expect_str_eq(out, "1008,5072\n163586,9663\n\n");
    free(out);
    free(err);
    cr_expect_eq(run(&out, &err, "printf '\"ok\"\\n\"a\\\\u0000b\"\\n' | %s tokenize -m %s --jsonl -", bin(), d), 1);
    cr_expect(strstr(err, "line 2 holds a NUL") != NULL, "a text a JSON string cannot carry is refused: %s", err);
    free(out);
    free(err);
    cr_expect_eq(run(&out, &err, "printf '[1]\\n' | %s tokenize -m %s --jsonl -", bin(), d), 1);
    cr_expect(strstr(err, "line 1 is not a JSON string") != NULL, "%s", err);
    free(out);
    free(err);
    cr_expect_eq(run(&out, &err, "%s tokenize -m /nonexistent --text hi", bin()), 1);
    cr_expect(strstr(err, "/nonexistent: No such file or directory") != NULL, "%s", err);
    free(out);
    free(err);
    free(d);
}

static char *last_line(char *out)
{
    size_t L = strlen(out);
    while (L && out[L - 1] == '\n')
        out[--L] = 0;
    return strrchr(out, '\n') ? strrchr(out, '\n') + 1 : out;
}

static void write_text(const char *path, const char *text, size_t len)
{
    FILE *f = fopen(path, "wb");
    cr_assert(f != NULL, "cannot create %s", path);
    cr_assert_eq(fwrite(text, 1, len, f), len);
    fclose(f);
}

/* The comma-separated ids of a line into ids[0, max); how many. */
static int parse_ids(const char *line, int *ids, int max)
{
    int n = 0;
    for (const char *p = line; n < max && *p; p += strcspn(p, ",") + (p[strcspn(p, ",")] != 0))
        ids[n++] = atoi(p);
    return n;
}

/* run's DRY flags reach the sampler: with every repeat penalised
 * (--dry-allowed-length 0, no breakers) a greedy answer never takes a token
 * that already followed another in the window, where without DRY the same
 * run repeats itself. */
Test(cli, dry_flags_reach_the_sampler, .timeout = 120)
{
    char *tmp = test_make_tmpdir("cli-dry"), *out, *err;
    test_synth_tiny(tmp, "int4");
    int plain[80], dry[80], n_plain, n_dry;
    cr_assert_eq(run(&out, &err, "%s run -m %s --ids 7,8 -n 64 --greedy --ignore-eos --print-ids", bin(), tmp), 0,
                 "%s", err);
    n_plain = parse_ids(last_line(out), plain, 80);
    free(out);
    free(err);
    cr_assert_eq(run(&out, &err, "%s run -m %s --ids 7,8 -n 64 --greedy --ignore-eos --print-ids "
                                 "--dry-multiplier 1000 --dry-allowed-length 0 --dry-sequence-breaker none",
                     bin(), tmp),
                 0, "%s", err);
    n_dry = parse_ids(last_line(out), dry, 80);
    free(out);
    free(err);
    cr_assert(n_plain == 64 && n_dry == 64, "%d and %d ids", n_plain, n_dry);
    int repeats_plain = 0, repeats_dry = 0;
    for (int i = 0; i < 64; i++)
        for (int k = 0; k < i; k++) {
            repeats_plain += plain[k] == plain[i];
            repeats_dry += dry[k] == dry[i];
        }
    cr_assert_gt(repeats_plain, 0, "the premise: without DRY the greedy answer repeats a token");
    cr_expect_eq(repeats_dry, 0, "with DRY, %d repeated tokens", repeats_dry);
    for (int i = 0; i < 64; i++)
        cr_expect_neq(dry[i], 8, "the prompt's second token came again at %d", i);
    test_remove_tree(tmp);
    free(tmp);
}

Test(cli, run_from_prompt_text_on_synthetic_model)
{
    char *tmp = test_make_tmpdir("clirun"), *out, *err;
    test_synth_tiny(tmp, "bf16");
    cr_assert_eq(run(&out, &err, "%s run -m %s -p 'The quick brown fox' -n 8 --seed 5 --ignore-eos "
                                 "--print-ids", bin(), tmp), 0, "%s", err);
    const char *last = last_line(out);
    int commas = 0;
    for (const char *p = last; *p; p++)
        commas += *p == ',';
    cr_expect_eq(commas, 7, "8 ids expected on the last line: '%s'", last);
    char *out2, *err2;
    cr_assert_eq(run(&out2, &err2, "%s run -m %s -p 'The quick brown fox' -n 8 --seed 5 --ignore-eos "
                                   "--print-ids", bin(), tmp), 0);
    cr_expect(strncmp(out, out2, strlen(out)) == 0, "the same seed must give the same text");
    free(out2);
    free(err2);
    free(out);
    free(err);
    /* --json-schema: sampled answers that end as soon as they are a whole value
     * the schema takes */
    for (int seed = 1; seed <= 3; seed++) {
        cr_assert_eq(run(&out, &err, "%s run -m %s -p 'Answer in JSON:' -n 400 --seed %d --temp 1 "
                                     "--json-schema '{\"type\": \"object\", \"properties\": {\"ok\": "
                                     "{\"type\": \"boolean\"}, \"color\": {\"enum\": [\"red\", \"green\"]}}, "
                                     "\"required\": [\"ok\", \"color\"], \"additionalProperties\": false}'",
                         bin(), tmp, seed), 0, "%s", err);
        cJSON *v = cJSON_Parse(out);
        cr_assert(cJSON_IsObject(v), "seed %d: '%s' is not a JSON object", seed, out);
        cr_expect(cJSON_IsBool(cJSON_GetObjectItem(v, "ok")), "%s", out);
        const cJSON *color = cJSON_GetObjectItem(v, "color");
        cr_expect(cJSON_IsString(color) && (!strcmp(color->valuestring, "red") ||
                                            !strcmp(color->valuestring, "green")), "%s", out);
        cr_expect_eq(cJSON_GetArraySize(v), 2, "%s", out);
        cJSON_Delete(v);
        free(out);
        free(err);
    }
    /* --grammar: sampled answers that are whole texts of the grammar, ended
     * there (the random model would go on) */
    errbuf e;
    const char *list = "root ::= item (\", \" item){1,3} \".\"\nitem ::= [a-z]{2,8}";
    gbnf listed;
    cr_assert_eq(gbnf_compile(&listed, list, strlen(list), &e), 0, "%s", e.msg);
    for (int seed = 1; seed <= 3; seed++) {
        cr_assert_eq(run(&out, &err, "%s run -m %s -p 'A list:' -n 200 --seed %d --temp 1 --grammar '%s'", bin(),
                         tmp, seed, list), 0, "%s", err);
        size_t n = strlen(out);
        n -= n && out[n - 1] == '\n';
        grammar_answer ga;
        cr_assert_eq(grammar_answer_init(&ga, &listed), 0);
        cr_expect(grammar_answer_feed(&ga, out, n) == 0 && grammar_answer_complete(&ga),
                  "seed %d: '%s' is not a whole list", seed, out);
        grammar_answer_free(&ga);
        free(out);
        free(err);
    }
    /* chat --grammar: each reply (a line of stdout) a whole list */
    cr_assert_eq(run(&out, &err, "printf 'A list:\\nAnother:\\n' | %s chat -m %s --no-think -n 200 --seed 4 "
                                 "--temp 1 --grammar '%s'", bin(), tmp, list), 0, "%s", err);
    int replies = 0;
    for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n"), replies++) {
        grammar_answer ga;
        cr_assert_eq(grammar_answer_init(&ga, &listed), 0);
        cr_expect(grammar_answer_feed(&ga, line, strlen(line)) == 0 && grammar_answer_complete(&ga),
                  "chat reply %d: '%s' is not a whole list", replies, line);
        grammar_answer_free(&ga);
    }
    cr_expect_eq(replies, 2, "two messages, %d replies", replies);
    free(out);
    free(err);
    gbnf_free(&listed);
    /* a prompt that leaves the answer inside a reasoning (a raw one ending with
     * "<think>", K2.5's chat with thinking on): the schema holds only what
     * follows "</think>", so the reasoning runs free (the random model does
     * not close it in 6 tokens; held, every answer would begin a JSON value) */
    const char *opened[] = {"-p 'Answer in JSON:<think>'", "--chat -p 'Answer in JSON'"};
    cJSON *any = cJSON_Parse("{}");
    json_schema any_value;
    cr_assert_eq(json_schema_compile(any, &any_value, &e), 0, "%s", e.msg);
    for (int o = 0; o < 2; o++) {
        int free_answers = 0;
        for (int seed = 1; seed <= 4; seed++) {
            cr_assert_eq(run(&out, &err, "%s run -m %s %s -n 6 --seed %d --temp 1 --json-schema '{}'", bin(),
                             tmp, opened[o], seed), 0, "%s", err);
            json_prefix j;
            json_prefix_init(&j, &any_value);
            size_t n = strlen(out);
            n -= n && out[n - 1] == '\n';   /* (run ends its output with a newline) */
            free_answers += json_prefix_feed(&j, out, n) != 0;
            free(out);
            free(err);
        }
        cr_expect(free_answers > 0, "%s: every answer began a JSON value", opened[o]);
    }
    json_schema_free(&any_value);
    cJSON_Delete(any);
    /* --presence-penalty and --frequency-penalty: the first token they change
     * is one the greedy answer already held */
    int greedy[40], penalised[40];
    cr_assert_eq(run(&out, &err, "%s run -m %s -p 'The quick brown fox' -n 40 --greedy --ignore-eos "
                                 "--print-ids", bin(), tmp), 0, "%s", err);
    int n = parse_ids(last_line(out), greedy, 40);
    cr_assert_eq(n, 40);
    int repeats = 0;
    for (int i = 0; i < n; i++)
        for (int k = 0; k < i; k++)
            repeats |= greedy[k] == greedy[i];
    cr_assert(repeats, "the greedy answer repeats no token: nothing to check");
    free(out);
    free(err);
    const char *flags[] = {"--presence-penalty 2", "--frequency-penalty 2"};
    for (int f = 0; f < 2; f++) {
        cr_assert_eq(run(&out, &err, "%s run -m %s -p 'The quick brown fox' -n 40 --greedy "
                                     "--ignore-eos --print-ids %s", bin(), tmp, flags[f]), 0, "%s", err);
        cr_assert_eq(parse_ids(last_line(out), penalised, 40), 40);
        int k = 0;
        while (k < n && penalised[k] == greedy[k])
            k++;
        cr_assert(k > 0 && k < n, "%s: changed token %d of 40", flags[f], k);
        int held = 0;
        for (int i = 0; i < k; i++)
            held |= greedy[i] == greedy[k];
        cr_expect(held, "%s: token %d changed, but the greedy one (%d) was new", flags[f], k, greedy[k]);
        free(out);
        free(err);
    }
    test_remove_tree(tmp);
    free(tmp);
}

/* -f FILE and -f - (standard input) give what -p gives; a prompt past the
 * 128 KiB a single argument may hold arrives whole; bad files fail naming them. */
/* A checkpoint whose chat template moetier does not render (Kimi K2's own
 * templates): a chat turn is refused saying why and what --chat-template
 * names; --chat-template kimi-k2.5 renders it in K2.5's format, as a model
 * without a template gets by default; raw prompts need no template. */
static void write_template(const char *dir, const char *name, const char *text)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    write_text(path, text, strlen(text));
}

Test(cli, chat_template_override, .timeout = 60)
{
    char *tmp = test_make_tmpdir("clitemplate"), *out, *err;
    test_synth_tiny(tmp, "bf16");
    cr_assert_eq(run(&out, &err, "%s run -m %s --chat -p Hi -n 3 --seed 1 --print-ids", bin(), tmp), 0,
                 "%s", err);
    char *want = strdup(last_line(out));
    free(out);
    free(err);
    /* a template of Kimi K2's shape (not K2.5's) is interpreted: this one prints
     * a lone user turn as K2.5's does, so the same tokens follow */
    write_template(tmp, "chat_template.jinja",
                   "{% for m in messages %}<|im_{{ m.role }}|>{{ m.role }}<|im_middle|>{{ m.content }}"
                   "<|im_end|>{% endfor %}{% if add_generation_prompt %}<|im_assistant|>assistant"
                   "<|im_middle|><think>{% endif %}");
    cr_assert_eq(run(&out, &err, "%s run -m %s --chat -p Hi -n 3 --seed 1 --print-ids", bin(), tmp), 0, "%s",
                 err);
    cr_expect_str_eq(last_line(out), want, "the interpreted template gives K2.5's prompt here");
    free(out);
    free(err);
    cr_assert_eq(run(&out, &err, "%s inspect -m %s", bin(), tmp), 0, "%s", err);
    cr_expect(strstr(out, "chat_template.jinja, interpreted"), "inspect says so: %s", out);
    free(out);
    free(err);
    /* a template that does not compile: named with its line, and --chat-template as the way out */
    write_template(tmp, "chat_template.jinja",
                   "{% for m in messages %}\n{{ m.content | nosuchfilter }\n{% endfor %}");
    cr_expect_eq(run(&out, &err, "%s run -m %s --chat -p Hi -n 3", bin(), tmp), 1);
    cr_expect(strstr(err, "chat_template.jinja: chat template line 2") &&
                  strstr(err, "--chat-template kimi-k2.5"),
              "%s", err);
    free(out);
    free(err);
    cr_assert_eq(run(&out, &err, "%s inspect -m %s", bin(), tmp), 0, "%s", err);
    cr_expect(strstr(out, "chat format  none: ") && strstr(out, "line 2"), "inspect says so: %s", out);
    free(out);
    free(err);
    cr_assert_eq(run(&out, &err, "%s run -m %s --chat -p Hi -n 3 --seed 1 --print-ids --chat-template "
                                 "kimi-k2.5", bin(), tmp), 0, "%s", err);
    cr_expect_str_eq(last_line(out), want, "the K2.5 format, as without a template");
    free(out);
    free(err);
    cr_expect_eq(run(&out, &err, "%s run -m %s -p Hi -n 2", bin(), tmp), 0, "raw prompts: %s", err);
    free(out);
    free(err);
    cr_expect_eq(run(&out, &err, "%s chat -m %s --chat-template k2 </dev/null", bin(), tmp), 1);
    cr_expect(strstr(err, "--chat-template") && strstr(err, "kimi-k2.5") && strstr(err, "template file"),
              "%s", err);
    free(out);
    free(err);
    /* a directory, and an empty file, are said to be what they are */
    cr_expect_eq(run(&out, &err, "%s chat -m %s --chat-template %s </dev/null", bin(), tmp, tmp), 1);
    cr_expect(strstr(err, "is a directory, not a template file") != NULL, "%s", err);
    free(out);
    free(err);
    cr_expect_eq(run(&out, &err, "cd %s && : > empty.jinja && %s chat -m %s --chat-template "
                     "empty.jinja </dev/null", tmp, bin(), tmp), 1);
    cr_expect(strstr(err, "--chat-template: empty.jinja is empty") != NULL, "%s", err);
    free(out);
    free(err);
    /* a template file named on the command line, with the model's own broken one */
    write_template(tmp, "mine.jinja",
                   "{% for m in messages %}<|im_user|>user<|im_middle|>{{ m.content }}<|im_end|>{% endfor %}"
                   "<|im_assistant|>assistant<|im_middle|><think>");
    char file[4096];
    snprintf(file, sizeof file, "%s/mine.jinja", tmp);
    cr_assert_eq(run(&out, &err, "%s run -m %s --chat -p Hi -n 3 --seed 1 --print-ids --chat-template %s",
                     bin(), tmp, file), 0, "%s", err);
    cr_expect_str_eq(last_line(out), want, "the file's template, as K2.5's prints this turn");
    free(out);
    free(err);
    free(want);
    test_remove_tree(tmp);
    free(tmp);
}

Test(cli, run_reads_the_prompt_from_a_file, .timeout = 120)
{
    char *tmp = test_make_tmpdir("clifile"), *out, *err;
    test_synth_tiny(tmp, "bf16");
    char small[512], big[512], nul[512];
    snprintf(small, sizeof small, "%s/prompt.txt", tmp);
    snprintf(big, sizeof big, "%s/big.txt", tmp);
    snprintf(nul, sizeof nul, "%s/nul.txt", tmp);
    write_text(small, "The quick brown fox", 19);
    const char *args = "-n 6 --seed 5 --ignore-eos --print-ids";
    char *want[3];
    const char *how[3] = {"-p 'The quick brown fox'", "-f %s", "-f - < %s"};
    for (int k = 0; k < 3; k++) {
        char src[1024];
        snprintf(src, sizeof src, how[k], small);
        cr_assert_eq(run(&out, &err, "%s run -m %s %s %s", bin(), tmp, src, args), 0, "%s: %s", src, err);
        want[k] = strdup(last_line(out));
        free(out);
        free(err);
    }
    cr_expect_str_eq(want[1], want[0], "-f FILE must generate what -p does");
    cr_expect_str_eq(want[2], want[0], "-f - must generate what -p does");
    for (int k = 0; k < 3; k++)
        free(want[k]);

    size_t unit = strlen("The quick brown fox jumps over the lazy dog. "), reps = 6000;
    char *text = malloc(unit * reps);
    for (size_t r = 0; r < reps; r++)
        memcpy(text + r * unit, "The quick brown fox jumps over the lazy dog. ", unit);
    write_text(big, text, unit * reps);
    free(text);
    cr_assert_eq(run(&out, &err, "%s tokenize -m %s --file %s --special", bin(), tmp, big), 0, "%s", err);
    long n_tokens = 1;
    for (const char *p = out; *p; p++)
        n_tokens += *p == ',';
    free(out);
    free(err);
    /* the context check comes before any compute, and reports the token count */
    cr_expect_eq(run(&out, &err, "%s run -m %s -f %s -n 1 -c 256", bin(), tmp, big), 1);
    char expect[128];
    snprintf(expect, sizeof expect, "0 cached + %ld new tokens", n_tokens);
    cr_expect(strstr(err, expect) != NULL, "%zu-byte file: '%s' lacks '%s'", unit * reps, err, expect);
    free(out);
    free(err);

    write_text(nul, "a\0b", 3);
    cr_expect_eq(run(&out, &err, "%s run -m %s -f %s --chat -n 1", bin(), tmp, nul), 1);
    cr_expect(strstr(err, "nul.txt") && strstr(err, "NUL byte"), "%s", err);
    free(out);
    free(err);
    cr_expect_eq(run(&out, &err, "%s run -m %s -f %s/absent.txt -n 1", bin(), tmp, tmp), 1);
    cr_expect(strstr(err, "absent.txt: cannot open") != NULL, "%s", err);
    free(out);
    free(err);
    cr_expect_eq(run(&out, &err, "%s run -m %s -f %s -p hi -n 1", bin(), tmp, small), 2);
    cr_expect(strstr(err, "exactly one of -p, -f, --ids") != NULL, "%s", err);
    free(out);
    free(err);
    test_remove_tree(tmp);
    free(tmp);
}

/* Generation that reaches the end of the context stops there, as a length
 * limit does: the ids are those a larger context gives, and the exit is clean. */
Test(cli, run_stops_at_the_end_of_the_context)
{
    char *tmp = test_make_tmpdir("clictx"), *out, *err;
    test_synth_tiny(tmp, "bf16");
    cr_assert_eq(run(&out, &err, "%s run -m %s --ids 1000,5,6,7 -n 100 -c 16 --greedy --print-ids",
                     bin(), tmp), 0, "%s", err);
    cr_expect(strstr(err, "stopped after 13 of 100 tokens: the context of 16 tokens is full"),
              "%s", err);
    char *short_ctx = strdup(last_line(out));
    free(out);
    free(err);
    cr_assert_eq(run(&out, &err, "%s run -m %s --ids 1000,5,6,7 -n 13 --greedy --print-ids", bin(),
                     tmp), 0, "%s", err);
    cr_expect_str_eq(short_ctx, last_line(out), "the 13 ids must be those of a larger context");
    cr_expect(strstr(err, "is full") == NULL, "%s", err);
    free(short_ctx);
    free(out);
    free(err);
    test_remove_tree(tmp);
    free(tmp);
}

/* One turn as chat reports it on stderr: "[N prompt tokens, R reused from the cache, ...". */
typedef struct chat_turn_line {
    int prompt, reused;
} chat_turn_line;

/* The turns reported in err (the first `max` into t); returns how many. */
static int chat_turns(const char *err, chat_turn_line *t, int max)
{
    int n = 0;
    for (const char *p = err; (p = strchr(p, '[')); p++) {
        chat_turn_line l;
        if (sscanf(p, "[%d prompt tokens, %d reused", &l.prompt, &l.reused) != 2)
            continue;
        if (n < max)
            t[n] = l;
        n++;
    }
    return n;
}

/* A chat that reaches the end of its context goes on: a reply cut there is kept,
 * a message that cannot fit is left out, and the next turn still reuses the cache. */
Test(cli, chat_at_the_end_of_the_context_goes_on)
{
    char *tmp = test_make_tmpdir("clichatctx"), *out, *err;
    test_synth_tiny(tmp, "bf16");
    cr_assert_eq(run(&out, &err, "printf 'Hello\\n%s\\nHi\\n' | %s chat -m %s -n 4 -c 48 --seed 2",
                     "Far too long a message for a context of forty-eight tokens, "
                     "with its template and a reply", bin(), tmp), 0, "%s", err);
    cr_expect(strstr(err, "it was not added") != NULL, "%s", err);
    chat_turn_line t[2] = {{0}};
    cr_expect_eq(chat_turns(err, t, 2), 2, "the long message gets no turn: %s", err);
    cr_expect_gt(t[1].reused, 10, "the turn after it reuses the first one's cache: %s", err);
    free(out);
    free(err);
    cr_assert_eq(run(&out, &err, "printf 'Hello\\nHi\\n' | %s chat -m %s -n 100 -c 48 --seed 2",
                     bin(), tmp), 0, "%s", err);
    cr_expect(strstr(err, "the context of 48 tokens is full: the reply stops here") != NULL, "%s",
              err);
    free(out);
    free(err);
    test_remove_tree(tmp);
    free(tmp);
}

/* A line ending in a backslash goes on to the next: the turn holds both lines,
 * joined by a line break, exactly as `run -f FILE --chat` sends that text; so
 * do two lines pasted at once (bracketed paste). A message with a NUL byte is
 * refused, not cut short. */
Test(cli, chat_reads_a_message_over_several_lines)
{
    char *tmp = test_make_tmpdir("clichatml"), *out, *err;
    test_synth_tiny(tmp, "bf16");
    char file[512];
    snprintf(file, sizeof file, "%s/two_lines.txt", tmp);
    write_text(file, "Line one\nline two", 17);
    cr_assert_eq(run(&out, &err, "%s run -m %s -f %s --chat -n 1", bin(), tmp, file), 0, "%s", err);
    const char *p = strstr(err, "prefill: ");
    cr_assert(p != NULL, "%s", err);
    int want = atoi(p + 9);
    free(out);
    free(err);
    cr_assert_eq(run(&out, &err, "printf 'Line one\\\\\\nline two\\n' | %s chat -m %s -n 1", bin(), tmp),
                 0, "%s", err);
    chat_turn_line t = {0};
    cr_expect_eq(chat_turns(err, &t, 1), 1, "one turn: %s", err);
    cr_expect_eq(t.prompt, want, "one turn of both lines expected: %s", err);
    free(out);
    free(err);
    cr_assert_eq(run(&out, &err, "printf 'Line one\\\\\\nline two\\\\' | %s chat -m %s -n 1", bin(),
                     tmp), 0, "%s", err);
    cr_expect_eq(chat_turns(err, &t, 1), 1, "one turn: %s", err);
    cr_expect_eq(t.prompt, want, "a backslash at the end of input adds nothing: %s", err);
    free(out);
    free(err);
    /* a terminal's bracketed paste: its line breaks are the message's */
    cr_assert_eq(run(&out, &err, "printf '\\033[200~Line one\\nline two\\033[201~\\n' | %s chat -m %s -n 1", bin(),
                     tmp), 0, "%s", err);
    cr_expect_eq(chat_turns(err, &t, 1), 1, "one turn: %s", err);
    cr_expect_eq(t.prompt, want, "a paste of both lines is one message of both: %s", err);
    free(out);
    free(err);
    cr_assert_eq(run(&out, &err, "printf 'a\\000b\\n' | %s chat -m %s -n 1", bin(), tmp), 0, "%s", err);
    cr_expect(strstr(err, "NUL byte; it was not sent") != NULL, "%s", err);
    cr_expect_eq(chat_turns(err, &t, 1), 0, "no turn: %s", err);
    free(out);
    free(err);
    test_remove_tree(tmp);
    free(tmp);
}

/* What a chat cannot send does not end it: a reply that is not valid UTF-8
 * (here the greedy reply to "last" ends in a stray byte) goes into the
 * history repaired, so the next turn's prompt is text; a message that is not
 * valid UTF-8 is refused. And /reset starts the conversation a new chat with
 * the same seed would have, repetition penalty and random draws included. */
Test(cli, chat_goes_on_past_bytes_that_are_not_text)
{
    char *tmp = test_make_tmpdir("clichatutf8"), *out, *err;
    test_synth_tiny(tmp, "bf16");
    cr_assert_eq(run(&out, &err, "printf 'msg 2\\nnext\\ncaf\\351\\nlast\\n' | %s chat -m %s --no-think "
                     "--greedy -n 3", bin(), tmp), 0, "%s", err);
    cr_expect(strstr(err, "not valid UTF-8 at byte 3; it was not sent") != NULL, "%s", err);
    /* the premise: the reply's raw bytes (as printed) are not text */
    cr_assert_neq(utf8_validate((const uint8_t *)out, strlen(out)), strlen(out),
                  "no reply had bytes that are not UTF-8, so nothing was repaired: %s", out);
    chat_turn_line t[3] = {{0}};
    cr_expect_eq(chat_turns(err, t, 3), 3, "msg 2, next and last must each get a reply: %s", err);
    free(out);
    free(err);
    /* a reply with a reserved token (run --chat --special shows it; the first
     * of these prompts whose greedy reply has one): like serve, chat shows
     * only the markers it parses */
    static const char *const prompts[] = {"hello there", "tell me more", "good morning", "nice day"};
    const char *with_reserved = NULL;
    for (size_t i = 0; i < sizeof prompts / sizeof *prompts && !with_reserved; i++) {
        cr_assert_eq(run(&out, &err, "%s run -m %s --chat -p '%s' --greedy --repeat-penalty 2 -n 12 "
                         "--special", bin(), tmp, prompts[i]), 0, "%s", err);
        if (strstr(out, "<|reserved_token_"))
            with_reserved = prompts[i];
        free(out);
        free(err);
    }
    cr_assert_not_null(with_reserved, "the premise: no reply with a reserved token");
    cr_assert_eq(run(&out, &err, "printf '%s\\n' | %s chat -m %s --greedy --repeat-penalty 2 -n 12",
                     with_reserved, bin(), tmp), 0, "%s", err);
    cr_expect(strstr(out, "<|reserved_token_") == NULL, "%s", out);
    free(out);
    free(err);
    char *first, *after_reset;
    cr_assert_eq(run(&out, &err, "printf 'hello there\\n' | %s chat -m %s --seed 4 --repeat-penalty 2 "
                     "-n 12", bin(), tmp), 0, "%s", err);
    first = out;
    free(err);
    cr_assert_eq(run(&out, &err, "printf 'something else\\n/reset\\nhello there\\n' | %s chat -m %s "
                     "--seed 4 --repeat-penalty 2 -n 12", bin(), tmp), 0, "%s", err);
    after_reset = strstr(out, "\n") ? strstr(out, "\n") + 1 : out;
    cr_expect_str_eq(after_reset, first, "after /reset the reply must be a new chat's");
    free(first);
    free(out);
    free(err);
    test_remove_tree(tmp);
    free(tmp);
}

/* On a terminal (util-linux's script gives one): bracketed paste is turned on
 * for the chat and off at its end, and the reasoning is shown dim, unless
 * NO_COLOR is set. */
Test(cli, chat_on_a_terminal, .timeout = 60)
{
    if (system("command -v script > /dev/null 2>&1") != 0)
        cr_skip_test("util-linux's script is not installed: no terminal to run chat on");
    char *tmp = test_make_tmpdir("clichattty"), *out, *err;
    test_synth_tiny(tmp, "bf16");
    for (int no_color = 0; no_color < 2; no_color++) {
        cr_assert_eq(run(&out, &err, "printf 'Hi\\n' | %s timeout 30 script -qec '%s chat -m %s -n 6 --seed 1' /dev/null",
                         no_color ? "NO_COLOR=1" : "", bin(), tmp), 0, "%s", err);
        cr_expect(strstr(out, "\033[?2004h") && strstr(out, "\033[?2004l"), "bracketed paste on, then off: %s", out);
        cr_expect_eq(strstr(out, "\033[2m") != NULL, !no_color, "the reasoning dim (NO_COLOR=%d): %s", no_color, out);
        free(out);
        free(err);
    }
    test_remove_tree(tmp);
    free(tmp);
}

/* Two turns through stdin: the second reuses the first turn's cache. */
Test(cli, chat_two_turns_reuse_the_cache)
{
    char *tmp = test_make_tmpdir("clichat"), *out, *err;
    test_synth_tiny(tmp, "bf16");
    cr_assert_eq(run(&out, &err, "printf 'Hello there\\nHow are you?\\n/exit\\nignored\\n' | %s chat -m %s "
                                 "-n 6 --seed 2 --system 'Be brief.'", bin(), tmp), 0, "%s", err);
    chat_turn_line t[2] = {{0}};
    cr_expect_eq(chat_turns(err, t, 2), 2, "two turns expected (input after /exit ignored): %s", err);
    cr_expect_gt(t[1].reused, 10, "the second turn must reuse the first one's prefix: %s", err);
    free(out);
    free(err);
    test_remove_tree(tmp);
    free(tmp);
}

/* A program that writes two messages and waits for both replies before it
 * closes the pipe gets them: the second message is not left unseen in a
 * buffer while chat waits for more input. */
Test(cli, chat_answers_each_message_a_pipe_holds, .timeout = 120)
{
    char *tmp = test_make_tmpdir("clichatpipe"), *out, *err;
    test_synth_tiny(tmp, "bf16");
    cr_assert_eq(run(&out, &err, "cd %s && { printf 'Hello there\nHow are you?\n'; i=0; "
                                 "while [ \"$(grep -c 'prompt tokens' replies 2>/dev/null)\" != 2 ]; do "
                                 "i=$((i+1)); if [ $i -gt 600 ]; then echo late > late; break; fi; sleep 0.1; "
                                 "done; } | %s chat -m %s -n 4 --seed 2 2> replies; cat replies >&2",
                     tmp, bin(), tmp), 0, "%s", err);
    char late[256];
    snprintf(late, sizeof late, "%s/late", tmp);
    cr_expect(access(late, F_OK) != 0, "the second reply waited for the pipe to close: %s", err);
    chat_turn_line t[2] = {{0}};
    cr_expect_eq(chat_turns(err, t, 2), 2, "%s", err);
    free(out);
    free(err);
    test_remove_tree(tmp);
    free(tmp);
}

/* A message the chat template refuses (two user messages in a row, here) is
 * not sent, and the chat goes on: what comes after it still runs. Files
 * /read attached stay for the message sent next. */
Test(cli, chat_goes_on_past_a_message_the_template_refuses, .timeout = 120)
{
    char *tmp = test_make_tmpdir("clichatrefuse"), *out, *err;
    test_synth_tiny(tmp, "bf16");
    static const char *const files[][2] = {
        {"t.jinja", "{% for m in messages %}{% if loop.index0 and messages[loop.index0 - 1].role == m.role %}"
                    "{{ raise_exception('roles must alternate') }}{% endif %}<{{ m.role }}>{{ m.content }}"
                    "{% endfor %}<assistant>"},
        {"req.json", "[{\"role\": \"user\", \"content\": \"What is 2+2?\"}]"},
        {"note.txt", "attached words"},
        /* (saved by a chat with another template) */
        {"users.json", "[{\"role\": \"user\", \"content\": \"one\"}, {\"role\": \"user\", \"content\": "
                       "\"two\"}, {\"role\": \"assistant\", \"content\": \"three\"}]"}};
    char path[512];
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
        snprintf(path, sizeof path, "%s/%s", tmp, files[i][0]);
        write_text(path, files[i][1], strlen(files[i][1]));
    }
    /* a file far too large for a message is refused before it is read */
    cr_assert_eq(run(&out, &err, "cd %s && truncate -s 2G big.txt", tmp), 0, "%s", err);
    free(out);
    free(err);
    cr_assert_eq(run(&out, &err, "cd %s && printf '/read big.txt\n/load req.json\n/read note.txt\nsecond question\n/undo\n"
                                 "third\n/save after.json\n' | %s chat -m %s --chat-template t.jinja -n 3 --seed 1",
                     tmp, bin(), tmp), 0, "%s", err);
    cr_expect(strstr(err, "[not sent: ") && strstr(err, "roles must alternate"), "%s", err);
    cr_expect(strstr(err, "big.txt: 2147483648 bytes; a message takes files of at most 4194304"), "%s", err);
    snprintf(path, sizeof path, "%s/after.json", tmp);
    cJSON *list = test_read_json(path);
    cr_assert(cJSON_IsArray(list), "%s", err);
    cr_expect_eq(cJSON_GetArraySize(list), 2, "the third message and its reply: %s", err);
    const cJSON *first = cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(list, 0), "content");
    cr_expect(cJSON_IsString(first) && strstr(first->valuestring, "third") &&
              strstr(first->valuestring, "attached words"), "the file /read attached goes with it: %s", err);
    cJSON_Delete(list);
    /* a /regen the template refuses keeps the exchange it took back */
    free(out);
    free(err);
    cr_assert_eq(run(&out, &err, "cd %s && printf '/load users.json\n/regen\n/save regen.json\n' | %s chat -m %s "
                                 "--chat-template t.jinja -n 3 --seed 1", tmp, bin(), tmp), 0, "%s", err);
    cr_expect(strstr(err, "[the last exchange stays as it was]"), "%s", err);
    snprintf(path, sizeof path, "%s/regen.json", tmp);
    list = test_read_json(path);
    cr_expect_eq(cJSON_GetArraySize(list), 3, "the conversation loaded, whole: %s", err);
    cJSON_Delete(list);
    /* --json-schema-file - would read the messages' input to its end */
    free(out);
    free(err);
    cr_expect_eq(run(&out, &err, "printf 'hi\n' | %s chat -m %s --json-schema-file -", bin(), tmp), 2);
    cr_expect(strstr(err, "--json-schema-file -: chat reads its messages from standard input"), "%s", err);
    free(out);
    free(err);
    test_remove_tree(tmp);
    free(tmp);
}

/* the messages of a conversation chat saved, with their roles and texts */
static cJSON *saved_conversation(const char *path)
{
    cJSON *list = test_read_json(path);
    cr_assert(cJSON_IsArray(list), "%s: not a JSON list", path);
    return list;
}

static const char *message_field(const cJSON *list, int i, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(list, i), key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* chat's commands: /read puts a file in the next message as a fenced block,
 * /save writes the conversation, /undo takes back an exchange, /regen answers
 * the last message again, /load goes on with a saved conversation (chat's
 * own, or one the chat page exported); what they cannot do is said and the
 * chat goes on as it was. */
Test(cli, chat_commands_edit_save_and_load_the_conversation, .timeout = 120)
{
    char *tmp = test_make_tmpdir("clichatcmd"), *out, *err;
    test_synth_tiny(tmp, "bf16");
    char notes[512], blob[512], web[512], bad[512], script[8192];
    snprintf(notes, sizeof notes, "%s/notes.md", tmp);
    snprintf(blob, sizeof blob, "%s/blob.bin", tmp);
    snprintf(web, sizeof web, "%s/exported.json", tmp);
    snprintf(bad, sizeof bad, "%s/bad.json", tmp);
    write_text(notes, "a ``` b\nline two\n", 17);
    write_text(blob, "ab\0\xff", 4);
    const char *exported = "{\"id\": \"x\", \"title\": \"T\", \"messages\": [{\"role\": \"user\", \"content\": "
                           "\"Hi\"}, {\"role\": \"assistant\", \"content\": \"Hello.\", \"reasoning\": \"Greet.\", "
                           "\"done\": true, \"stats\": {\"completion_tokens\": 3}}]}";
    write_text(web, exported, strlen(exported));
    const char *tool = "[{\"role\": \"user\", \"content\": \"Hi\"}, {\"role\": \"tool\", \"content\": \"x\"}]";
    write_text(bad, tool, strlen(tool));
    snprintf(script, sizeof script,
             "Hello there\n/read %s\n/read %s\nWhat is this?\n/save %s/one.json\n/undo\n/save %s/two.json\n"
             "/regen\n/save %s/three.json\n/save\n/save %s\n/load %s\n/load %s\n/save %s/four.json\n/load %s\n"
             "Next\n/save %s/five.json\n/sav %s/x.json\n//save me\n/etc/hosts\n/help me\n/load  \n"
             "/save %s/six.json\n",
             notes, blob, tmp, tmp, tmp, tmp, bad, notes, tmp, web, tmp, tmp, tmp);
    char cmdfile[512];
    snprintf(cmdfile, sizeof cmdfile, "%s/script.txt", tmp);
    write_text(cmdfile, script, strlen(script));
    cr_assert_eq(run(&out, &err, "%s chat -m %s --greedy --no-think -n 4 < %s", bin(), tmp, cmdfile), 0, "%s",
                 err);
    cr_expect(strstr(err, "notes.md added to your next message") != NULL, "%s", err);
    cr_expect(strstr(err, "[not added: ") && strstr(err, "blob.bin: not UTF-8 text (byte 2)"), "%s", err);
    cr_expect(strstr(err, "[/save needs a file: /save FILE]") != NULL, "%s", err);
    cr_expect(strstr(err, "[not saved: ") != NULL, "a directory is no file to save to: %s", err);
    cr_expect(strstr(err, "bad.json: message 1: 'role' must be \"system\", \"user\" or \"assistant\"") != NULL,
              "%s", err);
    cr_expect(strstr(err, "notes.md: not valid JSON]") != NULL, "%s", err);
    char path[600];
    snprintf(path, sizeof path, "%s/one.json", tmp);
    cJSON *one = saved_conversation(path);
    cr_assert_eq(cJSON_GetArraySize(one), 4);
    cr_expect_str_eq(message_field(one, 0, "content"), "Hello there");
    cr_expect_str_eq(message_field(one, 2, "content"),
                     "notes.md:\n````md\na ``` b\nline two\n````\n\nWhat is this?");
    cr_expect_str_eq(message_field(one, 3, "role"), "assistant");
    snprintf(path, sizeof path, "%s/two.json", tmp);
    cJSON *two = saved_conversation(path);
    cr_expect_eq(cJSON_GetArraySize(two), 2, "/undo took back the second exchange");
    /* greedy: the first message answered again is answered the same */
    snprintf(path, sizeof path, "%s/three.json", tmp);
    cJSON *three = saved_conversation(path);
    cr_assert_eq(cJSON_GetArraySize(three), 2);
    cr_expect_str_eq(message_field(three, 1, "content"), message_field(one, 1, "content"));
    /* the bad file changed nothing: four is three */
    snprintf(path, sizeof path, "%s/four.json", tmp);
    cJSON *four = saved_conversation(path);
    cr_expect(cJSON_Compare(four, three, 1), "a conversation not loaded leaves it as it was");
    snprintf(path, sizeof path, "%s/five.json", tmp);
    cJSON *five = saved_conversation(path);
    cr_assert_eq(cJSON_GetArraySize(five), 4, "the exported two, then Next and its reply");
    cr_expect_str_eq(message_field(five, 1, "content"), "Hello.");
    cr_expect_str_eq(message_field(five, 1, "reasoning_content"), "Greet.");
    cr_expect_str_eq(message_field(five, 2, "content"), "Next");
    cr_expect(strstr(err, "loaded 2 messages from") != NULL, "%s", err);
    /* a command mistyped is said, not sent; '//' sends a line that begins
     * with '/' and a word; a path is a message */
    cr_expect(strstr(err, "[no command /sav: /help lists them") != NULL, "%s", err);
    cr_expect(strstr(err, "[/help takes nothing after it") != NULL, "%s", err);
    cr_expect(strstr(err, "[/load needs a file: /load FILE]") != NULL, "%s", err);
    snprintf(path, sizeof path, "%s/six.json", tmp);
    cJSON *six = saved_conversation(path);
    cr_assert_eq(cJSON_GetArraySize(six), 8);
    cr_expect_str_eq(message_field(six, 4, "content"), "/save me");
    cr_expect_str_eq(message_field(six, 6, "content"), "/etc/hosts");
    cJSON_Delete(six);
    cJSON_Delete(one);
    cJSON_Delete(two);
    cJSON_Delete(three);
    cJSON_Delete(four);
    cJSON_Delete(five);
    free(out);
    free(err);
    test_remove_tree(tmp);
    free(tmp);
}

static int files_equal(const char *a, const char *b)
{
    size_t na, nb;
    void *da = test_read_file(a, &na), *db = test_read_file(b, &nb);
    int same = da && db && na == nb && memcmp(da, db, na) == 0;
    free(da);
    free(db);
    return same;
}

Test(cli, convert_check_and_run_from_the_store, .timeout = 120)
{
    char *tmp = test_make_tmpdir("cli-store"), *out, *err;
    char model[4200];
    snprintf(model, sizeof model, "%s/model", tmp);
    test_synth_tiny(model, "fp8");
    cr_assert_eq(run(&out, &err, "%s convert -m %s", bin(), model), 0, "%s", err);
    cr_expect(strstr(err, "complete: 96 experts") != NULL, "%s", err);
    /* the default file size (64 GiB) holds the whole tiny store */
    cr_expect(strstr(err, "in 1 file\n") != NULL, "%s", err);
    free(out);
    free(err);
    /* run again: nothing to do */
    cr_assert_eq(run(&out, &err, "%s convert -m %s", bin(), model), 0, "%s", err);
    cr_expect(strstr(err, "already a complete expert store") != NULL, "%s", err);
    free(out);
    free(err);
    cr_assert_eq(run(&out, &err, "%s convert -m %s --check", bin(), model), 0, "%s", err);
    cr_expect(strstr(err, "all 96 blobs") != NULL, "%s", err);
    cr_expect(strstr(err, "comparing") == NULL, "%s", err);
    free(out);
    free(err);
    /* shards touched (a copy): runs warn until --check compares them and
     * records their times */
    cr_assert_eq(run(&out, &err, "touch -d 2030-01-01 %s/*.safetensors && %s logits -m %s --ids 5 "
                     "-o /dev/null", model, bin(), model), 0, "%s", err);
    cr_expect(strstr(err, "changed after the expert store") != NULL, "%s", err);
    free(out);
    free(err);
    cr_assert_eq(run(&out, &err, "%s inspect -m %s", bin(), model), 0, "%s", err);
    cr_expect(strstr(err, "changed after the expert store") != NULL, "inspect: %s", err);
    cr_expect(strstr(out, "tokenizer    tiktoken.model, ") != NULL, "inspect names the tokenizer: %s", out);
    free(out);
    free(err);
    cr_assert_eq(run(&out, &err, "%s convert -m %s --check", bin(), model), 0, "%s", err);
    cr_expect(strstr(err, "comparing every expert") && strstr(err, "are recorded"), "%s", err);
    free(out);
    free(err);
    cr_assert_eq(run(&out, &err, "%s logits -m %s --ids 5 -o /dev/null", bin(), model), 0, "%s", err);
    cr_expect(strstr(err, "changed after") == NULL, "%s", err);
    free(out);
    free(err);
    /* a file size below one blob: one blob per file, not the default size;
     * writing and reading them fit a soft limit of 64 open files (raised to
     * make room: reading opens each file twice) */
    struct rlimit nofile;
    int raise_ok = getrlimit(RLIMIT_NOFILE, &nofile) == 0 &&
                   (nofile.rlim_max == RLIM_INFINITY || nofile.rlim_max >= 1024);
    cr_assert_eq(run(&out, &err, "%s %s convert -m %s -o %s/tiny-files --file-gb 1e-12",
                     raise_ok ? "ulimit -Sn 64;" : "", bin(), model, tmp), 0, "%s", err);
    cr_expect(strstr(err, "in 96 files") != NULL, "%s", err);
    cr_expect(strstr(err, "is less than one expert of this model") != NULL, "said: %s", err);
    free(out);
    free(err);
    cr_expect_eq(run(&out, &err, "%s %s run -m %s --store %s/tiny-files --ids 5,17 -n 2 "
                     "--dram-gb 0.001", raise_ok ? "ulimit -Sn 64;" : "", bin(), model, tmp), 0,
                 "%s", err);
    free(out);
    free(err);
    cr_expect_eq(run(&out, &err, "%s convert -m %s -o %s/huge-files --file-gb 1e30", bin(), model,
                     tmp), 2, "%s", err);
    cr_expect(strstr(err, "--file-gb must be positive (at most 1e9)") != NULL, "%s", err);
    free(out);
    free(err);

    /* the default store is found by itself; a budget of 8 experts reads most from NVMe */
    const char *ids = "5,17,300,2,999,45,8,8,600,12";
    cr_assert_eq(run(&out, &err, "%s logits -m %s --ids %s -o %s/a.f32 --dram-gb 0.0000001",
                     bin(), model, ids, tmp), 1, "an impossible budget must fail: %s", err);
    cr_expect(strstr(err, "--dram-gb at least") != NULL, "%s", err);
    free(out);
    free(err);
    char store_dir[4300];
    snprintf(store_dir, sizeof store_dir, "%s/moetier-store", model);
    cr_assert_eq(run(&out, &err, "%s logits -m %s --ids %s -o %s/a.f32 --dram-gb 0.001 --stats",
                     bin(), model, ids, tmp), 0, "%s", err);
    cr_expect(strstr(err, "placement plan") != NULL && strstr(err, "NVMe") != NULL, "%s", err);
    char store_line[4400];
    snprintf(store_line, sizeof store_line, "  expert store: %s\n", store_dir);
    cr_expect(strstr(err, store_line) != NULL, "the plan does not name the store whole: %s", err);
    cr_expect(strstr(err, "tier statistics") != NULL, "%s", err);
    /* one prefill step of 10 tokens wants more of the 96 experts than 8 slots */
    cr_expect(strstr(err, "steps larger than the DRAM tier: 1 of 1") != NULL, "%s", err);
    free(out);
    free(err);
    /* the same logits straight from the checkpoint (store moved away) */
    char moved[4300];
    snprintf(moved, sizeof moved, "%s/store-elsewhere", tmp);
    cr_assert_eq(rename(store_dir, moved), 0);
    cr_assert_eq(run(&out, &err, "%s logits -m %s --ids %s -o %s/b.f32", bin(), model, ids, tmp), 0,
                 "%s", err);
    free(out);
    free(err);
    char a[4300], b[4300];
    snprintf(a, sizeof a, "%s/a.f32", tmp);
    snprintf(b, sizeof b, "%s/b.f32", tmp);
    cr_expect(files_equal(a, b), "logits from the store differ from the checkpoint's");
    cr_assert_eq(run(&out, &err, "%s inspect -m %s --store %s --dram-gb 0.001", bin(), model, moved),
                 0, "%s", err);
    cr_expect(strstr(out, "DRAM") != NULL && strstr(out, "of 96 experts") != NULL, "%s", out);
    free(out);
    free(err);

    /* damage one blob: --check names it and exits 1 */
    char data[4400];
    snprintf(data, sizeof data, "%s/experts-00000.bin", moved);
    FILE *f = fopen(data, "r+b");
    cr_assert(f);
    fseek(f, 70000, SEEK_SET);
    fputc(0x5a ^ fgetc(f), f);
    fclose(f);
    cr_assert_eq(run(&out, &err, "%s convert -m %s -o %s --check", bin(), model, moved), 1, "%s",
                 err);
    cr_expect(strstr(err, "checksum mismatch") != NULL && strstr(err, "1 of 96") != NULL, "%s", err);
    free(out);
    free(err);
    expect_failure(2, "--io", "%s logits -m %s --ids 1 -o /dev/null %s", model, "--io bogus");
    expect_failure(2, "--dram-gb", "%s logits -m %s --ids 1 -o /dev/null %s", model, "--dram-gb -3");
    /* a checkpoint replaced by synth --force keeps the old one's store, which
     * runs refuse: synth says so and how to rebuild it */
    cr_assert_eq(run(&out, &err, "%s convert -m %s >/dev/null 2>&1 && %s synth --format fp8 --seed 9 "
                     "--force -o %s", bin(), model, bin(), model), 0, "%s", err);
    cr_expect(strstr(err, "moetier-store is the expert store of the checkpoint this replaced") &&
              strstr(err, "--force` rebuilds it"), "%s", err);
    free(out);
    free(err);
    test_remove_tree(tmp);
    free(tmp);
}

/* `bench kernels --json` is a scripting interface: one object per line with the
 * documented fields, ratio = gbps / read_bw_gbps. */
Test(cli, bench_kernels_json_lines, .timeout = 120)
{
    char *out, *err;
    /* 40 tokens: activations past the 271,182nd, whose index times 7919 once
     * overflowed an int (UBSan). Under the sanitizers one format: each row
     * runs its 40-token product at least five times, instrumented. */
    int formats = test_sanitized() ? 1 : 2;
    cr_assert_eq(run(&out, &err, "%s bench kernels --json --formats %s -t 1 --tokens 1,40 "
                     "--seconds 0.05 --set-gb 0.05", bin(), formats == 2 ? "bf16,int4" : "int4"),
                 0, "%s", err);
    int lines = 0, amx_lines = 0;
    for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n"), lines++) {
        /* an AMX row (CPUs with AMX, 40 tokens) follows the FMA row it is compared with */
        if (strstr(line, "\"kernels\":\"amx\"")) {
            amx_lines++;
            cr_expect(strstr(line, "\"tokens\":40") && strstr(line, "\"fma_ratio\":"), "%s", line);
            continue;
        }
        const char *keys[] = {"\"kernels\":\"cpu\"", "\"format\":", "\"threads\":1",
                              "\"tokens\":", "\"gbps\":",
                              "\"gflops\":", "\"read_bw_gbps\":", "\"ratio\":", "\"peak_gflops\":",
                              "\"set_experts\":16", "\"set_gb\":"};
        for (size_t k = 0; k < sizeof keys / sizeof *keys; k++)
            cr_expect(strstr(line, keys[k]) != NULL, "line '%s' lacks %s", line, keys[k]);
        double gbps = 0, bw = 0, ratio = 0;
        char *p = strstr(line, "\"gbps\":"), *q = strstr(line, "\"read_bw_gbps\":"),
             *r = strstr(line, "\"ratio\":");
        if (p && q && r) {
            gbps = atof(p + 7);
            bw = atof(q + 15);
            ratio = atof(r + 8);
            cr_expect(gbps > 0 && bw > 0 && fabs(ratio - gbps / bw) < 1e-6 * (1 + ratio),
                      "ratio %g is not gbps %g / read_bw %g", ratio, gbps, bw);
        }
    }
    cr_expect_eq(amx_lines, kernel_amx_supported() ? formats : 0, "%d AMX rows", amx_lines);
    cr_expect_eq(lines - amx_lines, 2 * formats, "expected %d formats x 2 token counts, got %d lines: %s",
                 formats, lines, out);
    free(out);
    free(err);
    /* --twin times the GPU backend's CPU twin and says so */
    cr_assert_eq(run(&out, &err, "%s bench kernels --json --twin --formats int4 -t 1 --tokens 1 "
                     "--seconds 0.05 --set-gb 0.05", bin()), 0, "%s", err);
    cr_expect(strstr(out, "\"kernels\":\"twin\"") && strstr(out, "\"gbps\":"), "%s", out);
    free(out);
    free(err);
    expect_failure(2, "--kernels", "%s %s kernels --kernels %s", "bench", "avx9");
    /* a set of experts past the machine's memory is refused, not left to the
     * OOM killer (a machine of 1 GB available) */
    char *tmp = test_make_tmpdir("cli-meminfo"), mem[4200];
    snprintf(mem, sizeof mem, "%s/meminfo", tmp);
    FILE *mf = fopen(mem, "w");
    cr_assert_not_null(mf);
    fputs("MemTotal:        2097152 kB\nMemAvailable:    1048576 kB\n", mf);
    fclose(mf);
    cr_assert_eq(run(&out, &err, "MOETIER_MEMINFO=%s %s bench kernels --set-gb 1", mem, bin()), 2,
                 "%s", err);
    cr_expect(strstr(err, "--set-gb 1 is more than this machine's 1.1 GB"), "%s", err);
    free(out);
    free(err);
    /* nor a small --set-gb that the 16-expert floor takes past it (16 x 88 MB) */
    cr_assert_eq(run(&out, &err, "MOETIER_MEMINFO=%s %s bench kernels --formats bf16 --set-gb 0.05",
                     mem, bin()), 1, "%s", err);
    cr_expect(strstr(err, "bf16: 16 experts of 88.1 MB") && strstr(err, "1.41 GB"), "%s", err);
    free(out);
    free(err);
    /* lists are checked before anything runs: no empty values (they were
     * skipped), threads as elsewhere (100,000 started 32,000 threads), and
     * formats the kernels have (an empty list measured nothing, exit 0) */
    expect_failure(2, "empty value", "%s bench kernels %s %s", "-t", "1,,2");
    expect_failure(2, "empty value", "%s bench kernels %s %s", "--tokens", "1,");
    expect_failure(2, "1..4096", "%s bench kernels %s %s", "-t", "100000");
    expect_failure(2, "--formats expects", "%s bench kernels %s %s", "--formats", "''");
    expect_failure(2, "--formats expects", "%s bench kernels %s %s", "--formats", "int4,f16");
    test_remove_tree(tmp);
    free(tmp);
}

/* --trace records each token's routing: the expert sets of the golden prompt. */
Test(cli, trace_records_the_golden_routing, .timeout = 60)
{
    char *d = test_testdata_model_or_skip("fp8"), *ids = golden_ids_csv(d, "prompt_ids.i32.bin", 24);
    char *tmp = test_make_tmpdir("cli-trace"), *out, *err;
    cr_assert_eq(run(&out, &err, "%s logits -m %s --ids %s -o %s/l.f32 --trace %s/r.trace", bin(), d,
                     ids, tmp, tmp), 0, "%s", err);
    char path[4300], gpath[4300];
    snprintf(path, sizeof path, "%s/r.trace", tmp);
    snprintf(gpath, sizeof gpath, "%s/golden/routing_ids.i32.bin", d);
    routing_trace t;
    errbuf e;
    cr_assert_eq(trace_read(&t, path, &e), 0, "%s", e.msg);
    size_t n;
    int *golden = test_read_file(gpath, &n);
    int K = (int)t.top_k, moe = 3, T = 24;
    cr_assert_eq(n, (size_t)moe * T * K * 4, "golden routing has %zu bytes", n);
    cr_assert_eq(t.n, (uint64_t)moe * T, "%llu events", (unsigned long long)t.n);
    for (uint64_t i = 0; i < t.n; i++) {
        int l = t.layer[i] - 1, tok = (int)t.token[i];
        cr_assert(l >= 0 && l < moe && tok < T && t.stream[i] == 0);
        for (int a = 0; a < K; a++) {
            int found = 0;
            for (int b = 0; b < K; b++)
                found |= golden[((size_t)l * T + tok) * K + b] == t.experts[i * K + a];
            cr_expect(found, "layer %d token %d: expert %u is not in the golden set", l + 1, tok,
                      t.experts[i * K + a]);
        }
    }
    /* replayed in steps of 8 tokens, each layer of a step asks for the union of
     * its tokens' experts once */
    uint64_t want = 0;
    for (int l = 1; l <= moe; l++)
        for (int s0 = 0; s0 < T; s0 += 8) {
            unsigned char seen[1024] = {0};
            for (uint64_t i = 0; i < t.n; i++)
                if (t.layer[i] == l && (int)t.token[i] >= s0 && (int)t.token[i] < s0 + 8)
                    for (int a = 0; a < K; a++)
                        want += !seen[t.experts[i * K + a]]++;
        }
    free(out);
    free(err);
    cr_assert_eq(run(&out, &err, "%s trace replay %s --cache 10 --shared --chunk 8 --json", bin(),
                     path), 0, "%s", err);
    char field[64];
    snprintf(field, sizeof field, "\"requests\":%llu,", (unsigned long long)want);
    cr_expect(strstr(out, "\"chunk\":8") && strstr(out, field) && !strstr(out, "belady"),
              "steps of 8: %s (want %s)", out, field);
    free(out);
    free(err);
    cr_assert_eq(run(&out, &err, "%s trace replay %s --cache 10 --shared --json", bin(), path), 0,
                 "%s", err);
    snprintf(field, sizeof field, "\"requests\":%llu,", (unsigned long long)t.n * K);
    cr_expect(strstr(out, "\"chunk\":1") && strstr(out, field) && strstr(out, "belady_hits"),
              "steps of 1: %s (want %s)", out, field);
    expect_failure(2, "--chunk expects", "%s trace replay %s --cache 10 --chunk %s", path, "0");
    expect_failure(2, "--chunk expects", "%s trace replay %s --cache 10 --chunk %s", path, "8x");
    /* a directory is said to be one, not "no trace header" */
    expect_failure(1, "/tmp is a directory, expected a routing trace file", "%s trace stats %s%s", "/tmp", "");
    free(golden);
    trace_free(&t);
    free(out);
    free(err);
    test_remove_tree(tmp);
    free(tmp);
    free(ids);
    free(d);
}

/* Without --chunk the CPU backend takes prefill steps of 4,096 tokens where
 * their activations fit in a quarter of the memory left (a tiny model's
 * always do), at most the context; 1,024 for conversations sharing the engine
 * (serve --parallel); --chunk is kept. K2's activations: 2 x 0.7 MB a row,
 * so 4,096 rows want 24 GB left after the plan. */
Test(cli, default_prefill_step_on_the_cpu)
{
    char *dir = test_make_tmpdir("cli_chunk");
    test_synth_tiny(dir, "int4");
    const struct {
        int ctx, chunk, seqs, want;
    } cases[] = {{8192, 0, 1, 4096}, {300, 0, 1, 300}, {4096, 100, 1, 100}, {8192, 0, 2, 1024},
                 {8192, 2048, 2, 2048}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        cli_model m;
        model_flags f = {.dir = dir, .ctx = cases[i].ctx, .chunk = cases[i].chunk, .seqs = cases[i].seqs,
                         .quiet = 1, .backend = "cpu"};
        errbuf e;
        cr_assert_eq(cli_model_open(&m, &f, &e), 0, "%s", e.msg);
        cr_expect_eq(m.en.max_chunk, cases[i].want, "-c %d --chunk %d, %d sequences: steps of %d", cases[i].ctx,
                     cases[i].chunk, cases[i].seqs, m.en.max_chunk);
        cli_model_close(&m);
    }
    model_config k2 = {.hidden_size = 7168, .n_heads = 64, .q_lora_rank = 1536, .kv_lora_rank = 512,
                       .qk_nope_dim = 128, .qk_rope_dim = 64, .v_head_dim = 128, .n_routed_experts = 384,
                       .n_experts_per_tok = 8};
    double row = engine_activation_bytes(&k2, 1) / 1e6;
    cr_expect(row > 0.70 && row < 0.75, "K2's activations: %.3f MB a row", row);
    cr_expect_eq(engine_activation_bytes(&k2, 4096), 4096 * engine_activation_bytes(&k2, 1));
    test_remove_tree(dir);
    free(dir);
}

/* --draft-lookup: the same text and ids as without it, its count and what
 * the tuner learned on stderr (with every guess checked, and as the tuner
 * picks them); more guesses than a step keeps exact refused, naming the flag */
Test(cli, run_with_draft_lookup_answers_as_without, .timeout = 60)
{
    char *tmp = test_make_tmpdir("clidraft"), *out, *err, *out2, *err2;
    test_synth_tiny(tmp, "int4");
    const char *args = "--ids 5,6,7,8,5,6,7,8,5,6,7 -n 300 -c 512 --greedy --ignore-eos --print-ids";
    cr_assert_eq(run(&out, &err, "%s run -m %s %s", bin(), tmp, args), 0, "%s", err);
    cr_expect_null(strstr(err, "draft lookup"), "a count without the flag: %s", err);
    for (int tuned = 0; tuned < 2; tuned++) {
        cr_assert_eq(run(&out2, &err2, "%s %s run -m %s %s --draft-lookup 3",
                         tuned ? "" : "MOETIER_DRAFT_TUNE=0", bin(), tmp, args), 0, "%s", err2);
        cr_expect_str_eq(out2, out, "another answer with --draft-lookup 3 (tuned %d)", tuned);
        unsigned long long guessed, steps, kept;
        const char *line = strstr(err2, "draft lookup: ");
        cr_assert(line && sscanf(line, "draft lookup: %llu tokens guessed in %llu steps, %llu kept",
                                 &guessed, &steps, &kept) == 3, "no count on stderr: %s", err2);
        cr_expect(kept <= guessed && guessed <= 3 * steps, "%llu guessed in %llu steps, %llu kept",
                  guessed, steps, kept);
        /* (every guess checked: some must be kept, or the answer checks nothing) */
        cr_expect(tuned || (kept > 0 && steps > 0), "%llu guessed in %llu steps, %llu kept",
                  guessed, steps, kept);
        const char *learned = strstr(err2, "draft lookup: chance a guess is kept");
        int shown = learned && (tuned ? strstr(learned, "step time of 2..4 rows") ||
                                            strstr(learned, "no recent step of several rows")
                                      : strstr(learned, "every guess checked") != NULL);
        cr_expect(shown, "tuned %d: %s", tuned, err2);
        free(out2);
        free(err2);
    }
    free(out);
    free(err);
    cr_expect_eq(run(&out, &err, "%s run -m %s --ids 1,2 --draft-lookup 4", bin(), tmp), 2);
    cr_expect(strstr(err, "--draft-lookup") && strstr(err, "0..3"), "%s", err);
    free(out);
    free(err);
    test_remove_tree(tmp);
    free(tmp);
}

/* tokenize --chat: every fixture conversation rendered as the reference
 * renders it (--render) and tokenized to its ids, through the model's format
 * and through the template engine (--chat-template jinja). */
Test(cli, tokenize_chat_gives_the_fixture_prompts, .timeout = 120)
{
    char *dir = test_data_path("kimi-tokenizer"), path[4096];
    cr_assert_not_null(dir);
    if (!test_path_exists(dir)) {
        free(dir);
        cr_skip_test("kimi-tokenizer testdata is absent (set MOETIER_TESTDATA to ../shared/testdata)");
    }
    snprintf(path, sizeof path, "%s/chat_cases.jsonl", dir);
    char *cases = test_read_file(path, NULL), *tmp = test_make_tmpdir("clitokchat"), req[4096];
    cr_assert_not_null(cases);
    snprintf(req, sizeof req, "%s/req.json", tmp);
    int n = 0;
    for (char *line = strtok(cases, "\n"); line; line = strtok(NULL, "\n"), n++) {
        cJSON *c = cJSON_Parse(line);
        cr_assert_not_null(c);
        const char *id = cJSON_GetObjectItem(c, "id")->valuestring;
        char *want_text = strdup(cJSON_GetObjectItem(c, "rendered")->valuestring);
        char want_ids[16384] = "";
        size_t o = 0;
        const cJSON *x;
        cJSON_ArrayForEach(x, cJSON_GetObjectItem(c, "ids"))
            o += (size_t)snprintf(want_ids + o, sizeof want_ids - o, o ? ",%d" : "%d", x->valueint);
        cJSON_DeleteItemFromObject(c, "rendered");
        cJSON_DeleteItemFromObject(c, "ids");
        char *body = cJSON_PrintUnformatted(c);
        write_text(req, body, strlen(body));
        char *out, *err;
        cr_assert_eq(run(&out, &err, "%s tokenize -m %s --chat %s --render", bin(), dir, req), 0, "%s: %s", id,
                     err);
        cr_expect_str_eq(out, want_text, "%s: the rendered prompt", id);
        free(out);
        free(err);
        cr_assert_eq(run(&out, &err, "%s tokenize -m %s --chat %s --chat-template jinja", bin(), dir, req), 0,
                     "%s: %s", id, err);
        cr_expect_str_eq(last_line(out), want_ids, "%s: the ids through the template engine", id);
        free(out);
        free(err);
        free(body);
        free(want_text);
        cJSON_Delete(c);
    }
    cr_expect_gt(n, 20);
    char *out, *err;
    cr_expect_eq(run(&out, &err, "%s tokenize -m %s --text hi --render", bin(), dir), 2,
                 "--render needs --chat");
    free(out);
    free(err);
    write_text(req, "{\"messages\": 3}", 15);
    cr_expect_eq(run(&out, &err, "%s tokenize -m %s --chat %s", bin(), dir, req), 1);
    cr_expect(strstr(err, "--chat: expected an array of messages"), "%s", err);
    free(out);
    free(err);
    free(cases);
    test_remove_tree(tmp);
    free(tmp);
    free(dir);
}

/* decimal_parse reads what a user writes as a number and nothing else */
Test(cli, decimal_numbers_only)
{
    const struct {
        const char *s;
        double v;
        int len;   /* of the number read; 0: none */
    } cases[] = {{"1", 1, 1}, {"-2.5", -2.5, 4}, {"+.5", 0.5, 3}, {"3.", 3, 2}, {"1e3", 1000, 3},
                 {"2E-2x", 0.02, 4}, {"7e", 7, 1}, {"7e+", 7, 1}, {"0x10", 0, 0}, {" 1", 0, 0},
                 {"inf", 0, 0}, {"nan", 0, 0}, {".", 0, 0}, {"-", 0, 0}, {"", 0, 0}, {"e5", 0, 0}};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char *end;
        double v = decimal_parse(cases[i].s, &end);
        cr_expect_eq(end - cases[i].s, cases[i].len, "'%s': read %d bytes, not %d", cases[i].s,
                     (int)(end - cases[i].s), cases[i].len);
        cr_expect_eq(v, cases[i].v, "'%s': %g, not %g", cases[i].s, v, cases[i].v);
    }
}
