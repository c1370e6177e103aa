/* engines.c: a standalone C harness for the aio backends (csrc/aio_uring.c,
 * csrc/aio_linux.c) through their ops table (csrc/aio.h), without Python.
 *
 *   engines probe BACKEND
 *   engines test BACKEND DIR [DIRECT_DIR]
 *       one line per check: "ok NAME", "skip NAME: why" or "FAIL NAME: why";
 *       exit 1 if a check failed, 77 if the backend's probe fails.
 *   engines probe-filtered BACKEND ERRNO
 *       probe under a seccomp filter that fails the backend's setup call
 *       (io_uring_setup / io_setup) with ERRNO: prints the probe's reason.
 *   engines bench METHOD FILE DEPTH SECONDS [direct] [fixed]
 *       random 4 KiB reads over FILE for SECONDS; prints "iops N".
 *       METHOD: pread (a pread loop, depth ignored), io_uring, linux_aio.
 *
 * Build (tests/test_aio_backends.py and benchmarks/bench_engines.py do it):
 *   gcc -std=c11 -O2 -D_GNU_SOURCE $(python3-config --includes) -Icsrc \
 *       tests/c/engines.c csrc/aio_uring.c csrc/aio_linux.c -o engines
 * The backends include fastio.h (hence Python's headers) but call nothing
 * from libpython, so the binary links against libc only.
 */
#include "aio.h"

#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define BS 4096
#define FILE_SIZE (4u << 20)

static const fastio_aio_ops *ops;
static int failures;

static void
report(const char *status, const char *name, const char *fmt, ...)
{
    printf("%s %s", status, name);
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        printf(": ");
        vprintf(fmt, ap);
        va_end(ap);
    }
    printf("\n");
    fflush(stdout);
    if (!strcmp(status, "FAIL"))
        failures++;
}

static uint64_t rng = 88172645463325252ull;
static uint64_t
next_rand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static const fastio_aio_ops *
find_backend(const char *name)
{
    if (!strcmp(name, "io_uring"))
        return &fastio_aio_uring_ops;
    if (!strcmp(name, "linux_aio"))
        return &fastio_aio_linux_ops;
    return NULL;
}

static fastio_aio_req
mkreq(uint64_t ud, int op, int fd, void *buf, size_t len, int64_t off)
{
    fastio_aio_req r;
    memset(&r, 0, sizeof r);
    r.user_data = ud;
    r.opcode = (uint8_t)op;
    r.fd = fd;
    r.buf = buf;
    r.len = len;
    r.offset = off;
    r.fixed_file = -1;
    r.fixed_buf = -1;
    return r;
}

/* Submit all n requests (user_data = index), reaping whenever the backend
 * takes fewer, until every completion is in res[]. Returns 0 or -errno. */
static int
run_all(void *ctx, fastio_aio_req *reqs, unsigned n, int64_t *res, unsigned *partial_submits)
{
    unsigned sent = 0, done = 0;
    fastio_aio_cqe cq[64];
    while (done < n) {
        if (sent < n) {
            int r = ops->submit(ctx, reqs + sent, n - sent);
            if (r < 0)
                return r;
            if ((unsigned)r < n - sent && partial_submits)
                (*partial_submits)++;
            sent += (unsigned)r;
        }
        if (done == sent)
            continue;
        int got = ops->reap(ctx, cq, 64, 1, NULL);
        if (got == -EINTR)
            continue;
        if (got < 0)
            return got;
        for (int i = 0; i < got; i++) {
            if (cq[i].user_data >= n)
                return -ERANGE;
            res[cq[i].user_data] = cq[i].res;
        }
        done += (unsigned)got;
    }
    return 0;
}

static int
open_ctx(void **ctx, unsigned depth, int sqpoll, unsigned *features)
{
    fastio_aio_options o;
    memset(&o, 0, sizeof o);
    o.depth = depth;
    o.sqpoll = sqpoll;
    o.sqpoll_idle_ms = 50;
    return ops->open(ctx, &o, features);
}

/* ------------------------------------------------------------------ */
/* Checks */

static unsigned char *data; /* the test file's contents */

static int
make_file(const char *dir, const char *name, char *path, size_t pathlen)
{
    snprintf(path, pathlen, "%s/%s", dir, name);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (fd < 0)
        return -1;
    if (write(fd, data, FILE_SIZE) != (ssize_t)FILE_SIZE) {
        close(fd);
        return -1;
    }
    return fd;
}

static void
check_reads(const char *name, int fd, unsigned depth, int sqpoll, unsigned count)
{
    void *ctx;
    unsigned feat;
    int err = open_ctx(&ctx, depth, sqpoll, &feat);
    if (err < 0) {
        if (sqpoll)
            report("skip", name, "open with SQPOLL: %s", strerror(-err));
        else
            report("FAIL", name, "open: %s", strerror(-err));
        return;
    }
    fastio_aio_req *reqs = calloc(count, sizeof *reqs);
    int64_t *res = calloc(count, sizeof *res);
    unsigned char *bufs = malloc((size_t)count * BS);
    for (unsigned i = 0; i < count; i++) {
        /* Unaligned offsets too: buffered I/O takes any. */
        int64_t off = (int64_t)(next_rand() % (FILE_SIZE - BS));
        reqs[i] = mkreq(i, FASTIO_OP_READ, fd, bufs + (size_t)i * BS, BS, off);
    }
    err = run_all(ctx, reqs, count, res, NULL);
    unsigned bad = 0;
    for (unsigned i = 0; !err && i < count; i++) {
        if (res[i] != BS || memcmp(bufs + (size_t)i * BS, data + reqs[i].offset, BS))
            bad++;
    }
    ops->close(ctx);
    if (err)
        report("FAIL", name, "run: %s", strerror(-err));
    else if (bad)
        report("FAIL", name, "%u of %u reads differ from pread", bad, count);
    else
        report("ok", name, NULL);
    free(reqs);
    free(res);
    free(bufs);
}

static void
check_writes_fsync(const char *dir)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/written", dir);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    void *ctx;
    unsigned feat;
    if (fd < 0 || open_ctx(&ctx, 16, 0, &feat) < 0) {
        report("FAIL", "writes", "setup");
        return;
    }
    enum { N = 64 };
    fastio_aio_req reqs[N];
    int64_t res[N];
    unsigned char *src = malloc((size_t)N * BS);
    for (unsigned i = 0; i < N; i++) {
        memset(src + (size_t)i * BS, (int)(i * 7 + 1), BS);
        /* Block i goes to slot (i*37) % N: writes out of order. */
        reqs[i] = mkreq(i, FASTIO_OP_WRITE, fd, src + (size_t)i * BS, BS,
                        (int64_t)((i * 37) % N) * BS);
    }
    int err = run_all(ctx, reqs, N, res, NULL);
    unsigned bad = 0;
    for (unsigned i = 0; !err && i < N; i++)
        bad += res[i] != BS;
    fastio_aio_req fs = mkreq(0, FASTIO_OP_FSYNC, fd, NULL, 0, 0);
    int64_t fres = -1;
    if (!err)
        err = run_all(ctx, &fs, 1, &fres, NULL);
    ops->close(ctx);
    unsigned char blk[BS];
    for (unsigned i = 0; !err && !bad && i < N; i++) {
        if (pread(fd, blk, BS, (off_t)((i * 37) % N) * BS) != BS ||
            memcmp(blk, src + (size_t)i * BS, BS))
            bad++;
    }
    close(fd);
    unlink(path);
    free(src);
    if (err)
        report("FAIL", "writes", "%s", strerror(-err));
    else if (bad)
        report("FAIL", "writes", "%u blocks wrong", bad);
    else
        report("ok", "writes", NULL);
    if (!err && fres != 0)
        report("FAIL", "fsync", "res %lld", (long long)fres);
    else if (!err)
        report("ok", "fsync", NULL);
}

static void
check_errors(int fd)
{
    void *ctx;
    unsigned feat;
    if (open_ctx(&ctx, 8, 0, &feat) < 0) {
        report("FAIL", "errors", "open");
        return;
    }
    int badfd = open("/dev/null", O_RDONLY);
    close(badfd); /* a descriptor number that is surely closed */
    unsigned char b[4][BS];
    fastio_aio_req reqs[4] = {
        mkreq(0, FASTIO_OP_READ, badfd, b[0], BS, 0),
        mkreq(1, FASTIO_OP_READ, fd, b[1], BS, FILE_SIZE + 8192), /* past EOF */
        mkreq(2, FASTIO_OP_READ, fd, b[2], BS, FILE_SIZE - 100),  /* short */
        mkreq(3, FASTIO_OP_READ, fd, b[3], BS, 0),                /* fine */
    };
    int64_t res[4] = {1, 1, 1, 1};
    int err = run_all(ctx, reqs, 4, res, NULL);
    ops->close(ctx);
    if (err)
        report("FAIL", "errors", "run: %s", strerror(-err));
    else if (res[0] != -EBADF)
        report("FAIL", "errors", "bad fd gave %lld, not -EBADF", (long long)res[0]);
    else if (res[1] != 0)
        report("FAIL", "errors", "read past EOF gave %lld, not 0", (long long)res[1]);
    else if (res[2] != 100 || memcmp(b[2], data + FILE_SIZE - 100, 100))
        report("FAIL", "errors", "short read gave %lld, not 100", (long long)res[2]);
    else if (res[3] != BS || memcmp(b[3], data, BS))
        report("FAIL", "errors", "good read after errors gave %lld", (long long)res[3]);
    else
        report("ok", "errors", NULL);
}

static void
check_depth_full(int fd)
{
    enum { DEPTH = 8, N = 200 };
    void *ctx;
    unsigned feat;
    if (open_ctx(&ctx, DEPTH, 0, &feat) < 0) {
        report("FAIL", "depth_full", "open");
        return;
    }
    fastio_aio_req reqs[N];
    int64_t res[N];
    unsigned char *bufs = malloc((size_t)N * BS);
    for (unsigned i = 0; i < N; i++)
        reqs[i] = mkreq(i, FASTIO_OP_READ, fd, bufs + (size_t)i * BS, BS, (int64_t)i * BS);
    /* The first submit must stop at depth. */
    int first = ops->submit(ctx, reqs, N);
    int over = ops->submit(ctx, reqs + (first > 0 ? first : 0), N);
    fastio_aio_cqe cq[DEPTH];
    unsigned done = 0;
    while (first > 0 && done < (unsigned)first) {
        int g = ops->reap(ctx, cq, DEPTH, 1, NULL);
        if (g < 0 && g != -EINTR)
            break;
        if (g > 0)
            done += (unsigned)g;
    }
    unsigned partial = 0;
    int err = run_all(ctx, reqs, N, res, &partial);
    unsigned bad = 0;
    for (unsigned i = 0; !err && i < N; i++)
        bad += res[i] != BS || memcmp(bufs + (size_t)i * BS, data + (size_t)i * BS, BS);
    ops->close(ctx);
    free(bufs);
    if (first != DEPTH || over != 0)
        report("FAIL", "depth_full", "submit of %d took %d, then %d at full depth", N, first,
               over);
    else if (err || bad || partial == 0)
        report("FAIL", "depth_full", "err %d, %u bad, %u partial submits", err, bad, partial);
    else
        report("ok", "depth_full", NULL);
}

static void
check_timeout(int fd)
{
    void *ctx;
    unsigned feat;
    if (open_ctx(&ctx, 4, 0, &feat) < 0) {
        report("FAIL", "reap_timeout", "open");
        return;
    }
    fastio_aio_cqe cq[4];
    struct timespec zero = {0, 0}, ten_ms = {0, 10000000};
    int a = ops->reap(ctx, cq, 4, 0, &zero);
    int b = ops->reap(ctx, cq, 4, 1, &ten_ms); /* nothing in flight: no wait */
    unsigned char buf[BS];
    fastio_aio_req r = mkreq(5, FASTIO_OP_READ, fd, buf, BS, 0);
    int s = ops->submit(ctx, &r, 1);
    int c = 0;
    for (int tries = 0; c == 0 && tries < 1000; tries++)
        c = ops->reap(ctx, cq, 4, 1, &ten_ms);
    ops->close(ctx);
    if (a != 0 || b != 0 || s != 1 || c != 1 || cq[0].user_data != 5 || cq[0].res != BS)
        report("FAIL", "reap_timeout", "a=%d b=%d s=%d c=%d", a, b, s, c);
    else
        report("ok", "reap_timeout", NULL);
}

static void
check_cancel(int fd, const char *name, int close_in_flight)
{
    enum { DEPTH = 32 };
    void *ctx;
    unsigned feat;
    if (open_ctx(&ctx, DEPTH, 0, &feat) < 0) {
        report("FAIL", name, "open");
        return;
    }
    /* A read from a pipe nobody writes never completes by itself: only the
     * cancel ends it (io_uring; linux_aio cannot read pipes). */
    int p[2] = {-1, -1};
    int pipe_ok = !strcmp(ops->name, "io_uring") && pipe(p) == 0;
    fastio_aio_req reqs[DEPTH];
    unsigned char *bufs = malloc((size_t)DEPTH * BS);
    for (unsigned i = 0; i < DEPTH; i++) {
        int use_pipe = pipe_ok && i % 4 == 0;
        reqs[i] = mkreq(i, FASTIO_OP_READ, use_pipe ? p[0] : fd, bufs + (size_t)i * BS, BS,
                        use_pipe ? -1 : (int64_t)(next_rand() % (FILE_SIZE / BS)) * BS);
    }
    int s = ops->submit(ctx, reqs, DEPTH);
    int cerr = ops->cancel_all(ctx);
    if (close_in_flight) {
        /* close() with requests in flight must cancel and wait by itself. */
        ops->close(ctx);
        if (pipe_ok) {
            close(p[0]);
            close(p[1]);
        }
        free(bufs);
        report(s == DEPTH ? "ok" : "FAIL", name, s == DEPTH ? NULL : "submit %d", s);
        return;
    }
    unsigned done = 0, cancelled = 0, wrong = 0;
    fastio_aio_cqe cq[DEPTH];
    struct timespec sec = {5, 0};
    while (s > 0 && done < (unsigned)s) {
        int g = ops->reap(ctx, cq, DEPTH, 1, &sec);
        if (g == -EINTR)
            continue;
        if (g <= 0)
            break;
        for (int i = 0; i < g; i++) {
            int64_t rv = cq[i].res;
            if (rv == -ECANCELED || rv == -EINTR)
                cancelled++;
            else if (rv != BS)
                wrong++;
        }
        done += (unsigned)g;
    }
    ops->close(ctx);
    if (pipe_ok) {
        close(p[0]);
        close(p[1]);
    }
    free(bufs);
    if (s != DEPTH || cerr || done != (unsigned)s || wrong ||
        (pipe_ok && cancelled < DEPTH / 4))
        report("FAIL", name, "submitted %d, cancel %d, %u completions, %u cancelled, %u wrong",
               s, cerr, done, cancelled, wrong);
    else
        report("ok", name, NULL);
}

static void
check_registered(int fd)
{
    if (!ops->register_files) {
        report("skip", "registered", "%s has no registered files", ops->name);
        return;
    }
    enum { NB = 8, N = 256 };
    void *ctx;
    unsigned feat;
    if (open_ctx(&ctx, 16, 0, &feat) < 0) {
        report("FAIL", "registered", "open");
        return;
    }
    unsigned char *mem;
    if (posix_memalign((void **)&mem, BS, (size_t)NB * BS))
        return;
    struct iovec iov[NB];
    for (unsigned i = 0; i < NB; i++) {
        iov[i].iov_base = mem + (size_t)i * BS;
        iov[i].iov_len = BS;
    }
    int e1 = ops->register_files(ctx, &fd, 1);
    int e2 = ops->register_buffers(ctx, iov, NB);
    unsigned bad = 0, ran = 0;
    fastio_aio_cqe cq[NB];
    while (!e1 && !e2 && ran < N) {
        /* NB at a time: a fixed buffer is reused after its completion. */
        fastio_aio_req reqs[NB];
        for (unsigned i = 0; i < NB; i++) {
            reqs[i] = mkreq(i, FASTIO_OP_READ, -1, iov[i].iov_base, BS,
                            (int64_t)(next_rand() % (FILE_SIZE / BS)) * BS);
            reqs[i].fixed_file = 0;
            reqs[i].fixed_buf = (int)i;
        }
        int64_t res[NB];
        int err = run_all(ctx, reqs, NB, res, NULL);
        if (err) {
            e1 = err;
            break;
        }
        (void)cq;
        for (unsigned i = 0; i < NB; i++)
            bad += res[i] != BS || memcmp(iov[i].iov_base, data + reqs[i].offset, BS);
        ran += NB;
    }
    int u1 = ops->register_files(ctx, NULL, 0);
    int u2 = ops->register_buffers(ctx, NULL, 0);
    /* Plain requests still work after unregistering. */
    fastio_aio_req r = mkreq(0, FASTIO_OP_READ, fd, mem, BS, BS);
    int64_t res1 = -1;
    int e3 = run_all(ctx, &r, 1, &res1, NULL);
    ops->close(ctx);
    int ok = !e1 && !e2 && !bad && !u1 && !u2 && !e3 && res1 == BS && !memcmp(mem, data + BS, BS);
    free(mem);
    if (ok)
        report("ok", "registered", NULL);
    else
        report("FAIL", "registered", "reg %d/%d, %u bad, unreg %d/%d, after %d/%lld", e1, e2,
               bad, u1, u2, e3, (long long)res1);
}

static void
check_eventfd(int fd)
{
    void *ctx;
    unsigned feat;
    int efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (efd < 0 || open_ctx(&ctx, 8, 0, &feat) < 0) {
        report("FAIL", "eventfd", "setup");
        return;
    }
    int e = ops->set_eventfd(ctx, efd);
    enum { N = 6 };
    fastio_aio_req reqs[N];
    int64_t res[N];
    unsigned char bufs[N][BS];
    for (unsigned i = 0; i < N; i++)
        reqs[i] = mkreq(i, FASTIO_OP_READ, fd, bufs[i], BS, (int64_t)i * BS);
    /* One request refused at submit (bad fd) signals as well. */
    reqs[N - 1].fd = 100000;
    int err = run_all(ctx, reqs, N, res, NULL);
    uint64_t count = 0;
    ssize_t rd = read(efd, &count, sizeof count);
    int u = ops->set_eventfd(ctx, -1);
    ops->close(ctx);
    close(efd);
    if (e || err || rd != 8 || count < 1 || u || res[N - 1] != -EBADF)
        report("FAIL", "eventfd", "set %d, run %d, read %zd, count %llu, unset %d", e, err, rd,
               (unsigned long long)count, u);
    else
        report("ok", "eventfd", NULL);
}

static void
check_direct(const char *dir)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/fastio-engines-direct.%d", dir, (int)getpid());
    int wfd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (wfd < 0 || write(wfd, data, FILE_SIZE) != (ssize_t)FILE_SIZE || fsync(wfd)) {
        report("skip", "direct", "cannot write %s", path);
        if (wfd >= 0) {
            close(wfd);
            unlink(path);
        }
        return;
    }
    close(wfd);
    int fd = open(path, O_RDONLY | O_DIRECT);
    if (fd < 0) {
        report("skip", "direct", "O_DIRECT on %s: %s", dir, strerror(errno));
        unlink(path);
        return;
    }
    enum { N = 256, DEPTH = 32 };
    void *ctx;
    unsigned feat;
    if (open_ctx(&ctx, DEPTH, 0, &feat) < 0) {
        report("FAIL", "direct", "open");
        close(fd);
        unlink(path);
        return;
    }
    unsigned char *bufs;
    if (posix_memalign((void **)&bufs, BS, (size_t)N * BS))
        return;
    fastio_aio_req reqs[N + 1];
    int64_t res[N + 1];
    for (unsigned i = 0; i < N; i++)
        reqs[i] = mkreq(i, FASTIO_OP_READ, fd, bufs + (size_t)i * BS, BS,
                        (int64_t)(next_rand() % (FILE_SIZE / BS)) * BS);
    /* A misaligned O_DIRECT read: -EINVAL, as a completion. */
    reqs[N] = mkreq(N, FASTIO_OP_READ, fd, bufs + 1, BS, 0);
    int err = run_all(ctx, reqs, N + 1, res, NULL);
    unsigned bad = 0;
    for (unsigned i = 0; !err && i < N; i++)
        bad += res[i] != BS || memcmp(bufs + (size_t)i * BS, data + reqs[i].offset, BS);
    ops->close(ctx);
    close(fd);
    unlink(path);
    free(bufs);
    if (err || bad || res[N] != -EINVAL)
        report("FAIL", "direct", "err %d, %u bad, misaligned gave %lld", err, bad,
               (long long)res[N]);
    else
        report("ok", "direct", NULL);
}

struct thread_arg {
    void *ctx;
    int fd;
    int ok;
};

static void *
other_thread(void *p)
{
    struct thread_arg *a = p;
    unsigned char buf[BS];
    fastio_aio_req r = mkreq(0, FASTIO_OP_READ, a->fd, buf, BS, 3 * BS);
    int64_t res = -1;
    int err = run_all(a->ctx, &r, 1, &res, NULL);
    a->ok = !err && res == BS && !memcmp(buf, data + 3 * BS, BS);
    return NULL;
}

/* Created on one thread, used from another (the ring moves to plain mode
 * when it was single-issuer), then from the first again. */
static void
check_threads(int fd)
{
    void *ctx;
    unsigned feat;
    if (open_ctx(&ctx, 4, 0, &feat) < 0) {
        report("FAIL", "other_thread", "open");
        return;
    }
    struct thread_arg a = {ctx, fd, 0};
    pthread_t t;
    pthread_create(&t, NULL, other_thread, &a);
    pthread_join(t, NULL);
    int first = a.ok;
    a.ok = 0;
    other_thread(&a);
    ops->close(ctx);
    if (first && a.ok)
        report("ok", "other_thread", NULL);
    else
        report("FAIL", "other_thread", "other thread %d, then creator %d", first, a.ok);
}

struct busy_arg {
    void *ctx;
    int reap_rc;
};

static void *
reap_elsewhere(void *p)
{
    struct busy_arg *a = p;
    fastio_aio_cqe cq[2];
    struct timespec zero = {0, 0};
    a->reap_rc = ops->reap(a->ctx, cq, 2, 0, &zero);
    return NULL;
}

/* io_uring, single-issuer ring, a request in flight (a read from an empty
 * pipe): another thread's reap is refused with -EEXIST (only the creator
 * can run its completions); the creator then cancels and reaps it. */
static void
check_busy_other_thread(unsigned open_features)
{
    if (strcmp(ops->name, "io_uring")) {
        report("skip", "busy_other_thread", "io_uring only");
        return;
    }
    if (!(open_features & FASTIO_AIO_F_DEFER_TASKRUN)) {
        report("skip", "busy_other_thread", "no DEFER_TASKRUN ring here");
        return;
    }
    void *ctx;
    unsigned feat;
    int p[2];
    if (pipe(p) || open_ctx(&ctx, 4, 0, &feat) < 0) {
        report("FAIL", "busy_other_thread", "setup");
        return;
    }
    unsigned char buf[16];
    fastio_aio_req r = mkreq(7, FASTIO_OP_READ, p[0], buf, sizeof buf, -1);
    int s = ops->submit(ctx, &r, 1);
    struct busy_arg a = {ctx, 0};
    pthread_t t;
    pthread_create(&t, NULL, reap_elsewhere, &a);
    pthread_join(t, NULL);
    int c = ops->cancel_all(ctx);
    fastio_aio_cqe cq[2];
    int g = 0;
    while (g == 0 || g == -EINTR)
        g = ops->reap(ctx, cq, 2, 1, NULL);
    ops->close(ctx);
    close(p[0]);
    close(p[1]);
    if (s == 1 && a.reap_rc == -EEXIST && c == 0 && g == 1 && cq[0].user_data == 7 &&
        cq[0].res == -ECANCELED)
        report("ok", "busy_other_thread", NULL);
    else
        report("FAIL", "busy_other_thread", "submit %d, other reap %d, cancel %d, reap %d", s,
               a.reap_rc, c, g);
}

static void
print_features(unsigned f)
{
    static const char *names[] = {"register_files", "register_buffers", "async_buffered",
                                  "sqpoll",         "single_issuer",    "defer_taskrun",
                                  "fsync",          "eventfd"};
    printf("features");
    for (unsigned i = 0; i < 8; i++)
        if (f & (1u << i))
            printf(" %s", names[i]);
    printf("\n");
}

static int
cmd_test(const char *dir, const char *direct_dir)
{
    char why[256];
    unsigned f;
    int err = ops->probe(why, sizeof why, &f);
    if (err) {
        printf("probe-failed %s\n", why);
        return 77;
    }
    printf("probe ok\n");
    print_features(f);
    data = malloc(FILE_SIZE);
    for (size_t i = 0; i < FILE_SIZE; i += 8) {
        uint64_t v = next_rand();
        memcpy(data + i, &v, 8);
    }
    char path[4096];
    int fd = make_file(dir, "data", path, sizeof path);
    if (fd < 0) {
        printf("FAIL setup: cannot write %s\n", path);
        return 1;
    }
    void *ctx;
    unsigned of = 0;
    err = open_ctx(&ctx, 32, 0, &of);
    if (err)
        report("FAIL", "open", "%s", strerror(-err));
    else {
        print_features(of);
        ops->close(ctx);
        report("ok", "open", NULL);
    }
    check_reads("reads_depth1", fd, 1, 0, 64);
    check_reads("reads_depth32", fd, 32, 0, 2000);
    check_writes_fsync(dir);
    check_errors(fd);
    check_depth_full(fd);
    check_timeout(fd);
    check_cancel(fd, "cancel_all", 0);
    check_cancel(fd, "close_in_flight", 1);
    check_registered(fd);
    check_eventfd(fd);
    check_threads(fd);
    check_busy_other_thread(of);
    if (!strcmp(ops->name, "io_uring")) {
        if (f & FASTIO_AIO_F_SQPOLL)
            check_reads("sqpoll", fd, 32, 1, 2000);
        else
            report("skip", "sqpoll", "probe: no SQPOLL here");
    }
    check_direct(direct_dir ? direct_dir : dir);
    close(fd);
    unlink(path);
    free(data);
    return failures ? 1 : 0;
}

/* ------------------------------------------------------------------ */
/* Bench */

static double
now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int
cmd_bench(const char *method, const char *file, unsigned depth, double seconds, int direct,
          int fixed)
{
    int fd = open(file, O_RDONLY | (direct ? O_DIRECT : 0));
    if (fd < 0) {
        perror(file);
        return 2;
    }
    struct stat st;
    fstat(fd, &st);
    uint64_t nblocks = (uint64_t)st.st_size / BS;
    unsigned char *bufs;
    if (depth == 0)
        depth = 1;
    if (posix_memalign((void **)&bufs, BS, (size_t)depth * BS))
        return 2;
    memset(bufs, 0, (size_t)depth * BS);
    uint64_t ios = 0;
    double t0 = now_s(), t1 = t0;
    if (!strcmp(method, "pread")) {
        for (;;) {
            for (int i = 0; i < 256; i++) {
                if (pread(fd, bufs, BS, (off_t)(next_rand() % nblocks) * BS) != BS) {
                    perror("pread");
                    return 2;
                }
            }
            ios += 256;
            t1 = now_s();
            if (t1 - t0 >= seconds)
                break;
        }
        printf("iops %.0f\n", ios / (t1 - t0));
        return 0;
    }
    ops = find_backend(method);
    if (!ops) {
        fprintf(stderr, "unknown method %s\n", method);
        return 2;
    }
    void *ctx;
    unsigned f;
    int err = open_ctx(&ctx, depth, 0, &f);
    if (err) {
        fprintf(stderr, "open: %s\n", strerror(-err));
        return 77;
    }
    struct iovec *iov = calloc(depth, sizeof *iov);
    for (unsigned i = 0; i < depth; i++) {
        iov[i].iov_base = bufs + (size_t)i * BS;
        iov[i].iov_len = BS;
    }
    if (fixed) {
        if (!ops->register_files || ops->register_files(ctx, &fd, 1) ||
            ops->register_buffers(ctx, iov, depth)) {
            fprintf(stderr, "cannot register\n");
            return 77;
        }
    }
    /* Slot i owns buffer i; a free-slot stack refills the queue. */
    unsigned *freel = malloc(depth * sizeof *freel), nfree = depth;
    for (unsigned i = 0; i < depth; i++)
        freel[i] = i;
    fastio_aio_req *reqs = calloc(depth, sizeof *reqs);
    fastio_aio_cqe *cq = calloc(depth, sizeof *cq);
    unsigned inflight = 0;
    for (;;) {
        unsigned n = 0;
        while (nfree) {
            unsigned s = freel[--nfree];
            reqs[n] = mkreq(s, FASTIO_OP_READ, fd, iov[s].iov_base, BS,
                            (int64_t)(next_rand() % nblocks) * BS);
            if (fixed) {
                reqs[n].fixed_file = 0;
                reqs[n].fixed_buf = (int)s;
            }
            n++;
        }
        int r = n ? ops->submit(ctx, reqs, n) : 0;
        if (r < 0) {
            fprintf(stderr, "submit: %s\n", strerror(-r));
            return 2;
        }
        for (unsigned i = n; i-- > (unsigned)r;)
            freel[nfree++] = (unsigned)reqs[i].user_data;
        inflight += (unsigned)r;
        int g = ops->reap(ctx, cq, depth, 1, NULL);
        if (g < 0 && g != -EINTR) {
            fprintf(stderr, "reap: %s\n", strerror(-g));
            return 2;
        }
        for (int i = 0; i < g; i++) {
            if (cq[i].res != BS) {
                fprintf(stderr, "read: %lld\n", (long long)cq[i].res);
                return 2;
            }
            freel[nfree++] = (unsigned)cq[i].user_data;
        }
        inflight -= g > 0 ? (unsigned)g : 0;
        ios += g > 0 ? (unsigned)g : 0;
        if ((ios & 255) < (unsigned)(g > 0 ? g : 0) || g <= 0) {
            t1 = now_s();
            if (t1 - t0 >= seconds)
                break;
        }
    }
    double elapsed = t1 - t0;
    while (inflight) {
        int g = ops->reap(ctx, cq, depth, 1, NULL);
        if (g > 0)
            inflight -= (unsigned)g;
        else if (g != -EINTR)
            break;
    }
    ops->close(ctx);
    printf("iops %.0f\n", ios / elapsed);
    return 0;
}

/* A seccomp filter failing one system call with err, as a container's
 * profile does for io_uring. */
static int
filter_syscall(long nr, int err)
{
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (unsigned)nr, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ((unsigned)err & SECCOMP_RET_DATA)),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {(unsigned short)(sizeof f / sizeof f[0]), f};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))
        return -1;
    return prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog);
}

int
main(int argc, char **argv)
{
    if (argc >= 4 && !strcmp(argv[1], "probe-filtered")) {
        ops = find_backend(argv[2]);
        if (!ops)
            return 2;
        long nr = !strcmp(ops->name, "io_uring") ? __NR_io_uring_setup : __NR_io_setup;
        if (filter_syscall(nr, atoi(argv[3]))) {
            printf("no-seccomp %s\n", strerror(errno));
            return 77;
        }
        char why[256];
        unsigned f;
        int err = ops->probe(why, sizeof why, &f);
        printf("probe %d %s\n", err, why);
        return 0;
    }
    if (argc >= 3 && !strcmp(argv[1], "probe")) {
        ops = find_backend(argv[2]);
        if (!ops)
            return 2;
        char why[256];
        unsigned f;
        int err = ops->probe(why, sizeof why, &f);
        if (err) {
            printf("probe-failed %s\n", why);
            return 77;
        }
        print_features(f);
        return 0;
    }
    if (argc >= 4 && !strcmp(argv[1], "test")) {
        ops = find_backend(argv[2]);
        if (!ops)
            return 2;
        return cmd_test(argv[3], argc >= 5 ? argv[4] : NULL);
    }
    if (argc >= 6 && !strcmp(argv[1], "bench")) {
        int direct = 0, fixed = 0;
        for (int i = 6; i < argc; i++) {
            direct |= !strcmp(argv[i], "direct");
            fixed |= !strcmp(argv[i], "fixed");
        }
        return cmd_bench(argv[2], argv[3], (unsigned)atoi(argv[4]), atof(argv[5]), direct,
                         fixed);
    }
    fprintf(stderr, "usage: engines probe|test|bench ... (see the top of engines.c)\n");
    return 2;
}
