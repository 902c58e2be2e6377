/* routing_trace: in-memory events, the lz4 file format and CSV import (see
 * routing_trace.h). */
#include "routing_trace.h"

#include <errno.h>
#include <inttypes.h>
#include <lz4.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "core/base/fileutil.h"

#define MAGIC "MOETTRC1"
#define HEADER_BYTES 64
#define CHUNK_EVENTS 65536
#define MAX_TOP_K 64

#define KNOWN_FLAGS (TRACE_FLAG_WEIGHTS | TRACE_FLAG_TIERS | TRACE_FLAG_PREDICTED)

static size_t event_bytes(const routing_trace *t)
{
    size_t k = t->top_k;
    return 10 + 2 * k + ((t->flags & TRACE_FLAG_WEIGHTS) ? 4 * k : 0) +
           ((t->flags & TRACE_FLAG_TIERS) ? k + 8 : 0) +
           ((t->flags & TRACE_FLAG_PREDICTED) ? 10 * (size_t)t->depth : 0);
}

int trace_init(routing_trace *t, uint32_t n_layers, uint32_t n_experts, uint32_t top_k,
               uint32_t flags, uint32_t depth, errbuf *e)
{
    memset(t, 0, sizeof *t);
    if (top_k < 1 || top_k > MAX_TOP_K)
        return err_set(e, "trace: top_k %u outside 1..%d", top_k, MAX_TOP_K);
    if (n_experts < 1 || n_experts > 65536 || n_layers < 1 || n_layers > 65536)
        return err_set(e, "trace: %u layers of %u experts is outside 1..65536", n_layers, n_experts);
    if ((uint64_t)n_layers * n_experts > TRACE_MAX_KEYS)
        return err_set(e, "trace: %u layers of %u experts are more than %u (layer, expert) pairs",
                       n_layers, n_experts, TRACE_MAX_KEYS);
    if (flags & ~KNOWN_FLAGS)
        return err_set(e, "trace: unknown flags 0x%x", flags & ~KNOWN_FLAGS);
    if ((flags & TRACE_FLAG_PREDICTED) && (depth < 1 || depth > TRACE_MAX_DEPTH))
        return err_set(e, "trace: lookahead depth %u outside 1..%d", depth, TRACE_MAX_DEPTH);
    t->n_layers = n_layers;
    t->n_experts = n_experts;
    t->top_k = top_k;
    t->flags = flags;
    t->depth = (flags & TRACE_FLAG_PREDICTED) ? depth : 0;
    return 0;
}

void trace_free(routing_trace *t)
{
    free(t->stream);
    free(t->token);
    free(t->layer);
    free(t->experts);
    free(t->weights);
    free(t->origin);
    free(t->bytes);
    free(t->stall);
    free(t->pred_mask);
    free(t->pred_count);
    memset(t, 0, sizeof *t);
}

uint32_t trace_layers_routed(const routing_trace *t)
{
    uint8_t seen[UINT16_MAX + 1] = {0};
    uint32_t n = 0;
    for (uint64_t i = 0; i < t->n; i++)
        if (!seen[t->layer[i]]) {
            seen[t->layer[i]] = 1;
            n++;
        }
    return n;
}

static int reserve(routing_trace *t, uint64_t n, errbuf *e)
{
    if (n <= t->cap)
        return 0;
    uint64_t cap = t->cap ? t->cap : 4096;
    while (cap < n)
        cap *= 2;
    size_t k = t->top_k;
    uint32_t *s = realloc(t->stream, cap * sizeof *s);
    if (s)
        t->stream = s;
    uint32_t *tk = s ? realloc(t->token, cap * sizeof *tk) : NULL;
    if (tk)
        t->token = tk;
    uint16_t *l = tk ? realloc(t->layer, cap * sizeof *l) : NULL;
    if (l)
        t->layer = l;
    uint16_t *x = l ? realloc(t->experts, cap * k * sizeof *x) : NULL;
    if (x)
        t->experts = x;
    int ok = x != NULL;
#define GROW(field, per)                                                                      \
    do {                                                                                      \
        void *p_ = ok ? realloc(t->field, cap * (per) * sizeof *t->field) : NULL;             \
        if (p_)                                                                               \
            t->field = p_;                                                                    \
        ok = p_ != NULL;                                                                      \
    } while (0)
    if (t->flags & TRACE_FLAG_WEIGHTS)
        GROW(weights, k);
    if (t->flags & TRACE_FLAG_TIERS) {
        GROW(origin, k);
        GROW(bytes, 1);
        GROW(stall, 1);
    }
    if (t->flags & TRACE_FLAG_PREDICTED) {
        GROW(pred_mask, t->depth);
        GROW(pred_count, t->depth);
    }
#undef GROW
    if (!ok)
        return err_set(e, "out of memory for %" PRIu64 " trace events", cap);
    t->cap = cap;
    return 0;
}

int trace_append(routing_trace *t, uint32_t stream, uint32_t token, uint16_t layer,
                 const uint16_t *experts, const float *weights, errbuf *e)
{
    if (layer >= t->n_layers)
        return err_set(e, "trace: layer %u outside 0..%u", layer, t->n_layers - 1);
    for (uint32_t i = 0; i < t->top_k; i++) {
        if (experts[i] >= t->n_experts)
            return err_set(e, "trace: expert %u outside 0..%u", experts[i], t->n_experts - 1);
        for (uint32_t j = 0; j < i; j++)    /* a router picks an expert once */
            if (experts[j] == experts[i])
                return err_set(e, "trace: expert %u appears twice in one event", experts[i]);
    }
    if (reserve(t, t->n + 1, e))
        return -1;
    t->stream[t->n] = stream;
    t->token[t->n] = token;
    t->layer[t->n] = layer;
    memcpy(t->experts + t->n * t->top_k, experts, t->top_k * sizeof *experts);
    if (t->flags & TRACE_FLAG_WEIGHTS)
        memcpy(t->weights + t->n * t->top_k, weights, t->top_k * sizeof *weights);
    if (t->flags & TRACE_FLAG_TIERS) {
        memset(t->origin + t->n * t->top_k, 0, t->top_k);
        t->bytes[t->n] = 0;
        t->stall[t->n] = 0;
    }
    if (t->flags & TRACE_FLAG_PREDICTED)
        for (uint32_t d = 0; d < t->depth; d++) {
            t->pred_mask[t->n * t->depth + d] = 0;
            t->pred_count[t->n * t->depth + d] = 0;
        }
    t->n++;
    return 0;
}

void trace_set_tiers(routing_trace *t, uint64_t i, const uint8_t *origin, uint32_t bytes,
                     float stall)
{
    if (!(t->flags & TRACE_FLAG_TIERS) || i >= t->n)
        return;
    memcpy(t->origin + i * t->top_k, origin, t->top_k);
    t->bytes[i] = bytes;
    t->stall[i] = stall;
}

void trace_set_predicted(routing_trace *t, uint64_t i, uint32_t d, uint64_t mask, uint16_t count)
{
    if (!(t->flags & TRACE_FLAG_PREDICTED) || i >= t->n || d < 1 || d > t->depth)
        return;
    t->pred_mask[i * t->depth + d - 1] = mask;
    t->pred_count[i * t->depth + d - 1] = count;
}

/* ---- file format ---- */

static void put(uint8_t *p, uint64_t v, int n)
{
    for (int i = 0; i < n; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static void encode_event(const routing_trace *t, uint64_t i, uint8_t *p)
{
    put(p, t->stream[i], 4);
    put(p + 4, t->token[i], 4);
    put(p + 8, t->layer[i], 2);
    p += 10;
    for (uint32_t k = 0; k < t->top_k; k++, p += 2)
        put(p, t->experts[i * t->top_k + k], 2);
    if (t->flags & TRACE_FLAG_WEIGHTS)
        for (uint32_t k = 0; k < t->top_k; k++, p += 4) {
            uint32_t u;
            memcpy(&u, &t->weights[i * t->top_k + k], 4);
            put(p, u, 4);
        }
    if (t->flags & TRACE_FLAG_TIERS) {
        memcpy(p, t->origin + i * t->top_k, t->top_k);
        p += t->top_k;
        uint32_t u;
        memcpy(&u, &t->stall[i], 4);
        put(p, t->bytes[i], 4);
        put(p + 4, u, 4);
        p += 8;
    }
    if (t->flags & TRACE_FLAG_PREDICTED)
        for (uint32_t d = 0; d < t->depth; d++, p += 10) {
            put(p, t->pred_mask[i * t->depth + d], 8);
            put(p + 8, t->pred_count[i * t->depth + d], 2);
        }
}

int trace_write(const routing_trace *t, const char *path, errbuf *e)
{
    file_output o;
    int fd = file_output_open(&o, path, e);
    FILE *f = fd < 0 ? NULL : fdopen(fd, "wb");
    if (!f) {
        if (fd >= 0) {
            err_set(e, "%s: %s", path, strerror(errno));
            close(fd);
            file_output_abort(&o);
        }
        return -1;
    }
    size_t eb = event_bytes(t), raw_cap = eb * CHUNK_EVENTS;
    int bound = LZ4_compressBound((int)raw_cap);
    uint8_t *raw = malloc(raw_cap), *comp = malloc((size_t)bound);
    uint64_t n_chunks = (t->n + CHUNK_EVENTS - 1) / CHUNK_EVENTS;
    uint8_t h[HEADER_BYTES] = {0};
    memcpy(h, MAGIC, 8);
    put(h + 8, TRACE_VERSION, 4);
    put(h + 12, t->flags, 4);
    put(h + 16, t->n_layers, 4);
    put(h + 20, t->n_experts, 4);
    put(h + 24, t->top_k, 4);
    put(h + 28, t->depth, 4);
    put(h + 32, t->n, 8);
    put(h + 40, n_chunks, 8);
    int rc = 0;
    if (!raw || !comp)
        rc = err_set(e, "out of memory");
    else if (fwrite(h, 1, sizeof h, f) != sizeof h)
        rc = err_set(e, "%s: %s", path, strerror(errno));
    for (uint64_t c = 0; c < n_chunks && !rc; c++) {
        uint64_t first = c * CHUNK_EVENTS, cnt = t->n - first < CHUNK_EVENTS ? t->n - first : CHUNK_EVENTS;
        for (uint64_t i = 0; i < cnt; i++)
            encode_event(t, first + i, raw + i * eb);
        int rb = (int)(cnt * eb), cb = LZ4_compress_default((const char *)raw, (char *)comp, rb, bound);
        uint8_t ch[16];
        put(ch, (uint64_t)rb, 4);
        put(ch + 4, (uint64_t)cb, 4);
        put(ch + 8, XXH64(raw, (size_t)rb, 0), 8);
        if (cb <= 0 || fwrite(ch, 1, 16, f) != 16 || fwrite(comp, 1, (size_t)cb, f) != (size_t)cb)
            rc = err_set(e, "%s: writing chunk %" PRIu64 ": %s", path, c,
                         cb <= 0 ? "lz4 failed" : strerror(errno));
    }
    if (!rc && fflush(f) != 0)
        rc = err_set(e, "%s: %s", path, strerror(errno));
    if (!rc)
        rc = file_output_commit(&o, fileno(f), e);
    else
        file_output_abort(&o);
    fclose(f);
    free(raw);
    free(comp);
    return rc;
}

int trace_read(routing_trace *t, const char *path, errbuf *e)
{
    memset(t, 0, sizeof *t);
    struct stat st;
    if (stat(path, &st) == 0 && !S_ISREG(st.st_mode) && !S_ISFIFO(st.st_mode))
        return err_set(e, "%s is a %s, expected a routing trace file", path, file_kind(st.st_mode));
    FILE *f = fopen(path, "rb");
    if (!f)
        return err_set(e, "%s: %s", path, strerror(errno));
    uint8_t h[HEADER_BYTES];
    uint8_t *raw = NULL, *comp = NULL;
    int rc = -1;
    if (fread(h, 1, sizeof h, f) != sizeof h || memcmp(h, MAGIC, 8)) {
        err_set(e, "%s: not a moetier routing trace (no %s header)", path, MAGIC);
        goto out;
    }
    uint64_t version = get(h + 8, 4), flags = get(h + 12, 4);
    if (version < 1 || version > TRACE_VERSION) {
        err_set(e, "%s: trace version %u, this moetier reads versions 1 to %d", path,
                (unsigned)version, TRACE_VERSION);
        goto out;
    }
    if (version == 1 && (flags & ~(uint64_t)TRACE_FLAG_WEIGHTS)) {
        err_set(e, "%s: version 1 trace with flags 0x%x (version 1 knows only weights)", path,
                (unsigned)flags);
        goto out;
    }
    if (trace_init(t, (uint32_t)get(h + 16, 4), (uint32_t)get(h + 20, 4), (uint32_t)get(h + 24, 4),
                   (uint32_t)flags, (uint32_t)get(h + 28, 4), e)) {
        err_prefix(e, "%s: ", path);
        goto out;
    }
    uint64_t n = get(h + 32, 8), n_chunks = get(h + 40, 8);
    if (n_chunks != (n + CHUNK_EVENTS - 1) / CHUNK_EVENTS || n > (1ull << 40)) {
        err_set(e, "%s: header says %" PRIu64 " events in %" PRIu64 " chunks, which do not agree",
                path, n, n_chunks);
        goto out;
    }
    size_t eb = event_bytes(t), raw_cap = eb * CHUNK_EVENTS;
    int bound = LZ4_compressBound((int)raw_cap);
    raw = malloc(raw_cap);
    comp = malloc((size_t)bound);
    /* the header's counts are not trusted for allocation: events are added as
     * chunks decode, and a chunk takes at least its 16-byte header */
    fseek(f, 0, SEEK_END);
    long fsize = ftell(f);
    fseek(f, HEADER_BYTES, SEEK_SET);
    if (n_chunks > (uint64_t)(fsize - HEADER_BYTES) / 17) {
        err_set(e, "%s: header says %" PRIu64 " chunks, more than the file's %ld bytes can hold",
                path, n_chunks, fsize);
        goto out;
    }
    if (!raw || !comp) {
        err_set(e, "%s: out of memory", path);
        goto out;
    }
    for (uint64_t c = 0; c < n_chunks; c++) {
        uint8_t ch[16];
        long at = ftell(f);
        uint64_t first = c * CHUNK_EVENTS, cnt = n - first < CHUNK_EVENTS ? n - first : CHUNK_EVENTS;
        if (fread(ch, 1, 16, f) != 16) {
            err_set(e, "%s: truncated at chunk %" PRIu64 " (offset %ld)", path, c, at);
            goto out;
        }
        uint64_t rb = get(ch, 4), cb = get(ch + 4, 4);
        if (rb != cnt * eb || cb == 0 || cb > (uint64_t)bound) {
            err_set(e, "%s: chunk %" PRIu64 " at offset %ld has sizes %" PRIu64 "/%" PRIu64
                    ", expected %" PRIu64 " raw bytes", path, c, at, rb, cb, cnt * eb);
            goto out;
        }
        if (fread(comp, 1, cb, f) != cb) {
            err_set(e, "%s: truncated inside chunk %" PRIu64 " (offset %ld)", path, c, at);
            goto out;
        }
        int got = LZ4_decompress_safe((const char *)comp, (char *)raw, (int)cb, (int)raw_cap);
        if (got != (int)rb || XXH64(raw, rb, 0) != get(ch + 8, 8)) {
            err_set(e, "%s: chunk %" PRIu64 " at offset %ld is damaged (checksum or lz4 data)",
                    path, c, at);
            goto out;
        }
        for (uint64_t i = 0; i < cnt; i++) {
            const uint8_t *p = raw + i * eb;
            uint16_t ex[MAX_TOP_K];
            float w[MAX_TOP_K];
            for (uint32_t k = 0; k < t->top_k; k++)
                ex[k] = (uint16_t)get(p + 10 + 2 * k, 2);
            if (t->flags & TRACE_FLAG_WEIGHTS)
                for (uint32_t k = 0; k < t->top_k; k++) {
                    uint32_t u = (uint32_t)get(p + 10 + 2 * t->top_k + 4 * k, 4);
                    memcpy(&w[k], &u, 4);
                }
            if (trace_append(t, (uint32_t)get(p, 4), (uint32_t)get(p + 4, 4), (uint16_t)get(p + 8, 2),
                             ex, w, e)) {
                err_prefix(e, "%s: event %" PRIu64 ": ", path, first + i);
                goto out;
            }
            const uint8_t *q = p + 10 + 2 * t->top_k +
                               ((t->flags & TRACE_FLAG_WEIGHTS) ? 4 * t->top_k : 0);
            if (t->flags & TRACE_FLAG_TIERS) {
                for (uint32_t k = 0; k < t->top_k; k++)
                    if (q[k] > ORIGIN_EARLY) {
                        err_set(e, "%s: event %" PRIu64 ": expert origin %u is not one of 0..3",
                                path, first + i, q[k]);
                        goto out;
                    }
                uint32_t u = (uint32_t)get(q + t->top_k + 4, 4);
                float stall;
                memcpy(&stall, &u, 4);
                trace_set_tiers(t, t->n - 1, q, (uint32_t)get(q + t->top_k, 4), stall);
                q += t->top_k + 8;
            }
            for (uint32_t d = 0; d < t->depth; d++, q += 10) {
                /* bits only for the event's experts, at most as many as were predicted */
                uint64_t mask = get(q, 8), count = get(q + 8, 2);
                if ((t->top_k < 64 && mask >> t->top_k) || count > t->n_experts ||
                    (uint64_t)__builtin_popcountll(mask) > count) {
                    err_set(e, "%s: event %" PRIu64 ": prediction %u (mask 0x%" PRIx64 ", %" PRIu64
                            " predicted) does not fit %u experts of %u", path, first + i, d + 1,
                            mask, count, t->top_k, t->n_experts);
                    goto out;
                }
                trace_set_predicted(t, t->n - 1, d + 1, mask, (uint16_t)count);
            }
        }
    }
    if (fgetc(f) != EOF) {
        err_set(e, "%s: bytes after the last chunk", path);
        goto out;
    }
    rc = 0;
out:
    fclose(f);
    free(raw);
    free(comp);
    if (rc)
        trace_free(t);
    return rc;
}

/* ---- CSV import ---- */

/* A number of the CSV: digits only (strtoul alone would take blanks, + and -). */
static int csv_number(const char *p, char **end, unsigned long max, unsigned long *out)
{
    if (*p < '0' || *p > '9')
        return -1;
    errno = 0;
    *out = strtoul(p, end, 10);
    return errno || *out > max ? -1 : 0;
}

/* The line without its end: "\n" or "\r\n" (a "\r" elsewhere is not CSV). */
static int csv_chomp(char *line)
{
    size_t n = strlen(line);
    if (n && line[n - 1] == '\n')
        line[--n] = 0;
    if (n && line[n - 1] == '\r')
        line[--n] = 0;
    return strchr(line, '\r') ? -1 : 0;
}

static int by_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* A prompt whose rows come in two places (1, 2, 1): the order check sees
 * only neighbours, so its rows could repeat. */
static int prompt_split(const routing_trace *t, const char *name, errbuf *e)
{
    uint32_t *runs = malloc(t->n * sizeof *runs);
    if (!runs)
        return err_set(e, "%s: out of memory", name);
    uint64_t n = 0;
    for (uint64_t i = 0; i < t->n; i++)
        if (i == 0 || t->stream[i] != t->stream[i - 1])
            runs[n++] = t->stream[i];
    qsort(runs, n, sizeof *runs, by_u32);
    int rc = 0;
    for (uint64_t i = 1; i < n && !rc; i++)
        if (runs[i] == runs[i - 1])
            rc = err_set(e, "%s: the rows of prompt %u come in more than one place: each prompt's "
                         "events must be together, in order, each once", name, runs[i]);
    free(runs);
    return rc;
}

int trace_import_csv(routing_trace *t, FILE *in, const char *name, errbuf *e)
{
    memset(t, 0, sizeof *t);
    char line[4096];
    uint64_t lineno = 1;
    if (!fgets(line, sizeof line, in) || csv_chomp(line) ||
        strcmp(line, "prompt,token,layer,experts"))
        return err_set(e, "%s: line 1 must be the header prompt,token,layer,experts", name);
    /* ids are checked against the largest possible counts, then shrunk to the data;
     * top_k is the first row's count */
    uint32_t k = 0, max_layer = 0, max_expert = 0;
    uint64_t max_layer_line = 0, max_expert_line = 0;   /* where each was first seen */
    unsigned long prev[3] = {0};    /* the last row's prompt, token, layer */
    char *got = NULL;
    size_t cap = 0;
    ssize_t len;
    while ((len = getline(&got, &cap, in)) > 0) {
        lineno++;
        if ((size_t)len > sizeof line - 1 || memchr(got, 0, (size_t)len)) {
            int nul = memchr(got, 0, (size_t)len) != NULL;
            free(got);
            trace_free(t);
            if (nul)
                return err_set(e, "%s: line %" PRIu64 " holds a NUL byte", name, lineno);
            return err_set(e, "%s: line %" PRIu64 " is longer than %zu characters", name, lineno,
                           sizeof line - 2);
        }
        memcpy(line, got, (size_t)len + 1);
        free(got);      /* every return below leaves nothing behind */
        got = NULL;
        cap = 0;
        /* a last line without its line end is a file cut short (a download
         * or a pipe stopped mid-number would still give valid ids) */
        if (line[len - 1] != '\n') {
            int c = getc(in);
            if (c == EOF) {
                trace_free(t);
                if (ferror(in))
                    return err_set(e, "%s: read error after line %" PRIu64, name, lineno - 1);
                return err_set(e, "%s: line %" PRIu64 " has no line end: the file looks cut short (every "
                               "line of a trace ends in one)", name, lineno);
            }
            ungetc(c, in);
        }
        if (csv_chomp(line)) {
            trace_free(t);
            return err_set(e, "%s: line %" PRIu64 " has a carriage return inside it", name, lineno);
        }
        if (!line[0])
            continue;       /* a blank line (at the end, say) */
        char *p = line, *end;
        unsigned long v[3];
        for (int c = 0; c < 3; c++) {
            if (c == 2 && !csv_number(p, &end, 65535ul, &v[c]) && !*end) {
                trace_free(t);
                return err_set(e, "%s: line %" PRIu64 ": 3 fields, expected 4 (prompt,token,layer,experts): "
                               "the experts are missing", name, lineno);
            }
            if (csv_number(p, &end, c == 2 ? 65535ul : 0xfffffffful, &v[c]) || *end != ',') {
                trace_free(t);
                return err_set(e, "%s: line %" PRIu64 ": field %d (%s) must be a number in 0..%lu",
                               name, lineno, c + 1, c == 0 ? "prompt" : c == 1 ? "token" : "layer",
                               c == 2 ? 65535ul : 0xfffffffful);
            }
            p = end + 1;
        }
        uint16_t ex[MAX_TOP_K];
        uint32_t n = 0;
        for (;;) {
            while (*p == ' ')
                p++;
            if (!*p)
                break;
            unsigned long x;
            if (csv_number(p, &end, 65535, &x) || (*end && *end != ' ') || n >= MAX_TOP_K) {
                trace_free(t);
                return err_set(e, "%s: line %" PRIu64 ": experts must be up to %d ids in 0..65535 "
                               "separated by spaces", name, lineno, MAX_TOP_K);
            }
            ex[n++] = (uint16_t)x;
            p = end;
        }
        if (n == 0 || (k && n != k)) {
            trace_free(t);
            if (!n)
                return err_set(e, "%s: line %" PRIu64 ": no experts", name, lineno);
            return err_set(e, "%s: line %" PRIu64 ": %u experts, expected %u like the first row",
                           name, lineno, n, k);
        }
        /* a prompt's events come in order, token by token and layer by layer,
         * each once: a repeated or backward row is a damaged or merged file,
         * and replaying it would count hits that never happened */
        if (k && v[0] == prev[0] && (v[1] < prev[1] || (v[1] == prev[1] && v[2] <= prev[2]))) {
            trace_free(t);
            return err_set(e, "%s: line %" PRIu64 ": token %lu layer %lu of prompt %lu comes after "
                           "token %lu layer %lu: each prompt's events must be in order, each once",
                           name, lineno, v[1], v[2], v[0], prev[1], prev[2]);
        }
        memcpy(prev, v, sizeof prev);
        if (!k && trace_init(t, 1, 1, n, 0, 0, e))
            return err_prefix(e, "%s: ", name);
        if (!k)     /* the widest a trace may be until the data says how wide it is */
            t->n_layers = t->n_experts = 65536;
        k = n;
        if (trace_append(t, (uint32_t)v[0], (uint32_t)v[1], (uint16_t)v[2], ex, NULL, e)) {
            trace_free(t);
            return err_prefix(e, "%s: line %" PRIu64 ": ", name, lineno);
        }
        if (v[2] > max_layer) {
            max_layer = (uint32_t)v[2];
            max_layer_line = lineno;
        }
        for (uint32_t i = 0; i < n; i++)
            if (ex[i] > max_expert) {
                max_expert = ex[i];
                max_expert_line = lineno;
            }
    }
    free(got);
    if (ferror(in)) {
        trace_free(t);
        return err_set(e, "%s: read error after line %" PRIu64, name, lineno);
    }
    if (t->n == 0) {
        trace_free(t);
        return err_set(e, "%s: no events after the header", name);
    }
    if (prompt_split(t, name, e)) {
        trace_free(t);
        return -1;
    }
    t->n_layers = max_layer + 1;
    t->n_experts = max_expert + 1;
    if ((uint64_t)t->n_layers * t->n_experts > TRACE_MAX_KEYS) {
        err_set(e, "%s: the events span %u layers (layer %u on line %" PRIu64 ") of %u experts "
                "(expert %u on line %" PRIu64 "), more than %u (layer, expert) pairs", name, t->n_layers,
                max_layer, max_layer_line, t->n_experts, max_expert, max_expert_line, TRACE_MAX_KEYS);
        trace_free(t);
        return -1;
    }
    return 0;
}
