/* oai_request: see oai_request.h. */
#include "oai_request.h"

#include <float.h>
#include <math.h>
#include <stddef.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/base/json_alloc.h"
#include "core/engine/token_logprobs.h"
#include "core/text/grammar_answer.h"
#include "core/text/utf8.h"

int oai_fail(oai_error *err, int status, const char *type, const char *param, const char *code,
             const char *fmt, ...)
{
    memset(err, 0, sizeof *err);
    err->status = status;
    snprintf(err->type, sizeof err->type, "%s", type);
    snprintf(err->param, sizeof err->param, "%s", param ? param : "");
    snprintf(err->code, sizeof err->code, "%s", code ? code : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
    return -1;
}

int oai_bad(oai_error *err, const char *param, const char *fmt, ...)
{
    char msg[240];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return oai_fail(err, 400, "invalid_request_error", param, NULL, "%s", msg);
}

/* A field that may be absent or null; anything else must be a number in [lo, hi]. */
static int opt_number(const cJSON *root, const char *name, double lo, double hi, double *out,
                      int *present, oai_error *err)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, name);
    *present = 0;
    if (!v || cJSON_IsNull(v))
        return 0;
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble))
        return oai_bad(err, name, "'%s' must be a number", name);
    if (v->valuedouble < lo || v->valuedouble > hi)
        return oai_bad(err, name, "'%s' must be between %g and %g, got %g", name, lo, hi, v->valuedouble);
    *out = v->valuedouble;
    *present = 1;
    return 0;
}

static int opt_bool(const cJSON *root, const char *name, int *out, oai_error *err)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, name);
    if (!v || cJSON_IsNull(v))
        return 0;
    if (!cJSON_IsBool(v))
        return oai_bad(err, name, "'%s' must be a boolean", name);
    *out = cJSON_IsTrue(v);
    return 0;
}

/* vLLM's truncate_prompt_tokens (checked against what the server takes
 * once the prompt is tokenized) and skip_special_tokens. */
static int parse_prompt_and_text(oai_request *r, oai_error *err)
{
    double v;
    int present;
    if (opt_number(r->root, "truncate_prompt_tokens", -1, 1 << 30, &v, &present, err))
        return -1;
    if (present && (v != floor(v) || v == 0))
        return oai_bad(err, "truncate_prompt_tokens", "'truncate_prompt_tokens' must be -1 (to what the "
                       "server takes) or a number of tokens, at least 1");
    r->truncate_prompt = present ? (int)v : 0;
    int skip = 1;
    if (opt_bool(r->root, "skip_special_tokens", &skip, err))
        return -1;
    r->keep_special = !skip;
    return 0;
}

/* vLLM's stop_token_ids, min_tokens and ignore_eos. Neither of the last two is
 * taken with an answer held to JSON, a pattern or a call, which ends when it
 * is whole. */
static int parse_vllm_ends(oai_request *r, oai_error *err)
{
    const cJSON *ids = cJSON_GetObjectItemCaseSensitive(r->root, "stop_token_ids"), *x;
    if (ids && !cJSON_IsNull(ids)) {
        if (!cJSON_IsArray(ids) || cJSON_GetArraySize(ids) > OAI_MAX_STOP)
            return oai_bad(err, "stop_token_ids", "'stop_token_ids' must be a list of at most %d token ids",
                           OAI_MAX_STOP);
        cJSON_ArrayForEach(x, ids) {
            if (!cJSON_IsNumber(x) || x->valuedouble < 0 || x->valuedouble >= 1 << 30 ||
                x->valuedouble != floor(x->valuedouble))
                return oai_bad(err, "stop_token_ids", "'stop_token_ids' must be a list of token ids "
                               "(integers from 0)");
            r->stop_token_ids[r->n_stop_token_ids++] = (int)x->valuedouble;
        }
    }
    double v;
    int present;
    if (opt_number(r->root, "min_tokens", 0, 1 << 30, &v, &present, err))
        return -1;
    if (present && v != floor(v))
        return oai_bad(err, "min_tokens", "'min_tokens' must be an integer");
    r->min_tokens = present ? (int)v : 0;
    if (opt_bool(r->root, "ignore_eos", &r->ignore_eos, err) ||
        opt_bool(r->root, "include_stop_str_in_output", &r->include_stop, err) ||
        opt_bool(r->root, "post_sampling_probs", &r->post_sampling, err))
        return -1;
    return 0;
}

/* A whole number in [lo, hi], or absent. */
static int opt_int(const cJSON *root, const char *name, double lo, double hi, int *out, int *present,
                   oai_error *err)
{
    double v;
    if (opt_number(root, name, lo, hi, &v, present, err))
        return -1;
    if (*present && v != floor(v))
        return oai_bad(err, name, "'%s' must be an integer", name);
    if (*present)
        *out = (int)v;
    return 0;
}

/* llama.cpp's DRY, top-n-sigma and XTC (sampler.h), with llama.cpp's names. */
static int parse_llama_samplers(oai_request *r, oai_error *err)
{
    static const struct {
        const char *name;
        double lo, hi;
        size_t at; /* the float field (NAN when absent, but those set to -1) */
    } floats[] = {{"dry_multiplier", 0, 1e6, offsetof(oai_request, dry_multiplier)},
                  {"dry_base", 1, 1e6, offsetof(oai_request, dry_base)},
                  {"xtc_probability", 0, 1, offsetof(oai_request, xtc_probability)},
                  {"xtc_threshold", 0, 1, offsetof(oai_request, xtc_threshold)},
                  {"top_n_sigma", -1e6, 1e6, offsetof(oai_request, top_n_sigma)},
                  {"typical_p", 0, 1, offsetof(oai_request, typical_p)},
                  {"dynatemp_range", 0, 1e6, offsetof(oai_request, dynatemp_range)},
                  {"dynatemp_exponent", -1e6, 1e6, offsetof(oai_request, dynatemp_exponent)},
                  {"mirostat_tau", -1e6, 1e6, offsetof(oai_request, mirostat_tau)},
                  {"mirostat_eta", -1e6, 1e6, offsetof(oai_request, mirostat_eta)}};
    for (size_t i = 0; i < sizeof floats / sizeof *floats; i++) {
        double v;
        int present;
        if (opt_number(r->root, floats[i].name, floats[i].lo, floats[i].hi, &v, &present, err))
            return -1;
        if (present)
            *(float *)((char *)r + floats[i].at) = (float)v;
        if (!strcmp(floats[i].name, "top_n_sigma"))
            r->has_top_n_sigma = present;
    }
    int present;
    if (opt_int(r->root, "mirostat", 0, 2, &r->mirostat, &present, err))
        return -1;
    if (opt_int(r->root, "dry_allowed_length", 0, 1 << 20, &r->dry_allowed_length, &present, err) ||
        opt_int(r->root, "dry_penalty_last_n", -1, 1 << 30, &r->dry_penalty_last_n,
                &r->has_dry_penalty_last_n, err))
        return -1;
    const cJSON *b = cJSON_GetObjectItemCaseSensitive(r->root, "dry_sequence_breakers"), *x;
    if (!b || cJSON_IsNull(b))
        return 0;
    if (!cJSON_IsArray(b) || !b->child || cJSON_GetArraySize(b) > DRY_MAX_BREAKERS)
        return oai_bad(err, "dry_sequence_breakers",
                       "'dry_sequence_breakers' must be a list of 1 to %d strings", DRY_MAX_BREAKERS);
    cJSON_ArrayForEach(x, b) {
        if (!cJSON_IsString(x))
            return oai_bad(err, "dry_sequence_breakers", "'dry_sequence_breakers' must hold strings");
        r->dry_breakers[r->n_dry_breakers++] = x->valuestring;
    }
    r->has_dry_breakers = 1;
    return 0;
}

/* llama.cpp's limits meant for code completion, on the answer's text (not
 * its reasoning): n_indent, the least indentation of its lines after the
 * first; t_max_predict_ms, a time limit once it holds a line break. */
static int parse_llama_limits(oai_request *r, oai_error *err)
{
    double v;
    int present;
    if (opt_int(r->root, "n_indent", 0, 1 << 20, &r->n_indent, &present, err) ||
        opt_number(r->root, "t_max_predict_ms", 0, 1e12, &v, &present, err))
        return -1;
    r->t_max_predict_ms = present ? v : 0;
    return 0;
}

/* Sampling fields beyond OpenAI's, as vLLM and llama.cpp take them. */
static int parse_sampling_extensions(oai_request *r, oai_error *err)
{
    double v;
    int present;
    if (opt_number(r->root, "top_k", -1, 1 << 30, &v, &present, err))
        return -1;
    if (present && v != floor(v))
        return oai_bad(err, "top_k", "'top_k' must be an integer");
    if (present)
        r->top_k = v < 0 ? 0 : (int)v;
    if (opt_number(r->root, "min_p", 0, 1, &v, &present, err))
        return -1;
    if (present && v >= 1)
        return oai_bad(err, "min_p", "'min_p' must be less than 1");
    if (present)
        r->min_p = (float)v;
    if (opt_number(r->root, "repeat_last_n", -1, 1 << 20, &v, &present, err))
        return -1;
    if (present && v != floor(v))
        return oai_bad(err, "repeat_last_n", "'repeat_last_n' must be an integer (-1: the context)");
    r->has_repeat_last_n = present;
    r->repeat_last_n = present ? (int)v : 0;
    const char *rp_names[] = {"repeat_penalty", "repetition_penalty"};  /* the second wins */
    for (int i = 0; i < 2; i++) {
        if (opt_number(r->root, rp_names[i], 0, 1e6, &v, &present, err))
            return -1;
        if (present && !(v > 0))
            return oai_bad(err, rp_names[i], "'%s' must be greater than 0", rp_names[i]);
        if (present)
            r->repeat_penalty = (float)v;
    }
    return parse_llama_samplers(r, err) || parse_llama_limits(r, err) || parse_vllm_ends(r, err);
}

/* A field whose effect this server does not have is refused unless absent,
 * null or the value that asks for nothing. */
static int unsupported(const cJSON *root, const char *name, int asks_nothing, const char *why,
                       oai_error *err)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, name);
    if (!v || cJSON_IsNull(v) || asks_nothing)
        return 0;
    return oai_bad(err, name, "'%s' is not supported by this server (%s)", name, why);
}

static int is_number(const cJSON *root, const char *name, double want)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, name);
    return cJSON_IsNumber(v) && v->valuedouble == want;
}

/* modalities: only ["text"] (or a list of "text" alone) asks for nothing more */
static int text_only(const cJSON *modalities)
{
    const cJSON *m;
    if (!cJSON_IsArray(modalities))
        return 0;
    cJSON_ArrayForEach(m, modalities)
        if (!cJSON_IsString(m) || strcmp(m->valuestring, "text"))
            return 0;
    return 1;
}

/* Chat's fields for what this server does not make: the legacy function
 * calls (their answer is a message's function_call, which is not written)
 * and spoken answers. */
static int refuse_unsupported_chat(const cJSON *o, oai_error *err)
{
    const cJSON *functions = cJSON_GetObjectItemCaseSensitive(o, "functions");
    const cJSON *call = cJSON_GetObjectItemCaseSensitive(o, "function_call");
    return unsupported(o, "functions", cJSON_IsArray(functions) && !cJSON_GetArraySize(functions),
                       "declare them in 'tools', each as {\"type\": \"function\", \"function\": {...}}; "
                       "calls are answered in tool_calls", err) ||
           unsupported(o, "function_call", cJSON_IsString(call) && !strcmp(call->valuestring, "none"),
                       "use 'tool_choice'", err) ||
           unsupported(o, "audio", 0, "answers are text", err) ||
           unsupported(o, "modalities", text_only(cJSON_GetObjectItemCaseSensitive(o, "modalities")),
                       "answers are text: [\"text\"] only", err);
}

static int refuse_unsupported(const oai_request *r, oai_error *err)
{
    const cJSON *o = r->root;
    const cJSON *suffix = cJSON_GetObjectItemCaseSensitive(o, "suffix");
    return unsupported(o, "top_logprobs", r->kind == OAI_CHAT || is_number(o, "top_logprobs", 0),
                       "completions take the number of alternatives in 'logprobs'", err) ||
           unsupported(o, "echo", r->kind == OAI_COMPLETION ||
                                      cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(o, "echo")),
                       "chat does not send the messages back", err) ||
           unsupported(o, "best_of", is_number(o, "best_of", 1), "one answer is made", err) ||
           unsupported(o, "suffix", cJSON_IsString(suffix) && !suffix->valuestring[0],
                       "completions take one, for a model that fills in the middle", err) ||
           unsupported(o, "use_beam_search",
                       cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(o, "use_beam_search")),
                       "answers are sampled token by token", err) ||
           (r->kind == OAI_CHAT && refuse_unsupported_chat(o, err));
}

/* Chat: logprobs true or false (0 taken as false), top_logprobs 0 to 20;
 * completions: logprobs the number of alternatives (false: none). */
static int parse_logprobs(oai_request *r, oai_error *err)
{
    const cJSON *lp = cJSON_GetObjectItemCaseSensitive(r->root, "logprobs");
    double v;
    int present;
    if (r->kind == OAI_CHAT) {
        if (!is_number(r->root, "logprobs", 0) && opt_bool(r->root, "logprobs", &r->logprobs, err))
            return -1;
        if (opt_number(r->root, "top_logprobs", 0, LOGPROBS_MAX_TOP, &v, &present, err))
            return -1;
        if (present && v != floor(v))
            return oai_bad(err, "top_logprobs", "'top_logprobs' must be an integer");
        if (present && v > 0 && !r->logprobs)
            return oai_bad(err, "top_logprobs", "'top_logprobs' needs 'logprobs': true");
        r->top_logprobs = present ? (int)v : 0;
        return 0;
    }
    if (cJSON_IsFalse(lp))
        return 0;
    if (opt_number(r->root, "logprobs", 0, LOGPROBS_MAX_TOP, &v, &present, err))
        return -1;
    if (present && v != floor(v))
        return oai_bad(err, "logprobs", "'logprobs' must be an integer (the alternatives per token)");
    r->logprobs = present;
    r->top_logprobs = present ? (int)v : 0;
    return 0;
}

/* vLLM's prompt_logprobs: the alternatives per prompt token, 0 to 20. Like
 * vLLM, not with a stream (the prompt's scores would precede the answer's
 * events); not with several choices either, each of which would repeat them. */
static int parse_prompt_logprobs(oai_request *r, oai_error *err)
{
    double v;
    int present;
    if (opt_number(r->root, "prompt_logprobs", 0, LOGPROBS_MAX_TOP, &v, &present, err))
        return -1;
    if (!present)
        return 0;
    if (v != floor(v))
        return oai_bad(err, "prompt_logprobs", "'prompt_logprobs' must be an integer (the alternatives per "
                       "prompt token)");
    if (r->stream)
        return oai_bad(err, "prompt_logprobs", "'prompt_logprobs' is not available with 'stream'");
    if (r->n_choices > 1)
        return oai_bad(err, "prompt_logprobs", "'prompt_logprobs' with 'n' above 1 is not supported (each "
                       "choice would repeat the prompt's scores)");
    r->prompt_logprobs = 1;
    r->prompt_top_logprobs = (int)v;
    return 0;
}

/* A schema for the answer (response_format json_schema, guided_json, or
 * structured_outputs.json): compiled into r->schema; a refusal names the
 * field (param) and where the schema is (what). */
static int compile_answer_schema(oai_request *r, const cJSON *schema, const char *field, const char *what,
                                 oai_error *err)
{
    errbuf e;
    if (!(r->schema = calloc(1, sizeof *r->schema)))
        return oai_fail(err, 500, "server_error", NULL, NULL, "out of memory");
    if (json_schema_compile(schema, r->schema, &e)) {
        free(r->schema);
        r->schema = NULL;
        return oai_bad(err, field, "%s: %s", what, e.msg);
    }
    return 0;
}

/* response_format: {"type": "text"}, {"type": "json_object"}, or
 * {"type": "json_schema", "json_schema": {"schema": {...}}} (compiled here, so
 * a schema this server cannot enforce is a 400). JSON from the first token
 * on: chat must not think first (its reasoning is not JSON). */
static int parse_response_format(oai_request *r, oai_error *err)
{
    const cJSON *rf = cJSON_GetObjectItemCaseSensitive(r->root, "response_format");
    if (!rf || cJSON_IsNull(rf))
        return 0;
    const cJSON *t = cJSON_IsObject(rf) ? cJSON_GetObjectItemCaseSensitive(rf, "type") : NULL;
    if (!cJSON_IsString(t))
        return oai_bad(err, "response_format", "'response_format' must be {\"type\": \"text\"}, "
                   "{\"type\": \"json_object\"} or {\"type\": \"json_schema\", ...}");
    if (!strcmp(t->valuestring, "text"))
        return 0;
    const cJSON *schema = NULL;
    if (!strcmp(t->valuestring, "json_schema")) {
        const cJSON *js = cJSON_GetObjectItemCaseSensitive(rf, "json_schema");
        schema = cJSON_IsObject(js) ? cJSON_GetObjectItemCaseSensitive(js, "schema") : NULL;
        if (!cJSON_IsObject(schema) && !cJSON_IsTrue(schema))
            return oai_bad(err, "response_format", "'response_format' json_schema needs "
                       "'json_schema': {\"schema\": {...}}");
    } else if (strcmp(t->valuestring, "json_object")) {
        return oai_bad(err, "response_format", "'response_format' of type '%.40s' is not supported: "
                   "\"text\", \"json_object\" or \"json_schema\"", t->valuestring);
    }
    if (r->tool_choice_required || r->tool_choice_name)
        return oai_bad(err, "response_format", "'response_format' %s and a 'tool_choice' that asks for a "
                   "call cannot both hold the answer", t->valuestring);
    if (schema)
        return compile_answer_schema(r, schema, "response_format", "response_format.json_schema.schema", err);
    errbuf e;
    if (!(r->schema = calloc(1, sizeof *r->schema)) || json_schema_any_object(r->schema, &e)) {
        free(r->schema);
        r->schema = NULL;
        return oai_fail(err, 500, "server_error", NULL, NULL, "out of memory");
    }
    return 0;
}

/* vLLM's guided decoding: guided_regex, guided_choice, guided_json (a schema
 * or its JSON text), guided_grammar, or structured_outputs {"regex" |
 * "choice" | "json" | "grammar" | "json_object"} (structural_tag refused),
 * and llama.cpp's json_schema and grammar: the whole answer held
 * to a pattern, one of the strings, a schema or a GBNF grammar; one way at
 * most (with response_format's JSON modes too), not with a tool_choice that
 * asks for a call. */
static int parse_guided(oai_request *r, oai_error *err)
{
    const cJSON *so = cJSON_GetObjectItemCaseSensitive(r->root, "structured_outputs");
    if (so && !cJSON_IsNull(so) && !cJSON_IsObject(so))
        return oai_bad(err, "structured_outputs", "'structured_outputs' must be an object");
    const cJSON *tag = cJSON_IsObject(so) ? cJSON_GetObjectItemCaseSensitive(so, "structural_tag") : NULL;
    if (tag && !cJSON_IsNull(tag))
        return oai_bad(err, "structured_outputs", "structured_outputs.structural_tag is not supported: hold the "
                       "answer with json, regex, choice, grammar or json_object");
    static const struct {
        const char *name, *kind;
        int nested;                 /* in structured_outputs */
    } ways[] = {{"guided_regex", "regex", 0},   {"guided_choice", "choice", 0}, {"guided_json", "json", 0},
                {"guided_grammar", "grammar", 0}, {"regex", "regex", 1},       {"choice", "choice", 1},
                {"json", "json", 1},            {"grammar", "grammar", 1},     {"json_schema", "json", 0},
                {"grammar", "grammar", 0},      {"json_object", "json_object", 1}};
    const cJSON *found = NULL;
    const char *field = NULL, *kind = NULL;
    for (size_t k = 0; k < sizeof ways / sizeof *ways; k++) {
        const cJSON *x = cJSON_GetObjectItemCaseSensitive(ways[k].nested ? so : r->root, ways[k].name);
        const char *f = ways[k].nested ? "structured_outputs" : ways[k].name;
        int none = (cJSON_IsString(x) && !x->valuestring[0] && !strcmp(ways[k].kind, "grammar")) ||
                   (cJSON_IsFalse(x) && !strcmp(ways[k].kind, "json_object"));
        if (!x || cJSON_IsNull(x) || none)
            continue;   /* (llama.cpp's clients send an empty grammar for none) */
        if (found)
            return oai_bad(err, f, "ask for one of guided_regex, guided_choice, guided_json, "
                           "guided_grammar, structured_outputs, json_schema and grammar at most");
        found = x;
        kind = ways[k].kind;
        field = f;
    }
    if (!found)
        return 0;
    if (r->schema)
        return oai_bad(err, field, "'%s' and a JSON 'response_format' cannot both hold the answer", field);
    if (r->tool_choice_required || r->tool_choice_name)
        return oai_bad(err, field, "'%s' and a 'tool_choice' that asks for a call cannot both hold the answer",
                       field);
    errbuf e;
    if (!strcmp(kind, "grammar")) {
        if (!cJSON_IsString(found))
            return oai_bad(err, field, "'%s' must be a string (a grammar in llama.cpp's GBNF)", field);
        if (!(r->grammar = calloc(1, sizeof *r->grammar)))
            return oai_fail(err, 500, "server_error", NULL, NULL, "out of memory");
        if (gbnf_compile(r->grammar, found->valuestring, strlen(found->valuestring), &e)) {
            free(r->grammar);
            r->grammar = NULL;
            return oai_bad(err, field, "%s: %s", field, e.msg);
        }
        int held = grammar_answer_check(r->grammar);
        if (held == GRAMMAR_NO_MEMORY)
            return oai_fail(err, 500, "server_error", NULL, NULL, "out of memory");
        if (held)
            return oai_bad(err, field, "%s: %s", field, grammar_answer_strerror(held));
        return 0;
    }
    if (!strcmp(kind, "json_object")) {
        if (!cJSON_IsTrue(found))
            return oai_bad(err, field, "structured_outputs.json_object must be true or false");
        if (!(r->schema = calloc(1, sizeof *r->schema)) || json_schema_any_object(r->schema, &e)) {
            free(r->schema);
            r->schema = NULL;
            return oai_fail(err, 500, "server_error", NULL, NULL, "out of memory");
        }
        return 0;
    }
    if (!strcmp(kind, "json") && cJSON_IsString(found)) {
        /* (vLLM takes the schema as JSON text too) */
        cJSON *parsed = chat_json_parse(found->valuestring, strlen(found->valuestring), NULL);
        int rc = cJSON_IsObject(parsed) ? compile_answer_schema(r, parsed, field, field, err)
                                        : oai_bad(err, field, "'%s' must be a JSON schema (an object, or its "
                                                  "JSON text)", field);
        cJSON_Delete(parsed);
        return rc;
    }
    if (!strcmp(kind, "json"))
        return cJSON_IsObject(found) || cJSON_IsTrue(found)
                   ? compile_answer_schema(r, found, field, field, err)
                   : oai_bad(err, field, "'%s' must be a JSON schema (an object)", field);
    const char *choices[OAI_MAX_CHOICE_LIST];
    int n = 0;
    if (!strcmp(kind, "regex") && !cJSON_IsString(found))
        return oai_bad(err, field, "'%s' must be a string (a regular expression)", field);
    if (!strcmp(kind, "choice")) {
        const cJSON *c;
        if (!cJSON_IsArray(found) || !cJSON_GetArraySize(found) ||
            cJSON_GetArraySize(found) > OAI_MAX_CHOICE_LIST)
            return oai_bad(err, field, "'%s' must be a list of 1 to %d strings", field, OAI_MAX_CHOICE_LIST);
        cJSON_ArrayForEach(c, found) {
            if (!cJSON_IsString(c))
                return oai_bad(err, field, "'%s' must be a list of strings", field);
            choices[n++] = c->valuestring;
        }
    }
    if (!(r->regex = calloc(1, sizeof *r->regex)))
        return oai_fail(err, 500, "server_error", NULL, NULL, "out of memory");
    if (n ? regex_answer_choices(r->regex, choices, n, &e)
          : regex_answer_compile(r->regex, found->valuestring, &e)) {
        free(r->regex);
        r->regex = NULL;
        return oai_bad(err, field, "%s: %s", field, e.msg);
    }
    return 0;
}

/* A token id as a JSON key: a decimal integer, no sign or leading zero. */
static int token_id_key(const char *k, int *id)
{
    size_t n = strlen(k);
    if (n == 0 || n > 9 || (n > 1 && k[0] == '0') || strspn(k, "0123456789") != n)
        return 0;
    *id = atoi(k);
    return 1;
}

/* presence_penalty, frequency_penalty and logit_bias, as OpenAI takes them */
static int parse_penalties(oai_request *r, oai_error *err)
{
    double v;
    int present;
    if (opt_number(r->root, "presence_penalty", -2, 2, &v, &present, err))
        return -1;
    r->presence_penalty = present ? (float)v : NAN;
    if (opt_number(r->root, "frequency_penalty", -2, 2, &v, &present, err))
        return -1;
    r->frequency_penalty = present ? (float)v : NAN;
    const cJSON *lb = cJSON_GetObjectItemCaseSensitive(r->root, "logit_bias"), *c;
    if (!lb || cJSON_IsNull(lb))
        return 0;
    if (!cJSON_IsObject(lb))
        return oai_bad(err, "logit_bias", "'logit_bias' must be an object of token ids and biases");
    r->bias = calloc((size_t)cJSON_GetArraySize(lb) + 1, sizeof *r->bias);
    if (!r->bias)
        return oai_fail(err, 500, "server_error", NULL, NULL, "out of memory");
    cJSON_ArrayForEach(c, lb) {
        int id;
        if (!token_id_key(c->string, &id))
            return oai_bad(err, "logit_bias", "logit_bias: the key '%.40s' is not a token id (a "
                       "decimal integer)", c->string);
        if (!cJSON_IsNumber(c) || !(c->valuedouble >= -100 && c->valuedouble <= 100))
            return oai_bad(err, "logit_bias", "logit_bias['%s'] must be a number between -100 and 100",
                       c->string);
        r->bias[r->n_bias++] = (sampler_bias){id, (float)c->valuedouble};
    }
    return 0;
}

static int by_key(const void *a, const void *b)
{
    return strcmp((*(const cJSON *const *)a)->string, (*(const cJSON *const *)b)->string);
}

/* Whether some object in the tree holds a key twice (*key: the first found;
 * an object whose keys cannot be sorted for want of memory is passed).
 * JSON leaves a repeated key's meaning open: cJSON reads the first, Python
 * clients the last, so a request holding one is refused. */
static int duplicate_key(const cJSON *node, const char **key)
{
    for (const cJSON *c = node->child; c; c = c->next)
        if (duplicate_key(c, key))
            return 1;
    if (!cJSON_IsObject(node))
        return 0;
    int n = cJSON_GetArraySize(node);
    if (n < 2)
        return 0;
    const cJSON **keys = malloc((size_t)n * sizeof *keys);
    if (!keys)
        return 0;
    int i = 0;
    for (const cJSON *c = node->child; c; c = c->next)
        keys[i++] = c;
    qsort(keys, (size_t)n, sizeof *keys, by_key);
    for (i = 1; i < n && !*key; i++)
        if (!strcmp(keys[i - 1]->string, keys[i]->string))
            *key = keys[i]->string;
    free(keys);
    return *key != NULL;
}

static int parse_stop(oai_request *r, oai_error *err)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(r->root, "stop");
    if (!v || cJSON_IsNull(v))
        return 0;
    if (cJSON_IsString(v)) {
        if (v->valuestring[0])
            r->stop[r->n_stop++] = v->valuestring;
        return 0;
    }
    if (!cJSON_IsArray(v))
        return oai_bad(err, "stop", "'stop' must be a string or an array of strings");
    if (cJSON_GetArraySize(v) > OAI_MAX_STOP)
        return oai_bad(err, "stop", "'stop' holds at most %d strings", OAI_MAX_STOP);
    const cJSON *s;
    cJSON_ArrayForEach(s, v) {
        if (!cJSON_IsString(s))
            return oai_bad(err, "stop", "'stop' must be a string or an array of strings");
        if (s->valuestring[0])
            r->stop[r->n_stop++] = s->valuestring;
    }
    return 0;
}

/* The type of the first image or video part of a message's content, NULL
 * when there is none: moetier runs the language model only, and the chat
 * format renders such a part as a placeholder without its pixels. */
static const char *media_part_type(const cJSON *content)
{
    const cJSON *part;
    if (!cJSON_IsArray(content))
        return NULL;
    cJSON_ArrayForEach(part, content) {
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(part, "type");
        if (cJSON_IsString(t) && (!strcmp(t->valuestring, "image") || !strcmp(t->valuestring, "image_url") ||
                                  !strcmp(t->valuestring, "video") || !strcmp(t->valuestring, "video_url")))
            return t->valuestring;
    }
    return NULL;
}

static int parse_chat(oai_request *r, oai_error *err)
{
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(r->root, "messages");
    if (!m)
        return oai_bad(err, "messages", "'messages' is required");
    if (!cJSON_IsArray(m) || cJSON_GetArraySize(m) == 0)
        return oai_bad(err, "messages", "'messages' must be a non-empty array of message objects");
    int i = 0;
    const cJSON *msg;
    cJSON_ArrayForEach(msg, m) {
        if (!cJSON_IsObject(msg))
            return oai_bad(err, "messages", "messages[%d] must be an object", i);
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(msg, "role");
        if (!cJSON_IsString(role))
            return oai_bad(err, "messages", "messages[%d].role must be a string", i);
        const char *media = media_part_type(cJSON_GetObjectItemCaseSensitive(msg, "content"));
        if (media)
            return oai_bad(err, "messages", "messages[%d].content holds a part of type '%.40s': the model "
                       "reads text only (the chat format would put a placeholder where the %s was, "
                       "and the model would answer without it)", i, media,
                       strstr(media, "video") ? "video" : "image");
        i++;
    }
    r->messages = m;
    const cJSON *tools = cJSON_GetObjectItemCaseSensitive(r->root, "tools");
    if (tools && !cJSON_IsNull(tools)) {
        if (!cJSON_IsArray(tools))
            return oai_bad(err, "tools", "'tools' must be an array");
        int k = 0;
        const cJSON *t;
        cJSON_ArrayForEach(t, tools) {
            const cJSON *fn = cJSON_GetObjectItemCaseSensitive(t, "function");
            const cJSON *type = cJSON_GetObjectItemCaseSensitive(t, "type");
            /* (type may be left out: vLLM takes "function" then) */
            if (!cJSON_IsObject(t) || (type && (!cJSON_IsString(type) || strcmp(type->valuestring, "function"))) ||
                !cJSON_IsObject(fn) || !cJSON_IsString(cJSON_GetObjectItemCaseSensitive(fn, "name")))
                return oai_bad(err, "tools", "tools[%d] must be {\"type\": \"function\", \"function\": "
                           "{\"name\": ...}}", k);
            k++;
        }
        if (k)
            r->tools = tools;
    }
    const cJSON *tc = cJSON_GetObjectItemCaseSensitive(r->root, "tool_choice");
    if (tc && !cJSON_IsNull(tc)) {
        if (cJSON_IsString(tc)) {
            const char *s = tc->valuestring;
            if (strcmp(s, "none") && strcmp(s, "auto") && strcmp(s, "required"))
                return oai_bad(err, "tool_choice", "'tool_choice' must be \"none\", \"auto\", "
                           "\"required\" or a function object");
            if (!strcmp(s, "none"))
                r->tools = NULL;
            r->tool_choice_required = !strcmp(s, "required");
        } else if (!cJSON_IsObject(tc)) {
            return oai_bad(err, "tool_choice", "'tool_choice' must be a string or an object");
        } else {
            const cJSON *fn = cJSON_GetObjectItemCaseSensitive(tc, "function");
            const cJSON *name = cJSON_GetObjectItemCaseSensitive(fn, "name");
            const cJSON *type = cJSON_GetObjectItemCaseSensitive(tc, "type");
            if ((type && (!cJSON_IsString(type) || strcmp(type->valuestring, "function"))) || !cJSON_IsString(name))
                return oai_bad(err, "tool_choice", "'tool_choice' as an object must be {\"type\": "
                           "\"function\", \"function\": {\"name\": ...}}");
            r->tool_choice_name = name->valuestring;
        }
        if ((r->tool_choice_required || r->tool_choice_name) && !r->tools)
            return oai_bad(err, "tool_choice", "'tool_choice' asks for a tool call, but no 'tools' are given");
    }
    int parallel = 1;
    if (opt_bool(r->root, "parallel_tool_calls", &parallel, err))
        return -1;
    r->one_call = !parallel;
    /* chat template switches, at the top level or vLLM-style in chat_template_kwargs */
    errbuf e;
    if (chat_options_from_json(r->root, &r->copt, &e))
        return oai_bad(err, "thinking", "%s", e.msg);
    const cJSON *kw = cJSON_GetObjectItemCaseSensitive(r->root, "chat_template_kwargs");
    if (kw && !cJSON_IsNull(kw)) {
        if (!cJSON_IsObject(kw))
            return oai_bad(err, "chat_template_kwargs", "'chat_template_kwargs' must be an object");
        if (chat_options_from_json(kw, &r->copt, &e))
            return oai_bad(err, "chat_template_kwargs", "%s", e.msg);
        r->copt.vars = kw;  /* all of them reach an interpreted template, as in vLLM */
    }
    /* OpenAI's switch for reasoning models: "none" turns thinking off, any other effort on */
    const cJSON *effort = cJSON_GetObjectItemCaseSensitive(r->root, "reasoning_effort");
    if (effort && !cJSON_IsNull(effort)) {
        if (!cJSON_IsString(effort))
            return oai_bad(err, "reasoning_effort", "'reasoning_effort' must be a string (\"none\" turns "
                           "thinking off, any other effort on)");
        r->copt.thinking = strcmp(effort->valuestring, "none") != 0;
        r->copt.thinking_set = 1;
    }
    /* vLLM's and Hugging Face's: the answer continues the last message (the
     * generation prompt must then be off, as both require) */
    if (opt_bool(r->root, "continue_final_message", &r->continue_final, err))
        return -1;
    if (r->continue_final && r->copt.add_generation_prompt)
        return oai_bad(err, "continue_final_message", "'continue_final_message' continues the last message: "
                       "set 'add_generation_prompt' to false with it");
    const cJSON *tpl = cJSON_GetObjectItemCaseSensitive(r->root, "chat_template");
    if (tpl && !cJSON_IsNull(tpl)) {
        if (!cJSON_IsString(tpl) || !tpl->valuestring[0])
            return oai_bad(err, "chat_template", "'chat_template' must be a template's text");
        r->chat_template = tpl->valuestring;
    }
    return 0;
}

/* An array of token ids (integers from 0; the vocabulary is checked later). */
static int token_ids(const cJSON *a)
{
    const cJSON *x;
    if (!cJSON_IsArray(a) || !a->child)
        return 0;
    cJSON_ArrayForEach(x, a) {
        if (!cJSON_IsNumber(x) || x->valuedouble != floor(x->valuedouble) || x->valuedouble < 0 ||
            x->valuedouble > 2147483647.0)
            return 0;
    }
    return 1;
}

/* A string, or token ids, or an array of either: one prompt, or a batch. */
static int parse_completion(oai_request *r, oai_error *err)
{
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(r->root, "prompt");
    if (!p)
        return oai_bad(err, "prompt", "'prompt' is required");
    if (token_ids(p)) {
        r->prompt_ids = p;
        return 0;
    }
    if (cJSON_IsArray(p)) {
        int n = cJSON_GetArraySize(p), i = 0;
        if (n == 0)
            return oai_bad(err, "prompt", "'prompt' is an empty array; expected a string, token ids "
                       "or an array of either");
        if (n > OAI_MAX_BATCH)
            return oai_bad(err, "prompt", "'prompt' holds %d prompts; a batch takes at most %d", n,
                       OAI_MAX_BATCH);
        const cJSON *x;
        cJSON_ArrayForEach(x, p) {
            if (!cJSON_IsString(x) && !token_ids(x))
                return oai_bad(err, "prompt", "'prompt'[%d] must be a string or an array of token ids "
                           "(integers from 0)", i);
            i++;
        }
        if (n > 1) {
            r->batch_n = n;
            return 0;
        }
        p = p->child;
    }
    if (token_ids(p)) {
        r->prompt_ids = p;
        return 0;
    }
    if (!cJSON_IsString(p))
        return oai_bad(err, "prompt", "'prompt' must be a string or an array of token ids (integers "
                   "from 0)");
    r->prompt = p->valuestring;
    return 0;
}

char *oai_batch_body(const oai_request *r, int i)
{
    /* the body's fields, the batch replaced by its i-th prompt: a copy of the
     * whole body per prompt would copy every prompt once per prompt */
    cJSON *one = cJSON_CreateObject();
    int ok = one != NULL;
    const cJSON *f;
    cJSON_ArrayForEach(f, r->root) {
        if (!ok)
            break;
        cJSON *d = cJSON_Duplicate(strcmp(f->string, "prompt") ? f : cJSON_GetArrayItem(f, i), 1);
        ok = d && cJSON_AddItemToObject(one, f->string, d);
        if (!ok)
            cJSON_Delete(d);
    }
    char *body = ok ? cJSON_PrintUnformatted(one) : NULL;
    cJSON_Delete(one);
    return body;
}

/* Where the body holds an escaped NUL (\u0000, its backslash not itself
 * escaped), or -1: cJSON decodes it into a C string, which would silently end
 * the text there. */
/* How deep arrays and objects are open at body[at] (strings skipped): a parse
 * that failed there with more than cJSON's limit open failed for the depth. */
static int nesting_at(const char *body, size_t at)
{
    int depth = 0;
    for (size_t i = 0; i < at; i++) {
        if (body[i] == '"') {
            for (i++; i < at && body[i] != '"'; i++)
                i += body[i] == '\\';
        } else {
            depth += (body[i] == '[' || body[i] == '{') - (body[i] == ']' || body[i] == '}');
        }
    }
    return depth;
}

static long escaped_nul_at(const char *body, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (body[i] != '\\')
            continue;
        size_t k = i;
        while (k < len && body[k] == '\\')
            k++;
        if ((k - i) % 2 == 1 && len - k >= 5 && body[k] == 'u' && !memcmp(body + k + 1, "0000", 4))
            return (long)(k - 1);
        i = k - 1;
    }
    return -1;
}

cJSON *oai_body_parse(const char *body, size_t len, oai_error *err)
{
    size_t bad_byte = utf8_validate((const uint8_t *)body, len);
    if (bad_byte < len) {
        oai_bad(err, "", "the body is not valid UTF-8 (byte %zu): JSON must be sent as UTF-8", bad_byte);
        return NULL;
    }
    const char *end = NULL;
    cJSON *root = chat_json_parse(body, len, &end);
    if (!root && json_alloc_failed()) {
        oai_fail(err, 500, "server_error", NULL, NULL, "out of memory");
        return NULL;
    }
    if (!root) {
        size_t at = end && end >= body ? (size_t)(end - body) : 0;
        if (at < len && (unsigned char)body[at] < 0x20)
            oai_bad(err, "", "the body holds a control character (0x%02x) at byte %zu: JSON allows none "
                "unescaped", (unsigned char)body[at], at);
        else if (nesting_at(body, at < len ? at + 1 : len) > CJSON_NESTING_LIMIT)
            oai_bad(err, "", "the body nests arrays and objects deeper than %d levels (byte %zu)",
                CJSON_NESTING_LIMIT, at);
        else
            oai_bad(err, "", "the body is not valid JSON (error near byte %zu)", at);
        return NULL;
    }
    const char *twice = NULL;
    long nul;
    if (!cJSON_IsObject(root))
        oai_bad(err, "", "the body must be a JSON object");
    else if (duplicate_key(root, &twice))
        oai_bad(err, "", "the key '%.60s' appears twice in one object", twice);
    else if ((nul = escaped_nul_at(body, len)) >= 0)
        oai_bad(err, "", "the body holds a NUL character (\\u0000, byte %ld): text must not contain NUL",
            nul);
    else
        return root;
    cJSON_Delete(root);
    return NULL;
}

int oai_request_parse(oai_kind kind, const char *body, size_t len, const chat_options *defaults,
                      oai_request *r, oai_error *err)
{
    memset(r, 0, sizeof *r);
    cJSON *root = oai_body_parse(body, len, err);
    return root ? oai_request_from_json(kind, root, defaults, r, err) : -1;
}

int oai_request_from_json(oai_kind kind, cJSON *root, const chat_options *defaults, oai_request *r,
                          oai_error *err)
{
    memset(r, 0, sizeof *r);
    r->root = root;
    r->kind = kind;
    r->temperature = -1.0f;
    r->top_p = -1.0f;
    r->min_p = -1.0f;
    r->top_k = -1;
    r->dry_multiplier = r->dry_base = r->xtc_probability = r->xtc_threshold = -1.0f;
    r->typical_p = r->dynatemp_range = -1.0f;
    r->dynatemp_exponent = r->mirostat_tau = r->mirostat_eta = NAN; /* (any number may be asked) */
    r->dry_allowed_length = r->mirostat = -1;
    if (defaults)
        r->copt = *defaults;
    else
        chat_options_default(&r->copt);
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(r->root, "model");
    if (model && !cJSON_IsNull(model)) {
        if (!cJSON_IsString(model))
            return oai_bad(err, "model", "'model' must be a string");
        r->model = model->valuestring;
    }
    if ((kind == OAI_CHAT ? parse_chat(r, err) : parse_completion(r, err)))
        return -1;
    double v;
    int present;
    if (opt_number(r->root, "temperature", 0, 2, &v, &present, err))
        return -1;
    if (present)
        r->temperature = (float)v;
    if (opt_number(r->root, "top_p", 0, 1, &v, &present, err))
        return -1;
    if (present) {
        if (v <= 0)
            return oai_bad(err, "top_p", "'top_p' must be greater than 0");
        /* (one below float's range keeps the likeliest token, as asked; 0 would
         * read as absent) */
        r->top_p = v < FLT_MIN ? FLT_MIN : (float)v;
    }
    /* max_completion_tokens replaced max_tokens in the chat API: it wins when a
     * client sends both (each is checked) */
    if (kind == OAI_COMPLETION && opt_bool(r->root, "echo", &r->echo, err))
        return -1;
    /* 0 only with echo: the prompt is scored, nothing generated (OpenAI's) */
    const char *mt_names[] = {"max_tokens", "max_completion_tokens"};
    for (int i = 0; i < 2; i++) {
        if (opt_number(r->root, mt_names[i], r->echo ? 0 : 1, 1 << 30, &v, &present, err))
            return -1;
        if (present && v != floor(v))
            return oai_bad(err, mt_names[i], "'%s' must be an integer", mt_names[i]);
        if (present) {
            r->max_tokens = (int)v;
            r->score_only = v == 0;
        }
    }
    if (opt_number(r->root, "seed", -9007199254740992.0, 9007199254740992.0, &v, &present, err))
        return -1;
    if (present) {
        if (v != floor(v))
            return oai_bad(err, "seed", "'seed' must be an integer");
        r->has_seed = 1;
        r->seed = (uint64_t)(int64_t)v;
    }
    if (opt_number(r->root, "n", 1, OAI_MAX_CHOICES, &v, &present, err))
        return -1;
    if (present && v != floor(v))
        return oai_bad(err, "n", "'n' must be an integer");
    r->n_choices = present ? (int)v : 1;
    if (r->n_choices > 1 && r->echo)
        return oai_bad(err, "n", "'n' above 1 with 'echo' is not supported (each choice would repeat "
                   "the prompt's scores)");
    if (parse_sampling_extensions(r, err) || parse_penalties(r, err) || parse_logprobs(r, err) ||
        parse_response_format(r, err) || parse_guided(r, err) || parse_prompt_and_text(r, err) ||
        refuse_unsupported(r, err))
        return -1;
    if ((r->min_tokens || r->ignore_eos) &&
        (r->schema || r->regex || r->grammar || r->tool_choice_required || r->tool_choice_name))
        return oai_bad(err, r->min_tokens ? "min_tokens" : "ignore_eos", "'%s' and an answer held to JSON, a "
                       "pattern, a grammar or a call (which ends once whole) cannot both be kept",
                       r->min_tokens ? "min_tokens" : "ignore_eos");
    if (opt_bool(r->root, "stream", &r->stream, err) ||
        opt_bool(r->root, "return_progress", &r->return_progress, err))
        return -1;
    if (r->stream && r->batch_n)
        return oai_bad(err, "stream", "a batch of prompts is answered whole, not streamed: send "
                   "'stream' false, or the prompts one per request");
    const cJSON *so = cJSON_GetObjectItemCaseSensitive(r->root, "stream_options");
    if (so && !cJSON_IsNull(so)) {
        if (!cJSON_IsObject(so))
            return oai_bad(err, "stream_options", "'stream_options' must be an object");
        if (opt_bool(so, "include_usage", &r->include_usage, err))
            return -1;
        if (!r->stream)     /* (OpenAI's rule: it asks for what no whole answer has) */
            return oai_bad(err, "stream_options", "'stream_options' is only taken with 'stream' true");
    }
    if (parse_stop(r, err) || parse_prompt_logprobs(r, err))
        return -1;
    if (r->max_tokens && r->min_tokens > r->max_tokens)
        return oai_bad(err, "min_tokens", "'min_tokens' (%d) is above 'max_tokens' (%d)", r->min_tokens,
                       r->max_tokens);
    return 0;
}

void oai_request_free(oai_request *r)
{
    cJSON_Delete(r->root);
    free(r->bias);
    if (r->schema)
        json_schema_free(r->schema);
    free(r->schema);
    if (r->regex)
        json_regex_free(r->regex);
    free(r->regex);
    if (r->grammar)
        gbnf_free(r->grammar);
    free(r->grammar);
    if (r->force)
        tool_force_free(r->force);
    free(r->force);
    dry_breakers_free(&r->dry);
    memset(r, 0, sizeof *r);
}
