/* backend_profile: where a run's time went (`--profile`), by part of the model.
 *
 * Attached to a backend, it puts a table of its own in front of the backend's
 * operations: each call is timed and counted, with the bytes of weights (and
 * of the latent cache) it read, under the part of the model it computes
 * (attention projections, attention, router, dense FFN, shared and routed
 * experts, lm_head, the rest), apart for prefill and decode steps. The part of
 * a product is told by the weight it is given: the model's own weights by
 * their place in model_weights, anything else an expert from the tiers.
 *
 * The times are the calls' wall times on the engine's thread, which is what
 * they cost where operations finish before they return: the CPU backend. A
 * device backend queues its work and returns; with its finish operation each
 * call is timed from the end of the work before it to the end of its own, so
 * the device runs one operation at a time and the host waits for each: the
 * parts' times are theirs, but a profiled run takes longer than one without
 * (launches and copies no longer overlap other work). A backend without
 * finish is refused. The numbers do not change: the same operations run, in
 * the same order. */
#ifndef MOETIER_BACKEND_PROFILE_H
#define MOETIER_BACKEND_PROFILE_H

#include <stdio.h>

#include "backend.h"
#include "core/model/model_weights.h"
#include "engine.h"

typedef struct backend_profile backend_profile;

/* the parts of the model, and what each has taken so far in one phase */
#define PROFILE_PARTS 8
extern const char *const profile_part_names[PROFILE_PARTS];
typedef struct profile_part {
    unsigned long long calls;
    double seconds;
    double bytes;               /* weights and latent cache read */
} profile_part;

/* Times en's backend from now on; -1 with e set on a backend that does not
 * finish its operations before they return, or out of memory. */
int backend_profile_attach(engine *en, const model_weights *mw, backend_profile **out, errbuf *e);
/* The tables of prefill and decode (those that ran), against the engine's own
 * time for them. */
void backend_profile_print(const backend_profile *p, FILE *f);
/* The totals so far, [0] prefill and [1] decode, per part (the engine's
 * thread: the one that runs the operations). */
void backend_profile_snapshot(const backend_profile *p, profile_part out[2][PROFILE_PARTS]);
/* Gives the backend its own operations back and frees p. */
void backend_profile_detach(backend_profile *p);

#endif
