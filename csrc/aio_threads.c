/* aio_threads.c: the threads backend: a pthread pool doing pread/pwrite/
 * fsync, the portable baseline every Linux has.
 *
 * One mutex guards a submission ring and a completion ring, each sized to
 * the queue's depth (queue.c never has more than depth requests in flight,
 * so neither ring can overflow; submit() still checks). Workers sleep on
 * `work` and take one request at a time; reap() sleeps on `done`.
 *
 * The thread that reaps also works: while it would have to wait and a
 * request is still queued, it takes that request and runs it itself. For
 * page-cache reads this turns "hand over to a worker, sleep, be woken" into
 * a plain pread on the caller's core, and the workers add what the other
 * cores can do. Workers are started with every signal blocked, so signals
 * stay with the Python threads, and are joined in close(): no thread
 * outlives its queue.
 */
#include "fastio.h"
#include "aio.h"

#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#define THREADS_MAX 64
#define THREADS_DEFAULT 8  /* cached reads want few threads, a disk many: measured */

typedef struct {
    pthread_mutex_t lock;
    pthread_cond_t work;      /* a request was queued, or stop */
    pthread_cond_t done;      /* a completion was posted */
    fastio_aio_req *sq;       /* ring of queued requests */
    fastio_aio_cqe *cq;       /* ring of completions */
    unsigned cap;             /* size of both rings */
    unsigned sq_head, sq_len;
    unsigned cq_head, cq_len;
    unsigned running;         /* requests taken by a thread, not yet posted */
    int stop;
    int efd;                  /* eventfd signalled per completion, or -1 */
    unsigned nthreads;
    pthread_t threads[THREADS_MAX];
} threads_ctx;

static int64_t
run_one(const fastio_aio_req *r)
{
    ssize_t n;
    for (;;) {
        switch (r->opcode) {
        case FASTIO_OP_READ:
        case FASTIO_OP_WRITE:
            n = fastio_prw(r->opcode == FASTIO_OP_WRITE, r->fd, r->buf, r->len,
                           r->offset, r->rw_flags);
            break;
        case FASTIO_OP_FSYNC:
            n = fsync(r->fd);
            break;
        default:
            return -EINVAL;
        }
        if (n >= 0) {
            return n;
        }
        if (errno != EINTR) {
            return -errno;
        }
    }
}

/* Post a completion (lock held). */
static void
post(threads_ctx *c, uint64_t user_data, int64_t res)
{
    unsigned tail = (c->cq_head + c->cq_len) % c->cap;
    c->cq[tail].user_data = user_data;
    c->cq[tail].res = res;
    /* Atomic stores: spin_for_completion reads the lengths unlocked. */
    __atomic_store_n(&c->cq_len, c->cq_len + 1, __ATOMIC_RELEASE);
    c->running--;
    pthread_cond_signal(&c->done);
    if (c->efd >= 0) {
        uint64_t one = 1;
        /* Never blocks: the counter only saturates after 2^64-2 posts. */
        ssize_t w = write(c->efd, &one, sizeof one);
        (void)w;
    }
}

/* Take the next queued request (lock held); 0 if none. */
static int
take(threads_ctx *c, fastio_aio_req *out)
{
    if (c->sq_len == 0) {
        return 0;
    }
    *out = c->sq[c->sq_head];
    c->sq_head = (c->sq_head + 1) % c->cap;
    __atomic_store_n(&c->sq_len, c->sq_len - 1, __ATOMIC_RELEASE);
    c->running++;
    return 1;
}

static void *
worker(void *arg)
{
    threads_ctx *c = arg;
    fastio_aio_req r;
    pthread_mutex_lock(&c->lock);
    for (;;) {
        while (!c->stop && c->sq_len == 0) {
            pthread_cond_wait(&c->work, &c->lock);
        }
        if (c->stop && c->sq_len == 0) {
            break;
        }
        take(c, &r);
        pthread_mutex_unlock(&c->lock);
        int64_t res = run_one(&r);
        pthread_mutex_lock(&c->lock);
        post(c, r.user_data, res);
    }
    pthread_mutex_unlock(&c->lock);
    return NULL;
}

static int
threads_probe(char *why, size_t whylen, unsigned *features)
{
    *features = FASTIO_AIO_F_ASYNC_BUFFERED | FASTIO_AIO_F_FSYNC | FASTIO_AIO_F_EVENTFD;
    if (whylen) {
        why[0] = '\0';
    }
    return 0;
}

static void threads_close(void *ctx);

static int
threads_open(void **ctxp, const fastio_aio_options *opts, unsigned *features)
{
    threads_ctx *c = calloc(1, sizeof *c);
    if (c == NULL) {
        return -ENOMEM;
    }
    c->cap = opts->depth ? opts->depth : 1;
    c->efd = -1;
    c->sq = calloc(c->cap, sizeof *c->sq);
    c->cq = calloc(c->cap, sizeof *c->cq);
    if (c->sq == NULL || c->cq == NULL) {
        free(c->sq);
        free(c->cq);
        free(c);
        return -ENOMEM;
    }
    pthread_mutex_init(&c->lock, NULL);
    pthread_cond_init(&c->work, NULL);
    pthread_cond_init(&c->done, NULL);

    unsigned want = opts->threads > 0 ? (unsigned)opts->threads : THREADS_DEFAULT;
    if (want > c->cap) {
        want = c->cap;  /* more threads than requests in flight never help */
    }
    if (want > THREADS_MAX) {
        want = THREADS_MAX;
    }
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 128 * 1024);
    int err = 0;
    for (; c->nthreads < want; c->nthreads++) {
        err = pthread_create(&c->threads[c->nthreads], &attr, worker, c);
        if (err != 0) {
            break;
        }
    }
    pthread_attr_destroy(&attr);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (c->nthreads == 0 && want > 0) {
        threads_close(c);
        return -err;
    }
    *features = FASTIO_AIO_F_ASYNC_BUFFERED | FASTIO_AIO_F_FSYNC | FASTIO_AIO_F_EVENTFD;
    *ctxp = c;
    return 0;
}

static int
threads_submit(void *ctx, const fastio_aio_req *reqs, unsigned n)
{
    threads_ctx *c = ctx;
    pthread_mutex_lock(&c->lock);
    unsigned room = c->cap - c->sq_len - c->running - c->cq_len;
    if (n > room) {
        n = room;
    }
    for (unsigned i = 0; i < n; i++) {
        c->sq[(c->sq_head + c->sq_len) % c->cap] = reqs[i];
        __atomic_store_n(&c->sq_len, c->sq_len + 1, __ATOMIC_RELEASE);
    }
    if (n == 1) {
        pthread_cond_signal(&c->work);
    }
    else if (n > 1) {
        pthread_cond_broadcast(&c->work);
    }
    pthread_mutex_unlock(&c->lock);
    return n == 0 ? -EAGAIN : (int)n;
}

/* Called with the lock held, a request running, nothing to reap: before
 * sleeping, watch the completion count for a few microseconds with the lock
 * released. A page-cache read takes about a microsecond, while a sleep and
 * a wake-up on the condition variable cost two context switches (tens of
 * microseconds on a busy VM). Returns with the lock held; 1 if something
 * completed meanwhile. */
#define SPIN_NS 20000

static int
spin_for_completion(threads_ctx *c)
{
    struct timespec t0, t;
    pthread_mutex_unlock(&c->lock);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int seen = 0;
    for (unsigned i = 0;; i++) {
        if (__atomic_load_n(&c->cq_len, __ATOMIC_ACQUIRE) > 0 ||
            __atomic_load_n(&c->sq_len, __ATOMIC_ACQUIRE) > 0) {
            seen = 1;
            break;
        }
        if ((i & 3) == 3) {
            clock_gettime(CLOCK_MONOTONIC, &t);
            if ((t.tv_sec - t0.tv_sec) * 1000000000L + (t.tv_nsec - t0.tv_nsec) > SPIN_NS) {
                break;
            }
        }
        /* Yield, not pause: on a machine with fewer free cores than
         * threads the worker we wait for may need this very core. */
        sched_yield();
    }
    pthread_mutex_lock(&c->lock);
    return seen;
}

static int
threads_reap(void *ctx, fastio_aio_cqe *out, unsigned max, unsigned min_complete,
             const struct timespec *timeout)
{
    threads_ctx *c = ctx;
    int64_t deadline = fastio_deadline_ns(timeout);
    if (min_complete > max) {
        min_complete = max;
    }
    unsigned got = 0;
    pthread_mutex_lock(&c->lock);
    for (;;) {
        while (got < max && c->cq_len > 0) {
            out[got++] = c->cq[c->cq_head];
            c->cq_head = (c->cq_head + 1) % c->cap;
            __atomic_store_n(&c->cq_len, c->cq_len - 1, __ATOMIC_RELEASE);
        }
        if (got >= min_complete) {
            break;
        }
        fastio_aio_req r;
        if (take(c, &r)) {
            /* Run it here rather than sleep while it waits for a worker. */
            pthread_mutex_unlock(&c->lock);
            int64_t res = run_one(&r);
            pthread_mutex_lock(&c->lock);
            post(c, r.user_data, res);
            continue;
        }
        if (c->running == 0) {
            break;  /* nothing in flight: waiting would never end */
        }
        /* Re-checked under the lock: a post between the spin's last look
         * and the relock must not be slept through. */
        if (spin_for_completion(c) || c->cq_len > 0 || c->sq_len > 0 || c->running == 0) {
            continue;
        }
        if (timeout == NULL) {
            pthread_cond_wait(&c->done, &c->lock);
        }
        else if (timeout->tv_sec == 0 && timeout->tv_nsec == 0) {
            break;
        }
        else {
            int64_t left_ns = deadline - fastio_monotonic_ns();
            if (left_ns <= 0) {
                break;
            }
            /* pthread_cond_timedwait takes CLOCK_REALTIME by default:
             * convert the remaining time. */
            struct timespec rt;
            clock_gettime(CLOCK_REALTIME, &rt);
            rt = fastio_ns_to_timespec((int64_t)rt.tv_sec * 1000000000 + rt.tv_nsec + left_ns);
            pthread_cond_timedwait(&c->done, &c->lock, &rt);
        }
    }
    pthread_mutex_unlock(&c->lock);
    return (int)got;
}

static int
threads_cancel_all(void *ctx)
{
    /* Requests still queued complete with ECANCELED; those a thread runs
     * finish normally (a pread cannot be interrupted). */
    threads_ctx *c = ctx;
    pthread_mutex_lock(&c->lock);
    fastio_aio_req r;
    while (take(c, &r)) {
        post(c, r.user_data, -ECANCELED);
    }
    pthread_mutex_unlock(&c->lock);
    return 0;
}

static int
threads_set_eventfd(void *ctx, int efd)
{
    threads_ctx *c = ctx;
    pthread_mutex_lock(&c->lock);
    c->efd = efd;
    pthread_mutex_unlock(&c->lock);
    return 0;
}

static void
threads_close(void *ctx)
{
    threads_ctx *c = ctx;
    pthread_mutex_lock(&c->lock);
    c->stop = 1;
    pthread_cond_broadcast(&c->work);
    pthread_mutex_unlock(&c->lock);
    for (unsigned i = 0; i < c->nthreads; i++) {
        pthread_join(c->threads[i], NULL);
    }
    pthread_cond_destroy(&c->work);
    pthread_cond_destroy(&c->done);
    pthread_mutex_destroy(&c->lock);
    free(c->sq);
    free(c->cq);
    free(c);
}

const fastio_aio_ops fastio_aio_threads_ops = {
    .name = "threads",
    .probe = threads_probe,
    .open = threads_open,
    .submit = threads_submit,
    .reap = threads_reap,
    .cancel_all = threads_cancel_all,
    .register_files = NULL,
    .register_buffers = NULL,
    .set_eventfd = threads_set_eventfd,
    .close = threads_close,
};
