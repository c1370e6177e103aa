/* aio_uring.c: the io_uring backend: io_uring through its system calls and
 * the kernel's uapi header, no liburing (as fio's io_uring engine does).
 *
 * One context = one ring: the SQ ring, the CQ ring (one mapping when the
 * kernel has IORING_FEAT_SINGLE_MMAP) and the SQE array, all mmapped from
 * the ring fd. Ring indices are shared with the kernel: we read the
 * kernel-owned index (SQ head, CQ tail) with acquire and publish ours (SQ
 * tail, CQ head) with release, so the SQE / CQE contents are ordered with
 * the index that makes them visible.
 *
 * Threads. The ring is created with IORING_SETUP_SINGLE_ISSUER and
 * IORING_SETUP_DEFER_TASKRUN where the kernel has them (6.0/6.1): the
 * kernel then runs completions only inside io_uring_enter(GETEVENTS) of the
 * creating thread, which saves an interrupt per completion. Python code may
 * drive a Queue from any thread, and a second thread would get EEXIST from
 * such a ring. So the creating thread is recorded; the first call from
 * another thread on an idle ring (nothing in flight) rebuilds the ring
 * without those flags (re-registering files, buffers and the eventfd), and
 * the context stays in that plain mode for good. A call from another thread
 * while requests are in flight on a single-issuer ring cannot be served
 * (only the creator can run their completions): it returns -EEXIST.
 *
 * No function here touches a Python object: queue.c calls them all with the
 * GIL released.
 */
#include "fastio.h"
#include "aio.h"

#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <linux/io_uring.h>

/* ------------------------------------------------------------------ */
/* Constants an old uapi header may lack. The opcodes are an enum in the
 * header (no #ifdef possible), so we use our own names for every value
 * that appeared after 5.1. */

#ifndef __NR_io_uring_setup
#define __NR_io_uring_setup 425
#endif
#ifndef __NR_io_uring_enter
#define __NR_io_uring_enter 426
#endif
#ifndef __NR_io_uring_register
#define __NR_io_uring_register 427
#endif

#define U_OP_READV 1
#define U_OP_FSYNC 3
#define U_OP_READ_FIXED 4
#define U_OP_WRITE_FIXED 5
#define U_OP_ASYNC_CANCEL 14
#define U_OP_OPENAT 18
#define U_OP_CLOSE 19
#define U_OP_FADVISE 24
#define U_OP_READ 22
#define U_OP_WRITE 23
#define U_OP_LAST 24 /* the probe needs ops up to WRITE */

#define U_SETUP_SQPOLL (1U << 1)
#define U_SETUP_SUBMIT_ALL (1U << 7)
#define U_SETUP_SINGLE_ISSUER (1U << 12)
#define U_SETUP_DEFER_TASKRUN (1U << 13)

#define U_ENTER_GETEVENTS (1U << 0)
#define U_ENTER_SQ_WAKEUP (1U << 1)
#define U_ENTER_EXT_ARG (1U << 3)

#define U_SQ_NEED_WAKEUP (1U << 0)

#define U_FEAT_SINGLE_MMAP (1U << 0)
#define U_FEAT_EXT_ARG (1U << 8)

#define U_REGISTER_BUFFERS 0
#define U_UNREGISTER_BUFFERS 1
#define U_REGISTER_FILES 2
#define U_UNREGISTER_FILES 3
#define U_REGISTER_EVENTFD 4
#define U_UNREGISTER_EVENTFD 5
#define U_REGISTER_PROBE 8

#define U_SQE_FIXED_FILE (1U << 0)
#define U_SQE_IO_LINK (1U << 2)
#define U_SQE_IO_HARDLINK (1U << 3)

#define U_ASYNC_CANCEL_ALL (1U << 0)
#define U_ASYNC_CANCEL_ANY (1U << 2)

#define U_OP_SUPPORTED (1U << 0)

#define U_OFF_SQ_RING 0ULL
#define U_OFF_CQ_RING 0x8000000ULL
#define U_OFF_SQES 0x10000000ULL

/* struct io_uring_probe (5.6) and io_uring_getevents_arg (5.11), spelled
 * out so that an older header still builds. Layouts are the kernel ABI. */
struct u_probe_op {
    uint8_t op;
    uint8_t resv;
    uint16_t flags;
    uint32_t resv2;
};
struct u_probe {
    uint8_t last_op;
    uint8_t ops_len;
    uint16_t resv;
    uint32_t resv2[3];
    struct u_probe_op ops[256];
};
struct u_getevents_arg {
    uint64_t sigmask;
    uint32_t sigmask_sz;
    uint32_t min_wait_usec; /* "pad" before 6.12: must be 0 */
    uint64_t ts;
};
struct u_timespec {
    int64_t tv_sec;
    long long tv_nsec;
};

/* user_data of our own cancel requests: their completions are not the
 * caller's and reap() drops them. queue.c uses slot indices, never this. */
#define U_INTERNAL_TAG UINT64_MAX

/* ------------------------------------------------------------------ */
/* System calls */

static int
sys_setup(unsigned entries, struct io_uring_params *p)
{
    long r = syscall(__NR_io_uring_setup, entries, p);
    return r < 0 ? -errno : (int)r;
}

static int
sys_enter(int fd, unsigned to_submit, unsigned min_complete, unsigned flags,
          const void *arg, size_t argsz)
{
    long r = syscall(__NR_io_uring_enter, fd, to_submit, min_complete, flags, arg, argsz);
    return r < 0 ? -errno : (int)r;
}

static int
sys_register(int fd, unsigned opcode, const void *arg, unsigned nr_args)
{
    long r;
    do {
        r = syscall(__NR_io_uring_register, fd, opcode, arg, nr_args);
    } while (r < 0 && errno == EINTR);
    return r < 0 ? -errno : (int)r;
}

static inline uint32_t
load_acquire(const uint32_t *p)
{
    return atomic_load_explicit((_Atomic uint32_t *)(uintptr_t)p, memory_order_acquire);
}

static inline void
store_release(uint32_t *p, uint32_t v)
{
    atomic_store_explicit((_Atomic uint32_t *)(uintptr_t)p, v, memory_order_release);
}

static inline uint32_t
load_relaxed(const uint32_t *p)
{
    return atomic_load_explicit((_Atomic uint32_t *)(uintptr_t)p, memory_order_relaxed);
}

/* gettid() is a real system call: cache it per thread, since every submit
 * and reap asks. A forked child's only thread inherits the forking
 * thread's cache, which names a thread of the parent: uring_atfork_child
 * clears it, or a ring the child creates would record the parent's tid as
 * its owner (and a child thread that the kernel later gives that tid would
 * pass for the owner of a single-issuer ring it may not use: issue 12). */
static _Thread_local pid_t cached_tid;

static void
uring_atfork_child(void)
{
    cached_tid = 0;
}

static pid_t
current_tid(void)
{
    if (cached_tid == 0)
        cached_tid = (pid_t)syscall(SYS_gettid);
    return cached_tid;
}

/* ------------------------------------------------------------------ */
/* The context */

typedef struct {
    int fd;
    unsigned setup_flags;
    unsigned kfeatures;   /* io_uring_params.features */
    unsigned features;    /* FASTIO_AIO_F_* */
    unsigned depth;
    unsigned sq_entries, cq_entries;
    pid_t owner;          /* the creating thread (SINGLE_ISSUER) */

    void *sq_map, *cq_map, *sqes_map;
    size_t sq_map_len, cq_map_len, sqes_map_len;

    uint32_t *sq_head, *sq_tail, *sq_mask, *sq_flags, *sq_array;
    uint32_t *cq_head, *cq_tail, *cq_mask;
    struct io_uring_sqe *sqes;
    struct io_uring_cqe *cqes;
    uint32_t sq_local_tail; /* SQEs written, not yet published */

    unsigned inflight;    /* caller's requests accepted, not yet reaped */
    unsigned internal;    /* our cancel requests not yet reaped */
    int sqpoll, sqpoll_idle_ms;
    int cancel_any;       /* IORING_ASYNC_CANCEL_ANY works (5.19+) */

    /* user_data in flight, kept only without cancel_any (per-request cancel) */
    uint64_t *track;
    unsigned ntrack;

    /* What was registered, to replay it if the ring is rebuilt. */
    int *files;
    unsigned nfiles;
    struct iovec *bufs;
    unsigned nbufs;
    int efd;
} uring_ctx;

static void
ring_unmap(uring_ctx *c)
{
    if (c->sqes_map)
        munmap(c->sqes_map, c->sqes_map_len);
    if (c->cq_map && c->cq_map != c->sq_map)
        munmap(c->cq_map, c->cq_map_len);
    if (c->sq_map)
        munmap(c->sq_map, c->sq_map_len);
    c->sq_map = c->cq_map = c->sqes_map = NULL;
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
}

/* io_uring_setup with the first flag set the kernel accepts (EINVAL means
 * an unknown flag on older kernels), then map the rings. */
static int
ring_create(uring_ctx *c, int plain)
{
    unsigned tries[3];
    int ntries = 0;
    if (c->sqpoll) {
        /* DEFER_TASKRUN is refused with SQPOLL; the SQ thread is the issuer. */
        tries[ntries++] = U_SETUP_SQPOLL | U_SETUP_SUBMIT_ALL;
        tries[ntries++] = U_SETUP_SQPOLL;
    }
    else {
        if (!plain)
            tries[ntries++] = U_SETUP_SINGLE_ISSUER | U_SETUP_DEFER_TASKRUN | U_SETUP_SUBMIT_ALL;
        tries[ntries++] = U_SETUP_SUBMIT_ALL;
        tries[ntries++] = 0;
    }
    struct io_uring_params p;
    int fd = -EINVAL;
    /* One SQ slot more than depth: room for our cancel request. */
    unsigned entries = c->depth + 1;
    for (int i = 0; i < ntries; i++) {
        memset(&p, 0, sizeof p);
        p.flags = tries[i];
        if (tries[i] & U_SETUP_SQPOLL)
            p.sq_thread_idle = (unsigned)(c->sqpoll_idle_ms > 0 ? c->sqpoll_idle_ms : 1000);
        fd = sys_setup(entries, &p);
        if (fd != -EINVAL)
            break;
    }
    if (fd < 0)
        return fd;
    c->fd = fd;
    c->setup_flags = p.flags;
    c->kfeatures = p.features;
    c->sq_entries = p.sq_entries;
    c->cq_entries = p.cq_entries;
    c->owner = current_tid();

    c->sq_map_len = p.sq_off.array + p.sq_entries * sizeof(uint32_t);
    c->cq_map_len = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
    if (p.features & U_FEAT_SINGLE_MMAP) {
        if (c->cq_map_len > c->sq_map_len)
            c->sq_map_len = c->cq_map_len;
        c->cq_map_len = c->sq_map_len;
    }
    void *m = mmap(NULL, c->sq_map_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE,
                   fd, U_OFF_SQ_RING);
    if (m == MAP_FAILED)
        goto fail;
    c->sq_map = m;
    if (p.features & U_FEAT_SINGLE_MMAP) {
        c->cq_map = c->sq_map;
    }
    else {
        m = mmap(NULL, c->cq_map_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd,
                 U_OFF_CQ_RING);
        if (m == MAP_FAILED)
            goto fail;
        c->cq_map = m;
    }
    c->sqes_map_len = p.sq_entries * sizeof(struct io_uring_sqe);
    m = mmap(NULL, c->sqes_map_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd,
             U_OFF_SQES);
    if (m == MAP_FAILED)
        goto fail;
    c->sqes_map = m;

    char *sq = c->sq_map, *cq = c->cq_map;
    c->sq_head = (uint32_t *)(sq + p.sq_off.head);
    c->sq_tail = (uint32_t *)(sq + p.sq_off.tail);
    c->sq_mask = (uint32_t *)(sq + p.sq_off.ring_mask);
    c->sq_flags = (uint32_t *)(sq + p.sq_off.flags);
    c->sq_array = (uint32_t *)(sq + p.sq_off.array);
    c->cq_head = (uint32_t *)(cq + p.cq_off.head);
    c->cq_tail = (uint32_t *)(cq + p.cq_off.tail);
    c->cq_mask = (uint32_t *)(cq + p.cq_off.ring_mask);
    c->cqes = (struct io_uring_cqe *)(cq + p.cq_off.cqes);
    c->sqes = c->sqes_map;
    /* The indirection array maps slot i to SQE i, once for all. */
    for (unsigned i = 0; i < p.sq_entries; i++)
        c->sq_array[i] = i;
    c->sq_local_tail = load_relaxed(c->sq_tail);
    return 0;
fail:;
    int err = -errno;
    ring_unmap(c);
    return err;
}

/* ------------------------------------------------------------------ */
/* Submission */

static unsigned
sq_space(uring_ctx *c)
{
    return c->sq_entries - (c->sq_local_tail - load_acquire(c->sq_head));
}

static struct io_uring_sqe *
sqe_next(uring_ctx *c)
{
    struct io_uring_sqe *sqe = &c->sqes[c->sq_local_tail & *c->sq_mask];
    c->sq_local_tail++;
    memset(sqe, 0, sizeof *sqe);
    return sqe;
}

/* Publish the written SQEs and, without SQPOLL, hand them to the kernel.
 * Returns how many the kernel consumed (SQPOLL: how many were published),
 * or -errno with none consumed. Without SQPOLL the kernel reads the SQ only
 * inside io_uring_enter, so SQEs it did not consume (EAGAIN, EBUSY, a
 * failed SQE without SUBMIT_ALL) are taken back: the caller retries them. */
static int
sq_flush(uring_ctx *c, unsigned getevents_flags, unsigned min_complete, const void *arg,
         size_t argsz)
{
    uint32_t head = load_acquire(c->sq_head);
    unsigned pending = c->sq_local_tail - head;
    unsigned fresh = c->sq_local_tail - load_relaxed(c->sq_tail);
    store_release(c->sq_tail, c->sq_local_tail);
    if (c->setup_flags & U_SETUP_SQPOLL) {
        /* The SQ thread may have gone to sleep: the full fence orders our
         * tail store before the flags load (liburing's io_uring_smp_mb). */
        atomic_thread_fence(memory_order_seq_cst);
        unsigned flags = getevents_flags;
        if (load_relaxed(c->sq_flags) & U_SQ_NEED_WAKEUP)
            flags |= U_ENTER_SQ_WAKEUP;
        if (flags) {
            int r = sys_enter(c->fd, pending, min_complete, flags, arg, argsz);
            if (r < 0 && getevents_flags)
                return r;
        }
        return (int)fresh;
    }
    if (pending == 0 && getevents_flags == 0)
        return 0;
    int r = sys_enter(c->fd, pending, min_complete, getevents_flags, arg, argsz);
    uint32_t now = load_acquire(c->sq_head);
    unsigned consumed = now - head;
    if (consumed != pending) {
        c->sq_local_tail = now;
        store_release(c->sq_tail, now);
    }
    if (r < 0 && consumed == 0)
        return r;
    return (int)consumed;
}

static void
track_add(uring_ctx *c, uint64_t ud)
{
    if (c->track && c->ntrack < c->depth)
        c->track[c->ntrack++] = ud;
}

static void
track_del(uring_ctx *c, uint64_t ud)
{
    for (unsigned i = 0; c->track && i < c->ntrack; i++) {
        if (c->track[i] == ud) {
            c->track[i] = c->track[--c->ntrack];
            return;
        }
    }
}

static int ring_rebuild_plain(uring_ctx *c);


/* A call from a thread other than the ring's creator: see the top comment. */
static int
check_thread(uring_ctx *c)
{
    if (!(c->setup_flags & U_SETUP_SINGLE_ISSUER))
        return 0;
    if (current_tid() == c->owner)
        return 0;
    if (c->inflight || c->internal)
        return -EEXIST;
    return ring_rebuild_plain(c);
}

static int
uring_submit(void *ctx, const fastio_aio_req *reqs, unsigned n)
{
    uring_ctx *c = ctx;
    int err = check_thread(c);
    if (err)
        return err;
    unsigned room = c->depth - c->inflight;
    unsigned space = sq_space(c);
    unsigned k = n < room ? n : room;
    if (k > space)
        k = space;
    uint32_t start = c->sq_local_tail;
    for (unsigned i = 0; i < k; i++) {
        const fastio_aio_req *q = &reqs[i];
        struct io_uring_sqe *sqe = sqe_next(c);
        sqe->user_data = q->user_data;
        if (q->fixed_file >= 0) {
            sqe->fd = q->fixed_file;
            sqe->flags = U_SQE_FIXED_FILE;
        }
        else {
            sqe->fd = q->fd;
        }
        switch (q->opcode) {
        case FASTIO_OP_READ:
        case FASTIO_OP_WRITE: {
            int rd = q->opcode == FASTIO_OP_READ;
            sqe->addr = (uint64_t)(uintptr_t)q->buf;
            sqe->len = (uint32_t)(q->len > UINT32_MAX ? UINT32_MAX : q->len);
            sqe->off = (uint64_t)q->offset;
            sqe->rw_flags = q->rw_flags;
            if (q->fixed_buf >= 0) {
                sqe->opcode = rd ? U_OP_READ_FIXED : U_OP_WRITE_FIXED;
                sqe->buf_index = (uint16_t)q->fixed_buf;
            }
            else {
                sqe->opcode = rd ? U_OP_READ : U_OP_WRITE;
            }
            break;
        }
        case FASTIO_OP_FSYNC:
            sqe->opcode = U_OP_FSYNC;
            break;
        case FASTIO_OP_READV:
            sqe->opcode = U_OP_READV;
            sqe->addr = (uint64_t)(uintptr_t)q->buf;
            sqe->len = (uint32_t)q->len;
            sqe->off = (uint64_t)q->offset;
            break;
        case FASTIO_OP_OPENAT:
            /* A direct descriptor (5.15): the file goes into slot
             * fixed_file of the registered table (file_index is the slot
             * plus one; splice_fd_in is its name in older headers), and no
             * fd of the process is made. */
            sqe->opcode = U_OP_OPENAT;
            sqe->fd = AT_FDCWD;
            sqe->flags = 0;
            sqe->addr = (uint64_t)(uintptr_t)q->buf;
            sqe->open_flags = (uint32_t)q->len;
            sqe->splice_fd_in = q->fixed_file + 1;
            break;
        case FASTIO_OP_FADVISE:
            sqe->opcode = U_OP_FADVISE;
            sqe->off = (uint64_t)q->offset;
            sqe->len = (uint32_t)(q->len > UINT32_MAX ? 0 : q->len);
            sqe->fadvise_advice = (uint32_t)q->rw_flags;
            break;
        case FASTIO_OP_CLOSE:
            sqe->opcode = U_OP_CLOSE;
            sqe->fd = 0;
            sqe->flags = 0;
            sqe->splice_fd_in = q->fixed_file + 1;
            break;
        default:
            /* Not an opcode: submit those before it; refused when first. */
            c->sq_local_tail = start + i;
            if (i == 0)
                return -EINVAL;
            k = i;
            break;
        }
    }
    for (unsigned i = 0; i < k; i++) {
        if (reqs[i].link) {
            struct io_uring_sqe *sqe = &c->sqes[(start + i) & *c->sq_mask];
            sqe->flags |= reqs[i].link == FASTIO_LINK_HARD ? U_SQE_IO_HARDLINK : U_SQE_IO_LINK;
        }
    }
    if (k == 0)
        return 0;
    int r;
    do {
        r = sq_flush(c, 0, 0, NULL, 0);
    } while (r == -EINTR);
    if (r == -EAGAIN || r == -EBUSY)
        return 0; /* nothing taken: reap first */
    if (r < 0)
        return r;
    c->inflight += (unsigned)r;
    for (int i = 0; i < r && c->track; i++)
        track_add(c, reqs[i].user_data);
    return r;
}

/* ------------------------------------------------------------------ */
/* Completion */

static unsigned
cq_copy(uring_ctx *c, fastio_aio_cqe *out, unsigned max)
{
    uint32_t head = load_relaxed(c->cq_head);
    uint32_t tail = load_acquire(c->cq_tail);
    unsigned mask = *c->cq_mask, got = 0;
    while (head != tail && got < max) {
        struct io_uring_cqe *cqe = &c->cqes[head & mask];
        head++;
        if (cqe->user_data == U_INTERNAL_TAG) {
            if (c->internal)
                c->internal--;
            continue;
        }
        out[got].user_data = cqe->user_data;
        out[got].res = cqe->res;
        got++;
        if (c->inflight)
            c->inflight--;
        if (c->track)
            track_del(c, cqe->user_data);
    }
    store_release(c->cq_head, head);
    return got;
}

/* CQEs posted and not yet consumed. */
static unsigned
cq_ready(uring_ctx *c)
{
    return load_acquire(c->cq_tail) - load_relaxed(c->cq_head);
}

/* One wait in the kernel for `want` CQEs, bounded by timeout_ns (< 0:
 * forever, 0: no wait, just run pending completions). */
static int
cq_wait(uring_ctx *c, unsigned want, int64_t timeout_ns)
{
    if (timeout_ns < 0)
        return sq_flush(c, U_ENTER_GETEVENTS, want, NULL, 0);
    if (timeout_ns == 0)
        return sq_flush(c, U_ENTER_GETEVENTS, 0, NULL, 0);
    if (c->kfeatures & U_FEAT_EXT_ARG) {
        struct u_timespec ts = {timeout_ns / 1000000000, timeout_ns % 1000000000};
        struct u_getevents_arg a;
        memset(&a, 0, sizeof a);
        a.ts = (uint64_t)(uintptr_t)&ts;
        return sq_flush(c, U_ENTER_GETEVENTS | U_ENTER_EXT_ARG, want, &a, sizeof a);
    }
    /* Before 5.11: no timeout on the wait itself. Poll with short sleeps. */
    int r = sq_flush(c, U_ENTER_GETEVENTS, 0, NULL, 0);
    if (r < 0 || cq_ready(c) >= want)
        return r;
    int64_t step = timeout_ns < 200000 ? timeout_ns : 200000;
    struct timespec ts = {0, (long)step};
    if (nanosleep(&ts, NULL) < 0)
        return -errno;
    return r;
}

static int
uring_reap(void *ctx, fastio_aio_cqe *out, unsigned max, unsigned min_complete,
           const struct timespec *timeout)
{
    uring_ctx *c = ctx;
    int err = check_thread(c);
    if (err)
        return err;
    if (min_complete > max)
        min_complete = max;
    /* Waiting for more than is in flight would never end. */
    if (min_complete > c->inflight)
        min_complete = c->inflight;
    int64_t deadline = fastio_deadline_ns(timeout);
    unsigned got = cq_copy(c, out, max);
    int waited = 0;
    while (got < max) {
        if (got >= min_complete && (waited || got > 0 || min_complete > 0))
            break;
        int64_t left = -1;
        if (deadline >= 0) {
            left = deadline - fastio_monotonic_ns();
            if (left < 0)
                left = 0;
        }
        if (got >= min_complete)
            left = 0; /* min 0: run pending completions once, do not wait */
        unsigned want = (got < min_complete ? min_complete - got : 0) + c->internal;
        int r = cq_wait(c, want, left);
        waited = 1;
        got += cq_copy(c, out + got, max - got);
        if (r == -ETIME || r == -EAGAIN || r == -EBUSY)
            r = 0;
        if (r < 0) {
            if (got)
                break;
            return r; /* -EINTR: the caller checks signals and calls again */
        }
        if (left == 0)
            break;
    }
    return (int)got;
}

/* ------------------------------------------------------------------ */
/* Cancel */

static int
submit_internal_cancel(uring_ctx *c, int any, uint64_t target)
{
    if (sq_space(c) == 0) {
        int r = sq_flush(c, 0, 0, NULL, 0);
        if (r < 0)
            return r;
        if (sq_space(c) == 0)
            return -EBUSY;
    }
    struct io_uring_sqe *sqe = sqe_next(c);
    sqe->opcode = U_OP_ASYNC_CANCEL;
    sqe->fd = -1;
    sqe->user_data = U_INTERNAL_TAG;
    if (any)
        sqe->cancel_flags = U_ASYNC_CANCEL_ALL | U_ASYNC_CANCEL_ANY;
    else
        sqe->addr = target;
    c->internal++;
    return 0;
}

static int
uring_cancel_all(void *ctx)
{
    uring_ctx *c = ctx;
    int err = check_thread(c);
    if (err)
        return err;
    if (c->inflight == 0)
        return 0;
    unsigned before = c->internal;
    if (c->cancel_any) {
        err = submit_internal_cancel(c, 1, 0);
    }
    else {
        for (unsigned i = 0; i < c->ntrack && !err; i++)
            err = submit_internal_cancel(c, 0, c->track[i]);
    }
    int r;
    do {
        r = sq_flush(c, 0, 0, NULL, 0);
    } while (r == -EINTR);
    if (!(c->setup_flags & U_SETUP_SQPOLL)) {
        /* Without SQPOLL the SQ held only our cancels (submit takes back
         * what the kernel leaves), and sq_flush took back those the kernel
         * refused: no completion will come for them. */
        unsigned written = c->internal - before;
        unsigned taken = r > 0 ? (unsigned)r : 0;
        if (taken < written)
            c->internal -= written - taken;
    }
    return err ? err : (r < 0 ? r : 0);
}

/* Does IORING_ASYNC_CANCEL_ANY work? A cancel of anything on the empty
 * ring: -ENOENT (nothing matched) where it does, -EINVAL before 5.19. */
static int
detect_cancel_any(uring_ctx *c)
{
    if (submit_internal_cancel(c, 1, 0) < 0)
        return 0;
    int r;
    do {
        r = sq_flush(c, U_ENTER_GETEVENTS, 1, NULL, 0);
    } while (r == -EINTR);
    if (r <= 0 && !(c->setup_flags & U_SETUP_SQPOLL)) {
        c->internal = 0; /* not taken: no completion to wait for */
        return 0;
    }
    int ok = 0;
    while (c->internal) {
        uint32_t head = load_relaxed(c->cq_head);
        if (head == load_acquire(c->cq_tail)) {
            int rr = sq_flush(c, U_ENTER_GETEVENTS, 1, NULL, 0);
            if (rr < 0 && rr != -EINTR)
                break;
            continue;
        }
        struct io_uring_cqe *cqe = &c->cqes[head & *c->cq_mask];
        if (cqe->user_data == U_INTERNAL_TAG) {
            ok = cqe->res != -EINVAL;
            c->internal--;
        }
        store_release(c->cq_head, head + 1);
    }
    return ok;
}

/* ------------------------------------------------------------------ */
/* Registration (kept in the context to replay after a rebuild) */

static int
do_register_files(uring_ctx *c)
{
    if (c->nfiles == 0)
        return 0;
    return sys_register(c->fd, U_REGISTER_FILES, c->files, c->nfiles);
}

static int
do_register_buffers(uring_ctx *c)
{
    if (c->nbufs == 0)
        return 0;
    return sys_register(c->fd, U_REGISTER_BUFFERS, c->bufs, c->nbufs);
}

static int
uring_register_files(void *ctx, const int *fds, unsigned n)
{
    uring_ctx *c = ctx;
    int err = check_thread(c);
    if (err)
        return err;
    if (c->nfiles) {
        /* Requests in flight may name the old table: the kernel keeps a
         * reference for them, so unregistering now is safe. */
        sys_register(c->fd, U_UNREGISTER_FILES, NULL, 0);
        free(c->files);
        c->files = NULL;
        c->nfiles = 0;
    }
    if (n == 0)
        return 0;
    int *copy = malloc(n * sizeof *copy);
    if (!copy)
        return -ENOMEM;
    memcpy(copy, fds, n * sizeof *copy);
    c->files = copy;
    c->nfiles = n;
    err = do_register_files(c);
    if (err < 0) {
        free(c->files);
        c->files = NULL;
        c->nfiles = 0;
        return err;
    }
    return 0;
}

static int
uring_register_buffers(void *ctx, const struct iovec *iov, unsigned n)
{
    uring_ctx *c = ctx;
    int err = check_thread(c);
    if (err)
        return err;
    if (c->nbufs) {
        sys_register(c->fd, U_UNREGISTER_BUFFERS, NULL, 0);
        free(c->bufs);
        c->bufs = NULL;
        c->nbufs = 0;
    }
    if (n == 0)
        return 0;
    struct iovec *copy = malloc(n * sizeof *copy);
    if (!copy)
        return -ENOMEM;
    memcpy(copy, iov, n * sizeof *copy);
    c->bufs = copy;
    c->nbufs = n;
    err = do_register_buffers(c);
    if (err < 0) {
        free(c->bufs);
        c->bufs = NULL;
        c->nbufs = 0;
        return err;
    }
    return 0;
}

static int
uring_set_eventfd(void *ctx, int efd)
{
    uring_ctx *c = ctx;
    int err = check_thread(c);
    if (err)
        return err;
    if (c->efd >= 0) {
        sys_register(c->fd, U_UNREGISTER_EVENTFD, NULL, 0);
        c->efd = -1;
    }
    if (efd < 0)
        return 0;
    err = sys_register(c->fd, U_REGISTER_EVENTFD, &efd, 1);
    if (err < 0)
        return err;
    c->efd = efd;
    return 0;
}

/* The ring is idle: replace it with one without SINGLE_ISSUER and
 * DEFER_TASKRUN, with the same registrations. */
static int
ring_rebuild_plain(uring_ctx *c)
{
    uring_ctx fresh = *c;
    fresh.fd = -1;
    fresh.sq_map = fresh.cq_map = fresh.sqes_map = NULL;
    int err = ring_create(&fresh, 1);
    if (err < 0)
        return err;
    if ((err = do_register_files(&fresh)) < 0 || (err = do_register_buffers(&fresh)) < 0 ||
        (c->efd >= 0 && (err = sys_register(fresh.fd, U_REGISTER_EVENTFD, &c->efd, 1)) < 0)) {
        ring_unmap(&fresh);
        return err;
    }
    ring_unmap(c);
    *c = fresh;
    c->features &= ~(unsigned)(FASTIO_AIO_F_SINGLE_ISSUER | FASTIO_AIO_F_DEFER_TASKRUN);
    return 0;
}

/* ------------------------------------------------------------------ */
/* Probe, open, close */

static unsigned
flags_to_features(unsigned setup_flags)
{
    unsigned f = FASTIO_AIO_F_REGISTER_FILES | FASTIO_AIO_F_REGISTER_BUFFERS |
                 FASTIO_AIO_F_ASYNC_BUFFERED | FASTIO_AIO_F_FSYNC | FASTIO_AIO_F_EVENTFD;
    if (setup_flags & U_SETUP_SQPOLL)
        f |= FASTIO_AIO_F_SQPOLL;
    if (setup_flags & U_SETUP_SINGLE_ISSUER)
        f |= FASTIO_AIO_F_SINGLE_ISSUER;
    if (setup_flags & U_SETUP_DEFER_TASKRUN)
        f |= FASTIO_AIO_F_DEFER_TASKRUN;
    return f;
}

static int
read_proc_int(const char *path, long *v)
{
    FILE *f = fopen(path, "re");
    if (!f)
        return -1;
    int ok = fscanf(f, "%ld", v) == 1;
    fclose(f);
    return ok ? 0 : -1;
}

/* "Seccomp:\t2" in /proc/self/status: a filter is installed. */
static int
seccomp_mode(void)
{
    FILE *f = fopen("/proc/self/status", "re");
    if (!f)
        return -1;
    char line[256];
    int mode = -1;
    while (fgets(line, sizeof line, f)) {
        if (sscanf(line, "Seccomp: %d", &mode) == 1)
            break;
    }
    fclose(f);
    return mode;
}

static void
why_eperm(char *why, size_t whylen)
{
    long dis = -1;
    if (read_proc_int("/proc/sys/kernel/io_uring_disabled", &dis) == 0 && dis == 2) {
        snprintf(why, whylen, "io_uring_setup: EPERM (kernel.io_uring_disabled=2: "
                              "io_uring is disabled on this host)");
    }
    else if (dis == 1) {
        snprintf(why, whylen, "io_uring_setup: EPERM (kernel.io_uring_disabled=1: only for "
                              "members of kernel.io_uring_group or with CAP_SYS_ADMIN)");
    }
    else {
        int sc = seccomp_mode();
        snprintf(why, whylen,
                 "io_uring_setup: EPERM (kernel.io_uring_disabled=%ld, so a seccomp filter "
                 "or an LSM refuses it%s)",
                 dis < 0 ? 0 : dis, sc == 2 ? "; this process runs under a seccomp filter" : "");
    }
}

static int
uring_probe(char *why, size_t whylen, unsigned *features)
{
    *features = 0;
    if (whylen)
        why[0] = '\0';
    struct io_uring_params p;
    memset(&p, 0, sizeof p);
    int fd = sys_setup(2, &p);
    if (fd < 0) {
        if (fd == -ENOSYS)
            snprintf(why, whylen, "io_uring_setup: ENOSYS (kernel without io_uring%s)",
                     seccomp_mode() == 2 ? ", or a seccomp filter answering ENOSYS" : "");
        else if (fd == -EPERM)
            why_eperm(why, whylen);
        else if (fd == -ENOMEM)
            snprintf(why, whylen, "io_uring_setup: ENOMEM (RLIMIT_MEMLOCK too low for a ring)");
        else
            snprintf(why, whylen, "io_uring_setup: %s", strerror(-fd));
        return fd;
    }
    struct u_probe *pr = calloc(1, sizeof *pr);
    if (!pr) {
        close(fd);
        snprintf(why, whylen, "out of memory");
        return -ENOMEM;
    }
    int r = sys_register(fd, U_REGISTER_PROBE, pr, 256);
    close(fd);
    if (r < 0) {
        free(pr);
        snprintf(why, whylen, "IORING_REGISTER_PROBE: %s (kernel older than 5.6)",
                 strerror(-r));
        return r == -EINVAL ? -EOPNOTSUPP : r;
    }
    static const struct {
        int op;
        const char *name;
    } need[] = {{U_OP_READ, "IORING_OP_READ"},
                {U_OP_WRITE, "IORING_OP_WRITE"},
                {U_OP_FSYNC, "IORING_OP_FSYNC"},
                {U_OP_READ_FIXED, "IORING_OP_READ_FIXED"},
                {U_OP_WRITE_FIXED, "IORING_OP_WRITE_FIXED"},
                {U_OP_ASYNC_CANCEL, "IORING_OP_ASYNC_CANCEL"}};
    char missing[160] = "";
    for (size_t i = 0; i < sizeof need / sizeof need[0]; i++) {
        int op = need[i].op;
        if (op > pr->last_op || op >= pr->ops_len || !(pr->ops[op].flags & U_OP_SUPPORTED)) {
            size_t used = strlen(missing);
            snprintf(missing + used, sizeof missing - used, "%s%s", used ? ", " : "",
                     need[i].name);
        }
    }
    free(pr);
    if (missing[0]) {
        snprintf(why, whylen, "io_uring lacks %s (IORING_REGISTER_PROBE)", missing);
        return -EOPNOTSUPP;
    }
    unsigned f = flags_to_features(0);
    memset(&p, 0, sizeof p);
    p.flags = U_SETUP_SINGLE_ISSUER | U_SETUP_DEFER_TASKRUN;
    fd = sys_setup(2, &p);
    if (fd >= 0) {
        f |= FASTIO_AIO_F_SINGLE_ISSUER | FASTIO_AIO_F_DEFER_TASKRUN;
        close(fd);
    }
    else {
        memset(&p, 0, sizeof p);
        p.flags = U_SETUP_SINGLE_ISSUER;
        fd = sys_setup(2, &p);
        if (fd >= 0) {
            f |= FASTIO_AIO_F_SINGLE_ISSUER;
            close(fd);
        }
    }
    /* Before 5.11 SQPOLL needs CAP_SYS_ADMIN (EPERM): try one. */
    memset(&p, 0, sizeof p);
    p.flags = U_SETUP_SQPOLL;
    p.sq_thread_idle = 10;
    fd = sys_setup(2, &p);
    if (fd >= 0) {
        f |= FASTIO_AIO_F_SQPOLL;
        close(fd);
    }
    *features = f;
    return 0;
}

static void uring_close(void *ctx);

static int
uring_open(void **ctxp, const fastio_aio_options *opts, unsigned *features)
{
    *ctxp = NULL;
    if (opts->depth == 0 || opts->depth > 32767)
        return -EINVAL;
    uring_ctx *c = calloc(1, sizeof *c);
    if (!c)
        return -ENOMEM;
    c->fd = -1;
    c->efd = -1;
    c->depth = opts->depth;
    c->sqpoll = opts->sqpoll;
    c->sqpoll_idle_ms = opts->sqpoll_idle_ms;
#ifdef FASTIO_URING_TEST_PLAIN
    int err = ring_create(c, 1); /* benchmarks: the plain ring, for comparison */
#else
    int err = ring_create(c, 0);
#endif
    if (err < 0) {
        free(c);
        return err;
    }
    c->features = flags_to_features(c->setup_flags);
    c->cancel_any = detect_cancel_any(c);
#ifdef FASTIO_URING_TEST_NO_CANCEL_ANY
    c->cancel_any = 0; /* the C harness exercises the pre-5.19 path */
#endif
    if (!c->cancel_any) {
        c->track = calloc(c->depth, sizeof *c->track);
        if (!c->track) {
            uring_close(c);
            return -ENOMEM;
        }
    }
    *features = c->features;
    *ctxp = c;
    return 0;
}

static void
uring_close(void *ctx)
{
    uring_ctx *c = ctx;
    if (!c)
        return;
    /* queue.c drains before close. Should anything still be in flight, the
     * kernel could still write into its buffer after we return: cancel and
     * wait for it here rather than free under its feet. */
    if (c->fd >= 0 && (c->inflight || c->internal) && check_thread(c) == 0) {
        fastio_aio_cqe sink[32];
        uring_cancel_all(c);
        while (c->inflight || c->internal) {
            int r = uring_reap(c, sink, 32, 1, NULL);
            if (r < 0 && r != -EINTR)
                break;
            if (r == 0 && c->inflight == 0)
                break;
        }
    }
    ring_unmap(c);
    free(c->track);
    free(c->files);
    free(c->bufs);
    free(c);
}

/* Closing our ring fd drops a reference to the ring: a forked child's copy
 * leaves the parent's ring alive; the last fd of a ring whose requests we
 * cannot reap (another thread's, on a single-issuer ring) makes the kernel
 * cancel and end them on its own. Unmapping touches only our address
 * space. */
static void
uring_forget(void *ctx)
{
    uring_ctx *c = ctx;
    if (!c)
        return;
    ring_unmap(c);
    free(c->track);
    free(c->files);
    free(c->bufs);
    free(c);
}

const fastio_aio_ops fastio_aio_uring_ops = {
    .name = "io_uring",
    .probe = uring_probe,
    .open = uring_open,
    .submit = uring_submit,
    .reap = uring_reap,
    .cancel_all = uring_cancel_all,
    .register_files = uring_register_files,
    .register_buffers = uring_register_buffers,
    .set_eventfd = uring_set_eventfd,
    .close = uring_close,
    .forget = uring_forget,
    .atfork_child = uring_atfork_child,
};
