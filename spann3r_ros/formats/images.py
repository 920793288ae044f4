"""Decoding of ``sensor_msgs/Image`` and ``CompressedImage`` payloads to RGB and depth (ROS-free).

The functions read only the message fields (``height, width, encoding, is_bigendian, step,
data`` or ``format, data``), so rclpy messages and ``rosbags`` messages decode alike. Every field
is checked before anything large is allocated; a malformed message raises
:class:`ImageRejected` with a short ``reason`` code the node counts in its diagnostics.
"""

from __future__ import annotations

import struct
from typing import Any

import cv2
import numpy as np

from spann3r_ros.formats.compressed_size import claimed_size, JPEG_SIGNATURE, PNG_SIGNATURE

#: Smallest accepted image side; smaller images cannot be cropped to the model meaningfully.
MIN_SIDE = 8
#: Default limit on ``width * height``; larger images are rejected.
MAX_PIXELS = 16_000_000

#: encoding -> (channels, dtype, order). The yuv encodings are 2 bytes per pixel, packed; the
#: Bayer encodings are one byte per pixel, named after their top-left 2x2 block.
ENCODINGS: dict[str, tuple[int, str, str]] = {
    'rgb8': (3, 'u1', 'rgb'), 'bgr8': (3, 'u1', 'bgr'),
    'rgba8': (4, 'u1', 'rgba'), 'bgra8': (4, 'u1', 'bgra'),
    'mono8': (1, 'u1', 'mono'), '8UC1': (1, 'u1', 'mono'),
    '8UC3': (3, 'u1', 'bgr'), '8UC4': (4, 'u1', 'bgra'),
    'rgb16': (3, 'u2', 'rgb'), 'bgr16': (3, 'u2', 'bgr'),
    'rgba16': (4, 'u2', 'rgba'), 'bgra16': (4, 'u2', 'bgra'),
    'mono16': (1, 'u2', 'mono'), '16UC1': (1, 'u2', 'mono'),
    '32FC1': (1, 'f4', 'mono'),
    'yuv422': (2, 'u1', 'uyvy'), 'uyvy': (2, 'u1', 'uyvy'),
    'yuv422_yuy2': (2, 'u1', 'yuyv'), 'yuyv': (2, 'u1', 'yuyv'),
    'bayer_rggb8': (1, 'u1', 'rggb'), 'bayer_bggr8': (1, 'u1', 'bggr'),
    'bayer_gbrg8': (1, 'u1', 'gbrg'), 'bayer_grbg8': (1, 'u1', 'grbg'),
}

_TO_RGB = {
    'rgba': cv2.COLOR_RGBA2RGB, 'bgr': cv2.COLOR_BGR2RGB, 'bgra': cv2.COLOR_BGRA2RGB,
    'mono': cv2.COLOR_GRAY2RGB, 'uyvy': cv2.COLOR_YUV2RGB_UYVY, 'yuyv': cv2.COLOR_YUV2RGB_YUYV,
    # ROS names the Bayer pattern from the top-left pixel, OpenCV from the second row.
    'rggb': cv2.COLOR_BayerBG2RGB, 'bggr': cv2.COLOR_BayerRG2RGB,
    'gbrg': cv2.COLOR_BayerGR2RGB, 'grbg': cv2.COLOR_BayerGB2RGB,
}

#: Substrings of ``CompressedImage.format`` that name a codec we decode.
_CODECS = ('jpeg', 'jpg', 'png')
#: Depth encodings of a raw Image and their pixel type: millimetres (u2) or metres (f4).
_DEPTH_KINDS = {'16UC1': 'u2', 'mono16': 'u2', '32FC1': 'f4'}


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


def _buffer(data: Any) -> np.ndarray:
    """Return the bytes of a message's ``data`` as a flat uint8 array (a view where it can be)."""
    try:
        return np.frombuffer(memoryview(data).cast('B'), np.uint8)
    except TypeError:  # a list, or a buffer memoryview cannot cast
        return np.asarray(data, np.uint8).reshape(-1)


def _pixels(msg: Any, channels: int, kind: str) -> np.ndarray:
    """Return the ``[H, W, C]`` pixels of an Image in its byte order, step and data checked.

    One-byte pixels are a view of ``msg.data``; wider ones are copied once.
    """
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    itemsize = int(kind[1])
    row_bytes = width * channels * itemsize
    if step < row_bytes:
        raise ImageRejected('short_step', f'step {step} is smaller than width * pixel size '
                                          f'({row_bytes}) for {msg.encoding}')
    data = _buffer(msg.data)
    if data.size < height * step:
        raise ImageRejected('short_data', f'data has {data.size} bytes, height * step needs '
                                          f'{height * step}')
    rows = data[:height * step].reshape(height, step)[:, :row_bytes]
    if itemsize == 1:
        return rows.reshape(height, width, channels)
    dtype = np.dtype(kind).newbyteorder('>' if msg.is_bigendian else '<')
    return np.ascontiguousarray(rows).view(dtype).reshape(height, width, channels)


def _to_rgb(pixels: np.ndarray, order: str) -> np.ndarray:
    if order == 'rgb':
        return np.array(pixels, dtype=np.uint8, copy=True)
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[..., 0]
    return cv2.cvtColor(np.ascontiguousarray(pixels), _TO_RGB[order])


def image_to_rgb(msg: Any, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode a ``sensor_msgs/Image`` into ``[H, W, 3]`` uint8 RGB.

    Row padding (``step``) and ``is_bigendian`` are honoured; 16-bit images keep their high byte,
    ``32FC1`` intensities in [0, 1] are scaled to 0..255, Bayer mosaics are demosaiced.

    :param msg: the message (any object with the Image fields).
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
                            f'unsupported colour encoding {msg.encoding!r}; use one of '
                            f'{sorted(ENCODINGS)}') from None
    if order in ('uyvy', 'yuyv') and width % 2:
        raise ImageRejected('odd_width', f'{msg.encoding} needs an even width, got {width}')
    pixels = _pixels(msg, channels, kind)
    if kind == 'f4':
        if not np.isfinite(pixels).all():
            raise ImageRejected('nonfinite', f'{msg.encoding} image contains NaN or inf')
        pixels = np.rint(np.clip(pixels, 0.0, 1.0) * 255.0).astype(np.uint8)
    elif kind == 'u2':
        pixels = (pixels >> 8).astype(np.uint8)
    return _to_rgb(pixels, order)


def _decode_compressed(data: np.ndarray, fmt: str, max_pixels: int) -> np.ndarray:
    """Decode JPEG or PNG bytes unchanged (any depth and channels), its claimed size checked first.

    :raises ImageRejected: for empty, corrupt, non-JPEG/PNG or too large data.
    """
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
        raise ImageRejected('corrupt_compressed', f'could not decode {data.size} bytes of '
                                                  f'{fmt or "compressed"} data')
    return decoded


def compressed_to_rgb(msg: Any, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode a JPEG or PNG ``sensor_msgs/CompressedImage`` into ``[H, W, 3]`` uint8 RGB.

    ``format`` follows image_transport (``jpeg``, ``png``, ``rgb8; jpeg compressed bgr8``);
    an empty format lets the data's own signature decide.

    :param msg: the message (any object with the CompressedImage fields).
    :param max_pixels: larger images are rejected, before they are decoded.
    :return: a new contiguous array.
    :raises ImageRejected: for an empty, corrupt or unsupported payload.
    """
    fmt = msg.format.lower()
    if fmt and not any(codec in fmt for codec in _CODECS):
        raise ImageRejected('unsupported_format',
                            f'cannot decode compressed image (format {msg.format!r}): only '
                            'jpeg and png are decoded')
    decoded = _decode_compressed(_buffer(msg.data), msg.format, max_pixels)
    if decoded.dtype == np.uint16:
        decoded = (decoded >> 8).astype(np.uint8)
    if decoded.ndim == 2:
        return _to_rgb(decoded, 'mono')
    order = {3: 'bgr', 4: 'bgra'}.get(decoded.shape[2])
    if order is None:
        raise ImageRejected('corrupt_compressed', f'decoded image has {decoded.shape[2]} '
                                                  'channels')
    return _to_rgb(decoded, order)


def decode_color(msg: Any, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode ``[H, W, 3]`` uint8 RGB from an Image or a CompressedImage (it has ``format``).

    :raises ImageRejected: see :func:`image_to_rgb` and :func:`compressed_to_rgb`.
    """
    if hasattr(msg, 'format'):
        return compressed_to_rgb(msg, max_pixels)
    return image_to_rgb(msg, max_pixels)


def decode_depth(msg: Any, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode ``[H, W]`` float32 metres (0 = invalid) from an Image or a CompressedImage.

    Images: ``16UC1`` / ``mono16`` millimetres, ``32FC1`` metres (NaN, inf and values <= 0 become
    0). Compressed: ``compressedDepth`` (12-byte header + 16-bit PNG) or a plain 16-bit PNG of
    millimetres.

    :raises ImageRejected: for other encodings or a malformed payload.
    """
    if hasattr(msg, 'format'):
        return _decode_compressed_depth(msg, max_pixels)
    _check_size(int(msg.height), int(msg.width), max_pixels)
    kind = _DEPTH_KINDS.get(msg.encoding)
    if kind is None:
        raise ImageRejected('unknown_encoding', f'unsupported depth encoding {msg.encoding!r}; '
                                                'expected 16UC1 or 32FC1')
    depth = _pixels(msg, 1, kind)[..., 0].astype(np.float32)
    if kind == 'u2':
        return depth / np.float32(1000.0)
    return np.where(np.isfinite(depth) & (depth > 0), depth, 0).astype(np.float32)


def _depth_png(data: np.ndarray, fmt: str, max_pixels: int) -> np.ndarray:
    raw = _decode_compressed(data, fmt, max_pixels)
    if raw.ndim != 2 or raw.dtype != np.uint16:
        raise ImageRejected('unsupported_format', f'compressed depth with format {fmt!r} is '
                                                  'not a single-channel 16-bit PNG')
    return raw


def _decode_compressed_depth(msg: Any, max_pixels: int) -> np.ndarray:
    data = _buffer(msg.data)
    fmt = msg.format
    if 'compressedDepth' not in fmt:
        # A plain PNG of 16-bit millimetres (some drivers publish that on .../compressed).
        return _depth_png(data, fmt, max_pixels).astype(np.float32) / np.float32(1000.0)
    if data.size < 12:
        raise ImageRejected('corrupt_compressed',
                            'compressedDepth message shorter than its 12-byte header')
    _, quant_a, quant_b = struct.unpack('<iff', data[:12].tobytes())
    raw = _depth_png(data[12:], fmt, max_pixels)
    if fmt.startswith('16UC1'):
        return raw.astype(np.float32) / np.float32(1000.0)
    # 32FC1: inverse-depth quantisation, depth = a / (v - b), v = 0 marks invalid.
    v = raw.astype(np.float32)
    with np.errstate(divide='ignore'):
        depth = np.where(v > 0, quant_a / (v - quant_b), 0.0)
    return depth.astype(np.float32)
