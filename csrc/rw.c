/* rw.c: pread / pwrite / preadv / pwritev, full-length loops, fadvise,
 * readahead, all with the GIL released and EINTR retried. */
#include "fastio.h"

PyMethodDef fastio_rw_methods[] = {
    {NULL, NULL, 0, NULL},
};
