/* json_out: what every response shape (oai_response.c, anthropic_response.c,
 * responses_response.c) builds its bodies and Server-Sent Events from: text
 * from the model made valid UTF-8, and cJSON trees printed. */
#ifndef MOETIER_JSON_OUT_H
#define MOETIER_JSON_OUT_H

#include <cJSON.h>
#include <stddef.h>

/* A JSON string of text[0..n) with invalid bytes and NUL as U+FFFD (text may
 * be NULL: ""); NULL when out of memory. */
cJSON *json_clean_string(const char *text, size_t n);
/* f as the shortest decimal that reads back as f (0.6f is 0.6, not
 * 0.600000023841858): for settings shown as the user gave them. */
double json_float(float f);
/* root printed compactly (malloc'd), root deleted; NULL when out of memory or
 * root is NULL. */
char *json_print_and_delete(cJSON *root);
/* "data: BODY\n\n" (a Server-Sent Event without a name) of body, which it
 * takes (freed); NULL when body is NULL or out of memory. */
char *json_sse_data_text(char *body);
/* The same of data printed (data deleted). */
char *json_sse_data(cJSON *data);
/* Appends "event: NAME\ndata: {data}\n\n" to *out (grown), deleting data.
 * 0, or -1 out of memory (*out then freed and NULL). */
int json_sse_append(char **out, const char *name, cJSON *data);

#endif
