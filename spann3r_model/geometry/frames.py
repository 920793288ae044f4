"""Frame conventions of the published outputs: optical-frame worlds in REP 103 axes.

Spann3R expresses every pointmap in the optical frame of the first camera of a reconstruction
(x right, y down, z forward). ROS tools expect a map frame in the REP 103 convention (x forward,
y left, z up), so everything is published in

    map = the first camera's optical frame, rotated into REP 103 axes,

i.e. ``p_map = R_BODY_OPTICAL @ p_world``, applied by :func:`optical_to_rep103_points` and
:func:`optical_to_rep103_pose`. The origin is the first camera's centre; the scale is the
model's (arbitrary, roughly metric). The TF child frame is the camera's *optical* frame, so RViz
shows the first camera looking along map +x with the image's down direction along map -z.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

#: Rotation taking optical-frame coordinates (x right, y down, z forward) to REP 103 body
#: coordinates (x forward, y left, z up): the orientation of a ``*_optical_frame`` in its
#: camera body (``camera_link``) frame.
R_BODY_OPTICAL = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


def optical_to_rep103_points(points: np.ndarray) -> np.ndarray:
    """Express ``[..., 3]`` points of an optical-frame world in REP 103 axes (x fwd, z up).

    ``R_BODY_OPTICAL`` is a signed permutation, so the coordinates are copied and negated
    rather than multiplied: the result is exact, keeps a floating input's dtype, costs a
    fraction of a float64 matrix product, and a non-finite coordinate stays in its own axis
    (a product would spread ``inf * 0 = NaN`` into the other two).

    :param points: ``[..., 3]`` points; a non-floating dtype is converted to float64.
    :return: the points in REP 103 axes, same shape.
    :raises ValueError: if the last axis is not of size 3.
    """
    points = np.asarray(points)
    if points.ndim == 0 or points.shape[-1] != 3:
        raise ValueError(f'points must be [..., 3], got shape {points.shape}')
    if not np.issubdtype(points.dtype, np.floating):
        points = points.astype(np.float64)
    out = np.empty_like(points)
    for axis, row in enumerate(R_BODY_OPTICAL):
        source = int(np.flatnonzero(row)[0])
        if row[source] > 0:
            out[..., axis] = points[..., source]
        else:
            np.negative(points[..., source], out=out[..., axis])
    return out


def optical_to_rep103_pose(T_world_cam: np.ndarray) -> np.ndarray:
    """Re-express a camera pose in a REP 103 world whose origin is the first camera.

    The world axes change (first camera's optical frame -> x forward, y left, z up); the camera
    frame stays optical, as ROS ``*_optical_frame`` TF frames are.

    :param T_world_cam: ``[4, 4]`` pose in the optical-frame world.
    :return: ``[4, 4]`` pose in the REP 103 world.
    """
    T = np.asarray(T_world_cam, dtype=np.float64)
    out = np.eye(4)
    out[:3, :3] = R_BODY_OPTICAL @ T[:3, :3]
    out[:3, 3] = R_BODY_OPTICAL @ T[:3, 3]
    return out


def quaternion_xyzw(R: np.ndarray) -> np.ndarray:
    """Return the unit quaternion ``(x, y, z, w)`` of a ``[..., 3, 3]`` rotation matrix."""
    return Rotation.from_matrix(np.asarray(R, dtype=np.float64)).as_quat()
