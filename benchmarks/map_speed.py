"""Per-frame ``VoxelMap.integrate`` time, the current map against the previous implementation.

The sequence imitates the live node: a camera walks through a 6 x 3 x 6 m room, turning
slowly, and each frame is a 224 x 224 pointmap (50,176 points, 5 mm noise, confidences 1-10)
ray-cast onto the walls. For each cap (and voxel size) both maps integrate the same frames,
interleaved frame by frame so that changes in machine load hit both alike; the script prints
p50 / p90 per frame, the median of the paired per-frame ratios, the time of one ``arrays()``
read, and whether both maps ended with identical arrays. Example::

    .venv/bin/python benchmarks/map_speed.py --frames 100 --caps 100000 500000
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from spann3r_model.mapping.voxel_map import VoxelMap


class SortedRowsVoxelMap:
    """The previous implementation, for comparison: one sorted ``[M, 7]`` array of sums.

    Every frame with new voxels rebuilds the whole array (an ordered insert through boolean
    masks) and, once full, runs ``argpartition`` over all weights.
    """

    _BITS = 21
    _OFFSET = 1 << 20

    def __init__(self, voxel_size: float, max_points: int) -> None:
        self.voxel_size, self.max_points = voxel_size, max_points
        self._keys = np.empty(0, dtype=np.int64)
        self._sums = np.empty((0, 7), dtype=np.float64)

    def __len__(self) -> int:
        return len(self._keys)

    def integrate(self, points: np.ndarray, colors: np.ndarray, conf: np.ndarray) -> int:
        weight = conf.astype(np.float64)
        cells = np.floor(points / self.voxel_size)
        valid = np.isfinite(cells).all(axis=1) & np.isfinite(weight) & (weight > 0)
        valid &= (np.abs(cells) < self._OFFSET).all(axis=1)
        weight = weight[valid]
        shifted = (cells[valid] + self._OFFSET).astype(np.int64)
        keys = (shifted[:, 0] << 2 * self._BITS) | (shifted[:, 1] << self._BITS) | shifted[:, 2]
        uniq, inverse = np.unique(keys, return_inverse=True)
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
        self._keys, self._sums = merged_keys, merged_sums

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        weight = self._sums[:, :1]
        xyz = (self._sums[:, 1:4] / weight).astype(np.float32)
        rgb = np.clip(np.rint(self._sums[:, 4:7] / weight), 0, 255).astype(np.uint8)
        return xyz, rgb, self._sums[:, 0].astype(np.float32)


def room_scan(n_frames: int, size: int = 224, seed: int = 0
              ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Return ``n_frames`` of ``(points [N, 3] float32, colors [N, 3] uint8, conf [N] float32)``.

    :param n_frames: number of frames.
    :param size: pointmap side (``N = size * size``).
    :param seed: noise and confidence seed.
    """
    rng = np.random.default_rng(seed)
    u, v = np.meshgrid(np.arange(size), np.arange(size))
    focal = 200.0
    rays_cam = np.stack([(u - size / 2) / focal, (v - size / 2) / focal,
                         np.ones((size, size))], -1).reshape(-1, 3)
    low, high = np.array([-3.0, -1.5, -3.0]), np.array([3.0, 1.5, 3.0])
    frames = []
    for i in range(n_frames):
        yaw = 0.02 * i
        R = np.array([[np.cos(yaw), 0, np.sin(yaw)], [0, 1, 0], [-np.sin(yaw), 0, np.cos(yaw)]])
        origin = np.array([0.01 * i, 0.0, -1.0 + 0.01 * i])
        rays = rays_cam @ R.T
        # Distance to the first wall along each ray (slab test from inside the box).
        with np.errstate(divide='ignore'):
            hits = np.where(rays > 0, (high - origin) / rays, (low - origin) / rays)
        depth = np.where(np.isfinite(hits), hits, np.inf).min(axis=1)
        points = origin + rays * depth[:, None] + rng.normal(scale=0.005, size=rays.shape)
        colors = ((points * 40.0) % 255).astype(np.uint8)
        conf = rng.uniform(1.0, 10.0, len(points)).astype(np.float32)
        frames.append((points.astype(np.float32), colors, conf))
    return frames


def timed(fn, *args) -> float:
    """Return the wall time of ``fn(*args)`` in milliseconds."""
    start = time.perf_counter()
    fn(*args)
    return 1e3 * (time.perf_counter() - start)


def bench(frames: list, voxel_size: float, cap: int) -> None:
    """Integrate ``frames`` into both maps, interleaved, and print the figures."""
    before, after = SortedRowsVoxelMap(voxel_size, cap), VoxelMap(voxel_size, cap)
    t_before, t_after = [], []
    for i, frame in enumerate(frames):
        # Alternate which runs first, so neither always meets the warmer cache.
        if i % 2:
            t_after.append(timed(after.integrate, *frame))
            t_before.append(timed(before.integrate, *frame))
        else:
            t_before.append(timed(before.integrate, *frame))
            t_after.append(timed(after.integrate, *frame))
    read_before, read_after = timed(before.arrays), timed(after.arrays)
    same = all(np.array_equal(a, b) for a, b in zip(before.arrays(), after.arrays()))
    tb, ta = np.array(t_before), np.array(t_after)
    print(f'voxel {voxel_size:g} m, cap {cap:>7,d} ({len(after):,d} voxels at the end):')
    print(f'  before: p50 {np.percentile(tb, 50):6.1f} ms  p90 {np.percentile(tb, 90):6.1f} ms'
          f'  arrays() {read_before:5.1f} ms')
    print(f'  after:  p50 {np.percentile(ta, 50):6.1f} ms  p90 {np.percentile(ta, 90):6.1f} ms'
          f'  arrays() {read_after:5.1f} ms')
    print(f'  after / before per frame: median {np.median(ta / tb):.2f};'
          f' identical arrays: {"yes" if same else "NO"}')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--frames', type=int, default=100)
    parser.add_argument('--caps', type=int, nargs='+', default=[100_000, 500_000])
    parser.add_argument('--voxels', type=float, nargs='+', default=[0.01, 0.05])
    args = parser.parse_args()
    if args.frames < 1:
        parser.error('--frames must be at least 1')
    frames = room_scan(args.frames)
    print(f'{args.frames} frames of {len(frames[0][0]):,d} points; '
          f'load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs')
    for voxel_size in args.voxels:
        for cap in args.caps:
            bench(frames, voxel_size, cap)
    print(f'load average at the end {os.getloadavg()[0]:.2f}')


if __name__ == '__main__':
    main()
