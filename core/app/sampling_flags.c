/* sampling_flags: the llama.cpp-style sampling options shared by run and chat. */
#include "sampling_flags.h"

#include <string.h>

#include "cli_common.h"

void sampling_flags_usage(FILE *f)
{
    fprintf(f, "sampling:\n"
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
               "  --seed S             random seed (default 0)\n");
}

int sampling_flag_parse(sampler_params *p, int argc, char **argv, int *i)
{
    const char *a = argv[*i], *v;
    unsigned long long u;
    if (!strcmp(a, "--greedy")) {
        p->temperature = 0;
        return 1;
    }
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

