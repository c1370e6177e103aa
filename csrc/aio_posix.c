/* aio_posix.c: the posix_aio backend: aio_read / aio_write / lio_listio / aio_suspend (glibc). */
#include "fastio.h"
#include "aio.h"

#include <stdio.h>

static int
posix_probe(char *why, size_t whylen, unsigned *features)
{
    snprintf(why, whylen, "the posix_aio backend is not built yet");
    *features = 0;
    return -ENOSYS;
}

const fastio_aio_ops fastio_aio_posix_ops = {
    .name = "posix_aio",
    .probe = posix_probe,
};
