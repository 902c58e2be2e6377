/* chat_commands: the conversation edits of `moetier chat`'s commands. */
#include "chat_commands.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/base/fileutil.h"
#include "core/text/chat_file.h"
#include "core/text/utf8.h"

char *chat_take_last_exchange(cJSON *messages)
{
    int n = cJSON_GetArraySize(messages), last = -1;
    for (int i = 0; i < n; i++) {
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(messages, i), "role");
        if (cJSON_IsString(role) && !strcmp(role->valuestring, "user"))
            last = i;
    }
    if (last < 0)
        return NULL;
    const cJSON *content = cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(messages, last), "content");
    char *text = strdup(cJSON_IsString(content) ? content->valuestring : "");
    if (!text)
        return NULL;
    while (cJSON_GetArraySize(messages) > last)
        cJSON_DeleteItemFromArray(messages, cJSON_GetArraySize(messages) - 1);
    return text;
}

int chat_save(const cJSON *messages, const char *path, errbuf *e)
{
    /* a file there that is not a conversation (a typo's, a model's) stays */
    struct stat st;
    if (stat(path, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0) {
        errbuf why;
        cJSON *old = st.st_size <= CHAT_SAVE_MAX_BYTES ? chat_load(path, &why) : NULL;
        if (!old)
            return err_set(e, "%s holds something other than a saved conversation: it is left as "
                           "it is; give another file", path);
        cJSON_Delete(old);
    }
    char *text = cJSON_Print(messages);
    if (!text)
        return err_set(e, "%s: out of memory writing the conversation", path);
    size_t n = strlen(text);
    text[n] = '\n';     /* (cJSON_Print's NUL: the file ends with a line break instead) */
    int rc = file_write_atomic(path, text, n + 1, e);
    free(text);
    return rc;
}

/* Refuses a file larger than max before it is read (a mistyped name may be a
 * model's shard): 0 when it is no larger, or not a regular file (the read
 * says what it is). */
static int at_most(const char *path, uint64_t max, const char *what, errbuf *e)
{
    struct stat st;
    if (stat(path, &st) == 0 && S_ISREG(st.st_mode) && (uint64_t)st.st_size > max)
        return err_set(e, "%s: %llu bytes; %s at most %llu", path, (unsigned long long)st.st_size, what,
                       (unsigned long long)max);
    return 0;
}

cJSON *chat_load(const char *path, errbuf *e)
{
    char *text;
    size_t len;
    if (at_most(path, CHAT_SAVE_MAX_BYTES, "a conversation file takes", e) ||
        file_read_regular(path, &text, &len, e))
        return NULL;
    cJSON *messages = chat_file_parse(text, len, path, e);
    free(text);
    return messages;
}

char *chat_file_block(const char *path, errbuf *e)
{
    char *text;
    size_t len;
    if (at_most(path, CHAT_READ_MAX_BYTES, "a message takes files of", e) ||
        file_read_regular(path, &text, &len, e))
        return NULL;
    size_t bad = utf8_validate((const uint8_t *)text, len);
    const char *nul = memchr(text, 0, len);
    if (nul && (size_t)(nul - text) < bad)
        bad = (size_t)(nul - text);     /* (a NUL is UTF-8, but no text) */
    if (len > CHAT_READ_MAX_BYTES || bad < len) {
        if (len > CHAT_READ_MAX_BYTES)
            err_set(e, "%s: %zu bytes; a message takes files of at most %u", path, len,
                    CHAT_READ_MAX_BYTES);   /* (it grew since the check) */
        else
            err_set(e, "%s: not UTF-8 text (byte %zu)", path, bad);
        free(text);
        return NULL;
    }
    if (len && text[len - 1] == '\n')
        len--;
    size_t longest = 0;
    for (size_t i = 0, run = 0; i < len; i++) {
        run = text[i] == '`' ? run + 1 : 0;
        longest = run > longest ? run : longest;
    }
    size_t fence = longest < 3 ? 3 : longest + 1;
    const char *name = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
    /* the language: an extension of 1 to 10 letters and digits */
    const char *dot = strrchr(name, '.');
    size_t lang = dot ? strspn(dot + 1, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") : 0;
    if (!dot || dot[1 + lang] || lang > 10)
        lang = 0;
    size_t cap = strlen(name) + 2 * fence + lang + len + 8;
    char *out = malloc(cap), *p = out;
    if (!out) {
        free(text);
        err_set(e, "%s: out of memory", path);
        return NULL;
    }
    p += sprintf(p, "%s:\n", name);
    memset(p, '`', fence);
    p += fence;
    memcpy(p, dot ? dot + 1 : "", lang);
    p += lang;
    *p++ = '\n';
    memcpy(p, text, len);
    p += len;
    *p++ = '\n';
    memset(p, '`', fence);
    p += fence;
    *p = 0;
    free(text);
    return out;
}
