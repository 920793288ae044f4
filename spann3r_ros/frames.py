"""Frame conventions of the published outputs (ROS-free).

Spann3R expresses every pointmap in the optical frame of the first camera of a reconstruction
(x right, y down, z forward). ROS tools expect a map frame in the REP 103 convention (x forward,
y left, z up), so the node publishes everything in

    map = the first camera's optical frame, rotated into REP 103 axes,

i.e. ``p_map = R_BODY_OPTICAL @ p_world`` with the rotation and the pose conversion of
:mod:`spann3r_model.geometry` (``optical_to_rep103_pose``), the one definition of this
convention. The origin is the first camera's centre; the scale is the model's (arbitrary,
roughly metric). The TF child frame is the camera's *optical* frame, so RViz shows the first
camera looking along map +x with the image's down direction along map -z.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

from spann3r_model.geometry import R_BODY_OPTICAL


def _signed_axes(R: np.ndarray) -> tuple[tuple[int, float], ...]:
    """Return ``(source axis, sign)`` per output axis of a signed permutation matrix."""
    R = np.asarray(R)
    axes = []
    for row in R:
        nonzero = np.flatnonzero(row)
        if len(nonzero) != 1 or abs(row[nonzero[0]]) != 1.0:
            raise ValueError(f'not a signed permutation: {R.tolist()}')
        axes.append((int(nonzero[0]), float(row[nonzero[0]])))
    return tuple(axes)


_MAP_AXES = _signed_axes(R_BODY_OPTICAL)


def points_world_to_map(points_world: np.ndarray) -> np.ndarray:
    """Rotate ``[..., 3]`` points from the first camera's optical frame into the map frame.

    Equal to ``optical_to_rep103_points`` of :mod:`spann3r_model.geometry` but float32 and
    about ten times faster on a 224 x 224 pointmap: the rotation is a signed permutation, so
    copying axes is exact where the float64 matrix product costs a millisecond per frame (and
    would turn an infinite coordinate into NaN in the other two).

    :param points_world: points in the first camera's optical frame.
    :return: float32 points of the same shape in the map frame.
    """
    pts = np.asarray(points_world, dtype=np.float32)
    out = np.empty_like(pts)
    for axis, (source, sign) in enumerate(_MAP_AXES):
        if sign > 0:
            out[..., axis] = pts[..., source]
        else:
            np.negative(pts[..., source], out=out[..., axis])
    return out


def quaternion_xyzw(R: np.ndarray) -> np.ndarray:
    """Return the unit quaternion ``(x, y, z, w)`` of a ``[3, 3]`` rotation matrix."""
    return Rotation.from_matrix(np.asarray(R, dtype=np.float64)).as_quat()
