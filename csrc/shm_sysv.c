/* shm_sysv.c: ftok / shmget / shmat / shmdt / shmctl: System V shared memory.
 *
 * fastio._core.SysVSharedMemory is one attach (shmat) of a segment. Its
 * memory lives in a fastio_region of kind FASTIO_MEM_SHMAT, so the detach
 * (shmdt) waits for the last numpy array or memoryview over it, as the
 * munmap of the other types does. Removing the segment (IPC_RMID) is a
 * separate act, decided by fastio/shm.py (the creator's ownership).
 */
#include "fastio.h"

#include <limits.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/mman.h>
#include <sys/shm.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef SHM_HUGETLB
#define SHM_HUGETLB 04000
#endif

typedef struct {
    PyObject_HEAD
    fastio_region region;
    key_t key;
    int shmid;
    Py_ssize_t size;        /* the segment's size, kept after close */
    PyObject *weakreflist;
} SysvObject;

#define CLOSED_MSG "operation on a closed (detached) SysVSharedMemory"

/* ================================================================== */
/* Syscall helpers: return 0 (or an id) or -errno. */

static int
sys_shmget(key_t key, size_t size, int flags)
{
    int id = shmget(key, size, flags);
    return id < 0 ? -errno : id;
}

static int
sys_shmctl(int shmid, int cmd, struct shmid_ds *ds)
{
    return shmctl(shmid, cmd, ds) < 0 ? -errno : 0;
}

/* ================================================================== */
/* Construction */

PyDoc_STRVAR(sysv_doc,
"SysVSharedMemory(key, size=0, *, create=False, mode=0o600, hugepages=False, "
"readonly=False, by_id=False)\n--\n\n"
"One attach (shmat) of a System V segment (the C core of\n"
"fastio.SysVSharedMemory). key is an int key (0: IPC_PRIVATE, always a\n"
"new segment), or with by_id=True a segment id. create uses\n"
"IPC_CREAT|IPC_EXCL with `mode`; hugepages adds SHM_HUGETLB; readonly\n"
"attaches SHM_RDONLY. The segment's real size is mapped. If the attach\n"
"fails after a create, the segment is removed again.");

static PyObject *
sysv_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *keywords[] = {"key", "size", "create", "mode", "hugepages",
                               "readonly", "by_id", NULL};
    PyObject *key_obj;
    long long key_ll;
    Py_ssize_t size = 0;
    int create = 0, hugepages = 0, readonly = 0, by_id = 0;
    PyObject *mode_obj = NULL;
    unsigned int mode = 0600;
    /* mode is an object, not "I": "I" truncates without a check, so
     * mode=2**32+0o777 would have been taken as 0o777. */
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|n$pOppp:SysVSharedMemory",
                                     keywords, &key_obj, &size, &create, &mode_obj,
                                     &hugepages, &readonly, &by_id)) {
        return NULL;
    }
    if (mode_obj != NULL) {
        long long m;
        if (fastio_int_arg(mode_obj, "mode", 0, 0777, &m) < 0) {
            return NULL;
        }
        mode = (unsigned int)m;
    }
    /* A key is a 32-bit pattern (given signed or unsigned), an id an int
     * >= 0: anything else is refused by name, never truncated. */
    if (fastio_int_arg(key_obj, by_id ? "id" : "key", by_id ? 0 : INT32_MIN,
                       by_id ? INT32_MAX : UINT32_MAX, &key_ll) < 0) {
        return NULL;
    }
    if (size < 0 || (create && size == 0)) {
        PyErr_Format(PyExc_ValueError,
                     "%s needs size %s 0, got size=%zd",
                     create ? "creating a segment" : "attaching",
                     create ? ">" : ">=", size);
        return NULL;
    }
    if (create && (readonly || by_id)) {
        PyErr_SetString(PyExc_ValueError,
                        readonly ? "create=True with readonly=True would make a "
                                   "segment no one can fill"
                                 : "create=True takes a key, not by_id=True");
        return NULL;
    }
    key_t key = (key_t)(int32_t)(uint32_t)key_ll;

    SysvObject *self = (SysvObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->shmid = -1;
    self->key = key;

    int shmid = -1, err = 0;
    const char *failed = NULL;
    void *base = NULL;
    struct shmid_ds ds;
    Py_ssize_t existing = -1;
    Py_BEGIN_ALLOW_THREADS
    if (by_id) {
        shmid = (int)key_ll;
    }
    else {
        /* The mode only matters to a create: for an attach shmget would
         * check it as the access wanted (a read-only attacher asking 0600
         * of a 0644 segment would be refused); shmat checks the real one. */
        int flags = 0;
        if (create) {
            flags |= IPC_CREAT | IPC_EXCL | (int)mode;
        }
        if (hugepages) {
            flags |= SHM_HUGETLB;
        }
        shmid = sys_shmget(key, (size_t)size, flags);
        if (shmid < 0) {
            err = shmid;
            failed = "shmget";
            if (err == -EINVAL && !create) {
                /* Most often: the key exists, smaller than asked. */
                int id = shmget(key, 0, 0);
                if (id >= 0 && shmctl(id, IPC_STAT, &ds) == 0) {
                    existing = (Py_ssize_t)ds.shm_segsz;
                }
            }
        }
    }
    if (err == 0) {
        base = shmat(shmid, NULL, readonly ? SHM_RDONLY : 0);
        if (base == (void *)-1) {
            err = -errno;
            failed = "shmat";
            base = NULL;
        }
        else if ((err = sys_shmctl(shmid, IPC_STAT, &ds)) < 0) {
            failed = "shmctl IPC_STAT";
            shmdt(base);
            base = NULL;
        }
    }
    if (err < 0 && create && shmid >= 0) {
        /* Our exclusive create must not outlive the failure. */
        shmctl(shmid, IPC_RMID, NULL);
    }
    Py_END_ALLOW_THREADS

    if (err < 0) {
        if (existing >= 0 && existing < size) {
            PyErr_Format(PyExc_ValueError,
                         "System V key=0x%x exists with size %zd, smaller than "
                         "size=%zd", (unsigned int)key, existing, size);
        }
        else {
            fastio_oserror(err, failed, NULL);
        }
        Py_DECREF(self);
        return NULL;
    }
    size_t segsz = ds.shm_segsz;
    size_t page = (size_t)fastio_pagesize;
    self->shmid = shmid;
    self->key = ds.shm_perm.__key;
    self->size = (Py_ssize_t)segsz;
    self->region.base = base;
    self->region.alloc_size = (segsz + page - 1) & ~(page - 1);
    self->region.data = base;
    self->region.size = (Py_ssize_t)segsz;
    self->region.kind = FASTIO_MEM_SHMAT;
    self->region.readonly = readonly;
    return (PyObject *)self;
}

/* ================================================================== */
/* Lifetime and methods */

static void
sysv_dealloc(SysvObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    if (self->weakreflist != NULL) {
        PyObject_ClearWeakRefs((PyObject *)self);
    }
    fastio_region_free(&self->region);  /* shmdt */
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static int
sysv_traverse(SysvObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    return 0;
}

PyDoc_STRVAR(sysv_close_doc,
"close($self, /)\n--\n\n"
"Detach (shmdt). Safe while numpy arrays or memoryviews use the memory:\n"
"the detach waits for the last of them. Does not remove the segment.\n"
"Idempotent.");

static PyObject *
sysv_close(SysvObject *self, PyObject *Py_UNUSED(ignored))
{
    fastio_region_close(&self->region);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(sysv_remove_doc,
"remove($self, /)\n--\n\n"
"Mark the segment for removal (shmctl IPC_RMID): it is destroyed when the\n"
"last process detaches; its key is free at once. Works after close().");

static PyObject *
sysv_remove(SysvObject *self, PyObject *Py_UNUSED(ignored))
{
    int err = sys_shmctl(self->shmid, IPC_RMID, NULL);
    if (err < 0) {
        return fastio_oserror(err, "shmctl IPC_RMID", NULL);
    }
    Py_RETURN_NONE;
}

/* The shmid_ds fields as a tuple; fastio/shm.py names them. */
static PyObject *
stat_tuple(int shmid)
{
    struct shmid_ds ds;
    int err = sys_shmctl(shmid, IPC_STAT, &ds);
    if (err < 0) {
        return fastio_oserror(err, "shmctl IPC_STAT", NULL);
    }
    return Py_BuildValue(
        "(nnllLLLIIIIII)",
        (Py_ssize_t)ds.shm_segsz, (Py_ssize_t)ds.shm_nattch,
        (long)ds.shm_cpid, (long)ds.shm_lpid,
        (long long)ds.shm_atime, (long long)ds.shm_dtime, (long long)ds.shm_ctime,
        (unsigned int)ds.shm_perm.mode, (unsigned int)ds.shm_perm.uid,
        (unsigned int)ds.shm_perm.gid, (unsigned int)ds.shm_perm.cuid,
        (unsigned int)ds.shm_perm.cgid, (unsigned int)(uint32_t)ds.shm_perm.__key);
}

PyDoc_STRVAR(sysv_stat_doc,
"stat($self, /)\n--\n\n"
"shmctl(IPC_STAT): (size, nattch, cpid, lpid, atime, dtime, ctime, mode,\n"
"uid, gid, cuid, cgid, key). fastio.SysVSharedMemory.stat() names them.");

static PyObject *
sysv_stat(SysvObject *self, PyObject *Py_UNUSED(ignored))
{
    /* docs/shm.md: every method of a closed segment raises ValueError (the
     * id may name a removed segment, or another one since). */
    if (self->region.closed) {
        PyErr_SetString(PyExc_ValueError, CLOSED_MSG);
        return NULL;
    }
    return stat_tuple(self->shmid);
}

static PyObject *
lock_or_unlock(SysvObject *self, int lock)
{
    if (self->region.closed) {
        PyErr_SetString(PyExc_ValueError, CLOSED_MSG);
        return NULL;
    }
    int err = sys_shmctl(self->shmid, lock ? SHM_LOCK : SHM_UNLOCK, NULL);
    if (err < 0) {
        return fastio_oserror(err, lock ? "shmctl SHM_LOCK" : "shmctl SHM_UNLOCK",
                              NULL);
    }
    Py_RETURN_NONE;
}

PyDoc_STRVAR(sysv_lock_doc,
"lock($self, /)\n--\n\n"
"shmctl(SHM_LOCK): keep the segment's pages in RAM (never swapped). Needs\n"
"CAP_IPC_LOCK or room under RLIMIT_MEMLOCK (PermissionError/OSError).");

static PyObject *
sysv_lock(SysvObject *self, PyObject *Py_UNUSED(ignored))
{
    return lock_or_unlock(self, 1);
}

PyDoc_STRVAR(sysv_unlock_doc,
"unlock($self, /)\n--\n\n"
"shmctl(SHM_UNLOCK).");

static PyObject *
sysv_unlock(SysvObject *self, PyObject *Py_UNUSED(ignored))
{
    return lock_or_unlock(self, 0);
}

PyDoc_STRVAR(sysv_populate_doc,
"populate($self, /)\n--\n\n"
"Fault every page in now (MADV_POPULATE_WRITE, or READ when read-only).");

/* The segment as pages.c sees it: no file behind it. */
static fastio_pages
sysv_pages(SysvObject *self)
{
    fastio_pages pg = {(PyObject *)self, &self->region, CLOSED_MSG, NULL, 0};
    return pg;
}

static PyObject *
sysv_populate(SysvObject *self, PyObject *Py_UNUSED(ignored))
{
    fastio_pages pg = sysv_pages(self);
    return fastio_pages_populate(&pg, !self->region.readonly);
}

PyDoc_STRVAR(sysv_fill_doc,
"fill($self, value=0, start=0, length=None)\n--\n\n"
"Set [start, start+length) (None: to the end) to the byte `value`\n"
"(memset, with the GIL released when large).");

static PyObject *
sysv_fill(SysvObject *self, PyObject *args, PyObject *kwds)
{
    fastio_pages pg = sysv_pages(self);
    return fastio_pages_fill(&pg, args, kwds);
}

PyDoc_STRVAR(sysv_advise_doc,
"advise($self, advice, start=0, length=None)\n--\n\n"
"madvise(2) with any MADV_* value over [start, start+length), rounded to\n"
"pages (inward for advice that discards data).");

static PyObject *
sysv_advise(SysvObject *self, PyObject *args, PyObject *kwds)
{
    fastio_pages pg = sysv_pages(self);
    return fastio_pages_advise(&pg, args, kwds);
}

static PyObject *
sysv_get_closed(SysvObject *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(self->region.closed);
}

static PyObject *
sysv_get_size(SysvObject *self, void *Py_UNUSED(closure))
{
    return PyLong_FromSsize_t(self->size);
}

static PyObject *
sysv_get_key(SysvObject *self, void *Py_UNUSED(closure))
{
    /* Keys are 32-bit patterns, shown unsigned (ipcs prints them in hex). */
    return PyLong_FromUnsignedLong((unsigned long)(uint32_t)self->key);
}

static PyObject *
sysv_get_id(SysvObject *self, void *Py_UNUSED(closure))
{
    return PyLong_FromLong(self->shmid);
}

static PyObject *
sysv_get_readonly(SysvObject *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(self->region.readonly);
}

static PyObject *
sysv_get_address(SysvObject *self, void *Py_UNUSED(closure))
{
    if (fastio_region_check(&self->region, CLOSED_MSG) < 0) {
        return NULL;
    }
    return PyLong_FromVoidPtr(self->region.data);
}

static int
sysv_getbuffer(SysvObject *self, Py_buffer *view, int flags)
{
    if (fastio_region_check(&self->region, CLOSED_MSG) < 0) {
        view->obj = NULL;
        return -1;
    }
    return fastio_region_getbuffer((PyObject *)self, &self->region, view, flags);
}

static void
sysv_releasebuffer(SysvObject *self, Py_buffer *view)
{
    fastio_region_releasebuffer(&self->region, view);
}

/* ================================================================== */
/* Module functions */

PyDoc_STRVAR(ftok_doc,
"ftok(path, proj_id, /)\n--\n\n"
"The System V key of (path, proj_id): ftok(3). proj_id's low 8 bits are\n"
"used and must not be 0.");

static PyObject *
fastio_ftok(PyObject *module, PyObject *args)
{
    PyObject *path;
    PyObject *proj_obj;
    int proj_id;
    long long proj_ll;
    if (!PyArg_ParseTuple(args, "O&O:ftok", PyUnicode_FSConverter, &path, &proj_obj)) {
        return NULL;
    }
    if (fastio_int_arg(proj_obj, "proj_id", INT_MIN, INT_MAX, &proj_ll) < 0) {
        Py_DECREF(path);
        return NULL;
    }
    proj_id = (int)proj_ll;
    if ((proj_id & 0xff) == 0) {
        PyErr_Format(PyExc_ValueError,
                     "proj_id's low 8 bits must not be 0, got proj_id=%d", proj_id);
        Py_DECREF(path);
        return NULL;
    }
    key_t key = ftok(PyBytes_AS_STRING(path), proj_id);
    if (key == (key_t)-1) {
        /* errno now: the decode and the DECREF below may free memory,
         * which may change errno. */
        int err = -errno;
        PyObject *name = PyUnicode_DecodeFSDefault(PyBytes_AS_STRING(path));
        Py_DECREF(path);
        fastio_oserror(err, "ftok", name);
        Py_XDECREF(name);
        return NULL;
    }
    Py_DECREF(path);
    return PyLong_FromUnsignedLong((unsigned long)(uint32_t)key);
}

PyDoc_STRVAR(sysv_remove_fn_doc,
"sysv_remove(shmid, /)\n--\n\n"
"shmctl(shmid, IPC_RMID): mark a segment for removal by id.");

/* A segment id argument: an int in [0, INT_MAX] (shmget never returns a
 * negative id). Not (int)PyLong_AsLong: that truncated id + 2**32 to id,
 * and sysv_remove then removed another segment (issue 12, finding 11). */
static int
shmid_arg(PyObject *arg, int *out)
{
    long long v;
    if (fastio_int_arg(arg, "shmid", 0, INT_MAX, &v) < 0) {
        return -1;
    }
    *out = (int)v;
    return 0;
}

static PyObject *
fastio_sysv_remove(PyObject *module, PyObject *arg)
{
    int shmid;
    if (shmid_arg(arg, &shmid) < 0) {
        return NULL;
    }
    int err = sys_shmctl(shmid, IPC_RMID, NULL);
    if (err < 0) {
        return fastio_oserror(err, "shmctl IPC_RMID", NULL);
    }
    Py_RETURN_NONE;
}

PyDoc_STRVAR(sysv_stat_fn_doc,
"sysv_stat(shmid, /)\n--\n\n"
"shmctl(shmid, IPC_STAT) as SysVSharedMemory.stat's tuple.");

static PyObject *
fastio_sysv_stat(PyObject *module, PyObject *arg)
{
    int shmid;
    if (shmid_arg(arg, &shmid) < 0) {
        return NULL;
    }
    return stat_tuple(shmid);
}

static PyMethodDef sysv_functions[] = {
    {"ftok", (PyCFunction)fastio_ftok, METH_VARARGS, ftok_doc},
    {"sysv_remove", (PyCFunction)fastio_sysv_remove, METH_O, sysv_remove_fn_doc},
    {"sysv_stat", (PyCFunction)fastio_sysv_stat, METH_O, sysv_stat_fn_doc},
    {NULL, NULL, 0, NULL},
};

/* ================================================================== */
/* Type */

/* Run inside a critical section on self (fastio.h, docs/freethreading.md). */
FASTIO_LOCKED_O(sysv_close)
FASTIO_LOCKED_O(sysv_remove)
FASTIO_LOCKED_O(sysv_stat)
FASTIO_LOCKED_O(sysv_lock)
FASTIO_LOCKED_O(sysv_unlock)
FASTIO_LOCKED_O(sysv_populate)
FASTIO_LOCKED_KW(sysv_fill)
FASTIO_LOCKED_KW(sysv_advise)

static PyMethodDef sysv_methods[] = {
    {"close", (PyCFunction)sysv_close_locked, METH_NOARGS, sysv_close_doc},
    {"remove", (PyCFunction)sysv_remove_locked, METH_NOARGS, sysv_remove_doc},
    {"stat", (PyCFunction)sysv_stat_locked, METH_NOARGS, sysv_stat_doc},
    {"lock", (PyCFunction)sysv_lock_locked, METH_NOARGS, sysv_lock_doc},
    {"unlock", (PyCFunction)sysv_unlock_locked, METH_NOARGS, sysv_unlock_doc},
    {"populate", (PyCFunction)sysv_populate_locked, METH_NOARGS, sysv_populate_doc},
    {"fill", (PyCFunction)(void (*)(void))sysv_fill_locked, METH_VARARGS | METH_KEYWORDS,
     sysv_fill_doc},
    {"advise", (PyCFunction)(void (*)(void))sysv_advise_locked, METH_VARARGS | METH_KEYWORDS,
     sysv_advise_doc},
    {NULL, NULL, 0, NULL},
};

/* Run inside a critical section on self (fastio.h, docs/freethreading.md). */
FASTIO_LOCKED_GET(sysv_get_closed)
FASTIO_LOCKED_GET(sysv_get_size)
FASTIO_LOCKED_GET(sysv_get_key)
FASTIO_LOCKED_GET(sysv_get_id)
FASTIO_LOCKED_GET(sysv_get_readonly)
FASTIO_LOCKED_GET(sysv_get_address)

static PyGetSetDef sysv_getset[] = {
    {"closed", (getter)sysv_get_closed_locked, NULL, "True once detached.", NULL},
    {"size", (getter)sysv_get_size_locked, NULL, "The segment's size in bytes.", NULL},
    {"key", (getter)sysv_get_key_locked, NULL, "The segment's key (0: IPC_PRIVATE).", NULL},
    {"id", (getter)sysv_get_id_locked, NULL, "The segment's id (shmid).", NULL},
    {"readonly", (getter)sysv_get_readonly_locked, NULL, "True for a SHM_RDONLY attach.", NULL},
    {"_address", (getter)sysv_get_address_locked, NULL,
     "The attach address in this process (for numpy offsets).", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef sysv_members[] = {
    {"__weaklistoffset__", T_PYSSIZET, offsetof(SysvObject, weakreflist), READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

/* Slots inside a critical section on self (fastio.h). */
FASTIO_LOCKED_GETBUFFER(sysv_getbuffer)
FASTIO_LOCKED_RELEASEBUFFER(sysv_releasebuffer)

static PyType_Slot sysv_slots[] = {
    {Py_tp_doc, (void *)sysv_doc},
    {Py_tp_new, sysv_new},
    {Py_tp_dealloc, sysv_dealloc},
    {Py_tp_traverse, sysv_traverse},
    {Py_tp_methods, sysv_methods},
    {Py_tp_getset, sysv_getset},
    {Py_tp_members, sysv_members},
    {Py_bf_getbuffer, sysv_getbuffer_locked},
    {Py_bf_releasebuffer, sysv_releasebuffer_locked},
    {0, NULL},
};

static PyType_Spec sysv_spec = {
    .name = "fastio._core.SysVSharedMemory",
    .basicsize = sizeof(SysvObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .slots = sysv_slots,
};

int
fastio_sysv_exec(PyObject *module, fastio_state *st)
{
    if (fastio_add_type(module, &sysv_spec, NULL, &st->sysv_type) < 0 ||
        PyModule_AddFunctions(module, sysv_functions) < 0 ||
        PyModule_AddIntConstant(module, "IPC_PRIVATE", IPC_PRIVATE) < 0) {
        return -1;
    }
    return 0;
}
