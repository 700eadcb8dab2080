"""glibc's heap, read from inside a process: what the memory diagnostics (tools/fuzz_adapter.py's
report, tools/grpc_aio_leak.py) tell C memory in use from freed memory the allocator keeps."""

from __future__ import annotations

import ctypes


class _MallInfo2(ctypes.Structure):
    # glibc >= 2.33, malloc.h: struct mallinfo2, every field a size_t.
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
            "uordblks", "fordblks", "keepcost",
        )
    ]  # fmt: skip


_libc: ctypes.CDLL | None = None


def _glibc() -> ctypes.CDLL:
    """The C library, checked to be glibc with ``mallinfo2``; OSError or AttributeError if not."""
    global _libc
    if _libc is None:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _MallInfo2
        _libc = libc
    return _libc


def heap() -> dict[str, int]:
    """Every arena's heap (bytes): in use, freed but kept, and in mmapped blocks."""
    info = _glibc().mallinfo2()
    return {"in_use": info.uordblks, "free_kept": info.fordblks, "mmapped": info.hblkhd}


def trim() -> None:
    """Give freed memory back to the system where glibc can (``malloc_trim(0)``)."""
    _glibc().malloc_trim(0)
