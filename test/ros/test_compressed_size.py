"""Sizes read from JPEG and PNG headers, and compressed images refused before decoding."""

import struct
import zlib

import cv2
import numpy as np
import pytest
from sensor_msgs.msg import CompressedImage

from spann3r_ros.formats.compressed_size import claimed_size, jpeg_size, png_size
from spann3r_ros.formats.images import compressed_to_rgb, ImageRejected


def _encoded(ext: str, width: int = 40, height: int = 30) -> bytes:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(ext, img)
    assert ok
    return buf.tobytes()


def _png_bomb(width: int, height: int) -> bytes:
    """A valid-looking PNG whose header claims ``width x height`` with a tiny body."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack('>I', len(body)) + kind + body + struct.pack(
            '>I', zlib.crc32(kind + body) & 0xFFFFFFFF)
    ihdr = struct.pack('>IIBBBBB', width, height, 8, 2, 0, 0, 0)
    return (b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', ihdr) + chunk(b'IDAT', zlib.compress(b'\0' * 64))
            + chunk(b'IEND', b''))


def _with_jpeg_size(data: bytes, width: int, height: int) -> bytes:
    """Rewrite the size fields of a JPEG's start-of-frame segment."""
    buf = bytearray(data)
    pos = buf.index(b'\xff\xc0')
    buf[pos + 5:pos + 9] = struct.pack('>HH', height, width)
    return bytes(buf)


def _msg(data: bytes, fmt: str = '') -> CompressedImage:
    return CompressedImage(format=fmt, data=data)


@pytest.mark.parametrize('ext', ['.png', '.jpg'])
def test_claimed_size_is_the_encoded_size(ext):
    assert claimed_size(_encoded(ext, 64, 48)) == (64, 48)


def test_jpeg_size_skips_app_segments_before_the_frame_header():
    data = _encoded('.jpg', 33, 17)
    app = b'\xff\xe1' + struct.pack('>H', 2 + 5000) + b'x' * 5000  # a large EXIF-like segment
    assert jpeg_size(data[:2] + app + data[2:]) == (33, 17)


def test_headers_that_give_no_size_are_none():
    assert png_size(b'\x89PNG\r\n\x1a\n' + b'\0' * 4) is None
    assert jpeg_size(b'\xff\xd8\xff\xd9') is None
    assert jpeg_size(_encoded('.jpg')[:20]) is None
    assert claimed_size(b'GIF89a' + b'\0' * 20) is None


def test_a_png_bomb_is_refused_from_its_header_before_decoding(monkeypatch):
    def no_decode(*args):
        raise AssertionError('the decoder must not run for an oversized header')
    monkeypatch.setattr(cv2, 'imdecode', no_decode)
    with pytest.raises(ImageRejected) as err:
        compressed_to_rgb(_msg(_png_bomb(40000, 40000), 'png'), 16_000_000)
    assert err.value.reason == 'too_large' and '40000x40000' in str(err.value)


def test_a_jpeg_claiming_a_huge_size_is_refused_before_decoding(monkeypatch):
    bomb = _with_jpeg_size(_encoded('.jpg'), 60000, 60000)
    monkeypatch.setattr(cv2, 'imdecode', lambda *a: pytest.fail('decoder ran'))
    with pytest.raises(ImageRejected) as err:
        compressed_to_rgb(_msg(bomb, 'jpeg'), 16_000_000)
    assert err.value.reason == 'too_large'


def test_a_bomb_under_the_opencv_limit_but_over_ours_is_refused():
    with pytest.raises(ImageRejected, match='exceeds max_image_pixels'):
        compressed_to_rgb(_msg(_png_bomb(5000, 5000), 'png'), 1_000_000)


def test_a_small_valid_png_bomb_under_the_limit_fails_to_decode_cleanly():
    with pytest.raises(ImageRejected) as err:
        compressed_to_rgb(_msg(_png_bomb(300, 300), 'png'), 16_000_000)
    assert err.value.reason == 'corrupt_compressed'


@pytest.mark.parametrize('ext', ['.png', '.jpg'])
def test_ordinary_images_still_decode(ext):
    rgb = compressed_to_rgb(_msg(_encoded(ext, 40, 30)), 16_000_000)
    assert rgb.shape == (30, 40, 3) and rgb.dtype == np.uint8
