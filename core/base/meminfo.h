/* meminfo: this machine's memory, from /proc/meminfo and the memory cgroup
 * this process runs in (a container's limit, cgroup v2 or v1), for the plans
 * and benchmarks that must fit in it. */
#ifndef MOETIER_MEMINFO_H
#define MOETIER_MEMINFO_H

#include <stdint.h>

/* MemTotal and MemAvailable in bytes (0 when unknown), each at most what the
 * cgroups this process is in allow: their least limit, and the least of each
 * one's limit less its usage (its page cache that may be dropped not
 * counted). $MOETIER_MEMINFO (a file in /proc/meminfo's format) stands in for
 * this machine's, without the cgroups, for the tests of budgets larger than
 * the machine; $MOETIER_CGROUP (a directory with memory.max and
 * memory.current, or v1's files) for the cgroups. */
void meminfo_read(uint64_t *total, uint64_t *avail);

#endif
