/* cpu_backend: the backend interface implemented on the CPU in float32.
 *
 * Today every operation runs the scalar reference kernels; the AVX-512/AVX2
 * kernels and the thread pool slot in behind the same table. */
#ifndef MOETIER_CPU_BACKEND_H
#define MOETIER_CPU_BACKEND_H

#include "core/base/errbuf.h"
#include "core/engine/backend.h"

/* Largest T for which attention uses the absorbed (decode) form. */
#define CPU_ABSORB_MAX_T 4

int cpu_backend_create(backend *b, errbuf *e);

#endif
