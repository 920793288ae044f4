"""Scratch memory reused from frame to frame, and the cache-sized row blocks a render works in.

Fresh numpy temporaries of a few hundred kilobytes cost a page fault per 4 KiB every frame,
because the allocator returns freed memory to the system; that was most of the time of a frame.
"""

from __future__ import annotations

from contextlib import contextmanager
import math
from typing import Iterator, Sequence

import numpy as np

# Pixels per block of work: big enough that numpy's per-call overhead is small, small enough that
# the temporaries of a block stay in cache.
BLOCK_PIXELS = 32768

# x, y and z components of per-pixel vectors: three arrays of one shape.
Planes = Sequence[np.ndarray]


class Scratch:
    """Memory for the temporaries of a frame, kept from one frame to the next.

    Arrays here are views of one buffer, handed out in stack order: :meth:`scope` takes back
    what was handed out inside it. A frame that needs more than the buffer gets fresh arrays and
    the buffer grows before the next frame.
    """

    def __init__(self) -> None:
        self._memory = np.empty(0, np.uint8)
        self._used = 0
        self._peak = 0

    def __call__(self, shape: tuple[int, ...] | int, dtype: type = np.float64) -> np.ndarray:
        """Return an uninitialised array valid until the enclosing scope ends."""
        dtype = np.dtype(dtype)
        nbytes = math.prod(shape if isinstance(shape, tuple) else (shape,)) * dtype.itemsize
        start = self._used
        self._used += -(-nbytes // 64) * 64  # keep every array 64-byte aligned
        self._peak = max(self._peak, self._used)
        if self._used > self._memory.size:
            return np.empty(shape, dtype)
        return self._memory[start:start + nbytes].view(dtype).reshape(shape)

    @contextmanager
    def scope(self) -> Iterator[Scratch]:
        """Take back, on exit, every array handed out inside the block."""
        start = self._used
        try:
            yield self
        finally:
            self._used = start

    def new_frame(self) -> None:
        """Forget every array handed out so far; grow to the largest frame seen."""
        if self._peak > self._memory.size:
            self._memory = np.empty(self._peak, np.uint8)
        self._used = 0


def row_blocks(rows: slice, width: int) -> Iterator[slice]:
    """Split ``rows`` into runs of about :data:`BLOCK_PIXELS` pixels (cache-sized temporaries)."""
    step = max(1, BLOCK_PIXELS // width)
    for start in range(rows.start, rows.stop, step):
        yield slice(start, min(start + step, rows.stop))
