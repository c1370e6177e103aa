/* lab.c: the I/O lab's timed request loops (fastio.lab, private).
 *
 * The lab measures each request's latency the way fio does: a clock read
 * before and after each request, inside one C loop that runs with the GIL
 * released, so the figure is the request's and not the interpreter's.
 * Each loop writes one int64 nanosecond latency per request into a caller's
 * array; the caller (fastio/lab/results.py) computes percentiles from them.
 */
#include "fastio.h"

#include <string.h>
#include <time.h>
#include <unistd.h>

static inline int64_t
now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* offsets and latencies: contiguous int64 buffers of the same length.
 * The offsets are copied into C memory (*offs, PyMem_Free'd by the caller)
 * and only the copy is validated and used: with the GIL released another
 * thread may write into the caller's array, or the latencies may alias it
 * (issue 12: validated once, re-read later -> out of bounds). The loops
 * write latencies into C memory too (*lats) and copy them out with the GIL
 * held, so aliasing arrays cannot change an offset mid-loop either. */
static int
get_int64_pair(PyObject *offsets, PyObject *latencies, int64_t **offs, int64_t **lats,
               Py_ssize_t *n)
{
    Py_buffer off, lat;
    if (PyObject_GetBuffer(offsets, &off, PyBUF_C_CONTIGUOUS) < 0)
        return -1;
    if (PyObject_GetBuffer(latencies, &lat, PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE) < 0) {
        PyBuffer_Release(&off);
        return -1;
    }
    Py_ssize_t olen = off.len, llen = lat.len;
    PyBuffer_Release(&lat);
    if (olen % 8 != 0 || llen != olen) {
        PyBuffer_Release(&off);
        PyErr_Format(PyExc_ValueError,
                     "offsets and latencies must be int64 arrays of one length, got "
                     "%zd and %zd bytes", olen, llen);
        return -1;
    }
    *n = olen / 8;
    /* +1: a zero-length malloc may return NULL */
    *offs = PyMem_Malloc((size_t)olen + 8);
    *lats = PyMem_Calloc((size_t)*n + 1, sizeof(int64_t));
    if (*offs == NULL || *lats == NULL) {
        PyBuffer_Release(&off);
        PyMem_Free(*offs);
        PyMem_Free(*lats);
        PyErr_NoMemory();
        return -1;
    }
    memcpy(*offs, off.buf, (size_t)olen);
    PyBuffer_Release(&off);
    return 0;
}

/* Copy the loop's latencies (C memory) into the caller's array, asked for
 * again: a __buffer__ may have changed its size since (checked). */
static int
put_latencies(PyObject *latencies, const int64_t *lats, Py_ssize_t n)
{
    Py_buffer lat;
    if (PyObject_GetBuffer(latencies, &lat, PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE) < 0)
        return -1;
    if (lat.len != n * 8) {
        PyErr_Format(PyExc_ValueError, "latencies changed size during the call: %zd bytes, "
                     "expected %zd", lat.len, n * 8);
        PyBuffer_Release(&lat);
        return -1;
    }
    memcpy(lat.buf, lats, (size_t)n * 8);
    PyBuffer_Release(&lat);
    return 0;
}

/* Read bs bytes at each offset into buf, timing each request (short counts
 * continued, EINTR retried). Returns bytes read or -errno; -ENODATA for a
 * request that reaches the end of the file. Runs without the GIL. */
static int64_t
pread_loop(int fd, char *buf, const int64_t *offs, int64_t *lat, Py_ssize_t n,
           size_t bs)
{
    int64_t total = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        int64_t t0 = now_ns();
        size_t done = 0;
        while (done < bs) {
            ssize_t r = pread(fd, buf + done, bs - done, (off_t)(offs[i] + (int64_t)done));
            if (r < 0) {
                if (errno == EINTR)
                    continue;
                return -errno;
            }
            if (r == 0)
                return -ENODATA;
            done += (size_t)r;
        }
        lat[i] = now_ns() - t0;
        total += (int64_t)bs;
    }
    return total;
}

PyDoc_STRVAR(lab_pread_doc,
"_lab_pread(fd, buf, offsets, latencies, /)\n--\n\n"
"Read len(buf) bytes at each of offsets (int64) into buf, one pread per\n"
"request (continued on a short count), storing each request's latency in ns\n"
"into latencies (int64, same length). Returns the bytes read. The GIL is\n"
"released for the whole loop (EINTR is retried without it: the lab's loops\n"
"are short).");

static PyObject *
lab_pread(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4) {
        PyErr_Format(PyExc_TypeError, "_lab_pread() takes 4 arguments (%zd given)", nargs);
        return NULL;
    }
    int fd = PyObject_AsFileDescriptor(args[0]);
    if (fd < 0)
        return NULL;
    int64_t *o, *l;
    Py_ssize_t n;
    /* The arrays first: their conversion can run Python code, the buffer's
     * export (held across the loop) is taken last. */
    if (get_int64_pair(args[2], args[3], &o, &l, &n) < 0)
        return NULL;
    Py_buffer buf;
    if (PyObject_GetBuffer(args[1], &buf, PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE) < 0) {
        PyMem_Free(o);
        PyMem_Free(l);
        return NULL;
    }
    int64_t r = 0;
    char *p = buf.buf;
    size_t bs = (size_t)buf.len;
    /* range-checked on the copy: offs[i] + done must not overflow off_t */
    for (Py_ssize_t i = 0; i < n; i++) {
        if (o[i] < 0 || o[i] > INT64_MAX - (int64_t)bs) {
            PyErr_Format(PyExc_ValueError, "offsets[%zd]=%lld is out of range: must be 0 .. "
                         "%lld for a buffer of %zd bytes", i, (long long)o[i],
                         (long long)(INT64_MAX - (int64_t)bs), buf.len);
            PyBuffer_Release(&buf);
            PyMem_Free(o);
            PyMem_Free(l);
            return NULL;
        }
    }
    if (bs > 0) {
        Py_BEGIN_ALLOW_THREADS
        r = pread_loop(fd, p, o, l, n, bs);
        Py_END_ALLOW_THREADS
    }
    PyBuffer_Release(&buf);
    PyMem_Free(o);
    if (r >= 0 && put_latencies(args[3], l, n) < 0) {
        PyMem_Free(l);
        return NULL;
    }
    PyMem_Free(l);
    if (r == -ENODATA) {
        PyErr_SetString(PyExc_EOFError, "_lab_pread: a request reached the end of the file");
        return NULL;
    }
    if (r < 0)
        return fastio_oserror((int)r, "pread", NULL);
    return PyLong_FromLongLong(r);
}

PyDoc_STRVAR(lab_copy_doc,
"_lab_copy(src, dst, offsets, latencies, /)\n--\n\n"
"Copy len(dst) bytes from src at each of offsets (int64) into dst, one\n"
"memcpy per request, storing each request's latency in ns into latencies.\n"
"With src a file mapping this is fio's mmap engine: a page fault lands in\n"
"the request that touches the page. Returns the bytes copied. The offsets\n"
"are copied into C memory and checked there before the GIL is released; the\n"
"loop reads only that copy (another thread may change the caller's array).");

static PyObject *
lab_copy(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4) {
        PyErr_Format(PyExc_TypeError, "_lab_copy() takes 4 arguments (%zd given)", nargs);
        return NULL;
    }
    int64_t *o, *l;
    Py_ssize_t n;
    if (get_int64_pair(args[2], args[3], &o, &l, &n) < 0)
        return NULL;
    Py_buffer src, dst;
    if (PyObject_GetBuffer(args[0], &src, PyBUF_C_CONTIGUOUS) < 0) {
        PyMem_Free(o);
        PyMem_Free(l);
        return NULL;
    }
    if (PyObject_GetBuffer(args[1], &dst, PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE) < 0) {
        PyBuffer_Release(&src);
        PyMem_Free(o);
        PyMem_Free(l);
        return NULL;
    }
    size_t bs = (size_t)dst.len;
    int bad = 0;
    if (dst.len > src.len) {
        PyErr_Format(PyExc_ValueError, "dst of %zd bytes is larger than src (%zd bytes)",
                     dst.len, src.len);
        bad = 1;
    }
    /* Validated on the C copy, which is all the loop reads. */
    for (Py_ssize_t i = 0; !bad && i < n; i++) {
        if (o[i] < 0 || o[i] > (int64_t)(src.len - dst.len)) {
            PyErr_Format(PyExc_ValueError,
                         "offsets[%zd]=%lld: a block of %zd bytes there leaves the source "
                         "of %zd bytes", i, (long long)o[i], dst.len, src.len);
            bad = 1;
        }
    }
    if (!bad) {
        const char *s = src.buf;
        char *d = dst.buf;
        Py_BEGIN_ALLOW_THREADS
        for (Py_ssize_t i = 0; i < n; i++) {
            int64_t t0 = now_ns();
            /* memmove: src and dst may be views of one buffer */
            memmove(d, s + o[i], bs);
            l[i] = now_ns() - t0;
        }
        Py_END_ALLOW_THREADS
    }
    PyBuffer_Release(&src);
    PyBuffer_Release(&dst);
    PyMem_Free(o);
    if (!bad && put_latencies(args[3], l, n) < 0)
        bad = 1;
    PyMem_Free(l);
    if (bad)
        return NULL;
    return PyLong_FromLongLong((long long)bs * (long long)n);
}

static PyMethodDef lab_functions[] = {
    {"_lab_pread", (PyCFunction)(void (*)(void))lab_pread, METH_FASTCALL, lab_pread_doc},
    {"_lab_copy", (PyCFunction)(void (*)(void))lab_copy, METH_FASTCALL, lab_copy_doc},
    {NULL, NULL, 0, NULL},
};

int
fastio_lab_exec(PyObject *module, fastio_state *st)
{
    return PyModule_AddFunctions(module, lab_functions);
}
