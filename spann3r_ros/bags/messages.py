"""Build and read the bag messages of an RGB-D camera with ``rosbags`` types (no rclpy).

The same code serves ROS 1 and ROS 2 bags: the message classes come from the bag's typestore,
and the few fields whose names differ (``CameraInfo.K`` vs ``k``, the ROS 1 header ``seq``) are
handled here. Image payloads are decoded by :mod:`spann3r_ros.formats.images`.
"""

from __future__ import annotations

import struct
from typing import Any, Optional

import cv2
import numpy as np
from scipy.spatial.transform import Rotation


def stamp_to_ns(stamp: Any) -> int:
    """Return the nanoseconds of a ``builtin_interfaces/Time`` (ROS 1 or 2)."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def ns_to_stamp(ts: Any, ns: int) -> Any:
    """Build a ``builtin_interfaces/msg/Time`` of ``ts`` for ``ns`` nanoseconds."""
    return ts.types['builtin_interfaces/msg/Time'](sec=ns // 1_000_000_000,
                                                   nanosec=ns % 1_000_000_000)


def header(ts: Any, ns: int, frame_id: str, seq: int = 0) -> Any:
    """Build a ``std_msgs/Header`` for either ROS generation."""
    cls = ts.types['std_msgs/msg/Header']
    if 'seq' in cls.__dataclass_fields__:
        return cls(seq=seq, stamp=ns_to_stamp(ts, ns), frame_id=frame_id)
    return cls(stamp=ns_to_stamp(ts, ns), frame_id=frame_id)


def image_msg(ts: Any, hdr: Any, array: np.ndarray, encoding: str) -> Any:
    """Build a ``sensor_msgs/Image`` holding ``array`` (little-endian) as ``encoding``."""
    array = np.ascontiguousarray(array)
    h, w = array.shape[:2]
    step = array.strides[0]
    data = np.frombuffer(array.astype(array.dtype.newbyteorder('<')).tobytes(), np.uint8)
    return ts.types['sensor_msgs/msg/Image'](header=hdr, height=h, width=w, encoding=encoding,
                                             is_bigendian=0, step=step, data=data)


def compressed_msg(ts: Any, hdr: Any, rgb: np.ndarray, fmt: str, quality: int = 90) -> Any:
    """Build an image_transport style ``CompressedImage`` of ``rgb`` (``jpeg`` or ``png``)."""
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if fmt == 'jpeg' else []
    ok, buf = cv2.imencode('.jpg' if fmt == 'jpeg' else '.png', bgr, params)
    if not ok:
        raise ValueError(f'cannot encode {fmt}')
    return ts.types['sensor_msgs/msg/CompressedImage'](
        header=hdr, format=f'rgb8; {fmt} compressed bgr8', data=buf.ravel())


def compressed_depth_msg(ts: Any, hdr: Any, depth_mm: np.ndarray) -> Any:
    """Build a ``compressedDepth`` message (12-byte header + 16-bit PNG) of millimetres."""
    ok, buf = cv2.imencode('.png', np.ascontiguousarray(depth_mm))
    if not ok:
        raise ValueError('cannot encode depth as PNG')
    data = struct.pack('<iff', 0, 0.0, 0.0) + buf.tobytes()
    return ts.types['sensor_msgs/msg/CompressedImage'](
        header=hdr, format='16UC1; compressedDepth png', data=np.frombuffer(data, np.uint8))


def camera_info_msg(ts: Any, hdr: Any, K: np.ndarray, width: int, height: int) -> Any:
    """Build a ``sensor_msgs/CameraInfo`` of a distortion-free pinhole camera."""
    cls = ts.types['sensor_msgs/msg/CameraInfo']
    P = np.zeros((3, 4))
    P[:3, :3] = K
    names = ('D', 'K', 'R', 'P') if 'K' in cls.__dataclass_fields__ else ('d', 'k', 'r', 'p')
    roi = ts.types['sensor_msgs/msg/RegionOfInterest'](x_offset=0, y_offset=0, height=0,
                                                       width=0, do_rectify=False)
    values = dict(zip(names, (np.zeros(5), np.asarray(K, float).ravel(), np.eye(3).ravel(),
                              P.ravel())))
    return cls(header=hdr, height=height, width=width, distortion_model='plumb_bob',
               binning_x=0, binning_y=0, roi=roi, **values)


def _vector(ts: Any, v: np.ndarray) -> Any:
    return ts.types['geometry_msgs/msg/Vector3'](x=float(v[0]), y=float(v[1]), z=float(v[2]))


def _quaternion(ts: Any, R: np.ndarray) -> Any:
    x, y, z, w = Rotation.from_matrix(R).as_quat()
    return ts.types['geometry_msgs/msg/Quaternion'](x=x, y=y, z=z, w=w)


def transform_stamped(ts: Any, hdr: Any, child: str, T: np.ndarray) -> Any:
    """Build a ``TransformStamped`` from parent ``hdr.frame_id`` to ``child``."""
    tf = ts.types['geometry_msgs/msg/Transform'](translation=_vector(ts, T[:3, 3]),
                                                 rotation=_quaternion(ts, T[:3, :3]))
    return ts.types['geometry_msgs/msg/TransformStamped'](header=hdr, child_frame_id=child,
                                                          transform=tf)


def pose_stamped(ts: Any, hdr: Any, T: np.ndarray) -> Any:
    """Build a ``geometry_msgs/PoseStamped`` of ``T``."""
    point = ts.types['geometry_msgs/msg/Point'](x=float(T[0, 3]), y=float(T[1, 3]),
                                                z=float(T[2, 3]))
    pose = ts.types['geometry_msgs/msg/Pose'](position=point,
                                              orientation=_quaternion(ts, T[:3, :3]))
    return ts.types['geometry_msgs/msg/PoseStamped'](header=hdr, pose=pose)


def odometry_msg(ts: Any, hdr: Any, child: str, T: np.ndarray,
                 variances: Optional[np.ndarray] = None) -> Any:
    """Build a ``nav_msgs/Odometry`` of pose ``T`` of ``child`` in ``hdr.frame_id``.

    :param variances: ``[6]`` diagonal of the pose covariance (x, y, z, rotation about x, y,
        z); zeros when None. The twist and its covariance are zero.
    """
    covariance = np.zeros((6, 6))
    if variances is not None:
        covariance[np.diag_indices(6)] = variances
    pose = ts.types['geometry_msgs/msg/PoseWithCovariance'](
        pose=pose_stamped(ts, hdr, T).pose, covariance=covariance.ravel())
    zero = np.zeros(3)
    twist = ts.types['geometry_msgs/msg/TwistWithCovariance'](
        twist=ts.types['geometry_msgs/msg/Twist'](linear=_vector(ts, zero),
                                                  angular=_vector(ts, zero)),
        covariance=np.zeros(36))
    return ts.types['nav_msgs/msg/Odometry'](header=hdr, child_frame_id=child, pose=pose,
                                             twist=twist)
