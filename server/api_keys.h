/* api_keys: the keys `moetier serve` takes (--api-key, MOETIER_API_KEY and
 * the lines of --api-key-file, one for each user of a shared server) and the
 * check of the key a request sends. */
#ifndef MOETIER_API_KEYS_H
#define MOETIER_API_KEYS_H

#include "core/base/errbuf.h"

typedef struct api_keys {
    char **keys;
    int n;                      /* 0: no key asked for */
} api_keys;

/* Adds a key (copied); -1 with e set when it is empty or holds a space or
 * control character (a header could not carry it). */
int api_keys_add(api_keys *k, const char *key, const char *from, errbuf *e);
/* Adds the keys of a file, one a line; blank lines and lines starting with
 * '#' are skipped, spaces around a key dropped. -1 with e naming the file and
 * line when it cannot be read, a line is no key, or it holds none. */
int api_keys_read_file(api_keys *k, const char *path, errbuf *e);
/* Whether sent is one of the keys; the time taken does not depend on where a
 * key and sent differ. */
int api_keys_match(const api_keys *k, const char *sent);
void api_keys_free(api_keys *k);

#endif
