/* serve_tokens: see serve_tokens.h. */
#include "serve_tokens.h"

#include <cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/text/utf8.h"

/* The text to tokenize: content or prompt as they are, messages rendered;
 * *pieces: with_pieces is true. */
static int tokenize_input(server *s, const char *body, size_t len, token_list *ids, int *pieces,
                          oai_error *err)
{
    errbuf e;
    cJSON *root = oai_body_parse(body, len, err);
    if (!root)
        return -1;
    int rc = 0;
    *pieces = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(root, "with_pieces"));
    if (cJSON_GetObjectItemCaseSensitive(root, "messages")) {
        oai_request r;
        cJSON_Delete(root);
        if (oai_request_parse(OAI_CHAT, body, len, &s->o.copt, &r, err)) {
            oai_request_free(&r);
            return -1;
        }
        char *text = NULL;
        size_t n = 0;
        if (serve_chat_prompt(s, &r, &text, &n, NULL, err)) {
            oai_request_free(&r);
            return -1;
        }
        rc = tokenizer_encode(s->tok, text, n, TOK_ALLOW_SPECIAL, ids, &e);
        free(text);
        oai_request_free(&r);
        return rc ? oai_fail(err, 400, "invalid_request_error", "messages", NULL, "%s", e.msg) : 0;
    }
    const char *field = cJSON_GetObjectItemCaseSensitive(root, "content") ? "content" : "prompt";
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(root, field);
    if (!cJSON_IsString(t))
        rc = oai_fail(err, 400, "invalid_request_error", field, NULL,
                      "give the text as 'content' or 'prompt' (a string), or chat 'messages'");
    else if (tokenizer_encode(s->tok, t->valuestring, strlen(t->valuestring), TOK_ALLOW_SPECIAL, ids, &e))
        rc = oai_fail(err, 400, "invalid_request_error", field, NULL, "%s", e.msg);
    cJSON_Delete(root);
    return rc;
}

/* llama.cpp's piece: a string when whole UTF-8, else its bytes */
static cJSON *piece(const vocab *v, int id)
{
    size_t n = 0;
    const char *b = vocab_decode(v, id, &n);
    if (!b)
        b = "";
    if (utf8_validate((const uint8_t *)b, n) == n && !memchr(b, 0, n))
        return cJSON_CreateString(b);
    cJSON *bytes = cJSON_CreateArray();
    for (size_t i = 0; i < n; i++)
        cJSON_AddItemToArray(bytes, cJSON_CreateNumber((unsigned char)b[i]));
    return bytes;
}

char *serve_tokenize(server *s, const char *body, size_t len, oai_error *err)
{
    token_list ids = {0};
    int pieces;
    if (tokenize_input(s, body, len, &ids, &pieces, err)) {
        token_list_free(&ids);
        return NULL;
    }
    cJSON *out = cJSON_CreateObject(), *tokens = cJSON_AddArrayToObject(out, "tokens");
    for (size_t i = 0; i < ids.n; i++) {
        cJSON *t = cJSON_CreateNumber(ids.ids[i]);
        if (pieces) {
            cJSON *o = cJSON_CreateObject();
            cJSON_AddItemToObject(o, "id", t);
            cJSON_AddItemToObject(o, "piece", piece(&s->tok->v, ids.ids[i]));
            t = o;
        }
        cJSON_AddItemToArray(tokens, t);
    }
    cJSON_AddNumberToObject(out, "count", (double)ids.n);
    cJSON_AddNumberToObject(out, "max_model_len", s->ctx);
    token_list_free(&ids);
    char *text = cJSON_PrintUnformatted(out);
    cJSON_Delete(out);
    if (!text)
        oai_fail(err, 500, "server_error", NULL, NULL, "out of memory");
    return text;
}

char *serve_detokenize(server *s, const char *body, size_t len, oai_error *err)
{
    cJSON *root = oai_body_parse(body, len, err);
    if (!root)
        return NULL;
    const cJSON *tokens = cJSON_GetObjectItemCaseSensitive(root, "tokens"), *x;
    if (!cJSON_IsArray(tokens)) {
        cJSON_Delete(root);
        oai_fail(err, 400, "invalid_request_error", "tokens", NULL, "'tokens' must be an array of token ids");
        return NULL;
    }
    int n = cJSON_GetArraySize(tokens), k = 0, V = s->tok->v.n_vocab;
    int *ids = malloc(((size_t)n + 1) * sizeof *ids);
    cJSON_ArrayForEach(x, tokens) {
        if (!ids)
            break;
        if (!cJSON_IsNumber(x) || x->valuedouble != floor(x->valuedouble) || x->valuedouble < 0 ||
            x->valuedouble >= V) {
            oai_fail(err, 400, "invalid_request_error", "tokens", NULL,
                     "tokens[%d] must be a token id from 0 to %d", k, V - 1);
            free(ids);
            cJSON_Delete(root);
            return NULL;
        }
        ids[k++] = (int)x->valuedouble;
    }
    cJSON_Delete(root);
    char *raw = NULL, *clean = NULL, *text = NULL;
    size_t raw_len = 0;
    errbuf e;
    if (ids && vocab_decode_ids(&s->tok->v, ids, k, &raw, &raw_len, &e) == 0)
        clean = utf8_clean(raw, raw_len);
    if (clean) {
        cJSON *out = cJSON_CreateObject();
        cJSON_AddStringToObject(out, "content", clean);
        cJSON_AddStringToObject(out, "prompt", clean);
        text = cJSON_PrintUnformatted(out);
        cJSON_Delete(out);
    }
    free(ids);
    free(raw);
    free(clean);
    if (!text)
        oai_fail(err, 500, "server_error", NULL, NULL, "out of memory");
    return text;
}
