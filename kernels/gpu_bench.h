/* gpu_bench: host-to-device copy speed of expert-sized buffers, the yardstick
 * of the VRAM tier: a copy from pinned memory (what the tier aims at) against
 * one from ordinary pageable memory (what the backend does today), measured in
 * the same run (`moetier bench gpu`). */
#ifndef MOETIER_GPU_BENCH_H
#define MOETIER_GPU_BENCH_H

#include <stdint.h>

#include "core/base/errbuf.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct gpu_copy_result {
    uint64_t bytes;
    int copies;
    double pinned_gbps, pageable_gbps;
} gpu_copy_result;

/* Copies `bytes` host -> device repeatedly for about `seconds` from each kind
 * of memory. */
int gpu_bench_copy(int device, uint64_t bytes, double seconds, gpu_copy_result *r, errbuf *e);

#ifdef __cplusplus
}
#endif

#endif
