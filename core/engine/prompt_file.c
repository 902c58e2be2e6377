/* prompt_file: see prompt_file.h. */
#include "prompt_file.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "core/base/fileutil.h"
#include "core/base/le_bytes.h"

/* header fields, at these offsets */
enum {
    H_MAGIC = 0, H_VERSION = 8, H_HEADER_BYTES = 12, H_MODEL = 16, H_COMPUTE = 24,
    H_LAYERS = 56, H_ROW = 60, H_VOCAB = 64, H_POSITIONS = 68, H_FLAGS = 72, H_BASE = 76,
};
#define FLAG_LOGITS 1u

_Static_assert(sizeof(int) == 4, "token ids are kept as int32");

int prompt_file_probe(const char *path, errbuf *e)
{
    char target[4096];
    if (file_dangling_link(path, target, sizeof target))
        return err_set(e, "%s: a symbolic link to nothing (%s)", path, target);
    struct stat sb;
    if (stat(path, &sb) != 0) {
        if (errno == ENOENT)
            return 0;
        return err_set(e, "%s: %s", path, strerror(errno));
    }
    if (!S_ISREG(sb.st_mode))
        return err_set(e, "%s: is a %s, expected a prompt cache file", path, file_kind(sb.st_mode));
    if (sb.st_size == 0)
        return 0;
    int fd = file_open_regular(path, O_RDONLY, 0, e);
    if (fd < 0)
        return -1;
    uint8_t head[12];
    ssize_t got = pread(fd, head, sizeof head, 0);
    int er = errno;
    close(fd);
    if (got < 0)
        return err_set(e, "%s: cannot read: %s", path, strerror(er));
    if (got < 8 || memcmp(head, PROMPT_FILE_MAGIC, 8))
        return err_set(e, "%s is not a moetier prompt cache (it does not start with \"%s\"); "
                       "it is left as it is: give --prompt-cache a new file's name",
                       path, PROMPT_FILE_MAGIC);
    if (got == (ssize_t)sizeof head && le_get_u32(head + H_VERSION) == 2)
        return err_set(e, "%s holds part of a conversation of a server's --prompt-cache-dir; it is "
                       "left as it is: give --prompt-cache a file of its own", path);
    return 1;
}

/* err_set, returning PROMPT_FILE_DAMAGED: what the file holds is wrong (not
 * the system's failure to read it, nor another version's format) */
#define damaged(...) (err_set(__VA_ARGS__), PROMPT_FILE_DAMAGED)

/* pread of exactly n bytes at off */
static int read_at(int fd, void *buf, size_t n, uint64_t off, const char *path, errbuf *e)
{
    char *p = buf;
    while (n) {
        ssize_t got = pread(fd, p, n, (off_t)off);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0)
            return err_set(e, "%s: cannot read: %s", path, strerror(errno));
        if (got == 0)
            return err_set(e, "%s: cut short while being read", path);
        p += got;
        off += (uint64_t)got;
        n -= (size_t)got;
    }
    return 0;
}

/* The header against id and en's model, then the ids and logits into memory. */
static int check(prompt_file *pf, const prompt_identity *id, const engine *en, errbuf *e)
{
    const char *path = pf->path;
    uint8_t h[PROMPT_FILE_HEADER];
    if (pf->size < PROMPT_FILE_HEADER + 8)
        return damaged(e, "%s: cut short (%zu bytes)", path, pf->size);
    if (read_at(pf->fd, h, sizeof h, 0, path, e))
        return -1;
    if (memcmp(h + H_MAGIC, PROMPT_FILE_MAGIC, 8))
        return damaged(e, "%s: not a prompt cache (%zu bytes)", path, pf->size);
    uint32_t version = le_get_u32(h + H_VERSION);
    if (version < 1 || version > PROMPT_FILE_VERSION)
        return err_set(e, "%s: format version %u (this moetier reads version %d)", path, version,
                       PROMPT_FILE_VERSION);
    if (le_get_u32(h + H_HEADER_BYTES) != PROMPT_FILE_HEADER)
        return damaged(e, "%s: a header of %u bytes (version %u's has %d)", path,
                       le_get_u32(h + H_HEADER_BYTES), version, PROMPT_FILE_HEADER);
    uint32_t layers = le_get_u32(h + H_LAYERS), row = le_get_u32(h + H_ROW), vocab = le_get_u32(h + H_VOCAB);
    uint32_t n = le_get_u32(h + H_POSITIONS), flags = le_get_u32(h + H_FLAGS);
    uint32_t base = version >= 2 ? le_get_u32(h + H_BASE) : 0;
    const model_config *c = en->cfg;
    /* what made the file first: a file of the other cache type has rows of
     * another width too, and this says why */
    if (le_get_u64(h + H_MODEL) != id->model)
        return err_set(e, "%s: made from another checkpoint, or before its config.json changed", path);
    char compute[sizeof id->compute + 1] = {0};
    memcpy(compute, h + H_COMPUTE, sizeof id->compute);
    if (strcmp(compute, id->compute))
        return err_set(e, "%s: made with the %s kernels; this run computes with the %s ones, whose "
                       "bits differ", path, compute, id->compute);
    if (layers != (uint32_t)en->kv.n_layers || row != (uint32_t)kv_cache_row_floats(&en->kv) ||
        vocab != (uint32_t)c->vocab_size)
        return err_set(e, "%s: made for a model with %u layers, %u cache floats a position and a "
                       "vocabulary of %u (this one: %d, %d, %d)", path, layers, row, vocab,
                       en->kv.n_layers, kv_cache_row_floats(&en->kv), c->vocab_size);
    if (n == 0 || n > INT_MAX || (uint64_t)n > pf->size / 4 || (flags & ~FLAG_LOGITS) ||
        base >= n || (version >= 2 && base == 0))
        return damaged(e, "%s: damaged header (%u positions from %u, flags %#x)", path, n, base,
                       flags);
    uint64_t ids_at = PROMPT_FILE_HEADER, logits_at = ids_at + 4ull * n;
    pf->rows_at = logits_at + (flags & FLAG_LOGITS ? 4ull * vocab : 0);
    uint64_t want = pf->rows_at + 4ull * layers * row * (n - base) + 8;
    if (pf->size != want)
        return damaged(e, "%s: %zu bytes, where its header describes %llu (cut short, or damaged)",
                       path, pf->size, (unsigned long long)want);
    pf->n = (int)n;
    pf->base = (int)base;
    pf->ids = malloc((size_t)n * sizeof *pf->ids);
    pf->logits = flags & FLAG_LOGITS ? malloc((size_t)vocab * sizeof *pf->logits) : NULL;
    pf->st = XXH3_createState();
    if (!pf->ids || (flags & FLAG_LOGITS && !pf->logits) || !pf->st)
        return err_set(e, "%s: out of memory for its ids", path);
    uint8_t sum[8];
    if (read_at(pf->fd, pf->ids, (size_t)n * sizeof *pf->ids, ids_at, path, e) ||
        (pf->logits && read_at(pf->fd, pf->logits, (size_t)vocab * sizeof *pf->logits, logits_at,
                               path, e)) ||
        read_at(pf->fd, sum, sizeof sum, pf->size - 8, path, e))
        return -1;
    for (int i = 0; i < pf->n; i++)
        if (pf->ids[i] < 0 || (uint32_t)pf->ids[i] >= vocab)
            return damaged(e, "%s: damaged (id %d at position %d)", path, pf->ids[i], i);
    pf->sum = le_get_u64(sum);
    pf->layers = (int)layers;
    pf->row = (int)row;
    XXH3_64bits_reset(pf->st);
    XXH3_64bits_update(pf->st, h, sizeof h);
    XXH3_64bits_update(pf->st, pf->ids, (size_t)n * sizeof *pf->ids);
    if (pf->logits)
        XXH3_64bits_update(pf->st, pf->logits, (size_t)vocab * sizeof *pf->logits);
    return 0;
}

int prompt_file_open(prompt_file *pf, const char *path, const prompt_identity *id,
                     const engine *en, errbuf *e)
{
    memset(pf, 0, sizeof *pf);
    snprintf(pf->path, sizeof pf->path, "%s", path);
    pf->fd = file_open_regular(path, O_RDONLY, 0, e);
    if (pf->fd < 0)
        return -1;
    struct stat sb;
    if (fstat(pf->fd, &sb) != 0) {
        err_set(e, "%s: %s", path, strerror(errno));
        prompt_file_close(pf);
        return -1;
    }
    pf->size = (size_t)sb.st_size;
    int rc = check(pf, id, en, e);
    if (rc)
        prompt_file_close(pf);
    return rc;
}

void prompt_file_close(prompt_file *pf)
{
    if (pf->fd >= 0)
        close(pf->fd);
    free(pf->ids);
    free(pf->logits);
    XXH3_freeState(pf->st);
    memset(pf, 0, sizeof *pf);
    pf->fd = -1;
}

/* positions a piece of the rows holds: about 1 MB, in the cache while it is
 * hashed and handed on */
#define PIECE_BYTES (1u << 20)

int prompt_file_read_rows(prompt_file *pf, prompt_rows_sink sink, void *ctx, errbuf *e)
{
    if (!pf->st)
        return err_set(e, "%s: its rows were read already", pf->path);
    size_t row_bytes = (size_t)pf->row * sizeof(float);
    int per_piece = row_bytes >= PIECE_BYTES ? 1 : (int)(PIECE_BYTES / row_bytes);
    if (per_piece > pf->n - pf->base)
        per_piece = pf->n - pf->base;
    float *buf = malloc((size_t)per_piece * row_bytes);
    if (!buf)
        return err_set(e, "%s: out of memory for its rows", pf->path);
    uint64_t off = pf->rows_at;
    int rc = 0;
    for (int l = 0; l < pf->layers && !rc; l++)
        for (int first = pf->base; first < pf->n && !rc; first += per_piece) {
            int count = pf->n - first < per_piece ? pf->n - first : per_piece;
            size_t bytes = (size_t)count * row_bytes;
            rc = read_at(pf->fd, buf, bytes, off, pf->path, e);
            if (!rc) {
                XXH3_64bits_update(pf->st, buf, bytes);
                if (sink)
                    sink(ctx, l, first, count, buf);
                off += bytes;
            }
        }
    free(buf);
    uint64_t sum = XXH3_64bits_digest(pf->st);
    XXH3_freeState(pf->st);
    pf->st = NULL;
    if (!rc && sum != pf->sum)
        rc = damaged(e, "%s: damaged (its checksum does not match its bytes)", pf->path);
    return rc;
}

typedef struct restore_sink {
    engine *en;
    int k;                      /* positions wanted */
} restore_sink;

static void to_engine(void *ctx, int layer, int first, int count, const float *rows)
{
    restore_sink *r = ctx;
    int end = first + count < r->k ? first + count : r->k;
    if (end > first)
        kv_cache_load_layer(&r->en->kv, layer, first, end, rows);
}

int prompt_file_restore(prompt_file *pf, engine *en, const int *ids, int n, float *logits, errbuf *e)
{
    if (pf->base)
        return err_set(e, "%s: holds the rows of positions %d to %d only, continuing another "
                       "file's (a file of a server's --prompt-cache-dir)", pf->path, pf->base, pf->n);
    int k = ids_common_prefix((const int *)pf->ids, pf->n, ids, n);
    int whole = k == n && pf->n == n && pf->logits;
    if (!whole && k > n - 1)
        k = n - 1;
    if (k <= 0)
        return 0;
    if (k > en->kv.max_ctx)
        return err_set(e, "%s: cannot load %d positions into a cache of %d", pf->path, k,
                       en->kv.max_ctx);
    /* into the cache's memory as they are read; they count only once the
     * checksum agrees */
    restore_sink r = {.en = en, .k = k};
    if (prompt_file_read_rows(pf, to_engine, &r, e))
        return -1;
    engine_set_prefix(en, ids, k);
    if (whole)
        memcpy(logits, pf->logits, (size_t)en->cfg->vocab_size * sizeof *logits);
    return k;
}

/* the bytes go to the file and into the checksum */
static int emit(int fd, XXH3_state_t *st, const void *p, size_t n)
{
    XXH3_64bits_update(st, p, n);
    return fd_write_all(fd, p, n);
}

/* Where the rows come from: the engine's cache (a layer at a time, through
 * buf), or host memory in spans that cover positions [base, n) in order. */
typedef struct row_source {
    const engine *en;
    const kv_span *spans;
    int n_spans;
    int base;
} row_source;

/* Layer l's rows of positions [base, n) to fd (and the checksum). */
static int emit_layer(int fd, XXH3_state_t *st, const row_source *src, int l, int n, float *buf)
{
    size_t row = (size_t)kv_cache_row_floats(&src->en->kv);
    if (!src->spans) {
        kv_cache_save_layer(&src->en->kv, l, 0, n, buf);
        return emit(fd, st, buf, (size_t)n * row * sizeof *buf);
    }
    int at = src->base;
    for (int i = 0; i < src->n_spans && at < n; i++) {
        const kv_span *s = &src->spans[i];
        int hi = s->end < n ? s->end : n;
        if (hi <= at)
            continue;
        const float *p = s->rows + ((size_t)l * (size_t)s->stride + (size_t)(at - s->first)) * row;
        if (emit(fd, st, p, (size_t)(hi - at) * row * sizeof *p))
            return -1;
        at = hi;
    }
    return 0;
}

static int write_file(const char *path, const prompt_identity *id, const row_source *src, int n,
                      const int *ids, const float *logits, errbuf *e)
{
    const engine *en = src->en;
    struct stat sb;
    if (stat(path, &sb) == 0 && !S_ISREG(sb.st_mode))
        return err_set(e, "%s: is a %s, expected a prompt cache file", path, file_kind(sb.st_mode));
    int V = en->cfg->vocab_size;
    size_t layer_floats = (size_t)n * (size_t)kv_cache_row_floats(&en->kv);
    float *buf = src->spans ? NULL : malloc(layer_floats ? layer_floats * sizeof *buf : 1);
    XXH3_state_t *st = XXH3_createState();
    if ((!buf && !src->spans) || !st) {
        free(buf);
        XXH3_freeState(st);
        return err_set(e, "%s: out of memory for a layer's rows (%zu bytes)", path,
                       layer_floats * sizeof *buf);
    }
    XXH3_64bits_reset(st);
    uint8_t h[PROMPT_FILE_HEADER] = {0};
    memcpy(h + H_MAGIC, PROMPT_FILE_MAGIC, 8);
    le_put_u32(h + H_VERSION, src->base ? 2 : 1);
    le_put_u32(h + H_HEADER_BYTES, PROMPT_FILE_HEADER);
    le_put_u64(h + H_MODEL, id->model);
    memcpy(h + H_COMPUTE, id->compute, strnlen(id->compute, sizeof id->compute));
    le_put_u32(h + H_LAYERS, (uint32_t)en->kv.n_layers);
    le_put_u32(h + H_ROW, (uint32_t)kv_cache_row_floats(&en->kv));
    le_put_u32(h + H_VOCAB, (uint32_t)V);
    le_put_u32(h + H_POSITIONS, (uint32_t)n);
    le_put_u32(h + H_FLAGS, logits ? FLAG_LOGITS : 0);
    le_put_u32(h + H_BASE, (uint32_t)src->base);
    file_output o;
    int fd = file_output_open_private(&o, path, e), bad = fd < 0;
    if (!bad)
        bad = emit(fd, st, h, sizeof h) || emit(fd, st, ids, (size_t)n * sizeof *ids) ||
              (logits && emit(fd, st, logits, (size_t)V * sizeof *logits));
    for (int l = 0; !bad && l < en->kv.n_layers; l++)
        bad = emit_layer(fd, st, src, l, n, buf);
    if (!bad) {
        uint8_t sum[8];
        le_put_u64(sum, XXH3_64bits_digest(st));
        bad = fd_write_all(fd, sum, sizeof sum);
    }
    int er = errno;
    free(buf);
    XXH3_freeState(st);
    if (fd < 0)
        return -1;
    if (bad) {
        close(fd);
        file_output_abort(&o);
        return err_set(e, "%s: write failed: %s", o.path, strerror(er));
    }
    int rc = file_output_commit(&o, fd, e);
    close(fd);
    return rc;
}

int prompt_file_save(const char *path, const prompt_identity *id, const engine *en,
                     const float *logits, errbuf *e)
{
    row_source src = {.en = en};
    return write_file(path, id, &src, en->n_past, en->cached_ids, logits, e);
}

int prompt_file_save_spans(const char *path, const prompt_identity *id, const engine *en,
                           const int *ids, int n, int base, const kv_span *spans, int n_spans,
                           errbuf *e)
{
    if (base < 0 || base >= n)
        return err_set(e, "%s: rows from position %d of %d", path, base, n);
    int covered = base;
    for (int i = 0; i < n_spans; i++)
        if (spans[i].first <= covered && spans[i].end > covered)
            covered = spans[i].end;
    if (covered < n)
        return err_set(e, "%s: the rows to write end at position %d, before %d", path, covered, n);
    row_source src = {.en = en, .spans = spans, .n_spans = n_spans, .base = base};
    return write_file(path, id, &src, n, ids, NULL, e);
}
