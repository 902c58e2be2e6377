/* planner: tier flags, budget checks and the placement table (see planner.h). */
#include "planner.h"

#include "core/base/decimal.h"
#include "core/base/fileutil.h"
#include "core/base/meminfo.h"
#include "core/engine/engine.h"
#include "kernels/gpu_layout.h"
#include "tiers/cache_policy.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

const char *const tier_flags_usage =
    "  --store DIR          expert store (default: DIR/" DEFAULT_STORE_NAME " when present)\n"
    "  --dram-gb X          GB of RAM for routed experts (default: 85% of the available\n"
    "                       memory less the dense weights and the CPU's KV cache, at\n"
    "                       most the whole store)\n"
    "  --io MODE            store reads: auto, uring or pread (default auto)\n"
    "  --numa MODE          DRAM tier placement: auto, split, interleave or local\n"
    "                       (default auto: split with several nodes)\n"
    "  --policy P           expert caches' eviction (DRAM tier, and VRAM on the GPU):\n"
    "                       lru (default; resists the scans of prefill steps larger\n"
    "                       than the cache), lru-plain (LRU without that), lfu\n"
    "                       (frequency with aging), lfu:H (half-life of H accesses of\n"
    "                       each layer)\n"
    "  --lookahead N        predict the experts of the next N MoE layers with their\n"
    "                       routers and read them from the store early (when the DRAM\n"
    "                       tier cannot hold every expert); on the GPU, copy the next\n"
    "                       layer's into VRAM ahead (when it can); default 1, 0: off\n"
    "  --vram-gb X          GB of GPU memory to use with --backend cuda|auto: dense and\n"
    "                       attention weights, KV cache, activations, the rest caches\n"
    "                       experts (default: 0.9 of what the GPU has free)\n"
    "  --stats              print per-tier and per-layer statistics at the end\n";

int tier_flags_parse(tier_flags *f, int argc, char **argv, int *i)
{
    const char *a = argv[*i];
    int takes = !strcmp(a, "--store") || !strcmp(a, "--dram-gb") || !strcmp(a, "--io") ||
                !strcmp(a, "--numa") || !strcmp(a, "--policy") || !strcmp(a, "--lookahead") ||
                !strcmp(a, "--vram-gb");
    if (!takes) {
        if (!strcmp(a, "--stats")) {
            f->stats = 1;
            return 1;
        }
        return 0;
    }
    if (*i + 1 >= argc) {
        fprintf(stderr, "moetier: %s needs a value\n", a);
        return -1;
    }
    const char *v = argv[++*i];
    if (!strcmp(a, "--store")) {
        f->store_dir = v;
    } else if (!strcmp(a, "--policy")) {
        if (!cache_policy_name_ok(v)) {
            fprintf(stderr, "moetier: --policy expects lru, lru-plain, lfu or lfu:H, got '%s'\n",
                    v);
            return -1;
        }
        f->policy = v;
    } else if (!strcmp(a, "--lookahead")) {
        char *end;
        errno = 0;
        long n = strtol(v, &end, 10);
        if (errno || end == v || *end || n < 0 || n > TIER_MAX_LOOKAHEAD) {
            fprintf(stderr, "moetier: --lookahead expects a number of layers from 0 to %d, got "
                    "'%s'\n", TIER_MAX_LOOKAHEAD, v);
            return -1;
        }
        f->lookahead = (int)n;
        f->lookahead_set = 1;
    } else if (!strcmp(a, "--dram-gb") || !strcmp(a, "--vram-gb")) {
        char *end;
        errno = 0;
        double x = decimal_parse(v, &end);
        /* at most 1e9 GB (an exabyte): the bytes fit in 64 bits */
        if (errno || end == v || *end || !isfinite(x) || x < 0 || x > 1e9) {
            fprintf(stderr, "moetier: %s expects a number of GB from 0 to 1e9, got '%s'\n", a, v);
            return -1;
        }
        if (a[2] == 'd') {
            f->dram_gb = x;
            f->dram_gb_set = 1;
        } else {
            f->vram_gb = x;
            f->vram_gb_set = 1;
        }
    } else if (!strcmp(a, "--io")) {
        if (!strcmp(v, "auto"))
            f->io = IO_AUTO;
        else if (!strcmp(v, "uring"))
            f->io = IO_URING;
        else if (!strcmp(v, "pread"))
            f->io = IO_PREAD;
        else {
            fprintf(stderr, "moetier: --io expects auto, uring or pread, got '%s'\n", v);
            return -1;
        }
    } else if (numa_policy_parse(v, &f->numa)) {
        fprintf(stderr, "moetier: --numa expects auto, split, interleave or local, got '%s'\n", v);
        return -1;
    }
    return 1;
}

uint64_t kv_cache_bytes(const model_config *c, int positions, kv_type kv)
{
    return (uint64_t)c->n_layers * (uint64_t)positions *
           (uint64_t)kv_type_row_bytes(kv, c->kv_lora_rank + c->qk_rope_dim);
}

/* ", the KV cache 1.20 GB (4096 positions, -c) and the prompt cache 4.00 GB
 * (--prompt-cache-gb)": what the plan holds besides the weights, for its
 * messages ("" when nothing). */
static void others_held(const tier_plan *p, const tier_flags *f, char *out, size_t size)
{
    char kv[96] = "", pc[96] = "";
    if (p->kv_bytes)
        snprintf(kv, sizeof kv, "the KV cache %.2f GB (%d positions, -c)", p->kv_bytes / 1e9, p->kv_positions);
    if (f->reserve_bytes)
        snprintf(pc, sizeof pc, "the prompt cache %.2f GB (--prompt-cache-gb)", f->reserve_bytes / 1e9);
    snprintf(out, size, "%s%s%s%s", *kv && *pc ? ", " : *kv || *pc ? " and " : "", kv, *kv && *pc ? " and " : "",
             pc);
}

int tier_plan_make(tier_plan *p, const model_weights *mw, const tier_flags *f, store *st, errbuf *e)
{
    const model_config *c = &mw->cfg;
    memset(p, 0, sizeof *p);
    for (int k = 0; k < WF_COUNT; k++)
        p->dense_bytes += mw->bytes_by_format[k];
    /* (an embedding table tied to the output layer is read whole by it) */
    p->dense_read_bytes = p->dense_bytes - (mw->lm_head.data != mw->embed.data ? linear_weight_bytes(&mw->embed) : 0);
    if (!f->kv_on_device) {
        p->kv_positions = f->kv_positions;
        p->kv_bytes = kv_cache_bytes(c, f->kv_positions, f->kv_type);
    }
    for (int l = 0; l < c->n_layers; l++)
        p->moe_layers += config_is_moe_layer(c, l);
    p->n_experts = p->moe_layers * c->n_routed_experts;
    p->top_k = c->n_experts_per_tok;
    snprintf(p->policy, sizeof p->policy, "%s", f->policy ? f->policy : "lru");
    meminfo_read(&p->mem_total, &p->mem_available);
    /* what the process takes besides the experts, the KV cache and the server's
     * prompt cache among it, fits the machine whatever the experts' plan */
    char others[200];
    others_held(p, f, others, sizeof others);
    if (f->reserve_bytes && p->mem_total && f->reserve_bytes + p->dense_bytes + p->kv_bytes > p->mem_total)
        return err_set(e, "the dense weights %.2f GB%s are more than this machine's %.2f GB of memory; "
                       "lower --prompt-cache-gb%s", p->dense_bytes / 1e9, others, p->mem_total / 1e9,
                       p->kv_bytes ? " or -c" : "");
    if (f->store_dir) {
        snprintf(p->store_dir, sizeof p->store_dir, "%s", f->store_dir);
    } else {
        char idx[4200];
        snprintf(p->store_dir, sizeof p->store_dir, "%s/%s", mw->ckpt.dir, DEFAULT_STORE_NAME);
        snprintf(idx, sizeof idx, "%s/%s", p->store_dir, STORE_INDEX_JSON);
        struct stat sb;
        if (stat(idx, &sb) != 0) {
            /* a store there that cannot be read is not "none": the user made it */
            if (errno != ENOENT)
                return err_set(e, "expert store %s cannot be used: %s: %s (fix it, or pass --store DIR)",
                               p->store_dir, idx, strerror(errno));
            char target[4096];
            if (file_dangling_link(p->store_dir, target, sizeof target))
                return err_set(e, "expert store %s is a symbolic link to %s, which does not exist "
                               "(a disk not mounted?): remove the link to run from the checkpoint, "
                               "or pass --store DIR", p->store_dir, target);
            /* a conversion that was stopped there: said, as it is no store yet */
            char journal[4200];
            snprintf(journal, sizeof journal, "%s/%s", p->store_dir, STORE_JOURNAL);
            p->store_interrupted = stat(journal, &sb) == 0;
            if (f->dram_gb_set)
                return err_set(e, "--dram-gb needs an expert store, and there is %s at %s "
                               "(%s it with moetier convert -m %s, or pass --store DIR)",
                               p->store_interrupted ? "only an interrupted conversion" : "none", p->store_dir,
                               p->store_interrupted ? "finish" : "create", mw->ckpt.dir);
            if (!p->store_interrupted)
                p->store_dir[0] = 0;
            return 0;   /* experts straight from the checkpoint mapping */
        }
    }
    if (p->n_experts == 0)
        return err_set(e, "the model has no routed experts, so an expert store does not apply");
    if (store_open(st, p->store_dir, mw, e))
        return -1;
    p->use_store = 1;
    p->slot_bytes = st->layout.slot_bytes;
    uint64_t all = (uint64_t)st->n_blobs * p->slot_bytes;
    uint64_t budget;
    if (f->dram_gb_set) {
        budget = (uint64_t)(f->dram_gb * 1e9);
    } else {
        p->reserve_bytes = f->reserve_bytes;
        p->kv_left_out = p->kv_bytes > 0;
        double room = 0.85 * (double)p->mem_available - (double)p->dense_bytes -
                      (double)f->reserve_bytes - (double)p->kv_bytes;
        budget = room <= 0 ? 0 : (uint64_t)room < all ? (uint64_t)room : all;
    }
    uint64_t slots = budget / p->slot_bytes;
    p->dram_slots = (int)(slots < (uint64_t)st->n_blobs ? slots : (uint64_t)st->n_blobs);
    uint64_t need = (uint64_t)p->top_k * p->slot_bytes;
    if (p->dram_slots < p->top_k) {
        store_close(st);
        p->use_store = 0;
        /* 4 significant digits, the least rounded up: a budget just short of
         * it must not print as the same number */
        double at_least = need / 1e9, step = pow(10, floor(log10(at_least)) - 3);
        char left[400] = "";
        if (!f->dram_gb_set)
            snprintf(left, sizeof left, " and that is what 85%% of this machine's %.2f GB free leaves after "
                     "the dense weights %.2f GB%s", p->mem_available / 1e9, p->dense_bytes / 1e9, others);
        return err_set(e, "DRAM budget %.4g GB holds %d expert%s of %.2f MB, but one token needs %d "
                       "experts per layer (%.4g GB)%s; give --dram-gb at least %.4g%s", budget / 1e9,
                       p->dram_slots, p->dram_slots == 1 ? "" : "s", p->slot_bytes / 1e6, p->top_k,
                       need / 1e9, left, ceil(at_least / step) * step,
                       !f->dram_gb_set && *others ? (f->reserve_bytes ? ", or lower -c or --prompt-cache-gb"
                                                                      : ", or lower -c")
                                                  : "");
    }
    uint64_t used = (uint64_t)p->dram_slots * p->slot_bytes;
    if (p->mem_total && used + p->dense_bytes + p->kv_bytes + f->reserve_bytes > p->mem_total) {
        store_close(st);
        p->use_store = 0;
        return err_set(e, "DRAM budget %.2f GB plus the dense weights %.2f GB%s is more than this "
                       "machine's %.2f GB of memory; lower --dram-gb%s%s", used / 1e9,
                       p->dense_bytes / 1e9, others, p->mem_total / 1e9, p->kv_bytes ? " or -c" : "",
                       f->reserve_bytes ? " or --prompt-cache-gb" : "");
    }
    return 0;
}

void tier_plan_print(const tier_plan *p, FILE *out)
{
    fprintf(out, "placement plan\n");
    fprintf(out, "  %-6s %-44s %12s %22s\n", "tier", "holds", "GB", "GB per decode token");
    fprintf(out, "  %-6s %-44s %12.3f %22.3f\n", "RAM", "dense weights (checkpoint mapping)",
            p->dense_bytes / 1e9, p->dense_read_bytes / 1e9);
    if (p->kv_bytes) {
        /* the figures of a full cache, which a token at its end reads whole */
        char holds[96];
        snprintf(holds, sizeof holds, "KV cache: %d positions, when full", p->kv_positions);
        fprintf(out, "  %-6s %-44s %12.3f %22.3f\n", "RAM", holds, p->kv_bytes / 1e9,
                p->kv_bytes / 1e9);
    }
    if (!p->use_store) {
        fprintf(out, "  %-6s %-44s %12s %22s\n", "RAM", "routed experts (checkpoint mapping)", "-",
                "-");
        fprintf(out, "  no expert store: experts are paged in from the checkpoint by the kernel\n");
        if (p->store_interrupted)
            fprintf(out, "  (the conversion at %s was interrupted: moetier convert -m on this model "
                    "finishes it)\n", p->store_dir);
        return;
    }
    double per_tok = (double)p->moe_layers * p->top_k * (double)p->slot_bytes;
    double hit = (double)p->dram_slots / (double)p->n_experts;
    char holds[96];
    snprintf(holds, sizeof holds, "%d of %d experts (%.1f%%)", p->dram_slots, p->n_experts,
             100.0 * hit);
    fprintf(out, "  %-6s %-44s %12.3f %22.3f\n", "DRAM", holds,
            (double)p->dram_slots * p->slot_bytes / 1e9, hit * per_tok / 1e9);
    /* the store's path on a line of its own: a long one neither breaks the
     * columns nor gets cut */
    snprintf(holds, sizeof holds, "%d experts (the expert store)", p->n_experts);
    fprintf(out, "  %-6s %-44s %12.3f %22.3f\n", "NVMe", holds,
            (double)p->n_experts * p->slot_bytes / 1e9, (1 - hit) * per_tok / 1e9);
    fprintf(out, "  expert store: %s\n", p->store_dir);
    char caches[96];
    snprintf(caches, sizeof caches, "the DRAM tier caches experts in front of the store (%s)",
             p->policy);
    fprintf(out, "  %s; per-token figures assume uniform routing (real routing is skewed, so the "
            "DRAM tier does better)\n", p->dram_slots == p->n_experts ?
            "every expert fits in DRAM: all are loaded at start" : caches);
    if (p->mem_total)
        fprintf(out, "  machine memory %.2f GB, available %.2f GB\n", p->mem_total / 1e9,
                p->mem_available / 1e9);
    if (p->reserve_bytes)
        fprintf(out, "  the DRAM tier leaves %.2f GB for the server's prompt cache\n",
                p->reserve_bytes / 1e9);
    if (p->kv_left_out)
        fprintf(out, "  the DRAM tier leaves %.2f GB for the KV cache\n", p->kv_bytes / 1e9);
}

static uint64_t max_u64(uint64_t a, uint64_t b)
{
    return a > b ? a : b;
}

uint64_t gpu_plan_activation_bytes(const model_config *c, int chunk, uint64_t slot_bytes,
                                   kv_type kv)
{
    uint64_t C = (uint64_t)chunk, h = (uint64_t)c->hidden_size, H = (uint64_t)c->n_heads;
    uint64_t qk = (uint64_t)(c->qk_nope_dim + c->qk_rope_dim);
    /* FFN gate and up rows: a dense layer's, the shared experts', or the routed
     * experts' that run in VRAM, every row's top-k together (ffn_slots) */
    uint64_t inter = max_u64((uint64_t)c->intermediate_size,
                             (uint64_t)c->moe_intermediate_size *
                                 max_u64(max_u64((uint64_t)c->n_shared_experts, (uint64_t)c->n_experts_per_tok), 1));
    /* the engine's buffers (engine_create: the experts' inputs and outputs for
     * all of a layer's top-k rows, the new cache rows of a step of several
     * sequences), then the backend's scratch, which grows by
     * a quarter over what is asked: FFN gate and up; attention's absorbed
     * queries and latent outputs, or the expanded form's keys and values (at
     * least its minimum of positions) and state; split attention's chunks;
     * and the two staging buffers of one expert each. The terms that do not
     * grow with the step are counted whole, so the plan stays linear in it. */
    uint64_t K = max_u64((uint64_t)c->n_experts_per_tok, 1);
    uint64_t floats = C * ((6 + 2 * K) * h + max_u64((uint64_t)c->q_lora_rank, 1) + H * qk +
                           H * (uint64_t)c->v_head_dim + max_u64((uint64_t)c->n_routed_experts, 1) +
                           (uint64_t)(c->kv_lora_rank + c->qk_rope_dim));
    floats += (C < ENGINE_LOGIT_ROWS ? C : ENGINE_LOGIT_ROWS) * (uint64_t)c->vocab_size;
    uint64_t kv_lora = (uint64_t)c->kv_lora_rank, kvw = (uint64_t)(c->qk_nope_dim + c->v_head_dim);
    uint64_t min_positions = GPU_MLA_EXPANDED_MIN_POSITIONS + GPU_MLA_EXPANDED_TILE;
    floats += 2 * C * inter * 5 / 4;
    floats += (C * H * kv_lora + min_positions * H * kvw) * 5 / 4;
    floats += C * H * max_u64(kv_lora, (uint64_t)c->v_head_dim + 2) * 5 / 4;
    /* a bf16 cache's rows of an expanded block, widened */
    if (kv != KV_F32)
        floats += (C * kv_lora / kvw + min_positions) * (uint64_t)(c->kv_lora_rank + c->qk_rope_dim) *
                  5 / 4;
    return floats * 4 + (uint64_t)GPU_MLA_PART_BYTES * 5 / 4 + 2 * slot_bytes + GPU_MARGIN_BYTES;
}

/* planner.h; `others`: what stays on the GPU besides the activations, which
 * must fit beside them too (a smaller step before a refused plan) */
static int default_gpu_chunk(const model_config *c, uint64_t budget, uint64_t others,
                             uint64_t slot_bytes, kv_type kv)
{
    uint64_t none = gpu_plan_activation_bytes(c, 0, slot_bytes, kv);
    int chunk = GPU_CHUNK_MAX;
    while (chunk > GPU_CHUNK_MIN &&
           (gpu_plan_activation_bytes(c, chunk, slot_bytes, kv) - none > budget / GPU_CHUNK_SHARE ||
            others + gpu_plan_activation_bytes(c, chunk, slot_bytes, kv) > budget))
        chunk /= 2;
    return chunk;
}

int gpu_plan_make(gpu_plan *g, const tier_plan *p, const model_config *c, const tier_flags *f,
                  int ctx, int chunk, uint64_t slot_bytes, uint64_t dev_free, uint64_t dev_total,
                  errbuf *e)
{
    memset(g, 0, sizeof *g);
    g->dev_free = dev_free;
    g->dev_total = dev_total;
    g->dense_bytes = p->dense_bytes;
    kv_type kv = f->kv_type;
    g->kv_bytes = kv_cache_bytes(c, f->kv_positions ? f->kv_positions : ctx, kv);
    g->slot_bytes = slot_bytes;
    g->n_experts = p->n_experts;
    g->moe_layers = p->moe_layers;
    g->top_k = p->top_k;
    if (f->vram_gb_set) {
        g->budget = (uint64_t)(f->vram_gb * 1e9);
        if (dev_total && g->budget > dev_free)
            return err_set(e, "--vram-gb %.2f is more than the %.2f GB free on the GPU (of %.2f GB)",
                           f->vram_gb, dev_free / 1e9, dev_total / 1e9);
    } else if (dev_total) {
        g->budget = (uint64_t)(0.9 * (double)dev_free);
    } else {
        return err_set(e, "no GPU to plan for: give --vram-gb to see a plan for a GPU of that size");
    }
    if (!chunk)
        chunk = default_gpu_chunk(c, g->budget, g->dense_bytes + g->kv_bytes, slot_bytes, kv);
    g->chunk = chunk = chunk < ctx ? chunk : ctx;     /* as the engine takes it */
    g->act_bytes = gpu_plan_activation_bytes(c, chunk, slot_bytes, kv);
    uint64_t fixed = g->dense_bytes + g->kv_bytes + g->act_bytes;
    if (g->budget < fixed)
        return err_set(e, "%s %.2f GB cannot hold what stays on the GPU: dense and attention weights "
                       "%.2f GB + KV cache %.2f GB (-c %d) + activations %.2f GB (--chunk %d) = "
                       "%.2f GB", f->vram_gb_set ? "--vram-gb" : "the GPU's free memory",
                       g->budget / 1e9, g->dense_bytes / 1e9, g->kv_bytes / 1e9, ctx,
                       g->act_bytes / 1e9, chunk, fixed / 1e9);
    uint64_t slots = slot_bytes ? (g->budget - fixed) / slot_bytes : 0;
    g->slots = (int)(slots < (uint64_t)g->n_experts ? slots : (uint64_t)g->n_experts);
    return 0;
}

void gpu_plan_print(const gpu_plan *g, FILE *out)
{
    fprintf(out, "GPU plan (%.2f GB%s)\n", g->budget / 1e9,
            g->dev_total ? "" : ", --vram-gb; no device measured");
    fprintf(out, "  %-6s %-44s %12.3f\n", "VRAM", "dense and attention weights", g->dense_bytes / 1e9);
    fprintf(out, "  %-6s %-44s %12.3f\n", "VRAM", "KV cache", g->kv_bytes / 1e9);
    char act[64];
    snprintf(act, sizeof act, "activations (--chunk %d), scratch, margin", g->chunk);
    fprintf(out, "  %-6s %-44s %12.3f\n", "VRAM", act, g->act_bytes / 1e9);
    char holds[96];
    snprintf(holds, sizeof holds, "expert cache: %d of %d experts (%.1f%%)", g->slots, g->n_experts,
             g->n_experts ? 100.0 * g->slots / g->n_experts : 0.0);
    fprintf(out, "  %-6s %-44s %12.3f\n", "VRAM", holds, (double)g->slots * g->slot_bytes / 1e9);
    if (g->dev_total)
        fprintf(out, "  GPU memory %.2f GB, free %.2f GB\n", g->dev_total / 1e9, g->dev_free / 1e9);
}
