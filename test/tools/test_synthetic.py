"""The synthetic generator: deterministic, textured, geometrically consistent."""

import numpy as np
import pytest

from spann3r_model.geometry.camera import backproject
from spann3r_ros.synthetic.scene import SyntheticConfig, SyntheticScene


def test_same_seed_same_frames_other_seed_other_scene(tiny_frames):
    again = list(SyntheticScene(SyntheticConfig(width=160, height=120, num_frames=5,
                                                seed=3)).frames())
    for a, b in zip(tiny_frames, again):
        assert np.array_equal(a.rgb, b.rgb) and np.array_equal(a.depth, b.depth)
        assert np.array_equal(a.T_world_cam, b.T_world_cam)
    other = next(SyntheticScene(SyntheticConfig(width=160, height=120, seed=4)).frames())
    assert not np.array_equal(other.rgb, tiny_frames[0].rgb)


def test_frames_are_textured_valid_and_move_smoothly(tiny_frames):
    for f in tiny_frames:
        assert f.rgb.shape == (120, 160, 3) and f.rgb.dtype == np.uint8
        assert np.isfinite(f.depth).all() and f.depth.min() > 0.1
        # Texture: many distinct grey levels and strong local gradients.
        grey = f.rgb.mean(axis=2)
        assert len(np.unique(f.rgb.reshape(-1, 3), axis=0)) > 500
        assert np.abs(np.diff(grey, axis=1)).mean() > 2
        R = f.T_world_cam[:3, :3]
        assert np.allclose(R.T @ R, np.eye(3), atol=1e-9) and np.linalg.det(R) > 0
    steps = [np.linalg.norm(b.T_world_cam[:3, 3] - a.T_world_cam[:3, 3])
             for a, b in zip(tiny_frames, tiny_frames[1:])]
    assert 0 < min(steps) and max(steps) < 0.1
    assert max(steps) / min(steps) < 3  # smooth: no jumps


def test_depth_and_poses_agree_between_frames(tiny_frames):
    a, b = tiny_frames[0], tiny_frames[3]
    world, valid = backproject(a.depth, a.K, a.T_world_cam)
    pts = world[valid].astype(np.float64)
    cam = (pts - b.T_world_cam[:3, 3]) @ b.T_world_cam[:3, :3]
    uv = cam[:, :2] / cam[:, 2:] * [b.K[0, 0], b.K[1, 1]] + [b.K[0, 2], b.K[1, 2]]
    u, v = np.round(uv).astype(int).T
    inside = (u >= 0) & (u < 160) & (v >= 0) & (v < 120) & (cam[:, 2] > 0)
    err = np.abs(b.depth[v[inside], u[inside]] - cam[inside, 2])
    assert inside.mean() > 0.5
    # Visible surfaces match to within the rounding of the pixel grid; occlusions are rare.
    assert np.median(err) < 0.01 and np.mean(err < 0.05) > 0.9


def test_bad_config_is_rejected():
    with pytest.raises(ValueError, match='room_size'):
        SyntheticConfig(room_size=(1.0, 5.0, 3.0))
    with pytest.raises(ValueError):
        SyntheticConfig(width=4)
