"""Image and depth decoding from bag (``rosbags``) messages and plain objects, without rclpy.

Expected values are built by hand from known pixels, or with an OpenCV conversion named here.
"""

import struct
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from rosbags.typesys import get_typestore, Stores

from spann3r_ros.formats import images

RNG = np.random.default_rng(1)
STORES = {'ros2': get_typestore(Stores.ROS2_HUMBLE), 'ros1': get_typestore(Stores.ROS1_NOETIC)}


def _header(ts):
    cls = ts.types['std_msgs/msg/Header']
    stamp = ts.types['builtin_interfaces/msg/Time'](sec=1, nanosec=2)
    if 'seq' in cls.__dataclass_fields__:
        return cls(seq=0, stamp=stamp, frame_id='camera')
    return cls(stamp=stamp, frame_id='camera')


def bag_image(pixels, encoding, *, store='ros2', pad=0, bigendian=False):
    """A rosbags ``sensor_msgs/Image`` of ``[H, W(, C)]`` pixels, ``pad`` bytes after each row."""
    h, w = pixels.shape[:2]
    rows = pixels.astype(pixels.dtype.newbyteorder('>' if bigendian else '<'))
    rows = rows.reshape(h, -1).view(np.uint8)
    data = np.concatenate([rows, np.full((h, pad), 0xEE, np.uint8)], axis=1)
    ts = STORES[store]
    return ts.types['sensor_msgs/msg/Image'](
        header=_header(ts), height=h, width=w, encoding=encoding, is_bigendian=int(bigendian),
        step=data.shape[1], data=data.reshape(-1))


def bag_compressed(data, fmt, store='ros2'):
    """A rosbags ``sensor_msgs/CompressedImage`` holding ``data``."""
    ts = STORES[store]
    return ts.types['sensor_msgs/msg/CompressedImage'](
        header=_header(ts), format=fmt, data=np.frombuffer(bytes(data), np.uint8))


def png_claiming(width, height):
    """The first bytes of a PNG whose header claims ``width x height`` (nothing decodable)."""
    return (b'\x89PNG\r\n\x1a\n' + struct.pack('>I', 13) + b'IHDR'
            + struct.pack('>IIBBBBB', width, height, 16, 0, 0, 0, 0))


def test_the_encoding_table_is_the_union_of_both_decoders():
    assert set(images.ENCODINGS) == {
        'rgb8', 'bgr8', 'rgba8', 'bgra8', 'mono8', '8UC1', '8UC3', '8UC4',
        'rgb16', 'bgr16', 'rgba16', 'bgra16', 'mono16', '16UC1', '32FC1',
        'yuv422', 'uyvy', 'yuv422_yuy2', 'yuyv',
        'bayer_rggb8', 'bayer_bggr8', 'bayer_gbrg8', 'bayer_grbg8'}


# -- colour ----------------------------------------------------------------------------------

#: (R, G, B) of a uniform scene; a Bayer mosaic of it demosaics back to it at every pixel.
COLOUR = (200, 100, 50)
#: ROS Bayer encodings and their 2x2 cell, row by row from the top-left pixel.
BAYER_CELLS = {'bayer_rggb8': 'RGGB', 'bayer_bggr8': 'BGGR', 'bayer_gbrg8': 'GBRG',
               'bayer_grbg8': 'GRBG'}


def _mosaic(cell, height=10, width=12):
    value = dict(zip('RGB', COLOUR))
    mosaic = np.zeros((height, width), np.uint8)
    for k, site in enumerate(cell):
        mosaic[k // 2::2, k % 2::2] = value[site]
    return mosaic


@pytest.mark.parametrize('store', sorted(STORES))
@pytest.mark.parametrize('encoding', sorted(BAYER_CELLS))
def test_bayer_mosaic_of_a_uniform_colour_decodes_to_it(encoding, store):
    rgb = images.decode_color(bag_image(_mosaic(BAYER_CELLS[encoding]), encoding, store=store,
                                        pad=2))
    assert rgb.shape == (10, 12, 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb, np.broadcast_to(COLOUR, rgb.shape))


def test_bayer_rggb_matches_opencvs_bg_pattern():
    """OpenCV names a pattern from the second row: ROS's RGGB is OpenCV's BayerBG."""
    mosaic = RNG.integers(0, 256, (16, 20), dtype=np.uint8)
    np.testing.assert_array_equal(images.decode_color(bag_image(mosaic, 'bayer_rggb8')),
                                  cv2.cvtColor(mosaic, cv2.COLOR_BayerBG2RGB))


def test_a_red_site_of_a_rggb_mosaic_is_red():
    mosaic = np.zeros((8, 8), np.uint8)
    mosaic[4, 4] = 255  # row and column even: a red site of RGGB
    rgb = images.decode_color(bag_image(mosaic, 'bayer_rggb8'))
    assert tuple(rgb[4, 4]) == (255, 0, 0)


def test_8uc4_is_bgra():
    bgra = np.zeros((8, 9, 4), np.uint8)
    bgra[..., 0], bgra[..., 1], bgra[..., 2], bgra[..., 3] = 30, 60, 90, 255
    rgb = images.decode_color(bag_image(bgra, '8UC4', store='ros1'))
    np.testing.assert_array_equal(rgb, np.broadcast_to((90, 60, 30), (8, 9, 3)))


@pytest.mark.parametrize('bigendian', [False, True])
def test_32fc1_colour_is_an_intensity_in_0_1(bigendian):
    grey = np.array([0.0, 0.2, 0.5, 1.0, 1.7, -0.3], np.float32)
    expected = np.array([0, 51, 128, 255, 255, 0], np.uint8)  # rint(clip(v) * 255)
    pixels = np.tile(grey, (8, 2))
    rgb = images.decode_color(bag_image(pixels, '32FC1', pad=4, bigendian=bigendian))
    np.testing.assert_array_equal(rgb, np.repeat(np.tile(expected, (8, 2))[..., None], 3, -1))


@pytest.mark.parametrize('encoding, code', [('yuv422', cv2.COLOR_YUV2RGB_UYVY),
                                            ('uyvy', cv2.COLOR_YUV2RGB_UYVY),
                                            ('yuv422_yuy2', cv2.COLOR_YUV2RGB_YUYV),
                                            ('yuyv', cv2.COLOR_YUV2RGB_YUYV)])
def test_packed_yuv_matches_opencv(encoding, code):
    packed = RNG.integers(0, 256, (8, 10, 2), dtype=np.uint8)
    np.testing.assert_array_equal(images.decode_color(bag_image(packed, encoding, pad=3)),
                                  cv2.cvtColor(packed, code))


def test_16_bit_colour_keeps_the_high_byte():
    rgb = RNG.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    wide = rgb.astype(np.uint16) * 256 + 255
    np.testing.assert_array_equal(images.decode_color(bag_image(wide, 'rgb16', bigendian=True)),
                                  rgb)


def test_plain_objects_and_list_data_decode():
    msg = SimpleNamespace(height=8, width=8, encoding='mono8', is_bigendian=0, step=8,
                          data=list(range(64)))
    rgb = images.image_to_rgb(msg)
    np.testing.assert_array_equal(rgb[..., 1], np.arange(64).reshape(8, 8))


@pytest.mark.parametrize('encoding', ['bayer_rggb12p', '32SC1', '16UC3', ''])
def test_a_bag_image_of_an_unsupported_encoding_raises_value_error(encoding):
    msg = bag_image(np.zeros((8, 8), np.uint8), encoding)
    with pytest.raises(ValueError, match='unsupported colour encoding') as info:
        images.decode_color(msg)
    assert info.value.reason == 'unknown_encoding'


def test_bag_images_are_checked_like_live_ones():
    good = RNG.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    short = bag_image(good, 'rgb8')
    short.data = short.data[:-1]
    tiny = bag_image(good[:4, :4], 'rgb8')
    for msg, reason in ((short, 'short_data'), (tiny, 'too_small')):
        with pytest.raises(images.ImageRejected) as info:
            images.decode_color(msg)
        assert info.value.reason == reason
    with pytest.raises(images.ImageRejected, match='exceeds max_image_pixels'):
        images.decode_color(bag_image(good, 'rgb8'), max_pixels=63)


def test_compressed_bag_images():
    rgb = RNG.integers(0, 256, (9, 11, 3), dtype=np.uint8)
    ok, png = cv2.imencode('.png', np.ascontiguousarray(rgb[..., ::-1]))
    assert ok
    msg = bag_compressed(png.tobytes(), 'rgb8; png compressed bgr8', 'ros1')
    np.testing.assert_array_equal(images.decode_color(msg), rgb)
    with pytest.raises(images.ImageRejected) as info:
        images.decode_color(bag_compressed(png_claiming(40000, 40000), 'png'))
    assert info.value.reason == 'too_large'
    with pytest.raises(ValueError, match="format 'h264'"):
        images.decode_color(bag_compressed(b'\x00\x00\x00\x01' * 8, 'h264'))


# -- depth -----------------------------------------------------------------------------------

@pytest.mark.parametrize('encoding', ['16UC1', 'mono16'])
@pytest.mark.parametrize('bigendian', [False, True])
def test_millimetre_depth_decodes_to_metres(encoding, bigendian):
    mm = np.array([[0, 1, 1500, 65535]] * 8, np.uint16).repeat(2, axis=1)
    depth = images.decode_depth(bag_image(mm, encoding, pad=6, bigendian=bigendian))
    assert depth.dtype == np.float32 and depth.shape == (8, 8)
    np.testing.assert_allclose(depth[0], [0, 0, 0.001, 0.001, 1.5, 1.5, 65.535, 65.535],
                               rtol=1e-6)


def test_metre_depth_keeps_valid_values_and_zeroes_the_rest():
    row = np.array([1.25, np.nan, np.inf, -2.0, 0.0, 3.5, 7.0, 0.5], np.float32)
    depth = images.decode_depth(bag_image(np.tile(row, (8, 1)), '32FC1', bigendian=True))
    np.testing.assert_array_equal(depth[3], [1.25, 0, 0, 0, 0, 3.5, 7.0, 0.5])


def test_a_depth_image_of_another_encoding_is_refused():
    with pytest.raises(ValueError, match="unsupported depth encoding 'rgb8'"):
        images.decode_depth(bag_image(np.zeros((8, 8, 3), np.uint8), 'rgb8'))


def _png16(values):
    ok, buf = cv2.imencode('.png', values.astype(np.uint16))
    assert ok
    return buf.tobytes()


def test_compressed_depth_16uc1_and_plain_png():
    mm = np.full((8, 10), 2000, np.uint16)
    mm[2, 3] = 0
    expected = mm.astype(np.float32) / 1000
    config = struct.pack('<iff', 0, 0.0, 0.0)
    packed = bag_compressed(config + _png16(mm), '16UC1; compressedDepth png')
    np.testing.assert_array_equal(images.decode_depth(packed), expected)
    plain = bag_compressed(_png16(mm), 'png', 'ros1')
    np.testing.assert_array_equal(images.decode_depth(plain), expected)


def test_compressed_depth_32fc1_undoes_the_inverse_depth_quantisation():
    a, b = 1000.0, -10.0
    v = np.full((8, 8), 190, np.uint16)  # depth a / (v - b) = 5 m
    v[0, 0] = 0  # invalid
    data = struct.pack('<iff', 0, a, b) + _png16(v)
    depth = images.decode_depth(bag_compressed(data, '32FC1; compressedDepth png'))
    assert depth[0, 0] == 0
    np.testing.assert_allclose(depth[1:], 5.0, rtol=1e-6)


def test_malformed_compressed_depth_is_refused():
    config = struct.pack('<iff', 0, 0.0, 0.0)
    cases = [
        (bag_compressed(b'\x00' * 5, '16UC1; compressedDepth'), 'corrupt_compressed'),
        (bag_compressed(config + png_claiming(50000, 50000), '16UC1; compressedDepth'),
         'too_large'),
        (bag_compressed(config + b'not a png at all', '16UC1; compressedDepth'),
         'corrupt_compressed'),
    ]
    ok, rgb_png = cv2.imencode('.png', np.zeros((8, 8, 3), np.uint8))
    assert ok
    cases.append((bag_compressed(rgb_png.tobytes(), 'png'), 'unsupported_format'))
    for msg, reason in cases:
        with pytest.raises(ValueError) as info:
            images.decode_depth(msg)
        assert info.value.reason == reason, str(info.value)
