"""Image decoding (every encoding, padding, endianness, malformed input) and output messages."""

import struct
import sys

import cv2
import numpy as np
import pytest
from sensor_msgs.msg import CompressedImage, Image, PointCloud2, PointField
from std_msgs.msg import Header

from spann3r_ros.formats import images
from spann3r_ros.formats.pointcloud import cloud_array
from spann3r_ros.node import conversions as conv

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, size=(12, 10, 3), dtype=np.uint8)


def _msg(encoding, pixels, *, pad=0, bigendian=False):
    """Build an Image by hand from [H, W, C] pixels with ``pad`` bytes after every row."""
    h, w = pixels.shape[:2]
    dt = pixels.dtype.newbyteorder('>' if bigendian else '<')
    rows = pixels.astype(dt).reshape(h, -1).view(np.uint8)
    data = np.concatenate([rows, np.full((h, pad), 0xAB, np.uint8)], axis=1)
    return Image(height=h, width=w, encoding=encoding, is_bigendian=int(bigendian),
                 step=data.shape[1], data=data.tobytes())


def _cases():
    r, g, b = RGB[..., 0:1], RGB[..., 1:2], RGB[..., 2:3]
    a = np.full_like(r, 7)
    grey = RGB[..., :1]
    wide = RGB.astype(np.uint16) * 256 + 3  # high byte == original value
    return [
        ('rgb8', RGB, RGB),
        ('bgr8', np.concatenate([b, g, r], -1), RGB),
        ('rgba8', np.concatenate([r, g, b, a], -1), RGB),
        ('bgra8', np.concatenate([b, g, r, a], -1), RGB),
        ('mono8', grey, np.repeat(grey, 3, -1)),
        ('8UC1', grey, np.repeat(grey, 3, -1)),
        ('8UC3', np.concatenate([b, g, r], -1), RGB),
        ('8UC4', np.concatenate([b, g, r, a], -1), RGB),
        ('rgb16', wide, RGB),
        ('bgr16', wide[..., ::-1], RGB),
        ('rgba16', np.concatenate([wide, wide[..., :1]], -1), RGB),
        ('bgra16', np.concatenate([wide[..., ::-1], wide[..., :1]], -1), RGB),
        ('mono16', wide[..., :1], np.repeat(grey, 3, -1)),
        ('32FC1', (grey / 255.0).astype(np.float32), np.repeat(grey, 3, -1)),
    ]


@pytest.mark.parametrize('encoding, pixels, expected', _cases(), ids=[c[0] for c in _cases()])
@pytest.mark.parametrize('pad', [0, 5])
@pytest.mark.parametrize('bigendian', [False, True])
def test_decoding_every_encoding(encoding, pixels, expected, pad, bigendian):
    out = images.image_to_rgb(_msg(encoding, np.ascontiguousarray(pixels), pad=pad,
                                 bigendian=bigendian))
    assert out.dtype == np.uint8 and out.shape == (12, 10, 3)
    np.testing.assert_array_equal(out, expected)


def test_yuv422_decodes_to_grey_for_neutral_chroma():
    uyvy = np.zeros((12, 10, 2), np.uint8)
    uyvy[..., 0] = 128  # U/V neutral
    uyvy[..., 1] = 90   # Y
    out = images.image_to_rgb(_msg('yuv422', uyvy))
    assert out.shape == (12, 10, 3)
    assert np.all(np.abs(out.astype(int) - out[0, 0, 0]) <= 1)


#: A 2x2 Bayer cell of (R, G, B) sites tiled over the image: every pixel demosaics to that colour.
BAYER_RGB = (200, 100, 50)
#: ROS Bayer encodings and their 2x2 cell, read row by row from the top-left pixel.
BAYER_CELLS = {'bayer_rggb8': 'RGGB', 'bayer_bggr8': 'BGGR', 'bayer_gbrg8': 'GBRG',
               'bayer_grbg8': 'GRBG'}


def bayer_mosaic(cell, height=12, width=10):
    """Return a ``[H, W, 1]`` mosaic of the uniform colour ``BAYER_RGB`` with the 2x2 ``cell``."""
    value = dict(zip('RGB', BAYER_RGB))
    mosaic = np.zeros((height, width, 1), np.uint8)
    for k, site in enumerate(cell):
        mosaic[k // 2::2, k % 2::2] = value[site]
    return mosaic


@pytest.mark.parametrize('encoding', sorted(BAYER_CELLS))
@pytest.mark.parametrize('pad', [0, 3])
def test_bayer_images_demosaic_to_their_colour(encoding, pad):
    out = images.image_to_rgb(_msg(encoding, bayer_mosaic(BAYER_CELLS[encoding]), pad=pad))
    assert out.dtype == np.uint8 and out.shape == (12, 10, 3)
    np.testing.assert_array_equal(out, np.broadcast_to(BAYER_RGB, out.shape))


def _good():
    return _msg('rgb8', RGB)


def _with(**fields):
    msg = _good()
    for k, v in fields.items():
        setattr(msg, k, v)
    return msg


MALFORMED_RAW = [
    ('unknown_encoding', _with(encoding='bayer_xyz9')),
    ('zero_size', _with(width=0)),
    ('zero_size', _with(height=0)),
    ('too_small', _msg('rgb8', RGB[:4, :4])),
    ('too_large', _with(width=100000, height=100000)),
    ('short_step', _with(step=29)),
    ('short_data', _with(data=_good().data[:-1])),
    ('nonfinite', _msg('32FC1', np.full((12, 10, 1), np.nan, np.float32))),
    ('odd_width', _msg('yuv422', np.zeros((12, 9, 2), np.uint8))),
]


@pytest.mark.parametrize('reason, msg', MALFORMED_RAW, ids=[m[0] for m in MALFORMED_RAW])
def test_malformed_raw_images_are_rejected_with_reason(reason, msg):
    with pytest.raises(images.ImageRejected) as info:
        images.image_to_rgb(msg, max_pixels=1_000_000)
    assert info.value.reason == reason
    assert isinstance(info.value, ValueError) and str(info.value)


def _compressed(fmt, ext, image=RGB):
    ok, buf = cv2.imencode(ext, cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    assert ok
    return CompressedImage(format=fmt, data=buf.tobytes())


def test_png_roundtrip_is_exact():
    for fmt in ('png', 'rgb8; png compressed bgr8', ''):
        np.testing.assert_array_equal(images.compressed_to_rgb(_compressed(fmt, '.png')), RGB)


def test_jpeg_decodes_close_to_the_source():
    smooth = np.tile(np.linspace(0, 255, 64, dtype=np.uint8)[None, :, None], (48, 1, 3))
    out = images.compressed_to_rgb(_compressed('jpeg', '.jpg', smooth))
    assert out.shape == (48, 64, 3)
    assert np.abs(out.astype(int) - smooth).mean() < 3


MALFORMED_COMPRESSED = [
    ('empty_compressed', CompressedImage(format='jpeg', data=b'')),
    ('unsupported_format', CompressedImage(format='h264', data=b'\x00\x00\x01')),
    ('corrupt_compressed', CompressedImage(format='jpeg', data=b'\xff\xd8\xff' + bytes(200))),
    ('corrupt_compressed', CompressedImage(format='png', data=b'not an image at all')),
]


@pytest.mark.parametrize('reason, msg', MALFORMED_COMPRESSED,
                         ids=[m[0] for m in MALFORMED_COMPRESSED])
def test_malformed_compressed_images_are_rejected(reason, msg):
    with pytest.raises(images.ImageRejected) as info:
        images.compressed_to_rgb(msg)
    assert info.value.reason == reason


def test_compressed_too_large_is_rejected_after_decoding():
    with pytest.raises(images.ImageRejected) as info:
        images.compressed_to_rgb(_compressed('png', '.png'), max_pixels=100)
    assert info.value.reason == 'too_large'


# -- outputs: decoded from their fields alone, as any subscriber would --------------------

#: PointField datatype constants and their NumPy codes, from sensor_msgs/msg/PointField.msg.
POINT_FIELD_TYPES = {1: 'i1', 2: 'u1', 3: 'i2', 4: 'u2', 5: 'i4', 6: 'u4', 7: 'f4', 8: 'f8'}


def decode_cloud(msg):
    """Return the points of a PointCloud2 as a structured [height * width] array.

    Built only from the message definition: each field sits at ``offset`` inside a point of
    ``point_step`` bytes, rows of ``width`` points start every ``row_step`` bytes, and
    ``is_bigendian`` gives the byte order of every field.
    """
    order = '>' if msg.is_bigendian else '<'
    dtype = np.dtype({
        'names': [f.name for f in msg.fields],
        'formats': [order + POINT_FIELD_TYPES[f.datatype] if f.count == 1 else
                    (order + POINT_FIELD_TYPES[f.datatype], (f.count,)) for f in msg.fields],
        'offsets': [f.offset for f in msg.fields], 'itemsize': msg.point_step})
    data = np.frombuffer(bytes(msg.data), np.uint8)
    assert len(data) == msg.height * msg.row_step
    assert msg.row_step >= msg.width * msg.point_step
    rows = data.reshape(msg.height, msg.row_step)[:, :msg.width * msg.point_step]
    return np.ascontiguousarray(rows).view(dtype).reshape(-1)


def decode_float_image(msg):
    """Return a 32FC1 Image as [height, width] float32, from its definition (rows of ``step``)."""
    assert msg.encoding == '32FC1'
    data = np.frombuffer(bytes(msg.data), np.uint8)
    assert len(data) == msg.height * msg.step and msg.step >= msg.width * 4
    rows = data.reshape(msg.height, msg.step)[:, :msg.width * 4]
    dtype = np.dtype('>f4' if msg.is_bigendian else '<f4')
    return np.ascontiguousarray(rows).view(dtype).astype(np.float32)


def unpack_rgb(rgb_float):
    """Return [N, 3] uint8 from the float32 ``rgb`` field holding ``0x00RRGGBB`` (RViz's way)."""
    packed = np.ascontiguousarray(rgb_float, dtype=rgb_float.dtype).view(
        rgb_float.dtype.str.replace('f', 'u'))
    assert not np.any(packed >> 24), 'the top byte of rgb must be 0'
    return np.stack([(packed >> 16) & 0xFF, (packed >> 8) & 0xFF, packed & 0xFF],
                    axis=1).astype(np.uint8)


def _header():
    h = Header(frame_id='map')
    h.stamp.sec, h.stamp.nanosec = 12, 345
    return h


def _cloud_inputs(n):
    xyz = RNG.normal(size=(n, 3)).astype(np.float32)
    rgb = RNG.integers(0, 256, size=(n, 3), dtype=np.uint8)
    conf = RNG.uniform(1, 5, size=n).astype(np.float32)
    return xyz, rgb, conf


def test_the_decoders_follow_the_message_definitions():
    """The decoders above honour offsets, padding, row padding and big-endian data."""
    n, height = 3, 2
    values = RNG.normal(size=(height, n)).astype('>f8')
    labels = RNG.integers(0, 2**32, size=(height, n), dtype=np.uint64).astype('>u4')
    point_step, row_step = 16, 16 * n + 4  # 4 pad bytes per point, 4 per row
    data = np.zeros((height, row_step), np.uint8)
    for r in range(height):
        for i in range(n):
            at = i * point_step
            # Slices, not scalars: a NumPy scalar forgets the big-endian order.
            data[r, at:at + 4] = np.frombuffer(labels[r, i:i + 1].tobytes(), np.uint8)
            data[r, at + 4:at + 12] = np.frombuffer(values[r, i:i + 1].tobytes(), np.uint8)
    cloud = PointCloud2(height=height, width=n, point_step=point_step, row_step=row_step,
                        is_bigendian=True, data=data.tobytes(), fields=[
                            PointField(name='v', offset=4, datatype=PointField.FLOAT64,
                                       count=1),
                            PointField(name='label', offset=0, datatype=PointField.UINT32,
                                       count=1)])
    points = decode_cloud(cloud)
    np.testing.assert_array_equal(points['v'], values.ravel())
    np.testing.assert_array_equal(points['label'], labels.ravel())
    assert {getattr(PointField, name): code for name, code in (
        ('INT8', 'i1'), ('UINT8', 'u1'), ('INT16', 'i2'), ('UINT16', 'u2'), ('INT32', 'i4'),
        ('UINT32', 'u4'), ('FLOAT32', 'f4'), ('FLOAT64', 'f8'))} == POINT_FIELD_TYPES

    depth = RNG.uniform(size=(3, 4)).astype('>f4')
    padded = np.concatenate([depth.view(np.uint8), np.full((3, 8), 0xCD, np.uint8)], axis=1)
    image = Image(height=3, width=4, encoding='32FC1', is_bigendian=True, step=24,
                  data=padded.tobytes())
    np.testing.assert_array_equal(decode_float_image(image), depth)


def test_cloud_decodes_to_its_inputs():
    xyz, rgb, conf = _cloud_inputs(7)
    msg = conv.cloud_msg(_header(), xyz, rgb, conf)
    assert (msg.height, msg.width) == (1, 7)
    assert msg.header.frame_id == 'map' and msg.header.stamp.nanosec == 345
    assert [(f.name, f.datatype, f.count) for f in msg.fields] == [
        (name, 7, 1) for name in ('x', 'y', 'z', 'rgb', 'confidence')]  # 7: FLOAT32
    points = decode_cloud(msg)
    assert len(points) == 7
    np.testing.assert_array_equal(np.stack([points[c] for c in 'xyz'], axis=1), xyz)
    np.testing.assert_array_equal(points['confidence'], conf)
    np.testing.assert_array_equal(unpack_rgb(points['rgb']), rgb)


def test_cloud_bytes_are_the_documented_layout():
    """20-byte points in native order: x, y, z, 0x00RRGGBB, confidence."""
    xyz, rgb, conf = _cloud_inputs(7)
    msg = conv.cloud_msg(_header(), xyz, rgb, conf)
    assert (msg.point_step, msg.row_step) == (20, 140)
    assert [(f.name, f.offset) for f in msg.fields] == [
        ('x', 0), ('y', 4), ('z', 8), ('rgb', 12), ('confidence', 16)]
    assert bool(msg.is_bigendian) == (sys.byteorder == 'big')
    order = '>' if msg.is_bigendian else '<'
    expected = b''
    for p, c, k in zip(xyz.tolist(), rgb.tolist(), conf.tolist()):
        expected += struct.pack(order + 'fffIf', *p, (c[0] << 16) | (c[1] << 8) | c[2], k)
    assert bytes(msg.data) == expected


def test_rgb_is_the_float32_reinterpretation_of_0x00rrggbb():
    rgb = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [18, 52, 86]], np.uint8)
    msg = conv.cloud_msg(_header(), np.zeros((4, 3), np.float32), rgb, np.ones(4))
    as_float = decode_cloud(msg)['rgb']
    expected = np.array([0xFF0000, 0x00FF00, 0x0000FF, 0x123456], np.uint32)
    np.testing.assert_array_equal(as_float.astype(np.float32).view(np.uint32), expected)


def test_cloud_of_an_image_grid_with_mask_decodes_to_the_masked_pixels():
    xyz = RNG.normal(size=(4, 5, 3)).astype(np.float32)
    rgb = RNG.integers(0, 256, size=(4, 5, 3), dtype=np.uint8)
    conf = RNG.uniform(1, 3, size=(4, 5)).astype(np.float32)
    mask = conf > 2
    points = decode_cloud(conv.cloud_msg(_header(), xyz.astype(np.float64), rgb, conf,
                                         mask=mask))
    assert len(points) == int(mask.sum())
    np.testing.assert_array_equal(np.stack([points[c] for c in 'xyz'], axis=1), xyz[mask])
    np.testing.assert_array_equal(unpack_rgb(points['rgb']), rgb[mask])
    np.testing.assert_array_equal(points['confidence'], conf[mask])
    with pytest.raises(ValueError, match='mask'):
        cloud_array(xyz, rgb, conf, mask=np.ones(3, bool))


def test_empty_cloud_is_well_formed():
    msg = conv.cloud_msg(_header(), np.zeros((0, 3)), np.zeros((0, 3), np.uint8), np.zeros(0))
    assert (msg.width, msg.row_step, len(msg.data)) == (0, 0, 0)
    assert len(decode_cloud(msg)) == 0


def test_float_image_decodes_to_its_input():
    depth = RNG.uniform(0, 3, size=(4, 6)).astype(np.float32)
    depth[0, 0], depth[1, 2] = np.nan, np.inf
    msg = conv.float_image_msg(_header(), depth)
    assert (msg.height, msg.width, msg.step, msg.encoding) == (4, 6, 24, '32FC1')
    assert bool(msg.is_bigendian) == (sys.byteorder == 'big')
    assert msg.header.stamp.sec == 12
    np.testing.assert_array_equal(decode_float_image(msg), depth)
    # Non-contiguous float64 input: converted to float32, rows unpadded.
    wide = RNG.uniform(size=(6, 4))
    np.testing.assert_array_equal(decode_float_image(conv.float_image_msg(_header(), wide.T)),
                                  wide.T.astype(np.float32))
    with pytest.raises(ValueError, match=r'\[H, W\]'):
        conv.float_image_msg(_header(), np.zeros((2, 2, 1), np.float32))


def test_camera_info_of_the_crop():
    info = conv.camera_info_msg(_header(), 224, 250.0)
    assert (info.width, info.height) == (224, 224)
    assert list(info.k) == [250.0, 0.0, 112.0, 0.0, 250.0, 112.0, 0.0, 0.0, 1.0]
    assert info.p[0] == 250.0 and info.p[2] == 112.0


def test_cloud_array_length_mismatch_is_an_error():
    with pytest.raises(ValueError, match='disagree'):
        conv.cloud_msg(_header(), np.zeros((3, 3)), np.zeros((2, 3), np.uint8), np.zeros(3))


def test_cloud_msg_with_a_reused_packer_matches_a_fresh_one():
    packer = conv.CloudPacker()
    for n in (40, 10, 40):
        xyz, rgb, conf = _cloud_inputs(n)
        mask = conf > 2
        reused = conv.cloud_msg(_header(), xyz, rgb, conf, mask=mask, packer=packer)
        assert reused == conv.cloud_msg(_header(), xyz, rgb, conf, mask=mask)
        assert reused.width == int(mask.sum()) and len(reused.data) == 20 * reused.width
        np.testing.assert_array_equal(decode_cloud(reused)['confidence'], conf[mask])
