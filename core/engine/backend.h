/* backend: the one small interface that hides where the math runs.
 *
 * The engine orchestrates the forward pass with these operations only; the CPU
 * backend (cpu_kernels/) implements them today, the CUDA backend (kernels/) will
 * implement the same table. Activation buffers come from alloc() so that a device
 * backend can keep them in its own memory. Weights are linear_weight views. */
#ifndef MOETIER_BACKEND_H
#define MOETIER_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "core/model/linear_weight.h"

/* MoE routing, as given by config.json (see docs/architecture.md). */
typedef struct route_params {
    int n_experts;
    int top_k;
    int n_group, topk_group;
    int sigmoid;            /* 1: sigmoid scores, 0: softmax */
    int group_by_top2;      /* noaux_tc: group score = sum of its top-2 biased scores; else max */
    int use_groups;
    int normalize;          /* norm_topk_prob */
    float scaling;          /* routed_scaling_factor */
} route_params;

/* One MLA attention call: T new tokens at positions pos0..pos0+T-1 attend to the
 * cache rows 0..pos0+t (causal). A cache row is the rms-normed latent (kv_lora
 * values) followed by the rotated shared rope key (rope values). */
typedef struct mla_args {
    const float *q;             /* [T][H][nope + rope], rope part already rotated */
    int T, pos0;
    const float *kv_cache;      /* [pos0 + T][kv_lora + rope] */
    const uint16_t *kv_bf16;    /* the same rows as bf16, instead of kv_cache (NULL: none) */
    const void *kv_q8;          /* the same rows as q8_0 (kv_q8.h), instead of both (NULL: none) */
    const linear_weight *kv_b;  /* [H * (nope + v)][kv_lora] */
    int H, nope, rope, v, kv_lora;
    float scale;
    float *out;                 /* [T][H][v] */
} mla_args;

typedef struct backend backend;

/* one FFN of a batch: out [T][rows of down] = down(silu(gate x) * up x) */
typedef struct ffn_job {
    const linear_weight *gate, *up, *down;
    const float *x;
    int T;
    float *out;
    int node;                   /* OS number of the NUMA node holding the weights, -1: unknown */
    int cache_key;              /* 1 + layer * n_experts + expert for a routed expert (a
                                 * device may keep it cached under this key), 0: none */
    int resident;               /* 1: the model's own weights (a shared expert), which a
                                 * device keeps as for ffn(); 0: a routed expert's */
} ffn_job;
/* A job with T == 0 (x and out NULL) computes nothing: it names an expert the
 * router lookahead predicts for the next MoE layer, which a backend with
 * plans_batches may copy into its own memory during the call. */

typedef struct backend_ops {
    float *(*alloc)(backend *b, size_t n_floats);
    void (*release)(backend *b, float *p);
    /* out[t] = row ids[t] of the embedding */
    void (*embed)(backend *b, const linear_weight *emb, const int *ids, int T, float *out);
    void (*rmsnorm)(backend *b, const float *x, int x_stride, const float *w, int n, int T,
                    float eps, float *out, int out_stride);
    void (*linear)(backend *b, const linear_weight *w, const float *x, int T, float *y);
    void (*rope)(backend *b, float *x, int T, int n_vec, int tok_stride, int vec_stride,
                 int offset, int dim, const int *pos, const float *inv_freq, float mscale);
    /* out = down(silu(gate x) * up x), x [T][cols of gate], out [T][rows of down].
     * The weights of linear() and ffn() (and the norm and rope tables) are the
     * model's: unchanged while it is open, so a device backend may keep its
     * own copy, found by their address. */
    void (*ffn)(backend *b, const linear_weight *gate, const linear_weight *up,
                const linear_weight *down, const float *x, int T, float *out);
    /* optional: jobs[0..n) as ffn would run them one after another (each
     * job's out exactly as ffn computes it); a backend may run them at once.
     * The engine passes routed experts here (n >= 1) when a backend has it:
     * their bytes are valid only during the call, as tiers reuse the memory. */
    void (*ffn_batch)(backend *b, const ffn_job *jobs, int n);
    void (*mla_attention)(backend *b, const mla_args *a);
    /* logits [T][n_experts] -> ids/weights [T][top_k] on the host; scores
     * (optional, [T][n_experts]) gets the unbiased router scores */
    void (*route)(backend *b, const route_params *p, const float *logits, const float *bias,
                  int T, int *ids, float *weights, float *scores);
    /* p[0..n) = 0 */
    void (*zero)(backend *b, float *p, size_t n);
    /* y += x */
    void (*add)(backend *b, float *y, const float *x, size_t n);
    /* dst[i] = src[idx[i]] (rows of dim floats) */
    void (*gather_rows)(backend *b, const float *src, const int *idx, int n, int dim, float *dst);
    /* dst[idx[i]] += w[i] * src[i] */
    void (*scatter_add_rows)(backend *b, float *dst, const int *idx, const float *w, int n,
                             int dim, const float *src);
    /* copies n floats between backend buffers and host memory */
    void (*to_host)(backend *b, float *host, const float *buf, size_t n);
    void (*from_host)(backend *b, float *buf, const float *host, size_t n);
    void (*destroy)(backend *b);
    /* 1: ffn_batch plans each batch as a whole (where each expert runs, what
     * it copies meanwhile), so the engine hands it a layer's experts together
     * wherever the source allows (also those a DRAM tier that evicts reserved
     * for the layer), the layer's shared expert with the first of its batches
     * (a job with resident = 1, after the routed ones; the engine adds its
     * output after theirs, as with ffn()) and the next layer's predicted
     * experts (jobs with T == 0) after the others */
    int plans_batches;
    /* optional: dst[i] = src[i] rounded to bf16, nearest even (n even; dst is
     * backend memory holding n / 2 floats' bytes): writes a bf16 KV cache's rows */
    void (*store_bf16)(backend *b, float *dst, const float *src, size_t n);
    /* optional: add then rmsnorm as one operation, y += x, out = rmsnorm(y)
     * (rows of n, strides n), each bit as the two would give */
    void (*add_rmsnorm)(backend *b, float *y, const float *x, const float *w, int n, int T,
                        float eps, float *out);
    /* optional: returns when every operation queued so far is done; absent
     * where operations are done when they return (the CPU's). `--profile`
     * times a device's operations between two of these. */
    void (*finish)(backend *b);
    /* optional: T rows of `row` values each from src, quantized into q8_0
     * rows (kv_q8.h) one after another from dst (backend memory): writes a
     * q8_0 KV cache's rows */
    void (*store_q8_0)(backend *b, float *dst, const float *src, int T, int row);
} backend_ops;

struct backend {
    const char *name;
    const backend_ops *ops;
    void *impl;
    /* A step of at most this many rows gives each row the bits it gets alone
     * (the CPU's AVX-512 row kernels, below its batched products); 0: a step
     * of any size does. Decode steps of several sequences are cut to it. */
    int bitwise_rows;
    /* set while `--profile` times the operations (backend_profile.h) */
    struct backend_profile *profile;
};

#endif
