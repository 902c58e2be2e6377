/* prompt_cache_disk: see prompt_cache_disk.h. */
#include "prompt_cache_disk.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

static uint64_t identity_hash(const prompt_identity *id)
{
    return XXH3_64bits_withSeed(id->compute, strnlen(id->compute, sizeof id->compute), id->model);
}

void prompt_cache_file_name(const prompt_identity *id, const int *ids, int n, char *out, size_t size)
{
    snprintf(out, size, "%016llx-%016llx" PROMPT_CACHE_FILE_SUFFIX,
             (unsigned long long)identity_hash(id),
             (unsigned long long)XXH3_64bits(ids, (size_t)n * sizeof *ids));
}

int prompt_cache_dir_lock(const char *dir, const prompt_identity *id, errbuf *e)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/%016llx.lock", dir, (unsigned long long)identity_hash(id));
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return err_set(e, "%s: cannot open: %s", path, strerror(errno));
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        int er = errno;
        char pid[24] = {0};
        ssize_t got = pread(fd, pid, sizeof pid - 1, 0);
        pid[got > 0 ? got : 0] = 0;
        pid[strcspn(pid, "\n")] = 0;
        close(fd);
        if (er == EWOULDBLOCK)
            return err_set(e, "%s is in use by another server of this model (process %s holds %s): "
                           "give each server its own directory", dir, pid[0] ? pid : "?", path);
        return err_set(e, "%s: cannot lock: %s", path, strerror(er));
    }
    char pid[24];
    int len = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
    int noted = ftruncate(fd, 0) == 0 && pwrite(fd, pid, (size_t)len, 0) == len;
    (void)noted;        /* the lock holds without the note of who holds it */
    return fd;
}

/* Whether name is one of this identity's files (1), or what a write of one
 * that did not finish left (2: the temporary name file_output gives it, when
 * a second Ctrl+C ended the process during a stop); else 0. */
static int ours(const char *name, const prompt_identity *id)
{
    char prefix[20];
    snprintf(prefix, sizeof prefix, "%016llx-", (unsigned long long)identity_hash(id));
    size_t len = strlen(name), sl = strlen(PROMPT_CACHE_FILE_SUFFIX), whole = 16 + 1 + 16 + sl;
    if (len < whole || strncmp(name, prefix, 17) || strncmp(name + whole - sl, PROMPT_CACHE_FILE_SUFFIX, sl))
        return 0;
    if (len == whole)
        return 1;
    return !strncmp(name + whole, ".tmp.", 5) ? 2 : 0;
}

typedef struct found {
    char name[256];
    struct timespec mtime;
} found;

static int newest_first(const void *a, const void *b)
{
    const struct timespec *x = &((const found *)a)->mtime, *y = &((const found *)b)->mtime;
    if (x->tv_sec != y->tv_sec)
        return x->tv_sec > y->tv_sec ? -1 : 1;
    return x->tv_nsec > y->tv_nsec ? -1 : x->tv_nsec < y->tv_nsec;
}

/* This identity's regular files in dir (malloc'd), newest first; with
 * leftovers, also what unfinished writes left. */
static int list_ours(const char *dir, const prompt_identity *id, int leftovers, found **out, int *n,
                     errbuf *e)
{
    *out = NULL;
    *n = 0;
    DIR *d = opendir(dir);
    if (!d)
        return err_set(e, "%s: cannot read the directory: %s", dir, strerror(errno));
    int cap = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        struct stat sb;
        int kind = ours(de->d_name, id);
        if (!kind || (kind == 2 && !leftovers) || fstatat(dirfd(d), de->d_name, &sb, 0) != 0 ||
            !S_ISREG(sb.st_mode))
            continue;
        if (*n == cap) {
            cap = cap ? 2 * cap : 16;
            found *grown = realloc(*out, (size_t)cap * sizeof *grown);
            if (!grown) {
                closedir(d);
                free(*out);
                *out = NULL;
                return err_set(e, "out of memory listing %s", dir);
            }
            *out = grown;
        }
        snprintf((*out)[*n].name, sizeof (*out)[*n].name, "%s", de->d_name);
        (*out)[(*n)++].mtime = sb.st_mtim;
    }
    closedir(d);
    if (*n > 1)
        qsort(*out, (size_t)*n, sizeof **out, newest_first);
    return 0;
}

typedef struct file_fill {
    prompt_file *pf;
    int base;
    float *rows;
    int damaged;                /* the rows' read found the file damaged */
} file_fill;

/* a piece of the file's rows: the positions past base go to the entry */
static void to_entry(void *ctx, int layer, int first, int count, const float *rows)
{
    file_fill *f = ctx;
    int from = first > f->base ? first : f->base, end = first + count;
    if (end <= from)
        return;
    size_t row = (size_t)f->pf->row, own = (size_t)(f->pf->n - f->base);
    memcpy(f->rows + ((size_t)layer * own + (size_t)(from - f->base)) * row,
           rows + (size_t)(from - first) * row, (size_t)(end - from) * row * sizeof *rows);
}

static int fill_from_file(void *ctx, int base, float *rows, errbuf *e)
{
    file_fill *f = ctx;
    if (base < f->pf->base)
        return err_set(e, "%s: holds the rows from position %d on; those before are another "
                       "file's, which was not read", f->pf->path, f->pf->base);
    f->base = base;
    f->rows = rows;
    int rc = prompt_file_read_rows(f->pf, to_entry, f, e);
    f->damaged = rc == PROMPT_FILE_DAMAGED;
    return rc ? -1 : 0;
}

/* Whether an entry holds the first n of ids (what a file continues). */
static int continued(const prompt_cache *pc, const int *ids, int n)
{
    for (int i = 0; i < pc->n; i++)
        if (ids_common_prefix(pc->entries[i].ids, pc->entries[i].n, ids, n) == n)
            return 1;
    return 0;
}

/* A file's ids, kept from its reading while it is left alone. */
typedef struct file_ids {
    int n, base;
    int *ids;                   /* malloc'd; NULL: not kept (or out of memory) */
} file_ids;

static void keep_ids(file_ids *k, const prompt_file *pf)
{
    k->n = pf->n;
    k->base = pf->base;
    if ((k->ids = malloc((size_t)pf->n * sizeof *k->ids)))
        memcpy(k->ids, pf->ids, (size_t)pf->n * sizeof *k->ids);
}

/* Whether the ids ids[0, n) begin with the first base positions whose hash is start. */
static int holds_start(const int *ids, int n, int base, uint64_t start)
{
    return base > 0 && n >= base && XXH3_64bits(ids, (size_t)base * sizeof *ids) == start;
}

/* One file into pc as an entry: 0; 1 when an entry holds its positions
 * already; 2 when it does not fit; 3 when it continues a conversation no
 * entry holds yet; -1 when it cannot be used now (another version, or the
 * system failed to read it); PROMPT_FILE_DAMAGED when it never can. For 2
 * and 3, *k gets the file's ids. */
static int load_one(prompt_cache *pc, const char *path, const char *name, const prompt_identity *id,
                    const engine *en, file_ids *k, errbuf *e)
{
    prompt_file pf;
    int opened = prompt_file_open(&pf, path, id, en, e);
    if (opened)
        return opened;
    if (pf.base && !continued(pc, (const int *)pf.ids, pf.base)) {
        err_set(e, "%s: continues a conversation (its first %d positions) whose file is gone or "
                "was not read", path, pf.base);
        keep_ids(k, &pf);
        prompt_file_close(&pf);
        return 3;
    }
    prompt_entry *x;
    file_fill f = {.pf = &pf};
    int rc = prompt_cache_add(pc, en, pf.ids, pf.n, fill_from_file, &f, &x, e);
    int file_base = pf.base;
    if (rc == -1)
        keep_ids(k, &pf);
    prompt_file_close(&pf);
    if (rc)
        return rc == -2 ? (f.damaged ? PROMPT_FILE_DAMAGED : -1) : rc < 0 ? 2 : 1;
    /* a file whose name is not its ids' is written again under theirs, and
     * one whose rows do not start where the entry's own do (it continues
     * another entry now) as the entry is: the file it was written against
     * may go */
    char want[64];
    prompt_cache_file_name(id, x->ids, x->n, want, sizeof want);
    x->on_disk = !strcmp(want, name) && file_base == (x->parent ? x->base : 0);
    return 0;
}

/* Notes file f as left alone: base and start from its ids k when kept. */
static void note_left_alone(prompt_cache *pc, const char *name, const file_ids *k)
{
    prompt_left_alone *l = &pc->left_alone[pc->n_left_alone++];
    snprintf(l->name, sizeof l->name, "%s", name);
    l->base = k->ids ? k->base : 0;
    l->start = l->base ? XXH3_64bits(k->ids, (size_t)l->base * sizeof *k->ids) : 0;
}

int prompt_cache_load_dir(prompt_cache *pc, const char *dir, const prompt_identity *id,
                          const engine *en, prompt_disk_counts *c, errbuf *e)
{
    memset(c, 0, sizeof *c);
    found *files;
    if (list_ours(dir, id, 0, &files, &c->files, e))
        return -1;
    int first = pc->n, waiting = c->files, unreadable = 0, nf = c->files ? c->files : 1;
    int *result = malloc((size_t)nf * sizeof *result);
    file_ids *kept = calloc((size_t)nf, sizeof *kept);
    free(pc->left_alone);
    pc->n_left_alone = 0;
    pc->left_alone = malloc((size_t)nf * sizeof *pc->left_alone);
    if (!result || !kept || !pc->left_alone) {
        free(result);
        free(kept);
        free(files);
        return err_set(e, "out of memory reading %s", dir);
    }
    /* newest first; a file continuing another's conversation waits until an
     * entry holds that: passes go on while one reads something, and after
     * one that reads nothing, a last one gives up on what still waits
     * (result[i]: 4 waiting, else load_one's) */
    for (int i = 0; i < c->files; i++)
        result[i] = 4;
    for (int last = 0; waiting;) {
        int progress = 0;
        for (int i = 0; i < c->files; i++) {
            if (result[i] != 4)
                continue;
            char path[4200];
            errbuf why;
            snprintf(path, sizeof path, "%s/%s", dir, files[i].name);
            free(kept[i].ids);
            kept[i].ids = NULL;
            int r = load_one(pc, path, files[i].name, id, en, &kept[i], &why);
            if (r == 3 && !last)
                continue;
            waiting--;
            progress = 1;
            result[i] = r;
            if (r == PROMPT_FILE_DAMAGED && !c->damaged++)
                snprintf(c->first_damage, sizeof c->first_damage, "%s", why.msg);
            if ((r == -1 || r == 3) && !c->unusable++)
                snprintf(c->first_problem, sizeof c->first_problem, "%s", why.msg);
            c->left_out += r == 2;
            unreadable += r == -1;
            if (r == 0) {
                c->loaded++;
                c->loaded_tokens += pc->entries[pc->n - 1].n;
            }
        }
        last = !progress;
    }
    /* what a later start, or another build, may read yet: files left out or
     * unreadable, and a file given up on whose start one of those may hold
     * (any unreadable one may; a kept one's ids say), in turn */
    for (int i = 0; i < c->files; i++)
        if (result[i] == -1 || result[i] == 2)
            note_left_alone(pc, files[i].name, &kept[i]);
    for (int more = 1; more;) {
        more = 0;
        for (int i = 0; i < c->files; i++) {
            if (result[i] != 3)
                continue;
            int held = unreadable > 0 || !kept[i].ids;
            uint64_t start = kept[i].ids ? XXH3_64bits(kept[i].ids, (size_t)kept[i].base * sizeof(int)) : 0;
            for (int j = 0; j < c->files && !held; j++)
                held = (result[j] == 2 || result[j] == 5) && kept[j].ids &&
                       holds_start(kept[j].ids, kept[j].n, kept[i].base, start);
            if (held) {
                note_left_alone(pc, files[i].name, &kept[i]);
                result[i] = 5;  /* (kept: its own start may hold another's) */
                more = 1;
            }
        }
    }
    for (int i = 0; i < c->files; i++)
        free(kept[i].ids);
    free(kept);
    free(result);
    free(files);
    /* read newest first, so the newest got the lowest use count: reversed,
     * the oldest is the first evicted */
    for (int i = first; i < pc->n; i++)
        pc->entries[i].last_used = pc->clock - (uint64_t)(i - first);
    return 0;
}

/* Least recently used first; an entry others continue (used with them, so
 * as recently) after them, so that the next start reads it first and they
 * share its rows again. */
static int by_last_use(const void *a, const void *b)
{
    const prompt_entry *x = *(prompt_entry *const *)a, *y = *(prompt_entry *const *)b;
    if (x->last_used != y->last_used)
        return x->last_used < y->last_used ? -1 : 1;
    return (x->children > y->children) - (x->children < y->children);
}

/* x's file in dir, written: its own rows (those of positions from its base,
 * the earlier ones being those of the entry it continues) */
static int write_entry(prompt_cache *pc, const char *dir, const prompt_identity *id,
                       const engine *en, prompt_entry *x, errbuf *e)
{
    char name[64], path[4200];
    prompt_cache_file_name(id, x->ids, x->n, name, sizeof name);
    snprintf(path, sizeof path, "%s/%s", dir, name);
    const prompt_entry *parent = x->parent ? prompt_cache_find(pc, x->parent) : NULL;
    if (parent && parent->on_disk != 1) {
        /* a file that continues one not written would be read by no start */
        x->on_disk = -1;
        return err_set(e, "%s: not written: the conversation it continues (its first %d "
                       "positions) has no file", path, x->base);
    }
    kv_span *spans = malloc((size_t)pc->n * sizeof *spans);
    if (!spans)
        return err_set(e, "out of memory writing %s", path);
    int rc = prompt_file_save_spans(path, id, en, x->ids, x->n, x->parent ? x->base : 0, spans,
                                    prompt_cache_spans(pc, x, x->n, spans), e);
    free(spans);
    x->on_disk = rc ? -1 : 1;
    x->failed_writes += rc != 0;
    /* the name is the entry's now: the file left alone at the start is gone
     * (replaced), and the entry's own eviction may delete this one */
    for (int i = 0; !rc && i < pc->n_left_alone; i++)
        if (!strcmp(pc->left_alone[i].name, name))
            pc->left_alone[i] = pc->left_alone[--pc->n_left_alone];
    return rc;
}

/* The files of the entries on disk get times a second apart in the order the
 * entries were last used, so that the next start reads the most recent first
 * (also after a crash: the idle writes go most recent first, which their own
 * times would reverse). */
static void stamp_in_use_order(prompt_cache *pc, const char *dir, const prompt_identity *id)
{
    prompt_entry **order = malloc((size_t)(pc->n ? pc->n : 1) * sizeof *order);
    if (!order)
        return;     /* the times are a hint for the next start's order */
    for (int i = 0; i < pc->n; i++)
        order[i] = &pc->entries[i];
    qsort(order, (size_t)pc->n, sizeof *order, by_last_use);
    time_t now = time(NULL);
    for (int i = 0; i < pc->n; i++) {
        char name[64], path[4200];
        if (order[i]->on_disk != 1)
            continue;
        prompt_cache_file_name(id, order[i]->ids, order[i]->n, name, sizeof name);
        snprintf(path, sizeof path, "%s/%s", dir, name);
        struct timespec t[2] = {{.tv_sec = now - (pc->n - i), .tv_nsec = 0},
                                {.tv_sec = now - (pc->n - i), .tv_nsec = 0}};
        utimensat(AT_FDCWD, path, t, 0);
    }
    free(order);
}

/* Writes the most recently used entry not in dir yet (the one it continues
 * first): 1; 0 when there is none; -1 with e set. */
static int write_next(prompt_cache *pc, const char *dir, const prompt_identity *id,
                      const engine *en, errbuf *e)
{
    prompt_entry *latest = NULL;
    for (int i = 0; i < pc->n; i++)
        if (!pc->entries[i].on_disk && (!latest || pc->entries[i].last_used > latest->last_used))
            latest = &pc->entries[i];
    if (!latest)
        return 0;
    /* the conversation it continues first: a crash then leaves no file
     * whose first positions are in none */
    for (prompt_entry *p = prompt_cache_find(pc, latest->parent); p && !p->on_disk;
         p = prompt_cache_find(pc, p->parent))
        latest = p;
    return write_entry(pc, dir, id, en, latest, e) ? -1 : 1;
}

int prompt_cache_write_pending(prompt_cache *pc, const char *dir, const prompt_identity *id,
                               const engine *en, errbuf *e)
{
    int r = write_next(pc, dir, id, en, e);
    if (r > 0)
        stamp_in_use_order(pc, dir, id);
    return r;
}

static int left_alone(const prompt_cache *pc, const char *name)
{
    for (int i = 0; i < pc->n_left_alone; i++)
        if (!strcmp(pc->left_alone[i].name, name))
            return 1;
    return 0;
}

/* The starts (a continuation's base and the hash of its first base ids)
 * that files must be kept for: those of the files left alone, and of each
 * file kept for one (it may continue another in turn). */
typedef struct starts {
    prompt_left_alone *v;
    int n, cap;
} starts;

static int starts_add(starts *s, int base, uint64_t start)
{
    if (s->n == s->cap) {
        int cap = s->cap ? 2 * s->cap : 16;
        prompt_left_alone *grown = realloc(s->v, (size_t)cap * sizeof *grown);
        if (!grown)
            return -1;
        s->v = grown;
        s->cap = cap;
    }
    s->v[s->n++] = (prompt_left_alone){.base = base, .start = start};
    return 0;
}

/* Whether the file at path must stay for another: it holds one of the
 * starts, or (failed) the start of an entry whose write failed (the
 * conversation it grew from, which may be all that is on disk of it). Then 1,
 * and its own start added when it continues another file; a file that cannot
 * be read is taken to, unless it is damaged; -1 when out of memory. */
static int holds_a_kept_start(const prompt_cache *pc, int failed, starts *s, const char *path,
                              const prompt_identity *id, const engine *en)
{
    prompt_file pf;
    errbuf ignored;
    int rc = prompt_file_open(&pf, path, id, en, &ignored);
    if (rc)
        return rc != PROMPT_FILE_DAMAGED;
    int held = 0;
    for (int i = 0; i < s->n && !held; i++)
        held = holds_start((const int *)pf.ids, pf.n, s->v[i].base, s->v[i].start);
    for (int i = 0; i < pc->n && failed && !held; i++)
        held = pc->entries[i].on_disk < 0 &&
               ids_common_prefix(pc->entries[i].ids, pc->entries[i].n, (const int *)pf.ids, pf.n) == pf.n;
    if (held && pf.base &&
        starts_add(s, pf.base, XXH3_64bits(pf.ids, (size_t)pf.base * sizeof *pf.ids)))
        held = -1;
    prompt_file_close(&pf);
    return held;
}

int prompt_cache_remove_stale(const prompt_cache *pc, const char *dir, const prompt_identity *id,
                              const engine *en, int *removed, errbuf *e)
{
    *removed = 0;
    char (*names)[64] = malloc((size_t)(pc->n ? pc->n : 1) * sizeof *names);
    if (!names)
        return err_set(e, "out of memory tidying %s", dir);
    for (int i = 0; i < pc->n; i++)
        prompt_cache_file_name(id, pc->entries[i].ids, pc->entries[i].n, names[i], sizeof names[i]);
    found *files;
    int n_files, failed = 0;
    if (list_ours(dir, id, 1, &files, &n_files, e)) {
        free(names);
        return -1;
    }
    int *kept = calloc((size_t)(n_files ? n_files : 1), sizeof *kept);
    starts st = {0};
    int rc = kept ? 0 : err_set(e, "out of memory tidying %s", dir);
    for (int i = 0; i < pc->n; i++)
        failed |= pc->entries[i].on_disk < 0;
    for (int i = 0; i < pc->n_left_alone && !rc; i++)
        if (pc->left_alone[i].base > 0 && starts_add(&st, pc->left_alone[i].base, pc->left_alone[i].start))
            rc = err_set(e, "out of memory tidying %s", dir);
    char path[4200];
    for (int f = 0; f < n_files && !rc; f++) {
        kept[f] = left_alone(pc, files[f].name);
        for (int i = 0; i < pc->n && !kept[f]; i++)
            kept[f] = !strcmp(files[f].name, names[i]);
    }
    /* what holds the start of a file left alone or of a failed write, and in
     * turn what holds the start of one so kept, until none is found */
    for (int more = st.n > 0 || failed; more && !rc;) {
        more = 0;
        for (int f = 0; f < n_files && !rc; f++) {
            if (kept[f] || ours(files[f].name, id) != 1)
                continue;
            snprintf(path, sizeof path, "%s/%s", dir, files[f].name);
            int held = holds_a_kept_start(pc, failed, &st, path, id, en);
            if (held < 0)
                rc = err_set(e, "out of memory tidying %s", dir);
            more |= kept[f] = held > 0;
        }
    }
    for (int f = 0; f < n_files && !rc; f++) {
        snprintf(path, sizeof path, "%s/%s", dir, files[f].name);
        if (!kept[f] && unlink(path) == 0)
            (*removed)++;
    }
    free(st.v);
    free(kept);
    free(files);
    free(names);
    return rc;
}

/* Writes the entries whose write failed, or whose file went, each after the
 * one it continues (passes go on while one is written): how many could not
 * be (e says why the first could not). */
static int write_missing(prompt_cache *pc, const char *dir, const prompt_identity *id,
                         const engine *en, int *written, errbuf *e)
{
    for (int i = 0; i < pc->n; i++) {
        prompt_entry *x = &pc->entries[i];
        char name[64], path[4200];
        prompt_cache_file_name(id, x->ids, x->n, name, sizeof name);
        snprintf(path, sizeof path, "%s/%s", dir, name);
        struct stat sb;
        if (x->on_disk == 1 && stat(path, &sb) != 0)
            x->on_disk = 0;     /* its file went */
    }
    int failed, progress = 1;
    errbuf first = {{0}};
    while (progress) {
        failed = progress = 0;
        for (int i = 0; i < pc->n; i++) {
            prompt_entry *x = &pc->entries[i];
            if (x->on_disk == 1)
                continue;
            errbuf why;
            if (write_entry(pc, dir, id, en, x, &why)) {
                if (!failed++)
                    first = why;
                continue;
            }
            (*written)++;
            progress = 1;
        }
    }
    if (failed)
        err_set(e, "%s", first.msg);
    return failed;
}

int prompt_cache_store_dir(prompt_cache *pc, const char *dir, const prompt_identity *id,
                           const engine *en, prompt_disk_counts *c, errbuf *e)
{
    c->written = c->removed = 0;
    /* the entries never written, each after the one it continues */
    for (int r; (r = write_next(pc, dir, id, en, e)) != 0;)
        c->written += r > 0;
    int failed = write_missing(pc, dir, id, en, &c->written, e);
    /* the files of entries gone go, but for what a failed write leaves the
     * only copy of a conversation; their room may be what that write lacked */
    errbuf why;
    if (prompt_cache_remove_stale(pc, dir, id, en, &c->removed, &why)) {
        if (!failed++)
            err_set(e, "%s", why.msg);
    } else if (failed && c->removed) {
        failed = write_missing(pc, dir, id, en, &c->written, e);
    }
    stamp_in_use_order(pc, dir, id);
    return failed ? -1 : 0;
}
