/* tune_plot: the SVG of `moetier tune`: predicted tokens/s (left axis) and hit
 * rate (right axis) against the DRAM tier's size, the recommended point marked,
 * and the measured speed there when it was checked. */
#ifndef MOETIER_TUNE_PLOT_H
#define MOETIER_TUNE_PLOT_H

#include "core/base/errbuf.h"
#include "prefetch/tune_model.h"

/* recommended: index into pts or -1; measured_tps <= 0: not measured */
int tune_write_svg(const char *path, const char *title, const tune_point *pts, int n,
                   int recommended, double measured_tps, errbuf *e);

#endif
