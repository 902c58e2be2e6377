/* request_origin: which browsers' requests the server answers.
 *
 * A web page the user has open may send requests to the server on this
 * machine: a POST whose JSON goes as text/plain needs no leave from the
 * server (cross-site request forgery: a page starts generations), and a
 * name of the page's own that it makes resolve to 127.0.0.1 (DNS
 * rebinding) makes the server's answers the page's to read. So:
 *   - a request with an Origin header (browsers send one on every
 *     cross-origin POST and fetch) is served only when that origin is the
 *     server's own (its host and port those of the Host header) or one the
 *     operator allowed (--allowed-origin); "null" is no origin of ours;
 *   - bound to this machine only (a loopback address), a request must name
 *     the server by such an address or localhost in its Host header, or by a
 *     name the operator allowed (--allowed-host: a reverse proxy's name, say).
 *     Bound for the network, any name is taken (the names a LAN calls a
 *     machine cannot be known): there --api-key is what keeps pages out.
 * Clients that are not browsers (curl, the SDKs) send no Origin and name the
 * address they connect to, so they pass. An allowed cross-origin request is
 * answered with CORS headers, its preflight (OPTIONS) too. */
#ifndef MOETIER_REQUEST_ORIGIN_H
#define MOETIER_REQUEST_ORIGIN_H

#include <stddef.h>

/* 0 when the request may be served; -1 with why (a sentence for the client)
 * otherwise. loopback: the server listens on a loopback address only (as
 * bound, whatever --host spelled); host, origin: the request's headers (NULL
 * when absent); allowed_hosts, allowed_origins: comma-separated lists ("*":
 * any; NULL: none). A page from an allowed host's name (any scheme and port:
 * the reverse proxy's) counts as the server's own. *cors is 1 when the request
 * is an allowed cross-origin one (its answer carries the CORS headers). */
int request_origin_check(int loopback, const char *host, const char *origin, const char *allowed_hosts,
                         const char *allowed_origins, int *cors, char *why, size_t n);

/* 1 when the socket address is a loopback one (127/8, ::1, ::ffff:127/104). */
struct sockaddr;
int request_origin_loopback(const struct sockaddr *a);

#endif
