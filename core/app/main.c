/* main: `moetier <command> [options]` dispatch. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "commands.h"
#include "core/base/json_alloc.h"

static const struct {
    const char *name;
    int (*fn)(int, char **);
    const char *what;
} commands[] = {
    {"run", cmd_run, "generate from a prompt (text or token ids)"},
    {"chat", cmd_chat, "interactive multi-turn chat in the model's chat format"},
    {"tune", cmd_tune, "measure this machine, predict tokens/s per DRAM budget, recommend one"},
    {"serve", cmd_serve, "OpenAI-compatible HTTP server (chat, completions, streaming, tools)"},
    {"logits", cmd_logits, "write the logits of one prefill as float32 [T, vocab]"},
    {"perplexity", cmd_perplexity, "perplexity of a text, in windows scored on their second half"},
    {"inspect", cmd_inspect, "print architecture, tensors and bytes per format and tier"},
    {"convert", cmd_convert, "repack the routed experts into the expert store (--check verifies)"},
    {"bench", cmd_bench, "a model's prefill and decode speed (bench model), the CPU kernels (bench\n"
     "             kernels) or the GPU (bench gpu) against this machine's yardsticks"},
    {"trace", cmd_trace, "routing traces: import a CSV, statistics, cache policy replay vs Belady"},
    {"synth", cmd_synth, "write a random-weight checkpoint (k2-tiny, k2-slice, k2)"},
    {"tokenize", cmd_tokenize, "print the token ids of a text"},
};

static void usage(FILE *f)
{
    fprintf(f, "usage: moetier <command> [options]   (moetier <command> --help for its options)\n\n");
    for (size_t i = 0; i < sizeof commands / sizeof *commands; i++)
        fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].what);
}

/* A standard descriptor closed by the caller (`<&-`) would go to the next
 * file opened: output meant for stdout would land in a trace or a shard, and
 * chat would poll its own signal pipe as stdin and wait forever. Each closed
 * one is held by /dev/null opened the other way round, so reading stdin or
 * writing stdout still fails with EBADF, as it did. */
static void hold_closed_standard_fds(void)
{
    for (int fd = 0; fd < 3; fd++) {
        if (fcntl(fd, F_GETFD) >= 0 || errno != EBADF)
            continue;
        int got = open("/dev/null", fd == 0 ? O_WRONLY : O_RDONLY);
        if (got > fd) {
            dup2(got, fd);
            close(got);
        }
    }
}

int main(int argc, char **argv)
{
    hold_closed_standard_fds();
    /* a file that reaches the size limit (ulimit -f, systemd's LimitFSIZE)
     * fails its write with EFBIG, which each writer reports and survives,
     * rather than killing the process with what it had not saved */
    signal(SIGXFSZ, SIG_IGN);
    json_alloc_install();   /* before any thread: a parse's NULL told apart when memory ran out */
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof *commands; i++)
        if (!strcmp(argv[1], commands[i].name)) {
            int rc = commands[i].fn(argc - 1, argv + 1);
            /* what scripts read is on stdout: output that did not reach it (a
             * full disk, a closed pipe with SIGPIPE ignored) is a failure */
            if ((fflush(stdout) != 0 || ferror(stdout)) && rc == 0) {
                fprintf(stderr, "moetier: writing standard output: %s\n",
                        errno ? strerror(errno) : "error");
                rc = 1;
            }
            return rc;
        }
    fprintf(stderr, "moetier: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return 2;
}
