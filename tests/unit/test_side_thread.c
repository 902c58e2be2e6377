/* side_thread: the function runs on another thread, at the same time as its
 * owner, and wait() returns only after it has returned. */
#include <criterion/criterion.h>
#include <stdatomic.h>
#include <time.h>

#include "cpu_kernels/side_thread.h"

typedef struct {
    atomic_int owner_went_on, done;
    int round;
} handshake;

/* waits for the owner to go on after start(): a start() that ran the function
 * itself would never return (the test's timeout) */
static void wait_for_owner(void *arg)
{
    handshake *h = arg;
    while (!atomic_load(&h->owner_went_on))
        ;
    struct timespec ts = {0, 200000};
    nanosleep(&ts, NULL);       /* a wait() that did not wait would see done == round - 1 */
    atomic_store(&h->done, h->round);
}

Test(side_thread, runs_beside_its_owner_and_wait_waits, .timeout = 20)
{
    side_thread *s;
    errbuf e;
    cr_assert_eq(side_thread_create(&s, &e), 0, "%s", e.msg);
    handshake h;
    atomic_init(&h.owner_went_on, 0);
    atomic_init(&h.done, 0);
    for (int r = 1; r <= 50; r++) {
        h.round = r;
        atomic_store(&h.owner_went_on, 0);
        side_thread_start(s, wait_for_owner, &h);
        atomic_store(&h.owner_went_on, 1);
        side_thread_wait(s);
        cr_assert_eq(atomic_load(&h.done), r, "round %d: wait() returned before the function", r);
    }
    side_thread_destroy(s);
    side_thread_destroy(NULL);
}
