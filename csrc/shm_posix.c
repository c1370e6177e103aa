/* shm_posix.c: shm_open / shm_unlink / memfd_create: POSIX and memfd
 * shared memory segments.
 *
 * fastio._core.SharedMemory is a segment mapped MAP_SHARED from a file
 * descriptor that it keeps (fileno()): either a POSIX shm object opened by
 * name (shm_open) or any descriptor it is given (a memfd, one received over
 * a UNIX socket). The memory lives in a fastio_region (region.c), so close()
 * is safe while numpy arrays use it.
 *
 * Policy lives in fastio/shm.py: names, ownership (who unlinks and when),
 * the registry of segments fastio created. This file does the system calls
 * and cleans up after itself when one of them fails half-way.
 */
#include "fastio.h"

#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <linux/falloc.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef MFD_CLOEXEC
#define MFD_CLOEXEC 0x0001U
#endif
#ifndef MFD_ALLOW_SEALING
#define MFD_ALLOW_SEALING 0x0002U
#endif
#ifndef MFD_HUGETLB
#define MFD_HUGETLB 0x0004U
#endif
#ifndef F_ADD_SEALS
#define F_ADD_SEALS 1033
#define F_GET_SEALS 1034
#endif
#ifndef F_SEAL_SEAL
#define F_SEAL_SEAL 0x0001
#define F_SEAL_SHRINK 0x0002
#define F_SEAL_GROW 0x0004
#define F_SEAL_WRITE 0x0008
#endif
#ifndef F_SEAL_FUTURE_WRITE
#define F_SEAL_FUTURE_WRITE 0x0010
#endif

typedef struct {
    PyObject_HEAD
    fastio_region region;
    int fd;                 /* our own descriptor of the segment, -1 closed */
    Py_ssize_t size;        /* the segment's size, kept after close */
    int populated;          /* populate was asked: fill() memsets */
    PyObject *weakreflist;
} ShmObject;

#define CLOSED_MSG "operation on a closed SharedMemory"

/* ================================================================== */
/* Syscall helpers: return 0 (or a value >= 0) or -errno. */

static int
sys_shm_open(const char *name, int oflag, mode_t mode)
{
    int fd;
    do {
        fd = shm_open(name, oflag, mode);
    } while (fd < 0 && errno == EINTR);
    return fd < 0 ? -errno : fd;
}

static int
sys_ftruncate(int fd, off_t size)
{
    while (ftruncate(fd, size) < 0) {
        if (errno != EINTR) {
            return -errno;
        }
    }
    return 0;
}

/* Allocate the segment's pages before they are mapped: on tmpfs this is
 * markedly cheaper than letting MADV_POPULATE_WRITE allocate them one
 * fault at a time (it then only maps pages that exist). Best effort:
 * without it (EOPNOTSUPP, a sealed memfd) the populate allocates. */
static void
preallocate(int fd, size_t size)
{
    int rc;
    do {
        /* KEEP_SIZE: never grow anything, whatever the size says. */
        rc = fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, (off_t)size);
    } while (rc < 0 && errno == EINTR);
}

/* Map [0, size) of fd shared. With populate, every page is faulted in now
 * (MADV_POPULATE_WRITE allocates the shmem pages and maps them writable in
 * one pass: the cheapest way to get a segment ready to fill). Returns 0
 * and the address in *out, or -errno with nothing mapped. Called without
 * the GIL. */
static int
map_segment(int fd, size_t size, int readonly, int populate, int hugepages,
            void **out)
{
    int prot = PROT_READ | (readonly ? 0 : PROT_WRITE);
    int flags = MAP_SHARED;
    if (populate && !readonly) {
        preallocate(fd, size);
    }
    int madv_populate = populate && fastio_kernel_has_madv_populate();
    if (populate && !madv_populate) {
        flags |= MAP_POPULATE;
    }
    void *p = mmap(NULL, size, prot, flags, fd, 0);
    if (p == MAP_FAILED) {
        return -errno;
    }
#ifdef MADV_HUGEPAGE
    if (hugepages) {
        /* Advice: shmem huge pages depend on
         * /sys/kernel/mm/transparent_hugepage/shmem_enabled. */
        (void)madvise(p, size, MADV_HUGEPAGE);
    }
#endif
    if (madv_populate) {
        /* A fresh mapping of a segment just sized: MADV_POPULATE says
         * EFAULT (no SIGBUS) if another holder shrank it meanwhile. */
        fastio_fault fault;
        int err = fastio_pages_populate_raw(p, size, !readonly, 0, &fault);
        if (err < 0) {
            munmap(p, size);
            return err;
        }
    }
    *out = p;
    return 0;
}

/* ================================================================== */
/* Construction */

static void
shm_close_fd(ShmObject *self)
{
    if (self->fd >= 0) {
        int fd = self->fd;
        self->fd = -1;
        close(fd);
    }
}

PyDoc_STRVAR(shm_doc,
"SharedMemory(name, size=0, *, create=False, mode=0o600, readonly=False, "
"populate=False, hugepages=False)\n--\n\n"
"A shared memory segment mapped MAP_SHARED (the C core of\n"
"fastio.SharedMemory, which adds names, ownership and numpy views).\n\n"
"name is a POSIX shm name with its leading '/' (shm_open), or a file\n"
"descriptor of a segment (a memfd, a received fd), which is duplicated.\n"
"create makes the named object exclusively (O_CREAT|O_EXCL) with exactly\n"
"`mode` and `size` bytes; otherwise the segment's real size is mapped\n"
"(size is ignored). populate faults every page in now; hugepages advises\n"
"transparent huge pages. If anything fails after an exclusive create,\n"
"the object is unlinked again.");

static PyObject *
shm_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *keywords[] = {"name", "size", "create", "mode", "readonly",
                               "populate", "hugepages", NULL};
    PyObject *name_obj;
    Py_ssize_t size = 0;
    int create = 0, readonly = 0, populate = 0, hugepages = 0;
    PyObject *mode_obj = NULL;
    unsigned int mode = 0600;
    /* mode as an object, not "I", which truncates without a check
     * (mode=2**32+0o600 would have been 0o600). */
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|n$pOppp:SharedMemory", keywords,
                                     &name_obj, &size, &create, &mode_obj, &readonly,
                                     &populate, &hugepages)) {
        return NULL;
    }
    long long v;
    if (mode_obj != NULL) {
        if (fastio_int_arg(mode_obj, "mode", 0, 07777, &v) < 0) {
            return NULL;
        }
        mode = (unsigned int)v;
    }
    int given_fd = -1;
    PyObject *name_bytes = NULL;  /* encoded name, owned */
    if (PyLong_Check(name_obj)) {
        if (fastio_int_arg(name_obj, "name", INT_MIN, INT_MAX, &v) < 0) {
            return NULL;
        }
        given_fd = (int)v;
        if (given_fd < 0) {
            PyErr_Format(PyExc_ValueError,
                         "file descriptor must be >= 0, got name=%d", given_fd);
            return NULL;
        }
        if (create) {
            PyErr_SetString(PyExc_ValueError,
                            "create=True needs a name, not a file descriptor");
            return NULL;
        }
    }
    else if (PyUnicode_Check(name_obj)) {
        if (!PyUnicode_FSConverter(name_obj, &name_bytes)) {
            return NULL;
        }
        const char *n = PyBytes_AS_STRING(name_bytes);
        if (n[0] != '/' || strchr(n + 1, '/') != NULL || n[1] == '\0') {
            PyErr_Format(PyExc_ValueError,
                         "a shm name is '/' then at least one character and no "
                         "other '/', got name=%R", name_obj);
            Py_DECREF(name_bytes);
            return NULL;
        }
    }
    else {
        PyErr_Format(PyExc_TypeError,
                     "name must be a str or a file descriptor, got name=%R",
                     name_obj);
        return NULL;
    }
    if (create && size <= 0) {
        PyErr_Format(PyExc_ValueError,
                     "create=True needs size > 0, got size=%zd", size);
        Py_XDECREF(name_bytes);
        return NULL;
    }
    if (create && readonly) {
        PyErr_SetString(PyExc_ValueError,
                        "create=True with readonly=True would make a segment "
                        "no one can fill");
        Py_XDECREF(name_bytes);
        return NULL;
    }

    ShmObject *self = (ShmObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        Py_XDECREF(name_bytes);
        return NULL;
    }
    self->fd = -1;

    const char *name = name_bytes ? PyBytes_AS_STRING(name_bytes) : NULL;
    int fd = -1, err = 0;
    const char *failed = NULL;
    int created = 0;
    struct stat st;
    void *base = NULL;
    size_t map_len = 0;

    Py_BEGIN_ALLOW_THREADS
    if (name != NULL) {
        int oflag = (readonly ? O_RDONLY : O_RDWR) | O_CLOEXEC;
        if (create) {
            oflag |= O_CREAT | O_EXCL;
        }
        fd = sys_shm_open(name, oflag, (mode_t)mode);
        if (fd < 0) {
            err = fd;
            failed = "shm_open";
        }
        else {
            created = create;
        }
    }
    else {
        fd = fcntl(given_fd, F_DUPFD_CLOEXEC, 0);
        if (fd < 0) {
            err = -errno;
            failed = "dup";
        }
    }
    if (err == 0 && created) {
        /* shm_open's mode went through the umask: set exactly what was
         * asked, before the size, so that no one else can open it meanwhile
         * with wider rights than the caller meant. */
        if (fchmod(fd, (mode_t)mode) < 0) {
            err = -errno;
            failed = "fchmod";
        }
        else if ((err = sys_ftruncate(fd, (off_t)size)) < 0) {
            failed = "ftruncate";
        }
    }
    if (err == 0) {
        if (fstat(fd, &st) < 0) {
            err = -errno;
            failed = "fstat";
        }
        else if (st.st_size > PY_SSIZE_T_MAX) {
            err = -EFBIG;
            failed = "fstat";
        }
        else {
            /* An attach maps the segment's real size, whatever it is now. */
            map_len = (size_t)st.st_size;
        }
    }
    if (err == 0 && map_len > 0) {
        err = map_segment(fd, map_len, readonly, populate, hugepages, &base);
        if (err < 0) {
            failed = populate ? "mmap/madvise MADV_POPULATE_WRITE" : "mmap";
            base = NULL;
        }
    }
    if (err < 0) {
        if (created) {
            /* Our exclusive create must not outlive the failure. */
            shm_unlink(name);
        }
        if (fd >= 0) {
            close(fd);
            fd = -1;
        }
    }
    Py_END_ALLOW_THREADS

    if (err < 0) {
        fastio_oserror(err, failed, name_bytes ? name_obj : NULL);
        Py_XDECREF(name_bytes);
        Py_DECREF(self);
        return NULL;
    }
    Py_XDECREF(name_bytes);
    self->fd = fd;
    self->size = (Py_ssize_t)map_len;
    self->populated = populate;
    if (base != NULL) {
        self->region.base = base;
        self->region.alloc_size = map_len;
        self->region.data = base;
        self->region.size = (Py_ssize_t)map_len;
        self->region.kind = FASTIO_MEM_MMAP;
    }
    self->region.readonly = readonly;
    return (PyObject *)self;
}

/* ================================================================== */
/* Lifetime and methods */

/* The segment as pages.c sees it: a file (the fd) mapped from offset 0. */
static fastio_pages
shm_pages(ShmObject *self)
{
    fastio_pages pg = {(PyObject *)self, &self->region, CLOSED_MSG, &self->fd, 0};
    return pg;
}

static void
shm_dealloc(ShmObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    if (self->weakreflist != NULL) {
        PyObject_ClearWeakRefs((PyObject *)self);
    }
    /* Each export holds a reference to us: none is live here. */
    fastio_region_free(&self->region);
    shm_close_fd(self);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static int
shm_traverse(ShmObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    return 0;
}

PyDoc_STRVAR(shm_close_doc,
"close($self, /)\n--\n\n"
"Close the descriptor and unmap. Safe while numpy arrays or memoryviews\n"
"use the memory: it is unmapped when the last of them goes. Idempotent.");

static PyObject *
shm_close(ShmObject *self, PyObject *Py_UNUSED(ignored))
{
    shm_close_fd(self);
    fastio_region_close(&self->region);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(shm_fileno_doc,
"fileno($self, /)\n--\n\n"
"The segment's file descriptor (owned by this object: dup it to keep it\n"
"past close()).");

static PyObject *
shm_fileno(ShmObject *self, PyObject *Py_UNUSED(ignored))
{
    if (fastio_region_check(&self->region, CLOSED_MSG) < 0) {
        return NULL;
    }
    return PyLong_FromLong(self->fd);
}

PyDoc_STRVAR(shm_populate_doc,
"populate($self, /)\n--\n\n"
"Fault every page in now (MADV_POPULATE_WRITE, or READ when read-only),\n"
"with the GIL released.");

static PyObject *
shm_populate(ShmObject *self, PyObject *Py_UNUSED(ignored))
{
    if (self->fd >= 0 && !self->region.closed && !self->region.readonly &&
        self->region.size > 0) {
        /* Our own descriptor: a close() in another thread meanwhile must
         * not leave us with a number that names another file. */
        int fd = fcntl(self->fd, F_DUPFD_CLOEXEC, 0);
        size_t size = (size_t)self->region.size;
        if (fd >= 0) {
            Py_BEGIN_ALLOW_THREADS
            preallocate(fd, size);
            close(fd);
            Py_END_ALLOW_THREADS
        }
    }
    self->populated = 1;
    fastio_pages pg = shm_pages(self);
    return fastio_pages_populate(&pg, !self->region.readonly);
}

PyDoc_STRVAR(shm_fill_doc,
"fill($self, value=0, start=0, length=None)\n--\n\n"
"Set [start, start+length) (None: to the end) to the byte `value`, with\n"
"the GIL released when large: by pwrite through the descriptor (pages\n"
"not yet allocated are then neither zeroed first nor faulted in), or by\n"
"memset after populate.");

/* Fill [off, off+n) of fd with the byte value by pwrite from a small
 * pattern buffer. For pages not yet in the segment this is twice as fast as
 * a memset through the mapping: the kernel allocates each page for a write
 * that covers it whole without zeroing it first, and no page faults. Called
 * without the GIL; returns 0 or -errno. */
static int
fill_by_pwrite(int fd, int value, off_t off, size_t n)
{
    size_t chunk_size = (size_t)256 << 10;  /* stays in L2 */
    char *chunk = malloc(chunk_size);
    if (chunk == NULL) {
        return -ENOMEM;
    }
    memset(chunk, value, chunk_size);
    int err = 0;
    while (n > 0) {
        size_t k = n < chunk_size ? n : chunk_size;
        ssize_t w = pwrite(fd, chunk, k, off);
        if (w < 0) {
            if (errno == EINTR) {
                continue;
            }
            err = -errno;
            break;
        }
        if (w == 0) {
            err = -EIO;
            break;
        }
        off += w;
        n -= (size_t)w;
    }
    free(chunk);
    return err;
}

static PyObject *
shm_fill(ShmObject *self, PyObject *args, PyObject *kwds)
{
    fastio_region *r = &self->region;
    fastio_pages pg = shm_pages(self);
    int value;
    Py_ssize_t start, length;
    if (fastio_pages_fill_args(&pg, args, kwds, &value, &start, &length) < 0) {
        return NULL;
    }
    /* pwrite through the descriptor pays off for large ranges of pages not
     * yet in the segment (after populate they are: memset then). The
     * descriptor is writable: fill_args refused read-only objects. */
    if (self->populated || self->fd < 0 ||
        length < (Py_ssize_t)FASTIO_NOGIL_COPY_THRESHOLD) {
        return fastio_pages_fill_range(&pg, value, start, length);
    }
    /* Our own descriptor: a close() in another thread meanwhile must not
     * leave us writing to a number that names another file. The region is
     * pinned, so the memory stays mapped. */
    int fd = fcntl(self->fd, F_DUPFD_CLOEXEC, 0);
    if (fd < 0) {
        return fastio_oserror_errno("dup", NULL);
    }
    int err = 0, shrunk = 0;
    fastio_region_pin(r);
    Py_BEGIN_ALLOW_THREADS
    /* A segment another holder shrank: a pwrite past its end would grow
     * it back behind their back. Leave that range to the guarded memset,
     * which raises MappingError for the lost pages, as every accessor. */
    struct stat st;
    if (fstat(fd, &st) != 0 || (long long)st.st_size < (long long)start + length) {
        shrunk = 1;  /* size unknown: the guarded memset, which cannot grow it */
    }
    else {
        err = fill_by_pwrite(fd, value, (off_t)start, (size_t)length);
    }
    close(fd);
    Py_END_ALLOW_THREADS
    fastio_region_unpin(r);
    if (shrunk) {
        /* Closed meanwhile? fill_range needs the memory: check again. */
        if (fastio_region_check(r, CLOSED_MSG) < 0) {
            return NULL;
        }
        return fastio_pages_fill_range(&pg, value, start, length);
    }
    if (err < 0) {
        return fastio_oserror(err, "pwrite", NULL);
    }
    Py_RETURN_NONE;
}

PyDoc_STRVAR(shm_advise_doc,
"advise($self, advice, start=0, length=None)\n--\n\n"
"madvise(2) with any MADV_* value over [start, start+length) (None: to\n"
"the end), rounded to pages: outward, or inward for advice that discards\n"
"data (MADV_DONTNEED, MADV_FREE, MADV_REMOVE).");

static PyObject *
shm_advise(ShmObject *self, PyObject *args, PyObject *kwds)
{
    fastio_pages pg = shm_pages(self);
    return fastio_pages_advise(&pg, args, kwds);
}

/* fcntl(F_ADD_SEALS / F_GET_SEALS) for memfd segments. */
PyDoc_STRVAR(shm_add_seals_doc,
"add_seals($self, seals, /)\n--\n\n"
"fcntl(F_ADD_SEALS): add F_SEAL_* flags to a memfd segment. F_SEAL_WRITE\n"
"fails (EBUSY) while a writable shared mapping exists, this object's\n"
"included: use F_SEAL_FUTURE_WRITE to forbid new writers instead.");

static PyObject *
shm_add_seals(ShmObject *self, PyObject *arg)
{
    long long v;
    if (fastio_int_arg(arg, "seals", INT_MIN, INT_MAX, &v) < 0) {
        return NULL;
    }
    int seals = (int)v;
    if (fastio_region_check(&self->region, CLOSED_MSG) < 0) {
        return NULL;
    }
    if (fcntl(self->fd, F_ADD_SEALS, seals) < 0) {
        return fastio_oserror_errno("fcntl F_ADD_SEALS", NULL);
    }
    Py_RETURN_NONE;
}

PyDoc_STRVAR(shm_seals_doc,
"seals($self, /)\n--\n\n"
"fcntl(F_GET_SEALS): the F_SEAL_* flags in force (0 for an unsealed memfd;\n"
"F_SEAL_SEAL for a POSIX shm object, which cannot be sealed; OSError\n"
"EINVAL on kernels whose tmpfs files know no seals).");

static PyObject *
shm_seals(ShmObject *self, PyObject *Py_UNUSED(ignored))
{
    if (fastio_region_check(&self->region, CLOSED_MSG) < 0) {
        return NULL;
    }
    int seals = fcntl(self->fd, F_GET_SEALS);
    if (seals < 0) {
        return fastio_oserror_errno("fcntl F_GET_SEALS", NULL);
    }
    return PyLong_FromLong(seals);
}

static PyObject *
shm_get_closed(ShmObject *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(self->region.closed);
}

static PyObject *
shm_get_size(ShmObject *self, void *Py_UNUSED(closure))
{
    return PyLong_FromSsize_t(self->size);
}

static PyObject *
shm_get_readonly(ShmObject *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(self->region.readonly);
}

static PyObject *
shm_get_address(ShmObject *self, void *Py_UNUSED(closure))
{
    if (fastio_region_check(&self->region, CLOSED_MSG) < 0) {
        return NULL;
    }
    return PyLong_FromVoidPtr(self->region.data);
}

static int
shm_getbuffer(ShmObject *self, Py_buffer *view, int flags)
{
    if (fastio_region_check(&self->region, CLOSED_MSG) < 0) {
        view->obj = NULL;
        return -1;
    }
    return fastio_region_getbuffer((PyObject *)self, &self->region, view, flags);
}

static void
shm_releasebuffer(ShmObject *self, Py_buffer *view)
{
    fastio_region_releasebuffer(&self->region, view);
}

/* ================================================================== */
/* Module functions: shm_unlink, memfd_create */

PyDoc_STRVAR(shm_unlink_doc,
"shm_unlink(name, /)\n--\n\n"
"Remove a POSIX shm name (with its leading '/'). Mappings stay valid.");

static PyObject *
fastio_shm_unlink(PyObject *module, PyObject *name_obj)
{
    PyObject *name_bytes = NULL;
    if (!PyUnicode_FSConverter(name_obj, &name_bytes)) {
        return NULL;
    }
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = shm_unlink(PyBytes_AS_STRING(name_bytes)) < 0 ? -errno : 0;
    Py_END_ALLOW_THREADS
    Py_DECREF(name_bytes);
    if (rc < 0) {
        return fastio_oserror(rc, "shm_unlink", name_obj);
    }
    Py_RETURN_NONE;
}

PyDoc_STRVAR(memfd_create_doc,
"memfd_create(name, size, seals=0, hugetlb=False)\n--\n\n"
"A new memfd of `size` bytes (memfd_create with MFD_CLOEXEC and\n"
"MFD_ALLOW_SEALING, ftruncate, then fcntl(F_ADD_SEALS, seals)); returns\n"
"the descriptor, which the caller owns. hugetlb asks MFD_HUGETLB (needs\n"
"reserved huge pages; size is rounded up to one).");

static PyObject *
fastio_memfd_create(PyObject *module, PyObject *args, PyObject *kwds)
{
    static char *keywords[] = {"name", "size", "seals", "hugetlb", NULL};
    PyObject *name_bytes;
    Py_ssize_t size;
    int seals = 0, hugetlb = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O&n|ip:memfd_create", keywords,
                                     PyUnicode_FSConverter, &name_bytes, &size,
                                     &seals, &hugetlb)) {
        return NULL;
    }
    if (size < 0) {
        PyErr_Format(PyExc_ValueError, "size must be >= 0, got size=%zd", size);
        Py_DECREF(name_bytes);
        return NULL;
    }
    if (hugetlb && size > PY_SSIZE_T_MAX - (2 << 20)) {
        /* The rounding up to a huge page below must not overflow off_t. */
        PyErr_Format(PyExc_OverflowError, "size too large: size=%zd", size);
        Py_DECREF(name_bytes);
        return NULL;
    }
    const char *name = PyBytes_AS_STRING(name_bytes);
    unsigned int flags = MFD_CLOEXEC | MFD_ALLOW_SEALING;
    if (hugetlb) {
        flags |= MFD_HUGETLB;
    }
    int fd, err = 0;
    const char *failed = NULL;
    Py_BEGIN_ALLOW_THREADS
    fd = memfd_create(name, flags);
    if (fd < 0) {
        err = -errno;
        failed = "memfd_create";
    }
    else {
        off_t sz = (off_t)size;
        if (hugetlb && size > 0) {
            /* hugetlbfs sizes are whole huge pages. */
            off_t huge = 2 << 20;
            sz = (sz + huge - 1) / huge * huge;
        }
        if ((err = sys_ftruncate(fd, sz)) < 0) {
            failed = "ftruncate";
        }
        else if (seals && fcntl(fd, F_ADD_SEALS, seals) < 0) {
            err = -errno;
            failed = "fcntl F_ADD_SEALS";
        }
        if (err < 0) {
            close(fd);
        }
    }
    Py_END_ALLOW_THREADS
    Py_DECREF(name_bytes);
    if (err < 0) {
        return fastio_oserror(err, failed, NULL);
    }
    return PyLong_FromLong(fd);
}

static PyMethodDef shm_functions[] = {
    {"shm_unlink", (PyCFunction)fastio_shm_unlink, METH_O, shm_unlink_doc},
    {"memfd_create", (PyCFunction)(void (*)(void))fastio_memfd_create,
     METH_VARARGS | METH_KEYWORDS, memfd_create_doc},
    {NULL, NULL, 0, NULL},
};

/* ================================================================== */
/* Type */

/* Run inside a critical section on self (fastio.h, docs/freethreading.md). */
FASTIO_LOCKED_O(shm_close)
FASTIO_LOCKED_O(shm_fileno)
FASTIO_LOCKED_O(shm_populate)
FASTIO_LOCKED_KW(shm_advise)
FASTIO_LOCKED_KW(shm_fill)
FASTIO_LOCKED_O(shm_add_seals)
FASTIO_LOCKED_O(shm_seals)

static PyMethodDef shm_methods[] = {
    {"close", (PyCFunction)shm_close_locked, METH_NOARGS, shm_close_doc},
    {"fileno", (PyCFunction)shm_fileno_locked, METH_NOARGS, shm_fileno_doc},
    {"populate", (PyCFunction)shm_populate_locked, METH_NOARGS, shm_populate_doc},
    {"advise", (PyCFunction)(void (*)(void))shm_advise_locked, METH_VARARGS | METH_KEYWORDS,
     shm_advise_doc},
    {"fill", (PyCFunction)(void (*)(void))shm_fill_locked, METH_VARARGS | METH_KEYWORDS,
     shm_fill_doc},
    {"add_seals", (PyCFunction)shm_add_seals_locked, METH_O, shm_add_seals_doc},
    {"seals", (PyCFunction)shm_seals_locked, METH_NOARGS, shm_seals_doc},
    {NULL, NULL, 0, NULL},
};

/* Run inside a critical section on self (fastio.h, docs/freethreading.md). */
FASTIO_LOCKED_GET(shm_get_closed)
FASTIO_LOCKED_GET(shm_get_size)
FASTIO_LOCKED_GET(shm_get_readonly)
FASTIO_LOCKED_GET(shm_get_address)

static PyGetSetDef shm_getset[] = {
    {"closed", (getter)shm_get_closed_locked, NULL, "True once close() was called.", NULL},
    {"size", (getter)shm_get_size_locked, NULL, "The segment's size in bytes.", NULL},
    {"readonly", (getter)shm_get_readonly_locked, NULL, "True for a read-only mapping.", NULL},
    {"_address", (getter)shm_get_address_locked, NULL,
     "The mapping's address in this process (for numpy offsets).", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef shm_members[] = {
    {"__weaklistoffset__", T_PYSSIZET, offsetof(ShmObject, weakreflist), READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

/* Slots inside a critical section on self (fastio.h). */
FASTIO_LOCKED_GETBUFFER(shm_getbuffer)
FASTIO_LOCKED_RELEASEBUFFER(shm_releasebuffer)

static PyType_Slot shm_slots[] = {
    {Py_tp_doc, (void *)shm_doc},
    {Py_tp_new, shm_new},
    {Py_tp_dealloc, shm_dealloc},
    {Py_tp_traverse, shm_traverse},
    {Py_tp_methods, shm_methods},
    {Py_tp_getset, shm_getset},
    {Py_tp_members, shm_members},
    {Py_bf_getbuffer, shm_getbuffer_locked},
    {Py_bf_releasebuffer, shm_releasebuffer_locked},
    {0, NULL},
};

static PyType_Spec shm_spec = {
    .name = "fastio._core.SharedMemory",
    .basicsize = sizeof(ShmObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .slots = shm_slots,
};

static const struct {
    const char *name;
    long value;
} seal_constants[] = {
    {"F_SEAL_SEAL", F_SEAL_SEAL}, {"F_SEAL_SHRINK", F_SEAL_SHRINK},
    {"F_SEAL_GROW", F_SEAL_GROW}, {"F_SEAL_WRITE", F_SEAL_WRITE},
    {"F_SEAL_FUTURE_WRITE", F_SEAL_FUTURE_WRITE},
    {NULL, 0},
};

int
fastio_shm_exec(PyObject *module, fastio_state *st)
{
    if (fastio_add_type(module, &shm_spec, NULL, &st->shm_type) < 0 ||
        PyModule_AddFunctions(module, shm_functions) < 0) {
        return -1;
    }
    for (int i = 0; seal_constants[i].name != NULL; i++) {
        if (PyModule_AddIntConstant(module, seal_constants[i].name,
                                    seal_constants[i].value) < 0) {
            return -1;
        }
    }
    return 0;
}
