"""Keep freed tensor memory inside the process (glibc on Linux).

glibc returns large freed blocks to the operating system and maps fresh pages for the next
large allocation. A released-model frame allocates several feature maps of up to 26 MB in the
DPT heads; refaulting their pages every frame cost up to a fifth of the frame time with two
threads on the development machine (page faults serialise the threads). Raising glibc's mmap
threshold to its maximum (32 MiB on 64-bit) and its trim threshold makes those blocks come from,
and go back to, the process heap, so after the first frames no pages are faulted in.

The setting is process-wide and keeps the process's resident memory at the peak of a frame's
working set instead of returning it between frames.
"""

from __future__ import annotations

import ctypes
import functools
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: glibc's upper limit for the mmap threshold on 64-bit systems (``mallopt`` refuses more).
MMAP_THRESHOLD_MAX = 32 * 1024 * 1024
#: Free memory at the top of the heap beyond this is returned to the system.
TRIM_THRESHOLD = 2**31 - 1


@functools.lru_cache(maxsize=None)
def keep_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds for this process (once).

    :return: True when glibc accepted both settings; False on other C libraries and systems,
        where nothing is changed.
    """
    if not sys.platform.startswith('linux'):
        return False
    try:
        libc = ctypes.CDLL('libc.so.6')
    except OSError:
        return False
    if not (hasattr(libc, 'gnu_get_libc_version') and hasattr(libc, 'mallopt')):
        return False  # another C library (musl has no mallopt thresholds)
    mallopt = libc.mallopt
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return (mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX) == 1
            and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1)
