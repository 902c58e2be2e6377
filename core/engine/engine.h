/* engine: the forward pass of a DeepSeek-V3 / Kimi K2 model, read top to bottom.
 *
 * embed -> per layer [RMSNorm -> MLA attention -> residual; RMSNorm -> dense FFN
 * or MoE (router, routed experts through the expert_source, shared expert) ->
 * residual] -> final RMSNorm -> lm_head. Prompts are processed in chunks (prefill);
 * single tokens (decode) reuse the latent KV cache. All math goes through the
 * backend; routed experts come from the expert_source, so where an expert lives
 * never changes the numbers. With a lookahead, each MoE layer also applies the
 * routers of the next MoE layers to the residual stream as it is then and hands
 * the source their top-k as a prediction; the prediction only moves bytes. */
#ifndef MOETIER_ENGINE_H
#define MOETIER_ENGINE_H

#include "backend.h"
#include "core/model/model_weights.h"
#include "kv_cache.h"
#include "tiers/expert_source.h"

/* Optional hooks for tests and traces; host pointers, valid during the call. */
typedef struct engine_observer {
    void *ctx;
    /* after routing of MoE layer `layer` for the token at position pos */
    void (*on_route)(void *ctx, int layer, int pos, const int *ids, const float *weights,
                     const float *scores);
    /* residual stream [T][hidden] after layer `layer` for positions pos0.. */
    void (*on_layer_out)(void *ctx, int layer, int pos0, int T, const float *hidden);
    /* after MoE layer `layer` ran its experts for the T tokens at pos0, for each
     * expert x it ran: origin[x] (an expert_origin), bytes[x] read from the store
     * and stall[x] seconds waited for it; predicted[d * n_experts + x] for d <
     * depth: whether x had been predicted for this layer d + 1 layers ahead */
    void (*on_experts)(void *ctx, int layer, int pos0, int T, const unsigned char *origin,
                       const uint32_t *bytes, const float *stall, const unsigned char *predicted,
                       int depth);
} engine_observer;

/* the deepest lookahead the engine keeps predictions for */
#define ENGINE_MAX_LOOKAHEAD 8

typedef struct engine_stats {
    uint64_t tokens_prefilled, tokens_decoded;
    uint64_t expert_calls;          /* (expert, chunk) evaluations */
    uint64_t expert_groups;         /* backend calls they went in (ffn_batch or ffn) */
    double prefill_seconds, decode_seconds;
    /* cached positions the decode steps' attention read, per layer: a token
     * at position p reads p + 1 (the decode bounds count the cache's bytes) */
    uint64_t kv_positions_decoded;
    /* lookahead: experts predicted for a layer, experts it then chose, and
     * chosen ones that were predicted (recall = correct / chosen, precision =
     * correct / predicted) */
    uint64_t la_predicted, la_chosen, la_correct;
} engine_stats;

enum { ENGINE_STEP_NONE, ENGINE_STEP_PREFILL, ENGINE_STEP_DECODE };

/* rows of logits computed at once (logits_rows): a prefill that wants every
 * position's logits gets them in slices of this many rows, so the buffer is
 * not a chunk's rows x the vocabulary (K2: 0.67 MB a row) */
#define ENGINE_LOGIT_ROWS 256

typedef struct engine {
    const model_weights *mw;
    const model_config *cfg;
    backend *be;
    expert_source *experts;
    kv_cache kv;
    int n_past;                     /* positions already in the cache */
    int *cached_ids;                /* [max_ctx] the token at each cached position */
    int max_chunk;
    /* rows of gath and eout: a chunk's, or for a backend that plans batches
     * all of a layer's (chunk x top-k), so one call takes the layer's experts */
    int gather_rows;
    float *inv_freq;
    float rope_mscale, softmax_scale;
    route_params rp;
    /* MoE layers ahead whose experts are predicted, when the source can use a
     * prediction (expert_source.speculate) or the backend takes the next
     * layer's (backend_ops.plans_batches); 0: off */
    int lookahead;
    engine_observer obs;
    /* optional: asked before each chunk engine_forward runs; nonzero stops it
     * there (a request cancelled, Ctrl+C), so a long prefill stops within one
     * chunk's time */
    int (*stop_requested)(void *ctx);
    void *stop_ctx;
    /* optional, once engine_allow_pauses made room: called between the layers
     * of a prefill step (engine_forward), where it may run decode steps and
     * prefills of other sequences on this engine, made its own by
     * engine_seq_swap (a server's generating conversations and short prompts
     * wait no longer than a layer). It must leave the engine's own sequence
     * as it found it; the prefill then goes on with the bits it has alone,
     * and the work inside gets the bits it gets between two chunks (it is
     * not paused in turn). Its time is not the prefill's.
     * pause_wanted (optional), asked first, says whether there is work for
     * it (setting the chunk aside and back costs a norm of its rows). */
    void (*between_layers)(void *ctx);
    int (*pause_wanted)(void *ctx);
    void *between_ctx;
    engine_stats stats;
    /* what runs now, for observers of the backend's calls (backend_profile.h) */
    int step;                       /* ENGINE_STEP_* */
    /* activations, [max_chunk][...] backend buffers (gath, eout: [gather_rows][hidden]) */
    float *x, *xn, *qa, *q, *attn, *tmp, *moe, *gath, *eout, *logits_rows, *router_logits;
    /* host-side routing and dispatch */
    int *route_ids;
    float *route_w, *route_scores, *host_hidden;
    int *slot_start, *disp_tok, *used_experts;
    /* [ENGINE_MAX_LOOKAHEAD][n_layers][n_experts]: predicted d + 1 layers ahead,
     * not yet scored; the current layer's, once scored: [ENGINE_MAX_LOOKAHEAD][n_experts] */
    unsigned char *predicted, *predicted_now;
    unsigned char *x_origin;        /* [n_experts] per expert of the current layer */
    uint32_t *x_bytes;
    float *x_stall;
    int *predicted_list;            /* [n_experts] */
    /* the next MoE layer's predicted experts, best first, handed to a backend
     * that takes them (backend_ops.plans_batches) with the layer's last group */
    int *hint_list;                 /* [n_experts] */
    int n_hint, hint_layer;
    float *xp;                      /* [max_chunk][hidden] the lookahead's normed state */
    /* [max_chunk][kv row] a step's new cache rows in float32, before each goes
     * to its own sequence's cache or is rounded into a bf16 one */
    float *kv_rows;
    int *row_index;                 /* [max_chunk] 0, 1, 2, ...: one row's gather */
    struct engine_seq **step_seqs;  /* [max_chunk] the sequence of each row of such a step */
    float *disp_w;
    int *pos;
    int logit_rows;                 /* rows of logits_rows: min(max_chunk, ENGINE_LOGIT_ROWS) */
    /* [2 n_experts + 1] the experts of one group, held at once, the shared
     * expert and the hints (engine.c: moe) */
    expert_view *group_views;
    ffn_job *group_jobs;
    /* where a prefill step's residual stream and predictions wait while
     * between_layers runs (engine_allow_pauses: NULL until then) */
    float *x_aside;
    unsigned char *predicted_aside;
    double paused_seconds;          /* spent in between_layers, all steps */
} engine;

/* A sequence (a conversation) the engine is not computing on: its KV cache and
 * the ids it holds. A server running several conversations at once keeps all
 * but the engine's own in these; engine_seq_swap makes one the engine's, for
 * a prefill or the prompt cache, and engine_decode_seqs steps many at once. */
typedef struct engine_seq {
    kv_cache kv;
    int n_past;
    int *cached_ids;
} engine_seq;

/* max_ctx: positions the KV cache holds; max_chunk: tokens per prefill step;
 * kv: the type of the cache's values. */
/* The bytes of the activation buffers engine_create takes for steps of chunk
 * rows (the backend's own scratch not counted): what a longer step costs. */
uint64_t engine_activation_bytes(const model_config *c, int chunk);
int engine_create(engine *en, const model_weights *mw, backend *be, expert_source *experts,
                  int max_ctx, int max_chunk, kv_type kv, errbuf *e);
void engine_destroy(engine *en);
/* Makes room for between_layers (a buffer of the chunk's residual rows: K2
 * 29 MB at 1,024 tokens); -1 with e set when there is none. */
int engine_allow_pauses(engine *en, errbuf *e);
/* Forgets the cache (a new conversation). */
void engine_reset(engine *en);
/* Rewinds the cache to its first n positions (n <= n_past). */
int engine_truncate(engine *en, int n, errbuf *e);
/* How many leading ids a[0..na) and b[0..nb) share. */
int ids_common_prefix(const int *a, int na, const int *b, int nb);
/* How many leading ids[] the cache already holds, at most n - 1 so that a
 * forward over the rest always yields logits. */
int engine_reusable_prefix(const engine *en, const int *ids, int n);
/* Makes the cache hold ids[0..n) with rows saved earlier (a prompt cache's),
 * held by spans in order of position: those of the positions it already
 * holds for the same ids stay, the rest are copied in from the spans, which
 * must cover them. The rows must be this model's for exactly these ids, so
 * what follows computes as if ids had been run here. */
int engine_load_prefix(engine *en, const int *ids, int n, const kv_span *spans, int n_spans,
                       errbuf *e);
/* The same when the caller has put the rows of positions [0, n) into the KV
 * cache itself (kv_cache_load_layer; n <= its size): the cache holds ids[0..n). */
void engine_set_prefix(engine *en, const int *ids, int n);
/* Makes the cache hold the first n positions of src (another sequence; n <=
 * its n_past): the rows it does not already share with src are copied, and
 * what follows computes as if those ids had been run here. */
int engine_copy_prefix(engine *en, const engine_seq *src, int n, errbuf *e);
/* Appends T tokens at position n_past. logits: NULL, or [T][vocab] when
 * all_logits, else [vocab] for the last token; a row of them holding a NaN (a
 * NaN or infinity in the weights, or an overflow) is an error naming its
 * position, since no token can be drawn from it. Returns 0; -1 with e set; or 1
 * with e set when stop_requested stopped it before a chunk or between a
 * chunk's layers: the chunks before are in the cache (n_past counts them, a
 * later forward continues from there with the same numbers; the stopped chunk
 * counts for nothing), and the logits of the stopped call are not written. */
int engine_forward(engine *en, const int *ids, int T, float *logits, int all_logits, errbuf *e);
/* what a NaN row of logits says of its cause */
#define ENGINE_NAN_WHY "the model's weights hold a NaN or infinity, or overflow"
/* The same for one generated token: the step counts as decode in the stats
 * (engine_forward's count as prefill, whatever their length). */
int engine_decode(engine *en, int id, float *logits, errbuf *e);
/* A generated token and T - 1 guessed ones after it in one step (a draft
 * checked): logits [T][vocab], row t the distribution after ids[t]; counted
 * as decode. On the CPU backend each row has the bits engine_decode gives
 * when the ids before it were decoded one at a time, for T of at most
 * ENGINE_DRAFT_MAX_T (attention takes its decode form up to there, the
 * linear kernels compute each row alone below LINEAR_BATCHED_MIN_T). */
#define ENGINE_DRAFT_MAX_T 4
/* nan_rows: NULL, a NaN row is an error as above; else [T], each row's flag
 * set when it holds a NaN and the step goes on: a guess not taken makes its
 * row and those after it unread, so only the caller knows which count. */
int engine_decode_tokens(engine *en, const int *ids, int T, float *logits, unsigned char *nan_rows,
                         errbuf *e);
/* Takes back the last n positions of such steps (guesses not kept): the cache
 * forgets them and the stats no longer count them as decoded. */
int engine_drop_guesses(engine *en, int n, errbuf *e);

/* An empty sequence with a KV cache as large as the engine's. */
int engine_seq_create(const engine *en, engine_seq *s, errbuf *e);
void engine_seq_destroy(engine_seq *s);
/* Exchanges the engine's own sequence (cache, n_past, ids) with s. */
void engine_seq_swap(engine *en, engine_seq *s);
/* One decode step of S rows at once: ids[i] is appended to seqs[i] (NULL: the
 * engine's own sequence) and its next-token logits go to logits + i * vocab.
 * A sequence may take several rows, adjacent, its tokens in order (a token
 * and the guesses after it): each row's attention sees the rows before it.
 * Every operation but attention runs on the S rows together, so a layer's
 * experts are read once for all of them. Each row computes what engine_decode
 * would for its sequence alone, in the same operations with more rows: the
 * bits are the same wherever the backend's results do not depend on how many
 * rows a call has (the CPU kernels below LINEAR_BATCHED_MIN_T rows;
 * docs/server.md). Steps of more than the engine's chunk or the backend's
 * bitwise_rows go in several. Observers see each step's rows with pos0 the
 * first row's position. Returns 0, or -1 with e set: a token out of the
 * vocabulary, a full context or a sequence in rows apart is refused before
 * anything runs; after a failure of the step (a tier's I/O error) the
 * sequences are to be reset. nan_rows: as engine_decode_tokens's, [S]: one
 * sequence's NaN then fails no other. */
int engine_decode_seqs(engine *en, engine_seq *const *seqs, const int *ids, int S, float *logits,
                       unsigned char *nan_rows, errbuf *e);
/* The most rows engine_decode_seqs computes in one pass (one read of the
 * dense weights): the chunk, or less where the backend gives each row its own
 * bits only up to bitwise_rows. */
int engine_step_rows(const engine *en);

#endif
