"""Image decoding (every encoding, padding, endianness, malformed input) and output messages."""

import struct
import sys

import cv2
import numpy as np
import pytest
from sensor_msgs.msg import CompressedImage, Image, PointField
from std_msgs.msg import Header

from spann3r_ros import conversions as conv

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
    out = conv.image_to_rgb(_msg(encoding, np.ascontiguousarray(pixels), pad=pad,
                                 bigendian=bigendian))
    assert out.dtype == np.uint8 and out.shape == (12, 10, 3)
    np.testing.assert_array_equal(out, expected)


def test_yuv422_decodes_to_grey_for_neutral_chroma():
    uyvy = np.zeros((12, 10, 2), np.uint8)
    uyvy[..., 0] = 128  # U/V neutral
    uyvy[..., 1] = 90   # Y
    out = conv.image_to_rgb(_msg('yuv422', uyvy))
    assert out.shape == (12, 10, 3)
    assert np.all(np.abs(out.astype(int) - out[0, 0, 0]) <= 1)


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
    with pytest.raises(conv.ImageRejected) as info:
        conv.image_to_rgb(msg, max_pixels=1_000_000)
    assert info.value.reason == reason
    assert isinstance(info.value, ValueError) and str(info.value)


def _compressed(fmt, ext, image=RGB):
    ok, buf = cv2.imencode(ext, cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    assert ok
    return CompressedImage(format=fmt, data=buf.tobytes())


def test_png_roundtrip_is_exact():
    for fmt in ('png', 'rgb8; png compressed bgr8', ''):
        np.testing.assert_array_equal(conv.compressed_to_rgb(_compressed(fmt, '.png')), RGB)


def test_jpeg_decodes_close_to_the_source():
    smooth = np.tile(np.linspace(0, 255, 64, dtype=np.uint8)[None, :, None], (48, 1, 3))
    out = conv.compressed_to_rgb(_compressed('jpeg', '.jpg', smooth))
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
    with pytest.raises(conv.ImageRejected) as info:
        conv.compressed_to_rgb(msg)
    assert info.value.reason == reason


def test_compressed_too_large_is_rejected_after_decoding():
    with pytest.raises(conv.ImageRejected) as info:
        conv.compressed_to_rgb(_compressed('png', '.png'), max_pixels=100)
    assert info.value.reason == 'too_large'


# -- outputs: every importable backend must match messages built by hand from the definitions --

BACKENDS = sorted(conv.available_backends())


def _header():
    h = Header(frame_id='map')
    h.stamp.sec, h.stamp.nanosec = 12, 345
    return h


@pytest.mark.parametrize('backend', BACKENDS)
def test_cloud_bytes_match_the_message_definition(backend):
    xyz = RNG.normal(size=(7, 3)).astype(np.float32)
    rgb = RNG.integers(0, 256, size=(7, 3), dtype=np.uint8)
    conf = RNG.uniform(1, 5, size=7).astype(np.float32)
    msg = conv.cloud_msg(_header(), xyz, rgb, conf, backend=backend)
    assert (msg.height, msg.width, msg.point_step, msg.row_step) == (1, 7, 20, 140)
    assert msg.header.frame_id == 'map' and msg.header.stamp.nanosec == 345
    assert [(f.name, f.offset, f.datatype, f.count) for f in msg.fields] == [
        ('x', 0, PointField.FLOAT32, 1), ('y', 4, PointField.FLOAT32, 1),
        ('z', 8, PointField.FLOAT32, 1), ('rgb', 12, PointField.FLOAT32, 1),
        ('confidence', 16, PointField.FLOAT32, 1)]
    assert bool(msg.is_bigendian) == (sys.byteorder == 'big')
    order = '<' if sys.byteorder == 'little' else '>'
    expected = b''
    for p, c, k in zip(xyz.tolist(), rgb.tolist(), conf.tolist()):
        packed_rgb = (c[0] << 16) | (c[1] << 8) | c[2]
        expected += struct.pack(order + 'fffIf', *p, packed_rgb, k)
    assert bytes(msg.data) == expected


@pytest.mark.parametrize('backend', BACKENDS)
def test_float_image_bytes_match_the_message_definition(backend):
    depth = RNG.uniform(0, 3, size=(4, 6)).astype(np.float32)
    msg = conv.float_image_msg(_header(), depth, backend=backend)
    assert (msg.height, msg.width, msg.step, msg.encoding) == (4, 6, 24, '32FC1')
    order = '<' if not msg.is_bigendian else '>'
    assert bytes(msg.data) == struct.pack(order + '24f', *depth.ravel().tolist())
    assert msg.header.stamp.sec == 12


def test_backends_agree_byte_for_byte():
    """Wherever sensor_msgs_py and cv_bridge import, both backends produce identical messages."""
    xyz = RNG.normal(size=(5, 3))
    rgb = RNG.integers(0, 256, size=(5, 3), dtype=np.uint8)
    conf = np.ones(5)
    depth = RNG.uniform(size=(3, 3))
    msgs = {b: (conv.cloud_msg(_header(), xyz, rgb, conf, b),
                conv.float_image_msg(_header(), depth, b)) for b in BACKENDS}
    ref = msgs['numpy']
    for cloud, image in msgs.values():
        assert cloud == ref[0] and image == ref[1]


def test_camera_info_of_the_crop():
    info = conv.camera_info_msg(_header(), 224, 250.0)
    assert (info.width, info.height) == (224, 224)
    assert list(info.k) == [250.0, 0.0, 112.0, 0.0, 250.0, 112.0, 0.0, 0.0, 1.0]
    assert info.p[0] == 250.0 and info.p[2] == 112.0


def test_cloud_array_length_mismatch_is_an_error():
    with pytest.raises(ValueError, match='disagree'):
        conv.cloud_array(np.zeros((3, 3)), np.zeros((2, 3), np.uint8), np.zeros(3))


def test_cloud_mask_keeps_the_selected_pixels_in_order():
    xyz = RNG.normal(size=(4, 5, 3)).astype(np.float32)
    rgb = RNG.integers(0, 256, size=(4, 5, 3), dtype=np.uint8)
    conf = RNG.uniform(1, 3, size=(4, 5)).astype(np.float32)
    mask = conf > 2
    masked = conv.cloud_msg(_header(), xyz, rgb, conf, backend='numpy', mask=mask)
    direct = conv.cloud_msg(_header(), xyz[mask], rgb[mask], conf[mask], backend='numpy')
    assert masked == direct and masked.width == int(mask.sum())
    with pytest.raises(ValueError, match='mask'):
        conv.cloud_array(xyz, rgb, conf, mask=np.ones(3, bool))


def test_the_node_packs_with_numpy_and_unknown_backends_are_refused():
    assert conv.default_backend() == 'numpy'
    with pytest.raises(ValueError, match="backend 'opencl' is not available"):
        conv.cloud_msg(_header(), np.zeros((1, 3)), np.zeros((1, 3), np.uint8), np.ones(1),
                       backend='opencl')


def test_cloud_msg_with_a_reused_packer_matches_a_fresh_one():
    packer = conv.CloudPacker()
    for n in (40, 10, 40):
        xyz = RNG.normal(size=(n, 3)).astype(np.float32)
        rgb = RNG.integers(0, 256, size=(n, 3), dtype=np.uint8)
        conf = RNG.uniform(1, 3, size=n).astype(np.float32)
        mask = conf > 2
        reused = conv.cloud_msg(_header(), xyz, rgb, conf, mask=mask, packer=packer)
        assert reused == conv.cloud_msg(_header(), xyz, rgb, conf, backend='numpy', mask=mask)
        assert reused.width == int(mask.sum()) and len(reused.data) == 20 * reused.width
