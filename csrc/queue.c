/* queue.c: the Queue type: a submission/completion queue over one backend's
 * ops table (aio.h), plus the batch loop behind read_blocks/write_blocks.
 *
 * Lifetimes. Every request owns a slot (depth slots per queue). The slot
 * holds the request's buffer export (Py_buffer), its tag and a reference to
 * its file object from q.read() until the completion is handed to Python:
 * the memory the kernel (or a worker thread) writes into cannot be freed,
 * resized or closed while the request is in flight, and nothing dangles.
 * A slot moves FREE -> PENDING (queued by q.read, not yet given to the
 * backend) -> INFLIGHT -> DONE (reaped: result stored, in the done FIFO) ->
 * FREE (converted to a (tag, result) tuple, GIL held, buffer released).
 * A request the backend refuses at submission goes straight to DONE with
 * its -errno: its tag always comes back, with the exception.
 *
 * The GIL. submit() and reap() of the backend run with the GIL released
 * (they may block); everything they touch is plain C memory of the queue.
 * `busy` is set for the whole of every call that may release the GIL (not
 * only around the releases: a call also runs Python code between them, a
 * finalizer or a signal handler, during which another thread may run): a
 * second Python thread calling into the same queue meanwhile gets
 * RuntimeError instead of racing on the slots.
 *
 * close() from another thread while one is inside (issue 7). close() does
 * not free anything under that thread's feet, nor wait for it: it sets
 * `closing` and returns. The thread inside sees the mark when its backend
 * call returns (every wait without a deadline is cut into SIGNAL_POLL_NS
 * slices for this, see reap_into), then finishes the close itself: cancel,
 * wait until the backend gave every request back (`draining`: those waits
 * do not stop at the mark), release the buffers, free the backend; and
 * raises ValueError. So a buffer is never released while the kernel may
 * still write into it, and the backend is freed by the last thread out.
 * Why no immediate wake-up: it would need a thread-safe wake operation in
 * every backend (a MSG_RING from a second ring for io_uring; nothing wakes
 * io_getevents or aio_suspend but a completion or a signal), and some calls
 * cannot be woken at all (io_submit running a pipe read synchronously, a
 * pread the threads backend runs in the reaping thread). Why close() does
 * not wait for the thread to leave: for those, it could wait forever.
 *
 * Close (close(), __exit__, dealloc, GC clear): requests never submitted
 * complete with ECANCELED, the backend is asked to cancel the rest, and the
 * queue waits until every one of them is reaped before it releases a buffer
 * or frees the backend's context.
 *
 * Backend choice is policy and lives in fastio/aio.py ('auto',
 * FASTIO_BACKEND); this file takes a backend by its exact name.
 */
#include "fastio.h"
#include "aio.h"

#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <linux/fs.h>

static const fastio_aio_ops *const all_backends[] = {
    &fastio_aio_uring_ops,
    &fastio_aio_linux_ops,
    &fastio_aio_posix_ops,
    &fastio_aio_threads_ops,
};
#define NBACKENDS (sizeof all_backends / sizeof all_backends[0])

#define DEPTH_MAX 65536
/* Requests handed to the backend per submit call, by default (fio's
 * iodepth_batch_submit). On this project's reference VM (virtio disk),
 * O_DIRECT random 4 KiB reads at depth 32 ran 10-15% slower when every
 * free slot went in one io_uring_enter (bursts of up to 32) than one
 * request per call, fio's default; 8 per call matched fio within noise
 * at a quarter less CPU per I/O than 1, and cached reads (which complete
 * inside the call) lost 0-6% at 8 against 32 but a third or more at 1
 * (benchmarks/bench_aio.py --submit-batch measures it on your machine). */
#define SUBMIT_BATCH_DEFAULT 8
/* user_data of batch requests: the top bit set, the batch slot below. */
#define BATCH_BIT ((uint64_t)1 << 63)
/* Waits without a deadline wake this often to run Python's signal
 * handlers: a pthread condition wait (threads backend) is not interrupted
 * by a signal the way io_uring_enter is. */
#define SIGNAL_POLL_NS 100000000LL

/* ================================================================== */
/* Latency histogram: log-linear buckets, 1/32 relative precision. */

#define LAT_SUB_BITS 5
#define LAT_SUB (1u << LAT_SUB_BITS)
#define LAT_BUCKETS (LAT_SUB + (64 - LAT_SUB_BITS) * LAT_SUB)

static inline unsigned
lat_bucket(uint64_t ns)
{
    if (ns < LAT_SUB) {
        return (unsigned)ns;
    }
    unsigned msb = 63u - (unsigned)__builtin_clzll(ns);
    unsigned shift = msb - LAT_SUB_BITS;
    return LAT_SUB + (msb - LAT_SUB_BITS) * LAT_SUB +
           (unsigned)((ns >> shift) - LAT_SUB);
}

/* The largest value a bucket holds. */
static uint64_t
lat_bucket_top(unsigned b)
{
    if (b < LAT_SUB) {
        return b;
    }
    unsigned e = (b - LAT_SUB) / LAT_SUB;
    uint64_t m = (b - LAT_SUB) % LAT_SUB + LAT_SUB;
    return ((m + 1) << e) - 1;
}

static inline uint64_t
now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ================================================================== */
/* The Queue object */

enum { SLOT_FREE = 0, SLOT_PENDING, SLOT_INFLIGHT, SLOT_DONE };

typedef struct {
    Py_buffer view;     /* the pinned buffer (has_view) */
    PyObject *tag;      /* owned */
    PyObject *file;     /* owned: keeps a file object, so its fd, alive */
    int64_t res;
    uint64_t t_submit;
    fastio_aio_req req; /* as submitted: for error messages */
    uint8_t state;
    uint8_t has_view;
} q_slot;

struct q_batch;

typedef struct {
    PyObject_HEAD
    const fastio_aio_ops *ops;
    void *ctx;              /* NULL once closed */
    unsigned features;
    unsigned depth;
    q_slot *slots;
    unsigned *free_stack;
    unsigned nfree;
    unsigned *pending;      /* slot indices queued, not yet submitted */
    unsigned npending;
    fastio_aio_req *reqs;   /* submission scratch (depth) */
    fastio_aio_cqe *cqes;   /* reap scratch (depth) */
    unsigned *done;         /* FIFO of reaped slot indices (depth) */
    unsigned done_head, done_len;
    unsigned inflight;      /* slot requests inside the backend */
    unsigned batch_inflight;
    struct q_batch *batch;  /* the batch running, or NULL */
    PyObject *ready;        /* list: completions made before wait() asked */
    uint64_t next_tag;
    int efd;
    int busy;
    _Atomic int closing;    /* close() from another thread: see the top */
    int draining;           /* waits that must not stop at `closing` */
    unsigned submit_batch;  /* requests per backend submit call at most */
    int latency;            /* record latencies */
    uint64_t *hist;         /* LAT_BUCKETS counters (latency) */
    /* registered files and buffers */
    int *reg_fds;
    unsigned nreg_fds;
    PyObject *reg_files;    /* the objects, kept alive */
    Py_buffer *reg_bufs;
    unsigned nreg_bufs;
    PyObject *weakreflist;
    unsigned long fork_generation;  /* fork_generation when created */
} QueueObject;

/* ------------------------------------------------------------------ */
/* fork: a Queue belongs to the process that made it. A forked child has
 * copies of its rings and slots but not its kernel context's ownership
 * (Linux AIO contexts are per address space), its threads (only the forking
 * thread survives), nor its completions (the kernel writes them into the
 * parent's memory). A pthread_atfork child handler bumps this counter, so the
 * check costs a load, not a getpid() system call per request. */
static volatile unsigned long fork_generation;

/* Probe results, once per process: a probe opens and destroys a kernel
 * context, and Linux AIO's io_destroy waits for an RCU grace period (tens
 * of milliseconds), which a Queue per call must not pay twice. */
static struct {
    int known;
    int err;
    unsigned features;
    char why[256];
} probe_cache[NBACKENDS];

static void
on_fork_child(void)
{
    fork_generation++;
    /* A child may be put under a seccomp filter before it probes. */
    memset(probe_cache, 0, sizeof probe_cache);
    for (size_t i = 0; i < NBACKENDS; i++) {
        if (all_backends[i]->atfork_child != NULL) {
            all_backends[i]->atfork_child();
        }
    }
}

/* all_backends[i]->probe, cached; call with the GIL held (it guards the
 * cache; the probe itself runs with the GIL released). */
#ifdef Py_GIL_DISABLED
/* No GIL guards the cache on a free-threaded build: this lock guards its
 * writes (held for a memcpy only, never across the probe or Python code);
 * `known` is published with a release store after the fields, so a reader
 * that sees it set (acquire) reads complete fields without the lock. */
static PyMutex probe_mutex;
#define PROBE_LOCK() PyMutex_Lock(&probe_mutex)
#define PROBE_UNLOCK() PyMutex_Unlock(&probe_mutex)
#else
#define PROBE_LOCK() ((void)0)
#define PROBE_UNLOCK() ((void)0)
#endif

static int
cached_probe(size_t i, char *why, size_t whylen, unsigned *features)
{
    if (!__atomic_load_n(&probe_cache[i].known, __ATOMIC_ACQUIRE)) {
        char w[sizeof probe_cache[i].why] = "";
        unsigned f = 0;
        int err;
        Py_BEGIN_ALLOW_THREADS
        err = all_backends[i]->probe(w, sizeof w, &f);
        Py_END_ALLOW_THREADS
        PROBE_LOCK();
        if (!probe_cache[i].known) {
            probe_cache[i].err = err;
            probe_cache[i].features = f;
            memcpy(probe_cache[i].why, w, sizeof w);
            __atomic_store_n(&probe_cache[i].known, 1, __ATOMIC_RELEASE);
        }
        PROBE_UNLOCK();
    }
    snprintf(why, whylen, "%s", probe_cache[i].why);
    *features = probe_cache[i].features;
    return probe_cache[i].err;
}

static int
q_forked(QueueObject *q)
{
    return q->fork_generation != fork_generation;
}

/* ================================================================== */
/* Helpers (GIL held) */

static int
get_buffer(PyObject *obj, Py_buffer *view, int writable, const char *func,
           const char *name)
{
    if (PyObject_GetBuffer(obj, view, writable ? PyBUF_WRITABLE : PyBUF_SIMPLE) == 0) {
        return 0;
    }
    if (!PyErr_ExceptionMatches(PyExc_TypeError) &&
        !PyErr_ExceptionMatches(PyExc_BufferError) &&
        !PyErr_ExceptionMatches(PyExc_ValueError)) {
        return -1;
    }
    PyObject *type, *cause, *tb;
    PyErr_Fetch(&type, &cause, &tb);
    PyErr_NormalizeException(&type, &cause, &tb);
    PyObject *kind = PyErr_GivenExceptionMatches(type, PyExc_ValueError)
                         ? PyExc_ValueError : PyExc_TypeError;
    Py_XDECREF(type);
    Py_XDECREF(tb);
    PyErr_Format(kind, "%s() argument %s must be a %s contiguous buffer, got %.100s (%S)",
                 func, name, writable ? "writable" : "bytes-like",
                 Py_TYPE(obj)->tp_name, cause);
    Py_DECREF(cause);
    return -1;
}

static int
q_check(QueueObject *q)
{
    if (q_forked(q) && q->ctx != NULL) {
        PyErr_Format(PyExc_RuntimeError,
                     "this %s Queue was created by the parent of this forked "
                     "process: a child cannot use its parent's queue (rings, "
                     "threads and completions stay with the parent); create "
                     "a new fastio.Queue in the child", q->ops->name);
        return -1;
    }
    if (q->ctx == NULL || atomic_load(&q->closing)) {
        PyErr_SetString(PyExc_ValueError, "I/O operation on a closed Queue");
        return -1;
    }
    if (q->busy) {
        PyErr_SetString(PyExc_RuntimeError,
                        "the Queue is in use by another thread (a Queue is not "
                        "thread-safe: use one per thread)");
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* O_DIRECT alignment: what the file's filesystem or device asks for. */

/* statx's O_DIRECT alignment (Linux 6.1) by the kernel's ABI, not by the
 * build's headers: glibc before 2.30 declares its own struct statx without
 * stx_dio_* (a manylinux_2_28 build has such headers), and an #ifdef on
 * STATX_DIOALIGN would drop the running kernel's answer at compile time.
 * The kernel's struct statx is 256 bytes; the two fields are at 152, 156. */
#define FASTIO_STATX_DIOALIGN 0x00002000U
#define FASTIO_STATX_DIO_MEM_ALIGN 152
#define FASTIO_STATX_DIO_OFFSET_ALIGN 156

/* Fills mem and off (bytes); returns a static description of the source. */
static const char *
dio_alignment(int fd, unsigned *mem, unsigned *off)
{
    union {
        struct statx stx;
        unsigned char raw[256];
    } u;
    _Static_assert(sizeof(struct statx) == 256, "struct statx is the kernel's 256 bytes");
    uint32_t dio_mem, dio_off;
    if (statx(fd, "", AT_EMPTY_PATH, FASTIO_STATX_DIOALIGN, &u.stx) == 0 &&
        (u.stx.stx_mask & FASTIO_STATX_DIOALIGN)) {
        memcpy(&dio_mem, u.raw + FASTIO_STATX_DIO_MEM_ALIGN, sizeof dio_mem);
        memcpy(&dio_off, u.raw + FASTIO_STATX_DIO_OFFSET_ALIGN, sizeof dio_off);
        if (dio_off != 0) {
            *mem = dio_mem;
            *off = dio_off;
            return "statx";
        }
    }
    struct stat st;
    int lbs = 0;
    if (fstat(fd, &st) == 0 && S_ISBLK(st.st_mode) &&
        ioctl(fd, BLKSSZGET, &lbs) == 0 && lbs > 0) {
        *mem = *off = (unsigned)lbs;
        return "BLKSSZGET";
    }
    /* Unknown: the page size satisfies every device we know of. */
    *mem = *off = 4096;
    return "default";
}

/* The exception for one failed request (a new reference, never NULL unless
 * out of memory). EINVAL on an O_DIRECT file whose request breaks the
 * alignment rule says which value and which alignment. */
static PyObject *
request_error(const fastio_aio_ops *ops, const fastio_aio_req *r, int64_t res)
{
    static const char *const opnames[] = {"read", "write", "fsync"};
    const char *op = r->opcode <= FASTIO_OP_FSYNC ? opnames[r->opcode] : "?";
    if (res == -EINVAL && r->opcode != FASTIO_OP_FSYNC && r->fd >= 0) {
        int fl = fcntl(r->fd, F_GETFL);
        if (fl >= 0 && (fl & O_DIRECT)) {
            unsigned mem, off;
            dio_alignment(r->fd, &mem, &off);
            char what[160] = "";
            if (off && r->offset % off) {
                snprintf(what, sizeof what, "offset=%lld is not a multiple of %u",
                         (long long)r->offset, off);
            }
            else if (off && r->len % off) {
                snprintf(what, sizeof what, "length=%zu is not a multiple of %u",
                         r->len, off);
            }
            else if (mem && (uintptr_t)r->buf % mem) {
                snprintf(what, sizeof what,
                         "the buffer address 0x%zx is not a multiple of %u",
                         (size_t)(uintptr_t)r->buf, mem);
            }
            if (what[0]) {
                PyObject *msg = PyUnicode_FromFormat(
                    "O_DIRECT %s (%s) needs its offset and length aligned to %u bytes "
                    "and its buffer to %u bytes: %s (use fastio.Buffer or "
                    "fastio.empty for aligned memory)",
                    op, ops->name, off, mem, what);
                if (msg == NULL) {
                    return NULL;
                }
                PyObject *exc = PyObject_CallFunction(PyExc_OSError, "iO", EINVAL, msg);
                Py_DECREF(msg);
                return exc;
            }
        }
    }
    char sys[64];
    snprintf(sys, sizeof sys, "%s, %s", op, ops->name);
    fastio_oserror((int)res, sys, NULL);
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    Py_XDECREF(type);
    Py_XDECREF(tb);
    return value;
}

/* ------------------------------------------------------------------ */
/* Slots */

static void
slot_release(QueueObject *q, unsigned i)
{
    q_slot *s = &q->slots[i];
    if (s->has_view) {
        PyBuffer_Release(&s->view);
        s->has_view = 0;
    }
    Py_CLEAR(s->tag);
    Py_CLEAR(s->file);
    s->state = SLOT_FREE;
    q->free_stack[q->nfree++] = i;
}

/* Turn every DONE slot into a (tag, result) tuple appended to list.
 * Returns 0, or -1 (out of memory: the slots stay DONE). */
static int
collect_done(QueueObject *q, PyObject *list)
{
    while (q->done_len > 0) {
        unsigned i = q->done[q->done_head];
        q_slot *s = &q->slots[i];
        PyObject *result = s->res >= 0 ? PyLong_FromLongLong(s->res)
                                       : request_error(q->ops, &s->req, s->res);
        if (result == NULL) {
            return -1;
        }
        PyObject *t = PyTuple_Pack(2, s->tag, result);
        Py_DECREF(result);
        if (t == NULL || PyList_Append(list, t) < 0) {
            Py_XDECREF(t);
            return -1;
        }
        Py_DECREF(t);
        q->done_head = (q->done_head + 1) % q->depth;
        q->done_len--;
        slot_release(q, i);
    }
    return 0;
}

static inline void
slot_done(QueueObject *q, unsigned i, int64_t res)
{
    q_slot *s = &q->slots[i];
    s->res = res;
    s->state = SLOT_DONE;
    q->done[(q->done_head + q->done_len) % q->depth] = i;
    q->done_len++;
}

/* ================================================================== */
/* Batches (the C loop behind read_blocks / write_blocks) */

typedef struct q_batch {
    int fd;
    uint8_t opcode;
    uint32_t rw_flags;         /* RWF_* for every request (uncached=True) */
    int fixed_file;
    int fixed_buf;
    size_t n;
    size_t next;               /* the next request not yet started */
    const int64_t *offsets;
    const int64_t *lengths;    /* or NULL: every request is `size` long */
    size_t size;
    char *base;                /* one destination: request i at pos[i] */
    char **bufs;               /* or one buffer per request */
    int64_t *results;          /* bytes done so far, then the final result */
    size_t *of_bslot;          /* request index per batch slot */
    uint64_t *t_bslot;         /* submit time per batch slot (latency) */
    unsigned *bfree;
    unsigned nbfree;
    size_t *retry;             /* requests to continue after a short count */
    unsigned nretry;
    size_t *pos;               /* byte position of request i in base, or NULL */
} q_batch;

static inline size_t
batch_len(const q_batch *b, size_t i)
{
    return b->lengths ? (size_t)b->lengths[i] : b->size;
}

static inline char *
batch_buf(const q_batch *b, size_t i)
{
    if (b->bufs) {
        return b->bufs[i];
    }
    return b->base + (b->pos ? b->pos[i] : i * b->size);
}

/* A batch request completed (GIL released). Short counts are continued:
 * pread/pwrite may stop early, io_uring too; a continuation that fails
 * keeps the bytes already done (an O_DIRECT tail past EOF, for one). */
static void
batch_complete(QueueObject *q, q_batch *b, unsigned bs, int64_t res, uint64_t t)
{
    size_t i = b->of_bslot[bs];
    b->bfree[b->nbfree++] = bs;
    q->batch_inflight--;
    if (q->latency) {
        q->hist[lat_bucket(t - b->t_bslot[bs])]++;
    }
    if (res < 0) {
        if (b->results[i] == 0) {
            b->results[i] = res;
        }
        return;
    }
    b->results[i] += res;
    if (res > 0 && (size_t)b->results[i] < batch_len(b, i)) {
        b->retry[b->nretry++] = i;
    }
}

/* ================================================================== */
/* Submit and reap (GIL released: no Py* call below until noted) */

/* One reap: wait for min_complete, then dispatch what came back. Returns
 * the count or -errno. A wait without a deadline (timeout NULL) runs in
 * SIGNAL_POLL_NS slices and ends with -ECANCELED once another thread
 * called close(), unless the queue is draining (see the top comment). */
static int
reap_into(QueueObject *q, unsigned min_complete, const struct timespec *timeout)
{
    unsigned outstanding = q->inflight + q->batch_inflight;
    if (min_complete > outstanding) {
        min_complete = outstanding;
    }
    int r;
    if (timeout == NULL && min_complete > 0 && !q->draining) {
        const struct timespec slice = {0, SIGNAL_POLL_NS};
        do {
            if (atomic_load(&q->closing)) {
                return -ECANCELED;
            }
            r = q->ops->reap(q->ctx, q->cqes, q->depth, min_complete, &slice);
        } while (r == 0);
    }
    else {
        r = q->ops->reap(q->ctx, q->cqes, q->depth, min_complete, timeout);
    }
    if (r <= 0) {
        return r;
    }
    uint64_t t = q->latency ? now_ns() : 0;
    for (int k = 0; k < r; k++) {
        uint64_t ud = q->cqes[k].user_data;
        if (ud & BATCH_BIT) {
            if (q->batch == NULL) {
                /* A batch given up on a broken backend (Queue_batch keeps
                 * its buffers pinned): nothing to record. */
                q->batch_inflight--;
                continue;
            }
            batch_complete(q, q->batch, (unsigned)(ud & ~BATCH_BIT), q->cqes[k].res, t);
            continue;
        }
        unsigned i = (unsigned)ud;
        if (q->latency) {
            q->hist[lat_bucket(t - q->slots[i].t_submit)]++;
        }
        q->inflight--;
        slot_done(q, i, q->cqes[k].res);
    }
    return r;
}

/* Hand every pending slot request to the backend. Returns 0, or -EINTR
 * (the rest stay pending: the caller checks signals and calls again). */
static int
submit_pending(QueueObject *q)
{
    unsigned head = 0;
    while (head < q->npending) {
        unsigned n = q->npending - head;
        if (n > q->submit_batch) {
            n = q->submit_batch;
        }
        uint64_t t = q->latency ? now_ns() : 0;
        for (unsigned k = 0; k < n; k++) {
            q_slot *s = &q->slots[q->pending[head + k]];
            s->t_submit = t;
            q->reqs[k] = s->req;
        }
        int r = q->ops->submit(q->ctx, q->reqs, n);
        if (r > 0) {
            for (int k = 0; k < r; k++) {
                q->slots[q->pending[head + k]].state = SLOT_INFLIGHT;
            }
            q->inflight += (unsigned)r;
            head += (unsigned)r;
            continue;
        }
        if (r == -EINTR) {
            break;
        }
        if ((r == 0 || r == -EAGAIN || r == -EBUSY) &&
            q->inflight + q->batch_inflight > 0) {
            /* The backend is full: make room, then retry (fio does this). */
            int rr = reap_into(q, 1, NULL);
            if (rr == -EINTR) {
                r = rr;
                break;
            }
            if (rr >= 0) {
                continue;
            }
            r = rr;
        }
        /* Refused, and retrying will not help: the first request fails
         * with that error as its completion; go on with the others. */
        slot_done(q, q->pending[head], r == 0 ? -EAGAIN : r);
        head++;
    }
    memmove(q->pending, q->pending + head, (q->npending - head) * sizeof(unsigned));
    q->npending -= head;
    return q->npending ? -EINTR : 0;
}

/* The batch loop: keep depth requests in flight until all n are done.
 * Returns 0, -EINTR (call again after checking signals) or another -errno
 * from reap (the backend broke: the caller cancels and drains). */
static int
batch_run(QueueObject *q, q_batch *b)
{
    for (;;) {
        unsigned room = q->depth - q->inflight - q->batch_inflight;
        unsigned k = 0;
        uint64_t t = q->latency ? now_ns() : 0;
        while (k < room && (b->nretry > 0 || b->next < b->n)) {
            size_t i = b->nretry > 0 ? b->retry[--b->nretry] : b->next++;
            size_t len = batch_len(b, i);
            size_t done = (size_t)b->results[i];
            if (len == 0) {
                continue;
            }
            unsigned bs = b->bfree[--b->nbfree];
            b->of_bslot[bs] = i;
            b->t_bslot[bs] = t;
            fastio_aio_req *r = &q->reqs[k++];
            r->user_data = BATCH_BIT | bs;
            r->buf = batch_buf(b, i) + done;
            r->len = len - done;
            r->offset = b->offsets[i] + (int64_t)done;
            r->fd = b->fd;
            /* A continuation starts inside the registered buffer too. */
            r->fixed_file = b->fixed_file;
            r->fixed_buf = b->fixed_buf;
            r->opcode = b->opcode;
            r->rw_flags = b->rw_flags;
            r->link = FASTIO_LINK_NONE;
        }
        unsigned sub = 0;
        while (sub < k) {
            unsigned n = k - sub;
            if (n > q->submit_batch) {
                n = q->submit_batch;
            }
            int r = q->ops->submit(q->ctx, q->reqs + sub, n);
            if (r > 0) {
                q->batch_inflight += (unsigned)r;
                sub += (unsigned)r;
                continue;
            }
            if (r == -EINTR) {
                /* Put the rest back: they start again next time. */
                for (unsigned j = sub; j < k; j++) {
                    unsigned bs = (unsigned)(q->reqs[j].user_data & ~BATCH_BIT);
                    b->retry[b->nretry++] = b->of_bslot[bs];
                    b->bfree[b->nbfree++] = bs;
                }
                return -EINTR;
            }
            if ((r == 0 || r == -EAGAIN || r == -EBUSY) &&
                q->inflight + q->batch_inflight > 0) {
                int rr = reap_into(q, 1, NULL);
                if (rr >= 0) {
                    continue;
                }
                if (rr == -EINTR) {
                    for (unsigned j = sub; j < k; j++) {
                        unsigned bs = (unsigned)(q->reqs[j].user_data & ~BATCH_BIT);
                        b->retry[b->nretry++] = b->of_bslot[bs];
                        b->bfree[b->nbfree++] = bs;
                    }
                    return -EINTR;
                }
                r = rr;
            }
            /* This request is refused: it completes with the error. */
            unsigned bs = (unsigned)(q->reqs[sub].user_data & ~BATCH_BIT);
            q->batch_inflight++;  /* batch_complete counts it out */
            batch_complete(q, b, bs, r == 0 ? -EAGAIN : r, t);
            sub++;
        }
        if (q->batch_inflight == 0 && b->nretry == 0 && b->next >= b->n) {
            return 0;
        }
        if (q->batch_inflight + q->inflight == 0) {
            continue;  /* every request of this round was refused: next round */
        }
        /* Also when only the queue's own requests fill it (room was 0):
         * reaping one of them makes room; it goes to the done FIFO. */
        int rr = reap_into(q, 1, NULL);
        if (rr < 0) {
            return rr;
        }
    }
}

/* ================================================================== */
/* Waiting with the GIL (signals, deadlines) */

/* Another thread called close() while this one was inside: the exception
 * (q_leave then finishes the close). Returns -1. */
static int
q_closed_meanwhile(void)
{
    if (!PyErr_Occurred()) {
        PyErr_SetString(PyExc_ValueError,
                        "the Queue was closed by another thread while this call "
                        "was waiting: its requests were cancelled");
    }
    return -1;
}

/* Reap until at least `need` completions or the deadline (ns, 0: none;
 * UINT64_MAX: do not wait). Runs signal handlers every SIGNAL_POLL_NS.
 * Returns 0 or -1 with an exception. */
static int
q_reap_wait(QueueObject *q, unsigned need, uint64_t deadline)
{
    unsigned got = 0;
    for (;;) {
        unsigned outstanding = q->inflight + q->batch_inflight;
        if (outstanding == 0) {
            return 0;
        }
        struct timespec ts = {0, 0};
        unsigned want = need > got ? need - got : 0;
        if (want > 0 && deadline != UINT64_MAX) {
            long long slice = SIGNAL_POLL_NS;
            if (deadline != 0) {
                uint64_t now = now_ns();
                long long left = now >= deadline ? 0 : (long long)(deadline - now);
                if (left < slice) {
                    slice = left;
                }
            }
            ts.tv_sec = slice / 1000000000LL;
            ts.tv_nsec = slice % 1000000000LL;
        }
        if (want == 0 || (ts.tv_sec == 0 && ts.tv_nsec == 0)) {
            want = 0;  /* take what is there, do not wait */
        }
        int r;
        Py_BEGIN_ALLOW_THREADS
        r = reap_into(q, want, &ts);
        Py_END_ALLOW_THREADS
        if (atomic_load(&q->closing)) {
            return q_closed_meanwhile();
        }
        if (r > 0) {
            got += (unsigned)r;
        }
        else if (r < 0 && r != -EINTR && r != -ETIME && r != -ETIMEDOUT &&
                 r != -EAGAIN) {
            fastio_oserror(r, q->ops->name, NULL);
            return -1;
        }
        if (got >= need || want == 0) {
            return 0;
        }
        if (PyErr_CheckSignals() < 0) {
            return -1;
        }
        if (deadline != 0 && deadline != UINT64_MAX && now_ns() >= deadline) {
            return 0;
        }
    }
}

static int
q_submit(QueueObject *q)
{
    while (q->npending > 0) {
        int r;
        Py_BEGIN_ALLOW_THREADS
        r = submit_pending(q);
        Py_END_ALLOW_THREADS
        if (atomic_load(&q->closing)) {
            return q_closed_meanwhile();
        }
        if (r == -EINTR && PyErr_CheckSignals() < 0) {
            return -1;
        }
    }
    return 0;
}

/* Wait for everything in flight, ignoring signals: used by close, which
 * must not leave a request holding a buffer it is about to release. */
static void
q_quiesce(QueueObject *q)
{
    if (q->ctx == NULL) {
        return;
    }
    /* Requests never given to the backend complete as cancelled. */
    for (unsigned k = 0; k < q->npending; k++) {
        slot_done(q, q->pending[k], -ECANCELED);
    }
    q->npending = 0;
    if (q->inflight + q->batch_inflight == 0) {
        return;
    }
    q->draining = 1;
    Py_BEGIN_ALLOW_THREADS
    q->ops->cancel_all(q->ctx);
    while (q->inflight + q->batch_inflight > 0) {
        int r = reap_into(q, 1, NULL);
        if (r < 0 && r != -EINTR && r != -EAGAIN && r != -ETIME) {
            break;  /* a broken backend: nothing more will come */
        }
    }
    Py_END_ALLOW_THREADS
    q->draining = 0;
}

/* Drop the registrations. Detached first: PyBuffer_Release and the
 * DECREF may run Python code (a __release_buffer__, a finalizer) that
 * re-enters the queue, which must then find nothing registered. */
static void
q_unregister(QueueObject *q)
{
    Py_buffer *bufs = q->reg_bufs;
    unsigned nbufs = q->nreg_bufs;
    PyObject *files = q->reg_files;
    q->reg_bufs = NULL;
    q->nreg_bufs = 0;
    q->reg_files = NULL;
    PyMem_Free(q->reg_fds);
    q->reg_fds = NULL;
    q->nreg_fds = 0;
    for (unsigned i = 0; i < nbufs; i++) {
        PyBuffer_Release(&bufs[i]);
    }
    PyMem_Free(bufs);
    Py_XDECREF(files);
}

/* In a forked child: never drive the parent's backend (cancelling its I/O,
 * joining threads that do not exist here, io_uring_enter on its ring). The
 * kernel writes the completions of the parent's requests into the parent's
 * memory, never into this copy, so every buffer this copy pins can go now:
 * release the slots (a closed fastio.mmap of the child then unmaps), the
 * registrations, the child's copy of the eventfd, and let the backend drop
 * its own copies (ring fd and mappings) without a system call on the
 * kernel object the parent still uses. A batch the parent ran in another
 * thread at fork time keeps its buffers: they are that thread's, and it
 * does not exist here. */
static void
q_forget_forked(QueueObject *q)
{
    void *ctx = q->ctx;
    q->ctx = NULL;
    for (unsigned i = 0; i < q->depth; i++) {
        if (q->slots[i].state != SLOT_FREE) {
            slot_release(q, i);
        }
    }
    q->npending = q->done_len = q->done_head = 0;
    q->inflight = q->batch_inflight = 0;
    q->batch = NULL;
    q->busy = 0;  /* the thread that was inside is the parent's */
    q_unregister(q);
    if (q->efd >= 0) {
        close(q->efd);
        q->efd = -1;
    }
    if (q->ops->forget != NULL) {
        q->ops->forget(ctx);
    }
    /* else the backend's copy holds no fd: its memory is left as it is
     * (a mutex in it may be locked by a thread that is not here). */
    Py_CLEAR(q->ready);
}

/* Close: cancel, drain, release every slot, free the backend.
 *
 * Safe from any thread, twice, and from a finalizer (issue 12). While a
 * thread is inside the queue (busy, including a close draining with the
 * GIL released) another close only marks it `closing`: the thread inside
 * finishes (see the top). Otherwise this close marks the queue busy and
 * closing for its whole length, so that every other call (wait, submit,
 * a second close) sees it and leaves the backend alone, and detaches the
 * context (q->ctx = NULL) before it releases anything that can run Python
 * code (a tag's __del__, a weakref.finalize, a buffer's release): a
 * finalizer calling close() again then finds a closed queue. */
static void
q_close(QueueObject *q)
{
    if (q->ctx == NULL) {
        return;
    }
    if (q_forked(q)) {
        q_forget_forked(q);
        return;
    }
    if (q->busy) {
        atomic_store(&q->closing, 1);
        return;
    }
    q->busy = 1;
    atomic_store(&q->closing, 1);
    q_quiesce(q);  /* GIL released: other threads see busy and closing */
    void *ctx = q->ctx;
    q->ctx = NULL;
    if (q->inflight + q->batch_inflight > 0) {
        /* The backend could not give them back (broken, or this thread may
         * not reap them: a single-issuer io_uring ring whose requests are
         * its creator's): keep the buffers pinned forever rather than let
         * the kernel write into freed memory. Drop what pins no buffer:
         * the backend's fds and mappings where it can without waiting
         * (forget: io_uring's kernel ends the requests when its last fd
         * closes), and the eventfd (the kernel holds its own reference). */
        if (q->ops->forget != NULL) {
            q->ops->forget(ctx);
        }
        if (q->efd >= 0) {
            close(q->efd);
            q->efd = -1;
        }
        q->busy = 0;
        return;
    }
    /* The backend holds nothing of ours now: free it before any Python
     * code runs. */
    Py_BEGIN_ALLOW_THREADS
    q->ops->close(ctx);  /* joins threads, unmaps rings: may take a while */
    Py_END_ALLOW_THREADS
    if (q->efd >= 0) {
        close(q->efd);
        q->efd = -1;
    }
    /* Now what may run Python code: each slot is taken off the done FIFO
     * before it is released. */
    while (q->done_len > 0) {
        unsigned i = q->done[q->done_head];
        q->done_head = (q->done_head + 1) % q->depth;
        q->done_len--;
        slot_release(q, i);
    }
    q_unregister(q);
    Py_CLEAR(q->ready);
    q->busy = 0;
}

/* Enter a call that may release the GIL: busy until q_leave. */
static int
q_enter(QueueObject *q)
{
    if (q_check(q) < 0) {
        return -1;
    }
    q->busy = 1;
    return 0;
}

/* Leave it: return result, unless another thread called close() meanwhile:
 * then finish the close here (this thread owns the requests in flight) and
 * raise ValueError, or the exception already set. */
static PyObject *
q_leave(QueueObject *q, PyObject *result)
{
    q->busy = 0;
    if (!atomic_load(&q->closing)) {
        return result;
    }
    Py_XDECREF(result);  /* completions of a closed queue: dropped, as by close() */
    q_closed_meanwhile();
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    q_close(q);  /* releases tags and buffers: may run finalizers */
    PyErr_Restore(type, value, tb);
    return NULL;
}

/* ================================================================== */
/* Type slots */

static PyObject *
Queue_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"depth", "backend", "sqpoll", "sqpoll_idle_ms",
                             "threads", "latency", "submit_batch", NULL};
    PyObject *depth_o = NULL, *idle_o = NULL, *threads_o = NULL, *batch_o = NULL;
    const char *name = "threads";
    int sqpoll = 0, latency = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|Os$pOOpO:Queue", kwlist, &depth_o,
                                     &name, &sqpoll, &idle_o, &threads_o, &latency,
                                     &batch_o)) {
        return NULL;
    }
    /* Every count range-checked and named (a float is refused), before
     * anything is allocated: __index__ can run Python code. */
    long long depth = 64, submit_batch = SUBMIT_BATCH_DEFAULT, idle = 0, threads = 0;
    if ((depth_o && fastio_int_arg(depth_o, "depth", 1, DEPTH_MAX, &depth) < 0) ||
        (batch_o &&
         fastio_int_arg(batch_o, "submit_batch", 1, LLONG_MAX, &submit_batch) < 0) ||
        (idle_o && fastio_int_arg(idle_o, "sqpoll_idle_ms", 0, INT_MAX, &idle) < 0) ||
        (threads_o && fastio_int_arg(threads_o, "threads", 0, INT_MAX, &threads) < 0)) {
        return NULL;
    }
    const fastio_aio_ops *ops = NULL;
    size_t index = 0;
    for (size_t i = 0; i < NBACKENDS; i++) {
        if (strcmp(all_backends[i]->name, name) == 0) {
            ops = all_backends[i];
            index = i;
        }
    }
    if (ops == NULL) {
        PyErr_Format(PyExc_ValueError,
                     "backend must be 'io_uring', 'linux_aio', 'posix_aio' or "
                     "'threads', got backend='%s'", name);
        return NULL;
    }
    fastio_state *st = fastio_state_from_type(type);
    char why[256] = "";
    unsigned features = 0;
    int err = cached_probe(index, why, sizeof why, &features);
    if (err < 0 || ops->open == NULL) {
        if (err == 0) {
            err = -ENOSYS;
        }
        return fastio_backend_unavailable(
            st->BackendUnavailable, err,
            PyUnicode_FromFormat("backend '%s' does not work here: %s", ops->name,
                                 why[0] ? why : strerror(-err)));
    }

    QueueObject *q = (QueueObject *)type->tp_alloc(type, 0);
    if (q == NULL) {
        return NULL;
    }
    q->ops = ops;
    q->depth = (unsigned)depth;
    q->efd = -1;
    q->latency = latency;
    /* More than depth cannot be in one call anyway. */
    q->submit_batch = submit_batch < depth ? (unsigned)submit_batch : (unsigned)depth;
    q->slots = PyMem_Calloc(q->depth, sizeof *q->slots);
    q->free_stack = PyMem_Calloc(q->depth, sizeof(unsigned));
    q->pending = PyMem_Calloc(q->depth, sizeof(unsigned));
    q->done = PyMem_Calloc(q->depth, sizeof(unsigned));
    q->reqs = PyMem_Calloc(q->depth, sizeof *q->reqs);
    q->cqes = PyMem_Calloc(q->depth, sizeof *q->cqes);
    q->hist = PyMem_Calloc(LAT_BUCKETS, sizeof(uint64_t));
    q->ready = PyList_New(0);
    if (!q->slots || !q->free_stack || !q->pending || !q->done || !q->reqs ||
        !q->cqes || !q->hist || !q->ready) {
        Py_DECREF(q);
        return PyErr_NoMemory();
    }
    for (unsigned i = 0; i < q->depth; i++) {
        q->free_stack[i] = q->depth - 1 - i;
    }
    q->nfree = q->depth;

    fastio_aio_options opts = {.depth = q->depth, .sqpoll = sqpoll,
                               .sqpoll_idle_ms = (int)idle, .threads = (int)threads};
    void *ctx = NULL;
    Py_BEGIN_ALLOW_THREADS
    err = ops->open(&ctx, &opts, &features);
    Py_END_ALLOW_THREADS
    if (err < 0) {
        Py_DECREF(q);
        char sys[64];
        snprintf(sys, sizeof sys, "%s open", ops->name);
        return fastio_oserror(err, sys, NULL);
    }
    q->ctx = ctx;
    q->features = features;
    q->fork_generation = fork_generation;
    return (PyObject *)q;
}

static int
Queue_traverse(QueueObject *q, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(q));
    Py_VISIT(q->ready);
    Py_VISIT(q->reg_files);
    /* Registered buffers hold their exporters: a cycle through one (a
     * buffer object keeping its queue) must be seen, or it is never
     * collected and the ring's fd and pinned pages leak (issue 12). */
    for (unsigned i = 0; q->reg_bufs && i < q->nreg_bufs; i++) {
        Py_VISIT(q->reg_bufs[i].obj);
    }
    if (q->slots) {
        for (unsigned i = 0; i < q->depth; i++) {
            Py_VISIT(q->slots[i].tag);
            Py_VISIT(q->slots[i].file);
            if (q->slots[i].has_view) {
                Py_VISIT(q->slots[i].view.obj);
            }
        }
    }
    return 0;
}

static int
Queue_clear(QueueObject *q)
{
    /* A cycle through a tag or a buffer: finish the I/O first, so no
     * buffer is released while the kernel may still write into it. */
    q_close(q);
    Py_CLEAR(q->ready);
    return 0;
}

static void
Queue_dealloc(QueueObject *q)
{
    PyTypeObject *tp = Py_TYPE(q);
    PyObject_GC_UnTrack(q);
    if (q->weakreflist != NULL) {
        PyObject_ClearWeakRefs((PyObject *)q);
    }
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    q_close(q);
    PyErr_Restore(type, value, tb);
    if (q->inflight + q->batch_inflight == 0) {
        /* Else a broken backend kept requests: their slots (and the
         * buffers they pin) are leaked on purpose, see q_close. */
        PyMem_Free(q->slots);
    }
    Py_CLEAR(q->ready);
    PyMem_Free(q->free_stack);
    PyMem_Free(q->pending);
    PyMem_Free(q->done);
    PyMem_Free(q->reqs);
    PyMem_Free(q->cqes);
    PyMem_Free(q->hist);
    tp->tp_free(q);
    Py_DECREF(tp);
}

/* ================================================================== */
/* Methods */

/* q_add's work, the queue entered (busy): fetching the buffer may run
 * Python code, making room releases the GIL. fd and offset were converted
 * by q_add before it entered. */
static PyObject *
q_add_request(QueueObject *q, PyObject *const *args, int fd, int64_t offset,
              uint8_t opcode, const char *func, PyObject *tag)
{
    /* Make room: completions reaped but not yet asked for move to the
     * ready list; with none, wait for one. */
    if (q->nfree == 0) {
        if (q->done_len == 0) {
            if (q_submit(q) < 0 || q_reap_wait(q, 1, 0) < 0) {
                return NULL;
            }
        }
        if (collect_done(q, q->ready) < 0) {
            return NULL;
        }
        if (q->nfree == 0) {  /* the wait was interrupted without raising */
            PyErr_SetString(PyExc_RuntimeError, "no completion came back");
            return NULL;
        }
    }
    unsigned i = q->free_stack[q->nfree - 1];
    q_slot *s = &q->slots[i];
    if (opcode != FASTIO_OP_FSYNC) {
        if (get_buffer(args[1], &s->view, opcode == FASTIO_OP_READ, func, "buf") < 0) {
            return NULL;
        }
        s->has_view = 1;
    }
    q->nfree--;
    if (tag == Py_None) {
        tag = PyLong_FromUnsignedLongLong(q->next_tag++);
        if (tag == NULL) {
            slot_release(q, i);
            return NULL;
        }
    }
    else {
        Py_INCREF(tag);
    }
    s->tag = tag;
    if (!PyLong_CheckExact(args[0])) {
        s->file = Py_NewRef(args[0]);
    }
    s->state = SLOT_PENDING;
    fastio_aio_req *r = &s->req;
    r->user_data = i;
    r->fd = fd;
    r->opcode = opcode;
    r->offset = offset;
    r->buf = s->has_view ? s->view.buf : NULL;
    r->len = s->has_view ? (size_t)s->view.len : 0;
    r->fixed_file = -1;
    r->fixed_buf = -1;
    r->rw_flags = 0;
    r->link = FASTIO_LINK_NONE;
    for (unsigned k = 0; k < q->nreg_fds; k++) {
        if (q->reg_fds[k] == fd) {
            r->fixed_file = (int)k;
            break;
        }
    }
    for (unsigned k = 0; s->has_view && k < q->nreg_bufs; k++) {
        char *b = q->reg_bufs[k].buf;
        if ((char *)r->buf >= b && (char *)r->buf + r->len <= b + q->reg_bufs[k].len) {
            r->fixed_buf = (int)k;
            break;
        }
    }
    q->pending[q->npending++] = i;
    return Py_NewRef(tag);
}

static PyObject *
q_add(QueueObject *q, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
      uint8_t opcode)
{
    static const char *const names[] = {"read", "write", "fsync"};
    const char *func = names[opcode];
    Py_ssize_t npos = opcode == FASTIO_OP_FSYNC ? 1 : 3;
    PyObject *tag = Py_None;
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    if (nargs == npos + 1 && nkw == 0) {
        tag = args[npos];
    }
    else if (nargs != npos || nkw > 1 ||
             (nkw == 1 && !PyUnicode_Check(PyTuple_GET_ITEM(kwnames, 0)))) {
        PyErr_Format(PyExc_TypeError, "%s() takes %zd positional arguments and an "
                     "optional tag (%zd given)", func, npos, nargs + nkw);
        return NULL;
    }
    else if (nkw == 1) {
        if (PyUnicode_CompareWithASCIIString(PyTuple_GET_ITEM(kwnames, 0), "tag") != 0) {
            PyErr_Format(PyExc_TypeError, "%s() got an unexpected keyword argument '%U'",
                         func, PyTuple_GET_ITEM(kwnames, 0));
            return NULL;
        }
        tag = args[nargs];
    }
    /* fileno() and __index__ can run Python code: converted before the
     * queue is entered. */
    int fd;
    long long offset = 0;
    if (fastio_fd_arg(args[0], "file", &fd) < 0 ||
        (opcode != FASTIO_OP_FSYNC &&
         fastio_int_arg(args[2], "offset", 0, INT64_MAX, &offset) < 0)) {
        return NULL;
    }
    if (q_enter(q) < 0) {
        return NULL;
    }
    return q_leave(q, q_add_request(q, args, fd, (int64_t)offset, opcode, func, tag));
}

PyDoc_STRVAR(read_doc,
"read($self, file, buf, offset, /, tag=None)\n--\n\n"
"Queue a read of len(buf) bytes of file (an fd or an object with fileno())\n"
"at offset into the writable buffer buf. Return the tag (an increasing int\n"
"when None). buf stays pinned until wait() hands back the completion.\n"
"The request goes to the backend at the next submit() or wait().");

static PyObject *
Queue_read(QueueObject *q, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    return q_add(q, args, nargs, kwnames, FASTIO_OP_READ);
}

PyDoc_STRVAR(write_doc,
"write($self, file, buf, offset, /, tag=None)\n--\n\n"
"Queue a write of buf at offset of file. Return the tag.");

static PyObject *
Queue_write(QueueObject *q, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    return q_add(q, args, nargs, kwnames, FASTIO_OP_WRITE);
}

PyDoc_STRVAR(fsync_doc,
"fsync($self, file, /, tag=None)\n--\n\n"
"Queue an fsync of file. It is not ordered after earlier writes of the\n"
"queue: wait for those first. Return the tag.");

static PyObject *
Queue_fsync(QueueObject *q, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    return q_add(q, args, nargs, kwnames, FASTIO_OP_FSYNC);
}

PyDoc_STRVAR(submit_doc,
"submit($self, /)\n--\n\n"
"Hand every queued request to the backend (GIL released). Return how many\n"
"requests are now in flight.");

static PyObject *
Queue_submit(QueueObject *q, PyObject *Py_UNUSED(ignored))
{
    if (q_enter(q) < 0) {
        return NULL;
    }
    return q_leave(q, q_submit(q) < 0 ? NULL : PyLong_FromUnsignedLong(q->inflight));
}

/* The completions: the ready list, then reaped slots. */
static PyObject *
take_completions(QueueObject *q)
{
    PyObject *out = q->ready;
    q->ready = PyList_New(0);
    if (q->ready == NULL) {
        q->ready = out;
        return NULL;
    }
    if (collect_done(q, out) < 0) {
        Py_DECREF(out);
        return NULL;
    }
    return out;
}

/* wait()'s timeout as a CLOCK_MONOTONIC deadline in ns: None or inf: no
 * deadline (0); 0: do not wait (UINT64_MAX). The argument is checked as
 * every fastio timeout is (fastio_parse_timeout: NaN or negative ->
 * ValueError, past FASTIO_TIMEOUT_MAX -> OverflowError, so that the
 * nanosecond product below stays far inside a uint64). */
static int
get_deadline(PyObject *timeout, uint64_t *deadline)
{
    double t;
    *deadline = 0;
    if (fastio_parse_timeout(timeout, "timeout", &t) < 0) {
        return -1;
    }
    if (t < 0) {
        return 0;
    }
    if (t == 0) {
        *deadline = UINT64_MAX;
        return 0;
    }
    uint64_t ns = (uint64_t)(t * 1e9);
    *deadline = now_ns() + (ns ? ns : 1);
    return 0;
}

PyDoc_STRVAR(wait_doc,
"wait($self, /, min_complete=1, timeout=None)\n--\n\n"
"Submit what is queued, wait until at least min_complete requests have\n"
"completed (fewer if fewer are outstanding) or timeout seconds passed,\n"
"and return every completion available as a list of (tag, result):\n"
"result is the byte count, or the OSError of that request. GIL released.");

static PyObject *
Queue_wait(QueueObject *q, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"min_complete", "timeout", NULL};
    PyObject *min_o = NULL;
    PyObject *timeout = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|OO:wait", kwlist, &min_o, &timeout)) {
        return NULL;
    }
    long long min_ll = 1;
    if (min_o != NULL &&
        fastio_int_arg(min_o, "min_complete", 0, PY_SSIZE_T_MAX, &min_ll) < 0) {
        return NULL;
    }
    Py_ssize_t min_complete = (Py_ssize_t)min_ll;
    uint64_t deadline = 0;
    if (get_deadline(timeout, &deadline) < 0) {
        return NULL;
    }
    if (q_enter(q) < 0) {
        return NULL;
    }
    if (q_submit(q) < 0) {
        return q_leave(q, NULL);
    }
    Py_ssize_t have = PyList_GET_SIZE(q->ready) + q->done_len;
    /* More than depth can never be outstanding: clamp before the cast. */
    Py_ssize_t want = min_complete > have ? min_complete - have : 0;
    unsigned need = want > (Py_ssize_t)q->depth ? q->depth : (unsigned)want;
    /* Also take what completed already, without waiting. */
    if (q_reap_wait(q, need, need ? deadline : UINT64_MAX) < 0) {
        return q_leave(q, NULL);
    }
    return q_leave(q, take_completions(q));
}

PyDoc_STRVAR(drain_doc,
"drain($self, /)\n--\n\n"
"Submit what is queued, wait for every request in flight and return all\n"
"their completions.");

static PyObject *
Queue_drain(QueueObject *q, PyObject *Py_UNUSED(ignored))
{
    if (q_enter(q) < 0) {
        return NULL;
    }
    if (q_submit(q) < 0) {
        return q_leave(q, NULL);
    }
    while (q->inflight > 0) {
        if (q_reap_wait(q, q->inflight, 0) < 0) {
            return q_leave(q, NULL);
        }
    }
    return q_leave(q, take_completions(q));
}

PyDoc_STRVAR(close_doc,
"close($self, /)\n--\n\n"
"Cancel what is in flight, wait until the backend gave every request\n"
"back, release their buffers and free the backend (its threads joined,\n"
"its ring unmapped). Idempotent, and safe from a finalizer (a tag's\n"
"__del__ calling close() finds the queue closed). From another thread\n"
"while a thread is inside the queue (waiting, submitting, in a batch, or\n"
"draining in close()): mark it closed and return at once; that thread\n"
"finishes the close (a waiter raises ValueError).");

static PyObject *
Queue_close(QueueObject *q, PyObject *Py_UNUSED(ignored))
{
    /* A thread inside the queue finishes the close: q_close marks it. */
    q_close(q);
    Py_RETURN_NONE;
}

static PyObject *
Queue_enter(QueueObject *q, PyObject *Py_UNUSED(ignored))
{
    if (q_check(q) < 0) {
        return NULL;
    }
    return Py_NewRef(q);
}

static PyObject *
Queue_exit(QueueObject *q, PyObject *args)
{
    /* Normal exit: let what was queued finish; on an exception, cancel. */
    if (PyTuple_GET_SIZE(args) > 0 && PyTuple_GET_ITEM(args, 0) == Py_None &&
        q->ctx != NULL && !q->busy) {
        PyObject *r = Queue_drain(q, NULL);
        if (r == NULL) {
            q_close(q);
            return NULL;
        }
        Py_DECREF(r);
    }
    return Queue_close(q, NULL);
}

PyDoc_STRVAR(batch_doc,
"_batch($self, write, file, offsets, lengths, size, dest, results, rw_flags=0, /)\n--\n\n"
"Run len(offsets) reads (write=False) or writes at offsets (int64 buffer)\n"
"of lengths (int64 buffer) or, when lengths is None, of size bytes each,\n"
"into/out of dest: one contiguous buffer holding the requests back to back,\n"
"or a list with one buffer per request. Short counts are continued. The\n"
"int64 buffer results receives each request's byte count or -errno.\n"
"The queue stays full; one GIL release for the whole batch. rw_flags:\n"
"RWF_* bits for every request (RWF_DONTCACHE for uncached=True); a\n"
"backend that cannot pass them on fails the requests with EOPNOTSUPP.");

static int
get_i64_array(PyObject *obj, Py_buffer *view, int writable, const char *name,
              Py_ssize_t n)
{
    if (get_buffer(obj, view, writable, "_batch", name) < 0) {
        return -1;
    }
    if (view->len % 8 != 0 || (n >= 0 && view->len / 8 != n) ||
        (uintptr_t)view->buf % _Alignof(int64_t)) {
        PyErr_Format(PyExc_ValueError, "%s must be an aligned int64 array%s", name,
                     n >= 0 ? " with one item per offset" : "");
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

/* Copy an int64 array argument into C memory (dst, n items): the loop
 * runs with the GIL released, and the caller's array may change meanwhile
 * (another thread, or the batch's own reads landing on it when dest
 * overlaps it): only this copy is validated and used (issue 12). */
static int
copy_i64_array(PyObject *obj, const char *name, Py_ssize_t *n, int64_t **dst)
{
    Py_buffer view;
    if (get_i64_array(obj, &view, 0, name, *n) < 0) {
        return -1;
    }
    Py_ssize_t count = view.len / 8;
    *dst = PyMem_Malloc(count ? (size_t)count * sizeof(int64_t) : 1);
    if (*dst == NULL) {
        PyBuffer_Release(&view);
        PyErr_NoMemory();
        return -1;
    }
    memcpy(*dst, view.buf, (size_t)count * sizeof(int64_t));
    PyBuffer_Release(&view);
    *n = count;
    return 0;
}

static PyObject *
Queue_batch(QueueObject *q, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 7 && nargs != 8) {
        PyErr_Format(PyExc_TypeError, "_batch() takes 7 or 8 arguments (%zd given)",
                     nargs);
        return NULL;
    }
    if (q_check(q) < 0) {
        return NULL;
    }
    int writing = PyObject_IsTrue(args[0]);
    int fd;
    long long size = 0;
    long long rw_flags = 0;
    if (writing < 0 || fastio_fd_arg(args[1], "file", &fd) < 0 ||
        (args[3] == Py_None && fastio_int_arg(args[4], "size", 0, INT64_MAX, &size) < 0) ||
        (nargs == 8 && fastio_int_arg(args[7], "rw_flags", 0, UINT32_MAX, &rw_flags) < 0)) {
        return NULL;
    }
    /* RWF_DONTCACHE only, as rw.c's flags: RWF_APPEND would ignore the
     * offsets of a write batch, RWF_NOWAIT fail requests with EAGAIN. */
    if (rw_flags & ~(long long)RWF_DONTCACHE) {
        PyErr_Format(PyExc_ValueError, "rw_flags may hold RWF_DONTCACHE (0x%x) only, "
                     "got rw_flags=%lld", (unsigned)RWF_DONTCACHE, rw_flags);
        return NULL;
    }
    PyObject *result = NULL;
    Py_buffer resv = {0}, destv = {0};
    Py_buffer *views = NULL;
    Py_ssize_t nviews = 0;
    PyObject *seq = NULL;
    int64_t *offsets = NULL, *lengths = NULL, *results = NULL;
    q_batch b;
    memset(&b, 0, sizeof b);
    void *mem = NULL;
    int entered = 0;

    Py_ssize_t n = -1;
    if (copy_i64_array(args[2], "offsets", &n, &offsets) < 0) {
        return NULL;
    }
    if (args[3] != Py_None && copy_i64_array(args[3], "lengths", &n, &lengths) < 0) {
        goto done;
    }
    /* results: kept exported (it cannot be resized under us) but written
     * only at the end, with the GIL held, from a private copy: the loop
     * reads its own running counts back, and must not see them change. */
    if (get_i64_array(args[6], &resv, 1, "results", n) < 0) {
        goto done;
    }
    results = PyMem_Calloc(n ? (size_t)n : 1, sizeof(int64_t));
    if (results == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    b.fd = fd;
    b.opcode = writing ? FASTIO_OP_WRITE : FASTIO_OP_READ;
    b.rw_flags = (uint32_t)rw_flags;
    b.n = (size_t)n;
    b.offsets = offsets;
    b.lengths = lengths;
    b.size = (size_t)size;
    b.results = results;
    b.fixed_file = -1;
    b.fixed_buf = -1;
    for (Py_ssize_t i = 0; i < n; i++) {
        int64_t len = lengths ? lengths[i] : size;
        if (offsets[i] < 0) {
            PyErr_Format(PyExc_ValueError, "offsets[%zd] must be >= 0, got %lld", i,
                         (long long)offsets[i]);
            goto done;
        }
        if (len < 0) {
            PyErr_Format(PyExc_ValueError, "lengths[%zd] must be >= 0, got %lld", i,
                         (long long)len);
            goto done;
        }
        /* offset + bytes done is computed in int64 for every request. */
        if (len > INT64_MAX - offsets[i]) {
            PyErr_Format(PyExc_OverflowError,
                         "offsets[%zd] + length must fit in 64 bits, got offset %lld "
                         "+ length %lld", i, (long long)offsets[i], (long long)len);
            goto done;
        }
    }
    mem = PyMem_Calloc(q->depth, sizeof(size_t) * 2 + sizeof(uint64_t) + sizeof(unsigned));
    if (mem == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    b.of_bslot = mem;
    b.retry = b.of_bslot + q->depth;
    b.t_bslot = (uint64_t *)(b.retry + q->depth);
    b.bfree = (unsigned *)(b.t_bslot + q->depth);
    for (unsigned i = 0; i < q->depth; i++) {
        b.bfree[i] = i;
    }
    b.nbfree = q->depth;

    if (PyList_Check(args[5]) || PyTuple_Check(args[5])) {
        /* A private tuple: a buffer's __buffer__ (Python 3.12+) may clear
         * or shrink the caller's list while we walk it. */
        seq = PySequence_Tuple(args[5]);
        if (seq == NULL) {
            goto done;
        }
        if (PyTuple_GET_SIZE(seq) != n) {
            PyErr_Format(PyExc_ValueError, "dest has %zd buffers for %zd offsets",
                         PyTuple_GET_SIZE(seq), n);
            goto done;
        }
        views = PyMem_Calloc(n ? n : 1, sizeof(Py_buffer) + sizeof(char *));
        if (views == NULL) {
            PyErr_NoMemory();
            goto done;
        }
        b.bufs = (char **)(views + n);
        for (; nviews < n; nviews++) {
            PyObject *item = PyTuple_GET_ITEM(seq, nviews);
            if (get_buffer(item, &views[nviews], !writing, "_batch", "dest") < 0) {
                goto done;
            }
            size_t want = batch_len(&b, (size_t)nviews);
            if ((size_t)views[nviews].len < want) {
                PyErr_Format(PyExc_ValueError,
                             "dest[%zd] holds %zd bytes, request %zd needs %zu",
                             nviews, views[nviews].len, nviews, want);
                nviews++;
                goto done;
            }
            b.bufs[nviews] = views[nviews].buf;
        }
    }
    else {
        if (get_buffer(args[5], &destv, !writing, "_batch", "dest") < 0) {
            goto done;
        }
        /* The bytes the requests need, checked against dest without
         * wrapping around (n * size or the sum of lengths can pass 2^64). */
        size_t total = 0;
        int wrapped = 0;
        if (b.lengths) {
            b.pos = PyMem_Malloc((n ? n : 1) * sizeof(size_t));
            if (b.pos == NULL) {
                PyErr_NoMemory();
                goto done;
            }
            for (Py_ssize_t i = 0; i < n && !wrapped; i++) {
                b.pos[i] = total;
                wrapped = __builtin_add_overflow(total, (size_t)b.lengths[i], &total);
            }
        }
        else {
            wrapped = __builtin_mul_overflow((size_t)n, b.size, &total);
        }
        if (wrapped || total > (size_t)destv.len) {
            PyErr_Format(PyExc_ValueError, "dest holds %zd bytes, the requests need %s%zu",
                         destv.len, wrapped ? "more than " : "", wrapped ? SIZE_MAX : total);
            goto done;
        }
        b.base = destv.buf;
        for (unsigned k = 0; k < q->nreg_bufs; k++) {
            char *rb = q->reg_bufs[k].buf;
            if (b.base >= rb && b.base + total <= rb + q->reg_bufs[k].len) {
                b.fixed_buf = (int)k;
                break;
            }
        }
    }
    for (unsigned k = 0; k < q->nreg_fds; k++) {
        if (q->reg_fds[k] == fd) {
            b.fixed_file = (int)k;
            break;
        }
    }

    /* The loop, with the GIL released; out only for signals. The fd and
     * buffers above may have run Python code: check the queue again. */
    if (q_enter(q) < 0) {
        goto done;
    }
    entered = 1;
    q->batch = &b;
    int r;
    for (;;) {
        Py_BEGIN_ALLOW_THREADS
        r = batch_run(q, &b);
        Py_END_ALLOW_THREADS
        if (r != -EINTR || atomic_load(&q->closing)) {
            break;
        }
        if (PyErr_CheckSignals() < 0) {
            break;
        }
    }
    if (r >= 0 && atomic_load(&q->closing)) {
        r = -ECANCELED;  /* done, but the caller gets the close: see q_leave */
    }
    if (r < 0) {
        /* A signal handler raised, the backend broke or another thread
         * closed the queue: stop the batch and wait for its requests
         * before the buffers are released. */
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        q->draining = 1;
        Py_BEGIN_ALLOW_THREADS
        q->ops->cancel_all(q->ctx);
        while (q->batch_inflight > 0) {
            int rr = reap_into(q, 1, NULL);
            if (rr < 0 && rr != -EINTR && rr != -EAGAIN) {
                break;
            }
        }
        Py_END_ALLOW_THREADS
        q->draining = 0;
        PyErr_Restore(type, value, tb);
        if (atomic_load(&q->closing)) {
            q_closed_meanwhile();
        }
        else if (r != -EINTR) {
            fastio_oserror(r, q->ops->name, NULL);
        }
        if (q->batch_inflight > 0) {
            q->batch = NULL;
            /* Leak the pins: memory the kernel may still write must stay. */
            views = NULL;
            memset(&destv, 0, sizeof destv);
            mem = NULL;
            goto done;
        }
    }
    q->batch = NULL;
    /* Back to the caller's array, the GIL held (the array is still
     * exported, so still there and still n items). */
    memcpy(resv.buf, results, (size_t)n * sizeof(int64_t));
    if (r >= 0 || r == -EINTR) {
        result = r >= 0 ? Py_NewRef(Py_None) : NULL;
    }

done:
    for (Py_ssize_t i = 0; i < nviews; i++) {
        if (views) {
            PyBuffer_Release(&views[i]);
        }
    }
    PyMem_Free(views);
    Py_XDECREF(seq);
    PyMem_Free(b.pos);
    PyMem_Free(mem);
    PyMem_Free(offsets);
    PyMem_Free(lengths);
    PyMem_Free(results);
    if (destv.obj) {
        PyBuffer_Release(&destv);
    }
    if (resv.obj) {
        PyBuffer_Release(&resv);
    }
    return entered ? q_leave(q, result) : result;
}

/* Registrations are replaced only on an idle queue: a request in flight
 * names a registered file or buffer by index. */
static int
q_check_idle(QueueObject *q, const char *func)
{
    if (q_check(q) < 0) {
        return -1;
    }
    if (q->inflight + q->batch_inflight + q->npending + q->done_len > 0) {
        PyErr_Format(PyExc_RuntimeError, "%s() needs an idle queue: drain() first", func);
        return -1;
    }
    return 0;
}

PyDoc_STRVAR(register_files_doc,
"register_files($self, files, /)\n--\n\n"
"Register files (fds or objects with fileno()) with the backend, so that\n"
"requests on them skip the kernel's per-request file lookup. An empty list\n"
"unregisters. Nothing may be in flight. NotImplementedError when the\n"
"backend has no registered files.");

static PyObject *
Queue_register_files(QueueObject *q, PyObject *files)
{
    if (q_check(q) < 0) {
        return NULL;
    }
    if (q->ops->register_files == NULL) {
        PyErr_Format(PyExc_NotImplementedError,
                     "the %s backend has no registered files", q->ops->name);
        return NULL;
    }
    if (q_check_idle(q, "register_files") < 0) {
        return NULL;
    }
    PyObject *seq = PySequence_List(files);
    if (seq == NULL) {
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(seq);
    int *fds = PyMem_Malloc((n ? n : 1) * sizeof(int));
    if (fds == NULL) {
        Py_DECREF(seq);
        return PyErr_NoMemory();
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        if (fastio_fd_arg(PyList_GET_ITEM(seq, i), "file", &fds[i]) < 0) {
            PyMem_Free(fds);
            Py_DECREF(seq);
            return NULL;
        }
    }
    /* fileno() above may have run Python code (closed the queue, queued
     * a request that names a registered file by index): check again. */
    if (q_check_idle(q, "register_files") < 0 || q_enter(q) < 0) {
        PyMem_Free(fds);
        Py_DECREF(seq);
        return NULL;
    }
    int r;
    if (q->nreg_fds > 0) {
        q->ops->register_files(q->ctx, NULL, 0);
    }
    Py_BEGIN_ALLOW_THREADS
    r = n ? q->ops->register_files(q->ctx, fds, (unsigned)n) : 0;
    Py_END_ALLOW_THREADS
    PyMem_Free(q->reg_fds);
    q->reg_fds = NULL;
    q->nreg_fds = 0;
    Py_CLEAR(q->reg_files);  /* busy: a finalizer cannot re-enter */
    if (r < 0) {
        PyMem_Free(fds);
        Py_DECREF(seq);
        return q_leave(q, fastio_oserror(r, "register_files", NULL));
    }
    q->reg_fds = fds;
    q->nreg_fds = (unsigned)n;
    q->reg_files = seq;
    return q_leave(q, Py_NewRef(Py_None));
}

PyDoc_STRVAR(register_buffers_doc,
"register_buffers($self, buffers, /)\n--\n\n"
"Register writable buffers with the backend (their pages pinned once, not\n"
"per request); requests whose memory lies inside one use it by index.\n"
"The buffers stay exported until unregistered (an empty list) or close().\n"
"NotImplementedError when the backend has no registered buffers.");

static PyObject *
Queue_register_buffers(QueueObject *q, PyObject *buffers)
{
    if (q_check(q) < 0) {
        return NULL;
    }
    if (q->ops->register_buffers == NULL) {
        PyErr_Format(PyExc_NotImplementedError,
                     "the %s backend has no registered buffers", q->ops->name);
        return NULL;
    }
    if (q_check_idle(q, "register_buffers") < 0) {
        return NULL;
    }
    /* A private tuple: a buffer's __buffer__ (Python 3.12+) may clear the
     * caller's list while we walk it (issue 12). */
    if (Py_TYPE(buffers)->tp_iter == NULL && !PySequence_Check(buffers)) {
        PyErr_Format(PyExc_TypeError,
                     "buffers must be a sequence of buffers, got buffers of type %.100s",
                     Py_TYPE(buffers)->tp_name);
        return NULL;
    }
    PyObject *seq = PySequence_Tuple(buffers);
    if (seq == NULL) {
        return NULL;
    }
    Py_ssize_t n = PyTuple_GET_SIZE(seq);
    if ((size_t)n > UINT_MAX) {
        Py_DECREF(seq);
        PyErr_Format(PyExc_OverflowError, "buffers holds too many buffers (%zd)", n);
        return NULL;
    }
    Py_buffer *views = PyMem_Calloc(n ? n : 1, sizeof(Py_buffer));
    struct iovec *iov = PyMem_Calloc(n ? n : 1, sizeof(struct iovec));
    Py_ssize_t got = 0;
    int r = 0, entered = 0;
    if (views == NULL || iov == NULL) {
        PyErr_NoMemory();
        goto fail;
    }
    for (; got < n; got++) {
        if (get_buffer(PyTuple_GET_ITEM(seq, got), &views[got], 1,
                       "register_buffers", "buffers") < 0) {
            goto fail;
        }
        iov[got].iov_base = views[got].buf;
        iov[got].iov_len = (size_t)views[got].len;
    }
    /* The buffers above may have run Python code (closed the queue, queued
     * a request inside a registered buffer): check the queue again. */
    if (q_check_idle(q, "register_buffers") < 0 || q_enter(q) < 0) {
        goto fail;
    }
    entered = 1;
    /* The old registrations: unregistered with the backend and detached
     * first, released (which may run Python code) only after the new ones
     * are in place, the queue still busy. */
    Py_buffer *old = q->reg_bufs;
    unsigned nold = q->nreg_bufs;
    q->reg_bufs = NULL;
    q->nreg_bufs = 0;
    if (nold > 0) {
        q->ops->register_buffers(q->ctx, NULL, 0);
    }
    if (n > 0) {
        Py_BEGIN_ALLOW_THREADS
        r = q->ops->register_buffers(q->ctx, iov, (unsigned)n);
        Py_END_ALLOW_THREADS
    }
    for (unsigned i = 0; i < nold; i++) {
        PyBuffer_Release(&old[i]);
    }
    PyMem_Free(old);
    if (r < 0) {
        fastio_oserror(r, "register_buffers", NULL);
        goto fail;
    }
    PyMem_Free(iov);
    Py_DECREF(seq);
    if (n == 0) {
        PyMem_Free(views);
    }
    else {
        q->reg_bufs = views;
        q->nreg_bufs = (unsigned)n;
    }
    return q_leave(q, Py_NewRef(Py_None));

fail:
    for (Py_ssize_t i = 0; i < got; i++) {
        PyBuffer_Release(&views[i]);
    }
    PyMem_Free(views);
    PyMem_Free(iov);
    Py_DECREF(seq);
    return entered ? q_leave(q, NULL) : NULL;
}

PyDoc_STRVAR(eventfd_doc,
"_eventfd($self, /)\n--\n\n"
"The queue's eventfd (created on first use, non-blocking): the backend\n"
"signals it on every completion. -1 when the backend cannot.");

static PyObject *
Queue_eventfd(QueueObject *q, PyObject *Py_UNUSED(ignored))
{
    if (q_check(q) < 0) {
        return NULL;
    }
    if (q->efd >= 0) {
        return PyLong_FromLong(q->efd);
    }
    if (q->ops->set_eventfd == NULL) {
        return PyLong_FromLong(-1);
    }
    int efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (efd < 0) {
        return fastio_oserror_errno("eventfd", NULL);
    }
    int r = q->ops->set_eventfd(q->ctx, efd);
    if (r < 0) {
        close(efd);
        if (r == -EINVAL || r == -ENOSYS || r == -EOPNOTSUPP) {
            return PyLong_FromLong(-1);
        }
        return fastio_oserror(r, "set_eventfd", NULL);
    }
    q->efd = efd;
    return PyLong_FromLong(efd);
}

PyDoc_STRVAR(latency_doc,
"latency_histogram($self, /, reset=False)\n--\n\n"
"The latencies recorded (Queue(latency=True)), submit to reap, as a list\n"
"of (upper bound in ns, count) for the non-empty buckets (3% wide).");

static PyObject *
Queue_latency_histogram(QueueObject *q, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"reset", NULL};
    int reset = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|p:latency_histogram", kwlist, &reset)) {
        return NULL;
    }
    if (q->busy) {
        /* Another thread's reap is counting into it with the GIL released. */
        PyErr_SetString(PyExc_RuntimeError,
                        "the Queue is in use by another thread (a Queue is not "
                        "thread-safe: use one per thread)");
        return NULL;
    }
    PyObject *out = PyList_New(0);
    if (out == NULL) {
        return NULL;
    }
    for (unsigned b = 0; b < LAT_BUCKETS; b++) {
        if (q->hist[b] == 0) {
            continue;
        }
        PyObject *t = Py_BuildValue("(KK)", (unsigned long long)lat_bucket_top(b),
                                    (unsigned long long)q->hist[b]);
        if (t == NULL || PyList_Append(out, t) < 0) {
            Py_XDECREF(t);
            Py_DECREF(out);
            return NULL;
        }
        Py_DECREF(t);
    }
    if (reset) {
        memset(q->hist, 0, LAT_BUCKETS * sizeof(uint64_t));
    }
    return out;
}

static PyObject *
Queue_get_backend(QueueObject *q, void *Py_UNUSED(c))
{
    return PyUnicode_FromString(q->ops->name);
}

static PyObject *
Queue_get_depth(QueueObject *q, void *Py_UNUSED(c))
{
    return PyLong_FromUnsignedLong(q->depth);
}

static PyObject *
Queue_get_submit_batch(QueueObject *q, void *Py_UNUSED(c))
{
    return PyLong_FromUnsignedLong(q->submit_batch);
}

static PyObject *
Queue_get_features(QueueObject *q, void *Py_UNUSED(c))
{
    return PyLong_FromUnsignedLong(q->features);
}

static PyObject *
Queue_get_closed(QueueObject *q, void *Py_UNUSED(c))
{
    return PyBool_FromLong(q->ctx == NULL || atomic_load(&q->closing));
}

static PyObject *
Queue_get_in_flight(QueueObject *q, void *Py_UNUSED(c))
{
    return PyLong_FromUnsignedLong(q->inflight + q->npending);
}

/* Run inside a critical section on self (fastio.h, docs/freethreading.md). */
FASTIO_LOCKED_FASTKW(Queue_read)
FASTIO_LOCKED_FASTKW(Queue_write)
FASTIO_LOCKED_FASTKW(Queue_fsync)
FASTIO_LOCKED_O(Queue_submit)
FASTIO_LOCKED_KW(Queue_wait)
FASTIO_LOCKED_O(Queue_drain)
FASTIO_LOCKED_O(Queue_close)
FASTIO_LOCKED_O(Queue_enter)
FASTIO_LOCKED_O(Queue_exit)
FASTIO_LOCKED_FAST(Queue_batch)
FASTIO_LOCKED_O(Queue_register_files)
FASTIO_LOCKED_O(Queue_register_buffers)
FASTIO_LOCKED_O(Queue_eventfd)
FASTIO_LOCKED_KW(Queue_latency_histogram)

static PyMethodDef Queue_methods[] = {
    {"read", (PyCFunction)(void (*)(void))Queue_read_locked, METH_FASTCALL | METH_KEYWORDS,
     read_doc},
    {"write", (PyCFunction)(void (*)(void))Queue_write_locked, METH_FASTCALL | METH_KEYWORDS,
     write_doc},
    {"fsync", (PyCFunction)(void (*)(void))Queue_fsync_locked, METH_FASTCALL | METH_KEYWORDS,
     fsync_doc},
    {"submit", (PyCFunction)Queue_submit_locked, METH_NOARGS, submit_doc},
    {"wait", (PyCFunction)(void (*)(void))Queue_wait_locked, METH_VARARGS | METH_KEYWORDS,
     wait_doc},
    {"drain", (PyCFunction)Queue_drain_locked, METH_NOARGS, drain_doc},
    {"close", (PyCFunction)Queue_close_locked, METH_NOARGS, close_doc},
    {"__enter__", (PyCFunction)Queue_enter_locked, METH_NOARGS, NULL},
    {"__exit__", (PyCFunction)Queue_exit_locked, METH_VARARGS, NULL},
    {"_batch", (PyCFunction)(void (*)(void))Queue_batch_locked, METH_FASTCALL, batch_doc},
    {"register_files", (PyCFunction)Queue_register_files_locked, METH_O, register_files_doc},
    {"register_buffers", (PyCFunction)Queue_register_buffers_locked, METH_O,
     register_buffers_doc},
    {"_eventfd", (PyCFunction)Queue_eventfd_locked, METH_NOARGS, eventfd_doc},
    {"latency_histogram", (PyCFunction)(void (*)(void))Queue_latency_histogram_locked,
     METH_VARARGS | METH_KEYWORDS, latency_doc},
    {NULL, NULL, 0, NULL},
};

/* Run inside a critical section on self (fastio.h, docs/freethreading.md). */
FASTIO_LOCKED_GET(Queue_get_backend)
FASTIO_LOCKED_GET(Queue_get_depth)
FASTIO_LOCKED_GET(Queue_get_submit_batch)
FASTIO_LOCKED_GET(Queue_get_features)
FASTIO_LOCKED_GET(Queue_get_closed)
FASTIO_LOCKED_GET(Queue_get_in_flight)

static PyGetSetDef Queue_getset[] = {
    {"backend", (getter)Queue_get_backend_locked, NULL, "The backend that runs the I/O.", NULL},
    {"depth", (getter)Queue_get_depth_locked, NULL, "Requests in flight at most.", NULL},
    {"submit_batch", (getter)Queue_get_submit_batch_locked, NULL,
     "Requests handed to the backend per submit call at most.", NULL},
    {"_features", (getter)Queue_get_features_locked, NULL, "Feature bits (aio.h).", NULL},
    {"closed", (getter)Queue_get_closed_locked, NULL, "True once closed.", NULL},
    {"in_flight", (getter)Queue_get_in_flight_locked, NULL,
     "Requests queued or submitted whose completion was not reaped yet.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef Queue_members[] = {
    {"__weaklistoffset__", T_PYSSIZET, offsetof(QueueObject, weakreflist), READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

PyDoc_STRVAR(Queue_doc,
"Queue(depth=64, backend='threads', *, sqpoll=False, sqpoll_idle_ms=0, "
"threads=0, latency=False, submit_batch=8)\n--\n\n"
"A submission/completion queue over one asynchronous I/O backend. Use\n"
"fastio.Queue, which also resolves backend='auto'.");

static PyType_Slot Queue_slots[] = {
    {Py_tp_new, Queue_new},
    {Py_tp_dealloc, Queue_dealloc},
    {Py_tp_traverse, Queue_traverse},
    {Py_tp_clear, Queue_clear},
    {Py_tp_methods, Queue_methods},
    {Py_tp_getset, Queue_getset},
    {Py_tp_members, Queue_members},
    {Py_tp_doc, (void *)Queue_doc},
    {0, NULL},
};

static PyType_Spec Queue_spec = {
    .name = "fastio._core.Queue",
    .basicsize = sizeof(QueueObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .slots = Queue_slots,
};

/* ================================================================== */
/* Module functions */

static const char *const feature_names[] = {
    "register_files", "register_buffers", "async_buffered", "sqpoll",
    "single_issuer", "defer_taskrun", "fsync", "eventfd",
};

PyDoc_STRVAR(backends_doc,
"_backends($module, /)\n--\n\n"
"Probe every backend: a list of (name, errno or 0, reason, feature names).");

static PyObject *
aio_backends(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(ignored))
{
    PyObject *out = PyList_New(0);
    if (out == NULL) {
        return NULL;
    }
    for (size_t i = 0; i < NBACKENDS; i++) {
        const fastio_aio_ops *ops = all_backends[i];
        char why[256] = "";
        unsigned features = 0;
        int err = cached_probe(i, why, sizeof why, &features);
        if (err == 0 && ops->open == NULL) {
            err = -ENOSYS;
            snprintf(why, sizeof why, "not built");
        }
        PyObject *feats = PyTuple_New(0);
        for (unsigned b = 0; feats && b < sizeof feature_names / sizeof *feature_names;
             b++) {
            if (features & (1u << b)) {
                PyObject *name = PyUnicode_FromString(feature_names[b]);
                Py_ssize_t k = PyTuple_GET_SIZE(feats);
                if (name == NULL || _PyTuple_Resize(&feats, k + 1) < 0) {
                    Py_XDECREF(name);
                    Py_CLEAR(feats);
                    break;
                }
                PyTuple_SET_ITEM(feats, k, name);
            }
        }
        PyObject *t = feats ? Py_BuildValue("(sisN)", ops->name, -err, why, feats) : NULL;
        if (t == NULL || PyList_Append(out, t) < 0) {
            Py_XDECREF(t);
            Py_DECREF(out);
            return NULL;
        }
        Py_DECREF(t);
    }
    return out;
}

PyDoc_STRVAR(dio_alignment_doc,
"_dio_alignment($module, fd, /)\n--\n\n"
"O_DIRECT alignment of fd: (memory alignment, offset/length alignment,\n"
"source) where source is 'statx', 'BLKSSZGET' or 'default' (4096).");

static PyObject *
aio_dio_alignment(PyObject *Py_UNUSED(module), PyObject *arg)
{
    int fd;
    if (fastio_fd_arg(arg, "file", &fd) < 0) {
        return NULL;
    }
    unsigned mem, off;
    const char *src;
    Py_BEGIN_ALLOW_THREADS
    src = dio_alignment(fd, &mem, &off);
    Py_END_ALLOW_THREADS
    return Py_BuildValue("(IIs)", mem, off, src);
}

PyDoc_STRVAR(request_error_doc,
"_request_error($module, res, opcode, backend, fd, address, length, offset, /)\n--\n\n"
"The exception a request that completed with res (-errno) gets: an OSError\n"
"naming the operation and backend (O_DIRECT misalignment spelled out).");

static PyObject *
aio_request_error(PyObject *Py_UNUSED(module), PyObject *args)
{
    long long res, offset;
    int opcode, fd;
    const char *backend;
    unsigned long long address, length;
    if (!PyArg_ParseTuple(args, "LisiKKL:_request_error", &res, &opcode, &backend, &fd,
                          &address, &length, &offset)) {
        return NULL;
    }
    const fastio_aio_ops *ops = &fastio_aio_threads_ops;
    for (size_t i = 0; i < NBACKENDS; i++) {
        if (strcmp(all_backends[i]->name, backend) == 0) {
            ops = all_backends[i];
        }
    }
    fastio_aio_req r = {.buf = (void *)(uintptr_t)address, .len = (size_t)length,
                        .offset = offset, .fd = fd, .opcode = (uint8_t)opcode};
    return request_error(ops, &r, res);
}

static PyMethodDef aio_functions[] = {
    {"_backends", aio_backends, METH_NOARGS, backends_doc},
    {"_dio_alignment", aio_dio_alignment, METH_O, dio_alignment_doc},
    {"_request_error", aio_request_error, METH_VARARGS, request_error_doc},
    {NULL, NULL, 0, NULL},
};

int
fastio_aio_exec(PyObject *module, fastio_state *st)
{
    static int atfork_registered;
    if (!atfork_registered) {
        /* Once per process, whatever the number of module instances. */
        if (pthread_atfork(NULL, NULL, on_fork_child) != 0) {
            PyErr_SetString(PyExc_RuntimeError, "pthread_atfork failed");
            return -1;
        }
        atfork_registered = 1;
    }
    PyObject *bases = PyTuple_Pack(2, st->FastIOError, PyExc_OSError);
    if (bases == NULL) {
        return -1;
    }
    st->BackendUnavailable = PyErr_NewExceptionWithDoc(
        "fastio.BackendUnavailable",
        "An asynchronous I/O backend asked for by name does not work here; "
        "the message says why (fastio.backends() lists them all).",
        bases, NULL);
    Py_DECREF(bases);
    if (st->BackendUnavailable == NULL ||
        PyModule_AddObjectRef(module, "BackendUnavailable", st->BackendUnavailable) < 0) {
        return -1;
    }
    if (fastio_add_type(module, &Queue_spec, NULL, &st->queue_type) < 0) {
        return -1;
    }
    if (PyModule_AddFunctions(module, aio_functions) < 0) {
        return -1;
    }
    return PyModule_AddIntConstant(module, "_QUEUE_DEPTH_MAX", DEPTH_MAX);
}
