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
that range, with non-finite coordinates or with non-positive confidence are ignored.

Layout, chosen so that a frame costs time in proportion to the frame, not to the map: the
per-voxel sums live in *slots* (rows of growable arrays, all occupied, in no particular order)
that never move once written, and a separate sorted index of the packed keys, with the slot of
each key, finds them with ``searchsorted``. A frame therefore updates its voxels in place; only
the index (16 bytes per voxel) is rewritten when voxels come or go, and an evicted voxel's slot
is handed to a new one. Readers see the voxels in key order, as if the sums were kept sorted.
"""

from __future__ import annotations

import logging

import numpy as np

LOG = logging.getLogger(__name__)

_BITS = 21
_OFFSET = 1 << (_BITS - 1)
_STATE_VERSION = 1
# Smallest slot allocation; capacity then doubles up to the cap so growth is amortised.
_MIN_CAPACITY = 1024
# Eviction: below one voxel in this many, select from a sample-estimated candidate set.
_PREFILTER_RATIO = 4
_SAMPLE_SIZE = 4096


def _voxel_cells(points: np.ndarray, voxel_size: float) -> tuple[np.ndarray, np.ndarray]:
    """Return the voxel coordinates of ``[N, 3]`` points and which of them can be packed.

    :return: ``(cells [N, 3]`` in the dtype of the division, ``inside [N] bool)``.
    """
    cells = np.floor(points / voxel_size)
    magnitude = np.abs(cells)
    # Comparisons are false for NaN, so this also rejects non-finite points. Three column
    # tests are much faster than a reduction along the short axis.
    inside = magnitude[:, 0] < _OFFSET
    inside &= magnitude[:, 1] < _OFFSET
    inside &= magnitude[:, 2] < _OFFSET
    return cells, inside


def _pack(cells: np.ndarray) -> np.ndarray:
    """Pack in-range ``[N, 3]`` voxel coordinates into ``[N]`` int64 keys (x most significant)."""
    shifted = (cells + _OFFSET).astype(np.int64)
    return (shifted[:, 0] << (2 * _BITS)) | (shifted[:, 1] << _BITS) | shifted[:, 2]


def _voxel_sums(keys: np.ndarray, points: np.ndarray, colors: np.ndarray, weight: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sum one frame's weighted points per voxel.

    Each sum accumulates its points in input order (``bincount``), so the result does not
    depend on how the map stores its voxels.

    :param keys: ``[N]`` packed voxel keys.
    :param points: ``[N, 3]`` positions.
    :param colors: ``[N, 3]`` uint8 RGB.
    :param weight: ``[N]`` float64 weights.
    :return: ``(keys [U]`` sorted and unique, ``weight [U]``, ``sums [U, 6])``: per voxel the
        summed weight and the weighted sums of x, y, z, r, g, b.
    """
    # np.unique with the sort made stable: this merge sort finds the runs that neighbouring
    # pixels form in the keys, about twice as fast as the default sort; same uniq and inverse.
    order = np.argsort(keys, kind='stable')
    ordered = keys[order]
    first = np.empty(len(keys), dtype=bool)
    first[:1] = True
    np.not_equal(ordered[1:], ordered[:-1], out=first[1:])
    uniq = ordered[first]
    inverse = np.empty(len(keys), dtype=np.intp)
    inverse[order] = np.cumsum(first) - 1
    count = len(uniq)
    total = np.bincount(inverse, weights=weight, minlength=count)
    sums = np.empty((count, 6), dtype=np.float64)
    for axis in range(3):
        sums[:, axis] = np.bincount(inverse, weights=points[:, axis] * weight, minlength=count)
        sums[:, 3 + axis] = np.bincount(inverse, weights=colors[:, axis] * weight,
                                        minlength=count)
    return uniq, total, sums


def _put_rows(target: np.ndarray, index: np.ndarray, rows: np.ndarray) -> None:
    """Do ``target[index] = rows`` for a C-contiguous ``[C, K]`` array, one copy per row.

    NumPy scatters a 2-D fancy assignment element by element; viewing each row as one opaque
    record makes it copy whole rows, several times faster for the few columns used here.
    """
    record = np.dtype((np.void, target.shape[1] * target.itemsize))
    rows = np.ascontiguousarray(rows, dtype=target.dtype)
    target.view(record).reshape(-1)[index] = rows.view(record).reshape(-1)


def _lowest(values: np.ndarray, count: int) -> np.ndarray:
    """Return the indices of the ``count`` smallest ``values`` (in no particular order).

    Among values equal to the largest one selected, the lowest indices are taken, so the answer
    is one well-defined set. Unless many are wanted, a threshold estimated on a strided sample
    first narrows the search to the values below it (several times faster when a tenth of a
    full map is evicted per frame); every value equal to or below the answer's largest lies
    under the threshold, so the answer is the same as without it, and the full search remains
    the fallback when the estimate is too low.
    """
    n = len(values)
    if count >= n:
        return np.arange(n)
    if count * _PREFILTER_RATIO < n:
        sample = values[::max(1, n // _SAMPLE_SIZE)]
        # Aim at about twice the needed share, so that the estimate rarely falls short.
        rank = min(len(sample) - 1, int(2 * count * len(sample) / n) + 8)
        threshold = np.partition(sample, rank)[rank]
        candidates = np.flatnonzero(values <= threshold)
        if len(candidates) >= count:
            return candidates[_lowest_positions(values[candidates], count)]
    return _lowest_positions(values, count)


def _lowest_positions(values: np.ndarray, count: int) -> np.ndarray:
    """Return the indices of the ``count`` smallest ``values``, ties to the lowest indices."""
    cut = np.partition(values, count - 1)[count - 1]
    below = np.flatnonzero(values < cut)
    return np.concatenate([below, np.flatnonzero(values == cut)[:count - len(below)]])


def _merge_index(keys: np.ndarray, slots: np.ndarray, removed: np.ndarray, at: np.ndarray,
                 new_keys: np.ndarray, new_slots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Remove entries from a sorted index and insert new ones, in one copy.

    :param keys: ``[M]`` sorted keys; ``slots`` ``[M]`` their slots.
    :param removed: sorted positions (into ``keys``) of the entries to remove.
    :param at: sorted positions (into ``keys``) before which ``new_keys`` go, as given by
        ``searchsorted(keys, new_keys)``.
    :param new_keys: sorted keys to insert; ``new_slots`` their slots.
    :return: the new ``(keys, slots)``.
    """
    kept_keys, kept_slots = keys, slots
    if len(removed):
        keep = np.ones(len(keys), dtype=bool)
        keep[removed] = False
        kept_keys, kept_slots = keys[keep], slots[keep]
        # Where each new key goes among the kept keys: before ``at``, minus the removed ones.
        at = at - np.searchsorted(removed, at)
    if not len(new_keys):
        return kept_keys, kept_slots
    total = len(kept_keys) + len(new_keys)
    destination = at + np.arange(len(new_keys))
    is_old = np.ones(total, dtype=bool)
    is_old[destination] = False
    merged_keys = np.empty(total, dtype=np.int64)
    merged_slots = np.empty(total, dtype=np.int64)
    # Integer indices for the few new entries; a mask only for the many old ones.
    merged_keys[destination], merged_keys[is_old] = new_keys, kept_keys
    merged_slots[destination], merged_slots[is_old] = new_slots, kept_slots
    return merged_keys, merged_slots


def _plain_array(value: object, dtype: type) -> np.ndarray:
    """Return a NumPy copy of ``value`` (array, list or a tensor from a safetensors file)."""
    # Tensors convert through their own .numpy(): np.array(tensor) goes through an __array__
    # that NumPy 2 warns about.
    to_numpy = getattr(value, 'numpy', None)
    return np.array(to_numpy() if callable(to_numpy) else value, dtype=dtype)


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
        # Sorted index: packed keys, and the slot holding each key's sums.
        self._keys = np.empty(0, dtype=np.int64)
        self._slot_of = np.empty(0, dtype=np.int64)
        # Slots 0 .. len(self) - 1 are occupied: weight, weighted sums of x, y, z, r, g, b,
        # and the key (to find a slot's place in the index when it is evicted).
        self._weight = np.empty(0, dtype=np.float64)
        self._sums = np.empty((0, 6), dtype=np.float64)
        self._slot_key = np.empty(0, dtype=np.int64)

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
        if points.dtype == np.float16:
            # Exact widening: float16 cannot hold the key offset (2^20) that packing adds.
            points = points.astype(np.float32)
        cells, used = _voxel_cells(points, self.voxel_size)
        # Comparisons are false for NaN; the upper bound rejects an infinite weight.
        used &= (conf > 0) & (conf < np.inf)
        count = int(np.count_nonzero(used))
        if count == 0:
            return 0
        if count < n:
            # Gathering by index is several times faster than boolean indexing of [N, 3].
            take = np.flatnonzero(used)
            cells, points, colors, conf = cells[take], points[take], colors[take], conf[take]
        uniq, weight, sums = _voxel_sums(_pack(cells), points, colors, conf.astype(np.float64))
        pos = np.searchsorted(self._keys, uniq)
        if len(self._keys):
            found = self._keys[np.minimum(pos, len(self._keys) - 1)] == uniq
        else:
            found = np.zeros(len(uniq), dtype=bool)
        hit = np.flatnonzero(found)
        if len(hit):
            slots = self._slot_of[pos[hit]]
            self._weight[slots] += weight[hit]
            updated = np.take(self._sums, slots, axis=0)
            updated += sums[hit]
            _put_rows(self._sums, slots, updated)
        new = np.flatnonzero(~found)
        if len(new):
            self._admit(new, pos, uniq, weight, sums)
        return count

    def _admit(self, new: np.ndarray, at: np.ndarray, keys: np.ndarray, weight: np.ndarray,
               sums: np.ndarray) -> None:
        """Add the voxels ``new`` of a frame and apply the cap.

        :param new: ``[K]`` indices of the frame's voxels that the map does not hold.
        :param at: ``[U]`` index positions before which the frame's keys go.
        :param keys: ``[U]`` sorted frame keys, with their ``weight`` ``[U]`` and ``sums``
            ``[U, 6]``.
        """
        size = len(self._keys)
        excess = size + len(new) - self.max_points
        evicted_slots = np.empty(0, dtype=np.int64)
        if excess > 0:
            # Old and new voxels compete on equal terms: select among both weights at once.
            drop = _lowest(np.concatenate([self._weight[:size], weight[new]]), excess)
            evicted_slots = drop[drop < size]
            keep = np.ones(len(new), dtype=bool)
            keep[drop[drop >= size] - size] = False
            new = new[keep]
            LOG.debug('voxel map full: evicted %d lowest-weight voxels', excess)
        at, keys, weight, sums = at[new], keys[new], weight[new], sums[new]
        # New voxels take the evicted slots first, then fresh ones at the end.
        slots = np.concatenate([evicted_slots, np.arange(size, size + len(keys)
                                                          - len(evicted_slots))])
        self._reserve(size - len(evicted_slots) + len(keys))
        # Sorted keys give sorted positions, and search faster.
        removed = np.searchsorted(self._keys, np.sort(self._slot_key[evicted_slots]))
        self._keys, self._slot_of = _merge_index(self._keys, self._slot_of, removed, at, keys,
                                                slots)
        self._weight[slots] = weight
        _put_rows(self._sums, slots, sums)
        self._slot_key[slots] = keys

    def _reserve(self, size: int) -> None:
        # Grow the slot arrays geometrically (never past the cap) so copies are amortised.
        capacity = len(self._weight)
        if size <= capacity:
            return
        capacity = min(max(size, 2 * capacity, _MIN_CAPACITY), self.max_points)
        used = len(self._keys)
        for name in ('_weight', '_sums', '_slot_key'):
            old = getattr(self, name)
            grown = np.empty((capacity,) + old.shape[1:], dtype=old.dtype)
            grown[:used] = old[:used]
            setattr(self, name, grown)

    def _sorted_columns(self) -> tuple[np.ndarray, np.ndarray]:
        # Weight [M] and sums [M, 6] in key order; take() copies whole rows, unlike [].
        return np.take(self._weight, self._slot_of), np.take(self._sums, self._slot_of, axis=0)

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return the fused points, in the order of their voxel keys.

        :return: ``(xyz [M, 3] float32, rgb [M, 3] uint8, conf [M] float32)``: weighted mean
            position and colour of each voxel and its accumulated confidence weight.
        """
        weight, sums = self._sorted_columns()
        xyz = (sums[:, :3] / weight[:, None]).astype(np.float32)
        rgb = np.clip(np.rint(sums[:, 3:] / weight[:, None]), 0, 255).astype(np.uint8)
        return xyz, rgb, weight.astype(np.float32)

    def state_dict(self) -> dict[str, np.ndarray]:
        """Return the complete state as NumPy arrays (for ``np.savez`` or safetensors)."""
        weight, sums = self._sorted_columns()
        return {
            'version': np.array(_STATE_VERSION, dtype=np.int64),
            'voxel_size': np.array(self.voxel_size, dtype=np.float64),
            'max_points': np.array(self.max_points, dtype=np.int64),
            'keys': self._keys.copy(), 'weight': weight,
            'xyz_sum': sums[:, :3].copy(), 'rgb_sum': sums[:, 3:].copy(),
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
        keys = _plain_array(state['keys'], np.int64)
        m = keys.shape[0]
        weight = _plain_array(state['weight'], np.float64)
        xyz_sum = _plain_array(state['xyz_sum'], np.float64)
        rgb_sum = _plain_array(state['rgb_sum'], np.float64)
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
        # Slots in key order: slot i holds the i-th key.
        self._keys = keys
        self._slot_of = np.arange(m, dtype=np.int64)
        self._weight = weight
        self._sums = np.concatenate([xyz_sum, rgb_sum], axis=1)
        self._slot_key = keys.copy()
