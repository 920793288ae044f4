"""NumPy -> ROS message builders of the node's outputs.

``PointCloud2``, 32FC1 ``Image`` and ``CameraInfo`` are built here with NumPy, clouds in reused
buffers (:mod:`spann3r_ros.formats.pointcloud`); the node needs neither ``sensor_msgs_py`` nor
``cv_bridge``. Inputs are decoded by :mod:`spann3r_ros.formats.images`. The tests decode the
messages from their fields alone.
"""

from __future__ import annotations

from array import array as ArrayType
import sys
from typing import Optional

import numpy as np
from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField
from std_msgs.msg import Header

from spann3r_ros.formats.pointcloud import CLOUD_FIELDS, CLOUD_POINT_STEP, CloudPacker


def cloud_fields() -> list[PointField]:
    """Return the ``PointField`` list of the published clouds."""
    return [PointField(name=n, offset=o, datatype=PointField.FLOAT32, count=1)
            for n, o in CLOUD_FIELDS]


def _byte_array(array: np.ndarray) -> 'ArrayType':
    # An array.array('B') is what the generated setters store; handing them one skips the
    # per-element checks some ROS distributions run on bytes (1 MB per cloud).
    data = ArrayType('B')
    data.frombytes(np.ascontiguousarray(array).reshape(-1).view(np.uint8))
    return data


def cloud_msg(header: Header, xyz: np.ndarray, rgb: np.ndarray, conf: np.ndarray,
              mask: Optional[np.ndarray] = None, packer: Optional[CloudPacker] = None
              ) -> PointCloud2:
    """Build a ``PointCloud2`` with fields x, y, z, rgb, confidence (float32 each).

    One unorganised row (``height`` 1) in the machine's byte order; ``rgb`` holds
    ``0x00RRGGBB`` reinterpreted as float32, as RViz reads it (see
    :mod:`spann3r_ros.formats.pointcloud`).

    :param header: stamp and frame of the cloud.
    :param xyz: ``[N, 3]`` (or ``[H, W, 3]``) points.
    :param rgb: ``[N, 3]`` uint8 colours.
    :param conf: ``[N]`` confidences.
    :param mask: optional bool mask over the points; only these are published.
    :param packer: buffers to reuse; None packs in temporary buffers.
    :raises ValueError: for inconsistent arrays.
    """
    data, n = (packer or CloudPacker(retain_points=0)).pack(xyz, rgb, conf, mask)
    msg = PointCloud2(header=header, height=1, width=n, is_dense=False,
                      is_bigendian=sys.byteorder != 'little', fields=cloud_fields(),
                      point_step=CLOUD_POINT_STEP, row_step=CLOUD_POINT_STEP * n)
    msg.data = data
    return msg


def float_image_msg(header: Header, array: np.ndarray) -> Image:
    """Build a ``32FC1`` image (machine byte order, unpadded rows) from a ``[H, W]`` array."""
    if array.ndim != 2:
        raise ValueError(f'expected a [H, W] array, got shape {array.shape}')
    array = np.ascontiguousarray(array, dtype=np.float32)
    msg = Image(header=header, height=array.shape[0], width=array.shape[1], encoding='32FC1',
                is_bigendian=sys.byteorder != 'little', step=array.shape[1] * 4)
    msg.data = _byte_array(array)
    return msg


def camera_info_msg(header: Header, size: int, focal: Optional[float] = None,
                    K: Optional[np.ndarray] = None) -> CameraInfo:
    """Return the pinhole ``CameraInfo`` of the model's ``size x size`` crop.

    :param size: side of the crop in pixels.
    :param focal: focal length with square pixels and the principal point at the centre
        ``(size / 2, size / 2)``, where the focal estimate assumes it (when ``K`` is None).
    :param K: ``[3, 3]`` intrinsics of the crop (e.g. a camera_info's K mapped through it).
    :raises ValueError: when neither ``focal`` nor ``K`` is given.
    """
    if K is None:
        if focal is None:
            raise ValueError('camera_info_msg needs a focal or a K')
        c = size / 2.0
        K = np.array([[focal, 0.0, c], [0.0, focal, c], [0.0, 0.0, 1.0]])
    K = np.asarray(K, dtype=np.float64)
    fx, fy, cx, cy, skew = (float(v) for v in (K[0, 0], K[1, 1], K[0, 2], K[1, 2], K[0, 1]))
    return CameraInfo(header=header, height=size, width=size, distortion_model='plumb_bob',
                      d=[0.0] * 5, k=[fx, skew, cx, 0.0, fy, cy, 0.0, 0.0, 1.0],
                      r=[1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
                      p=[fx, skew, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0])


def stamp_to_seconds(header: Header) -> float:
    """Return a header stamp as float seconds."""
    return header.stamp.sec + header.stamp.nanosec * 1e-9
