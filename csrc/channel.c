/* channel.c: a single-producer single-consumer ring in shared memory.
 *
 * The ring lives in any writable buffer shared by two processes (an
 * anonymous MAP_SHARED mapping inherited through fork, a file in /dev/shm, a
 * SharedMemory). This file owns the memory protocol and the waiting; the
 * Python layer (fastio/sync.py) owns policy: where the memory comes from and
 * how numpy arrays are framed (C never imports numpy).
 *
 * Layout (version 2): a 256-byte header, then `capacity` bytes of data.
 *   line 0: tag (magic "FCHN" | state INIT/LIVE, see fastio.h: claimed by
 *           one compare-and-swap, so creating over a live Channel is
 *           FileExistsError), version, header size, capacity (written
 *           once by the creator, read once by an attacher)
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

#define CH_VERSION 2u
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
    _Atomic uint64_t tag;  /* FASTIO_TAG(FASTIO_MAGIC_CHANNEL, INIT or LIVE) */
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
/* Guarded access to the shared header
 *
 * The ring may live in a file (a /dev/shm file, a SharedMemory) that
 * another process truncates; touching a vanished page raises SIGBUS. Every
 * load and store of the shared header, and every wait on it, runs through
 * ring_run() under the SIGBUS guard (ring_call, or fastio_guarded_call in a
 * GIL-released block), and every copy into or out of the data area through
 * the guarded copies: a vanished page is fastio.MappingError. ring_run()
 * only loads, stores and makes futex / sched_yield system calls, so the
 * guard's jump can abandon it anywhere (a *_waiting flag left up costs the
 * peer one futex wake).
 *
 * Values read from the header are read once, into the op, and the caller
 * uses only that copy: the peer (buggy or hostile) may change the header
 * at any time, so a value checked and then read again is not the value
 * checked. */
enum {
    RING_CHECK,       /* out: avail (to role), closed (the peer's flag) */
    RING_WAIT,        /* wait_slice(role, need, slice_end, spin); out: w */
    RING_PID,         /* out: pid, start recorded for role */
    RING_PEER_DIED,   /* the peer of role died: its flag = 2; out: avail */
    RING_SET_OWN,     /* record pid, start for role */
    RING_INDEX,       /* out: index = role's own index (head or tail) */
    RING_PUBLISH,     /* role's index = index (release), then notify the peer */
    RING_FLAGS,       /* out: pflag, cflag (producer_closed, consumer_closed) */
    RING_CLOSE,       /* set the flags of the roles in pflag/cflag, wake both */
    RING_INIT,        /* zero the header after the tag, write line 0 */
    RING_LINE0,       /* out: version, header_size, capacity */
};

typedef struct {
    int op;
    ch_header *sh;
    uint64_t cap;
    int role;
    uint64_t need;
    long long slice_end;
    int spin;
    int w;
    uint64_t avail;
    int closed;
    int32_t pid;
    uint64_t start;
    uint64_t index;
    uint32_t pflag, cflag;
    uint32_t version, header_size;
    uint64_t capacity;
} ring_op;

static void
ring_run(void *arg)
{
    ring_op *o = arg;
    ch_header *sh = o->sh;
    int producer = o->role == ROLE_PRODUCER;
    switch (o->op) {
    case RING_CHECK:
        o->avail = available(sh, o->cap, o->role);
        o->closed = peer_closed(sh, o->role);
        break;
    case RING_WAIT:
        o->w = wait_slice(sh, o->cap, o->role, o->need, o->slice_end, o->spin);
        break;
    case RING_PID:
        o->pid = atomic_load(producer ? &sh->producer_pid : &sh->consumer_pid);
        o->start = atomic_load(producer ? &sh->producer_start : &sh->consumer_start);
        break;
    case RING_PEER_DIED:
        atomic_store(producer ? &sh->consumer_closed : &sh->producer_closed, 2);
        o->avail = available(sh, o->cap, o->role);
        break;
    case RING_SET_OWN:
        atomic_store(producer ? &sh->producer_start : &sh->consumer_start, o->start);
        atomic_store(producer ? &sh->producer_pid : &sh->consumer_pid, o->pid);
        break;
    case RING_INDEX:
        /* Our own index: only our side writes it (relaxed). */
        o->index = atomic_load_explicit(producer ? &sh->head : &sh->tail,
                                        memory_order_relaxed);
        break;
    case RING_PUBLISH:
        atomic_store_explicit(producer ? &sh->head : &sh->tail, o->index,
                              memory_order_release);
        notify(sh, producer ? ROLE_CONSUMER : ROLE_PRODUCER);
        break;
    case RING_FLAGS:
        o->pflag = atomic_load_explicit(&sh->producer_closed, memory_order_acquire);
        o->cflag = atomic_load_explicit(&sh->consumer_closed, memory_order_acquire);
        break;
    case RING_CLOSE:
        if (o->pflag) {
            atomic_store_explicit(&sh->producer_closed, 1, memory_order_release);
        }
        if (o->cflag) {
            atomic_store_explicit(&sh->consumer_closed, 1, memory_order_release);
        }
        wake_both(sh);
        break;
    case RING_INIT:
        /* Everything after the tag (the claim set it to INIT). */
        memset((char *)sh + sizeof(uint64_t), 0, CH_HEADER - sizeof(uint64_t));
        sh->version = CH_VERSION;
        sh->header_size = CH_HEADER;
        sh->capacity = o->capacity;
        break;
    case RING_LINE0:
        o->version = sh->version;
        o->header_size = sh->header_size;
        o->capacity = sh->capacity;
        break;
    }
}

/* MappingError for a SIGBUS while touching the ring (its file was
 * truncated under it). */
static PyObject *
ring_fault(ChannelObject *self, const fastio_fault *fault, const char *op)
{
    return fastio_mapping_error(fastio_state_from_type(Py_TYPE(self)), fault, op,
                                (const char *)self->sh,
                                (Py_ssize_t)(CH_HEADER + self->capacity), -1, -1);
}

/* With the GIL: run `o` on self's header under the guard. 0, or -1 with
 * MappingError. */
static int
ring_call(ChannelObject *self, ring_op *o, const char *opname)
{
    fastio_fault fault;
    o->sh = self->sh;
    o->cap = self->capacity;
    if (fastio_guarded_call(ring_run, o, &fault) < 0) {
        ring_fault(self, &fault, opname);
        return -1;
    }
    return 0;
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
 * the header). R_ERROR: an exception is set (own close, signal, fault). */
static int
channel_wait(ChannelObject *self, int role, uint64_t need, long long deadline_ns,
             const char *opname)
{
    ring_op o = {.op = RING_CHECK, .role = role, .need = need};
    if (ring_call(self, &o, opname) < 0) {
        return R_ERROR;
    }
    if (o.avail >= need) {
        return R_READY;
    }
    if (o.closed) {
        return R_EOF;
    }
    if (deadline_ns == 0) {
        return R_TIMEOUT;
    }
    fastio_anchor_enter(&self->anchor);
    o.spin = 1;
    int result;
    for (;;) {
        long long slice_end = now_ns() + WAIT_SLICE_NS;
        if (deadline_ns > 0 && deadline_ns < slice_end) {
            slice_end = deadline_ns;
        }
        o.op = RING_WAIT;
        o.slice_end = slice_end;
        int g;
        fastio_fault fault;
        Py_BEGIN_ALLOW_THREADS
        g = fastio_guarded_call(ring_run, &o, &fault);
        Py_END_ALLOW_THREADS
        if (g < 0) {
            ring_fault(self, &fault, opname);
            result = R_ERROR;
            break;
        }
        int w = o.w;
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
        o.spin = w == W_WOKEN;
        if (w == W_SLICE) {
            /* A futex cannot tell that the peer died: look at its pid. */
            ring_op peer = {.op = RING_PID, .role = 1 - role};  /* the other role */
            if (ring_call(self, &peer, opname) < 0) {
                result = R_ERROR;
                break;
            }
            pid_t p = peer.pid;
            if (p > 0 && p != getpid() && !process_alive(p, peer.start)) {
                o.op = RING_PEER_DIED;
                if (ring_call(self, &o, opname) < 0) {
                    result = R_ERROR;
                    break;
                }
                /* Data the dead producer published stays receivable. */
                result = o.avail >= need ? R_READY : R_EOF;
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
claim(ChannelObject *self, int role, const char *opname)
{
    unsigned gen = atomic_load_explicit(&fork_gen, memory_order_relaxed);
    unsigned *mine = role == ROLE_PRODUCER ? &self->producer_gen : &self->consumer_gen;
    if (*mine == gen) {
        return 0;
    }
    pid_t me = getpid();
    ring_op o = {.op = RING_PID, .role = role};
    if (ring_call(self, &o, opname) < 0) {
        return -1;
    }
    pid_t other = o.pid;
    if (other > 0 && other != me && process_alive(other, o.start)) {
        PyErr_Format(PyExc_RuntimeError,
                     "Channel is single-producer single-consumer: process %d "
                     "already %s on it", (int)other,
                     role == ROLE_PRODUCER ? "sends" : "receives");
        return -1;
    }
    char state;
    uint64_t my_start = 0;
    (void)proc_stat(me, &state, &my_start);  /* 0 if /proc is missing */
    o.op = RING_SET_OWN;
    o.pid = (int32_t)me;
    o.start = my_start;
    if (ring_call(self, &o, opname) < 0) {
        return -1;
    }
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
    /* fastio_parse_timeout bounds timeout by FASTIO_TIMEOUT_MAX (1e9 s):
     * 1e18 ns plus the monotonic clock stays inside a long long. */
    return now_ns() + (long long)(timeout * 1e9) + 1;
}

/* Free the frame a recv_view() left held. 0, or -1 with MappingError. */
static int
release_held(ChannelObject *self, const char *opname)
{
    if (self->held == 0) {
        return 0;
    }
    uint64_t held = self->held;
    self->held = 0;
    ring_op o = {.op = RING_INDEX, .role = ROLE_CONSUMER};
    if (ring_call(self, &o, opname) < 0) {
        return -1;
    }
    o.op = RING_PUBLISH;
    o.index += held;
    return ring_call(self, &o, opname);
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
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|O&n$p:Channel", keywords,
                                     &buffer, fastio_offset_converter, &offset,
                                     &capacity, &create)) {
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
    self->sh = sh;
    self->capacity = 0;  /* ring_fault's extent until the capacity is known */
    Py_ssize_t room = self->anchor.view.len - offset - CH_HEADER;
    ring_op o = {0};
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
        /* Claim the tag (state INIT): a second creator over a live Channel
         * gets FileExistsError instead of zeroing its indices under it. */
        if (fastio_tag_claim(type, &sh->tag, FASTIO_MAGIC_CHANNEL, "Channel", offset,
                             CH_HEADER, NULL, NULL) < 0) {
            goto fail;
        }
        o.op = RING_INIT;
        o.capacity = (uint64_t)capacity;
        if (ring_call(self, &o, "Channel") < 0) {
            fastio_tag_finish(type, &sh->tag, FASTIO_MAGIC_CHANNEL, 0, CH_HEADER, NULL, 0);
            goto fail;
        }
        /* Publish last (release): an attacher that sees LIVE sees line 0. */
        if (fastio_tag_finish(type, &sh->tag, FASTIO_MAGIC_CHANNEL, 1, CH_HEADER, NULL,
                              0) < 0) {
            goto fail;
        }
    }
    else {
        if (fastio_tag_check(type, &sh->tag, &sh->version, FASTIO_MAGIC_CHANNEL,
                             CH_VERSION, "Channel", offset, CH_HEADER) < 0) {
            goto fail;
        }
        /* Line 0 read once: the capacity checked is the capacity used. */
        o.op = RING_LINE0;
        if (ring_call(self, &o, "Channel.attach") < 0) {
            goto fail;
        }
        if (o.header_size != CH_HEADER || o.capacity < 64 ||
            o.capacity % FRAME_ALIGN || o.capacity > (uint64_t)room) {
            PyErr_Format(PyExc_ValueError,
                         "the Channel header at offset=%zd says capacity=%llu "
                         "(header %u bytes), but the buffer has %zd bytes after "
                         "the header", offset, (unsigned long long)o.capacity,
                         (unsigned)o.header_size, room);
            goto fail;
        }
        capacity = (Py_ssize_t)o.capacity;
    }
    self->data = p + CH_HEADER;
    self->capacity = (uint64_t)capacity;
    return (PyObject *)self;

fail:
    fastio_anchor_close(&self->anchor);
    Py_DECREF(self);
    return NULL;
}

/* Mark this process's roles closed and wake whoever waits. Safe twice, from
 * any thread and from a finalizer: `closed` is set before anything else,
 * and nothing here runs Python code until the anchor lets go. */
static void
channel_close_impl(ChannelObject *self)
{
    if (self->anchor.closed || self->sh == NULL) {
        fastio_anchor_close(&self->anchor);
        return;
    }
    unsigned gen = atomic_load(&fork_gen);
    ring_op o = {.op = RING_CLOSE};
    o.pflag = self->producer_gen == gen;
    o.cflag = self->consumer_gen == gen;
    self->held = 0;
    int busy = self->anchor.busy != 0;
    self->anchor.closed = 1;
    if (o.pflag || o.cflag || busy) {
        /* busy: a thread of ours is waiting; it sees `closed` on waking.
         * A fault (the ring's file truncated) leaves nothing to wake. */
        o.sh = self->sh;
        o.cap = self->capacity;
        (void)fastio_guarded_call(ring_run, &o, NULL);
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
raise_broken(ChannelObject *self, const char *opname)
{
    ring_op o = {.op = RING_FLAGS};
    if (ring_call(self, &o, opname) < 0) {
        return NULL;
    }
    PyErr_SetString(PyExc_BrokenPipeError,
                    o.cflag == 2 ? "the receiving process of the Channel died"
                                 : "the receiving side closed the Channel");
    return NULL;
}

/* Write one frame. meta may be empty. meta and payload are the caller's
 * buffers, held (and so pinned) by the caller for the whole call. */
static PyObject *
send_frame(ChannelObject *self, uint32_t kind, const char *meta, Py_ssize_t meta_len,
           Py_buffer *payload, double timeout)
{
    const char *op = "Channel.send";
    if (channel_check(self) < 0) {
        return NULL;
    }
    if (self->sending) {
        PyErr_SetString(PyExc_RuntimeError,
                        "another thread is sending on this Channel (one producer "
                        "at a time)");
        return NULL;
    }
    uint64_t cap = self->capacity;
    uint64_t need = frame_size((uint64_t)meta_len, (uint64_t)payload->len);
    if (need > cap) {
        PyErr_Format(PyExc_ValueError,
                     "message of %zd bytes (%llu with its framing) exceeds the "
                     "Channel capacity of %llu bytes", payload->len,
                     (unsigned long long)need, (unsigned long long)cap);
        return NULL;
    }
    /* Busy from here to every return: nothing below runs Python code with
     * `sending` clear, and another thread of ours gets RuntimeError. */
    self->sending = 1;
    PyObject *result = NULL;
    if (claim(self, ROLE_PRODUCER, op) < 0) {
        goto done;
    }
    ring_op o = {.op = RING_FLAGS};
    if (ring_call(self, &o, op) < 0) {
        goto done;
    }
    if (o.cflag) {
        raise_broken(self, op);
        goto done;
    }
    long long deadline = deadline_from(timeout);
    /* head is read once; every position below derives from this copy and
     * is bounded by cap, whatever the peer writes into the header. */
    o.op = RING_INDEX;
    o.role = ROLE_PRODUCER;
    if (ring_call(self, &o, op) < 0) {
        goto done;
    }
    uint64_t head = o.index;
    uint64_t pos = head % cap;
    int r;
    fastio_fault fault;
    if (cap - pos < need) {
        /* Not enough room before the end: a wrap marker fills the rest of
         * the lap, published alone so that a frame as large as the whole
         * ring can follow once the consumer has passed it. */
        r = channel_wait(self, ROLE_PRODUCER, cap - pos, deadline, op);
        if (r != R_READY) {
            goto wait_failed;
        }
        frame_hdr wrap = {0};
        wrap.kind = KIND_WRAP;
        if (fastio_guarded_memmove(self->data + pos, &wrap, sizeof wrap, &fault) < 0) {
            ring_fault(self, &fault, op);
            goto done;
        }
        head += cap - pos;
        pos = 0;
        o.op = RING_PUBLISH;
        o.index = head;
        if (ring_call(self, &o, op) < 0) {
            goto done;
        }
    }
    r = channel_wait(self, ROLE_PRODUCER, need, deadline, op);
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
    int rc = fastio_guarded_memmove(f, &hdr, sizeof hdr, &fault);
    if (rc == 0 && meta_len) {
        rc = fastio_guarded_memmove(f + FRAME_HDR, meta, (size_t)meta_len, &fault);
    }
    if (rc < 0) {
        ring_fault(self, &fault, op);
        goto done;
    }
    fastio_anchor_enter(&self->anchor);
    rc = fastio_memcpy_guarded(dst, payload->buf, (size_t)payload->len, &fault);
    if (rc == 0 && self->anchor.closed) {
        /* Closed by another thread during the copy: leaving may drop the
         * last hold on the ring, so do not publish. */
        PyErr_SetString(PyExc_ValueError, "Channel is closed");
    }
    else if (rc < 0) {
        ring_fault(self, &fault, op);
    }
    else {
        o.op = RING_PUBLISH;
        o.index = head + need;
        if (ring_call(self, &o, op) == 0) {
            result = Py_NewRef(Py_None);
        }
    }
    fastio_anchor_leave(&self->anchor);
    goto done;

wait_failed:
    if (r == R_EOF) {
        raise_broken(self, op);
    }
    else if (r == R_TIMEOUT) {
        PyErr_SetString(PyExc_TimeoutError, "Channel.send timed out: the ring is full");
    }
done:
    self->sending = 0;
    return result;
}

/* The timeout (and _send_frame's kind) is converted before the buffers
 * are taken: __float__ / __index__ can run Python code, and nothing of
 * the call is held then. */
static PyObject *
channel_send_bytes(ChannelObject *self, PyObject *args, PyObject *kwds)
{
    static char *keywords[] = {"data", "timeout", NULL};
    PyObject *data_obj;
    PyObject *timeout_obj = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|O:send_bytes", keywords, &data_obj,
                                     &timeout_obj)) {
        return NULL;
    }
    double timeout;
    Py_buffer data;
    if (fastio_parse_timeout(timeout_obj, "timeout", &timeout) < 0 ||
        PyObject_GetBuffer(data_obj, &data, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    PyObject *r = send_frame(self, KIND_BYTES, NULL, 0, &data, timeout);
    PyBuffer_Release(&data);
    return r;
}

static PyObject *
channel_send_frame(ChannelObject *self, PyObject *args)
{
    PyObject *kind_obj, *meta_obj, *data_obj, *timeout_obj;
    if (!PyArg_ParseTuple(args, "OOOO:_send_frame", &kind_obj, &meta_obj, &data_obj,
                          &timeout_obj)) {
        return NULL;
    }
    /* KIND_WRAP (0) marks the ring's wrap, never a message. */
    long long kind;
    double timeout;
    if (fastio_int_arg(kind_obj, "kind", KIND_WRAP + 1, UINT32_MAX, &kind) < 0 ||
        fastio_parse_timeout(timeout_obj, "timeout", &timeout) < 0) {
        return NULL;
    }
    Py_buffer meta, data;
    if (PyObject_GetBuffer(meta_obj, &meta, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    if (PyObject_GetBuffer(data_obj, &data, PyBUF_SIMPLE) < 0) {
        PyBuffer_Release(&meta);
        return NULL;
    }
    PyObject *r = NULL;
    if (meta.len > UINT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "frame meta too long");
    }
    else {
        r = send_frame(self, (uint32_t)kind, meta.buf, meta.len, &data, timeout);
    }
    PyBuffer_Release(&meta);
    PyBuffer_Release(&data);
    return r;
}

/* ================================================================== */
/* Receiving */

/* The next frame: its header copied out of the ring once and validated;
 * only this copy is used afterwards. */
typedef struct {
    frame_hdr h;
    uint64_t tail;     /* the consumer index the frame starts at */
    uint64_t pos;      /* tail % capacity */
    uint64_t size;     /* frame_size(h.meta_len, h.payload_len) */
} frame_at;

/* Wait for the next frame (skipping wrap markers). The caller has set
 * `receiving`. 0 with *out set, or -1 with an exception (EOFError,
 * TimeoutError, ValueError, MappingError, RuntimeError). */
static int
next_frame(ChannelObject *self, double timeout, frame_at *out, const char *op)
{
    if (claim(self, ROLE_CONSUMER, op) < 0 || release_held(self, op) < 0) {
        return -1;
    }
    uint64_t cap = self->capacity;
    long long deadline = deadline_from(timeout);
    for (;;) {
        int r = channel_wait(self, ROLE_CONSUMER, 1, deadline, op);
        if (r != R_READY) {
            if (r == R_EOF) {
                ring_op o = {.op = RING_FLAGS};
                if (ring_call(self, &o, op) == 0) {
                    PyErr_SetString(PyExc_EOFError,
                                    o.pflag == 2
                                        ? "the sending process of the Channel died "
                                          "(every message it sent was received)"
                                        : "the sending side closed the Channel "
                                          "(every message was received)");
                }
            }
            else if (r == R_TIMEOUT) {
                PyErr_SetString(PyExc_TimeoutError,
                                "Channel.recv timed out: no message");
            }
            return -1;
        }
        ring_op o = {.op = RING_INDEX, .role = ROLE_CONSUMER};
        if (ring_call(self, &o, op) < 0) {
            return -1;
        }
        uint64_t tail = o.index;
        uint64_t pos = tail % cap;
        /* One copy of the header, under the guard; the peer may rewrite the
         * ring's bytes at any time, so validate and use only the copy. A
         * frame header never straddles the end: frames are 16-aligned and
         * cap a multiple of 16. */
        frame_hdr h;
        fastio_fault fault;
        if (fastio_guarded_memmove(&h, self->data + pos, sizeof h, &fault) < 0) {
            ring_fault(self, &fault, op);
            return -1;
        }
        if (h.kind == KIND_WRAP) {
            o.op = RING_PUBLISH;
            o.index = tail + (cap - pos);
            if (ring_call(self, &o, op) < 0) {
                return -1;
            }
            continue;
        }
        /* The producer wrote this; a corrupted ring must not make us read
         * outside the data area. */
        uint64_t fsize = h.meta_len > cap || h.payload_len > cap
                             ? UINT64_MAX : frame_size(h.meta_len, h.payload_len);
        if (fsize > cap - pos) {
            PyErr_Format(PyExc_RuntimeError,
                         "Channel ring is corrupt at byte %llu (kind %u, %llu bytes)",
                         (unsigned long long)pos, h.kind,
                         (unsigned long long)h.payload_len);
            return -1;
        }
        out->h = h;
        out->tail = tail;
        out->pos = pos;
        out->size = fsize;
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

/* The consumer's side is busy from the first look at the ring to the
 * return: another thread of ours gets RuntimeError instead of freeing or
 * re-reading the frame this one is copying (with the GIL released). */
static int
recv_enter(ChannelObject *self)
{
    if (channel_check(self) < 0) {
        return -1;
    }
    if (self->receiving) {
        PyErr_SetString(PyExc_RuntimeError,
                        "another thread is receiving on this Channel (one consumer "
                        "at a time)");
        return -1;
    }
    self->receiving = 1;
    return 0;
}

/* The frame's meta bytes, copied out of the ring under the guard. */
static PyObject *
frame_meta(ChannelObject *self, const frame_at *fr, const char *op)
{
    PyObject *meta = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)fr->h.meta_len);
    if (meta == NULL) {
        return NULL;
    }
    fastio_fault fault;
    if (fastio_guarded_memmove(PyBytes_AS_STRING(meta), self->data + fr->pos + FRAME_HDR,
                               fr->h.meta_len, &fault) < 0) {
        Py_DECREF(meta);
        return ring_fault(self, &fault, op);
    }
    return meta;
}

static char *
frame_payload(ChannelObject *self, const frame_at *fr)
{
    return self->data + fr->pos + FRAME_HDR + align_up(fr->h.meta_len, FRAME_ALIGN);
}

/* Receive and consume the next message, copied: bytes for a bytes message;
 * else (kind, meta, bytearray) when `any_kind` (the Python layer makes the
 * array), or TypeError leaving the message in place. */
static PyObject *
recv_copy(ChannelObject *self, double timeout, int any_kind)
{
    const char *op = "Channel.recv";
    if (recv_enter(self) < 0) {
        return NULL;
    }
    PyObject *meta = NULL, *payload = NULL, *result = NULL;
    frame_at fr;
    if (next_frame(self, timeout, &fr, op) < 0) {
        goto done;
    }
    int is_bytes = fr.h.kind == KIND_BYTES;
    if (!is_bytes && !any_kind) {
        /* Leave the frame where it is (tail unmoved): recv() gets it next. */
        PyErr_SetString(PyExc_TypeError,
                        "recv_bytes(): the next message is an array, not bytes; "
                        "it stays in the Channel for recv()");
        goto done;
    }
    if (!is_bytes && (meta = frame_meta(self, &fr, op)) == NULL) {
        goto done;
    }
    /* fr.h.payload_len <= capacity, which fits a Py_ssize_t (a buffer). */
    Py_ssize_t n = (Py_ssize_t)fr.h.payload_len;
    payload = is_bytes ? PyBytes_FromStringAndSize(NULL, n)
                       : PyByteArray_FromStringAndSize(NULL, n);
    if (payload == NULL) {
        goto done;
    }
    char *dst = is_bytes ? PyBytes_AS_STRING(payload) : PyByteArray_AS_STRING(payload);
    /* A large copy releases the GIL: the anchor keeps the ring mapped,
     * `receiving` keeps other threads of ours off the consumer's side. */
    fastio_anchor_enter(&self->anchor);
    fastio_fault fault;
    int rc = fastio_memcpy_guarded(dst, frame_payload(self, &fr), (size_t)n, &fault);
    if (rc == 0 && self->anchor.closed) {
        /* Closed by another thread during the copy: leaving may drop the
         * last hold on the ring, so do not touch its header. */
        PyErr_SetString(PyExc_ValueError, "Channel is closed");
    }
    else if (rc < 0) {
        ring_fault(self, &fault, op);  /* the frame stays (tail unmoved) */
    }
    else {
        ring_op o = {.op = RING_PUBLISH, .role = ROLE_CONSUMER,
                     .index = fr.tail + fr.size};
        if (ring_call(self, &o, op) == 0) {
            result = is_bytes ? Py_NewRef(payload)
                              : Py_BuildValue("(IOO)", fr.h.kind, meta, payload);
        }
    }
    fastio_anchor_leave(&self->anchor);
done:
    self->receiving = 0;
    Py_XDECREF(meta);
    Py_XDECREF(payload);
    return result;
}

static PyObject *
channel_recv_frame(ChannelObject *self, PyObject *args, PyObject *kwds)
{
    double timeout;
    if (parse_timeout_args(args, kwds, "|O:_recv", &timeout) < 0) {
        return NULL;
    }
    return recv_copy(self, timeout, 1);
}

static PyObject *
channel_recv_bytes(ChannelObject *self, PyObject *args, PyObject *kwds)
{
    double timeout;
    if (parse_timeout_args(args, kwds, "|O:recv_bytes", &timeout) < 0) {
        return NULL;
    }
    return recv_copy(self, timeout, 0);
}

static PyObject *
channel_recv_view(ChannelObject *self, PyObject *args, PyObject *kwds)
{
    const char *op = "Channel.recv_view";
    double timeout;
    if (parse_timeout_args(args, kwds, "|O:_recv_view", &timeout) < 0) {
        return NULL;
    }
    if (recv_enter(self) < 0) {
        return NULL;
    }
    PyObject *result = NULL;
    frame_at fr;
    if (next_frame(self, timeout, &fr, op) == 0) {
        PyObject *meta = frame_meta(self, &fr, op);
        if (meta != NULL) {
            Py_ssize_t off = (Py_ssize_t)(frame_payload(self, &fr) -
                                          (char *)self->anchor.view.buf);
            result = Py_BuildValue("(INnn)", fr.h.kind, meta, off,
                                   (Py_ssize_t)fr.h.payload_len);
            if (result != NULL) {
                self->held = fr.size;  /* freed by the next receive or release() */
            }
        }
    }
    self->receiving = 0;
    return result;
}

static PyObject *
channel_release(ChannelObject *self, PyObject *Py_UNUSED(ignored))
{
    if (channel_check(self) < 0) {
        return NULL;
    }
    if (self->receiving) {
        /* Another thread is inside a receive: it already freed the held
         * frame and may be copying the next one. */
        PyErr_SetString(PyExc_RuntimeError,
                        "another thread is receiving on this Channel (one consumer "
                        "at a time)");
        return NULL;
    }
    if (release_held(self, "Channel.release") < 0) {
        return NULL;
    }
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
    ring_op o = {.op = RING_CHECK, .role = ROLE_CONSUMER};
    if (ring_call(self, &o, "Channel.pending") < 0) {
        return NULL;
    }
    return PyLong_FromUnsignedLongLong(o.avail);
}

static PyObject *
channel_get_eof(ChannelObject *self, void *closure)
{
    if (channel_check(self) < 0) {
        return NULL;
    }
    ring_op o = {.op = RING_FLAGS};
    if (ring_call(self, &o, "Channel._closed_flags") < 0) {
        return NULL;
    }
    return Py_BuildValue("(II)", (unsigned)o.pflag, (unsigned)o.cflag);
}

/* Run inside a critical section on self (fastio.h, docs/freethreading.md). */
FASTIO_LOCKED_KW(channel_send_bytes)
FASTIO_LOCKED_O(channel_send_frame)
FASTIO_LOCKED_KW(channel_recv_bytes)
FASTIO_LOCKED_KW(channel_recv_frame)
FASTIO_LOCKED_KW(channel_recv_view)
FASTIO_LOCKED_O(channel_release)
FASTIO_LOCKED_O(channel_close)

static PyMethodDef channel_methods[] = {
    {"send_bytes", (PyCFunction)(void (*)(void))channel_send_bytes_locked,
     METH_VARARGS | METH_KEYWORDS,
     "send_bytes($self, /, data, timeout=None)\n--\n\n"
     "Copy one bytes-like message into the ring, waiting (GIL released) while\n"
     "it is full. TimeoutError after timeout seconds; BrokenPipeError if the\n"
     "receiver closed or died."},
    {"_send_frame", (PyCFunction)channel_send_frame_locked, METH_VARARGS,
     "_send_frame($self, kind, meta, data, timeout, /)\n--\n\n"
     "Send a frame of the given kind (>= 2) with meta bytes (Python layer)."},
    {"recv_bytes", (PyCFunction)(void (*)(void))channel_recv_bytes_locked,
     METH_VARARGS | METH_KEYWORDS,
     "recv_bytes($self, /, timeout=None)\n--\n\n"
     "Receive the next message as bytes (a copy). EOFError once the sender\n"
     "closed or died and every message was received."},
    {"_recv", (PyCFunction)(void (*)(void))channel_recv_frame_locked,
     METH_VARARGS | METH_KEYWORDS,
     "_recv($self, /, timeout=None)\n--\n\n"
     "The next message, consumed: bytes for a bytes message, else\n"
     "(kind, meta, bytearray payload) for the Python layer to decode."},
    {"_recv_view", (PyCFunction)(void (*)(void))channel_recv_view_locked,
     METH_VARARGS | METH_KEYWORDS,
     "_recv_view($self, /, timeout=None)\n--\n\n"
     "(kind, meta, offset, length) of the next message, held until the next\n"
     "receive or release()."},
    {"release", (PyCFunction)channel_release_locked, METH_NOARGS,
     "release($self, /)\n--\n\n"
     "Give the message a recv_view() returned back to the sender; its views\n"
     "then see bytes the sender may overwrite at any time."},
    {"close", (PyCFunction)channel_close_locked, METH_NOARGS,
     "close($self, /)\n--\n\n"
     "End this process's side(s): the receiver sees EOFError after draining,\n"
     "the sender BrokenPipeError. Idempotent."},
    {NULL, NULL, 0, NULL},
};

/* Run inside a critical section on self (fastio.h, docs/freethreading.md). */
FASTIO_LOCKED_GET(channel_get_closed)
FASTIO_LOCKED_GET(channel_get_capacity)
FASTIO_LOCKED_GET(channel_get_offset)
FASTIO_LOCKED_GET(channel_get_pending)
FASTIO_LOCKED_GET(channel_get_eof)

static PyGetSetDef channel_getset[] = {
    {"closed", (getter)channel_get_closed_locked, NULL, "True after close().", NULL},
    {"capacity", (getter)channel_get_capacity_locked, NULL, "Ring size in bytes.", NULL},
    {"offset", (getter)channel_get_offset_locked, NULL, "Byte offset in the buffer.", NULL},
    {"pending", (getter)channel_get_pending_locked, NULL,
     "Bytes of framed messages not yet received.", NULL},
    {"_closed_flags", (getter)channel_get_eof_locked, NULL,
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
