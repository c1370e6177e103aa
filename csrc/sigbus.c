/* sigbus.c: a SIGBUS inside fastio's own copies becomes an exception.
 *
 * Touching a page of a file mapping that the file no longer covers (the
 * file was truncated under the map, or a sparse file's filesystem could not
 * allocate the block) makes the kernel send SIGBUS, whose default action
 * kills the process. fastio's accessors run their copies, searches and
 * loads through the guarded helpers below. A process-wide SIGBUS handler,
 * installed when the module is executed, looks at a per-thread guard: if
 * the faulting thread is inside a guarded helper, the handler siglongjmps
 * back into that helper, which returns -1 with the fault described; the
 * caller raises fastio.MappingError once it holds the GIL again. A SIGBUS
 * anywhere else goes to the handler that was installed before ours
 * (faulthandler, a sanitizer, or the default action), as if fastio were not
 * there.
 *
 * Why the helpers are functions, not a macro around the caller's code: the
 * sigsetjmp then sits in a small frame that lives exactly as long as the
 * guarded operation, no caller local can be clobbered by the longjmp (no
 * volatile, no -Wclobbered), and a caller that released the GIL gets a plain
 * return value inside its Py_BEGIN/END_ALLOW_THREADS block: the jump never
 * crosses the GIL macros.
 */
#include "fastio.h"

#include <setjmp.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef BUS_MCEERR_AR
#define BUS_MCEERR_AR 4
#endif
#ifndef BUS_MCEERR_AO
#define BUS_MCEERR_AO 5
#endif

/* ------------------------------------------------------------------ */
/* The per-thread guard */

typedef struct guard {
    sigjmp_buf env;
    struct guard *outer;        /* the enclosing guard of this thread */
    const char *volatile addr;  /* filled by the handler */
    volatile int code;
} guard;

/* The innermost active guard of this thread, or NULL.
 *
 * initial-exec: the handler reads it, and a dlopen()ed module's TLS in the
 * default (global-dynamic) model may be allocated lazily by
 * __tls_get_addr, with malloc, on a thread's first access; that first
 * access could be inside the signal handler, where malloc is forbidden.
 * initial-exec TLS lives in the static TLS block (one pointer of glibc's
 * surplus), read with one %fs-relative load. */
static _Thread_local guard *current_guard
    __attribute__((tls_model("initial-exec")));

/* Keep the compiler from moving the stores that publish or retire a guard
 * across the guarded code: the handler runs on this thread, so a signal
 * fence (no CPU fence) is enough. */
#define SIGNAL_FENCE() __atomic_signal_fence(__ATOMIC_SEQ_CST)

/* The guard's entry and exit, inside the sigsetjmp's zero branch: the guard
 * is published only once its jump buffer is filled. The jump buffer is
 * saved without the signal mask (sigsetjmp(env, 0)): saving it costs a
 * sigprocmask system call on every m[i]. The handler is installed with SA_NODEFER and an empty
 * sa_mask, so the kernel blocks nothing while it runs and there is no mask
 * to restore; the handler still unblocks SIGBUS before jumping, for the case
 * where a handler in front of ours re-raised it with SIGBUS blocked. */
#define GUARD_ENTER(g)                \
    do {                              \
        (g).outer = current_guard;    \
        (g).addr = NULL;              \
        (g).code = 0;                 \
        SIGNAL_FENCE();               \
        current_guard = &(g);         \
        SIGNAL_FENCE();               \
    } while (0)

#define GUARD_LEAVE(g)                \
    do {                              \
        SIGNAL_FENCE();               \
        current_guard = (g).outer;    \
        SIGNAL_FENCE();               \
    } while (0)

static void
fill_fault(const guard *g, fastio_fault *fault)
{
    if (fault != NULL) {
        fault->addr = g->addr;
        fault->code = g->code;
    }
}

int
fastio_guarded_call(void (*fn)(void *arg), void *arg, fastio_fault *fault)
{
    guard g;
    if (sigsetjmp(g.env, 0) == 0) {
        GUARD_ENTER(g);
        fn(arg);
        GUARD_LEAVE(g);
        return 0;
    }
    /* Back from the handler: it already retired the guard. */
    fill_fault(&g, fault);
    return -1;
}

int
fastio_guarded_memmove(void *dst, const void *src, size_t n, fastio_fault *fault)
{
    guard g;
    if (sigsetjmp(g.env, 0) == 0) {
        GUARD_ENTER(g);
        memmove(dst, src, n);
        GUARD_LEAVE(g);
        return 0;
    }
    fill_fault(&g, fault);
    return -1;
}

int
fastio_guarded_memchr(const void *s, int c, size_t n, const void **hit,
                      fastio_fault *fault)
{
    guard g;
    if (sigsetjmp(g.env, 0) == 0) {
        GUARD_ENTER(g);
        *hit = memchr(s, c, n);
        GUARD_LEAVE(g);
        return 0;
    }
    fill_fault(&g, fault);
    return -1;
}

int
fastio_guarded_memmem(const void *hay, size_t hlen, const void *needle,
                      size_t nlen, const void **hit, fastio_fault *fault)
{
    guard g;
    if (sigsetjmp(g.env, 0) == 0) {
        GUARD_ENTER(g);
        *hit = memmem(hay, hlen, needle, nlen);
        GUARD_LEAVE(g);
        return 0;
    }
    fill_fault(&g, fault);
    return -1;
}

/* ------------------------------------------------------------------ */
/* The handler */

/* What was installed for SIGBUS before us: the handler we chain to. Written
 * once, before ours is installed, and never again. */
static struct sigaction previous_action;
static int handler_installed;

/* Whether this SIGBUS is one the guard should take. */
static int
guard_takes(const siginfo_t *si)
{
    if (si->si_code > 0) {
        /* Sent by the kernel for an access of this thread (BUS_ADRERR:
         * past the end of the file or no block to back the page;
         * BUS_MCEERR_AR: a hardware memory error on the page accessed).
         * BUS_MCEERR_AO is an asynchronous notice about some page of the
         * process, not a fault of the guarded access: not ours. */
        return si->si_code != BUS_MCEERR_AO;
    }
    /* Re-raised in this thread, by this process: a handler installed in
     * front of ours (faulthandler.enable() after fastio's import) saw the
     * fault first, restored ours and called raise(SIGBUS). A SIGBUS sent
     * from elsewhere (kill -BUS) is not a fault of the guarded access. */
    return si->si_code == SI_TKILL && si->si_pid == getpid();
}

/* Our own action, kept so that chain() can put it back (async-signal-safe:
 * sigaction). Written once, before the handler is installed. */
static struct sigaction our_action;

/* Whether the kernel will deliver this SIGBUS again when the handler
 * returns: a synchronous fault (BUS_ADRERR, BUS_OBJERR, BUS_MCEERR_AR...)
 * re-executes the faulting instruction and faults again. A signal sent by
 * kill/raise/sigqueue (si_code <= 0) and BUS_MCEERR_AO (an asynchronous
 * notice that some page of the process is poisoned) do not repeat. */
static int
repeats(const siginfo_t *si)
{
    return si->si_code > 0 && si->si_code != BUS_MCEERR_AO;
}

/* Pass the signal on to the handler installed before ours, so that a
 * SIGBUS outside any guard behaves as if fastio were not there. */
static void
chain(int sig, siginfo_t *si, void *uc)
{
    const struct sigaction *prev = &previous_action;
    if (prev->sa_flags & SA_SIGINFO) {
        prev->sa_sigaction(sig, si, uc);
        return;
    }
    if (prev->sa_handler == SIG_IGN && !repeats(si)) {
        /* An ignored SIGBUS that was sent, or an AO notice (the kernel
         * sends those without forcing them): it stays ignored. */
        return;
    }
    if (prev->sa_handler == SIG_DFL || prev->sa_handler == SIG_IGN) {
        /* The default action, death with a core dump. (A fault's SIGBUS
         * cannot be ignored: the kernel resets an ignored one to the
         * default, so SIG_IGN dies here too, as it would without us.)
         * Restore the default. */
        struct sigaction dfl;
        memset(&dfl, 0, sizeof dfl);
        dfl.sa_handler = SIG_DFL;
        sigemptyset(&dfl.sa_mask);
        sigaction(sig, &dfl, NULL);
        if (repeats(si)) {
            /* A fault happens again when we return (the same instruction
             * re-executes), so the core shows the real faulting address. */
            return;
        }
        /* A sent signal or a BUS_MCEERR_AO does not come back by itself
         * (issue 12, finding 14: returning here left the process alive
         * with the guard silently gone). Re-raise it under the default
         * action: SA_NODEFER leaves SIGBUS unblocked, so it is delivered
         * before raise() returns and the process dies as it would have
         * without fastio. raise() can return all the same: when SIGBUS is
         * blocked (a handler in front of ours ran with it blocked: it stays
         * pending and kills at the unblock), or when the process is the
         * init of a PID namespace (a container's PID 1), for which the
         * kernel drops a default-action signal it sends itself. Then the
         * process lives on, and it must keep its guard: put our action
         * back. (The pending case is then delivered to us again, with
         * si_code SI_TKILL and no guard active for it, and comes back
         * here: the default action again, and this time it is delivered.) */
        raise(sig);
        sigaction(sig, &our_action, NULL);
        return;
    }
    prev->sa_handler(sig);
}

static void
sigbus_handler(int sig, siginfo_t *si, void *uc)
{
    int saved_errno = errno;
    guard *g = current_guard;
    if (g != NULL && guard_takes(si)) {
        g->addr = si->si_code > 0 ? (const char *)si->si_addr : NULL;
        g->code = si->si_code;
        /* Retire the guard here: the helper resumes past its own exit. */
        current_guard = g->outer;
        /* Our sigaction blocks nothing, but a handler in front of ours may
         * have run with SIGBUS blocked before re-raising it. Unblocking is
         * async-signal-safe (sigprocmask) and this path is rare. */
        sigset_t set;
        sigemptyset(&set);
        sigaddset(&set, SIGBUS);
        pthread_sigmask(SIG_UNBLOCK, &set, NULL);
        errno = saved_errno;
        siglongjmp(g->env, 1);
    }
    errno = saved_errno;
    chain(sig, si, uc);
}

/* Install our handler in front of whatever handles SIGBUS now. Once per
 * process (several interpreters share one handler). Called with the GIL. */
static int
install_handler(void)
{
    if (handler_installed) {
        return 0;
    }
    /* Read the previous action before installing ours, so that it is in
     * place before ours can run and chain to it. */
    if (sigaction(SIGBUS, NULL, &previous_action) < 0) {
        return -errno;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = sigbus_handler;
    sigemptyset(&sa.sa_mask);
    /* SA_NODEFER: the guard's jump buffer holds no signal mask (see
     * GUARD_ENTER), so the kernel must not block SIGBUS while we run; it
     * also lets a chained handler's raise(SIGBUS) take effect at once, as
     * faulthandler expects. SA_ONSTACK: run on the thread's alternate stack
     * when it has one (faulthandler sets one up), as faulthandler would. */
    sa.sa_flags = SA_SIGINFO | SA_NODEFER | SA_ONSTACK;
    our_action = sa;
    if (sigaction(SIGBUS, &sa, NULL) < 0) {
        return -errno;
    }
    handler_installed = 1;
    return 0;
}

/* Whether a SIGBUS now goes to our handler first (no other handler was
 * installed in front of ours since, e.g. by signal.signal(SIGBUS, ...),
 * whose handler would return into the faulting copy forever). For callers
 * that can do without a guard (mapcopy.c: pread instead). */
int
fastio_sigbus_guard_ready(void)
{
    struct sigaction now;
    return handler_installed && sigaction(SIGBUS, NULL, &now) == 0 &&
           (now.sa_flags & SA_SIGINFO) && now.sa_sigaction == sigbus_handler;
}

/* ------------------------------------------------------------------ */
/* The exception */

PyObject *
fastio_mapping_error(fastio_state *st, const fastio_fault *fault,
                     const char *op, const char *data, Py_ssize_t size,
                     int fd, long long file_offset)
{
    PyObject *exc_type = (st != NULL && st->MappingError != NULL)
                             ? st->MappingError : PyExc_OSError;
    /* Where in the map the lost page starts, when the kernel said (a
     * re-raise by another handler carries no address). The page, not the
     * byte: which byte of the page faults first depends on how libc's
     * memmove or memchr loads (overlapping or aligned wide loads), while the
     * page is what the file lost. Clamped to the map's start, which need
     * not be page-aligned. */
    Py_ssize_t where = -1;
    if (fault->addr != NULL && data != NULL) {
        uintptr_t page = (uintptr_t)fastio_pagesize;
        uintptr_t a = (uintptr_t)fault->addr & ~(page - 1);
        uintptr_t lo = (uintptr_t)data;
        if (a >= (lo & ~(page - 1)) && a < lo + (uintptr_t)size) {
            where = a > lo ? (Py_ssize_t)(a - lo) : 0;
        }
    }
    /* Whether the file still covers the page: fstat says why it faulted. */
    long long file_size = -1;
    if (fd >= 0) {
        struct stat stbuf;
        if (fstat(fd, &stbuf) == 0 && S_ISREG(stbuf.st_mode)) {
            file_size = (long long)stbuf.st_size;
        }
    }
    int err;
    PyObject *msg;
    if (fault->code == BUS_MCEERR_AR) {
        err = EIO;
        msg = where >= 0
            ? PyUnicode_FromFormat("hardware memory error in the map at offset "
                                   "%zd of %zd (%s)", where, size, op)
            : PyUnicode_FromFormat("hardware memory error in the map (%s)", op);
    }
    else if (where >= 0 && file_size >= 0 && file_offset + where >= file_size) {
        err = EFAULT;
        msg = PyUnicode_FromFormat(
            "mapped file shrank under the map: offset %zd of %zd is past the "
            "file's end (%s)", where, size, op);
    }
    else if (where < 0 && file_size >= 0 && file_offset + size > file_size) {
        err = EFAULT;
        msg = PyUnicode_FromFormat(
            "mapped file shrank under the map: it now ends at offset %lld of "
            "%zd (%s)", file_size > file_offset ? file_size - file_offset : 0,
            size, op);
    }
    else if (where >= 0 && file_size >= 0) {
        /* The file covers the page, yet the kernel could not provide it:
         * a sparse file's block could not be allocated (disk full, quota)
         * or could not be read. */
        err = EIO;
        msg = PyUnicode_FromFormat(
            "the file could not back the mapped page at offset %zd of %zd "
            "(filesystem full, quota, or I/O error) (%s)", where, size, op);
    }
    else if (where >= 0) {
        err = EFAULT;
        msg = PyUnicode_FromFormat(
            "SIGBUS at offset %zd of %zd of the map: its memory is no longer "
            "backed (%s)", where, size, op);
    }
    else {
        /* The fault hit the other side of the copy (a buffer over another
         * mapping), or came without an address. */
        err = EFAULT;
        msg = PyUnicode_FromFormat(
            "SIGBUS during the copy: a mapped page it touched is no longer "
            "backed by its file (%s)", op);
    }
    if (msg == NULL) {
        return NULL;
    }
    PyObject *exc = PyObject_CallFunction(exc_type, "iO", err, msg);
    Py_DECREF(msg);
    if (exc == NULL) {
        return NULL;
    }
    /* Where the lost page starts in the map, or None: for programs that
     * recover (valid() tells whether the whole map is covered again). */
    PyObject *off = where >= 0 ? PyLong_FromSsize_t(where) : Py_NewRef(Py_None);
    if (off == NULL || PyObject_SetAttrString(exc, "offset", off) < 0) {
        Py_XDECREF(off);
        Py_DECREF(exc);
        return NULL;
    }
    Py_DECREF(off);
    PyErr_SetObject(exc_type, exc);
    Py_DECREF(exc);
    return NULL;
}

/* ------------------------------------------------------------------ */
/* Module exec */

int
fastio_sigbus_exec(PyObject *module, fastio_state *st)
{
    PyObject *bases = PyTuple_Pack(2, st->FastIOError, PyExc_OSError);
    if (bases == NULL) {
        return -1;
    }
    st->MappingError = PyErr_NewExceptionWithDoc(
        "fastio.MappingError",
        "A mapped page could not be accessed by one of fastio's own copies\n"
        "(SIGBUS): the mapped file shrank under the map, or its filesystem\n"
        "could not back the page. errno is EFAULT (past the file's end) or\n"
        "EIO; .offset is where in the map the lost page starts, or None.",
        bases, NULL);
    Py_DECREF(bases);
    if (st->MappingError == NULL ||
        PyModule_AddObjectRef(module, "MappingError", st->MappingError) < 0) {
        return -1;
    }
    int err = install_handler();
    if (err < 0) {
        fastio_oserror(err, "sigaction SIGBUS", NULL);
        return -1;
    }
    return 0;
}
