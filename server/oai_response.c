/* oai_response: see oai_response.h. */
#include "oai_response.h"

#include <cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json_out.h"


char *oai_error_body(const oai_error *e)
{
    cJSON *root = cJSON_CreateObject(), *err = cJSON_AddObjectToObject(root, "error");
    cJSON_AddItemToObject(err, "message", json_clean_string(e->message, strlen(e->message)));
    cJSON_AddStringToObject(err, "type", e->type);
    if (e->param[0])
        cJSON_AddStringToObject(err, "param", e->param);
    else
        cJSON_AddNullToObject(err, "param");
    if (e->code[0])
        cJSON_AddStringToObject(err, "code", e->code);
    else
        cJSON_AddNullToObject(err, "code");
    return json_print_and_delete(root);
}

static cJSON *head(const oai_meta *m, int chunk)
{
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "id", m->id);
    cJSON_AddStringToObject(root, "object", m->kind == OAI_COMPLETION ? "text_completion"
                                            : chunk ? "chat.completion.chunk" : "chat.completion");
    cJSON_AddNumberToObject(root, "created", (double)m->created);
    cJSON_AddStringToObject(root, "model", m->model);
    return root;
}

static cJSON *calls_json(const tool_call *calls, int n, int index0, int with_index)
{
    cJSON *arr = cJSON_CreateArray();
    for (int i = 0; i < n; i++) {
        cJSON *c = cJSON_CreateObject(), *fn;
        if (with_index)
            cJSON_AddNumberToObject(c, "index", index0 + i);
        cJSON_AddItemToObject(c, "id", json_clean_string(calls[i].id, strlen(calls[i].id)));
        cJSON_AddStringToObject(c, "type", "function");
        fn = cJSON_AddObjectToObject(c, "function");
        cJSON_AddItemToObject(fn, "name", json_clean_string(calls[i].name, strlen(calls[i].name)));
        cJSON_AddItemToObject(fn, "arguments",
                              json_clean_string(calls[i].arguments, strlen(calls[i].arguments)));
        cJSON_AddItemToArray(arr, c);
    }
    return arr;
}

/* usage; chat's with completion_tokens_details.reasoning_tokens */
static void add_usage(cJSON *root, const oai_meta *m, const oai_usage *u)
{
    cJSON *us = cJSON_AddObjectToObject(root, "usage");
    cJSON_AddNumberToObject(us, "prompt_tokens", u->prompt_tokens);
    cJSON_AddNumberToObject(us, "completion_tokens", u->completion_tokens);
    cJSON_AddNumberToObject(us, "total_tokens", u->prompt_tokens + u->completion_tokens);
    if (m->kind == OAI_CHAT)
        cJSON_AddNumberToObject(cJSON_AddObjectToObject(us, "completion_tokens_details"), "reasoning_tokens",
                                u->reasoning_tokens);
    cJSON *d = cJSON_AddObjectToObject(us, "prompt_tokens_details");
    cJSON_AddNumberToObject(d, "cached_tokens", u->cached_tokens);
}

static void add_finish(cJSON *choice, const char *finish_reason)
{
    if (finish_reason)
        cJSON_AddStringToObject(choice, "finish_reason", finish_reason);
    else
        cJSON_AddNullToObject(choice, "finish_reason");
}

/* chat's {"token", "logprob", "bytes"} */
static cJSON *chat_token(const oai_token_logprob *t)
{
    cJSON *o = cJSON_CreateObject(), *bytes;
    cJSON_AddItemToObject(o, "token", json_clean_string(t->bytes, t->len));
    cJSON_AddNumberToObject(o, "logprob", t->logprob);
    bytes = cJSON_AddArrayToObject(o, "bytes");
    for (size_t i = 0; i < t->len; i++)
        cJSON_AddItemToArray(bytes, cJSON_CreateNumber((unsigned char)t->bytes[i]));
    return o;
}

/* chat: {"content": [token with "top_logprobs"], "refusal": null} */
static cJSON *chat_logprobs(const oai_logprobs *lp)
{
    cJSON *o = cJSON_CreateObject(), *content = cJSON_AddArrayToObject(o, "content");
    for (int i = 0; i < lp->n; i++) {
        const oai_logprob_step *st = &lp->steps[i];
        cJSON *t = chat_token(&st->chosen), *top = cJSON_AddArrayToObject(t, "top_logprobs");
        for (int k = 0; k < st->n_top; k++)
            cJSON_AddItemToArray(top, chat_token(&st->top[k]));
        cJSON_AddItemToArray(content, t);
    }
    cJSON_AddNullToObject(o, "refusal");
    return o;
}

/* adds {text: logprob} to a completion's alternatives unless a likelier
 * token of the same text is there */
static void add_alternative(cJSON *alts, const oai_token_logprob *t)
{
    cJSON *key = json_clean_string(t->bytes, t->len);
    if (key && !cJSON_GetObjectItemCaseSensitive(alts, key->valuestring))
        cJSON_AddNumberToObject(alts, key->valuestring, t->logprob);
    cJSON_Delete(key);
}

/* completions: {"tokens", "token_logprobs", "top_logprobs", "text_offset"};
 * a token's alternatives hold the chosen one too, as OpenAI's do; an echoed
 * prompt's first token has null for both */
static cJSON *completion_logprobs(const oai_logprobs *lp)
{
    cJSON *o = cJSON_CreateObject(), *tokens = cJSON_AddArrayToObject(o, "tokens"),
          *lps = cJSON_AddArrayToObject(o, "token_logprobs"),
          *tops = cJSON_AddArrayToObject(o, "top_logprobs"),
          *offsets = cJSON_AddArrayToObject(o, "text_offset");
    for (int i = 0; i < lp->n; i++) {
        const oai_logprob_step *st = &lp->steps[i];
        cJSON_AddItemToArray(tokens, json_clean_string(st->chosen.bytes, st->chosen.len));
        cJSON_AddItemToArray(offsets, cJSON_CreateNumber(st->text_offset));
        if (st->unscored) {
            cJSON_AddItemToArray(lps, cJSON_CreateNull());
            cJSON_AddItemToArray(tops, cJSON_CreateNull());
            continue;
        }
        cJSON_AddItemToArray(lps, cJSON_CreateNumber(st->chosen.logprob));
        cJSON *alts = cJSON_CreateObject();
        for (int k = 0; k < st->n_top; k++)
            add_alternative(alts, &st->top[k]);
        add_alternative(alts, &st->chosen);
        cJSON_AddItemToArray(tops, alts);
    }
    return o;
}

/* vLLM's {"id": {"logprob", "rank", "decoded_token"}} of one token */
static void add_ranked(cJSON *o, const oai_token_logprob *t)
{
    char key[16];
    snprintf(key, sizeof key, "%d", t->id);
    if (cJSON_GetObjectItemCaseSensitive(o, key))
        return;
    cJSON *v = cJSON_AddObjectToObject(o, key);
    cJSON_AddNumberToObject(v, "logprob", t->logprob);
    cJSON_AddNumberToObject(v, "rank", t->rank);
    cJSON_AddItemToObject(v, "decoded_token", json_clean_string(t->bytes, t->len));
}

/* vLLM's prompt_logprobs: per prompt token, its own and its alternatives' */
static cJSON *prompt_logprobs(const oai_logprobs *lp)
{
    cJSON *arr = cJSON_CreateArray();
    for (int i = 0; i < lp->n; i++) {
        const oai_logprob_step *st = &lp->steps[i];
        if (st->unscored) {
            cJSON_AddItemToArray(arr, cJSON_CreateNull());
            continue;
        }
        cJSON *o = cJSON_CreateObject();
        add_ranked(o, &st->chosen);
        for (int k = 0; k < st->n_top; k++)
            add_ranked(o, &st->top[k]);
        cJSON_AddItemToArray(arr, o);
    }
    return arr;
}

/* A choice of an answer, added to choices; a completion's text goes in it
 * directly. */
static cJSON *add_choice(cJSON *choices, const oai_meta *m, int index, const char *text,
                         size_t text_len, const oai_logprobs *lp)
{
    cJSON *ch = cJSON_CreateObject();
    cJSON_AddItemToArray(choices, ch);
    cJSON_AddNumberToObject(ch, "index", index);
    if (m->kind == OAI_COMPLETION)
        cJSON_AddItemToObject(ch, "text", json_clean_string(text, text_len));
    if (!lp)
        cJSON_AddNullToObject(ch, "logprobs");
    else
        cJSON_AddItemToObject(ch, "logprobs",
                              m->kind == OAI_CHAT ? chat_logprobs(lp) : completion_logprobs(lp));
    return ch;
}

char *oai_event_delta(const oai_meta *m, int with_role, const char *text, size_t text_len,
                      const char *reasoning, size_t reasoning_len, const tool_call *calls,
                      int n_calls, int call_index, const oai_logprobs *lp,
                      const char *finish_reason)
{
    cJSON *root = head(m, 1),
          *ch = add_choice(cJSON_AddArrayToObject(root, "choices"), m, m->choice, text, text_len, lp);
    if (m->kind == OAI_CHAT) {
        cJSON *d = cJSON_AddObjectToObject(ch, "delta");
        if (with_role)
            cJSON_AddStringToObject(d, "role", "assistant");
        if (text_len || with_role)
            cJSON_AddItemToObject(d, "content", json_clean_string(text, text_len));
        if (reasoning_len)
            cJSON_AddItemToObject(d, "reasoning_content", json_clean_string(reasoning, reasoning_len));
        if (n_calls)
            cJSON_AddItemToObject(d, "tool_calls", calls_json(calls, n_calls, call_index, 1));
    }
    add_finish(ch, finish_reason);
    return json_sse_data(root);
}

cJSON *oai_progress_json(const oai_progress *p)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "total", p->total);
    cJSON_AddNumberToObject(o, "cache", p->cache);
    cJSON_AddNumberToObject(o, "processed", p->processed);
    cJSON_AddNumberToObject(o, "time_ms", floor(p->ms));
    return o;
}

char *oai_event_progress(const oai_meta *m, int with_role, const oai_progress *p)
{
    cJSON *root = head(m, 1), *ch = add_choice(cJSON_AddArrayToObject(root, "choices"), m, m->choice, "", 0, NULL);
    if (m->kind == OAI_CHAT) {
        cJSON *d = cJSON_AddObjectToObject(ch, "delta");
        if (with_role)
            cJSON_AddStringToObject(d, "role", "assistant");
        cJSON_AddStringToObject(d, "content", "");
    }
    cJSON_AddNullToObject(ch, "finish_reason");
    cJSON_AddItemToObject(root, "prompt_progress", oai_progress_json(p));
    return json_sse_data(root);
}

char *oai_event_usage(const oai_meta *m, const oai_usage *u)
{
    cJSON *root = head(m, 1);
    cJSON_AddArrayToObject(root, "choices");
    add_usage(root, m, u);
    return json_sse_data(root);
}

char *oai_event_error(const oai_error *e)
{
    return json_sse_data_text(oai_error_body(e));
}

char *oai_full_response(const oai_meta *m, const oai_choice *choices, int n, const oai_logprobs *prompt_lp,
                        const oai_usage *u)
{
    cJSON *root = head(m, 0), *arr = cJSON_AddArrayToObject(root, "choices");
    for (int i = 0; i < n; i++) {
        const oai_choice *c = &choices[i];
        cJSON *ch = add_choice(arr, m, i, c->text, c->text_len, c->lp);
        if (prompt_lp && m->kind == OAI_COMPLETION)
            cJSON_AddItemToObject(ch, "prompt_logprobs", prompt_logprobs(prompt_lp));
        if (m->kind == OAI_CHAT) {
            cJSON *msg = cJSON_AddObjectToObject(ch, "message");
            cJSON_AddStringToObject(msg, "role", "assistant");
            if (c->n_calls && !c->text_len)
                cJSON_AddNullToObject(msg, "content");
            else
                cJSON_AddItemToObject(msg, "content", json_clean_string(c->text, c->text_len));
            if (c->reasoning_len)
                cJSON_AddItemToObject(msg, "reasoning_content", json_clean_string(c->reasoning, c->reasoning_len));
            if (c->n_calls)
                cJSON_AddItemToObject(msg, "tool_calls", calls_json(c->calls, c->n_calls, 0, 0));
        }
        add_finish(ch, c->finish_reason);
    }
    if (prompt_lp && m->kind == OAI_CHAT)
        cJSON_AddItemToObject(root, "prompt_logprobs", prompt_logprobs(prompt_lp));
    add_usage(root, m, u);
    return json_print_and_delete(root);
}

/* into's numbers += from's of the same names, in nested objects too */
static void add_numbers(cJSON *into, const cJSON *from)
{
    const cJSON *x;
    cJSON_ArrayForEach(x, from) {
        cJSON *y = cJSON_GetObjectItemCaseSensitive(into, x->string);
        if (cJSON_IsNumber(x) && cJSON_IsNumber(y))
            cJSON_SetNumberValue(y, y->valuedouble + x->valuedouble);
        else if (cJSON_IsObject(x) && cJSON_IsObject(y))
            add_numbers(y, x);
    }
}

char *oai_batch_response(char *const *bodies, int n, int choices_per_body, int bodies_per_prompt)
{
    cJSON *root = cJSON_Parse(bodies[0]);
    cJSON *all = cJSON_GetObjectItemCaseSensitive(root, "choices"),
          *usage = cJSON_GetObjectItemCaseSensitive(root, "usage");
    if (!cJSON_IsArray(all) || !cJSON_IsObject(usage)) {
        cJSON_Delete(root);
        return NULL;
    }
    for (int i = 1; i < n; i++) {
        cJSON *one = cJSON_Parse(bodies[i]);
        cJSON *ch = cJSON_GetObjectItemCaseSensitive(one, "choices"),
              *u = cJSON_GetObjectItemCaseSensitive(one, "usage");
        if (!cJSON_IsArray(ch) || !cJSON_IsObject(u)) {
            cJSON_Delete(one);
            cJSON_Delete(root);
            return NULL;
        }
        while (ch->child) {
            cJSON *c = cJSON_DetachItemViaPointer(ch, ch->child);
            cJSON *index = cJSON_GetObjectItemCaseSensitive(c, "index");
            if (cJSON_IsNumber(index))
                cJSON_SetNumberValue(index, i * choices_per_body + index->valuedouble);
            cJSON_AddItemToArray(all, c);
        }
        if (i % bodies_per_prompt == 0) {
            add_numbers(usage, u);
        } else {
            /* another part of the same prompt: its prompt was counted once */
            cJSON *keep = cJSON_CreateObject();
            const char *names[] = {"completion_tokens", "total_tokens"};
            const cJSON *completion = cJSON_GetObjectItemCaseSensitive(u, names[0]);
            const cJSON *details = cJSON_GetObjectItemCaseSensitive(u, "completion_tokens_details");
            for (int k = 0; k < 2 && keep && cJSON_IsNumber(completion); k++)
                cJSON_AddNumberToObject(keep, names[k], completion->valuedouble);
            if (keep && details)
                cJSON_AddItemToObject(keep, "completion_tokens_details", cJSON_Duplicate(details, 1));
            add_numbers(usage, keep);
            cJSON_Delete(keep);
        }
        cJSON_Delete(one);
    }
    return json_print_and_delete(root);
}

static cJSON *model_object(const char *model, long long created, int max_model_len)
{
    cJSON *mo = cJSON_CreateObject();
    cJSON_AddStringToObject(mo, "id", model);
    cJSON_AddStringToObject(mo, "object", "model");
    cJSON_AddNumberToObject(mo, "created", (double)created);
    cJSON_AddStringToObject(mo, "owned_by", "moetier");
    cJSON_AddNumberToObject(mo, "max_model_len", max_model_len);
    return mo;
}

char *oai_models_body(const char *model, const char *const *aliases, int n_aliases, long long created,
                      int max_model_len)
{
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "object", "list");
    cJSON *data = cJSON_AddArrayToObject(root, "data");
    cJSON_AddItemToArray(data, model_object(model, created, max_model_len));
    for (int i = 0; i < n_aliases; i++)
        if (strcmp(aliases[i], "*"))
            cJSON_AddItemToArray(data, model_object(aliases[i], created, max_model_len));
    return json_print_and_delete(root);
}

char *oai_model_body(const char *model, long long created, int max_model_len)
{
    return json_print_and_delete(model_object(model, created, max_model_len));
}
