/* errors.c: the only place an OSError is built from an errno.
 *
 * PyErr_SetFromErrnoWithFilenameObject picks the OSError subclass from the
 * errno (ENOENT -> FileNotFoundError, EACCES -> PermissionError, ...). We
 * build the same exception but put the system call's name in the message,
 * as psutil does, so "[Errno 22] Invalid argument (madvise)" says which call
 * the kernel refused.
 */
#include "fastio.h"

#include <string.h>

PyObject *
fastio_oserror(int neg_errno, const char *syscall, PyObject *filename)
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
    if (exc == NULL) {
        return NULL;
    }
    PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
    Py_DECREF(exc);
    return NULL;
}

PyObject *
fastio_oserror_errno(const char *syscall, PyObject *filename)
{
    return fastio_oserror(-errno, syscall, filename);
}
