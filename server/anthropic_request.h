/* anthropic_request: the body of an Anthropic Messages API request (POST
 * /v1/messages, /v1/messages/count_tokens) as the chat request it is.
 *
 * Why a translation: a Messages request says what a chat completion says in
 * other words (content blocks instead of fields), so it is rewritten into the
 * OpenAI chat body the rest of the server takes, and every check, the chat
 * format and the sampling stay one code path. What has no OpenAI word is kept
 * in the request's own fields (api, reasoning_budget, assistant_prefix).
 *
 * Accepted: model, max_tokens (required, >= 1; not for count_tokens), messages
 * (role "user", "assistant" or "system" (text, a system turn where it stands, as
 * Claude Code sends them between turns); content a string or blocks: text, tool_use and
 * thinking (assistant), tool_result (user; its content a string or text
 * blocks, an image or document there standing as text that says so);
 * redacted_thinking is dropped, as its text is not readable; image, document
 * and other blocks are refused: the model reads text only), system (a
 * string or text blocks), stop_sequences, stream, temperature, top_p, top_k,
 * tools (client tools: name, description, input_schema; server tools, which
 * Anthropic runs, are refused), tool_choice (auto, any, tool with its name,
 * none; disable_parallel_tool_use: the answer ends once one call is made),
 * thinking ({"type": "enabled", "budget_tokens": N}: the reasoning ends after
 * N tokens at most; "adaptive": on, no limit; "disabled"; absent: the server's
 * default); mcp_servers and container, which Anthropic's servers would run,
 * are refused. A last assistant message is the answer's start (prefill): the
 * answer continues it, with thinking off (refused with thinking enabled).
 * output_config.format ({"type": "json_schema", "schema"}: structured
 * outputs, the answer held to one value of the schema as response_format
 * holds it; after the reasoning when thinking is on); metadata,
 * output_config.effort, context_management and unknown fields are ignored.
 * Blocks' cache_control is ignored: the server's prompt cache keeps every
 * conversation's start anyway. */
#ifndef MOETIER_ANTHROPIC_REQUEST_H
#define MOETIER_ANTHROPIC_REQUEST_H

#include "oai_request.h"

/* Parses a Messages body into r (kind OAI_CHAT, api API_ANTHROPIC). counting:
 * for count_tokens (max_tokens not needed). 0, or -1 with err set (a 400
 * naming the field: "messages[1].content[0].tool_use_id"). */
int anthropic_request_parse(const char *body, size_t len, const chat_options *defaults, int counting,
                            oai_request *r, oai_error *err);

#endif
