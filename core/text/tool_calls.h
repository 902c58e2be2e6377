/* tool_calls: splits a Kimi model's generated text into reasoning, plain
 * content and structured tool calls, in one shot or incrementally.
 *
 * Why: the K2/K2.5 models answer a tool request with special tokens, decoded
 * to their names, e.g.
 *   <|tool_calls_section_begin|><|tool_call_begin|>functions.get_weather:0
 *   <|tool_call_argument_begin|>{"city": "Paris"}<|tool_call_end|>
 *   <|tool_calls_section_end|>
 * and, with thinking on, start inside a <think> block (the prompt ends with
 * "<think>"). A server must turn that into OpenAI-style content, reasoning and
 * tool_calls, and when streaming must never send a piece of a marker as
 * content. The stream parser holds back only a tail that could still become a
 * marker (or an unfinished UTF-8 character) and emits everything else at once.
 *
 * Grammar (markers are recognised only where they make sense):
 *   content:   text; "<think>" starts reasoning (reasoning modes TAGS/OPEN);
 *              "<|tool_calls_section_begin|>" starts a section.
 *   reasoning: text; "</think>" returns to content; a section marker also
 *              ends the reasoning and starts the section.
 *   section:   whitespace, calls, "<|tool_calls_section_end|>" (back to
 *              content; text after the section is content again).
 *   call:      "<|tool_call_begin|>" ID "<|tool_call_argument_begin|>" ARGS
 *              "<|tool_call_end|>".
 * The singular spellings <|tool_call_section_begin|>/<|tool_call_section_end|>
 * are accepted too (some Kimi outputs use them). The id is trimmed of
 * whitespace, and so are the arguments, otherwise the text as generated (not
 * validated as JSON). name = the part of the id between "functions." and its last ':'
 * ("functions.get_weather:0" -> "get_weather"), else the whole id.
 *
 * DeepSeek's format (the V3 family) is read too: "<｜tool▁calls▁begin｜>"
 * ... "<｜tool▁calls▁end｜>" around calls "<｜tool▁call▁begin｜>" HEAD
 * "<｜tool▁sep｜>" BODY "<｜tool▁call▁end｜>". V3 writes HEAD "function" and
 * BODY the name, a line break and the arguments fenced as ```json ... ```;
 * V3.1 writes the name as HEAD and the arguments as BODY. Its calls have no
 * ids of their own: they are numbered "call_N" from next_index.
 *
 * Malformed input never fails: text inside a section that is not a call is
 * dropped, a call cut short by another marker or without an id is dropped
 * (TOOL_PARSE_MALFORMED); a section or call still open at the end is reported
 * with TOOL_PARSE_UNTERMINATED (complete calls are kept); reasoning still open
 * at the end with TOOL_PARSE_REASONING_OPEN. Errors (-1) are out of memory
 * only. Concatenating the stream's deltas gives exactly the one-shot result,
 * however the text is cut into chunks. */
#ifndef MOETIER_TOOL_CALLS_H
#define MOETIER_TOOL_CALLS_H

#include <stddef.h>

#include "core/base/errbuf.h"

typedef struct tool_call {
    char *id;                   /* "functions.get_weather:0" */
    char *name;                 /* "get_weather" */
    char *arguments;            /* raw text, e.g. {"city": "Paris"} */
} tool_call;

/* How <think> tags are treated. */
typedef enum tool_reasoning_mode {
    TOOL_REASONING_TAGS = 0,    /* <think>...</think> in the text is reasoning */
    TOOL_REASONING_OPEN,        /* the text starts inside reasoning (prompt ended with <think>) */
    TOOL_REASONING_NONE,        /* think tags are plain content */
} tool_reasoning_mode;

enum {
    TOOL_PARSE_UNTERMINATED = 1,    /* a section or call was still open at the end */
    TOOL_PARSE_MALFORMED = 2,       /* something inside a section was dropped */
    TOOL_PARSE_REASONING_OPEN = 4,  /* the text ended inside reasoning */
};

typedef struct tool_parse_result {
    char *content;              /* NUL-terminated, never NULL after success */
    size_t content_len;
    char *reasoning;
    size_t reasoning_len;
    tool_call *calls;
    int n_calls;
    int flags;                  /* TOOL_PARSE_* */
} tool_parse_result;

/* One-shot parse of text[0..len). */
int tool_calls_parse(const char *text, size_t len, tool_reasoning_mode mode, tool_parse_result *out,
                     errbuf *e);
void tool_parse_result_free(tool_parse_result *r);

/* A growable byte buffer (part of tool_stream, so that it can live on the stack). */
typedef struct tool_text {
    char *p;
    size_t len, cap;
} tool_text;

typedef struct tool_stream {
    int state;                  /* internal */
    int deepseek;               /* internal: the call being read is in DeepSeek's format */
    int next_index;             /* the number a DeepSeek call's id gets next ("call_N"): set it to
                                 * the calls the conversation already holds */
    tool_reasoning_mode mode;
    int flags;                  /* TOOL_PARSE_* so far */
    tool_text pend;             /* held back: a possible marker start or UTF-8 tail */
    tool_text id, args;         /* the call being read */
    tool_text out_content, out_reasoning;     /* this delta's text */
    tool_call *calls;           /* this delta's completed calls */
    int n_calls, cap_calls;
} tool_stream;

/* What one feed produced. Pointers stay valid until the next feed, finish or
 * free of the stream (copy what must outlive that). */
typedef struct tool_stream_delta {
    const char *content;        /* NUL-terminated ("" when none) */
    size_t content_len;
    const char *reasoning;
    size_t reasoning_len;
    const tool_call *calls;     /* calls completed by this chunk */
    int n_calls;
    int flags;                  /* TOOL_PARSE_* raised so far (cumulative) */
} tool_stream_delta;

void tool_stream_init(tool_stream *s, tool_reasoning_mode mode);
/* Feeds the next chunk of decoded text. */
int tool_stream_feed(tool_stream *s, const char *chunk, size_t n, tool_stream_delta *d, errbuf *e);
/* End of the text: flushes what was held back and sets the end-of-text flags.
 * The stream must then be freed (or initialised again). */
int tool_stream_finish(tool_stream *s, tool_stream_delta *d, errbuf *e);
void tool_stream_free(tool_stream *s);

/* 1 when a special token's text is one of the markers the stream turns into
 * fields (reasoning, tool calls); other special tokens are not reply text. */
int tool_stream_marker(const char *name, size_t n);
/* 1 when a marker's text, fed now, would be taken as a marker (it means
 * something where the stream is: a section's end inside a section, ...); a
 * special token whose marker means nothing there is no reply text either. */
int tool_stream_takes(const tool_stream *s, const char *name, size_t n);

/* 1 while the stream is inside a tool-call section (a client may want to show
 * that a call is being generated). */
int tool_stream_in_section(const tool_stream *s);

#endif
