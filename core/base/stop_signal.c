/* stop_signal: see stop_signal.h. */
#include "stop_signal.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

static volatile sig_atomic_t pending;
/* the handler writes a byte: whichever thread it ran on, a poll on wake[0] sees it */
static int wake[2] = {-1, -1};
static struct sigaction old_int, old_term;
static int installed;

static void on_signal(int sig)
{
    int saved = errno;
    if (pending) {
        static const char msg[] = "moetier: second stop signal, exiting at once\n";
        ssize_t w = write(STDERR_FILENO, msg, sizeof msg - 1);
        (void)w;
        _exit(128 + sig);
    }
    pending = sig;
    ssize_t w = write(wake[1], "", 1);
    (void)w;
    errno = saved;
}

int stop_signal_install(void)
{
    if (installed)
        return 0;
    if (pipe2(wake, O_CLOEXEC | O_NONBLOCK))
        return -1;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    /* one handler at a time: SIGINT and SIGTERM together count as two */
    sigaddset(&sa.sa_mask, SIGINT);
    sigaddset(&sa.sa_mask, SIGTERM);
    pending = 0;
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    installed = 1;
    return 0;
}

int stop_signal_pending(void)
{
    return pending;
}

int stop_signal_fd(void)
{
    return wake[0];
}

int stop_signal_wait(void)
{
    struct pollfd p = {.fd = wake[0], .events = POLLIN};
    while (installed && !pending)
        poll(&p, 1, -1);
    return pending;
}

void stop_signal_clear(void)
{
    pending = 0;
    char buf[64];
    while (installed && read(wake[0], buf, sizeof buf) > 0)
        ;
}

void stop_signal_uninstall(void)
{
    if (!installed)
        return;
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    pending = 0;
    close(wake[0]);
    close(wake[1]);
    wake[0] = wake[1] = -1;
    installed = 0;
}
