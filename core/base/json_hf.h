/* json_hf: prints JSON the way Hugging Face repositories store their config
 * files (2-space indentation, "key": value), so synthesised checkpoints look
 * like downloaded ones. */
#ifndef MOETIER_JSON_HF_H
#define MOETIER_JSON_HF_H

#include <cJSON.h>

/* malloc'd text ending in a newline; NULL when out of memory. */
char *json_print_hf(const cJSON *root);

#endif
