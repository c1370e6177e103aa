/* buffer.c: fastio._core.Buffer (aligned and huge-page memory) and heap_info.
 *
 * A Buffer is a block of writable memory with a chosen alignment, exported
 * through the buffer protocol. Its memory lives in a fastio_region
 * (region.c), so close() is safe while numpy arrays or memoryviews still use
 * it: the memory is freed when the last of them is released.
 *
 * Where the memory comes from:
 *   - blocks below BUFFER_MMAP_MIN (2 MiB, one huge page) from
 *     posix_memalign. Measured here: glibc recycles freed heap memory that
 *     is already faulted in, while a fresh mapping costs a page fault and
 *     the zeroing of every 4 KiB page at first touch (~1.5 us each), which
 *     made reading a 1 MiB file into fresh mapped memory 8x slower than
 *     into recycled heap memory;
 *   - large blocks, and any block asked for with hugepages, from a private
 *     anonymous mapping. Such memory is zero (the kernel gives zeroed
 *     pages), is returned to the kernel at once on free, and can carry
 *     MADV_HUGEPAGE. When the alignment (or the huge page size) exceeds the
 *     page size we map more than needed and unmap the ends, so the block
 *     starts on the boundary.
 * The policy "huge pages when large" lives in fastio/memory.py (empty()).
 */
#include "fastio.h"

#include <dlfcn.h>
#include <malloc.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* Below one huge page, heap memory (see the top of the file). */
#define BUFFER_MMAP_MIN ((size_t)2 * 1024 * 1024)
/* The transparent huge page size on x86-64 and arm64 (4 KiB base pages). */
#define BUFFER_HUGE_SIZE ((size_t)2 * 1024 * 1024)

typedef struct {
    PyObject_HEAD
    fastio_region region;
    Py_ssize_t nbytes;   /* the requested size (kept after close) */
    size_t align;        /* the guaranteed alignment of address */
    int hugepages;       /* MADV_HUGEPAGE was accepted by the kernel */
    fastio_mem_kind kind; /* where the memory came from (kept after close) */
    PyObject *weakreflist;
} BufferObject;

#define CLOSED_MSG "Buffer is closed"

/* ================================================================== */
/* Syscall helpers: return 0 or -errno, touch nothing else. Called with
 * the GIL released. */

/* Map `len` bytes (a multiple of the page size) of private anonymous memory
 * starting on a multiple of `align` (a power of two >= the page size).
 * *huge_ok says whether MADV_HUGEPAGE was accepted when asked for. */
static int
map_aligned(size_t len, size_t align, int hugepages, void **out, int *huge_ok)
{
    size_t page = (size_t)fastio_pagesize;
    size_t extra = align > page ? align - page : 0;
    if (len > SIZE_MAX - extra) {
        return -ENOMEM;
    }
    char *p = mmap(NULL, len + extra, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        return -errno;
    }
    char *start = p;
    if (extra) {
        /* Trim the head and tail so that the mapping is exactly
         * [start, start+len): munmap(base, alloc_size) frees it all later. */
        start = (char *)(((uintptr_t)p + align - 1) & ~((uintptr_t)align - 1));
        size_t head = (size_t)(start - p);
        size_t tail = extra - head;
        if (head) {
            munmap(p, head);
        }
        if (tail) {
            munmap(start + len, tail);
        }
    }
    *huge_ok = 0;
#ifdef MADV_HUGEPAGE
    if (hugepages) {
        /* Advice: EINVAL where THP is compiled out; the memory is good. */
        *huge_ok = madvise(start, len, MADV_HUGEPAGE) == 0;
    }
#endif
    *out = start;
    return 0;
}

/* ================================================================== */
/* Construction */

static PyObject *
buffer_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *keywords[] = {"nbytes", "align", "hugepages", "zero",
                               "populate", NULL};
    PyObject *nbytes_obj;
    PyObject *align_obj = NULL;
    int hugepages = 0;
    int zero = 0;
    int populate = 0;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|$Oppp:Buffer", keywords,
                                     &nbytes_obj, &align_obj, &hugepages, &zero,
                                     &populate)) {
        return NULL;
    }
    /* Integers only (floats refused with the argument named); within
     * Py_ssize_t the checks below say what is wrong with the value
     * (negative, or too large) in their words. */
    long long nbytes_ll, align_ll = 4096;
    if (fastio_int_arg(nbytes_obj, "nbytes", PY_SSIZE_T_MIN, PY_SSIZE_T_MAX,
                       &nbytes_ll) < 0 ||
        (align_obj != NULL &&
         fastio_int_arg(align_obj, "align", PY_SSIZE_T_MIN, PY_SSIZE_T_MAX,
                        &align_ll) < 0)) {
        return NULL;
    }
    Py_ssize_t nbytes = (Py_ssize_t)nbytes_ll, align = (Py_ssize_t)align_ll;
    if (nbytes < 0) {
        PyErr_Format(PyExc_ValueError,
                     "Buffer size must be >= 0, got nbytes=%zd", nbytes);
        return NULL;
    }
    if (align < (Py_ssize_t)sizeof(void *) || (align & (align - 1)) != 0) {
        PyErr_Format(PyExc_ValueError,
                     "alignment must be a power of two >= %zu, got align=%zd",
                     sizeof(void *), align);
        return NULL;
    }
    /* Past this the rounding below could overflow; no machine has it. */
    if (nbytes > PY_SSIZE_T_MAX / 2) {
        PyErr_Format(PyExc_OverflowError, "Buffer too large: nbytes=%zd", nbytes);
        return NULL;
    }
    if (align > PY_SSIZE_T_MAX / 4) {
        PyErr_Format(PyExc_OverflowError, "alignment too large: align=%zd", align);
        return NULL;
    }

    BufferObject *self = (BufferObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->weakreflist = NULL;
    self->nbytes = nbytes;
    self->align = (size_t)align;

    size_t page = (size_t)fastio_pagesize;
    int use_map = nbytes > 0 && (hugepages || (size_t)nbytes >= BUFFER_MMAP_MIN);
    if (use_map) {
        size_t len = ((size_t)nbytes + page - 1) & ~(page - 1);
        size_t map_align = (size_t)align > page ? (size_t)align : page;
        if (hugepages && map_align < BUFFER_HUGE_SIZE && len >= BUFFER_HUGE_SIZE) {
            /* THP backs only whole aligned 2 MiB ranges inside the mapping:
             * start on one so that the first byte is already in one. */
            map_align = BUFFER_HUGE_SIZE;
        }
        void *p = NULL;
        int huge_ok = 0;
        int err;
        Py_BEGIN_ALLOW_THREADS
        err = map_aligned(len, map_align, hugepages, &p, &huge_ok);
        if (err == 0 && populate) {
            /* Fault every page in now, so that later writes cost no page
             * faults: MADV_POPULATE_WRITE, or on an old kernel a zero
             * stored to each page (the memory is ours alone and zero). */
            fastio_fault fault;
            err = fastio_pages_populate_raw(p, len, 1, 1, &fault);
            if (err < 0) {
                munmap(p, len);
            }
        }
        Py_END_ALLOW_THREADS
        if (err < 0) {
            Py_DECREF(self);
            return fastio_oserror(err, populate ? "madvise" : "mmap", NULL);
        }
        self->region.base = p;
        self->region.alloc_size = len;
        self->region.kind = FASTIO_MEM_MMAP;
        self->hugepages = huge_ok;
        /* zero: anonymous pages are zero-filled by the kernel already. */
    }
    else {
        /* posix_memalign wants a multiple of sizeof(void *); a zero-size
         * Buffer still gets a real, aligned address. */
        void *p = NULL;
        size_t want = nbytes > 0 ? (size_t)nbytes : 1;
        int err = posix_memalign(&p, (size_t)align, want);
        if (err != 0) {
            Py_DECREF(self);
            return fastio_oserror(-err, "posix_memalign", NULL);
        }
        if (zero || populate) {
            /* Touching every page also faults it in (populate). */
            if (want >= FASTIO_NOGIL_COPY_THRESHOLD) {
                Py_BEGIN_ALLOW_THREADS
                memset(p, 0, want);
                Py_END_ALLOW_THREADS
            }
            else {
                memset(p, 0, want);
            }
        }
        self->region.base = p;
        self->region.alloc_size = want;
        self->region.kind = FASTIO_MEM_HEAP;
        self->hugepages = 0;
    }
    self->region.data = self->region.base;
    self->region.size = nbytes;
    self->region.readonly = 0;
    self->kind = self->region.kind;
    return (PyObject *)self;
}

/* ================================================================== */
/* Lifetime */

static void
buffer_dealloc(BufferObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    if (self->weakreflist != NULL) {
        PyObject_ClearWeakRefs((PyObject *)self);
    }
    /* Every export holds a reference to us, so none is live here. */
    fastio_region_free(&self->region);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

PyDoc_STRVAR(buffer_close_doc,
"close($self, /)\n--\n\n"
"Close the Buffer. Safe while numpy arrays or memoryviews still use it:\n"
"the Buffer is closed at once (len() and new exports then raise ValueError)\n"
"and the memory is freed when the last of those views is released.\n"
"Idempotent.");

static PyObject *
buffer_close(BufferObject *self, PyObject *Py_UNUSED(ignored))
{
    fastio_region_close(&self->region);
    Py_RETURN_NONE;
}

static PyObject *
buffer_enter(BufferObject *self, PyObject *Py_UNUSED(ignored))
{
    if (fastio_region_check(&self->region, CLOSED_MSG) < 0) {
        return NULL;
    }
    return Py_NewRef(self);
}

static PyObject *
buffer_exit(BufferObject *self, PyObject *Py_UNUSED(args))
{
    return buffer_close(self, NULL);
}

static PyObject *
buffer_repr(BufferObject *self)
{
    const char *kind = self->kind == FASTIO_MEM_MMAP ? "mmap" : "heap";
    if (self->region.closed) {
        return PyUnicode_FromFormat("<fastio.Buffer closed nbytes=%zd kind=%s>",
                                    self->nbytes, kind);
    }
    return PyUnicode_FromFormat(
        "<fastio.Buffer nbytes=%zd align=%zu kind=%s hugepages=%s address=%p>",
        self->nbytes, self->align, kind, self->hugepages ? "True" : "False",
        (void *)self->region.data);
}

/* ================================================================== */
/* Attributes */

static PyObject *
buffer_get_nbytes(BufferObject *self, void *Py_UNUSED(closure))
{
    return PyLong_FromSsize_t(self->nbytes);
}

static PyObject *
buffer_get_align(BufferObject *self, void *Py_UNUSED(closure))
{
    return PyLong_FromSize_t(self->align);
}

static PyObject *
buffer_get_address(BufferObject *self, void *Py_UNUSED(closure))
{
    /* After close the memory may already be freed: no address to give. */
    if (fastio_region_check(&self->region, CLOSED_MSG) < 0) {
        return NULL;
    }
    return PyLong_FromVoidPtr(self->region.data);
}

static PyObject *
buffer_get_kind(BufferObject *self, void *Py_UNUSED(closure))
{
    return PyUnicode_FromString(self->kind == FASTIO_MEM_MMAP ? "mmap" : "heap");
}

static PyObject *
buffer_get_hugepages(BufferObject *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(self->hugepages);
}

static PyObject *
buffer_get_closed(BufferObject *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(self->region.closed);
}

static PyObject *
buffer_get_exports(BufferObject *self, void *Py_UNUSED(closure))
{
    return PyLong_FromSsize_t(self->region.exports);
}

/* ================================================================== */
/* Sequence and buffer protocols */

static Py_ssize_t
buffer_length(BufferObject *self)
{
    if (fastio_region_check(&self->region, CLOSED_MSG) < 0) {
        return -1;
    }
    return self->region.size;
}

static int
buffer_getbuffer(BufferObject *self, Py_buffer *view, int flags)
{
    if (fastio_region_check(&self->region, CLOSED_MSG) < 0) {
        view->obj = NULL;
        return -1;
    }
    return fastio_region_getbuffer((PyObject *)self, &self->region, view, flags);
}

static void
buffer_releasebuffer(BufferObject *self, Py_buffer *view)
{
    fastio_region_releasebuffer(&self->region, view);
}

/* ================================================================== */
/* Type */

/* Run inside a critical section on self (fastio.h, docs/freethreading.md). */
FASTIO_LOCKED_O(buffer_close)
FASTIO_LOCKED_O(buffer_enter)
FASTIO_LOCKED_O(buffer_exit)

static PyMethodDef buffer_methods[] = {
    {"close", (PyCFunction)buffer_close_locked, METH_NOARGS, buffer_close_doc},
    {"__enter__", (PyCFunction)buffer_enter_locked, METH_NOARGS, NULL},
    {"__exit__", (PyCFunction)buffer_exit_locked, METH_VARARGS, NULL},
    {NULL, NULL, 0, NULL},
};

/* Run inside a critical section on self (fastio.h, docs/freethreading.md). */
FASTIO_LOCKED_GET(buffer_get_nbytes)
FASTIO_LOCKED_GET(buffer_get_align)
FASTIO_LOCKED_GET(buffer_get_address)
FASTIO_LOCKED_GET(buffer_get_kind)
FASTIO_LOCKED_GET(buffer_get_hugepages)
FASTIO_LOCKED_GET(buffer_get_closed)
FASTIO_LOCKED_GET(buffer_get_exports)

static PyGetSetDef buffer_getset[] = {
    {"nbytes", (getter)buffer_get_nbytes_locked, NULL, "Size in bytes.", NULL},
    {"align", (getter)buffer_get_align_locked, NULL,
     "The alignment address is guaranteed to have.", NULL},
    {"address", (getter)buffer_get_address_locked, NULL,
     "Address of byte 0 as an int (ValueError once closed).", NULL},
    {"kind", (getter)buffer_get_kind_locked, NULL,
     "'heap' (posix_memalign) or 'mmap' (private anonymous mapping).", NULL},
    {"hugepages", (getter)buffer_get_hugepages_locked, NULL,
     "True when the kernel accepted MADV_HUGEPAGE for the memory (advice:\n"
     "whether huge pages back it is up to the kernel).", NULL},
    {"closed", (getter)buffer_get_closed_locked, NULL, "True once close() was called.", NULL},
    {"exports", (getter)buffer_get_exports_locked, NULL,
     "Number of live buffer exports (memoryviews, numpy arrays).", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef buffer_members[] = {
    {"__weaklistoffset__", T_PYSSIZET, offsetof(BufferObject, weakreflist), READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

PyDoc_STRVAR(buffer_doc,
"Buffer(nbytes, *, align=4096, hugepages=False, zero=False, populate=False)\n--\n\n"
"nbytes of writable memory whose address is a multiple of align (a power\n"
"of two >= pointer size), exported through the buffer protocol.\n"
"Blocks below 2 MiB come from posix_memalign (kind 'heap'); larger ones,\n"
"and any block with hugepages=True, from a private anonymous mapping\n"
"(kind 'mmap') advised MADV_HUGEPAGE when hugepages is true.\n"
"Mapped memory is always zero (the kernel zero-fills it); heap memory is\n"
"zeroed only with zero=True. populate faults every page in now with the\n"
"GIL released, so that later first writes cost no page faults.");

/* Slots inside a critical section on self (fastio.h). */
FASTIO_LOCKED_SELF(buffer_repr)
FASTIO_LOCKED_LEN(buffer_length)
FASTIO_LOCKED_GETBUFFER(buffer_getbuffer)
FASTIO_LOCKED_RELEASEBUFFER(buffer_releasebuffer)

static PyType_Slot buffer_slots[] = {
    {Py_tp_doc, (void *)buffer_doc},
    {Py_tp_new, buffer_new},
    {Py_tp_dealloc, buffer_dealloc},
    {Py_tp_repr, buffer_repr_locked},
    {Py_tp_methods, buffer_methods},
    {Py_tp_getset, buffer_getset},
    {Py_tp_members, buffer_members},
    {Py_sq_length, buffer_length_locked},
    {Py_mp_length, buffer_length_locked},
    {Py_bf_getbuffer, buffer_getbuffer_locked},
    {Py_bf_releasebuffer, buffer_releasebuffer_locked},
    {0, NULL},
};

PyType_Spec fastio_buffer_spec = {
    .name = "fastio._core.Buffer",
    .basicsize = sizeof(BufferObject),
    .flags = Py_TPFLAGS_DEFAULT,
    .slots = buffer_slots,
};

/* ================================================================== */
/* heap_info: what glibc's malloc says about the heap. Read-only: fastio
 * never moves the program break itself, because glibc's malloc owns it. */

PyDoc_STRVAR(heap_info_doc,
"_heap_info($module, /)\n--\n\n"
"glibc's mallinfo2() figures and the program break (sbrk(0)) as a dict.\n"
"Use fastio.heap_info(), which adds the mmap threshold.");

/* glibc's struct mallinfo2 (2.33+), under a name of our own: headers older
 * than 2.33 do not declare it, and newer ones must not clash with ours. */
struct fastio_mallinfo2 {
    size_t arena, ordblks, smblks, hblks, hblkhd;
    size_t usmblks, fsmblks, uordblks, fordblks, keepcost;
};

static PyObject *
heap_info(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(ignored))
{
    /* mallinfo2 is looked up at run time, not tested for at compile time:
     * a wheel is built against an old glibc (2.28, manylinux_2_28) and runs
     * on newer ones, where heap_info must work. */
    struct fastio_mallinfo2 (*get)(void);
    *(void **)&get = dlsym(RTLD_DEFAULT, "mallinfo2");
    if (get == NULL) {
        PyErr_SetString(PyExc_NotImplementedError,
                        "heap_info needs glibc 2.33 or later (mallinfo2): "
                        "this C library has no mallinfo2");
        return NULL;
    }
    /* sbrk(0) only reads the break; it never moves it. */
    void *brk = sbrk(0);
    struct fastio_mallinfo2 mi = get();
    return Py_BuildValue(
        "{s:n,s:n,s:n,s:n,s:n,s:n,s:n,s:N}",
        "arena", (Py_ssize_t)mi.arena,       /* bytes from sbrk (main arena) */
        "ordblks", (Py_ssize_t)mi.ordblks,   /* free chunks */
        "hblks", (Py_ssize_t)mi.hblks,       /* chunks malloc mmapped */
        "hblkhd", (Py_ssize_t)mi.hblkhd,     /* bytes in those */
        "uordblks", (Py_ssize_t)mi.uordblks, /* bytes in use */
        "fordblks", (Py_ssize_t)mi.fordblks, /* bytes free */
        "keepcost", (Py_ssize_t)mi.keepcost, /* releasable at the top */
        "brk", PyLong_FromVoidPtr(brk));
}

PyMethodDef fastio_memory_methods[] = {
    {"_heap_info", (PyCFunction)heap_info, METH_NOARGS, heap_info_doc},
    {NULL, NULL, 0, NULL},
};
