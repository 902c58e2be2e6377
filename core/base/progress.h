/* progress: progress reports for long work (synth, convert, load).
 *
 * On a terminal it redraws one line with percent, rate and ETA; otherwise it
 * prints a plain line at most every few seconds so logs stay readable. */
#ifndef MOETIER_PROGRESS_H
#define MOETIER_PROGRESS_H

#include <stdint.h>
#include <stdio.h>

typedef struct progress {
    FILE *out;          /* NULL: silent */
    const char *what;
    uint64_t total;     /* units, e.g. bytes */
    uint64_t done;
    double t_start;
    double t_last;
    int tty;
} progress;

double now_seconds(void);
void progress_begin(progress *p, FILE *out, const char *what, uint64_t total);
void progress_advance(progress *p, uint64_t units);
/* The work done: its last line at 100 %. */
void progress_end(progress *p);
/* The work given up: its last line where it stopped. */
void progress_stop(progress *p);

#endif
