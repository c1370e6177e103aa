/* errors.c: the only place an OSError is built from an errno.
 *
 * PyErr_SetFromErrnoWithFilenameObject picks the OSError subclass from the
 * errno (ENOENT -> FileNotFoundError, EACCES -> PermissionError, ...). We
 * build the same exception but put the system call's name in the message,
 * as psutil does, so "[Errno 22] Invalid argument (madvise)" says which call
 * the kernel refused.
 */
#include "fastio.h"

#include <limits.h>
#include <string.h>

PyObject *
fastio_oserror(int neg_errno, const char *syscall, PyObject *filename)
{
    PyObject *exc = fastio_oserror_new(neg_errno, syscall, filename);
    if (exc == NULL) {
        return NULL;
    }
    PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
    Py_DECREF(exc);
    return NULL;
}

PyObject *
fastio_oserror_new(int neg_errno, const char *syscall, PyObject *filename)
{
    int err = neg_errno < 0 ? -neg_errno : neg_errno;
    if (err == 0) {
        err = EIO;  /* a helper that failed without saying why: never 0 */
    }
    PyObject *msg;
    if (syscall != NULL) {
        msg = PyUnicode_FromFormat("%s (%s)", strerror(err), syscall);
    }
    else {
        msg = PyUnicode_FromString(strerror(err));
    }
    if (msg == NULL) {
        return NULL;
    }
    PyObject *args;
    if (filename != NULL && filename != Py_None) {
        args = Py_BuildValue("(iOO)", err, msg, filename);
    }
    else {
        args = Py_BuildValue("(iO)", err, msg);
    }
    Py_DECREF(msg);
    if (args == NULL) {
        return NULL;
    }
    /* OSError.__new__ maps errno to the subclass. */
    PyObject *exc = PyObject_Call(PyExc_OSError, args, NULL);
    Py_DECREF(args);
    return exc;
}

PyObject *
fastio_backend_unavailable(PyObject *cls, int neg_errno, PyObject *msg)
{
    if (msg == NULL) {
        return NULL;
    }
    int err = neg_errno < 0 ? -neg_errno : neg_errno;
    PyObject *exc = PyObject_CallFunction(cls, "iO", err ? err : EIO, msg);
    Py_DECREF(msg);
    if (exc != NULL) {
        PyErr_SetObject(cls, exc);
        Py_DECREF(exc);
    }
    return NULL;
}

PyObject *
fastio_oserror_errno(const char *syscall, PyObject *filename)
{
    return fastio_oserror(-errno, syscall, filename);
}

/* ------------------------------------------------------------------ */
/* Integer arguments */

int
fastio_fd_arg(PyObject *obj, const char *name, int *fd)
{
    /* An int is taken as it is (no fileno() lookup on the hot path); any
     * other object goes through PyObject_AsFileDescriptor (an int
     * subclass's __index__, or fileno()), which can run Python code. */
    if (PyLong_CheckExact(obj)) {
        int overflow;
        long v = PyLong_AsLongAndOverflow(obj, &overflow);
        if (overflow == 0 && v >= 0 && v <= INT_MAX) {
            *fd = (int)v;
            return 0;
        }
        if (!PyErr_Occurred()) {
            PyErr_Format(PyExc_ValueError,
                         "%s must be a non-negative file descriptor, got %s=%R", name, name,
                         obj);
        }
        return -1;
    }
    int v = PyObject_AsFileDescriptor(obj);
    if (v < 0) {
        return -1;
    }
    *fd = v;
    return 0;
}

int
fastio_int_arg(PyObject *obj, const char *name, long long lo, long long hi,
               long long *out)
{
    /* __index__ only: a float where an integer is meant is refused (int()
     * would truncate 0.5 to 0 and a wrong offset would be used silently). */
    if (!PyIndex_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "%s must be an integer, got %s=%R (%.100s)",
                     name, name, obj, Py_TYPE(obj)->tp_name);
        return -1;
    }
    PyObject *idx = PyNumber_Index(obj);
    if (idx == NULL) {
        return -1;
    }
    int overflow = 0;
    long long v = PyLong_AsLongLongAndOverflow(idx, &overflow);
    if (v == -1 && PyErr_Occurred()) {
        Py_DECREF(idx);
        return -1;
    }
    if (overflow != 0 || v < lo || v > hi) {
        /* As Python's own converters do: OverflowError for a value the C
         * type of the argument cannot hold (an id past a C int, a negative
         * unsigned flag word, anything past 64 bits), ValueError for one it
         * holds but the call does not allow (Queue(0), a negative offset,
         * Semaphore.release(0) as threading.Semaphore says). The type is
         * the narrowest of int32, uint32, 32 bits of either sign, and int64
         * that holds [lo, hi]. */
        int fits;
        if (overflow != 0) {
            fits = 0;
        }
        else if (lo >= INT32_MIN && hi <= INT32_MAX) {
            fits = v >= INT32_MIN && v <= INT32_MAX;
        }
        else if (lo >= 0 && hi <= (long long)UINT32_MAX) {
            fits = v >= 0 && v <= (long long)UINT32_MAX;
        }
        else if (lo >= INT32_MIN && hi <= (long long)UINT32_MAX) {
            fits = v >= INT32_MIN && v <= (long long)UINT32_MAX;  /* key_t: 32 bits, either sign */
        }
        else {
            fits = 1;
        }
        PyErr_Format(fits ? PyExc_ValueError : PyExc_OverflowError,
                     "%s out of range [%lld, %lld]: %s=%S", name, lo, hi, name, idx);
        Py_DECREF(idx);
        return -1;
    }
    Py_DECREF(idx);
    *out = v;
    return 0;
}
