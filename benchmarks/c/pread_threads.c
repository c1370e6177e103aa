/* pread_threads.c: the machine's ceiling for bench_threads_scaling.py's
 * pread rows, in plain C: N workers each doing CALLS preads of BS bytes at
 * random BS-aligned offsets of FILE (cached), timed from a barrier to the
 * last join; prints the calls per second of the whole process and the CPUs
 * it kept busy meanwhile (CPU seconds per wall second).
 *
 *     pread_threads FILE NWORKERS MODE CALLS [BS]
 *
 * MODE says what the workers share:
 *   shared   threads, one fd (one open file description) for all of them
 *   own      threads, each open()s FILE itself: its own fd and description
 *   dup      threads, each a dup() of one fd: own fd, SHARED description
 *   fork     processes (fork after open): one description, and each child
 *            is single-threaded (its fd table is not shared)
 *
 * shared/own/dup/fork separate the suspects when 2 threads sharing one fd
 * scale worse than 2 threads with their own: dup keeps the struct file
 * shared but not the fd; fork keeps it shared, but a process whose fd table
 * has one user skips the per-call reference on the struct file that fdget
 * takes in a multi-threaded process.
 *
 * Built by bench_threads_scaling.py with cc -O2 -pthread.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const char *path;
static int shared_fd;
static const char *mode;
static long calls;
static size_t bs;
static off_t blocks;
static pthread_barrier_t start;

static double
now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static double
cpu_seconds(int who)
{
    struct rusage r;
    getrusage(who, &r);
    return r.ru_utime.tv_sec + r.ru_utime.tv_usec * 1e-6 + r.ru_stime.tv_sec +
           r.ru_stime.tv_usec * 1e-6;
}

static void
die(const char *what)
{
    fprintf(stderr, "pread_threads: %s: %s\n", what, strerror(errno));
    exit(1);
}

/* The preads of one worker; fd already chosen. */
static void
work(int fd, long id)
{
    char *buf = aligned_alloc(4096, bs);
    if (buf == NULL) {
        die("aligned_alloc");
    }
    memset(buf, 1, bs); /* fault the buffer in before the clock runs */
    uint64_t x = 88172645463325252ull ^ (uint64_t)(id + 1) * 0x9E3779B97F4A7C15ull;
    for (long i = 0; i < calls; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        ssize_t n = pread(fd, buf, bs, (off_t)(x % (uint64_t)blocks) * (off_t)bs);
        if (n != (ssize_t)bs) {
            die("pread");
        }
    }
    free(buf);
}

static int
worker_fd(void)
{
    int fd = shared_fd;
    if (strcmp(mode, "own") == 0) {
        fd = open(path, O_RDONLY);
    }
    else if (strcmp(mode, "dup") == 0) {
        fd = dup(shared_fd);
    }
    if (fd < 0) {
        die("open/dup");
    }
    return fd;
}

static void *
thread_main(void *arg)
{
    int fd = worker_fd(); /* opened before the barrier: not timed */
    pthread_barrier_wait(&start);
    work(fd, (long)arg);
    if (fd != shared_fd) {
        close(fd);
    }
    return NULL;
}

int
main(int argc, char **argv)
{
    if (argc < 5) {
        fprintf(stderr, "usage: pread_threads FILE NWORKERS shared|own|dup|fork CALLS [BS]\n");
        return 2;
    }
    path = argv[1];
    int n = atoi(argv[2]);
    mode = argv[3];
    calls = atol(argv[4]);
    bs = argc > 5 ? (size_t)atol(argv[5]) : 4096;
    if (n < 1 || n > 256 || calls < 1 || bs < 1 ||
        (strcmp(mode, "shared") && strcmp(mode, "own") && strcmp(mode, "dup") &&
         strcmp(mode, "fork"))) {
        fprintf(stderr, "pread_threads: bad arguments\n");
        return 2;
    }
    shared_fd = open(path, O_RDONLY);
    if (shared_fd < 0) {
        die(path);
    }
    off_t size = lseek(shared_fd, 0, SEEK_END);
    blocks = size / (off_t)bs;
    if (blocks < 1) {
        fprintf(stderr, "pread_threads: %s is smaller than one block\n", path);
        return 2;
    }
    double c0, t0, wall, cpu;
    if (strcmp(mode, "fork") == 0) {
        /* The children wait on a pipe: closing its write end starts them all. */
        int go[2];
        if (pipe(go) < 0) {
            die("pipe");
        }
        pid_t *pids = calloc((size_t)n, sizeof *pids);
        for (int i = 0; i < n; i++) {
            pids[i] = fork();
            if (pids[i] < 0) {
                die("fork");
            }
            if (pids[i] == 0) {
                char c;
                close(go[1]);
                if (read(go[0], &c, 1) < 0) {
                    _exit(1);
                }
                work(shared_fd, i);
                _exit(0);
            }
        }
        close(go[0]);
        usleep(100000); /* let the children reach their read() */
        c0 = cpu_seconds(RUSAGE_CHILDREN);
        t0 = now();
        close(go[1]);
        int bad = 0;
        for (int i = 0; i < n; i++) {
            int st;
            if (waitpid(pids[i], &st, 0) < 0 || !WIFEXITED(st) || WEXITSTATUS(st)) {
                bad = 1;
            }
        }
        wall = now() - t0;
        cpu = cpu_seconds(RUSAGE_CHILDREN) - c0;
        free(pids);
        if (bad) {
            fprintf(stderr, "pread_threads: a child failed\n");
            return 1;
        }
    }
    else {
        pthread_t t[256];
        pthread_barrier_init(&start, NULL, (unsigned)n + 1);
        for (long i = 0; i < n; i++) {
            if (pthread_create(&t[i], NULL, thread_main, (void *)i) != 0) {
                fprintf(stderr, "pread_threads: pthread_create failed\n");
                return 1;
            }
        }
        pthread_barrier_wait(&start);
        c0 = cpu_seconds(RUSAGE_SELF);
        t0 = now();
        for (int i = 0; i < n; i++) {
            pthread_join(t[i], NULL);
        }
        wall = now() - t0;
        cpu = cpu_seconds(RUSAGE_SELF) - c0;
    }
    printf("%.1f %.3f\n", (double)n * (double)calls / wall, cpu / wall);
    return 0;
}
