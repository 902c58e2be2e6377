/* chat_format: turns an OpenAI-style conversation into the prompt text of the
 * Kimi K2.5-style chat template, natively in C.
 *
 * Why native: K2.5's template (chat_template.jinja of the K2.5 family; the
 * kite1.0 copy of it is the test fixture) is the one whose fixtures pin its
 * output, and this renderer validates the request's fields as it goes. Other
 * templates (Kimi K2's own, and any checkpoint's) are interpreted by the
 * template engine (jinja.h), which the tests hold to this renderer on K2.5's
 * template; chat_template.h picks one or the other. This file reproduces the
 * template's output byte for byte (Hugging Face's Jinja setup: trim_blocks,
 * lstrip_blocks) and recognises it by its distinctive markers.
 *
 * Input: `messages` is a cJSON array of objects:
 *   role          string, required. "user" -> <|im_user|>, "assistant" ->
 *                 <|im_assistant|>, any other role -> <|im_system|>.
 *   name          string: replaces the role name in the header when non-empty.
 *   content       string, null/absent (nothing), or an array of parts
 *                 {type: "image"|"image_url"} -> media placeholder + "\n",
 *                 {type: "video"|"video_url"} -> video placeholder + "\n",
 *                 any other part (type absent or unknown) -> its "text".
 *   reasoning / reasoning_content   (assistant) text for <think>...</think>.
 *   tool_calls    (assistant) [{id, type, function: {name, arguments}}];
 *                 arguments as a string are copied, anything else is printed
 *                 as Python json.dumps(ensure_ascii=False) would.
 *   tool_call_id  (tool) printed after "## Return of ".
 * `tools` (array or NULL) is declared as compact JSON with every object's keys
 * deep-sorted (Kimi's apply_chat_template sorts them before rendering), unless
 * options.tools_ts_str is non-empty, which is then declared verbatim.
 *
 * History/suffix split (the template's own rule): every message up to and
 * including the last assistant message without tool calls is "history" and
 * renders <think></think> (reasoning dropped); later assistant messages render
 * <think>{reasoning}</think>, unless thinking is off (and preserve_thinking is
 * off). preserve_thinking puts every message in the suffix.
 *
 * Semantics where the template leaves a choice (the fixtures were rendered with
 * @huggingface/jinja, which this follows; Python Jinja2 agrees on all 23):
 *   - Object lookups follow Python dict semantics: with a duplicated key the
 *     last one wins (json.loads does the same).
 *   - message.get('reasoning', message.get('reasoning_content', '')): a present
 *     "reasoning" key wins even when null (reasoning_content is then ignored);
 *     a null value prints as "" (as @huggingface/jinja does; Python Jinja2
 *     would print "None"). The same holds for a null tool_call_id or tool call
 *     id; absent ones print "" in both engines.
 *   - A value the template prints that is neither a string nor null/absent
 *     (a number or object as role, name, content, text, id, reasoning) is
 *     refused with an error naming the message, part and field; so are a part
 *     without a string "text" that is not image/video (a "text" or "refusal"
 *     part with "text" absent or null prints nothing, as in the template; an
 *     OpenAI refusal part is dropped by it), a content part that is
 *     not an object, tool_calls that is not an array, a tool call without a
 *     "function" object or without "arguments".
 *   - tool_calls: [] counts as "no tool calls" (Jinja truthiness).
 *   - Numbers (in object arguments and tools) print as json.loads then
 *     json.dumps would: a number parsed by chat_json_parse keeps its spelling,
 *     so an int prints its digits exactly ("-0" as "0", 2^64 as
 *     18446744073709551616) and a float (a fraction or an exponent: "1.0",
 *     "-0.0", "1e16") as Python's repr ("1.0", "-0.0", "1e+16", "Infinity" for
 *     1e400). A number without a spelling (built in code, or parsed by plain
 *     cJSON) prints from its double: integral values below 2^63 as ints, others
 *     as repr.
 *   - Strings containing U+0000 cannot pass through cJSON (the text stops
 *     there).
 * The official K2.5 template is recognised too: it differs from the kite1.0
 * copy only in its video placeholder (<|kimi_k25_video_placeholder|>). */
#ifndef MOETIER_CHAT_FORMAT_H
#define MOETIER_CHAT_FORMAT_H

#include <cJSON.h>
#include <stddef.h>

#include "core/base/errbuf.h"

typedef enum chat_template_kind {
    CHAT_TEMPLATE_K25 = 0,      /* K2.5 style, kite1.0 copy (the fixture): <|kite_video_placeholder|> */
    CHAT_TEMPLATE_K25_MOONSHOT, /* the same template with <|kimi_k25_video_placeholder|> */
} chat_template_kind;

typedef struct chat_options {
    int add_generation_prompt;  /* end with <|im_assistant|>assistant<|im_middle|><think> */
    int thinking;               /* 0: <think></think> in the prompt and for suffix messages */
    int preserve_thinking;      /* keep the reasoning of every assistant message */
    const char *tools_ts_str;   /* NULL/"": declare tools as JSON */
    const cJSON *vars;          /* more variables for an interpreted template (a request's
                                   chat_template_kwargs object; NULL: none) */
    int thinking_set;           /* thinking, preserve_thinking were given (by a request or the
                                   command line): an interpreted template sees them only then,
                                   as Hugging Face passes only the kwargs it is given */
    int preserve_set;
} chat_options;

/* The defaults of Kimi's apply_chat_template: add_generation_prompt = 1,
 * thinking = 1, preserve_thinking = 0, tools_ts_str = NULL. */
void chat_options_default(chat_options *o);

/* Overrides o's fields from a request-like object: "add_generation_prompt",
 * "thinking", "preserve_thinking" (booleans; null keeps the current value) and
 * "tools_ts_str" (a string, which o then points into, or null, which clears
 * it). Other keys are ignored. */
int chat_options_from_json(const cJSON *obj, chat_options *o, errbuf *e);

/* Renders messages (+ tools, may be NULL or a JSON null) into a malloc'd,
 * NUL-terminated UTF-8 string; *out_len (may be NULL) gets its length. opt NULL
 * means the defaults. On error *out is NULL and e names the message index and
 * field ("messages[2].content[1]: ..."). */
int chat_format_render(chat_template_kind kind, const cJSON *messages, const cJSON *tools,
                       const chat_options *opt, char **out, size_t *out_len, errbuf *e);

/* Recognises a chat template text. Returns 0 and sets *out for the K2.5-style
 * template (markers "tools_ts_str", "<|im_middle|>", "<think>", ... and a known
 * video placeholder); otherwise -1 with "unsupported chat template: ..." naming
 * what is missing. */
int chat_template_detect(const char *template_text, chat_template_kind *out, errbuf *e);

/* A model directory's chat template text (malloc'd): model_dir/chat_template.jinja,
 * else the "chat_template" field of model_dir/tokenizer_config.json (a string, or
 * a list of {name, template} where "default" is used); *text NULL when there is
 * none. where gets the file it came from. */
int chat_template_find(const char *model_dir, char **text, char *where, size_t where_cap, errbuf *e);

/* "kimi-k2.5 (kite)" / "kimi-k2.5". */
const char *chat_template_name(chat_template_kind kind);
/* A format named on the command line (--chat-template), whatever the model's
 * template: "kimi-k2.5" (K2.5's video placeholder) or "kimi-k2.5-kite"; -1
 * with e listing the names for another. */
int chat_template_from_name(const char *name, chat_template_kind *out, errbuf *e);

/* Flags of chat_json_dump. */
enum {
    CHAT_JSON_COMPACT = 1,      /* separators "," and ":" (default ", " and ": ") */
    CHAT_JSON_SORT_KEYS = 2,    /* every object's keys in code point order */
};

/* cJSON_ParseWithLengthOpts(text, len, end, 0) held to RFC 8259 as json.loads
 * is (nothing but whitespace after the value; no "01" or "1."; no raw
 * control character, inside a string or out; no \u without four hex
 * digits), that also
 * keeps each number's source spelling (in the number's valuestring, which
 * cJSON_Delete frees), so that chat_json_dump prints it as json.loads then
 * json.dumps would. NULL when the text is not JSON (*end near the fault) or
 * memory runs out (then json_alloc_failed() says so: core/base/json_alloc.h). */
cJSON *chat_json_parse(const char *text, size_t len, const char **end);

/* Python json.dumps(v, ensure_ascii=False, separators=..., sort_keys=...) of a
 * cJSON value (see the number notes above) into a malloc'd string. */
int chat_json_dump(const cJSON *v, int flags, char **out, size_t *out_len, errbuf *e);

/* Python's text of a number json.loads read from its spelling: an int's
 * digits ("-0" as "0"), a float's repr ("1.0", "1e+16"); in num or spelling. */
const char *chat_py_number_spelled(const char *spelling, char *num, size_t cap);
/* Python's str() of a float: repr ("1.0", "0.1", "1e+16"), "inf", "nan". */
void chat_py_float_str(double x, char *out, size_t cap);

#endif
