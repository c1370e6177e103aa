/* mmap.c: fastio._core.mmap, a superset of the stdlib mmap.mmap.
 *
 * The memory lives in a fastio_region (region.c), which owns the lifetime
 * rules: close() is immediate for the object, and the unmap waits for the
 * last buffer export (numpy array, memoryview) and for any copy running
 * with the GIL released.
 *
 * Any byte offset is accepted: the mapping starts at the page below it and
 * region.data points at the requested byte.
 */
#include "fastio.h"

#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define ACCESS_DEFAULT 0
#define ACCESS_READ 1
#define ACCESS_WRITE 2
#define ACCESS_COPY 3


typedef struct {
    PyObject_HEAD
    fastio_region region;
    int fd;              /* our own dup of the file's fd, -1 for anonymous
                            or when created with trackfd=False */
    int trackfd;         /* 0: created with trackfd=False (Python 3.13's
                            mmap): no fd kept, so size() and resize() refuse */
    int anonymous;       /* made with fileno=-1: set_name() may name it */
    Py_ssize_t pos;      /* the file-like position for read/write/seek */
    long long offset;    /* the user's byte offset into the file */
    int access;
    int flags;
    int prot;
    size_t grow_limit;   /* anonymous shared maps: the size of the memory
                            object behind them, which mremap cannot grow;
                            0 when there is no such limit */
    PyObject *weakreflist;
} MmapObject;

#define CLOSED_MSG "mmap closed or invalid"

/* ================================================================== */
/* Syscall helpers: return 0 or -errno, touch nothing else. */

/* Whether prefaulting should be for writing: only for shared writable maps,
 * so their pages are allocated and dirty-tracked now, not at first store. A
 * copy-on-write map prefaulted for writing would copy every page. */
static int
populate_writes(int flags, int prot)
{
    return (prot & PROT_WRITE) && (flags & MAP_SHARED);
}

static int
sys_msync(void *p, size_t len, int flags)
{
    while (msync(p, len, flags) < 0) {
        if (errno != EINTR) {
            return -errno;
        }
    }
    return 0;
}

/* One byte per page of [p, p+len) into vec: 1 if resident, else 0. */
static int
sys_mincore(void *p, size_t len, unsigned char *vec)
{
    while (mincore(p, len, vec) < 0) {
        if (errno != EINTR && errno != EAGAIN) {
            return -errno;
        }
    }
    /* The other bits of each byte are reserved. */
    for (size_t i = 0, n = len / (size_t)fastio_pagesize; i < n; i++) {
        vec[i] &= 1;
    }
    return 0;
}

/* ================================================================== */
/* Construction */

static int
map_access_to_flags(int *access, int *flags, int *prot)
{
    switch (*access) {
    case ACCESS_READ:
        *flags = MAP_SHARED;
        *prot = PROT_READ;
        break;
    case ACCESS_WRITE:
        *flags = MAP_SHARED;
        *prot = PROT_READ | PROT_WRITE;
        break;
    case ACCESS_COPY:
        *flags = MAP_PRIVATE;
        *prot = PROT_READ | PROT_WRITE;
        break;
    case ACCESS_DEFAULT:
        /* The stdlib's rule: derive the access from prot. */
        if ((*prot & PROT_READ) && (*prot & PROT_WRITE)) {
            /* read-write: keep ACCESS_DEFAULT */
        }
        else if (*prot & PROT_WRITE) {
            *access = ACCESS_WRITE;
        }
        else {
            *access = ACCESS_READ;
        }
        break;
    default:
        PyErr_Format(PyExc_ValueError,
                     "mmap invalid access parameter: access=%d", *access);
        return -1;
    }
    return 0;
}

static PyObject *
mmap_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *keywords[] = {"fileno", "length", "flags", "prot", "access",
                               "offset", "populate", "hugepages", "trackfd", NULL};
    int fd;
    Py_ssize_t length;
    int flags = MAP_SHARED;
    int prot = PROT_WRITE | PROT_READ;
    int access = ACCESS_DEFAULT;
    long long offset = 0;
    int populate = 0;
    int hugepages = 0;
    int trackfd = 1;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "in|iiiL$ppp:mmap", keywords,
                                     &fd, &length, &flags, &prot, &access,
                                     &offset, &populate, &hugepages, &trackfd)) {
        return NULL;
    }
    if (length < 0) {
        PyErr_Format(PyExc_OverflowError,
                     "memory mapped length must be positive, got length=%zd",
                     length);
        return NULL;
    }
    if (offset < 0) {
        PyErr_Format(PyExc_OverflowError,
                     "memory mapped offset must be positive, got offset=%lld",
                     offset);
        return NULL;
    }
    if (access != ACCESS_DEFAULT &&
        (flags != MAP_SHARED || prot != (PROT_WRITE | PROT_READ))) {
        PyErr_SetString(PyExc_ValueError,
                        "mmap can't specify both access and flags, prot.");
        return NULL;
    }
    if (map_access_to_flags(&access, &flags, &prot) < 0) {
        return NULL;
    }

    /* Size the mapping from the file when length is 0, as the stdlib does. */
    if (fd != -1) {
        struct stat st;
        if (fstat(fd, &st) < 0) {
            return fastio_oserror_errno("fstat", NULL);
        }
        if (S_ISDIR(st.st_mode)) {
            return fastio_oserror(-EISDIR, "mmap", NULL);
        }
        if (S_ISREG(st.st_mode)) {
            if (length == 0) {
                if (st.st_size == 0) {
                    PyErr_SetString(PyExc_ValueError, "cannot mmap an empty file");
                    return NULL;
                }
                if (offset >= st.st_size) {
                    PyErr_Format(PyExc_ValueError,
                                 "mmap offset is greater than file size: "
                                 "offset=%lld, file size=%lld",
                                 offset, (long long)st.st_size);
                    return NULL;
                }
                if (st.st_size - offset > PY_SSIZE_T_MAX) {
                    PyErr_SetString(PyExc_ValueError, "mmap length is too large");
                    return NULL;
                }
                length = (Py_ssize_t)(st.st_size - offset);
            }
            else if (offset > st.st_size || st.st_size - offset < length) {
                PyErr_Format(PyExc_ValueError,
                             "mmap length is greater than file size: "
                             "offset=%lld + length=%zd > file size=%lld",
                             offset, length, (long long)st.st_size);
                return NULL;
            }
        }
    }

    /* Align the file offset down to a page; the delta is hidden from the
     * user: region.data = base + delta. */
    long long aligned = offset - (offset % fastio_pagesize);
    size_t delta = (size_t)(offset - aligned);
    if ((size_t)length > SIZE_MAX - delta - (size_t)fastio_pagesize) {
        PyErr_SetString(PyExc_OverflowError, "mmap length is too large");
        return NULL;
    }
    size_t map_len = (size_t)length + delta;

    MmapObject *self = (MmapObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->fd = -1;
    self->weakreflist = NULL;
    self->access = access;
    self->flags = flags;
    self->prot = prot;
    self->offset = offset;
    self->trackfd = trackfd;
    self->anonymous = (fd == -1);
    self->region.readonly = (access == ACCESS_READ) || !(prot & PROT_WRITE);

    if (fd != -1 && trackfd) {
        /* Own a dup, as the stdlib does: the caller may close theirs. */
        self->fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
        if (self->fd < 0) {
            fastio_oserror_errno("dup", NULL);
            Py_DECREF(self);
            return NULL;
        }
    }
    else if (fd == -1) {
        flags |= MAP_ANONYMOUS;
    }
    /* trackfd=False maps the caller's fd and keeps none: the mapping holds
     * the file itself, so the caller may close theirs at once. */
    int map_fd = trackfd ? self->fd : fd;

    int want_populate = populate && length > 0;
    if (want_populate && !fastio_kernel_has_madv_populate()) {
        flags |= MAP_POPULATE;
        want_populate = 0;
    }

    size_t alloc = map_len;
    void *base = MAP_FAILED;
    int err = 0;
    Py_BEGIN_ALLOW_THREADS
#ifdef MAP_HUGETLB
    if (hugepages && fd == -1) {
        /* Reserved huge pages (vm.nr_hugepages) when there are any; the
         * length must be a multiple of the huge page size for munmap. */
        size_t huge = 2u << 20;
        size_t rounded = (map_len + huge - 1) & ~(huge - 1);
        base = mmap(NULL, rounded, prot, flags | MAP_HUGETLB, -1, 0);
        if (base != MAP_FAILED) {
            alloc = rounded;
        }
    }
#endif
    if (base == MAP_FAILED) {
        base = mmap(NULL, map_len, prot, flags, map_fd, (off_t)aligned);
        if (base == MAP_FAILED) {
            err = -errno;
        }
#ifdef MADV_HUGEPAGE
        else if (hugepages) {
            /* Transparent huge pages: advice, refused harmlessly where the
             * mapping type has none. */
            (void)madvise(base, map_len, MADV_HUGEPAGE);
        }
#endif
    }
    if (base != MAP_FAILED && want_populate) {
        /* A fresh map: the kernel has MADV_POPULATE (else MAP_POPULATE
         * above did it), which says EFAULT for a page past the file's end
         * instead of faulting. */
        fastio_fault fault;
        err = fastio_pages_populate_raw(base, map_len,
                                        populate_writes(flags, prot), 0, &fault);
    }
    Py_END_ALLOW_THREADS

    if (base == MAP_FAILED) {
        fastio_oserror(err, "mmap", NULL);
        Py_DECREF(self);
        return NULL;
    }
    self->region.base = base;
    self->region.alloc_size = alloc;
    self->region.data = (char *)base + delta;
    self->region.size = length;
    self->region.kind = FASTIO_MEM_MMAP;
    if (fd == -1 && (flags & MAP_SHARED)) {
        /* The kernel backs it with a shmem object of this (page-rounded)
         * size; a mapping grown past it would SIGBUS (the stdlib's does). */
        size_t page = (size_t)fastio_pagesize;
        self->grow_limit = (alloc + page - 1) & ~(page - 1);
    }
    if (err < 0) {
        fastio_oserror(err, "madvise", NULL);
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

/* ================================================================== */
/* Helpers shared by the methods */

#define READONLY_MSG "mmap can't modify a readonly memory map."

/* ValueError("mmap closed or invalid") when closed. Called again after
 * every argument conversion, because __index__ of an argument can run
 * Python code that closes the map (CPython gh-103987). */
static inline int
check_valid(MmapObject *self)
{
    /* Inline, not fastio_region_check(): it runs two or three times on
     * every m[i] and m[a:b]. */
    if (self->region.closed) {
        PyErr_SetString(PyExc_ValueError, CLOSED_MSG);
        return -1;
    }
    return 0;
}

static int
check_writable(MmapObject *self)
{
    /* readonly: ACCESS_READ, or ACCESS_DEFAULT with prot lacking PROT_WRITE
     * (which the constructor turns into ACCESS_READ, as the stdlib does). */
    if (self->region.readonly) {
        PyErr_SetString(PyExc_TypeError, READONLY_MSG);
        return -1;
    }
    return 0;
}

/* A map with neither PROT_READ nor PROT_WRITE (prot=PROT_NONE, or
 * PROT_EXEC alone) cannot be read portably: a load from it is a SIGSEGV,
 * which the SIGBUS guard does not take (docs/sigbus.md says why fastio does
 * not catch SIGSEGV). So every accessor that reads the map checks the
 * protection first and raises TypeError, as writing a read-only map does.
 * PROT_WRITE alone is readable on Linux (every architecture it runs on maps
 * write-only pages readable, and the stdlib's mmap reads them): allowed, so
 * code written against the stdlib keeps working. */
static int
check_readable(MmapObject *self)
{
    if (!(self->prot & (PROT_READ | PROT_WRITE))) {
        PyErr_Format(PyExc_TypeError,
                     "mmap can't read a memory map mapped without PROT_READ "
                     "(prot=%d)", self->prot);
        return -1;
    }
    return 0;
}

/* Run stmt; when big, with the GIL released and the region pinned, so
 * that other threads run meanwhile, a close() in one of them defers the
 * munmap until the unpin, and a resize() refuses. stmt must not touch any
 * Python object: copy what it needs into locals first. */
#define RUN_MAYBE_NOGIL(self, big, stmt)                                    \
    do {                                                                    \
        if (big) {                                                          \
            fastio_region_pin(&(self)->region);                             \
            Py_BEGIN_ALLOW_THREADS                                          \
            stmt;                                                           \
            Py_END_ALLOW_THREADS                                            \
            fastio_region_unpin(&(self)->region);                           \
        }                                                                   \
        else {                                                              \
            stmt;                                                           \
        }                                                                   \
    } while (0)
#define RUN_NOGIL(self, stmt) RUN_MAYBE_NOGIL(self, 1, stmt)

/* Raise fastio.MappingError for a SIGBUS caught by the guard (sigbus.c)
 * during op. data and size are the map's as they were when the access
 * started: a close() in another thread meanwhile forgets them. */
static PyObject *
fault_error(MmapObject *self, const fastio_fault *fault, const char *op,
            const char *data, Py_ssize_t size)
{
    return fastio_mapping_error(fastio_state_from_type(Py_TYPE(self)), fault,
                                op, data, size, self->fd, self->offset);
}

/* The map as pages.c sees it, for advise, populate and lock. */
static fastio_pages
map_pages(MmapObject *self)
{
    fastio_pages pg = {(PyObject *)self, &self->region, CLOSED_MSG, &self->fd,
                       self->offset};
    return pg;
}

/* memmove between the map and elsewhere (or within the map), without the
 * GIL when large, under the SIGBUS guard: a page the file no longer covers
 * raises MappingError instead of killing the process. memmove, not memcpy:
 * the source may be a memoryview of this very map. 0, or -1 with the
 * exception set. */
static int
copy_bytes(MmapObject *self, const char *op, char *dst, const char *src, size_t n)
{
    const char *data = self->region.data;
    Py_ssize_t size = self->region.size;
    fastio_fault fault;
    int rc;
    RUN_MAYBE_NOGIL(self, n >= FASTIO_NOGIL_COPY_THRESHOLD,
                    rc = fastio_guarded_memmove(dst, src, n, &fault));
    if (rc < 0) {
        fault_error(self, &fault, op, data, size);
        return -1;
    }
    return 0;
}

/* One byte of the map at i, under the guard. */
static int
load_byte(MmapObject *self, const char *op, Py_ssize_t i, unsigned char *out)
{
    fastio_fault fault;
    if (check_readable(self) < 0) {
        return -1;
    }
    if (fastio_guarded_memmove(out, self->region.data + i, 1, &fault) < 0) {
        fault_error(self, &fault, op, self->region.data, self->region.size);
        return -1;
    }
    return 0;
}

static int
store_byte(MmapObject *self, const char *op, Py_ssize_t i, unsigned char value)
{
    fastio_fault fault;
    if (fastio_guarded_memmove(self->region.data + i, &value, 1, &fault) < 0) {
        fault_error(self, &fault, op, self->region.data, self->region.size);
        return -1;
    }
    return 0;
}

/* m[i] as a 1-byte bytes object (iteration, `in`). */
static PyObject *
item_bytes(MmapObject *self, const char *op, Py_ssize_t i)
{
    unsigned char c;
    if (load_byte(self, op, i, &c) < 0) {
        return NULL;
    }
    return PyBytes_FromStringAndSize((const char *)&c, 1);
}

/* A strided copy (m[a:b:k] and its assignment) for fastio_guarded_call. */
typedef struct {
    char *dst;
    const char *src;
    Py_ssize_t n, dst_step, src_step;
} strided_copy;

static void
run_strided_copy(void *arg)
{
    strided_copy *c = arg;
    char *d = c->dst;
    const char *s = c->src;
    for (Py_ssize_t k = 0; k < c->n; k++, d += c->dst_step, s += c->src_step) {
        *d = *s;
    }
}

/* bytes(data[start:start+n]). Allocating a bytes object runs no Python
 * code (bytes are not tracked by the garbage collector), so the caller's
 * checks still hold when the copy starts. */
static PyObject *
copy_out(MmapObject *self, const char *op, Py_ssize_t start, Py_ssize_t n)
{
    if (check_readable(self) < 0) {
        return NULL;
    }
    if (n <= 0) {
        return PyBytes_FromStringAndSize(NULL, 0);
    }
    /* The hot path of m[a:b]: one allocation and one guarded memmove. */
    PyObject *res = PyBytes_FromStringAndSize(NULL, n);
    if (res != NULL && copy_bytes(self, op, PyBytes_AS_STRING(res),
                                  self->region.data + start, (size_t)n) < 0) {
        Py_CLEAR(res);
    }
    return res;
}

/* The page-rounded address range covering [start, start+length) of the
 * map. Outward (start down, end up) for everything that only reads or
 * advises; inward (whole pages inside the range only) for advice that
 * discards data, so that no byte outside the caller's range is lost.
 * Sets *len to 0 when no whole page lies inside. */
static void
page_range(MmapObject *self, Py_ssize_t start, Py_ssize_t length, int inward,
           char **addr, size_t *len)
{
    fastio_page_range(self->region.data + start, (size_t)length, inward,
                      addr, len);
}

/* madvise(addr, len, advice) with the GIL released and the region pinned.
 * Returns 0 or -errno. */
static int
advise_range(MmapObject *self, char *addr, size_t len, int advice)
{
    int err = 0;
    RUN_MAYBE_NOGIL(self, len > 0, err = fastio_sys_madvise(addr, len, advice));
    return err;
}

/* Convert an optional Py_ssize_t argument: None leaves the default. */
static int
opt_ssize_converter(PyObject *obj, void *out)
{
    if (obj == Py_None) {
        return 1;
    }
    Py_ssize_t v = PyNumber_AsSsize_t(obj, PyExc_OverflowError);
    if (v == -1 && PyErr_Occurred()) {
        return 0;
    }
    *(Py_ssize_t *)out = v;
    return 1;
}

/* ================================================================== */
/* Lifetime */

static void
mmap_close_fd(MmapObject *self)
{
    if (self->fd >= 0) {
        int fd = self->fd;
        self->fd = -1;
        close(fd);
    }
}

static void
mmap_dealloc(MmapObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    if (self->weakreflist != NULL) {
        PyObject_ClearWeakRefs((PyObject *)self);
    }
    /* Every export holds a reference to us, so none is live here; nor is a
     * pin, since a pinning method holds a reference to self. */
    fastio_region_free(&self->region);
    mmap_close_fd(self);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

PyDoc_STRVAR(mmap_close_doc,
"close($self, /)\n--\n\n"
"Close the map. Safe while numpy arrays or memoryviews still use it: the\n"
"object is closed at once (every method then raises ValueError) and the\n"
"memory is unmapped when the last of those views is released. (The stdlib\n"
"mmap raises BufferError here instead.)");

static PyObject *
mmap_close(MmapObject *self, PyObject *Py_UNUSED(ignored))
{
    mmap_close_fd(self);
    fastio_region_close(&self->region);
    Py_RETURN_NONE;
}

static PyObject *
mmap_get_closed(MmapObject *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(self->region.closed);
}

static PyObject *
mmap_enter(MmapObject *self, PyObject *Py_UNUSED(ignored))
{
    if (check_valid(self) < 0) {
        return NULL;
    }
    return Py_NewRef(self);
}

static PyObject *
mmap_exit(MmapObject *self, PyObject *Py_UNUSED(args))
{
    return mmap_close(self, NULL);
}

/* "fastio.mmap" for the class users hold (its __module__ is "fastio"),
 * "module.Qualname" for a user's subclass: what repr and errors call it. */
static PyObject *
type_display_name(PyTypeObject *tp)
{
    PyObject *module = PyObject_GetAttrString((PyObject *)tp, "__module__");
    if (module == NULL) {
        return NULL;
    }
    PyObject *qualname = PyObject_GetAttrString((PyObject *)tp, "__qualname__");
    if (qualname == NULL) {
        Py_DECREF(module);
        return NULL;
    }
    PyObject *res = PyUnicode_FromFormat("%S.%S", module, qualname);
    Py_DECREF(module);
    Py_DECREF(qualname);
    return res;
}

static PyObject *
mmap_repr(MmapObject *self)
{
    /* The stdlib's format, naming our class where it says "mmap.mmap". */
    PyObject *name = type_display_name(Py_TYPE(self));
    if (name == NULL) {
        return NULL;
    }
    PyObject *res;
    if (self->region.closed) {
        res = PyUnicode_FromFormat("<%U closed=True>", name);
    }
    else {
        static const char *const names[] = {
            "ACCESS_DEFAULT", "ACCESS_READ", "ACCESS_WRITE", "ACCESS_COPY"};
        const char *access = (self->access >= 0 && self->access <= 3)
                                 ? names[self->access] : "?";
        res = PyUnicode_FromFormat(
            "<%U closed=False, access=%s, length=%zd, pos=%zd, offset=%lld>",
            name, access, self->region.size, self->pos, self->offset);
    }
    Py_DECREF(name);
    return res;
}

static PyObject *
mmap_reduce(MmapObject *self, PyObject *Py_UNUSED(args))
{
    /* A map is a process's view of memory; a copy of its bytes would not
     * be a map. The stdlib refuses the same way. */
    PyObject *name = type_display_name(Py_TYPE(self));
    if (name != NULL) {
        PyErr_Format(PyExc_TypeError, "cannot pickle '%U' object", name);
        Py_DECREF(name);
    }
    return NULL;
}

/* ================================================================== */
/* Sequence, mapping and buffer protocols */

static Py_ssize_t
mmap_length(MmapObject *self)
{
    if (check_valid(self) < 0) {
        return -1;
    }
    return self->region.size;
}

/* sq_item: what iteration and the `in` fallback use. As in the stdlib,
 * it yields bytes of length 1 (m[i] yields an int). */
static PyObject *
mmap_item(MmapObject *self, Py_ssize_t i)
{
    if (check_valid(self) < 0) {
        return NULL;
    }
    if (i < 0 || i >= self->region.size) {
        PyErr_Format(PyExc_IndexError, "mmap index out of range: index=%zd, length=%zd",
                         i, self->region.size);
        return NULL;
    }
    return item_bytes(self, "item", i);
}

static int
mmap_ass_item(MmapObject *self, Py_ssize_t i, PyObject *value)
{
    if (check_valid(self) < 0) {
        return -1;
    }
    if (i < 0 || i >= self->region.size) {
        PyErr_Format(PyExc_IndexError, "mmap index out of range: index=%zd, length=%zd",
                         i, self->region.size);
        return -1;
    }
    if (value == NULL) {
        PyErr_SetString(PyExc_TypeError,
                        "mmap object doesn't support item deletion");
        return -1;
    }
    if (!PyBytes_Check(value) || PyBytes_GET_SIZE(value) != 1) {
        PyErr_SetString(PyExc_IndexError,
                        "mmap assignment must be length-1 bytes()");
        return -1;
    }
    if (check_writable(self) < 0) {
        return -1;
    }
    return store_byte(self, "item assignment", i,
                      (unsigned char)PyBytes_AS_STRING(value)[0]);
}

/* Iteration yields bytes of length 1, as the stdlib's (whose iterator is
 * the generic sequence iterator over sq_item). Our users hold a Python
 * subclass, and a subclass's inherited __getitem__ (mp_subscript, which
 * yields ints) replaces sq_item; so tp_iter is explicit here.
 *
 * The iterator is a type of its own (fastio._core.mmap_iterator) whose
 * state, the map and the index, lives in C fields that no Python code can
 * reach or set: it used to be a callable-iterator over a list [map, index]
 * that iter(m).__reduce__() handed out, and a negative index written there
 * read before the mapping (issue 12, finding 5). Like the stdlib's
 * iterator, it re-reads the length at each step, raises ValueError once the
 * map is closed, has __length_hint__, and pickles as (iter, (map,), index)
 * with a __setstate__ that clamps the index to >= 0; the map itself refuses
 * to pickle, so pickling one fails as it does with the stdlib. */
typedef struct {
    PyObject_HEAD
    MmapObject *map;     /* NULL once exhausted (the stdlib drops it too) */
    Py_ssize_t index;    /* the next byte; always >= 0 */
} MmapIterObject;

static int
mmap_iter_traverse(MmapIterObject *it, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(it));
    Py_VISIT(it->map);
    return 0;
}

static int
mmap_iter_clear(MmapIterObject *it)
{
    Py_CLEAR(it->map);
    return 0;
}

static void
mmap_iter_dealloc(MmapIterObject *it)
{
    PyTypeObject *tp = Py_TYPE(it);
    PyObject_GC_UnTrack(it);
    (void)mmap_iter_clear(it);
    tp->tp_free((PyObject *)it);
    Py_DECREF(tp);
}

static PyObject *
mmap_iter_next(MmapIterObject *it)
{
    MmapObject *self = it->map;
    if (self == NULL) {
        return NULL;
    }
    if (check_valid(self) < 0) {
        return NULL;
    }
    Py_ssize_t i = it->index;
    if (i >= self->region.size) {
        /* Exhausted for good, as the stdlib's: a resize that grows the map
         * later does not revive it. Py_CLEAR detaches before the DECREF. */
        Py_CLEAR(it->map);
        return NULL;
    }
    PyObject *res = item_bytes(self, "iteration", i);
    if (res != NULL) {
        it->index = i + 1;
    }
    return res;
}

static PyObject *
mmap_iter_length_hint(MmapIterObject *it, PyObject *Py_UNUSED(ignored))
{
    if (it->map == NULL) {
        return PyLong_FromLong(0);
    }
    if (check_valid(it->map) < 0) {
        return NULL;
    }
    Py_ssize_t size = it->map->region.size;
    return PyLong_FromSsize_t(it->index < size ? size - it->index : 0);
}

static PyObject *
mmap_iter_reduce(MmapIterObject *it, PyObject *Py_UNUSED(ignored))
{
    /* The stdlib's seqiter form: iter(map) then __setstate__(index); an
     * exhausted one rebuilds as iter(()). */
    PyObject *builtins = PyEval_GetBuiltins();  /* borrowed */
    PyObject *iter = builtins != NULL ? PyDict_GetItemString(builtins, "iter")
                                      : NULL;
    if (iter == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "builtins.iter not found");
        return NULL;
    }
    if (it->map == NULL) {
        return Py_BuildValue("O(())", iter);
    }
    return Py_BuildValue("O(O)n", iter, (PyObject *)it->map, it->index);
}

static PyObject *
mmap_iter_setstate(MmapIterObject *it, PyObject *state)
{
    Py_ssize_t index = PyLong_AsSsize_t(state);
    if (index == -1 && PyErr_Occurred()) {
        return NULL;
    }
    /* As the stdlib's seqiter: a negative index means the start. An index
     * past the end just ends the iteration at the next step. */
    if (it->map != NULL) {
        it->index = index < 0 ? 0 : index;
    }
    Py_RETURN_NONE;
}

/* The iterator reads its map's memory: both are locked (the iterator's
 * index and map, the map's region), with a strong reference to the map
 * taken first under the iterator's own section, since another thread's
 * next() may clear it->map meanwhile. */
static PyObject *
iter_call_locked(PyObject *op, PyObject *(*fn)(MmapIterObject *it))
{
    MmapIterObject *it = (MmapIterObject *)op;
    PyObject *map, *res;
    Py_BEGIN_CRITICAL_SECTION(op);
    map = Py_XNewRef((PyObject *)it->map);
    Py_END_CRITICAL_SECTION();
    if (map == NULL) {
        return fn(it);  /* exhausted: fn touches no map */
    }
    Py_BEGIN_CRITICAL_SECTION2(op, map);
    res = fn(it);
    Py_END_CRITICAL_SECTION2();
    Py_DECREF(map);
    return res;
}

static PyObject *
iter_length_hint(MmapIterObject *it)
{
    return mmap_iter_length_hint(it, NULL);
}

static PyObject *
mmap_iter_next_locked(PyObject *op)
{
    return iter_call_locked(op, mmap_iter_next);
}

static PyObject *
mmap_iter_length_hint_locked(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    return iter_call_locked(op, iter_length_hint);
}

/* Run inside a critical section on self (fastio.h, docs/freethreading.md). */
FASTIO_LOCKED_O(mmap_iter_reduce)
FASTIO_LOCKED_O(mmap_iter_setstate)

static PyMethodDef mmap_iter_methods[] = {
    {"__length_hint__", (PyCFunction)mmap_iter_length_hint_locked, METH_NOARGS, NULL},
    {"__reduce__", (PyCFunction)mmap_iter_reduce_locked, METH_NOARGS, NULL},
    {"__setstate__", (PyCFunction)mmap_iter_setstate_locked, METH_O, NULL},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot mmap_iter_slots[] = {
    {Py_tp_dealloc, mmap_iter_dealloc},
    {Py_tp_traverse, mmap_iter_traverse},
    {Py_tp_clear, mmap_iter_clear},
    {Py_tp_iter, PyObject_SelfIter},
    {Py_tp_iternext, mmap_iter_next_locked},
    {Py_tp_methods, mmap_iter_methods},
    {0, NULL},
};

PyType_Spec fastio_mmap_iter_spec = {
    .name = "fastio._core.mmap_iterator",
    .basicsize = sizeof(MmapIterObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC |
             Py_TPFLAGS_DISALLOW_INSTANTIATION | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = mmap_iter_slots,
};

static PyObject *
mmap_iter(MmapObject *self)
{
    if (check_valid(self) < 0) {
        return NULL;
    }
    fastio_state *st = fastio_state_from_type(Py_TYPE(self));
    if (st == NULL || st->mmap_iter_type == NULL) {
        PyErr_SetString(PyExc_SystemError, "fastio._core state not found");
        return NULL;
    }
    MmapIterObject *it = PyObject_GC_New(MmapIterObject, st->mmap_iter_type);
    if (it == NULL) {
        return NULL;
    }
    it->map = (MmapObject *)Py_NewRef(self);
    it->index = 0;
    PyObject_GC_Track(it);
    return (PyObject *)it;
}

/* `x in m`: the stdlib answers by iterating (each item a 1-byte bytes);
 * the common case, a bytes object, is answered by memchr with the same
 * result. Anything else keeps the generic element-wise comparison. */
static int
mmap_contains(MmapObject *self, PyObject *value)
{
    if (check_valid(self) < 0 || check_readable(self) < 0) {
        return -1;
    }
    if (PyBytes_CheckExact(value)) {
        if (PyBytes_GET_SIZE(value) != 1) {
            return 0;
        }
        fastio_region *r = &self->region;
        Py_ssize_t n = r->size;
        int c = (unsigned char)PyBytes_AS_STRING(value)[0];
        const char *data = r->data;
        const void *hit = NULL;
        fastio_fault fault;
        int rc;
        if (n <= 0) {
            return 0;
        }
        RUN_MAYBE_NOGIL(self, n >= FASTIO_NOGIL_COPY_THRESHOLD,
                        rc = fastio_guarded_memchr(data, c, (size_t)n, &hit, &fault));
        if (rc < 0) {
            fault_error(self, &fault, "in", data, n);
            return -1;
        }
        return hit != NULL;
    }
    for (Py_ssize_t i = 0;; i++) {
        if (check_valid(self) < 0) {
            return -1;
        }
        if (i >= self->region.size) {
            return 0;
        }
        PyObject *item = item_bytes(self, "in", i);
        if (item == NULL) {
            return -1;
        }
        int eq = PyObject_RichCompareBool(item, value, Py_EQ);
        Py_DECREF(item);
        if (eq != 0) {
            return eq;
        }
    }
}

static PyObject *
mmap_subscript(MmapObject *self, PyObject *item)
{
    if (check_valid(self) < 0) {
        return NULL;
    }
    if (PyIndex_Check(item)) {
        Py_ssize_t i = PyNumber_AsSsize_t(item, PyExc_IndexError);
        if (i == -1 && PyErr_Occurred()) {
            return NULL;
        }
        if (check_valid(self) < 0) {
            return NULL;
        }
        Py_ssize_t index = i;  /* as given, for the message */
        if (i < 0) {
            i += self->region.size;
        }
        if (i < 0 || i >= self->region.size) {
            PyErr_Format(PyExc_IndexError, "mmap index out of range: index=%zd, length=%zd",
                         index, self->region.size);
            return NULL;
        }
        unsigned char c;
        if (load_byte(self, "index", i, &c) < 0) {
            return NULL;
        }
        return PyLong_FromLong(c);
    }
    if (PySlice_Check(item)) {
        Py_ssize_t start, stop, step;
        if (PySlice_Unpack(item, &start, &stop, &step) < 0) {
            return NULL;
        }
        if (check_valid(self) < 0) {
            return NULL;
        }
        Py_ssize_t n = PySlice_AdjustIndices(self->region.size, &start, &stop, step);
        if (step == 1) {
            return copy_out(self, "slice", start, n);
        }
        if (check_readable(self) < 0) {
            return NULL;
        }
        if (n <= 0) {
            return PyBytes_FromStringAndSize(NULL, 0);
        }
        PyObject *res = PyBytes_FromStringAndSize(NULL, n);
        if (res != NULL) {
            strided_copy c = {PyBytes_AS_STRING(res), self->region.data + start,
                              n, 1, step};
            fastio_fault fault;
            if (fastio_guarded_call(run_strided_copy, &c, &fault) < 0) {
                fault_error(self, &fault, "slice", self->region.data,
                            self->region.size);
                Py_CLEAR(res);
            }
        }
        return res;
    }
    PyErr_SetString(PyExc_TypeError, "mmap indices must be integers");
    return NULL;
}

static int
mmap_ass_subscript(MmapObject *self, PyObject *item, PyObject *value)
{
    if (check_valid(self) < 0 || check_writable(self) < 0) {
        return -1;
    }
    if (PyIndex_Check(item)) {
        Py_ssize_t i = PyNumber_AsSsize_t(item, PyExc_IndexError);
        if (i == -1 && PyErr_Occurred()) {
            return -1;
        }
        if (check_valid(self) < 0) {
            return -1;
        }
        Py_ssize_t index = i;  /* as given, for the message */
        if (i < 0) {
            i += self->region.size;
        }
        if (i < 0 || i >= self->region.size) {
            PyErr_Format(PyExc_IndexError, "mmap index out of range: index=%zd, length=%zd",
                         index, self->region.size);
            return -1;
        }
        if (value == NULL) {
            PyErr_SetString(PyExc_TypeError, "mmap doesn't support item deletion");
            return -1;
        }
        if (!PyIndex_Check(value)) {
            PyErr_Format(PyExc_TypeError, "mmap item value must be an int, got %.100s",
                         Py_TYPE(value)->tp_name);
            return -1;
        }
        Py_ssize_t v = PyNumber_AsSsize_t(value, PyExc_TypeError);
        if (v == -1 && PyErr_Occurred()) {
            return -1;
        }
        if (v < 0 || v > 255) {
            PyErr_Format(PyExc_ValueError,
                         "mmap item value must be in range(0, 256), got value=%zd",
                         (Py_ssize_t)v);
            return -1;
        }
        /* value.__index__ may have closed or shrunk the map. */
        if (check_valid(self) < 0) {
            return -1;
        }
        if (i >= self->region.size) {
            PyErr_Format(PyExc_IndexError, "mmap index out of range: index=%zd, length=%zd",
                         i, self->region.size);
            return -1;
        }
        return store_byte(self, "item assignment", i, (unsigned char)v);
    }
    if (PySlice_Check(item)) {
        Py_ssize_t start, stop, step;
        if (PySlice_Unpack(item, &start, &stop, &step) < 0) {
            return -1;
        }
        if (check_valid(self) < 0) {
            return -1;
        }
        Py_ssize_t size_before = self->region.size;
        Py_ssize_t n = PySlice_AdjustIndices(size_before, &start, &stop, step);
        if (value == NULL) {
            PyErr_SetString(PyExc_TypeError,
                            "mmap object doesn't support slice deletion");
            return -1;
        }
        Py_buffer vbuf;
        if (PyObject_GetBuffer(value, &vbuf, PyBUF_SIMPLE) < 0) {
            return -1;
        }
        if (vbuf.len != n) {
            PyErr_Format(PyExc_IndexError,
                         "mmap slice assignment is wrong size: the slice has %zd "
                         "bytes, the value %zd", (Py_ssize_t)n, vbuf.len);
            PyBuffer_Release(&vbuf);
            return -1;
        }
        /* Getting the buffer ran Python code (value's bf_getbuffer or
         * __buffer__), which may have closed or resized the map. As
         * CPython 3.14's mmap (gh-157335): the slice, as computed before,
         * must still lie inside the map, else IndexError; the copy below
         * goes to region.data as it is now (resize may have moved it). */
        if (check_valid(self) < 0) {
            PyBuffer_Release(&vbuf);
            return -1;
        }
        if (n > 0 && self->region.size != size_before) {
            /* The highest index written; no overflow: the slice lay
             * inside [0, size_before). */
            Py_ssize_t last = step > 0 ? start + (n - 1) * step : start;
            if (last >= self->region.size) {
                PyErr_Format(PyExc_IndexError,
                             "mmap slice assignment is wrong size: the map was "
                             "resized to %zd bytes while the value's buffer was "
                             "taken; the slice reaches index %zd",
                             self->region.size, last);
                PyBuffer_Release(&vbuf);
                return -1;
            }
        }
        int rc = 0;
        if (step == 1) {
            rc = copy_bytes(self, "slice assignment", self->region.data + start,
                            vbuf.buf, (size_t)n);
        }
        else if (n > 0) {
            strided_copy c = {self->region.data + start, vbuf.buf, n, step, 1};
            fastio_fault fault;
            if (fastio_guarded_call(run_strided_copy, &c, &fault) < 0) {
                fault_error(self, &fault, "slice assignment", self->region.data,
                            self->region.size);
                rc = -1;
            }
        }
        PyBuffer_Release(&vbuf);
        return rc;
    }
    PyErr_SetString(PyExc_TypeError, "mmap indices must be integer");
    return -1;
}

static int
mmap_getbuffer(MmapObject *self, Py_buffer *view, int flags)
{
    if (check_valid(self) < 0) {
        view->obj = NULL;
        return -1;
    }
    return fastio_region_getbuffer((PyObject *)self, &self->region, view, flags);
}

static void
mmap_releasebuffer(MmapObject *self, Py_buffer *view)
{
    fastio_region_releasebuffer(&self->region, view);
}

/* ================================================================== */
/* File-like methods: read, write, seek, tell, find */

/* Bytes left from pos to the end; 0 when a resize left pos past it. */
static Py_ssize_t
remaining(MmapObject *self)
{
    return self->pos < self->region.size ? self->region.size - self->pos : 0;
}

PyDoc_STRVAR(mmap_read_doc,
"read($self, n=None, /)\n--\n\n"
"Return up to n bytes from the current position and advance it. None or a\n"
"negative n reads to the end. Large reads copy with the GIL released.");

static PyObject *
mmap_read(MmapObject *self, PyObject *args)
{
    Py_ssize_t n = -1;
    if (check_valid(self) < 0) {
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "|O&:read", opt_ssize_converter, &n)) {
        return NULL;
    }
    if (check_valid(self) < 0) {
        return NULL;
    }
    Py_ssize_t left = remaining(self);
    if (n < 0 || n > left) {
        n = left;
    }
    Py_ssize_t start = self->pos;
    PyObject *res = copy_out(self, "read", start, n);
    if (res != NULL) {
        self->pos = start + n;
    }
    return res;
}

PyDoc_STRVAR(mmap_read_byte_doc,
"read_byte($self, /)\n--\n\n"
"Return the byte at the current position as an int and advance by one.");

static PyObject *
mmap_read_byte(MmapObject *self, PyObject *Py_UNUSED(ignored))
{
    if (check_valid(self) < 0) {
        return NULL;
    }
    if (self->pos >= self->region.size) {
        PyErr_Format(PyExc_ValueError, "read byte out of range: pos=%zd, length=%zd",
                     self->pos, self->region.size);
        return NULL;
    }
    unsigned char c;
    if (load_byte(self, "read_byte", self->pos, &c) < 0) {
        return NULL;
    }
    self->pos++;
    return PyLong_FromLong(c);
}

PyDoc_STRVAR(mmap_readline_doc,
"readline($self, /)\n--\n\n"
"Return the bytes from the current position up to and including the next\n"
"newline (or to the end), and advance past them.");

static PyObject *
mmap_readline(MmapObject *self, PyObject *Py_UNUSED(ignored))
{
    if (check_valid(self) < 0 || check_readable(self) < 0) {
        return NULL;
    }
    Py_ssize_t left = remaining(self);
    const char *start = self->region.data + self->pos;
    Py_ssize_t n = left;
    if (left > 0) {
        /* With the GIL held, as the stdlib does (and its copy below
         * releases the GIL only past the threshold). */
        const void *eol;
        fastio_fault fault;
        if (fastio_guarded_memchr(start, '\n', (size_t)left, &eol, &fault) < 0) {
            return fault_error(self, &fault, "readline", self->region.data,
                               self->region.size);
        }
        if (eol != NULL) {
            n = (const char *)eol - start + 1;
        }
    }
    Py_ssize_t pos = self->pos;
    PyObject *res = copy_out(self, "readline", pos, n);
    if (res != NULL) {
        self->pos = pos + n;
    }
    return res;
}

PyDoc_STRVAR(mmap_write_doc,
"write($self, data, /)\n--\n\n"
"Write the bytes-like data at the current position, advance past it and\n"
"return the number of bytes written. ValueError if it does not fit.");

static PyObject *
mmap_write(MmapObject *self, PyObject *args)
{
    Py_buffer data;
    if (check_valid(self) < 0) {
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "y*:write", &data)) {
        return NULL;
    }
    if (check_writable(self) < 0) {
        PyBuffer_Release(&data);
        return NULL;
    }
    if (check_valid(self) < 0) {
        PyBuffer_Release(&data);
        return NULL;
    }
    if (self->pos > self->region.size || self->region.size - self->pos < data.len) {
        PyBuffer_Release(&data);
        PyErr_Format(PyExc_ValueError,
                     "data out of range: pos=%zd + len(data)=%zd > length=%zd",
                     self->pos, data.len, self->region.size);
        return NULL;
    }
    Py_ssize_t pos = self->pos;
    Py_ssize_t n = data.len;
    int rc = copy_bytes(self, "write", self->region.data + pos, data.buf, (size_t)n);
    PyBuffer_Release(&data);
    if (rc < 0) {
        return NULL;
    }
    self->pos = pos + n;
    return PyLong_FromSsize_t(n);
}

PyDoc_STRVAR(mmap_write_byte_doc,
"write_byte($self, byte, /)\n--\n\n"
"Write the int byte (0..255) at the current position and advance by one.");

static PyObject *
mmap_write_byte(MmapObject *self, PyObject *args)
{
    unsigned char value;
    if (check_valid(self) < 0) {
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "b:write_byte", &value)) {
        return NULL;
    }
    if (check_writable(self) < 0 || check_valid(self) < 0) {
        return NULL;
    }
    if (self->pos >= self->region.size) {
        PyErr_Format(PyExc_ValueError, "write byte out of range: pos=%zd, length=%zd",
                     self->pos, self->region.size);
        return NULL;
    }
    if (store_byte(self, "write_byte", self->pos, value) < 0) {
        return NULL;
    }
    self->pos++;
    Py_RETURN_NONE;
}

PyDoc_STRVAR(mmap_seek_doc,
"seek($self, pos, whence=0, /)\n--\n\n"
"Set the position: whence 0 from the start, 1 from the current position,\n"
"2 from the end, and return it (as Python 3.13's mmap does). ValueError if\n"
"the result is outside [0, len].");

static PyObject *
mmap_seek(MmapObject *self, PyObject *args)
{
    Py_ssize_t dist;
    int how = 0;
    if (check_valid(self) < 0) {
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "n|i:seek", &dist, &how)) {
        return NULL;
    }
    if (check_valid(self) < 0) {
        return NULL;
    }
    Py_ssize_t where;
    switch (how) {
    case 0:
        where = dist;
        break;
    case 1:
        if (PY_SSIZE_T_MAX - self->pos < dist) {
            goto out_of_range;
        }
        where = self->pos + dist;
        break;
    case 2:
        if (PY_SSIZE_T_MAX - self->region.size < dist) {
            goto out_of_range;
        }
        where = self->region.size + dist;
        break;
    default:
        PyErr_Format(PyExc_ValueError, "unknown seek type: whence=%d", how);
        return NULL;
    }
    if (where < 0 || where > self->region.size) {
        goto out_of_range;
    }
    self->pos = where;
    return PyLong_FromSsize_t(where);

out_of_range:
    PyErr_Format(PyExc_ValueError, "seek out of range: pos=%zd, whence=%d, length=%zd",
                 dist, how, self->region.size);
    return NULL;
}

PyDoc_STRVAR(mmap_seekable_doc,
"seekable($self, /)\n--\n\n"
"Return True: a map can always seek (Python 3.13's mmap has it too).");

static PyObject *
mmap_seekable(MmapObject *self, PyObject *Py_UNUSED(ignored))
{
    Py_RETURN_TRUE;
}

PyDoc_STRVAR(mmap_tell_doc,
"tell($self, /)\n--\n\n"
"Return the current position.");

static PyObject *
mmap_tell(MmapObject *self, PyObject *Py_UNUSED(ignored))
{
    if (check_valid(self) < 0) {
        return NULL;
    }
    return PyLong_FromSsize_t(self->pos);
}

/* The last occurrence of needle in hay, or NULL. */
static const char *
reverse_search(const char *hay, size_t hlen, const char *needle, size_t nlen)
{
    if (nlen == 0) {
        return hay + hlen;
    }
    if (nlen > hlen) {
        return NULL;
    }
    /* Look for the needle's last byte from the end, then compare. */
    unsigned char last = (unsigned char)needle[nlen - 1];
    size_t limit = hlen;  /* search hay[nlen-1 .. limit) */
    while (limit >= nlen) {
        const char *p = memrchr(hay + nlen - 1, last, limit - (nlen - 1));
        if (p == NULL) {
            return NULL;
        }
        const char *cand = p - (nlen - 1);
        if (memcmp(cand, needle, nlen) == 0) {
            return cand;
        }
        limit = (size_t)(p - hay);
    }
    return NULL;
}

/* reverse_search for fastio_guarded_call. */
typedef struct {
    const char *hay;
    size_t hlen;
    const char *needle;
    size_t nlen;
    const void *hit;
} search;

static void
run_reverse_search(void *arg)
{
    search *s = arg;
    s->hit = reverse_search(s->hay, s->hlen, s->needle, s->nlen);
}

static PyObject *
mmap_gfind(MmapObject *self, PyObject *args, int reverse)
{
    Py_ssize_t start, end;
    Py_buffer view;
    if (check_valid(self) < 0) {
        return NULL;
    }
    start = self->pos;
    end = self->region.size;
    if (!PyArg_ParseTuple(args, reverse ? "y*|O&O&:rfind" : "y*|O&O&:find",
                          &view, opt_ssize_converter, &start,
                          opt_ssize_converter, &end)) {
        return NULL;
    }
    if (check_valid(self) < 0 || check_readable(self) < 0) {
        PyBuffer_Release(&view);
        return NULL;
    }
    Py_ssize_t size = self->region.size;
    if (start < 0) {
        start += size;
        if (start < 0) {
            start = 0;
        }
    }
    else if (start > size) {
#if PY_VERSION_HEX >= 0x030F0000
        /* Python 3.15's mmap finds nothing past the end, not even b"", as
         * bytes.find; older ones clamp start to the length. */
        PyBuffer_Release(&view);
        return PyLong_FromLong(-1);
#else
        start = size;
#endif
    }
    if (end < 0) {
        end += size;
        if (end < 0) {
            end = 0;
        }
    }
    else if (end > size) {
        end = size;
    }
    Py_ssize_t res = -1;
    if (end >= start && view.len <= end - start) {
        fastio_region *r = &self->region;
        const char *hay = r->data + start;
        size_t hlen = (size_t)(end - start);
        const char *needle = view.buf;
        size_t nlen = (size_t)view.len;
        const char *data = r->data;
        Py_ssize_t size_now = r->size;
        search s = {hay, hlen, needle, nlen, NULL};
        fastio_fault fault;
        int rc;
        /* Searching a large map takes long: let other threads run (our
         * view keeps the needle alive and unmoved). */
        RUN_MAYBE_NOGIL(self, hlen >= FASTIO_NOGIL_COPY_THRESHOLD,
                        rc = reverse ? fastio_guarded_call(run_reverse_search, &s, &fault)
                                     : fastio_guarded_memmem(hay, hlen, needle, nlen,
                                                             &s.hit, &fault));
        if (rc < 0) {
            PyBuffer_Release(&view);
            return fault_error(self, &fault, reverse ? "rfind" : "find", data,
                               size_now);
        }
        if (s.hit != NULL) {
            res = start + ((const char *)s.hit - hay);
        }
    }
    PyBuffer_Release(&view);
    return PyLong_FromSsize_t(res);
}

PyDoc_STRVAR(mmap_find_doc,
"find($self, sub, start=None, end=None, /)\n--\n\n"
"Return the lowest index of sub in [start, end), or -1. start defaults to\n"
"the current position (None too), end to the length; negative values\n"
"count from the end.");

static PyObject *
mmap_find(MmapObject *self, PyObject *args)
{
    return mmap_gfind(self, args, 0);
}

PyDoc_STRVAR(mmap_rfind_doc,
"rfind($self, sub, start=None, end=None, /)\n--\n\n"
"Return the highest index of sub in [start, end), or -1.");

static PyObject *
mmap_rfind(MmapObject *self, PyObject *args)
{
    return mmap_gfind(self, args, 1);
}

PyDoc_STRVAR(mmap_readinto_doc,
"_readinto($self, buf, /)\n--\n\n"
"Copy the map's first len(buf) bytes (at most len(self)) into the writable\n"
"buffer buf under the SIGBUS guard, with the GIL released when large;\n"
"return the number copied. Private: read_file(method='mmap') uses it, so\n"
"that a file shrinking during the read raises MappingError instead of\n"
"killing the process (a numpy copy would not be guarded).");

static PyObject *
mmap_readinto(MmapObject *self, PyObject *arg)
{
    Py_buffer view;
    if (check_valid(self) < 0 || check_readable(self) < 0) {
        return NULL;
    }
    if (PyObject_GetBuffer(arg, &view, PyBUF_WRITABLE) < 0) {
        return NULL;
    }
    /* Getting the buffer can run Python code (__buffer__) that closes or
     * resizes the map: check again, and size the copy only now. */
    if (check_valid(self) < 0) {
        PyBuffer_Release(&view);
        return NULL;
    }
    Py_ssize_t n = view.len < self->region.size ? view.len : self->region.size;
    int rc = copy_bytes(self, "read", view.buf, self->region.data, (size_t)n);
    PyBuffer_Release(&view);
    if (rc < 0) {
        return NULL;
    }
    return PyLong_FromSsize_t(n);
}

PyDoc_STRVAR(mmap_move_doc,
"move($self, dest, src, count, /)\n--\n\n"
"Copy count bytes from src to dest within the map (overlap allowed).");

static PyObject *
mmap_move(MmapObject *self, PyObject *args)
{
    Py_ssize_t dest, src, cnt;
    if (check_valid(self) < 0) {
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "nnn:move", &dest, &src, &cnt) ||
        check_writable(self) < 0 || check_valid(self) < 0 ||
        check_readable(self) < 0) {
        return NULL;
    }
    Py_ssize_t size = self->region.size;
    if (dest < 0 || src < 0 || cnt < 0 || size - dest < cnt || size - src < cnt) {
        PyErr_Format(PyExc_ValueError,
                     "source, destination, or count out of range: dest=%zd, src=%zd, "
                     "count=%zd, length=%zd", dest, src, cnt, size);
        return NULL;
    }
    if (copy_bytes(self, "move", self->region.data + dest, self->region.data + src,
                   (size_t)cnt) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* ================================================================== */
/* Size and resize */

PyDoc_STRVAR(mmap_size_doc,
"size($self, /)\n--\n\n"
"Return the size of the mapped file (fstat), which may differ from len().\n"
"For an anonymous map, its length (as Python 3.15's mmap; older ones raise\n"
"OSError). For a map created with trackfd=False: ValueError on Python\n"
"3.15+, OSError (EBADF) before, as the running Python's stdlib does.");

static PyObject *
mmap_size(MmapObject *self, PyObject *Py_UNUSED(ignored))
{
    if (check_valid(self) < 0) {
        return NULL;
    }
    if (!self->trackfd) {
#if PY_VERSION_HEX >= 0x030F0000
        /* Python 3.15's mmap says why instead of calling fstat(-1). */
        PyErr_SetString(PyExc_ValueError, "can't get size with trackfd=False");
        return NULL;
#else
        /* No file descriptor kept: the stdlib's fstat(-1) fails so. */
        return fastio_oserror(-EBADF, "fstat", NULL);
#endif
    }
    if (self->fd < 0) {
        return PyLong_FromSsize_t(self->region.size);
    }
    struct stat st;
    if (fstat(self->fd, &st) < 0) {
        return fastio_oserror_errno("fstat", NULL);
    }
    return PyLong_FromLongLong((long long)st.st_size);
}

PyDoc_STRVAR(mmap_resize_doc,
"resize($self, newsize, /)\n--\n\n"
"Change the map's length to newsize (mremap), and the file's size to\n"
"offset + newsize (ftruncate). BufferError while memoryviews or numpy\n"
"arrays use the map, since the memory may move. TypeError for read-only\n"
"and copy-on-write maps, ValueError for a map created with trackfd=False\n"
"(no file to truncate), as in the stdlib. An anonymous shared map can\n"
"shrink; growing it raises ValueError (on Python 3.14+, as the stdlib\n"
"does, any growth; before, past its original size, which the stdlib\n"
"allowed and then crashed with SIGBUS).");

static PyObject *
mmap_resize(MmapObject *self, PyObject *args)
{
    Py_ssize_t new_size;
    fastio_region *r = &self->region;
    if (check_valid(self) < 0) {
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "n:resize", &new_size) || check_valid(self) < 0) {
        return NULL;
    }
    if (!self->trackfd) {
        PyErr_Format(PyExc_ValueError,
                     "mmap can't resize with trackfd=False: newsize=%zd", new_size);
        return NULL;
    }
    if (r->exports > 0 || r->pins > 0) {
        PyErr_SetString(PyExc_BufferError,
                        "mmap can't resize with extant buffers exported.");
        return NULL;
    }
    if (self->access != ACCESS_WRITE && self->access != ACCESS_DEFAULT) {
        PyErr_SetString(PyExc_TypeError,
                        "mmap can't resize a readonly or copy-on-write memory map.");
        return NULL;
    }
    if (new_size < 0 || PY_SSIZE_T_MAX - new_size < self->offset) {
        PyErr_Format(PyExc_ValueError, "new size out of range: newsize=%zd", new_size);
        return NULL;
    }
#if PY_VERSION_HEX >= 0x030E0000
    /* Python 3.14's mmap refuses to grow an anonymous shared map at all
     * (mremap cannot grow the shared memory object behind it), even back
     * to a size it had: the same here. Before 3.14 the stdlib grew it and
     * crashed on the next access; fastio grows it within the memory object
     * only (grow_limit, below). */
    if (self->grow_limit && new_size > r->size) {
        PyErr_Format(PyExc_ValueError,
                     "mmap: can't expand a shared anonymous mapping: "
                     "length=%zd, newsize=%zd", r->size, new_size);
        return NULL;
    }
#endif
    size_t delta = (size_t)(r->data - r->base);
    if (new_size == 0 && delta == 0) {
        /* mremap to nothing fails; say so before truncating the file (the
         * stdlib truncates first and then fails, losing the data). */
        return fastio_oserror(-EINVAL, "mremap", NULL);
    }
    /* The GIL stays held through ftruncate and mremap: until data points at
     * the new mapping, no other thread may touch the map (with the GIL
     * released, one could read through the old pointer). */
    if (self->fd >= 0) {
        int rc;
        while ((rc = ftruncate(self->fd, (off_t)(self->offset + new_size))) < 0 &&
               errno == EINTR) {
            if (PyErr_CheckSignals() < 0) {
                return NULL;
            }
        }
        if (rc < 0) {
            return fastio_oserror_errno("ftruncate", NULL);
        }
    }
    size_t new_len = delta + (size_t)new_size;
    if (self->grow_limit && new_len > self->grow_limit) {
        PyErr_Format(PyExc_ValueError,
                     "cannot grow an anonymous shared map past its original "
                     "%zu bytes: the shared memory behind it has a fixed size "
                     "(newsize=%zd)", self->grow_limit - delta, new_size);
        return NULL;
    }
    void *p = mremap(r->base, r->alloc_size, new_len, MREMAP_MAYMOVE);
    if (p == MAP_FAILED) {
        return fastio_oserror_errno("mremap", NULL);
    }
    r->base = p;
    r->alloc_size = new_len;
    r->data = (char *)p + delta;
    r->size = new_size;
    Py_RETURN_NONE;
}

/* ================================================================== */
/* Kernel extras: flush, madvise/advise, populate, lock, residency */

PyDoc_STRVAR(mmap_flush_doc,
"flush($self, offset=0, size=None, *, flags=0, async_=False)\n--\n\n"
"Write dirty pages of [offset, offset+size) back to the file (msync).\n"
"size None or -1: to the end. flags: msync's flags (MS_SYNC, MS_ASYNC,\n"
"MS_INVALIDATE; 0 means MS_SYNC), as in Python 3.15's mmap; async_=True is\n"
"MS_ASYNC. The range is widened to whole pages for the kernel, so any\n"
"offset works. No-op for read-only and copy-on-write maps.");

static PyObject *
mmap_flush(MmapObject *self, PyObject *args, PyObject *kwds)
{
    static char *keywords[] = {"offset", "size", "flags", "async_", NULL};
    Py_ssize_t offset = 0;
    Py_ssize_t size = -1;
    PyObject *size_obj = Py_None;
    int flags = 0;
    int async_ = 0;
    if (check_valid(self) < 0) {
        return NULL;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|nO$ip:flush", keywords,
                                     &offset, &size_obj, &flags, &async_)) {
        return NULL;
    }
    if (size_obj != Py_None) {
        size = PyNumber_AsSsize_t(size_obj, PyExc_OverflowError);
        if (size == -1 && PyErr_Occurred()) {
            return NULL;
        }
        /* -1 is "to the end", as None (Python 3.15's default is -1). */
        if (size < -1) {
            PyErr_Format(PyExc_ValueError,
                         "flush values out of range: size=%zd", size);
            return NULL;
        }
    }
    if (async_ && flags != 0) {
        PyErr_Format(PyExc_ValueError,
                     "flush: pass flags= or async_=True, not both (async_ is "
                     "flags=MS_ASYNC): flags=%d", flags);
        return NULL;
    }
    if (check_valid(self) < 0) {
        return NULL;
    }
    if (size == -1) {
        size = offset >= 0 && offset <= self->region.size
                   ? self->region.size - offset : 0;
    }
    if (offset < 0 || self->region.size - offset < size) {
        PyErr_Format(PyExc_ValueError,
                     "flush values out of range: offset=%zd, size=%zd, "
                     "length=%zd", offset, size, self->region.size);
        return NULL;
    }
    /* Before flags are looked at, as the stdlib: nothing to write back. */
    if (self->access == ACCESS_READ || self->access == ACCESS_COPY) {
        Py_RETURN_NONE;
    }
    if (flags == 0) {
        flags = async_ ? MS_ASYNC : MS_SYNC;
    }
    char *addr;
    size_t len;
    if (size == 0) {
        /* msync of nothing still checks the flags (the stdlib makes the
         * call, so bad flags raise there too). */
        addr = self->region.base;
        len = 0;
    }
    else {
        page_range(self, offset, size, 0, &addr, &len);
    }
    int err = 0;
    RUN_MAYBE_NOGIL(self, len > 0, err = sys_msync(addr, len, flags));
    if (err < 0) {
        return fastio_oserror(err, "msync", NULL);
    }
    Py_RETURN_NONE;
}

/* Python 3.15's mmap.set_name: the kernel's name for an anonymous mapping
 * (/proc/PID/maps shows "[anon:cpython:mmap:NAME]"). The stdlib's prefix,
 * so that tools reading maps find a fastio.mmap as they find the stdlib's;
 * names are at most 80 bytes with the NUL, so NAME at most 66. */
#define VMA_NAME_PREFIX "cpython:mmap:"
#define VMA_NAME_MAX (80 - (Py_ssize_t)sizeof(VMA_NAME_PREFIX))

PyDoc_STRVAR(mmap_set_name_doc,
"set_name($self, name, /)\n--\n\n"
"Name this anonymous mapping for the kernel (prctl PR_SET_VMA_ANON_NAME,\n"
"Linux 5.17+): /proc/self/maps shows [anon:cpython:mmap:NAME]. As Python\n"
"3.15's mmap: ValueError for a file map or a name over 66 bytes (UTF-8);\n"
"a kernel's refusal (built without CONFIG_ANON_VMA_NAME: EINVAL) raises\n"
"OSError only in development mode (-X dev), else is ignored. Unlike the\n"
"stdlib, which names only in development mode, fastio always asks.");

/* Whether Python runs in development mode (-X dev): the stdlib's set_name
 * reports the kernel's errors only then. */
static int
dev_mode(void)
{
    PyObject *flags = PySys_GetObject("flags");  /* borrowed */
    if (flags == NULL) {
        return 0;
    }
    PyObject *v = PyObject_GetAttrString(flags, "dev_mode");
    if (v == NULL) {
        PyErr_Clear();
        return 0;
    }
    int on = PyObject_IsTrue(v);
    Py_DECREF(v);
    if (on < 0) {
        PyErr_Clear();
        return 0;
    }
    return on;
}

static PyObject *
mmap_set_name(MmapObject *self, PyObject *name)
{
    if (!PyUnicode_Check(name)) {
        PyErr_Format(PyExc_TypeError, "set_name() argument must be str, not %.100s",
                     Py_TYPE(name)->tp_name);
        return NULL;
    }
    /* Before the checks: reading sys.flags is a Python attribute lookup. */
    int report = dev_mode();
    if (check_valid(self) < 0) {
        return NULL;
    }
    Py_ssize_t len;
    const char *utf8 = PyUnicode_AsUTF8AndSize(name, &len);
    if (utf8 == NULL) {
        return NULL;
    }
    if (strlen(utf8) != (size_t)len) {
        PyErr_SetString(PyExc_ValueError, "embedded null character");
        return NULL;
    }
    if (len > VMA_NAME_MAX) {
        PyErr_Format(PyExc_ValueError,
                     "name is too long: %zd bytes in UTF-8, at most %zd",
                     len, VMA_NAME_MAX);
        return NULL;
    }
    if (!self->anonymous) {
        PyErr_SetString(PyExc_ValueError,
                        "Cannot set annotation on non-anonymous mappings");
        return NULL;
    }
    char full[80];
    snprintf(full, sizeof full, "%s%s", VMA_NAME_PREFIX, utf8);
    /* With the GIL: prctl only relabels the mapping's VMAs, it never
     * blocks, and utf8 lives in the str object. */
    int err = fastio_sys_set_vma_name(self->region.base, self->region.alloc_size, full);
    if (err < 0 && report) {
        return fastio_oserror(err, "prctl", NULL);
    }
    Py_RETURN_NONE;
}

PyDoc_STRVAR(mmap_madvise_doc,
"madvise($self, option, start=0, length=None, /)\n--\n\n"
"The stdlib's madvise: advise the kernel about [start, start+length)\n"
"(length None: to the end).\n"
"The range is widened to whole pages (the kernel does so for length; the\n"
"start is rounded down so that maps at any byte offset work). See\n"
"advise() for the variant that never discards bytes outside the range.");

static PyObject *
mmap_madvise(MmapObject *self, PyObject *args)
{
    int option;
    Py_ssize_t start = 0, length;
    if (check_valid(self) < 0) {
        return NULL;
    }
    length = self->region.size;
    if (!PyArg_ParseTuple(args, "i|nO&:madvise", &option, &start,
                          opt_ssize_converter, &length)) {
        return NULL;
    }
    if (check_valid(self) < 0) {
        return NULL;
    }
    if (start < 0 || start >= self->region.size) {
        PyErr_Format(PyExc_ValueError,
                     "madvise start out of bounds: start=%zd, length of map=%zd",
                     start, self->region.size);
        return NULL;
    }
    if (length < 0) {
        PyErr_SetString(PyExc_ValueError, "madvise length invalid");
        return NULL;
    }
    if (PY_SSIZE_T_MAX - start < length) {
        PyErr_SetString(PyExc_OverflowError, "madvise length too large");
        return NULL;
    }
    if (start + length > self->region.size) {
        length = self->region.size - start;
    }
    char *addr;
    size_t len;
    page_range(self, start, length, 0, &addr, &len);
    int err = advise_range(self, addr, len, option);
    if (err < 0) {
        return fastio_oserror(err, "madvise", NULL);
    }
    Py_RETURN_NONE;
}

PyDoc_STRVAR(mmap_advise_doc,
"advise($self, advice, start=0, length=None)\n--\n\n"
"madvise(2) with any MADV_* value over [start, start+length) (None: to\n"
"the end). The range is rounded to pages for you: outward for advice\n"
"that keeps data, inward (whole pages inside the range only) for advice\n"
"that discards it (MADV_DONTNEED, MADV_FREE, MADV_REMOVE,\n"
"MADV_DONTNEED_LOCKED), so no byte outside the range is lost.");

static PyObject *
mmap_advise(MmapObject *self, PyObject *args, PyObject *kwds)
{
    fastio_pages pg = map_pages(self);
    return fastio_pages_advise(&pg, args, kwds);
}

PyDoc_STRVAR(mmap_populate_doc,
"populate($self, /)\n--\n\n"
"Fault every page of the map in now (MADV_POPULATE_WRITE for shared\n"
"writable maps, MADV_POPULATE_READ otherwise; Linux 5.14+, older kernels\n"
"touch each page). Pages past the end of the file raise\n"
"fastio.MappingError (an OSError, errno EFAULT) instead of a SIGBUS.\n"
"TypeError for a map without PROT_READ.");

static PyObject *
mmap_populate(MmapObject *self, PyObject *Py_UNUSED(ignored))
{
    /* An old kernel's populate reads each page: a SIGSEGV without
     * PROT_READ, which no guard takes. */
    if (check_valid(self) < 0 || check_readable(self) < 0) {
        return NULL;
    }
    fastio_pages pg = map_pages(self);
    return fastio_pages_populate(&pg, populate_writes(self->flags, self->prot));
}

PyDoc_STRVAR(mmap_valid_doc,
"valid($self, /)\n--\n\n"
"Whether the file still covers the whole map (fstat: its size is at least\n"
"offset + len(self)). When it does not, touching the lost pages through\n"
"numpy or any other code that is not fastio's raises SIGBUS, which kills\n"
"the process; fastio's own accessors raise MappingError instead. True for\n"
"anonymous maps, for maps of files fstat cannot size (devices) and for\n"
"maps created with trackfd=False (no descriptor kept to ask). See\n"
"docs/sigbus.md.");

static PyObject *
mmap_valid(MmapObject *self, PyObject *Py_UNUSED(ignored))
{
    if (check_valid(self) < 0) {
        return NULL;
    }
    if (self->fd < 0) {
        Py_RETURN_TRUE;
    }
    struct stat st;
    if (fstat(self->fd, &st) < 0) {
        return fastio_oserror_errno("fstat", NULL);
    }
    if (!S_ISREG(st.st_mode)) {
        Py_RETURN_TRUE;
    }
    return PyBool_FromLong((long long)st.st_size >= self->offset + (long long)self->region.size);
}

PyDoc_STRVAR(mmap_lock_doc,
"lock($self, /)\n--\n\n"
"Lock the map's pages in RAM (mlock). OSError ENOMEM or EPERM, with the\n"
"RLIMIT_MEMLOCK limit named, when the locked-memory limit forbids it.");

static PyObject *
mmap_lock(MmapObject *self, PyObject *Py_UNUSED(ignored))
{
    fastio_pages pg = map_pages(self);
    return fastio_pages_lock(&pg, 1);
}

PyDoc_STRVAR(mmap_unlock_doc,
"unlock($self, /)\n--\n\n"
"Unlock the map's pages (munlock).");

static PyObject *
mmap_unlock(MmapObject *self, PyObject *Py_UNUSED(ignored))
{
    fastio_pages pg = map_pages(self);
    return fastio_pages_lock(&pg, 0);
}

PyDoc_STRVAR(mmap_residency_doc,
"residency($self, /)\n--\n\n"
"Which pages of the map are in RAM (mincore): bytes, one per page\n"
"covering the map, 1 if resident, else 0. fastio.mmap.residency() turns\n"
"this into (fraction, numpy bool array).");

static PyObject *
mmap_residency(MmapObject *self, PyObject *Py_UNUSED(ignored))
{
    if (check_valid(self) < 0) {
        return NULL;
    }
    char *addr;
    size_t len;
    page_range(self, 0, self->region.size, 0, &addr, &len);
    PyObject *res = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(len / (size_t)fastio_pagesize));
    if (res == NULL) {
        return NULL;
    }
    unsigned char *vec = (unsigned char *)PyBytes_AS_STRING(res);
    int err = 0;
    RUN_MAYBE_NOGIL(self, len > 0, err = sys_mincore(addr, len, vec));
    if (err < 0) {
        Py_DECREF(res);
        return fastio_oserror(err, "mincore", NULL);
    }
    return res;
}

/* ================================================================== */
/* Type */

/* Run inside a critical section on self (fastio.h, docs/freethreading.md). */
FASTIO_LOCKED_O(mmap_close)
FASTIO_LOCKED_O(mmap_read)
FASTIO_LOCKED_O(mmap_read_byte)
FASTIO_LOCKED_O(mmap_readline)
FASTIO_LOCKED_O(mmap_write)
FASTIO_LOCKED_O(mmap_write_byte)
FASTIO_LOCKED_O(mmap_seek)
FASTIO_LOCKED_O(mmap_seekable)
FASTIO_LOCKED_O(mmap_tell)
FASTIO_LOCKED_O(mmap_find)
FASTIO_LOCKED_O(mmap_rfind)
FASTIO_LOCKED_O(mmap_move)
FASTIO_LOCKED_O(mmap_readinto)
FASTIO_LOCKED_O(mmap_size)
FASTIO_LOCKED_O(mmap_resize)
FASTIO_LOCKED_KW(mmap_flush)
FASTIO_LOCKED_O(mmap_set_name)
FASTIO_LOCKED_O(mmap_madvise)
FASTIO_LOCKED_KW(mmap_advise)
FASTIO_LOCKED_O(mmap_populate)
FASTIO_LOCKED_O(mmap_valid)
FASTIO_LOCKED_O(mmap_lock)
FASTIO_LOCKED_O(mmap_unlock)
FASTIO_LOCKED_O(mmap_residency)
FASTIO_LOCKED_O(mmap_enter)
FASTIO_LOCKED_O(mmap_exit)
FASTIO_LOCKED_O(mmap_reduce)

static PyMethodDef mmap_methods[] = {
    {"close", (PyCFunction)mmap_close_locked, METH_NOARGS, mmap_close_doc},
    {"read", (PyCFunction)mmap_read_locked, METH_VARARGS, mmap_read_doc},
    {"read_byte", (PyCFunction)mmap_read_byte_locked, METH_NOARGS, mmap_read_byte_doc},
    {"readline", (PyCFunction)mmap_readline_locked, METH_NOARGS, mmap_readline_doc},
    {"write", (PyCFunction)mmap_write_locked, METH_VARARGS, mmap_write_doc},
    {"write_byte", (PyCFunction)mmap_write_byte_locked, METH_VARARGS, mmap_write_byte_doc},
    {"seek", (PyCFunction)mmap_seek_locked, METH_VARARGS, mmap_seek_doc},
    {"seekable", (PyCFunction)mmap_seekable_locked, METH_NOARGS, mmap_seekable_doc},
    {"tell", (PyCFunction)mmap_tell_locked, METH_NOARGS, mmap_tell_doc},
    {"find", (PyCFunction)mmap_find_locked, METH_VARARGS, mmap_find_doc},
    {"rfind", (PyCFunction)mmap_rfind_locked, METH_VARARGS, mmap_rfind_doc},
    {"move", (PyCFunction)mmap_move_locked, METH_VARARGS, mmap_move_doc},
    {"_readinto", (PyCFunction)mmap_readinto_locked, METH_O, mmap_readinto_doc},
    {"size", (PyCFunction)mmap_size_locked, METH_NOARGS, mmap_size_doc},
    {"resize", (PyCFunction)mmap_resize_locked, METH_VARARGS, mmap_resize_doc},
    {"flush", (PyCFunction)(void (*)(void))mmap_flush_locked, METH_VARARGS | METH_KEYWORDS,
     mmap_flush_doc},
    {"set_name", (PyCFunction)mmap_set_name_locked, METH_O, mmap_set_name_doc},
    {"madvise", (PyCFunction)mmap_madvise_locked, METH_VARARGS, mmap_madvise_doc},
    {"advise", (PyCFunction)(void (*)(void))mmap_advise_locked, METH_VARARGS | METH_KEYWORDS,
     mmap_advise_doc},
    {"populate", (PyCFunction)mmap_populate_locked, METH_NOARGS, mmap_populate_doc},
    {"valid", (PyCFunction)mmap_valid_locked, METH_NOARGS, mmap_valid_doc},
    {"lock", (PyCFunction)mmap_lock_locked, METH_NOARGS, mmap_lock_doc},
    {"unlock", (PyCFunction)mmap_unlock_locked, METH_NOARGS, mmap_unlock_doc},
    {"residency", (PyCFunction)mmap_residency_locked, METH_NOARGS, mmap_residency_doc},
    {"__enter__", (PyCFunction)mmap_enter_locked, METH_NOARGS, NULL},
    {"__exit__", (PyCFunction)mmap_exit_locked, METH_VARARGS, NULL},
    {"__reduce__", (PyCFunction)mmap_reduce_locked, METH_NOARGS, NULL},
    {"__reduce_ex__", (PyCFunction)mmap_reduce_locked, METH_VARARGS, NULL},
    {NULL, NULL, 0, NULL},
};

/* Run inside a critical section on self (fastio.h, docs/freethreading.md). */
FASTIO_LOCKED_GET(mmap_get_closed)

static PyGetSetDef mmap_getset[] = {
    {"closed", (getter)mmap_get_closed_locked, NULL, "True once close() was called.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef mmap_members[] = {
    {"__weaklistoffset__", T_PYSSIZET, offsetof(MmapObject, weakreflist), READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

PyDoc_STRVAR(mmap_doc,
"mmap(fileno, length, flags=MAP_SHARED, prot=PROT_WRITE|PROT_READ, "
"access=ACCESS_DEFAULT, offset=0, *, populate=False, hugepages=False, "
"trackfd=True)\n--\n\n"
"A memory map, a superset of the stdlib mmap.mmap. fileno -1 maps\n"
"anonymous memory. offset may be any byte offset. populate prefaults the\n"
"pages (MADV_POPULATE_READ/WRITE); hugepages asks for huge pages.\n"
"trackfd=False keeps no duplicate of fileno (as in Python 3.13's mmap):\n"
"size() and resize() then refuse.\n"
"If the file shrinks under the map, the accessors (indexing, slicing,\n"
"read, write, find, move, iteration, `in`) raise fastio.MappingError\n"
"instead of dying of SIGBUS; numpy views are not protected (valid(),\n"
"populate() and docs/sigbus.md).");

/* The slots that touch the map, inside a critical section on it. */
FASTIO_LOCKED_SELF(mmap_repr)
FASTIO_LOCKED_SELF(mmap_iter)
FASTIO_LOCKED_LEN(mmap_length)
FASTIO_LOCKED_ITEM(mmap_item)
FASTIO_LOCKED_ASSITEM(mmap_ass_item)
FASTIO_LOCKED_CONTAINS(mmap_contains)
FASTIO_LOCKED_O(mmap_subscript)
FASTIO_LOCKED_ASSSUB(mmap_ass_subscript)
FASTIO_LOCKED_GETBUFFER(mmap_getbuffer)
FASTIO_LOCKED_RELEASEBUFFER(mmap_releasebuffer)

static PyType_Slot mmap_slots[] = {
    {Py_tp_doc, (void *)mmap_doc},
    {Py_tp_new, mmap_new},
    {Py_tp_dealloc, mmap_dealloc},
    {Py_tp_repr, mmap_repr_locked},
    {Py_tp_iter, mmap_iter_locked},
    {Py_tp_methods, mmap_methods},
    {Py_tp_getset, mmap_getset},
    {Py_tp_members, mmap_members},
    {Py_sq_length, mmap_length_locked},
    {Py_sq_item, mmap_item_locked},
    {Py_sq_ass_item, mmap_ass_item_locked},
    {Py_sq_contains, mmap_contains_locked},
    {Py_mp_length, mmap_length_locked},
    {Py_mp_subscript, mmap_subscript_locked},
    {Py_mp_ass_subscript, mmap_ass_subscript_locked},
    {Py_bf_getbuffer, mmap_getbuffer_locked},
    {Py_bf_releasebuffer, mmap_releasebuffer_locked},
    {0, NULL},
};

PyType_Spec fastio_mmap_spec = {
    .name = "fastio._core.mmap",
    .basicsize = sizeof(MmapObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .slots = mmap_slots,
};
