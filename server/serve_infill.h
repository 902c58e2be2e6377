/* serve_infill: llama.cpp's POST /infill (fill-in-the-middle, what editor
 * plugins such as llama.vim and llama.vscode send) as the /completion request
 * it is, its prompt the token ids of
 *
 *   [bos] [input_extra] FIM_PRE input_prefix FIM_SUF input_suffix FIM_MID prompt
 *
 * for a model whose vocabulary has fill-in-the-middle tokens: DeepSeek's
 * (<｜fim▁begin｜>, <｜fim▁hole｜>, <｜fim▁end｜>) or <|fim_prefix|>,
 * <|fim_suffix|>, <|fim_middle|>. Kimi's has none: the request is refused
 * with a 400 saying so.
 *
 * input_extra is a list of {"filename", "text"} chunks (other files, for
 * context), each written before the prefix as "--- FILENAME ---\n" TEXT "\n\n".
 * The texts are text: special-token names in them are not special. The bos
 * is the tokenizer's (tokenizer_config's add_bos_token).
 *
 * A prompt longer than the server takes, less room for the answer (n_predict,
 * at most half of it; a quarter without n_predict), is cut to fit: the extra
 * context first (its oldest tokens), then the prefix's start and the
 * suffix's end (the suffix keeps at most a quarter of the room), as the
 * text nearest the gap matters most. Every other field is /completion's.
 * OpenAI's completions with a "suffix" are the same prompt, without extra
 * context or middle text. */
#ifndef MOETIER_SERVE_INFILL_H
#define MOETIER_SERVE_INFILL_H

#include <stddef.h>

#include "core/text/tokenizer.h"
#include "oai_request.h"

/* The /completion body for the /infill body[0..len): malloc'd, or NULL with
 * err set (400 naming the field; 500 out of memory). limit: the most prompt
 * tokens the server takes. */
char *serve_infill_body(const tokenizer *tok, int limit, const char *body, size_t len, oai_error *err);
/* The same for OpenAI's completions with a non-empty "suffix" (as DeepSeek's
 * own API takes it): FIM_PRE prompt FIM_SUF suffix FIM_MID, cut as above
 * (max_tokens the answer's room); "prompt" must be one string, and "echo"
 * is refused. */
char *serve_suffix_body(const tokenizer *tok, int limit, const char *body, size_t len, oai_error *err);

#endif
