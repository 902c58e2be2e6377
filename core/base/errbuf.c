/* errbuf: formatting of error reasons (see errbuf.h). */
#include "errbuf.h"

#include <stdio.h>
#include <string.h>

int err_set(errbuf *e, const char *fmt, ...)
{
    if (!e)
        return -1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
    return -1;
}

int err_prefix(errbuf *e, const char *fmt, ...)
{
    if (!e)
        return -1;
    char head[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(head, sizeof head, fmt, ap);
    va_end(ap);
    char old[sizeof e->msg];
    memcpy(old, e->msg, sizeof old);
    snprintf(e->msg, sizeof e->msg, "%s%s", head, old);
    return -1;
}
