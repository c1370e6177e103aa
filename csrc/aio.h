/* aio.h: the asynchronous I/O backend ops table (fio's ioengine_ops).
 *
 * queue.c owns everything Python sees: the Queue type, buffer pinning per
 * request, tags, batching, the GIL. A backend only moves requests to the
 * kernel (or its threads) and completions back, through these functions.
 * None of them touches a Python object, so queue.c may call every one of
 * them with the GIL released. All return 0 (or a count) on success and
 * -errno on failure, like every syscall helper in fastio.
 *
 * Backends: aio_uring.c (io_uring through its system calls and
 * linux/io_uring.h), aio_linux.c (io_setup/io_submit/io_getevents through
 * system calls and linux/aio_abi.h), aio_posix.c (glibc aio_read/aio_write/
 * lio_listio/aio_suspend), aio_threads.c (a pthread pool doing pread/pwrite).
 */
#ifndef FASTIO_AIO_H
#define FASTIO_AIO_H

#include "fastio.h"

#include <stdint.h>
#include <sys/uio.h>
#include <time.h>

typedef enum {
    FASTIO_OP_READ = 0,
    FASTIO_OP_WRITE = 1,
    FASTIO_OP_FSYNC = 2,   /* len and offset ignored; buf NULL */
    /* io_uring only (readfiles.c): a file opened into, and closed from, a
     * slot of the registered file table, and a vectored read. */
    FASTIO_OP_OPENAT = 3,  /* buf: NUL-terminated path; len: open flags;
                              fixed_file: the slot to open into */
    FASTIO_OP_CLOSE = 4,   /* fixed_file: the slot to close */
    FASTIO_OP_READV = 5,   /* buf: struct iovec array; len: its count */
    FASTIO_OP_FADVISE = 6, /* offset, len (0: to the end); rw_flags: the advice */
} fastio_aio_opcode;

/* fastio_aio_req.link: chain this request to the next one (io_uring). */
enum {
    FASTIO_LINK_NONE = 0,
    FASTIO_LINK_SOFT = 1,  /* IOSQE_IO_LINK: a failure cancels the rest */
    FASTIO_LINK_HARD = 2,  /* IOSQE_IO_HARDLINK: the next runs regardless */
};

/* One request. user_data comes back unchanged in its completion; queue.c
 * uses it as the index of the slot that pins the buffer. */
typedef struct {
    uint64_t user_data;
    void *buf;
    size_t len;
    int64_t offset;
    int fd;
    /* Index into the backend's registered files, or -1: io_uring uses
     * IOSQE_FIXED_FILE with it; the other backends use fd. */
    int fixed_file;
    /* Index into the registered buffers, or -1 (io_uring READ_FIXED). */
    int fixed_buf;
    uint8_t opcode;        /* fastio_aio_opcode */
    /* RWF_* flags for a read or write (preadv2/pwritev2, io_uring's
     * rw_flags, the iocb's aio_rw_flags): 0 almost always; RWF_DONTCACHE
     * for uncached=True. A backend that cannot pass them on completes the
     * request with -EOPNOTSUPP instead of dropping them silently. */
    uint32_t rw_flags;
    uint8_t link;          /* FASTIO_LINK_*: io_uring only, 0 elsewhere */
} fastio_aio_req;


/* One completion: res is the byte count (>= 0) or -errno. */
typedef struct {
    uint64_t user_data;
    int64_t res;
} fastio_aio_cqe;

/* Feature bits a backend reports from probe() and open(). */
enum {
    FASTIO_AIO_F_REGISTER_FILES = 1u << 0,
    FASTIO_AIO_F_REGISTER_BUFFERS = 1u << 1,
    FASTIO_AIO_F_ASYNC_BUFFERED = 1u << 2,  /* really async without O_DIRECT */
    FASTIO_AIO_F_SQPOLL = 1u << 3,
    FASTIO_AIO_F_SINGLE_ISSUER = 1u << 4,
    FASTIO_AIO_F_DEFER_TASKRUN = 1u << 5,
    FASTIO_AIO_F_FSYNC = 1u << 6,
    FASTIO_AIO_F_EVENTFD = 1u << 7,
};

/* Options for open(), parsed by queue.c from the Queue's keywords. */
typedef struct {
    unsigned depth;         /* requests in flight at most */
    int sqpoll;             /* io_uring: ask for a kernel submission thread */
    int sqpoll_idle_ms;
    int threads;            /* aio_threads: pool size (0: the backend's default) */
} fastio_aio_options;

typedef struct fastio_aio_ops {
    const char *name;       /* "io_uring", "linux_aio", "posix_aio", "threads" */

    /* Can this backend work here? 0, or -errno with a one-line reason in why
     * (e.g. "io_uring_setup: EPERM (kernel.io_uring_disabled=2)"). Sets the
     * feature bits it can tell without opening a context. */
    int (*probe)(char *why, size_t whylen, unsigned *features);

    /* Create a context for opts->depth requests in flight. */
    int (*open)(void **ctx, const fastio_aio_options *opts, unsigned *features);

    /* Queue n requests and hand them to the kernel. Returns how many were
     * accepted (>= 0; fewer than n means "reap, then retry the rest"),
     * or -errno when none was and retrying will not help. */
    int (*submit)(void *ctx, const fastio_aio_req *reqs, unsigned n);

    /* Wait until at least min_complete completions are ready, or timeout
     * (NULL: forever; {0,0}: do not wait), then copy up to max of them to
     * out. Returns the number copied (may be 0 on timeout), or -errno
     * (-EINTR: the caller checks signals and calls again). */
    int (*reap)(void *ctx, fastio_aio_cqe *out, unsigned max, unsigned min_complete,
                const struct timespec *timeout);

    /* Ask for every request in flight to finish early (best effort: a read
     * already in the device completes normally). Their completions still
     * come through reap(), with -ECANCELED where cancelled. */
    int (*cancel_all)(void *ctx);

    /* Optional (NULL when unsupported): register files / buffers once, so
     * requests can name them by index. Passing n = 0 unregisters. */
    int (*register_files)(void *ctx, const int *fds, unsigned n);
    int (*register_buffers)(void *ctx, const struct iovec *iov, unsigned n);

    /* Optional: signal efd (an eventfd) on every completion, for asyncio. */
    int (*set_eventfd)(void *ctx, int efd);

    /* Free the context. Every request must have been reaped first
     * (queue.c cancels and drains before calling close). */
    void (*close)(void *ctx);

    /* Optional: let go of a context without waiting for, reaping or
     * cancelling its requests, and without a system call on the kernel
     * object behind it (no io_uring_enter, cancel, io_destroy or join):
     * close this process's fds of it, unmap its rings, free its memory.
     * Used in a forked child (the parent still uses the kernel object), and
     * when close() could not get the requests back (queue.c then keeps
     * their buffers pinned for good; the kernel ends them once its last fd
     * is closed). NULL: the context is left as it is (it holds no fd). */
    void (*forget)(void *ctx);

    /* Optional: run in the child after fork() (pthread_atfork, in the one
     * thread the child has): reset per-process or per-thread caches that
     * the child inherited from the forking thread. Async-signal-safe code
     * only. */
    void (*atfork_child)(void);
} fastio_aio_ops;

/* Timeouts: every backend's reap() turns its relative timeout into one
 * CLOCK_MONOTONIC deadline in nanoseconds and waits for what is left. */
static inline int64_t
fastio_monotonic_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* The deadline for timeout from now; -1 (never) for NULL. */
static inline int64_t
fastio_deadline_ns(const struct timespec *timeout)
{
    if (timeout == NULL) {
        return -1;
    }
    return fastio_monotonic_ns() + (int64_t)timeout->tv_sec * 1000000000 +
           timeout->tv_nsec;
}

static inline struct timespec
fastio_ns_to_timespec(int64_t ns)
{
    struct timespec ts = {.tv_sec = (time_t)(ns / 1000000000),
                          .tv_nsec = (long)(ns % 1000000000)};
    return ts;
}

extern const fastio_aio_ops fastio_aio_uring_ops;    /* aio_uring.c */
extern const fastio_aio_ops fastio_aio_linux_ops;    /* aio_linux.c */
extern const fastio_aio_ops fastio_aio_posix_ops;    /* aio_posix.c */
extern const fastio_aio_ops fastio_aio_threads_ops;  /* aio_threads.c */

#endif /* FASTIO_AIO_H */
