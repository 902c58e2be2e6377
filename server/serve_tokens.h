/* serve_tokens: POST /tokenize and POST /detokenize, in the shapes of
 * llama.cpp's server and vLLM's.
 *
 * /tokenize takes "content" (llama.cpp) or "prompt" (vLLM) text, whose
 * special-token names become their ids as in a completion's prompt, or chat
 * "messages" (vLLM; with "tools" and the chat template switches), rendered as
 * a chat request's prompt is; "with_pieces": true gives each token as
 * {"id", "piece"} (the piece a string when it is whole UTF-8, else its bytes).
 * It answers {"tokens", "count", "max_model_len"}, whatever the context holds.
 * /detokenize takes "tokens" (ids) and answers the text as "content" and
 * "prompt" (invalid UTF-8 as U+FFFD). */
#ifndef MOETIER_SERVE_TOKENS_H
#define MOETIER_SERVE_TOKENS_H

#include <stddef.h>

#include "serve_internal.h"

/* The response body (malloc'd), or NULL with err filled (400, or 500 when out
 * of memory). */
char *serve_tokenize(server *s, const char *body, size_t len, oai_error *err);
char *serve_detokenize(server *s, const char *body, size_t len, oai_error *err);

#endif
