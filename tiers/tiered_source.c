/* tiered_source: DRAM cache in front of the NVMe tier (see tiered_source.h). */
#include "tiered_source.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "core/base/progress.h"
#include "tiers/expert_cache.h"

typedef struct tiered {
    const store *st;
    nvme_tier *nvme;
    dram_arena arena;
    expert_cache cache;
    nvme_read *reads;           /* [n_slots] the read filling each slot */
    unsigned char *reserved;    /* [n_keys] a pin taken ahead of get, consumed by get */
    int *reserved_keys;         /* [max(slots, n_experts)] this layer's reservations */
    int n_reserved, max_reserved;
    int n_ahead;                /* reservations that started a read, not consumed yet */
    /* the announced layer: its experts, how many the engine has got and the
     * first not reserved yet; the last layer announced (a step ends there) */
    int *ann;                   /* [n_experts] */
    int n_ann, ann_layer, ann_got, ann_next, last_layer;
    tier_layer_stats *stats;    /* [n_layers] */
    /* predicted reads in flight: their slots, each holding the pin marked in
     * spec_pin (an entry whose mark is gone lost its slot to a failed read):
     * SPEC_UNTIL_LANDED, or SPEC_UNTIL_ANNOUNCED for a read started in a scan,
     * whose slot would otherwise be taken back before its layer uses it */
    int *spec_slots;
    unsigned char *spec_pin;    /* [n_slots] */
    int n_spec;
    int held_by_get;            /* a slot get() pinned and will settle itself, or -1 */
    /* the cache scanned (expert_cache_scanning) in this step, in the last one;
     * steps begun, and how many of the finished ones scanned */
    int scan_step, scan_prev;
    uint64_t steps, steps_scanned;
    unsigned char *spec_unused; /* [n_keys] read on a prediction, not used yet */
    unsigned char *missed;      /* [n_keys] its last pin started a read */
    /* predictions not read yet, best first */
    int *pend_layer, *pend_expert;
    int n_pend, max_pend;
    tier_spec_stats spec;
    FILE *log;
} tiered;

enum { SPEC_UNTIL_LANDED = 1, SPEC_UNTIL_ANNOUNCED = 2 };

static uint8_t *slot_ptr(const tiered *t, int slot)
{
    return dram_arena_unit(&t->arena, slot);
}

/* Queues the read of (layer, expert) into slot s. */
static void start_read(tiered *t, int layer, int expert, int s)
{
    t->stats[layer].bytes_read += t->st->layout.slot_bytes;
    nvme_read *r = &t->reads[s];
    memset(r, 0, sizeof *r);
    r->blob = store_blob_at(t->st, layer, expert);
    r->dst = slot_ptr(t, s);
    nvme_tier_submit(t->nvme, r);
}

/* Pins key in the cache, starting its read when it is not resident; returns the
 * slot or -1 when every slot is in use. */
static int pin_key(tiered *t, int layer, int expert)
{
    int key = layer * t->st->n_experts + expert;
    int resident, evicted;
    if (expert_cache_find(&t->cache, key) < 0 && expert_cache_scanning(&t->cache))
        t->scan_step = 1;
    int s = expert_cache_acquire(&t->cache, key, &resident, &evicted);
    if (s < 0)
        return -1;
    t->missed[key] = !resident;
    if (resident) {
        /* a predicted read is a read of the store, not a hit: counted as one,
         * lookahead would seem to save reads it only moves earlier */
        if (t->spec_unused[key])
            t->stats[layer].early++;
        else
            t->stats[layer].hits++;
        return s;
    }
    if (evicted >= 0)
        t->spec_unused[evicted] = 0;
    t->stats[layer].misses++;
    start_read(t, layer, expert, s);
    return s;
}

/* Takes key off this layer's reservation list (reserved[key] is set). */
static void unlist_reservation(tiered *t, int key)
{
    for (int i = 0; i < t->n_reserved; i++)
        if (t->reserved_keys[i] == key) {
            t->reserved_keys[i] = t->reserved_keys[--t->n_reserved];
            return;
        }
}

/* A failed read frees its slot with every pin on it: the prediction's and the
 * announcement's go too, so a later get() reads the expert again (and reports
 * the error if it persists) instead of finding a reservation without a slot.
 * The reservation leaves the list as well: read_ahead may reserve the expert
 * again, and the list holds each of a layer's experts once at most. */
static void drop_failed(tiered *t, int s)
{
    if (t->spec_pin[s])
        t->spec.failed++;
    int key = t->cache.key_of_slot[s];
    if (key >= 0) {
        if (t->reserved[key]) {
            t->n_ahead -= t->missed[key];
            unlist_reservation(t, key);
        }
        t->reserved[key] = 0;
        t->spec_unused[key] = 0;
    }
    t->spec_pin[s] = 0;
    expert_cache_discard(&t->cache, s);
}

/* Waits until slot s is READY; on a failed read the slot is freed. */
static int settle(tiered *t, int layer, int s, errbuf *e)
{
    if (t->cache.state[s] != SLOT_LOADING)
        return 0;
    double t0 = now_seconds();
    int rc = nvme_tier_wait(t->nvme, &t->reads[s], e);
    if (layer >= 0)
        t->stats[layer].stall_seconds += now_seconds() - t0;
    if (rc) {
        drop_failed(t, s);
        return -1;
    }
    expert_cache_ready(&t->cache, s);
    return 0;
}

/* Settles the predicted reads that have landed and drops their pins, but not
 * those held until their layer is announced; with `all`, every one of them
 * (waiting as needed) but the one in the slot get() holds. A failed read frees
 * its slot: the engine, if it wants that expert, reads it again and gets the
 * error. */
static void reap_speculative(tiered *t, int all)
{
    int k = 0;
    for (int i = 0; i < t->n_spec; i++) {
        int s = t->spec_slots[i];
        if (!t->spec_pin[s])
            continue;   /* its read failed and freed the slot */
        nvme_state rs = t->reads[s].state;
        if (s == t->held_by_get ||
            (!all && t->cache.state[s] == SLOT_LOADING && rs != NVME_DONE && rs != NVME_FAILED)) {
            t->spec_slots[k++] = s;
            continue;
        }
        errbuf ignored;
        if (settle(t, -1, s, &ignored))
            continue;
        if (!all && t->spec_pin[s] == SPEC_UNTIL_ANNOUNCED) {
            t->spec_slots[k++] = s;
            continue;
        }
        t->spec_pin[s] = 0;
        expert_cache_release(&t->cache, s);
    }
    t->n_spec = k;
}

/* A layer was announced (and its reservations pin what it uses): the held
 * predicted reads let go when they land. */
static void unhold_speculative(tiered *t)
{
    for (int i = 0; i < t->n_spec; i++)
        if (t->spec_pin[t->spec_slots[i]] == SPEC_UNTIL_ANNOUNCED)
            t->spec_pin[t->spec_slots[i]] = SPEC_UNTIL_LANDED;
    reap_speculative(t, 0);
}

/* Drops the waiting predictions for layer `only` (or, with only < 0, for every
 * layer up to `upto`). */
static void drop_pending(tiered *t, int only, int upto)
{
    int k = 0;
    for (int i = 0; i < t->n_pend; i++) {
        int l = t->pend_layer[i];
        if (only >= 0 ? l == only : l <= upto) {
            t->spec.dropped++;
            continue;
        }
        t->pend_layer[k] = l;
        t->pend_expert[k++] = t->pend_expert[i];
    }
    t->n_pend = k;
}

/* Starts waiting predictions, best first, while the store is nearly idle and
 * the bound allows; settles the ones that have landed. In a step that scans
 * the cache, or after one, a prediction is one more read ahead of the engine
 * (at most TIER_READ_AHEAD in all): it takes the slot used last, not one a
 * later layer of the step will hit, and holds it until a layer is announced. */
static void pump_speculative(tiered *t)
{
    int busy = nvme_tier_poll(t->nvme);
    reap_speculative(t, 0);
    int k = 0, started = 0;
    int scan = t->scan_step || t->scan_prev || expert_cache_scanning(&t->cache);
    for (; k < t->n_pend && t->n_spec < t->spec.max_in_flight && busy < SPEC_IDLE_READS &&
           !(scan && t->n_ahead + t->n_spec >= TIER_READ_AHEAD); k++) {
        int layer = t->pend_layer[k], expert = t->pend_expert[k];
        int key = layer * t->st->n_experts + expert;
        if (expert_cache_find(&t->cache, key) >= 0)
            continue;
        int resident, evicted;
        int s = scan ? expert_cache_acquire_recent(&t->cache, key, &resident, &evicted)
                     : expert_cache_acquire(&t->cache, key, &resident, &evicted);
        if (s < 0)
            break;  /* every slot is in use: try again later */
        if (evicted >= 0)
            t->spec_unused[evicted] = 0;
        start_read(t, layer, expert, s);
        t->spec_unused[key] = 1;
        t->spec_pin[s] = scan ? SPEC_UNTIL_ANNOUNCED : SPEC_UNTIL_LANDED;
        t->spec_slots[t->n_spec++] = s;
        t->spec.reads++;
        busy++;
        started = 1;
    }
    memmove(t->pend_layer, t->pend_layer + k, (size_t)(t->n_pend - k) * sizeof(int));
    memmove(t->pend_expert, t->pend_expert + k, (size_t)(t->n_pend - k) * sizeof(int));
    t->n_pend -= k;
    if (t->n_spec > t->spec.peak_in_flight)
        t->spec.peak_in_flight = t->n_spec;
    if (started)
        nvme_tier_flush(t->nvme);
}

static void tiered_speculate(expert_source *src, int layer, const int *experts, int n)
{
    tiered *t = src->impl;
    drop_pending(t, layer, -1);     /* superseded by this newer prediction */
    for (int i = 0; i < n && t->n_pend < t->max_pend; i++) {
        if (expert_cache_find(&t->cache, layer * t->st->n_experts + experts[i]) >= 0)
            continue;
        t->pend_layer[t->n_pend] = layer;
        t->pend_expert[t->n_pend++] = experts[i];
    }
    pump_speculative(t);
}

/* pin_key, waiting for the predicted reads first when they hold the slots */
static int pin_key_or_wait(tiered *t, int layer, int expert)
{
    int s = pin_key(t, layer, expert);
    if (s < 0 && t->n_spec) {
        reap_speculative(t, 1);
        s = pin_key(t, layer, expert);
    }
    return s;
}

/* Prefetch pins that get() never consumed (an earlier error) are dropped. */
static void drop_reservations(tiered *t)
{
    for (int i = 0; i < t->n_reserved; i++) {
        int key = t->reserved_keys[i];
        if (!t->reserved[key])
            continue;
        t->reserved[key] = 0;
        int s = expert_cache_find(&t->cache, key);
        if (s < 0)
            continue;
        errbuf ignored;
        if (settle(t, -1, s, &ignored) == 0)
            expert_cache_release(&t->cache, s);
    }
    t->n_reserved = 0;
    t->n_ahead = 0;
}

/* Reserves key, pinned by pin_key (missed[key] says whether that started a
 * read: only reads count as ahead of the engine). */
static void reserve(tiered *t, int key)
{
    t->reserved[key] = 1;
    t->reserved_keys[t->n_reserved++] = key;
    t->n_ahead += t->missed[key];
}

/* A miss may be reserved now unless it would take a slot this step used while
 * TIER_READ_AHEAD reads are ahead of the engine already. */
static int may_reserve(const tiered *t)
{
    return !expert_cache_scanning(&t->cache) || t->n_ahead < TIER_READ_AHEAD;
}

/* Reserves the announced layer's next experts, in order, until TIER_READ_AHEAD
 * reads are ahead of the engine (the hits on the way are reserved too; none
 * left when prefetch reserved them all). */
static void read_ahead(tiered *t)
{
    int started = 0, E = t->st->n_experts;
    if (t->ann_next < t->ann_got)
        t->ann_next = t->ann_got;
    for (; t->ann_next < t->n_ann && t->n_ahead < TIER_READ_AHEAD; t->ann_next++) {
        int x = t->ann[t->ann_next], key = t->ann_layer * E + x;
        if (t->reserved[key])
            continue;
        if (pin_key_or_wait(t, t->ann_layer, x) < 0)
            break;
        reserve(t, key);
        started = 1;
    }
    if (started)
        nvme_tier_flush(t->nvme);
}

/* Pins the announced experts from the first while slots allow: those already
 * in DRAM first, then the misses in order, so that a miss never takes the slot
 * of an expert this layer is about to use (taken in order, a miss could evict
 * a later announced expert, which then missed too: at a tier of 10 % of a
 * layer's experts that cost ~7 points of hit rate on the real routing trace,
 * docs/benchmarks.md); when the step scans the tier, misses only up to
 * TIER_READ_AHEAD ahead (get() reserves the rest as it goes). Returns how many
 * are reserved, from the first (get() consumes a reservation without a
 * decision). cache_sim.c replays this order. */
static int tiered_reserved(expert_source *src, int layer, const int *experts, int n)
{
    tiered *t = src->impl;
    int k = 0;
    while (k < n && t->reserved[layer * t->st->n_experts + experts[k]])
        k++;
    return k;
}

static int tiered_prefetch(expert_source *src, int layer, const int *experts, int n)
{
    tiered *t = src->impl;
    drop_pending(t, -1, layer);     /* this layer has routed: its predictions are moot */
    drop_reservations(t);
    if (layer <= t->last_layer) {
        expert_cache_begin_step(&t->cache);
        t->steps_scanned += (uint64_t)t->scan_step;
        t->steps++;
        t->scan_prev = t->scan_step;
        t->scan_step = 0;
    }
    t->last_layer = layer;
    int m = n < t->max_reserved ? n : t->max_reserved, i = 0;
    for (int k = 0; k < m; k++) {
        int key = layer * t->st->n_experts + experts[k];
        if (!t->reserved[key] && expert_cache_find(&t->cache, key) >= 0 &&
            pin_key(t, layer, experts[k]) >= 0)
            reserve(t, key);
    }
    unhold_speculative(t);
    for (; i < m; i++) {
        int key = layer * t->st->n_experts + experts[i];
        if (t->reserved[key])
            continue;
        if (!may_reserve(t) || pin_key_or_wait(t, layer, experts[i]) < 0)
            break;      /* the rest are reserved in get() as slots free up */
        reserve(t, key);
    }
    nvme_tier_flush(t->nvme);
    memcpy(t->ann, experts, (size_t)n * sizeof *experts);
    t->n_ann = n;
    t->ann_layer = layer;
    t->ann_got = 0;
    t->ann_next = i;
    /* waiting for the predicted reads to free a slot may have failed one that
     * the first loop reserved as a hit, and its reservation went with it */
    return tiered_reserved(src, layer, experts, i);
}

/* A resident, settled expert's views; no pin, no policy update, no pump. */
static int tiered_peek(expert_source *src, int layer, int expert, expert_view *out)
{
    tiered *t = src->impl;
    const store *st = t->st;
    if (layer < 0 || layer >= st->n_layers || expert < 0 || expert >= st->n_experts)
        return -1;
    int s = expert_cache_find(&t->cache, layer * st->n_experts + expert);
    if (s < 0 || t->cache.state[s] != SLOT_READY)
        return -1;
    store_layout_view(&st->layout, slot_ptr(t, s), out);
    out->origin = EXPERT_DRAM;
    out->bytes_read = 0;
    out->node = dram_arena_node(&t->arena, s);
    out->stall_s = 0;
    return 0;
}

static int tiered_get(expert_source *src, int layer, int expert, expert_view *out, errbuf *e)
{
    tiered *t = src->impl;
    const store *st = t->st;
    if (layer < 0 || layer >= st->n_layers || expert < 0 || expert >= st->n_experts ||
        store_blob_at(st, layer, expert)->file == UINT32_MAX)
        return err_set(e, "no routed expert %d in layer %d", expert, layer);
    int key = layer * st->n_experts + expert;
    int s, early = t->spec_unused[key];
    if (t->reserved[key]) {
        /* a reserved key keeps its slot: a failed read drops the reservation */
        t->reserved[key] = 0;
        t->n_ahead -= t->missed[key];
        s = expert_cache_find(&t->cache, key);
    } else {
        s = pin_key_or_wait(t, layer, expert);   /* (counts an early read as one) */
        if (s < 0)
            return err_set(e, "all %d DRAM tier slots are in use: the budget is too small for the "
                           "experts in use at once", t->cache.n_slots);
        nvme_tier_flush(t->nvme);
    }
    if (early) {
        t->spec_unused[key] = 0;
        t->spec.used++;
    }
    if (layer == t->ann_layer) {    /* the engine gets the announced experts in order */
        t->ann_got++;
        /* read_ahead may wait for the predicted reads, and one that fails frees
         * its slot with every pin on it: not this one's, whose failure is this
         * get's to report (another expert's read could take the slot) */
        t->held_by_get = s;
        read_ahead(t);
        t->held_by_get = -1;
    }
    double t0 = now_seconds();
    if (settle(t, layer, s, e))
        return -1;
    if (t->n_pend)
        pump_speculative(t);
    store_layout_view(&st->layout, slot_ptr(t, s), out);
    out->origin = early ? EXPERT_EARLY : t->missed[key] ? EXPERT_STORE : EXPERT_DRAM;
    out->bytes_read = out->origin == EXPERT_DRAM ? 0 : (uint32_t)st->layout.slot_bytes;
    out->node = dram_arena_node(&t->arena, s);
    out->stall_s = (float)(now_seconds() - t0);
    return 0;
}

static void tiered_put(expert_source *src, int layer, int expert)
{
    tiered *t = src->impl;
    int s = expert_cache_find(&t->cache, layer * t->st->n_experts + expert);
    if (s >= 0)
        expert_cache_release(&t->cache, s);
    if (t->n_pend)
        pump_speculative(t);
}

static void stats_add(tier_layer_stats *sum, const tier_layer_stats *s)
{
    sum->hits += s->hits;
    sum->early += s->early;
    sum->misses += s->misses;
    sum->bytes_read += s->bytes_read;
    sum->stall_seconds += s->stall_seconds;
}

static void tiered_print_stats(expert_source *src, FILE *out)
{
    tiered *t = src->impl;
    const nvme_stats *ns = nvme_tier_stats(t->nvme);
    tier_layer_stats all = {0};
    fprintf(out, "tier statistics (DRAM tier: %d slots of %.2f MB, policy %s)\n",
            t->cache.n_slots, t->st->layout.slot_bytes / 1e6, t->cache.policy.name);
    fprintf(out, "  %5s %10s %10s %10s %8s %12s %10s\n", "layer", "DRAM hits", "read early",
            "NVMe reads", "hit %", "NVMe MB", "stall ms");
    for (int l = 0; l <= t->st->n_layers; l++) {
        const tier_layer_stats *s = l < t->st->n_layers ? &t->stats[l] : &all;
        uint64_t wanted = s->hits + s->early + s->misses;
        if (!wanted && s != &all)
            continue;
        char name[16];
        snprintf(name, sizeof name, s == &all ? "all" : "%d", l);
        fprintf(out, "  %5s %10llu %10llu %10llu %7.1f%% %12.1f %10.1f\n", name,
                (unsigned long long)s->hits, (unsigned long long)s->early,
                (unsigned long long)s->misses, wanted ? 100.0 * (double)s->hits / (double)wanted : 0.0,
                s->bytes_read / 1e6, s->stall_seconds * 1e3);
        if (s == &all)
            break;
        stats_add(&all, s);
    }
    if (t->cache.policy.peek && t->steps && t->cache.n_slots < t->st->n_blobs)
        fprintf(out, "  steps larger than the DRAM tier: %llu of %llu (their misses took the slots "
                "used last, so the tier kept the rest)\n",
                (unsigned long long)(t->steps_scanned + (uint64_t)t->scan_step),
                (unsigned long long)t->steps);
    if (t->spec.max_in_flight)
        fprintf(out, "  predicted reads: %llu started early, %llu of them used (%.1f%%), %llu "
                "dropped before reading, %llu failed, at most %d in flight (bound %d)\n",
                (unsigned long long)t->spec.reads, (unsigned long long)t->spec.used,
                t->spec.reads ? 100.0 * (double)t->spec.used / (double)t->spec.reads : 0.0,
                (unsigned long long)t->spec.dropped, (unsigned long long)t->spec.failed,
                t->spec.peak_in_flight,
                t->spec.max_in_flight);
    fprintf(out, "  NVMe tier: %llu reads (%s, %s), %llu retried, %llu continued after a short "
            "read\n", (unsigned long long)ns->reads,
            nvme_tier_uses_uring(t->nvme) ? "io_uring" : "pread pool",
            nvme_tier_uses_direct(t->nvme) ? "O_DIRECT" : "buffered",
            (unsigned long long)ns->retries, (unsigned long long)ns->short_reads);
}

static void tiered_destroy(expert_source *src)
{
    tiered *t = src->impl;
    if (!t)
        return;
    /* drains the reads still landing in the arena, which stays mapped when
     * some cannot be (a failed io_uring ring) */
    if (nvme_tier_close(t->nvme) == 0)
        dram_arena_free(&t->arena);
    expert_cache_free(&t->cache);
    free(t->reads);
    free(t->reserved);
    free(t->reserved_keys);
    free(t->ann);
    free(t->spec_slots);
    free(t->spec_pin);
    free(t->spec_unused);
    free(t->missed);
    free(t->pend_layer);
    free(t->pend_expert);
    free(t->stats);
    free(t);
    src->impl = NULL;
}

/* Reads every expert into the arena (the budget holds them all). */
static int load_all(tiered *t, errbuf *e)
{
    const store *st = t->st;
    progress p;
    progress_begin(&p, t->log, "loading experts into DRAM",
                   (uint64_t)st->n_blobs * st->layout.slot_bytes);
    int n = 0, *slots = malloc((size_t)st->n_blobs * sizeof *slots);
    if (!slots)
        return err_set(e, "out of memory");
    for (int l = 0; l < st->n_layers; l++)
        for (int x = 0; x < st->n_experts; x++)
            if (store_blob_at(st, l, x)->file != UINT32_MAX)
                slots[n++] = pin_key(t, l, x);
    nvme_tier_flush(t->nvme);
    int rc = 0;
    for (int i = 0; i < n; i++) {
        if (!rc && settle(t, -1, slots[i], e))
            rc = -1;
        else if (!rc)
            expert_cache_release(&t->cache, slots[i]);
        progress_advance(&p, st->layout.slot_bytes);
    }
    (rc ? progress_stop : progress_end)(&p);
    free(slots);
    return rc;
}

int tiered_source_open(expert_source *out, const store *st, const tiered_options *o, errbuf *e)
{
    memset(out, 0, sizeof *out);
    int n_keys = st->n_layers * st->n_experts;
    if (o->dram_slots < 1)
        return err_set(e, "the DRAM tier needs at least one expert slot");
    int slots = o->dram_slots < st->n_blobs ? o->dram_slots : st->n_blobs;
    tiered *t = calloc(1, sizeof *t);
    if (!t)
        return err_set(e, "out of memory");
    out->impl = t;
    out->name = "dram+nvme";
    /* with every expert in the DRAM tier nothing is evicted, so holding many
     * changes no decision; otherwise one at a time keeps the eviction order (and
     * the replay of traces) independent of the backend */
    out->max_held = slots >= st->n_blobs ? INT_MAX : 1;
    out->get = tiered_get;
    out->put = tiered_put;
    out->prefetch = tiered_prefetch;
    out->reserved = tiered_reserved;
    out->peek = tiered_peek;
    out->print_stats = tiered_print_stats;
    out->destroy = tiered_destroy;
    t->st = st;
    t->log = o->log;
    t->held_by_get = -1;
    t->max_reserved = slots;
    t->max_pend = slots;
    t->last_layer = INT_MAX;    /* the first announcement starts a step */
    t->ann_layer = -1;
    cache_policy pol;
    if (cache_policy_make(&pol, o->policy ? o->policy : "lru", slots, n_keys, st->n_layers)) {
        tiered_destroy(out);
        return err_set(e, "unknown cache policy '%s' or out of memory", o->policy);
    }
    if (expert_cache_init(&t->cache, n_keys, slots, pol) ||
        !(t->reads = calloc((size_t)slots, sizeof *t->reads)) ||
        !(t->reserved = calloc((size_t)n_keys, 1)) ||
        !(t->reserved_keys = malloc((size_t)(slots > st->n_experts ? slots : st->n_experts) *
                                    sizeof(int))) ||
        !(t->ann = malloc((size_t)st->n_experts * sizeof(int))) ||
        !(t->spec_slots = malloc((size_t)slots * sizeof(int))) ||
        !(t->spec_pin = calloc((size_t)slots, 1)) ||
        !(t->spec_unused = calloc((size_t)n_keys, 1)) ||
        !(t->missed = calloc((size_t)n_keys, 1)) ||
        !(t->pend_layer = malloc((size_t)slots * sizeof(int))) ||
        !(t->pend_expert = malloc((size_t)slots * sizeof(int))) ||
        !(t->stats = calloc((size_t)st->n_layers, sizeof *t->stats))) {
        tiered_destroy(out);
        return err_set(e, "out of memory");
    }
    if (dram_arena_alloc(&t->arena, slots, st->layout.slot_bytes, o->numa, o->log, e) ||
        nvme_tier_open(&t->nvme, st, &o->io, e)) {
        tiered_destroy(out);
        return -1;
    }
    nvme_tier_register(t->nvme, t->arena.base, t->arena.bytes, st->layout.slot_bytes);
    if (o->log)
        fprintf(o->log, "DRAM tier: %d slots, %.3f GB, %s, %s; NVMe tier: %s, %s\n", slots,
                t->arena.bytes / 1e9, t->arena.placement,
                t->arena.locked ? "locked" : "not locked", nvme_tier_uses_uring(t->nvme) ?
                "io_uring" : "pread pool", nvme_tier_uses_direct(t->nvme) ? "O_DIRECT" : "buffered");
    if (slots == st->n_blobs && load_all(t, e)) {
        tiered_destroy(out);
        return -1;
    }
    memset(t->stats, 0, (size_t)st->n_layers * sizeof *t->stats);   /* count the run only */
    if (slots < st->n_blobs && o->spec_slots >= 0) {
        int m = o->spec_slots ? o->spec_slots : slots / 4;
        t->spec.max_in_flight = m < 1 ? 1 : (m > slots ? slots : m);
        out->speculate = tiered_speculate;
    }
    return 0;
}

const tier_spec_stats *tiered_source_spec_stats(const expert_source *s)
{
    return s->get == tiered_get ? &((const tiered *)s->impl)->spec : NULL;
}

const tier_layer_stats *tiered_source_stats(const expert_source *s, int *n_layers)
{
    if (s->get != tiered_get)
        return NULL;
    const tiered *t = s->impl;
    *n_layers = t->st->n_layers;
    return t->stats;
}

int tiered_source_totals(const expert_source *s, tier_layer_stats *sum)
{
    memset(sum, 0, sizeof *sum);
    int n = 0;
    const tier_layer_stats *ls = tiered_source_stats(s, &n);
    for (int l = 0; ls && l < n; l++)
        stats_add(sum, &ls[l]);
    return ls ? 0 : -1;
}

const dram_arena *tiered_source_arena(const expert_source *s)
{
    return s->get == tiered_get ? &((const tiered *)s->impl)->arena : NULL;
}
