/* cmd_bench: `moetier bench model`: a model's prefill and decode speed
 * (cmd_bench_model.c); `moetier bench kernels [--json] [options]`: the CPU expert-kernel
 * benchmark (cpu_kernels/kernel_bench.h); `moetier bench gpu`: host-to-device
 * copies of expert-sized buffers, and with --overlap one hybrid batch timed
 * three ways, with --linear the linear kernel against HBM bandwidth, and with
 * --attention decode attention both ways the GPU runs it, with
 * --prefill-attention a prefill step's attention in both forms
 * (kernels/gpu_bench.h); --json prints one
 * object per line. */
#include <stdlib.h>
#include <string.h>

#include "cli_common.h"
#include "commands.h"
#include "core/base/meminfo.h"
#include "cpu_kernels/kernel_bench.h"
#include "kernels/gpu_bench.h"
#include "kernels/gpu_probe.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: moetier bench model -m DIR [options]\n"
               "  Prefill and decode speed of a model, like llama-bench (its options:\n"
               "  moetier bench model --help).\n"
               "usage: moetier bench kernels [--json] [--kernels PATH] [-t LIST] [--tokens LIST]\n"
               "                             [--formats LIST] [--seconds S] [--set-gb G] [--twin]\n"
               "                             [--fp8-subnormal N]\n"
               "  Times the expert FFN at Kimi K2 shapes (7168 -> 2048 -> 7168) per format,\n"
               "  thread count and token count, against the read bandwidth and FMA peak\n"
               "  measured in the same run. On a CPU with AMX, rows of 16 tokens or more run\n"
               "  twice: the FMA product (kernels cpu), then AMX (kernels amx; vs FMA: its\n"
               "  GFLOP/s over the FMA row's, JSON fma_ratio).\n"
               "  --json          one JSON object per line (format, threads, tokens, gbps, gflops,\n"
               "                  read_bw_gbps, ratio = gbps / read_bw_gbps, peak_gflops, ...)\n"
               "  --kernels PATH  scalar, avx2 or avx512 (default: the fastest here)\n"
               "  -t LIST         thread counts, e.g. 1,2 (default 1,2)\n"
               "  --tokens LIST   tokens per expert call (default 1,4,32,256; <= 4 runs the k2\n"
               "                  layer of 8 random experts, more runs one expert)\n"
               "  --formats LIST  int4,fp8,bf16 (default all)\n"
               "  --seconds S     time per measurement (default 1)\n"
               "  --set-gb G      GB of distinct experts per format (default 1.5)\n"
               "  --fp8-subnormal N  one FP8 code in N subnormal, as a checkpoint has some\n"
               "                  (the testdata's FP8 model: one in 10,000; default none)\n"
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
               "  against plain copies from pinned memory (blob_ratio; the target is >= 0.9).\n"
               "usage: moetier bench gpu --linear [--json] [--formats LIST] [--shapes LIST]\n"
               "                                  [--tokens LIST] [--set-gb G]\n"
               "  The linear kernel over G GB of distinct matrices (default 1: far more than\n"
               "  the L2 cache, like a decode step's weights) as the engine runs it, without\n"
               "  reading ahead into L2 (plain) and with a warp per row (1-row: INT4 and FP8\n"
               "  give a warp 4 rows at up to 2 tokens, 2 up to 8, 4 above), against a\n"
               "  device-to-device copy in the same run.\n"
               "  --formats LIST  int4,fp8,bf16,f16,f32 (default int4,fp8,bf16)\n"
               "  --shapes LIST   ROWSxCOLS,... (default K2's 2048x7168,7168x2048,18432x7168)\n"
               "  --tokens LIST   tokens per product (default 1,8,64)\n"
               "  --json          one JSON object per line (format, rows, cols, tokens,\n"
               "                  ahead_gbps, plain_gbps, one_row_gbps, hbm_gbps,\n"
               "                  ratio = ahead / hbm, ...)\n"
               "usage: moetier bench gpu --attention [--json] [--contexts LIST] [--tokens LIST]\n"
               "                                     [--set-gb G] [--cache-type f32|bf16|q8_0]\n"
               "  Kimi K2's attention (64 heads, latent 512) of the last tokens of a context,\n"
               "  over distinct layers' caches (about G GB, default 1, at most 61 layers),\n"
               "  both ways the GPU runs it: a block per token and 8 heads (whole), and a\n"
               "  block per 256 positions too with a merge (split; the backend takes it when\n"
               "  the first leaves multiprocessors idle), against a device-to-device copy in\n"
               "  the same run.\n"
               "  --contexts LIST positions in the cache (default 1024,8192,32768)\n"
               "  --tokens LIST   new tokens (default 1,4)\n"
               "  --cache-type T  the cache's values: f32 (default), bf16 or q8_0\n"
               "  --json          one JSON object per line (context, tokens, layers, cache_type,\n"
               "                  cache_bytes, whole_ms, split_ms per layer, whole_gbps,\n"
               "                  split_gbps, hbm_gbps, gain = whole / split, backend_splits,\n"
               "                  same_bits)\n"
               "usage: moetier bench gpu --prefill-attention [--json] [--contexts LIST]\n"
               "                                             [--tokens LIST]\n"
               "  Kimi K2's attention of a prefill step at the end of a context, in the\n"
               "  absorbed form (the yardstick) and the expanded form (the backend's for a\n"
               "  step's whole slices of 256 tokens), one layer, the best of 3 runs each.\n"
               "  --contexts LIST positions in the cache, the step's included (default\n"
               "                  4096,32768)\n"
               "  --tokens LIST   tokens in the step (default 256,2048)\n"
               "  --json          one JSON object per line (context, tokens, absorbed_ms,\n"
               "                  expanded_ms, gain = absorbed / expanded, each form's\n"
               "                  multiply-adds and tmacs = 1e12 of them per second,\n"
               "                  rel_diff = max |expanded - absorbed| / max |absorbed|)\n"
               "Every `bench gpu` form takes --device N: the CUDA device to measure (default 0;\n"
               "`moetier inspect` lists them).\n");
}

/* The CPU kernels' formats: a non-empty list of int4, fp8 and bf16. */
static int check_kernel_formats(const char *s)
{
    for (const char *t = s;; t++) {
        size_t len = strcspn(t, ",");
        if (!((len == 4 && (!strncmp(t, "int4", 4) || !strncmp(t, "bf16", 4))) ||
              (len == 3 && !strncmp(t, "fp8", 3)))) {
            fprintf(stderr, "moetier: --formats expects int4, fp8 or bf16, comma-separated, got '%s'\n", s);
            return -1;
        }
        t += len;
        if (!*t)
            return 0;
    }
}

/* exactly two values */
static int parse_pair(const char *flag, const char *s, int *out, const char *what)
{
    int n;
    if (cli_int_list(flag, s, out, &n, 2, 1, 100000))
        return -1;
    if (n != 2) {
        fprintf(stderr, "moetier: %s expects %s\n", flag, what);
        return -1;
    }
    return 0;
}

/* the value after flag argv[*i], a positive number */
static int positive_value(int argc, char **argv, int *i, float *out)
{
    const char *flag = argv[*i], *v = cli_value(argc, argv, i);
    if (!v || cli_float(flag, v, out))
        return -1;
    if (!(*out > 0 && *out <= 1e6)) {
        fprintf(stderr, "moetier: %s must be positive (at most 1e6)\n", flag);
        return -1;
    }
    return 0;
}

/* `bench gpu --device N`: the device every form measures */
static int gpu_device;

/* Takes --device N out of argv (after "gpu"), so each form's own options are
 * what is left; -1 on a bad value. */
static int take_device_flag(int *argc, char **argv)
{
    for (int i = 2; i < *argc; i++)
        if (!strcmp(argv[i], "--device")) {
            int k = i;
            const char *v = cli_value(*argc, argv, &k);
            if (!v || cli_int("--device", v, 0, 1023, &gpu_device))
                return -1;
            memmove(argv + i, argv + i + 2, (size_t)(*argc - i - 2) * sizeof *argv);
            *argc -= 2;
            i--;
        }
    return 0;
}

/* the device's description, or a message that it cannot be measured */
static int gpu_present(char *device, size_t n)
{
    if (!gpu_describe(gpu_device, device, n))
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
    if (gpu_bench_overlap(gpu_device, shape[0], shape[1], experts[0], experts[1], threads, 5, &r,
                          &e))
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

/* "int4", "fp8", "bf16", "f16" or "f32" */
static int gpu_format(const char *name)
{
    static const char *names[] = {"f32", "f16", "bf16", "fp8", "int4"};
    static const int fmts[] = {WF_F32, WF_F16, WF_BF16, WF_FP8_BLOCK, WF_INT4_GROUP};
    for (int i = 0; i < 5; i++)
        if (!strcmp(name, names[i]))
            return fmts[i];
    return -1;
}

static const char *gpu_format_name(int fmt)
{
    return fmt == WF_INT4_GROUP ? "int4" : fmt == WF_FP8_BLOCK ? "fp8" : fmt == WF_BF16 ? "bf16"
           : fmt == WF_F16 ? "f16" : "f32";
}

/* "R1xC1,R2xC2,...": at most max shapes */
static int parse_shapes(const char *flag, const char *s, int (*shapes)[2], int *n, int max)
{
    *n = 0;
    char *copy = strdup(s), *save = NULL;
    int rc = 0;
    for (char *t = strtok_r(copy, ",", &save); t && !rc; t = strtok_r(NULL, ",", &save)) {
        char *x = strchr(t, 'x');
        if (*n >= max || !x) {
            fprintf(stderr, "moetier: %s expects at most %d shapes ROWSxCOLS, got '%s'\n", flag, max, s);
            rc = -1;
            break;
        }
        *x = 0;
        rc = cli_int(flag, t, 1, 1000000, &shapes[*n][0]) || cli_int(flag, x + 1, 1, 1000000, &shapes[*n][1]);
        (*n)++;
    }
    free(copy);
    if (!rc && *n == 0) {
        fprintf(stderr, "moetier: %s is empty\n", flag);
        rc = -1;
    }
    return rc ? -1 : 0;
}

static int bench_linear(int argc, char **argv)
{
    int shapes[8][2] = {{2048, 7168}, {7168, 2048}, {18432, 7168}}, n_shapes = 3;
    int tokens[8] = {1, 8, 64}, n_tokens = 3, fmts[5] = {WF_INT4_GROUP, WF_FP8_BLOCK, WF_BF16};
    int n_fmts = 3;
    int json = 0;
    float set_gb = 1;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i], *v;
        if (!strcmp(a, "--linear")) {
        } else if (!strcmp(a, "--json")) {
            json = 1;
        } else if (!strcmp(a, "--shapes")) {
            if (!(v = cli_value(argc, argv, &i)) || parse_shapes(a, v, shapes, &n_shapes, 8))
                return 2;
        } else if (!strcmp(a, "--tokens")) {
            if (!(v = cli_value(argc, argv, &i)) || cli_int_list(a, v, tokens, &n_tokens, 8, 1, 100000))
                return 2;
        } else if (!strcmp(a, "--formats")) {
            if (!(v = cli_value(argc, argv, &i)))
                return 2;
            char *copy = strdup(v), *save = NULL;
            n_fmts = 0;
            for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
                int f = gpu_format(t);
                if (f < 0 || n_fmts >= 5) {
                    fprintf(stderr, "moetier: --formats expects int4, fp8, bf16, f16 or f32, got '%s'\n", t);
                    free(copy);
                    return 2;
                }
                fmts[n_fmts++] = f;
            }
            free(copy);
            if (!n_fmts) {
                fprintf(stderr, "moetier: --formats is empty\n");
                return 2;
            }
        } else if (!strcmp(a, "--set-gb")) {
            if (positive_value(argc, argv, &i, &set_gb))
                return 2;
        } else {
            fprintf(stderr, "moetier bench gpu --linear: unknown option '%s'\n", a);
            usage(stderr);
            return 2;
        }
    }
    char device[256];
    if (!gpu_present(device, sizeof device))
        return 1;
    if (!json)
        printf("%s\n%5s %13s %6s %8s %11s %11s %11s %9s %6s\n", device, "fmt", "shape", "tokens",
               "matrices", "ahead GB/s", "plain GB/s", "1-row GB/s", "HBM GB/s", "ratio");
    for (int f = 0; f < n_fmts; f++)
        for (int s = 0; s < n_shapes; s++)
            for (int t = 0; t < n_tokens; t++) {
                gpu_linear_result r;
                errbuf e;
                if (gpu_bench_linear(gpu_device, fmts[f], shapes[s][0], shapes[s][1], tokens[t],
                                     (uint64_t)((double)set_gb * 1e9), 10, &r, &e))
                    return cli_fail(&e);
                double ratio = r.hbm_gbps > 0 ? r.ahead_gbps / r.hbm_gbps : 0;
                if (json)
                    printf("{\"bench\": \"gpu_linear\", \"device\": \"%s\", \"format\": \"%s\", "
                           "\"rows\": %d, \"cols\": %d, \"tokens\": %d, \"matrices\": %d, "
                           "\"weight_bytes\": %llu, \"ahead_ms\": %.6f, \"plain_ms\": %.6f, "
                           "\"one_row_ms\": %.6f, \"ahead_gbps\": %.6g, \"plain_gbps\": %.6g, "
                           "\"one_row_gbps\": %.6g, \"hbm_gbps\": %.6g, \"ratio\": %.6g, "
                           "\"same_bits\": %s}\n", device, gpu_format_name(r.fmt),
                           r.rows, r.cols, r.tokens, r.matrices, (unsigned long long)r.weight_bytes,
                           r.ahead_s * 1e3, r.plain_s * 1e3, r.one_row_s * 1e3, r.ahead_gbps,
                           r.plain_gbps, r.one_row_gbps, r.hbm_gbps, ratio,
                           r.same_bits ? "true" : "false");
                else
                    printf("%5s %6dx%-6d %6d %8d %11.1f %11.1f %11.1f %9.1f %6.3f%s\n",
                           gpu_format_name(r.fmt), r.rows, r.cols, r.tokens, r.matrices,
                           r.ahead_gbps, r.plain_gbps, r.one_row_gbps, r.hbm_gbps, ratio,
                           r.same_bits ? "" : "  (the three ways differ!)");
                fflush(stdout);
                if (!r.same_bits) {
                    fprintf(stderr, "moetier bench gpu --linear: reading ahead or the rows per warp "
                                    "changed the outputs\n");
                    return 1;
                }
            }
    return 0;
}

/* a prefill step's attention both ways: a line per context and step length */
static int prefill_attention_lines(const char *device, const int *contexts, int n_contexts,
                                   const int *tokens, int n_tokens, int json)
{
    if (!json)
        printf("%s\n%8s %6s %12s %12s %6s %9s %9s %9s\n", device, "context", "tokens",
               "absorbed ms", "expanded ms", "gain", "abs TMAC/s", "exp TMAC/s", "rel diff");
    for (int c = 0; c < n_contexts; c++)
        for (int t = 0; t < n_tokens; t++) {
            if (tokens[t] > contexts[c])
                continue;
            gpu_prefill_attention_result r;
            errbuf e;
            if (gpu_bench_prefill_attention(gpu_device, contexts[c], tokens[t], 3, &r, &e))
                return cli_fail(&e);
            double gain = r.absorbed_s / r.expanded_s;
            if (json)
                printf("{\"bench\": \"gpu_prefill_attention\", \"device\": \"%s\", "
                       "\"context\": %d, \"tokens\": %d, \"absorbed_ms\": %.6f, "
                       "\"expanded_ms\": %.6f, \"gain\": %.6g, \"absorbed_macs\": %.6g, "
                       "\"expanded_macs\": %.6g, \"absorbed_tmacs\": %.6g, "
                       "\"expanded_tmacs\": %.6g, \"rel_diff\": %.6g}\n", device, r.context,
                       r.tokens, r.absorbed_s * 1e3, r.expanded_s * 1e3, gain, r.absorbed_macs,
                       r.expanded_macs, r.absorbed_tmacs, r.expanded_tmacs, r.rel_diff);
            else
                printf("%8d %6d %12.3f %12.3f %6.2f %9.2f %9.2f %9.2g\n", r.context, r.tokens,
                       r.absorbed_s * 1e3, r.expanded_s * 1e3, gain, r.absorbed_tmacs,
                       r.expanded_tmacs, r.rel_diff);
            fflush(stdout);
            /* the same attention in two orders of float32 sums: far apart means a bug */
            if (!(r.rel_diff <= 1e-3)) {
                fprintf(stderr, "moetier bench gpu --prefill-attention: the two forms differ by "
                                "%.3g of the output's largest value\n", r.rel_diff);
                return 1;
            }
        }
    return 0;
}

static int bench_attention(int argc, char **argv, int prefill)
{
    int contexts[8] = {1024, 8192, 32768}, n_contexts = 3, tokens[8] = {1, 4}, n_tokens = 2;
    if (prefill) {
        contexts[0] = 4096;
        contexts[1] = 32768;
        n_contexts = 2;
        tokens[0] = 256;
        tokens[1] = 2048;
    }
    int json = 0;
    float set_gb = 1;
    kv_type cache = KV_F32;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i], *v;
        if (!strcmp(a, prefill ? "--prefill-attention" : "--attention")) {
        } else if (!strcmp(a, "--json")) {
            json = 1;
        } else if (!strcmp(a, "--contexts")) {
            if (!(v = cli_value(argc, argv, &i)) || cli_int_list(a, v, contexts, &n_contexts, 8, 1, 100000))
                return 2;
        } else if (!strcmp(a, "--tokens")) {
            if (!(v = cli_value(argc, argv, &i)) || cli_int_list(a, v, tokens, &n_tokens, 8, 1, 100000))
                return 2;
        } else if (!prefill && !strcmp(a, "--set-gb")) {
            if (positive_value(argc, argv, &i, &set_gb))
                return 2;
        } else if (!prefill && (!strcmp(a, "--cache-type") || !strcmp(a, "-ctk"))) {
            errbuf te;
            if (!(v = cli_value(argc, argv, &i)))
                return 2;
            if (kv_type_parse(v, &cache, &te)) {
                fprintf(stderr, "moetier bench gpu --attention: %s\n", te.msg);
                return 2;
            }
        } else {
            fprintf(stderr, "moetier bench gpu %s: unknown option '%s'\n",
                    prefill ? "--prefill-attention" : "--attention", a);
            usage(stderr);
            return 2;
        }
    }
    char device[256];
    if (!gpu_present(device, sizeof device))
        return 1;
    if (prefill)
        return prefill_attention_lines(device, contexts, n_contexts, tokens, n_tokens, json);
    if (!json)
        printf("%s\n%8s %6s %6s %9s %9s %11s %11s %9s %6s %7s\n", device, "context", "tokens",
               "layers", "whole ms", "split ms", "whole GB/s", "split GB/s", "HBM GB/s", "gain",
               "chosen");
    for (int c = 0; c < n_contexts; c++)
        for (int t = 0; t < n_tokens; t++) {
            if (tokens[t] > contexts[c])
                continue;
            gpu_attention_result r;
            errbuf e;
            if (gpu_bench_attention(gpu_device, contexts[c], tokens[t],
                                    (uint64_t)((double)set_gb * 1e9), 10, cache, &r,
                                    &e))
                return cli_fail(&e);
            double gain = r.whole_s / r.split_s;
            if (json)
                printf("{\"bench\": \"gpu_attention\", \"device\": \"%s\", \"context\": %d, "
                       "\"tokens\": %d, \"layers\": %d, \"cache_type\": \"%s\", "
                       "\"cache_bytes\": %llu, "
                       "\"whole_ms\": %.6f, \"split_ms\": %.6f, \"whole_gbps\": %.6g, "
                       "\"split_gbps\": %.6g, \"hbm_gbps\": %.6g, \"gain\": %.6g, "
                       "\"backend_splits\": %s, \"same_bits\": %s}\n", device, r.context,
                       r.tokens, r.layers, kv_type_name(cache), (unsigned long long)r.cache_bytes,
                       r.whole_s * 1e3, r.split_s * 1e3, r.whole_gbps, r.split_gbps, r.hbm_gbps,
                       gain,
                       r.backend_splits ? "true" : "false", r.same_bits ? "true" : "false");
            else
                printf("%8d %6d %6d %9.4f %9.4f %11.1f %11.1f %9.1f %6.2f %7s%s\n", r.context,
                       r.tokens, r.layers, r.whole_s * 1e3, r.split_s * 1e3, r.whole_gbps,
                       r.split_gbps, r.hbm_gbps, gain, r.backend_splits ? "split" : "whole",
                       r.same_bits ? "" : "  (the two ways differ!)");
            fflush(stdout);
            if (!r.same_bits) {
                fprintf(stderr, "moetier bench gpu --attention: splitting the context changed "
                                "the outputs\n");
                return 1;
            }
        }
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
            if (!(v = cli_value(argc, argv, &i)) || cli_int_list(a, v, mb, &n_mb, 8, 1, 100000))
                return 2;
        } else if (!strcmp(a, "--seconds")) {
            if (positive_value(argc, argv, &i, &seconds))
                return 2;
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
        if (gpu_bench_copy(gpu_device, (uint64_t)mb[k] * 1000000, seconds, &r, &e))
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
            if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
                usage(stdout);
                return 0;
            }
        if (take_device_flag(&argc, argv))
            return 2;
        for (int i = 2; i < argc; i++)
            if (!strcmp(argv[i], "--overlap"))
                return bench_overlap(argc, argv);
            else if (!strcmp(argv[i], "--linear"))
                return bench_linear(argc, argv);
            else if (!strcmp(argv[i], "--attention"))
                return bench_attention(argc, argv, 0);
            else if (!strcmp(argv[i], "--prefill-attention"))
                return bench_attention(argc, argv, 1);
        return bench_gpu(argc, argv);
    }
    if (argc >= 2 && !strcmp(argv[1], "model"))
        return cmd_bench_model(argc, argv);
    if (argc < 2 || strcmp(argv[1], "kernels")) {
        fprintf(stderr, "moetier bench: the benchmark to run is 'kernels', 'gpu' or 'model'\n");
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
        } else if (!strcmp(a, "--fp8-subnormal")) {
            if (!(v = cli_value(argc, argv, &i)) || cli_int(a, v, 0, 1 << 30, &o.fp8_subnormal))
                return 2;
        } else if (!strcmp(a, "--kernels")) {
            if (!(v = cli_value(argc, argv, &i)))
                return 2;
            if (kernel_path_parse(v, &o.path)) {
                fprintf(stderr, "moetier: --kernels expects scalar, avx2 or avx512, got '%s'\n", v);
                return 2;
            }
        } else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) {
            if (!(v = cli_value(argc, argv, &i)) || cli_int_list(a, v, o.threads, &o.n_threads, 8, 1, 4096))
                return 2;
        } else if (!strcmp(a, "--tokens")) {
            if (!(v = cli_value(argc, argv, &i)) || cli_int_list(a, v, o.tokens, &o.n_tokens, 8, 1, 100000))
                return 2;
        } else if (!strcmp(a, "--formats")) {
            if (!(v = cli_value(argc, argv, &i)) || check_kernel_formats(v))
                return 2;
            o.formats = v;
        } else if (!strcmp(a, "--seconds") || !strcmp(a, "--set-gb")) {
            float x;
            if (positive_value(argc, argv, &i, &x))
                return 2;
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
    /* the experts are filled in memory: a set past it would end in the OOM killer */
    uint64_t mem_total, mem_avail;
    meminfo_read(&mem_total, &mem_avail);
    if (mem_avail && o.set_gb * 1e9 > 0.9 * (double)mem_avail) {
        fprintf(stderr, "moetier bench kernels: --set-gb %g is more than this machine's %.1f GB of "
                "available memory allows (90%%)\n", o.set_gb, mem_avail / 1e9);
        return 2;
    }
    errbuf e;
    return kernel_bench_run(&o, &e) ? cli_fail(&e) : 0;
}
