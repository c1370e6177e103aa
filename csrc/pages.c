/* pages.c: operations on a range of pages of a region, written once.
 *
 * Every maker of regions (mmap.c, shm_posix.c for POSIX shm and memfd,
 * shm_sysv.c, buffer.c) offers some of advise, populate, fill and lock over
 * its memory. They used to carry a copy each, and the copies drifted: the
 * segments' fill() and their populate fallback touched shared memory
 * without the SIGBUS guard, so a memfd or POSIX segment shrunk by another
 * holder killed the process where the mmap accessors raised (issue 12,
 * finding 8). Here each operation exists once: the argument checks (names
 * and values in every message), the page rounding, the pin that keeps the
 * memory mapped while the GIL is released, the guard around every store or
 * load, and the error (fastio.MappingError for a lost page, with the
 * makers' own words for "closed").
 *
 * Two layers:
 *   - fastio_pages_*_raw: plain C, no Python, callable without the GIL
 *     (shm_new's populate runs before there is an object);
 *   - fastio_pages_advise/populate/fill/lock: the Python methods' bodies,
 *     called with the GIL by each type's method with a fastio_pages that
 *     describes its region.
 */
#include "fastio.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#endif
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif
/* Linux 5.17's uapi values, for older headers (zig's glibc 2.28 target). */
#ifndef PR_SET_VMA
#define PR_SET_VMA 0x53564d41
#endif
#ifndef PR_SET_VMA_ANON_NAME
#define PR_SET_VMA_ANON_NAME 0
#endif

/* ================================================================== */
/* Plain helpers (no Python; any thread) */

int
fastio_sys_madvise(void *p, size_t len, int advice)
{
    while (madvise(p, len, advice) < 0) {
        if (errno != EINTR) {
            return -errno;
        }
    }
    return 0;
}

int
fastio_sys_set_vma_name(void *p, size_t len, const char *name)
{
    if (prctl(PR_SET_VMA, PR_SET_VMA_ANON_NAME, (unsigned long)p,
              (unsigned long)len, (unsigned long)name) < 0) {
        return -errno;
    }
    return 0;
}

/* -1 unknown, 0 no, 1 yes. Atomic: shm_new asks with the GIL released,
 * so two threads may probe at once (both store the same answer); module
 * exec probes first anyway (fastio_pages_init). */
static int madv_populate_known = -1;

int
fastio_kernel_has_madv_populate(void)
{
    int known = __atomic_load_n(&madv_populate_known, __ATOMIC_RELAXED);
    if (known < 0) {
        /* MADV_POPULATE_READ and _WRITE came in the same release (5.14):
         * probing one tells about both. */
        void *p = mmap(NULL, (size_t)fastio_pagesize, PROT_READ,
                       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) {
            return 0;  /* unknown still: ask again next time */
        }
        known = madvise(p, (size_t)fastio_pagesize, MADV_POPULATE_READ) == 0;
        munmap(p, (size_t)fastio_pagesize);
        __atomic_store_n(&madv_populate_known, known, __ATOMIC_RELAXED);
    }
    return known;
}

void
fastio_pages_init(void)
{
    /* FASTIO_NO_MADV_POPULATE=1 makes fastio behave as on a kernel older
     * than 5.14 (MAP_POPULATE at map time, the guarded touch loop in
     * populate()), so that the tests reach those paths on any kernel. */
    const char *env = getenv("FASTIO_NO_MADV_POPULATE");
    if (env != NULL && env[0] != '\0' && strcmp(env, "0") != 0) {
        __atomic_store_n(&madv_populate_known, 0, __ATOMIC_RELAXED);
        return;
    }
    (void)fastio_kernel_has_madv_populate();
}

int
fastio_advice_discards(int advice)
{
    switch (advice) {
    case MADV_DONTNEED:
#ifdef MADV_FREE
    case MADV_FREE:
#endif
#ifdef MADV_REMOVE
    case MADV_REMOVE:
#endif
    case 24: /* MADV_DONTNEED_LOCKED */
        return 1;
    default:
        return 0;
    }
}

void
fastio_page_range(char *p, size_t length, int inward, char **addr, size_t *len)
{
    uintptr_t page = (uintptr_t)fastio_pagesize;
    uintptr_t a = (uintptr_t)p;
    uintptr_t e = a + (uintptr_t)length;
    uintptr_t a0, e0;
    if (inward) {
        a0 = (a + page - 1) & ~(page - 1);
        e0 = e & ~(page - 1);
    }
    else {
        a0 = a & ~(page - 1);
        e0 = (e + page - 1) & ~(page - 1);
    }
    *addr = (char *)a0;
    *len = e0 > a0 ? (size_t)(e0 - a0) : 0;
}

/* The touch loop of an old kernel's populate, for fastio_guarded_call. */
typedef struct {
    char *addr;
    size_t len;
    int store;
} touch_job;

static void
run_touch(void *arg)
{
    touch_job *t = arg;
    size_t page = (size_t)fastio_pagesize;
    for (size_t i = 0; i < t->len; i += page) {
        if (t->store) {
            ((volatile char *)t->addr)[i] = 0;
        }
        else {
            (void)((volatile char *)t->addr)[i];
        }
    }
}

static void
clear_fault(fastio_fault *fault)
{
    fault->addr = NULL;
    fault->code = 0;
}

int
fastio_pages_populate_raw(char *addr, size_t len, int writable, int may_store,
                          fastio_fault *fault)
{
    clear_fault(fault);
    if (len == 0) {
        return 0;
    }
    if (fastio_kernel_has_madv_populate()) {
        /* The kernel reports a page past the file's end as EFAULT (and a
         * poisoned page as EHWPOISON) instead of sending SIGBUS. */
        return fastio_sys_madvise(addr, len, writable ? MADV_POPULATE_WRITE
                                                      : MADV_POPULATE_READ);
    }
    /* Old kernel: touch one byte per page, under the guard (a shrunk
     * segment's lost pages SIGBUS here). Store only into memory that is
     * ours alone and known to be zero (a fresh private anonymous block):
     * into shared memory, another process may be storing to the same
     * byte, and a read-then-write of it would undo that store. */
    touch_job t = {addr, len, may_store && writable};
    return fastio_guarded_call(run_touch, &t, fault) < 0 ? -EFAULT : 0;
}

typedef struct {
    char *addr;
    size_t n;
    int value;
} fill_job;

static void
run_fill(void *arg)
{
    fill_job *f = arg;
    memset(f->addr, f->value, f->n);
}

int
fastio_pages_fill_raw(char *addr, size_t n, int value, fastio_fault *fault)
{
    clear_fault(fault);
    fill_job f = {addr, n, value};
    return fastio_guarded_call(run_fill, &f, fault) < 0 ? -EFAULT : 0;
}

/* ================================================================== */
/* The methods (GIL held) */

/* Run stmt with the GIL released and the region pinned: a close() in
 * another thread meanwhile defers the unmap until the unpin. stmt touches
 * no Python object. */
#define PAGES_NOGIL(r, stmt)                                                \
    do {                                                                    \
        fastio_region_pin(r);                                               \
        Py_BEGIN_ALLOW_THREADS                                              \
        stmt;                                                               \
        Py_END_ALLOW_THREADS                                                \
        fastio_region_unpin(r);                                             \
    } while (0)

static int
check_open(const fastio_pages *pg)
{
    return fastio_region_check(pg->r, pg->closed_msg);
}

/* -EFAULT from a guarded access or from MADV_POPULATE: a page the file no
 * longer covers. Raise MappingError (errno EFAULT, or EIO for a hardware
 * error), as the mmap accessors do, naming what the region covered when
 * the operation began (data, size): a close() meanwhile forgets them. */
static PyObject *
pages_error(const fastio_pages *pg, int err, const fastio_fault *fault,
            const char *op, const char *syscall, const char *data,
            Py_ssize_t size)
{
    if (err == -EFAULT || err == -EHWPOISON) {
        fastio_fault f = *fault;
        if (err == -EHWPOISON && f.code == 0) {
            f.code = 4;  /* BUS_MCEERR_AR: the same report */
        }
        int fd = pg->fd != NULL ? *pg->fd : -1;
        return fastio_mapping_error(fastio_state_from_type(Py_TYPE(pg->owner)),
                                    &f, op, data, size, fd, pg->file_offset);
    }
    return fastio_oserror(err, syscall, NULL);
}

/* (start, length) against the region: start in [0, size], length None or
 * in [0, size - start]. *length is set (to the end for None). The message
 * names the operation, the argument and the values. Converts start and
 * length itself (their __index__ can run Python code that closes the
 * owner: the caller re-checks it afterwards). */
static int
range_args(const fastio_pages *pg, const char *what, PyObject *start_obj,
           PyObject *length_obj, Py_ssize_t *start, Py_ssize_t *length)
{
    long long v;
    *start = 0;
    *length = -1;
    if (start_obj != NULL) {
        if (fastio_int_arg(start_obj, "start", PY_SSIZE_T_MIN, PY_SSIZE_T_MAX, &v) < 0) {
            return -1;
        }
        *start = (Py_ssize_t)v;
    }
    if (length_obj != NULL && length_obj != Py_None) {
        if (fastio_int_arg(length_obj, "length", PY_SSIZE_T_MIN, PY_SSIZE_T_MAX,
                           &v) < 0) {
            return -1;
        }
        if (v < 0) {
            PyErr_Format(PyExc_ValueError, "%s length must be >= 0, got length=%lld",
                         what, v);
            return -1;
        }
        *length = (Py_ssize_t)v;
    }
    if (check_open(pg) < 0) {
        return -1;
    }
    Py_ssize_t size = pg->r->size;
    if (*start < 0 || *start > size) {
        PyErr_Format(PyExc_ValueError,
                     "%s start out of range: start=%zd, size=%zd", what, *start, size);
        return -1;
    }
    if (*length == -1) {
        *length = size - *start;
    }
    else if (*length > size - *start) {
        PyErr_Format(PyExc_ValueError,
                     "%s length out of range: start=%zd, length=%zd, size=%zd",
                     what, *start, *length, size);
        return -1;
    }
    return 0;
}

PyObject *
fastio_pages_advise(const fastio_pages *pg, PyObject *args, PyObject *kwds)
{
    static char *keywords[] = {"advice", "start", "length", NULL};
    PyObject *advice_obj, *start_obj = NULL, *length_obj = NULL;
    long long advice;
    Py_ssize_t start, length;
    if (check_open(pg) < 0) {
        return NULL;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|OO:advise", keywords,
                                     &advice_obj, &start_obj, &length_obj)) {
        return NULL;
    }
    if (fastio_int_arg(advice_obj, "advice", INT_MIN, INT_MAX, &advice) < 0 ||
        range_args(pg, "advise", start_obj, length_obj, &start, &length) < 0) {
        return NULL;
    }
    char *addr;
    size_t len;
    /* Outward for advice that keeps data; inward (whole pages inside only)
     * for advice that discards it, so no byte outside the range is lost. */
    fastio_page_range(pg->r->data + start, (size_t)length,
                      fastio_advice_discards((int)advice), &addr, &len);
    if (len == 0) {
        Py_RETURN_NONE;
    }
    int err = 0;
    PAGES_NOGIL(pg->r, err = fastio_sys_madvise(addr, len, (int)advice));
    if (err < 0) {
        return fastio_oserror(err, "madvise", NULL);
    }
    Py_RETURN_NONE;
}

PyObject *
fastio_pages_populate(const fastio_pages *pg, int writable)
{
    if (check_open(pg) < 0) {
        return NULL;
    }
    fastio_region *r = pg->r;
    const char *data = r->data;
    Py_ssize_t size = r->size;
    char *addr;
    size_t len;
    fastio_page_range(r->data, (size_t)r->size, 0, &addr, &len);
    if (len == 0) {
        Py_RETURN_NONE;
    }
    fastio_fault fault;
    int err = 0;
    PAGES_NOGIL(r, err = fastio_pages_populate_raw(addr, len, writable, 0, &fault));
    if (err < 0) {
        return pages_error(pg, err, &fault, "populate",
                           writable ? "madvise MADV_POPULATE_WRITE"
                                    : "madvise MADV_POPULATE_READ", data, size);
    }
    Py_RETURN_NONE;
}

int
fastio_pages_fill_args(const fastio_pages *pg, PyObject *args, PyObject *kwds,
                       int *value, Py_ssize_t *start, Py_ssize_t *length)
{
    static char *keywords[] = {"value", "start", "length", NULL};
    PyObject *value_obj = NULL, *start_obj = NULL, *length_obj = NULL;
    long long v = 0;
    if (check_open(pg) < 0) {
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|OOO:fill", keywords,
                                     &value_obj, &start_obj, &length_obj)) {
        return -1;
    }
    if (value_obj != NULL &&
        fastio_int_arg(value_obj, "value", LLONG_MIN, LLONG_MAX, &v) < 0) {
        return -1;
    }
    if (v < 0 || v > 255) {
        PyErr_Format(PyExc_ValueError,
                     "fill value must be a byte (0..255), got value=%lld", v);
        return -1;
    }
    /* range_args re-checks closed after the conversions' __index__. */
    if (range_args(pg, "fill", start_obj, length_obj, start, length) < 0) {
        return -1;
    }
    if (pg->r->readonly) {
        PyErr_SetString(PyExc_TypeError, "fill() on a read-only segment");
        return -1;
    }
    *value = (int)v;
    return 0;
}

PyObject *
fastio_pages_fill_range(const fastio_pages *pg, int value, Py_ssize_t start,
                        Py_ssize_t length)
{
    fastio_region *r = pg->r;
    if (length == 0) {
        Py_RETURN_NONE;
    }
    const char *data = r->data;
    Py_ssize_t size = r->size;
    char *addr = r->data + start;
    size_t n = (size_t)length;
    fastio_fault fault;
    int err;
    if (n >= FASTIO_NOGIL_COPY_THRESHOLD) {
        PAGES_NOGIL(r, err = fastio_pages_fill_raw(addr, n, value, &fault));
    }
    else {
        err = fastio_pages_fill_raw(addr, n, value, &fault);
    }
    if (err < 0) {
        return pages_error(pg, err, &fault, "fill", "memset", data, size);
    }
    Py_RETURN_NONE;
}

PyObject *
fastio_pages_fill(const fastio_pages *pg, PyObject *args, PyObject *kwds)
{
    int value;
    Py_ssize_t start, length;
    if (fastio_pages_fill_args(pg, args, kwds, &value, &start, &length) < 0) {
        return NULL;
    }
    return fastio_pages_fill_range(pg, value, start, length);
}

PyObject *
fastio_pages_lock(const fastio_pages *pg, int lock)
{
    if (check_open(pg) < 0) {
        return NULL;
    }
    char *addr;
    size_t len;
    fastio_page_range(pg->r->data, (size_t)pg->r->size, 0, &addr, &len);
    if (len == 0) {
        Py_RETURN_NONE;
    }
    int err = 0;
    PAGES_NOGIL(pg->r, {
        while ((lock ? mlock(addr, len) : munlock(addr, len)) < 0) {
            if (errno != EINTR) {
                err = -errno;
                break;
            }
        }
    });
    if (lock && (err == -ENOMEM || err == -EPERM)) {
        /* Both mean the locked-memory limit nearly always: say which. */
        char what[160];
        struct rlimit rl;
        if (getrlimit(RLIMIT_MEMLOCK, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) {
            snprintf(what, sizeof what,
                     "mlock of %zu bytes: RLIMIT_MEMLOCK is %llu bytes; "
                     "raise it (ulimit -l) or get CAP_IPC_LOCK",
                     len, (unsigned long long)rl.rlim_cur);
        }
        else {
            snprintf(what, sizeof what,
                     "mlock of %zu bytes: locked-memory limit (RLIMIT_MEMLOCK) "
                     "or CAP_IPC_LOCK", len);
        }
        return fastio_oserror(err, what, NULL);
    }
    if (err < 0) {
        return fastio_oserror(err, lock ? "mlock" : "munlock", NULL);
    }
    Py_RETURN_NONE;
}
