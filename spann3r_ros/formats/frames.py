"""Frame conventions of the published outputs (ROS-free).

Spann3R expresses every pointmap in the optical frame of the first camera of a reconstruction
(x right, y down, z forward). ROS tools expect a map frame in the REP 103 convention (x forward,
y left, z up), so the node publishes everything in

    map = the first camera's optical frame, rotated into REP 103 axes,

i.e. ``p_map = R_BODY_OPTICAL @ p_world``, applied by ``optical_to_rep103_points`` and
``optical_to_rep103_pose`` of :mod:`spann3r_model.geometry.camera`, the one definition of this
convention. The origin is the first camera's centre; the scale is the model's (arbitrary,
roughly metric). The TF child frame is the camera's *optical* frame, so RViz shows the first
camera looking along map +x with the image's down direction along map -z.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation


def quaternion_xyzw(R: np.ndarray) -> np.ndarray:
    """Return the unit quaternion ``(x, y, z, w)`` of a ``[3, 3]`` rotation matrix."""
    return Rotation.from_matrix(np.asarray(R, dtype=np.float64)).as_quat()
