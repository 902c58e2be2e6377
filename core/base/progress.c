/* progress: see progress.h. */
#include "progress.h"

#include <time.h>
#include <unistd.h>

double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void progress_begin(progress *p, FILE *out, const char *what, uint64_t total)
{
    p->out = out;
    p->what = what;
    p->total = total ? total : 1;
    p->done = 0;
    p->t_start = p->t_last = now_seconds();
    p->tty = out ? isatty(fileno(out)) : 0;
}

static void progress_print(progress *p, int final)
{
    double t = now_seconds();
    double el = t - p->t_start;
    double frac = (double)p->done / (double)p->total;
    double eta = frac > 0 ? el / frac - el : 0;
    double mb = (double)p->done / 1e6;
    if (p->tty)
        fprintf(p->out, "\r%s: %5.1f%%  %.1f MB  %.1f MB/s  ETA %.0fs   %s", p->what, 100 * frac, mb,
                el > 0 ? mb / el : 0, final ? 0.0 : eta, final ? "\n" : "");
    else
        fprintf(p->out, "%s: %5.1f%%  %.1f MB  %.1f s elapsed  ETA %.0f s\n", p->what, 100 * frac, mb,
                el, final ? 0.0 : eta);
    fflush(p->out);
    p->t_last = t;
}

void progress_advance(progress *p, uint64_t units)
{
    p->done += units;
    if (!p->out)
        return;
    double t = now_seconds();
    if (t - p->t_last >= (p->tty ? 0.2 : 5.0))
        progress_print(p, 0);
}

void progress_stop(progress *p)
{
    if (p->out && (p->tty || now_seconds() - p->t_start > 1.0))
        progress_print(p, 1);
}

void progress_end(progress *p)
{
    p->done = p->total;
    progress_stop(p);
}
