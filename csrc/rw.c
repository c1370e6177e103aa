/* rw.c: pread / pwrite / preadv / pwritev, the full-length read loop, a
 * parallel pread, fadvise and readahead.
 *
 * Every call releases the GIL around the system call and retries EINTR,
 * running the Python signal handlers in between (PyErr_CheckSignals), so
 * Ctrl-C interrupts a read that a signal interrupted.
 *
 * The buffer a call reads into or writes from is held through a buffer
 * export (PyObject_GetBuffer) for the whole call: an exporter such as
 * fastio.Buffer or fastio.mmap cannot free that memory while the export
 * lives, even if another thread closes it while the GIL is released.
 *
 * pread is meant to cost no more per call than os.pread: METH_FASTCALL,
 * one buffer export, no keyword parsing, and fastio/fileio.py exports these
 * functions as they are, without a Python wrapper.
 */
#include "fastio.h"

#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#ifndef IOV_MAX
#define IOV_MAX 1024
#endif

/* ================================================================== */
/* Argument helpers (GIL held) */

/* A non-negative integer argument (offset, length) that fits in off_t. */
static inline int
get_nonneg(PyObject *obj, const char *name, long long *out)
{
    long long v;
    if (PyLong_CheckExact(obj)) {
        v = PyLong_AsLongLong(obj);
    }
    else {
        PyObject *idx = PyNumber_Index(obj);
        if (idx == NULL) {
            PyErr_Format(PyExc_TypeError, "%s must be an integer, got %s=%R",
                         name, name, obj);
            return -1;
        }
        v = PyLong_AsLongLong(idx);
        Py_DECREF(idx);
    }
    if (v == -1 && PyErr_Occurred()) {
        if (PyErr_ExceptionMatches(PyExc_OverflowError)) {
            PyErr_Format(PyExc_OverflowError, "%s is too large: %s=%R",
                         name, name, obj);
        }
        return -1;
    }
    if (v < 0) {
        PyErr_Format(PyExc_ValueError, "%s must be >= 0, got %s=%lld",
                     name, name, v);
        return -1;
    }
    *out = v;
    return 0;
}

/* The buffer to read into (writable) or write from, C-contiguous.
 * On failure the error names the argument; the exporter's own exception
 * (e.g. "Object is not writable.") becomes the cause. */
static int
get_buffer(PyObject *obj, Py_buffer *view, int writable, const char *func,
           const char *name)
{
    if (PyObject_GetBuffer(obj, view, writable ? PyBUF_WRITABLE : PyBUF_SIMPLE) == 0) {
        return 0;
    }
    PyObject *kind = PyExc_TypeError;
    if (PyErr_ExceptionMatches(PyExc_ValueError)) {
        /* numpy's "ndarray is not C-contiguous", a closed fastio object:
         * keep the type, name the argument. */
        kind = PyExc_ValueError;
    }
    else if (!PyErr_ExceptionMatches(PyExc_TypeError) &&
             !PyErr_ExceptionMatches(PyExc_BufferError)) {
        return -1;
    }
    /* Python 3.11: no PyErr_GetRaisedException yet. */
    PyObject *type, *cause, *tb;
    PyErr_Fetch(&type, &cause, &tb);
    PyErr_NormalizeException(&type, &cause, &tb);
    if (tb != NULL) {
        PyException_SetTraceback(cause, tb);
    }
    Py_XDECREF(type);
    Py_XDECREF(tb);
    if (kind == PyExc_ValueError) {
        PyErr_Format(kind, "%s() argument %s: %S", func, name, cause);
    }
    else {
        PyErr_Format(kind, "%s() argument %s must be a %s contiguous buffer, got %.100s",
                     func, name, writable ? "writable" : "bytes-like",
                     Py_TYPE(obj)->tp_name);
    }
    PyObject *etype, *exc, *etb;
    PyErr_Fetch(&etype, &exc, &etb);
    PyErr_NormalizeException(&etype, &exc, &etb);
    PyException_SetCause(exc, cause);  /* steals cause */
    PyErr_Restore(etype, exc, etb);
    return -1;
}

/* offset + len must fit a file offset: the loops below add what they
 * have read to offset (a signed overflow otherwise). */
static int
check_end(long long offset, Py_ssize_t len)
{
    if (offset > LLONG_MAX - (long long)len) {
        PyErr_Format(PyExc_OverflowError,
                     "offset + len(buf) is too large: offset=%lld, len(buf)=%zd",
                     offset, len);
        return -1;
    }
    return 0;
}

static int
check_nargs(const char *func, Py_ssize_t nargs, Py_ssize_t lo, Py_ssize_t hi)
{
    if (nargs < lo || nargs > hi) {
        if (lo == hi) {
            PyErr_Format(PyExc_TypeError, "%s() takes exactly %zd arguments (%zd given)",
                         func, lo, nargs);
        }
        else {
            PyErr_Format(PyExc_TypeError, "%s() takes %zd to %zd arguments (%zd given)",
                         func, lo, hi, nargs);
        }
        return -1;
    }
    return 0;
}

/* ================================================================== */
/* pread, pwrite */

/* One pread or pwrite; EINTR retried after running signal handlers. */
static PyObject *
pread_pwrite(PyObject *const *args, Py_ssize_t nargs, int writing)
{
    const char *func = writing ? "pwrite" : "pread";
    int fd;
    long long offset;
    Py_buffer view;
    ssize_t n;
    int err;

    if (check_nargs(func, nargs, 3, 3) < 0 || fastio_fd_arg(args[0], "fd", &fd) < 0 ||
        get_nonneg(args[2], "offset", &offset) < 0 ||
        get_buffer(args[1], &view, !writing, func, "buf") < 0) {
        return NULL;
    }
    for (;;) {
        Py_BEGIN_ALLOW_THREADS
        if (writing) {
            n = pwrite(fd, view.buf, (size_t)view.len, (off_t)offset);
        }
        else {
            n = pread(fd, view.buf, (size_t)view.len, (off_t)offset);
        }
        err = errno;
        Py_END_ALLOW_THREADS
        if (n >= 0 || err != EINTR) {
            break;
        }
        if (PyErr_CheckSignals() < 0) {
            PyBuffer_Release(&view);
            return NULL;
        }
    }
    PyBuffer_Release(&view);
    if (n < 0) {
        return fastio_oserror(-err, func, NULL);
    }
    return PyLong_FromSsize_t(n);
}

PyDoc_STRVAR(pread_doc,
"pread($module, fd, buf, offset, /)\n--\n\n"
"Read up to len(buf) bytes from fd at offset into the writable buffer buf;\n"
"return the number of bytes read (0 at end of file, fewer than len(buf)\n"
"near it). fd is an int or has fileno(). One pread(2), GIL released,\n"
"EINTR retried. The file position is not used or changed.");

static PyObject *
rw_pread(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    return pread_pwrite(args, nargs, 0);
}

PyDoc_STRVAR(pwrite_doc,
"pwrite($module, fd, buf, offset, /)\n--\n\n"
"Write the bytes of buf to fd at offset; return the number written (one\n"
"pwrite(2): it may be fewer than len(buf)). GIL released, EINTR retried.");

static PyObject *
rw_pwrite(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    return pread_pwrite(args, nargs, 1);
}

/* ================================================================== */
/* readinto_full */

PyDoc_STRVAR(readinto_full_doc,
"readinto_full($module, fd, buf, offset=0, /)\n--\n\n"
"Read from fd at offset until buf is full or the file ends; return the\n"
"number of bytes read (len(buf) unless the file ended first). Short reads\n"
"are continued; GIL released, EINTR retried.");

static PyObject *
rw_readinto_full(PyObject *Py_UNUSED(module), PyObject *const *args,
                 Py_ssize_t nargs)
{
    int fd;
    long long offset = 0;
    Py_buffer view;
    if (check_nargs("readinto_full", nargs, 2, 3) < 0 || fastio_fd_arg(args[0], "fd", &fd) < 0 ||
        (nargs > 2 && get_nonneg(args[2], "offset", &offset) < 0) ||
        get_buffer(args[1], &view, 1, "readinto_full", "buf") < 0) {
        return NULL;
    }
    if (check_end(offset, view.len) < 0) {
        PyBuffer_Release(&view);
        return NULL;
    }
    char *p = view.buf;
    size_t want = (size_t)view.len;
    size_t done = 0;
    int err = 0;
    for (;;) {
        /* The whole loop runs without the GIL; it comes back only to run
         * signal handlers after an EINTR. */
        Py_BEGIN_ALLOW_THREADS
        while (done < want) {
            ssize_t n = pread(fd, p + done, want - done, (off_t)(offset + (long long)done));
            if (n > 0) {
                done += (size_t)n;
            }
            else if (n == 0) {
                break;  /* end of file */
            }
            else {
                err = errno;
                break;
            }
        }
        Py_END_ALLOW_THREADS
        if (err != EINTR) {
            break;
        }
        err = 0;
        if (PyErr_CheckSignals() < 0) {
            PyBuffer_Release(&view);
            return NULL;
        }
    }
    PyBuffer_Release(&view);
    if (err) {
        return fastio_oserror(-err, "pread", NULL);
    }
    return PyLong_FromSize_t(done);
}

/* ================================================================== */
/* preadv, pwritev */

#define IOV_ON_STACK 8

static PyObject *
vector_io(PyObject *const *args, Py_ssize_t nargs, int writing)
{
    const char *func = writing ? "pwritev" : "preadv";
    int fd;
    long long offset;
    if (check_nargs(func, nargs, 3, 3) < 0 || fastio_fd_arg(args[0], "fd", &fd) < 0 ||
        get_nonneg(args[2], "offset", &offset) < 0) {
        return NULL;
    }
    /* A private tuple, not PySequence_Fast: getting each buffer below can
     * run Python code (__buffer__ on 3.12+, a __index__ in an exporter),
     * which could shrink or clear a list we walk through its item array
     * (issue 12, finding 6). A tuple cannot change, and holds its items. */
    PyObject *seq = PySequence_Tuple(args[1]);
    if (seq == NULL) {
        if (PyErr_ExceptionMatches(PyExc_TypeError)) {
            PyErr_Format(PyExc_TypeError,
                         "buffers must be a sequence of buffers, got buffers of type %.100s",
                         Py_TYPE(args[1])->tp_name);
        }
        return NULL;
    }
    Py_ssize_t count = PyTuple_GET_SIZE(seq);
    if (count > IOV_MAX) {
        PyErr_Format(PyExc_ValueError, "%s() takes at most %d buffers, got %zd",
                     func, IOV_MAX, count);
        Py_DECREF(seq);
        return NULL;
    }
    Py_buffer views_stack[IOV_ON_STACK];
    struct iovec iov_stack[IOV_ON_STACK];
    Py_buffer *views = views_stack;
    struct iovec *iov = iov_stack;
    if (count > IOV_ON_STACK) {
        views = PyMem_Malloc(sizeof(Py_buffer) * (size_t)count);
        iov = PyMem_Malloc(sizeof(struct iovec) * (size_t)count);
        if (views == NULL || iov == NULL) {
            PyMem_Free(views);
            PyMem_Free(iov);
            Py_DECREF(seq);
            return PyErr_NoMemory();
        }
    }
    PyObject *result = NULL;
    Py_ssize_t got = 0;
    for (; got < count; got++) {
        char name[48];
        PyOS_snprintf(name, sizeof(name), "buffers[%zd]", got);
        if (get_buffer(PyTuple_GET_ITEM(seq, got), &views[got], !writing, func,
                       name) < 0) {
            goto done;
        }
        iov[got].iov_base = views[got].buf;
        iov[got].iov_len = (size_t)views[got].len;
    }
    ssize_t n;
    int err;
    for (;;) {
        Py_BEGIN_ALLOW_THREADS
        if (writing) {
            n = pwritev(fd, iov, (int)count, (off_t)offset);
        }
        else {
            n = preadv(fd, iov, (int)count, (off_t)offset);
        }
        err = errno;
        Py_END_ALLOW_THREADS
        if (n >= 0 || err != EINTR) {
            break;
        }
        if (PyErr_CheckSignals() < 0) {
            goto done;
        }
    }
    if (n < 0) {
        fastio_oserror(-err, func, NULL);
    }
    else {
        result = PyLong_FromSsize_t(n);
    }
done:
    for (Py_ssize_t i = 0; i < got; i++) {
        PyBuffer_Release(&views[i]);
    }
    if (views != views_stack) {
        PyMem_Free(views);
        PyMem_Free(iov);
    }
    Py_DECREF(seq);
    return result;
}

PyDoc_STRVAR(preadv_doc,
"preadv($module, fd, buffers, offset, /)\n--\n\n"
"Read from fd at offset into the writable buffers in order (one\n"
"preadv(2)); return the total number of bytes read. GIL released, EINTR\n"
"retried.");

static PyObject *
rw_preadv(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    return vector_io(args, nargs, 0);
}

PyDoc_STRVAR(pwritev_doc,
"pwritev($module, fd, buffers, offset, /)\n--\n\n"
"Write the buffers in order to fd at offset (one pwritev(2)); return the\n"
"total number of bytes written. GIL released, EINTR retried.");

static PyObject *
rw_pwritev(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    return vector_io(args, nargs, 1);
}

/* ================================================================== */
/* fadvise, readahead */

PyDoc_STRVAR(fadvise_doc,
"fadvise($module, fd, offset, length, advice, /)\n--\n\n"
"posix_fadvise(2): tell the kernel how [offset, offset+length) of fd will\n"
"be used (POSIX_FADV_*); length 0 means to the end of the file.");

static PyObject *
rw_fadvise(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    int fd;
    long long offset, length;
    if (check_nargs("fadvise", nargs, 4, 4) < 0 || fastio_fd_arg(args[0], "fd", &fd) < 0 ||
        get_nonneg(args[1], "offset", &offset) < 0 ||
        get_nonneg(args[2], "length", &length) < 0) {
        return NULL;
    }
    long long advice_ll;
    if (fastio_int_arg(args[3], "advice", INT_MIN, INT_MAX, &advice_ll) < 0) {
        return NULL;
    }
    int advice = (int)advice_ll;
    int err;
    /* WILLNEED starts reads and DONTNEED may write back: both can block. */
    Py_BEGIN_ALLOW_THREADS
    err = posix_fadvise(fd, (off_t)offset, (off_t)length, advice);
    Py_END_ALLOW_THREADS
    if (err != 0) {
        /* posix_fadvise returns the error number instead of setting errno. */
        if (err == EINVAL) {
            PyErr_Format(PyExc_ValueError,
                         "fadvise: invalid advice=%d (or fd is not a file)", advice);
            return NULL;
        }
        return fastio_oserror(-err, "posix_fadvise", NULL);
    }
    Py_RETURN_NONE;
}

PyDoc_STRVAR(readahead_doc,
"readahead($module, fd, offset, length, /)\n--\n\n"
"readahead(2): start reading [offset, offset+length) of fd into the page\n"
"cache, so that later reads find it there.");

static PyObject *
rw_readahead(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    int fd;
    long long offset, length;
    if (check_nargs("readahead", nargs, 3, 3) < 0 || fastio_fd_arg(args[0], "fd", &fd) < 0 ||
        get_nonneg(args[1], "offset", &offset) < 0 ||
        get_nonneg(args[2], "length", &length) < 0) {
        return NULL;
    }
    ssize_t r;
    int err;
    for (;;) {
        Py_BEGIN_ALLOW_THREADS
        r = readahead(fd, (off64_t)offset, (size_t)length);
        err = errno;
        Py_END_ALLOW_THREADS
        if (r == 0 || err != EINTR) {
            break;
        }
        if (PyErr_CheckSignals() < 0) {
            return NULL;
        }
    }
    if (r < 0) {
        return fastio_oserror(-err, "readahead", NULL);
    }
    Py_RETURN_NONE;
}

/* ================================================================== */
/* Positional I/O with RWF_* flags (fastio.h) */

ssize_t
fastio_prw(int writing, int fd, void *buf, size_t len, int64_t offset, unsigned flags)
{
    if (flags == 0) {
        /* The plain calls: every kernel, and no iovec to build. */
        return writing ? pwrite(fd, buf, len, (off_t)offset)
                       : pread(fd, buf, len, (off_t)offset);
    }
    struct iovec iov = {.iov_base = buf, .iov_len = len};
    return writing ? pwritev2(fd, &iov, 1, (off_t)offset, (int)flags)
                   : preadv2(fd, &iov, 1, (off_t)offset, (int)flags);
}

/* ================================================================== */
/* Parallel reads: several threads pread chunks of one file (pread_parallel)
 * or many blocks at given offsets (_pread_blocks) into one buffer.
 *
 * Why: reading a cached file is a memory copy out of the page cache, plus
 * the first touch (page fault and zeroing) of the destination. One core does
 * both at a few GB/s, and one thread issues ~1M 4 KiB preads a second;
 * several cores together do more. An io_uring ring does not help there: its
 * buffered reads of cached pages are the same copy, run inline on one core.
 *
 * par_run starts nthreads-1 plain pthreads that never touch Python and
 * works itself too. They are created with every signal blocked, so signals
 * keep going to the calling thread; that thread, once its own share is
 * done, waits for them with the GIL released and wakes every
 * SIGNAL_POLL_MS to run the Python signal handlers: if one raises (Ctrl-C),
 * the workers are told to stop (*stop), joined, and the exception
 * propagates. */

#define PAR_MAX_THREADS 64
#define PAR_MIN_CHUNK ((size_t)64 * 1024)
#define SIGNAL_POLL_MS 50

typedef struct {
    void (*work)(void *);
    void *arg;
    pthread_mutex_t lock;
    pthread_cond_t done;
    int running;          /* workers not yet finished (under lock) */
} par_pool;

static void *
par_thread(void *p)
{
    par_pool *pool = p;
    pool->work(pool->arg);
    pthread_mutex_lock(&pool->lock);
    pool->running--;
    pthread_cond_signal(&pool->done);
    pthread_mutex_unlock(&pool->lock);
    return NULL;
}

/* Run work(arg) on nthreads threads, the calling one included (GIL held on
 * entry, released inside). 0, or -1 with the signal handler's exception set
 * (the workers were stopped through *stop and joined first). */
static int
par_run(void (*work)(void *), void *arg, atomic_int *stop, size_t nthreads)
{
    par_pool pool = {.work = work, .arg = arg, .running = 0};
    pthread_t threads[PAR_MAX_THREADS];
    size_t started = 0;
    int interrupted = 0;
    if (nthreads > PAR_MAX_THREADS) {
        nthreads = PAR_MAX_THREADS;
    }
    pthread_mutex_init(&pool.lock, NULL);
    pthread_cond_init(&pool.done, NULL);

    Py_BEGIN_ALLOW_THREADS
    /* Workers inherit the creating thread's signal mask: block everything
     * while creating them so that signals stay with this thread. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    /* The workers need little stack; 8 MiB default stacks would each be
     * another mapping of virtual memory. */
    pthread_attr_setstacksize(&attr, 256 * 1024);
    pthread_mutex_lock(&pool.lock);
    for (; started + 1 < nthreads; started++) {
        pool.running++;
        if (pthread_create(&threads[started], &attr, par_thread, &pool) != 0) {
            pool.running--;
            break;  /* run with the threads we have */
        }
    }
    pthread_mutex_unlock(&pool.lock);
    pthread_attr_destroy(&attr);
    pthread_sigmask(SIG_SETMASK, &old, NULL);

    /* This thread works too: one thread fewer to start, and with no thread
     * started at all (EAGAIN) it does the whole job. Its EINTRs are
     * retried without running handlers (no GIL here); the handlers run in
     * the wait below. */
    work(arg);
    if (started > 0) {
        pthread_mutex_lock(&pool.lock);
        while (pool.running > 0) {
            struct timespec deadline;
            fastio_realtime_after_ms(&deadline, SIGNAL_POLL_MS);
            int rc = pthread_cond_timedwait(&pool.done, &pool.lock, &deadline);
            if (rc == ETIMEDOUT && pool.running > 0 && !interrupted) {
                pthread_mutex_unlock(&pool.lock);
                /* Take the GIL back only to run the signal handlers. */
                Py_BLOCK_THREADS
                if (PyErr_CheckSignals() < 0) {
                    interrupted = 1;
                    atomic_store(stop, 1);
                }
                Py_UNBLOCK_THREADS
                pthread_mutex_lock(&pool.lock);
            }
        }
        pthread_mutex_unlock(&pool.lock);
        for (size_t t = 0; t < started; t++) {
            pthread_join(threads[t], NULL);
        }
    }
    Py_END_ALLOW_THREADS

    pthread_cond_destroy(&pool.done);
    pthread_mutex_destroy(&pool.lock);
    return interrupted ? -1 : 0;
}

/* ---- pread_parallel: one file range in chunks ---- */

typedef struct {
    int fd;
    unsigned flags;       /* RWF_* for preadv2, 0 for plain pread */
    char *buf;
    size_t len;
    long long offset;
    size_t chunk;
    size_t nchunks;
    size_t *got;          /* bytes read per chunk */
    atomic_size_t next;   /* the next chunk to claim */
    atomic_int stop;      /* end of file, an error, or an interrupt */
    atomic_int err;       /* the first errno seen by a worker, 0 if none */
} par_job;

/* The workers take chunks in increasing order from an atomic counter, so
 * the bytes read form a prefix of the buffer except past an end of file. */
static void
par_work(void *arg)
{
    par_job *job = arg;
    for (;;) {
        if (atomic_load_explicit(&job->stop, memory_order_relaxed)) {
            break;
        }
        size_t i = atomic_fetch_add(&job->next, 1);
        if (i >= job->nchunks) {
            break;
        }
        size_t start = i * job->chunk;
        size_t want = job->len - start < job->chunk ? job->len - start : job->chunk;
        size_t done = 0;
        while (done < want) {
            ssize_t n = fastio_prw(0, job->fd, job->buf + start + done, want - done,
                                   job->offset + (long long)(start + done), job->flags);
            if (n > 0) {
                done += (size_t)n;
            }
            else if (n == 0) {
                /* The file ends here (it may have shrunk since the caller
                 * sized the buffer): later chunks would read nothing. */
                atomic_store(&job->stop, 1);
                break;
            }
            else if (errno != EINTR) {
                int expected = 0;
                atomic_compare_exchange_strong(&job->err, &expected, errno);
                atomic_store(&job->stop, 1);
                break;
            }
        }
        job->got[i] = done;
    }
}

PyDoc_STRVAR(pread_parallel_doc,
"pread_parallel($module, fd, buf, offset, nthreads, chunk, flags=0, /)\n--\n\n"
"Fill buf from fd starting at offset with nthreads threads, each doing\n"
"pread(2) of chunk bytes at a time. Return the number of bytes read as a\n"
"prefix of buf: len(buf) unless the file ended first. GIL released; EINTR\n"
"retried; a signal handler that raises stops the read. flags: RWF_* bits\n"
"for preadv2(2) (RWF_DONTCACHE: read without keeping the pages cached).");

/* flags: the RWF_* bits a caller may pass (the others are the kernel's
 * business: RWF_APPEND on a read, RWF_NOWAIT's EAGAIN per chunk). */
#define RW_FLAGS_ALLOWED (RWF_DONTCACHE)

static int
get_rw_flags(PyObject *obj, unsigned *flags)
{
    long long v;
    if (fastio_int_arg(obj, "flags", 0, UINT32_MAX, &v) < 0) {
        return -1;
    }
    if (v & ~(long long)RW_FLAGS_ALLOWED) {
        PyErr_Format(PyExc_ValueError, "flags may hold RWF_DONTCACHE (0x%x) only, "
                     "got flags=%lld", (unsigned)RWF_DONTCACHE, v);
        return -1;
    }
    *flags = (unsigned)v;
    return 0;
}

static PyObject *
rw_pread_parallel(PyObject *Py_UNUSED(module), PyObject *const *args,
                  Py_ssize_t nargs)
{
    int fd;
    long long offset, nthreads_ll, chunk_ll;
    unsigned flags = 0;
    Py_buffer view;
    if (check_nargs("pread_parallel", nargs, 5, 6) < 0 || fastio_fd_arg(args[0], "fd", &fd) < 0 ||
        get_nonneg(args[2], "offset", &offset) < 0 ||
        get_nonneg(args[3], "nthreads", &nthreads_ll) < 0 ||
        get_nonneg(args[4], "chunk", &chunk_ll) < 0 ||
        (nargs == 6 && get_rw_flags(args[5], &flags) < 0)) {
        return NULL;
    }
    if (nthreads_ll < 1) {
        PyErr_Format(PyExc_ValueError, "nthreads must be >= 1, got nthreads=%lld",
                     nthreads_ll);
        return NULL;
    }
    if (chunk_ll < (long long)PAR_MIN_CHUNK) {
        PyErr_Format(PyExc_ValueError, "chunk must be >= %zu, got chunk=%lld",
                     PAR_MIN_CHUNK, chunk_ll);
        return NULL;
    }
    if (get_buffer(args[1], &view, 1, "pread_parallel", "buf") < 0) {
        return NULL;
    }
    if (check_end(offset, view.len) < 0) {
        PyBuffer_Release(&view);
        return NULL;
    }
    if (view.len == 0) {
        PyBuffer_Release(&view);
        return PyLong_FromLong(0);
    }

    par_job job;
    job.fd = fd;
    job.flags = flags;
    job.buf = view.buf;
    job.len = (size_t)view.len;
    job.offset = offset;
    job.chunk = (size_t)chunk_ll;
    job.nchunks = (job.len + job.chunk - 1) / job.chunk;
    atomic_init(&job.next, 0);
    atomic_init(&job.stop, 0);
    atomic_init(&job.err, 0);
    job.got = PyMem_Calloc(job.nchunks, sizeof(size_t));
    if (job.got == NULL) {
        PyBuffer_Release(&view);
        return PyErr_NoMemory();
    }
    size_t nthreads = (size_t)(nthreads_ll < PAR_MAX_THREADS ? nthreads_ll : PAR_MAX_THREADS);
    if (nthreads > job.nchunks) {
        nthreads = job.nchunks;
    }
    int interrupted = par_run(par_work, &job, &job.stop, nthreads) < 0;
    PyBuffer_Release(&view);

    /* The bytes read are the chunks up to the first short one. */
    size_t total = 0;
    for (size_t i = 0; i < job.nchunks; i++) {
        size_t want = job.len - i * job.chunk < job.chunk ? job.len - i * job.chunk
                                                          : job.chunk;
        total += job.got[i];
        if (job.got[i] < want) {
            break;
        }
    }
    PyMem_Free(job.got);
    if (interrupted) {
        return NULL;  /* the handler's exception is set */
    }
    int err = atomic_load(&job.err);
    if (err != 0) {
        return fastio_oserror(-err, flags ? "preadv2" : "pread", NULL);
    }
    return PyLong_FromSize_t(total);
}

/* ---- _pread_blocks: many blocks at given offsets (read_blocks' copy path) ---- */

/* Blocks a worker claims at a time: few enough atomics that they cost
 * nothing beside the preads, small enough that the threads end together. */
#define BLOCKS_PER_CLAIM 64

/* ---- a worker's own open file description (own_fds) ----
 *
 * Why: in a process of several threads every pread(fd) takes a reference
 * on the fd's struct file (an atomic on one cache line) and the read
 * stores the readahead state (f_ra) in the same struct: threads sharing
 * one descriptor bounce those lines between their cores. Measured on the
 * 2-CPU VM (plain C, a cached 256 MiB file, random 4 KiB preads): one
 * thread 1.40 M reads/s, two threads on one fd 2.35 M/s (1.68x), two
 * threads each with its own open() of the file 2.74 M/s (1.94x).
 *
 * How: a worker thread (never the caller, which keeps the caller's fd)
 * first takes a descriptor table of its own, empty, with
 * close_range(0, ~0U, CLOSE_RANGE_UNSHARE), then opens
 * /proc/self/task/<caller>/fd/<fd> (which works for unlinked files and
 * memfds) into it. Two reasons for the private table:
 *  - close() of a descriptor drops every POSIX (fcntl) record lock the
 *    process holds on the file, whichever descriptor took it; closing a
 *    reopened descriptor in the process's table would silently drop the
 *    caller's locks (sqlite's, lockf's). The kernel drops only the locks
 *    the closing table owns, and the private table owns none.
 *  - with a table of its own (count 1) the worker's fdget takes no
 *    reference at all.
 * The table starts empty (nothing copied: no reference held on the
 * process's other files, no ->flush of them when the thread ends, as a
 * full unshare(CLONE_FILES) would do; a kernel without Linux 6.12's
 * close_range fix, 678379e1d4f7, backported to some stable series,
 * copies the first 64 descriptors and closes them in the new table,
 * calling each one's ->flush: a FUSE file's FLUSH request, an NFS file's
 * writeback; no lock is dropped, that table owns none), so from then on
 * the worker cannot use the caller's fd: a probe (an O_PATH open of the
 * same link, whose close drops no lock and calls no filesystem) checks
 * first that the link opens the same file (st_dev, st_ino) and is a
 * regular file (never a FIFO, socket or device, whose open could block or
 * act) on a disk or memory filesystem (plain_open_fs), readable by this
 * process, with no lease on fd. After the unshare the worker takes an
 * O_PATH reference to what the link names then, checks it again, and
 * opens that very inode: a fd closed and reused meanwhile never gets
 * another file opened. Read-only
 * (O_RDONLY even for an O_RDWR fd: the worker only reads, and a writable
 * open would count as a writer of the file), with the fd's O_DIRECT and
 * O_NOATIME. Anything that fails before the unshare leaves the worker on
 * the shared fd; a failure after it (the fd closed meanwhile) leaves the
 * worker idle: the caller's thread and the others claim its blocks. */

#ifndef __NR_close_range
#define __NR_close_range 436
#endif
#ifndef CLOSE_RANGE_UNSHARE
#define CLOSE_RANGE_UNSHARE (1U << 1)
#endif

#define OWN_FD_SHARED (-1)  /* use the caller's fd */
#define OWN_FD_NONE (-2)    /* this worker cannot read: claim nothing */

static int
same_file(const struct stat *a, const struct stat *b)
{
    return a->st_dev == b->st_dev && a->st_ino == b->st_ino && S_ISREG(b->st_mode);
}

/* Whether fd's file is on a filesystem whose open of a regular file is
 * local and acts on nothing: disk and memory filesystems (memfds are on
 * tmpfs or hugetlbfs). Not the others: a /proc, sysfs, debugfs or tracefs
 * file's open runs the kernel's own code for it (/proc/PID/mem takes the
 * mm the process has now, and checks ptrace access again; tracefs' trace
 * stops the tracer while open); a FUSE open is a request to its daemon and
 * an NFS or CIFS open a round trip to the server, either of which can
 * block, with the worker's signals blocked, while the caller's cached
 * reads would not. An allowlist: an unknown filesystem only keeps the
 * shared fd, as before. */
static int
plain_open_fs(int fd)
{
    static const unsigned long magics[] = {
        0xEF53,      /* ext2, ext3, ext4 */
        0x58465342,  /* xfs */
        0x9123683E,  /* btrfs */
        0xF2F52010,  /* f2fs */
        0x2FC12FC1,  /* zfs */
        0xCA451A4E,  /* bcachefs */
        0xE0F5E1E2,  /* erofs */
        0x73717368,  /* squashfs */
        0x794C7630,  /* overlayfs */
        0x01021994,  /* tmpfs (and memfds) */
        0x958458F6,  /* hugetlbfs (MFD_HUGETLB memfds) */
        0x858458F6,  /* ramfs */
    };
    return fastio_fs_is_one_of(fd, magics, sizeof magics / sizeof magics[0]);
}

/* fd reopened into this thread's own, otherwise empty, descriptor table;
 * OWN_FD_SHARED or OWN_FD_NONE when not. Called by worker threads only
 * (no GIL, every signal blocked: no EINTR). */
static int
own_fd_open(int fd, pid_t caller_tid)
{
    int fl = fcntl(fd, F_GETFL);
    struct stat st, got;
    if (fl < 0 || (fl & O_PATH) || (fl & O_ACCMODE) == O_WRONLY || fstat(fd, &st) < 0 ||
        !S_ISREG(st.st_mode)) {
        return OWN_FD_SHARED;  /* the reads report what is wrong, as before */
    }
    /* A lease on fd (F_SETLEASE): any open for reading breaks a write
     * lease, O_NONBLOCK or not: the kernel sends the holder (this process)
     * SIGIO, whose default action ends it, and downgrades the lease. The
     * caller's reads break nothing: keep them on its fd. */
    if (fcntl(fd, F_GETLEASE) != F_UNLCK || !plain_open_fs(fd)) {
        return OWN_FD_SHARED;
    }
    char path[64];
    snprintf(path, sizeof path, "/proc/self/task/%ld/fd/%d", (long)caller_tid, fd);
    /* Checks made while a failure can still leave this worker on the
     * shared fd. The probe is an O_PATH open: it calls no filesystem's
     * open, and its close drops no lock. The access check: the reopen
     * below is a real open, which checks read permission on the inode
     * again (a file whose mode changed since the caller opened it, or an
     * fd passed from a more privileged process), and after the unshare a
     * refusal would leave this worker idle. */
    int probe = open(path, O_PATH | O_CLOEXEC);
    if (probe < 0) {
        return OWN_FD_SHARED;  /* no /proc, or not allowed */
    }
    int ok = fstat(probe, &got) == 0 && same_file(&st, &got);
    if (ok) {
        char probe_path[64];
        snprintf(probe_path, sizeof probe_path, "/proc/thread-self/fd/%d", probe);
        ok = faccessat(AT_FDCWD, probe_path, R_OK, AT_EACCESS) == 0;
    }
    close(probe);
    if (!ok || syscall(__NR_close_range, 0U, ~0U, CLOSE_RANGE_UNSHARE) < 0) {
        return OWN_FD_SHARED;  /* another file, unreadable, before Linux 5.9, or seccomp */
    }
    /* Now in the private table. The caller's fd may have been closed and
     * its number reused since the probe (by another thread of the caller):
     * take an O_PATH reference to whatever it is now, check that, and
     * open exactly that inode through this thread's own /proc entry
     * (/proc/thread-self, not /proc/self, which is the main thread's
     * table). Whatever fd became meanwhile, no other file is ever opened.
     * O_NONBLOCK for the open only: an open for reading of a file under
     * another process's write lease would otherwise wait for its break. */
    int here = open(path, O_PATH | O_CLOEXEC);
    if (here < 0) {
        return OWN_FD_NONE;
    }
    if (fstat(here, &got) < 0 || !same_file(&st, &got)) {
        close(here);
        return OWN_FD_NONE;
    }
    char here_path[64];
    snprintf(here_path, sizeof here_path, "/proc/thread-self/fd/%d", here);
    int keep = fl & (O_DIRECT | O_NOATIME | O_NONBLOCK);
    int nfd = open(here_path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK |
                                  (fl & (O_DIRECT | O_NOATIME)));
    close(here);
    if (nfd < 0) {
        return OWN_FD_NONE;
    }
    if ((keep & O_NONBLOCK) == 0 && fcntl(nfd, F_SETFL, keep) < 0) {
        close(nfd);
        return OWN_FD_NONE;
    }
    return nfd;
}

typedef struct {
    int fd;
    unsigned flags;
    char *base;           /* block i goes to base + i * size */
    size_t size;
    size_t n;
    const int64_t *offsets;  /* the private copy, validated */
    int64_t *results;     /* per block: bytes read, or -errno */
    atomic_size_t bad;    /* blocks not read whole */
    int own_fds;          /* workers reopen the file (own_fd_open) */
    pthread_t caller;     /* the thread that keeps fd */
    pid_t caller_tid;
    fastio_mapcopy map;   /* map.map: copy the blocks inside it (mapcopy.c) */
    atomic_size_t mapped; /* blocks copied from the map */
    atomic_size_t next;
    atomic_int stop;      /* an interrupt: leave the rest */
} blocks_job;

static void
blocks_work(void *arg)
{
    blocks_job *job = arg;
    int fd = job->fd, own = OWN_FD_SHARED;
    /* With a map the preads are the exceptions: no reopen for them. */
    int use_map = job->map.map != NULL;
    if (job->own_fds && !use_map && !pthread_equal(pthread_self(), job->caller)) {
        own = own_fd_open(job->fd, job->caller_tid);
        if (own == OWN_FD_NONE) {
            return;
        }
        if (own >= 0) {
            fd = own;
        }
    }
    size_t bad = 0, mapped = 0;
    sigset_t mask;
    if (use_map) {
        fastio_mapcopy_enter(&mask);  /* SIGBUS unblocked: see mapcopy.c */
    }
    for (;;) {
        if (atomic_load_explicit(&job->stop, memory_order_relaxed)) {
            break;
        }
        size_t first = atomic_fetch_add(&job->next, BLOCKS_PER_CLAIM);
        if (first >= job->n) {
            break;
        }
        size_t last = first + BLOCKS_PER_CLAIM < job->n ? first + BLOCKS_PER_CLAIM : job->n;
        for (size_t i = first; i < last; i++) {
            if (use_map) {
                /* Copies from the map up to a block it cannot give (past
                 * the file's end at map time, or a fault): pread that one. */
                size_t to = fastio_mapcopy_blocks(&job->map, job->base, job->size,
                                                  job->offsets, job->results, i, last,
                                                  &use_map);
                mapped += to - i;
                if (to == last) {
                    break;
                }
                i = to;
            }
            char *dst = job->base + i * job->size;
            size_t done = 0;
            int64_t res = 0;
            while (done < job->size) {
                ssize_t got = fastio_prw(0, fd, dst + done, job->size - done,
                                         job->offsets[i] + (int64_t)done, job->flags);
                if (got > 0) {
                    done += (size_t)got;
                }
                else if (got == 0) {
                    break;  /* end of file: the short count says so */
                }
                else if (errno != EINTR) {
                    res = -errno;
                    break;
                }
            }
            job->results[i] = res < 0 ? res : (int64_t)done;
            bad += done != job->size;
        }
    }
    if (bad) {
        atomic_fetch_add(&job->bad, bad);
    }
    if (job->map.map != NULL) {
        atomic_fetch_add(&job->mapped, mapped);
        fastio_mapcopy_leave(&mask);
    }
    /* On every path out (an interrupt sets stop): the thread's table is
     * freed when it ends, but the file is released now, before the join. */
    if (own >= 0) {
        close(own);
    }
}

/* The offsets argument (an aligned int64 buffer) as a private copy in C
 * memory, its count in *n; NULL with an exception set. The caller's array
 * may change while the GIL is released (another thread, or the reads
 * landing on it when the destination overlaps it): only the copy is
 * validated and used. PyMem_Free it. */
static int64_t *
copy_offsets(PyObject *obj, const char *func, size_t *n)
{
    Py_buffer view;
    if (get_buffer(obj, &view, 0, func, "offsets") < 0) {
        return NULL;
    }
    if (view.len % 8 || (uintptr_t)view.buf % _Alignof(int64_t)) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "offsets must be an aligned int64 array");
        return NULL;
    }
    *n = (size_t)view.len / 8;
    int64_t *copy = PyMem_Malloc(*n ? *n * sizeof(int64_t) : 1);
    if (copy == NULL) {
        PyBuffer_Release(&view);
        PyErr_NoMemory();
        return NULL;
    }
    memcpy(copy, view.buf, *n * sizeof(int64_t));
    PyBuffer_Release(&view);
    return copy;
}

PyDoc_STRVAR(pread_blocks_doc,
"_pread_blocks($module, fd, offsets, size, buf, nthreads, flags, results, own_fds=0, mapped=None, /)\n--\n\n"
"Read size bytes at each of offsets (an int64 buffer) into buf (block i\n"
"at i * size) with nthreads threads, each doing pread(2) (preadv2 with\n"
"flags, RWF_* bits) of the blocks it claims. The int64 buffer results\n"
"receives each block's byte count (short at an end of file) or -errno;\n"
"the return value is the number of blocks not read whole. offsets is\n"
"copied into C memory before the GIL is released. own_fds:\n"
"each thread but the calling one reads through its own open of the file\n"
"(a regular file; /proc/self/fd), in a descriptor table of its own.\n"
"mapped: None, or an int64 buffer of one item: the threads copy the\n"
"blocks inside the file out of a read-only map of it made for the call\n"
"(when fd is a plain regular file of a disk filesystem and flags is 0),\n"
"pread the others, and mapped[0] receives how many were copied.");

static PyObject *
rw_pread_blocks(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    int fd;
    long long size_ll, nthreads_ll, own_fds = 0;
    unsigned flags = 0;
    if (check_nargs("_pread_blocks", nargs, 7, 9) < 0 || fastio_fd_arg(args[0], "fd", &fd) < 0 ||
        get_nonneg(args[2], "size", &size_ll) < 0 ||
        fastio_int_arg(args[4], "nthreads", 1, PAR_MAX_THREADS, &nthreads_ll) < 0 ||
        get_rw_flags(args[5], &flags) < 0 ||
        (nargs >= 8 && fastio_int_arg(args[7], "own_fds", 0, 1, &own_fds) < 0)) {
        return NULL;
    }
    Py_buffer bufv, resv, mapv = {.obj = NULL};
    size_t n;
    int64_t *offsets = copy_offsets(args[1], "_pread_blocks", &n);
    if (offsets == NULL) {
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        if (offsets[i] < 0 || offsets[i] > INT64_MAX - size_ll) {
            PyErr_Format(PyExc_ValueError,
                         "offsets[%zu] must be within 0..2**63-1-size, got %lld", i,
                         (long long)offsets[i]);
            PyMem_Free(offsets);
            return NULL;
        }
    }
    PyObject *ret = NULL;
    if (get_buffer(args[3], &bufv, 1, "_pread_blocks", "buf") < 0) {
        goto free;
    }
    if (size_ll != 0 && (size_t)bufv.len / (size_t)size_ll < n) {
        PyErr_Format(PyExc_ValueError, "buf holds %zd bytes; %zu blocks of %lld need more",
                     bufv.len, n, size_ll);
        PyBuffer_Release(&bufv);
        goto free;
    }
    /* The workers write results in place (an export held for the call, as
     * for buf): no C-side copy to allocate, fault in and copy over. */
    if (get_buffer(args[6], &resv, 1, "_pread_blocks", "results") < 0) {
        PyBuffer_Release(&bufv);
        goto free;
    }
    if ((size_t)resv.len != n * sizeof(int64_t) || (uintptr_t)resv.buf % _Alignof(int64_t)) {
        PyErr_SetString(PyExc_ValueError,
                        "results must be an aligned int64 array with one item per offset");
        PyBuffer_Release(&resv);
        PyBuffer_Release(&bufv);
        goto free;
    }
    if (nargs == 9 && args[8] != Py_None) {
        if (get_buffer(args[8], &mapv, 1, "_pread_blocks", "mapped") < 0) {
            PyBuffer_Release(&resv);
            PyBuffer_Release(&bufv);
            goto free;
        }
        if (mapv.len != sizeof(int64_t) || (uintptr_t)mapv.buf % _Alignof(int64_t)) {
            PyErr_SetString(PyExc_ValueError,
                            "mapped must be None or an aligned int64 array of one item");
            PyBuffer_Release(&mapv);
            PyBuffer_Release(&resv);
            PyBuffer_Release(&bufv);
            goto free;
        }
    }
    blocks_job job = {.fd = fd, .flags = flags, .base = bufv.buf, .size = (size_t)size_ll,
                      .n = n, .offsets = offsets, .results = resv.buf,
                      .own_fds = (int)own_fds, .caller = pthread_self(),
                      .caller_tid = (pid_t)syscall(SYS_gettid)};
    atomic_init(&job.next, 0);
    atomic_init(&job.stop, 0);
    atomic_init(&job.bad, 0);
    atomic_init(&job.mapped, 0);
    size_t nthreads = (size_t)nthreads_ll;
    size_t claims = (n + BLOCKS_PER_CLAIM - 1) / BLOCKS_PER_CLAIM;
    if (nthreads > claims) {
        nthreads = claims ? claims : 1;
    }
    int interrupted = 0;
    if (size_ll == 0) {
        memset(resv.buf, 0, n * sizeof(int64_t));  /* every block read whole */
    }
    else if (n) {
        if (mapv.obj != NULL && flags == 0) {
            /* Made before the threads start and unmapped after par_run
             * joined them, interrupted or not: no map outlives the call.
             * The GIL released: the munmap of a large span takes ms. */
            Py_BEGIN_ALLOW_THREADS
            fastio_mapcopy_open(fd, offsets, n, job.size, &job.map);
            Py_END_ALLOW_THREADS
        }
        interrupted = par_run(blocks_work, &job, &job.stop, nthreads) < 0;
        if (job.map.map != NULL) {
            Py_BEGIN_ALLOW_THREADS
            fastio_mapcopy_close(&job.map);
            Py_END_ALLOW_THREADS
        }
    }
    if (mapv.obj != NULL) {
        *(int64_t *)mapv.buf = (int64_t)atomic_load(&job.mapped);
        PyBuffer_Release(&mapv);
    }
    PyBuffer_Release(&resv);
    PyBuffer_Release(&bufv);
    if (!interrupted) {
        ret = PyLong_FromSize_t(atomic_load(&job.bad));
    }
free:
    PyMem_Free(offsets);
    return ret;
}

/* ---- _residency_sample: the page cache's share of sampled ranges ---- */

PyDoc_STRVAR(residency_sample_doc,
"_residency_sample($module, fd, offsets, length, /)\n--\n\n"
"Of the pages covering [offset, offset + length) for each offset (an int64\n"
"buffer) that lie inside the file, how many are in the page cache: the\n"
"tuple (resident, pages). One short-lived read-only shared map of the\n"
"file and mincore(2); nothing is read or faulted in. (0, 0) when the file\n"
"cannot be mapped (a pipe, a /proc file) or is empty.");

static PyObject *
rw_residency_sample(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    int fd;
    long long length;
    if (check_nargs("_residency_sample", nargs, 3, 3) < 0 ||
        fastio_fd_arg(args[0], "fd", &fd) < 0 || get_nonneg(args[2], "length", &length) < 0) {
        return NULL;
    }
    size_t n;
    int64_t *offsets = copy_offsets(args[1], "_residency_sample", &n);
    if (offsets == NULL) {
        return NULL;
    }

    size_t page = (size_t)fastio_pagesize;
    unsigned long long resident = 0, pages = 0;
    int err = 0;
    Py_BEGIN_ALLOW_THREADS
    struct stat st;
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0) {
        size_t fsize = (size_t)st.st_size;
        void *map = mmap(NULL, fsize, PROT_READ, MAP_SHARED, fd, 0);
        if (map != MAP_FAILED) {
            unsigned char vec[64];
            for (size_t i = 0; i < n; i++) {
                if (offsets[i] < 0 || (size_t)offsets[i] >= fsize) {
                    continue;
                }
                size_t lo = (size_t)offsets[i] / page * page;
                size_t hi = (size_t)offsets[i] + (size_t)length;
                if (hi > fsize || hi < lo) {
                    hi = fsize;
                }
                /* mincore in steps of 64 pages: a fixed vector, no malloc. */
                for (size_t at = lo; at < hi; at += 64 * page) {
                    size_t span = hi - at < 64 * page ? hi - at : 64 * page;
                    size_t np = (span + page - 1) / page;
                    if (mincore((char *)map + at, np * page, vec) < 0) {
                        err = errno;
                        break;
                    }
                    for (size_t k = 0; k < np; k++) {
                        resident += vec[k] & 1;
                    }
                    pages += np;
                }
                if (err) {
                    break;
                }
            }
            munmap(map, fsize);
        }
    }
    Py_END_ALLOW_THREADS
    PyMem_Free(offsets);
    if (err) {
        return fastio_oserror(-err, "mincore", NULL);
    }
    return Py_BuildValue("(KK)", resident, pages);
}

/* ================================================================== */

PyMethodDef fastio_rw_methods[] = {
    {"pread", (PyCFunction)(void (*)(void))rw_pread, METH_FASTCALL, pread_doc},
    {"pwrite", (PyCFunction)(void (*)(void))rw_pwrite, METH_FASTCALL, pwrite_doc},
    {"preadv", (PyCFunction)(void (*)(void))rw_preadv, METH_FASTCALL, preadv_doc},
    {"pwritev", (PyCFunction)(void (*)(void))rw_pwritev, METH_FASTCALL, pwritev_doc},
    {"readinto_full", (PyCFunction)(void (*)(void))rw_readinto_full, METH_FASTCALL,
     readinto_full_doc},
    {"pread_parallel", (PyCFunction)(void (*)(void))rw_pread_parallel, METH_FASTCALL,
     pread_parallel_doc},
    {"_pread_blocks", (PyCFunction)(void (*)(void))rw_pread_blocks, METH_FASTCALL,
     pread_blocks_doc},
    {"_residency_sample", (PyCFunction)(void (*)(void))rw_residency_sample,
     METH_FASTCALL, residency_sample_doc},
    {"fadvise", (PyCFunction)(void (*)(void))rw_fadvise, METH_FASTCALL, fadvise_doc},
    {"readahead", (PyCFunction)(void (*)(void))rw_readahead, METH_FASTCALL,
     readahead_doc},
    {NULL, NULL, 0, NULL},
};
