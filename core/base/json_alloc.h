/* json_alloc: cJSON's allocations watched, so that a parse that returns NULL
 * because memory ran out is told from one that found bad JSON (cJSON returns
 * NULL for both): a request under memory pressure gets a 500 "out of memory",
 * not a 400 that blames its body.
 *
 * json_alloc_install() puts the watch in place; call it once before any
 * thread uses cJSON (main does). Without it nothing is watched and
 * json_alloc_failed() stays 0, so a parse's NULL reads as bad JSON, as before. */
#ifndef MOETIER_JSON_ALLOC_H
#define MOETIER_JSON_ALLOC_H

#include <stddef.h>

void json_alloc_install(void);
/* cJSON_ParseWithLength after a reset: NULL, then json_alloc_failed() says
 * whether memory ran out. */
struct cJSON *json_parse_watched(const char *text, size_t len);
/* "out of memory parsing it" when a cJSON allocation failed since the reset,
 * else not_json: the reason for a parse's NULL */
const char *json_parse_failure(const char *not_json);
/* Forgets this thread's failures: call before the parse to be judged. */
void json_alloc_reset(void);
/* Whether a cJSON allocation failed on this thread since the last reset. */
int json_alloc_failed(void);
/* An allocation beside cJSON's, for the same parse, failed. */
void json_alloc_note_failure(void);
/* Tests: the n-th cJSON allocation from now on this thread fails (0: none). */
void json_alloc_fail_at(int n);

#endif
