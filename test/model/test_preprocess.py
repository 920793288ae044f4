"""Preprocessing equals the official data path bit for bit.

Fixture (``test/data/preprocess``): the official run's inputs, its final 224x224 uint8 crops
(PNG), its summary (crop boxes, sizes, intrinsics, sha256 of every float32 ``img``) and the
sha256 of the JPEG as the official code decoded it. The crop geometry and intrinsics of the
same fixture are checked in ``test_crop.py``.
"""

import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
import pytest

from spann3r_model.preprocess import preprocess

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
