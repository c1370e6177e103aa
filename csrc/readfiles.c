/* readfiles.c: read many whole files into one contiguous buffer in one C
 * call (fastio.read_files).
 *
 * Two phases, both with the GIL released:
 *   1. stat every path (in C threads when there are many) to learn each
 *      size, refuse what is not a regular file (a FIFO or a device could
 *      block the read forever) or larger than max_size, and lay the files
 *      out one after another (Arrow-style offsets). Between the phases the
 *      GIL is taken once to call the Python layer's allocator for the total
 *      (or to check the caller's `out`).
 *   2. read each file into its place:
 *      - io_uring: per file a linked chain OPENAT (O_NONBLOCK, into a slot
 *        of the registered file table: a direct descriptor, no fd of the
 *        process) -> FADVISE (NORMAL: fails on a FIFO swapped in after the
 *        stat) -> READV (IOSQE_FIXED_FILE) -> CLOSE (the slot), up to `depth`
 *        files in flight, through aio_uring.c's ops table. The read asks for
 *        one byte more than stat said, into a scratch byte: a file that
 *        grew or shrank after the stat is reported, never half-copied
 *        silently. The open->check->read links are soft (a failed open
 *        cancels the rest: nothing to close; a failed check: the slot is
 *        closed alone) and the read->close link hard (a failed or short
 *        read still closes the slot).
 *      - threads: C worker threads open (O_NONBLOCK, so that a FIFO swapped
 *        in after the stat cannot block the open), fstat (regular, same
 *        size), pread, close. Linux AIO and POSIX aio cannot open files, so
 *        the Python layer maps them to this path (and says so).
 *   Nothing survives the call: the ring, its file table and every fd are
 *   closed on every path out, worker threads are joined.
 *
 * Ctrl-C: the calling thread runs the signal handlers every
 * RF_SIGNAL_POLL_MS (poll_signals; its waits on the ring and on the
 * workers are timed); a handler that raises stops the job, the rings
 * cancel what is in flight, and the call ends with that exception.
 *
 * Errors are per file (errno, what failed); the Python layer raises the
 * first (missing='raise': phase 1 and 2 stop starting new files after it)
 * or keeps them all (missing='skip'). A failed file's reserved bytes are
 * zero and its size is reported as 0.
 *
 * direct=True opens with O_DIRECT: every file starts on a 4096-byte
 * boundary of the output and reserves its size plus one, rounded up to
 * 4096 bytes (the read asks for all of it: a file that grew shows as a
 * longer read), so the offsets are then starts, not Arrow-style.
 */
#include "fastio.h"
#include "aio.h"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#define RF_DEPTH_MAX 4096    /* io_uring: 4 requests per file, ring <= 32768 */
#define RF_THREADS_MAX 64
#define RF_STAT_THREADS_MAX 8
#define RF_DIRECT_ALIGN 4096
#define RF_RINGS_MAX 8
#define RF_SIGNAL_POLL_MS 50 /* as rw.c's par_run */

/* What failed for a file. */
enum {
    RF_OK = 0,
    RF_E_STAT,     /* stat / fstat failed */
    RF_E_NOTREG,   /* not a regular file (directory, FIFO, device, socket) */
    RF_E_TOOBIG,   /* larger than max_size */
    RF_E_OPEN,
    RF_E_READ,
    RF_E_CLOSE,
    RF_E_CHANGED,  /* the size read differs from the size stat gave */
};

typedef struct {
    /* inputs (C copies) */
    char **paths;
    Py_ssize_t n;
    int64_t max_size;      /* -1: no limit */
    int direct;
    int stop_on_error;
    /* per file */
    int64_t *sizes;        /* stat size (-1 before) */
    int64_t *offsets;      /* n+1: where each file's reservation starts */
    int64_t *got;          /* RF_E_CHANGED: the size read; RF_E_NOTREG: st_mode */
    int *err;              /* -errno or 0 */
    uint8_t *kind;         /* RF_* */
    /* output */
    char *out;
    /* stop starting new files (stop_on_error after a failure) */
    atomic_int stop;
    /* a whole-call failure (the ring), -errno */
    int fatal;
    const char *fatal_call;
    /* Signals (Ctrl-C): the thread that holds the call, its thread state
     * while the GIL is released (NULL otherwise), when it next runs the
     * signal handlers, and whether one raised (its exception is set). */
    pthread_t caller;
    PyThreadState *ts;
    int64_t next_poll;
    atomic_int interrupted;
} rf_job;

static void
fail(rf_job *j, Py_ssize_t i, int kind, int neg_errno)
{
    j->kind[i] = (uint8_t)kind;
    j->err[i] = neg_errno;
    if (j->stop_on_error)
        atomic_store_explicit(&j->stop, 1, memory_order_relaxed);
}

static int
stopped(rf_job *j)
{
    return atomic_load_explicit(&j->stop, memory_order_relaxed);
}

static int
interrupted(rf_job *j)
{
    return atomic_load_explicit(&j->interrupted, memory_order_relaxed);
}

/* Run by every thread of the call; does something only in the caller's,
 * at most every RF_SIGNAL_POLL_MS: take the GIL only to run the signal
 * handlers (as rw.c's par_run does). One that raises (Ctrl-C) leaves its
 * exception set and stops the job: no new file starts, the io_uring rings
 * cancel what they have in flight, the threads finish their file, and the
 * call then frees everything and raises. Without this a Ctrl-C waited for
 * the whole call (minutes for a million cold files). */
static void
poll_signals(rf_job *j)
{
    /* the caller's identity first: only the caller reads or writes j->ts */
    if (!pthread_equal(pthread_self(), j->caller) || j->ts == NULL || interrupted(j))
        return;
    int64_t now = fastio_monotonic_ns();
    if (now < j->next_poll)
        return;
    j->next_poll = now + (int64_t)RF_SIGNAL_POLL_MS * 1000000;
    PyEval_RestoreThread(j->ts);
    int r = PyErr_CheckSignals();
    j->ts = PyEval_SaveThread();
    if (r < 0) {
        atomic_store(&j->interrupted, 1);
        atomic_store(&j->stop, 1);
    }
}

/* The caller waits for its worker threads with a timed wait, so that it
 * can run the signal handlers meanwhile; each worker says when it ends. */
typedef struct {
    pthread_mutex_t lock;
    pthread_cond_t done;
    int running;
} rf_waiter;

static void
waiter_init(rf_waiter *w)
{
    pthread_mutex_init(&w->lock, NULL);
    pthread_cond_init(&w->done, NULL);
    w->running = 0;
}

static void
waiter_done(rf_waiter *w)
{
    pthread_mutex_lock(&w->lock);
    w->running--;
    pthread_cond_signal(&w->done);
    pthread_mutex_unlock(&w->lock);
}

/* Wait until every worker said it ended, then join them and destroy w. */
static void
waiter_join(rf_job *j, rf_waiter *w, pthread_t *tids, unsigned started)
{
    pthread_mutex_lock(&w->lock);
    while (w->running > 0) {
        struct timespec deadline;
        fastio_realtime_after_ms(&deadline, RF_SIGNAL_POLL_MS);
        int rc = pthread_cond_timedwait(&w->done, &w->lock, &deadline);
        if (rc == ETIMEDOUT && w->running > 0) {
            pthread_mutex_unlock(&w->lock);
            poll_signals(j);
            pthread_mutex_lock(&w->lock);
        }
    }
    pthread_mutex_unlock(&w->lock);
    for (unsigned t = 0; t < started; t++)
        pthread_join(tids[t], NULL);
    pthread_cond_destroy(&w->done);
    pthread_mutex_destroy(&w->lock);
}

/* The bytes reserved for file i in the output. */
static int64_t
reserved(const rf_job *j, Py_ssize_t i)
{
    return j->offsets[i + 1] - j->offsets[i];
}

/* ================================================================== */
/* A parallel for over [0, n): the caller and nthreads-1 pthreads take
 * chunks of indices from an atomic counter. Workers run with every signal
 * blocked (signals stay with Python's threads) and are all joined before
 * it returns. A failed pthread_create only means fewer workers. */

typedef struct {
    rf_job *job;
    void (*fn)(rf_job *, Py_ssize_t);
    atomic_llong next;
    Py_ssize_t n;
    Py_ssize_t chunk;
    rf_waiter w;
} rf_pool;

static void *
pool_run(void *arg)
{
    rf_pool *p = arg;
    for (;;) {
        if (stopped(p->job))
            break;
        Py_ssize_t i = (Py_ssize_t)atomic_fetch_add_explicit(&p->next, p->chunk,
                                                             memory_order_relaxed);
        if (i >= p->n)
            break;
        Py_ssize_t end = i + p->chunk < p->n ? i + p->chunk : p->n;
        for (; i < end && !stopped(p->job); i++) {
            p->fn(p->job, i);
            poll_signals(p->job);
        }
    }
    return NULL;
}

static void *
pool_thread(void *arg)
{
    rf_pool *p = arg;
    pool_run(p);
    waiter_done(&p->w);
    return NULL;
}

static void
parallel_for(rf_job *job, void (*fn)(rf_job *, Py_ssize_t), Py_ssize_t n,
             unsigned nthreads, Py_ssize_t chunk)
{
    rf_pool p = {.job = job, .fn = fn, .n = n, .chunk = chunk};
    atomic_init(&p.next, 0);
    pthread_t tids[RF_THREADS_MAX];
    unsigned started = 0;
    if (nthreads > RF_THREADS_MAX)
        nthreads = RF_THREADS_MAX;
    waiter_init(&p.w);
    if (nthreads > 1) {
        sigset_t all, old;
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &old);
        pthread_mutex_lock(&p.w.lock);
        for (unsigned t = 1; t < nthreads; t++) {
            p.w.running++;
            if (pthread_create(&tids[started], NULL, pool_thread, &p) != 0) {
                p.w.running--;
                break;
            }
            started++;
        }
        pthread_mutex_unlock(&p.w.lock);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
    }
    pool_run(&p);
    waiter_join(job, &p.w, tids, started);
}

static unsigned
ncpu(void)
{
    long c = sysconf(_SC_NPROCESSORS_ONLN);
    return c < 1 ? 1 : (unsigned)c;
}

/* ================================================================== */
/* Phase 1: stat */

static void
stat_one(rf_job *j, Py_ssize_t i)
{
    struct stat st;
    int r;
    do {
        r = stat(j->paths[i], &st);
    } while (r < 0 && errno == EINTR);
    if (r < 0) {
        fail(j, i, RF_E_STAT, -errno);
        return;
    }
    if (!S_ISREG(st.st_mode)) {
        j->got[i] = (int64_t)st.st_mode;
        fail(j, i, RF_E_NOTREG, S_ISDIR(st.st_mode) ? -EISDIR : -EINVAL);
        return;
    }
    j->sizes[i] = (int64_t)st.st_size;
    if (j->max_size >= 0 && st.st_size > j->max_size)
        fail(j, i, RF_E_TOOBIG, -EFBIG);
}

/* Offsets from the sizes; -EOVERFLOW when the total does not fit. */
static int
layout(rf_job *j)
{
    int64_t off = 0;
    for (Py_ssize_t i = 0; i < j->n; i++) {
        j->offsets[i] = off;
        if (j->err[i] || j->sizes[i] < 0)
            continue;
        int64_t len = j->sizes[i];
        if (j->direct) {
            /* size + 1 rounded up: room for the block that shows growth
             * (checked first: a size near INT64_MAX, which tmpfs allows
             * for a sparse file, would wrap negative and pass the total) */
            if (len > (int64_t)PY_SSIZE_T_MAX - RF_DIRECT_ALIGN)
                return -EOVERFLOW;
            len = (len + RF_DIRECT_ALIGN) & ~(int64_t)(RF_DIRECT_ALIGN - 1);
        }
        if (len > (int64_t)PY_SSIZE_T_MAX - off)
            return -EOVERFLOW;
        off += len;
    }
    j->offsets[j->n] = off;
    return 0;
}

/* ================================================================== */
/* Between the phases: fault the output in, in parallel.
 *
 * Measured here (1,000 warm files of 1 MiB into fresh memory): io_uring's
 * copies into memory never touched ran at 320 files/s, with ~200 page
 * faults per file, against 4,700 files/s into memory touched before; C
 * threads faulting it during their reads 1,200. MADV_POPULATE_WRITE (5.14)
 * over the output first, split among the CPUs, pays the first touch (the
 * kernel zeroing the pages) once, in parallel, and the reads then copy into
 * mapped memory. An error only means the reads fault the pages themselves. */

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23 /* Linux 5.14; the kernel is asked at run time */
#endif
#define RF_POPULATE_CHUNK ((int64_t)8 << 20)
#define RF_POPULATE_MIN ((int64_t)1 << 20)

static void
populate_one(rf_job *j, Py_ssize_t c)
{
    int64_t total = j->offsets[j->n];
    int64_t off = (int64_t)c * RF_POPULATE_CHUNK;
    int64_t len = total - off < RF_POPULATE_CHUNK ? total - off : RF_POPULATE_CHUNK;
    char *addr;
    size_t plen;
    /* outward to whole pages: a page that holds a byte of out is mapped
     * and ours, and a populate does not change its contents */
    fastio_page_range(j->out + off, (size_t)len, 0, &addr, &plen);
    (void)fastio_sys_madvise(addr, plen, MADV_POPULATE_WRITE);
}

static void
populate_output(rf_job *j)
{
    int64_t total = j->offsets[j->n];
    if (total < RF_POPULATE_MIN || !fastio_kernel_has_madv_populate())
        return;
    Py_ssize_t chunks = (Py_ssize_t)((total + RF_POPULATE_CHUNK - 1) / RF_POPULATE_CHUNK);
    unsigned nt = ncpu();
    if (nt > RF_STAT_THREADS_MAX)
        nt = RF_STAT_THREADS_MAX;
    if ((Py_ssize_t)nt > chunks)
        nt = (unsigned)chunks;
    parallel_for(j, populate_one, chunks, nt, 1);
}

/* ================================================================== */
/* Phase 2, threads: open, fstat, pread, close per file */

static void
read_one(rf_job *j, Py_ssize_t i)
{
    if (j->err[i])
        return;
    int flags = O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK | (j->direct ? O_DIRECT : 0);
    int fd;
    do {
        fd = open(j->paths[i], flags);
    } while (fd < 0 && errno == EINTR);
    if (fd < 0) {
        fail(j, i, RF_E_OPEN, -errno);
        return;
    }
    char *dst = j->out + j->offsets[i];
    int64_t size = j->sizes[i];
    struct stat st;
    if (fstat(fd, &st) < 0) {
        fail(j, i, RF_E_STAT, -errno);
    }
    else if (!S_ISREG(st.st_mode)) {
        /* replaced by something else since phase 1 */
        j->got[i] = (int64_t)st.st_mode;
        fail(j, i, RF_E_NOTREG, S_ISDIR(st.st_mode) ? -EISDIR : -EINVAL);
    }
    else if ((int64_t)st.st_size != size) {
        j->got[i] = (int64_t)st.st_size;
        fail(j, i, RF_E_CHANGED, -EIO);
    }
    else {
        /* O_NONBLOCK has no effect on a regular file's reads. A file that
         * grows after the fstat is read as it was (its first `size`
         * bytes); with direct the read asks for the whole reservation and
         * a longer result shows growth. */
        int64_t want = j->direct ? reserved(j, i) : size, done = 0;
        while (done < want) {
            ssize_t r = pread(fd, dst + done, (size_t)(want - done), (off_t)done);
            if (r < 0) {
                if (errno == EINTR)
                    continue;
                fail(j, i, RF_E_READ, -errno);
                break;
            }
            if (r == 0)
                break;
            done += r;
            if (j->direct && (done % RF_DIRECT_ALIGN) != 0)
                break;  /* end of file inside a block */
        }
        if (!j->err[i] && done != size) {
            j->got[i] = done;
            fail(j, i, RF_E_CHANGED, -EIO);
        }
    }
    /* close(2) is not retried on EINTR: Linux frees the fd either way. */
    if (close(fd) < 0 && !j->err[i] && errno != EINTR)
        fail(j, i, RF_E_CLOSE, -errno);
}

/* ================================================================== */
/* Phase 2, io_uring: linked OPENAT -> FADVISE -> READV -> CLOSE per file */

/* Four requests per file; user_data holds the stage in its low 2 bits. */
enum { ST_OPEN = 0, ST_CHECK = 1, ST_READ = 2, ST_CLOSE = 3, ST_DONE = 4 };
#define RF_REQS 4

typedef struct {
    rf_job *j;
    const fastio_aio_ops *ops;
    void *ctx;
    unsigned depth;        /* files in flight at most (= slots) */
    uint8_t *stage;        /* next stage to submit per file */
    uint8_t *pend;         /* completions outstanding per file */
    int32_t *slot_of;
    int32_t *freeslots;
    unsigned nfree;
    struct iovec *iov;     /* two per slot */
    char *scratch;         /* one byte per slot: growth shows here */
    Py_ssize_t *deferred;  /* files whose chain the kernel took only part of */
    unsigned ndeferred;
    fastio_aio_req *reqs;  /* RF_REQS per slot */
    fastio_aio_cqe *cqes;
    unsigned inflight;
    atomic_llong *next;    /* the next file to start, shared by the rings */
    int fatal;             /* -errno: this ring failed as a whole */
    int cancelled;         /* interrupted: what was in flight is cancelled */
    rf_waiter *w;          /* the rings past the first say when they end */
} rf_uring;

/* Append the stages of file i from its current stage on, linked. */
static unsigned
chain(rf_uring *u, Py_ssize_t i, unsigned k)
{
    rf_job *j = u->j;
    int slot = u->slot_of[i];
    unsigned first = k;
    for (unsigned s = u->stage[i]; s < ST_DONE; s++) {
        fastio_aio_req *q = &u->reqs[k++];
        memset(q, 0, sizeof *q);
        q->user_data = ((uint64_t)i << 2) | s;
        q->fd = -1;
        q->fixed_file = slot;
        q->fixed_buf = -1;
        switch (s) {
        case ST_OPEN:
            q->opcode = FASTIO_OP_OPENAT;
            q->buf = j->paths[i];
            /* no O_CLOEXEC: the kernel refuses it for a direct descriptor
             * (which no exec can inherit anyway). O_NONBLOCK: a FIFO
             * swapped in after the stat opens at once instead of waiting
             * for a writer forever (ST_CHECK then refuses it). A regular
             * file's read
             * keeps blocking semantics: io_uring ignores O_NONBLOCK for
             * files that support nowait and retries in its workers
             * (measured on 6.18: cold files, buffered and O_DIRECT, read
             * whole). */
            q->len = (size_t)(O_RDONLY | O_NOCTTY | O_NONBLOCK | (j->direct ? O_DIRECT : 0));
            q->link = FASTIO_LINK_SOFT;
            break;
        case ST_CHECK:
            /* Is what was opened still not a FIFO? A direct descriptor
             * cannot be fstat'ed, but fadvise fails with ESPIPE on a FIFO
             * (generic_fadvise) and does nothing on a regular file with
             * POSIX_FADV_NORMAL (the advice a new file has), inline, no
             * worker. Without it a FIFO swapped in after the stat and held
             * open by a silent writer left its read waiting forever
             * (io_uring polls a FIFO even when opened O_NONBLOCK). A
             * failure cancels the read and the close (soft link): on_cqe
             * closes the slot on its own then. */
            q->opcode = FASTIO_OP_FADVISE;
            q->offset = 0;
            q->len = 0;
            q->rw_flags = POSIX_FADV_NORMAL;
            q->link = FASTIO_LINK_SOFT;
            break;
        case ST_READ: {
            struct iovec *v = &u->iov[2 * (size_t)slot];
            v[0].iov_base = j->out + j->offsets[i];
            if (j->direct) {
                v[0].iov_len = (size_t)reserved(j, i);
                q->len = 1;
            }
            else {
                v[0].iov_len = (size_t)j->sizes[i];
                v[1].iov_base = &u->scratch[slot];
                v[1].iov_len = 1;
                q->len = 2;
            }
            q->opcode = FASTIO_OP_READV;
            q->buf = v;
            q->offset = 0;
            q->link = FASTIO_LINK_HARD;
            break;
        }
        default:
            q->opcode = FASTIO_OP_CLOSE;
            break;
        }
    }
    (void)first;
    return k;
}

static void
slot_free(rf_uring *u, Py_ssize_t i)
{
    u->freeslots[u->nfree++] = u->slot_of[i];
    u->slot_of[i] = -1;
}

static void
on_cqe(rf_uring *u, const fastio_aio_cqe *c)
{
    rf_job *j = u->j;
    Py_ssize_t i = (Py_ssize_t)(c->user_data >> 2);
    unsigned s = (unsigned)(c->user_data & 3);
    int64_t res = c->res;
    u->pend[i]--;
    u->inflight--;
    switch (s) {
    case ST_OPEN:
        if (res < 0) {
            fail(j, i, RF_E_OPEN, (int)res);
            /* the soft link cancels the rest: nothing is open */
        }
        break;
    case ST_CHECK:
        if (res < 0 && !j->err[i]) {
            /* -ECANCELED after a failed open is not this */
            if (res == -ESPIPE) {
                j->got[i] = (int64_t)S_IFIFO;
                fail(j, i, RF_E_NOTREG, -EINVAL);
            }
            else {
                fail(j, i, RF_E_READ, (int)res);
            }
            /* The read and the close are cancelled, the file stays in its
             * slot: close it alone once its chain is done (a file not
             * fully submitted is on the deferred list already). */
            if (u->stage[i] == ST_DONE)
                u->deferred[u->ndeferred++] = i;
            u->stage[i] = ST_CLOSE;
        }
        break;
    case ST_READ:
        if (res < 0) {
            /* -ECANCELED after a failed open: that error is the one */
            if (!j->err[i])
                fail(j, i, RF_E_READ, (int)res);
        }
        else if (res != j->sizes[i] && !j->err[i]) {
            j->got[i] = res;
            fail(j, i, RF_E_CHANGED, -EIO);
        }
        break;
    default:
        if (res < 0 && !j->err[i])
            fail(j, i, RF_E_CLOSE, (int)res);
        break;
    }
    if (u->pend[i] == 0 && u->stage[i] == ST_DONE)
        slot_free(u, i);
}

/* io_uring reads a file with one READV, which the kernel caps at
 * MAX_RW_COUNT (2 GiB - 4 KiB): a file whose read would ask for that much
 * is not claimed by a ring but read afterwards by read_one (which loops),
 * instead of showing as "changed size". */
#define RF_URING_MAX_READ 0x7ffff000LL

static int
too_large_for_uring(const rf_job *j, Py_ssize_t i)
{
    return reserved(j, i) >= RF_URING_MAX_READ;
}

static void
read_large(rf_job *j, Py_ssize_t i)
{
    if (too_large_for_uring(j, i))
        read_one(j, i);
}

static void
uring_run(rf_uring *u)
{
    rf_job *j = u->j;
    int exhausted = 0;     /* no file left to claim */
    for (;;) {
        unsigned k = 0;
        /* Chains the kernel cut: go on once their first part completed
         * (the link is gone; the order must still hold). */
        for (unsigned d = 0; d < u->ndeferred;) {
            Py_ssize_t i = u->deferred[d];
            if (u->pend[i] != 0) {
                d++;
                continue;
            }
            u->deferred[d] = u->deferred[--u->ndeferred];
            if (interrupted(j)) {
                /* nothing more goes in; a slot left open is released
                 * with the ring */
                u->stage[i] = ST_DONE;
                slot_free(u, i);
                continue;
            }
            if (j->kind[i] == RF_E_OPEN) {
                /* the open failed: the slot is empty */
                u->stage[i] = ST_DONE;
                slot_free(u, i);
                continue;
            }
            k = chain(u, i, k);
        }
        while (u->nfree > 0 && !exhausted && !u->fatal && !stopped(j)) {
            Py_ssize_t i = (Py_ssize_t)atomic_fetch_add_explicit(u->next, 1,
                                                                 memory_order_relaxed);
            if (i >= j->n) {
                exhausted = 1;
                break;
            }
            if (j->err[i] || too_large_for_uring(j, i))
                continue;
            u->slot_of[i] = u->freeslots[--u->nfree];
            u->stage[i] = ST_OPEN;
            k = chain(u, i, k);
        }
        if (k > 0) {
            int r = u->ops->submit(u->ctx, u->reqs, k);
            if (r < 0) {
                u->fatal = r;
                r = 0;
            }
            for (unsigned q = 0; q < k; q++) {
                Py_ssize_t i = (Py_ssize_t)(u->reqs[q].user_data >> 2);
                unsigned s = (unsigned)(u->reqs[q].user_data & 3);
                if (q < (unsigned)r) {
                    u->pend[i]++;
                    u->inflight++;
                    u->stage[i] = (uint8_t)(s + 1);
                }
                else if (s == u->stage[i]) {
                    /* the first stage of this file the kernel did not take */
                    if (u->fatal) {
                        /* nothing more goes in: a slot opened stays in the
                         * table, which closing the ring releases */
                        if (!j->err[i])
                            fail(j, i, RF_E_READ, u->fatal);
                        u->stage[i] = ST_DONE;
                        if (u->pend[i] == 0)
                            slot_free(u, i);
                    }
                    else {
                        u->deferred[u->ndeferred++] = i;
                    }
                }
            }
        }
        if (u->inflight == 0) {
            if (u->ndeferred == 0 && (exhausted || u->fatal || stopped(j)))
                break;
            if (k == 0 && u->ndeferred == 0)
                continue;
        }
        if (u->inflight == 0)
            continue;
        /* A timed wait: the caller's ring runs the signal handlers every
         * RF_SIGNAL_POLL_MS, and every ring cancels what it has in flight
         * once one raised (a FIFO's read, say, could wait forever). */
        struct timespec tmo = {0, RF_SIGNAL_POLL_MS * 1000000L};
        int got = u->ops->reap(u->ctx, u->cqes, RF_REQS * u->depth, 1, &tmo);
        poll_signals(j);
        if (interrupted(j) && !u->cancelled) {
            u->cancelled = 1;
            (void)u->ops->cancel_all(u->ctx);  /* best effort: else drained */
        }
        if (got == -EINTR)
            continue;  /* a signal: its handler runs in poll_signals */
        if (got < 0) {
            /* The ring is unusable: closing it (uring_close cancels and
             * drains) ends what is in flight. */
            u->fatal = got;
            break;
        }
        for (int c = 0; c < got; c++)
            on_cqe(u, &u->cqes[c]);
    }
}

/* One request through the ring, waited for: its result (or -errno). */
static int
one_request(rf_uring *u, fastio_aio_req *q)
{
    int r = u->ops->submit(u->ctx, q, 1);
    if (r < 0)
        return r;
    if (r == 0)
        return -EAGAIN;
    fastio_aio_cqe cqe;
    do {
        r = u->ops->reap(u->ctx, &cqe, 1, 1, NULL);
    } while (r == -EINTR || r == 0);
    return r < 0 ? r : (int)cqe.res;
}

/* Direct descriptors (OPENAT into a slot of the registered table) came in
 * Linux 5.15. An older kernel either refuses the slot (EINVAL) or ignores
 * it and makes an ordinary fd, which the chains' CLOSE of the slot would
 * not close (and a CLOSE of "fd 0" could close stdin). Asked once per
 * process by opening "/" into slot 0: 0 is a direct descriptor (closed
 * again), a positive result a plain fd (closed; -EOPNOTSUPP), a negative
 * one the kernel's refusal. Either failure makes the Python layer use
 * the threads instead. */
static atomic_int direct_open_ok;   /* 0 unknown, 1 yes, -errno no */

static int
probe_direct_open(rf_uring *u)
{
    int known = atomic_load(&direct_open_ok);
    if (known != 0)
        return known > 0 ? 0 : known;
    fastio_aio_req q;
    memset(&q, 0, sizeof q);
    q.opcode = FASTIO_OP_OPENAT;
    q.buf = (void *)"/";
    q.len = O_RDONLY | O_DIRECTORY;   /* no O_CLOEXEC: EINVAL with a slot */
    q.fixed_file = 0;
    q.fixed_buf = -1;
    int r = one_request(u, &q);
    if (r == 0) {
        memset(&q, 0, sizeof q);
        q.opcode = FASTIO_OP_CLOSE;
        q.fixed_file = 0;
        q.fixed_buf = -1;
        r = one_request(u, &q);
        r = r < 0 ? r : 1;
    }
    else if (r > 0) {
        close(r);
        r = -EOPNOTSUPP;
    }
    /* a transient failure (ENOMEM, EAGAIN) is not remembered */
    if (r > 0 || r == -EOPNOTSUPP || r == -EINVAL)
        atomic_store(&direct_open_ok, r);
    return r > 0 ? 0 : r;
}

/* Open a ring with a sparse table of `depth` file slots. 0 or -errno, with
 * *call naming what failed. */
static int
uring_setup(rf_uring *u, unsigned depth, const char **call)
{
    u->ops = &fastio_aio_uring_ops;
    u->depth = depth;
    fastio_aio_options o = {.depth = RF_REQS * depth};
    unsigned features = 0;
    int r = u->ops->open(&u->ctx, &o, &features);
    if (r < 0) {
        *call = "io_uring_setup";
        u->ctx = NULL;
        return r;
    }
    int *fds = malloc(depth * sizeof *fds);
    if (!fds) {
        *call = "malloc";
        return -ENOMEM;
    }
    for (unsigned s = 0; s < depth; s++)
        fds[s] = -1;  /* sparse: slots for OPENAT's direct descriptors */
    r = u->ops->register_files(u->ctx, fds, depth);
    free(fds);
    if (r < 0) {
        *call = "IORING_REGISTER_FILES";
        return r;
    }
    r = probe_direct_open(u);
    if (r < 0) {
        *call = "IORING_OP_OPENAT into a direct descriptor (Linux 5.15+)";
        return r;
    }
    return 0;
}

static void
uring_free(rf_uring *u)
{
    /* closes the ring fd: the kernel drops the file table with it */
    if (u->ctx)
        u->ops->close(u->ctx);
    u->ctx = NULL;
    /* stage, pend and slot_of are the job's, shared by the rings */
    free(u->freeslots);
    free(u->iov);
    free(u->scratch);
    free(u->deferred);
    free(u->reqs);
    free(u->cqes);
}

static int
uring_alloc(rf_uring *u, unsigned depth)
{
    u->freeslots = malloc(depth * sizeof *u->freeslots);
    u->iov = calloc(2 * (size_t)depth, sizeof *u->iov);
    u->scratch = calloc(depth, 1);
    u->deferred = malloc(depth * sizeof *u->deferred);
    u->reqs = malloc(RF_REQS * (size_t)depth * sizeof *u->reqs);
    u->cqes = malloc(RF_REQS * (size_t)depth * sizeof *u->cqes);
    if (!u->freeslots || !u->iov || !u->scratch || !u->deferred || !u->reqs || !u->cqes)
        return -ENOMEM;
    for (unsigned s = 0; s < depth; s++)
        u->freeslots[s] = (int32_t)(depth - 1 - s);
    u->nfree = depth;
    return 0;
}

/* The rings past the first, one per thread: each makes its own ring (a
 * SINGLE_ISSUER ring is its creator's) and claims files from the shared
 * counter until none is left. One that cannot make its ring reads nothing:
 * the others (the caller's ring works) take its share. */
static void *
uring_thread(void *arg)
{
    rf_uring *u = arg;
    const char *call = NULL;
    int r = uring_setup(u, u->depth, &call);
    if (r == 0)
        r = uring_alloc(u, u->depth);
    if (r == 0)
        uring_run(u);
    uring_free(u);
    waiter_done(u->w);
    return NULL;
}

/* Phase 2 on io_uring: the caller's ring (made before phase 1) and
 * nrings-1 more in threads. Why several: a buffered read is a copy done by
 * the CPU that submits it, and for cached files that copy (and the open)
 * is the whole cost; one ring per CPU splits it as the threads path does.
 * Returns the first ring failure (-errno) or 0. */
static int
uring_run_all(rf_uring *rings, unsigned nrings)
{
    pthread_t tids[RF_RINGS_MAX];
    unsigned started = 0;
    rf_waiter w;
    waiter_init(&w);
    if (nrings > 1) {
        sigset_t all, old;
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &old);
        pthread_mutex_lock(&w.lock);
        for (unsigned t = 1; t < nrings; t++) {
            rings[t].w = &w;
            w.running++;
            if (pthread_create(&tids[started], NULL, uring_thread, &rings[t]) != 0) {
                w.running--;
                break;
            }
            started++;
        }
        pthread_mutex_unlock(&w.lock);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
    }
    uring_run(&rings[0]);
    waiter_join(rings[0].j, &w, tids, started);
    for (unsigned t = 0; t <= started; t++) {
        if (rings[t].fatal)
            return rings[t].fatal;
    }
    return 0;
}

/* ================================================================== */
/* The Python function */

static void
job_free(rf_job *j)
{
    free(j->paths);  /* one block: the pointers, then the strings */
    free(j->sizes);
    free(j->offsets);
    free(j->got);
    free(j->err);
    free(j->kind);
}

static const char *
mode_name(int64_t mode)
{
    if (S_ISDIR(mode))
        return "a directory";
    if (S_ISFIFO(mode))
        return "a FIFO";
    if (S_ISCHR(mode))
        return "a character device";
    if (S_ISBLK(mode))
        return "a block device";
    if (S_ISSOCK(mode))
        return "a socket";
    return "not a regular file";
}

/* The OSError of file i (a new reference), or NULL with an exception. */
static PyObject *
file_error(const rf_job *j, Py_ssize_t i)
{
    char detail[256];
    switch (j->kind[i]) {
    case RF_E_STAT:
        snprintf(detail, sizeof detail, "stat; paths[%zd]", i);
        break;
    case RF_E_NOTREG:
        if (S_ISDIR(j->got[i])) {
            snprintf(detail, sizeof detail, "stat: a directory; paths[%zd]", i);
            break;
        }
        snprintf(detail, sizeof detail,
                 "%s, not a regular file: refused, reading it could block; paths[%zd]",
                 mode_name(j->got[i]), i);
        break;
    case RF_E_TOOBIG:
        snprintf(detail, sizeof detail, "%lld bytes, larger than max_size=%lld; paths[%zd]",
                 (long long)j->sizes[i], (long long)j->max_size, i);
        break;
    case RF_E_OPEN:
        snprintf(detail, sizeof detail, "openat; paths[%zd]", i);
        break;
    case RF_E_READ:
        snprintf(detail, sizeof detail, "read; paths[%zd]", i);
        break;
    case RF_E_CLOSE:
        snprintf(detail, sizeof detail, "close; paths[%zd]", i);
        break;
    default:
        snprintf(detail, sizeof detail,
                 "the file changed size while read: stat said %lld bytes, %s %lld%s; "
                 "paths[%zd]",
                 (long long)j->sizes[i], j->kind[i] == RF_E_CHANGED ? "found" : "",
                 (long long)j->got[i], j->got[i] > j->sizes[i] ? " or more (it grew)" : "",
                 i);
        break;
    }
    PyObject *name = PyUnicode_DecodeFSDefault(j->paths[i]);
    if (name == NULL)
        return NULL;
    PyObject *exc = fastio_oserror_new(j->err[i], detail, name);
    Py_DECREF(name);
    return exc;
}

static PyObject *
to_bytes(const int64_t *a, Py_ssize_t n)
{
    return PyBytes_FromStringAndSize((const char *)a, n * (Py_ssize_t)sizeof(int64_t));
}

PyDoc_STRVAR(read_files_doc,
"_read_files(paths, alloc, backend, depth, max_size, direct, stop_on_error, /)\n--\n\n"
"Read every file of `paths` (a tuple of bytes) whole into one buffer.\n"
"alloc(nbytes) returns a writable contiguous buffer of at least nbytes\n"
"(4096-aligned when direct). backend: 'io_uring' or 'threads'; depth: files\n"
"in flight (threads: worker threads, at most 64); max_size: -1 for no limit.\n"
"Returns (buffer, offsets, sizes, errors, backend): offsets (n+1) and sizes\n"
"(n) as native int64 bytes, errors a dict index -> OSError. With\n"
"stop_on_error no new file starts after the first failure. A signal\n"
"handler that raises (Ctrl-C) stops the call within ~50 ms with its\n"
"exception. Used by fastio.read_files.");

static PyObject *
read_files_impl(PyObject *module, PyObject *args)
{
    PyObject *paths, *alloc;
    const char *backend;
    int depth_i, direct, stop_on_error;
    long long max_size;
    if (!PyArg_ParseTuple(args, "O!OsiLpp:_read_files", &PyTuple_Type, &paths, &alloc,
                          &backend, &depth_i, &max_size, &direct, &stop_on_error))
        return NULL;
    int use_uring;
    if (strcmp(backend, "io_uring") == 0)
        use_uring = 1;
    else if (strcmp(backend, "threads") == 0)
        use_uring = 0;
    else
        return PyErr_Format(PyExc_ValueError,
                            "backend must be 'io_uring' or 'threads', got backend='%s'", backend);
    if (depth_i < 1 || depth_i > RF_DEPTH_MAX)
        return PyErr_Format(PyExc_ValueError, "depth must be in [1, %d], got depth=%d",
                            RF_DEPTH_MAX, depth_i);
    Py_ssize_t n = PyTuple_GET_SIZE(paths);

    rf_job j;
    memset(&j, 0, sizeof j);
    atomic_init(&j.stop, 0);
    atomic_init(&j.interrupted, 0);
    j.caller = pthread_self();
    j.n = n;
    j.max_size = max_size < 0 ? -1 : max_size;
    j.direct = direct;
    j.stop_on_error = stop_on_error;
    PyObject *result = NULL, *buf = NULL, *errors = NULL;
    Py_buffer view;
    int have_view = 0;
    uint8_t *stage = NULL, *pend = NULL;  /* per file, shared by the rings */
    int32_t *slot_of = NULL;

    /* Copy the paths into one C block (the GIL is released while they are
     * used; the tuple is ours and holds bytes only: no Python code runs). */
    size_t total = (size_t)(n + 1) * sizeof(char *);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *p = PyTuple_GET_ITEM(paths, i);
        if (!PyBytes_Check(p))
            return PyErr_Format(PyExc_TypeError, "paths[%zd] must be bytes, got %.100s", i,
                                Py_TYPE(p)->tp_name);
        if (strlen(PyBytes_AS_STRING(p)) != (size_t)PyBytes_GET_SIZE(p))
            return PyErr_Format(PyExc_ValueError, "paths[%zd] contains a NUL byte: %R", i, p);
        total += (size_t)PyBytes_GET_SIZE(p) + 1;
    }
    j.paths = malloc(total);
    j.sizes = malloc((size_t)(n + 1) * sizeof *j.sizes);
    j.offsets = calloc((size_t)n + 1, sizeof *j.offsets);
    j.got = calloc((size_t)n + 1, sizeof *j.got);
    j.err = calloc((size_t)n + 1, sizeof *j.err);
    j.kind = calloc((size_t)n + 1, 1);
    if (!j.paths || !j.sizes || !j.offsets || !j.got || !j.err || !j.kind) {
        PyErr_NoMemory();
        goto done;
    }
    char *s = (char *)(j.paths + n + 1);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *p = PyTuple_GET_ITEM(paths, i);
        size_t len = (size_t)PyBytes_GET_SIZE(p) + 1;
        memcpy(s, PyBytes_AS_STRING(p), len);
        j.paths[i] = s;
        j.sizes[i] = -1;
        s += len;
    }

    /* The ring first: when io_uring does not work here, say so before any
     * file is touched. */
    rf_uring rings[RF_RINGS_MAX];
    memset(rings, 0, sizeof rings);
    atomic_llong next_file;
    atomic_init(&next_file, 0);
    unsigned depth = (unsigned)depth_i;
    if ((Py_ssize_t)depth > n)
        depth = n > 0 ? (unsigned)n : 1;
    /* io_uring: one ring per CPU (at most 8), none with fewer than 16
     * files to do; `depth` files in flight in all, split among them. */
    unsigned nrings = ncpu();
    if (nrings > RF_RINGS_MAX)
        nrings = RF_RINGS_MAX;
    if ((Py_ssize_t)nrings > n / 16)
        nrings = n / 16 > 1 ? (unsigned)(n / 16) : 1;
    if (nrings > depth)
        nrings = depth;
    unsigned ring_depth = (depth + nrings - 1) / nrings;
    for (unsigned t = 0; t < nrings; t++) {
        rings[t].j = &j;
        rings[t].depth = ring_depth;
        rings[t].next = &next_file;
    }
    if (use_uring) {
        const char *call = NULL;
        int r;
        Py_BEGIN_ALLOW_THREADS
        stage = calloc((size_t)n + 1, 1);
        pend = calloc((size_t)n + 1, 1);
        slot_of = calloc((size_t)n + 1, sizeof *slot_of);
        r = (stage && pend && slot_of) ? 0 : -ENOMEM;
        if (r < 0)
            call = "malloc";
        for (unsigned t = 0; t < nrings; t++) {
            rings[t].stage = stage;
            rings[t].pend = pend;
            rings[t].slot_of = slot_of;
        }
        if (r == 0)
            r = uring_setup(&rings[0], ring_depth, &call);
        if (r == 0)
            r = uring_alloc(&rings[0], ring_depth);
        if (r < 0)
            uring_free(&rings[0]);
        Py_END_ALLOW_THREADS
        if (r < 0) {
            fastio_backend_unavailable(
                fastio_get_state(module)->BackendUnavailable, r,
                PyUnicode_FromFormat("io_uring cannot read files here: %s: %s",
                                     call ? call : "setup", strerror(-r)));
            goto done;
        }
    }

    /* Phase 1. The GIL is released by hand (not Py_BEGIN_ALLOW_THREADS):
     * poll_signals takes it back through j.ts to run the signal handlers. */
    int lr;
    j.next_poll = fastio_monotonic_ns() + (int64_t)RF_SIGNAL_POLL_MS * 1000000;
    j.ts = PyEval_SaveThread();
    unsigned nstat = n >= 256 ? ncpu() : 1;
    if (nstat > RF_STAT_THREADS_MAX)
        nstat = RF_STAT_THREADS_MAX;
    parallel_for(&j, stat_one, n, nstat, 32);
    lr = layout(&j);
    PyEval_RestoreThread(j.ts);
    j.ts = NULL;
    if (interrupted(&j))
        goto uring_out;  /* the handler's exception is set */
    if (lr < 0) {
        PyErr_SetString(PyExc_OverflowError, "the files' total size does not fit in memory");
        goto uring_out;
    }

    /* The output: one call of the Python layer's allocator. */
    int64_t need = j.offsets[n];
    int skip_read = stopped(&j);
    buf = PyObject_CallFunction(alloc, "L", (long long)need);
    if (buf == NULL)
        goto uring_out;
    if (PyObject_GetBuffer(buf, &view, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0) {
        PyErr_Clear();
        PyErr_Format(PyExc_TypeError,
                     "out must be a writable C-contiguous buffer, got %.100s",
                     Py_TYPE(buf)->tp_name);
        goto uring_out;
    }
    have_view = 1;
    if (view.len < need) {
        PyErr_Format(PyExc_ValueError,
                     "out is too small: the files need %lld bytes, out has %zd",
                     (long long)need, view.len);
        goto uring_out;
    }
    if (direct && ((uintptr_t)view.buf % RF_DIRECT_ALIGN) != 0) {
        PyErr_Format(PyExc_ValueError,
                     "out must start on a %d-byte boundary with direct=True (address %p)",
                     RF_DIRECT_ALIGN, view.buf);
        goto uring_out;
    }
    j.out = view.buf;

    /* Phase 2 */
    if (!skip_read) {
        j.ts = PyEval_SaveThread();
        populate_output(&j);
        if (interrupted(&j)) {
            /* a Ctrl-C during the populate: nothing to read */
        }
        else if (use_uring) {
            int fr = uring_run_all(rings, nrings);
            if (fr < 0) {
                j.fatal = fr;
                j.fatal_call = "io_uring_enter";
            }
            else if (!interrupted(&j) && !stopped(&j)) {
                unsigned nt = depth > RF_THREADS_MAX ? RF_THREADS_MAX : depth;
                parallel_for(&j, read_large, n, nt, 1);
            }
        }
        else {
            unsigned nt = depth > RF_THREADS_MAX ? RF_THREADS_MAX : depth;
            parallel_for(&j, read_one, n, nt, 1);
        }
        /* A failed file's reservation is zero (not a partial copy). */
        for (Py_ssize_t i = 0; i < n; i++) {
            if (j.err[i] && reserved(&j, i) > 0)
                memset(j.out + j.offsets[i], 0, (size_t)reserved(&j, i));
        }
        PyEval_RestoreThread(j.ts);
        j.ts = NULL;
        /* interrupted: the handler's exception is set; out is dropped */
    }

uring_out:
    if (use_uring) {
        Py_BEGIN_ALLOW_THREADS
        uring_free(&rings[0]);  /* the others freed themselves */
        Py_END_ALLOW_THREADS
    }
    if (have_view) {
        have_view = 0;
        PyBuffer_Release(&view);
    }
    if (PyErr_Occurred())
        goto done;
    if (j.fatal) {
        fastio_oserror(j.fatal, j.fatal_call, NULL);
        goto done;
    }
    errors = PyDict_New();
    if (errors == NULL)
        goto done;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (j.err[i] == 0) {
            if (j.sizes[i] < 0)
                j.sizes[i] = 0;  /* not reached: a stop after another failure */
            continue;
        }
        PyObject *exc = file_error(&j, i);
        if (exc == NULL)
            goto done;
        PyObject *key = PyLong_FromSsize_t(i);
        int rr = key ? PyDict_SetItem(errors, key, exc) : -1;
        Py_XDECREF(key);
        Py_DECREF(exc);
        if (rr < 0)
            goto done;
        j.sizes[i] = 0;
    }
    PyObject *offs = to_bytes(j.offsets, n + 1);
    PyObject *sizes = offs ? to_bytes(j.sizes, n) : NULL;
    if (sizes)
        result = Py_BuildValue("(ONNOs)", buf, offs, sizes, errors,
                               use_uring ? "io_uring" : "threads");
    else
        Py_XDECREF(offs);
done:
    Py_XDECREF(buf);
    Py_XDECREF(errors);
    free(stage);
    free(pend);
    free(slot_of);
    job_free(&j);
    return result;
}

PyMethodDef fastio_readfiles_methods[] = {
    {"_read_files", (PyCFunction)read_files_impl, METH_VARARGS, read_files_doc},
    {NULL, NULL, 0, NULL},
};
