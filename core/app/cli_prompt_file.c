/* cli_prompt_file: see cli_prompt_file.h. */
#include "cli_prompt_file.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "core/base/fileutil.h"
#include "core/engine/prompt_cache.h"
#include "cpu_kernels/cpu_backend.h"
#include "tiers/store.h"

int cli_prompt_cache_parse(cli_prompt_cache *pc, int argc, char **argv, int *i)
{
    const char *a = argv[*i];
    if (!strcmp(a, "--prompt-cache")) {
        if (!(pc->path = cli_value(argc, argv, i)))
            return -1;
        return 1;
    }
    if (!strcmp(a, "--prompt-cache-ro")) {
        pc->read_only = 1;
        return 1;
    }
    if (!strcmp(a, "--prompt-cache-all")) {
        pc->all = 1;
        return 1;
    }
    return 0;
}

int cli_prompt_cache_check(cli_prompt_cache *pc, errbuf *e)
{
    int r = prompt_file_probe(pc->path, e);
    if (r < 0)
        return -1;
    pc->exists = r;
    if (!pc->read_only && file_check_writable(pc->path, e))
        return err_prefix(e, "--prompt-cache: ");
    return 0;
}

int cli_model_prompt_identity(const cli_model *m, prompt_identity *id, errbuf *e)
{
    uint64_t fp;
    if (store_fingerprint(&m->mw, &fp, e))
        return -1;
    char path[4096], *cfg;
    size_t len;
    snprintf(path, sizeof path, "%s/config.json", m->mw.ckpt.dir);
    if (file_read_regular(path, &cfg, &len, e))
        return -1;
    memset(id, 0, sizeof *id);
    id->model = XXH3_64bits_withSeed(cfg, len, fp);
    free(cfg);
    if (!strcmp(m->be.name, "cpu")) {
        kernel_path kp = cpu_backend_path(&m->be);
        /* AMX's prefill products have other bits than the FMA ones, and a
         * batch-invariant run's prefill rows other bits than a plain one's */
        snprintf(id->compute, sizeof id->compute, "cpu %s%s%s", kernel_path_name(kp),
                 kp == KPATH_AVX512 && kernel_amx_enabled() ? "+amx" : "",
                 cpu_backend_invariant(&m->be) ? "+inv" : "");
    } else
        snprintf(id->compute, sizeof id->compute, "%s", m->be.name);
    /* a bf16 cache's rows, and all that follows them, have other bits */
    if (m->en.kv.type != KV_F32) {
        size_t at = strlen(id->compute);
        snprintf(id->compute + at, sizeof id->compute - at, ", %s cache",
                 kv_type_name(m->en.kv.type));
    }
    return 0;
}

int cli_prompt_cache_restore(cli_prompt_cache *pc, cli_model *m, const int *ids, int n,
                             float *logits, errbuf *e)
{
    pc->restored = 0;
    if (!pc->path)
        return 0;
    if (!pc->have_id && cli_model_prompt_identity(m, &pc->id, e))
        return err_prefix(e, "--prompt-cache: ");
    pc->have_id = 1;
    if (!pc->exists) {
        if (!m->quiet)
            fprintf(stderr, "prompt cache %s: nothing saved yet%s\n", pc->path,
                    pc->read_only ? "" : "; it will be written");
        return 0;
    }
    /* a file that cannot be used (another model, damaged) only means the
     * prompt is computed; the file is then replaced */
    prompt_file pf;
    errbuf why;
    int k = -1, saved = 0;
    if (prompt_file_open(&pf, pc->path, &pc->id, &m->en, &why) == 0) {
        k = prompt_file_restore(&pf, &m->en, ids, n, logits, &why);
        saved = pf.n;
        free(pc->file_ids);
        pc->file_ids = k < 0 ? NULL : malloc((size_t)pf.n * sizeof *pc->file_ids);
        pc->file_n = pc->file_ids ? pf.n : 0;
        if (pc->file_ids)
            memcpy(pc->file_ids, pf.ids, (size_t)pf.n * sizeof *pc->file_ids);
        prompt_file_close(&pf);
    }
    if (k < 0) {
        if (!m->quiet)
            fprintf(stderr, "prompt cache %s; not used%s\n", why.msg,
                    pc->read_only ? "" : ", it will be replaced");
        return 0;
    }
    pc->restored = k;
    if (!m->quiet)
        fprintf(stderr, "prompt cache %s: %d of the prompt's %d tokens restored (it held %d)%s\n",
                pc->path, k, n, saved, k == n ? ", with their logits: nothing to compute" : "");
    return k;
}

void cli_prompt_cache_save(cli_prompt_cache *pc, cli_model *m, const float *logits)
{
    if (!pc->path || pc->read_only || !pc->have_id || m->en.n_past <= pc->restored)
        return;
    int n = m->en.n_past, held = ids_common_prefix(pc->file_ids, pc->file_n, m->en.cached_ids, n);
    if (held == n) {
        if (!m->quiet)
            fprintf(stderr, "prompt cache %s: kept as it is (it holds these %d positions and %d "
                    "more)\n", pc->path, n, pc->file_n - n);
        return;
    }
    errbuf e;
    if (prompt_file_save(pc->path, &pc->id, &m->en, logits, &e)) {
        fprintf(stderr, "moetier: warning: the prompt cache was not written: %s\n", e.msg);
        return;
    }
    /* what the file holds now, for a later restore or save (chat's next
     * conversation) */
    pc->exists = 1;
    int *copy = realloc(pc->file_ids, (size_t)n * sizeof *copy);
    if (copy)
        memcpy(copy, m->en.cached_ids, (size_t)n * sizeof *copy);
    else
        free(pc->file_ids);     /* then nothing counts as held: the next save writes */
    pc->file_ids = copy;
    pc->file_n = copy ? n : 0;
    if (!m->quiet)
        fprintf(stderr, "prompt cache %s: %d position%s written (%.1f MB)\n", pc->path, n,
                n == 1 ? "" : "s", (double)n * (double)prompt_cache_position_bytes(&m->en) / 1e6);
}

void cli_prompt_cache_free(cli_prompt_cache *pc)
{
    free(pc->file_ids);
    pc->file_ids = NULL;
    pc->file_n = 0;
}
