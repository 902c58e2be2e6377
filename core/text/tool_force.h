/* tool_force: an answer's tool calls held to the model's format, Kimi's:
 *   <|tool_calls_section_begin|> then, once or more,
 *   <|tool_call_begin|>functions.NAME:K<|tool_call_argument_begin|>ARGS<|tool_call_end|>
 *   then <|tool_calls_section_end|> and an end token;
 * or DeepSeek-V3.1's (and V3.2's):
 *   <｜tool▁calls▁begin｜> then, once or more,
 *   <｜tool▁call▁begin｜>NAME<｜tool▁sep｜>ARGS<｜tool▁call▁end｜>
 *   then <｜tool▁calls▁end｜> and an end token;
 * or DeepSeek-V3's (and R1's), the same but for each call
 *   <｜tool▁call▁begin｜>function<｜tool▁sep｜>NAME\n```json\nARGS\n```<｜tool▁call▁end｜>
 *   and a line break between calls.
 * NAME is one of the functions allowed, K the call's number (Kimi numbers the
 * calls across the conversation: the first is first_call, the calls the
 * conversation already holds), ARGS a JSON value the function's parameters
 * schema takes (compiled leniently: json_schema.h). The markers and end
 * tokens are the only special tokens that may come, each where the format
 * has it.
 * Forced (tool_choice "required" or a named function): the answer is the
 * section; a named function is called once, "required" allows further calls
 * of any of them. Lazy (tool_choice "auto"): the answer is free until the
 * model writes the section's first marker, then held as above. */
#ifndef MOETIER_TOOL_FORCE_H
#define MOETIER_TOOL_FORCE_H

#include <cJSON.h>

#include "chat_template.h"
#include "core/base/errbuf.h"
#include "json_mask.h"
#include "json_prefix.h"
#include "json_schema.h"
#include "vocab.h"

/* Moonshot's API takes at most 128 tools */
#define TOOL_FORCE_MAX_FUNCTIONS 128
/* an id's bytes: "functions.", a name of at most 200, ':', a number */
#define TOOL_FORCE_ID_MAX 232

typedef enum tool_format {
    TOOL_FORMAT_NONE,       /* not one tool_force holds */
    TOOL_FORMAT_KIMI,
    TOOL_FORMAT_DEEPSEEK,   /* V3.1's: NAME<｜tool▁sep｜>ARGS */
    TOOL_FORMAT_DEEPSEEK_V3, /* V3's: function<｜tool▁sep｜>NAME, the arguments fenced */
} tool_format;

/* The format a model writes its calls in: Kimi's when the vocabulary has
 * Kimi's markers; DeepSeek-V3.1's or V3's when it has DeepSeek's and the
 * template writes an assistant's call so (a call rendered to see); else NONE,
 * with why in why[0, cap). */
tool_format tool_format_detect(const chat_template *t, const vocab *v, char *why, size_t cap);
/* "Kimi's format", "DeepSeek-V3.1's layout", ... for logs */
const char *tool_format_name(tool_format f);
/* The token a tool-call section begins with, Kimi's or else DeepSeek's (the
 * answer's parser reads either: it ends a reasoning); -1 when v has neither. */
int tool_section_begin(const vocab *v);

typedef struct tool_force_fn {
    char *name;
    json_schema params;
} tool_force_fn;

typedef struct tool_force {
    const vocab *v;
    tool_format format;
    int section_begin, call_begin, argument_begin, call_end, section_end;
    tool_force_fn *fn;
    int n_fn;
    int once;                   /* a named function: one call */
    int lazy;                   /* free until the section begins */
    int first_call;             /* the first call's number (0 unless set after init) */
    /* where the answer is */
    int phase;
    int calls;                  /* calls begun */
    char id[TOOL_FORCE_ID_MAX];  /* the id written so far */
    int id_len;
    int chosen;                 /* the function being called */
    json_prefix args;
} tool_force;

/* The functions of tools (an OpenAI "tools" array) that may be called, in
 * format fmt: every one, or only the one named (name non-NULL). -1 with e set
 * when fmt is NONE, a marker is missing from the vocabulary, the name is not
 * among the tools, or a parameters schema cannot be compiled. */
int tool_force_init(tool_force *f, const vocab *v, tool_format fmt, const cJSON *tools, const char *name,
                    errbuf *e);
/* Lazy: the calls the model begins, of any of the tools. A function whose
 * parameters cannot be compiled takes any object. -1 with e set when a
 * marker is missing, a name cannot be held (as above) or there are more than
 * TOOL_FORCE_MAX_FUNCTIONS tools: the caller then leaves the calls free. */
int tool_force_init_lazy(tool_force *f, const vocab *v, tool_format fmt, const cJSON *tools, errbuf *e);
void tool_force_free(tool_force *f);
/* Back to the answer's start (another choice). */
void tool_force_restart(tool_force *f);
/* Sets to -inf the logits[0, V) of the tokens that cannot come next;
 * end_ids end the answer after the section. Returns how many may. */
int tool_force_mask(const tool_force *f, const json_vocab *jv, const int *end_ids, int n_end,
                    float *logits, int V);
/* Takes the token that came (one the mask allowed). */
void tool_force_accept(tool_force *f, int id);

#endif
