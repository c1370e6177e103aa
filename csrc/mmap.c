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
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define ACCESS_DEFAULT 0
#define ACCESS_READ 1
#define ACCESS_WRITE 2
#define ACCESS_COPY 3

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#endif
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

typedef struct {
    PyObject_HEAD
    fastio_region region;
    int fd;              /* our own dup of the file's fd, -1 for anonymous */
    Py_ssize_t pos;      /* the file-like position for read/write/seek */
    long long offset;    /* the user's byte offset into the file */
    int access;
    int flags;
    int prot;
    PyObject *weakreflist;
} MmapObject;

#define CLOSED_MSG "mmap closed or invalid"

/* ================================================================== */
/* Syscall helpers: return 0 or -errno, touch nothing else. */

/* 1 when the kernel knows MADV_POPULATE_READ (5.14+), 0 when not;
 * probed once. Older kernels get MAP_POPULATE at mmap time instead. */
static int
kernel_has_madv_populate(void)
{
    static int known = -1;
    if (known < 0) {
        void *p = mmap(NULL, (size_t)fastio_pagesize, PROT_READ,
                       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) {
            return 0;
        }
        known = madvise(p, (size_t)fastio_pagesize, MADV_POPULATE_READ) == 0;
        munmap(p, (size_t)fastio_pagesize);
    }
    return known;
}

/* Prefault [p, p+len): MADV_POPULATE_WRITE for writable maps (so the pages
 * are allocated and dirty-tracked now, not at first store), READ otherwise. */
static int
populate_range(void *p, size_t len, int writable)
{
    int advice = writable ? MADV_POPULATE_WRITE : MADV_POPULATE_READ;
    while (madvise(p, len, advice) < 0) {
        if (errno != EINTR) {
            return -errno;
        }
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
                               "offset", "populate", "hugepages", NULL};
    int fd;
    Py_ssize_t length;
    int flags = MAP_SHARED;
    int prot = PROT_WRITE | PROT_READ;
    int access = ACCESS_DEFAULT;
    long long offset = 0;
    int populate = 0;
    int hugepages = 0;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "in|iiiL$pp:mmap", keywords,
                                     &fd, &length, &flags, &prot, &access,
                                     &offset, &populate, &hugepages)) {
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
    self->region.readonly = (access == ACCESS_READ) || !(prot & PROT_WRITE);

    if (fd != -1) {
        /* Own a dup, as the stdlib does: the caller may close theirs. */
        self->fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
        if (self->fd < 0) {
            fastio_oserror_errno("dup", NULL);
            Py_DECREF(self);
            return NULL;
        }
    }
    else {
        flags |= MAP_ANONYMOUS;
    }

    int want_populate = populate && length > 0;
    if (want_populate && !kernel_has_madv_populate()) {
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
        base = mmap(NULL, map_len, prot, flags, self->fd, (off_t)aligned);
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
        err = populate_range(base, map_len, (prot & PROT_WRITE) != 0);
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
    if (err < 0) {
        fastio_oserror(err, "madvise", NULL);
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
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
    /* Every export holds a reference to us, so none is live here. */
    fastio_region_free(&self->region);
    mmap_close_fd(self);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

PyDoc_STRVAR(mmap_close_doc,
"close($self, /)\n--\n\n"
"Close the map. Safe while numpy arrays or memoryviews still use it: the\n"
"object is closed at once (every method then raises ValueError) and the\n"
"memory is unmapped when the last of those views is released.");

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
    if (fastio_region_check(&self->region, CLOSED_MSG) < 0) {
        return NULL;
    }
    return Py_NewRef(self);
}

static PyObject *
mmap_exit(MmapObject *self, PyObject *Py_UNUSED(args))
{
    return mmap_close(self, NULL);
}

/* ================================================================== */
/* Sequence and buffer protocols */

static Py_ssize_t
mmap_length(MmapObject *self)
{
    if (fastio_region_check(&self->region, CLOSED_MSG) < 0) {
        return -1;
    }
    return self->region.size;
}

static int
mmap_getbuffer(MmapObject *self, Py_buffer *view, int flags)
{
    if (fastio_region_check(&self->region, CLOSED_MSG) < 0) {
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
/* Type */

static PyMethodDef mmap_methods[] = {
    {"close", (PyCFunction)mmap_close, METH_NOARGS, mmap_close_doc},
    {"__enter__", (PyCFunction)mmap_enter, METH_NOARGS, NULL},
    {"__exit__", (PyCFunction)mmap_exit, METH_VARARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef mmap_getset[] = {
    {"closed", (getter)mmap_get_closed, NULL, "True once close() was called.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef mmap_members[] = {
    {"__weaklistoffset__", T_PYSSIZET, offsetof(MmapObject, weakreflist), READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

PyDoc_STRVAR(mmap_doc,
"mmap(fileno, length, flags=MAP_SHARED, prot=PROT_WRITE|PROT_READ, "
"access=ACCESS_DEFAULT, offset=0, *, populate=False, hugepages=False)\n--\n\n"
"A memory map, a superset of the stdlib mmap.mmap. fileno -1 maps\n"
"anonymous memory. offset may be any byte offset. populate prefaults the\n"
"pages (MADV_POPULATE_READ/WRITE); hugepages asks for huge pages.");

static PyType_Slot mmap_slots[] = {
    {Py_tp_doc, (void *)mmap_doc},
    {Py_tp_new, mmap_new},
    {Py_tp_dealloc, mmap_dealloc},
    {Py_tp_methods, mmap_methods},
    {Py_tp_getset, mmap_getset},
    {Py_tp_members, mmap_members},
    {Py_sq_length, mmap_length},
    {Py_mp_length, mmap_length},
    {Py_bf_getbuffer, mmap_getbuffer},
    {Py_bf_releasebuffer, mmap_releasebuffer},
    {0, NULL},
};

PyType_Spec fastio_mmap_spec = {
    .name = "fastio._core.mmap",
    .basicsize = sizeof(MmapObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .slots = mmap_slots,
};
