/* model_weights: the tensor registry of a DeepSeek-V3 / Kimi K2 checkpoint.
 *
 * Opens config.json and the shards, finds every tensor the forward pass needs by
 * its Hugging Face name, checks its dtype and shape against the config and builds
 * zero-copy linear_weight views. Everything is validated at load, routed experts
 * included, so a missing or malformed tensor is reported before any compute.
 * Routed experts are then read through an expert_source (the checkpoint-backed
 * one is model_weights_expert_source). Tensors the model does not use (rotary
 * buffers, MTP layers) are ignored. */
#ifndef MOETIER_MODEL_WEIGHTS_H
#define MOETIER_MODEL_WEIGHTS_H

#include "checkpoint.h"
#include "config.h"
#include "linear_weight.h"
#include "tiers/expert_source.h"

typedef struct ffn_weights {
    linear_weight gate, up, down;
} ffn_weights;

typedef struct layer_weights {
    float *attn_norm;           /* [hidden] */
    float *ffn_norm;            /* [hidden] */
    linear_weight q_a, q_b;     /* q_lora_rank > 0 */
    float *q_a_norm;            /* [q_lora_rank] */
    linear_weight q_proj;       /* q_lora_rank == 0 */
    linear_weight kv_a;         /* [kv_lora + rope, hidden] */
    float *kv_a_norm;           /* [kv_lora] */
    linear_weight kv_b;         /* [heads * (nope + v), kv_lora] */
    linear_weight o_proj;       /* [hidden, heads * v] */
    int is_moe;
    ffn_weights dense;          /* !is_moe */
    linear_weight router;       /* [n_experts, hidden] */
    float *router_bias;         /* [n_experts] or NULL */
    int has_shared;
    ffn_weights shared;
} layer_weights;

typedef struct model_weights {
    model_config cfg;
    checkpoint ckpt;
    linear_weight embed;        /* [vocab, hidden] */
    linear_weight lm_head;      /* [vocab, hidden] */
    float *final_norm;
    layer_weights *layers;
    expert_view *experts;       /* [n_layers * n_routed_experts], validated at open */
    uint64_t bytes_by_format[WF_COUNT];         /* non-expert weights */
    uint64_t expert_bytes_by_format[WF_COUNT];  /* routed experts */
    uint64_t n_linear_by_format[WF_COUNT];
    /* elements (rows x cols) of the non-expert linear weights, the embedding
     * table included, and of the routed experts' */
    uint64_t dense_elements, expert_elements;
    /* tensors of the checkpoint no part of the model read (the next-token
     * prediction layers' aside): config.json describes less than it holds */
    int n_unread;
    const char *first_unread;
} model_weights;

int model_weights_open(model_weights *m, const char *dir, errbuf *e);
void model_weights_close(model_weights *m);

/* The view of routed expert e of layer l, straight from the checkpoint. */
int model_weights_expert(const model_weights *m, int layer, int expert, expert_view *out, errbuf *e);

/* Makes the dense weights (everything but routed experts) resident: their pages
 * are copied into anonymous memory at the same addresses (so every view stays
 * valid), with transparent huge pages (the kernels stream them: fewer TLB misses
 * than page-cache pages), and locked, so decode never waits for the disk and the
 * page cache may drop the file. With `interleave` and several NUMA nodes the copy
 * is spread page by page over the nodes: every thread reads every dense matrix,
 * so all nodes' bandwidth then serves it instead of one node's. Best effort: what
 * cannot be moved or locked stays as it was. Bytes asked for, moved and locked
 * come back. */
void model_weights_make_dense_resident(const model_weights *m, int interleave, uint64_t *wanted,
                                       uint64_t *moved, uint64_t *locked);

/* An expert_source reading from the checkpoint's mapping (no copies). */
int model_weights_expert_source(model_weights *m, expert_source *out);

#endif
