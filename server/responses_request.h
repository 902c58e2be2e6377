/* responses_request: the body of an OpenAI Responses API request (POST
 * /v1/responses, as Codex CLI and the openai SDKs' responses.create send it)
 * as the chat request it is (see anthropic_request.h for why a translation).
 *
 * Accepted: model; instructions (the system message); input, a string (one
 * user message) or items: messages (role user, assistant, system or developer
 * (a system turn); content a string or input_text/output_text parts; images,
 * files and audio are refused: the model reads text only), function_call
 * (the assistant's call: call_id, name, namespace, arguments) and
 * function_call_output (the tool message for call_id; an image or file in
 * it stands as text that says so), reasoning (its text
 * becomes the next assistant turn's reasoning, which the chat format shows
 * where Kimi's template does); tools: function tools, and namespace tools
 * (their functions declared as "NAMESPACE.NAME", a call of one answered with
 * its namespace); hosted tools (web_search, file_search, code_interpreter,
 * image_generation, mcp, computer use, ...), which OpenAI's servers run, are
 * not declared to the model (it answers without them; the server has none);
 * custom (free-form) tools are refused; tool_choice (auto, none, required,
 * {"type": "function", "name"}); parallel_tool_calls; max_output_tokens;
 * temperature; top_p; stream; reasoning.effort ("none": thinking off, any
 * other: on; absent: the server's default); text.format (text, json_object,
 * json_schema). store, include, metadata, prompt_cache_key, truncation,
 * client_metadata, user and unknown fields are ignored (nothing is stored);
 * previous_response_id, conversation, background and item references, which
 * need stored responses, are refused; so are top_logprobs and include's
 * message.output_text.logprobs (logprobs are the chat route's). */
#ifndef MOETIER_RESPONSES_REQUEST_H
#define MOETIER_RESPONSES_REQUEST_H

#include "oai_request.h"

/* Parses a Responses body into r (kind OAI_CHAT, api API_RESPONSES). 0, or -1
 * with err set (a 400 naming the field: "input[2].call_id"). */
int responses_request_parse(const char *body, size_t len, const chat_options *defaults, oai_request *r,
                            oai_error *err);

#endif
