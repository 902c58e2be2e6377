/* tune_plot: see tune_plot.h. A hand-written SVG: two polylines over a shared
 * x axis (GB, linear), grid lines with labels, a legend. */
#include "tune_plot.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/base/fileutil.h"
#include "core/text/utf8.h"

#define W 720
#define H 420
#define L 70    /* plot area margins */
#define R 70
#define T 50
#define B 60

static double px(double gb, double max_gb)
{
    return L + (W - L - R) * (max_gb > 0 ? gb / max_gb : 0);
}

static double py(double v, double max_v)
{
    return T + (H - T - B) * (1 - (max_v > 0 ? v / max_v : 0));
}

/* XML-escaped text (the title holds a path) */
/* Text as XML allows it: escaped markup, valid UTF-8 (U+FFFD for the rest),
 * no control characters (a path may hold any byte) */
static void put_text(FILE *f, const char *text)
{
    char *clean = utf8_clean(text, strlen(text));
    for (const char *s = clean ? clean : ""; *s; s++) {
        if (*s == '<')
            fputs("&lt;", f);
        else if (*s == '>')
            fputs("&gt;", f);
        else if (*s == '&')
            fputs("&amp;", f);
        else if ((unsigned char)*s < 0x20)
            fputc(' ', f);
        else
            fputc(*s, f);
    }
    free(clean);
}

int tune_write_svg(const char *path, const char *title, const tune_point *pts, int n,
                   int recommended, double measured_tps, errbuf *e)
{
    file_output o;      /* a failure part way leaves an earlier plot whole */
    int fd = file_output_open(&o, path, e);
    FILE *f = fd < 0 ? NULL : fdopen(fd, "w");
    if (fd < 0)
        return err_prefix(e, "cannot write the plot: ");
    if (!f) {
        err_set(e, "cannot write the plot %s: %s", path, strerror(errno));
        close(fd);
        file_output_abort(&o);
        return -1;
    }
    double max_gb = 0, max_tps = measured_tps > 0 ? measured_tps : 0;
    for (int i = 0; i < n; i++) {
        if (pts[i].gb > max_gb)
            max_gb = pts[i].gb;
        if (pts[i].tokens_per_s > max_tps)
            max_tps = pts[i].tokens_per_s;
    }
    max_tps *= 1.1;
    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
               "font-family=\"sans-serif\" font-size=\"12\">\n" TUNE_PLOT_MARK "\n", W, H);
    fprintf(f, "<rect width=\"%d\" height=\"%d\" fill=\"white\"/>\n<text x=\"%d\" y=\"24\" "
               "font-size=\"15\">", W, H, L);
    put_text(f, title);
    fputs("</text>\n", f);
    for (int k = 0; k <= 5; k++) {   /* grid and both y axes */
        double y = py(k / 5.0, 1);
        fprintf(f, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" stroke=\"#ddd\"/>\n", L, y,
                W - R, y);
        fprintf(f, "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\" fill=\"#1f5fbf\">%.3g</text>\n",
                L - 6, y + 4, max_tps * k / 5);
        fprintf(f, "<text x=\"%d\" y=\"%.1f\" fill=\"#c0392b\">%d%%</text>\n", W - R + 6, y + 4,
                20 * k);
    }
    for (int k = 0; k <= 5; k++) {
        double x = px(max_gb * k / 5, max_gb);
        fprintf(f, "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">%.3g</text>\n", x, H - B + 18,
                max_gb * k / 5);
    }
    fprintf(f, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">DRAM tier size (GB)</text>\n",
            (L + W - R) / 2, H - 18);
    fprintf(f, "<text x=\"16\" y=\"%d\" fill=\"#1f5fbf\" transform=\"rotate(-90 16 %d)\" "
               "text-anchor=\"middle\">predicted decode tokens/s</text>\n", H / 2, H / 2);
    fprintf(f, "<text x=\"%d\" y=\"%d\" fill=\"#c0392b\" transform=\"rotate(90 %d %d)\" "
               "text-anchor=\"middle\">DRAM hit rate</text>\n", W - 16, H / 2, W - 16, H / 2);
    fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"none\" stroke=\"#333\"/>\n",
            L, T, W - L - R, H - T - B);
    const char *colors[2] = {"#1f5fbf", "#c0392b"};
    for (int s = 0; s < 2; s++) {
        fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\" points=\"", colors[s]);
        for (int i = 0; i < n; i++)
            fprintf(f, "%.1f,%.1f ", px(pts[i].gb, max_gb),
                    s ? py(pts[i].hit_rate, 1) : py(pts[i].tokens_per_s, max_tps));
        fputs("\"/>\n", f);
        for (int i = 0; i < n; i++)
            fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"%s\"/>\n",
                    px(pts[i].gb, max_gb),
                    s ? py(pts[i].hit_rate, 1) : py(pts[i].tokens_per_s, max_tps), colors[s]);
    }
    if (recommended >= 0 && recommended < n) {
        double x = px(pts[recommended].gb, max_gb);
        fprintf(f, "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" stroke=\"#2e7d32\" "
                   "stroke-dasharray=\"5,4\"/>\n", x, T, x, H - B);
        fprintf(f, "<text x=\"%.1f\" y=\"%d\" fill=\"#2e7d32\">recommended %.3g GB</text>\n",
                x + 4, T + 14, pts[recommended].gb);
        if (measured_tps > 0)
            fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"8\" height=\"8\" fill=\"#2e7d32\"/>"
                       "<text x=\"%.1f\" y=\"%.1f\" fill=\"#2e7d32\">measured %.3g tok/s</text>\n",
                    x - 4, py(measured_tps, max_tps) - 4, x + 8, py(measured_tps, max_tps) + 16,
                    measured_tps);
    }
    fprintf(f, "<text x=\"%d\" y=\"%d\" fill=\"#1f5fbf\">— predicted tokens/s</text>\n", L + 10,
            T + 16);
    fprintf(f, "<text x=\"%d\" y=\"%d\" fill=\"#c0392b\">— hit rate</text>\n", L + 10, T + 32);
    fputs("</svg>\n", f);
    int rc = 0;
    if (fflush(f) != 0 || ferror(f)) {
        rc = err_set(e, "cannot write the plot %s: %s", path, strerror(errno));
        file_output_abort(&o);
    } else if (file_output_commit(&o, fileno(f), e)) {
        rc = err_prefix(e, "cannot write the plot: ");
    }
    fclose(f);
    return rc;
}
