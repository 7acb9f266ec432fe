"""Process-level settings that make the training loop's many small tensors cheap on CPUs."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

log = logging.getLogger("gru4rec.runtime")

_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3
_done = False


def tune_allocator() -> bool:
    """Keep freed tensor memory in glibc's heap instead of returning it to the kernel.

    A training step allocates and frees the same ~1 MB temporaries hundreds of times a second;
    by default glibc serves them with fresh mmap()s and trims the heap, so every step pays
    page faults (measured: 2.6M minor faults and 9 s of system time in a 28 s run, 0.14M and
    0.8 s with these settings). Linux/glibc only; a no-op elsewhere.
    """
    global _done
    if _done:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = (
            libc.mallopt(_M_MMAP_THRESHOLD, 32 * 1024 * 1024)
            and libc.mallopt(_M_TRIM_THRESHOLD, 256 * 1024 * 1024)
            and libc.mallopt(_M_TOP_PAD, 64 * 1024 * 1024)
        )
    except (OSError, AttributeError):
        return False
    _done = bool(ok)
    log.debug("allocator tuned: %s", _done)
    return _done
