/* llama_request: see llama_request.h. */
#include "llama_request.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "chat_body.h"
#include "core/engine/token_logprobs.h"

/* The fields copied as they are: the same name and meaning in OpenAI's
 * completions (with the server's extensions, oai_request.h). */
static const char *const same[] = {"temperature",      "top_k",      "top_p",          "min_p",
                                   "repeat_penalty",   "repeat_last_n", "presence_penalty",
                                   "frequency_penalty", "stop",      "stream",         "ignore_eos",
                                   "json_schema",      "grammar",    "dry_multiplier", "dry_base",
                                   "dry_allowed_length", "dry_penalty_last_n", "dry_sequence_breakers",
                                   "xtc_probability",  "xtc_threshold", "top_n_sigma",    "typical_p",
                                   "dynatemp_range",   "dynatemp_exponent", "mirostat",    "mirostat_tau",
                                   "mirostat_eta",     "post_sampling_probs", "n_indent",
                                   "t_max_predict_ms", "return_progress"};

/* LoRA adapters, asked for: refused (none are loaded; an empty list passes) */
static int refuse_lora(const cJSON *root, oai_error *err)
{
    const cJSON *lora = chat_body_field(root, "lora");
    if (lora && !(cJSON_IsArray(lora) && !cJSON_GetArraySize(lora)))
        return oai_bad(err, "lora", "'lora' is not supported by this server (no adapters are loaded)");
    return 0;
}

/* A token id written as JSON (a number) or as an object key (digits). */
static int bias_id(const cJSON *v, const char *key, double *id)
{
    if (key) {
        char *end;
        *id = strtod(key, &end);
        return *key && !*end && *id == floor(*id) && *id >= 0;
    }
    *id = v->valuedouble;
    return cJSON_IsNumber(v) && *id == floor(*id) && *id >= 0;
}

/* llama.cpp's logit_bias, {"id": bias} or [[id, bias]] (a bias false: the
 * token banned), as OpenAI's {"id": bias} (false: -100, the ban). */
static int translate_bias(const cJSON *lb, cJSON *out, oai_error *err)
{
    cJSON *o = cJSON_AddObjectToObject(out, "logit_bias");
    if (!o)
        return chat_body_oom(err);
    const cJSON *x;
    cJSON_ArrayForEach(x, lb) {
        const cJSON *id_v = cJSON_IsArray(lb) ? cJSON_GetArrayItem(x, 0) : x;
        const cJSON *bias = cJSON_IsArray(lb) ? cJSON_GetArrayItem(x, 1) : x;
        double id;
        if ((cJSON_IsArray(lb) && (!cJSON_IsArray(x) || cJSON_GetArraySize(x) != 2)) ||
            !bias_id(id_v, cJSON_IsArray(lb) ? NULL : x->string, &id) ||
            !(cJSON_IsNumber(bias) || cJSON_IsFalse(bias)))
            return oai_bad(err, "logit_bias",
                           "'logit_bias' must map token ids to biases ({\"15043\": -1} "
                           "or [[15043, -1]]; a bias false bans the token); a token's text is not taken");
        char key[32];
        snprintf(key, sizeof key, "%.0f", id);
        if (!cJSON_AddNumberToObject(o, key, cJSON_IsFalse(bias) ? -100 : bias->valuedouble))
            return chat_body_oom(err);
    }
    return 0;
}

static int translate(const cJSON *root, cJSON *out, int *predict_none, oai_error *err)
{
    const cJSON *prompt = chat_body_field(root, "prompt"), *x;
    if (!prompt)
        return oai_bad(err, "prompt", "'prompt' is required");
    /* one prompt (text or token ids), or a list of them: llama.cpp answers each */
    int ids = cJSON_IsArray(prompt), many = ids && prompt->child;
    for (x = ids ? prompt->child : NULL; x; x = x->next) {
        int listed = cJSON_IsArray(x);
        for (const cJSON *y = listed ? x->child : NULL; y; y = y->next)
            listed &= cJSON_IsNumber(y);
        ids &= cJSON_IsNumber(x);
        many &= cJSON_IsString(x) || listed;
    }
    if (!cJSON_IsString(prompt) && !ids && !many)
        return oai_bad(err, "prompt",
                       "'prompt' must be a string, a list of token ids, or a list of prompts (strings or "
                       "lists of token ids); a list mixing text and ids is not taken");
    if (chat_body_copy(out, "prompt", prompt))
        return chat_body_oom(err);
    /* n_predict: a number of tokens; below 0 up to the context; 0 the prompt
     * computed (into the prompt cache) and nothing generated, as llama.cpp */
    const cJSON *np = chat_body_field(root, "n_predict");
    if (np && !(cJSON_IsNumber(np) && np->valuedouble == floor(np->valuedouble) &&
                np->valuedouble <= (double)(1 << 30)))
        return oai_bad(err, "n_predict",
                       "'n_predict' must be an integer up to %d: a number of tokens, 0 for none "
                       "(the prompt is computed), or below 0 for up to the context", 1 << 30);
    if (np && np->valuedouble >= 1 && chat_body_copy(out, "max_tokens", np))
        return chat_body_oom(err);
    *predict_none = np && np->valuedouble == 0;
    for (size_t i = 0; i < sizeof same / sizeof *same; i++) {
        const cJSON *v = chat_body_field(root, same[i]);
        if (v && chat_body_copy(out, same[i], v))
            return chat_body_oom(err);
    }
    const cJSON *seed = chat_body_field(root, "seed");
    if (seed && !(cJSON_IsNumber(seed) && seed->valuedouble == -1) && chat_body_copy(out, "seed", seed))
        return chat_body_oom(err);
    const cJSON *probs = chat_body_field(root, "n_probs");
    if (probs && !(cJSON_IsNumber(probs) && probs->valuedouble == floor(probs->valuedouble) &&
                   probs->valuedouble >= 0 && probs->valuedouble <= LOGPROBS_MAX_TOP))
        return oai_bad(err, "n_probs", "'n_probs' must be an integer from 0 to %d", LOGPROBS_MAX_TOP);
    if (probs && probs->valuedouble != 0 &&
        chat_body_copy(out, "logprobs", probs))
        return chat_body_oom(err);
    const cJSON *lb = chat_body_field(root, "logit_bias");
    if (lb && !cJSON_IsObject(lb) && !cJSON_IsArray(lb))
        return oai_bad(err, "logit_bias", "'logit_bias' must be an object or a list of [id, bias] pairs");
    if (lb && translate_bias(lb, out, err))
        return -1;
    return refuse_lora(root, err);
}

int llama_request_parse(const char *body, size_t len, const chat_options *defaults, oai_request *r,
                        oai_error *err)
{
    memset(r, 0, sizeof *r);
    cJSON *root = oai_body_parse(body, len, err);
    if (!root)
        return -1;
    cJSON *out = cJSON_CreateObject();
    int predict_none = 0;
    int rc = !out ? chat_body_oom(err) : translate(root, out, &predict_none, err);
    const cJSON *rt = chat_body_field(root, "return_tokens");
    if (!rc && rt && !cJSON_IsBool(rt))
        rc = oai_bad(err, "return_tokens", "'return_tokens' must be a boolean");
    int return_tokens = cJSON_IsTrue(rt);
    const cJSON *seed = chat_body_field(root, "seed");
    int seed_fresh = cJSON_IsNumber(seed) && seed->valuedouble == -1;
    cJSON_Delete(root);
    if (rc) {
        cJSON_Delete(out);
        return -1;
    }
    if (oai_request_from_json(OAI_COMPLETION, out, defaults, r, err))
        return -1;
    r->api = API_LLAMA;
    r->return_tokens = return_tokens;
    r->seed_fresh = seed_fresh;
    r->score_only |= predict_none;
    return 0;
}
