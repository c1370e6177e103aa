/* module.c: fastio._core, multi-phase init (PEP 489).
 *
 * Creates the heap types each file defines, the library's exceptions and the
 * constants of the stdlib mmap module (same names, same values), so that
 * fastio can stand in for `mmap` in code written against the stdlib.
 */
#include "fastio.h"

#include <sys/mman.h>
#include <unistd.h>

static struct PyModuleDef fastio_module;

fastio_state *
fastio_get_state(PyObject *module)
{
    return (fastio_state *)PyModule_GetState(module);
}

fastio_state *
fastio_state_from_type(PyTypeObject *tp)
{
    /* PyType_GetModuleByDef is 3.11+; walk the MRO ourselves so that a
     * Python subclass of one of our types finds the defining module. */
    PyObject *mro = tp->tp_mro;
    Py_ssize_t n = mro ? PyTuple_GET_SIZE(mro) : 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyTypeObject *t = (PyTypeObject *)PyTuple_GET_ITEM(mro, i);
        if (!PyType_HasFeature(t, Py_TPFLAGS_HEAPTYPE)) {
            continue;
        }
        PyObject *mod = ((PyHeapTypeObject *)t)->ht_module;
        if (mod != NULL && PyModule_GetDef(mod) == &fastio_module) {
            return fastio_get_state(mod);
        }
    }
    return NULL;
}

/* ------------------------------------------------------------------ */
/* Constants */

typedef struct {
    const char *name;
    long value;
} fastio_constant;

static const fastio_constant constants[] = {
    /* access modes: the stdlib's values */
    {"ACCESS_DEFAULT", 0}, {"ACCESS_READ", 1}, {"ACCESS_WRITE", 2},
    {"ACCESS_COPY", 3},
    {"PROT_READ", PROT_READ}, {"PROT_WRITE", PROT_WRITE}, {"PROT_EXEC", PROT_EXEC},
    {"MAP_SHARED", MAP_SHARED}, {"MAP_PRIVATE", MAP_PRIVATE},
    {"MAP_ANON", MAP_ANONYMOUS}, {"MAP_ANONYMOUS", MAP_ANONYMOUS},
#ifdef MAP_DENYWRITE
    {"MAP_DENYWRITE", MAP_DENYWRITE},
#endif
#ifdef MAP_EXECUTABLE
    {"MAP_EXECUTABLE", MAP_EXECUTABLE},
#endif
#ifdef MAP_POPULATE
    {"MAP_POPULATE", MAP_POPULATE},
#endif
#ifdef MAP_STACK
    {"MAP_STACK", MAP_STACK},
#endif
#ifdef MAP_32BIT
    /* Python 3.13's mmap module has it too. */
    {"MAP_32BIT", MAP_32BIT},
#endif
#ifdef MAP_NORESERVE
    {"MAP_NORESERVE", MAP_NORESERVE},
#endif
#ifdef MAP_HUGETLB
    {"MAP_HUGETLB", MAP_HUGETLB},
#endif
#ifdef MAP_LOCKED
    {"MAP_LOCKED", MAP_LOCKED},
#endif
    {"MADV_NORMAL", MADV_NORMAL}, {"MADV_RANDOM", MADV_RANDOM},
    {"MADV_SEQUENTIAL", MADV_SEQUENTIAL}, {"MADV_WILLNEED", MADV_WILLNEED},
    {"MADV_DONTNEED", MADV_DONTNEED},
#ifdef MADV_REMOVE
    {"MADV_REMOVE", MADV_REMOVE},
#endif
#ifdef MADV_DONTFORK
    {"MADV_DONTFORK", MADV_DONTFORK}, {"MADV_DOFORK", MADV_DOFORK},
#endif
#ifdef MADV_HWPOISON
    {"MADV_HWPOISON", MADV_HWPOISON},
#endif
#ifdef MADV_MERGEABLE
    {"MADV_MERGEABLE", MADV_MERGEABLE}, {"MADV_UNMERGEABLE", MADV_UNMERGEABLE},
#endif
#ifdef MADV_HUGEPAGE
    {"MADV_HUGEPAGE", MADV_HUGEPAGE}, {"MADV_NOHUGEPAGE", MADV_NOHUGEPAGE},
#endif
#ifdef MADV_DONTDUMP
    {"MADV_DONTDUMP", MADV_DONTDUMP}, {"MADV_DODUMP", MADV_DODUMP},
#endif
#ifdef MADV_FREE
    {"MADV_FREE", MADV_FREE},
#endif
    /* Newer advice values: defined by number where an old libc header lacks
     * them; the kernel answers EINVAL if it does not know one. */
    {"MADV_WIPEONFORK", 18}, {"MADV_KEEPONFORK", 19},
    {"MADV_COLD", 20}, {"MADV_PAGEOUT", 21},
    {"MADV_POPULATE_READ", 22}, {"MADV_POPULATE_WRITE", 23},
    {"MADV_DONTNEED_LOCKED", 24}, {"MADV_COLLAPSE", 25},
    {"MS_ASYNC", MS_ASYNC}, {"MS_SYNC", MS_SYNC}, {"MS_INVALIDATE", MS_INVALIDATE},
    {NULL, 0},
};

/* ------------------------------------------------------------------ */
/* Module lifecycle */

int
fastio_add_type(PyObject *module, PyType_Spec *spec, PyObject *bases,
         PyTypeObject **slot)
{
    PyObject *tp = PyType_FromModuleAndSpec(module, spec, bases);
    if (tp == NULL) {
        return -1;
    }
    *slot = (PyTypeObject *)tp;
    return PyModule_AddType(module, (PyTypeObject *)tp);
}

/* Make every type of the module immutable (Py_TPFLAGS_IMMUTABLETYPE, as
 * CPython's own extension types are): `fastio._core.mmap.read = f` would
 * otherwise change the class for every user in the process, subinterpreters
 * included. Python subclasses (fastio.mmap, fastio.SharedMemory, ...) stay
 * ordinary mutable classes, and so do the exception classes. Done once, after every exec hook, rather than
 * in each spec, because some hooks set class constants after creating
 * their type (Lock.SIZE, Channel.HEADER), which an immutable type refuses.
 * The state holds every type (its fields are all objects: see fastio.h). */
static void
freeze_types(fastio_state *st)
{
    PyObject **field = (PyObject **)st;
    for (size_t i = 0; i < sizeof(*st) / sizeof(PyObject *); i++) {
        /* The exception classes stay as PyErr_NewException makes them
         * (mutable, like every such class of CPython's own modules). */
        if (field[i] != NULL && PyType_Check(field[i])
                && !PyType_IsSubtype((PyTypeObject *)field[i],
                                     (PyTypeObject *)PyExc_BaseException)) {
            PyTypeObject *tp = (PyTypeObject *)field[i];
            tp->tp_flags |= Py_TPFLAGS_IMMUTABLETYPE;
            PyType_Modified(tp);
        }
    }
}

static int
fastio_exec(PyObject *module)
{
    fastio_state *st = fastio_get_state(module);
    long ps = sysconf(_SC_PAGESIZE);
    if (ps > 0) {
        fastio_pagesize = ps;
    }
    fastio_pages_init();

    st->FastIOError = PyErr_NewExceptionWithDoc(
        "fastio.FastIOError",
        "Base class of the exceptions fastio defines itself; each also "
        "inherits the built-in exception that fits.",
        NULL, NULL);
    if (st->FastIOError == NULL ||
        PyModule_AddObjectRef(module, "FastIOError", st->FastIOError) < 0) {
        return -1;
    }
    /* The stdlib's mmap.error is OSError itself. */
    if (PyModule_AddObjectRef(module, "error", PyExc_OSError) < 0) {
        return -1;
    }

    if (fastio_add_type(module, &fastio_mmap_spec, NULL, &st->mmap_type) < 0 ||
        fastio_add_type(module, &fastio_buffer_spec, NULL, &st->buffer_type) < 0) {
        return -1;
    }
    /* The mmap iterator is not a module attribute (the stdlib's is not
     * either): only the state holds it. */
    st->mmap_iter_type = (PyTypeObject *)PyType_FromModuleAndSpec(
        module, &fastio_mmap_iter_spec, NULL);
    if (st->mmap_iter_type == NULL) {
        return -1;
    }

    for (const fastio_constant *c = constants; c->name != NULL; c++) {
        if (PyModule_AddIntConstant(module, c->name, c->value) < 0) {
            return -1;
        }
    }
    if (PyModule_AddIntConstant(module, "PAGESIZE", fastio_pagesize) < 0 ||
        PyModule_AddIntConstant(module, "ALLOCATIONGRANULARITY", fastio_pagesize) < 0 ||
        /* The uapi value (fastio.h), for the Python layer's uncached=True. */
        PyModule_AddIntConstant(module, "_RWF_DONTCACHE", RWF_DONTCACHE) < 0) {
        return -1;
    }
    if (PyModule_AddFunctions(module, fastio_rw_methods) < 0 ||
        PyModule_AddFunctions(module, fastio_memory_methods) < 0 ||
        PyModule_AddFunctions(module, fastio_transfer_methods) < 0 ||
        PyModule_AddFunctions(module, fastio_readfiles_methods) < 0) {
        return -1;
    }
    if (fastio_shm_exec(module, st) < 0 ||
        fastio_sysv_exec(module, st) < 0 ||
        fastio_sync_exec(module, st) < 0 ||
        fastio_channel_exec(module, st) < 0 ||
        fastio_aio_exec(module, st) < 0 ||
        fastio_sigbus_exec(module, st) < 0 ||
        fastio_lab_exec(module, st) < 0) {
        return -1;
    }
    freeze_types(st);
    return 0;
}

static int
fastio_traverse(PyObject *module, visitproc visit, void *arg)
{
    fastio_state *st = fastio_get_state(module);
    PyObject **field = (PyObject **)st;
    for (size_t i = 0; i < sizeof(*st) / sizeof(PyObject *); i++) {
        Py_VISIT(field[i]);
    }
    return 0;
}

static int
fastio_clear(PyObject *module)
{
    fastio_state *st = fastio_get_state(module);
    PyObject **field = (PyObject **)st;
    for (size_t i = 0; i < sizeof(*st) / sizeof(PyObject *); i++) {
        Py_CLEAR(field[i]);
    }
    return 0;
}

static void
fastio_free(void *module)
{
    fastio_clear((PyObject *)module);
}

static PyModuleDef_Slot fastio_slots[] = {
    {Py_mod_exec, fastio_exec},
#ifdef Py_mod_gil
    /* Free-threaded CPython (3.13t+): the module runs without the GIL, so
     * `import fastio` leaves it off. Each object keeps its state consistent
     * under a critical section on itself instead (every method and buffer
     * slot, fastio.h's FASTIO_LOCKED_*), the region counters are atomic
     * there, and the few process-wide caches have locks of their own
     * (docs/freethreading.md has the model). The slot exists on 3.13+ of
     * both builds; a default build ignores it. */
    {Py_mod_gil, Py_MOD_GIL_NOT_USED},
#endif
    {0, NULL},
};

static struct PyModuleDef fastio_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "fastio._core",
    .m_doc = "fastio's C core: syscalls and memory lifetimes. Import fastio, "
             "not this module.",
    .m_size = sizeof(fastio_state),
    .m_slots = fastio_slots,
    .m_traverse = fastio_traverse,
    .m_clear = fastio_clear,
    .m_free = fastio_free,
};

PyMODINIT_FUNC
PyInit__core(void)
{
    return PyModuleDef_Init(&fastio_module);
}
