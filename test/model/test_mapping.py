"""Bounded voxel map: fusion, the cap and its eviction policy, persistence."""

import time

import numpy as np
import pytest

from spann3r_model.mapping.voxel_map import VoxelMap


def _rgb(n: int, value: int) -> np.ndarray:
    return np.full((n, 3), value, dtype=np.uint8)


def test_fusion_is_a_confidence_weighted_average() -> None:
    vmap = VoxelMap(voxel_size=1.0, max_points=10)
    p1, p2, p3 = [0.1, 0.2, 0.3], [0.5, 0.6, 0.9], [0.9, 0.1, 0.5]
    vmap.integrate(np.array([p1, p2]), np.array([[0, 0, 0], [200, 100, 40]], np.uint8),
                   np.array([1.0, 3.0]))
    # A later frame fuses into the same voxel with its own weight.
    vmap.integrate(np.array([p3]), np.array([[100, 100, 100]], np.uint8), np.array([4.0]))
    xyz, rgb, conf = vmap.arrays()
    assert len(vmap) == 1
    expected = (1 * np.array(p1) + 3 * np.array(p2) + 4 * np.array(p3)) / 8
    np.testing.assert_allclose(xyz[0], expected, rtol=1e-6)
    expected_rgb = (3 * np.array([200, 100, 40]) + 4 * np.array([100, 100, 100])) / 8
    np.testing.assert_array_equal(rgb[0], np.rint(expected_rgb))
    assert conf[0] == pytest.approx(8.0)
    assert xyz.dtype == np.float32 and rgb.dtype == np.uint8 and conf.dtype == np.float32


def test_distinct_voxels_stay_apart_including_negative_cells() -> None:
    vmap = VoxelMap(voxel_size=0.1, max_points=10)
    points = np.array([[-0.01, 0, 0], [0.01, 0, 0], [0.05, 0.02, 0.03], [-100.0, 50.0, 3.0]])
    vmap.integrate(points, _rgb(4, 9), np.ones(4))
    xyz, _, conf = vmap.arrays()
    assert len(vmap) == 3
    got = sorted(map(tuple, np.round(xyz, 4)))
    assert got == sorted([(-0.01, 0.0, 0.0), (0.03, 0.01, 0.015), (-100.0, 50.0, 3.0)])
    assert sorted(conf) == [1.0, 1.0, 2.0]


def test_invalid_points_are_ignored() -> None:
    vmap = VoxelMap(voxel_size=1.0, max_points=10)
    points = np.array([[0, 0, 0], [np.nan, 0, 0], [5, 5, 5], [9, 9, 9], [1e9, 0, 0]], float)
    used = vmap.integrate(points, _rgb(5, 1), np.array([1.0, 1.0, 0.0, -2.0, 1.0]))
    assert used == 1 and len(vmap) == 1


def test_bad_input_is_refused_and_loses_nothing() -> None:
    vmap = VoxelMap(voxel_size=1.0, max_points=10)
    vmap.integrate(np.zeros((1, 3)), _rgb(1, 5), np.ones(1))
    before = vmap.state_dict()
    with pytest.raises(ValueError, match='colors'):
        vmap.integrate(np.ones((2, 3)), np.ones((2, 3), np.float32), np.ones(2))
    with pytest.raises(ValueError, match='conf'):
        vmap.integrate(np.ones((2, 3)), _rgb(2, 1), np.ones(3))
    with pytest.raises(ValueError, match='points'):
        vmap.integrate(np.ones((2, 2)), _rgb(2, 1), np.ones(2))
    after = vmap.state_dict()
    for key in before:
        np.testing.assert_array_equal(before[key], after[key])
    with pytest.raises(ValueError):
        VoxelMap(voxel_size=0.0, max_points=1)
    with pytest.raises(ValueError):
        VoxelMap(voxel_size=0.1, max_points=0)


def test_cap_is_never_exceeded_and_lowest_weights_go_first() -> None:
    rng = np.random.default_rng(0)
    cap = 100
    vmap = VoxelMap(voxel_size=1.0, max_points=cap)
    cells = rng.choice(10_000, size=1500, replace=False)  # distinct voxels across all frames
    confs = rng.uniform(1, 100, size=1500)
    for frame in range(5):
        part = slice(300 * frame, 300 * (frame + 1))
        c = cells[part]
        points = np.stack([c % 100, c // 100, np.zeros_like(c)], 1) + 0.5
        vmap.integrate(points, _rgb(300, 7), confs[part])
        assert len(vmap) == min(cap, 300 * (frame + 1))
    # The survivors are exactly the 100 most confident voxels ever seen.
    _, _, kept = vmap.arrays()
    np.testing.assert_allclose(np.sort(kept), np.sort(confs)[-cap:], rtol=1e-6)


def test_eviction_keeps_well_observed_voxels() -> None:
    vmap = VoxelMap(voxel_size=1.0, max_points=3)
    strong = np.array([[0.5, 0.5, 0.5], [1.5, 0.5, 0.5], [2.5, 0.5, 0.5]])
    vmap.integrate(strong, _rgb(3, 1), np.full(3, 5.0))
    weak = np.array([[10.5, 0, 0], [11.5, 0, 0]])
    vmap.integrate(weak, _rgb(2, 2), np.full(2, 1.0))
    xyz, _, _ = vmap.arrays()
    np.testing.assert_allclose(np.sort(xyz[:, 0]), [0.5, 1.5, 2.5])
    # A new point that is more confident than the weakest kept voxel replaces it.
    vmap.integrate(np.array([[20.5, 0, 0]]), _rgb(1, 3), np.array([6.0]))
    xyz, _, conf = vmap.arrays()
    assert len(vmap) == 3 and 20.5 in xyz[:, 0] and sorted(conf) == [5.0, 5.0, 6.0]


def test_clear_empties() -> None:
    vmap = VoxelMap(voxel_size=0.5, max_points=10)
    vmap.integrate(np.random.default_rng(1).normal(size=(20, 3)), _rgb(20, 3), np.ones(20))
    assert len(vmap) > 0
    vmap.clear()
    assert len(vmap) == 0
    xyz, rgb, conf = vmap.arrays()
    assert xyz.shape == (0, 3) and rgb.shape == (0, 3) and conf.shape == (0,)


def test_state_round_trip_continues_identically(tmp_path) -> None:
    rng = np.random.default_rng(2)
    frames = [(rng.normal(size=(500, 3)), rng.integers(0, 255, (500, 3), dtype=np.uint8),
               rng.uniform(1, 5, 500)) for _ in range(4)]
    original = VoxelMap(voxel_size=0.2, max_points=400)
    for frame in frames[:2]:
        original.integrate(*frame)
    np.savez(tmp_path / 'map.npz', **original.state_dict())
    restored = VoxelMap(voxel_size=1.0, max_points=1)
    restored.load_state_dict(dict(np.load(tmp_path / 'map.npz')))
    assert (restored.voxel_size, restored.max_points) == (0.2, 400)
    for frame in frames[2:]:
        original.integrate(*frame)
        restored.integrate(*frame)
    for a, b in zip(original.arrays(), restored.arrays()):
        np.testing.assert_array_equal(a, b)


def test_bad_state_is_refused() -> None:
    vmap = VoxelMap(voxel_size=0.2, max_points=10)
    vmap.integrate(np.array([[0.0, 0, 0], [1.0, 0, 0]]), _rgb(2, 1), np.ones(2))
    state = vmap.state_dict()
    with pytest.raises(ValueError, match='lacks'):
        vmap.load_state_dict({k: v for k, v in state.items() if k != 'weight'})
    with pytest.raises(ValueError, match='version'):
        vmap.load_state_dict({**state, 'version': np.array(99)})
    with pytest.raises(ValueError, match='increasing'):
        vmap.load_state_dict({**state, 'keys': state['keys'][::-1].copy()})
    with pytest.raises(ValueError, match='cap'):
        vmap.load_state_dict({**state, 'max_points': np.array(1)})
    assert len(vmap) == 2


def test_fifty_thousand_points_per_frame_is_fast() -> None:
    rng = np.random.default_rng(3)
    vmap = VoxelMap(voxel_size=0.01, max_points=300_000)
    times = []
    for i in range(12):
        points = rng.uniform(-1, 1, size=(50_176, 3)) + (0.1 * i, 0, 0)
        colors = rng.integers(0, 255, (50_176, 3), dtype=np.uint8)
        conf = rng.uniform(1, 10, 50_176)
        start = time.perf_counter()
        vmap.integrate(points, colors, conf)
        times.append(time.perf_counter() - start)
        assert len(vmap) <= 300_000
    print(f'voxel map: median {1e3 * np.median(times):.1f} ms per 50k-point frame, '
          f'{len(vmap)} voxels')
    assert np.median(times) < 0.5


def test_half_precision_points_land_in_the_same_voxels() -> None:
    rng = np.random.default_rng(4)
    points = rng.uniform(-3, 3, size=(2000, 3)).astype(np.float16)
    colors = rng.integers(0, 255, (2000, 3), dtype=np.uint8)
    conf = rng.uniform(1, 5, 2000)
    half, single = VoxelMap(0.05, 5000), VoxelMap(0.05, 5000)
    assert half.integrate(points, colors, conf) == 2000
    single.integrate(points.astype(np.float32), colors, conf)
    for a, b in zip(half.arrays(), single.arrays()):
        np.testing.assert_array_equal(a, b)
    xyz, _, _ = half.arrays()
    assert np.abs(xyz).max() <= 3.0
