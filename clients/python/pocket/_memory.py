"""Large receive buffers that are cheap to fill the first time.

A fresh ``bytearray(n)`` costs twice before the first byte arrives: its zero fill touches every 4 KiB page in user
space, and then the kernel's first write into each page (``recv_into``) pays again (on paravirtualised hosts that
second cost alone ran ~1.1 s per GiB). A large get therefore allocates its result without the zero fill and asks for
transparent huge pages first (``madvise(MADV_HUGEPAGE)``; honoured when the system's THP mode is ``madvise`` or
``always``), so the pages are faulted in 2 MiB at a time by the transfer itself. Every byte of such a buffer is
written by the transfer before the caller sees it: the read checks that the extents cover the whole range.

Falls back to ``bytearray(n)`` where this is unavailable (not Linux, no ``ctypes``, not CPython).
"""

import mmap
import sys

HUGE_PAGE = 2 << 20
# Below this a buffer spans too few huge pages to matter, and malloc serves it from the heap anyway.
MIN_UNFILLED = 4 << 20
_MADV_HUGEPAGE = getattr(mmap, "MADV_HUGEPAGE", 14)


def _bind():
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes
        api = ctypes.pythonapi
        # Private prototypes: never change the shared ctypes.pythonapi function objects other code may use.
        new = ctypes.PYFUNCTYPE(ctypes.py_object, ctypes.c_void_p, ctypes.c_ssize_t)(
            ("PyByteArray_FromStringAndSize", api))
        address = ctypes.PYFUNCTYPE(ctypes.c_void_p, ctypes.py_object)(("PyByteArray_AsString", api))
        libc = ctypes.CDLL(None, use_errno=True)
        madvise = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int,
                                   use_errno=True)(("madvise", libc))
    except (ImportError, AttributeError, OSError, TypeError):
        return None

    def unfilled(n):
        buf = new(None, n)  # NULL source: allocated, not zero-filled, pages not yet touched
        start = address(buf)
        lo = (start + HUGE_PAGE - 1) & ~(HUGE_PAGE - 1)
        hi = (start + n) & ~(HUGE_PAGE - 1)
        if hi > lo:
            madvise(lo, hi - lo, _MADV_HUGEPAGE)  # advice only: a refusal (THP off) leaves 4 KiB pages
        return buf

    return unfilled


_unfilled = _bind()


def receive_buffer(n):
    """A bytearray of ``n`` bytes that the caller fills completely before anyone reads it."""
    if _unfilled is None or n < MIN_UNFILLED:
        return bytearray(n)
    return _unfilled(n)
