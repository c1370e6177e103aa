/* region.c: the one buffer exporter.
 *
 * Every fastio object that hands out memory (mmap, Buffer, shared-memory
 * segments) embeds a fastio_region and forwards bf_getbuffer and
 * bf_releasebuffer here. The region counts exports and pins, so that:
 *   - close() can return at once while numpy arrays still use the memory:
 *     the memory is freed by the release of the last export;
 *   - a copy running with the GIL released keeps the memory mapped even if
 *     another thread closes the object meanwhile.
 * All functions here are called with the GIL held; only the munmap itself
 * runs without it.
 */
#include "fastio.h"

#include <stdlib.h>
#include <sys/mman.h>
#include <sys/shm.h>

long fastio_pagesize = 4096;

/* ------------------------------------------------------------------ */
/* Freeing */

void
fastio_region_free(fastio_region *r)
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

    if (kind == FASTIO_MEM_MMAP && base != NULL) {
        /* munmap of a large dirty shared mapping can take milliseconds. */
        Py_BEGIN_ALLOW_THREADS
        munmap(base, len);
        Py_END_ALLOW_THREADS
    }
    else if (kind == FASTIO_MEM_SHMAT && base != NULL) {
        /* System V: the attach is undone by shmdt, not munmap. */
        Py_BEGIN_ALLOW_THREADS
        shmdt(base);
        Py_END_ALLOW_THREADS
    }
    else if (kind == FASTIO_MEM_HEAP) {
        free(base);
    }
}

static void
region_free_if_unused(fastio_region *r)
{
    if (r->closed && r->exports == 0 && r->pins == 0) {
        fastio_region_free(r);
    }
}

void
fastio_region_close(fastio_region *r)
{
    r->closed = 1;
    region_free_if_unused(r);
}

void
fastio_region_unpin(fastio_region *r)
{
    assert(r->pins > 0);
    r->pins--;
    region_free_if_unused(r);
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
    region_free_if_unused(r);
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
