/* side_thread: see side_thread.h. */
#include "side_thread.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

struct side_thread {
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    void (*fn)(void *);
    void *ctx;
    int busy, quit;
};

static void *side_main(void *arg)
{
    side_thread *s = arg;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        while (!s->busy && !s->quit)
            pthread_cond_wait(&s->cv, &s->mu);
        if (!s->busy)
            break;
        pthread_mutex_unlock(&s->mu);
        s->fn(s->ctx);
        pthread_mutex_lock(&s->mu);
        s->busy = 0;
        pthread_cond_broadcast(&s->cv);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

int side_thread_create(side_thread **out, errbuf *e)
{
    side_thread *s = calloc(1, sizeof *s);
    if (!s)
        return err_set(e, "out of memory");
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    int rc = pthread_create(&s->thread, NULL, side_main, s);
    if (rc) {
        pthread_mutex_destroy(&s->mu);
        pthread_cond_destroy(&s->cv);
        free(s);
        return err_set(e, "cannot start a thread: %s", strerror(rc));
    }
    *out = s;
    return 0;
}

void side_thread_start(side_thread *s, void (*fn)(void *), void *ctx)
{
    pthread_mutex_lock(&s->mu);
    s->fn = fn;
    s->ctx = ctx;
    s->busy = 1;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

void side_thread_wait(side_thread *s)
{
    pthread_mutex_lock(&s->mu);
    while (s->busy)
        pthread_cond_wait(&s->cv, &s->mu);
    pthread_mutex_unlock(&s->mu);
}

void side_thread_destroy(side_thread *s)
{
    if (!s)
        return;
    side_thread_wait(s);
    pthread_mutex_lock(&s->mu);
    s->quit = 1;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->thread, NULL);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    free(s);
}
