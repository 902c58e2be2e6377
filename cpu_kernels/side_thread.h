/* side_thread: one persistent thread that runs a function while its owner does
 * something else (the CUDA backend's CPU experts while it queues the GPU's
 * copies and kernels: a copy from pageable memory holds the calling thread
 * until the driver has staged it). One function at a time: start, then wait. */
#ifndef MOETIER_SIDE_THREAD_H
#define MOETIER_SIDE_THREAD_H

#include "core/base/errbuf.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct side_thread side_thread;

int side_thread_create(side_thread **out, errbuf *e);
/* fn(ctx) begins on the thread; the previous one must have been waited for */
void side_thread_start(side_thread *s, void (*fn)(void *), void *ctx);
/* returns when fn has returned */
void side_thread_wait(side_thread *s);
void side_thread_destroy(side_thread *s);

#ifdef __cplusplus
}
#endif

#endif
