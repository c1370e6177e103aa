/* read_loop.c: the plain C loop that bench_lab_vs_fio.py puts beside the lab
 * and fio, the bound for cached reads where the CPU is the limit.
 *
 * It reads bs bytes at each offset of an int64 file (the offsets the lab
 * uses), with nothing per request but the syscall: no clock read, no
 * accounting. One clock read before and one after the loop. Where a cached
 * 4 KiB read costs ~0.6 us, what each tool adds per request shows against
 * this figure: the lab reads the clock twice per request (as fio does),
 * fio also runs its engine's bookkeeping.
 *
 *   read_loop psync  FILE OFFSETS BS           one pread per request
 *   read_loop uring  FILE OFFSETS BS DEPTH     io_uring (liburing), DEPTH in flight
 *
 * Prints "<bytes> <requests> <nanoseconds>". Built by the script at run time
 * (gcc -O2, -luring for uring); not part of fastio.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#ifdef WITH_URING
#include <liburing.h>
#endif

static int64_t
now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void
die(const char *what, int err)
{
    fprintf(stderr, "read_loop: %s: %s\n", what, strerror(err));
    exit(1);
}

static int64_t *
load_offsets(const char *path, size_t *n)
{
    int fd = open(path, O_RDONLY);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0)
        die(path, errno);
    int64_t *o = malloc((size_t)st.st_size + 8);
    if (o == NULL)
        die("malloc", ENOMEM);
    size_t got = 0;
    while (got < (size_t)st.st_size) {
        ssize_t r = read(fd, (char *)o + got, (size_t)st.st_size - got);
        if (r <= 0)
            die(path, r < 0 ? errno : EIO);
        got += (size_t)r;
    }
    close(fd);
    *n = got / 8;
    return o;
}

static int64_t
psync(int fd, char *buf, const int64_t *o, size_t n, size_t bs)
{
    int64_t total = 0;
    for (size_t i = 0; i < n; i++) {
        ssize_t r = pread(fd, buf, bs, o[i]);
        if (r != (ssize_t)bs)
            die("pread", r < 0 ? errno : EIO);
        total += r;
    }
    return total;
}

#ifdef WITH_URING
static int64_t
uring(int fd, char *buf, const int64_t *o, size_t n, size_t bs, unsigned depth)
{
    struct io_uring ring;
    int rc = io_uring_queue_init(depth, &ring, 0);
    if (rc < 0)
        die("io_uring_queue_init", -rc);
    size_t next = 0, done = 0;
    unsigned inflight = 0;
    int64_t total = 0;
    while (done < n) {
        /* keep depth requests in flight, each into its own slot of buf */
        while (inflight < depth && next < n) {
            struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
            unsigned slot = (unsigned)(next % depth);
            io_uring_prep_read(sqe, fd, buf + (size_t)slot * bs, (unsigned)bs, (uint64_t)o[next]);
            sqe->user_data = next;
            next++;
            inflight++;
        }
        rc = io_uring_submit_and_wait(&ring, 1);
        if (rc < 0 && rc != -EINTR)
            die("io_uring_submit_and_wait", -rc);
        struct io_uring_cqe *cqe;
        unsigned head, seen = 0;
        io_uring_for_each_cqe(&ring, head, cqe) {
            if (cqe->res != (int)bs)
                die("io_uring read", cqe->res < 0 ? -cqe->res : EIO);
            total += cqe->res;
            seen++;
        }
        io_uring_cq_advance(&ring, seen);
        inflight -= seen;
        done += seen;
    }
    io_uring_queue_exit(&ring);
    return total;
}
#endif

int
main(int argc, char **argv)
{
    if (argc < 5 || (strcmp(argv[1], "uring") == 0 && argc < 6)) {
        fprintf(stderr, "usage: read_loop psync|uring FILE OFFSETS BS [DEPTH]\n");
        return 2;
    }
    size_t n, bs = (size_t)strtoull(argv[4], NULL, 10);
    unsigned depth = argc > 5 ? (unsigned)strtoul(argv[5], NULL, 10) : 1;
    int64_t *o = load_offsets(argv[3], &n);
    int fd = open(argv[2], O_RDONLY);
    if (fd < 0)
        die(argv[2], errno);
    char *buf;
    if (posix_memalign((void **)&buf, 4096, bs * depth) != 0)
        die("posix_memalign", ENOMEM);
    memset(buf, 0, bs * depth);   /* first touch before the clock */
    int64_t total, t0 = now_ns();
    if (strcmp(argv[1], "psync") == 0) {
        total = psync(fd, buf, o, n, bs);
    } else {
#ifdef WITH_URING
        total = uring(fd, buf, o, n, bs, depth);
#else
        fprintf(stderr, "read_loop: built without liburing\n");
        return 2;
#endif
    }
    int64_t t = now_ns() - t0;
    printf("%lld %zu %lld\n", (long long)total, n, (long long)t);
    return 0;
}
