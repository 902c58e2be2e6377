/* meminfo: see meminfo.h. */
#include "meminfo.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The number in the file at dir/name ("max": none), 0 when read. */
static int read_number(const char *dir, const char *name, uint64_t *v)
{
    char path[4400], text[64];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    int ok = fgets(text, sizeof text, f) != NULL;
    fclose(f);
    unsigned long long n;
    if (ok && !strncmp(text, "max", 3))
        *v = UINT64_MAX;
    else if (ok && sscanf(text, "%llu", &n) == 1)
        *v = n;
    else
        return -1;
    return 0;
}

/* The page cache a cgroup may drop (its inactive file pages), from memory.stat. */
static uint64_t inactive_file(const char *dir)
{
    char path[4400], line[256];
    snprintf(path, sizeof path, "%s/memory.stat", dir);
    FILE *f = fopen(path, "r");
    unsigned long long n, found = 0;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "total_inactive_file %llu", &n) == 1 || sscanf(line, "inactive_file %llu", &n) == 1)
            found = n;      /* (v1's total_ line, which counts its children too, comes last) */
    if (f)
        fclose(f);
    return found;
}

/* A cgroup's memory limit at dir and what it leaves (the limit less its usage,
 * the page cache it may drop not counted), v2's files or v1's; limits past
 * 2^62 are v1's "none". */
static void cgroup_dir(const char *dir, uint64_t *limit, uint64_t *left)
{
    uint64_t lim, used;
    if (read_number(dir, "memory.max", &lim) && read_number(dir, "memory.limit_in_bytes", &lim))
        return;
    if (lim >= (1ull << 62))
        return;
    if (read_number(dir, "memory.current", &used) && read_number(dir, "memory.usage_in_bytes", &used))
        used = 0;
    uint64_t cache = inactive_file(dir);
    used = used > cache ? used - cache : 0;
    if (lim < *limit)
        *limit = lim;
    if ((lim > used ? lim - used : 0) < *left)
        *left = lim > used ? lim - used : 0;
}

/* The memory cgroup this process is in, and every one above it: the least
 * limit and the least left. $MOETIER_CGROUP names one directory instead. */
static void cgroup_memory(uint64_t *limit, uint64_t *left)
{
    *limit = *left = UINT64_MAX;
    const char *fake = getenv("MOETIER_CGROUP");
    if (fake && *fake) {
        cgroup_dir(fake, limit, left);
        return;
    }
    FILE *f = fopen("/proc/self/cgroup", "r");
    if (!f)
        return;
    char line[4096];
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = 0;
        /* "0::/path" (v2) or "N:memory,...:/path" (v1) */
        char *ctrl = strchr(line, ':'), *path = ctrl ? strchr(ctrl + 1, ':') : NULL;
        if (!path)
            continue;
        *path++ = 0;
        ctrl++;
        const char *base = NULL;
        if (!*ctrl)
            base = "/sys/fs/cgroup";
        else if (!strcmp(ctrl, "memory") || strstr(ctrl, "memory,") || strstr(ctrl, ",memory"))
            base = "/sys/fs/cgroup/memory";
        if (!base)
            continue;
        /* from this process's cgroup up to the mount's root (which, in a
         * container, may be the container's own) */
        for (;;) {
            char dir[4400];
            snprintf(dir, sizeof dir, "%s%s", base, strcmp(path, "/") ? path : "");
            cgroup_dir(dir, limit, left);
            char *slash = strrchr(path, '/');
            if (!slash || slash == path)
                break;
            *slash = 0;
        }
        if (strcmp(path, "/"))
            cgroup_dir(base, limit, left);
    }
    fclose(f);
}

void meminfo_read(uint64_t *total, uint64_t *avail)
{
    *total = *avail = 0;
    const char *path = getenv("MOETIER_MEMINFO");
    int faked = path && *path;
    FILE *f = fopen(faked ? path : "/proc/meminfo", "r");
    if (!f)
        return;
    char line[256];
    unsigned long long kb;
    while (fgets(line, sizeof line, f)) {
        if (sscanf(line, "MemTotal: %llu kB", &kb) == 1)
            *total = kb * 1024ull;
        else if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1)
            *avail = kb * 1024ull;
    }
    fclose(f);
    if (faked && !getenv("MOETIER_CGROUP"))
        return;
    /* a container's limit is this process's machine */
    uint64_t limit, left;
    cgroup_memory(&limit, &left);
    if (limit < *total)
        *total = limit;
    if (left < *avail)
        *avail = left;
}
