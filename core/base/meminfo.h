/* meminfo: this machine's memory, from /proc/meminfo, for the plans and
 * benchmarks that must fit in it. */
#ifndef MOETIER_MEMINFO_H
#define MOETIER_MEMINFO_H

#include <stdint.h>

/* MemTotal and MemAvailable in bytes (0 when unknown). $MOETIER_MEMINFO (a
 * file in /proc/meminfo's format) stands in for this machine's: for the tests
 * of budgets larger than the machine. */
void meminfo_read(uint64_t *total, uint64_t *avail);

#endif
