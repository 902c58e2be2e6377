/* serve_infill: see serve_infill.h. */
#include "serve_infill.h"

#include <cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat_body.h"

/* Fill-in-the-middle tokens by name: prefix, suffix, middle. */
static const char *const fim_sets[][3] = {
    {"<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>"},
    {"<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"},
};

#define MAX_EXTRA 256

/* A text field: absent or null is "", anything else but a string a 400. */
static int text_field(const cJSON *root, const char *name, const char **out, oai_error *err)
{
    const cJSON *v = chat_body_field(root, name);
    *out = "";
    if (!v || cJSON_IsNull(v))
        return 0;
    if (!cJSON_IsString(v))
        return oai_bad(err, name, "'%s' must be a string", name);
    *out = v->valuestring;
    return 0;
}

/* Appends the ids of text (no special tokens) to l; -1 with err set. */
static int encode(const tokenizer *tok, const char *text, const char *field, token_list *l, oai_error *err)
{
    errbuf e;
    if (tokenizer_encode(tok, text, strlen(text), 0, l, &e))
        return oai_bad(err, field, "'%s': %s", field, e.msg);
    return 0;
}

/* input_extra's chunks as text, each under its file name. */
static int extra_text(const cJSON *root, char **out, oai_error *err)
{
    const cJSON *list = chat_body_field(root, "input_extra"), *x;
    *out = NULL;
    if (!list || cJSON_IsNull(list))
        return 0;
    if (!cJSON_IsArray(list) || cJSON_GetArraySize(list) > MAX_EXTRA)
        return oai_bad(err, "input_extra",
                       "'input_extra' must be a list of at most %d {\"filename\", \"text\"} "
                       "objects",
                       MAX_EXTRA);
    size_t need = 1;
    int i = 0;
    cJSON_ArrayForEach(x, list) {
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(x, "filename"), *text;
        text = cJSON_GetObjectItemCaseSensitive(x, "text");
        if (!cJSON_IsObject(x) || !cJSON_IsString(text) ||
            (name && !cJSON_IsNull(name) && !cJSON_IsString(name)))
            return oai_bad(err, "input_extra",
                           "input_extra[%d] must be {\"filename\": string, \"text\": string}", i);
        need += strlen(text->valuestring) + (cJSON_IsString(name) ? strlen(name->valuestring) : 0) + 16;
        i++;
    }
    char *buf = malloc(need);
    if (!buf)
        return chat_body_oom(err);
    size_t at = 0;
    cJSON_ArrayForEach(x, list) {
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(x, "filename");
        at += (size_t)snprintf(buf + at, need - at, "--- %s ---\n%s\n\n",
                               cJSON_IsString(name) ? name->valuestring : "",
                               cJSON_GetObjectItemCaseSensitive(x, "text")->valuestring);
    }
    *out = buf;
    return 0;
}

/* The room the prompt has: the limit, less the answer's (field: its length). */
static int prompt_room(const cJSON *root, const char *field, int limit)
{
    const cJSON *np = chat_body_field(root, field);
    int answer = cJSON_IsNumber(np) && np->valuedouble >= 1
                     ? (np->valuedouble < limit / 2 ? (int)np->valuedouble : limit / 2)
                     : limit / 4;
    return limit - answer;
}

/* The fill-in-the-middle tokens of tok's vocabulary, or a 400 (naming param). */
static int fim_tokens(const tokenizer *tok, const char *param, int fim[3], oai_error *err)
{
    for (size_t s = 0; s < sizeof fim_sets / sizeof *fim_sets; s++) {
        for (int k = 0; k < 3; k++)
            fim[k] = vocab_find_special(&tok->v, fim_sets[s][k]);
        if (fim[0] >= 0 && fim[1] >= 0 && fim[2] >= 0)
            return 0;
    }
    return oai_fail(
        err, 400, "invalid_request_error", param, "fim_not_supported",
        "this model's vocabulary has no fill-in-the-middle tokens (%s ..., or %s ...): filling in "
        "the middle needs a model trained to",
        fim_sets[0][0], fim_sets[1][0]);
}

/* [bos] extra FIM_PRE prefix FIM_SUF suffix FIM_MID middle as ids, cut to
 * room tokens as serve_infill.h says; field[0..2] name prefix, suffix and
 * middle in errors. */
static int fim_prompt(const tokenizer *tok, int room, const char *extra, const char *prefix,
                      const char *suffix, const char *middle, const char *const field[3], token_list *ids,
                      oai_error *err)
{
    int fim[3];
    token_list lp = {0}, ls = {0}, lm = {0}, lx = {0};
    int rc = -1;
    if (fim_tokens(tok, NULL, fim, err) || encode(tok, prefix, field[0], &lp, err) ||
        encode(tok, suffix, field[1], &ls, err) || encode(tok, middle, field[2], &lm, err) ||
        (extra && encode(tok, extra, "input_extra", &lx, err)))
        goto out;
    room -= 3 + (tok->bos_prefix >= 0) + (int)lm.n;
    if (room < 0) {
        oai_fail(err, 400, "invalid_request_error", field[2], "context_length_exceeded",
                 "'%s' has %zu tokens; with the fill-in-the-middle tokens and room for the answer, this "
                 "server takes at most %d",
                 field[2], lm.n, (int)lm.n + room);
        goto out;
    }
    size_t suffix_take = ls.n < (size_t)room / 4 ? ls.n : (size_t)room / 4;
    size_t prefix_take = lp.n < (size_t)room - suffix_take ? lp.n : (size_t)room - suffix_take;
    suffix_take = ls.n < (size_t)room - prefix_take ? ls.n : (size_t)room - prefix_take;
    size_t extra_take =
        lx.n < (size_t)room - prefix_take - suffix_take ? lx.n : (size_t)room - prefix_take - suffix_take;
    int fail = (tok->bos_prefix >= 0 && token_list_push(ids, tok->bos_prefix));
    for (size_t i = lx.n - extra_take; i < lx.n && !fail; i++)
        fail = token_list_push(ids, lx.ids[i]);
    fail = fail || token_list_push(ids, fim[0]);
    for (size_t i = lp.n - prefix_take; i < lp.n && !fail; i++)
        fail = token_list_push(ids, lp.ids[i]);
    fail = fail || token_list_push(ids, fim[1]);
    for (size_t i = 0; i < suffix_take && !fail; i++)
        fail = token_list_push(ids, ls.ids[i]);
    fail = fail || token_list_push(ids, fim[2]);
    for (size_t i = 0; i < lm.n && !fail; i++)
        fail = token_list_push(ids, lm.ids[i]);
    rc = fail ? chat_body_oom(err) : 0;
out:
    token_list_free(&lp);
    token_list_free(&ls);
    token_list_free(&lm);
    token_list_free(&lx);
    return rc;
}

/* root with its `dropped` fields gone and "prompt" the ids, printed. */
static char *with_prompt_ids(cJSON *root, const char *const *dropped, size_t n_dropped, const token_list *ids,
                             oai_error *err)
{
    cJSON *list = cJSON_CreateIntArray(ids->ids, (int)ids->n);
    if (!list) {
        chat_body_oom(err);
        return NULL;
    }
    for (size_t i = 0; i < n_dropped; i++)
        cJSON_DeleteItemFromObjectCaseSensitive(root, dropped[i]);
    cJSON_DeleteItemFromObjectCaseSensitive(root, "prompt");
    cJSON_AddItemToObject(root, "prompt", list);
    char *out = cJSON_PrintUnformatted(root);
    if (!out)
        chat_body_oom(err);
    return out;
}

char *serve_infill_body(const tokenizer *tok, int limit, const char *body, size_t len, oai_error *err)
{
    cJSON *root = oai_body_parse(body, len, err);
    if (!root)
        return NULL;
    const char *prefix, *suffix, *prompt;
    char *extra = NULL, *out = NULL;
    token_list ids = {0};
    int fim[3];
    static const char *const dropped[] = {"input_prefix", "input_suffix", "input_extra"};
    if (!fim_tokens(tok, NULL, fim, err) && !text_field(root, "input_prefix", &prefix, err) &&
        !text_field(root, "input_suffix", &suffix, err) && !text_field(root, "prompt", &prompt, err) &&
        !extra_text(root, &extra, err) &&
        !fim_prompt(tok, prompt_room(root, "n_predict", limit), extra, prefix, suffix, prompt,
                    (const char *const[]){"input_prefix", "input_suffix", "prompt"}, &ids, err))
        out = with_prompt_ids(root, dropped, sizeof dropped / sizeof *dropped, &ids, err);
    free(extra);
    token_list_free(&ids);
    cJSON_Delete(root);
    return out;
}

char *serve_suffix_body(const tokenizer *tok, int limit, const char *body, size_t len, oai_error *err)
{
    cJSON *root = oai_body_parse(body, len, err);
    if (!root)
        return NULL;
    const cJSON *suffix = cJSON_GetObjectItemCaseSensitive(root, "suffix");
    const cJSON *prompt = cJSON_GetObjectItemCaseSensitive(root, "prompt");
    const cJSON *echo = cJSON_GetObjectItemCaseSensitive(root, "echo");
    char *out = NULL;
    token_list ids = {0};
    static const char *const dropped[] = {"suffix"};
    int fim[3];
    if (fim_tokens(tok, "suffix", fim, err))
        ;
    else if (!cJSON_IsString(suffix))
        oai_bad(err, "suffix", "'suffix' must be a string");
    else if (!cJSON_IsString(prompt))
        oai_bad(err, "prompt", "with 'suffix', 'prompt' must be one string: the text before the gap");
    else if (cJSON_IsTrue(echo))
        oai_bad(err, "echo",
                "'echo' with 'suffix' is not supported (the prompt is not the text before the answer)");
    else if (!fim_prompt(tok, prompt_room(root, "max_tokens", limit), NULL, prompt->valuestring,
                         suffix->valuestring, "", (const char *const[]){"prompt", "suffix", "prompt"}, &ids,
                         err))
        out = with_prompt_ids(root, dropped, 1, &ids, err);
    token_list_free(&ids);
    cJSON_Delete(root);
    return out;
}
