/* gpu_probe: is there a CUDA device this build can use?
 *
 * Compile-time choice of implementation: gpu_probe.cu in CUDA builds,
 * gpu_probe_none.c otherwise. The engine and `inspect` use it to say plainly
 * where the work runs. */
#ifndef MOETIER_GPU_PROBE_H
#define MOETIER_GPU_PROBE_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Number of usable CUDA devices (0 when none or no CUDA build); desc gets a
 * one-line description: each device by its number ("2 device(s); 0: NAME,
 * sm_90, 79.6 GB; 1: ..."), or why there is none. */
int gpu_probe(char *desc, size_t n);

/* desc gets "device N: NAME, sm_90, 79.6 GB" and 0 is returned when device N
 * is usable; otherwise -1, and desc says why not (no CUDA build, no devices,
 * no device of that number). */
int gpu_describe(int device, char *desc, size_t n);

#ifdef __cplusplus
}
#endif

#endif
