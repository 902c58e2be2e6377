/* kernel_bench: expert FFN timing with same-run yardsticks (see kernel_bench.h). */
#include "kernel_bench.h"

#include <cJSON.h>
#include <immintrin.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "core/base/meminfo.h"
#include "core/base/progress.h"
#include "core/model/dtype.h"
#include "ffn_cpu.h"
#include "kernels/gpu_twin.h"

#define K2_HIDDEN 7168
#define K2_MOE_INTER 2048
#define K2_TOPK 8
#define READ_BUF_BYTES (1ull << 30)

void kernel_bench_defaults(kernel_bench_options *o)
{
    memset(o, 0, sizeof *o);
    o->path = kernel_path_default();
    o->threads[0] = 1;
    o->threads[1] = 2;
    o->n_threads = 2;
    o->tokens[0] = 1;
    o->tokens[1] = 4;
    o->tokens[2] = 32;     /* a routed expert's share of a prefill step */
    o->tokens[3] = 256;
    o->n_tokens = 4;
    o->formats = "int4,fp8,bf16";
    o->seconds = 1.0;
    o->set_gb = 1.5;
    o->out = stdout;
}

/* ---- yardsticks ---- */

typedef struct read_job {
    const uint8_t *buf;
    size_t bytes;
    kernel_path path;
    uint64_t sink[64];
} read_job;

__attribute__((target("avx512f"))) static uint64_t read_avx512(const uint8_t *p, size_t n)
{
    __m512i a = _mm512_setzero_si512(), b = a, c = a, d = a;
    for (size_t i = 0; i + 256 <= n; i += 256) {
        a = _mm512_or_si512(a, _mm512_load_si512(p + i));
        b = _mm512_or_si512(b, _mm512_load_si512(p + i + 64));
        c = _mm512_or_si512(c, _mm512_load_si512(p + i + 128));
        d = _mm512_or_si512(d, _mm512_load_si512(p + i + 192));
    }
    return (uint64_t)_mm512_reduce_or_epi64(_mm512_or_si512(_mm512_or_si512(a, b), _mm512_or_si512(c, d)));
}

__attribute__((target("avx2"))) static uint64_t read_avx2(const uint8_t *p, size_t n)
{
    __m256i a = _mm256_setzero_si256(), b = a, c = a, d = a;
    for (size_t i = 0; i + 128 <= n; i += 128) {
        a = _mm256_or_si256(a, _mm256_load_si256((const __m256i *)(p + i)));
        b = _mm256_or_si256(b, _mm256_load_si256((const __m256i *)(p + i + 32)));
        c = _mm256_or_si256(c, _mm256_load_si256((const __m256i *)(p + i + 64)));
        d = _mm256_or_si256(d, _mm256_load_si256((const __m256i *)(p + i + 96)));
    }
    __m256i o = _mm256_or_si256(_mm256_or_si256(a, b), _mm256_or_si256(c, d));
    return (uint64_t)_mm256_extract_epi64(o, 0) | (uint64_t)_mm256_extract_epi64(o, 1) |
           (uint64_t)_mm256_extract_epi64(o, 2) | (uint64_t)_mm256_extract_epi64(o, 3);
}

static uint64_t read_scalar(const uint8_t *p, size_t n)
{
    uint64_t a = 0, b = 0;
    for (size_t i = 0; i + 16 <= n; i += 16) {
        uint64_t x, y;
        memcpy(&x, p + i, 8);
        memcpy(&y, p + i + 8, 8);
        a |= x;
        b |= y;
    }
    return a | b;
}

static void read_part(void *ctx, int worker, int n_workers)
{
    read_job *j = ctx;
    size_t chunk = j->bytes / (size_t)n_workers / 4096 * 4096;
    const uint8_t *p = j->buf + chunk * (size_t)worker;
    uint64_t v = j->path == KPATH_AVX512 ? read_avx512(p, chunk)
                 : j->path == KPATH_AVX2 ? read_avx2(p, chunk) : read_scalar(p, chunk);
    j->sink[worker % 64] = v;
}

/* seconds of one read of the whole buffer with the pool's threads */
static double read_pass(thread_pool *pool, kernel_path path, const uint8_t *buf)
{
    read_job j = {.buf = buf, .bytes = READ_BUF_BYTES, .path = path};
    double t0 = now_seconds();
    thread_pool_run(pool, read_part, &j);
    return now_seconds() - t0;
}

static double read_bandwidth(thread_pool *pool, kernel_path path, const uint8_t *buf)
{
    double best = 0;
    for (int rep = 0; rep < 4; rep++) {
        double gbps = READ_BUF_BYTES / read_pass(pool, path, buf) / 1e9;
        best = gbps > best ? gbps : best;
    }
    return best;
}

typedef struct fma_job {
    kernel_path path;
    long iters;
    float sink[64];
} fma_job;

__attribute__((target("avx512f"))) static float fma_avx512(long iters)
{
    __m512 a[12], m = _mm512_set1_ps(0.999f), c = _mm512_set1_ps(1e-3f);
    for (int k = 0; k < 12; k++)
        a[k] = _mm512_set1_ps((float)k);
    for (long i = 0; i < iters; i++)
        _Pragma("GCC unroll 12") for (int k = 0; k < 12; k++)
            a[k] = _mm512_fmadd_ps(a[k], m, c);
    __m512 s = a[0];
    for (int k = 1; k < 12; k++)
        s = _mm512_add_ps(s, a[k]);
    return _mm512_reduce_add_ps(s);
}

__attribute__((target("avx2,fma"))) static float fma_avx2(long iters)
{
    __m256 a[12], m = _mm256_set1_ps(0.999f), c = _mm256_set1_ps(1e-3f);
    for (int k = 0; k < 12; k++)
        a[k] = _mm256_set1_ps((float)k);
    for (long i = 0; i < iters; i++)
        _Pragma("GCC unroll 12") for (int k = 0; k < 12; k++)
            a[k] = _mm256_fmadd_ps(a[k], m, c);
    __m256 s = a[0];
    for (int k = 1; k < 12; k++)
        s = _mm256_add_ps(s, a[k]);
    float out[8];
    _mm256_storeu_ps(out, s);
    return out[0] + out[7];
}

static void fma_part(void *ctx, int worker, int n_workers)
{
    fma_job *j = ctx;
    j->sink[worker % 64] = j->path == KPATH_AVX512 ? fma_avx512(j->iters)
                           : j->path == KPATH_AVX2 ? fma_avx2(j->iters) : 0;
}

/* GFLOP/s of back-to-back FMAs of the path's vector width on every thread. */
static double fma_peak(thread_pool *pool, kernel_path path)
{
    if (path == KPATH_SCALAR)
        return 0;
    int lanes = path == KPATH_AVX512 ? 16 : 8;
    fma_job j = {.path = path, .iters = 2000000};
    double best = 0;
    for (int rep = 0; rep < 3; rep++) {
        double t0 = now_seconds();
        thread_pool_run(pool, fma_part, &j);
        double g = 2.0 * lanes * 12 * (double)j.iters * thread_pool_size(pool) /
                   (now_seconds() - t0) / 1e9;
        best = g > best ? g : best;
    }
    return best;
}

/* ---- experts ---- */

typedef struct bench_expert {
    linear_weight p[3];         /* gate, up, down */
    uint8_t *mem;
} bench_expert;

static uint64_t xs_state = 0x2545f4914f6cdd1dull;

static void fill_random(uint8_t *p, size_t n)
{
    for (size_t i = 0; i + 8 <= n; i += 8) {
        xs_state ^= xs_state << 13;
        xs_state ^= xs_state >> 7;
        xs_state ^= xs_state << 17;
        memcpy(p + i, &xs_state, 8);
    }
}

/* Benchmark buffers live in transparent huge pages, as the DRAM tier's experts
 * and the resident dense weights do: on 4 KiB pages the kernels and the read
 * yardstick would measure TLB misses and prefetchers stopping at page ends. */
static void *huge_alloc(size_t bytes)
{
    size_t huge = (size_t)2 << 20, len = (bytes + huge - 1) / huge * huge;
    void *m = aligned_alloc(huge, len);
    if (m)
        madvise(m, len, MADV_HUGEPAGE);
    return m;
}

static int make_linear(linear_weight *w, weight_format fmt, int rows, int cols, int fp8_subnormal,
                       uint8_t **mem)
{
    memset(w, 0, sizeof *w);
    w->fmt = fmt;
    w->rows = rows;
    w->cols = cols;
    if (fmt == WF_FP8_BLOCK) {
        w->block_rows = w->block_cols = 128;
        w->scale_cols = (cols + 127) / 128;
    } else if (fmt == WF_INT4_GROUP) {
        w->group_size = 32;
        w->row_words = (cols + 7) / 8;
        w->scale_cols = cols / 32;
    }
    uint64_t db = linear_weight_data_bytes(w), sb = linear_weight_scale_bytes(w);
    uint8_t *m = huge_alloc(db + sb);
    if (!m)
        return -1;
    fill_random(m, db);
    if (fmt == WF_FP8_BLOCK) {
        /* no NaN codes, and no subnormal ones: a checkpoint quantized by
         * block maxima has few (the testdata's FP8 model: 1,059 of 10.6 M),
         * while a random byte is subnormal one time in 18, and the kernels
         * without byte tables read those codes as subnormal floats, which
         * Intel cores take through a microcode assist (FP8 decode on this
         * path ran at 0.6 GB/s, not 10) */
        for (uint64_t i = 0; i < db; i++) {
            if ((m[i] & 0x7f) == 0x7f)
                m[i] &= 0xfe;
            if (!(m[i] & 0x78))
                m[i] |= 0x08;
        }
        /* --fp8-subnormal N: one in N as a checkpoint has them (its mantissa kept) */
        for (uint64_t i = fp8_subnormal ? (uint64_t)fp8_subnormal / 2 : db; i < db; i += (uint64_t)fp8_subnormal)
            m[i] = (uint8_t)((m[i] & 0x87) | (m[i] & 0x07 ? 0 : 1));
        float *s = (float *)(m + db);
        for (uint64_t i = 0; i < sb / 4; i++)
            s[i] = 1e-3f;
    } else if (fmt == WF_INT4_GROUP) {
        uint16_t *s = (uint16_t *)(m + db);
        for (uint64_t i = 0; i < sb / 2; i++)
            s[i] = 0x3c00;  /* bf16 0.0078 */
    } else {
        /* values as a checkpoint's are: 2^-16 <= |v| < 1, random sign and
         * mantissa. Random exponents made a tenth of the products subnormal,
         * which Intel cores take through a microcode assist: the FMA product
         * at 256 tokens ran at 6 GFLOP/s, not 130. */
        uint16_t *v = (uint16_t *)m;
        for (uint64_t i = 0; i < db / 2; i++)
            v[i] = (uint16_t)((v[i] & 0x807f) | (uint16_t)((111 + (v[i] >> 7) % 16) << 7));
    }
    w->data = m;
    w->scale = sb ? m + db : NULL;
    *mem = m;
    return 0;
}

static uint64_t expert_bytes(const bench_expert *x)
{
    return linear_weight_bytes(&x->p[0]) + linear_weight_bytes(&x->p[1]) +
           linear_weight_bytes(&x->p[2]);
}

typedef struct run_state {
    kernel_path path;
    int twin;
    thread_pool *pool;
    float *x, *y, *scratch;     /* y: [K2_TOPK][T][hidden] */
} run_state;

/* n experts' FFNs on the same x, as the engine runs a layer's experts */
static void experts_ffn(run_state *s, bench_expert *const *ex, int n, int T)
{
    ffn_job jobs[K2_TOPK];
    for (int i = 0; i < n; i++)
        jobs[i] = (ffn_job){&ex[i]->p[0], &ex[i]->p[1], &ex[i]->p[2], s->x, T,
                            s->y + (size_t)i * (size_t)T * K2_HIDDEN, -1, 0, 0};
    if (s->twin)
        for (int i = 0; i < n; i++)
            gpu_twin_ffn(s->path, s->pool, jobs[i].gate, jobs[i].up, jobs[i].down, jobs[i].x, T,
                         jobs[i].out, s->scratch);
    else
        ffn_cpu_run(s->path, s->pool, jobs, n, s->scratch);
}

static int parse_format(const char *name, weight_format *f)
{
    if (!strcmp(name, "int4"))
        *f = WF_INT4_GROUP;
    else if (!strcmp(name, "fp8"))
        *f = WF_FP8_BLOCK;
    else if (!strcmp(name, "bf16"))
        *f = WF_BF16;
    else
        return -1;
    return 0;
}

/* vs_fma: an AMX row's GFLOP/s over the FMA product's in the same run (0: not one) */
static void report(const kernel_bench_options *o, const char *kernels, const char *fmt, int threads,
                   int tokens, int experts, int set_experts, double set_bytes, double gbps,
                   double gflops, double bw, double peak, double secs, double vs_fma)
{
    if (!o->json) {
        char vs[16] = "-";
        if (vs_fma > 0)
            snprintf(vs, sizeof vs, "%.2f", vs_fma);
        fprintf(o->out, "%-7s %-7s %-5s %7d %7d %8d %9.2f %9.2f %9.2f %7.3f %9.1f %7.3f %6s\n",
                kernel_path_name(o->path), kernels, fmt, threads, tokens, experts, gbps, gflops, bw,
                gbps / bw, peak, peak > 0 ? gflops / peak : 0.0, vs);
        fflush(o->out);
        return;
    }
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "bench", "kernels");
    cJSON_AddStringToObject(j, "path", kernel_path_name(o->path));
    cJSON_AddStringToObject(j, "kernels", kernels);
    cJSON_AddStringToObject(j, "format", fmt);
    cJSON_AddNumberToObject(j, "threads", threads);
    cJSON_AddNumberToObject(j, "tokens", tokens);
    cJSON_AddNumberToObject(j, "experts", experts);
    cJSON_AddNumberToObject(j, "gbps", gbps);
    cJSON_AddNumberToObject(j, "gflops", gflops);
    cJSON_AddNumberToObject(j, "read_bw_gbps", bw);
    cJSON_AddNumberToObject(j, "ratio", gbps / bw);
    cJSON_AddNumberToObject(j, "peak_gflops", peak);
    cJSON_AddNumberToObject(j, "peak_ratio", peak > 0 ? gflops / peak : 0.0);
    cJSON_AddNumberToObject(j, "seconds", secs);
    cJSON_AddNumberToObject(j, "set_experts", set_experts);
    cJSON_AddNumberToObject(j, "set_gb", set_bytes / 1e9);
    if (vs_fma > 0)
        cJSON_AddNumberToObject(j, "fma_ratio", vs_fma);
    char *s = cJSON_PrintUnformatted(j);
    fprintf(o->out, "%s\n", s);
    fflush(o->out);
    free(s);
    cJSON_Delete(j);
}

/* The development VM's memory bandwidth drifts by 20-30 % from minute to
 * minute, so each measurement is cut into slices with a read of the yardstick
 * buffer before each: the ratio compares rates taken in the same seconds. */
#define BENCH_SLICES 4

static int bench_format(const kernel_bench_options *o, const char *fname, weight_format fmt,
                        thread_pool *pool, int threads, const uint8_t *read_buf, double peak,
                        errbuf *e)
{
    bench_expert probe;
    uint8_t *pm[3];
    for (int k = 0; k < 3; k++)
        if (make_linear(&probe.p[k], fmt, k == 2 ? K2_HIDDEN : K2_MOE_INTER,
                        k == 2 ? K2_MOE_INTER : K2_HIDDEN, o->fp8_subnormal, &pm[k]))
            return err_set(e, "out of memory for the benchmark experts");
    uint64_t per = expert_bytes(&probe);
    int n = (int)(o->set_gb * 1e9 / (double)per), raised = n < K2_TOPK * 2;
    if (raised)
        n = K2_TOPK * 2;
    uint64_t mem_total, mem_avail;
    meminfo_read(&mem_total, &mem_avail);
    if (mem_avail && (double)n * (double)per > 0.9 * (double)mem_avail) {
        for (int k = 0; k < 3; k++)
            free(pm[k]);
        return err_set(e, "%s: %d experts of %.1f MB (at least %d, two layers' worth) take %.2f GB, "
                       "more than 90%% of the %.1f GB of available memory", fname, n, per / 1e6,
                       K2_TOPK * 2, (double)n * (double)per / 1e9, mem_avail / 1e9);
    }
    if (!o->json) {
        fprintf(o->out, "  %s: %d distinct experts of %.1f MB (%.2f GB%s)\n", fname, n, per / 1e6,
                (double)n * (double)per / 1e9, raised ? ", more than --set-gb: two layers' worth at least" : "");
        fflush(o->out);
    }
    bench_expert *ex = calloc((size_t)n, sizeof *ex);
    if (!ex)
        return err_set(e, "out of memory");
    ex[0] = probe;
    ex[0].mem = NULL;
    uint8_t **mems = calloc((size_t)n * 3, sizeof *mems);
    for (int k = 0; k < 3; k++)
        mems[k] = pm[k];
    int rc = 0;
    for (int i = 1; i < n && !rc; i++)
        for (int k = 0; k < 3 && !rc; k++)
            if (make_linear(&ex[i].p[k], fmt, k == 2 ? K2_HIDDEN : K2_MOE_INTER,
                            k == 2 ? K2_MOE_INTER : K2_HIDDEN, o->fp8_subnormal, &mems[i * 3 + k]))
                rc = err_set(e, "out of memory for %d benchmark experts of %.1f MB", n, per / 1e6);
    int maxT = 1;
    for (int t = 0; t < o->n_tokens; t++)
        maxT = o->tokens[t] > maxT ? o->tokens[t] : maxT;
    run_state s = {.path = o->path, .twin = o->twin, .pool = pool};
    /* the most scratch any step needs: K2_TOPK decode jobs or one job of maxT */
    size_t scratch = 0;
    for (int t = 0; t < o->n_tokens; t++) {
        int T = o->tokens[t], nj = T <= 4 ? K2_TOPK : 1;
        ffn_job jobs[K2_TOPK];
        for (int i = 0; i < nj; i++)
            jobs[i] = (ffn_job){&ex[0].p[0], &ex[0].p[1], &ex[0].p[2], NULL, T, NULL, -1, 0, 0};
        size_t k = o->twin ? gpu_twin_ffn_scratch(jobs[0].gate, jobs[0].down, T, threads)
                           : ffn_cpu_scratch(jobs, nj, threads);
        scratch = k > scratch ? k : scratch;
    }
    s.x = malloc((size_t)maxT * K2_HIDDEN * 4);
    s.y = malloc((size_t)K2_TOPK * (size_t)maxT * K2_HIDDEN * 4);
    s.scratch = malloc(scratch * 4);
    if (!rc && (!s.x || !s.y || !s.scratch))
        rc = err_set(e, "out of memory");
    if (!rc)
        for (int i = 0; i < maxT * K2_HIDDEN; i++)
            s.x[i] = (float)((int)((int64_t)i * 7919 % 2001) - 1000) / 1000.0f;
    unsigned seed = 1;
    for (int ti = 0; ti < o->n_tokens && !rc; ti++) {
        int T = o->tokens[ti];
        /* decode: the k2 layer (8 random experts per step); batched: one expert */
        int per_step = T <= 4 ? K2_TOPK : 1;
        bench_expert *pick[K2_TOPK];
        for (int k = 0; k < per_step; k++)
            pick[k] = &ex[k];
        /* on AMX CPUs a batched row runs twice: the FMA product, then AMX */
        int variants = T >= LINEAR_BATCHED_MIN_T && o->path == KPATH_AVX512 && !o->twin &&
                       kernel_amx_supported() ? 2 : 1;
        double fma_gflops = 0;
        for (int v = 0; v < variants; v++) {
            if (variants == 2)
                kernel_amx_disable(v == 0);
            experts_ffn(&s, pick, per_step, T);     /* warm up the pool and the code */
            long steps = 0;
            double el = 0, read_s = 0;
            for (int slice = 0; slice < BENCH_SLICES; slice++) {
                read_s += read_pass(pool, o->path, read_buf);
                double t0 = now_seconds(), dt;
                do {
                    /* a layer's experts are distinct, as the router picks them:
                     * a repeat would be read from cache and overstate the rate */
                    for (int k = 0; k < per_step; k++) {
                        int repeat;
                        do {
                            pick[k] = &ex[rand_r(&seed) % (unsigned)n];
                            repeat = 0;
                            for (int j = 0; j < k; j++)
                                repeat |= pick[j] == pick[k];
                        } while (repeat);
                    }
                    experts_ffn(&s, pick, per_step, T);
                    steps++;
                    dt = now_seconds() - t0;
                } while (dt < o->seconds / BENCH_SLICES);
                el += dt;
            }
            double bw = BENCH_SLICES * (double)READ_BUF_BYTES / read_s / 1e9;
            double bytes = (double)steps * per_step * (double)per;
            double flops = (double)steps * per_step * T * 2.0 * 3.0 * K2_MOE_INTER * K2_HIDDEN;
            double gflops = flops / el / 1e9;
            report(o, o->twin ? "twin" : v == 1 ? "amx" : "cpu", fname, threads, T, per_step, n,
                   (double)n * (double)per, bytes / el / 1e9, gflops, bw, peak, el,
                   v == 1 ? gflops / fma_gflops : 0);
            fma_gflops = gflops;
        }
        if (variants == 2)
            kernel_amx_disable(0);
    }
    free(s.x);
    free(s.y);
    free(s.scratch);
    for (int i = 0; i < n * 3; i++)
        free(mems[i]);
    free(mems);
    free(ex);
    return rc;
}

double kernel_bench_read_bw(kernel_path path, int threads, errbuf *e)
{
    uint8_t *buf = huge_alloc(READ_BUF_BYTES);
    if (!buf)
        return err_set(e, "out of memory for the %llu MB read buffer",
                       (unsigned long long)(READ_BUF_BYTES >> 20));
    memset(buf, 1, READ_BUF_BYTES);
    thread_pool *pool;
    double bw = -1;
    if (thread_pool_create(&pool, threads, e) == 0) {
        bw = read_bandwidth(pool, path, buf);
        thread_pool_destroy(pool);
    }
    free(buf);
    return bw;
}

double kernel_bench_fma_peak(kernel_path path, int threads, errbuf *e)
{
    thread_pool *pool;
    if (thread_pool_create(&pool, threads, e))
        return -1;
    double peak = fma_peak(pool, path);
    thread_pool_destroy(pool);
    return peak;
}

int kernel_bench_run(const kernel_bench_options *o, errbuf *e)
{
    if (!kernel_path_supported(o->path))
        return err_set(e, "this CPU cannot run the %s kernels", kernel_path_name(o->path));
    uint8_t *buf = huge_alloc(READ_BUF_BYTES);
    if (!buf)
        return err_set(e, "out of memory for the %llu MB read buffer",
                       (unsigned long long)(READ_BUF_BYTES >> 20));
    memset(buf, 1, READ_BUF_BYTES);
    if (!o->json)
        fprintf(o->out, "%-7s %-7s %-5s %7s %7s %8s %9s %9s %9s %7s %9s %7s %6s\n", "path",
                "kernels", "fmt", "threads", "tokens", "experts", "GB/s", "GFLOP/s",
                "read GB/s", "ratio", "peak GF/s", "of peak", "vs FMA");
    int rc = 0;
    for (int ti = 0; ti < o->n_threads && !rc; ti++) {
        thread_pool *pool;
        if (thread_pool_create(&pool, o->threads[ti], e)) {
            rc = -1;
            break;
        }
        read_pass(pool, o->path, buf);      /* warm-up: page tables, the pool's threads */
        double peak = fma_peak(pool, o->path);
        char *list = strdup(o->formats), *save = NULL;
        for (char *f = strtok_r(list, ",", &save); f && !rc; f = strtok_r(NULL, ",", &save)) {
            weight_format fmt;
            if (parse_format(f, &fmt))
                rc = err_set(e, "unknown format '%s' (int4, fp8, bf16)", f);
            else
                rc = bench_format(o, f, fmt, pool, o->threads[ti], buf, peak, e);
        }
        free(list);
        thread_pool_destroy(pool);
    }
    free(buf);
    return rc;
}
