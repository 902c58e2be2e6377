/* cmd_synth: `moetier synth --preset P [--layers N] --format F -o DIR ...`.
 *
 * Writes a random-weight checkpoint in the real Hugging Face layout (see
 * core/model/synth.h). Prints the size before writing and progress while it
 * writes (on stderr). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli_common.h"
#include "commands.h"
#include "core/model/synth.h"
#include "tiers/store.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: moetier synth [--preset P] [--layers N] [--format bf16|fp8|int4] -o DIR\n"
               "                     [--seed S] [--set key=value]... [--shard-mb MB] [--force]\n"
               "  Writes a random-weight checkpoint (config.json, index, shards, tokenizer).\n"
               "  --preset P      ");
    for (const synth_preset *p = synth_presets(); p->name; p++)
        fprintf(f, "%s%s", p == synth_presets() ? "" : ", ", p->name);
    fprintf(f, " (default k2-tiny)\n");
    for (const synth_preset *p = synth_presets(); p->name; p++)
        fprintf(f, "                    %-9s %s\n", p->name, p->description);
    fprintf(f, "  --layers N      num_hidden_layers (default: the preset's)\n"
               "  --format F      bf16 (default), fp8 (block E4M3, like Kimi-K2-Instruct) or\n"
               "                  int4 (compressed-tensors g32 routed experts, like\n"
               "                  Kimi-K2-Thinking)\n"
               "  -o DIR          output directory\n"
               "  --seed S        random seed (default 1); the same seed writes the same bytes\n"
               "  --set key=value override a config.json field (dotted for nested keys),\n"
               "                  e.g. --set q_lora_rank=null --set n_group=4 --set topk_group=2\n"
               "  --shard-mb MB   shard size limit (default: at least 2 shards of at most\n"
               "                  2000 MB)\n"
               "  --force         overwrite an existing checkpoint (its config.json, index and\n"
               "                  model-NNNNN-of-NNNNN.safetensors shards; no other file);\n"
               "                  allow the full k2 preset; write even where the disk looks\n"
               "                  too small\n");
}

int cmd_synth(int argc, char **argv)
{
    synth_options o = synth_options_default();
    const char **sets = calloc((size_t)argc + 1, sizeof *sets);
    int rc = 2;
    errbuf e;
    if (!sets)
        return 1;
    o.sets = sets;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        unsigned long long u;
        float mb;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            rc = 0;
            goto out;
        } else if (!strcmp(a, "--force")) {
            o.force = 1;
            continue;
        }
        static const char *const valued[] = {"--preset", "--layers", "--format", "-o", "--out",
                                             "--seed", "--set", "--shard-mb"};
        int known = 0;
        for (size_t k = 0; k < sizeof valued / sizeof *valued; k++)
            known |= !strcmp(a, valued[k]);
        if (!known) {
            fprintf(stderr, "moetier synth: unknown option '%s'\n", a);
            usage(stderr);
            goto out;
        }
        if (!(v = cli_value(argc, argv, &i)))
            goto out;
        if (!strcmp(a, "--preset")) {
            const synth_preset *p = synth_presets();
            while (p->name && strcmp(p->name, v))
                p++;
            if (!p->name) {
                fprintf(stderr, "moetier synth: --preset %s is not one of:", v);
                for (p = synth_presets(); p->name; p++)
                    fprintf(stderr, " %s", p->name);
                fprintf(stderr, "\n");
                goto out;
            }
            o.preset = v;
        } else if (!strcmp(a, "--layers")) {
            if (cli_int(a, v, 1, 100000, &o.layers))
                goto out;
        } else if (!strcmp(a, "--format")) {
            if (synth_format_parse(v, &o.format, &e)) {
                cli_fail(&e);
                goto out;
            }
        } else if (!strcmp(a, "-o") || !strcmp(a, "--out")) {
            o.out_dir = v;
        } else if (!strcmp(a, "--seed")) {
            if (cli_u64(a, v, &u))
                goto out;
            o.seed = u;
        } else if (!strcmp(a, "--set")) {
            sets[o.n_sets++] = v;
        } else if (!strcmp(a, "--shard-mb")) {
            if (cli_float(a, v, &mb) || mb <= 0) {
                fprintf(stderr, "moetier synth: --shard-mb must be > 0\n");
                goto out;
            }
            o.shard_mb = mb;
        }
    }
    if (!o.out_dir) {
        fprintf(stderr, "moetier synth: -o DIR is required\n");
        usage(stderr);
        goto out;
    }
    uint64_t bytes;
    /* the config is built first: a bad --set or --layers is an option's value (2) */
    rc = synth_estimate_bytes(&o, &bytes, &e) ? 2 : 1;
    if (rc == 1) {
        fprintf(stderr, "synth: %s preset, %s, %.3f GB -> %s\n", o.preset,
                synth_format_name(o.format), (double)bytes / 1e9, o.out_dir);
        o.progress = stderr;
        if (synth_run(&o, &e) == 0)
            rc = 0;
        /* a replaced checkpoint's store stays (it may be large, and it is
         * the user's), but runs refuse it: say so now */
        char store_dir[4200];
        struct stat sb;
        snprintf(store_dir, sizeof store_dir, "%s/%s", o.out_dir, DEFAULT_STORE_NAME);
        if (rc == 0 && stat(store_dir, &sb) == 0)
            fprintf(stderr, "synth: %s is the expert store of the checkpoint this replaced; `moetier "
                    "convert -m %s --force` rebuilds it for this one\n", store_dir, o.out_dir);
    }
    if (rc)
        cli_fail(&e);
out:
    free(sets);
    return rc;
}
