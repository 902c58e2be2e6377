/* sampling_flags: parsing and help of the sampling options (--temp, --top-k,
 * --top-p, --min-p, --repeat-penalty, --repeat-last-n, --presence-penalty,
 * --frequency-penalty, --seed, --greedy). */
#ifndef MOETIER_SAMPLING_FLAGS_H
#define MOETIER_SAMPLING_FLAGS_H

#include <stdio.h>

#include "core/engine/sampler.h"

/* Parses the sampling flag at argv[*i] (advancing past its value): 1 consumed,
 * 0 not a sampling flag, -1 bad value (message printed). */
int sampling_flag_parse(sampler_params *p, int argc, char **argv, int *i);
void sampling_flags_usage(FILE *f);

#endif
