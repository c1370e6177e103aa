/* limit_read.c: the ceiling for reading a whole cached file into fresh
 * memory, with no Python and no fastio: N threads pread(2) 4 MiB chunks
 * (taken in order from an atomic counter) into an anonymous map asked for
 * transparent huge pages (madvise MADV_HUGEPAGE), the clock running from
 * the map to the join, as fastio.read_file's allocation and reads do.
 * Unmapping is after the clock (read_file's caller frees later too).
 *
 *     cc -O2 -pthread -o limit_read limit_read.c
 *     ./limit_read FILE THREADS     -> prints seconds for one read
 *
 * benchmarks/bench_autoread.py compiles and runs it, one read per round,
 * beside read_file(mode='auto') in the same rounds. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define CHUNK ((size_t)4 << 20)
#define HUGE ((size_t)2 << 20)

static int fd;
static char *buf;
static size_t size, nchunks;
static atomic_size_t next_chunk;
static atomic_int failed;

static void *
work(void *arg)
{
    (void)arg;
    for (;;) {
        size_t i = atomic_fetch_add(&next_chunk, 1);
        if (i >= nchunks) {
            return NULL;
        }
        size_t off = i * CHUNK, want = size - off < CHUNK ? size - off : CHUNK, done = 0;
        while (done < want) {
            ssize_t n = pread(fd, buf + off + done, want - done, (off_t)(off + done));
            if (n <= 0) {
                atomic_store(&failed, 1);
                return NULL;
            }
            done += (size_t)n;
        }
    }
}

int
main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s FILE THREADS\n", argv[0]);
        return 2;
    }
    int nthreads = atoi(argv[2]);
    if (nthreads < 1 || nthreads > 64) {
        return 2;
    }
    fd = open(argv[1], O_RDONLY);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0) {
        perror(argv[1]);
        return 1;
    }
    size = (size_t)st.st_size;
    nchunks = (size + CHUNK - 1) / CHUNK;
    size_t maplen = (size + HUGE - 1) / HUGE * HUGE;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    /* A huge-page-aligned start: map 2 MiB more and skip to the boundary. */
    char *raw = mmap(NULL, maplen + HUGE, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    buf = (char *)(((uintptr_t)raw + HUGE - 1) / HUGE * HUGE);
    madvise(buf, maplen, MADV_HUGEPAGE);
    pthread_t th[64];
    for (int t = 1; t < nthreads; t++) {
        pthread_create(&th[t], NULL, work, NULL);
    }
    work(NULL);
    for (int t = 1; t < nthreads; t++) {
        pthread_join(th[t], NULL);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    munmap(raw, maplen + HUGE);
    if (atomic_load(&failed)) {
        fprintf(stderr, "a read failed or came short\n");
        return 1;
    }
    printf("%.9f\n", (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9);
    return 0;
}
