/* chat_body: building an OpenAI chat request body (cJSON) from another API's
 * request (anthropic_request.c, responses_request.c), which then runs as a
 * chat request: the pieces both translations build. (Their refusals are
 * oai_bad's.) */
#ifndef MOETIER_CHAT_BODY_H
#define MOETIER_CHAT_BODY_H

#include <cJSON.h>

#include "oai_request.h"

/* A 500 "out of memory"; returns -1. */
int chat_body_oom(oai_error *err);

/* o's member name when present and not null, else NULL. */
const cJSON *chat_body_field(const cJSON *o, const char *name);
/* o's string "type", NULL when absent or not a string. */
const char *chat_body_type(const cJSON *o);
/* Adds a copy of v (its numbers' spellings kept) to o as name; 0 or -1. */
int chat_body_copy(cJSON *o, const char *name, const cJSON *v);
/* {"type": "text", "text": text}; NULL when out of memory. */
cJSON *chat_body_text_part(const char *text);
/* The text part that stands for an image or file a tool returned: "[an image
 * (type) was here: this model reads text only]". Tool output is not the
 * user's to choose, so it is shown to the model as left out rather than
 * refusing the request (which every later turn of the conversation would
 * repeat); media a user sends are refused. NULL when out of memory. */
cJSON *chat_body_media_part(const char *type);
/* A new message {"role": role, "content": []} at the end of messages; NULL
 * when out of memory. */
cJSON *chat_body_message(cJSON *messages, const char *role);
/* A tool call {"id", "type": "function", "function": {"name", "arguments"}}
 * appended to message's "tool_calls" (made when absent); arguments copied
 * (a string, or an object the chat format prints as json.dumps would). 0, or
 * -1 out of memory. */
int chat_body_tool_call(cJSON *message, const char *id, const char *name, const cJSON *arguments);
/* A function declaration {"type": "function", "function": {"name",
 * "description", "parameters"}} (each of those two when not NULL) appended to
 * tools; 0 or -1. */
int chat_body_function(cJSON *tools, const char *name, const char *description, const cJSON *parameters);

#endif
