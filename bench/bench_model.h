/* bench_model: the synthetic model benchmarks share, and its removal. Each
 * benchmark is one program; this header's functions are its own copies. */
#ifndef MOETIER_BENCH_MODEL_H
#define MOETIER_BENCH_MODEL_H

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/base/errbuf.h"
#include "core/base/fileutil.h"
#include "core/model/synth.h"

static inline int bench_remove_entry(const char *path, const struct stat *st, int flag, struct FTW *f)
{
    (void)st;
    (void)flag;
    (void)f;
    return remove(path);
}

/* removes the directory tree at path (a model the benchmark wrote) */
static inline void bench_remove_tree(const char *path)
{
    nftw(path, bench_remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* Writes into model (n bytes) the path of a synthetic model with Kimi K2's
 * expert shapes (7168 -> 2048 -> 7168 in INT4), 64 experts per layer with
 * top-8, and 1 dense + 2 MoE layers, written as name under the scratch
 * directory (argv[1], else $MOETIER_BENCH_DIR, else build/bench-scratch). */
static inline int bench_k2_experts_model(int argc, char **argv, const char *name, char *model,
                                         size_t n, errbuf *e)
{
    const char *base = argc > 1 ? argv[1] : getenv("MOETIER_BENCH_DIR");
    if (!base)
        base = "build/bench-scratch";
    snprintf(model, n, "%s/%s", base, name);
    if (dir_ensure(base, e))
        return -1;
    const char *sets[] = {"n_routed_experts=64", "n_group=1", "topk_group=1"};
    synth_options so = synth_options_default();
    so.preset = "k2-slice";
    so.out_dir = model;
    so.force = 1;
    so.layers = 3;
    so.sets = sets;
    so.n_sets = 3;
    if (synth_format_parse("int4", &so.format, e) || synth_run(&so, e))
        return err_prefix(e, "synth: ");
    return 0;
}

#endif
