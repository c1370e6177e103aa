/* queue.c: the Queue type: pins buffers per request, submits and reaps in batches through a backend's ops table (aio.h). */
#include "fastio.h"

int
fastio_aio_exec(PyObject *module, fastio_state *st)
{
    return 0;
}
