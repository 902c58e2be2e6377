/* Stopping: SIGINT/SIGTERM become a request whichever thread takes them, a
 * second one ends the process at once; the engine's stop check stops a forward
 * between chunks with the cache consistent; `serve` stops cleanly on a signal
 * delivered to any of its threads; `chat` quits on Ctrl+C at its prompt. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/app/cli_common.h"
#include "core/base/stop_signal.h"
#include "testutil.h"

static int fd_readable(int fd)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    return poll(&p, 1, 0) == 1;
}

Test(stop, signal_is_recorded_then_cleared)
{
    struct sigaction before, after;
    sigaction(SIGTERM, NULL, &before);
    cr_assert_eq(stop_signal_install(), 0);
    cr_expect_eq(stop_signal_pending(), 0);
    cr_expect_not(fd_readable(stop_signal_fd()));
    raise(SIGTERM);
    cr_expect_eq(stop_signal_pending(), SIGTERM);
    cr_expect(fd_readable(stop_signal_fd()), "the wake-up descriptor must be readable");
    cr_expect_eq(stop_signal_wait(), SIGTERM);
    stop_signal_clear();
    cr_expect_eq(stop_signal_pending(), 0);
    cr_expect_not(fd_readable(stop_signal_fd()), "clear must drain the wake-up descriptor");
    /* after a clear the next signal is a first one again, not an exit */
    raise(SIGINT);
    cr_expect_eq(stop_signal_pending(), SIGINT);
    stop_signal_uninstall();
    sigaction(SIGTERM, NULL, &after);
    cr_expect(after.sa_handler == before.sa_handler, "uninstall must restore the old handler");
}

static void *sleeper(void *arg)
{
    (void)arg;
    for (;;)
        pause();
    return NULL;
}

/* The signal handled on a thread that is not the one waiting wakes the waiter. */
Test(stop, signal_on_another_thread_wakes_the_waiter)
{
    cr_assert_eq(stop_signal_install(), 0);
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, sleeper, NULL), 0);
    /* the main thread blocks both, so only the other thread can take them */
    sigset_t both, old;
    sigemptyset(&both);
    sigaddset(&both, SIGINT);
    sigaddset(&both, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &both, &old);
    cr_assert_eq(pthread_kill(t, SIGINT), 0);
    cr_expect_eq(stop_signal_wait(), SIGINT);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_cancel(t);
    pthread_join(t, NULL);
    stop_signal_uninstall();
}

Test(stop, second_signal_exits_at_once)
{
    fflush(NULL);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        int devnull = open("/dev/null", O_WRONLY);
        dup2(devnull, STDERR_FILENO);
        if (stop_signal_install())
            _exit(1);
        raise(SIGINT);
        raise(SIGTERM);
        _exit(0);      /* reached only when the second signal did not end the process */
    }
    int st;
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 128 + SIGTERM,
              "the second signal must exit with %d (status %#x)", 128 + SIGTERM, st);
}

typedef struct stop_after {
    int calls, stop_at;     /* stops on call stop_at (1-based) */
} stop_after;

static int stop_on_call(void *ctx)
{
    stop_after *s = ctx;
    return ++s->calls >= s->stop_at;
}

/* Stopped after one chunk, the cache holds exactly that chunk; the forward that
 * continues gives the logits of one uninterrupted forward (same chunks, same
 * sums), and a decode step stopped before it leaves everything as it was.
 * Stopped between a chunk's layers, the chunk counts for nothing, and the
 * forward again from there gives the same logits too. */
/* A synthetic k2-tiny in a new folder (returned), opened in chunks of 4, and
 * ten prompt ids. */
static char *open_tiny(cli_model *m, const char *tag, int ids[10])
{
    char *dir = test_make_tmpdir(tag);
    test_synth_tiny(dir, "int4");
    model_flags f = {.dir = dir, .ctx = 64, .chunk = 4, .quiet = 1};
    errbuf e;
    cr_assert_eq(cli_model_open(m, &f, &e), 0, "%s", e.msg);
    for (int i = 0; i < 10; i++)
        ids[i] = (i * 37 + 11) % m->mw.cfg.vocab_size;
    return dir;
}

Test(stop, engine_stops_between_chunks, .timeout = 60)
{
    cli_model m;
    int ids[10];
    char *dir = open_tiny(&m, "stop_engine", ids);
    errbuf e;
    engine *en = &m.en;
    int V = m.mw.cfg.vocab_size;
    float *whole = malloc((size_t)V * sizeof *whole), *resumed = malloc((size_t)V * sizeof *resumed);
    cr_assert(whole && resumed);
    cr_assert_eq(engine_forward(en, ids, 10, whole, 0, &e), 0, "%s", e.msg);
    engine_reset(en);

    for (int i = 0; i < V; i++)
        resumed[i] = NAN;
    /* (the check before the first chunk, then one between each of its layers) */
    int layers = m.mw.cfg.n_layers;
    cr_assert_gt(layers, 1, "the premise: a chunk of several layers");
    stop_after sa = {.stop_at = 2};
    en->stop_requested = stop_on_call;
    en->stop_ctx = &sa;
    uint64_t prefilled = en->stats.tokens_prefilled;
    cr_assert_eq(engine_forward(en, ids, 10, resumed, 0, &e), 1, "a stop between layers must return 1");
    cr_expect(strstr(e.msg, "0 of 10"), "the stopped chunk counts for nothing: %s", e.msg);
    cr_expect_eq(en->n_past, 0);
    cr_expect_eq(en->stats.tokens_prefilled, prefilled);
    cr_expect(isnan(resumed[0]), "a stopped forward must not write logits");
    sa = (stop_after){.stop_at = layers + 1};
    cr_assert_eq(engine_forward(en, ids, 10, resumed, 0, &e), 1, "a stop must return 1");
    cr_expect(strstr(e.msg, "4 of 10"), "the message says how far it got: %s", e.msg);
    cr_expect_eq(en->n_past, 4, "one chunk of 4 must be in the cache, not %d", en->n_past);
    cr_expect_eq(en->stats.tokens_prefilled - prefilled, 4);
    cr_expect(isnan(resumed[0]) && isnan(resumed[V - 1]), "a stopped forward must not write logits");
    cr_expect_eq(engine_reusable_prefix(en, ids, 10), 4);

    en->stop_requested = NULL;
    cr_assert_eq(engine_forward(en, ids + 4, 6, resumed, 0, &e), 0, "%s", e.msg);
    cr_expect_eq(memcmp(whole, resumed, (size_t)V * sizeof *whole), 0,
                 "the resumed prefill must give the uninterrupted logits");

    sa = (stop_after){.stop_at = 1};
    en->stop_requested = stop_on_call;
    uint64_t decoded = en->stats.tokens_decoded;
    cr_expect_eq(engine_decode(en, ids[0], resumed, &e), 1);
    cr_expect_eq(en->n_past, 10);
    cr_expect_eq(en->stats.tokens_decoded, decoded);
    en->stop_requested = NULL;
    cli_model_close(&m);
    free(whole);
    free(resumed);
    test_remove_tree(dir);
    free(dir);
}

/* A stop asked for by the work of a pause between a chunk's layers (a
 * server's nested request ends the paused one's client) is heard when the
 * pause ends: the chunk's last layer does not run, and it counts for nothing. */
typedef struct pause_stop {
    int boundaries, last; /* pause_wanted's calls; the boundary to pause at */
    int paused, stop;
} pause_stop;

static int pause_at_last(void *ctx)
{
    pause_stop *p = ctx;
    return ++p->boundaries == p->last;
}

static void stop_in_pause(void *ctx)
{
    pause_stop *p = ctx;
    p->paused++;
    p->stop = 1;
}

static int stop_flag(void *ctx)
{
    return ((pause_stop *)ctx)->stop;
}

Test(stop, a_stop_asked_in_a_pause_is_heard_when_it_ends, .timeout = 60)
{
    cli_model m;
    int ids[10];
    char *dir = open_tiny(&m, "stop_pause", ids);
    errbuf e;
    engine *en = &m.en;
    cr_assert_eq(engine_allow_pauses(en, &e), 0, "%s", e.msg);
    int V = m.mw.cfg.vocab_size;
    float *logits = malloc((size_t)V * sizeof *logits);
    cr_assert(logits);
    pause_stop ps = {.last = m.mw.cfg.n_layers - 1}; /* (the boundary before the last layer) */
    en->between_layers = stop_in_pause;
    en->pause_wanted = pause_at_last;
    en->between_ctx = &ps;
    en->stop_requested = stop_flag;
    en->stop_ctx = &ps;
    cr_assert_eq(engine_forward(en, ids, 10, logits, 0, &e), 1, "the stop must be heard");
    cr_expect_eq(ps.paused, 1);
    cr_expect(strstr(e.msg, "0 of 10"), "the paused chunk counts for nothing: %s", e.msg);
    cr_expect_eq(en->n_past, 0);
    en->between_layers = NULL;
    en->pause_wanted = NULL;
    en->stop_requested = NULL;
    cli_model_close(&m);
    free(logits);
    test_remove_tree(dir);
    free(dir);
}

/* A child process with its stdin and stderr on pipes. */
typedef struct child {
    pid_t pid;
    int in, err;
    char log[65536];
    size_t len;
} child;

static const char *bin(void)
{
    return test_moetier_bin();
}

static void child_start(child *c, char *const argv[])
{
    int in[2], err[2];
    cr_assert_eq(pipe(in), 0);
    cr_assert_eq(pipe(err), 0);
    fflush(NULL);
    c->pid = fork();
    cr_assert_geq(c->pid, 0);
    if (c->pid == 0) {
        dup2(in[0], STDIN_FILENO);
        dup2(err[1], STDERR_FILENO);
        int devnull = open("/dev/null", O_WRONLY);
        dup2(devnull, STDOUT_FILENO);
        close(in[1]);
        close(err[0]);
        execv(argv[0], argv);
        _exit(127);
    }
    close(in[0]);
    close(err[1]);
    c->in = in[1];
    c->err = err[0];
    c->len = 0;
    c->log[0] = 0;
}

/* Reads stderr until it contains needle (1) or timeout_s passes or it ends (0);
 * a NULL needle reads to the end. */
static int child_wait_for(child *c, const char *needle, double timeout_s)
{
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    while (!needle || !strstr(c->log, needle)) {
        clock_gettime(CLOCK_MONOTONIC, &t);
        double left = timeout_s - ((double)(t.tv_sec - t0.tv_sec) + 1e-9 * (double)(t.tv_nsec - t0.tv_nsec));
        struct pollfd p = {.fd = c->err, .events = POLLIN};
        if (left <= 0 || poll(&p, 1, (int)(left * 1000) + 1) <= 0)
            return 0;
        ssize_t n = read(c->err, c->log + c->len, sizeof c->log - 1 - c->len);
        if (n <= 0)
            return 0;
        c->len += (size_t)n;
        c->log[c->len] = 0;
    }
    return 1;
}

/* Reads stderr to its end and reaps the child; its wait status. */
static int child_finish(child *c)
{
    child_wait_for(c, NULL, 60);
    close(c->in);
    close(c->err);
    int st = 0;
    waitpid(c->pid, &st, 0);
    return st;
}

/* Bit (sig - 1) of a "Name:\thex" mask line of /proc/PID[/task/TID]/status. */
static int status_mask_has(const char *status_path, const char *field, int sig)
{
    FILE *f = fopen(status_path, "r");
    if (!f)
        return 0;
    char line[256];
    unsigned long long mask = 0;
    size_t fl = strlen(field);
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, field, fl))
            mask = strtoull(line + fl, NULL, 16);
    fclose(f);
    return (int)(mask >> (sig - 1) & 1);
}

/* A thread of pid other than its main one that does not block sig; 0 if none. */
static pid_t thread_not_blocking(pid_t pid, int sig)
{
    char path[256];
    snprintf(path, sizeof path, "/proc/%d/task", (int)pid);
    DIR *d = opendir(path);
    pid_t found = 0;
    for (struct dirent *de; d && !found && (de = readdir(d));) {
        pid_t tid = (pid_t)atoi(de->d_name);
        snprintf(path, sizeof path, "/proc/%d/task/%d/status", (int)pid, (int)tid);
        if (tid > 0 && tid != pid && !status_mask_has(path, "SigBlk:", sig))
            found = tid;
    }
    if (d)
        closedir(d);
    return found;
}

/* The kernel may hand a process-directed signal to any thread that does not
 * block it; the CPU workers exist before serve starts, so this sends SIGTERM
 * straight to one of them. */
Test(stop, serve_stops_cleanly_on_a_signal_to_any_thread, .timeout = 120)
{
    char *dir = test_make_tmpdir("stop_serve");
    test_synth_tiny(dir, "bf16");
    child c;
    char *argv[] = {(char *)bin(), "serve", "-m", dir, "--port", "0", "-t", "2", NULL};
    child_start(&c, argv);
    cr_assert(child_wait_for(&c, "listening on", 60), "serve did not start: %s", c.log);
    /* a thread blocks every signal until it first runs (glibc's thread start):
     * on a loaded machine the workers may not have run yet, so wait for one */
    pid_t tid = 0;
    for (int tries = 0; !tid && tries < 200; tries++) {
        tid = thread_not_blocking(c.pid, SIGTERM);
        if (!tid)
            usleep(50000);
    }
    cr_assert_neq(tid, 0, "serve with -t 2 must have a worker thread: %s", c.log);
    cr_assert_eq(syscall(SYS_tgkill, c.pid, tid, SIGTERM), 0, "tgkill: %s", strerror(errno));
    int st = child_finish(&c);
    cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 0,
              "serve must exit 0 (status %#x); its log:\n%s", st, c.log);
    cr_expect(strstr(c.log, "SIGTERM, stopping"), "%s", c.log);
    test_remove_tree(dir);
    free(dir);
}

/* run and chat set their handler once the model is open: waits until the
 * process catches SIGINT */
static void wait_ready(child *c)
{
    cr_assert(child_wait_for(c, "backend", 60), "it did not start: %s", c->log);
    char status[64];
    snprintf(status, sizeof status, "/proc/%d/status", (int)c->pid);
    int caught = 0;
    for (int i = 0; i < 3000 && !(caught = status_mask_has(status, "SigCgt:", SIGINT)); i++)
        usleep(10000);
    cr_assert(caught, "it never handles SIGINT: %s", c->log);
}

/* Ctrl+C during `run` stops the generation: what was generated is kept (the
 * speeds and the --trace are written as at a length limit), exit 128 + SIGINT. */
Test(stop, run_ctrl_c_keeps_what_was_generated, .timeout = 120)
{
    char *dir = test_make_tmpdir("stop_run");
    test_synth_tiny(dir, "bf16");
    char trace[4200];
    snprintf(trace, sizeof trace, "%s/run.trace", dir);
    child c;
    char *argv[] = {(char *)bin(), "run", "-m", dir, "-t", "1", "--ids", "1,2", "-n", "1000000",
                    "-c", "1000000", "--ignore-eos", "--print-ids", "--trace", trace, NULL};
    child_start(&c, argv);
    wait_ready(&c);
    usleep(300000);
    kill(c.pid, SIGINT);
    int st = child_finish(&c);
    cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 128 + SIGINT,
              "run must exit 130 on Ctrl+C (status %#x): %s", st, c.log);
    cr_expect(strstr(c.log, "SIGINT: stopped after") && strstr(c.log, "decode:") &&
              strstr(c.log, "routing events ->"), "%s", c.log);
    cr_expect(test_path_exists(trace), "no trace: %s", c.log);
    test_remove_tree(dir);
    free(dir);
}

/* Ctrl+C at the chat prompt quits, as /exit does. */
Test(stop, chat_quits_on_ctrl_c_at_the_prompt, .timeout = 120)
{
    char *dir = test_make_tmpdir("stop_chat");
    test_synth_tiny(dir, "bf16");
    child c;
    char *argv[] = {(char *)bin(), "chat", "-m", dir, "-t", "1", NULL};
    child_start(&c, argv);
    wait_ready(&c);
    kill(c.pid, SIGINT);
    int st = child_finish(&c);
    cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 0,
              "chat must quit with 0 on Ctrl+C at the prompt (status %#x): %s", st, c.log);
    cr_expect_null(strstr(c.log, "prompt tokens"), "no turn may run: %s", c.log);
    test_remove_tree(dir);
    free(dir);
}

/* Ctrl+C during a long prompt (thousands of tokens, one per step: seconds) stops
 * it between steps; the message is not added and the chat goes on. */
Test(stop, chat_ctrl_c_stops_a_long_prompt, .timeout = 300)
{
    char *dir = test_make_tmpdir("stop_chat_prompt");
    test_synth_tiny(dir, "bf16");
    char *system = malloc(1500 * 8);
    system[0] = 0;
    for (int i = 0; i < 1500; i++)
        sprintf(system + strlen(system), "%sw%d", i ? " " : "", i);
    child c;
    char *argv[] = {(char *)bin(), "chat", "-m", dir, "-t", "1", "--chunk", "1", "-c", "8192",
                    "--system", system, NULL};
    child_start(&c, argv);
    wait_ready(&c);
    cr_assert_eq(write(c.in, "hello\n", 6), 6);
    usleep(500000);
    kill(c.pid, SIGINT);
    cr_assert(child_wait_for(&c, "[stopped before the reply", 120), "the prompt was not stopped: %s",
              c.log);
    cr_assert_eq(write(c.in, "/exit\n", 6), 6);
    int st = child_finish(&c);
    cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 0, "status %#x: %s", st, c.log);
    cr_expect_null(strstr(c.log, "prompt tokens"), "no reply may follow: %s", c.log);
    free(system);
    test_remove_tree(dir);
    free(dir);
}
