/* responses_response: the response object and Server-Sent Events of OpenAI's
 * Responses API.
 *
 * An answer is a list of output items in the model's order: its reasoning as a
 * "reasoning" item (the text as reasoning_text content, or, when the request
 * asked for a summary, as its summary_text: the model writes no other),
 * its text as an assistant "message" item (one output_text part), each tool
 * call as a "function_call" item (call_id Kimi's call id, the arguments the
 * model's text; a function declared in a namespace named as it was declared,
 * with its namespace). The items are kept as they come (responses_add), for
 * the whole response of a request that did not stream, or streamed as they
 * come: response.created and response.in_progress, then for each item
 * output_item.added, its content part, text deltas, their done events and
 * output_item.done, and response.completed (or response.incomplete, for an
 * answer cut by max_output_tokens) holding the whole response. Every event
 * carries its sequence_number. Every function returns a malloc'd string, NULL
 * when out of memory. */
#ifndef MOETIER_RESPONSES_RESPONSE_H
#define MOETIER_RESPONSES_RESPONSE_H

#include <cJSON.h>
#include <stddef.h>

#include "core/text/tool_calls.h"
#include "oai_response.h"

enum { RESPONSES_REASONING = 1, RESPONSES_MESSAGE, RESPONSES_CALL };

typedef struct responses_item {
    int kind;                   /* RESPONSES_* */
    char *text;                 /* the reasoning, the message's text, the call's arguments */
    size_t len;
    char *call_id, *name, *ns;  /* calls; ns NULL when in no namespace */
} responses_item;

typedef struct responses_out {
    oai_meta meta;              /* id "resp_N", model, created */
    const cJSON *namespaces;    /* the request's namespaces (strings), or NULL */
    const cJSON *settings;      /* the request's settings the response object repeats
                                 * (oai_request.response_settings), or NULL */
    int stream;
    int summary;                /* the reasoning as the item's summary (reasoning.summary) */
    responses_item *items;
    int n;
    int open;                   /* streamed: the last item is still being written */
    int seq;                    /* the next event's sequence_number */
    int incomplete;             /* cut by max_output_tokens: its last item is incomplete */
} responses_out;

void responses_out_init(responses_out *o, const oai_meta *m, const cJSON *namespaces, int stream);
void responses_out_free(responses_out *o);

/* response.created and response.in_progress. */
char *responses_event_start(responses_out *o);
/* Adds the next piece of the answer: reasoning, text, then complete calls.
 * Streamed: their events ("" when none); not streamed: "" (kept for
 * responses_body). NULL when out of memory. */
char *responses_add(responses_out *o, const char *reasoning, size_t reasoning_len, const char *text,
                    size_t text_len, const tool_call *calls, int n_calls);
/* The open item's done events, then response.completed, or
 * response.incomplete when finish is "length". */
char *responses_event_end(responses_out *o, const char *finish, const oai_usage *u);
/* The whole response object (its items, status, usage). */
char *responses_body(responses_out *o, const char *finish, const oai_usage *u);
/* An "error" event of a stream that already started. */
char *responses_event_error(responses_out *o, const oai_error *e);

#endif
