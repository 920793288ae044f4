"""ROS message <-> NumPy conversions for the node.

Inputs (``Image``, ``CompressedImage``) are validated field by field and decoded to ``[H, W, 3]``
uint8 RGB; anything malformed raises :class:`ImageRejected` with a short ``reason`` code the node
counts. Outputs (``PointCloud2``, 32FC1 ``Image``) are built here with NumPy, clouds in reused
buffers (:mod:`spann3r_ros.formats.pointcloud`); the node needs neither ``sensor_msgs_py`` nor
``cv_bridge``. The tests decode the messages from their fields alone.
"""

from __future__ import annotations

from array import array as ArrayType
import sys
from typing import Optional

import cv2
import numpy as np
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2, PointField
from std_msgs.msg import Header

from spann3r_ros.formats.compressed_size import claimed_size, JPEG_SIGNATURE, PNG_SIGNATURE
from spann3r_ros.formats.pointcloud import CLOUD_FIELDS, CLOUD_POINT_STEP, CloudPacker

#: Smallest accepted image side; smaller images cannot be cropped to the model meaningfully.
MIN_SIDE = 8

# encoding -> (channels, dtype, order). 'yuv' encodings are 2 bytes per pixel, packed.
ENCODINGS: dict[str, tuple[int, str, str]] = {
    'rgb8': (3, 'u1', 'rgb'), 'bgr8': (3, 'u1', 'bgr'),
    'rgba8': (4, 'u1', 'rgba'), 'bgra8': (4, 'u1', 'bgra'),
    'mono8': (1, 'u1', 'mono'), '8UC1': (1, 'u1', 'mono'), '8UC3': (3, 'u1', 'bgr'),
    'rgb16': (3, 'u2', 'rgb'), 'bgr16': (3, 'u2', 'bgr'),
    'rgba16': (4, 'u2', 'rgba'), 'bgra16': (4, 'u2', 'bgra'),
    'mono16': (1, 'u2', 'mono'), '16UC1': (1, 'u2', 'mono'),
    '32FC1': (1, 'f4', 'mono'),
    'yuv422': (2, 'u1', 'uyvy'), 'uyvy': (2, 'u1', 'uyvy'),
    'yuv422_yuy2': (2, 'u1', 'yuyv'), 'yuyv': (2, 'u1', 'yuyv'),
}

_TO_RGB = {
    'rgba': cv2.COLOR_RGBA2RGB, 'bgr': cv2.COLOR_BGR2RGB, 'bgra': cv2.COLOR_BGRA2RGB,
    'mono': cv2.COLOR_GRAY2RGB, 'uyvy': cv2.COLOR_YUV2RGB_UYVY, 'yuyv': cv2.COLOR_YUV2RGB_YUYV,
}


class ImageRejected(ValueError):
    """A malformed input message.

    :param reason: short machine-readable code (counted in diagnostics).
    :param message: what exactly is wrong.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _check_size(height: int, width: int, max_pixels: int) -> None:
    if height == 0 or width == 0:
        raise ImageRejected('zero_size', f'image has zero size ({width}x{height})')
    if height * width > max_pixels:
        raise ImageRejected('too_large', f'image {width}x{height} exceeds max_image_pixels '
                                         f'({max_pixels})')
    if min(height, width) < MIN_SIDE:
        raise ImageRejected('too_small', f'image {width}x{height} is smaller than '
                                         f'{MIN_SIDE} pixels on a side')


def image_to_rgb(msg: Image, max_pixels: int = 16_000_000) -> np.ndarray:
    """Decode a ``sensor_msgs/Image`` into ``[H, W, 3]`` uint8 RGB.

    Row padding (``step``) and ``is_bigendian`` are honoured; 16-bit images keep their high byte,
    ``32FC1`` intensities in [0, 1] are scaled to 0..255.

    :param msg: the message.
    :param max_pixels: larger images are rejected.
    :return: a new contiguous array.
    :raises ImageRejected: for any inconsistency between the fields and the data.
    """
    height, width = int(msg.height), int(msg.width)
    _check_size(height, width, max_pixels)
    try:
        channels, kind, order = ENCODINGS[msg.encoding]
    except KeyError:
        raise ImageRejected('unknown_encoding',
                            f'unsupported encoding {msg.encoding!r}; use one of '
                            f'{sorted(ENCODINGS)}') from None
    itemsize = int(kind[1])
    row_bytes = width * channels * itemsize
    if order in ('uyvy', 'yuyv') and width % 2:
        raise ImageRejected('odd_width', f'{msg.encoding} needs an even width, got {width}')
    step = int(msg.step)
    if step < row_bytes:
        raise ImageRejected('short_step', f'step {step} is smaller than width * pixel size '
                                          f'({row_bytes}) for {msg.encoding}')
    data = memoryview(msg.data).cast('B')
    if len(data) < height * step:
        raise ImageRejected('short_data', f'data has {len(data)} bytes, height * step needs '
                                          f'{height * step}')
    rows = np.frombuffer(data, np.uint8, count=height * step).reshape(height, step)[:, :row_bytes]
    if itemsize == 1:
        pixels = rows.reshape(height, width, channels)
    else:
        dtype = np.dtype(kind).newbyteorder('>' if msg.is_bigendian else '<')
        pixels = np.ascontiguousarray(rows).view(dtype).reshape(height, width, channels)
        if kind == 'f4':
            if not np.isfinite(pixels).all():
                raise ImageRejected('nonfinite', f'{msg.encoding} image contains NaN or inf')
            pixels = np.rint(np.clip(pixels, 0.0, 1.0) * 255.0).astype(np.uint8)
        else:
            pixels = (pixels >> 8).astype(np.uint8)
    return _to_rgb(np.ascontiguousarray(pixels), order)


def _to_rgb(pixels: np.ndarray, order: str) -> np.ndarray:
    if order == 'rgb':
        return np.array(pixels, dtype=np.uint8, copy=True)
    if order == 'mono' and pixels.ndim == 3:
        pixels = pixels[..., 0]
    return cv2.cvtColor(pixels, _TO_RGB[order])


#: Substrings of ``CompressedImage.format`` that name a codec we decode.
_CODECS = ('jpeg', 'jpg', 'png')


def compressed_to_rgb(msg: CompressedImage, max_pixels: int = 16_000_000) -> np.ndarray:
    """Decode a JPEG or PNG ``sensor_msgs/CompressedImage`` into ``[H, W, 3]`` uint8 RGB.

    ``format`` follows image_transport (``jpeg``, ``png``, ``rgb8; jpeg compressed bgr8``);
    an empty format lets the data's own signature decide.

    :param msg: the message.
    :param max_pixels: larger images are rejected.
    :return: a new contiguous array.
    :raises ImageRejected: for an empty, corrupt or unsupported payload.
    """
    fmt = msg.format.lower()
    if fmt and not any(codec in fmt for codec in _CODECS):
        raise ImageRejected('unsupported_format',
                            f'compressed format {msg.format!r} is not jpeg or png')
    data = np.frombuffer(memoryview(msg.data).cast('B'), np.uint8)
    if data.size == 0:
        raise ImageRejected('empty_compressed', 'CompressedImage has no data')
    head = data[:65536].tobytes()
    if head[:3] != JPEG_SIGNATURE and head[:8] != PNG_SIGNATURE:
        raise ImageRejected('corrupt_compressed', 'CompressedImage data is neither JPEG nor PNG')
    # The size the header claims is checked before decoding: a small payload can claim an
    # enormous image, and the decoder would allocate for it.
    size = claimed_size(head) or claimed_size(data.tobytes())
    if size is None:
        raise ImageRejected('corrupt_compressed', 'CompressedImage header gives no image size')
    _check_size(size[1], size[0], max_pixels)
    try:
        decoded = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:
        raise ImageRejected('corrupt_compressed', f'decoder error: {exc}'.splitlines()[0]) \
            from None
    if decoded is None or decoded.size == 0:
        raise ImageRejected('corrupt_compressed', f'could not decode {len(data)} bytes of '
                                                  f'{msg.format or "compressed"} data')
    if decoded.dtype == np.uint16:
        decoded = (decoded >> 8).astype(np.uint8)
    if decoded.ndim == 2:
        return cv2.cvtColor(decoded, cv2.COLOR_GRAY2RGB)
    order = {3: 'bgr', 4: 'bgra'}.get(decoded.shape[2])
    if order is None:
        raise ImageRejected('corrupt_compressed', f'decoded image has {decoded.shape[2]} '
                                                  'channels')
    return _to_rgb(decoded, order)


# -- outputs -------------------------------------------------------------------------------

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
