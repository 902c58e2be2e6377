/* tune_plot: the SVG of `moetier tune`: predicted tokens/s (left axis) and hit
 * rate (right axis) against the DRAM tier's size, the recommended point marked,
 * and the measured speed there when it was checked. */
#ifndef MOETIER_TUNE_PLOT_H
#define MOETIER_TUNE_PLOT_H

#include "core/base/errbuf.h"
#include "prefetch/tune_model.h"

/* recommended: index into pts or -1; measured_tps <= 0: not measured */
/* In the plot's first lines: tune replaces a plot of its own at its default
 * name, nothing else. */
#define TUNE_PLOT_MARK "<!-- moetier tune -->"

int tune_write_svg(const char *path, const char *title, const tune_point *pts, int n,
                   int recommended, double measured_tps, errbuf *e);

#endif
