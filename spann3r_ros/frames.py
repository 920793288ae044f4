"""Frame conventions of the published outputs (ROS-free).

Spann3R expresses every pointmap in the optical frame of the first camera of a reconstruction
(x right, y down, z forward). ROS tools expect a map frame in the REP 103 convention (x forward,
y left, z up), so the node publishes everything in

    map = the first camera's optical frame, rotated into REP 103 axes,

i.e. ``p_map = R_MAP_WORLD @ p_world``. The origin is the first camera's centre; the scale is
the model's (arbitrary, roughly metric). A camera pose ``T_world_cam`` (optical camera frame to
the first camera's optical frame) becomes ``T_map_cam = [R_MAP_WORLD, 0; 0, 1] @ T_world_cam``:
the TF child frame is the camera's *optical* frame, so RViz shows the first camera looking along
map +x with the image's down direction along map -z.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

#: Rotation from the first camera's optical frame (x right, y down, z forward) to REP 103.
R_MAP_WORLD = np.array([[0.0, 0.0, 1.0],
                        [-1.0, 0.0, 0.0],
                        [0.0, -1.0, 0.0]])

T_MAP_WORLD = np.eye(4)
T_MAP_WORLD[:3, :3] = R_MAP_WORLD


def points_world_to_map(points_world: np.ndarray) -> np.ndarray:
    """Rotate ``[..., 3]`` points from the first camera's optical frame into the map frame.

    :param points_world: points in the first camera's optical frame.
    :return: float32 points of the same shape in the map frame.
    """
    pts = np.asarray(points_world, dtype=np.float32)
    # A permutation with sign flips: cheaper and exact compared with a matrix product.
    out = np.empty_like(pts)
    out[..., 0] = pts[..., 2]
    out[..., 1] = -pts[..., 0]
    out[..., 2] = -pts[..., 1]
    return out


def pose_world_to_map(T_world_cam: np.ndarray) -> np.ndarray:
    """Return the ``[4, 4]`` pose of the camera optical frame in the map frame."""
    return T_MAP_WORLD @ np.asarray(T_world_cam, dtype=np.float64)


def quaternion_xyzw(R: np.ndarray) -> np.ndarray:
    """Return the unit quaternion ``(x, y, z, w)`` of a ``[3, 3]`` rotation matrix."""
    return Rotation.from_matrix(np.asarray(R, dtype=np.float64)).as_quat()
