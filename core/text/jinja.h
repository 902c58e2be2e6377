/* jinja: renders a model's own chat template (chat_template.jinja), the way
 * Hugging Face's apply_chat_template does with Python's Jinja2.
 *
 * Why: a checkpoint's chat template is code, and each published revision of it
 * (Kimi-K2-Instruct, K2-Instruct-0905, K2-Thinking, ...) prints a slightly
 * different prompt. Reproducing each revision by hand cannot follow the next
 * one; interpreting the template the model ships can. Kimi K2.5's template
 * keeps its native renderer (chat_format.c); any other template is compiled
 * here, and the tests hold this engine to that renderer on K2.5's template
 * and to Python Jinja2's output on a corpus of templates.
 *
 * The language is Jinja2's as Hugging Face configures it: trim_blocks,
 * lstrip_blocks, loop controls (break/continue), keep_trailing_newline off,
 * no autoescape. Supported: if/elif/else, for (with else, filters, tuple
 * targets, loop.*), set (names, tuples, namespace attributes, blocks), macros (with
 * defaults and keyword arguments), filter blocks, raw, Hugging Face's
 * generation blocks;
 * Python-like expressions (arithmetic, ~, comparisons, in, and/or/not,
 * conditional expressions, literals, slices, attribute and item access, %
 * formatting); the
 * common filters, tests and string/list/dict methods (jinja_builtins.c lists
 * them); globals range, namespace, dict, raise_exception and strftime_now.
 * Anything else is refused when the template is compiled, or when rendering
 * reaches it, with the template's line.
 *
 * One choice differs from Python: a printed None is "" (as @huggingface/jinja
 * prints it, and as moetier's native renderer does), not "None".
 *
 * Limits keep a hostile template from taking the machine: output size, steps,
 * time (10 seconds), macro depth, expression nesting, memory and range() are
 * bounded (errors say which). */
#ifndef MOETIER_JINJA_H
#define MOETIER_JINJA_H

#include <cJSON.h>
#include <stddef.h>

#include "core/base/errbuf.h"

typedef struct jinja_template jinja_template;

/* Compiles template text (len bytes, need not be NUL-terminated). NULL with e
 * naming the line and what was expected when the text is not a template this
 * engine runs. */
jinja_template *jinja_compile(const char *text, size_t len, errbuf *e);

void jinja_free(jinja_template *t);

/* Renders with the variables of ctx (a JSON object; NULL for none) into a
 * malloc'd NUL-terminated string. Numbers keep their spelling when ctx was
 * parsed by chat_json_parse, so tojson prints them as Python's json.dumps
 * would print json.loads' values. -1 with e naming the line on an error the
 * template raises or hits. */
int jinja_render(const jinja_template *t, const cJSON *ctx, char **out, size_t *out_len, errbuf *e);

#endif
