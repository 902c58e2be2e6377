/* `--profile`: the tables of where prefill and decode time went count every
 * token and the weights each part read, and timing the operations changes no
 * number the model computes, on the CPU and the GPU backends. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/model/config.h"
#include "testutil.h"

#define run test_run_fmt

/* The row of part `name` in the table after `header`: its seconds and GB per
 * token (-1 when the row has none); 0 when the row is absent. */
static int table_row(const char *err, const char *header, const char *name, double *seconds,
                     double *gb)
{
    const char *t = strstr(err, header);
    if (!t)
        return 0;
    const char *end = strstr(t + 1, "profile of ");
    const char *r = strstr(t, name);
    if (!r || (end && r > end))
        return 0;
    unsigned long long calls;
    double share, ms;
    *gb = -1;
    int n = sscanf(r + strlen(name), " %llu %lf %lf%% %lf %lf", &calls, seconds, &share, &ms, gb);
    return n >= 4;
}

Test(profile, tables_count_the_tokens_and_the_weights_read, .timeout = 60)
{
    char *d = test_testdata_model_or_skip("bf16"), *out, *err;
    cr_assert_eq(run(&out, &err, "%s run -m %s --ids 1,2,3,4,5,6,7,8 -n 6 --greedy --ignore-eos "
                     "--profile", test_moetier_bin(), d), 0, "%s", err);
    cr_expect(strstr(err, "profile of prefill: 8 tokens"), "%s", err);
    cr_expect(strstr(err, "profile of decode: 5 tokens"), "%s", err);
    /* a decode token reads the whole lm_head once: vocab x hidden BF16 values */
    model_config c;
    errbuf e;
    cr_assert_eq(config_load(&c, d, &e), 0, "%s", e.msg);
    double seconds, gb, want = (double)c.vocab_size * (double)c.hidden_size * 2 / 1e9;
    cr_assert(table_row(err, "profile of decode", "lm_head", &seconds, &gb), "%s", err);
    cr_expect(fabs(gb - want) < 1e-3 * want, "lm_head: %g GB a token, expected %g", gb, want);
    /* the parts' seconds are within the engine's time for the phase */
    const char *parts[] = {"attention projections", "attention (latent cache)", "router",
                           "dense FFN", "shared experts", "routed experts", "lm_head",
                           "norms, rope, embedding, copies"};
    for (int phase = 0; phase < 2; phase++) {
        const char *h = phase ? "profile of decode" : "profile of prefill";
        double sum = 0, engine_s;
        const char *line = strstr(err, h);
        cr_assert(line && sscanf(strchr(line, ',') + 1, " %lf s in the engine", &engine_s) == 1,
                  "%s", err);
        int found = 0;
        for (size_t k = 0; k < sizeof parts / sizeof *parts; k++)
            if (table_row(err, h, parts[k], &seconds, &gb)) {
                sum += seconds;
                found++;
            }
        cr_expect_geq(found, 6, "%s: %d parts", h, found);
        cr_expect(sum <= engine_s + 0.002 * found, "%s: parts %g s, the engine %g s", h, sum,
                  engine_s);
    }
    free(out);
    free(err);
    free(d);
}

/* The same logits, bit for bit, with the operations timed (on the GPU each
 * waited for), and the table printed. */
static void changes_no_number(const char *backend_name)
{
    char *d = test_testdata_model_or_skip("int4"), *tmp = test_make_tmpdir("profile"), *out, *err;
    const char *ids = "5,17,99,3,250,8,41,7,19,2";
    for (int k = 0; k < 2; k++) {
        cr_assert_eq(run(&out, &err, "%s logits -m %s --ids %s -o %s/%d.f32 --backend %s %s",
                         test_moetier_bin(), d, ids, tmp, k, backend_name, k ? "--profile" : ""),
                     0, "%s", err);
        cr_expect(!k == !strstr(err, "profile of prefill: 10 tokens"), "%s", err);
        double seconds, gb;
        cr_expect(!k || table_row(err, "profile of prefill", "routed experts", &seconds, &gb),
                  "%s", err);
        free(out);
        free(err);
    }
    char a[4200], b[4200];
    size_t na, nb;
    snprintf(a, sizeof a, "%s/0.f32", tmp);
    snprintf(b, sizeof b, "%s/1.f32", tmp);
    void *x = test_read_file(a, &na), *y = test_read_file(b, &nb);
    cr_assert(na == nb && na > 0 && !memcmp(x, y, na), "the logits changed with --profile");
    free(x);
    free(y);
    test_remove_tree(tmp);
    free(tmp);
    free(d);
}

Test(profile, changes_no_number, .timeout = 60) { changes_no_number("cpu"); }

Test(profile, changes_no_number_gpu, .timeout = 300)
{
    test_require_gpu();
    changes_no_number("cuda");
}

/* On the GPU backend the decode table too, its parts within the engine's
 * time: each call is timed once the device is done with it. */
Test(profile, decode_on_the_gpu_gpu, .timeout = 300)
{
    test_require_gpu();
    char *dir = test_make_tmpdir("profile_gpu"), *out, *err;
    test_synth_tiny(dir, "int4");
    cr_assert_eq(run(&out, &err, "%s run -m %s --ids 1,2,3,4 -n 4 --greedy --ignore-eos "
                     "--backend cuda --profile", test_moetier_bin(), dir), 0, "%s", err);
    cr_expect(strstr(err, "profile of decode: 3 tokens"), "%s", err);
    double seconds, gb, engine_s, sum = 0;
    const char *line = strstr(err, "profile of decode");
    cr_assert(line && sscanf(strchr(line, ',') + 1, " %lf s in the engine", &engine_s) == 1,
              "%s", err);
    const char *parts[] = {"attention (latent cache)", "routed experts", "lm_head"};
    for (int k = 0; k < 3; k++) {
        cr_assert(table_row(err, "profile of decode", parts[k], &seconds, &gb), "%s: %s",
                  parts[k], err);
        sum += seconds;
    }
    cr_expect(sum > 0 && sum <= engine_s + 0.006, "parts %g s, the engine %g s", sum, engine_s);
    free(out);
    free(err);
    test_remove_tree(dir);
    free(dir);
}
