/* bench_kernels: `moetier bench kernels --json` as a standalone program for
 * `make bench` (see cpu_kernels/kernel_bench.h); arguments: none. */
#include <stdio.h>

#include "cpu_kernels/kernel_bench.h"

int main(void)
{
    kernel_bench_options o;
    kernel_bench_defaults(&o);
    o.json = 1;
    errbuf e;
    if (kernel_bench_run(&o, &e)) {
        fprintf(stderr, "bench_kernels: %s\n", e.msg);
        return 1;
    }
    return 0;
}
