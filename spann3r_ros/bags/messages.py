"""Build and decode the bag messages of an RGB-D camera with ``rosbags`` types (no rclpy).

The same code serves ROS 1 and ROS 2 bags: the message classes come from the bag's typestore,
and the few fields whose names differ (``CameraInfo.K`` vs ``k``, the ROS 1 header ``seq``) are
handled here.
"""

from __future__ import annotations

import struct
from typing import Any, Optional

import cv2
import numpy as np
from scipy.spatial.transform import Rotation

#: Encodings a colour image may come in, and how to turn them into RGB.
_COLOR_CONVERSIONS = {
    'rgb8': None, 'bgr8': cv2.COLOR_BGR2RGB, 'rgba8': cv2.COLOR_RGBA2RGB,
    'bgra8': cv2.COLOR_BGRA2RGB, 'mono8': cv2.COLOR_GRAY2RGB, '8UC1': cv2.COLOR_GRAY2RGB,
    '8UC3': cv2.COLOR_BGR2RGB, '8UC4': cv2.COLOR_BGRA2RGB,
    # ROS names the Bayer pattern from the top-left pixel, OpenCV from the second row.
    'bayer_rggb8': cv2.COLOR_BayerBG2RGB, 'bayer_bggr8': cv2.COLOR_BayerRG2RGB,
    'bayer_gbrg8': cv2.COLOR_BayerGR2RGB, 'bayer_grbg8': cv2.COLOR_BayerGB2RGB,
    'yuv422': cv2.COLOR_YUV2RGB_UYVY, 'uyvy': cv2.COLOR_YUV2RGB_UYVY,
    'yuv422_yuy2': cv2.COLOR_YUV2RGB_YUY2, 'yuyv': cv2.COLOR_YUV2RGB_YUY2,
    'mono16': None, '16UC1': None, 'rgb16': None, 'bgr16': None,
}
_CHANNELS = {'rgb8': 3, 'bgr8': 3, 'rgba8': 4, 'bgra8': 4, 'mono8': 1, '8UC1': 1, '8UC3': 3,
             '8UC4': 4, 'yuv422': 2, 'uyvy': 2, 'yuv422_yuy2': 2, 'yuyv': 2, 'mono16': 1,
             '16UC1': 1, 'rgb16': 3, 'bgr16': 3, '32FC1': 1}


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


def camera_info_K(msg: Any) -> tuple[np.ndarray, int, int]:
    """Return ``([3, 3] K, width, height)`` of a CameraInfo of either ROS generation."""
    k = getattr(msg, 'k', None)
    if k is None:
        k = msg.K
    K = np.asarray(k, dtype=np.float64).reshape(3, 3)
    if not np.isfinite(K).all() or K[0, 0] <= 0 or K[1, 1] <= 0:
        raise ValueError(f'camera_info has no valid intrinsics (K = {K.ravel().tolist()})')
    return K, int(msg.width), int(msg.height)


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


def _image_array(msg: Any, channels: int, dtype: np.dtype) -> np.ndarray:
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    itemsize = np.dtype(dtype).itemsize
    data = np.asarray(msg.data, dtype=np.uint8)
    if step < w * channels * itemsize or data.size < h * step:
        raise ValueError(f'image data ({data.size} bytes, step {step}) is too short for '
                         f'{w}x{h}x{channels} {np.dtype(dtype).name}')
    rows = data[:h * step].reshape(h, step)[:, :w * channels * itemsize]
    order = '>' if msg.is_bigendian else '<'
    arr = np.ascontiguousarray(rows).view(np.dtype(dtype).newbyteorder(order))
    arr = arr.astype(np.dtype(dtype).newbyteorder('='))
    return arr.reshape(h, w, channels) if channels > 1 else arr.reshape(h, w)


def decode_color(msg: Any) -> np.ndarray:
    """Decode ``[H, W, 3]`` uint8 RGB from an Image or CompressedImage message.

    :raises ValueError: for encodings that are not colour or grey images.
    """
    if hasattr(msg, 'format'):
        bgr = cv2.imdecode(np.asarray(msg.data, np.uint8), cv2.IMREAD_COLOR)
        if bgr is None:
            raise ValueError(f'cannot decode compressed image (format {msg.format!r})')
        return np.ascontiguousarray(bgr[..., ::-1])
    enc = msg.encoding
    if enc not in _COLOR_CONVERSIONS or enc == '32FC1':
        raise ValueError(f'unsupported colour encoding {enc!r}; supported: '
                         f'{sorted(_COLOR_CONVERSIONS)}')
    if enc.startswith('bayer_'):
        return cv2.cvtColor(_image_array(msg, 1, np.uint8), _COLOR_CONVERSIONS[enc])
    if enc in ('mono16', '16UC1', 'rgb16', 'bgr16'):
        arr = (_image_array(msg, _CHANNELS[enc], np.uint16) >> 8).astype(np.uint8)
        if arr.ndim == 2:
            return cv2.cvtColor(arr, cv2.COLOR_GRAY2RGB)
        return arr[..., ::-1].copy() if enc == 'bgr16' else arr
    arr = _image_array(msg, _CHANNELS[enc], np.uint8)
    code = _COLOR_CONVERSIONS[enc]
    return np.ascontiguousarray(arr) if code is None else cv2.cvtColor(arr, code)


def decode_depth(msg: Any) -> np.ndarray:
    """Decode ``[H, W]`` float32 metres (0 = invalid) from 16UC1 / 32FC1 or compressedDepth.

    :raises ValueError: for other encodings or a malformed compressedDepth payload.
    """
    if hasattr(msg, 'format'):
        return _decode_compressed_depth(msg)
    if msg.encoding in ('16UC1', 'mono16'):
        return _image_array(msg, 1, np.uint16).astype(np.float32) / np.float32(1000.0)
    if msg.encoding == '32FC1':
        depth = _image_array(msg, 1, np.float32)
        return np.where(np.isfinite(depth) & (depth > 0), depth, 0).astype(np.float32)
    raise ValueError(f'unsupported depth encoding {msg.encoding!r}; expected 16UC1 or 32FC1')


def _decode_compressed_depth(msg: Any) -> np.ndarray:
    data = np.asarray(msg.data, np.uint8).tobytes()
    fmt = msg.format
    if 'compressedDepth' not in fmt:
        # A plain PNG of 16-bit millimetres (some drivers publish that on .../compressed).
        raw = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        if raw is None or raw.dtype != np.uint16:
            raise ValueError(f'compressed depth with format {fmt!r} is not a 16-bit PNG')
        return raw.astype(np.float32) / np.float32(1000.0)
    if len(data) < 12:
        raise ValueError('compressedDepth message shorter than its 12-byte header')
    _, quant_a, quant_b = struct.unpack('<iff', data[:12])
    raw = cv2.imdecode(np.frombuffer(data[12:], np.uint8), cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise ValueError(f'cannot decode compressedDepth payload (format {fmt!r})')
    if fmt.startswith('16UC1'):
        return raw.astype(np.float32) / np.float32(1000.0)
    # 32FC1: inverse-depth quantisation, depth = a / (v - b), v = 0 marks invalid.
    v = raw.astype(np.float32)
    with np.errstate(divide='ignore'):
        depth = np.where(v > 0, quant_a / (v - quant_b), 0.0)
    return depth.astype(np.float32)


def msg_pose(msg: Any) -> tuple[Optional[str], np.ndarray]:
    """Return ``(frame_id, [4, 4])`` of a PoseStamped, PoseWithCovarianceStamped or Odometry."""
    pose = msg.pose
    if hasattr(pose, 'pose'):  # Odometry / PoseWithCovarianceStamped
        pose = pose.pose
    return msg.header.frame_id, matrix_from(pose.position, pose.orientation)
