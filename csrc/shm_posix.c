/* shm_posix.c: shm_open / shm_unlink / memfd_create: POSIX and memfd shared memory segments. */
#include "fastio.h"

int
fastio_shm_exec(PyObject *module, fastio_state *st)
{
    return 0;
}
