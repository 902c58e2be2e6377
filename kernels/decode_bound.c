/* decode_bound: see decode_bound.h. */
#include "decode_bound.h"

#include <string.h>

int decode_bound_compute(const hybrid_rates *r, const decode_work *w, decode_bound *b)
{
    memset(b, 0, sizeof *b);
    if (!w->tokens || w->seconds <= 0 || r->gpu <= 0 || r->copy_pinned <= 0 ||
        (w->cpu_experts && r->cpu_row + r->cpu_token <= 0))
        return -1;
    double n = (double)w->tokens;
    b->gpu = ((double)w->resident_bytes +
              ((double)w->gpu_experts * (double)w->expert_bytes + (double)w->kv_bytes) / n) /
             r->gpu;
    b->cpu = (double)w->cpu_experts / n * (double)w->expert_weights * (r->cpu_row + r->cpu_token);
    b->copy = (double)w->bytes_copied / n / r->copy_pinned;
    b->bound = b->gpu > b->cpu ? b->gpu : b->cpu;
    b->bound = b->copy > b->bound ? b->copy : b->bound;
    b->measured = w->seconds / n;
    b->fraction = b->bound / b->measured;
    return 0;
}
