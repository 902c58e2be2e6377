/* stop_signal: SIGINT and SIGTERM turned into a request to stop, which the
 * program waits for or checks at points where stopping is safe.
 *
 * A handler, not a blocked mask and sigwait: a process-directed signal goes to
 * any thread that does not block it, and threads the program does not start
 * (the CUDA runtime's, a library's) keep their own masks, so one of them would
 * take the default action and end the process mid-shutdown. The handler runs
 * on whichever thread the kernel picks and only records the signal.
 *
 * A second signal while a request is still unanswered ends the process at
 * once with status 128 + signal: Ctrl+C pressed twice always works, even when
 * the point that checks is minutes away (a long prefill step). */
#ifndef MOETIER_STOP_SIGNAL_H
#define MOETIER_STOP_SIGNAL_H

/* Installs the handlers (with SA_RESTART: interrupted reads and writes
 * resume). Later calls, until stop_signal_uninstall, do nothing. Returns 0, or
 * -1 with errno set when its pipe cannot be made. */
int stop_signal_install(void);
/* The signal of the unanswered request, or 0. */
int stop_signal_pending(void);
/* Readable while a request is pending (poll it with other descriptors; a
 * poll on stdin alone would miss a signal handled on another thread). */
int stop_signal_fd(void);
/* Blocks until a request arrives (at once if one is pending); returns its signal. */
int stop_signal_wait(void);
/* The request is answered: the next signal is a first one again. */
void stop_signal_clear(void);
/* The handlers from before stop_signal_install are back; pending requests are dropped. */
void stop_signal_uninstall(void);

#endif
