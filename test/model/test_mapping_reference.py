"""The voxel map against a plain-Python model of its contract, bit for bit.

The model keeps a dict from voxel cell to sums, fuses points one by one in input order, evicts
the lowest total weights and lists voxels in lexicographic cell order. It shares no code with
the vectorised map, so agreement means the index, the slot reuse and the eviction shortcuts
change nothing. Confidences are continuous random numbers, so weights never tie and the
evicted set is unique.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from spann3r_model.mapping import voxel_map as mapping
from spann3r_model.mapping.voxel_map import VoxelMap


class DictVoxelMap:
    """Reference: one dict entry per voxel cell, ``[weight, sx, sy, sz, sr, sg, sb]``."""

    def __init__(self, voxel_size: float, max_points: int) -> None:
        self.voxel_size = voxel_size
        self.max_points = max_points
        self.voxels: dict[tuple[int, int, int], list[float]] = {}

    def integrate(self, points: np.ndarray, colors: np.ndarray, conf: np.ndarray) -> int:
        frame: dict[tuple[int, int, int], list[float]] = {}
        used = 0
        # The division in the points' own dtype, as the map does it.
        scaled = (points / self.voxel_size).tolist()
        for p, s, c, w in zip(points.tolist(), scaled, colors.tolist(), conf.tolist()):
            if not (0 < w < math.inf) or not all(math.isfinite(v) for v in s):
                continue
            cell = tuple(math.floor(v) for v in s)
            if any(abs(v) >= 2 ** 20 for v in cell):
                continue
            used += 1
            sums = frame.setdefault(cell, [0.0] * 7)
            for i, value in enumerate([1.0, *p, *c]):
                sums[i] += value * w
        for cell, sums in frame.items():
            old = self.voxels.setdefault(cell, [0.0] * 7)
            for i in range(7):
                old[i] += sums[i]
        excess = len(self.voxels) - self.max_points
        if excess > 0:
            for cell in sorted(self.voxels, key=lambda k: self.voxels[k][0])[:excess]:
                del self.voxels[cell]
        return used

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        sums = np.array([self.voxels[cell] for cell in sorted(self.voxels)]).reshape(-1, 7)
        xyz = (sums[:, 1:4] / sums[:, :1]).astype(np.float32)
        rgb = np.clip(np.rint(sums[:, 4:7] / sums[:, :1]), 0, 255).astype(np.uint8)
        return xyz, rgb, sums[:, 0].astype(np.float32)


def _frame(rng: np.random.Generator, n: int, centre: float, spread: float,
           dtype: type = np.float32) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    points = rng.normal(loc=(centre, 0.0, 0.0), scale=spread, size=(n, 3)).astype(dtype)
    colors = rng.integers(0, 256, (n, 3), dtype=np.uint8)
    conf = rng.uniform(1.0, 10.0, n).astype(np.float32)
    return points, colors, conf


def _assert_same(vmap: VoxelMap, ref: DictVoxelMap) -> None:
    assert len(vmap) == len(ref.voxels)
    for got, want in zip(vmap.arrays(), ref.arrays()):
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize('max_points', [10_000, 600, 120])
def test_matches_the_reference_through_growth_and_eviction(max_points: int) -> None:
    rng = np.random.default_rng(max_points)
    vmap, ref = VoxelMap(0.05, max_points), DictVoxelMap(0.05, max_points)
    for i in range(8):
        # A drifting blob: part re-observed, part new, so voxels are updated, added and evicted.
        points, colors, conf = _frame(rng, 1500, centre=0.05 * i, spread=0.15,
                                      dtype=np.float64 if i % 2 else np.float32)
        if i == 3:
            points[:20] = np.nan
            conf[20:40] = 0.0
            points[40] = (1e9, 0.0, 0.0)
        assert vmap.integrate(points, colors, conf) == ref.integrate(points, colors, conf)
        _assert_same(vmap, ref)


def test_matches_the_reference_when_few_voxels_are_evicted_from_a_large_map(monkeypatch) -> None:
    # A full map that loses a small share per frame takes the sampled-threshold eviction path.
    shares = []
    select = mapping._lowest

    def spy(values: np.ndarray, count: int) -> np.ndarray:
        shares.append(count / len(values))
        return select(values, count)

    monkeypatch.setattr(mapping, '_lowest', spy)
    rng = np.random.default_rng(11)
    cap = 3000
    vmap, ref = VoxelMap(0.02, cap), DictVoxelMap(0.02, cap)
    for i in range(6):
        spread = 0.3 if i == 0 else 0.05
        points, colors, conf = _frame(rng, 4000 if i == 0 else 150, centre=0.1 * i,
                                      spread=spread)
        vmap.integrate(points, colors, conf)
        ref.integrate(points, colors, conf)
        _assert_same(vmap, ref)
    assert len(vmap) == cap
    assert sum(share * mapping._PREFILTER_RATIO < 1 for share in shares) >= 4


def test_state_restored_mid_sequence_continues_like_the_reference(tmp_path) -> None:
    rng = np.random.default_rng(5)
    frames = [_frame(rng, 800, centre=0.04 * i, spread=0.1) for i in range(6)]
    vmap, ref = VoxelMap(0.03, 500), DictVoxelMap(0.03, 500)
    for frame in frames[:3]:
        vmap.integrate(*frame)
        ref.integrate(*frame)
    np.savez(tmp_path / 'map.npz', **vmap.state_dict())
    restored = VoxelMap(1.0, 1)
    restored.load_state_dict(dict(np.load(tmp_path / 'map.npz')))
    for frame in frames[3:]:
        restored.integrate(*frame)
        ref.integrate(*frame)
        _assert_same(restored, ref)


@pytest.mark.parametrize('layout', ['random', 'ascending', 'sample_positions_small'])
def test_lowest_selects_exactly_the_smallest_values(layout: str) -> None:
    rng = np.random.default_rng(3)
    n, count = 100_000, 5_000
    values = rng.uniform(1.0, 2.0, n)
    if layout == 'ascending':
        values.sort()
    elif layout == 'sample_positions_small':
        # Every strided sample is tiny, so the threshold estimate falls short: fallback path.
        values[::n // 4096] = rng.uniform(0.0, 0.1, len(values[::n // 4096]))
    picked = mapping._lowest(values, count)
    assert len(picked) == count and len(np.unique(picked)) == count
    np.testing.assert_array_equal(np.sort(picked), np.sort(np.argsort(values)[:count]))


@pytest.mark.parametrize('count', [5_000, 40_000])
def test_lowest_breaks_ties_towards_the_lowest_indices_on_every_path(count: int) -> None:
    # Few distinct values, so the cut falls inside a run of ties (prefilter and full path).
    values = np.random.default_rng(4).integers(0, 50, 100_000).astype(np.float64)
    picked = mapping._lowest(values, count)
    assert len(picked) == count
    np.testing.assert_array_equal(np.sort(picked), np.sort(np.argsort(values, kind='stable')
                                                           [:count]))
