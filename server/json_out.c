/* json_out: see json_out.h. */
#include "json_out.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/text/utf8.h"

cJSON *json_clean_string(const char *text, size_t n)
{
    char *s = utf8_clean(text ? text : "", text ? n : 0);
    cJSON *v = s ? cJSON_CreateString(s) : NULL;
    free(s);
    return v;
}

char *json_print_and_delete(cJSON *root)
{
    char *s = root ? cJSON_PrintUnformatted(root) : NULL;
    cJSON_Delete(root);
    return s;
}

char *json_sse_data_text(char *body)
{
    if (!body)
        return NULL;
    size_t n = strlen(body) + 16;
    char *ev = malloc(n);
    if (ev)
        snprintf(ev, n, "data: %s\n\n", body);
    free(body);
    return ev;
}

char *json_sse_data(cJSON *data)
{
    return json_sse_data_text(json_print_and_delete(data));
}

int json_sse_append(char **out, const char *name, cJSON *data)
{
    char *body = json_print_and_delete(data);
    size_t have = *out ? strlen(*out) : 0, n = body ? strlen(body) + strlen(name) + 20 : 0;
    char *grown = body ? realloc(*out, have + n) : NULL;
    if (!grown) {
        free(body);
        free(*out);
        *out = NULL;
        return -1;
    }
    snprintf(grown + have, n, "event: %s\ndata: %s\n\n", name, body);
    free(body);
    *out = grown;
    return 0;
}

double json_float(float f)
{
    char buf[32];
    for (int digits = 6; digits < 9; digits++) {
        snprintf(buf, sizeof buf, "%.*g", digits, (double)f);
        double d = strtod(buf, NULL);
        if ((float)d == f)
            return d;
    }
    return f;   /* (9 digits always read back) */
}
