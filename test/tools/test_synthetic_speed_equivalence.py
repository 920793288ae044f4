"""The fast synthetic renderer equals a plain per-pixel ray caster, bit for bit.

The reference below tests every ray against every primitive and shades each pixel with dense
``[N, 3]`` arrays, with the dtypes and operation order the generator has always had. The fast
renderer only tests rays inside projected rectangles, works in row blocks, and reuses scratch
memory; none of that may change a single bit of the output.
"""

import pickle
import threading

import numpy as np
import pytest

from spann3r_ros.synthetic.layout import TEXTURES
from spann3r_ros.synthetic.projection import screen_rect
from spann3r_ros.synthetic.scene import SyntheticConfig, SyntheticScene
from spann3r_ros.synthetic.textures import _floor_mod


def _to_local(s, origin, dirs):
    cy, sy = np.cos(s.yaw), np.sin(s.yaw)
    o = origin - s.centre
    o = np.array([cy * o[0] + sy * o[1], -sy * o[0] + cy * o[1], o[2]], np.float32)
    d = [np.float32(cy) * dirs[0] + np.float32(sy) * dirs[1],
         np.float32(-sy) * dirs[0] + np.float32(cy) * dirs[1], dirs[2]]
    return o, d


def _distance(s, origin, dirs):
    o, d = _to_local(s, origin, dirs)
    if s.sphere:
        b = d[0] * o[0] + d[1] * o[1] + d[2] * o[2]
        a = d[0] * d[0] + d[1] * d[1] + d[2] * d[2]
        disc = b * b - a * np.float32(o @ o - s.half[0] ** 2)
        with np.errstate(invalid='ignore'):
            t = (-b - np.sqrt(disc)) / a
        return np.where((disc >= 0) & (t > 1e-4), t, np.inf).astype(np.float32)
    near = np.full(len(d[0]), -np.inf, np.float32)
    far = np.full(len(d[0]), np.inf, np.float32)
    with np.errstate(divide='ignore', invalid='ignore'):
        for k in range(3):
            inv = np.float32(1.0) / d[k]
            t1 = (np.float32(-s.half[k]) - o[k]) * inv
            t2 = (np.float32(s.half[k]) - o[k]) * inv
            np.maximum(near, np.minimum(t1, t2), out=near)
            np.minimum(far, np.maximum(t1, t2), out=far)
    if s.inside:
        return far
    return np.where((near <= far) & (near > 1e-4), near, np.inf).astype(np.float32)


def _local_hit(s, origin, dirs, t):
    o, d = _to_local(s, origin, dirs)
    p = np.stack([o[k] + t * d[k] for k in range(3)], axis=1)
    if s.sphere:
        return p, p / np.float32(s.half[0])
    rel = np.abs(p / s.half.astype(np.float32))
    axis = rel.argmax(axis=1)
    rows = np.arange(len(p))
    n = np.zeros_like(p)
    n[rows, axis] = np.sign(p[rows, axis])
    return p, (-n if s.inside else n)


def _texture(scene, s, p, n):
    axis = np.abs(n).argmax(axis=1)
    u = np.where(axis == 0, p[:, 1], p[:, 0])
    v = np.where(axis == 2, p[:, 1], p[:, 2])
    if s.sphere:
        u = np.arctan2(p[:, 1], p[:, 0]) * s.half[0]
        v = p[:, 2]
    u, v = u * s.scale, v * s.scale
    if s.texture == 'checker':
        w = ((np.floor(u) + np.floor(v)) % 2).astype(np.float32)
    elif s.texture == 'stripes':
        w = 0.5 + 0.5 * np.sin(2.0 * u + 0.7 * v).astype(np.float32)
    elif s.texture == 'bricks':
        row = np.floor(v * 2)
        uu = u + 0.5 * (row % 2)
        mortar = ((v * 2) % 1 < 0.12) | (uu % 1 < 0.06)
        w = np.where(mortar, 1.0, 0.0).astype(np.float32)
    else:
        w = np.zeros(len(u), np.float32)
    size = scene.noise.shape[0]
    grain = scene.noise[(v * 9).astype(np.int64) % size, (u * 9).astype(np.int64) % size]
    w = 0.75 * w + 0.25 * grain if s.texture != 'noise' else grain
    return s.colours[0] * (1 - w[:, None]) + s.colours[1] * w[:, None]


def reference_render(scene, T_world_cam):
    """Every ray against every primitive, dense shading: slow and obviously complete."""
    c, K = scene.config, scene.K
    u, v = np.meshgrid(np.arange(c.width, dtype=np.float32), np.arange(c.height, dtype=np.float32))
    rays = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)],
                    axis=-1).reshape(-1, 3)
    R = T_world_cam[:3, :3].astype(np.float32)
    origin = T_world_cam[:3, 3].astype(np.float32)
    dirs = [np.ascontiguousarray(col) for col in (rays @ R.T).T]
    best = np.full(len(dirs[0]), np.inf, np.float32)
    owner = np.full(len(dirs[0]), -1, np.int64)
    for i, s in enumerate(scene.surfaces):
        t = _distance(s, origin, dirs)
        np.copyto(owner, i, where=t < best)
        np.minimum(best, t, out=best)
    colour = np.zeros((len(best), 3), np.float32)
    normal = np.zeros((len(best), 3), np.float32)
    for i, s in enumerate(scene.surfaces):
        sel = np.flatnonzero(owner == i)
        if sel.size == 0:
            continue
        p, n = _local_hit(s, origin, [d[sel] for d in dirs], best[sel])
        colour[sel] = _texture(scene, s, p, n)
        cy, sy = np.cos(s.yaw), np.sin(s.yaw)
        Rs = np.array([[cy, -sy, 0], [sy, cy, 0], [0, 0, 1]], np.float32)
        normal[sel] = n @ Rs.T
    light = (0.5, -0.4, c.room_size[2] - 0.3)
    to_light = [np.float32(light[k]) - (origin[k] + best * dirs[k]) for k in range(3)]
    norm = np.sqrt(to_light[0] ** 2 + to_light[1] ** 2 + to_light[2] ** 2)
    lambert = np.abs(sum(normal[:, k] * to_light[k] for k in range(3))) / norm
    shade = (np.float32(0.35 * 255) + np.float32(0.65 * 255) * lambert)[:, None]
    rgb = np.clip(colour * shade + 0.5, 0, 255).astype(np.uint8).reshape(c.height, c.width, 3)
    return rgb, best.reshape(c.height, c.width), owner.reshape(c.height, c.width)


def _look_at(eye, target):
    forward = (target - eye) / np.linalg.norm(target - eye)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    T = np.eye(4)
    T[:3, 0], T[:3, 1], T[:3, 2], T[:3, 3] = right, np.cross(forward, right), forward, eye
    return T


def _hard_poses(scene, rng, count):
    """Poses a few centimetres to a metre from a primitive, looking past or into it.

    Close primitives straddle the image plane and fill or overflow the image: the cases where
    a projected rectangle could be too small.
    """
    poses = []
    half = scene.room_half
    for _ in range(count):
        s = scene.surfaces[rng.integers(1, len(scene.surfaces))]
        offset = rng.normal(size=3)
        offset *= (np.max(s.half) + rng.uniform(0.02, 1.0)) / np.linalg.norm(offset)
        eye = np.clip(s.centre + offset, -half + 0.05, half + 0.05)
        eye[2] = np.clip(eye[2], 0.05, 2 * half[2] - 0.05)
        target = s.centre + rng.normal(scale=0.8, size=3)
        if np.linalg.norm(np.cross(target - eye, [0.0, 0.0, 1.0])) < 1e-3:
            target[0] += 0.5
        poses.append(_look_at(eye, target))
    return poses


def _assert_same(scene, T):
    rgb, depth = scene.render(T)
    ref_rgb, ref_depth, _ = reference_render(scene, T)
    assert depth.dtype == np.float32 and rgb.dtype == np.uint8
    assert np.array_equal(depth, ref_depth), np.abs(depth - ref_depth).max()
    assert np.array_equal(rgb, ref_rgb), (rgb != ref_rgb).any(axis=2).mean()


CASES = [
    dict(seed=0, width=64, height=48),
    dict(seed=3, width=80, height=60, fov_x_deg=120.0, num_boxes=10, num_spheres=4),
    dict(seed=11, width=47, height=31, fov_x_deg=30.0),
    dict(seed=5, width=64, height=48, room_size=(1.5, 1.5, 1.5), num_boxes=5),
]


@pytest.mark.parametrize('case', CASES, ids=lambda c: f"seed{c['seed']}")
def test_trajectory_frames_equal_the_reference(case):
    scene = SyntheticScene(SyntheticConfig(num_frames=6, fps=0.5, **case))
    for frame in scene.frames():
        ref_rgb, ref_depth, _ = reference_render(scene, frame.T_world_cam)
        assert np.array_equal(frame.depth, ref_depth)
        assert np.array_equal(frame.rgb, ref_rgb)


@pytest.mark.parametrize('seed', [1, 2])
def test_every_texture_close_up_equals_the_reference(seed):
    scene = SyntheticScene(SyntheticConfig(width=72, height=54, seed=seed, num_spheres=3))
    rng = np.random.default_rng(seed)
    poses = _hard_poses(scene, rng, 8)
    for rotation in range(len(TEXTURES)):
        # Give every primitive every texture in turn.
        for i, s in enumerate(scene.surfaces):
            s.texture = TEXTURES[(i + rotation) % len(TEXTURES)]
        for T in poses[2 * rotation:2 * rotation + 2]:
            _assert_same(scene, T)


def test_projected_rectangles_hold_every_hit():
    scene = SyntheticScene(SyntheticConfig(width=64, height=48, seed=7, num_spheres=3))
    rng = np.random.default_rng(7)
    poses = _hard_poses(scene, rng, 12) + [scene.pose_at(t) for t in range(0, 60, 6)]
    checked = 0
    for T in poses:
        _, _, owner = reference_render(scene, T)
        for i, s in enumerate(scene.surfaces[1:], start=1):
            rows, cols = np.nonzero(owner == i)
            rect = screen_rect(s.corners_world(), T, scene.K, 64, 48)
            if rows.size == 0:
                continue
            assert rect is not None, f'surface {i} is seen but has no rectangle'
            assert rows.min() >= rect[0].start and rows.max() < rect[0].stop
            assert cols.min() >= rect[1].start and cols.max() < rect[1].stop
            checked += 1
    assert checked > 20  # the poses do put primitives in view


def test_nothing_behind_the_camera_gets_a_rectangle():
    scene = SyntheticScene(SyntheticConfig(width=64, height=48))
    T = np.eye(4)
    corners = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-3.0, -2.0)])
    assert screen_rect(corners, T, scene.K, 64, 48) is None
    straddling = corners + [0.0, 0.0, 2.5]  # z from -0.5 to 0.5: overflows the whole image
    assert screen_rect(straddling, T, scene.K, 64, 48) == (slice(0, 48), slice(0, 64))


def test_scratch_memory_is_not_shared_between_threads_or_copies():
    scene = SyntheticScene(SyntheticConfig(width=96, height=72, seed=2))
    poses = [scene.pose_at(t) for t in (0.0, 7.0, 13.0, 21.0)]
    expected = [scene.render(T) for T in poses]
    results = {}

    def work(k):
        for _ in range(3):
            results[k] = scene.render(poses[k])

    threads = [threading.Thread(target=work, args=(k,)) for k in range(len(poses))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k, (rgb, depth) in enumerate(expected):
        assert np.array_equal(results[k][0], rgb) and np.array_equal(results[k][1], depth)
    # Earlier outputs are not views of reused memory.
    again = scene.render(poses[0])
    assert np.array_equal(expected[0][0], again[0]) and expected[0][0] is not again[0]
    clone = pickle.loads(pickle.dumps(scene))
    assert np.array_equal(clone.render(poses[3])[0], expected[3][0])


@pytest.mark.parametrize('m', [1, 2])
def test_floor_mod_is_numpy_remainder_bit_for_bit(m):
    # Everything but -2**-1074 (documented exception).
    rng = np.random.default_rng(m)
    x = np.concatenate([
        rng.normal(scale=50.0, size=20000),
        np.floor(rng.normal(scale=50.0, size=2000)),  # integers, where the result is 0 or 1
        [-1e-20, 1e-20, -1e-300, -3 * 2.0 ** -1074, 5e-324, -0.0, 0.0, -1.0, -2.0, -3.0,
         2.0 ** 60, -(2.0 ** 60), -1 + 2 ** -52, -4.5, 4.5, 1.9999999999999998,
         -1.9999999999999998]])
    got = _floor_mod(x, m, out=np.empty_like(x))
    expected = x % m
    assert np.array_equal(got, expected)
    assert np.array_equal(got.view(np.int64) == 0, expected.view(np.int64) == 0)  # no -0.0
