/* channel.c: a single-producer single-consumer ring in shared memory.
 *
 * The ring lives in any writable buffer shared by two processes (an
 * anonymous MAP_SHARED mapping inherited through fork, a file in /dev/shm, a
 * SharedMemory). This file owns the memory protocol and the waiting; the
 * Python layer (fastio/sync.py) owns policy: where the memory comes from and
 * how numpy arrays are framed (C never imports numpy).
 *
 * Layout: a 256-byte header, then `capacity` bytes of data.
 *   line 0: magic, version, capacity (written once by the creator)
 *   line 1 (producer's): head = bytes ever written; data_seq, the futex word
 *           the consumer sleeps on; producer_closed; producer_waiting;
 *           the producer's pid and start time (for liveness)
 *   line 2 (consumer's): tail = bytes ever consumed; space_seq; ...
 * head and tail only grow (64-bit: no wrap in practice). Each is written by
 * one side only: the producer publishes a frame with a release store of
 * head, the consumer frees it with a release store of tail, and each reads
 * the other's index with an acquire load, so the bytes of a frame are
 * visible before its index moves (C11 acquire/release, as io_uring's SQ/CQ).
 *
 * Frames are 16-byte aligned and never wrap around the end of the data area,
 * so a payload is always one contiguous range that numpy can view:
 *   u32 kind, u32 meta_len, u64 payload_len, meta (padded to 16), payload
 * (padded to 16). kind 0 is a wrap marker: the rest of the lap is skipped.
 * kind 1 is bytes; other kinds carry `meta` that the Python layer decodes.
 *
 * Waiting: spin briefly, then sched_yield() for up to 50 us (see SPIN_NS
 * below for why), then sleep on a futex (FUTEX_WAIT_BITSET, not
 * private: the word is shared between processes). The sleeper raises its
 * *_waiting flag, re-checks the index, then sleeps on the seq word it read
 * before; the other side, after its index store, issues a seq_cst fence and
 * bumps seq and wakes only when the flag is up (a Dekker pair: one of the
 * two always sees the other's store), so the fast path costs no syscall.
 * A sleep lasts at most one slice (50 ms) with the GIL released; between
 * slices we check signals, our own close(), the deadline and whether the
 * peer process is still alive -- a futex cannot tell that a peer died.
 *
 * Peer liveness: each side records its pid and the process's start time
 * (/proc/PID/stat field 22) when it first sends or receives. A peer is dead
 * when /proc says the pid is gone, a zombie, or has a different start time
 * (the pid was reused). This needs both processes in one pid namespace.
 */
#include "fastio.h"

#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sched.h>
#include <time.h>
#include <unistd.h>

#define CH_MAGIC 0x314e4148434f4946ull  /* "FIOCHAN1" little-endian */
#define CH_VERSION 1u
#define CH_HEADER 256
#define CH_ALIGN 64
#define FRAME_ALIGN 16
#define FRAME_HDR 16
#define KIND_WRAP 0u
#define KIND_BYTES 1u
#define WAIT_SLICE_NS 50000000LL   /* 50 ms */
/* Spinning, then sleeping. Measured here (2 vCPUs shared with other jobs):
 * when the peer runs on the other CPU, a pause loop sees its answer in
 * well under a microsecond (8-byte round trip 0.5 us); when both share one
 * CPU, pausing only burns the peer's time slice (round trips of 100 us),
 * while sched_yield() hands the CPU straight to it (5.6 us, the pipe's 5.8).
 * So: pause PAUSE_SPINS times, then yield until SPIN_NS, then sleep. */
#define PAUSE_SPINS 32
#define SPIN_NS 50000LL

typedef struct {
    uint64_t magic;
    uint32_t version;
    uint32_t header_size;
    uint64_t capacity;
    char pad0[64 - 24];
    /* the producer's line */
    _Atomic uint64_t head;
    _Atomic uint32_t data_seq;
    _Atomic uint32_t producer_closed;
    _Atomic uint32_t producer_waiting;
    _Atomic int32_t producer_pid;
    _Atomic uint64_t producer_start;
    char pad1[64 - 32];
    /* the consumer's line */
    _Atomic uint64_t tail;
    _Atomic uint32_t space_seq;
    _Atomic uint32_t consumer_closed;
    _Atomic uint32_t consumer_waiting;
    _Atomic int32_t consumer_pid;
    _Atomic uint64_t consumer_start;
    char pad2[64 - 32];
    char pad3[64];
} ch_header;

_Static_assert(sizeof(ch_header) == CH_HEADER, "Channel header layout");

typedef struct {
    uint32_t kind;
    uint32_t meta_len;
    uint64_t payload_len;
} frame_hdr;

typedef struct {
    PyObject_HEAD
    fastio_anchor anchor;
    ch_header *sh;
    char *data;              /* sh + CH_HEADER */
    uint64_t capacity;
    Py_ssize_t offset;       /* of the header in the buffer */
    /* Roles this handle claimed in this process (fork_gen says which
     * process: a forked child's copy has claimed nothing yet). */
    unsigned producer_gen;
    unsigned consumer_gen;
    /* The frame a recv_view() is looking at: freed by the next receive or
     * release(). */
    uint64_t held;
    int sending;             /* a send is in progress (GIL possibly released) */
    int receiving;
    PyObject *weakreflist;
} ChannelObject;

/* ================================================================== */
/* Process identity across fork */

/* Bumped in every forked child, so a handle can tell that the roles it
 * claimed belong to its parent. Generation 0 means "never claimed". */
static _Atomic unsigned fork_gen = 1;

static void
after_fork_child(void)
{
    atomic_fetch_add(&fork_gen, 1);
}

static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void
register_atfork(void)
{
    pthread_atfork(NULL, NULL, after_fork_child);
}

/* ================================================================== */
/* Syscall helpers: 0 or -errno. Called with or without the GIL. */

static int
futex_wait_until(_Atomic uint32_t *word, uint32_t expected, const struct timespec *abs)
{
    /* FUTEX_WAIT_BITSET takes an absolute CLOCK_MONOTONIC deadline. Not
     * FUTEX_PRIVATE_FLAG: the word is in memory shared with another
     * process. */
    long r = syscall(SYS_futex, (uint32_t *)word, FUTEX_WAIT_BITSET, expected, abs,
                     NULL, FUTEX_BITSET_MATCH_ANY);
    return r < 0 ? -errno : 0;
}

static void
futex_wake_all(_Atomic uint32_t *word)
{
    syscall(SYS_futex, (uint32_t *)word, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
}

static long long
now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static struct timespec
ns_to_ts(long long ns)
{
    struct timespec ts = {(time_t)(ns / 1000000000LL), (long)(ns % 1000000000LL)};
    return ts;
}

static inline void
cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* Read state (field 3) and start time (field 22) of /proc/PID/stat. */
static int
proc_stat(pid_t pid, char *state, uint64_t *start)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return -errno;
    }
    char buf[1024];
    ssize_t n;
    do {
        n = read(fd, buf, sizeof(buf) - 1);
    } while (n < 0 && errno == EINTR);
    int err = n < 0 ? errno : 0;
    close(fd);
    if (n < 0) {
        return -err;
    }
    buf[n] = '\0';
    /* The command name (field 2) may hold spaces and parentheses: the
     * fields resume after the last ')'. */
    char *p = strrchr(buf, ')');
    if (p == NULL || p[1] != ' ') {
        return -EINVAL;
    }
    p += 2;
    *state = *p;
    for (int field = 3; field < 22; field++) {
        p = strchr(p, ' ');
        if (p == NULL) {
            return -EINVAL;
        }
        p++;
    }
    *start = strtoull(p, NULL, 10);
    return 0;
}

/* 1 alive, 0 dead. A pid we cannot inspect counts as alive (no false EOF). */
static int
process_alive(pid_t pid, uint64_t start)
{
    char state;
    uint64_t now_start;
    int r = proc_stat(pid, &state, &now_start);
    if (r == -ENOENT || r == -ESRCH) {
        return 0;
    }
    if (r < 0) {
        return kill(pid, 0) == 0 || errno == EPERM;
    }
    if (state == 'Z' || state == 'X' || state == 'x') {
        return 0;  /* exited, not yet reaped: a zombie keeps its pid */
    }
    return start == 0 || now_start == start;
}

/* ================================================================== */
/* The ring protocol (no Python calls: runs with or without the GIL) */

static inline uint64_t
align_up(uint64_t n, uint64_t a)
{
    return (n + a - 1) & ~(a - 1);
}

static inline uint64_t
frame_size(uint64_t meta_len, uint64_t payload_len)
{
    return FRAME_HDR + align_up(meta_len, FRAME_ALIGN) + align_up(payload_len, FRAME_ALIGN);
}

enum { ROLE_PRODUCER, ROLE_CONSUMER };

/* What a wait ended on. */
enum { W_READY, W_PEER_CLOSED, W_WOKEN, W_SLICE };

/* Free bytes for the producer, or bytes available to the consumer. */
static inline uint64_t
available(ch_header *sh, uint64_t capacity, int role)
{
    if (role == ROLE_PRODUCER) {
        uint64_t tail = atomic_load_explicit(&sh->tail, memory_order_acquire);
        uint64_t head = atomic_load_explicit(&sh->head, memory_order_relaxed);
        return capacity - (head - tail);
    }
    uint64_t head = atomic_load_explicit(&sh->head, memory_order_acquire);
    uint64_t tail = atomic_load_explicit(&sh->tail, memory_order_relaxed);
    return head - tail;
}

static inline int
peer_closed(ch_header *sh, int role)
{
    return atomic_load_explicit(role == ROLE_PRODUCER ? &sh->consumer_closed
                                                      : &sh->producer_closed,
                                memory_order_acquire) != 0;
}

/* Wait until `need` bytes are available to `role`, the peer closes, we are
 * woken, or `slice_end` (CLOCK_MONOTONIC ns) passes. Spins first. */
static int
wait_slice(ch_header *sh, uint64_t capacity, int role, uint64_t need,
           long long slice_end, int spin)
{
    _Atomic uint32_t *seq = role == ROLE_PRODUCER ? &sh->space_seq : &sh->data_seq;
    _Atomic uint32_t *waiting = role == ROLE_PRODUCER ? &sh->producer_waiting
                                                      : &sh->consumer_waiting;
    if (spin) {
        long long start = now_ns();
        for (unsigned i = 1;; i++) {
            if (available(sh, capacity, role) >= need) {
                return W_READY;
            }
            if (peer_closed(sh, role)) {
                return W_PEER_CLOSED;
            }
            if (i <= PAUSE_SPINS) {
                cpu_relax();
                continue;
            }
            long long spent = now_ns() - start;
            if (spent >= SPIN_NS || spent >= slice_end - start) {
                break;
            }
            sched_yield();
        }
    }
    uint32_t seen = atomic_load_explicit(seq, memory_order_acquire);
    atomic_store_explicit(waiting, 1, memory_order_relaxed);
    /* Pairs with the fence in notify(): either the other side sees our
     * flag and bumps seq (our futex wait then returns at once), or we see
     * its index store here. */
    atomic_thread_fence(memory_order_seq_cst);
    int result;
    if (available(sh, capacity, role) >= need) {
        result = W_READY;
    }
    else if (peer_closed(sh, role)) {
        result = W_PEER_CLOSED;
    }
    else {
        struct timespec ts = ns_to_ts(slice_end);
        int r = futex_wait_until(seq, seen, &ts);
        result = r == -ETIMEDOUT ? W_SLICE : W_WOKEN;
    }
    atomic_store_explicit(waiting, 0, memory_order_relaxed);
    return result;
}

/* After moving our index: wake the other side if it sleeps. */
static inline void
notify(ch_header *sh, int other_role)
{
    _Atomic uint32_t *seq = other_role == ROLE_PRODUCER ? &sh->space_seq : &sh->data_seq;
    _Atomic uint32_t *waiting = other_role == ROLE_PRODUCER ? &sh->producer_waiting
                                                            : &sh->consumer_waiting;
    atomic_thread_fence(memory_order_seq_cst);
    if (atomic_load_explicit(waiting, memory_order_relaxed)) {
        atomic_fetch_add_explicit(seq, 1, memory_order_release);
        futex_wake_all(seq);
    }
}

static void
wake_both(ch_header *sh)
{
    atomic_fetch_add_explicit(&sh->data_seq, 1, memory_order_release);
    atomic_fetch_add_explicit(&sh->space_seq, 1, memory_order_release);
    futex_wake_all(&sh->data_seq);
    futex_wake_all(&sh->space_seq);
}

/* ================================================================== */
/* Waiting with the GIL (the Python-facing loop) */

enum { R_READY = 0, R_EOF = 1, R_TIMEOUT = 2, R_ERROR = -1 };

static int
channel_check(ChannelObject *self)
{
    if (self->anchor.closed) {
        PyErr_SetString(PyExc_ValueError, "Channel is closed");
        return -1;
    }
    return 0;
}

/* Wait until `need` bytes are available to `role`. deadline_ns < 0: none;
 * 0: do not wait. R_EOF: the peer closed or died (the flag is then set in
 * the header). R_ERROR: an exception is set (own close, signal). */
static int
channel_wait(ChannelObject *self, int role, uint64_t need, long long deadline_ns)
{
    ch_header *sh = self->sh;
    uint64_t cap = self->capacity;
    if (available(sh, cap, role) >= need) {
        return R_READY;
    }
    if (peer_closed(sh, role)) {
        return R_EOF;
    }
    if (deadline_ns == 0) {
        return R_TIMEOUT;
    }
    fastio_anchor_enter(&self->anchor);
    int spin = 1;
    int result;
    for (;;) {
        long long slice_end = now_ns() + WAIT_SLICE_NS;
        if (deadline_ns > 0 && deadline_ns < slice_end) {
            slice_end = deadline_ns;
        }
        int w;
        Py_BEGIN_ALLOW_THREADS
        w = wait_slice(sh, cap, role, need, slice_end, spin);
        Py_END_ALLOW_THREADS
        if (w == W_READY) {
            result = R_READY;
            break;
        }
        if (w == W_PEER_CLOSED) {
            result = R_EOF;
            break;
        }
        if (self->anchor.closed) {
            PyErr_SetString(PyExc_ValueError, "Channel is closed");
            result = R_ERROR;
            break;
        }
        if (PyErr_CheckSignals() < 0) {
            result = R_ERROR;
            break;
        }
        if (deadline_ns > 0 && now_ns() >= deadline_ns) {
            result = R_TIMEOUT;
            break;
        }
        /* Spin again only after a wake-up (the peer is active). */
        spin = w == W_WOKEN;
        if (w == W_SLICE) {
            /* A futex cannot tell that the peer died: look at its pid. */
            _Atomic int32_t *pid = role == ROLE_PRODUCER ? &sh->consumer_pid
                                                         : &sh->producer_pid;
            _Atomic uint64_t *start = role == ROLE_PRODUCER ? &sh->consumer_start
                                                            : &sh->producer_start;
            pid_t p = atomic_load(pid);
            if (p > 0 && p != getpid() && !process_alive(p, atomic_load(start))) {
                atomic_store(role == ROLE_PRODUCER ? &sh->consumer_closed
                                                   : &sh->producer_closed, 2);
                /* Data the dead producer published stays receivable. */
                result = available(sh, cap, role) >= need ? R_READY : R_EOF;
                break;
            }
        }
    }
    if (self->anchor.closed && result != R_ERROR) {
        /* Another thread closed the Channel while we waited: leaving may
         * release the last hold on the ring (the owner unmaps it next), so
         * the caller must not touch the header or the data again. */
        PyErr_SetString(PyExc_ValueError, "Channel is closed");
        result = R_ERROR;
    }
    fastio_anchor_leave(&self->anchor);
    return result;
}

/* Claim `role` for this process on its first use (records pid and start
 * time for the peer's liveness checks). Refuses a second live process. */
static int
claim(ChannelObject *self, int role)
{
    unsigned gen = atomic_load_explicit(&fork_gen, memory_order_relaxed);
    unsigned *mine = role == ROLE_PRODUCER ? &self->producer_gen : &self->consumer_gen;
    if (*mine == gen) {
        return 0;
    }
    ch_header *sh = self->sh;
    _Atomic int32_t *pid = role == ROLE_PRODUCER ? &sh->producer_pid : &sh->consumer_pid;
    _Atomic uint64_t *start = role == ROLE_PRODUCER ? &sh->producer_start
                                                    : &sh->consumer_start;
    pid_t me = getpid();
    pid_t other = atomic_load(pid);
    if (other > 0 && other != me && process_alive(other, atomic_load(start))) {
        PyErr_Format(PyExc_RuntimeError,
                     "Channel is single-producer single-consumer: process %d "
                     "already %s on it", (int)other,
                     role == ROLE_PRODUCER ? "sends" : "receives");
        return -1;
    }
    char state;
    uint64_t my_start = 0;
    (void)proc_stat(me, &state, &my_start);  /* 0 if /proc is missing */
    atomic_store(start, my_start);
    atomic_store(pid, (int32_t)me);
    *mine = gen;
    return 0;
}

static long long
deadline_from(double timeout)
{
    if (timeout < 0) {
        return -1;
    }
    if (timeout == 0) {
        return 0;
    }
    return now_ns() + (long long)(timeout * 1e9) + 1;
}

/* Free the frame a recv_view() left held. */
static void
release_held(ChannelObject *self)
{
    if (self->held) {
        uint64_t tail = atomic_load_explicit(&self->sh->tail, memory_order_relaxed);
        atomic_store_explicit(&self->sh->tail, tail + self->held, memory_order_release);
        self->held = 0;
        notify(self->sh, ROLE_PRODUCER);
    }
}

/* ================================================================== */
/* Construction */

static PyObject *
channel_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *keywords[] = {"buffer", "offset", "capacity", "create", NULL};
    PyObject *buffer;
    Py_ssize_t offset = 0;
    Py_ssize_t capacity = 0;
    int create = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|nn$p:Channel", keywords,
                                     &buffer, &offset, &capacity, &create)) {
        return NULL;
    }
    if (capacity < 0 || capacity % FRAME_ALIGN != 0) {
        PyErr_Format(PyExc_ValueError,
                     "Channel capacity must be a multiple of %d bytes (0: all of the "
                     "buffer), got capacity=%zd", FRAME_ALIGN, capacity);
        return NULL;
    }
    pthread_once(&atfork_once, register_atfork);
    ChannelObject *self = (ChannelObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->weakreflist = NULL;
    self->offset = offset;
    char *p;
    if (fastio_anchor_init(&self->anchor, buffer, offset, CH_HEADER, CH_ALIGN,
                           "Channel", &p) < 0) {
        self->anchor.closed = 1;
        Py_DECREF(self);
        return NULL;
    }
    ch_header *sh = (ch_header *)p;
    Py_ssize_t room = self->anchor.view.len - offset - CH_HEADER;
    if (create) {
        if (capacity == 0) {
            capacity = room & ~(Py_ssize_t)(FRAME_ALIGN - 1);
        }
        if (capacity < 64 || capacity > room) {
            PyErr_Format(PyExc_ValueError,
                         "Channel capacity=%zd does not fit: the buffer has %zd bytes "
                         "after its %d-byte header at offset=%zd (at least 64 needed)",
                         capacity, room, CH_HEADER, offset);
            goto fail;
        }
        /* Zero everything but the magic first; publish the magic last. */
        memset((char *)sh + sizeof(uint64_t), 0, CH_HEADER - sizeof(uint64_t));
        sh->version = CH_VERSION;
        sh->header_size = CH_HEADER;
        sh->capacity = (uint64_t)capacity;
        atomic_thread_fence(memory_order_release);
        __atomic_store_n(&sh->magic, CH_MAGIC, __ATOMIC_RELEASE);
    }
    else {
        uint64_t magic = __atomic_load_n(&sh->magic, __ATOMIC_ACQUIRE);
        if (magic != CH_MAGIC || sh->version != CH_VERSION ||
            sh->header_size != CH_HEADER) {
            /* PyErr_Format has no %llx: format the magic here. */
            char found[64];
            snprintf(found, sizeof found, "magic 0x%016llx version %u",
                     (unsigned long long)magic, (unsigned)sh->version);
            PyErr_Format(PyExc_ValueError,
                         "the memory at offset=%zd holds no fastio.Channel (%s): "
                         "create it first", offset, found);
            goto fail;
        }
        if (sh->capacity < 64 || sh->capacity % FRAME_ALIGN ||
            sh->capacity > (uint64_t)room) {
            PyErr_Format(PyExc_ValueError,
                         "the Channel header at offset=%zd says capacity=%llu, but "
                         "the buffer has %zd bytes after the header",
                         offset, (unsigned long long)sh->capacity, room);
            goto fail;
        }
    }
    self->sh = sh;
    self->data = p + CH_HEADER;
    self->capacity = sh->capacity;
    return (PyObject *)self;

fail:
    fastio_anchor_close(&self->anchor);
    Py_DECREF(self);
    return NULL;
}

/* Mark this process's roles closed and wake whoever waits. */
static void
channel_close_impl(ChannelObject *self)
{
    if (self->anchor.closed || self->sh == NULL) {
        fastio_anchor_close(&self->anchor);
        return;
    }
    ch_header *sh = self->sh;
    unsigned gen = atomic_load(&fork_gen);
    int any = 0;
    if (self->producer_gen == gen) {
        atomic_store_explicit(&sh->producer_closed, 1, memory_order_release);
        any = 1;
    }
    if (self->consumer_gen == gen) {
        atomic_store_explicit(&sh->consumer_closed, 1, memory_order_release);
        any = 1;
    }
    self->held = 0;
    if (any || self->anchor.busy) {
        /* busy: a thread of ours is waiting; it sees `closed` on waking. */
        self->anchor.closed = 1;
        wake_both(sh);
    }
    fastio_anchor_close(&self->anchor);
}

static void
channel_dealloc(ChannelObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    if (self->weakreflist != NULL) {
        PyObject_ClearWeakRefs((PyObject *)self);
    }
    channel_close_impl(self);
    tp->tp_free(self);
    Py_DECREF(tp);
}

static int
channel_traverse(ChannelObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    if (self->anchor.has_view) {
        Py_VISIT(self->anchor.view.obj);
    }
    return 0;
}

/* ================================================================== */
/* Sending */

static PyObject *
raise_broken(ChannelObject *self)
{
    uint32_t how = atomic_load(&self->sh->consumer_closed);
    PyErr_SetString(PyExc_BrokenPipeError,
                    how == 2 ? "the receiving process of the Channel died"
                             : "the receiving side closed the Channel");
    return NULL;
}

/* MappingError for a SIGBUS while copying into or out of the ring (its
 * file was truncated under it). */
static PyObject *
ring_fault(ChannelObject *self, const fastio_fault *fault, const char *op)
{
    return fastio_mapping_error(fastio_state_from_type(Py_TYPE(self)), fault, op,
                                self->data, (Py_ssize_t)self->capacity, -1, -1);
}

/* Write one frame. meta may be empty. */
static PyObject *
send_frame(ChannelObject *self, uint32_t kind, const char *meta, Py_ssize_t meta_len,
           Py_buffer *payload, double timeout)
{
    if (channel_check(self) < 0) {
        return NULL;
    }
    if (self->sending) {
        PyErr_SetString(PyExc_RuntimeError,
                        "another thread is sending on this Channel (one producer)");
        return NULL;
    }
    ch_header *sh = self->sh;
    uint64_t cap = self->capacity;
    uint64_t need = frame_size((uint64_t)meta_len, (uint64_t)payload->len);
    if (need > cap) {
        PyErr_Format(PyExc_ValueError,
                     "message of %zd bytes (%llu with its framing) exceeds the "
                     "Channel capacity of %llu bytes", payload->len,
                     (unsigned long long)need, (unsigned long long)cap);
        return NULL;
    }
    if (claim(self, ROLE_PRODUCER) < 0) {
        return NULL;
    }
    if (atomic_load(&sh->consumer_closed)) {
        return raise_broken(self);
    }
    self->sending = 1;
    long long deadline = deadline_from(timeout);
    uint64_t head = atomic_load_explicit(&sh->head, memory_order_relaxed);
    uint64_t pos = head % cap;
    int r;
    if (cap - pos < need) {
        /* Not enough room before the end: a wrap marker fills the rest of
         * the lap, published alone so that a frame as large as the whole
         * ring can follow once the consumer has passed it. */
        r = channel_wait(self, ROLE_PRODUCER, cap - pos, deadline);
        if (r != R_READY) {
            goto wait_failed;
        }
        frame_hdr wrap = {0};
        wrap.kind = KIND_WRAP;
        fastio_fault fault;
        if (fastio_guarded_memmove(self->data + pos, &wrap, sizeof wrap, &fault) < 0) {
            self->sending = 0;
            return ring_fault(self, &fault, "Channel.send");
        }
        head += cap - pos;
        pos = 0;
        atomic_store_explicit(&sh->head, head, memory_order_release);
        notify(sh, ROLE_CONSUMER);
    }
    r = channel_wait(self, ROLE_PRODUCER, need, deadline);
    if (r != R_READY) {
        goto wait_failed;
    }
    char *f = self->data + pos;
    frame_hdr hdr = {0};
    hdr.kind = kind;
    hdr.meta_len = (uint32_t)meta_len;
    hdr.payload_len = (uint64_t)payload->len;
    char *dst = f + FRAME_HDR + align_up((uint64_t)meta_len, FRAME_ALIGN);
    /* Every write into the ring is guarded: a segment whose file was
     * truncated under it raises MappingError (the frame is not published).
     * A large copy releases the GIL: the anchor keeps the ring mapped and
     * `sending` keeps other threads of ours out of the producer's side. */
    fastio_fault fault;
    int rc = fastio_guarded_memmove(f, &hdr, sizeof hdr, &fault);
    if (rc == 0 && meta_len) {
        rc = fastio_guarded_memmove(f + FRAME_HDR, meta, (size_t)meta_len, &fault);
    }
    if (rc == 0) {
        fastio_anchor_enter(&self->anchor);
        rc = fastio_memcpy_guarded(dst, payload->buf, (size_t)payload->len, &fault);
        if (rc == 0 && self->anchor.closed) {
            /* Closed by another thread during the copy: leaving may drop the
             * last hold on the ring, so do not publish. */
            fastio_anchor_leave(&self->anchor);
            self->sending = 0;
            PyErr_SetString(PyExc_ValueError, "Channel is closed");
            return NULL;
        }
        if (rc == 0) {
            atomic_store_explicit(&sh->head, head + need, memory_order_release);
            notify(sh, ROLE_CONSUMER);
        }
        fastio_anchor_leave(&self->anchor);
    }
    self->sending = 0;
    if (rc < 0) {
        return ring_fault(self, &fault, "Channel.send");
    }
    Py_RETURN_NONE;

wait_failed:
    self->sending = 0;
    if (r == R_EOF) {
        return raise_broken(self);
    }
    if (r == R_TIMEOUT) {
        PyErr_SetString(PyExc_TimeoutError, "Channel.send timed out: the ring is full");
    }
    return NULL;
}

static PyObject *
channel_send_bytes(ChannelObject *self, PyObject *args, PyObject *kwds)
{
    static char *keywords[] = {"data", "timeout", NULL};
    Py_buffer data;
    PyObject *timeout_obj = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "y*|O:send_bytes", keywords, &data,
                                     &timeout_obj)) {
        return NULL;
    }
    double timeout;
    PyObject *r = NULL;
    if (fastio_parse_timeout(timeout_obj, "timeout", &timeout) == 0) {
        r = send_frame(self, KIND_BYTES, NULL, 0, &data, timeout);
    }
    PyBuffer_Release(&data);
    return r;
}

static PyObject *
channel_send_frame(ChannelObject *self, PyObject *args)
{
    unsigned int kind;
    Py_buffer meta, data;
    PyObject *timeout_obj;
    if (!PyArg_ParseTuple(args, "Iy*y*O:_send_frame", &kind, &meta, &data,
                          &timeout_obj)) {
        return NULL;
    }
    double timeout;
    PyObject *r = NULL;
    if (kind == KIND_WRAP) {
        PyErr_SetString(PyExc_ValueError, "frame kind 0 is reserved");
    }
    else if (meta.len > UINT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "frame meta too long");
    }
    else if (fastio_parse_timeout(timeout_obj, "timeout", &timeout) == 0) {
        r = send_frame(self, kind, meta.buf, meta.len, &data, timeout);
    }
    PyBuffer_Release(&meta);
    PyBuffer_Release(&data);
    return r;
}

/* ================================================================== */
/* Receiving */

/* Wait for the next frame (skipping wrap markers). 0 with *out set, or -1
 * with an exception (EOFError, TimeoutError, ValueError, ...). */
static int
next_frame(ChannelObject *self, double timeout, frame_hdr **out, uint64_t *tail_out)
{
    if (channel_check(self) < 0) {
        return -1;
    }
    if (self->receiving) {
        PyErr_SetString(PyExc_RuntimeError,
                        "another thread is receiving on this Channel (one consumer)");
        return -1;
    }
    if (claim(self, ROLE_CONSUMER) < 0) {
        return -1;
    }
    release_held(self);
    ch_header *sh = self->sh;
    uint64_t cap = self->capacity;
    long long deadline = deadline_from(timeout);
    self->receiving = 1;
    for (;;) {
        int r = channel_wait(self, ROLE_CONSUMER, 1, deadline);
        if (r != R_READY) {
            self->receiving = 0;
            if (r == R_EOF) {
                uint32_t how = atomic_load(&sh->producer_closed);
                PyErr_SetString(PyExc_EOFError,
                                how == 2 ? "the sending process of the Channel died "
                                           "(every message it sent was received)"
                                         : "the sending side closed the Channel "
                                           "(every message was received)");
            }
            else if (r == R_TIMEOUT) {
                PyErr_SetString(PyExc_TimeoutError,
                                "Channel.recv timed out: no message");
            }
            return -1;
        }
        uint64_t tail = atomic_load_explicit(&sh->tail, memory_order_relaxed);
        uint64_t pos = tail % cap;
        frame_hdr *h = (frame_hdr *)(self->data + pos);
        /* Read the header under the guard first: if its page is gone (the
         * file was truncated), MappingError instead of SIGBUS. */
        frame_hdr probe;
        fastio_fault fault;
        if (fastio_guarded_memmove(&probe, h, sizeof probe, &fault) < 0) {
            self->receiving = 0;
            ring_fault(self, &fault, "Channel.recv");
            return -1;
        }
        if (h->kind == KIND_WRAP) {
            atomic_store_explicit(&sh->tail, tail + (cap - pos), memory_order_release);
            notify(sh, ROLE_PRODUCER);
            continue;
        }
        /* The producer wrote this; a corrupted ring must not make us read
         * outside the data area. */
        uint64_t fsize = frame_size(h->meta_len, h->payload_len);
        if (h->meta_len > cap || h->payload_len > cap || fsize > cap - pos) {
            self->receiving = 0;
            PyErr_Format(PyExc_RuntimeError,
                         "Channel ring is corrupt at byte %llu (kind %u, %llu bytes)",
                         (unsigned long long)pos, h->kind,
                         (unsigned long long)h->payload_len);
            return -1;
        }
        self->receiving = 0;
        *out = h;
        *tail_out = tail;
        return 0;
    }
}

static int
parse_timeout_args(PyObject *args, PyObject *kwds, const char *fmt, double *timeout)
{
    static char *keywords[] = {"timeout", NULL};
    PyObject *timeout_obj = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, fmt, keywords, &timeout_obj)) {
        return -1;
    }
    return fastio_parse_timeout(timeout_obj, "timeout", timeout);
}

static PyObject *
frame_tuple(ChannelObject *self, frame_hdr *h)
{
    char *f = (char *)h;
    char *payload = f + FRAME_HDR + align_up(h->meta_len, FRAME_ALIGN);
    Py_ssize_t off = (Py_ssize_t)(payload - (char *)self->anchor.view.buf);
    return Py_BuildValue("(Iy#nn)", h->kind, f + FRAME_HDR, (Py_ssize_t)h->meta_len,
                         off, (Py_ssize_t)h->payload_len);
}

static PyObject *
channel_recv_frame(ChannelObject *self, PyObject *args, PyObject *kwds)
{
    double timeout;
    if (parse_timeout_args(args, kwds, "|O:_recv", &timeout) < 0) {
        return NULL;
    }
    frame_hdr *h;
    uint64_t tail;
    if (next_frame(self, timeout, &h, &tail) < 0) {
        return NULL;
    }
    uint64_t fsize = frame_size(h->meta_len, h->payload_len);
    if (h->kind == KIND_BYTES) {
        char *src = (char *)h + FRAME_HDR + align_up(h->meta_len, FRAME_ALIGN);
        PyObject *b = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)h->payload_len);
        if (b == NULL) {
            return NULL;
        }
        /* A large copy releases the GIL: keep other threads of ours off
         * the consumer's side until the frame is freed. */
        self->receiving = 1;
        fastio_anchor_enter(&self->anchor);
        fastio_fault fault;
        int rc = fastio_memcpy_guarded(PyBytes_AS_STRING(b), src, h->payload_len,
                                       &fault);
        if (rc == 0 && self->anchor.closed) {
            /* Closed by another thread during the copy: leaving may drop
             * the last hold on the ring, so do not touch its header. */
            fastio_anchor_leave(&self->anchor);
            self->receiving = 0;
            Py_DECREF(b);
            PyErr_SetString(PyExc_ValueError, "Channel is closed");
            return NULL;
        }
        if (rc < 0) {
            /* The frame stays where it is (tail unmoved). */
            ring_fault(self, &fault, "Channel.recv");
            fastio_anchor_leave(&self->anchor);
            self->receiving = 0;
            Py_DECREF(b);
            return NULL;
        }
        atomic_store_explicit(&self->sh->tail, tail + fsize, memory_order_release);
        notify(self->sh, ROLE_PRODUCER);
        fastio_anchor_leave(&self->anchor);
        self->receiving = 0;
        return b;
    }
    /* Anything else: the Python layer decodes it, then calls release(). */
    self->held = fsize;
    return frame_tuple(self, h);
}

static PyObject *
channel_recv_view(ChannelObject *self, PyObject *args, PyObject *kwds)
{
    double timeout;
    if (parse_timeout_args(args, kwds, "|O:_recv_view", &timeout) < 0) {
        return NULL;
    }
    frame_hdr *h;
    uint64_t tail;
    if (next_frame(self, timeout, &h, &tail) < 0) {
        return NULL;
    }
    self->held = frame_size(h->meta_len, h->payload_len);
    return frame_tuple(self, h);
}

static PyObject *
channel_recv_bytes(ChannelObject *self, PyObject *args, PyObject *kwds)
{
    PyObject *r = channel_recv_frame(self, args, kwds);
    if (r != NULL && !PyBytes_CheckExact(r)) {
        Py_DECREF(r);
        /* Leave the frame where it is (tail unmoved): recv() gets it next. */
        self->held = 0;
        PyErr_SetString(PyExc_TypeError,
                        "recv_bytes(): the next message is an array, not bytes; "
                        "it stays in the Channel for recv()");
        return NULL;
    }
    return r;
}

static PyObject *
channel_release(ChannelObject *self, PyObject *Py_UNUSED(ignored))
{
    if (channel_check(self) < 0) {
        return NULL;
    }
    release_held(self);
    Py_RETURN_NONE;
}

static PyObject *
channel_close(ChannelObject *self, PyObject *Py_UNUSED(ignored))
{
    channel_close_impl(self);
    Py_RETURN_NONE;
}

/* ================================================================== */
/* Attributes */

static PyObject *
channel_get_closed(ChannelObject *self, void *closure)
{
    return PyBool_FromLong(self->anchor.closed);
}

static PyObject *
channel_get_capacity(ChannelObject *self, void *closure)
{
    return PyLong_FromUnsignedLongLong(self->capacity);
}

static PyObject *
channel_get_offset(ChannelObject *self, void *closure)
{
    return PyLong_FromSsize_t(self->offset);
}

static PyObject *
channel_get_pending(ChannelObject *self, void *closure)
{
    if (channel_check(self) < 0) {
        return NULL;
    }
    return PyLong_FromUnsignedLongLong(available(self->sh, self->capacity,
                                                 ROLE_CONSUMER));
}

static PyObject *
channel_get_eof(ChannelObject *self, void *closure)
{
    if (channel_check(self) < 0) {
        return NULL;
    }
    ch_header *sh = self->sh;
    return Py_BuildValue("(II)", (unsigned)atomic_load(&sh->producer_closed),
                         (unsigned)atomic_load(&sh->consumer_closed));
}

static PyMethodDef channel_methods[] = {
    {"send_bytes", (PyCFunction)(void (*)(void))channel_send_bytes,
     METH_VARARGS | METH_KEYWORDS,
     "send_bytes($self, /, data, timeout=None)\n--\n\n"
     "Copy one bytes-like message into the ring, waiting (GIL released) while\n"
     "it is full. TimeoutError after timeout seconds; BrokenPipeError if the\n"
     "receiver closed or died."},
    {"_send_frame", (PyCFunction)channel_send_frame, METH_VARARGS,
     "_send_frame($self, kind, meta, data, timeout, /)\n--\n\n"
     "Send a frame of the given kind (>= 2) with meta bytes (Python layer)."},
    {"recv_bytes", (PyCFunction)(void (*)(void))channel_recv_bytes,
     METH_VARARGS | METH_KEYWORDS,
     "recv_bytes($self, /, timeout=None)\n--\n\n"
     "Receive the next message as bytes (a copy). EOFError once the sender\n"
     "closed or died and every message was received."},
    {"_recv", (PyCFunction)(void (*)(void))channel_recv_frame,
     METH_VARARGS | METH_KEYWORDS,
     "_recv($self, /, timeout=None)\n--\n\n"
     "bytes for a bytes message (consumed); else (kind, meta, offset, length),\n"
     "held until release()."},
    {"_recv_view", (PyCFunction)(void (*)(void))channel_recv_view,
     METH_VARARGS | METH_KEYWORDS,
     "_recv_view($self, /, timeout=None)\n--\n\n"
     "(kind, meta, offset, length) of the next message, held until the next\n"
     "receive or release()."},
    {"release", (PyCFunction)channel_release, METH_NOARGS,
     "release($self, /)\n--\n\n"
     "Give the message a recv_view() returned back to the sender; its views\n"
     "then see bytes the sender may overwrite at any time."},
    {"close", (PyCFunction)channel_close, METH_NOARGS,
     "close($self, /)\n--\n\n"
     "End this process's side(s): the receiver sees EOFError after draining,\n"
     "the sender BrokenPipeError. Idempotent."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef channel_getset[] = {
    {"closed", (getter)channel_get_closed, NULL, "True after close().", NULL},
    {"capacity", (getter)channel_get_capacity, NULL, "Ring size in bytes.", NULL},
    {"offset", (getter)channel_get_offset, NULL, "Byte offset in the buffer.", NULL},
    {"pending", (getter)channel_get_pending, NULL,
     "Bytes of framed messages not yet received.", NULL},
    {"_closed_flags", (getter)channel_get_eof, NULL,
     "(producer, consumer): 0 open, 1 closed, 2 died.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef channel_members[] = {
    {"__weaklistoffset__", T_PYSSIZET, offsetof(ChannelObject, weakreflist), READONLY,
     NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyType_Slot channel_slots[] = {
    {Py_tp_new, channel_new},
    {Py_tp_dealloc, channel_dealloc},
    {Py_tp_traverse, channel_traverse},
    {Py_tp_methods, channel_methods},
    {Py_tp_getset, channel_getset},
    {Py_tp_members, channel_members},
    {Py_tp_doc,
     "Channel(buffer, offset=0, capacity=0, *, create=True)\n--\n\n"
     "The C core of fastio.Channel: a single-producer single-consumer ring in\n"
     "a shared buffer (HEADER bytes of header, then capacity bytes)."},
    {0, NULL},
};

static PyType_Spec channel_spec = {
    .name = "fastio._core.Channel",
    .basicsize = sizeof(ChannelObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .slots = channel_slots,
};

int
fastio_channel_exec(PyObject *module, fastio_state *st)
{
    if (fastio_add_type(module, &channel_spec, NULL, &st->channel_type) < 0) {
        return -1;
    }
    PyObject *v = PyLong_FromLong(CH_HEADER);
    if (v == NULL) {
        return -1;
    }
    int rc = PyObject_SetAttrString((PyObject *)st->channel_type, "HEADER", v);
    Py_DECREF(v);
    return rc;
}
