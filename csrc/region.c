/* region.c: the one buffer exporter.
 *
 * Every fastio object that hands out memory (mmap, Buffer, shared-memory
 * segments) embeds a fastio_region and forwards bf_getbuffer and
 * bf_releasebuffer here. The region counts exports and pins, so that:
 *   - close() can return at once while numpy arrays still use the memory:
 *     the memory is freed by the release of the last export;
 *   - a copy running with the GIL released keeps the memory mapped even if
 *     another thread closes the object meanwhile.
 * All functions here are called with the GIL held; the munmap of close()
 * and of the last unpin runs without it (free_if_unused says why not the
 * others).
 */
#include "fastio.h"

#include <stdlib.h>
#include <sys/mman.h>
#include <sys/shm.h>

long fastio_pagesize = 4096;

/* ------------------------------------------------------------------ */
/* Freeing */

/* Unmap (or detach, or free) the memory. With the GIL released only when
 * nogil: see free_if_unused for who may. */
static void
region_free(fastio_region *r, int nogil)
{
    char *base = r->base;
    size_t len = r->alloc_size;
    fastio_mem_kind kind = r->kind;

    /* Forget the memory before releasing the GIL: no other thread can
     * see a pointer that is being unmapped. */
    r->base = NULL;
    r->data = NULL;
    r->alloc_size = 0;
    r->size = 0;
    r->kind = FASTIO_MEM_NONE;

    if (base == NULL) {
        return;
    }
    PyThreadState *ts = nogil ? PyEval_SaveThread() : NULL;
    if (kind == FASTIO_MEM_MMAP) {
        munmap(base, len);
    }
    else if (kind == FASTIO_MEM_SHMAT) {
        /* System V: the attach is undone by shmdt, not munmap. */
        shmdt(base);
    }
    else if (kind == FASTIO_MEM_HEAP) {
        free(base);
    }
    if (ts != NULL) {
        PyEval_RestoreThread(ts);
    }
}

void
fastio_region_free(fastio_region *r)
{
    /* tp_dealloc: with the GIL held (see free_if_unused). */
    region_free(r, 0);
}

/* Free the memory if the owner is closed and nothing uses it any more.
 *
 * Where the GIL is released for the munmap (which can take milliseconds for
 * a large dirty shared mapping): only in close() and at the unpin that ends
 * one of our own methods, where fastio's code is the caller. Not in
 * bf_releasebuffer nor tp_dealloc (fastio_region_free): those run inside
 * someone else's PyBuffer_Release or Py_DECREF, and C code may well release
 * a buffer while holding a lock of its own; releasing the GIL there would
 * let another thread take the GIL and then wait for that lock, while the
 * releasing thread waits for the GIL: a deadlock. (CPython's mmap releases
 * the GIL in dealloc; it has no deferred unmap in bf_releasebuffer.) The
 * price is the munmap's time with the GIL held, once, at the last release. */
static void
free_if_unused(fastio_region *r, int nogil)
{
    if (r->closed && r->exports == 0 && r->pins == 0) {
        region_free(r, nogil);
    }
}

void
fastio_region_close(fastio_region *r)
{
    r->closed = 1;
    free_if_unused(r, 1);
}

void
fastio_region_unpin(fastio_region *r)
{
    assert(r->pins > 0);
    r->pins--;
    free_if_unused(r, 1);
}

int
fastio_region_check(fastio_region *r, const char *msg)
{
    if (r->closed) {
        PyErr_SetString(PyExc_ValueError, msg);
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* The buffer protocol */

int
fastio_region_getbuffer(PyObject *owner, fastio_region *r, Py_buffer *view,
                        int flags)
{
    if (r->closed) {
        PyErr_SetString(PyExc_ValueError, "cannot export a closed object's memory");
        view->obj = NULL;
        return -1;
    }
    /* A zero-length region may have no memory at all: export a valid
     * non-NULL pointer anyway, as bytes() does for b"". */
    static char empty[1];
    void *buf = r->data != NULL ? (void *)r->data : (void *)empty;
    if (PyBuffer_FillInfo(view, owner, buf, r->size, r->readonly, flags) < 0) {
        return -1;
    }
    r->exports++;
    return 0;
}

void
fastio_region_releasebuffer(fastio_region *r, Py_buffer *view)
{
    assert(r->exports > 0);
    r->exports--;
    free_if_unused(r, 0);
}

/* ------------------------------------------------------------------ */
/* Allocation and copying helpers */

int
fastio_map_anonymous(size_t size, int shared, int hugepages, void **out)
{
    int flags = MAP_ANONYMOUS | (shared ? MAP_SHARED : MAP_PRIVATE);
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, flags, -1, 0);
    if (p == MAP_FAILED) {
        return -errno;
    }
#ifdef MADV_HUGEPAGE
    if (hugepages) {
        /* Advice only: a kernel without THP for this mapping type says
         * EINVAL, and the memory is still good. */
        (void)madvise(p, size, MADV_HUGEPAGE);
    }
#endif
    *out = p;
    return 0;
}

void
fastio_memcpy(void *dst, const void *src, size_t n)
{
    /* The caller holds the GIL and has pinned the region(s) involved. */
    if (n >= FASTIO_NOGIL_COPY_THRESHOLD) {
        Py_BEGIN_ALLOW_THREADS
        memcpy(dst, src, n);
        Py_END_ALLOW_THREADS
    }
    else if (n) {
        memcpy(dst, src, n);
    }
}

int
fastio_memcpy_guarded(void *dst, const void *src, size_t n, fastio_fault *fault)
{
    /* fastio_memcpy under the SIGBUS guard (sigbus.c): the jump lands
     * inside fastio_guarded_memmove, never across the GIL macros. */
    int rc = 0;
    if (n >= FASTIO_NOGIL_COPY_THRESHOLD) {
        Py_BEGIN_ALLOW_THREADS
        rc = fastio_guarded_memmove(dst, src, n, fault);
        Py_END_ALLOW_THREADS
    }
    else if (n) {
        rc = fastio_guarded_memmove(dst, src, n, fault);
    }
    return rc;
}
