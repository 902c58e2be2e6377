/* llama_response: see llama_response.h. */
#include "llama_response.h"

#include <cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/engine/token_logprobs.h"
#include "json_out.h"

static cJSON *ids_array(const int *ids, int n)
{
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; a && i < n; i++)
        cJSON_AddItemToArray(a, cJSON_CreateNumber(ids[i]));
    return a;
}

/* {"id", "token", "bytes", "logprob"}, or "prob" after sampling */
static cJSON *token_json(const oai_token_logprob *t, int post)
{
    cJSON *o = cJSON_CreateObject(), *bytes;
    cJSON_AddNumberToObject(o, "id", t->id);
    cJSON_AddItemToObject(o, "token", json_clean_string(t->bytes, t->len));
    bytes = cJSON_AddArrayToObject(o, "bytes");
    for (size_t i = 0; i < t->len; i++)
        cJSON_AddItemToArray(bytes, cJSON_CreateNumber((unsigned char)t->bytes[i]));
    if (post)
        cJSON_AddNumberToObject(o, "prob", t->logprob <= LOGPROB_FLOOR ? 0.0 : exp(t->logprob));
    else
        cJSON_AddNumberToObject(o, "logprob", t->logprob);
    return o;
}

/* completion_probabilities: each token with its "top_logprobs" ("top_probs"
 * after sampling) */
static cJSON *probabilities(const oai_logprobs *lp)
{
    cJSON *arr = cJSON_CreateArray();
    for (int i = 0; i < lp->n; i++) {
        const oai_logprob_step *st = &lp->steps[i];
        cJSON *t = token_json(&st->chosen, lp->post);
        cJSON *top = cJSON_AddArrayToObject(t, lp->post ? "top_probs" : "top_logprobs");
        for (int k = 0; k < st->n_top; k++)
            cJSON_AddItemToArray(top, token_json(&st->top[k], lp->post));
        cJSON_AddItemToArray(arr, t);
    }
    return arr;
}

/* the fields of every event and of the result */
static cJSON *piece(const char *text, size_t len, const int *ids, int n_ids, const oai_logprobs *lp, int stop,
                    int slot, int tokens_predicted, int tokens_evaluated)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "index", 0);
    cJSON_AddItemToObject(o, "content", json_clean_string(text, len));
    cJSON_AddItemToObject(o, "tokens", ids_array(ids, n_ids));
    cJSON_AddBoolToObject(o, "stop", stop);
    cJSON_AddNumberToObject(o, "id_slot", slot);
    cJSON_AddNumberToObject(o, "tokens_predicted", tokens_predicted);
    cJSON_AddNumberToObject(o, "tokens_evaluated", tokens_evaluated);
    if (lp)
        cJSON_AddItemToObject(o, "completion_probabilities", probabilities(lp));
    return o;
}

char *llama_event(const char *text, size_t len, const int *ids, int n_ids, const oai_logprobs *lp, int slot,
                  int tokens_predicted, int tokens_evaluated)
{
    return json_sse_data(piece(text, len, ids, n_ids, lp, 0, slot, tokens_predicted, tokens_evaluated));
}

char *llama_event_progress(const oai_progress *p)
{
    cJSON *o = piece("", 0, NULL, 0, NULL, 0, -1, 0, p->total);
    cJSON_AddItemToObject(o, "prompt_progress", oai_progress_json(p));
    return json_sse_data(o);
}

/* llama.cpp's timings: each phase's tokens, milliseconds and rates */
static void add_timings(cJSON *o, const llama_result *res)
{
    cJSON *t = cJSON_AddObjectToObject(o, "timings");
    const struct {
        const char *n, *ms, *per_token, *per_second;
        int count;
        double millis;
    } phases[] = {
        {"prompt_n", "prompt_ms", "prompt_per_token_ms", "prompt_per_second", res->prompt_n, res->prompt_ms},
        {"predicted_n", "predicted_ms", "predicted_per_token_ms", "predicted_per_second",
         res->tokens_predicted, res->predicted_ms}};
    for (size_t i = 0; i < 2; i++) {
        cJSON_AddNumberToObject(t, phases[i].n, phases[i].count);
        cJSON_AddNumberToObject(t, phases[i].ms, phases[i].millis);
        cJSON_AddNumberToObject(t, phases[i].per_token,
                                phases[i].count ? phases[i].millis / phases[i].count : 0);
        cJSON_AddNumberToObject(t, phases[i].per_second,
                                phases[i].millis > 0 ? 1e3 * phases[i].count / phases[i].millis : 0);
    }
}

char *llama_result_body(const llama_result *res, int stream)
{
    cJSON *o = piece(res->content, res->content_len, res->ids, res->n_ids, stream ? NULL : res->lp, 1,
                     res->slot, res->tokens_predicted, res->tokens_evaluated);
    cJSON_AddStringToObject(o, "model", res->model);
    cJSON_AddItemToObject(o, "prompt", json_clean_string(res->prompt, res->prompt_len));
    cJSON_AddBoolToObject(o, "has_new_line",
                          res->content_len && memchr(res->content, '\n', res->content_len));
    cJSON_AddBoolToObject(o, "truncated", 0);
    cJSON_AddStringToObject(o, "stop_type", res->stop_type);
    cJSON_AddItemToObject(o, "stopping_word",
                          json_clean_string(res->stopping_word, strlen(res->stopping_word)));
    cJSON_AddNumberToObject(o, "tokens_cached", res->tokens_cached);
    add_timings(o, res);
    return stream ? json_sse_data(o) : json_print_and_delete(o);
}

char *llama_batch_response(char *const *bodies, int n)
{
    cJSON *all = cJSON_CreateArray();
    for (int i = 0; all && i < n; i++) {
        cJSON *one = cJSON_Parse(bodies[i]);
        cJSON *index = cJSON_GetObjectItemCaseSensitive(one, "index");
        if (!cJSON_IsNumber(index) || !cJSON_AddItemToArray(all, one)) {
            cJSON_Delete(one);
            cJSON_Delete(all);
            return NULL;
        }
        cJSON_SetNumberValue(index, i);
    }
    return all ? json_print_and_delete(all) : NULL;
}
