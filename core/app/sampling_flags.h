/* sampling_flags: parsing and help of the sampling options (--temp, --top-k,
 * --top-p, --min-p, --repeat-penalty, --repeat-last-n, --presence-penalty,
 * --frequency-penalty, --seed, --greedy, and llama.cpp's --dry-multiplier,
 * --dry-base, --dry-allowed-length, --dry-penalty-last-n,
 * --dry-sequence-breaker, --top-nsigma, --xtc-probability, --xtc-threshold,
 * --typical, --dynatemp-range, --dynatemp-exp, --mirostat, --mirostat-lr,
 * --mirostat-ent). */
#ifndef MOETIER_SAMPLING_FLAGS_H
#define MOETIER_SAMPLING_FLAGS_H

#include <stdio.h>

#include "core/engine/sampler.h"
#include "core/text/dry_breakers.h"

/* The DRY sequence breakers given as text: each --dry-sequence-breaker adds
 * one and drops llama.cpp's defaults; "none" leaves none. */
typedef struct breaker_flags {
    const char *str[DRY_MAX_BREAKERS];
    int n, given;
} breaker_flags;

/* Parses the sampling flag at argv[*i] (advancing past its value): 1 consumed,
 * 0 not a sampling flag, -1 bad value (message printed). */
int sampling_flag_parse(sampler_params *p, breaker_flags *b, int argc, char **argv, int *i);
void sampling_flags_usage(FILE *f);
/* The breakers' text: b's when given, else llama.cpp's defaults. */
void breaker_flags_strings(const breaker_flags *b, const char *const **strs, int *n);
/* Once the model is open: DRY's window -1 becomes the context, and when DRY
 * is on its breakers become tokens of t (NULL: no tokenizer, then breakers
 * are an error) in out, which p then points at. */
int sampling_flags_finish(sampler_params *p, const breaker_flags *b, const tokenizer *t, int context,
                          dry_breakers *out, errbuf *e);

#endif
