/* sampling_flags: the llama.cpp-style sampling options shared by run and chat. */
#include "sampling_flags.h"

#include <string.h>

#include "cli_common.h"

void sampling_flags_usage(FILE *f)
{
    fprintf(f, "sampling (llama.cpp's flags, in vLLM's order: the temperature before typical, top-p,\n"
               "min-p and XTC):\n"
               "  --greedy             argmax decoding (same as --temp 0)\n"
               "  --temp T             temperature (default 0.6; 0 = greedy)\n"
               "  --top-k K            keep the K most likely tokens (default 0 = off)\n"
               "  --top-p P            nucleus sampling (default 1 = off)\n"
               "  --min-p P            drop tokens below P x the top probability (default 0)\n"
               "  --repeat-penalty R   penalise recent tokens (default 1 = off)\n"
               "  --repeat-last-n N    window of the penalty (default 64)\n"
               "  --presence-penalty P\n"
               "                       subtract P from each token the answer holds (default 0)\n"
               "  --frequency-penalty F\n"
               "                       subtract F x its count in the answer (default 0)\n"
               "  --dry-multiplier M   llama.cpp's DRY: a token that would repeat a sequence of the\n"
               "                       context longer than the allowed length loses\n"
               "                       M x base^(length - allowed) (default 0 = off)\n"
               "  --dry-base B         (default 1.75)\n"
               "  --dry-allowed-length N\n"
               "                       (default 2)\n"
               "  --dry-penalty-last-n N\n"
               "                       tokens it looks back over (default -1 = the context)\n"
               "  --dry-sequence-breaker S\n"
               "                       a text no repeat reaches back past; each one given drops the\n"
               "                       defaults (a line break, ':', '\"', '*'); none: no breakers\n"
               "  --top-nsigma N       drop tokens N standard deviations of the logits below the\n"
               "                       best (default -1 = off)\n"
               "  --xtc-probability P  XTC: with probability P, drop the tokens above the threshold\n"
               "                       but the least likely of them (default 0 = off)\n"
               "  --xtc-threshold T    (default 0.1; above 0.5: off)\n"
               "  --typical P          keep the tokens whose surprise is nearest the entropy, up to\n"
               "                       P of the probability (default 1 = off)\n"
               "  --dynatemp-range R   the temperature moves within +-R with the candidates'\n"
               "                       normalized entropy (default 0 = off)\n"
               "  --dynatemp-exp E     ... to the power E (default 1)\n"
               "  --mirostat N         llama.cpp's Mirostat 1 or 2, in place of top-k, typical,\n"
               "                       top-p, min-p, XTC and, as in llama.cpp, the dynamic\n"
               "                       temperature (default 0 = off)\n"
               "  --mirostat-ent T     its target surprise in bits (default 5)\n"
               "  --mirostat-lr E      its learning rate (default 0.1)\n"
               "  --seed S             random seed (default 0)\n");
}

void breaker_flags_strings(const breaker_flags *b, const char *const **strs, int *n)
{
    *strs = b->given ? b->str : dry_default_breakers;
    *n = b->given ? b->n : (int)(sizeof dry_default_breakers / sizeof *dry_default_breakers);
}

int sampling_flags_finish(sampler_params *p, const breaker_flags *b, const tokenizer *t, int context,
                          dry_breakers *out, errbuf *e)
{
    memset(out, 0, sizeof *out);
    if (p->dry_penalty_last_n < 0 || p->dry_penalty_last_n > context)
        p->dry_penalty_last_n = context; /* (-1: the context; more never holds more tokens) */
    if (p->dry_multiplier == 0 || p->dry_penalty_last_n == 0)
        return 0;
    const char *const *strs;
    int n;
    breaker_flags_strings(b, &strs, &n);
    if (n && !t)
        return err_set(e, "--dry-multiplier: the sequence breakers need the model's tokenizer "
                          "(--dry-sequence-breaker none: no breakers)");
    if (n && dry_breakers_build(out, t, strs, n, e))
        return -1;
    p->dry_breakers = dry_breakers_view(out);
    return 0;
}

/* llama.cpp's sampler flags: a float or an int each (the int's bounds), or a breaker. */
static int llama_sampler_flag(sampler_params *p, breaker_flags *b, const char *a, const char *v)
{
    if (!strcmp(a, "--dry-multiplier"))
        return cli_float(a, v, &p->dry_multiplier) ? -1 : 1;
    if (!strcmp(a, "--dry-base"))
        return cli_float(a, v, &p->dry_base) ? -1 : 1;
    if (!strcmp(a, "--dry-allowed-length"))
        return cli_int(a, v, 0, 1 << 20, &p->dry_allowed_length) ? -1 : 1;
    if (!strcmp(a, "--dry-penalty-last-n"))
        return cli_int(a, v, -1, 1 << 30, &p->dry_penalty_last_n) ? -1 : 1;
    if (!strcmp(a, "--top-nsigma"))
        return cli_float(a, v, &p->top_n_sigma) ? -1 : 1;
    if (!strcmp(a, "--xtc-probability"))
        return cli_float(a, v, &p->xtc_probability) ? -1 : 1;
    if (!strcmp(a, "--xtc-threshold"))
        return cli_float(a, v, &p->xtc_threshold) ? -1 : 1;
    if (!strcmp(a, "--typical"))
        return cli_float(a, v, &p->typical_p) ? -1 : 1;
    if (!strcmp(a, "--dynatemp-range"))
        return cli_float(a, v, &p->dynatemp_range) ? -1 : 1;
    if (!strcmp(a, "--dynatemp-exp"))
        return cli_float(a, v, &p->dynatemp_exponent) ? -1 : 1;
    if (!strcmp(a, "--mirostat"))
        return cli_int(a, v, 0, 2, &p->mirostat) ? -1 : 1;
    if (!strcmp(a, "--mirostat-lr"))
        return cli_float(a, v, &p->mirostat_eta) ? -1 : 1;
    if (!strcmp(a, "--mirostat-ent"))
        return cli_float(a, v, &p->mirostat_tau) ? -1 : 1;
    /* --dry-sequence-breaker */
    if (!b->given)
        b->n = 0;
    b->given = 1;
    if (!strcmp(v, "none")) {
        b->n = 0;
        return 1;
    }
    if (b->n == DRY_MAX_BREAKERS) {
        fprintf(stderr, "moetier: --dry-sequence-breaker: at most %d breakers\n", DRY_MAX_BREAKERS);
        return -1;
    }
    b->str[b->n++] = v;
    return 1;
}

int sampling_flag_parse(sampler_params *p, breaker_flags *b, int argc, char **argv, int *i)
{
    static const char *const llama_flags[] = {
        "--dry-multiplier",       "--dry-base",      "--dry-allowed-length", "--dry-penalty-last-n",
        "--dry-sequence-breaker", "--top-nsigma",    "--xtc-probability",    "--xtc-threshold",
        "--typical",              "--dynatemp-range", "--dynatemp-exp",      "--mirostat",
        "--mirostat-lr",          "--mirostat-ent"};
    const char *a = argv[*i], *v;
    unsigned long long u;
    if (!strcmp(a, "--greedy")) {
        p->temperature = 0;
        return 1;
    }
    for (size_t k = 0; k < sizeof llama_flags / sizeof *llama_flags; k++)
        if (!strcmp(a, llama_flags[k]))
            return (v = cli_value(argc, argv, i)) ? llama_sampler_flag(p, b, a, v) : -1;
    if (strcmp(a, "--temp") && strcmp(a, "--top-k") && strcmp(a, "--top-p") &&
        strcmp(a, "--min-p") && strcmp(a, "--repeat-penalty") && strcmp(a, "--repeat-last-n") &&
        strcmp(a, "--presence-penalty") && strcmp(a, "--frequency-penalty") && strcmp(a, "--seed"))
        return 0;
    if (!(v = cli_value(argc, argv, i)))
        return -1;
    if (!strcmp(a, "--temp"))
        return cli_float(a, v, &p->temperature) ? -1 : 1;
    if (!strcmp(a, "--top-k"))
        return cli_int(a, v, 0, 1 << 30, &p->top_k) ? -1 : 1;
    if (!strcmp(a, "--top-p"))
        return cli_float(a, v, &p->top_p) ? -1 : 1;
    if (!strcmp(a, "--min-p"))
        return cli_float(a, v, &p->min_p) ? -1 : 1;
    if (!strcmp(a, "--repeat-penalty"))
        return cli_float(a, v, &p->repeat_penalty) ? -1 : 1;
    if (!strcmp(a, "--presence-penalty"))
        return cli_float(a, v, &p->presence_penalty) ? -1 : 1;
    if (!strcmp(a, "--frequency-penalty"))
        return cli_float(a, v, &p->frequency_penalty) ? -1 : 1;
    if (!strcmp(a, "--repeat-last-n"))
        return cli_int(a, v, 0, 1 << 20, &p->repeat_last_n) ? -1 : 1;
    if (cli_u64(a, v, &u))
        return -1;
    p->seed = u;
    return 1;
}

