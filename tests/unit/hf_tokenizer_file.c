/* hf_tokenizer_file: see hf_tokenizer_file.h. */
#include "hf_tokenizer_file.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* GPT-2's bytes_to_unicode, built as its definition says: the printable
 * bytes stand for themselves, the others in order for 256, 257, ... */
static unsigned byte_char[256];
static void byte_chars_init(void)
{
    int n = 0;
    for (int b = 0; b < 256; b++) {
        int printable = (b >= '!' && b <= '~') || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
        byte_char[b] = printable ? (unsigned)b : 256u + (unsigned)n++;
    }
}

/* bytes as byte-level text (UTF-8) into out */
void hf_byte_level(const char *bytes, size_t n, char *out)
{
    if (!byte_char['!'])
        byte_chars_init();
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned c = byte_char[(uint8_t)bytes[i]];
        if (c < 0x80) {
            out[o++] = (char)c;
        } else {
            out[o++] = (char)(0xc0 | c >> 6);
            out[o++] = (char)(0x80 | (c & 0x3f));
        }
    }
    out[o] = 0;
}

/* A tokenizer.json: the 256 bytes (ids 0-255), then extra tokens (ids 256
 * on), and the merges ("a|b": two tokens' raw bytes), no pre-tokenizer. */
cJSON *hf_tokenizer_file(const char *const *extra, int n_extra, const char *const *merges, int n_merges)
{
    cJSON *root = cJSON_CreateObject(), *model = cJSON_AddObjectToObject(root, "model");
    cJSON_AddStringToObject(model, "type", "BPE");
    cJSON *tokens = cJSON_AddObjectToObject(model, "vocab");
    char key[256];
    for (int b = 0; b < 256; b++) {
        char one = (char)b;
        hf_byte_level(&one, 1, key);
        cJSON_AddNumberToObject(tokens, key, b);
    }
    for (int i = 0; i < n_extra; i++) {
        hf_byte_level(extra[i], strlen(extra[i]), key);
        cJSON_AddNumberToObject(tokens, key, 256 + i);
    }
    cJSON *m = cJSON_AddArrayToObject(model, "merges");
    for (int i = 0; i < n_merges; i++) {
        const char *sp = strchr(merges[i], '|');
        char a[128], b[128], line[300];
        hf_byte_level(merges[i], (size_t)(sp - merges[i]), a);
        hf_byte_level(sp + 1, strlen(sp + 1), b);
        snprintf(line, sizeof line, "%s %s", a, b);
        cJSON_AddItemToArray(m, cJSON_CreateString(line));
    }
    cJSON_AddNullToObject(root, "pre_tokenizer");
    cJSON_AddItemToObject(root, "added_tokens", cJSON_CreateArray());
    return root;
}
