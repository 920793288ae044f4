"""Bounded global map: voxel hashing with confidence-weighted fusion.

Each occupied voxel keeps the confidence-weighted sums of the positions and colours of every
point that fell into it, and the sum of those confidences (its *weight*). Its point is the
weighted mean position, its colour the weighted mean colour, and its confidence the weight.

Memory is bounded by ``max_points``: after each integration, if more voxels are occupied, the
voxels with the **lowest accumulated weight** are evicted (ties broken arbitrarily) until
``max_points`` remain. Well-observed, confident structure therefore survives; a voxel seen once
with low confidence is the first to go, whether it is old or new.

Voxels are addressed by integer coordinates ``floor(p / voxel_size)`` packed into one int64
(21 bits per axis, so coordinates within about ``+-10^6`` voxels of the origin); points outside
that range, with non-finite coordinates or with non-positive confidence are ignored. Keys are
kept sorted, so a frame is merged with one ``searchsorted`` and one ordered insert, all in NumPy.
"""

from __future__ import annotations

import logging

import numpy as np

LOG = logging.getLogger(__name__)

_BITS = 21
_OFFSET = 1 << (_BITS - 1)
_MASK = (1 << _BITS) - 1
_STATE_VERSION = 1


def _pack(cells: np.ndarray) -> np.ndarray:
    shifted = (cells + _OFFSET).astype(np.int64)
    return (shifted[:, 0] << (2 * _BITS)) | (shifted[:, 1] << _BITS) | shifted[:, 2]


class VoxelMap:
    """Voxel-hashed point map with a hard cap on the number of points.

    :param voxel_size: voxel edge length, in the units of the points.
    :param max_points: the most voxels (points) the map ever holds.
    """

    def __init__(self, voxel_size: float, max_points: int) -> None:
        if not np.isfinite(voxel_size) or voxel_size <= 0:
            raise ValueError(f'voxel_size must be positive, got {voxel_size}')
        if int(max_points) != max_points or max_points <= 0:
            raise ValueError(f'max_points must be a positive integer, got {max_points}')
        self.voxel_size = float(voxel_size)
        self.max_points = int(max_points)
        self.clear()

    def clear(self) -> None:
        """Remove every point."""
        self._keys = np.empty(0, dtype=np.int64)
        # Per voxel: weight, then the weighted sums of x, y, z and of r, g, b.
        self._sums = np.empty((0, 7), dtype=np.float64)

    def __len__(self) -> int:
        """Return the number of occupied voxels."""
        return int(self._keys.shape[0])

    def integrate(self, points: np.ndarray, colors: np.ndarray, conf: np.ndarray) -> int:
        """Fuse one frame's points into the map.

        :param points: ``[N, 3]`` positions.
        :param colors: ``[N, 3]`` uint8 RGB.
        :param conf: ``[N]`` confidences, used as fusion weights.
        :return: the number of points that were used (finite, positive weight, in range).
        :raises ValueError: on mismatched shapes or dtypes (the map is left unchanged).
        """
        points = np.asarray(points)
        colors = np.asarray(colors)
        conf = np.asarray(conf)
        if points.ndim != 2 or points.shape[1] != 3:
            raise ValueError(f'points must be [N, 3], got {points.shape}')
        n = points.shape[0]
        if colors.shape != (n, 3) or colors.dtype != np.uint8:
            raise ValueError(f'colors must be [{n}, 3] uint8, got {colors.dtype} {colors.shape}')
        if conf.shape != (n,):
            raise ValueError(f'conf must be [{n}], got {conf.shape}')
        weight = conf.astype(np.float64)
        cells = np.floor(points / self.voxel_size)
        valid = np.isfinite(cells).all(axis=1) & np.isfinite(weight) & (weight > 0)
        valid &= (np.abs(cells) < _OFFSET).all(axis=1)
        if not valid.any():
            return 0
        weight = weight[valid]
        keys = _pack(cells[valid])
        uniq, inverse = np.unique(keys, return_inverse=True)
        # Per-voxel sums of this frame, then one merge into the sorted map arrays.
        values = np.empty((len(weight), 7), dtype=np.float64)
        values[:, 0] = weight
        values[:, 1:4] = points[valid] * weight[:, None]
        values[:, 4:7] = colors[valid] * weight[:, None]
        frame = np.stack([np.bincount(inverse, weights=values[:, i], minlength=len(uniq))
                          for i in range(7)], axis=1)
        pos = np.searchsorted(self._keys, uniq)
        found = pos < len(self._keys)
        found[found] = self._keys[pos[found]] == uniq[found]
        self._sums[pos[found]] += frame[found]
        new = ~found
        if new.any():
            self._merge_new(pos[new], uniq[new], frame[new])
        return int(valid.sum())

    def _merge_new(self, at: np.ndarray, keys: np.ndarray, sums: np.ndarray) -> None:
        # Ordered insert of sorted new keys before positions ``at``, and the cap, in one copy.
        total = len(self._keys) + len(keys)
        is_new = np.zeros(total, dtype=bool)
        is_new[at + np.arange(len(keys))] = True
        merged_keys = np.empty(total, dtype=np.int64)
        merged_sums = np.empty((total, 7), dtype=np.float64)
        merged_keys[is_new], merged_keys[~is_new] = keys, self._keys
        merged_sums[is_new], merged_sums[~is_new] = sums, self._sums
        excess = total - self.max_points
        if excess > 0:
            drop = np.argpartition(merged_sums[:, 0], excess - 1)[:excess]
            keep = np.ones(total, dtype=bool)
            keep[drop] = False
            merged_keys, merged_sums = merged_keys[keep], merged_sums[keep]
            LOG.debug('voxel map full: evicted %d lowest-weight voxels', excess)
        self._keys, self._sums = merged_keys, merged_sums

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return the fused points.

        :return: ``(xyz [M, 3] float32, rgb [M, 3] uint8, conf [M] float32)``: weighted mean
            position and colour of each voxel and its accumulated confidence weight.
        """
        weight = self._sums[:, :1]
        xyz = (self._sums[:, 1:4] / weight).astype(np.float32)
        rgb = np.clip(np.rint(self._sums[:, 4:7] / weight), 0, 255).astype(np.uint8)
        return xyz, rgb, self._sums[:, 0].astype(np.float32)

    def state_dict(self) -> dict[str, np.ndarray]:
        """Return the complete state as NumPy arrays (for ``np.savez`` or safetensors)."""
        return {
            'version': np.array(_STATE_VERSION, dtype=np.int64),
            'voxel_size': np.array(self.voxel_size, dtype=np.float64),
            'max_points': np.array(self.max_points, dtype=np.int64),
            'keys': self._keys.copy(), 'weight': self._sums[:, 0].copy(),
            'xyz_sum': self._sums[:, 1:4].copy(), 'rgb_sum': self._sums[:, 4:7].copy(),
        }

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Restore a :meth:`state_dict`; the voxel size and cap come from the state.

        :raises ValueError: for a state of another version or with inconsistent arrays (the
            map is left unchanged).
        """
        required = {'version', 'voxel_size', 'max_points', 'keys', 'weight', 'xyz_sum',
                    'rgb_sum'}
        missing = required - set(state)
        if missing:
            raise ValueError(f'voxel map state lacks {sorted(missing)}')
        if int(state['version']) != _STATE_VERSION:
            raise ValueError(f'voxel map state version {int(state["version"])} is not '
                             f'{_STATE_VERSION}')
        keys = np.asarray(state['keys'], dtype=np.int64)
        m = keys.shape[0]
        weight = np.asarray(state['weight'], dtype=np.float64)
        xyz_sum = np.asarray(state['xyz_sum'], dtype=np.float64)
        rgb_sum = np.asarray(state['rgb_sum'], dtype=np.float64)
        if keys.ndim != 1 or weight.shape != (m,) or xyz_sum.shape != (m, 3) or \
                rgb_sum.shape != (m, 3):
            raise ValueError('voxel map state arrays have inconsistent shapes')
        if m > 1 and not (np.diff(keys) > 0).all():
            raise ValueError('voxel map state keys are not strictly increasing')
        if m and not (weight > 0).all():
            raise ValueError('voxel map state has non-positive weights')
        voxel_size, max_points = float(state['voxel_size']), int(state['max_points'])
        if m > max_points:
            raise ValueError(f'voxel map state holds {m} voxels, more than its cap {max_points}')
        VoxelMap(voxel_size, max_points)  # validates both
        self.voxel_size, self.max_points = voxel_size, max_points
        self._keys = keys
        self._sums = np.concatenate([weight[:, None], xyz_sum, rgb_sum], axis=1)
