/* bench_store: reads of a layer's worth of random experts from a store file,
 * against fio on the same file in the same run.
 *
 * A scratch file of blobs the size of one Kimi K2 INT4 expert (gate, up and down
 * of 7168 x 2048 with group-32 BF16 scales: 24.8 MB) is written once; then, for
 * a fixed time, each "layer" picks 8 random blobs (K2's top-8), submits them as
 * one batch through the NVMe tier (io_uring, O_DIRECT, queue depth 8) and waits
 * for all. The yardstick is fio (io_uring engine, O_DIRECT, random reads of the
 * same block size at the same queue depth, same file), run right after; ratio =
 * our GB/s / fio's GB/s. A second pass with checksum verification on shows what
 * the engine's reads cost (they verify every blob). One JSON line.
 *
 * Usage: bench_store [DIR [FILE_GB [SECONDS]]]; DIR defaults to $MOETIER_BENCH_DIR
 * or build/bench-scratch; the file is removed at the end. */
#include <cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>

#include "core/base/fileutil.h"
#include "core/base/progress.h"
#include "tiers/nvme_tier.h"

#define BATCH 8

static uint64_t k2_int4_expert_bytes(void)
{
    uint64_t per = 2048ull * 7168 / 2 + 2048ull * (7168 / 32) * 2;  /* packed + scales */
    return 3 * per;
}

static int write_scratch(const char *path, store_blob *blobs, int n, uint64_t slot, errbuf *e)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return err_set(e, "%s: %s", path, strerror(errno));
    uint8_t *buf = malloc(slot);
    if (!buf) {
        close(fd);
        return err_set(e, "out of memory");
    }
    uint64_t x = 0x9e3779b97f4a7c15ull;
    for (int i = 0; i < n; i++) {
        for (uint64_t k = 0; k + 8 <= slot; k += 8) {   /* xorshift: incompressible bytes */
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            memcpy(buf + k, &x, 8);
        }
        blobs[i] = (store_blob){.layer = 0, .expert = (uint32_t)i, .file = 0,
                                .offset = (uint64_t)i * slot, .bytes = slot,
                                .xxh3 = XXH3_64bits(buf, slot)};
        if (pwrite(fd, buf, slot, (off_t)blobs[i].offset) != (ssize_t)slot) {
            free(buf);
            close(fd);
            return err_set(e, "%s: write failed: %s", path, strerror(errno));
        }
    }
    free(buf);
    if (fsync(fd) != 0 || close(fd) != 0)
        return err_set(e, "%s: %s", path, strerror(errno));
    return 0;
}

/* GB/s of batches of BATCH random blobs for `seconds`. */
static double run_layers(nvme_tier *t, store_blob *blobs, int n, uint8_t *buf, uint64_t slot,
                         double seconds, int *layers_out)
{
    nvme_read r[BATCH];
    uint64_t bytes = 0;
    int layers = 0;
    unsigned seed = 7;
    double t0 = now_seconds();
    while (now_seconds() - t0 < seconds) {
        for (int i = 0; i < BATCH; i++) {
            memset(&r[i], 0, sizeof r[i]);
            r[i].blob = &blobs[rand_r(&seed) % (unsigned)n];
            r[i].dst = buf + (uint64_t)i * slot;
            nvme_tier_submit(t, &r[i]);
        }
        nvme_tier_flush(t);
        for (int i = 0; i < BATCH; i++) {
            errbuf e;
            if (nvme_tier_wait(t, &r[i], &e)) {
                fprintf(stderr, "bench_store: %s\n", e.msg);
                return -1;
            }
        }
        bytes += BATCH * slot;
        layers++;
    }
    *layers_out = layers;
    return bytes / (now_seconds() - t0) / 1e9;
}

static double run_fio(const char *path, uint64_t slot, double seconds, char *why, size_t n)
{
    char cmd[8192];
    snprintf(cmd, sizeof cmd,
             "fio --name=store --filename='%s' --ioengine=io_uring --direct=1 --rw=randread "
             "--bs=%llu --iodepth=%d --runtime=%d --time_based --output-format=json 2>&1",
             path, (unsigned long long)slot, BATCH, seconds < 1 ? 1 : (int)(seconds + 0.5));
    FILE *p = popen(cmd, "r");
    if (!p) {
        snprintf(why, n, "cannot run fio");
        return -1;
    }
    size_t cap = 1 << 20, len = 0;
    char *out = malloc(cap);
    size_t k;
    while (out && (k = fread(out + len, 1, cap - 1 - len, p)) > 0)
        len += k;
    int status = pclose(p);
    if (!out)
        return -1;
    out[len] = 0;
    char *json = strchr(out, '{');
    cJSON *j = json ? cJSON_Parse(json) : NULL;
    const cJSON *bw = cJSON_GetObjectItem(
        cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "jobs"), 0), "read"),
        "bw_bytes");
    double gbps = cJSON_IsNumber(bw) ? bw->valuedouble / 1e9 : -1;
    if (gbps < 0)
        snprintf(why, n, "fio failed (status %d): %.200s", status, out);
    cJSON_Delete(j);
    free(out);
    return gbps;
}

int main(int argc, char **argv)
{
    const char *dir = argc > 1 ? argv[1] : getenv("MOETIER_BENCH_DIR");
    if (!dir)
        dir = "build/bench-scratch";
    double file_gb = argc > 2 ? atof(argv[2]) : 4.0, seconds = argc > 3 ? atof(argv[3]) : 5.0;
    errbuf e;
    if (dir_ensure(dir, &e)) {
        fprintf(stderr, "bench_store: %s\n", e.msg);
        return 2;
    }
    uint64_t slot = (k2_int4_expert_bytes() + STORE_ALIGN - 1) / STORE_ALIGN * STORE_ALIGN;
    int n = (int)(file_gb * 1e9 / (double)slot);
    if (n < BATCH)
        n = BATCH;
    char path[4096];
    snprintf(path, sizeof path, "%s/bench-store.bin", dir);
    store_blob *blobs = calloc((size_t)n, sizeof *blobs);
    char *paths[1] = {path};
    uint64_t fbytes[1] = {(uint64_t)n * slot};
    store s = {.dir = (char *)dir, .n_layers = 1, .n_experts = n, .blobs = blobs, .n_blobs = n,
               .n_files = 1, .file_paths = paths, .file_bytes = fbytes};
    s.layout.blob_bytes = s.layout.slot_bytes = slot;
    uint8_t *buf = aligned_alloc(STORE_ALIGN, BATCH * slot);
    if (!blobs || !buf || write_scratch(path, blobs, n, slot, &e)) {
        fprintf(stderr, "bench_store: %s\n", blobs && buf ? e.msg : "out of memory");
        return 2;
    }
    nvme_options o;
    nvme_options_default(&o);
    o.queue_depth = BATCH;
    o.verify = 0;
    o.log = stderr;
    nvme_tier *t;
    if (nvme_tier_open(&t, &s, &o, &e)) {
        fprintf(stderr, "bench_store: %s\n", e.msg);
        return 2;
    }
    nvme_tier_register(t, buf, BATCH * slot, slot);
    int layers = 0, layers_v = 0;
    double gbps = run_layers(t, blobs, n, buf, slot, seconds, &layers);
    int uring = nvme_tier_uses_uring(t), direct = nvme_tier_uses_direct(t);
    if (nvme_tier_close(t)) {
        fprintf(stderr, "bench_store: reads were left in a failed io_uring ring\n");
        return 1;   /* (buf, which they may write, is not freed) */
    }
    o.verify = 1;
    double gbps_v = -1;
    if (nvme_tier_open(&t, &s, &o, &e) == 0) {
        nvme_tier_register(t, buf, BATCH * slot, slot);     /* as the first pass: only verify differs */
        gbps_v = run_layers(t, blobs, n, buf, slot, seconds, &layers_v);
        if (nvme_tier_close(t)) {
            fprintf(stderr, "bench_store: reads were left in a failed io_uring ring\n");
            return 1;
        }
    }
    char why[512] = "";
    double fio = run_fio(path, slot, seconds, why, sizeof why);
    unlink(path);
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "bench", "store_read");
    cJSON_AddNumberToObject(j, "file_gb", (double)n * slot / 1e9);
    cJSON_AddNumberToObject(j, "blob_bytes", (double)slot);
    cJSON_AddNumberToObject(j, "experts_per_layer", BATCH);
    cJSON_AddNumberToObject(j, "layers", layers);
    cJSON_AddStringToObject(j, "io", uring ? "io_uring" : "pread");
    cJSON_AddBoolToObject(j, "direct", direct);
    /* a rate that could not be measured is null, not a number */
    if (gbps > 0)
        cJSON_AddNumberToObject(j, "gbps", gbps);
    else
        cJSON_AddNullToObject(j, "gbps");
    if (gbps_v > 0)
        cJSON_AddNumberToObject(j, "gbps_verified", gbps_v);
    else
        cJSON_AddNullToObject(j, "gbps_verified");
    if (fio > 0) {
        cJSON_AddNumberToObject(j, "fio_gbps", fio);
        if (gbps > 0)
            cJSON_AddNumberToObject(j, "ratio", gbps / fio);
        else
            cJSON_AddNullToObject(j, "ratio");
    } else {
        cJSON_AddNullToObject(j, "fio_gbps");
        cJSON_AddNullToObject(j, "ratio");
        cJSON_AddStringToObject(j, "note", why);
    }
    char *text = cJSON_PrintUnformatted(j);
    printf("%s\n", text);
    free(text);
    cJSON_Delete(j);
    free(blobs);
    free(buf);
    return gbps > 0 ? 0 : 1;
}
