/* anthropic_response: the bodies and Server-Sent Events of Anthropic's
 * Messages API.
 *
 * An answer is a list of content blocks: the reasoning as a "thinking" block
 * (its signature empty: nothing here signs it, and this server reads a
 * thinking block sent back without checking one), the text as a "text" block,
 * each tool call as a "tool_use" block whose input is the call's arguments.
 * Arguments that are not a JSON object cannot be an input: such a call is
 * shown as text instead, so the client sees what the model wrote rather than
 * a call it cannot make. Streamed, each block is opened, filled by deltas and
 * closed in turn (anthropic_stream), between message_start and message_stop.
 * Usage counts input_tokens as the prompt's tokens computed,
 * cache_read_input_tokens as those taken from the KV or prompt cache.
 * Every function returns a malloc'd string, NULL when out of memory. */
#ifndef MOETIER_ANTHROPIC_RESPONSE_H
#define MOETIER_ANTHROPIC_RESPONSE_H

#include <stddef.h>

#include "core/text/tool_calls.h"
#include "oai_response.h"

/* The block a stream has open, and the blocks so far. */
typedef struct anthropic_stream {
    int open;                   /* ANTHROPIC_BLOCK_* of the open block, 0: none */
    int blocks;                 /* blocks started; the next one's index */
    int tool_uses;              /* of them, tool_use blocks */
} anthropic_stream;

enum { ANTHROPIC_BLOCK_TEXT = 1, ANTHROPIC_BLOCK_THINKING };

/* The stop_reason of an answer: finish is the server's ("stop", "length",
 * "tool_calls"); stop_sequence the stop string that ended it (NULL: none);
 * tool_uses the tool_use blocks it holds. */
const char *anthropic_stop_reason(const char *finish, const char *stop_sequence, int tool_uses);

/* {"type": "error", "error": {"type", "message"}}: the error type from the
 * HTTP status (invalid_request_error, authentication_error, not_found_error,
 * request_too_large, overloaded_error, api_error, ...). */
char *anthropic_error_body(const oai_error *e);
/* The same as an "event: error" of a stream that already started. */
char *anthropic_event_error(const oai_error *e);

/* "event: message_start" (the message, empty, and the usage known so far). */
char *anthropic_event_start(const oai_meta *m, const oai_usage *u);
/* The events of the next piece of the answer, in the order the model wrote
 * them: reasoning, text, then complete calls; "" when there are none. */
char *anthropic_event_delta(anthropic_stream *st, const char *reasoning, size_t reasoning_len,
                            const char *text, size_t text_len, const tool_call *calls, int n_calls);
/* The open block closed, "message_delta" (the stop_reason finish and the
 * tool_use blocks sent give, stop_sequence, the whole usage: its input counts
 * overwrite message_start's) and "message_stop". */
char *anthropic_event_end(anthropic_stream *st, const char *finish, const char *stop_sequence,
                          const oai_usage *u);

/* GET /v1/models in Anthropic's shape (its SDKs send anthropic-version):
 * {"data": [{"type": "model", "id", "display_name", "created_at"}, ...],
 * "has_more": false, "first_id", "last_id"}: the model and its aliases ("*"
 * left out). */
char *anthropic_models_body(const char *model, const char *const *aliases, int n_aliases);
/* GET /v1/models/{id}: that model object. */
char *anthropic_model_body(const char *model);

/* The whole message of a request that did not stream; its stop_reason from
 * c->finish_reason and the tool_use blocks it holds. */
char *anthropic_full_response(const oai_meta *m, const oai_choice *c, const char *stop_sequence,
                              const oai_usage *u);

#endif
