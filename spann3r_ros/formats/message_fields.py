"""Fields of ROS messages read without rclpy: intrinsics, transforms and poses.

The functions take any object with the message's fields, so they serve rclpy messages in the
node and ``rosbags`` messages of ROS 1 and ROS 2 bags alike (``CameraInfo.K`` vs ``k``).
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
from scipy.spatial.transform import Rotation


def camera_info_K(msg: Any) -> tuple[np.ndarray, int, int]:
    """Return ``([3, 3] K, width, height)`` of a CameraInfo of either ROS generation."""
    k = getattr(msg, 'k', None)
    if k is None:
        k = msg.K
    K = np.asarray(k, dtype=np.float64).reshape(3, 3)
    if not np.isfinite(K).all() or K[0, 0] <= 0 or K[1, 1] <= 0:
        raise ValueError(f'camera_info has no valid intrinsics (K = {K.ravel().tolist()})')
    return K, int(msg.width), int(msg.height)


def matrix_from(translation: Any, rotation: Any) -> np.ndarray:
    """Build ``[4, 4]`` from a translation (x, y, z) and a quaternion (x, y, z, w) message."""
    q = np.array([rotation.x, rotation.y, rotation.z, rotation.w], dtype=np.float64)
    norm = np.linalg.norm(q)
    if not np.isfinite(norm) or norm < 1e-9:
        raise ValueError(f'invalid quaternion {q.tolist()}')
    T = np.eye(4)
    T[:3, :3] = Rotation.from_quat(q / norm).as_matrix()
    T[:3, 3] = [translation.x, translation.y, translation.z]
    return T


def msg_pose(msg: Any) -> tuple[Optional[str], np.ndarray]:
    """Return ``(frame_id, [4, 4])`` of a PoseStamped, PoseWithCovarianceStamped or Odometry."""
    pose = msg.pose
    if hasattr(pose, 'pose'):  # Odometry / PoseWithCovarianceStamped
        pose = pose.pose
    return msg.header.frame_id, matrix_from(pose.position, pose.orientation)
