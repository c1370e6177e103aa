/* sync.c: process-shared locks and semaphores that live inside a segment.
 *
 * fastio.Lock is a pthread mutex with PTHREAD_PROCESS_SHARED and
 * PTHREAD_MUTEX_ROBUST placed at an offset of any writable shared buffer
 * (fastio.mmap(-1, n), a file in /dev/shm, a SharedMemory). Robust means
 * the kernel walks a dying thread's list of held robust mutexes and marks
 * them; the next pthread_mutex_lock then returns EOWNERDEAD with the mutex
 * held, which we raise as fastio.OwnerDeadError instead of hanging forever.
 * fastio.Semaphore is an unnamed POSIX semaphore (sem_init with pshared=1).
 *
 * Layout in the segment (SIZE = 64 bytes each, 16-byte aligned), version 2:
 *   +0  u64 tag: magic ("FLCK" / "FSEM", low half) | state << 32
 *   +8  u32 version, u32 reserved
 *   +16 the pthread_mutex_t (40 bytes) or sem_t (32 bytes)
 * create=True claims the tag with one compare-and-swap (state INIT), so a
 * second creator -- Lock(m) where Lock(m, create=False) was meant -- gets
 * FileExistsError instead of re-initialising a mutex someone holds; the
 * creator publishes state LIVE last (release). Attachers check the tag
 * (acquire), so create=False on memory that holds no lock is a clear
 * ValueError instead of undefined behaviour inside glibc. (Version 1 had a
 * u32 magic and a u32 version at +0 and no state; same size.)
 *
 * SIGBUS: the memory may be a file (a /dev/shm file, a SharedMemory) that
 * another process truncates. Every libc call on the shared object, and
 * every load or store of the tag, runs under the SIGBUS guard (sync_call,
 * tag_call), so a vanished page is fastio.MappingError, not a dead process.
 * Such a fault can only happen at the object's first touch by the call (the
 * page was gone before it) or when a truncation races the call; in both
 * cases the object is destroyed for every process, and leaving glibc
 * midway can at worst leave this thread's robust-list "pending" pointer
 * aimed at it, which the kernel reads with fault-tolerant accessors and
 * the next robust lock overwrites.
 *
 * Waiting: a first try with the GIL held (no syscall when uncontended),
 * then timed waits with the GIL released in slices of WAIT_SLICE seconds;
 * between slices PyErr_CheckSignals runs, so Ctrl-C interrupts a long wait.
 * Timed waits use CLOCK_MONOTONIC (pthread_mutex_clocklock, sem_clockwait:
 * glibc 2.30+), so a wall-clock jump neither shortens nor stretches them.
 */
#include "fastio.h"

#include <linux/futex.h>
#include <math.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define LOCK_MAGIC FASTIO_MAGIC_LOCK
#define SEM_MAGIC FASTIO_MAGIC_SEM
#define SYNC_VERSION 2u
#define SYNC_SIZE 64
#define SYNC_ALIGN 16
/* How long one GIL-released wait lasts before signals are checked. */
#define WAIT_SLICE 0.05
/* Semaphore.release(n) posts with the GIL released in chunks of this many,
 * checking signals between chunks. */
#define POST_CHUNK 65536L

typedef struct {
    _Atomic uint64_t tag;
    uint32_t version;
    uint32_t reserved;
} sync_head;

typedef struct {
    sync_head head;
    pthread_mutex_t mutex;
} lock_shared;

typedef struct {
    sync_head head;
    sem_t sem;
} sem_shared;

_Static_assert(offsetof(lock_shared, mutex) == 16 && offsetof(sem_shared, sem) == 16,
               "the pthread object starts at +16");

_Static_assert(sizeof(lock_shared) <= SYNC_SIZE, "Lock.SIZE too small");
_Static_assert(sizeof(sem_shared) <= SYNC_SIZE, "Semaphore.SIZE too small");
/* The robust-futex ABI (the kernel's Documentation/locking/robust-futex-ABI)
 * keeps the holder's thread id in the futex word, which glibc's
 * pthread_mutex_t begins with; lock_owner_tid() reads it there. */
_Static_assert(offsetof(pthread_mutex_t, __data.__lock) == 0,
               "pthread_mutex_t does not begin with its futex word");

/* ================================================================== */
/* Helpers shared with channel.c (declared in fastio.h) */

double
fastio_monotonic(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int
fastio_parse_timeout_ex(PyObject *obj, const char *argname, int flags, double *out)
{
    /* threading.Lock.acquire also spells "forever" as -1: the messages
     * list it where it is accepted. */
    int minus_one = (flags & FASTIO_TIMEOUT_MINUS_ONE) != 0;
    const char *or_none = minus_one ? ", -1 or None" : " or None";
    if (obj == NULL || obj == Py_None) {
        *out = -1.0;
        return 0;
    }
    double t = PyFloat_AsDouble(obj);
    if (t == -1.0 && PyErr_Occurred()) {
        if (PyErr_ExceptionMatches(PyExc_TypeError)) {
            PyErr_Format(PyExc_TypeError,
                         "%s must be a number of seconds%s, got %s of type %.100s",
                         argname, or_none, argname, Py_TYPE(obj)->tp_name);
        }
        return -1;
    }
    if (minus_one && t == -1.0) {
        *out = -1.0;
        return 0;
    }
    if (!(t >= 0.0)) {  /* negative or NaN */
        PyErr_Format(PyExc_ValueError,
                     "%s must be a non-negative number of seconds%s, got %s=%R",
                     argname, or_none, argname, obj);
        return -1;
    }
    if (isinf(t)) {
        *out = -1.0;  /* documented: inf waits without limit, as None */
        return 0;
    }
    if (t > FASTIO_TIMEOUT_MAX) {
        PyErr_Format(PyExc_OverflowError,
                     "%s is too large: at most %lld seconds (or %sinf or None for no "
                     "limit), got %s=%R", argname, (long long)FASTIO_TIMEOUT_MAX,
                     minus_one ? "-1, " : "", argname, obj);
        return -1;
    }
    *out = t;
    return 0;
}

int
fastio_parse_timeout(PyObject *obj, const char *argname, double *out)
{
    return fastio_parse_timeout_ex(obj, argname, 0, out);
}

/* ================================================================== */
/* The SIGBUS guard around shared objects, and their tag word */

PyObject *
fastio_shared_fault(PyTypeObject *tp, const fastio_fault *fault, const char *op,
                    const void *addr, Py_ssize_t size)
{
    return fastio_mapping_error(fastio_state_from_type(tp), fault, op,
                                (const char *)addr, size, -1, -1);
}

enum { TAG_LOAD, TAG_CLAIM, TAG_STORE };

typedef struct {
    int op;
    _Atomic uint64_t *tag;
    uint64_t want;                 /* CLAIM: the INIT tag; STORE: the value */
    uint32_t magic;
    int (*replaceable)(void *ctx);
    void *ctx;
    const uint32_t *version_p;     /* LOAD: where the version is */
    uint32_t *version_out;         /* STORE: where to write `version` */
    uint64_t seen;                 /* out: the tag found (LOAD, CLAIM) */
    uint32_t version;              /* out: LOAD; in: STORE */
    int claimed;                   /* out: CLAIM */
} tag_op;

static int
tag_is_ours(uint64_t t)
{
    uint32_t magic = (uint32_t)t, state = (uint32_t)(t >> 32);
    return (magic == FASTIO_MAGIC_LOCK || magic == FASTIO_MAGIC_SEM ||
            magic == FASTIO_MAGIC_CHANNEL) &&
           (state == FASTIO_STATE_INIT || state == FASTIO_STATE_LIVE);
}

/* Runs under the guard: touches only the shared tag (and, through
 * replaceable(), the object after it). */
static void
tag_op_run(void *arg)
{
    tag_op *o = arg;
    switch (o->op) {
    case TAG_LOAD:
        o->seen = atomic_load_explicit(o->tag, memory_order_acquire);
        /* Read after the tag: its acquire pairs with the creator's release. */
        o->version = o->version_p != NULL ? *o->version_p : 0;
        break;
    case TAG_CLAIM: {
        uint64_t t = atomic_load_explicit(o->tag, memory_order_acquire);
        o->claimed = 0;
        for (;;) {
            if (tag_is_ours(t)) {
                /* A live object (or one being made): only a live one of
                 * our kind that cannot be used any more may be replaced,
                 * and the CAS from exactly LIVE makes one creator win. */
                if (t != FASTIO_TAG(o->magic, FASTIO_STATE_LIVE) ||
                    o->replaceable == NULL || !o->replaceable(o->ctx)) {
                    break;
                }
            }
            /* Anything else (zeros, user data, an old layout) is free
             * memory. The CAS from the value just seen: if another creator
             * (or a writer of user data) got there first, look again. */
            if (atomic_compare_exchange_weak_explicit(o->tag, &t, o->want,
                                                      memory_order_acq_rel,
                                                      memory_order_acquire)) {
                o->claimed = 1;
                break;
            }
        }
        o->seen = t;
        break;
    }
    case TAG_STORE:
        if (o->version_out != NULL) {
            *o->version_out = o->version;  /* published by the release below */
        }
        atomic_store_explicit(o->tag, o->want, memory_order_release);
        break;
    }
}

static const char *
kind_name(uint32_t magic)
{
    switch (magic) {
    case FASTIO_MAGIC_LOCK:
        return "Lock";
    case FASTIO_MAGIC_SEM:
        return "Semaphore";
    default:
        return "Channel";
    }
}

int
fastio_tag_claim(PyTypeObject *tp, _Atomic uint64_t *tag, uint32_t magic,
                 const char *what, Py_ssize_t offset, Py_ssize_t size,
                 int (*replaceable)(void *ctx), void *ctx)
{
    tag_op o = {.op = TAG_CLAIM, .tag = tag, .magic = magic,
                .want = FASTIO_TAG(magic, FASTIO_STATE_INIT),
                .replaceable = replaceable, .ctx = ctx};
    fastio_fault fault;
    if (fastio_guarded_call(tag_op_run, &o, &fault) < 0) {
        fastio_shared_fault(tp, &fault, what, tag, size);
        return -1;
    }
    if (o.claimed) {
        return 0;
    }
    const char *found = kind_name((uint32_t)o.seen);
    if ((uint32_t)(o.seen >> 32) == FASTIO_STATE_INIT) {
        PyErr_Format(PyExc_FileExistsError,
                     "the memory at offset=%zd holds a fastio.%s that another "
                     "handle is creating right now (or whose creator died while "
                     "creating it: then clear its %zd bytes and create it again)",
                     offset, found, size);
    }
    else if ((uint32_t)o.seen == magic) {
        PyErr_Format(PyExc_FileExistsError,
                     "the memory at offset=%zd already holds a live fastio.%s: "
                     "attach to it with create=False (to make a new one there "
                     "once no process uses the old one, clear its %zd bytes first)",
                     offset, found, size);
    }
    else {
        PyErr_Format(PyExc_FileExistsError,
                     "the memory at offset=%zd already holds a live fastio.%s: "
                     "a fastio.%s there would destroy it; use another offset",
                     offset, found, what);
    }
    return -1;
}

int
fastio_tag_finish(PyTypeObject *tp, _Atomic uint64_t *tag, uint32_t magic, int ok,
                  Py_ssize_t size, uint32_t *version_p, uint32_t version)
{
    tag_op o = {.op = TAG_STORE, .tag = tag,
                .want = ok ? FASTIO_TAG(magic, FASTIO_STATE_LIVE) : 0,
                .version_out = ok ? version_p : NULL, .version = version};
    fastio_fault fault;
    if (fastio_guarded_call(tag_op_run, &o, &fault) < 0) {
        if (ok) {
            fastio_shared_fault(tp, &fault, "create", tag, size);
        }
        return -1;
    }
    return 0;
}

int
fastio_tag_check(PyTypeObject *tp, _Atomic uint64_t *tag, const uint32_t *version_p,
                 uint32_t magic, uint32_t version, const char *what,
                 Py_ssize_t offset, Py_ssize_t size)
{
    tag_op o = {.op = TAG_LOAD, .tag = tag, .version_p = version_p};
    fastio_fault fault;
    if (fastio_guarded_call(tag_op_run, &o, &fault) < 0) {
        fastio_shared_fault(tp, &fault, what, tag, size);
        return -1;
    }
    if (o.seen == FASTIO_TAG(magic, FASTIO_STATE_LIVE) && o.version == version) {
        return 0;
    }
    if (o.seen == FASTIO_TAG(magic, FASTIO_STATE_INIT)) {
        PyErr_Format(PyExc_ValueError,
                     "the fastio.%s at offset=%zd is still being created: attach "
                     "once its creator returned", what, offset);
        return -1;
    }
    /* PyErr_Format has no %llx: format the tag here. */
    char found[80];
    snprintf(found, sizeof found, "tag 0x%016llx version %u",
             (unsigned long long)o.seen, (unsigned)o.version);
    PyErr_Format(PyExc_ValueError,
                 "the memory at offset=%zd holds no fastio.%s (%s, expected "
                 "magic 0x%08x live, version %u): create it first%s",
                 offset, what, found, (unsigned)magic, (unsigned)version,
                 magic == FASTIO_MAGIC_CHANNEL ? "" : " with create=True");
    return -1;
}

int
fastio_offset_converter(PyObject *obj, void *out)
{
    /* Runs before any state is taken (__index__ can run Python code). */
    long long v;
    if (fastio_int_arg(obj, "offset", 0, PY_SSIZE_T_MAX, &v) < 0) {
        return 0;
    }
    *(Py_ssize_t *)out = (Py_ssize_t)v;
    return 1;
}

int
fastio_anchor_init(fastio_anchor *a, PyObject *buffer, Py_ssize_t offset,
                   Py_ssize_t size, size_t align, const char *what, char **out)
{
    a->has_view = 0;
    a->closed = 0;
    a->busy = 0;
    if (offset < 0) {
        PyErr_Format(PyExc_ValueError, "%s offset must be >= 0, got offset=%zd",
                     what, offset);
        return -1;
    }
    if (PyObject_GetBuffer(buffer, &a->view, PyBUF_WRITABLE) < 0) {
        if (PyErr_ExceptionMatches(PyExc_TypeError) ||
            PyErr_ExceptionMatches(PyExc_BufferError)) {
            PyErr_Clear();
            PyErr_Format(PyExc_TypeError,
                         "%s needs a writable buffer shared between processes "
                         "(fastio.mmap, SharedMemory, ...), got buffer of type %s",
                         what, Py_TYPE(buffer)->tp_name);
        }
        return -1;
    }
    if (size > a->view.len || offset > a->view.len - size) {
        PyErr_Format(PyExc_ValueError,
                     "%s needs %zd bytes at offset=%zd, but the buffer holds %zd bytes",
                     what, size, offset, a->view.len);
        PyBuffer_Release(&a->view);
        return -1;
    }
    char *p = (char *)a->view.buf + offset;
    if ((uintptr_t)p % align != 0) {
        PyErr_Format(PyExc_ValueError,
                     "%s must start on a multiple of %zu bytes: offset=%zd "
                     "gives address %p",
                     what, align, offset, (void *)p);
        PyBuffer_Release(&a->view);
        return -1;
    }
    a->has_view = 1;
    *out = p;
    return 0;
}

static void
anchor_release_if_unused(fastio_anchor *a)
{
    if (a->closed && a->busy == 0 && a->has_view) {
        a->has_view = 0;
        PyBuffer_Release(&a->view);
    }
}

void
fastio_anchor_close(fastio_anchor *a)
{
    a->closed = 1;
    anchor_release_if_unused(a);
}

void
fastio_anchor_leave(fastio_anchor *a)
{
    assert(a->busy > 0);
    a->busy--;
    anchor_release_if_unused(a);
}

/* A deadline `seconds` from now: -1 means none. */
static double
deadline_after(double seconds)
{
    return seconds < 0 ? -1.0 : fastio_monotonic() + seconds;
}

/* The absolute CLOCK_MONOTONIC time at which the next wait slice ends:
 * WAIT_SLICE from now, or the deadline if sooner. */
static struct timespec
slice_end(double deadline)
{
    double now = fastio_monotonic();
    double end = now + WAIT_SLICE;
    if (deadline >= 0 && deadline < end) {
        end = deadline;
    }
    struct timespec ts;
    ts.tv_sec = (time_t)end;
    ts.tv_nsec = (long)((end - (double)ts.tv_sec) * 1e9);
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}

/* One libc call on a shared Lock or Semaphore, run by sync_op_run under the
 * SIGBUS guard (with or without the GIL: it touches no Python object). */
enum {
    OP_TRYLOCK, OP_CLOCKLOCK, OP_UNLOCK, OP_CONSISTENT, OP_OWNER, OP_MUTEX_INIT,
    OP_SEM_TRYWAIT, OP_SEM_CLOCKWAIT, OP_SEM_POST, OP_SEM_GETVALUE, OP_SEM_INIT,
};

typedef struct {
    int op;
    void *obj;              /* &shared->mutex or &shared->sem */
    struct timespec ts;     /* CLOCKLOCK, SEM_CLOCKWAIT: the absolute end */
    long n;                 /* SEM_POST: how many posts; SEM_INIT: the value */
    long done;              /* SEM_POST: how many were made */
    int value;              /* SEM_GETVALUE: the count; OWNER: the holder's tid */
    int rc;                 /* 0 or a positive errno */
} sync_op;

static void
sync_op_run(void *arg)
{
    sync_op *o = arg;
    int r;
    switch (o->op) {
    case OP_TRYLOCK:
        o->rc = pthread_mutex_trylock(o->obj);
        break;
    case OP_CLOCKLOCK:
        o->rc = pthread_mutex_clocklock(o->obj, CLOCK_MONOTONIC, &o->ts);
        break;
    case OP_UNLOCK:
        o->rc = pthread_mutex_unlock(o->obj);
        break;
    case OP_CONSISTENT:
        o->rc = pthread_mutex_consistent(o->obj);
        break;
    case OP_OWNER:
        /* The futex word: the holder's tid plus the WAITERS / OWNER_DIED
         * bits (robust-futex ABI). A plain load: no side effect, unlike
         * a trylock, which would take a dead owner's lock. */
        o->value = __atomic_load_n((int *)o->obj, __ATOMIC_ACQUIRE) & FUTEX_TID_MASK;
        break;
    case OP_MUTEX_INIT: {
        pthread_mutexattr_t attr;
        r = pthread_mutexattr_init(&attr);
        if (r == 0) {
            pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
            pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
            /* Error checking: relocking from the holding thread is EDEADLK
             * (an exception) instead of a silent self-deadlock. */
            pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_ERRORCHECK);
            r = pthread_mutex_init(o->obj, &attr);
            pthread_mutexattr_destroy(&attr);
        }
        o->rc = r;
        break;
    }
    case OP_SEM_TRYWAIT:
        while ((r = sem_trywait(o->obj)) < 0 && errno == EINTR) {
        }
        o->rc = r < 0 ? errno : 0;
        break;
    case OP_SEM_CLOCKWAIT:
        o->rc = sem_clockwait(o->obj, CLOCK_MONOTONIC, &o->ts) < 0 ? errno : 0;
        break;
    case OP_SEM_POST:
        o->rc = 0;
        for (o->done = 0; o->done < o->n; o->done++) {
            if (sem_post(o->obj) < 0) {
                o->rc = errno;  /* EOVERFLOW: past SEM_VALUE_MAX */
                break;
            }
        }
        break;
    case OP_SEM_GETVALUE:
        o->rc = sem_getvalue(o->obj, &o->value) < 0 ? errno : 0;
        break;
    case OP_SEM_INIT:
        o->rc = sem_init(o->obj, 1, (unsigned)o->n) < 0 ? errno : 0;
        break;
    }
}

/* With the GIL: run `o` under the guard. 0 (o->rc says how it went), or -1
 * with MappingError (the object's page is gone: its file was truncated). */
static int
sync_call(PyObject *self, sync_op *o, const char *opname, const void *shared)
{
    fastio_fault fault;
    if (fastio_guarded_call(sync_op_run, o, &fault) < 0) {
        fastio_shared_fault(Py_TYPE(self), &fault, opname, shared, SYNC_SIZE);
        return -1;
    }
    return 0;
}

/* The object at h: create=True claims its tag, runs `init` (an OP_*_INIT
 * on it; `init_call` names the libc call) and publishes it; create=False
 * checks that it holds a live `what`. 0, or -1 with an exception. */
static int
sync_make(PyObject *self, sync_head *h, uint32_t magic, const char *what,
          Py_ssize_t offset, int create, sync_op *init, const char *init_call,
          int (*replaceable)(void *ctx), void *ctx)
{
    PyTypeObject *type = Py_TYPE(self);
    if (!create) {
        return fastio_tag_check(type, &h->tag, &h->version, magic, SYNC_VERSION, what,
                                offset, SYNC_SIZE);
    }
    if (fastio_tag_claim(type, &h->tag, magic, what, offset, SYNC_SIZE, replaceable,
                         ctx) < 0) {
        return -1;
    }
    if (sync_call(self, init, what, h) < 0 || init->rc != 0) {
        if (!PyErr_Occurred()) {
            fastio_oserror(-init->rc, init_call, NULL);
        }
        fastio_tag_finish(type, &h->tag, magic, 0, SYNC_SIZE, NULL, 0);
        return -1;
    }
    /* Publish (the version, then LIVE): an attacher that sees LIVE sees an
     * initialized object. */
    return fastio_tag_finish(type, &h->tag, magic, 1, SYNC_SIZE, &h->version,
                             SYNC_VERSION);
}

/* Wait with `o` (OP_CLOCKLOCK or OP_SEM_CLOCKWAIT) until it succeeds,
 * fails, or the deadline (-1: none) passes, in slices of WAIT_SLICE with
 * the GIL released, so that signal handlers (Ctrl-C) run between slices.
 * EINTR is retried. The caller has entered the anchor (which keeps the
 * segment mapped while the GIL is released, even if another thread closes
 * the object meanwhile) and leaves it after. Returns the last o->rc (0,
 * ETIMEDOUT at the deadline, or another errno), or -1 with an exception
 * set when a signal handler raised or the memory faulted. */
static int
timed_wait_loop(PyObject *self, sync_op *o, double deadline, const char *opname,
                const void *shared)
{
    int rc, g;
    fastio_fault fault;
    for (;;) {
        o->ts = slice_end(deadline);
        Py_BEGIN_ALLOW_THREADS
        g = fastio_guarded_call(sync_op_run, o, &fault);
        Py_END_ALLOW_THREADS
        if (g < 0) {
            fastio_shared_fault(Py_TYPE(self), &fault, opname, shared, SYNC_SIZE);
            return -1;
        }
        rc = o->rc;
        if (rc != ETIMEDOUT && rc != EINTR) {
            return rc;
        }
        if (rc == ETIMEDOUT && deadline >= 0 && fastio_monotonic() >= deadline) {
            return rc;
        }
        if (PyErr_CheckSignals() < 0) {
            return -1;
        }
    }
}

/* Parse threading-style acquire(blocking=True, timeout=-1 or None).
 * *wait: -1 forever, 0 no wait, else seconds. */
static int
parse_acquire(PyObject *args, PyObject *kwds, const char *fname, double *wait)
{
    static char *keywords[] = {"blocking", "timeout", NULL};
    int blocking = 1;
    PyObject *timeout_obj = Py_None;
    char fmt[32];
    snprintf(fmt, sizeof(fmt), "|pO:%s", fname);
    if (!PyArg_ParseTupleAndKeywords(args, kwds, fmt, keywords, &blocking,
                                     &timeout_obj)) {
        return -1;
    }
    double timeout;
    if (fastio_parse_timeout_ex(timeout_obj, "timeout", FASTIO_TIMEOUT_MINUS_ONE,
                                &timeout) < 0) {
        return -1;
    }
    /* threading.Lock takes timeout=-1 (no timeout) with blocking=False and
     * refuses any other: None and inf, fastio's other spellings of -1,
     * are taken as -1 is. */
    if (!blocking && timeout != -1.0) {
        PyErr_SetString(PyExc_ValueError,
                        "can't specify a timeout for a non-blocking call");
        return -1;
    }
    *wait = blocking ? timeout : 0.0;
    return 0;
}

/* ================================================================== */
/* Lock */

typedef struct {
    PyObject_HEAD
    fastio_anchor anchor;
    lock_shared *shared;
    Py_ssize_t offset;
    PyObject *weakreflist;
} LockObject;

/* ------------------------------------------------------------------ */
/* A held lock's memory stays mapped
 *
 * glibc keeps each thread's held robust mutexes on a list threaded through
 * the mutexes themselves (robust_head -> mutex.__list -> ...): the next
 * robust lock that thread takes writes a pointer into the previous head,
 * and the kernel, when the thread exits, walks the list and marks each
 * mutex whose futex word holds the thread's id. If the memory of a held
 * mutex is unmapped, those writes land in whatever is mapped there next
 * (a user's mapping, a heap arena): memory corruption. So:
 *  - close() in the thread that holds the lock is refused (RuntimeError:
 *    release() first);
 *  - a handle closed or collected while some thread of this process holds
 *    the lock (another thread, or a thread that dropped its last handle
 *    without releasing) does not release its buffer export: the export is
 *    parked here, which keeps the segment mapped (region.c defers the
 *    unmap while an export lives). parked_sweep() releases a parked export
 *    once the mutex is no longer held by that thread (released through
 *    another handle, or the thread exited and the kernel cleared the tid).
 * Unlocking on the holder's behalf instead would be unsound: collection
 * may run in another thread (EPERM), the holder may still be inside its
 * critical section through another handle, and a dead owner's lock would
 * lose its OwnerDeadError. The parked list is touched with the GIL held;
 * a forked child's copy is released at its first sweep (glibc empties the
 * child's robust list at fork). */
typedef struct parked_export {
    struct parked_export *next;
    Py_buffer view;
    pthread_mutex_t *mutex;
    pid_t tid;              /* the holder when parked */
    pid_t pid;              /* the process that parked it */
} parked_export;

static parked_export *parked_list;
#ifdef Py_GIL_DISABLED
/* No GIL guards the list on a free-threaded build: this lock does. It is
 * never held while Python code can run (a parked export is unlinked under
 * it and released after). */
static PyMutex parked_mutex;
#define PARKED_LOCK() PyMutex_Lock(&parked_mutex)
#define PARKED_UNLOCK() PyMutex_Unlock(&parked_mutex)
#else
#define PARKED_LOCK() ((void)0)
#define PARKED_UNLOCK() ((void)0)
#endif

static pid_t
my_tid(void)
{
    return (pid_t)syscall(SYS_gettid);
}

/* 1 when `tid` is a live thread of this process. */
static int
tid_is_ours(pid_t tid)
{
    if (tid <= 0) {
        return 0;
    }
    return tid == my_tid() || syscall(SYS_tgkill, getpid(), tid, 0) == 0;
}

/* The tid in the mutex's futex word (0: free, or a dead owner's lock the
 * kernel marked); 0 too if its page is gone (nobody can hold it then). */
static pid_t
mutex_owner(pthread_mutex_t *m)
{
    sync_op o = {.op = OP_OWNER, .obj = m};
    if (fastio_guarded_call(sync_op_run, &o, NULL) < 0) {
        return 0;
    }
    return (pid_t)o.value;
}

static void
parked_sweep(void)
{
    pid_t pid = getpid();
    for (;;) {
        PARKED_LOCK();
        parked_export **pp = &parked_list, *e;
        while ((e = *pp) != NULL) {
            if (e->pid != pid || mutex_owner(e->mutex) != e->tid ||
                !tid_is_ours(e->tid)) {
                break;
            }
            pp = &e->next;
        }
        if (e == NULL) {
            PARKED_UNLOCK();
            return;
        }
        /* Unlink first: releasing the export may run Python code (an
         * exporter's __release_buffer__, a finalizer) that sweeps again. */
        __atomic_store_n(pp, e->next, __ATOMIC_RELAXED);
        PARKED_UNLOCK();
        PyBuffer_Release(&e->view);
        PyMem_RawFree(e);
    }
}

/* Give up the handle's export: now, or -- while a thread of this process
 * holds the mutex -- park it until the mutex is released. */
static void
lock_let_go(LockObject *self)
{
    fastio_anchor *a = &self->anchor;
    if (!a->closed || a->busy != 0 || !a->has_view) {
        return;
    }
    a->has_view = 0;  /* detached before anything below can run Python */
    pthread_mutex_t *m = &self->shared->mutex;
    pid_t tid = mutex_owner(m);
    if (tid_is_ours(tid)) {
        parked_export *e = PyMem_RawMalloc(sizeof *e);
        if (e == NULL) {
            return;  /* keep the export for ever: a leak, never a dangling list */
        }
        e->view = a->view;
        e->mutex = m;
        e->tid = tid;
        e->pid = getpid();
        PARKED_LOCK();
        e->next = parked_list;
        __atomic_store_n(&parked_list, e, __ATOMIC_RELAXED);
        PARKED_UNLOCK();
        return;
    }
    PyBuffer_Release(&a->view);
    parked_sweep();
}

static int
lock_check(LockObject *self)
{
    if (self->anchor.closed) {
        PyErr_SetString(PyExc_ValueError, "Lock is closed");
        return -1;
    }
    return 0;
}

static PyObject *
raise_owner_dead(PyTypeObject *tp, const char *what)
{
    fastio_state *st = fastio_state_from_type(tp);
    PyErr_Format(st->OwnerDeadError,
                 "the previous holder of this %s died while holding it; the "
                 "caller now holds it: repair the protected data, then call "
                 "mark_consistent() and release(). Releasing without "
                 "mark_consistent() makes it unusable (ENOTRECOVERABLE)", what);
    return NULL;
}

static PyObject *
lock_result(LockObject *self, int rc)
{
    switch (rc) {
    case 0:
        Py_RETURN_TRUE;
    case EBUSY:
    case ETIMEDOUT:
        Py_RETURN_FALSE;
    case EOWNERDEAD:
        return raise_owner_dead(Py_TYPE(self), "Lock");
    case EDEADLK:
        PyErr_SetString(PyExc_RuntimeError,
                        "this thread already holds the Lock (it is not reentrant)");
        return NULL;
    default:
        /* ENOTRECOVERABLE: released after an owner died without
         * mark_consistent(); create the lock anew. */
        return fastio_oserror(-rc, "pthread_mutex_lock", NULL);
    }
}

/* create=True over a live Lock is allowed in one case: nobody can ever take
 * it again (released after an owner died without mark_consistent(): every
 * lock attempt fails with ENOTRECOVERABLE, so nobody holds or waits on it).
 * glibc marks that state with __owner = PTHREAD_MUTEX_NOTRECOVERABLE
 * (INT_MAX - 1); a trylock would tell too, but would take a dead owner's
 * lock as a side effect. Runs under the SIGBUS guard (tag claim). */
static int
lock_unrecoverable(void *ctx)
{
#ifdef __GLIBC__
    pthread_mutex_t *m = ctx;
    return __atomic_load_n(&m->__data.__owner, __ATOMIC_ACQUIRE) == INT_MAX - 1;
#else
    (void)ctx;
    return 0;
#endif
}

static PyObject *
lock_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *keywords[] = {"buffer", "offset", "create", NULL};
    PyObject *buffer;
    Py_ssize_t offset = 0;
    int create = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|O&$p:Lock", keywords,
                                     &buffer, fastio_offset_converter, &offset,
                                     &create)) {
        return NULL;
    }
    parked_sweep();
    LockObject *self = (LockObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->weakreflist = NULL;
    self->offset = offset;
    char *p;
    if (fastio_anchor_init(&self->anchor, buffer, offset, SYNC_SIZE, SYNC_ALIGN,
                           "Lock", &p) < 0) {
        self->anchor.closed = 1;
        Py_DECREF(self);
        return NULL;
    }
    lock_shared *sh = (lock_shared *)p;
    self->shared = sh;
    /* The claim (state INIT) makes this the only creator: nobody holds or
     * waits on the mutex it initialises. */
    sync_op o = {.op = OP_MUTEX_INIT, .obj = &sh->mutex};
    if (sync_make((PyObject *)self, &sh->head, LOCK_MAGIC, "Lock", offset, create, &o,
                  "pthread_mutex_init", lock_unrecoverable, &sh->mutex) < 0) {
        goto fail;
    }
    return (PyObject *)self;

fail:
    /* Nothing of ours was locked through this handle: let go at once. */
    fastio_anchor_close(&self->anchor);
    Py_DECREF(self);
    return NULL;
}

static void
lock_dealloc(LockObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    if (self->weakreflist != NULL) {
        PyObject_ClearWeakRefs((PyObject *)self);
    }
    /* busy is 0 here: every wait holds a reference to self. A lock some
     * thread of ours still holds keeps its memory mapped (parked). */
    self->anchor.closed = 1;
    lock_let_go(self);
    tp->tp_free(self);
    Py_DECREF(tp);
}

static int
lock_traverse(LockObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    if (self->anchor.has_view) {
        Py_VISIT(self->anchor.view.obj);
    }
    return 0;
}

static PyObject *
lock_acquire_impl(LockObject *self, double wait)
{
    if (lock_check(self) < 0) {
        return NULL;
    }
    pthread_mutex_t *m = &self->shared->mutex;
    sync_op o = {.op = OP_TRYLOCK, .obj = m};
    if (sync_call((PyObject *)self, &o, "Lock.acquire", self->shared) < 0) {
        return NULL;
    }
    int rc = o.rc;
    if (rc == EDEADLK && wait == 0.0) {
        Py_RETURN_FALSE;  /* held by this thread: a try fails, as threading's */
    }
    if (rc != EBUSY || wait == 0.0) {
        return lock_result(self, rc);
    }
    o.op = OP_CLOCKLOCK;
    fastio_anchor_enter(&self->anchor);
    rc = timed_wait_loop((PyObject *)self, &o, deadline_after(wait), "Lock.acquire",
                         self->shared);
    self->anchor.busy--;
    if (self->anchor.closed && rc == 0) {
        /* Closed by another thread while we waited: give the lock we just
         * took back (nobody relies on it yet) rather than hold it through
         * a handle that cannot release it. (An owner-died lock stays held:
         * releasing it would lose the owner-death for the next acquirer; it
         * is marked again when this thread exits, its memory parked.) */
        o.op = OP_UNLOCK;
        (void)fastio_guarded_call(sync_op_run, &o, NULL);
        lock_let_go(self);
        PyErr_SetString(PyExc_ValueError, "Lock is closed");
        return NULL;
    }
    lock_let_go(self);
    if (rc < 0) {
        return NULL;
    }
    return lock_result(self, rc);
}

static PyObject *
lock_acquire(LockObject *self, PyObject *args, PyObject *kwds)
{
    double wait;
    if (parse_acquire(args, kwds, "acquire", &wait) < 0) {
        return NULL;
    }
    return lock_acquire_impl(self, wait);
}

static PyObject *
lock_release(LockObject *self, PyObject *Py_UNUSED(ignored))
{
    if (lock_check(self) < 0) {
        return NULL;
    }
    sync_op o = {.op = OP_UNLOCK, .obj = &self->shared->mutex};
    if (sync_call((PyObject *)self, &o, "Lock.release", self->shared) < 0) {
        return NULL;
    }
    if (o.rc == EPERM) {
        PyErr_SetString(PyExc_RuntimeError,
                        "release unlocked lock: this thread does not hold the Lock "
                        "(a process-shared lock is released by the thread that "
                        "acquired it)");
        return NULL;
    }
    if (o.rc != 0) {
        return fastio_oserror(-o.rc, "pthread_mutex_unlock", NULL);
    }
    /* Another handle's export may have been parked for this thread. */
    if (__atomic_load_n(&parked_list, __ATOMIC_RELAXED) != NULL) {
        parked_sweep();
    }
    Py_RETURN_NONE;
}

static PyObject *
lock_locked(LockObject *self, PyObject *Py_UNUSED(ignored))
{
    if (lock_check(self) < 0) {
        return NULL;
    }
    sync_op o = {.op = OP_TRYLOCK, .obj = &self->shared->mutex};
    if (sync_call((PyObject *)self, &o, "Lock.locked", self->shared) < 0) {
        return NULL;
    }
    int rc = o.rc;
    if (rc == 0) {
        o.op = OP_UNLOCK;
        if (sync_call((PyObject *)self, &o, "Lock.locked", self->shared) < 0) {
            return NULL;
        }
        Py_RETURN_FALSE;
    }
    if (rc == EBUSY || rc == EDEADLK) {  /* EDEADLK: held by this thread */
        Py_RETURN_TRUE;
    }
    /* EOWNERDEAD: the try made us the holder; say so rather than hide it. */
    return lock_result(self, rc);
}

static PyObject *
lock_mark_consistent(LockObject *self, PyObject *Py_UNUSED(ignored))
{
    if (lock_check(self) < 0) {
        return NULL;
    }
    sync_op o = {.op = OP_CONSISTENT, .obj = &self->shared->mutex};
    if (sync_call((PyObject *)self, &o, "Lock.mark_consistent", self->shared) < 0) {
        return NULL;
    }
    if (o.rc == EINVAL) {
        PyErr_SetString(PyExc_RuntimeError,
                        "mark_consistent(): the Lock is not in the owner-died state, "
                        "or this thread does not hold it");
        return NULL;
    }
    if (o.rc != 0) {
        return fastio_oserror(-o.rc, "pthread_mutex_consistent", NULL);
    }
    Py_RETURN_NONE;
}

static PyObject *
lock_enter(LockObject *self, PyObject *Py_UNUSED(ignored))
{
    return lock_acquire_impl(self, -1.0);
}

static PyObject *
lock_exit(LockObject *self, PyObject *args)
{
    PyObject *r = lock_release(self, NULL);
    if (r == NULL) {
        return NULL;
    }
    Py_DECREF(r);
    Py_RETURN_FALSE;
}

static PyObject *
lock_close(LockObject *self, PyObject *Py_UNUSED(ignored))
{
    if (self->anchor.closed) {
        Py_RETURN_NONE;
    }
    if (self->anchor.has_view && mutex_owner(&self->shared->mutex) == my_tid()) {
        PyErr_Format(PyExc_RuntimeError,
                     "close(): this thread holds the Lock at offset=%zd; release() "
                     "it first (this thread's list of held robust locks points into "
                     "its memory, which closing could unmap)", self->offset);
        return NULL;
    }
    self->anchor.closed = 1;
    lock_let_go(self);  /* or later: the last waiting thread lets go */
    Py_RETURN_NONE;
}

static PyObject *
lock_get_closed(LockObject *self, void *closure)
{
    return PyBool_FromLong(self->anchor.closed);
}

static PyObject *
lock_get_offset(LockObject *self, void *closure)
{
    return PyLong_FromSsize_t(self->offset);
}

static PyObject *
lock_get_buffer(LockObject *self, void *closure)
{
    if (!self->anchor.has_view || self->anchor.view.obj == NULL) {
        Py_RETURN_NONE;
    }
    return Py_NewRef(self->anchor.view.obj);
}

static PyObject *
lock_repr(LockObject *self)
{
    if (self->anchor.closed) {
        return PyUnicode_FromFormat("<%s closed>", _PyType_Name(Py_TYPE(self)));
    }
    return PyUnicode_FromFormat("<%s offset=%zd>", _PyType_Name(Py_TYPE(self)),
                                self->offset);
}

/* Run inside a critical section on self (fastio.h, docs/freethreading.md). */
FASTIO_LOCKED_KW(lock_acquire)
FASTIO_LOCKED_O(lock_release)
FASTIO_LOCKED_O(lock_locked)
FASTIO_LOCKED_O(lock_mark_consistent)
FASTIO_LOCKED_O(lock_close)
FASTIO_LOCKED_O(lock_enter)
FASTIO_LOCKED_O(lock_exit)

static PyMethodDef lock_methods[] = {
    {"acquire", (PyCFunction)(void (*)(void))lock_acquire_locked, METH_VARARGS | METH_KEYWORDS,
     "acquire($self, /, blocking=True, timeout=-1)\n--\n\n"
     "Acquire the lock, waiting with the GIL released; True if acquired.\n"
     "timeout: seconds (float); -1, None or inf waits forever; False when it\n"
     "expires. Raises OwnerDeadError (with the lock now held by the caller) when the\n"
     "previous holder died holding it."},
    {"release", (PyCFunction)lock_release_locked, METH_NOARGS,
     "release($self, /)\n--\n\n"
     "Release the lock; RuntimeError unless this thread holds it."},
    {"locked", (PyCFunction)lock_locked_locked, METH_NOARGS,
     "locked($self, /)\n--\n\nTrue if some thread or process holds the lock."},
    {"mark_consistent", (PyCFunction)lock_mark_consistent_locked, METH_NOARGS,
     "mark_consistent($self, /)\n--\n\n"
     "After OwnerDeadError: declare the protected data repaired, so that the\n"
     "lock stays usable after the next release()."},
    {"close", (PyCFunction)lock_close_locked, METH_NOARGS,
     "close($self, /)\n--\n\n"
     "Drop this handle's hold on the segment (the lock itself stays in the\n"
     "segment for other handles). Idempotent. RuntimeError while the calling\n"
     "thread holds the lock: release() it first."},
    {"__enter__", (PyCFunction)lock_enter_locked, METH_NOARGS,
     "__enter__($self, /)\n--\n\nacquire() without timeout."},
    {"__exit__", (PyCFunction)lock_exit_locked, METH_VARARGS,
     "__exit__($self, *args)\n--\n\nrelease()."},
    {NULL, NULL, 0, NULL},
};

/* Run inside a critical section on self (fastio.h, docs/freethreading.md). */
FASTIO_LOCKED_GET(lock_get_closed)
FASTIO_LOCKED_GET(lock_get_offset)
FASTIO_LOCKED_GET(lock_get_buffer)

static PyGetSetDef lock_getset[] = {
    {"closed", (getter)lock_get_closed_locked, NULL, "True after close().", NULL},
    {"offset", (getter)lock_get_offset_locked, NULL, "Byte offset in the buffer.", NULL},
    {"buffer", (getter)lock_get_buffer_locked, NULL,
     "The object whose memory holds it (None after close()).", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef lock_members[] = {
    {"__weaklistoffset__", T_PYSSIZET, offsetof(LockObject, weakreflist), READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

/* Slots inside a critical section on self (fastio.h). */
FASTIO_LOCKED_SELF(lock_repr)

static PyType_Slot lock_slots[] = {
    {Py_tp_new, lock_new},
    {Py_tp_dealloc, lock_dealloc},
    {Py_tp_traverse, lock_traverse},
    {Py_tp_repr, lock_repr_locked},
    {Py_tp_methods, lock_methods},
    {Py_tp_getset, lock_getset},
    {Py_tp_members, lock_members},
    {Py_tp_doc,
     "Lock(buffer, offset=0, *, create=True)\n--\n\n"
     "A process-shared, robust lock living in Lock.SIZE bytes of a shared\n"
     "buffer at offset (a multiple of 16). create=True initializes the memory\n"
     "(FileExistsError if it holds a live fastio object); create=False\n"
     "attaches to a lock another handle created (ValueError if the memory\n"
     "holds none). The handle keeps a buffer export of the segment until\n"
     "close() or collection (longer while a thread of this process holds it)."},
    {0, NULL},
};

static PyType_Spec lock_spec = {
    .name = "fastio.Lock",
    .basicsize = sizeof(LockObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .slots = lock_slots,
};

/* ================================================================== */
/* Semaphore */

typedef struct {
    PyObject_HEAD
    fastio_anchor anchor;
    sem_shared *shared;
    Py_ssize_t offset;
    PyObject *weakreflist;
} SemObject;

static int
sem_check(SemObject *self)
{
    if (self->anchor.closed) {
        PyErr_SetString(PyExc_ValueError, "Semaphore is closed");
        return -1;
    }
    return 0;
}

static PyObject *
semaphore_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *keywords[] = {"buffer", "offset", "value", "create", NULL};
    PyObject *buffer;
    Py_ssize_t offset = 0;
    PyObject *value_obj = NULL;
    int create = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|O&O$p:Semaphore", keywords,
                                     &buffer, fastio_offset_converter, &offset,
                                     &value_obj, &create)) {
        return NULL;
    }
    long long value = 1;
    if (value_obj != NULL &&
        fastio_int_arg(value_obj, "value", 0, SEM_VALUE_MAX, &value) < 0) {
        return NULL;
    }
    SemObject *self = (SemObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->weakreflist = NULL;
    self->offset = offset;
    char *p;
    if (fastio_anchor_init(&self->anchor, buffer, offset, SYNC_SIZE, SYNC_ALIGN,
                           "Semaphore", &p) < 0) {
        self->anchor.closed = 1;
        Py_DECREF(self);
        return NULL;
    }
    sem_shared *sh = (sem_shared *)p;
    self->shared = sh;
    /* A semaphore has no unusable state: a live one is never replaced. */
    sync_op o = {.op = OP_SEM_INIT, .obj = &sh->sem, .n = (long)value};
    if (sync_make((PyObject *)self, &sh->head, SEM_MAGIC, "Semaphore", offset, create,
                  &o, "sem_init", NULL, NULL) < 0) {
        goto fail;
    }
    return (PyObject *)self;

fail:
    fastio_anchor_close(&self->anchor);
    Py_DECREF(self);
    return NULL;
}

static void
sem_dealloc(SemObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    if (self->weakreflist != NULL) {
        PyObject_ClearWeakRefs((PyObject *)self);
    }
    fastio_anchor_close(&self->anchor);
    tp->tp_free(self);
    Py_DECREF(tp);
}

static int
sem_traverse(SemObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    if (self->anchor.has_view) {
        Py_VISIT(self->anchor.view.obj);
    }
    return 0;
}

static PyObject *
sem_acquire_impl(SemObject *self, double wait)
{
    if (sem_check(self) < 0) {
        return NULL;
    }
    sync_op o = {.op = OP_SEM_TRYWAIT, .obj = &self->shared->sem};
    if (sync_call((PyObject *)self, &o, "Semaphore.acquire", self->shared) < 0) {
        return NULL;
    }
    if (o.rc == 0) {
        Py_RETURN_TRUE;
    }
    if (o.rc != EAGAIN) {
        return fastio_oserror(-o.rc, "sem_trywait", NULL);
    }
    if (wait == 0.0) {
        Py_RETURN_FALSE;
    }
    o.op = OP_SEM_CLOCKWAIT;
    fastio_anchor_enter(&self->anchor);
    int err = timed_wait_loop((PyObject *)self, &o, deadline_after(wait),
                              "Semaphore.acquire", self->shared);
    fastio_anchor_leave(&self->anchor);
    if (err < 0) {
        return NULL;
    }
    if (err == 0) {
        Py_RETURN_TRUE;
    }
    if (err == ETIMEDOUT) {
        Py_RETURN_FALSE;
    }
    return fastio_oserror(-err, "sem_clockwait", NULL);
}

static PyObject *
sem_acquire(SemObject *self, PyObject *args, PyObject *kwds)
{
    double wait;
    if (parse_acquire(args, kwds, "acquire", &wait) < 0) {
        return NULL;
    }
    return sem_acquire_impl(self, wait);
}

/* Post n times. POSIX has no "add n": the posts run in chunks of
 * POST_CHUNK with the GIL released (the anchor keeps the memory mapped),
 * signals checked between chunks, so a large n neither freezes the other
 * threads nor ignores Ctrl-C. */
static PyObject *
sem_post_n(SemObject *self, long n, const char *opname)
{
    sync_op o = {.op = OP_SEM_POST, .obj = &self->shared->sem};
    if (n <= POST_CHUNK) {
        o.n = n;
        if (sync_call((PyObject *)self, &o, opname, self->shared) < 0) {
            return NULL;
        }
        if (o.rc != 0) {
            return fastio_oserror(-o.rc, "sem_post", NULL);
        }
        Py_RETURN_NONE;
    }
    fastio_anchor_enter(&self->anchor);
    long left = n;
    int g = 0;
    fastio_fault fault;
    while (left > 0) {
        o.n = left < POST_CHUNK ? left : POST_CHUNK;
        Py_BEGIN_ALLOW_THREADS
        g = fastio_guarded_call(sync_op_run, &o, &fault);
        Py_END_ALLOW_THREADS
        if (g < 0 || o.rc != 0) {
            break;
        }
        left -= o.n;
        if (left > 0 && PyErr_CheckSignals() < 0) {
            break;
        }
    }
    fastio_anchor_leave(&self->anchor);
    if (g < 0) {
        return fastio_shared_fault(Py_TYPE(self), &fault, opname, self->shared,
                                   SYNC_SIZE);
    }
    if (o.rc != 0) {
        return fastio_oserror(-o.rc, "sem_post", NULL);
    }
    if (PyErr_Occurred()) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
sem_release(SemObject *self, PyObject *args, PyObject *kwds)
{
    static char *keywords[] = {"n", NULL};
    PyObject *n_obj = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|O:release", keywords, &n_obj)) {
        return NULL;
    }
    /* Converted before sem_check: __index__ may run Python code (close). */
    long long n = 1;
    if (n_obj != NULL && fastio_int_arg(n_obj, "n", 1, SEM_VALUE_MAX, &n) < 0) {
        return NULL;
    }
    if (sem_check(self) < 0) {
        return NULL;
    }
    /* Refuse at once what would pass SEM_VALUE_MAX rather than post part
     * of it (a racing release elsewhere can still make a post fail with
     * EOVERFLOW: then the count is at the maximum). */
    sync_op o = {.op = OP_SEM_GETVALUE, .obj = &self->shared->sem};
    if (sync_call((PyObject *)self, &o, "Semaphore.release", self->shared) < 0) {
        return NULL;
    }
    if (o.rc == 0 && o.value >= 0 && n > (long long)SEM_VALUE_MAX - o.value) {
        PyErr_Format(PyExc_ValueError,
                     "release(n=%lld) would raise the count past %d (it is %d)",
                     n, SEM_VALUE_MAX, o.value);
        return NULL;
    }
    return sem_post_n(self, (long)n, "Semaphore.release");
}

static PyObject *
sem_get_value(SemObject *self, void *closure)
{
    if (sem_check(self) < 0) {
        return NULL;
    }
    sync_op o = {.op = OP_SEM_GETVALUE, .obj = &self->shared->sem};
    if (sync_call((PyObject *)self, &o, "Semaphore.value", self->shared) < 0) {
        return NULL;
    }
    if (o.rc != 0) {
        return fastio_oserror(-o.rc, "sem_getvalue", NULL);
    }
    return PyLong_FromLong(o.value);
}

static PyObject *
sem_enter(SemObject *self, PyObject *Py_UNUSED(ignored))
{
    return sem_acquire_impl(self, -1.0);
}

static PyObject *
sem_exit(SemObject *self, PyObject *args)
{
    if (sem_check(self) < 0) {
        return NULL;
    }
    PyObject *r = sem_post_n(self, 1, "Semaphore.__exit__");
    if (r == NULL) {
        return NULL;
    }
    Py_DECREF(r);
    Py_RETURN_FALSE;
}

static PyObject *
semaphore_close(SemObject *self, PyObject *Py_UNUSED(ignored))
{
    fastio_anchor_close(&self->anchor);
    Py_RETURN_NONE;
}

static PyObject *
sem_get_closed(SemObject *self, void *closure)
{
    return PyBool_FromLong(self->anchor.closed);
}

static PyObject *
sem_get_offset(SemObject *self, void *closure)
{
    return PyLong_FromSsize_t(self->offset);
}

static PyObject *
sem_get_buffer(SemObject *self, void *closure)
{
    if (!self->anchor.has_view || self->anchor.view.obj == NULL) {
        Py_RETURN_NONE;
    }
    return Py_NewRef(self->anchor.view.obj);
}

static PyObject *
sem_repr(SemObject *self)
{
    if (self->anchor.closed) {
        return PyUnicode_FromFormat("<%s closed>", _PyType_Name(Py_TYPE(self)));
    }
    /* Guarded: a repr must not kill the process when the page is gone. */
    sync_op o = {.op = OP_SEM_GETVALUE, .obj = &self->shared->sem, .value = -1};
    (void)fastio_guarded_call(sync_op_run, &o, NULL);
    return PyUnicode_FromFormat("<%s offset=%zd value=%d>",
                                _PyType_Name(Py_TYPE(self)), self->offset, o.value);
}

/* Run inside a critical section on self (fastio.h, docs/freethreading.md). */
FASTIO_LOCKED_KW(sem_acquire)
FASTIO_LOCKED_KW(sem_release)
FASTIO_LOCKED_O(semaphore_close)
FASTIO_LOCKED_O(sem_enter)
FASTIO_LOCKED_O(sem_exit)

static PyMethodDef sem_methods[] = {
    {"acquire", (PyCFunction)(void (*)(void))sem_acquire_locked, METH_VARARGS | METH_KEYWORDS,
     "acquire($self, /, blocking=True, timeout=-1)\n--\n\n"
     "Decrement the count, waiting with the GIL released while it is 0;\n"
     "True if decremented, False when timeout (seconds; -1, None or inf:\n"
     "forever) expires."},
    {"release", (PyCFunction)(void (*)(void))sem_release_locked, METH_VARARGS | METH_KEYWORDS,
     "release($self, /, n=1)\n--\n\nIncrement the count by n, waking waiters.\n"
     "n in [1, SEM_VALUE_MAX], else OverflowError; ValueError if the count\n"
     "would pass SEM_VALUE_MAX. A large n posts with the\n"
     "GIL released, in chunks between which signals are handled."},
    {"close", (PyCFunction)semaphore_close_locked, METH_NOARGS,
     "close($self, /)\n--\n\nDrop this handle's hold on the segment. Idempotent."},
    {"__enter__", (PyCFunction)sem_enter_locked, METH_NOARGS,
     "__enter__($self, /)\n--\n\nacquire() without timeout."},
    {"__exit__", (PyCFunction)sem_exit_locked, METH_VARARGS,
     "__exit__($self, *args)\n--\n\nrelease()."},
    {NULL, NULL, 0, NULL},
};

/* Run inside a critical section on self (fastio.h, docs/freethreading.md). */
FASTIO_LOCKED_GET(sem_get_value)
FASTIO_LOCKED_GET(sem_get_closed)
FASTIO_LOCKED_GET(sem_get_offset)
FASTIO_LOCKED_GET(sem_get_buffer)

static PyGetSetDef sem_getset[] = {
    {"value", (getter)sem_get_value_locked, NULL, "The current count.", NULL},
    {"closed", (getter)sem_get_closed_locked, NULL, "True after close().", NULL},
    {"offset", (getter)sem_get_offset_locked, NULL, "Byte offset in the buffer.", NULL},
    {"buffer", (getter)sem_get_buffer_locked, NULL,
     "The object whose memory holds it (None after close()).", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef sem_members[] = {
    {"__weaklistoffset__", T_PYSSIZET, offsetof(SemObject, weakreflist), READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

/* Slots inside a critical section on self (fastio.h). */
FASTIO_LOCKED_SELF(sem_repr)

static PyType_Slot sem_slots[] = {
    {Py_tp_new, semaphore_new},
    {Py_tp_dealloc, sem_dealloc},
    {Py_tp_traverse, sem_traverse},
    {Py_tp_repr, sem_repr_locked},
    {Py_tp_methods, sem_methods},
    {Py_tp_getset, sem_getset},
    {Py_tp_members, sem_members},
    {Py_tp_doc,
     "Semaphore(buffer, offset=0, value=1, *, create=True)\n--\n\n"
     "A process-shared counting semaphore (POSIX, pshared) living in\n"
     "Semaphore.SIZE bytes of a shared buffer at offset (a multiple of 16).\n"
     "create=True refuses memory holding a live fastio object (FileExistsError);\n"
     "create=False attaches to one another handle created."},
    {0, NULL},
};

static PyType_Spec sem_spec = {
    .name = "fastio.Semaphore",
    .basicsize = sizeof(SemObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .slots = sem_slots,
};

/* ================================================================== */

int
fastio_sync_exec(PyObject *module, fastio_state *st)
{
    if (fastio_add_type(module, &lock_spec, NULL, &st->lock_type) < 0 ||
        fastio_add_type(module, &sem_spec, NULL, &st->semaphore_type) < 0) {
        return -1;
    }
    PyObject *size = PyLong_FromLong(SYNC_SIZE);
    if (size == NULL) {
        return -1;
    }
    int rc = PyObject_SetAttrString((PyObject *)st->lock_type, "SIZE", size);
    if (rc == 0) {
        rc = PyObject_SetAttrString((PyObject *)st->semaphore_type, "SIZE", size);
    }
    Py_DECREF(size);
    if (rc < 0) {
        return -1;
    }
    PyObject *bases = PyTuple_Pack(2, st->FastIOError, PyExc_RuntimeError);
    if (bases == NULL) {
        return -1;
    }
    st->OwnerDeadError = PyErr_NewExceptionWithDoc(
        "fastio.OwnerDeadError",
        "The previous holder of a Lock died while holding it (EOWNERDEAD). "
        "The caller now holds the lock: repair the data it protects, call "
        "lock.mark_consistent(), then lock.release(). A release() without "
        "mark_consistent() leaves the lock unusable (ENOTRECOVERABLE).",
        bases, NULL);
    Py_DECREF(bases);
    if (st->OwnerDeadError == NULL ||
        PyModule_AddObjectRef(module, "OwnerDeadError", st->OwnerDeadError) < 0) {
        return -1;
    }
    return 0;
}
