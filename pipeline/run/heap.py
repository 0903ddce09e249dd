"""The C heap of a process that handles frames: undo malloc settings that turn every frame-sized
allocation into a fresh ``mmap``.

Dask's nanny starts every worker with ``MALLOC_TRIM_THRESHOLD_=65536`` (its
``distributed.nanny.pre-spawn-environ``, so that freed memory goes back to the OS at once). In
glibc, setting any of the trim / mmap / top-pad variables switches off the *dynamic* mmap
threshold, so every allocation of 128 KiB or more (a 640x480 frame, a crop, an image batch, most
torch tensors) is then a new ``mmap`` of zeroed pages, faulted in page by page, and unmapped again
when freed. Measured on 2 videos of 30 frames (sequential path, one thread, idle 2-core machine):
6.8-8.0 s wall, 0.9-1.2 s system CPU and 0.3-0.4 M page faults without that variable; 17.3-20.7 s,
9.6-11.2 s system CPU and 3.9 M page faults with it. That was the Dask runner's 3x CPU per frame
against the CLI (issue 16); any process started with such a variable (a job launched by a Dask
worker, a container default) pays the same.

:func:`frame_heap` undoes it for a block: when one of those variables is set and the C library
has glibc's ``mallopt``, allocations up to 32 MiB come from the heap and the heap keeps up to
64 MiB of free memory at its top; after the (outermost) block the variables' values (glibc's
defaults for the others) are set again and ``malloc_trim(0)`` returns the free memory, which is
what the variable is there for. Nothing changes in a process started without them.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import logging
import os
import threading
from collections.abc import Iterator

log = logging.getLogger(__name__)

ENV_VARS = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_")
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h
MMAP_THRESHOLD = 32 << 20  # glibc's upper limit on 64-bit systems
TRIM_THRESHOLD = 64 << 20
GLIBC_DEFAULT = 128 << 10  # both thresholds' default

_lock = threading.Lock()
_depth = 0


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    """glibc (``mallopt`` and ``malloc_trim``), or None (musl, macOS, none found)."""
    name = ctypes.util.find_library("c")
    try:
        lib = ctypes.CDLL(name or "libc.so.6")
    except OSError:
        return None
    if not all(hasattr(lib, f) for f in ("gnu_get_libc_version", "mallopt", "malloc_trim")):
        return None
    return lib


def heap_vars() -> dict[str, str]:
    """The malloc variables set in this process's environment (read by glibc at start-up)."""
    return {k: os.environ[k] for k in ENV_VARS if k in os.environ}


def _env_int(name: str) -> int:
    try:
        return int(os.environ.get(name, GLIBC_DEFAULT))
    except ValueError:
        return GLIBC_DEFAULT


@contextlib.contextmanager
def frame_heap() -> Iterator[bool]:
    """Frame-sized allocations from the heap for the block (see the module docstring).

    Yields whether anything was changed (a malloc variable set, glibc present). Re-entrant and
    thread-safe: the settings are process-wide, so they are made by the first block entered and
    restored when the last one is left.
    """
    global _depth
    lib = _glibc() if heap_vars() else None
    if lib is None:
        yield False
        return
    with _lock:
        if _depth == 0:
            lib.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
            lib.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
            log.debug("malloc variables %s set: frame-sized allocations from the heap for this work", heap_vars())
        _depth += 1
    try:
        yield True
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                lib.mallopt(M_MMAP_THRESHOLD, _env_int("MALLOC_MMAP_THRESHOLD_"))
                lib.mallopt(M_TRIM_THRESHOLD, _env_int("MALLOC_TRIM_THRESHOLD_"))
                lib.malloc_trim(0)
