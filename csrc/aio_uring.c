/* aio_uring.c: the io_uring backend: io_uring through its system calls and the kernel's uapi header. */
#include "fastio.h"
#include "aio.h"

#include <stdio.h>

static int
uring_probe(char *why, size_t whylen, unsigned *features)
{
    snprintf(why, whylen, "the io_uring backend is not built yet");
    *features = 0;
    return -ENOSYS;
}

const fastio_aio_ops fastio_aio_uring_ops = {
    .name = "io_uring",
    .probe = uring_probe,
};
