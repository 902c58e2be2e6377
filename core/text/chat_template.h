/* chat_template: the chat format a model's conversations are rendered in.
 *
 * A model directory's own template decides: Kimi K2.5's family is rendered
 * natively (chat_format.c); any other template (Kimi-K2-Instruct's,
 * K2-Thinking's, each of their revisions, another checkpoint's) is
 * interpreted by the template engine (jinja.h) the way Hugging Face's
 * apply_chat_template renders it. A directory without a template gets K2.5's
 * format. A name on the command line (--chat-template) overrides this. */
#ifndef MOETIER_CHAT_TEMPLATE_H
#define MOETIER_CHAT_TEMPLATE_H

#include <cJSON.h>
#include <stddef.h>

#include "core/base/errbuf.h"
#include "core/text/chat_format.h"
#include "core/text/jinja.h"
#include "core/text/reasoning_start.h"

typedef struct chat_template {
    chat_template_kind kind; /* the native format, when jinja is NULL */
    jinja_template *jinja;   /* the model's own template, interpreted */
    cJSON *vars;             /* bos_token, eos_token, ... of tokenizer_config.json */
    int sort_tools;          /* Kimi's tokenizer (tiktoken.model), whose apply_chat_template
                              * deep-sorts the tools' keys; transformers does not */
    char label[512];         /* what inspect, the logs and /props call it */
} chat_template;

/* name NULL or "auto": the model's own template (above); "kimi-k2.5",
 * "kimi-k2.5-kite": that native format whatever the model has; "jinja": the
 * model's own template through the engine even when it is K2.5's; the path of
 * a file: that template through the engine (with the model's special tokens),
 * as vLLM's and llama.cpp's template files are. -1 with e naming the file and
 * line of a template the engine cannot compile, or the names known for
 * another name. */
int chat_template_open(const char *model_dir, const char *name, chat_template *t, errbuf *e);

void chat_template_close(chat_template *t);

/* The conversation as the template prints it (see chat_format_render for the
 * input). The engine's variables are Hugging Face's: messages, tools (absent
 * when there are none; object keys deep-sorted, as Kimi's apply_chat_template
 * passes them), add_generation_prompt, Kimi's switches thinking and
 * preserve_thinking (when given) and tools_ts_str, the other keys of
 * opt->vars, and the tokenizer's special tokens. */
int chat_template_render(const chat_template *t, const cJSON *messages, const cJSON *tools,
                         const chat_options *opt, char **out, size_t *out_len, errbuf *e);

/* chat_template_render for Hugging Face's continue_final_message (opt's
 * add_generation_prompt off): the prompt ends where the template printed the
 * end of the last message's text (its last text part), so the answer
 * continues it. As transformers does it: a marker appended to that text finds
 * its end; where the template trimmed trailing whitespace, it goes from the
 * text's end too. -1 with e saying so when the last message has no text or
 * the template did not print it. */
int chat_template_render_continue(const chat_template *t, const cJSON *messages, const cJSON *tools,
                                  const chat_options *opt, char **out, size_t *out_len, errbuf *e);

/* Where a rendered prompt with its generation prompt leaves the answer:
 * inside reasoning when it ends with an open "<think>" (K2.5's with thinking
 * on), none when it ends with "</think>" (K2.5's with thinking off), else the
 * model's to open (K2-Thinking's, whose model writes "<think>" itself). A
 * prompt that continues a text (no generation prompt, a continued final
 * message, an answer's given start) is the caller's to call closed. */
reasoning_start chat_prompt_reasoning(const char *text, size_t len);

#endif
