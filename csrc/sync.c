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
 * Layout in the segment (SIZE = 64 bytes each, 16-byte aligned):
 *   u32 magic, u32 version, u64 reserved, then the pthread object at +16.
 * The magic is written last (release) by the creator and checked (acquire)
 * by attachers, so create=False on memory that holds no lock is a clear
 * ValueError instead of undefined behaviour inside glibc.
 *
 * Waiting: a first try with the GIL held (no syscall when uncontended),
 * then timed waits with the GIL released in slices of WAIT_SLICE seconds;
 * between slices PyErr_CheckSignals runs, so Ctrl-C interrupts a long wait.
 * Timed waits use CLOCK_MONOTONIC (pthread_mutex_clocklock, sem_clockwait:
 * glibc 2.30+), so a wall-clock jump neither shortens nor stretches them.
 */
#include "fastio.h"

#include <math.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <time.h>

#define LOCK_MAGIC 0x4b434c46u  /* "FLCK" */
#define SEM_MAGIC 0x4d455346u   /* "FSEM" */
#define SYNC_VERSION 1u
#define SYNC_SIZE 64
#define SYNC_ALIGN 16
/* How long one GIL-released wait lasts before signals are checked. */
#define WAIT_SLICE 0.05

typedef struct {
    _Atomic uint32_t magic;
    uint32_t version;
    uint64_t reserved;
    pthread_mutex_t mutex;
} lock_shared;

typedef struct {
    _Atomic uint32_t magic;
    uint32_t version;
    uint64_t reserved;
    sem_t sem;
} sem_shared;

_Static_assert(sizeof(lock_shared) <= SYNC_SIZE, "Lock.SIZE too small");
_Static_assert(sizeof(sem_shared) <= SYNC_SIZE, "Semaphore.SIZE too small");

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
fastio_parse_timeout(PyObject *obj, const char *argname, double *out)
{
    if (obj == NULL || obj == Py_None) {
        *out = -1.0;
        return 0;
    }
    double t = PyFloat_AsDouble(obj);
    if (t == -1.0 && PyErr_Occurred()) {
        if (PyErr_ExceptionMatches(PyExc_TypeError)) {
            PyErr_Format(PyExc_TypeError,
                         "%s must be a number of seconds or None, got %s of type %.100s",
                         argname, argname, Py_TYPE(obj)->tp_name);
        }
        return -1;
    }
    if (!(t >= 0.0)) {  /* negative or NaN */
        PyErr_Format(PyExc_ValueError,
                     "%s must be a non-negative number of seconds or None, got %s=%R",
                     argname, argname, obj);
        return -1;
    }
    *out = t;
    return 0;
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

/* create=False: the memory at `offset` must already hold a fastio.<what>
 * of this version (its creator published `expected` last, with release
 * order). 0, or -1 with ValueError. */
static int
check_attached(_Atomic uint32_t *magic_p, const uint32_t *version_p,
               uint32_t expected,
               Py_ssize_t offset, const char *what)
{
    uint32_t magic = atomic_load_explicit(magic_p, memory_order_acquire);
    /* The version is read after the magic: the acquire makes it valid. */
    uint32_t version = *version_p;
    if (magic != expected || version != SYNC_VERSION) {
        PyErr_Format(PyExc_ValueError,
                     "the memory at offset=%zd holds no fastio.%s "
                     "(magic 0x%08x version %u, expected 0x%08x version %u): "
                     "create it first with create=True",
                     offset, what, (unsigned)magic, (unsigned)version,
                     (unsigned)expected, (unsigned)SYNC_VERSION);
        return -1;
    }
    return 0;
}

/* One blocking wait until the absolute CLOCK_MONOTONIC time *ts: 0 when
 * acquired, else a positive errno (ETIMEDOUT when the time passed). Called
 * without the GIL. */
typedef int (*timed_wait_fn)(void *obj, const struct timespec *ts);

static int
mutex_timed_wait(void *m, const struct timespec *ts)
{
    return pthread_mutex_clocklock((pthread_mutex_t *)m, CLOCK_MONOTONIC, ts);
}

static int
sem_timed_wait(void *s, const struct timespec *ts)
{
    return sem_clockwait((sem_t *)s, CLOCK_MONOTONIC, ts) < 0 ? errno : 0;
}

/* Wait with `wait_op` on `obj` until it succeeds, fails, or the deadline
 * (-1: none) passes, in slices of WAIT_SLICE with the GIL released, so
 * that signal handlers (Ctrl-C) run between slices. EINTR is retried.
 * The anchor keeps the segment mapped while the GIL is released, even if
 * another thread closes the object meanwhile. Returns the last result of
 * wait_op (0, ETIMEDOUT at the deadline, or another errno), or -1 with an
 * exception set when a signal handler raised. */
static int
timed_wait_loop(fastio_anchor *anchor, timed_wait_fn wait_op, void *obj,
                double deadline)
{
    int rc;
    fastio_anchor_enter(anchor);
    for (;;) {
        struct timespec ts = slice_end(deadline);
        Py_BEGIN_ALLOW_THREADS
        rc = wait_op(obj, &ts);
        Py_END_ALLOW_THREADS
        if (rc != ETIMEDOUT && rc != EINTR) {
            break;
        }
        if (rc == ETIMEDOUT && deadline >= 0 && fastio_monotonic() >= deadline) {
            break;
        }
        if (PyErr_CheckSignals() < 0) {
            rc = -1;
            break;
        }
    }
    fastio_anchor_leave(anchor);
    return rc;
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
    double timeout = -1.0;
    if (timeout_obj != Py_None) {
        timeout = PyFloat_AsDouble(timeout_obj);
        if (timeout == -1.0 && PyErr_Occurred()) {
            if (PyErr_ExceptionMatches(PyExc_TypeError)) {
                PyErr_Format(PyExc_TypeError,
                             "timeout must be a number of seconds, -1 or None, got "
                             "timeout of type %.100s", Py_TYPE(timeout_obj)->tp_name);
            }
            return -1;
        }
        /* threading.Lock spells "forever" as -1 */
        if (timeout != -1.0 && !(timeout >= 0.0)) {
            PyErr_Format(PyExc_ValueError,
                         "timeout must be a non-negative number of seconds, -1 or "
                         "None, got timeout=%R", timeout_obj);
            return -1;
        }
    }
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

static PyObject *
lock_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *keywords[] = {"buffer", "offset", "create", NULL};
    PyObject *buffer;
    Py_ssize_t offset = 0;
    int create = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|n$p:Lock", keywords,
                                     &buffer, &offset, &create)) {
        return NULL;
    }
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
    if (create) {
        atomic_store_explicit(&sh->magic, 0, memory_order_relaxed);
        pthread_mutexattr_t attr;
        int rc = pthread_mutexattr_init(&attr);
        if (rc == 0) {
            pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
            pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
            /* Error checking: relocking from the holding thread is EDEADLK
             * (an exception) instead of a silent self-deadlock. */
            pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_ERRORCHECK);
            rc = pthread_mutex_init(&sh->mutex, &attr);
            pthread_mutexattr_destroy(&attr);
        }
        if (rc != 0) {
            fastio_anchor_close(&self->anchor);
            Py_DECREF(self);
            return fastio_oserror(-rc, "pthread_mutex_init", NULL);
        }
        sh->version = SYNC_VERSION;
        sh->reserved = 0;
        /* Publish: an attacher that sees the magic sees an initialized mutex. */
        atomic_store_explicit(&sh->magic, LOCK_MAGIC, memory_order_release);
    }
    else if (check_attached(&sh->magic, &sh->version, LOCK_MAGIC, offset,
                            "Lock") < 0) {
        fastio_anchor_close(&self->anchor);
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static void
lock_dealloc(LockObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    if (self->weakreflist != NULL) {
        PyObject_ClearWeakRefs((PyObject *)self);
    }
    /* busy is 0 here: every wait holds a reference to self. */
    fastio_anchor_close(&self->anchor);
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
    int rc = pthread_mutex_trylock(m);
    if (rc == EDEADLK && wait == 0.0) {
        Py_RETURN_FALSE;  /* held by this thread: a try fails, as threading's */
    }
    if (rc != EBUSY || wait == 0.0) {
        return lock_result(self, rc);
    }
    rc = timed_wait_loop(&self->anchor, mutex_timed_wait, m, deadline_after(wait));
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
    int rc = pthread_mutex_unlock(&self->shared->mutex);
    if (rc == EPERM) {
        PyErr_SetString(PyExc_RuntimeError,
                        "release unlocked lock: this thread does not hold the Lock "
                        "(a process-shared lock is released by the thread that "
                        "acquired it)");
        return NULL;
    }
    if (rc != 0) {
        return fastio_oserror(-rc, "pthread_mutex_unlock", NULL);
    }
    Py_RETURN_NONE;
}

static PyObject *
lock_locked(LockObject *self, PyObject *Py_UNUSED(ignored))
{
    if (lock_check(self) < 0) {
        return NULL;
    }
    int rc = pthread_mutex_trylock(&self->shared->mutex);
    if (rc == 0) {
        pthread_mutex_unlock(&self->shared->mutex);
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
    int rc = pthread_mutex_consistent(&self->shared->mutex);
    if (rc == EINVAL) {
        PyErr_SetString(PyExc_RuntimeError,
                        "mark_consistent(): the Lock is not in the owner-died state, "
                        "or this thread does not hold it");
        return NULL;
    }
    if (rc != 0) {
        return fastio_oserror(-rc, "pthread_mutex_consistent", NULL);
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
    fastio_anchor_close(&self->anchor);
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

static PyMethodDef lock_methods[] = {
    {"acquire", (PyCFunction)(void (*)(void))lock_acquire, METH_VARARGS | METH_KEYWORDS,
     "acquire($self, /, blocking=True, timeout=-1)\n--\n\n"
     "Acquire the lock, waiting with the GIL released; True if acquired.\n"
     "timeout: seconds (float); -1 or None waits forever; False when it expires.\n"
     "Raises OwnerDeadError (with the lock now held by the caller) when the\n"
     "previous holder died holding it."},
    {"release", (PyCFunction)lock_release, METH_NOARGS,
     "release($self, /)\n--\n\n"
     "Release the lock; RuntimeError unless this thread holds it."},
    {"locked", (PyCFunction)lock_locked, METH_NOARGS,
     "locked($self, /)\n--\n\nTrue if some thread or process holds the lock."},
    {"mark_consistent", (PyCFunction)lock_mark_consistent, METH_NOARGS,
     "mark_consistent($self, /)\n--\n\n"
     "After OwnerDeadError: declare the protected data repaired, so that the\n"
     "lock stays usable after the next release()."},
    {"close", (PyCFunction)lock_close, METH_NOARGS,
     "close($self, /)\n--\n\n"
     "Drop this handle's hold on the segment (the lock itself stays in the\n"
     "segment for other handles). Idempotent."},
    {"__enter__", (PyCFunction)lock_enter, METH_NOARGS,
     "__enter__($self, /)\n--\n\nacquire() without timeout."},
    {"__exit__", (PyCFunction)lock_exit, METH_VARARGS,
     "__exit__($self, *args)\n--\n\nrelease()."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef lock_getset[] = {
    {"closed", (getter)lock_get_closed, NULL, "True after close().", NULL},
    {"offset", (getter)lock_get_offset, NULL, "Byte offset in the buffer.", NULL},
    {"buffer", (getter)lock_get_buffer, NULL,
     "The object whose memory holds it (None after close()).", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef lock_members[] = {
    {"__weaklistoffset__", T_PYSSIZET, offsetof(LockObject, weakreflist), READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyType_Slot lock_slots[] = {
    {Py_tp_new, lock_new},
    {Py_tp_dealloc, lock_dealloc},
    {Py_tp_traverse, lock_traverse},
    {Py_tp_repr, lock_repr},
    {Py_tp_methods, lock_methods},
    {Py_tp_getset, lock_getset},
    {Py_tp_members, lock_members},
    {Py_tp_doc,
     "Lock(buffer, offset=0, *, create=True)\n--\n\n"
     "A process-shared, robust lock living in Lock.SIZE bytes of a shared\n"
     "buffer at offset (a multiple of 16). create=True initializes the memory;\n"
     "create=False attaches to a lock another handle created (ValueError if\n"
     "the memory holds none). The handle keeps a buffer export of the segment\n"
     "until close() or collection."},
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
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|nO$p:Semaphore", keywords,
                                     &buffer, &offset, &value_obj, &create)) {
        return NULL;
    }
    long value = 1;
    if (value_obj != NULL) {
        value = PyLong_AsLong(value_obj);
        if (value == -1 && PyErr_Occurred()) {
            if (!PyErr_ExceptionMatches(PyExc_OverflowError)) {
                return NULL;
            }
            PyErr_Clear();
            value = -1;
        }
        if (value < 0 || value > SEM_VALUE_MAX) {
            PyErr_Format(PyExc_ValueError,
                         "Semaphore value must be in [0, %d], got value=%R",
                         SEM_VALUE_MAX, value_obj);
            return NULL;
        }
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
    if (create) {
        atomic_store_explicit(&sh->magic, 0, memory_order_relaxed);
        if (sem_init(&sh->sem, 1, (unsigned)value) < 0) {
            int err = errno;
            fastio_anchor_close(&self->anchor);
            Py_DECREF(self);
            return fastio_oserror(-err, "sem_init", NULL);
        }
        sh->version = SYNC_VERSION;
        sh->reserved = 0;
        atomic_store_explicit(&sh->magic, SEM_MAGIC, memory_order_release);
    }
    else if (check_attached(&sh->magic, &sh->version, SEM_MAGIC, offset,
                            "Semaphore") < 0) {
        fastio_anchor_close(&self->anchor);
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
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
    sem_t *s = &self->shared->sem;
    int rc;
    while ((rc = sem_trywait(s)) < 0 && errno == EINTR) {
    }
    if (rc == 0) {
        Py_RETURN_TRUE;
    }
    if (errno != EAGAIN) {
        return fastio_oserror_errno("sem_trywait", NULL);
    }
    if (wait == 0.0) {
        Py_RETURN_FALSE;
    }
    int err = timed_wait_loop(&self->anchor, sem_timed_wait, s,
                              deadline_after(wait));
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

static PyObject *
sem_release(SemObject *self, PyObject *args, PyObject *kwds)
{
    static char *keywords[] = {"n", NULL};
    Py_ssize_t n = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|n:release", keywords, &n)) {
        return NULL;
    }
    if (sem_check(self) < 0) {
        return NULL;
    }
    if (n < 1 || n > SEM_VALUE_MAX) {
        PyErr_Format(PyExc_ValueError, "n must be in [1, %d], got n=%zd",
                     SEM_VALUE_MAX, n);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        if (sem_post(&self->shared->sem) < 0) {
            /* EOVERFLOW: past SEM_VALUE_MAX */
            return fastio_oserror_errno("sem_post", NULL);
        }
    }
    Py_RETURN_NONE;
}

static PyObject *
sem_get_value(SemObject *self, void *closure)
{
    if (sem_check(self) < 0) {
        return NULL;
    }
    int v;
    if (sem_getvalue(&self->shared->sem, &v) < 0) {
        return fastio_oserror_errno("sem_getvalue", NULL);
    }
    return PyLong_FromLong(v);
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
    if (sem_post(&self->shared->sem) < 0) {
        return fastio_oserror_errno("sem_post", NULL);
    }
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
    int v = -1;
    sem_getvalue(&self->shared->sem, &v);
    return PyUnicode_FromFormat("<%s offset=%zd value=%d>",
                                _PyType_Name(Py_TYPE(self)), self->offset, v);
}

static PyMethodDef sem_methods[] = {
    {"acquire", (PyCFunction)(void (*)(void))sem_acquire, METH_VARARGS | METH_KEYWORDS,
     "acquire($self, /, blocking=True, timeout=-1)\n--\n\n"
     "Decrement the count, waiting with the GIL released while it is 0;\n"
     "True if decremented, False when timeout (seconds) expires."},
    {"release", (PyCFunction)(void (*)(void))sem_release, METH_VARARGS | METH_KEYWORDS,
     "release($self, /, n=1)\n--\n\nIncrement the count by n, waking waiters."},
    {"close", (PyCFunction)semaphore_close, METH_NOARGS,
     "close($self, /)\n--\n\nDrop this handle's hold on the segment. Idempotent."},
    {"__enter__", (PyCFunction)sem_enter, METH_NOARGS,
     "__enter__($self, /)\n--\n\nacquire() without timeout."},
    {"__exit__", (PyCFunction)sem_exit, METH_VARARGS,
     "__exit__($self, *args)\n--\n\nrelease()."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef sem_getset[] = {
    {"value", (getter)sem_get_value, NULL, "The current count.", NULL},
    {"closed", (getter)sem_get_closed, NULL, "True after close().", NULL},
    {"offset", (getter)sem_get_offset, NULL, "Byte offset in the buffer.", NULL},
    {"buffer", (getter)sem_get_buffer, NULL,
     "The object whose memory holds it (None after close()).", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef sem_members[] = {
    {"__weaklistoffset__", T_PYSSIZET, offsetof(SemObject, weakreflist), READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyType_Slot sem_slots[] = {
    {Py_tp_new, semaphore_new},
    {Py_tp_dealloc, sem_dealloc},
    {Py_tp_traverse, sem_traverse},
    {Py_tp_repr, sem_repr},
    {Py_tp_methods, sem_methods},
    {Py_tp_getset, sem_getset},
    {Py_tp_members, sem_members},
    {Py_tp_doc,
     "Semaphore(buffer, offset=0, value=1, *, create=True)\n--\n\n"
     "A process-shared counting semaphore (POSIX, pshared) living in\n"
     "Semaphore.SIZE bytes of a shared buffer at offset (a multiple of 16).\n"
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
