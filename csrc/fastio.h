/* fastio.h: the one private header of fastio._core.
 *
 * Every .c file includes it first. It holds the module state, the type specs
 * and method tables each file contributes, the region (the one buffer
 * exporter) and the error helpers. Non-static symbols start with fastio_.
 */
#ifndef FASTIO_H
#define FASTIO_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <errno.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

/* ------------------------------------------------------------------ */
/* Free threading (docs/freethreading.md).
 *
 * On a free-threaded build (Py_GIL_DISABLED, 3.13t and later) no GIL makes
 * an object's methods atomic with respect to each other. fastio keeps the
 * GIL's model per object instead, as CPython's own types do: every method,
 * getter and slot that reads or changes an object's state runs inside a
 * critical section on that object (Py_BEGIN_CRITICAL_SECTION, 3.13+). Like
 * the GIL, the section is released whenever the thread detaches
 * (Py_BEGIN_ALLOW_THREADS, a blocking lock) and taken again on return, so
 * the code's existing rules for "the GIL released" (the busy markers, the
 * region pins, detach before Python code) are what make those windows
 * safe, unchanged. On a default build the macros are no-ops (CPython's own
 * on 3.13+, ours below before 3.13), so the default build pays nothing. */
#ifndef Py_BEGIN_CRITICAL_SECTION
#define Py_BEGIN_CRITICAL_SECTION(op) {
#define Py_END_CRITICAL_SECTION() }
#define Py_BEGIN_CRITICAL_SECTION2(a, b) {
#define Py_END_CRITICAL_SECTION2() }
#endif

/* A field that is read or written outside any critical section of its
 * object (a counter another object's code may touch): atomic on a
 * free-threaded build, plain under the GIL. */
#ifdef Py_GIL_DISABLED
#define FASTIO_ATOMIC _Atomic
#else
#define FASTIO_ATOMIC
#endif

/* Wrappers that run a method (or slot) `f` inside a critical section on
 * self: FASTIO_LOCKED_x(f) defines f_locked, which the method table names
 * instead of f. f keeps its own signature (self may be the object's own
 * struct pointer). One per calling convention:
 *   _O: METH_NOARGS, METH_O, METH_VARARGS, getters (closure passed as the
 *       second argument), mp_subscript, tp_iternext via _SELF;
 *   _KW: METH_VARARGS | METH_KEYWORDS;  _FAST: METH_FASTCALL;
 *   _FASTKW: METH_FASTCALL | METH_KEYWORDS;  _GET: getters. */
#define FASTIO_LOCKED_BODY(rtype, call)                                       \
    {                                                                         \
        rtype res_;                                                           \
        Py_BEGIN_CRITICAL_SECTION(self);                                      \
        res_ = call;                                                          \
        Py_END_CRITICAL_SECTION();                                            \
        return res_;                                                          \
    }
#define FASTIO_LOCKED_O(f)                                                    \
    static PyObject *f##_locked(PyObject *self, PyObject *a)                  \
        FASTIO_LOCKED_BODY(PyObject *, f((void *)self, a))
#define FASTIO_LOCKED_KW(f)                                                   \
    static PyObject *f##_locked(PyObject *self, PyObject *a, PyObject *k)     \
        FASTIO_LOCKED_BODY(PyObject *, f((void *)self, a, k))
#define FASTIO_LOCKED_FAST(f)                                                 \
    static PyObject *f##_locked(PyObject *self, PyObject *const *a,           \
                                Py_ssize_t n)                                 \
        FASTIO_LOCKED_BODY(PyObject *, f((void *)self, a, n))
#define FASTIO_LOCKED_FASTKW(f)                                               \
    static PyObject *f##_locked(PyObject *self, PyObject *const *a,           \
                                Py_ssize_t n, PyObject *k)                    \
        FASTIO_LOCKED_BODY(PyObject *, f((void *)self, a, n, k))
#define FASTIO_LOCKED_GET(f)                                                  \
    static PyObject *f##_locked(PyObject *self, void *c)                      \
        FASTIO_LOCKED_BODY(PyObject *, f((void *)self, c))
#define FASTIO_LOCKED_SELF(f)                                                 \
    static PyObject *f##_locked(PyObject *self)                               \
        FASTIO_LOCKED_BODY(PyObject *, f((void *)self))
#define FASTIO_LOCKED_LEN(f)                                                  \
    static Py_ssize_t f##_locked(PyObject *self)                              \
        FASTIO_LOCKED_BODY(Py_ssize_t, f((void *)self))
#define FASTIO_LOCKED_ITEM(f)                                                 \
    static PyObject *f##_locked(PyObject *self, Py_ssize_t i)                 \
        FASTIO_LOCKED_BODY(PyObject *, f((void *)self, i))
#define FASTIO_LOCKED_ASSITEM(f)                                              \
    static int f##_locked(PyObject *self, Py_ssize_t i, PyObject *v)          \
        FASTIO_LOCKED_BODY(int, f((void *)self, i, v))
#define FASTIO_LOCKED_ASSSUB(f)                                               \
    static int f##_locked(PyObject *self, PyObject *k, PyObject *v)           \
        FASTIO_LOCKED_BODY(int, f((void *)self, k, v))
#define FASTIO_LOCKED_CONTAINS(f)                                             \
    static int f##_locked(PyObject *self, PyObject *v)                        \
        FASTIO_LOCKED_BODY(int, f((void *)self, v))
/* bf_getbuffer / bf_releasebuffer: the exporter is locked, since another
 * thread's PyBuffer_Release (a memoryview or numpy array going away) moves
 * the export counter that close() and resize() read. */
#define FASTIO_LOCKED_GETBUFFER(f)                                            \
    static int f##_locked(PyObject *self, Py_buffer *v, int fl)               \
        FASTIO_LOCKED_BODY(int, f((void *)self, v, fl))
#define FASTIO_LOCKED_RELEASEBUFFER(f)                                        \
    static void f##_locked(PyObject *self, Py_buffer *v)                      \
    {                                                                         \
        Py_BEGIN_CRITICAL_SECTION(self);                                      \
        f((void *)self, v);                                                   \
        Py_END_CRITICAL_SECTION();                                            \
    }

/* ------------------------------------------------------------------ */
/* Module state (multi-phase init, PEP 489): heap types and exceptions. */

/* Every field is an owned object reference (a type or an exception):
 * module.c's traverse and clear walk the struct as an array of PyObject *,
 * so a new field needs no other change. Keep it that way. */
typedef struct {
    PyObject *FastIOError;      /* base of the library's own exceptions */
    PyTypeObject *mmap_type;    /* fastio._core.mmap (mmap.c) */
    PyTypeObject *mmap_iter_type;  /* its iterator (mmap.c), not exported */
    PyTypeObject *buffer_type;  /* fastio._core.Buffer (buffer.c) */
    /* shm_posix.c */
    PyTypeObject *shm_type;
    /* shm_sysv.c */
    PyTypeObject *sysv_type;
    /* sync.c */
    PyTypeObject *lock_type;
    PyTypeObject *semaphore_type;
    PyObject *OwnerDeadError;   /* (FastIOError, RuntimeError) */
    /* channel.c */
    PyTypeObject *channel_type;
    /* queue.c and the aio backends */
    PyTypeObject *queue_type;
    PyObject *BackendUnavailable;
    /* sigbus.c */
    PyObject *MappingError;
} fastio_state;

fastio_state *fastio_get_state(PyObject *module);
/* The state reached from an instance of one of our heap types (works for
 * Python subclasses too: walks the MRO to the defining class). */
fastio_state *fastio_state_from_type(PyTypeObject *tp);

/* Each file contributes a spec or a method table; module.c registers them. */
extern PyType_Spec fastio_mmap_spec;     /* mmap.c */
extern PyType_Spec fastio_mmap_iter_spec;  /* mmap.c */
extern PyType_Spec fastio_buffer_spec;   /* buffer.c */
extern PyMethodDef fastio_rw_methods[];      /* rw.c: pread, pwrite, ... */
extern PyMethodDef fastio_memory_methods[];  /* buffer.c: heap_info, ... */
extern PyMethodDef fastio_transfer_methods[];  /* transfer.c: sendfile, ... */
extern PyMethodDef fastio_readfiles_methods[];  /* readfiles.c: _read_files */

/* Files with several types or exceptions add them in an exec hook, called
 * by module.c's exec in this order. Each returns 0 or -1 with an exception. */
int fastio_shm_exec(PyObject *module, fastio_state *st);      /* shm_posix.c */
int fastio_sysv_exec(PyObject *module, fastio_state *st);     /* shm_sysv.c */
int fastio_sync_exec(PyObject *module, fastio_state *st);     /* sync.c */
int fastio_channel_exec(PyObject *module, fastio_state *st);  /* channel.c */
int fastio_aio_exec(PyObject *module, fastio_state *st);      /* queue.c */
int fastio_sigbus_exec(PyObject *module, fastio_state *st);   /* sigbus.c */
int fastio_lab_exec(PyObject *module, fastio_state *st);      /* lab.c */
/* PyType_FromModuleAndSpec + PyModule_AddType, storing the type in *slot. */
int fastio_add_type(PyObject *module, PyType_Spec *spec, PyObject *bases,
                    PyTypeObject **slot);

/* ------------------------------------------------------------------ */
/* One positional read or write with RWF_* flags (rw.c's block reader,
 * aio_threads.c): pread/pwrite when flags is 0 (every kernel), else
 * preadv2/pwritev2 of one iovec. The uapi header here may predate the
 * flags; the values are the kernel ABI (linux/fs.h). Returns the byte
 * count or -1 with errno set, as the system calls do. */
#ifndef RWF_NOWAIT
#define RWF_NOWAIT 0x00000008
#endif
#ifndef RWF_DONTCACHE
#define RWF_DONTCACHE 0x00000080  /* Linux 6.14 */
#endif
ssize_t fastio_prw(int writing, int fd, void *buf, size_t len, int64_t offset,
                   unsigned flags);

/* ------------------------------------------------------------------ */
/* mapcopy.c: _pread_blocks' copies out of a read-only shared map of the
 * file made for one call (why, when and the safety rules: mapcopy.c). */
typedef struct {
    char *map;     /* NULL: not mapped (every block is pread) */
    size_t len;
    int64_t lo;    /* the file offset of map[0] (page-aligned) */
    int64_t hi;    /* the map's end offset, at most the file size at map time */
    int nt;        /* copy with non-temporal stores */
} fastio_mapcopy;
/* Map the span of the n blocks of size bytes at offsets that lie inside
 * fd's file, when fd is a plain regular file of a disk filesystem; m->map
 * stays NULL when not (nothing to report: the caller preads). No GIL
 * needed. Undo with fastio_mapcopy_close on every path. */
int fastio_mapcopy_open(int fd, const int64_t *offsets, size_t n, size_t size,
                        fastio_mapcopy *m);
void fastio_mapcopy_close(fastio_mapcopy *m);
/* Whether fd's file is on a filesystem whose statfs f_type is one of
 * magics[0..n) (rw.c's and mapcopy.c's allowlists): 1 or 0. */
int fastio_fs_is_one_of(int fd, const unsigned long *magics, size_t n);
/* A thread unblocks SIGBUS (only) around its copies (par_run's workers
 * start with every signal blocked); *old is its mask to restore. */
void fastio_mapcopy_enter(sigset_t *old);
void fastio_mapcopy_leave(const sigset_t *old);
/* Copy blocks i, i+1, ... < last into base + i * size under the SIGBUS
 * guard, results[i] = size each, while they lie inside the map; returns
 * the first block not copied (last, one past the map, or the block whose
 * copy faulted: then *use_map is set to 0, the map is not to be used
 * again by this thread). */
size_t fastio_mapcopy_blocks(const fastio_mapcopy *m, char *base, size_t size,
                             const int64_t *offsets, int64_t *results, size_t i,
                             size_t last, int *use_map);

/* ------------------------------------------------------------------ */
/* errors.c: the only place an OSError is built from an errno.
 *
 * Syscall helpers return -errno and touch nothing else; the Python-facing
 * caller passes that value here. The exception is the right OSError
 * subclass (FileNotFoundError, PermissionError, ...) and its message names
 * the system call: "[Errno 22] Invalid argument (mmap)". Returns NULL. */
PyObject *fastio_oserror(int neg_errno, const char *syscall, PyObject *filename);
/* The same exception, returned (a new reference) instead of raised: for
 * errors collected per item (read_files' missing='skip'). NULL with an
 * exception set only when building it failed. `syscall` may be any short
 * detail ("openat; file 3"). */
PyObject *fastio_oserror_new(int neg_errno, const char *syscall, PyObject *filename);
/* Raise cls (fastio.BackendUnavailable, an OSError subclass) with errno
 * -neg_errno and msg (a new reference, consumed; NULL: an error is set
 * already). Returns NULL. */
PyObject *fastio_backend_unavailable(PyObject *cls, int neg_errno, PyObject *msg);
/* The same with errno as it stands (for calls made with the GIL held). */
PyObject *fastio_oserror_errno(const char *syscall, PyObject *filename);
/* Convert an integer argument (its __index__; floats refused with
 * TypeError) into [lo, hi], else an error naming `name` and the value:
 * OverflowError when the value does not fit the argument's C type (the
 * narrowest of int32, uint32, int64 holding [lo, hi]), ValueError when it
 * fits but lies outside [lo, hi].
 * 0, or -1 with the exception set. It can run Python code (__index__):
 * re-check any state afterwards. */
int fastio_int_arg(PyObject *obj, const char *name, long long lo, long long hi,
                   long long *out);
/* A file descriptor argument: an int in [0, INT_MAX] (ValueError naming
 * `name` otherwise) or an object with fileno(). 0, or -1 with the
 * exception set. It can run Python code (fileno()). */
int fastio_fd_arg(PyObject *obj, const char *name, int *fd);

/* ------------------------------------------------------------------ */
/* region.c: memory that fastio exports through the buffer protocol.
 *
 * A region is embedded in each exporting object (mmap, Buffer, later the
 * shared-memory types). It counts its buffer exports and the operations in
 * progress with the GIL released ("pins"). close() releases the object's
 * handle at once; the memory itself is freed only when exports and pins
 * are both zero, so a numpy array or memoryview over it never dangles and
 * a thread copying out of it with the GIL released never faults because
 * another thread closed it. */

typedef enum {
    FASTIO_MEM_NONE = 0,   /* nothing owned (closed, or length 0) */
    FASTIO_MEM_MMAP,       /* munmap(base, alloc_size) */
    FASTIO_MEM_HEAP,       /* free(base) (posix_memalign) */
    FASTIO_MEM_SHMAT,      /* shmdt(base) (System V, shm_sysv.c) */
} fastio_mem_kind;

typedef struct {
    char *base;             /* what munmap/free takes */
    size_t alloc_size;      /* what munmap takes (page-rounded mapping length) */
    char *data;             /* the user's byte 0: base + the in-page delta */
    Py_ssize_t size;        /* the user-visible length in bytes */
    fastio_mem_kind kind;
    int readonly;           /* exports are read-only */
    /* closed, exports and pins decide when the memory is freed: they are
     * changed inside the owner's critical section (every method and
     * buffer slot of the owner holds it), and atomic on a free-threaded
     * build besides, for the readers that do not lock (a getter of another
     * object, a test's peek). */
    FASTIO_ATOMIC int closed;             /* the owner was closed: no new use */
    FASTIO_ATOMIC Py_ssize_t exports;     /* live Py_buffer exports */
    FASTIO_ATOMIC Py_ssize_t pins;        /* operations in progress with the GIL released */
} fastio_region;

/* Fill view over [data, data+size). Counts the export. */
int fastio_region_getbuffer(PyObject *owner, fastio_region *r, Py_buffer *view,
                            int flags);
/* bf_releasebuffer: uncount, and free the memory if closed and now unused. */
void fastio_region_releasebuffer(fastio_region *r, Py_buffer *view);
/* Mark closed; free now if nothing uses the memory, else when the last export
 * or pin goes. Idempotent. The munmap of close() and of the last unpin runs
 * with the GIL released; that of bf_releasebuffer and dealloc with it held
 * (region.c's free_if_unused says why). */
void fastio_region_close(fastio_region *r);
/* Free the memory now, unconditionally (for dealloc, where exports are
 * necessarily 0 because each export holds a reference to the owner). */
void fastio_region_free(fastio_region *r);
/* Raise ValueError(msg) and return -1 if closed. */
int fastio_region_check(fastio_region *r, const char *msg);
/* Hold the memory across a GIL-released operation (call with the GIL). */
static inline void fastio_region_pin(fastio_region *r) { r->pins++; }
/* Release a pin (call with the GIL); frees deferred memory if last. */
void fastio_region_unpin(fastio_region *r);

/* Allocate page-aligned memory as an anonymous mapping (private or shared),
 * with MADV_HUGEPAGE when asked. Returns 0 or -errno. */
int fastio_map_anonymous(size_t size, int shared, int hugepages, void **out);

/* Copy with the GIL released when large (threshold in region.c). Not
 * guarded: only for memory that cannot fault (heap, private anonymous);
 * anything mapped from a file or shared uses fastio_memcpy_guarded. */
void fastio_memcpy(void *dst, const void *src, size_t n);
#define FASTIO_NOGIL_COPY_THRESHOLD (1 << 20)

/* ------------------------------------------------------------------ */
/* sigbus.c: a SIGBUS inside fastio's own copies becomes an exception.
 *
 * Touching a mapped page that its file no longer covers (the file was
 * truncated under the map, or a sparse file's filesystem could not allocate
 * the block) raises SIGBUS, which kills the process. Run every copy, search
 * or load that touches file-backed (or shared) mapped memory through one of
 * the guarded helpers: a SIGBUS inside returns -1 with *fault filled, and
 * the caller, holding the GIL, raises fastio.MappingError with
 * fastio_mapping_error(). A SIGBUS anywhere else goes to the handler
 * installed before fastio's (faulthandler, a sanitizer, or the default).
 *
 * The helpers touch no Python object: call them with the GIL or inside a
 * Py_BEGIN/END_ALLOW_THREADS block (the jump lands inside the helper, never
 * across the GIL macros; report the error after re-acquiring the GIL).
 * They nest, are per thread, and cost a sigsetjmp without the signal mask
 * (no system call). Usage:
 *
 *     fastio_fault fault;
 *     int rc;
 *     Py_BEGIN_ALLOW_THREADS
 *     rc = fastio_guarded_memmove(dst, map + off, n, &fault);
 *     Py_END_ALLOW_THREADS
 *     if (rc < 0)
 *         return fastio_mapping_error(st, &fault, "read", map, map_len,
 *                                     fd, file_offset);
 */
typedef struct {
    const char *addr;   /* the faulting address (si_addr); NULL when another
                           handler re-raised the signal (no address) */
    int code;           /* si_code: BUS_ADRERR, BUS_MCEERR_AR, ... */
} fastio_fault;

/* memmove / memchr / memmem under the guard: 0, or -1 with *fault filled
 * (the destination then holds a partial copy; *hit is not set). */
int fastio_guarded_memmove(void *dst, const void *src, size_t n,
                           fastio_fault *fault);
int fastio_guarded_memchr(const void *s, int c, size_t n, const void **hit,
                          fastio_fault *fault);
int fastio_guarded_memmem(const void *hay, size_t hlen, const void *needle,
                          size_t nlen, const void **hit, fastio_fault *fault);
/* fn(arg) under the guard, for anything else (strided loops, reverse
 * search). fn must not take locks, allocate or call Python: the jump
 * abandons it midway. 0, or -1 with *fault filled. */
int fastio_guarded_call(void (*fn)(void *arg), void *arg, fastio_fault *fault);
/* fastio_memcpy (region.c: the GIL released when large) under the guard:
 * 0, or -1 with *fault filled (dst then holds a partial copy). Call with the
 * GIL and the memory pinned; raise with fastio_mapping_error() on -1. */
int fastio_memcpy_guarded(void *dst, const void *src, size_t n, fastio_fault *fault);
/* Whether sigbus.c's handler is the one a SIGBUS reaches now (nothing
 * installed in front of it since): 1 or 0. */
int fastio_sigbus_guard_ready(void);
/* With the GIL: raise fastio.MappingError (OSError, errno EFAULT when the
 * page is past the file's end, else EIO) for a fault during `op` on the
 * mapped bytes [data, data+size), which are the bytes [file_offset,
 * file_offset+size) of the file open as fd (-1: anonymous or unknown; fstat
 * tells the file's current size for the message). st may be NULL (then a
 * plain OSError). Returns NULL. */
PyObject *fastio_mapping_error(fastio_state *st, const fastio_fault *fault,
                               const char *op, const char *data,
                               Py_ssize_t size, int fd, long long file_offset);

/* ------------------------------------------------------------------ */
/* pages.c: operations on a range of pages of a region, written once for
 * every maker of regions (mmap, POSIX shm and memfd, System V, Buffer):
 * the argument checks, the page rounding, the pin across the GIL release,
 * the SIGBUS guard around every load and store, and the errors. A type's
 * method builds a fastio_pages for its region and calls the body here. */
typedef struct {
    PyObject *owner;          /* the object whose method runs (its type
                                 finds the module state for MappingError) */
    fastio_region *r;
    const char *closed_msg;   /* the ValueError message once closed */
    const int *fd;            /* the file behind the memory, read when an
                                 error is raised (fstat says whether the file
                                 shrank); NULL when there is none */
    long long file_offset;    /* the file offset of r->data */
} fastio_pages;

/* advise(advice, start=0, length=None): madvise rounded outward, or
 * inward for advice that discards data. */
PyObject *fastio_pages_advise(const fastio_pages *pg, PyObject *args,
                              PyObject *kwds);
/* populate(): MADV_POPULATE_WRITE (writable) or _READ over the region; an
 * old kernel touches each page under the guard. A lost page raises
 * fastio.MappingError. */
PyObject *fastio_pages_populate(const fastio_pages *pg, int writable);
/* fill(value=0, start=0, length=None): memset under the guard, the GIL
 * released when large. TypeError when the region is read-only. */
PyObject *fastio_pages_fill(const fastio_pages *pg, PyObject *args,
                            PyObject *kwds);
/* fill() in two steps, for a type with a faster path of its own: parse and
 * check the arguments (0, or -1 with the exception), then fill the range
 * under the guard. */
int fastio_pages_fill_args(const fastio_pages *pg, PyObject *args,
                           PyObject *kwds, int *value, Py_ssize_t *start,
                           Py_ssize_t *length);
PyObject *fastio_pages_fill_range(const fastio_pages *pg, int value,
                                  Py_ssize_t start, Py_ssize_t length);
/* lock() / unlock(): mlock / munlock of the region's pages, with the
 * RLIMIT_MEMLOCK limit named when it forbids the lock. */
PyObject *fastio_pages_lock(const fastio_pages *pg, int lock);
/* The same without Python (any thread, no GIL needed): 0 or -errno; -EFAULT
 * with *fault filled for a page lost under the guard (fault->code 0 when
 * the kernel said EFAULT itself, from MADV_POPULATE). populate_raw stores
 * zeros when it must touch pages only if may_store (memory of ours alone,
 * known to be zero). */
int fastio_pages_populate_raw(char *addr, size_t len, int writable,
                              int may_store, fastio_fault *fault);
int fastio_pages_fill_raw(char *addr, size_t n, int value, fastio_fault *fault);
/* Probe the kernel once at module exec (MADV_POPULATE_*). */
void fastio_pages_init(void);

/* ------------------------------------------------------------------ */
/* sync.c: an anchor pins the segment that a lock, semaphore or channel
 * lives in.
 *
 * The object holds a writable buffer export of the segment (an mmap, a
 * SharedMemory, ...) for its whole life, so the segment's memory cannot be
 * unmapped under it. Waits run with the GIL released: `busy` counts them,
 * and close() defers the release of the export until the last one ends, so
 * a thread that closes the object never unmaps memory another thread is
 * sleeping on. All fields are touched with the GIL held. */
typedef struct {
    Py_buffer view;
    int has_view;       /* view holds an export */
    int closed;         /* close() was called: no new use */
    Py_ssize_t busy;    /* operations in progress with the GIL released */
} fastio_anchor;

/* Take a writable export of `buffer` and check that [offset, offset+size)
 * lies inside it and starts on a multiple of `align`. *out is the address
 * of byte `offset`. `what` names the object in error messages.
 * Returns 0, or -1 with an exception (nothing held). */
int fastio_anchor_init(fastio_anchor *a, PyObject *buffer, Py_ssize_t offset,
                       Py_ssize_t size, size_t align, const char *what,
                       char **out);
/* PyArg "O&" converter for an `offset` argument: an int (or __index__)
 * that fits a Py_ssize_t, else TypeError / OverflowError naming offset. */
int fastio_offset_converter(PyObject *obj, void *out);
/* Mark closed; release the export now or when the last busy user leaves. */
void fastio_anchor_close(fastio_anchor *a);
static inline void fastio_anchor_enter(fastio_anchor *a) { a->busy++; }

/* *ts = CLOCK_REALTIME now plus ms milliseconds: the deadline of a
 * pthread_cond_timedwait (rw.c's par_run and readfiles.c wake that often
 * to run the Python signal handlers). */
static inline void
fastio_realtime_after_ms(struct timespec *ts, long ms)
{
    clock_gettime(CLOCK_REALTIME, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec += 1;
        ts->tv_nsec -= 1000000000L;
    }
}
void fastio_anchor_leave(fastio_anchor *a);
/* Parse a timeout in seconds: None or inf -> *out = -1 (forever); a
 * number in [0, FASTIO_TIMEOUT_MAX] -> *out = seconds. Negative or NaN ->
 * ValueError, finite past the limit -> OverflowError, a non-number ->
 * TypeError, each naming `argname`. Anything with __float__ or __index__
 * is taken: it can run Python code, so convert before taking any state. */
int fastio_parse_timeout(PyObject *obj, const char *argname, double *out);
/* The same, with FASTIO_TIMEOUT_MINUS_ONE: -1 also means forever (and the
 * messages say so), threading.Lock.acquire's spelling of "no timeout". */
#define FASTIO_TIMEOUT_MINUS_ONE 1
int fastio_parse_timeout_ex(PyObject *obj, const char *argname, int flags, double *out);
/* The longest finite timeout (seconds, about 31 years): its nanoseconds
 * plus CLOCK_MONOTONIC's stay far inside a long long. */
#define FASTIO_TIMEOUT_MAX 1e9

/* Objects living in shared memory (Lock, Semaphore, Channel) begin with a
 * 64-bit tag word: a magic naming the kind (low half) and a state (high
 * half). create=True claims the word with one compare-and-swap, so that
 * creation over a live object (or one being created) is refused with
 * FileExistsError instead of re-initialising memory another process uses;
 * create=False requires TAG(magic, LIVE). */
#define FASTIO_MAGIC_LOCK 0x4b434c46u     /* "FLCK" */
#define FASTIO_MAGIC_SEM 0x4d455346u      /* "FSEM" */
#define FASTIO_MAGIC_CHANNEL 0x4e484346u  /* "FCHN" */
#define FASTIO_STATE_INIT 0x54494e49u     /* "INIT": a creator is at work */
#define FASTIO_STATE_LIVE 0x4556494cu     /* "LIVE" */
#define FASTIO_TAG(magic, state) ((uint64_t)(magic) | ((uint64_t)(state) << 32))
/* create=True: atomically turn the tag at `tag` (the object `what`, `size`
 * bytes at `offset` of its buffer) into TAG(magic, INIT), unless it holds a
 * live or being-created fastio object. `replaceable(ctx)`, if not NULL, is
 * asked (under the SIGBUS guard) whether a live object of the same kind may
 * be made anew (a Lock nobody can ever take again). 0, or -1 with
 * FileExistsError or MappingError. */
int fastio_tag_claim(PyTypeObject *tp, _Atomic uint64_t *tag, uint32_t magic,
                     const char *what, Py_ssize_t offset, Py_ssize_t size,
                     int (*replaceable)(void *ctx), void *ctx);
/* After a successful claim: write `version` at version_p (if not NULL),
 * then publish TAG(magic, LIVE) (release order: the object's fields written
 * before are visible to whoever sees it); or, when `ok` is 0, give the
 * memory back (tag 0). Guarded: 0, or -1 with MappingError. */
int fastio_tag_finish(PyTypeObject *tp, _Atomic uint64_t *tag, uint32_t magic,
                      int ok, Py_ssize_t size, uint32_t *version_p,
                      uint32_t version);
/* create=False: 0 when the tag is TAG(magic, LIVE) and *version_p (read
 * after it, acquire order) is `version`; else -1 with ValueError (or
 * MappingError) naming the offset. */
int fastio_tag_check(PyTypeObject *tp, _Atomic uint64_t *tag,
                     const uint32_t *version_p, uint32_t magic, uint32_t version,
                     const char *what, Py_ssize_t offset, Py_ssize_t size);
/* MappingError for a SIGBUS while touching the `size` bytes of a shared
 * object at `addr` during `op`. Returns NULL. */
PyObject *fastio_shared_fault(PyTypeObject *tp, const fastio_fault *fault,
                              const char *op, const void *addr, Py_ssize_t size);
/* CLOCK_MONOTONIC now, in seconds. */
double fastio_monotonic(void);

/* The system page size, read once at module init. */
extern long fastio_pagesize;

/* Page helpers (pages.c) shared by the mapping types. */
/* madvise(2), EINTR retried: 0 or -errno. */
int fastio_sys_madvise(void *p, size_t len, int advice);
/* prctl(PR_SET_VMA_ANON_NAME): the kernel's name for the anonymous pages
 * [p, p+len) (Linux 5.17+, CONFIG_ANON_VMA_NAME): 0 or -errno. */
int fastio_sys_set_vma_name(void *p, size_t len, const char *name);
/* 1 when the kernel knows MADV_POPULATE_READ/WRITE (5.14+), 0 when not;
 * probed once. */
int fastio_kernel_has_madv_populate(void);
/* 1 for the advice values that throw page contents away (DONTNEED, FREE,
 * REMOVE, DONTNEED_LOCKED): their range is rounded inward. */
int fastio_advice_discards(int advice);
/* The page-rounded range covering [p, p+length): outward (start down, end
 * up), or inward (whole pages inside only) when `inward`, so that no byte
 * outside the caller's range is lost. *len is 0 when no whole page lies
 * inside. */
void fastio_page_range(char *p, size_t length, int inward, char **addr,
                       size_t *len);

#endif /* FASTIO_H */
