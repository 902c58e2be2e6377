/* cmd_run: `moetier run -m DIR (-p TEXT | --ids LIST) -n N [sampling] [--print-ids]`.
 *
 * Prefills the prompt (raw text, special-token names recognised, no BOS added;
 * or ids), then generates up to N tokens one decode step at a time, streaming
 * their text to stdout when the model directory has a tokenizer.
 * With --print-ids the new ids are printed comma-separated as the last line of
 * stdout (a stable interface for scripts). Speeds go to stderr. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_common.h"
#include "commands.h"
#include "core/base/progress.h"
#include "core/engine/sampler.h"
#include "core/text/tokenizer.h"
#include "generate.h"
#include "sampling_flags.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: moetier run -m DIR (-p TEXT | --ids LIST) [-n N] [sampling options] [--print-ids]\n"
            "  -m DIR               checkpoint directory\n"
            "  -p TEXT              prompt text (raw: no chat format, no BOS; special-token\n"
            "                       names such as <|im_end|> become their ids)\n"
            "  --ids LIST           prompt as comma-separated token ids\n"
            "  -n N                 tokens to generate (default 128)\n"
            "  --ignore-eos         keep generating after an end-of-sequence token\n"
            "  --print-ids          print the new ids as the last line of stdout\n"
            "  --special            print special tokens (hidden from the text by default)\n"
            "  -c CTX               context size (default: min(4096, max_position_embeddings))\n"
            "  --chunk N            prompt tokens per prefill step (default 256)\n");
    sampling_flags_usage(f);
}

int cmd_run(int argc, char **argv)
{
    model_flags mf = {0};
    sampler_params sp = sampler_defaults();
    const char *ids_s = NULL, *prompt_text = NULL;
    int n_new = 128, print_ids = 0, ignore_eos = 0, show_special = 0;
    for (int i = 1; i < argc; i++) {
        int r = model_flags_parse(&mf, argc, argv, &i);
        if (!r)
            r = sampling_flag_parse(&sp, argc, argv, &i);
        if (r < 0)
            return 2;
        if (r)
            continue;
        const char *a = argv[i], *v;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--ids")) {
            if (!(ids_s = cli_value(argc, argv, &i)))
                return 2;
        } else if (!strcmp(a, "-p") || !strcmp(a, "--prompt")) {
            if (!(prompt_text = cli_value(argc, argv, &i)))
                return 2;
        } else if (!strcmp(a, "-n") || !strcmp(a, "--n-predict")) {
            if (!(v = cli_value(argc, argv, &i)) || cli_int(a, v, 0, 1 << 24, &n_new))
                return 2;
        } else if (!strcmp(a, "--print-ids")) {
            print_ids = 1;
        } else if (!strcmp(a, "--ignore-eos")) {
            ignore_eos = 1;
        } else if (!strcmp(a, "--special")) {
            show_special = 1;
        } else {
            fprintf(stderr, "moetier run: unknown option '%s'\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (!mf.dir || !ids_s == !prompt_text) {
        fprintf(stderr, "moetier run: -m and exactly one of -p, --ids are required\n");
        usage(stderr);
        return 2;
    }
    errbuf e;
    if (sampler_check(&sp, &e))
        return cli_fail(&e);
    tokenizer tok;
    int have_vocab = tokenizer_load(&tok, mf.dir, &e) == 0;
    if (!have_vocab && prompt_text)
        return cli_fail(&e);
    if (!have_vocab)
        fprintf(stderr, "moetier: no tokenizer in %s (%s); printing ids only\n", mf.dir, e.msg);
    int *prompt = NULL, T = 0;
    if (ids_s && cli_parse_ids(ids_s, &prompt, &T)) {
        if (have_vocab)
            tokenizer_free(&tok);
        return 2;
    }
    if (prompt_text) {
        token_list l = {0};
        if (tokenizer_encode(&tok, prompt_text, strlen(prompt_text), TOK_ALLOW_SPECIAL, &l, &e)) {
            tokenizer_free(&tok);
            return cli_fail(&e);
        }
        if (l.n == 0) {
            tokenizer_free(&tok);
            fprintf(stderr, "moetier run: the prompt is empty\n");
            return 2;
        }
        prompt = l.ids;
        T = (int)l.n;
    }
    cli_model m;
    if (cli_model_open(&m, &mf, &e)) {
        free(prompt);
        if (have_vocab)
            tokenizer_free(&tok);
        return cli_fail(&e);
    }
    const model_config *c = &m.mw.cfg;
    sampler smp;
    float *logits = malloc((size_t)c->vocab_size * sizeof *logits);
    token_list gen = {0};
    int rc = 1;
    if (!logits) {
        err_set(&e, "out of memory");
        goto done;
    }
    if (sampler_create(&smp, &sp, c->vocab_size, &e))
        goto done;
    for (int i = 0; i < T; i++)
        sampler_accept(&smp, prompt[i]);
    gen_params gp = {.max_new = n_new, .stop_ids = c->eos_token_ids, .n_stop = ignore_eos ? 0 : c->n_eos,
                     .show_special = show_special, .out = stdout};
    if (n_new == 0 || (engine_forward(&m.en, prompt, T, logits, 0, &e) == 0 &&
                       generate(&m, have_vocab ? &tok : NULL, &smp, logits, &gp, &gen, &e) == 0))
        rc = 0;
    sampler_destroy(&smp);
    if (have_vocab)
        printf("\n");
    if (print_ids) {
        for (size_t i = 0; i < gen.n; i++)
            printf("%s%d", i ? "," : "", gen.ids[i]);
        printf("\n");
    }
    fflush(stdout);
    const engine_stats *st = &m.en.stats;
    fprintf(stderr, "prefill: %llu tokens in %.3f s (%.2f tok/s); decode: %llu tokens in %.3f s "
            "(%.2f tok/s)\n", (unsigned long long)st->tokens_prefilled, st->prefill_seconds,
            st->prefill_seconds > 0 ? (double)st->tokens_prefilled / st->prefill_seconds : 0.0,
            (unsigned long long)st->tokens_decoded, st->decode_seconds,
            st->decode_seconds > 0 ? (double)st->tokens_decoded / st->decode_seconds : 0.0);
done:
    if (rc)
        cli_fail(&e);
    if (have_vocab)
        tokenizer_free(&tok);
    free(logits);
    token_list_free(&gen);
    free(prompt);
    cli_model_close(&m);
    return rc;
}
