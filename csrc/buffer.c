/* buffer.c: fastio.Buffer, aligned and huge-page memory, and heap_info. */
#include "fastio.h"

typedef struct {
    PyObject_HEAD
    fastio_region region;
} BufferObject;

static PyType_Slot buffer_slots[] = {
    {Py_tp_doc, "Buffer()\n--\n\nAligned memory exported through the buffer protocol."},
    {0, NULL},
};

PyType_Spec fastio_buffer_spec = {
    .name = "fastio._core.Buffer",
    .basicsize = sizeof(BufferObject),
    .flags = Py_TPFLAGS_DEFAULT,
    .slots = buffer_slots,
};

PyMethodDef fastio_memory_methods[] = {
    {NULL, NULL, 0, NULL},
};
