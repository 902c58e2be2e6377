/* cmd_serve: `moetier serve -m DIR [--host H] [--port P] [limits] [tier and
 * sampling flags]`: the OpenAI- and Anthropic-compatible server (server/serve.h). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli_common.h"
#include "commands.h"
#include "core/base/fileutil.h"
#include "core/text/chat_format.h"
#include "sampling_flags.h"
#include "server/serve.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: moetier serve -m DIR [--host 127.0.0.1] [--port 8080] [options]\n"
               "  OpenAI-compatible HTTP server: POST /v1/chat/completions, POST /v1/completions,\n"
               "  POST /v1/responses, GET /v1/models, GET /health, GET /metrics (Prometheus); and\n"
               "  Anthropic's Messages API: POST /v1/messages, POST /v1/messages/count_tokens;\n"
               "  llama.cpp's POST /completion and POST /infill; a chat page for a browser at GET /.\n"
               "  Stops on SIGINT/SIGTERM.\n"
               "  -m DIR               checkpoint directory (with its tokenizer)\n"
               "  --host H             address to bind (default 127.0.0.1: this machine only)\n"
               "  --port P             port (default 8080; 0: any free port, printed at start)\n"
               "  --allowed-origin O   web pages of origin O (comma-separated; '*': any) may use the\n"
               "                       server, with CORS; others' requests (a page's Origin header\n"
               "                       not the server's own) are refused with 403\n"
               "  --allowed-host NAME  bound to this machine, also answer requests that call the\n"
               "                       server NAME (Host header; a reverse proxy's; '*': any); others\n"
               "                       than its addresses and localhost are refused (DNS rebinding)\n"
               "  --api-key KEY        require 'Authorization: Bearer KEY' or 'x-api-key: KEY'\n"
               "                       (also from MOETIER_API_KEY)\n"
               "  --api-key-file FILE  take any key FILE lists, one a line (with --api-key's too;\n"
               "                       blank lines and lines starting with # are skipped)\n"
               "  --model-name NAME    the model id clients use (default: DIR's last component)\n"
               "  --alias NAME         another id requests may name (repeatable, up to 16; '*': any\n"
               "                       name, for clients that name their own models)\n"
               "  --max-body BYTES     largest request body (default 4194304; 413 beyond)\n"
               "  --max-prompt N       most prompt tokens (default: the context less one)\n"
               "  --max-queue N        requests waiting or running at once (default 32, or\n"
               "                       --parallel if more; 503 beyond)\n"
               "  --parallel N, -np N  requests run at once (default 1), each in a slot with the\n"
               "                       context / N positions; their tokens are computed in one\n"
               "                       step, each with the bits it would have alone\n"
               "  --decode-interval MS with --parallel: while a prompt is prefilled, the\n"
               "                       generating requests get their next token between its\n"
               "                       layers once MS ms (and as long as their last step took)\n"
               "                       have passed since their last one (default 500; 0: only\n"
               "                       between prompt chunks)\n"
               "  --draft-lookup N     check up to N (1-3) tokens guessed from each request's\n"
               "                       conversation in the step of its generated one: faster\n"
               "                       on answers that repeat earlier text, the same answer\n"
               "                       (default 0: off)\n"
               "  --max-tokens N       reply length when a request sets none (default: up to the\n"
               "                       context)\n"
               "  --no-think           chat template with thinking off unless a request asks\n"
               "  --trust-request-chat-template  render a request's own 'chat_template' (vLLM's\n"
               "                       field; a template is code the server runs: off by default)\n"
               "  --keep-alive S       a stream waiting on a long prefill gets a keep-alive between\n"
               "                       prompt chunks once S seconds pass without a byte (default\n"
               "                       10; 0: after every chunk)\n"
               "  --free-tool-calls    leave the tool calls the model begins (tool_choice auto) as\n"
               "                       written; by default each is held to Kimi's call format and\n"
               "                       its function's parameters once the model begins it\n"
               "  --prompt-cache-gb X  host memory for earlier conversations' KV caches, copied\n"
               "                       back when their next turn comes instead of prefilled again\n"
               "                       (default: 4, or a sixteenth of the memory available if\n"
               "                       less; 0: off); an automatic DRAM tier leaves it room\n"
               "  --prompt-cache-dir DIR  keep the prompt cache in DIR across restarts: read at\n"
               "                       start, written while idle and at a clean stop\n"
               "  --no-webui           no chat page at GET / (a 404 instead)\n"
               "  and the context, tier and sampling options of `moetier run` (sampling options\n"
               "  are defaults; a request's temperature, top_p and seed override them; a request\n"
               "  naming no seed takes the seed given here, or else (or with -1) a fresh one):\n");
    chat_template_flag_usage(f);
    model_flags_usage(f);
    sampling_flags_usage(f);
}

/* The last path component of dir, without trailing slashes. */
static void dir_name(const char *dir, char *out, size_t cap)
{
    size_t n = strlen(dir);
    while (n > 1 && dir[n - 1] == '/')
        n--;
    size_t b = n;
    while (b > 0 && dir[b - 1] != '/')
        b--;
    snprintf(out, cap, "%.*s", (int)(n - b), dir + b);
}

/* Opens the model and serves it until SIGINT or SIGTERM; the exit status. */
static int serve_model(serve_options *so, model_flags *mf, breaker_flags *breakers, const char *template_name)
{
    char name[256];
    if (!so->model_name) {
        dir_name(mf->dir, name, sizeof name);
        so->model_name = name;
    }
    errbuf e;
    breaker_flags_strings(breakers, &so->dry_breakers, &so->n_dry_breakers);
    if (sampler_check(&so->sp, &e)) {
        cli_fail(&e);
        return 2;       /* a bad option value, as when it does not parse */
    }
    /* the prompt cache grows as conversations come: an automatic DRAM tier
     * leaves it room */
    if (so->prompt_cache_gb < 0)
        so->prompt_cache_gb = serve_prompt_cache_default_gb();
    if (so->prompt_cache_dir && so->prompt_cache_gb <= 0) {
        fprintf(stderr, "moetier serve: --prompt-cache-dir keeps the prompt cache, which "
                "--prompt-cache-gb 0 turns off\n");
        return 2;
    }
    /* before the model loads: a path that cannot be the directory fails at once */
    if (so->prompt_cache_dir && dir_ensure_private(so->prompt_cache_dir, &e))
        return cli_fail(&e);
    if (so->prompt_cache_dir && access(so->prompt_cache_dir, W_OK | X_OK) != 0) {
        err_set(&e, "--prompt-cache-dir %s: cannot write there: %s", so->prompt_cache_dir,
                strerror(errno));
        return cli_fail(&e);
    }
    mf->seqs = so->parallel;
    mf->tiers.reserve_bytes = (uint64_t)(so->prompt_cache_gb * 1e9);
    tokenizer tok;
    chat_template tpl = {0};    /* (unused when no_chat) */
    cli_model m;
    if (tokenizer_load(&tok, mf->dir, &e))
        return cli_fail(&e);
    /* a model whose template does not compile is still served: its
     * completions take raw prompts, and chat requests are refused saying why */
    if (cli_chat_template(mf->dir, template_name, &tpl, &e)) {
        if (template_name && strcmp(template_name, "auto")) {
            tokenizer_free(&tok);
            return cli_fail(&e);
        }
        so->no_chat = 1;
        fprintf(stderr, "moetier serve: chat requests will be refused: %s\n", e.msg);
    } else {
        fprintf(stderr, "moetier serve: chat format: %s\n", tpl.label);
    }
    if (cli_model_open(&m, mf, &e)) {
        tokenizer_free(&tok);
        chat_template_close(&tpl);
        return cli_fail(&e);
    }
    int rc = serve_run(&m, &tok, &tpl, so, &e) ? cli_fail(&e) : 0;
    chat_template_close(&tpl);
    if (cli_model_close(&m) && rc == 0)
        rc = 1;     /* the --trace file could not be written */
    tokenizer_free(&tok);
    return rc;
}

int cmd_serve(int argc, char **argv)
{
    model_flags mf = {0};
    serve_options so;
    breaker_flags breakers = {0};
    serve_options_default(&so);
    const char *api_key = getenv("MOETIER_API_KEY"), *api_key_file = NULL;
    int key_from_env = api_key != NULL, max_queue_set = 0, decode_interval_set = 0;
    const char *template_name = NULL;
    for (int i = 1; i < argc; i++) {
        int r = model_flags_parse(&mf, argc, argv, &i);
        if (!r && !strcmp(argv[i], "--seed") && i + 1 < argc && !strcmp(argv[i + 1], "-1")) {
            so.seed_given = 0;      /* llama.cpp's server's "a fresh seed each request" */
            i++;
            continue;
        }
        if (!r && !strcmp(argv[i], "--seed"))
            so.seed_given = 1;
        if (!r)
            r = sampling_flag_parse(&so.sp, &breakers, argc, argv, &i);
        if (!r)
            r = chat_template_flag_parse(&template_name, argc, argv, &i);
        if (r < 0)
            return 2;
        if (r)
            continue;
        const char *a = argv[i], *v;
        unsigned long long u;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--host")) {
            if (!(so.host = cli_value(argc, argv, &i)))
                return 2;
        } else if (!strcmp(a, "--allowed-host")) {
            if (!(so.allowed_hosts = cli_value(argc, argv, &i)))
                return 2;
        } else if (!strcmp(a, "--allowed-origin")) {
            if (!(so.allowed_origins = cli_value(argc, argv, &i)))
                return 2;
        } else if (!strcmp(a, "--port")) {
            if (!(v = cli_value(argc, argv, &i)) || cli_int(a, v, 0, 65535, &so.port))
                return 2;
        } else if (!strcmp(a, "--api-key")) {
            if (!(api_key = cli_value(argc, argv, &i)))
                return 2;
            key_from_env = 0;
        } else if (!strcmp(a, "--api-key-file")) {
            if (!(api_key_file = cli_value(argc, argv, &i)))
                return 2;
        } else if (!strcmp(a, "--model-name")) {
            if (!(so.model_name = cli_value(argc, argv, &i)))
                return 2;
        } else if (!strcmp(a, "--alias")) {
            if (!(v = cli_value(argc, argv, &i)))
                return 2;
            if (so.n_aliases == SERVE_MAX_ALIASES || !v[0] || strlen(v) > 255) {
                fprintf(stderr, "moetier serve: --alias takes 1 to 255 bytes, at most %d times\n",
                        SERVE_MAX_ALIASES);
                return 2;
            }
            so.aliases[so.n_aliases++] = v;
        } else if (!strcmp(a, "--max-body")) {
            if (!(v = cli_value(argc, argv, &i)) || cli_u64(a, v, &u))
                return 2;
            if (u < 64 || u > (1ull << 32)) {
                fprintf(stderr, "moetier serve: --max-body must be between 64 and 4294967296\n");
                return 2;
            }
            so.max_body = (size_t)u;
        } else if (!strcmp(a, "--max-prompt")) {
            if (!(v = cli_value(argc, argv, &i)) || cli_int(a, v, 1, 1 << 30, &so.max_prompt_tokens))
                return 2;
        } else if (!strcmp(a, "--max-queue")) {
            if (!(v = cli_value(argc, argv, &i)) || cli_int(a, v, 1, 100000, &so.max_queue))
                return 2;
            max_queue_set = 1;
        } else if (!strcmp(a, "--draft-lookup")) {
            if (!(v = cli_value(argc, argv, &i)) || cli_int(a, v, 0, ENGINE_DRAFT_MAX_T - 1, &so.draft))
                return 2;
        } else if (!strcmp(a, "--parallel") || !strcmp(a, "-np")) {
            if (!(v = cli_value(argc, argv, &i)) || cli_int(a, v, 1, 256, &so.parallel))
                return 2;
        } else if (!strcmp(a, "--decode-interval")) {
            int ms;
            if (!(v = cli_value(argc, argv, &i)) || cli_int(a, v, 0, 3600000, &ms))
                return 2;
            so.decode_interval = ms / 1000.0;
            decode_interval_set = 1;
        } else if (!strcmp(a, "--max-tokens")) {
            if (!(v = cli_value(argc, argv, &i)) || cli_int(a, v, 1, 1 << 30, &so.default_max_tokens))
                return 2;
        } else if (!strcmp(a, "--prompt-cache-gb")) {
            float gb;
            if (!(v = cli_value(argc, argv, &i)) || cli_float(a, v, &gb))
                return 2;
            if (!(gb >= 0 && gb <= 1e6)) {
                fprintf(stderr, "moetier serve: --prompt-cache-gb must be between 0 and 1e6\n");
                return 2;
            }
            so.prompt_cache_gb = gb;
        } else if (!strcmp(a, "--prompt-cache-dir")) {
            if (!(so.prompt_cache_dir = cli_value(argc, argv, &i)))
                return 2;
        } else if (!strcmp(a, "--no-think")) {
            so.copt.thinking = 0;
            so.copt.thinking_set = 1;
        } else if (!strcmp(a, "--trust-request-chat-template")) {
            so.trust_request_template = 1;
        } else if (!strcmp(a, "--keep-alive")) {
            float sec;
            if (!(v = cli_value(argc, argv, &i)) || cli_float(a, v, &sec))
                return 2;
            if (!(sec >= 0 && sec <= 86400)) {
                fprintf(stderr, "moetier serve: --keep-alive must be between 0 and 86400 seconds\n");
                return 2;
            }
            so.keep_alive = sec;
        } else if (!strcmp(a, "--free-tool-calls")) {
            so.free_tool_calls = 1;
        } else if (!strcmp(a, "--no-webui")) {
            so.no_webui = 1;
        } else {
            fprintf(stderr, "moetier serve: unknown option '%s'\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (!mf.dir) {
        fprintf(stderr, "moetier serve: -m DIR is required\n");
        return 2;
    }
    if (model_flags_check(&mf, "serve"))
        return 2;
    /* the queue counts running requests too: the slots must fit in it */
    if (so.parallel > so.max_queue && max_queue_set) {
        fprintf(stderr, "moetier serve: --max-queue %d is less than --parallel %d: requests "
                "waiting or running could not fill the slots\n", so.max_queue, so.parallel);
        return 2;
    }
    if (so.parallel > so.max_queue)
        so.max_queue = so.parallel;
    if (decode_interval_set && so.parallel == 1)
        fprintf(stderr, "moetier serve: --decode-interval has no effect with --parallel 1: one "
                "request runs at a time, so none generates while a prompt is prefilled\n");
    if (so.model_name && (!so.model_name[0] || strlen(so.model_name) > 255)) {
        /* clients must send it back exactly: a cut name would never match */
        fprintf(stderr, "moetier serve: --model-name must be 1 to 255 bytes long\n");
        return 2;
    }
    {
        errbuf ke;
        if ((api_key && api_keys_add(&so.keys, api_key, key_from_env ? "MOETIER_API_KEY" : "--api-key", &ke)) ||
            (api_key_file && api_keys_read_file(&so.keys, api_key_file, &ke))) {
            fprintf(stderr, "moetier serve: %s\n", ke.msg);
            api_keys_free(&so.keys);
            return 2;
        }
    }
    cli_note_template(&mf, template_name);
    cli_note_file(&mf, "--api-key-file", api_key_file);
    int rc = serve_model(&so, &mf, &breakers, template_name);
    api_keys_free(&so.keys);
    return rc;
}
