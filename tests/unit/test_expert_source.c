/* The engine reads experts only through expert_source: a source that serves
 * private copies of the expert bytes (as a DRAM or VRAM tier will) must give
 * bit-identical logits, and every get() must be matched by a put() (the tiers
 * rely on it to know which experts are in use). */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "core/app/cli_common.h"
#include "testutil.h"

typedef struct copying_source {
    model_weights *mw;
    int outstanding;            /* gets without their put */
    int gets;
    void *data[3], *scale[3];   /* the copies of the expert held now */
} copying_source;

static void *copy_bytes(const void *src, uint64_t n)
{
    void *p = malloc(n ? n : 1);
    memcpy(p, src, n);
    return p;
}

/* Copies one linear_weight's data and scales into fresh buffers. */
static linear_weight copy_linear(const linear_weight *w, void **data, void **scale)
{
    linear_weight c = *w;
    uint64_t total = linear_weight_bytes(w), sbytes = 0;
    if (w->fmt == WF_FP8_BLOCK)
        sbytes = 4ull * (uint64_t)((w->rows + w->block_rows - 1) / w->block_rows) * w->scale_cols;
    else if (w->fmt == WF_INT4_GROUP)
        sbytes = 2ull * (uint64_t)w->rows * w->scale_cols;
    c.data = *data = copy_bytes(w->data, total - sbytes);
    c.scale = *scale = sbytes ? copy_bytes(w->scale, sbytes) : NULL;
    return c;
}

static int copying_get(expert_source *s, int layer, int expert, expert_view *out, errbuf *e)
{
    copying_source *cs = s->impl;
    expert_view v;
    if (model_weights_expert(cs->mw, layer, expert, &v, e))
        return -1;
    /* this source holds one expert at a time; the engine today uses one at a time */
    cr_assert_eq(cs->outstanding, 0, "a second expert was taken before the first was put back");
    out->gate = copy_linear(&v.gate, &cs->data[0], &cs->scale[0]);
    out->up = copy_linear(&v.up, &cs->data[1], &cs->scale[1]);
    out->down = copy_linear(&v.down, &cs->data[2], &cs->scale[2]);
    out->node = -1;
    cs->outstanding++;
    cs->gets++;
    return 0;
}

static void copying_put(expert_source *s, int layer, int expert)
{
    copying_source *cs = s->impl;
    /* freed at once: a use after put is caught by ASan */
    for (int i = 0; i < 3; i++) {
        free(cs->data[i]);
        free(cs->scale[i]);
    }
    cs->outstanding--;
}

static void run_model(const char *dir, expert_source *src, float *logits, int *ids, int T, int steps)
{
    cli_model m;
    model_flags f = {.dir = dir, .ctx = 64, .chunk = 4, .quiet = 1};
    errbuf e;
    cr_assert_eq(cli_model_open(&m, &f, &e), 0, "%s", e.msg);
    if (src) {
        ((copying_source *)src->impl)->mw = &m.mw;
        m.en.experts = src;
    }
    int V = m.mw.cfg.vocab_size;
    cr_assert_eq(engine_forward(&m.en, ids, T, logits, 1, &e), 0, "%s", e.msg);
    for (int k = 0; k < steps; k++)
        cr_assert_eq(engine_forward(&m.en, &ids[T + k], 1, logits + (size_t)(T + k) * V, 0, &e), 0,
                     "%s", e.msg);
    cli_model_close(&m);
}

Test(expert_source, copies_give_identical_logits)
{
    char *dir = test_make_tmpdir("source");
    test_synth_tiny(dir, "int4");
    int ids[16];
    for (int i = 0; i < 16; i++)
        ids[i] = (i * 37 + 5) % 1000;
    int T = 10, steps = 6, V = 1024;
    float *a = calloc((size_t)16 * V, sizeof *a), *b = calloc((size_t)16 * V, sizeof *b);
    run_model(dir, NULL, a, ids, T, steps);
    copying_source cs = {0};
    expert_source src = {.name = "copy", .impl = &cs, .get = copying_get, .put = copying_put};
    run_model(dir, &src, b, ids, T, steps);
    cr_expect_gt(cs.gets, 0);
    cr_expect_eq(cs.outstanding, 0, "%d experts were never put back", cs.outstanding);
    cr_expect(memcmp(a, b, (size_t)16 * V * sizeof *a) == 0, "logits depend on where experts live");
    free(a);
    free(b);
    test_remove_tree(dir);
    free(dir);
}
