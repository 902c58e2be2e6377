/* held_flags: the options that hold an answer to a JSON Schema or a GBNF
 * grammar (--json-schema, --json-schema-file, --grammar, --grammar-file),
 * shared by run and chat: parsing, help, and compiling what was given. */
#ifndef MOETIER_HELD_FLAGS_H
#define MOETIER_HELD_FLAGS_H

#include <stdio.h>

#include "core/base/errbuf.h"
#include "core/text/gbnf.h"
#include "core/text/json_schema.h"

typedef struct held_flags {
    const char *schema_arg, *schema_path, *grammar_arg, *grammar_path;
} held_flags;

/* Parses the option at argv[*i] (advancing past its value): 1 consumed, 0
 * not one of these, -1 its value missing (message printed). */
int held_flag_parse(held_flags *h, int argc, char **argv, int *i);
void held_flags_usage(FILE *f);
/* Whether one was given (more than one is refused by held_flags_check). */
int held_flags_given(const held_flags *h);
/* 0 when at most one was given; else prints why (cmd: the command). */
int held_flags_check(const held_flags *h, const char *cmd);
/* Compiles what was given into schema or grammar (whichever it is; the
 * other stays empty): 0; -1 with e naming the flag when it is bad; 1 when its
 * file cannot be read. */
int held_flags_compile(const held_flags *h, json_schema *schema, gbnf *grammar, errbuf *e);

#endif
