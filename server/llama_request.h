/* llama_request: the body of llama.cpp's own completion request (POST
 * /completion, the first example of llama.cpp's server) as the completions
 * request it is.
 *
 * Why a translation: llama.cpp's fields say what OpenAI's completions say in
 * other words (n_predict for max_tokens, n_probs for logprobs), so the body is
 * rewritten into an OpenAI completions body and runs the same code path; the
 * answer goes out in llama.cpp's shape (llama_response.h).
 *
 * Accepted: prompt (a string or token ids, or a list of such prompts), n_predict
 * (-1: up to the context; >= 1), temperature, top_k, top_p, min_p, repeat_penalty,
 * repeat_last_n, presence_penalty, frequency_penalty, seed (-1: a fresh one), stop
 * (strings), stream, ignore_eos, logit_bias ({"id": bias} or [[id, bias]], a bias
 * false banning the token), n_probs (0 to 20 alternatives per token: the answer's
 * completion_probabilities) and post_sampling_probs, json_schema, grammar,
 * llama.cpp's samplers (DRY, XTC, top_n_sigma, typical_p, dynatemp, mirostat),
 * n_indent and t_max_predict_ms, return_tokens (the answer's token ids). Read but
 * without effect on the answer: cache_prompt (the prompt cache always runs; it does
 * not change the numbers), id_slot, n_keep, samplers (the order is the server's),
 * timings_per_token, response_fields. Refused unless they ask for nothing: lora,
 * n_predict 0, a prompt mixing text and ids, logit_bias by text. */
#ifndef MOETIER_LLAMA_REQUEST_H
#define MOETIER_LLAMA_REQUEST_H

#include "oai_request.h"

/* Parses a /completion body into r (kind OAI_COMPLETION, api API_LLAMA). 0,
 * or -1 with err set (a 400 naming the field). */
int llama_request_parse(const char *body, size_t len, const chat_options *defaults, oai_request *r,
                        oai_error *err);

#endif
