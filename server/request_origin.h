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
 *   - bound to this machine only (127.x, ::1, localhost), a request must name
 *     the server by such an address in its Host header, or by a name the
 *     operator allowed (--allowed-host: a reverse proxy's name, say).
 * Clients that are not browsers (curl, the SDKs) send no Origin and name the
 * address they connect to, so they pass. An allowed cross-origin request is
 * answered with CORS headers, its preflight (OPTIONS) too. */
#ifndef MOETIER_REQUEST_ORIGIN_H
#define MOETIER_REQUEST_ORIGIN_H

#include <stddef.h>

/* 0 when the request may be served; -1 with why (a sentence for the client)
 * otherwise. bind_host: the address the server listens on; host, origin: the
 * request's headers (NULL when absent); allowed_hosts, allowed_origins:
 * comma-separated lists ("*": any; NULL: none). *cors is 1 when the request
 * is an allowed cross-origin one (its answer carries the CORS headers). */
int request_origin_check(const char *bind_host, const char *host, const char *origin, const char *allowed_hosts,
                         const char *allowed_origins, int *cors, char *why, size_t n);

#endif
