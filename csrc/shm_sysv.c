/* shm_sysv.c: ftok / shmget / shmat / shmdt / shmctl: System V shared memory. */
#include "fastio.h"

int
fastio_sysv_exec(PyObject *module, fastio_state *st)
{
    return 0;
}
