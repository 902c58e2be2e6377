/* store_writer: conversion with a resume journal, and the checksum check
 * (see store_writer.h). */
#include "store_writer.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "core/base/fileutil.h"
#include "core/base/progress.h"
#include "tiers/store_source.h"

#define JOURNAL_MAGIC "MOETJNL1"
#define JOURNAL_HEADER 32      /* magic, plan hash, fingerprint, experts per file */
#define JOURNAL_ROW 48          /* 40-byte blob row + XXH3 of it */
#define SYNC_EVERY_BYTES (256ull << 20)

static void put_le(uint8_t *p, uint64_t v, int n)
{
    for (int i = 0; i < n; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get_le(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static void encode_row(uint8_t *r, const store_blob *b)
{
    memset(r, 0, JOURNAL_ROW);
    put_le(r, b->layer, 4);
    put_le(r + 4, b->expert, 4);
    put_le(r + 8, b->file, 4);
    put_le(r + 16, b->offset, 8);
    put_le(r + 24, b->bytes, 8);
    put_le(r + 32, b->xxh3, 8);
    put_le(r + 40, XXH3_64bits(r, 40), 8);
}

/* What identifies a conversion: source and layout. */
static uint64_t plan_hash(uint64_t fingerprint, const store_layout *L, uint64_t per_file)
{
    uint64_t v[4] = {fingerprint, L->blob_bytes, L->slot_bytes, per_file};
    return XXH3_64bits(v, sizeof v);
}

typedef struct writer {
    const model_weights *mw;
    const convert_options *o;
    store_layout L;
    uint64_t fingerprint, per_file, plan;
    store_blob *blobs;          /* [n_layers][n_experts] */
    int *order;                 /* blob i -> index into blobs */
    int n;
    int n_files;
    int *fds;
    int jfd;
    char jpath[4096];
} writer;

static int data_fd(writer *w, int f, errbuf *e)
{
    if (w->fds[f] >= 0)
        return w->fds[f];
    char path[4096];
    store_file_path(w->o->out_dir, f, path, sizeof path);
    /* (O_CREAT would make the link's target in whatever its path reaches: the
     * bare mount point of a disk not mounted) */
    if (store_file_dangling(path, e))
        return -1;
    w->fds[f] = file_open_regular(path, O_RDWR | O_CREAT, 0644, e);
    return w->fds[f];
}

/* What the journal says of the conversion it records: its plan, the source's
 * fingerprint and the experts per file (0, 0, 0 when there is no journal;
 * the last two are 0 in journals that predate them). */
static void journal_owner(const char *jpath, uint64_t *plan, uint64_t *fingerprint,
                          uint64_t *per_file)
{
    *plan = *fingerprint = *per_file = 0;
    int fd = file_open_regular(jpath, O_RDONLY, 0, NULL);
    if (fd < 0)
        return;
    uint8_t h[JOURNAL_HEADER];
    if (pread(fd, h, sizeof h, 0) == (ssize_t)sizeof h && !memcmp(h, JOURNAL_MAGIC, 8)) {
        *plan = get_le(h + 8, 8);
        *fingerprint = get_le(h + 16, 8);
        *per_file = get_le(h + 24, 8);
    }
    close(fd);
}

/* Reads the journal; returns how many leading blobs are safely on disk. */
static int journal_resume(writer *w, errbuf *e)
{
    int fd = file_open_regular(w->jpath, O_RDWR, 0, NULL);
    if (fd < 0)
        return 0;
    uint8_t h[JOURNAL_HEADER];
    int done = 0;
    if (pread(fd, h, sizeof h, 0) == (ssize_t)sizeof h && !memcmp(h, JOURNAL_MAGIC, 8) &&
        get_le(h + 8, 8) == w->plan) {
        uint8_t r[JOURNAL_ROW];
        while (done < w->n &&
               pread(fd, r, sizeof r, JOURNAL_HEADER + (off_t)done * JOURNAL_ROW) == JOURNAL_ROW) {
            const store_blob *want = &w->blobs[w->order[done]];
            if (get_le(r + 40, 8) != XXH3_64bits(r, 40) || get_le(r, 4) != want->layer ||
                get_le(r + 4, 4) != want->expert || get_le(r + 8, 4) != want->file ||
                get_le(r + 16, 8) != want->offset || get_le(r + 24, 8) != want->bytes)
                break;  /* a torn or foreign record: everything from here is redone */
            w->blobs[w->order[done]].xxh3 = get_le(r + 32, 8);
            done++;
        }
    }
    close(fd);
    return done;
}

static int journal_start(writer *w, int done, errbuf *e)
{
    w->jfd = file_open_regular(w->jpath, O_RDWR | O_CREAT, 0644, e);
    if (w->jfd < 0)
        return -1;
    uint8_t h[JOURNAL_HEADER] = {0};
    memcpy(h, JOURNAL_MAGIC, 8);
    put_le(h + 8, w->plan, 8);
    put_le(h + 16, w->fingerprint, 8);
    put_le(h + 24, w->per_file, 8);
    if (ftruncate(w->jfd, JOURNAL_HEADER + (off_t)done * JOURNAL_ROW) != 0 ||
        pwrite(w->jfd, h, sizeof h, 0) != (ssize_t)sizeof h || fdatasync(w->jfd) != 0)
        return err_set(e, "%s: %s", w->jpath, strerror(errno));
    return 0;
}

/* Makes blobs [from, to) durable: data first, then their journal records. */
static int commit(writer *w, int from, int to, errbuf *e)
{
    if (from == to)
        return 0;
    for (int f = 0; f < w->n_files; f++)
        if (w->fds[f] >= 0 && fdatasync(w->fds[f]) != 0)
            return err_set(e, "%s/experts-%05d.bin: %s", w->o->out_dir, f, strerror(errno));
    size_t bytes = (size_t)(to - from) * JOURNAL_ROW;
    uint8_t *rows = malloc(bytes);
    if (!rows)
        return err_set(e, "out of memory");
    for (int i = from; i < to; i++)
        encode_row(rows + (size_t)(i - from) * JOURNAL_ROW, &w->blobs[w->order[i]]);
    ssize_t n = pwrite(w->jfd, rows, bytes, JOURNAL_HEADER + (off_t)from * JOURNAL_ROW);
    free(rows);
    if (n != (ssize_t)bytes || fdatasync(w->jfd) != 0)
        return err_set(e, "%s: %s", w->jpath, n < 0 ? strerror(errno) : "short write");
    return 0;
}

/* The checkpoint pages of an expert are not needed again once copied; dropping
 * them keeps the converter's resident memory at about one blob. */
static int write_blobs(writer *w, int done, errbuf *e)
{
    uint8_t *buf = aligned_alloc(STORE_ALIGN, w->L.slot_bytes);
    if (!buf)
        return err_set(e, "out of memory for one blob (%" PRIu64 " bytes)", w->L.slot_bytes);
    progress p;
    progress_begin(&p, w->o->log, "converting experts", (uint64_t)w->n * w->L.slot_bytes);
    progress_advance(&p, (uint64_t)done * w->L.slot_bytes);
    int committed = done, rc = 0;
    uint64_t pending = 0;
    const model_config *c = &w->mw->cfg;
    for (int i = done; i < w->n && !rc; i++) {
        store_blob *b = &w->blobs[w->order[i]];
        const expert_view *v = &w->mw->experts[(size_t)b->layer * (size_t)c->n_routed_experts + b->expert];
        store_layout_pack(&w->L, v, buf);
        b->xxh3 = XXH3_64bits(buf, w->L.blob_bytes);
        int fd = data_fd(w, (int)b->file, e);
        if (fd < 0) {
            rc = -1;
            break;
        }
        uint64_t off = 0;
        while (off < w->L.slot_bytes) {
            ssize_t n = pwrite(fd, buf + off, w->L.slot_bytes - off, (off_t)(b->offset + off));
            if (n <= 0) {
                rc = err_set(e, "%s/experts-%05u.bin: writing layer %u expert %u: %s",
                             w->o->out_dir, b->file, b->layer, b->expert,
                             n < 0 ? strerror(errno) : "no progress (disk full?)");
                break;
            }
            off += (uint64_t)n;
        }
        pending += w->L.slot_bytes;
        progress_advance(&p, w->L.slot_bytes);
        if (!rc && (pending >= SYNC_EVERY_BYTES || i + 1 == w->n)) {
            rc = commit(w, committed, i + 1, e);
            committed = i + 1;
            pending = 0;
        }
        if (!rc && w->o->stop_after > 0 && i + 1 - done >= w->o->stop_after) {
            commit(w, committed, i + 1, e);
            rc = err_set(e, "conversion stopped after %ld blobs (test hook)", w->o->stop_after);
        }
    }
    (rc ? progress_stop : progress_end)(&p);
    free(buf);
    return rc;
}

static void remove_index(const char *dir)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, STORE_INDEX_JSON);
    unlink(path);
    snprintf(path, sizeof path, "%s/%s", dir, STORE_INDEX_BIN);
    unlink(path);
}

static void unlink_sources(const char *dir)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", dir, STORE_JOURNAL_SOURCES);
    unlink(path);
}

/* How many of blobs [0, done) the data files still hold whole: the journal
 * says what was written, but a file may have been cut or deleted since; the
 * blobs from the first one missing are written again. */
static int blobs_on_disk(const writer *w, int done)
{
    for (int f = 0; f < w->n_files && (uint64_t)done > (uint64_t)f * w->per_file; f++) {
        char path[4096];
        store_file_path(w->o->out_dir, f, path, sizeof path);
        struct stat sb;
        uint64_t whole = stat(path, &sb) == 0 ? (uint64_t)sb.st_size / w->L.slot_bytes : 0;
        uint64_t first = (uint64_t)f * w->per_file, listed = (uint64_t)done - first;
        if (listed > w->per_file)
            listed = w->per_file;     /* the file is full; later ones hold the rest */
        if (whole < listed)
            return (int)(first + whole);
    }
    return done;
}

/* Cuts the data files to what blobs [0, done) occupy (none shorter: see
 * blobs_on_disk); files past the store's go. */
static int trim_files(writer *w, int done, errbuf *e)
{
    for (int f = 0;; f++) {
        char path[4096];
        store_file_path(w->o->out_dir, f, path, sizeof path);
        struct stat sb;
        if (stat(path, &sb) != 0) {
            if (f < w->n_files)
                continue;       /* written again from its first blob */
            break;
        }
        if (!S_ISREG(sb.st_mode))
            return err_set(e, "%s: is a %s, where an expert store keeps a data file: move it "
                           "away or give another -o", path, file_kind(sb.st_mode));
        uint64_t first = (uint64_t)f * w->per_file, in_file = 0;
        if ((uint64_t)done > first)
            in_file = (uint64_t)done - first < w->per_file ? (uint64_t)done - first : w->per_file;
        uint64_t keep = in_file * w->L.slot_bytes;
        if (f >= w->n_files) {
            if (unlink(path) != 0)
                return err_set(e, "%s: %s", path, strerror(errno));
            continue;
        }
        if ((uint64_t)sb.st_size != keep && truncate(path, (off_t)keep) != 0)
            return err_set(e, "%s: %s", path, strerror(errno));
    }
    return 0;
}

/* An interrupted conversion in the directory is days of work for a large
 * checkpoint: it is only restarted when asked (--force) or when it cannot be
 * resumed anyway (another store layout). Without --file-gb, its experts per
 * file are kept; the plan hash vouches for the value read. */
static int resume_or_refuse(writer *w, errbuf *e)
{
    const convert_options *o = w->o;
    uint64_t plan, fingerprint, per_file, before[STORE_FINGERPRINTS_BEFORE];
    journal_owner(w->jpath, &plan, &fingerprint, &per_file);
    if (!plan || plan == plan_hash(w->fingerprint, &w->L, w->per_file))
        return 0;
    /* one begun under an earlier fingerprint of this checkpoint goes on under
     * it (stores of that kind still open) */
    if (store_fingerprints_before(w->mw, before, e))
        return -1;
    for (int k = 0; k < STORE_FINGERPRINTS_BEFORE; k++)
        if (fingerprint == before[k] ||
            (!fingerprint && plan == plan_hash(before[k], &w->L, w->per_file)))
            w->fingerprint = before[k];
    if (plan == plan_hash(w->fingerprint, &w->L, w->per_file))
        return 0;
    int mine = fingerprint == w->fingerprint;
    if (!o->force && fingerprint && !mine)
        return err_set(e, "%s holds an interrupted conversion of another checkpoint: give "
                       "another -o, or --force to start over", o->out_dir);
    /* a journal from before its header named the checkpoint: whose it is and
     * how its files were cut cannot be told apart */
    if (!o->force && !fingerprint)
        return err_set(e, "%s holds an interrupted conversion of another checkpoint or with "
                       "another --file-gb: resume it with the --file-gb it began with, or "
                       "--force to start over", o->out_dir);
    int same_layout = mine && per_file && plan == plan_hash(w->fingerprint, &w->L, per_file);
    if (!o->force && same_layout && !o->max_file_bytes) {
        if (o->log)
            fprintf(o->log, "moetier: going on with the interrupted conversion's %llu experts "
                    "per file\n", (unsigned long long)per_file);
        w->per_file = per_file;
        return 0;
    }
    if (!o->force && same_layout)
        return err_set(e, "%s holds an interrupted conversion with %llu experts per file, not the "
                       "%llu of --file-gb: resume it without --file-gb, or --force to start over",
                       o->out_dir, (unsigned long long)per_file, (unsigned long long)w->per_file);
    if (o->log)
        fprintf(o->log, "moetier: starting over in %s: %s\n", o->out_dir,
                o->force ? "--force" : "the interrupted conversion there has another store layout");
    return 0;
}

/* The shards' times the index records are those from when the conversion
 * began: a resumed one keeps the experts read then, and a shard changed in
 * between must show as changed. A fresh start (done == 0) keeps *source_files
 * (taken before any expert was read) beside the journal; a resume takes them
 * from there, or records none (an interruption by a version that kept none):
 * the store then tells nothing at open, and `convert --check` compares. */
static int conversion_sources(const convert_options *o, int done, cJSON **source_files, errbuf *e)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", o->out_dir, STORE_JOURNAL_SOURCES);
    if (done == 0) {
        char *text = cJSON_Print(*source_files);
        if (!text)
            return err_set(e, "out of memory");
        int rc = file_replace_atomic(path, text, strlen(text), e);
        free(text);
        return rc;
    }
    cJSON_Delete(*source_files);
    *source_files = NULL;
    char *text;
    size_t len;
    errbuf why;
    if (file_read_regular(path, &text, &len, &why) == 0) {
        *source_files = cJSON_ParseWithLength(text, len);
        free(text);
        if (!cJSON_IsArray(*source_files)) {
            cJSON_Delete(*source_files);
            *source_files = NULL;
        }
    }
    if (!*source_files && o->log)
        fprintf(o->log, "moetier: %s does not say when the checkpoint's files were last changed "
                "before the conversion began, so the store cannot report a later change; "
                "`moetier convert --check` compares it with the checkpoint and records that\n",
                o->out_dir);
    return 0;
}

/* The files a conversion writes or replaces by name: something else there (a
 * directory, a FIFO) is the user's, and is refused before any work. */
static int refuse_foreign_files(const char *dir, errbuf *e)
{
    static const char *const names[] = {STORE_INDEX_JSON, STORE_INDEX_BIN, STORE_JOURNAL,
                                        STORE_JOURNAL_SOURCES};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char path[4200];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        struct stat sb;
        if (stat(path, &sb) == 0 && !S_ISREG(sb.st_mode))
            return err_set(e, "%s: is a %s, where an expert store keeps a file of its own: move "
                           "it away or give another -o", path, file_kind(sb.st_mode));
    }
    return 0;
}

int store_convert(const model_weights *mw, const convert_options *o, errbuf *e)
{
    const model_config *c = &mw->cfg;
    writer w = {.mw = mw, .o = o, .jfd = -1};
    if (store_layout_for_model(mw, &w.L, e) || store_fingerprint(mw, &w.fingerprint, e))
        return -1;
    if (dir_ensure(o->out_dir, e) || refuse_foreign_files(o->out_dir, e))
        return -1;
    if (o->max_file_bytes && o->max_file_bytes < w.L.slot_bytes && o->log)
        fprintf(o->log, "moetier: --file-gb %.6g is less than one expert of this model (%.6g GB): each file "
                "holds one\n", o->max_file_bytes / 1e9, w.L.slot_bytes / 1e9);
    uint64_t max_file = o->max_file_bytes ? o->max_file_bytes : (64ull << 30);
    w.per_file = store_blobs_per_file(&w.L, max_file);
    snprintf(w.jpath, sizeof w.jpath, "%s/%s", o->out_dir, STORE_JOURNAL);

    store existing;
    errbuf why;
    char ipath[4096];
    snprintf(ipath, sizeof ipath, "%s/%s", o->out_dir, STORE_INDEX_JSON);
    struct stat sb;
    if (stat(ipath, &sb) == 0) {
        int found = o->force ? -1 : store_open(&existing, o->out_dir, mw, &why);
        if (found == 0) {
            if (o->log)
                fprintf(o->log, "moetier: %s is already a complete expert store of this checkpoint "
                        "(--check verifies it, --force rebuilds it)\n", o->out_dir);
            store_source_warn(&existing, mw, o->log);
            if (o->log && o->max_file_bytes && existing.blobs_per_file != w.per_file)
                fprintf(o->log, "moetier: its files hold %llu experts each, not the %llu of "
                        "--file-gb; --force rebuilds it with those\n",
                        (unsigned long long)existing.blobs_per_file,
                        (unsigned long long)w.per_file);
            store_close(&existing);
            return 0;
        }
        /* another checkpoint's store may be all a user has of it (a mistyped
         * -m): it goes only when asked; a damaged one of this checkpoint is
         * rebuilt */
        if (found == STORE_OTHER_CHECKPOINT)
            return err_set(e, "%s holds the expert store of another checkpoint: give another -o, or "
                           "--force to replace it", o->out_dir);
        if (found == STORE_NOT_A_STORE)
            return err_set(e, "%s: give another -o, or --force to replace it", why.msg);
        if (found == STORE_NEWER)
            return err_set(e, "%s, or --force to rebuild it with this one", why.msg);
        /* a store that could not be read may be whole (an I/O error, a disk of
         * its files not mounted): rebuilding would empty its files */
        if (found == STORE_UNREADABLE)
            return err_set(e, "%s; nothing was changed: once it can be read, convert finds it complete "
                           "or rebuilds it (--force rebuilds it now)", why.msg);
        if (o->log)
            fprintf(o->log, "moetier: rebuilding the store in %s: %s\n", o->out_dir,
                    o->force ? "--force" : why.msg);
        remove_index(o->out_dir);
        unlink(w.jpath);
        unlink_sources(o->out_dir);
        /* (gone for good before any data file is cut: a crash then leaves no
         * index over files being rewritten) */
        file_sync_parent_dir(w.jpath);
    }
    if (resume_or_refuse(&w, e))
        return -1;
    /* the times before any expert is read: a shard written to during the
     * conversion then differs from them */
    cJSON *source_files = store_source_files_json(mw, e);
    if (!source_files)
        return -1;
    w.plan = plan_hash(w.fingerprint, &w.L, w.per_file);

    size_t n_keys = (size_t)c->n_layers * (size_t)c->n_routed_experts;
    w.blobs = malloc(n_keys * sizeof *w.blobs);
    w.order = malloc(n_keys * sizeof *w.order);
    if (!w.blobs || !w.order) {
        free(w.blobs);
        free(w.order);
        cJSON_Delete(source_files);
        return err_set(e, "out of memory");
    }
    for (int l = 0; l < c->n_layers; l++)
        for (int x = 0; x < c->n_routed_experts; x++) {
            size_t k = (size_t)l * (size_t)c->n_routed_experts + (size_t)x;
            w.blobs[k] = (store_blob){.layer = (uint32_t)l, .expert = (uint32_t)x, .file = UINT32_MAX};
            if (!config_is_moe_layer(c, l))
                continue;
            uint64_t i = (uint64_t)w.n;
            w.blobs[k].file = (uint32_t)(i / w.per_file);
            w.blobs[k].offset = (i % w.per_file) * w.L.slot_bytes;
            w.blobs[k].bytes = w.L.blob_bytes;
            w.order[w.n++] = (int)k;
        }
    w.n_files = (int)(((uint64_t)w.n + w.per_file - 1) / w.per_file);
    w.fds = malloc((size_t)w.n_files * sizeof *w.fds);
    uint64_t *file_bytes = calloc((size_t)w.n_files, sizeof *file_bytes);
    int rc = -1;
    if (!w.fds || !file_bytes) {
        err_set(e, "out of memory");
        goto out;
    }
    for (int f = 0; f < w.n_files; f++)
        w.fds[f] = -1;
    fd_limit_make_room(w.n_files);      /* every data file stays open to the end */
    int journalled = journal_resume(&w, e), done = blobs_on_disk(&w, journalled);
    if (done < journalled && o->log)
        fprintf(o->log, "moetier: the data files hold %d of the %d experts the journal lists "
                "(cut or deleted since): writing from there\n", done, journalled);
    if (done > 0 && o->log)
        fprintf(o->log, "moetier: resuming an interrupted conversion: %d of %d experts already "
                "written\n", done, w.n);
    if (trim_files(&w, done, e) || conversion_sources(o, done, &source_files, e) ||
        journal_start(&w, done, e) || write_blobs(&w, done, e))
        goto out;
    for (int i = 0; i < w.n; i++) {
        const store_blob *b = &w.blobs[w.order[i]];
        if (b->offset + w.L.slot_bytes > file_bytes[b->file])
            file_bytes[b->file] = b->offset + w.L.slot_bytes;
    }
    if (store_write_index(o->out_dir, &w.L, w.fingerprint, c, w.blobs, c->n_layers,
                          c->n_routed_experts, w.n_files, file_bytes, w.per_file, source_files, e))
        goto out;
    close(w.jfd);
    w.jfd = -1;
    unlink(w.jpath);    /* after the index's rename is durable (file_write_atomic) */
    unlink_sources(o->out_dir);
    file_sync_parent_dir(w.jpath);
    if (o->log)
        fprintf(o->log, "moetier: expert store %s complete: %d experts, %.2f GB in %d file%s\n",
                o->out_dir, w.n, (double)w.n * (double)w.L.slot_bytes / 1e9, w.n_files,
                w.n_files == 1 ? "" : "s");
    rc = 0;
out:
    if (w.fds)
        for (int f = 0; f < w.n_files; f++)
            if (w.fds[f] >= 0)
                close(w.fds[f]);
    if (w.jfd >= 0)
        close(w.jfd);
    free(w.fds);
    free(file_bytes);
    free(w.blobs);
    free(w.order);
    cJSON_Delete(source_files);
    return rc;
}

int store_check(const store *s, const nvme_options *io, FILE *log, uint64_t *n_bad, errbuf *e)
{
    enum { Q = 8 };
    *n_bad = 0;
    nvme_options opt = *io;
    opt.verify = 1;
    nvme_tier *t;
    if (nvme_tier_open(&t, s, &opt, e))
        return -1;
    uint8_t *buf = aligned_alloc(STORE_ALIGN, Q * s->layout.slot_bytes);
    if (!buf) {
        nvme_tier_close(t);
        return err_set(e, "out of memory");
    }
    nvme_read r[Q];
    memset(r, 0, sizeof r);
    const store_blob **list = malloc((size_t)s->n_blobs * sizeof *list);
    if (!list) {
        free(buf);
        nvme_tier_close(t);
        return err_set(e, "out of memory");
    }
    int n = 0;
    for (size_t i = 0; i < (size_t)s->n_layers * (size_t)s->n_experts; i++)
        if (s->blobs[i].file != UINT32_MAX)
            list[n++] = &s->blobs[i];
    progress p;
    progress_begin(&p, log, "checking blobs", (uint64_t)n * s->layout.slot_bytes);
    for (int i = 0; i < n + Q; i++) {
        if (i >= Q && i - Q < n) {   /* the read started Q steps ago */
            nvme_read *d = &r[i % Q];
            errbuf why;
            if (nvme_tier_wait(t, d, &why) != 0) {
                if (nvme_tier_ring_failed(t)) {
                    /* (no read starts again: the blobs after it would all be
                     * counted bad) */
                    progress_end(&p);
                    nvme_tier_close_and_free(t, buf);
                    free(list);
                    return err_set(e, "%s; the check stopped at blob %d of %d", why.msg, i - Q + 1, n);
                }
                (*n_bad)++;
                if (log)
                    fprintf(log, "moetier: %s\n", why.msg);
            }
            progress_advance(&p, s->layout.slot_bytes);
        }
        if (i < n) {
            nvme_read *d = &r[i % Q];
            memset(d, 0, sizeof *d);
            d->blob = list[i];
            d->dst = buf + (uint64_t)(i % Q) * s->layout.slot_bytes;
            nvme_tier_submit(t, d);
            nvme_tier_flush(t);
        }
    }
    progress_end(&p);
    nvme_tier_close_and_free(t, buf);
    free(list);
    return 0;
}
