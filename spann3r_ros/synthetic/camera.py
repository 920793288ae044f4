"""The camera of a synthetic sequence: pinhole intrinsics and an analytic, smooth trajectory.

Camera frame: OpenCV (x right, y down, z forward). Poses are camera-to-world.
"""

from __future__ import annotations

import numpy as np


def intrinsics(width: int, height: int, fov_x_deg: float) -> np.ndarray:
    """``[3, 3]`` pinhole intrinsics (square pixels, centred principal point)."""
    f = (width / 2) / np.tan(np.deg2rad(fov_x_deg) / 2)
    return np.array([[f, 0, (width - 1) / 2], [0, f, (height - 1) / 2], [0, 0, 1]])


def trajectory_pose(seed: int, angular_speed: float, t: float) -> np.ndarray:
    """``[4, 4]`` camera-to-world pose at time ``t`` seconds after the start.

    The camera circles the room centre at ``angular_speed`` rad/s, bobs a little and looks
    around; ``seed + 1`` draws the phase and the radius of the circle.
    """
    rng = np.random.default_rng(seed + 1)
    phase, radius = rng.uniform(0, 2 * np.pi), rng.uniform(0.3, 0.6)
    a = phase + angular_speed * t
    eye = np.array([radius * np.cos(a), 0.8 * radius * np.sin(a),
                    1.3 + 0.1 * np.sin(1.7 * angular_speed * t)])
    look = a + np.pi / 2 + 0.6 * np.sin(0.9 * angular_speed * t)
    target = eye + np.array([np.cos(look), np.sin(look), -0.15])
    forward = target - eye
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    T = np.eye(4)
    T[:3, 0], T[:3, 1], T[:3, 2], T[:3, 3] = right, down, forward, eye
    return T
