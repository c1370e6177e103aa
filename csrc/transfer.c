/* transfer.c: sendfile / copy_file_range / splice / tee / FICLONE loops,
 * with the GIL released and partial transfers, EINTR and EAGAIN handled.
 *
 * One engine moves bytes from in_fd to out_fd by a chain of methods tried in
 * order (the Python layer picks the chain: that is policy). Each method is a
 * loop that runs until `count` bytes have moved or the input is exhausted.
 * A method that fails before moving a single byte with an errno that means
 * "this pair of files does not take this system call" (EXDEV, EOPNOTSUPP,
 * EINVAL, ENOSYS, ENOTTY), or that reports end-of-file at once where the
 * file may well have data (procfs, sysfs: they report a size of 0 or 4096
 * and answer copy_file_range with 0), hands over to the next method.
 *
 * The whole chain runs with the GIL released. The GIL is taken back only to
 * run signal handlers after EINTR (PyErr_CheckSignals), as the stdlib's
 * blocking calls do, so Ctrl-C interrupts a long transfer.
 */
#include "fastio.h"

#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#ifndef FICLONE
#define FICLONE _IOW(0x94, 9, int)
#endif
#ifndef F_SETPIPE_SZ
#define F_SETPIPE_SZ 1031
#define F_GETPIPE_SZ 1032
#endif

/* sendfile(2) and splice(2) move at most this much per call (the kernel's
 * MAX_RW_COUNT); asking for more is harmless but this keeps ssize_t exact. */
#define MAX_CHUNK ((int64_t)0x7ffff000)
/* The read/write loop's buffer. Measured on loopback TCP and ext4 copies
 * (benchmarks/bench_transfer.py): 1 MiB beat 64 KiB - 256 KiB by 20-30%,
 * 4 MiB was slower again (it no longer fits the caches). Smaller when the
 * transfer is known to be smaller. */
#define RW_BUFSIZE ((size_t)1024 * 1024)
/* The internal pipe of a splice transfer: the largest an unprivileged process
 * may ask for by default (fs.pipe-max-size); 64 KiB if refused. */
#define SPLICE_PIPE_SIZE (1024 * 1024)

/* A step returns 0 (done: count reached or end of input), -errno, or this:
 * the non-blocking caller (asyncio) must wait for writability. */
#define XFER_BLOCKED 1

typedef enum {
    M_REFLINK = 0,
    M_COPY_FILE_RANGE,
    M_SENDFILE,
    M_SPLICE,
    M_READWRITE,
    M_COUNT
} xfer_method;

static const char *const method_names[M_COUNT] = {
    "reflink", "copy_file_range", "sendfile", "splice", "readwrite",
};

typedef struct {
    int in_fd, out_fd;
    int64_t in_off, out_off;  /* -1: use and advance the fd's own position */
    int64_t count;            /* -1: until the end of the input */
    int64_t done;             /* bytes moved so far, all methods together */
    int64_t step_done;        /* bytes moved by the current method */
    int eof;                  /* the current method saw the end of the input */
    /* What fstat said at the start. */
    int in_stream, out_stream;  /* pipe, socket, tty: poll() on EAGAIN */
    int in_pipe, out_pipe;
    int any_socket;            /* either end: see xfer_short() */
    int in_regular;
    int64_t in_size;
    int64_t start_off;         /* in_off at the start (-1: unknown) */
    /* Waiting */
    int64_t deadline_ns;       /* CLOCK_MONOTONIC; -1: wait forever */
    int nowait;                /* return XFER_BLOCKED instead of polling */
    int blocked;
    /* The GIL: saved while released, re-taken only for signal handlers. */
    PyThreadState *ts;
    int pyerr;                 /* a signal handler raised: propagate it */
    const char *syscall;       /* names the failing call in the OSError */
} xfer;

/* ------------------------------------------------------------------ */
/* Helpers that run with the GIL released */

static int64_t
now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

/* After EINTR: run the signal handlers with the GIL, as the stdlib does.
 * Returns -1 if one raised (KeyboardInterrupt...), which ends the transfer. */
static int
xfer_check_signals(xfer *x)
{
    PyEval_RestoreThread(x->ts);
    int r = PyErr_CheckSignals();
    /* The exception, if any, stays set in the thread state across the save. */
    x->ts = PyEval_SaveThread();
    if (r < 0) {
        x->pyerr = 1;
        return -1;
    }
    return 0;
}

/* How much the next call may ask for. */
static size_t
xfer_want(const xfer *x, size_t cap)
{
    int64_t left = x->count < 0 ? MAX_CHUNK : x->count - x->done;
    if (left > (int64_t)cap) {
        left = (int64_t)cap;
    }
    return (size_t)left;
}

/* A call that moved less than asked. On a blocking socket that means a
 * signal interrupted it after some bytes went (the kernel then returns the
 * count, not EINTR): run the handlers now, or the next call could block
 * forever with, say, a KeyboardInterrupt pending. On a non-blocking socket
 * it is followed by EAGAIN and poll() anyway. Pipes and files return short
 * counts in normal operation (a pipe holds 64 KiB), so they are not checked:
 * re-taking a contended GIL there would cost up to a switch interval. */
static int
xfer_short(xfer *x, size_t want, ssize_t n)
{
    if (x->any_socket && (size_t)n < want) {
        return xfer_check_signals(x);
    }
    return 0;
}

static void
xfer_moved(xfer *x, ssize_t n)
{
    x->done += n;
    x->step_done += n;
}

/* EAGAIN: wait until the input is readable (want_in) and the output writable
 * (want_out), for those that are streams, within the deadline. A regular
 * file never says EAGAIN, so it is never polled. Returns 0 when ready,
 * XFER_BLOCKED in non-blocking mode, -ETIMEDOUT, -EINTR (a handler raised),
 * or -EAGAIN if there is nothing to wait on (which would otherwise spin). */
static int
xfer_wait(xfer *x, int want_in, int want_out)
{
    int need_in = want_in && x->in_stream;
    int need_out = want_out && x->out_stream;
    if (!need_in && !need_out) {
        x->syscall = "poll";
        return -EAGAIN;
    }
    if (x->nowait) {
        x->blocked = 1;
        return XFER_BLOCKED;
    }
    /* A signal that arrived during the last call may have cut it short
     * instead of making it fail with EINTR; poll() would then sleep with
     * the handler pending. We are about to block anyway: run it now. */
    if (xfer_check_signals(x) < 0) {
        return -EINTR;
    }
    /* Wait for each side until it has been ready once: poll() returns when
     * either is, and polling the ready one again would spin. */
    while (need_in || need_out) {
        struct pollfd pf[2];
        int n = 0;
        if (need_in) {
            pf[n].fd = x->in_fd;
            pf[n].events = POLLIN;
            pf[n].revents = 0;
            n++;
        }
        if (need_out) {
            pf[n].fd = x->out_fd;
            pf[n].events = POLLOUT;
            pf[n].revents = 0;
            n++;
        }
        int timeout_ms = -1;
        if (x->deadline_ns >= 0) {
            int64_t left = x->deadline_ns - now_ns();
            if (left <= 0) {
                x->syscall = "poll";
                return -ETIMEDOUT;
            }
            /* Round up: a 0 ms poll would spin until the deadline. */
            int64_t ms = (left + 999999) / 1000000;
            timeout_ms = ms > 0x7fffffff ? 0x7fffffff : (int)ms;
        }
        int r = poll(pf, (nfds_t)n, timeout_ms);
        if (r < 0) {
            if (errno == EINTR) {
                if (xfer_check_signals(x) < 0) {
                    return -EINTR;
                }
                continue;
            }
            x->syscall = "poll";
            return -errno;
        }
        if (r == 0) {
            x->syscall = "poll";
            return -ETIMEDOUT;
        }
        /* POLLERR/POLLHUP count as ready: the next call reports the error
         * (EPIPE, ECONNRESET) or end of input. */
        for (int i = 0; i < n; i++) {
            if (pf[i].revents == 0) {
                continue;
            }
            if (pf[i].fd == x->in_fd && (pf[i].events & POLLIN)) {
                need_in = 0;
            }
            else {
                need_out = 0;
            }
        }
    }
    return 0;
}

/* The common tail of every system call in a loop: EINTR retries (after the
 * handlers ran), EAGAIN waits. Returns 0 to retry, else the step's result. */
static int
xfer_retry(xfer *x, int err, int want_in, int want_out, const char *syscall)
{
    if (err == EINTR) {
        return xfer_check_signals(x) < 0 ? -EINTR : 0;
    }
    if (err == EAGAIN) {
        return xfer_wait(x, want_in, want_out);
    }
    x->syscall = syscall;
    return -err;
}

/* xfer_chunk_done: go on with the next chunk. */
#define XFER_NEXT 2

/* The end of one chunk of a sendfile or splice loop: n is what `syscall`
 * returned (err its errno when n < 0); the caller has already advanced its
 * offsets by n. Returns XFER_NEXT to go on, 0 at the end of the input, or
 * what the method returns (-errno, -EINTR when a handler raised,
 * XFER_BLOCKED). */
static int
xfer_chunk_done(xfer *x, size_t want, ssize_t n, int err, const char *syscall)
{
    if (n > 0) {
        xfer_moved(x, n);
        return xfer_short(x, want, n) < 0 ? -EINTR : XFER_NEXT;
    }
    if (n == 0) {
        x->eof = 1;
        return 0;
    }
    int r = xfer_retry(x, err, 1, 1, syscall);
    return r != 0 ? r : XFER_NEXT;
}

/* ------------------------------------------------------------------ */
/* The methods: each loops until count or end of input */

static int
step_reflink(xfer *x)
{
    /* FICLONE shares the whole file's extents: only for a whole-file copy
     * from the start of the input (the output is copyfile's fresh, empty
     * descriptor). EINVAL hands over to the next method. */
    if (x->count >= 0 || x->in_off != 0 || x->out_off > 0) {
        x->syscall = "ioctl(FICLONE)";
        return -EINVAL;
    }
    for (;;) {
        if (ioctl(x->out_fd, FICLONE, x->in_fd) == 0) {
            break;
        }
        int r = xfer_retry(x, errno, 0, 0, "ioctl(FICLONE)");
        if (r != 0) {
            return r;
        }
    }
    struct stat st;
    if (fstat(x->out_fd, &st) < 0) {
        x->syscall = "fstat";
        return -errno;
    }
    xfer_moved(x, (ssize_t)st.st_size);
    x->eof = 1;
    return 0;
}

static int
step_copy_file_range(xfer *x)
{
    for (;;) {
        size_t want = xfer_want(x, (size_t)MAX_CHUNK);
        if (want == 0) {
            return 0;
        }
        loff_t ioff = x->in_off, ooff = x->out_off;
        ssize_t n = copy_file_range(x->in_fd, x->in_off >= 0 ? &ioff : NULL,
                                    x->out_fd, x->out_off >= 0 ? &ooff : NULL,
                                    want, 0);
        if (n > 0) {
            xfer_moved(x, n);
            if (x->in_off >= 0) {
                x->in_off += n;
            }
            if (x->out_off >= 0) {
                x->out_off += n;
            }
            continue;
        }
        if (n == 0) {
            x->eof = 1;
            return 0;
        }
        int r = xfer_retry(x, errno, 1, 1, "copy_file_range");
        if (r != 0) {
            return r;
        }
    }
}

static int
step_sendfile(xfer *x)
{
    /* sendfile(2) writes at the output's own position: an explicit output
     * offset is for the methods that take one. */
    if (x->out_off >= 0) {
        x->syscall = "sendfile";
        return -EINVAL;
    }
    for (;;) {
        size_t want = xfer_want(x, (size_t)MAX_CHUNK);
        if (want == 0) {
            return 0;
        }
        off_t off = (off_t)x->in_off;
        ssize_t n = sendfile(x->out_fd, x->in_fd,
                             x->in_off >= 0 ? &off : NULL, want);
        if (n > 0 && x->in_off >= 0) {
            x->in_off += n;
        }
        int r = xfer_chunk_done(x, want, n, errno, "sendfile");
        if (r != XFER_NEXT) {
            return r;
        }
    }
}

/* One side of a splice that has a pipe on at least one end. */
static int
splice_direct(xfer *x)
{
    /* A pipe has no offset: pass NULL on its side. */
    int64_t *in_off = x->in_pipe ? NULL : (x->in_off >= 0 ? &x->in_off : NULL);
    int64_t *out_off = x->out_pipe ? NULL : (x->out_off >= 0 ? &x->out_off : NULL);
    for (;;) {
        size_t want = xfer_want(x, (size_t)MAX_CHUNK);
        if (want == 0) {
            return 0;
        }
        loff_t ioff = in_off ? *in_off : 0, ooff = out_off ? *out_off : 0;
        ssize_t n = splice(x->in_fd, in_off ? &ioff : NULL,
                           x->out_fd, out_off ? &ooff : NULL, want,
                           SPLICE_F_MOVE | SPLICE_F_MORE);
        if (n > 0) {
            if (in_off) {
                *in_off += n;
            }
            if (out_off) {
                *out_off += n;
            }
        }
        int r = xfer_chunk_done(x, want, n, errno, "splice");
        if (r != XFER_NEXT) {
            return r;
        }
    }
}

/* Neither end a pipe: splice in -> internal pipe -> out. Each chunk is
 * drained completely before the next is pulled in, so the internal pipe
 * never holds data when we return (even on error, data is only lost if
 * the output failed, and then the transfer has failed anyway). */
static int
splice_via_pipe(xfer *x)
{
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0) {
        x->syscall = "pipe2";
        return -errno;
    }
    /* A larger pipe means fewer round trips; refusal (pipe-max-size, or
     * the user's pipe quota) only costs speed. */
    int psize = fcntl(p[1], F_SETPIPE_SZ, SPLICE_PIPE_SIZE);
    if (psize < 0) {
        psize = fcntl(p[1], F_GETPIPE_SZ);
        if (psize <= 0) {
            psize = 65536;
        }
    }
    int result = 0;
    for (;;) {
        size_t want = xfer_want(x, (size_t)psize);
        if (want == 0) {
            break;
        }
        loff_t ioff = x->in_off;
        ssize_t n = splice(x->in_fd, x->in_off >= 0 ? &ioff : NULL,
                           p[1], NULL, want, SPLICE_F_MOVE | SPLICE_F_MORE);
        if (n == 0) {
            x->eof = 1;
            break;
        }
        if (n < 0) {
            int r = xfer_retry(x, errno, 1, 0, "splice");
            if (r != 0) {
                result = r;
                break;
            }
            continue;
        }
        if (x->in_off >= 0) {
            x->in_off += n;
        }
        /* Drain what came in. */
        ssize_t left = n;
        while (left > 0) {
            loff_t ooff = x->out_off;
            ssize_t m = splice(p[0], NULL, x->out_fd,
                               x->out_off >= 0 ? &ooff : NULL, (size_t)left,
                               SPLICE_F_MOVE | SPLICE_F_MORE);
            if (m > 0) {
                left -= m;
                xfer_moved(x, m);
                if (x->out_off >= 0) {
                    x->out_off += m;
                }
                if (xfer_short(x, (size_t)(left + m), m) < 0) {
                    result = -EINTR;
                    break;
                }
                continue;
            }
            if (m == 0) {  /* cannot happen with data in the pipe */
                x->syscall = "splice";
                result = -EIO;
                break;
            }
            /* Non-blocking mode cannot stop here: the bytes in the pipe
             * were consumed from the input. Wait for them to go out. */
            int saved = x->nowait;
            x->nowait = 0;
            int r = xfer_retry(x, errno, 0, 1, "splice");
            x->nowait = saved;
            if (r != 0) {
                result = r;
                break;
            }
        }
        if (result != 0) {
            break;
        }
        /* Only once the pipe is empty: no byte is lost if a handler raises. */
        if (xfer_short(x, want, n) < 0) {
            result = -EINTR;
            break;
        }
    }
    close(p[0]);
    close(p[1]);
    return result;
}

static int
step_splice(xfer *x)
{
    if (x->in_pipe || x->out_pipe) {
        return splice_direct(x);
    }
    return splice_via_pipe(x);
}

static int
step_readwrite(xfer *x)
{
    size_t bufsize = RW_BUFSIZE;
    int64_t expect = x->count >= 0 ? x->count - x->done : -1;
    if (expect < 0 && x->in_regular && x->in_off >= 0 && x->in_size > 0) {
        /* To the end of a regular file: its size bounds it (+1 to see EOF
         * in the same read; a growing file just takes more rounds). */
        expect = x->in_size > x->in_off ? x->in_size - x->in_off + 1 : 1;
    }
    if (expect >= 0 && (uint64_t)expect < bufsize) {
        bufsize = expect < 4096 ? 4096 : (size_t)expect;
    }
    char *buf = malloc(bufsize);
    if (buf == NULL) {
        x->syscall = "malloc";
        return -ENOMEM;
    }
    int result = 0;
    for (;;) {
        size_t want = xfer_want(x, bufsize);
        if (want == 0) {
            break;
        }
        ssize_t n = x->in_off >= 0 ? pread(x->in_fd, buf, want, (off_t)x->in_off)
                                   : read(x->in_fd, buf, want);
        if (n == 0) {
            x->eof = 1;
            break;
        }
        if (n < 0) {
            int r = xfer_retry(x, errno, 1, 0, x->in_off >= 0 ? "pread" : "read");
            if (r != 0) {
                result = r;
                break;
            }
            continue;
        }
        /* Write it all. The input offset advances by what was written, so a
         * non-blocking stop re-reads the rest next time. */
        ssize_t pos = 0;
        while (pos < n) {
            ssize_t m = x->out_off >= 0
                ? pwrite(x->out_fd, buf + pos, (size_t)(n - pos), (off_t)x->out_off)
                : write(x->out_fd, buf + pos, (size_t)(n - pos));
            if (m > 0) {
                pos += m;
                xfer_moved(x, m);
                if (x->in_off >= 0) {
                    x->in_off += m;
                }
                if (x->out_off >= 0) {
                    x->out_off += m;
                }
                if (xfer_short(x, (size_t)(n - pos + m), m) < 0) {
                    result = -EINTR;
                    break;
                }
                continue;
            }
            if (m == 0) {
                x->syscall = "write";
                result = -EIO;
                break;
            }
            int err = errno;
            if (err == EAGAIN && x->nowait) {
                /* Give back what was read but not written, if we can. */
                if (x->in_off >= 0) {
                    x->blocked = 1;
                    result = XFER_BLOCKED;
                    break;
                }
                if (x->in_regular &&
                    lseek(x->in_fd, -(off_t)(n - pos), SEEK_CUR) >= 0) {
                    x->blocked = 1;
                    result = XFER_BLOCKED;
                    break;
                }
                /* A stream cannot be un-read: wait for the output. */
                x->nowait = 0;
                int r = xfer_wait(x, 0, 1);
                x->nowait = 1;
                if (r != 0) {
                    result = r;
                    break;
                }
                continue;
            }
            int r = xfer_retry(x, err, 0, 1, x->out_off >= 0 ? "pwrite" : "write");
            if (r != 0) {
                result = r;
                break;
            }
        }
        if (result != 0) {
            break;
        }
    }
    free(buf);
    return result;
}

typedef int (*step_fn)(xfer *);
static const step_fn steps[M_COUNT] = {
    step_reflink, step_copy_file_range, step_sendfile, step_splice,
    step_readwrite,
};

/* Errors that mean "not for this pair of files", not "the transfer failed". */
static int
is_fallback_errno(int err)
{
    return err == EXDEV || err == EOPNOTSUPP || err == ENOTSUP ||
           err == EINVAL || err == ENOSYS || err == ENOTTY;
}

/* An immediate end of input is only believed where the size agrees: procfs
 * files say 0 bytes and sysfs files 4096, and copy_file_range and sendfile
 * answer 0 on them at once. A non-empty regular file read at or past its
 * end is really at its end. */
static int
zero_is_suspect(const xfer *x)
{
    if (x->in_regular && x->in_size > 0 && x->start_off >= x->in_size) {
        return 0;
    }
    return 1;
}

/* Run the chain. Returns 0, XFER_BLOCKED or -errno; *used is the method
 * that ran last. */
static int
xfer_run(xfer *x, const xfer_method *chain, int nchain, xfer_method *used)
{
    int r = 0;
    for (int i = 0; i < nchain; i++) {
        xfer_method m = chain[i];
        int last = (i == nchain - 1);
        x->step_done = 0;
        x->eof = 0;
        *used = m;
        r = steps[m](x);
        if (last || x->pyerr || x->done > 0) {
            break;
        }
        if (r < 0 && is_fallback_errno(-r)) {
            continue;
        }
        if (r == 0 && x->eof && x->step_done == 0 &&
            (m == M_COPY_FILE_RANGE || m == M_SENDFILE) && zero_is_suspect(x)) {
            continue;
        }
        break;
    }
    /* Nothing to move (an empty file, an offset past the end): every
     * fallback confirmed it; name the first method, the one that would
     * have moved the bytes, rather than whichever confirmed last. */
    if (r == 0 && x->done == 0) {
        *used = chain[0];
    }
    return r;
}

/* ------------------------------------------------------------------ */
/* SIGPIPE: Python ignores it, so a closed peer gives EPIPE. A process that
 * restored the default (signal.signal(SIGPIPE, SIG_DFL), or an embedding
 * application) would be killed instead. While the default is in place we
 * block it in this thread and discard the one our own write raised. */

typedef struct {
    int active;
    int was_pending;
    sigset_t old_mask;
} sigpipe_guard;

static void
sigpipe_guard_enter(sigpipe_guard *g)
{
    struct sigaction sa;
    g->active = 0;
    if (sigaction(SIGPIPE, NULL, &sa) < 0 || sa.sa_handler != SIG_DFL ||
        (sa.sa_flags & SA_SIGINFO)) {
        return;
    }
    sigset_t block, pending;
    sigemptyset(&block);
    sigaddset(&block, SIGPIPE);
    if (pthread_sigmask(SIG_BLOCK, &block, &g->old_mask) != 0) {
        return;
    }
    g->active = 1;
    g->was_pending = sigpending(&pending) == 0 && sigismember(&pending, SIGPIPE);
}

static void
sigpipe_guard_exit(sigpipe_guard *g, int got_epipe)
{
    if (!g->active) {
        return;
    }
    if (got_epipe && !g->was_pending) {
        sigset_t pending, set;
        if (sigpending(&pending) == 0 && sigismember(&pending, SIGPIPE)) {
            struct timespec zero = {0, 0};
            sigemptyset(&set);
            sigaddset(&set, SIGPIPE);
            while (sigtimedwait(&set, NULL, &zero) < 0 && errno == EINTR) {
            }
        }
    }
    pthread_sigmask(SIG_SETMASK, &g->old_mask, NULL);
}

/* ------------------------------------------------------------------ */
/* Python-facing functions */

/* The deadline for a timeout in seconds: a negative one (the Python layer's
 * None) or +inf means none (-1). NaN is refused, and so is a finite value
 * too large for a CLOCK_MONOTONIC nanosecond count ((int64_t)(t * 1e9) is
 * undefined behaviour past INT64_MAX), naming the argument. 0 or -1. */
static int
deadline_of(double timeout, int64_t *deadline_ns)
{
    if (isnan(timeout)) {
        PyErr_SetString(PyExc_ValueError, "timeout must not be NaN, got timeout=nan");
        return -1;
    }
    if (timeout < 0 || isinf(timeout)) {
        *deadline_ns = -1;
        return 0;
    }
    int64_t now = now_ns();
    if (timeout >= (double)(INT64_MAX - now) / 1e9) {
        PyObject *t = PyFloat_FromDouble(timeout);
        if (t != NULL) {
            PyErr_Format(PyExc_OverflowError,
                         "timeout too large: timeout=%R seconds (None or inf for "
                         "no limit)", t);
            Py_DECREF(t);
        }
        return -1;
    }
    *deadline_ns = now + (int64_t)(timeout * 1e9);
    return 0;
}

/* Raise the OSError for err and record how far the transfer got on it, so
 * the caller can resume (or re-sync a file object's position). */
static PyObject *
raise_with_progress(int err, const char *syscall, PyObject *filename,
                    int64_t done)
{
    fastio_oserror(err, syscall, filename);
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (value != NULL) {
        PyObject *n = PyLong_FromLongLong(done);
        if (n == NULL || PyObject_SetAttrString(value, "bytes_sent", n) < 0) {
            PyErr_Clear();  /* the original error matters more */
        }
        Py_XDECREF(n);
    }
    PyErr_Restore(type, value, tb);
    return NULL;
}

static int
parse_methods(PyObject *seq, xfer_method *chain, int *nchain)
{
    PyObject *fast = PySequence_Fast(seq, "methods must be a sequence of str");
    if (fast == NULL) {
        return -1;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
    if (n < 1 || n > M_COUNT) {
        PyErr_Format(PyExc_ValueError, "methods must name 1 to %d methods, not %zd",
                     (int)M_COUNT, n);
        Py_DECREF(fast);
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(fast, i);
        const char *s = PyUnicode_Check(item) ? PyUnicode_AsUTF8(item) : NULL;
        int found = -1;
        for (int k = 0; s != NULL && k < M_COUNT; k++) {
            if (strcmp(s, method_names[k]) == 0) {
                found = k;
            }
        }
        if (found < 0) {
            if (!PyErr_Occurred()) {
                PyErr_Format(PyExc_ValueError,
                             "unknown transfer method %R: expected one of "
                             "'reflink', 'copy_file_range', 'sendfile', "
                             "'splice', 'readwrite'", item);
            }
            Py_DECREF(fast);
            return -1;
        }
        chain[i] = (xfer_method)found;
    }
    *nchain = (int)n;
    Py_DECREF(fast);
    return 0;
}

/* fstat both ends; the input may not be a directory. */
static int
xfer_classify(xfer *x, PyObject *in_name, PyObject *out_name)
{
    struct stat st;
    int r;
    Py_BEGIN_ALLOW_THREADS
    r = fstat(x->in_fd, &st);
    Py_END_ALLOW_THREADS
    if (r < 0) {
        fastio_oserror_errno("fstat", in_name);
        return -1;
    }
    if (S_ISDIR(st.st_mode)) {
        fastio_oserror(-EISDIR, "read", in_name);
        return -1;
    }
    x->in_pipe = S_ISFIFO(st.st_mode);
    x->any_socket = S_ISSOCK(st.st_mode);
    x->in_stream = x->in_pipe || S_ISSOCK(st.st_mode) || S_ISCHR(st.st_mode);
    x->in_regular = S_ISREG(st.st_mode);
    x->in_size = (int64_t)st.st_size;
    dev_t in_dev = st.st_dev;
    ino_t in_ino = st.st_ino;
    Py_BEGIN_ALLOW_THREADS
    r = fstat(x->out_fd, &st);
    Py_END_ALLOW_THREADS
    if (r < 0) {
        fastio_oserror_errno("fstat", out_name);
        return -1;
    }
    if (S_ISDIR(st.st_mode)) {
        fastio_oserror(-EISDIR, "write", out_name);
        return -1;
    }
    x->out_pipe = S_ISFIFO(st.st_mode);
    x->any_socket |= S_ISSOCK(st.st_mode);
    x->out_stream = x->out_pipe || S_ISSOCK(st.st_mode) || S_ISCHR(st.st_mode);
    /* One regular file as both ends (cat f >> f): "to the end" would chase
     * an end that every write moves on, filling the disk. It means the end
     * as it is now. */
    if (x->count == -1 && x->in_regular && S_ISREG(st.st_mode) &&
        st.st_dev == in_dev && st.st_ino == in_ino) {
        int64_t start = x->in_off;
        if (start < 0) {
            Py_BEGIN_ALLOW_THREADS
            start = (int64_t)lseek(x->in_fd, 0, SEEK_CUR);
            Py_END_ALLOW_THREADS
            if (start < 0) {
                fastio_oserror_errno("lseek", in_name);
                return -1;
            }
        }
        x->count = start < x->in_size ? x->in_size - start : 0;
    }
    /* A stream has no offset: read it from where it stands. */
    if (x->in_stream) {
        x->in_off = -1;
    }
    if (x->out_stream) {
        x->out_off = -1;
    }
    return 0;
}

PyDoc_STRVAR(transfer_doc,
"_transfer(out_fd, in_fd, count, in_offset, out_offset, methods, timeout,\n"
"          nowait, in_name=None, out_name=None, /)\n"
"--\n\n"
"Move count bytes (-1: to the end of the input) from in_fd to out_fd, in\n"
"the kernel where it can, trying each of `methods` in turn ('reflink',\n"
"'copy_file_range', 'sendfile', 'splice', 'readwrite'). An offset of -1\n"
"uses and advances the descriptor's own position; a given offset leaves it\n"
"alone. timeout (seconds, -1 for none) bounds the whole call when a\n"
"non-blocking descriptor must be waited on; nowait returns instead of\n"
"waiting. Returns (bytes, method, blocked). The GIL is released throughout.\n"
"On error the exception has a bytes_sent attribute. Private: use\n"
"fastio.sendfile, fastio.copy_file_range, fastio.splice, fastio.copyfile.");

static PyObject *
fastio_transfer_impl(PyObject *module, PyObject *args)
{
    int out_fd, in_fd, nowait;
    long long count, in_off, out_off;
    double timeout;
    PyObject *methods, *in_name = Py_None, *out_name = Py_None;
    if (!PyArg_ParseTuple(args, "iiLLLOdp|OO:_transfer", &out_fd, &in_fd,
                          &count, &in_off, &out_off, &methods, &timeout,
                          &nowait, &in_name, &out_name)) {
        return NULL;
    }
    if (count < -1 || in_off < -1 || out_off < -1) {
        PyErr_Format(PyExc_ValueError,
                     "count and offsets must be >= 0 or -1, not %lld, %lld, %lld",
                     count, in_off, out_off);
        return NULL;
    }
    if (in_fd < 0 || out_fd < 0) {
        return fastio_oserror(-EBADF, "fstat", in_fd < 0 ? in_name : out_name);
    }
    xfer_method chain[M_COUNT];
    int nchain;
    if (parse_methods(methods, chain, &nchain) < 0) {
        return NULL;
    }

    xfer x;
    memset(&x, 0, sizeof x);
    x.in_fd = in_fd;
    x.out_fd = out_fd;
    x.count = count;
    x.in_off = in_off;
    x.out_off = out_off;
    x.nowait = nowait;
    if (xfer_classify(&x, in_name, out_name) < 0) {
        return NULL;
    }
    x.start_off = x.in_off;
    if (deadline_of(timeout, &x.deadline_ns) < 0) {
        return NULL;
    }

    sigpipe_guard guard;
    xfer_method used = chain[0];
    sigpipe_guard_enter(&guard);
    x.ts = PyEval_SaveThread();
    int r = xfer_run(&x, chain, nchain, &used);
    PyEval_RestoreThread(x.ts);
    sigpipe_guard_exit(&guard, r == -EPIPE);

    if (x.pyerr) {
        /* A signal handler raised: keep its exception, note the progress. */
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        PyErr_NormalizeException(&type, &value, &tb);
        if (value != NULL) {
            PyObject *n = PyLong_FromLongLong(x.done);
            if (n == NULL || PyObject_SetAttrString(value, "bytes_sent", n) < 0) {
                PyErr_Clear();
            }
            Py_XDECREF(n);
        }
        PyErr_Restore(type, value, tb);
        return NULL;
    }
    if (r < 0) {
        PyObject *name = Py_None;
        if (r == -EISDIR || (x.syscall && (strcmp(x.syscall, "read") == 0 ||
                                           strcmp(x.syscall, "pread") == 0))) {
            name = in_name;
        }
        else if (x.syscall && (strcmp(x.syscall, "write") == 0 ||
                               strcmp(x.syscall, "pwrite") == 0)) {
            name = out_name;
        }
        return raise_with_progress(r, x.syscall, name, x.done);
    }
    return Py_BuildValue("(Lsi)", (long long)x.done, method_names[used],
                         x.blocked);
}

PyDoc_STRVAR(tee_doc,
"_tee(fd_in, fd_out, count, timeout, /)\n"
"--\n\n"
"tee(2): duplicate up to count bytes from pipe fd_in to pipe fd_out without\n"
"consuming them. One call (the input is not consumed, so a loop would\n"
"duplicate the same bytes again), with EINTR retried and EAGAIN waited on\n"
"within timeout (seconds, -1 for none). Returns the bytes duplicated,\n"
"0 when fd_in's writers have all closed it and it is empty.\n"
"Private: use fastio.tee.");

static PyObject *
fastio_tee_impl(PyObject *module, PyObject *args)
{
    int in_fd, out_fd;
    long long count;
    double timeout;
    if (!PyArg_ParseTuple(args, "iiLd:_tee", &in_fd, &out_fd, &count, &timeout)) {
        return NULL;
    }
    if (count < 0) {
        PyErr_Format(PyExc_ValueError, "count must be >= 0, not %lld", count);
        return NULL;
    }
    if (in_fd < 0 || out_fd < 0) {
        return fastio_oserror(-EBADF, "tee", NULL);
    }
    if (count > MAX_CHUNK) {
        count = MAX_CHUNK;
    }
    xfer x;
    memset(&x, 0, sizeof x);
    x.in_fd = in_fd;
    x.out_fd = out_fd;
    x.in_stream = x.out_stream = 1;
    if (deadline_of(timeout, &x.deadline_ns) < 0) {
        return NULL;
    }
    ssize_t n = 0;
    int r = 0;
    if (count > 0) {
        x.ts = PyEval_SaveThread();
        for (;;) {
            n = tee(in_fd, out_fd, (size_t)count, 0);
            if (n >= 0) {
                break;
            }
            r = xfer_retry(&x, errno, 1, 1, "tee");
            if (r != 0) {
                break;
            }
        }
        PyEval_RestoreThread(x.ts);
    }
    if (x.pyerr) {
        return NULL;
    }
    if (r < 0) {
        return fastio_oserror(r, x.syscall, NULL);
    }
    return PyLong_FromSsize_t(n);
}

PyDoc_STRVAR(timeout_arg_doc,
"_timeout_arg(timeout, name, /)\n--\n\n"
"A timeout argument in seconds checked as every fastio call checks one\n"
"(fastio_parse_timeout: None or inf -> -1.0, no limit; a number in\n"
"0 .. 1e9; NaN or negative -> ValueError, past 1e9 -> OverflowError, a\n"
"non-number -> TypeError, each naming the argument). For the Python layers\n"
"that pass a timeout on as a float (-1.0 for none).");

static PyObject *
timeout_arg(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyUnicode_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "_timeout_arg(timeout, name) takes an object and a str");
        return NULL;
    }
    const char *name = PyUnicode_AsUTF8(args[1]);
    double t;
    if (name == NULL || fastio_parse_timeout(args[0], name, &t) < 0) {
        return NULL;
    }
    return PyFloat_FromDouble(t);
}

PyMethodDef fastio_transfer_methods[] = {
    {"_transfer", (PyCFunction)fastio_transfer_impl, METH_VARARGS, transfer_doc},
    {"_tee", (PyCFunction)fastio_tee_impl, METH_VARARGS, tee_doc},
    {"_timeout_arg", (PyCFunction)(void (*)(void))timeout_arg, METH_FASTCALL, timeout_arg_doc},
    {NULL, NULL, 0, NULL},
};
