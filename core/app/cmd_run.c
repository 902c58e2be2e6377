/* cmd_run: `moetier run -m DIR (-p TEXT | -f FILE | --ids LIST) -n N [sampling] [--print-ids]`.
 *
 * Prefills the prompt (raw text, special-token names recognised, no BOS added;
 * or ids), then generates up to N tokens one decode step at a time, streaming
 * their text to stdout when the model directory has a tokenizer.
 * With --print-ids (or without a tokenizer) the new ids are printed
 * comma-separated as the last line of stdout (a stable interface for scripts).
 * Speeds go to stderr. Ctrl+C (or SIGTERM) stops it between prefill steps or
 * tokens: what was generated is printed as at a length limit, with the speeds
 * and the trace, and the exit status is 128 + the signal. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_common.h"
#include "cli_prompt_file.h"
#include "commands.h"
#include "core/base/progress.h"
#include "core/base/stop_signal.h"
#include "core/engine/draft_tuner.h"
#include "core/engine/sampler.h"
#include "core/text/chat_format.h"
#include "core/text/gbnf.h"
#include "core/text/json_mask.h"
#include "core/text/tokenizer.h"
#include "core/text/tool_force.h"
#include "generate.h"
#include "held_flags.h"
#include "sampling_flags.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: moetier run -m DIR (-p TEXT | -f FILE | --ids LIST) [-n N] [sampling options]\n"
            "                   [--print-ids] [--prompt-cache FILE] [--draft-lookup N]\n"
            "  -m DIR               checkpoint directory\n"
            "  -p TEXT              prompt text (raw: no chat format, no BOS; special-token\n"
            "                       names such as <|im_end|> become their ids)\n"
            "  -f, --file FILE      prompt text read from FILE (- for standard input), as -p\n"
            "  --ids LIST           prompt as comma-separated token ids\n"
            "  --chat               send the prompt text as one user turn in the model's chat\n"
            "                       format\n"
            "  --system TEXT        system message (implies --chat)\n"
            "  -n N                 tokens to generate (default 128)\n"
            "  --ignore-eos         keep generating after an end-of-sequence token\n"
            "  --print-ids          print the new ids as the last line of stdout\n"
            "  --draft-lookup N     check up to N (1-3) tokens guessed from the context with each\n"
            "                       generated one, in one step: faster on text that repeats\n"
            "                       earlier text, the same answer (default 0: off); a step\n"
            "                       checks the guesses that its measured cost says pay\n"
            "  --special            print special tokens (hidden from the text by default)\n"
            "  --prompt-cache FILE  keep the prompt's KV cache in FILE: a later run whose prompt\n"
            "                       starts the same way computes only the rest (the same\n"
            "                       prompt: nothing, and the same output)\n"
            "  --prompt-cache-all   keep the reply's positions in FILE too\n"
            "  --prompt-cache-ro    read FILE, never write it\n");
    held_flags_usage(f);
    chat_template_flag_usage(f);
    model_flags_usage(f);
    sampling_flags_usage(f);
}

static int stop_requested(void *ctx)
{
    (void)ctx;
    return stop_signal_pending();
}

/* The prompt's ids: the raw text, or with --chat/--system one user turn (and
 * the system message) in the model's chat format, ready for the reply;
 * *start: where it leaves the answer (a raw text leaves no reasoning for the
 * model to open: the answer continues the text). */
static int encode_prompt(const tokenizer *tok, const char *dir, const char *template_name, const char *text,
                         size_t text_len, const char *system, int chat, token_list *out,
                         reasoning_start *start, errbuf *e)
{
    if (!chat && !system) {
        *start = chat_prompt_reasoning(text, text_len);
        if (*start == REASONING_MODEL)
            *start = REASONING_CLOSED;
        return tokenizer_encode_prompt(tok, text, text_len, TOK_ALLOW_SPECIAL, out, e);
    }
    /* a message is a JSON string: a NUL would silently end it */
    const char *nul = memchr(text, 0, text_len);
    if (nul)
        return err_set(e, "the prompt has a NUL byte at offset %zu; a chat turn must be text",
                       (size_t)(nul - text));
    chat_template tpl;
    chat_options opt;
    chat_options_default(&opt);
    if (cli_chat_template(dir, template_name, &tpl, e))
        return -1;
    cJSON *msgs = cJSON_CreateArray();
    if (system) {
        cJSON *m = cJSON_CreateObject();
        cJSON_AddStringToObject(m, "role", "system");
        cJSON_AddStringToObject(m, "content", system);
        cJSON_AddItemToArray(msgs, m);
    }
    cJSON *u = cJSON_CreateObject();
    cJSON_AddStringToObject(u, "role", "user");
    cJSON_AddStringToObject(u, "content", text);
    cJSON_AddItemToArray(msgs, u);
    char *rendered = NULL;
    size_t len;
    int rc = chat_template_render(&tpl, msgs, NULL, &opt, &rendered, &len, e);
    if (rc == 0) {
        *start = chat_prompt_reasoning(rendered, len);
        rc = tokenizer_encode(tok, rendered, len, TOK_ALLOW_SPECIAL, out, e);
    }
    free(rendered);
    cJSON_Delete(msgs);
    chat_template_close(&tpl);
    return rc;
}

int cmd_run(int argc, char **argv)
{
    model_flags mf = {0};
    sampler_params sp = sampler_defaults();
    const char *ids_s = NULL, *prompt_arg = NULL, *prompt_path = NULL, *system = NULL;
    int chat = 0;
    int n_new = 128, print_ids = 0, ignore_eos = 0, show_special = 0, draft = 0;
    gen_draft_stats draft_stats = {0};
    draft_tuner tuner;
    draft_tuner_init(&tuner);
    const char *template_name = NULL;
    held_flags hf = {0};
    cli_prompt_cache pcache = {0};
    breaker_flags breakers = {0};
    for (int i = 1; i < argc; i++) {
        int r = model_flags_parse(&mf, argc, argv, &i);
        if (!r)
            r = sampling_flag_parse(&sp, &breakers, argc, argv, &i);
        if (!r)
            r = cli_prompt_cache_parse(&pcache, argc, argv, &i);
        if (!r)
            r = chat_template_flag_parse(&template_name, argc, argv, &i);
        if (!r)
            r = held_flag_parse(&hf, argc, argv, &i);
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
            if (!(prompt_arg = cli_value(argc, argv, &i)))
                return 2;
        } else if (!strcmp(a, "-f") || !strcmp(a, "--file")) {
            if (!(prompt_path = cli_value(argc, argv, &i)))
                return 2;
        } else if (!strcmp(a, "--system")) {
            if (!(system = cli_value(argc, argv, &i)))
                return 2;
        } else if (!strcmp(a, "--chat")) {
            chat = 1;
        } else if (!strcmp(a, "-n") || !strcmp(a, "--n-predict")) {
            if (!(v = cli_value(argc, argv, &i)) || cli_int(a, v, 0, 1 << 24, &n_new))
                return 2;
        } else if (!strcmp(a, "--draft-lookup")) {
            if (!(v = cli_value(argc, argv, &i)) || cli_int(a, v, 0, ENGINE_DRAFT_MAX_T - 1, &draft))
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
    if ((chat || system) && !prompt_arg && !prompt_path) {
        fprintf(stderr, "moetier run: --chat and --system need -p TEXT or -f FILE\n");
        return 2;
    }
    if (!mf.dir || !!ids_s + !!prompt_arg + !!prompt_path != 1) {
        fprintf(stderr, "moetier run: -m and exactly one of -p, -f, --ids are required\n");
        usage(stderr);
        return 2;
    }
    if ((pcache.read_only || pcache.all) && !pcache.path) {
        fprintf(stderr, "moetier run: --prompt-cache-ro and --prompt-cache-all need --prompt-cache FILE\n");
        return 2;
    }
    if (template_name && !chat && !system) {
        fprintf(stderr, "moetier run: --chat-template goes with --chat or --system (a raw prompt is "
                "not rendered)\n");
        return 2;
    }
    if (pcache.read_only && pcache.all) {
        fprintf(stderr, "moetier run: --prompt-cache-all writes the file, --prompt-cache-ro does not: "
                "give one\n");
        return 2;
    }
    if (model_flags_check(&mf, "run"))
        return 2;
    errbuf e;
    if (sampler_check(&sp, &e)) {
        cli_fail(&e);
        return 2;       /* a bad option value, as when it does not parse */
    }
    if (held_flags_check(&hf, "run"))
        return 2;
    const char *held_path = hf.schema_path ? hf.schema_path : hf.grammar_path;
    if (prompt_path && held_path && !strcmp(prompt_path, "-") && !strcmp(held_path, "-")) {
        fprintf(stderr, "moetier run: -f - and %s - would both read standard input: give one of them "
                "a file\n", hf.schema_path ? "--json-schema-file" : "--grammar-file");
        return 2;
    }
    /* compiled before loading anything, and only once: a file such as - or
     * <(...) reads once */
    json_schema schema = {0};
    gbnf grammar = {0};
    int bad_held = held_flags_compile(&hf, &schema, &grammar, &e), early_rc;
    if (bad_held) {
        cli_fail(&e);
        early_rc = bad_held < 0 ? 2 : 1;    /* a bad option value, or a file not read */
        goto early;
    }
    int held = held_flags_given(&hf);
    /* read before loading anything: a wrong path fails at once */
    char *file_text = NULL;
    size_t prompt_len = prompt_arg ? strlen(prompt_arg) : 0;
    if (prompt_path && cli_read_text(prompt_path, &file_text, &prompt_len, &e)) {
        early_rc = cli_fail(&e);
        goto early;
    }
    cli_note_file(&mf, "-f", prompt_path);
    cli_note_template(&mf, template_name);
    cli_note_file(&mf, "--json-schema-file", hf.schema_path);
    cli_note_file(&mf, "--grammar-file", hf.grammar_path);
    cli_note_file(&mf, "--prompt-cache", pcache.path);
    if (pcache.path && (cli_check_output("--prompt-cache", pcache.path, &mf, &e) ||
                        cli_prompt_cache_check(&pcache, &e))) {
        free(file_text);
        early_rc = cli_fail(&e);
        goto early;
    }
    const char *prompt_text = prompt_path ? file_text : prompt_arg;
    tokenizer tok;
    int have_vocab = tokenizer_load(&tok, mf.dir, &e) == 0;
    if (!have_vocab && prompt_text) {
        free(file_text);
        early_rc = cli_fail(&e);
        goto early;
    }
    if (!have_vocab && held) {
        free(file_text);
        early_rc = cli_fail(&e);    /* a schema or grammar is about text */
        goto early;
    }
    if (!have_vocab) {
        fprintf(stderr, "moetier: no tokenizer in %s (%s); printing ids only\n", mf.dir, e.msg);
        print_ids = 1;
    }
    int *prompt = NULL, T = 0;
    reasoning_start reasoning = REASONING_CLOSED;   /* where the prompt leaves the answer */
    if (ids_s && cli_parse_ids(ids_s, &prompt, &T)) {
        if (have_vocab)
            tokenizer_free(&tok);
        early_rc = 2;
        goto early;
    }
    if (prompt_text) {
        token_list l = {0};
        int bad = encode_prompt(&tok, mf.dir, template_name, prompt_text, prompt_len, system, chat, &l,
                                &reasoning, &e);
        if (bad && prompt_path)
            err_prefix(&e, "%s: ", strcmp(prompt_path, "-") ? prompt_path : "standard input");
        free(file_text);
        if (bad) {
            tokenizer_free(&tok);
            early_rc = cli_fail(&e);
            goto early;
        }
        if (l.n == 0) {
            tokenizer_free(&tok);
            fprintf(stderr, "moetier run: the prompt is empty\n");
            early_rc = 2;
            goto early;
        }
        prompt = l.ids;
        T = (int)l.n;
    }
    cli_model m;
    if (cli_model_open(&m, &mf, &e)) {
        free(prompt);
        if (have_vocab)
            tokenizer_free(&tok);
        early_rc = cli_fail(&e);
        goto early;
    }
    const model_config *c = &m.mw.cfg;
    sampler smp;
    float *logits = malloc((size_t)c->vocab_size * sizeof *logits);
    token_list gen = {0};
    json_vocab jv = {0};
    dry_breakers dry = {0};
    int rc = 1, context_full = 0, stopped = 0, signalled = 0;
    if (!logits) {
        err_set(&e, "out of memory");
        goto done;
    }
    if (stop_signal_install()) {
        err_set(&e, "cannot set up the stop signals");
        goto done;
    }
    signalled = 1;
    m.en.stop_requested = stop_requested;
    if (sampling_flags_finish(&sp, &breakers, have_vocab ? &tok : NULL, m.en.kv.max_ctx, &dry, &e) ||
        sampler_create(&smp, &sp, c->vocab_size, &e))
        goto done;
    for (int i = 0; i < T; i++)
        sampler_accept(&smp, prompt[i]);
    /* stop at the config's eos ids, and in chat mode where chat stops a reply */
    int stop[VOCAB_MAX_REPLY_STOPS], n_stop = 0;
    if (!ignore_eos && (chat || system))
        n_stop = vocab_reply_stop_ids(&tok.v, c->eos_token_ids, c->n_eos, stop);
    else if (!ignore_eos)
        for (int i = 0; i < c->n_eos && i < VOCAB_MAX_REPLY_STOPS; i++)
            stop[n_stop++] = c->eos_token_ids[i];
    gen_params gp = {.max_new = n_new, .stop_ids = stop, .n_stop = n_stop,
                     .show_special = show_special, .out = stdout, .draft = draft,
                     .draft_stats = &draft_stats, .tuner = &tuner};
    if (held) {
        int grammar_given = hf.grammar_arg || hf.grammar_path;
        if (json_vocab_build(&jv, &tok.v, &e))
            goto done;
        gp.schema = grammar_given ? NULL : &schema;
        gp.grammar = grammar_given ? &grammar : NULL;
        gp.jv = &jv;
        gp.reasoning = reasoning;
        gp.think_begin = vocab_find_special(&tok.v, "<think>");
        gp.section_begin = tool_section_begin(&tok.v);
    }
    int restored = cli_prompt_cache_restore(&pcache, &m, prompt, T, logits, &e);
    int frc = restored < 0 ? -1 : 0;
    /* -n 0 still runs the prompt (its routing for --trace, its speed) */
    if (frc == 0 && restored < T)
        frc = engine_forward(&m.en, prompt + restored, T - restored, logits, 0, &e);
    /* a prompt stopped part way keeps what it reached */
    if (frc >= 0 && !pcache.all)
        cli_prompt_cache_save(&pcache, &m, frc == 0 ? logits : NULL);
    if (frc == 0) {
        cli_model_decode_starts(&m);
        frc = generate(&m, have_vocab ? &tok : NULL, &smp, logits, &gp, &gen, &e);
        /* the logits after the last position are the ones the last token was
         * sampled from, unless a stop cut a step short */
        if (frc >= 0 && pcache.all)
            cli_prompt_cache_save(&pcache, &m, frc == 1 ? NULL : logits);
    } else if (frc == 1 && pcache.all) {
        cli_prompt_cache_save(&pcache, &m, NULL);
    }
    context_full = frc == GEN_CONTEXT_FULL;
    stopped = frc == 1;
    sampler_destroy(&smp);
    if (frc < 0)
        goto done;      /* an error: no partial output on stdout */
    rc = 0;
    if (have_vocab)
        printf("\n");
    if (print_ids) {
        for (size_t i = 0; i < gen.n; i++)
            printf("%s%d", i ? "," : "", gen.ids[i]);
        printf("\n");
    }
    fflush(stdout);
    if (context_full)
        fprintf(stderr, "moetier: stopped after %zu of %d tokens: the context of %d tokens is full "
                "(raise -c)\n", gen.n, n_new, m.en.kv.max_ctx);
    if (stopped) {
        int sig = stop_signal_pending();
        fprintf(stderr, "moetier: %s: stopped after %zu generated tokens\n",
                sig == SIGTERM ? "SIGTERM" : "SIGINT", gen.n);
        rc = 128 + (sig ? sig : SIGINT);
    }
    const engine_stats *st = &m.en.stats;
    fprintf(stderr, "prefill: %llu tokens in %.3f s (%.2f tok/s); decode: %llu tokens in %.3f s "
            "(%.2f tok/s)\n", (unsigned long long)st->tokens_prefilled, st->prefill_seconds,
            st->prefill_seconds > 0 ? (double)st->tokens_prefilled / st->prefill_seconds : 0.0,
            (unsigned long long)st->tokens_decoded, st->decode_seconds,
            st->decode_seconds > 0 ? (double)st->tokens_decoded / st->decode_seconds : 0.0);
    if (draft) {
        gen_draft_stats_print(&draft_stats, stderr);
        draft_tuner_print(&tuner, stderr);
    }
done:
    if (rc == 1)
        cli_fail(&e);
    if (have_vocab)
        tokenizer_free(&tok);
    free(logits);
    token_list_free(&gen);
    free(prompt);
    json_schema_free(&schema);
    gbnf_free(&grammar);
    json_vocab_free(&jv);
    dry_breakers_free(&dry);
    cli_prompt_cache_free(&pcache);
    if (cli_model_close(&m) && rc == 0)
        rc = 1;     /* the --trace file could not be written */
    if (signalled)
        stop_signal_uninstall();
    return rc;
early:  /* before the model is open */
    json_schema_free(&schema);
    gbnf_free(&grammar);
    return early_rc;
}
