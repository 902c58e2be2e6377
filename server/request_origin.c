/* request_origin: see request_origin.h. */
#include "request_origin.h"

#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

/* The host part of "host[:port]" or "[v6]:port": its start and length. */
static void host_part(const char *hp, const char **at, size_t *len)
{
    if (hp[0] == '[') {
        const char *end = strchr(hp, ']');
        *at = hp;
        *len = end ? (size_t)(end - hp) + 1 : strlen(hp);
        return;
    }
    const char *colon = strchr(hp, ':');
    *at = hp;
    *len = colon && !strchr(colon + 1, ':') ? (size_t)(colon - hp) : strlen(hp);
}

static int names_this_machine(const char *h, size_t n)
{
    if ((n == 9 && !strncasecmp(h, "localhost", 9)) || (n == 5 && !memcmp(h, "[::1]", 5)) ||
        (n == 3 && !memcmp(h, "::1", 3)))
        return 1;
    /* 127.x.y.z, digits and dots only */
    if (n < 5 || n > 15 || strncmp(h, "127.", 4))
        return 0;
    for (size_t i = 4; i < n; i++)
        if (!(h[i] == '.' || (h[i] >= '0' && h[i] <= '9')))
            return 0;
    return 1;
}

/* whether text[0, n) is one of list's comma-separated entries (spaces
 * around them ignored; "*" is every text) */
static int listed(const char *list, const char *text, size_t n)
{
    for (const char *p = list; p && *p;) {
        while (*p == ' ' || *p == ',')
            p++;
        const char *end = p;
        while (*end && *end != ',')
            end++;
        const char *last = end;
        while (last > p && last[-1] == ' ')
            last--;
        size_t len = (size_t)(last - p);
        if ((len == 1 && *p == '*') || (len == n && len && !strncasecmp(p, text, n)))
            return 1;
        p = end;
    }
    return 0;
}

int request_origin_loopback(const struct sockaddr *a)
{
    if (a->sa_family == AF_INET)
        return (ntohl(((const struct sockaddr_in *)(const void *)a)->sin_addr.s_addr) >> 24) == 127;
    if (a->sa_family != AF_INET6)
        return 0;
    const struct in6_addr *x = &((const struct sockaddr_in6 *)(const void *)a)->sin6_addr;
    return IN6_IS_ADDR_LOOPBACK(x) || (IN6_IS_ADDR_V4MAPPED(x) && x->s6_addr[12] == 127);
}

int request_origin_check(int loopback, const char *host, const char *origin, const char *allowed_hosts,
                         const char *allowed_origins, int *cors, char *why, size_t n)
{
    *cors = 0;
    const char *h;
    size_t hl;
    if (loopback && host) {
        host_part(host, &h, &hl);
        if (!names_this_machine(h, hl) && !listed(allowed_hosts, h, hl)) {
            snprintf(why, n, "this server listens on this machine only and is not '%.*s' (Host header): "
                     "a name only a reverse proxy or a page's own DNS gives it is refused; "
                     "--allowed-host NAME takes one", (int)(hl > 200 ? 200 : hl), h);
            return -1;
        }
    }
    if (!origin)
        return 0;
    /* the origin's host and port are the Host header's: the server's own page */
    const char *sep = strstr(origin, "://");
    const char *o_host = sep ? sep + 3 : NULL;
    if (o_host && host && !strchr(o_host, '/') && !strcasecmp(o_host, host))
        return 0;
    if (o_host && !strchr(o_host, '/') && allowed_hosts && strcmp(allowed_hosts, "*")) {
        host_part(o_host, &h, &hl);
        if (listed(allowed_hosts, h, hl))
            return 0;       /* a page the reverse proxy serves under the allowed name */
    }
    if (strcmp(origin, "null") && listed(allowed_origins, origin, strlen(origin))) {
        *cors = 1;
        return 0;
    }
    snprintf(why, n, "a web page from '%.200s' may not use this server (its requests are the page's, "
             "not yours); --allowed-origin ORIGIN lets one", origin);
    return -1;
}
