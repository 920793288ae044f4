"""Byte layout of the published point clouds and a fast packer for it (ROS-free).

Every point is 20 bytes: float32 ``x, y, z``, the colour as a uint32 ``0x00RRGGBB`` in the
``rgb`` float32 slot (what RViz's PointCloud2 display reads), and float32 ``confidence``, all
in the machine's byte order. :class:`CloudPacker` writes these records column by column into
a scratch buffer it keeps between calls, selects the masked rows in one pass and copies the
result once into the ``array.array('B')`` a ``PointCloud2.data`` field holds: per 224 x 224
frame that is a few passes over 1 MB and no fresh large allocation except the message's own.
"""

from __future__ import annotations

import array
import threading
from typing import Optional

import numpy as np

#: ``(name, byte offset)`` of the float32 fields of one point.
CLOUD_FIELDS = (('x', 0), ('y', 4), ('z', 8), ('rgb', 12), ('confidence', 16))
CLOUD_POINT_STEP = 20
#: The same layout as a structured dtype (the form ``sensor_msgs_py`` consumes).
CLOUD_DTYPE = np.dtype({'names': [n for n, _ in CLOUD_FIELDS],
                        'formats': ['f4'] * len(CLOUD_FIELDS),
                        'offsets': [o for _, o in CLOUD_FIELDS],
                        'itemsize': CLOUD_POINT_STEP})

_FLOATS_PER_POINT = CLOUD_POINT_STEP // 4
_RGB_OFFSET = dict(CLOUD_FIELDS)['rgb']


def _colour_byte_offsets() -> tuple[int, int, int, int]:
    """Return the byte offsets of R, G, B and the zero pad byte of the native ``0x00RRGGBB``.

    Writing the three colour bytes straight into their place in the record is cheaper than
    building the uint32 with shifts, and deriving the places from the native uint32 layout
    keeps the result equal to ``(r << 16) | (g << 8) | b`` on either byte order.
    """
    significance = np.array([0x03020100], dtype=np.uint32).view(np.uint8).tolist()
    red, green, blue, pad = (_RGB_OFFSET + significance.index(s) for s in (2, 1, 0, 3))
    return red, green, blue, pad


_RED, _GREEN, _BLUE, _PAD = _colour_byte_offsets()


def _flatten(xyz: np.ndarray, rgb: np.ndarray, conf: np.ndarray, mask: Optional[np.ndarray]
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, Optional[np.ndarray]]:
    """Validate the inputs and return them as ``[N, 3]``, ``[N, 3]``, ``[N]``, ``[N]`` views."""
    xyz = np.asarray(xyz)
    rgb = np.asarray(rgb)
    conf = np.asarray(conf)
    if xyz.shape[-1:] != (3,) or rgb.shape[-1:] != (3,):
        raise ValueError(f'cloud points and colours must be [..., 3], got {xyz.shape} and '
                         f'{rgb.shape}')
    if rgb.dtype != np.uint8:
        raise ValueError(f'cloud colours must be uint8, got {rgb.dtype}')
    xyz, rgb, conf = xyz.reshape(-1, 3), rgb.reshape(-1, 3), conf.reshape(-1)
    n = len(xyz)
    if len(rgb) != n or len(conf) != n:
        raise ValueError(f'cloud arrays disagree: {n} points, {len(rgb)} colours, '
                         f'{len(conf)} confidences')
    if mask is not None:
        mask = np.asarray(mask, dtype=bool).reshape(-1)
        if len(mask) != n:
            raise ValueError(f'mask has {len(mask)} entries for {n} points')
    return xyz, rgb, conf, mask


def _fill(rows: np.ndarray, xyz: np.ndarray, rgb: np.ndarray, conf: np.ndarray) -> None:
    """Write ``[N, 5]`` float32 records; single columns copy far faster than 2-D blocks."""
    for axis in range(3):
        rows[:, axis] = xyz[:, axis]
    raw = rows.view(np.uint8)
    raw[:, _RED] = rgb[:, 0]
    raw[:, _GREEN] = rgb[:, 1]
    raw[:, _BLUE] = rgb[:, 2]
    raw[:, _PAD] = 0
    rows[:, 4] = conf


class CloudPacker:
    """Pack clouds into ``PointCloud2`` bytes, reusing two scratch buffers between calls.

    Thread-safe (one call at a time); give each publishing thread its own packer to avoid
    waiting. Clouds larger than ``retain_points`` are packed in temporary buffers so a rare
    large cloud does not pin its memory for the rest of the run.

    :param retain_points: largest cloud whose buffers are kept for the next call.
    """

    def __init__(self, retain_points: int = 1 << 20) -> None:
        if retain_points < 0:
            raise ValueError(f'retain_points must be >= 0, got {retain_points}')
        self.retain_points = retain_points
        self._rows = np.empty((0, _FLOATS_PER_POINT), np.float32)
        self._kept = np.empty((0, _FLOATS_PER_POINT), np.float32)
        self._lock = threading.Lock()

    def _buffers(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        if n > self.retain_points:
            return (np.empty((n, _FLOATS_PER_POINT), np.float32),
                    np.empty((n, _FLOATS_PER_POINT), np.float32))
        if len(self._rows) < n:
            self._rows = np.empty((n, _FLOATS_PER_POINT), np.float32)
            self._kept = np.empty((n, _FLOATS_PER_POINT), np.float32)
        return self._rows[:n], self._kept[:n]

    def pack(self, xyz: np.ndarray, rgb: np.ndarray, conf: np.ndarray,
             mask: Optional[np.ndarray] = None) -> tuple[array.array, int]:
        """Return the packed records and their count.

        :param xyz: ``[..., 3]`` points (any leading shape, e.g. ``[H, W, 3]``).
        :param rgb: ``[..., 3]`` uint8 colours, same leading shape.
        :param conf: ``[...]`` confidences, same leading shape.
        :param mask: optional ``[...]`` bool; only these points are kept, in order.
        :return: ``(data, n)``: ``n * 20`` bytes as ``array.array('B')``, a new object the
            caller owns, and the number of points ``n``.
        :raises ValueError: for inconsistent shapes or non-uint8 colours.
        """
        xyz, rgb, conf, mask = _flatten(xyz, rgb, conf, mask)
        with self._lock:
            rows, kept = self._buffers(len(xyz))
            _fill(rows, xyz, rgb, conf)
            if mask is not None:
                n = int(np.count_nonzero(mask))
                if n < len(rows):
                    rows = np.compress(mask, rows, axis=0, out=kept[:n])
            data = array.array('B')
            data.frombytes(rows.reshape(-1).view(np.uint8))
            return data, len(rows)


def cloud_array(xyz: np.ndarray, rgb: np.ndarray, conf: np.ndarray,
                mask: Optional[np.ndarray] = None) -> np.ndarray:
    """Return the structured ``[N]`` array of a cloud (a new array, native byte order).

    :param xyz: ``[..., 3]`` points (any leading shape, e.g. ``[H, W, 3]``).
    :param rgb: ``[..., 3]`` uint8 colours, same leading shape.
    :param conf: ``[...]`` confidences, same leading shape.
    :param mask: optional ``[...]`` bool; only these points are kept.
    :raises ValueError: for inconsistent shapes or non-uint8 colours.
    """
    xyz, rgb, conf, mask = _flatten(xyz, rgb, conf, mask)
    rows = np.empty((len(xyz), _FLOATS_PER_POINT), np.float32)
    _fill(rows, xyz, rgb, conf)
    if mask is not None:
        rows = rows[mask]
    return rows.reshape(-1).view(CLOUD_DTYPE)
