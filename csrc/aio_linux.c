/* aio_linux.c: the linux_aio backend: io_setup / io_submit / io_getevents through system calls. */
#include "fastio.h"
#include "aio.h"

#include <stdio.h>

static int
linux_probe(char *why, size_t whylen, unsigned *features)
{
    snprintf(why, whylen, "the linux_aio backend is not built yet");
    *features = 0;
    return -ENOSYS;
}

const fastio_aio_ops fastio_aio_linux_ops = {
    .name = "linux_aio",
    .probe = linux_probe,
};
