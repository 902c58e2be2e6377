/* meminfo: see meminfo.h. */
#include "meminfo.h"

#include <stdio.h>
#include <stdlib.h>

void meminfo_read(uint64_t *total, uint64_t *avail)
{
    *total = *avail = 0;
    const char *path = getenv("MOETIER_MEMINFO");
    FILE *f = fopen(path && *path ? path : "/proc/meminfo", "r");
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
}
