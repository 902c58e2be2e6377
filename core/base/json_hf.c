/* json_hf: see json_hf.h. cJSON_Print indents with tabs; JSON strings never
 * hold a raw tab (cJSON escapes them), so every tab is layout: a leading one
 * becomes 2 spaces, the one after a colon a single space. */
#include "json_hf.h"

#include <stdlib.h>
#include <string.h>

char *json_print_hf(const cJSON *root)
{
    char *t = cJSON_Print(root);
    if (!t)
        return NULL;
    size_t n = strlen(t);
    char *out = malloc(2 * n + 2);
    if (!out) {
        free(t);
        return NULL;
    }
    size_t o = 0;
    int line_start = 1;
    for (size_t i = 0; i < n; i++) {
        if (t[i] == '\t') {
            out[o++] = ' ';
            if (line_start)
                out[o++] = ' ';
            continue;
        }
        line_start = t[i] == '\n';
        out[o++] = t[i];
    }
    out[o++] = '\n';
    out[o] = 0;
    free(t);
    return out;
}
