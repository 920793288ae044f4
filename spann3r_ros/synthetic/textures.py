"""Procedural textures of a synthetic room: checker, stripes, bricks and value noise.

Every surface blends its two colours with a weight made of a pattern and a grain from a tileable
value-noise table, so a network sees enough texture to match.
"""

from __future__ import annotations

import numpy as np

from spann3r_ros.synthetic.layout import Surface
from spann3r_ros.synthetic.scratch import Planes, Scratch

NOISE_SIZE = 128


def value_noise(rng: np.random.Generator, size: int = NOISE_SIZE, octaves: int = 4) -> np.ndarray:
    """``[size, size]`` float32 tileable value noise in [0, 1], drawn from ``rng``."""
    out = np.zeros((size, size), np.float32)
    amp, total = 1.0, 0.0
    for o in range(octaves):
        cells = 4 * 2 ** o
        grid = rng.random((cells + 1, cells + 1)).astype(np.float32)
        grid[-1], grid[:, -1] = grid[0], grid[:, 0]  # tileable
        x = np.linspace(0, cells, size, endpoint=False)
        i = x.astype(int)
        f = (x - i) * (x - i) * (3 - 2 * (x - i))
        rows = grid[i] * (1 - f)[:, None] + grid[i + 1] * f[:, None]
        out += amp * (rows[:, i] * (1 - f) + rows[:, i + 1] * f)
        total += amp
        amp *= 0.5
    return out / total


def _floor_mod(x: np.ndarray, m: float, out: np.ndarray) -> np.ndarray:
    """``x % m`` for ``m`` in (1, 2), bit for bit, at a fraction of numpy's cost.

    ``x / m`` and ``m * floor(x / m)`` are exact, and ``x - m * floor(x / m)`` rounds the exact
    remainder once, as numpy's ``fmod(x, m) + m`` does for negative ``x``; for ``x >= 0`` both
    are exact. The one exception is ``x = -2**-1074`` with ``m = 2`` (halving underflows to
    zero), far below any texture coordinate.
    """
    if m == 1:
        np.floor(x, out=out)
    else:
        np.multiply(x, 1.0 / m, out=out)
        np.floor(out, out=out)
        out *= m
    return np.subtract(x, out, out=out)


class TextureSampler:
    """Colours of the surfaces of one room at face coordinates, with cached colour tables.

    :param noise: ``[NOISE_SIZE, NOISE_SIZE]`` float32 grain table.
    :param room_extent: largest extent of the room in metres (bounds the table indices).
    """

    def __init__(self, noise: np.ndarray, room_extent: float) -> None:
        self._noise_flat = noise.ravel()
        self._colour_tables: dict[tuple, np.ndarray] = {}
        # Noise-table indices come from face coordinates times at most 81 (scale 9, then 9),
        # bounded by the room: int32 is exact unless the room is thousands of kilometres wide.
        self._index_dtype = np.int32 if room_extent * 81 < 2 ** 30 else np.int64

    def colour(self, s: Surface, u: np.ndarray, v: np.ndarray, S: Scratch) -> Planes:
        """Texture colour (three float32 arrays) at face coordinates ``u, v`` (float64).

        The colour blends the two colours of the surface with a weight made of a pattern and
        a grain from the noise table. Except for stripes, the pattern is 0 or 1, so the colour
        is one of ``2 * NOISE_SIZE**2`` values per channel: those come from a table computed
        with the same float32 operations. ``u`` and ``v`` are scaled in place.
        """
        shape = u.shape
        u *= s.scale
        v *= s.scale
        a, b = S(shape), S(shape)
        pattern = None
        if s.texture == 'checker':
            np.floor(u, out=a)
            a += np.floor(v, out=b)
            pattern = _floor_mod(a, 2, out=b)
        elif s.texture == 'stripes':
            np.multiply(u, 2.0, out=a)
            a += np.multiply(v, 0.7, out=b)
            stripes = S(shape, np.float32)
            np.copyto(stripes, np.sin(a, out=a))
            stripes *= 0.5
            stripes += 0.5
        elif s.texture == 'bricks':
            v2 = np.multiply(v, 2, out=S(shape))
            odd_row = _floor_mod(np.floor(v2, out=a), 2, out=b)
            shifted_u = np.add(u, np.multiply(odd_row, 0.5, out=a), out=a)
            pattern = np.less(_floor_mod(v2, 1, out=b), 0.12, out=S(shape, bool))
            pattern |= np.less(_floor_mod(shifted_u, 1, out=b), 0.06, out=S(shape, bool))
        # Index into the noise table. It is NOISE_SIZE (a power of two) square, so
        # "& (size - 1)" is the non-negative modulo; int32 is exact (see __init__).
        index, cols = S(shape, self._index_dtype), S(shape, self._index_dtype)
        np.copyto(index, np.multiply(v, 9, out=a), casting='unsafe')  # truncates, as astype
        np.copyto(cols, np.multiply(u, 9, out=a), casting='unsafe')
        index &= NOISE_SIZE - 1
        cols &= NOISE_SIZE - 1
        index *= NOISE_SIZE
        index += cols
        colour = [S(shape, np.float32) for _ in range(3)]
        if s.texture != 'stripes':
            if pattern is not None:
                np.copyto(cols, pattern, casting='unsafe')
                cols *= NOISE_SIZE * NOISE_SIZE
                index += cols
            for k, table in enumerate(self._colour_table(s)):
                np.take(table, index, out=colour[k])
            return colour
        w = np.take(self._noise_flat, index, out=S(shape, np.float32))
        w *= 0.25
        stripes *= 0.75
        w += stripes
        one_minus_w = np.subtract(1, w, out=S(shape, np.float32))
        for k in range(3):
            np.multiply(s.colours[0, k], one_minus_w, out=colour[k])
            colour[k] += np.multiply(s.colours[1, k], w, out=stripes)
        return colour

    def _colour_table(self, s: Surface) -> np.ndarray:
        """``[3, 2 * NOISE_SIZE**2]`` float32 colours by (pattern 0/1, noise cell)."""
        key = (s.texture == 'noise', s.colours.tobytes())
        table = self._colour_tables.get(key)
        if table is None:
            grain = self._noise_flat
            if s.texture == 'noise':
                w = np.concatenate([grain, grain])
            else:
                pattern = np.repeat(np.array([0, 1], np.float32), grain.size)
                w = 0.75 * pattern + 0.25 * np.concatenate([grain, grain])
            table = np.stack([s.colours[0, k] * (1 - w) + s.colours[1, k] * w
                              for k in range(3)])
            self._colour_tables[key] = table
        return table
