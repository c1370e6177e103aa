/* aio_threads.c: the threads backend: a pthread pool doing pread/pwrite: the portable baseline. */
#include "fastio.h"
#include "aio.h"

#include <stdio.h>

static int
threads_probe(char *why, size_t whylen, unsigned *features)
{
    snprintf(why, whylen, "the threads backend is not built yet");
    *features = 0;
    return -ENOSYS;
}

const fastio_aio_ops fastio_aio_threads_ops = {
    .name = "threads",
    .probe = threads_probe,
};
