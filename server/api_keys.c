/* api_keys: the keys a server takes, and the check of a request's. */
#include "api_keys.h"

#include <stdlib.h>
#include <string.h>

#include "core/base/fileutil.h"

int api_keys_add(api_keys *k, const char *key, const char *from, errbuf *e)
{
    if (!key[0])
        return err_set(e, "%s: a key must not be empty", from);
    for (const unsigned char *p = (const unsigned char *)key; *p; p++)
        if (*p <= ' ' || *p == 0x7f)
            return err_set(e, "%s: a key must not hold spaces or control characters (a header carries it)",
                           from);
    char **grown = realloc(k->keys, (size_t)(k->n + 1) * sizeof *grown);
    char *copy = strdup(key);
    if (grown)
        k->keys = grown;
    if (!grown || !copy) {
        free(copy);
        return err_set(e, "%s: out of memory", from);
    }
    k->keys[k->n++] = copy;
    return 0;
}

int api_keys_read_file(api_keys *k, const char *path, errbuf *e)
{
    char *text;
    size_t len;
    if (file_read_regular(path, &text, &len, e))
        return -1;
    int before = k->n, line = 0, rc = 0;
    for (char *p = text, *end; !rc && p < text + len; p = end + 1) {
        line++;
        end = memchr(p, '\n', (size_t)(text + len - p));
        if (!end)
            end = text + len;
        char *a = p, *b = end;
        while (a < b && (*a == ' ' || *a == '\t'))
            a++;
        while (b > a && (b[-1] == ' ' || b[-1] == '\t' || b[-1] == '\r'))
            b--;
        if (a == b || *a == '#')
            continue;
        *b = 0;
        char where[4200];
        snprintf(where, sizeof where, "%s line %d", path, line);
        rc = api_keys_add(k, a, where, e);
    }
    free(text);
    if (!rc && k->n == before)
        rc = err_set(e, "%s: no key in it (one a line; '#' starts a comment)", path);
    return rc;
}

int api_keys_match(const api_keys *k, const char *sent)
{
    if (!sent)
        return 0;
    size_t sl = strlen(sent);
    int ok = 0;
    for (int i = 0; i < k->n; i++) {    /* every key compared, each in full */
        const char *want = k->keys[i];
        size_t wl = strlen(want);
        unsigned diff = (unsigned)(sl ^ wl);
        for (size_t j = 0; j < wl; j++)
            diff |= (unsigned char)want[j] ^ (unsigned char)(j < sl ? sent[j] : 0);
        ok |= diff == 0;
    }
    return ok;
}

void api_keys_free(api_keys *k)
{
    for (int i = 0; i < k->n; i++)
        free(k->keys[i]);
    free(k->keys);
    k->keys = NULL;
    k->n = 0;
}
