#include "json_alloc.h"

#include <stdlib.h>

#include <cJSON.h>

static _Thread_local int failed;
static _Thread_local int fail_countdown;

static void *watched_malloc(size_t n)
{
    if (fail_countdown > 0 && --fail_countdown == 0) {
        failed = 1;
        return NULL;
    }
    void *p = malloc(n);
    if (!p)
        failed = 1;
    return p;
}

void json_alloc_install(void)
{
    cJSON_Hooks h = {.malloc_fn = watched_malloc, .free_fn = free};
    cJSON_InitHooks(&h);
}

cJSON *json_parse_watched(const char *text, size_t len)
{
    failed = 0;
    return cJSON_ParseWithLength(text, len);
}

const char *json_parse_failure(const char *not_json)
{
    return failed ? "out of memory parsing it" : not_json;
}

void json_alloc_reset(void)
{
    failed = 0;
}

int json_alloc_failed(void)
{
    return failed;
}

void json_alloc_note_failure(void)
{
    failed = 1;
}

void json_alloc_fail_at(int n)
{
    fail_countdown = n;
}
