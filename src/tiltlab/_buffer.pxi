# Included by the Cython driver modules (textual include: one definition, no extra module).
from libc.stdlib cimport free, malloc


cdef class _Buffer:
    """A malloc'd block owned by a Python object: freed when the driver returns or raises."""
    cdef void *ptr

    def __cinit__(self, Py_ssize_t count, size_t size):
        self.ptr = malloc((count if count > 0 else 1) * size)
        if self.ptr == NULL:
            raise MemoryError("tiltlab: could not allocate work buffers")

    def __dealloc__(self):
        free(self.ptr)
