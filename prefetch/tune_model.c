/* tune_model: see tune_model.h. */
#include "tune_model.h"

#include "prefetch/cache_sim.h"

static double per_token(double v, int tokens)
{
    return v / (tokens > 0 ? tokens : 1);
}

tune_calibration tune_calibrate(const tune_sample *small, const tune_sample *large)
{
    tune_calibration c;
    double m_lo = per_token((double)small->misses, small->tokens);
    double m_hi = per_token((double)large->misses, large->tokens);
    double t_lo = per_token(small->decode_s, small->tokens);
    double t_hi = per_token(large->decode_s, large->tokens);
    if (m_lo - m_hi > 0.05 * (m_lo > 1 ? m_lo : 1) && t_lo > t_hi)
        c.stall_per_miss_s = (t_lo - t_hi) / (m_lo - m_hi);
    else
        c.stall_per_miss_s = small->misses ? small->stall_s / (double)small->misses : 0;
    c.compute_s = t_hi - m_hi * c.stall_per_miss_s;
    if (!(c.compute_s > 0)) {
        /* the line reaches zero misses below zero time (noise in short runs,
         * or a wait that grows faster than the misses): the measured waits
         * stand in, the large run's time less its own wait as the compute */
        c.stall_per_miss_s = small->misses ? small->stall_s / (double)small->misses : 0;
        c.compute_s = t_hi - per_token(large->stall_s, large->tokens);
        if (!(c.compute_s > 0))
            c.compute_s = t_hi;
    }
    return c;
}

uint64_t tune_trace_tokens(const routing_trace *t)
{
    if (!t->n)
        return 0;
    uint64_t n = 0;
    for (uint64_t i = 0; i < t->n; i++)
        n += t->layer[i] == t->layer[0];
    return n;
}

int tune_predict(const routing_trace *t, const char *policy, const tune_calibration *c,
                 int n_blobs, tune_point *pts, int n, errbuf *e)
{
    uint64_t tokens = tune_trace_tokens(t);
    if (!tokens)
        return err_set(e, "the trace has no events");
    if (!(c->compute_s > 0))
        return err_set(e, "the calibration runs measured no decode time");
    for (int i = 0; i < n; i++) {
        sim_result r;
        if (sim_replay(t, policy, pts[i].slots, 1, SIM_HITS_FIRST, 1, &r, e))
            return -1;
        if (pts[i].slots >= n_blobs) {   /* filled at start */
            r.hits += r.misses;
            r.misses = 0;
        }
        pts[i].hit_rate = sim_hit_rate(&r);
        pts[i].misses_per_token = (double)r.misses / (double)tokens;
        double s = c->compute_s + pts[i].misses_per_token * c->stall_per_miss_s;
        pts[i].tokens_per_s = s > 0 ? 1.0 / s : 0;
    }
    return 0;
}

int tune_recommend(const tune_point *pts, int n, int max_slots, double within)
{
    double best = 0;
    for (int i = 0; i < n; i++)
        if (pts[i].slots <= max_slots && pts[i].tokens_per_s > best)
            best = pts[i].tokens_per_s;
    int pick = -1;
    for (int i = 0; i < n; i++)
        if (pts[i].slots <= max_slots && pts[i].tokens_per_s >= best * (1 - within) &&
            (pick < 0 || pts[i].slots < pts[pick].slots))
            pick = i;
    return pick;
}
