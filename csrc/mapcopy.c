/* mapcopy.c: read_blocks' copy path for cached data, copying blocks out of
 * a read-only shared map of the file made for one call instead of one
 * pread(2) each (rw.c's _pread_blocks, with mapped=).
 *
 * Why: a cached 4 KiB pread is a system call, an fd lookup, a page cache
 * lookup and a copy; two threads of them top out at ~1.7 M blocks/s on
 * the 2-CPU VM, while the same copies out of a map run ~3.3 M/s
 * (benchmarks/c/map_copy_threads.c). The map made for the call is not
 * free: every 64 KiB window of the file the blocks touch costs a page
 * fault (the kernel's fault-around maps the window's cached pages at
 * once), and the munmap tears the windows down; ~2-5 us a window. So the
 * map wins when the call copies many blocks per window it touches
 * (measured, 2 threads, random 4 KiB blocks: 4 MiB file, 1000 blocks,
 * 1.35-1.42x pread; 256 MiB, 200k blocks, 1.77-1.91x; 1 GiB, 200k blocks,
 * 1.2-1.4x; 256 MiB, 16k blocks, 0.8-0.9x): fastio/blocks.py decides
 * (MAPCOPY_BLOCKS_PER_WINDOW), this file only does it safely.
 *
 * Safety, the rules:
 *  - A block is copied from the map only if it lies wholly inside the file
 *    as fstat saw it when the map was made; the others (straddling or past
 *    the end) are pread, whose short or zero count is the truth.
 *  - The file may shrink meanwhile (another process's ftruncate): touching
 *    a page past the new end raises SIGBUS. Every copy runs under
 *    sigbus.c's per-thread guard; on a fault, the thread stops using the
 *    map for the rest of the call and preads the block that faulted and
 *    every later block it claims (pread then reports the new size). The
 *    bytes past a short pread's count may hold part of the old content
 *    that the faulted copy wrote (pread leaves them as they were);
 *    read_blocks raises EOFError for such a block.
 *  - The threads of rw.c's par_run run with every signal blocked, and a
 *    SIGBUS caused by a fault while blocked is not delivered to a handler:
 *    the kernel resets its action to the default and kills the process.
 *    So a thread copies from the map only after unblocking SIGBUS, and
 *    only SIGBUS, for itself (fastio_mapcopy_enter), and restores its mask
 *    when done (the caller's thread works too, and keeps its own mask).
 *  - Only while sigbus.c's handler is the process's SIGBUS action (nothing
 *    installed in front of it since: a Python handler would return into
 *    the faulting copy forever).
 *  - Only regular files of disk filesystems (map_fs below), read-only
 *    descriptors or read-write ones (never write-only or O_PATH), never
 *    O_DIRECT (the caller asked the page cache to be bypassed), never with
 *    RWF_* flags (the caller decides, in rw.c). Any failure to map
 *    (ENODEV, EACCES, ENOMEM, EINVAL) means pread, silently.
 *  - The map lives for one call: made before the threads start and
 *    unmapped after they are joined, interrupted (Ctrl-C) or not. No map
 *    is kept across calls: nothing could tell a kept map that the file
 *    was replaced or truncated to the same size between calls.
 */
#include "fastio.h"

#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

/* From this many destination bytes per call the copies use non-temporal
 * stores: the destination is then larger than the last-level cache, so
 * the stores would only evict other lines; below it the caller may read
 * the blocks from the cache next (measured: NT stores 1.05-1.1x memcpy for
 * 200k blocks; never tried on small calls, so left to memcpy). */
#define NT_MIN_BYTES ((size_t)64 << 20)

/* Whether a read fault of fd's file through a shared map does what pread
 * would: reads the page into the page cache, nothing else. Disk
 * filesystems. Not tmpfs, ramfs or hugetlbfs (memfds included): a read
 * fault on a hole there allocates a page (hugetlbfs a huge page, or
 * SIGBUS when none is free) where pread copies zeros and allocates
 * nothing; not zfs (its maps go through a second cache beside the ARC);
 * not network or FUSE filesystems (a fault is a request that can block,
 * and their invalidation differs); not /proc, sysfs and the like. An
 * allowlist, as rw.c's plain_open_fs: an unknown filesystem keeps pread. */
static int
map_fs(int fd)
{
    static const unsigned long magics[] = {
        0xEF53,      /* ext2, ext3, ext4 */
        0x58465342,  /* xfs */
        0x9123683E,  /* btrfs */
        0xF2F52010,  /* f2fs */
        0xCA451A4E,  /* bcachefs */
        0xE0F5E1E2,  /* erofs */
        0x73717368,  /* squashfs */
    };
    return fastio_fs_is_one_of(fd, magics, sizeof magics / sizeof magics[0]);
}

int
fastio_fs_is_one_of(int fd, const unsigned long *magics, size_t n)
{
    struct statfs sf;
    if (fstatfs(fd, &sf) < 0) {
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        if ((unsigned long)(unsigned int)sf.f_type == magics[i]) {
            return 1;
        }
    }
    return 0;
}

int
fastio_mapcopy_open(int fd, const int64_t *offsets, size_t n, size_t size,
                    fastio_mapcopy *m)
{
    memset(m, 0, sizeof *m);
    if (n == 0 || size == 0) {
        return 0;
    }
    /* The copies are safe only where a fault's SIGBUS reaches the guard:
     * after a Python signal.signal(SIGBUS, ...) its handler would return
     * into the faulting copy, again and again. pread needs no guard. */
    if (!fastio_sigbus_guard_ready()) {
        return 0;
    }
    int fl = fcntl(fd, F_GETFL);
    struct stat st;
    if (fl < 0 || (fl & O_PATH) || (fl & O_ACCMODE) == O_WRONLY || (fl & O_DIRECT) ||
        fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || !map_fs(fd)) {
        return 0;
    }
    /* The span of the blocks inside the file: the map covers it only, so
     * that blocks gathered in a part of a large file map that part. */
    int64_t lo = INT64_MAX, hi = 0, end = (int64_t)st.st_size;
    for (size_t i = 0; i < n; i++) {
        if (offsets[i] < lo) {
            lo = offsets[i];
        }
        if (offsets[i] + (int64_t)size > hi) {
            hi = offsets[i] + (int64_t)size;  /* the caller checked the sum */
        }
    }
    if (hi > end) {
        hi = end;
    }
    lo &= ~(int64_t)(fastio_pagesize - 1);
    if (hi <= lo || (uint64_t)(hi - lo) > SIZE_MAX) {
        return 0;  /* no block lies inside the file */
    }
    void *p = mmap(NULL, (size_t)(hi - lo), PROT_READ, MAP_SHARED, fd, (off_t)lo);
    if (p == MAP_FAILED) {
        return 0;  /* pread, as if we had not tried */
    }
    m->map = p;
    m->len = (size_t)(hi - lo);
    m->lo = lo;
    m->hi = hi;
    m->nt = n * size >= NT_MIN_BYTES;
    return 0;
}

void
fastio_mapcopy_close(fastio_mapcopy *m)
{
    if (m->map != NULL) {
        munmap(m->map, m->len);
        m->map = NULL;
    }
}

/* See the header comment: a thread about to copy from the map unblocks
 * SIGBUS (only SIGBUS), so that a fault reaches sigbus.c's handler instead
 * of killing the process; *old receives the mask to restore. */
void
fastio_mapcopy_enter(sigset_t *old)
{
    sigset_t bus;
    sigemptyset(&bus);
    sigaddset(&bus, SIGBUS);
    pthread_sigmask(SIG_UNBLOCK, &bus, old);
}

void
fastio_mapcopy_leave(const sigset_t *old)
{
    pthread_sigmask(SIG_SETMASK, old, NULL);
}

/* One guarded run of copies: blocks i.. of a claim while they lie inside
 * the map. The handler's jump abandons copy_run midway, so the index of
 * the block being copied is kept in memory (volatile), not in a register
 * the jump would lose. */
typedef struct {
    const fastio_mapcopy *m;
    char *base;
    size_t size;
    const int64_t *offsets;
    int64_t *results;
    volatile size_t i;
    size_t last;
} copy_run_arg;

static void
copy_nt(char *dst, const char *src, size_t size)
{
#if defined(__SSE2__)
    __m128i *d = (__m128i *)dst;
    const __m128i *s = (const __m128i *)src;
    for (size_t k = 0; k < size / 16; k += 4) {
        __m128i a = _mm_loadu_si128(s + k), b = _mm_loadu_si128(s + k + 1),
                c = _mm_loadu_si128(s + k + 2), e = _mm_loadu_si128(s + k + 3);
        _mm_stream_si128(d + k, a);
        _mm_stream_si128(d + k + 1, b);
        _mm_stream_si128(d + k + 2, c);
        _mm_stream_si128(d + k + 3, e);
    }
#else
    memcpy(dst, src, size);
#endif
}

static void
copy_run(void *p)
{
    copy_run_arg *a = p;
    const fastio_mapcopy *m = a->m;
    size_t size = a->size;
    /* NT stores need a 16-byte aligned destination and whole 64-byte
     * steps: block i's row starts at base + i * size. */
    int nt = m->nt && (uintptr_t)a->base % 16 == 0 && size % 64 == 0;
    for (size_t i = a->i; i < a->last; i = ++a->i) {
        int64_t off = a->offsets[i];
        if (off + (int64_t)size > m->hi) {
            break;  /* past the file as it was at map time: pread it */
        }
        const char *src = m->map + (off - m->lo);
        char *dst = a->base + i * size;
        if (nt) {
            copy_nt(dst, src, size);
        }
        else {
            memcpy(dst, src, size);
        }
        a->results[i] = (int64_t)size;
    }
#if defined(__SSE2__)
    /* Order the NT stores before anything that tells another thread the
     * blocks are done (the join). */
    _mm_sfence();
#endif
}

size_t
fastio_mapcopy_blocks(const fastio_mapcopy *m, char *base, size_t size,
                      const int64_t *offsets, int64_t *results, size_t i, size_t last,
                      int *use_map)
{
    copy_run_arg a = {.m = m, .base = base, .size = size, .offsets = offsets,
                      .results = results, .i = i, .last = last};
    fastio_fault fault;
    if (fastio_guarded_call(copy_run, &a, &fault) < 0) {
        /* A page of the map is gone: the file shrank. Block a.i's copy
         * was cut short (its result not written); pread it and the rest. */
#if defined(__SSE2__)
        _mm_sfence();
#endif
        *use_map = 0;
    }
    return a.i;
}
