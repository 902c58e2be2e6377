/* bench_prompt_file: what `run --prompt-cache` costs at Kimi K2's shape (61
 * layers of 576-float latent rows, a vocabulary of 163,840): a prompt of N
 * tokens written to a file and restored from it into a CPU backend's KV
 * cache. The yardsticks, measured in the same run on the same file system,
 * are a plain write + fsync of as many bytes and a plain read of the file:
 * save ratio = raw write ms / save ms, restore ratio = raw read ms / restore
 * ms (1: as fast as the disk or the page cache gives the bytes). "cold":
 * the file's pages dropped from the page cache first (fadvise; what a later
 * run after other work sees), "warm": right after. A restore reads the rows
 * in pieces, hashing each and copying it into the KV cache, and checks the
 * checksum at the end.
 * usage: bench_prompt_file [DIR]  (default: the current directory) */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/base/fileutil.h"
#include "core/base/progress.h"
#include "core/engine/prompt_file.h"
#include "cpu_kernels/cpu_backend.h"

enum { LAYERS = 61, ROW = 576, VOCAB = 163840, REPEAT = 3 };

static void drop_cache(const char *path)
{
    int fd = open(path, O_RDONLY);
    if (fd >= 0) {
        posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
        close(fd);
    }
}

static double raw_write(const char *path, const char *buf, size_t chunk, size_t total)
{
    double t0 = now_seconds();
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    for (size_t done = 0; fd >= 0 && done < total; done += chunk)
        if (fd_write_all(fd, buf, total - done < chunk ? total - done : chunk))
            break;
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
    return now_seconds() - t0;
}

static double raw_read(const char *path, char *buf, size_t chunk)
{
    double t0 = now_seconds();
    int fd = open(path, O_RDONLY);
    while (fd >= 0 && read(fd, buf, chunk) > 0)
        ;
    if (fd >= 0)
        close(fd);
    return now_seconds() - t0;
}

static double restore(const char *path, const prompt_identity *id, engine *en, float *logits)
{
    double t0 = now_seconds();
    prompt_file pf;
    errbuf e;
    int n = en->n_past, got = -1;
    en->n_past = 0;
    if (prompt_file_open(&pf, path, id, en, &e) == 0) {
        got = prompt_file_restore(&pf, en, en->cached_ids, n, logits, &e);
        prompt_file_close(&pf);
    }
    if (got != n) {
        fprintf(stderr, "bench_prompt_file: restored %d of %d: %s\n", got, n, e.msg);
        exit(1);
    }
    return now_seconds() - t0;
}

int main(int argc, char **argv)
{
    const char *dir = argc > 1 ? argv[1] : ".";
    const int lengths[] = {1024, 4096, 8192};
    char path[4096], raw[4096];
    snprintf(path, sizeof path, "%s/bench_prompt_file.cache", dir);
    snprintf(raw, sizeof raw, "%s/bench_prompt_file.raw", dir);
    backend be;
    errbuf e;
    if (cpu_backend_create(&be, &e)) {
        fprintf(stderr, "bench_prompt_file: %s\n", e.msg);
        return 1;
    }
    model_config cfg = {.vocab_size = VOCAB};
    prompt_identity id = {.model = 1, .compute = "bench"};
    size_t chunk = 16u << 20;
    char *buf = malloc(chunk);
    float *logits = malloc(VOCAB * sizeof *logits);
    if (!buf || !logits)
        return 1;
    memset(buf, 1, chunk);
    for (int i = 0; i < VOCAB; i++)
        logits[i] = (float)i;
    for (int k = 0; k < 3; k++) {
        int n = lengths[k];
        engine en = {.cfg = &cfg, .n_past = n};
        if (kv_cache_create(&en.kv, &be, LAYERS, n, ROW, KV_F32, &e)) {
            fprintf(stderr, "bench_prompt_file: %s\n", e.msg);
            return 1;
        }
        en.cached_ids = malloc((size_t)n * sizeof *en.cached_ids);
        if (!en.cached_ids)
            return 1;
        for (int i = 0; i < n; i++)
            en.cached_ids[i] = (i * 37 + 11) % VOCAB;
        for (int l = 0; l < LAYERS; l++)
            for (size_t i = 0; i < (size_t)n * ROW; i++)
                en.kv.layer[l][i] = (float)(i % 977) * 0.5f;
        double save = 1e30, wr = 1e30, cold = 1e30, warm = 1e30, rd_cold = 1e30, rd_warm = 1e30;
        size_t bytes = 0;
        for (int r = 0; r < REPEAT; r++) {
            double t0 = now_seconds();
            if (prompt_file_save(path, &id, &en, logits, &e)) {
                fprintf(stderr, "bench_prompt_file: %s\n", e.msg);
                return 1;
            }
            double t = now_seconds() - t0;
            save = t < save ? t : save;
            struct stat sb;
            stat(path, &sb);
            bytes = (size_t)sb.st_size;
            t = raw_write(raw, buf, chunk, bytes);
            wr = t < wr ? t : wr;
            drop_cache(path);
            t = restore(path, &id, &en, logits);
            cold = t < cold ? t : cold;
            t = restore(path, &id, &en, logits);
            warm = t < warm ? t : warm;
            drop_cache(path);
            t = raw_read(path, buf, chunk);
            rd_cold = t < rd_cold ? t : rd_cold;
            t = raw_read(path, buf, chunk);
            rd_warm = t < rd_warm ? t : rd_warm;
        }
        double gb = (double)bytes / 1e9;
        printf("{\"bench\": \"prompt_file\", \"tokens\": %d, \"gb\": %.3f, \"save_ms\": %.1f, "
               "\"raw_write_ms\": %.1f, \"save_ratio\": %.3f, \"restore_cold_ms\": %.1f, "
               "\"raw_read_cold_ms\": %.1f, \"restore_cold_ratio\": %.3f, \"restore_warm_ms\": %.1f, "
               "\"raw_read_warm_ms\": %.1f, \"restore_warm_ratio\": %.3f}\n",
               n, gb, save * 1e3, wr * 1e3, wr / save, cold * 1e3, rd_cold * 1e3, rd_cold / cold,
               warm * 1e3, rd_warm * 1e3, rd_warm / warm);
        fflush(stdout);
        free(en.cached_ids);
        kv_cache_destroy(&en.kv);
    }
    unlink(path);
    unlink(raw);
    free(buf);
    free(logits);
    be.ops->destroy(&be);
    return 0;
}
