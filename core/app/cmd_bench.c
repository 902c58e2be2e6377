/* cmd_bench: `moetier bench kernels [--json] [options]`: the CPU expert-kernel
 * benchmark (cpu_kernels/kernel_bench.h); `moetier bench gpu`: host-to-device
 * copies of expert-sized buffers, and with --overlap one hybrid batch timed
 * three ways (kernels/gpu_bench.h); --json prints one
 * object per line. */
#include <stdlib.h>
#include <string.h>

#include "cli_common.h"
#include "commands.h"
#include "cpu_kernels/kernel_bench.h"
#include "kernels/gpu_bench.h"
#include "kernels/gpu_probe.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: moetier bench kernels [--json] [--kernels PATH] [-t LIST] [--tokens LIST]\n"
               "                             [--formats LIST] [--seconds S] [--set-gb G] [--twin]\n"
               "  Times the expert FFN at Kimi K2 shapes (7168 -> 2048 -> 7168) per format,\n"
               "  thread count and token count, against the read bandwidth and FMA peak\n"
               "  measured in the same run.\n"
               "  --json          one JSON object per line (format, threads, tokens, gbps, gflops,\n"
               "                  read_bw_gbps, ratio = gbps / read_bw_gbps, peak_gflops, ...)\n"
               "  --kernels PATH  scalar, avx2 or avx512 (default: the fastest here)\n"
               "  -t LIST         thread counts, e.g. 1,2 (default 1,2)\n"
               "  --tokens LIST   tokens per expert call (default 1,4,256; <= 4 runs the k2\n"
               "                  layer of 8 random experts, more runs one expert)\n"
               "  --formats LIST  int4,fp8,bf16 (default all)\n"
               "  --seconds S     time per measurement (default 1)\n"
               "  --set-gb G      GB of distinct experts per format (default 1.5)\n"
               "  --twin          time the GPU backend's CPU twin instead (the hybrid path's\n"
               "                  CPU side, the GPU's bits; JSON \"kernels\": \"twin\")\n"
               "usage: moetier bench gpu [--json] [--mb LIST] [--seconds S]\n"
               "  Copies expert-sized buffers to the GPU from pinned and from pageable host\n"
               "  memory (default: a Kimi K2 expert in INT4, FP8 and BF16: 25,44,88 MB).\n"
               "  --json          one JSON object per line (bench, device, bytes, copies,\n"
               "                  pinned_gbps, pageable_gbps, ratio = pageable / pinned)\n"
               "usage: moetier bench gpu --overlap [--json] [--shape H,I] [--experts K,M] [-t N]\n"
               "  One hybrid batch of INT4 experts (default K2's 7168 x 2048): K in VRAM on the\n"
               "  GPU and M missed ones on the CPU (default 6,2), timed alone and together;\n"
               "  overlap = (gpu + cpu - both) / min(gpu, cpu), 1 when the shorter side is\n"
               "  hidden. Also the M experts copied from registered memory by the backend\n"
               "  against plain copies from pinned memory (blob_ratio; the target is >= 0.9).\n");
}

static int parse_list(const char *flag, const char *s, int *out, int *n, int max)
{
    *n = 0;
    char *copy = strdup(s), *save = NULL;
    for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        int v;
        if (*n >= max || cli_int(flag, t, 1, 100000, &v)) {
            free(copy);
            if (*n >= max)
                fprintf(stderr, "moetier: %s takes at most %d values\n", flag, max);
            return -1;
        }
        out[(*n)++] = v;
    }
    free(copy);
    if (*n == 0) {
        fprintf(stderr, "moetier: %s is empty\n", flag);
        return -1;
    }
    return 0;
}

/* exactly two values */
static int parse_pair(const char *flag, const char *s, int *out, const char *what)
{
    int n;
    if (parse_list(flag, s, out, &n, 2))
        return -1;
    if (n != 2) {
        fprintf(stderr, "moetier: %s expects %s\n", flag, what);
        return -1;
    }
    return 0;
}

/* the device's description, or a message that there is none */
static int gpu_present(char *device, size_t n)
{
    if (gpu_probe(device, n) > 0)
        return 1;
    fprintf(stderr, "moetier bench gpu: no GPU to measure (%s)\n", device);
    return 0;
}

static int bench_overlap(int argc, char **argv)
{
    int shape[2] = {7168, 2048}, experts[2] = {6, 2}, threads = 0, json = 0;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i], *v;
        if (!strcmp(a, "--overlap")) {
        } else if (!strcmp(a, "--json")) {
            json = 1;
        } else if (!strcmp(a, "--shape")) {
            if (!(v = cli_value(argc, argv, &i)) || parse_pair(a, v, shape, "HIDDEN,INTER"))
                return 2;
        } else if (!strcmp(a, "--experts")) {
            if (!(v = cli_value(argc, argv, &i)) ||
                parse_pair(a, v, experts, "K,M (in VRAM, on the CPU)"))
                return 2;
        } else if (!strcmp(a, "-t")) {
            if (!(v = cli_value(argc, argv, &i)) || cli_int(a, v, 1, 4096, &threads))
                return 2;
        } else {
            fprintf(stderr, "moetier bench gpu --overlap: unknown option '%s'\n", a);
            usage(stderr);
            return 2;
        }
    }
    char device[256];
    if (!gpu_present(device, sizeof device))
        return 1;
    gpu_overlap_result r;
    errbuf e;
    if (gpu_bench_overlap(0, shape[0], shape[1], experts[0], experts[1], threads, 5, &r, &e))
        return cli_fail(&e);
    double blob_ratio = r.blob_gbps / r.pinned_gbps;
    if (json)
        printf("{\"bench\": \"gpu_overlap\", \"device\": \"%s\", \"hidden\": %d, \"inter\": %d, "
               "\"gpu_experts\": %d, \"cpu_experts\": %d, \"expert_bytes\": %llu, \"gpu_ms\": %.6f, "
               "\"cpu_ms\": %.6f, \"both_ms\": %.6f, \"overlap\": %.4f, \"copy_ms\": %.6f, "
               "\"blob_gbps\": %.3f, \"pinned_gbps\": %.3f, \"blob_ratio\": %.4f}\n", device,
               r.hidden, r.inter, r.gpu_experts, r.cpu_experts, (unsigned long long)r.expert_bytes,
               r.gpu_s * 1e3, r.cpu_s * 1e3, r.both_s * 1e3, r.overlap, r.copy_s * 1e3, r.blob_gbps,
               r.pinned_gbps, blob_ratio);
    else
        printf("%s\n%d x %d INT4 experts (%.1f MB): %d in VRAM %.3f ms, %d on the CPU %.3f ms, "
               "both %.3f ms: overlap %.2f\n%d copied from registered memory %.3f ms: %.2f GB/s, "
               "pinned copies %.2f GB/s, ratio %.3f\n", device, r.hidden, r.inter,
               r.expert_bytes / 1e6, r.gpu_experts, r.gpu_s * 1e3, r.cpu_experts, r.cpu_s * 1e3,
               r.both_s * 1e3, r.overlap, r.cpu_experts, r.copy_s * 1e3, r.blob_gbps, r.pinned_gbps,
               blob_ratio);
    return 0;
}

static int bench_gpu(int argc, char **argv)
{
    int mb[8] = {25, 44, 88}, n_mb = 3, json = 0;
    float seconds = 1;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i], *v;
        if (!strcmp(a, "--json")) {
            json = 1;
        } else if (!strcmp(a, "--mb")) {
            if (!(v = cli_value(argc, argv, &i)) || parse_list(a, v, mb, &n_mb, 8))
                return 2;
        } else if (!strcmp(a, "--seconds")) {
            if (!(v = cli_value(argc, argv, &i)) || cli_float(a, v, &seconds))
                return 2;
            if (seconds <= 0) {
                fprintf(stderr, "moetier: --seconds must be positive\n");
                return 2;
            }
        } else {
            fprintf(stderr, "moetier bench gpu: unknown option '%s'\n", a);
            usage(stderr);
            return 2;
        }
    }
    char device[256];
    if (!gpu_present(device, sizeof device))
        return 1;
    if (!json)
        printf("%s\n%10s %7s %12s %14s %7s\n", device, "MB", "copies", "pinned GB/s",
               "pageable GB/s", "ratio");
    for (int k = 0; k < n_mb; k++) {
        gpu_copy_result r;
        errbuf e;
        if (gpu_bench_copy(0, (uint64_t)mb[k] * 1000000, seconds, &r, &e))
            return cli_fail(&e);
        double ratio = r.pageable_gbps / r.pinned_gbps;
        if (json)
            printf("{\"bench\": \"gpu_copy\", \"device\": \"%s\", \"bytes\": %llu, \"copies\": %d, "
                   "\"pinned_gbps\": %.3f, \"pageable_gbps\": %.3f, \"ratio\": %.4f}\n", device,
                   (unsigned long long)r.bytes, r.copies, r.pinned_gbps, r.pageable_gbps, ratio);
        else
            printf("%10d %7d %12.2f %14.2f %7.3f\n", mb[k], r.copies, r.pinned_gbps,
                   r.pageable_gbps, ratio);
        fflush(stdout);
    }
    return 0;
}

int cmd_bench(int argc, char **argv)
{
    if (argc >= 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) {
        usage(stdout);
        return 0;
    }
    if (argc >= 2 && !strcmp(argv[1], "gpu")) {
        for (int i = 2; i < argc; i++)
            if (!strcmp(argv[i], "--overlap"))
                return bench_overlap(argc, argv);
        return bench_gpu(argc, argv);
    }
    if (argc < 2 || strcmp(argv[1], "kernels")) {
        fprintf(stderr, "moetier bench: the benchmark to run is 'kernels' or 'gpu'\n");
        usage(stderr);
        return 2;
    }
    kernel_bench_options o;
    kernel_bench_defaults(&o);
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i], *v;
        if (!strcmp(a, "--json")) {
            o.json = 1;
        } else if (!strcmp(a, "--twin")) {
            o.twin = 1;
        } else if (!strcmp(a, "--kernels")) {
            if (!(v = cli_value(argc, argv, &i)))
                return 2;
            if (kernel_path_parse(v, &o.path)) {
                fprintf(stderr, "moetier: --kernels expects scalar, avx2 or avx512, got '%s'\n", v);
                return 2;
            }
        } else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) {
            if (!(v = cli_value(argc, argv, &i)) || parse_list(a, v, o.threads, &o.n_threads, 8))
                return 2;
        } else if (!strcmp(a, "--tokens")) {
            if (!(v = cli_value(argc, argv, &i)) || parse_list(a, v, o.tokens, &o.n_tokens, 8))
                return 2;
        } else if (!strcmp(a, "--formats")) {
            if (!(v = cli_value(argc, argv, &i)))
                return 2;
            o.formats = v;
        } else if (!strcmp(a, "--seconds") || !strcmp(a, "--set-gb")) {
            float x;
            if (!(v = cli_value(argc, argv, &i)) || cli_float(a, v, &x))
                return 2;
            if (x <= 0) {
                fprintf(stderr, "moetier: %s must be positive\n", a);
                return 2;
            }
            if (!strcmp(a, "--seconds"))
                o.seconds = x;
            else
                o.set_gb = x;
        } else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "moetier bench: unknown option '%s'\n", a);
            usage(stderr);
            return 2;
        }
    }
    errbuf e;
    return kernel_bench_run(&o, &e) ? cli_fail(&e) : 0;
}
