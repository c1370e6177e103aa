/* aio_posix.c: the posix_aio backend: glibc's aio_read / aio_write /
 * aio_fsync, lio_listio for batches, aio_error / aio_return / aio_suspend
 * to reap, aio_cancel at close.
 *
 * A comparison backend, never chosen by 'auto': glibc implements POSIX aio
 * with its own user-space threads, and runs the requests of one file
 * descriptor one after another (one thread per fd at a time), so a queue
 * of random reads on one file is not parallel. glibc 2.34 and later has it
 * in libc itself; older glibc needs -lrt (setup.py links with -pthread,
 * which on those versions does not bring librt: build with LDFLAGS=-lrt).
 *
 * Every control block lives in the context, one per request in flight, so
 * glibc's pointers into them stay valid until aio_return. Reaping scans
 * the blocks in flight with aio_error (a memory read), then sleeps in
 * aio_suspend on all of them.
 */
#include "fastio.h"
#include "aio.h"

#include <aio.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    unsigned cap;
    struct aiocb *cbs;
    uint64_t *user_data;
    unsigned *free_idx;
    unsigned nfree;
    int64_t *early;             /* per block: -errno if it failed at submission */
    unsigned *live;             /* indices of blocks in flight */
    unsigned nlive;
    struct aiocb **list;        /* scratch for lio_listio and aio_suspend */
} posix_ctx;

static int
posix_probe(char *why, size_t whylen, unsigned *features)
{
    *features = FASTIO_AIO_F_ASYNC_BUFFERED | FASTIO_AIO_F_FSYNC;
    if (whylen) {
        why[0] = '\0';
    }
    return 0;
}

static void posix_close(void *ctx);

static int
posix_open(void **ctxp, const fastio_aio_options *opts, unsigned *features)
{
    posix_ctx *c = calloc(1, sizeof *c);
    if (c == NULL) {
        return -ENOMEM;
    }
    c->cap = opts->depth ? opts->depth : 1;
    c->cbs = calloc(c->cap, sizeof *c->cbs);
    c->user_data = calloc(c->cap, sizeof *c->user_data);
    c->free_idx = calloc(c->cap, sizeof *c->free_idx);
    c->early = calloc(c->cap, sizeof *c->early);
    c->live = calloc(c->cap, sizeof *c->live);
    c->list = calloc(c->cap, sizeof *c->list);
    if (!c->cbs || !c->user_data || !c->free_idx || !c->early || !c->live || !c->list) {
        posix_close(c);
        return -ENOMEM;
    }
    for (unsigned i = 0; i < c->cap; i++) {
        c->free_idx[i] = c->cap - 1 - i;
    }
    c->nfree = c->cap;
    /* glibc's pool: up to depth threads (default 20), idle ones exit after
     * a second (the shortest it allows). Process-wide, last call wins. */
    struct aioinit init;
    memset(&init, 0, sizeof init);
    init.aio_threads = (int)(c->cap < 64 ? c->cap : 64);
    init.aio_num = (int)c->cap;
    init.aio_idle_time = 1;
    aio_init(&init);
    *features = FASTIO_AIO_F_ASYNC_BUFFERED | FASTIO_AIO_F_FSYNC;
    *ctxp = c;
    return 0;
}

/* A value aio_error() never returns for a block glibc queued (it writes
 * EINPROGRESS when it queues one, the final code when it ends): marks the
 * blocks that a failed lio_listio left alone. */
#define NOT_QUEUED (-1)

static inline void
mark_not_queued(struct aiocb *cb)
{
#ifdef __GLIBC__
    cb->__error_code = NOT_QUEUED;
#else
    (void)cb;
#endif
}

/* Hand list[0..k) (the last k blocks of live[]) to glibc in one
 * lio_listio. Returns how many of them count as submitted (a prefix).
 *
 * lio_listio failing (EAGAIN, EIO, or any other errno) may have queued
 * some of them, and glibc's requests write into a block until aio_return:
 * a block it queued must stay live, one it did not must never be reaped
 * as if it had run (issue 12: such a block used to stay in live[] and
 * complete a second time, after queue.c had failed or resubmitted its
 * request). So each block is marked NOT_QUEUED before the call and looked
 * at after it. The blocks not queued after the last queued one are given
 * back (not counted: queue.c retries or fails them); one not queued before
 * a queued one completes at the next reap with the error. What the mark
 * catches is a block glibc never looked at (its request pool exhausted);
 * one it refused itself (EINVAL for aio_reqprio, EAGAIN when it could not
 * start a helper thread) carries glibc's own error code instead, counts as
 * submitted and is reaped once with that error: never twice either way. */
static unsigned
flush_list(posix_ctx *c, unsigned k, int *err)
{
    *err = 0;
    if (k == 0) {
        return 0;
    }
    for (unsigned j = 0; j < k; j++) {
        mark_not_queued(c->list[j]);
    }
    if (lio_listio(LIO_NOWAIT, c->list, (int)k, NULL) == 0) {
        return k;
    }
    int e = errno;
#ifdef __GLIBC__
    unsigned queued = k;
    while (queued > 0 && aio_error(c->list[queued - 1]) == NOT_QUEUED) {
        queued--;
    }
    for (unsigned j = 0; j < queued; j++) {
        if (aio_error(c->list[j]) == NOT_QUEUED) {
            c->early[c->list[j] - c->cbs] = -(int64_t)e;
        }
    }
#else
    /* No way to tell which were queued: count them all as submitted and
     * let aio_error report each (the behaviour POSIX describes). */
    unsigned queued = k;
#endif
    /* The blocks given back are the last ones of live[]; their indices are
     * still on the free stack above nfree (nothing was pushed since). */
    c->nlive -= k - queued;
    c->nfree += k - queued;
    *err = -e;
    return queued;
}

static int
posix_submit(void *ctx, const fastio_aio_req *reqs, unsigned n)
{
    posix_ctx *c = ctx;
    if (n > c->nfree) {
        n = c->nfree;
    }
    if (n == 0) {
        return -EAGAIN;
    }
    /* glibc's aio has no way to pass RWF_* flags: refuse rather than run
     * an uncached request as a cached one. */
    for (unsigned i = 0; i < n; i++) {
        if (reqs[i].rw_flags != 0) {
            return -EOPNOTSUPP;
        }
    }
    unsigned k = 0, done = 0;
    int err;
    for (unsigned i = 0; i < n; i++) {
        const fastio_aio_req *r = &reqs[i];
        unsigned idx = c->free_idx[c->nfree - 1];
        struct aiocb *cb = &c->cbs[idx];
        memset(cb, 0, sizeof *cb);
        c->early[idx] = 0;
        cb->aio_fildes = r->fd;
        cb->aio_buf = r->buf;
        cb->aio_nbytes = r->len;
        cb->aio_offset = (off_t)r->offset;
        cb->aio_sigevent.sigev_notify = SIGEV_NONE;
        if (r->opcode == FASTIO_OP_FSYNC) {
            /* Not a lio_listio opcode: first send the reads and writes
             * before it, then the fsync on its own. */
            unsigned sent = flush_list(c, k, &err);
            done += sent;
            if (sent < k) {
                return done ? (int)done : err;
            }
            k = 0;
            if (aio_fsync(O_SYNC, cb) < 0) {
                return done ? (int)done : -errno;
            }
        }
        else {
            cb->aio_lio_opcode = r->opcode == FASTIO_OP_READ ? LIO_READ : LIO_WRITE;
            c->list[k++] = cb;
        }
        c->nfree--;
        c->user_data[idx] = r->user_data;
        c->live[c->nlive++] = idx;
        if (r->opcode == FASTIO_OP_FSYNC) {
            done++;
        }
    }
    unsigned sent = flush_list(c, k, &err);
    done += sent;
    return done ? (int)done : err;
}

static int
posix_reap(void *ctx, fastio_aio_cqe *out, unsigned max, unsigned min_complete,
           const struct timespec *timeout)
{
    posix_ctx *c = ctx;
    int64_t deadline = fastio_deadline_ns(timeout);
    if (min_complete > max) {
        min_complete = max;
    }
    unsigned got = 0;
    for (;;) {
        for (unsigned j = 0; j < c->nlive && got < max;) {
            unsigned idx = c->live[j];
            struct aiocb *cb = &c->cbs[idx];
            if (c->early[idx] != 0) {
                /* Never queued (see flush_list): glibc has no record. */
                out[got].user_data = c->user_data[idx];
                out[got].res = c->early[idx];
                got++;
                c->live[j] = c->live[--c->nlive];
                c->free_idx[c->nfree++] = idx;
                continue;
            }
            int e = aio_error(cb);
            if (e == EINPROGRESS) {
                j++;
                continue;
            }
            ssize_t rv = aio_return(cb);  /* frees glibc's record too */
            out[got].user_data = c->user_data[idx];
            out[got].res = e != 0 ? -(int64_t)e : (int64_t)rv;
            got++;
            c->live[j] = c->live[--c->nlive];
            c->free_idx[c->nfree++] = idx;
        }
        if (got >= min_complete || c->nlive == 0) {
            return (int)got;
        }
        struct timespec left, *lp = NULL;
        if (timeout != NULL) {
            int64_t left_ns = deadline - fastio_monotonic_ns();
            if (left_ns < 0) {
                return (int)got;
            }
            left = fastio_ns_to_timespec(left_ns);
            lp = &left;
        }
        for (unsigned j = 0; j < c->nlive; j++) {
            c->list[j] = &c->cbs[c->live[j]];
        }
        if (aio_suspend((const struct aiocb *const *)c->list, (int)c->nlive, lp) < 0) {
            if (errno == EAGAIN) {
                return (int)got;  /* the timeout passed */
            }
            if (errno == EINTR) {
                return got ? (int)got : -EINTR;
            }
            return got ? (int)got : -errno;
        }
    }
}

static int
posix_cancel_all(void *ctx)
{
    posix_ctx *c = ctx;
    for (unsigned j = 0; j < c->nlive; j++) {
        if (c->early[c->live[j]] != 0) {
            continue;  /* never queued */
        }
        struct aiocb *cb = &c->cbs[c->live[j]];
        aio_cancel(cb->aio_fildes, cb);
    }
    return 0;
}

static void
posix_close(void *ctx)
{
    posix_ctx *c = ctx;
    free(c->cbs);
    free(c->user_data);
    free(c->free_idx);
    free(c->early);
    free(c->live);
    free(c->list);
    free(c);
}

const fastio_aio_ops fastio_aio_posix_ops = {
    .name = "posix_aio",
    .probe = posix_probe,
    .open = posix_open,
    .submit = posix_submit,
    .reap = posix_reap,
    .cancel_all = posix_cancel_all,
    .register_files = NULL,
    .register_buffers = NULL,
    .set_eventfd = NULL,
    .close = posix_close,
};
