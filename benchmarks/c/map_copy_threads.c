/* map_copy_threads.c: does copying 4 KiB blocks out of a read-only shared
 * map of a cached file beat pread for read_blocks' copy path? Plain C,
 * shaped like one read_blocks call: per CALL, N random 4 KiB-aligned
 * blocks of FILE are copied into a pre-touched destination (block i at
 * i * 4096) by NTHREADS threads (the calling one and NTHREADS-1 pthreads
 * started for the call, as csrc/rw.c's par_run does) claiming 64 blocks at
 * a time from a shared counter (BLOCKS_PER_CLAIM). Variants:
 *
 *   pread1    one thread, a plain pread loop (the reference of the caller's
 *             os.pread loop, without Python)
 *   pread     NTHREADS threads; each worker open()s FILE for the call (as
 *             own_fd_open does), the caller keeps its fd
 *   map       per call: mmap(PROT_READ, MAP_SHARED) of the whole file,
 *             memcpy of each block, munmap; the page faults of the fresh map
 *             and its teardown are inside the time
 *   mapnt     the same with non-temporal stores (movntdq) to the destination
 *   mappop    mapnt with MAP_POPULATE (the map is filled before the copies)
 *   keepnt    one map made before the clock and kept across calls, NT
 *             stores: the upper bound, which no honest single call gets
 *
 * For each N, ROUNDS rounds; in each round every variant runs (the order
 * rotated per round) enough calls to copy about TOTAL blocks; the figure
 * is blocks/s, median of the rounds, with min-max, the ratio to pread
 * (per round, then the median), and minor faults per call.
 *
 *     map_copy_threads FILE [NTHREADS=2] [ROUNDS=5] [TOTAL=400000] [N...]
 *
 * Built by hand or by benchmarks/_common.compile_c (cc -O2 -pthread); the
 * NT copy is SSE2 (every x86-64), elsewhere it falls back to memcpy.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>
#if defined(__x86_64__)
#include <emmintrin.h>
#endif

#define BS 4096
#define CLAIM 64
#define MAXN 16

enum { V_PREAD1, V_PREAD, V_MAP, V_MAPNT, V_MAPPOP, V_KEEPNT, NV };
static const char *names[NV] = {"pread1", "pread", "map", "mapnt", "mappop", "keepnt"};

static const char *path;
static int fd;
static off_t fsize;
static size_t nblocks_file;
static char *dst;
static char *kept;  /* keepnt's map */

typedef struct {
    int variant;
    const char *src;  /* the map, for map variants */
    const int64_t *offsets;
    size_t n;
    atomic_size_t next;
} call_job;

static double
now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static void
die(const char *what)
{
    fprintf(stderr, "map_copy_threads: %s: %s\n", what, strerror(errno));
    exit(1);
}

static void
copy_nt(char *d, const char *s)
{
#if defined(__x86_64__)
    /* d is 4096-aligned here; s is a page of the map. */
    __m128i *dd = (__m128i *)d;
    const __m128i *ss = (const __m128i *)s;
    for (size_t k = 0; k < BS / 16; k += 4) {
        __m128i a = _mm_loadu_si128(ss + k), b = _mm_loadu_si128(ss + k + 1),
                c = _mm_loadu_si128(ss + k + 2), e = _mm_loadu_si128(ss + k + 3);
        _mm_stream_si128(dd + k, a);
        _mm_stream_si128(dd + k + 1, b);
        _mm_stream_si128(dd + k + 2, c);
        _mm_stream_si128(dd + k + 3, e);
    }
#else
    memcpy(d, s, BS);
#endif
}

static void
work(call_job *job, int own_open)
{
    int rfd = fd;
    if (job->variant == V_PREAD && own_open) {
        rfd = open(path, O_RDONLY | O_CLOEXEC);
        if (rfd < 0) {
            die("open");
        }
    }
    for (;;) {
        size_t first = atomic_fetch_add(&job->next, CLAIM);
        if (first >= job->n) {
            break;
        }
        size_t last = first + CLAIM < job->n ? first + CLAIM : job->n;
        for (size_t i = first; i < last; i++) {
            char *d = dst + i * BS;
            switch (job->variant) {
            case V_PREAD1:
            case V_PREAD:
                if (pread(rfd, d, BS, (off_t)job->offsets[i]) != BS) {
                    die("pread");
                }
                break;
            case V_MAP:
                memcpy(d, job->src + job->offsets[i], BS);
                break;
            default:
                copy_nt(d, job->src + job->offsets[i]);
                break;
            }
        }
    }
#if defined(__x86_64__)
    _mm_sfence(); /* the NT stores are visible before the join */
#endif
    if (rfd != fd) {
        close(rfd);
    }
}

static void *
thread_main(void *p)
{
    work(p, 1);
    return NULL;
}

/* One call of n blocks; the threads are started and joined inside it. */
static void
one_call(int variant, const int64_t *offsets, size_t n, int nthreads)
{
    call_job job = {.variant = variant, .offsets = offsets, .n = n};
    atomic_init(&job.next, 0);
    char *map = NULL;
    if (variant == V_MAP || variant == V_MAPNT || variant == V_MAPPOP) {
        int fl = MAP_SHARED | (variant == V_MAPPOP ? MAP_POPULATE : 0);
        map = mmap(NULL, (size_t)fsize, PROT_READ, fl, fd, 0);
        if (map == MAP_FAILED) {
            die("mmap");
        }
        job.src = map;
    }
    else if (variant == V_KEEPNT) {
        job.src = kept;
    }
    int nt = variant == V_PREAD1 ? 1 : nthreads;
    pthread_t t[64];
    for (int k = 0; k + 1 < nt; k++) {
        if (pthread_create(&t[k], NULL, thread_main, &job) != 0) {
            die("pthread_create");
        }
    }
    work(&job, 0);
    for (int k = 0; k + 1 < nt; k++) {
        pthread_join(t[k], NULL);
    }
    if (map != NULL) {
        munmap(map, (size_t)fsize);
    }
}

static uint64_t rng = 88172645463325252ull;

static uint64_t
next_rand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static int
cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double
median(double *v, int k)
{
    qsort(v, (size_t)k, sizeof *v, cmp_double);
    return k % 2 ? v[k / 2] : (v[k / 2 - 1] + v[k / 2]) / 2;
}

int
main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: map_copy_threads FILE [NTHREADS] [ROUNDS] [TOTAL] [N...]\n");
        return 2;
    }
    path = argv[1];
    int nthreads = argc > 2 ? atoi(argv[2]) : 2;
    int rounds = argc > 3 ? atoi(argv[3]) : 5;
    long total = argc > 4 ? atol(argv[4]) : 400000;
    size_t ns[MAXN] = {1000, 16000, 200000};
    int nn = 3;
    if (argc > 5) {
        nn = 0;
        for (int a = 5; a < argc && nn < MAXN; a++) {
            ns[nn++] = (size_t)atol(argv[a]);
        }
    }
    if (nthreads < 1 || nthreads > 64 || rounds < 1 || rounds > 99 || total < 1) {
        fprintf(stderr, "map_copy_threads: bad arguments\n");
        return 2;
    }
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        die(path);
    }
    fsize = lseek(fd, 0, SEEK_END);
    nblocks_file = (size_t)(fsize / BS);
    if (nblocks_file < 1) {
        fprintf(stderr, "map_copy_threads: %s is smaller than one block\n", path);
        return 2;
    }
    size_t maxn = 0;
    for (int j = 0; j < nn; j++) {
        maxn = ns[j] > maxn ? ns[j] : maxn;
    }
    dst = aligned_alloc(BS, maxn * BS);
    int64_t *offsets = malloc(maxn * sizeof *offsets);
    if (dst == NULL || offsets == NULL) {
        die("malloc");
    }
    memset(dst, 1, maxn * BS); /* pre-touched, as the benchmark's array */
    kept = mmap(NULL, (size_t)fsize, PROT_READ, MAP_SHARED | MAP_POPULATE, fd, 0);
    if (kept == MAP_FAILED) {
        die("mmap");
    }
    printf("file %s, %lld MiB, %d threads, %d rounds, ~%ld blocks per variant per round\n",
           path, (long long)(fsize >> 20), nthreads, rounds, total);
    for (int j = 0; j < nn; j++) {
        size_t n = ns[j];
        long calls = total / (long)n > 0 ? total / (long)n : 1;
        double rate[NV][99], ratio[NV][99], faults[NV] = {0};
        for (int r = 0; r < rounds; r++) {
            for (int q = 0; q < NV; q++) {
                int v = (q + r) % NV; /* the order rotated per round */
                struct rusage ru0, ru1;
                getrusage(RUSAGE_SELF, &ru0);
                double el = 0;
                for (long c = 0; c < calls; c++) {
                    for (size_t i = 0; i < n; i++) {
                        offsets[i] = (int64_t)(next_rand() % nblocks_file) * BS;
                    }
                    double t0 = now(); /* the offsets are made outside the clock */
                    one_call(v, offsets, n, nthreads);
                    el += now() - t0;
                }
                getrusage(RUSAGE_SELF, &ru1);
                rate[v][r] = (double)calls * (double)n / el;
                faults[v] += (double)(ru1.ru_minflt - ru0.ru_minflt) / (double)calls;
            }
            for (int v = 0; v < NV; v++) {
                ratio[v][r] = rate[v][r] / rate[V_PREAD][r];
            }
        }
        printf("\nN=%zu blocks per call, %ld calls per variant per round\n", n, calls);
        printf("%-8s %12s %12s %12s %8s %12s\n", "variant", "blocks/s", "min", "max",
               "/pread", "faults/call");
        for (int v = 0; v < NV; v++) {
            double mn = rate[v][0], mx = rate[v][0];
            for (int r = 1; r < rounds; r++) {
                mn = rate[v][r] < mn ? rate[v][r] : mn;
                mx = rate[v][r] > mx ? rate[v][r] : mx;
            }
            double med = median(rate[v], rounds);
            printf("%-8s %12.0f %12.0f %12.0f %8.2f %12.1f\n", names[v], med, mn, mx,
                   median(ratio[v], rounds), faults[v] / rounds);
        }
        fflush(stdout);
    }
    return 0;
}
