/* aio_linux.c: the linux_aio backend: io_setup / io_submit / io_getevents
 * through system calls and the kernel's uapi header linux/aio_abi.h (no
 * libaio), as fio's libaio engine does without the library.
 *
 * Linux AIO is only asynchronous on files opened with O_DIRECT: on a
 * buffered file io_submit() itself does the read or the write before it
 * returns. It works, but submitting blocks; probe() therefore does not
 * report FASTIO_AIO_F_ASYNC_BUFFERED.
 *
 * The context owns one iocb per request slot (depth of them): an iocb must
 * stay valid until its completion, and io_getevents hands back its address,
 * which gives us the slot. A request io_submit() refuses outright (EBADF,
 * EINVAL for a misaligned O_DIRECT request, ...) becomes a completion with
 * that error, so every backend reports per-request errors the same way.
 *
 * No function here touches a Python object: queue.c calls them all with the
 * GIL released.
 */
#include "fastio.h"
#include "aio.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <linux/aio_abi.h>

#ifndef IOCB_FLAG_RESFD
#define IOCB_FLAG_RESFD (1 << 0)
#endif

/* ------------------------------------------------------------------ */
/* System calls */

static int
sys_io_setup(unsigned nr, aio_context_t *ctx)
{
    return syscall(__NR_io_setup, nr, ctx) < 0 ? -errno : 0;
}

static int
sys_io_destroy(aio_context_t ctx)
{
    return syscall(__NR_io_destroy, ctx) < 0 ? -errno : 0;
}

static int
sys_io_submit(aio_context_t ctx, long n, struct iocb **iocbs)
{
    long r = syscall(__NR_io_submit, ctx, n, iocbs);
    return r < 0 ? -errno : (int)r;
}

static int
sys_io_getevents(aio_context_t ctx, long min_nr, long nr, struct io_event *ev,
                 struct timespec *ts)
{
    long r = syscall(__NR_io_getevents, ctx, min_nr, nr, ev, ts);
    return r < 0 ? -errno : (int)r;
}

static int
sys_io_cancel(aio_context_t ctx, struct iocb *iocb, struct io_event *ev)
{
    return syscall(__NR_io_cancel, ctx, iocb, ev) < 0 ? -errno : 0;
}

/* ------------------------------------------------------------------ */
/* The context */

typedef struct {
    aio_context_t aio;
    unsigned depth;
    struct iocb *iocbs;     /* one per slot */
    unsigned char *busy;    /* slot in flight in the kernel */
    unsigned *free_slots;   /* stack of free slot indices */
    unsigned nfree;
    struct iocb **batch;    /* io_submit's argument */
    struct io_event *events;
    /* Requests io_submit refused: completions delivered by the next reap. */
    fastio_aio_cqe *failed;
    unsigned nfailed;
    unsigned inflight;      /* in the kernel */
    int efd;
} linux_ctx;

static void
slot_free(linux_ctx *c, unsigned i)
{
    c->busy[i] = 0;
    c->free_slots[c->nfree++] = i;
}

/* A request refused by io_submit: its completion is delivered by reap(),
 * and the eventfd is signalled as the kernel would have done. */
static void
fail_request(linux_ctx *c, uint64_t user_data, int err)
{
    c->failed[c->nfailed].user_data = user_data;
    c->failed[c->nfailed].res = err;
    c->nfailed++;
    if (c->efd >= 0) {
        uint64_t one = 1;
        ssize_t w;
        do {
            w = write(c->efd, &one, sizeof one);
        } while (w < 0 && errno == EINTR);
    }
}

static int
linux_submit(void *ctx, const fastio_aio_req *reqs, unsigned n)
{
    linux_ctx *c = ctx;
    /* Slots: a refused request keeps its completion in `failed` until
     * reaped, so it counts against depth like one in the kernel. */
    unsigned room = c->depth - c->inflight - c->nfailed;
    unsigned k = n < room ? n : room;
    if (k > c->nfree)
        k = c->nfree;
    unsigned done = 0;
    while (done < k) {
        unsigned m = 0;
        for (unsigned i = done; i < k; i++, m++) {
            const fastio_aio_req *q = &reqs[i];
            unsigned slot = c->free_slots[--c->nfree];
            struct iocb *cb = &c->iocbs[slot];
            memset(cb, 0, sizeof *cb);
            cb->aio_data = q->user_data;
            cb->aio_fildes = (uint32_t)q->fd;
            switch (q->opcode) {
            case FASTIO_OP_READ:
                cb->aio_lio_opcode = IOCB_CMD_PREAD;
                break;
            case FASTIO_OP_WRITE:
                cb->aio_lio_opcode = IOCB_CMD_PWRITE;
                break;
            case FASTIO_OP_FSYNC:
                cb->aio_lio_opcode = IOCB_CMD_FSYNC;
                break;
            default:
                cb->aio_lio_opcode = 0xffff; /* refused below as EINVAL */
            }
            if (q->opcode != FASTIO_OP_FSYNC) {
                cb->aio_buf = (uint64_t)(uintptr_t)q->buf;
                cb->aio_nbytes = q->len;
                cb->aio_offset = q->offset;
                cb->aio_rw_flags = (int)q->rw_flags;
            }
            if (c->efd >= 0) {
                cb->aio_flags = IOCB_FLAG_RESFD;
                cb->aio_resfd = (uint32_t)c->efd;
            }
            c->busy[slot] = 1;
            c->batch[m] = cb;
        }
        int r;
        do {
            r = sys_io_submit(c->aio, m, c->batch);
        } while (r == -EINTR);
        /* Slots not taken go back, last taken first, so the stack is as it was. */
        unsigned taken = r > 0 ? (unsigned)r : 0;
        for (unsigned i = m; i-- > taken;)
            slot_free(c, (unsigned)(c->batch[i] - c->iocbs));
        c->inflight += taken;
        done += taken;
        if (r >= 0 && taken < m)
            break; /* the kernel took fewer: reap, then retry */
        if (r == -EAGAIN)
            break; /* no room in the kernel's ring: reap first */
        if (r < 0) {
            /* The first request of the batch is refused by itself (bad fd,
             * misaligned O_DIRECT, an opcode the file does not support):
             * turn it into a completion and go on with the rest. */
            if (r == -ENOSYS && reqs[done].opcode == FASTIO_OP_FSYNC)
                r = -EINVAL;
            fail_request(c, reqs[done].user_data, r);
            done++;
        }
    }
    return (int)done;
}

static int
linux_reap(void *ctx, fastio_aio_cqe *out, unsigned max, unsigned min_complete,
           const struct timespec *timeout)
{
    linux_ctx *c = ctx;
    unsigned got = 0;
    while (c->nfailed && got < max) {
        out[got++] = c->failed[0];
        memmove(c->failed, c->failed + 1, (--c->nfailed) * sizeof *c->failed);
    }
    if (got >= max || c->inflight == 0)
        return (int)got;
    unsigned want = min_complete > got ? min_complete - got : 0;
    unsigned nr = max - got;
    if (nr > c->depth)
        nr = c->depth;
    if (want > nr)
        want = nr;
    if (want > c->inflight)
        want = c->inflight; /* more would never come */
    struct timespec ts, zero = {0, 0}, *tsp = NULL;
    if (timeout) {
        ts = *timeout;
        tsp = &ts;
    }
    if (got && want == 0)
        tsp = &zero; /* something to return already: do not wait */
    int r = sys_io_getevents(c->aio, want, nr, c->events, tsp);
    if (r < 0)
        return got ? (int)got : r; /* -EINTR: the caller checks signals */
    for (int i = 0; i < r; i++) {
        struct io_event *ev = &c->events[i];
        struct iocb *cb = (struct iocb *)(uintptr_t)ev->obj;
        out[got].user_data = ev->data;
        out[got].res = ev->res;
        got++;
        slot_free(c, (unsigned)(cb - c->iocbs));
        c->inflight--;
    }
    return (int)got;
}

/* io_cancel on every request in flight. On regular files almost all return
 * EINVAL or EAGAIN (the block layer cannot take a request back): those
 * requests simply complete. A cancelled one still reports through
 * io_getevents (since 4.19, io_cancel returns EINPROGRESS for it). */
static int
linux_cancel_all(void *ctx)
{
    linux_ctx *c = ctx;
    struct io_event ev;
    for (unsigned i = 0; i < c->depth; i++) {
        if (c->busy[i])
            (void)sys_io_cancel(c->aio, &c->iocbs[i], &ev);
    }
    return 0;
}

static int
linux_set_eventfd(void *ctx, int efd)
{
    linux_ctx *c = ctx;
    c->efd = efd; /* applies to requests submitted from now on */
    return 0;
}

static void
linux_close(void *ctx)
{
    linux_ctx *c = ctx;
    if (!c)
        return;
    /* io_destroy waits for the requests still in flight, so no buffer is
     * written after we return (queue.c drains first anyway). */
    if (c->aio)
        sys_io_destroy(c->aio);
    free(c->iocbs);
    free(c->busy);
    free(c->free_slots);
    free(c->batch);
    free(c->events);
    free(c->failed);
    free(c);
}

static void
why_setup(int err, char *why, size_t whylen)
{
    if (err == -EAGAIN) {
        char max[32] = "?", nr[32] = "?";
        FILE *f = fopen("/proc/sys/fs/aio-max-nr", "re");
        if (f) {
            if (!fgets(max, sizeof max, f))
                strcpy(max, "?");
            fclose(f);
        }
        f = fopen("/proc/sys/fs/aio-nr", "re");
        if (f) {
            if (!fgets(nr, sizeof nr, f))
                strcpy(nr, "?");
            fclose(f);
        }
        max[strcspn(max, "\n")] = '\0';
        nr[strcspn(nr, "\n")] = '\0';
        snprintf(why, whylen,
                 "io_setup: EAGAIN (the system's AIO contexts are used up: fs.aio-nr=%s of "
                 "fs.aio-max-nr=%s)", nr, max);
    }
    else if (err == -ENOSYS) {
        snprintf(why, whylen, "io_setup: ENOSYS (kernel without AIO, CONFIG_AIO=n)");
    }
    else if (err == -EPERM) {
        snprintf(why, whylen, "io_setup: EPERM (refused by a seccomp filter or an LSM)");
    }
    else {
        snprintf(why, whylen, "io_setup: %s", strerror(-err));
    }
}

static int
linux_probe(char *why, size_t whylen, unsigned *features)
{
    *features = 0;
    if (whylen)
        why[0] = '\0';
    aio_context_t aio = 0;
    int err = sys_io_setup(1, &aio);
    if (err < 0) {
        why_setup(err, why, whylen);
        return err;
    }
    sys_io_destroy(aio);
    /* FSYNC: IOCB_CMD_FSYNC since 4.18 (an older kernel refuses it per
     * request, which comes back as an -EINVAL completion). */
    *features = FASTIO_AIO_F_FSYNC | FASTIO_AIO_F_EVENTFD;
    return 0;
}

static int
linux_open(void **ctxp, const fastio_aio_options *opts, unsigned *features)
{
    *ctxp = NULL;
    if (opts->depth == 0 || opts->depth > 65536)
        return -EINVAL;
    linux_ctx *c = calloc(1, sizeof *c);
    if (!c)
        return -ENOMEM;
    unsigned d = opts->depth;
    c->depth = d;
    c->efd = -1;
    c->iocbs = calloc(d, sizeof *c->iocbs);
    c->busy = calloc(d, 1);
    c->free_slots = malloc(d * sizeof *c->free_slots);
    c->batch = malloc(d * sizeof *c->batch);
    c->events = malloc(d * sizeof *c->events);
    c->failed = malloc(d * sizeof *c->failed);
    if (!c->iocbs || !c->busy || !c->free_slots || !c->batch || !c->events || !c->failed) {
        linux_close(c);
        return -ENOMEM;
    }
    for (unsigned i = 0; i < d; i++)
        c->free_slots[i] = d - 1 - i;
    c->nfree = d;
    int err = sys_io_setup(d, &c->aio);
    if (err < 0) {
        c->aio = 0;
        linux_close(c);
        return err;
    }
    *features = FASTIO_AIO_F_FSYNC | FASTIO_AIO_F_EVENTFD;
    *ctxp = c;
    return 0;
}

const fastio_aio_ops fastio_aio_linux_ops = {
    .name = "linux_aio",
    .probe = linux_probe,
    .open = linux_open,
    .submit = linux_submit,
    .reap = linux_reap,
    .cancel_all = linux_cancel_all,
    .register_files = NULL,
    .register_buffers = NULL,
    .set_eventfd = linux_set_eventfd,
    .close = linux_close,
};
