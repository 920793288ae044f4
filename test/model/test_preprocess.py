"""Preprocessing equals the official data path bit for bit.

Fixture (``test/data/preprocess``): the official run's inputs, its final 224x224 uint8 crops
(PNG), its summary (crop boxes, sizes, intrinsics, sha256 of every float32 ``img``) and the
sha256 of the JPEG as the official code decoded it.
"""

import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
import pytest

from spann3r_model.preprocess import compute_crop, preprocess

DATA = Path(__file__).parent.parent / 'data' / 'preprocess'
SUMMARY = json.loads((DATA / 'preprocess_summary.json').read_text())
IMAGES = SUMMARY['images']
IDS = [entry['file'] for entry in IMAGES]


def _load(entry: dict) -> np.ndarray:
    # The official decoder: cv2.imread (BGR) then BGR -> RGB.
    bgr = cv2.imread(str(DATA / 'inputs' / entry['file']), cv2.IMREAD_COLOR)
    assert bgr is not None, entry['file']
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _expected_final(entry: dict) -> np.ndarray:
    return np.asarray(Image.open(DATA / 'expected' / f'img{entry["index"]:02d}_final_u8.png'))


def test_fixture_is_complete() -> None:
    assert len(IMAGES) == 7
    for entry in IMAGES:
        data = (DATA / 'inputs' / entry['file']).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry['file_sha256']


@pytest.mark.parametrize('entry', IMAGES, ids=IDS)
def test_final_crop_is_bit_exact(entry: dict) -> None:
    out = preprocess(_load(entry))
    expected = _expected_final(entry)
    assert out.rgb.dtype == np.uint8 and out.rgb.shape == (224, 224, 3)
    diff = np.abs(out.rgb.astype(int) - expected.astype(int))
    assert diff.max() == 0, f'{int((diff > 0).sum())} values differ, by up to {diff.max()}'


@pytest.mark.parametrize('entry', IMAGES, ids=IDS)
def test_normalised_image_is_bit_exact(entry: dict) -> None:
    out = preprocess(_load(entry))
    assert out.img.dtype == np.float32 and out.img.shape == (3, 224, 224)
    assert out.img.flags['C_CONTIGUOUS']
    assert hashlib.sha256(out.img.tobytes()).hexdigest() == entry['img_sha256_float32']
    assert float(out.img.astype(np.float64).sum()) == pytest.approx(entry['img_sum_float64'],
                                                                    abs=1e-9)


@pytest.mark.parametrize('entry', IMAGES, ids=IDS)
def test_crop_geometry(entry: dict) -> None:
    width, height = entry['orig_WH']
    crop = compute_crop(width, height, 224)
    assert list(crop.crop1) == entry['crop1_box_ltrb']
    assert list(crop.resized_wh) == entry['size_after_resize_WH']
    left, top, right, bottom = entry['crop2_box_ltrb']
    assert crop.offset == (left, top) and (right - left, bottom - top) == (224, 224)
    assert crop.scale == pytest.approx(entry['scale_final'], rel=1e-15)


def test_half_margins_round_to_even() -> None:
    # 300x500: margin 149 -> 74.5 -> 74; 223x167: margin 75 -> 37.5 -> 38. Only half-to-even
    # rounding gets both (half-up gives 75 for the first, floor gives 37 for the second).
    portrait, tiny = IMAGES[3], IMAGES[6]
    assert portrait['half_margins'] == [0.0, 74.5] and tiny['half_margins'] == [37.5, 0.0]
    assert compute_crop(300, 500).offset == (0, 74)
    assert compute_crop(223, 167).offset == (38, 0)
    # 223x167 also needs the official +1e-8 in the scale: 166 * 224 / 166 floors to 223.
    assert compute_crop(223, 167).resized_wh == (299, 224)


@pytest.mark.parametrize('entry', IMAGES, ids=IDS)
def test_model_intrinsics_follow_the_official_update(entry: dict) -> None:
    width, height = entry['orig_WH']
    K = np.array([[1.0, 0, width // 2], [0, 1.0, height // 2], [0, 0, 1]])
    out = compute_crop(width, height).input_to_model_intrinsics(K)
    # The official values were computed in float32.
    np.testing.assert_allclose(out, np.array(entry['K_final']), rtol=1e-6, atol=2e-5)


@pytest.mark.parametrize('entry', IMAGES, ids=IDS)
def test_model_pixels_map_back_to_input_pixels(entry: dict) -> None:
    width, height = entry['orig_WH']
    crop = compute_crop(width, height)
    K = np.array([[300.0, 0, width / 2 - 3.0], [0, 310.0, height / 2 + 2.0], [0, 0, 1]])
    K_model = crop.input_to_model_intrinsics(K)
    # A 3D point projects to pixels that model_to_input maps onto each other.
    point = np.array([0.3, -0.2, 2.0])
    uv_in = (K @ point)[:2] / point[2]
    uv_model = (K_model @ point)[:2] / point[2]
    np.testing.assert_allclose(crop.model_to_input(uv_model), uv_in, atol=1e-9)


def test_camera_K_maps_through_the_crop_as_computed_by_hand() -> None:
    # 640x480: the first crop keeps the whole image, the scale is 224 / 480 = 7 / 15, the
    # resize is 298x224 (640 * 7 / 15 = 298.67 floored) and the final crop starts at x = 37.
    # The flooring residual shifts the pixel centres by (298.67 - 298) / 2 = 1 / 3.
    crop = compute_crop(640, 480)
    assert (crop.crop1, crop.resized_wh, crop.offset) == ((0, 0, 640, 480), (298, 224), (37, 0))
    K = np.array([[500.0, 0.0, 330.0], [0.0, 510.0, 250.0], [0.0, 0.0, 1.0]])
    s = 7.0 / 15.0
    expected = np.array([[500.0 * s, 0.0, (330.0 + 0.5) * s - 0.5 - 37.0 - 1.0 / 3.0],
                         [0.0, 510.0 * s, (250.0 + 0.5) * s - 0.5],
                         [0.0, 0.0, 1.0]])
    np.testing.assert_allclose(expected[:2, 2], [116.4, 116.4], atol=1e-9)
    np.testing.assert_allclose(crop.input_to_model_intrinsics(K), expected, atol=1e-5)


def test_jpeg_decodes_like_the_official_run() -> None:
    expected = json.loads((DATA / 'expected' / 'decoded.json').read_text())['img01.decoded_u8']
    rgb = _load(IMAGES[1])
    assert list(rgb.shape) == expected['shape']
    assert hashlib.sha256(np.ascontiguousarray(rgb).tobytes()).hexdigest() == expected['sha256']


def test_bad_images_are_refused() -> None:
    with pytest.raises(ValueError, match='uint8'):
        preprocess(np.zeros((10, 10, 3), np.float32))
    with pytest.raises(ValueError, match=r'\[H, W, 3\]'):
        preprocess(np.zeros((10, 10), np.uint8))
    with pytest.raises(ValueError, match='too small'):
        preprocess(np.zeros((1, 1, 3), np.uint8))
    with pytest.raises(ValueError, match='cannot be cropped|positive'):
        compute_crop(0, 10)
