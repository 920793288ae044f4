"""The official crop and the ground-truth pointmap of a cropped depth map.

Expectations are independent of the code: boxes and intrinsics worked out by hand for a few
sizes, and the official run's crop geometry and float32 intrinsics (``test/data/preprocess``).
"""

import json
from pathlib import Path

import numpy as np
import pytest

from spann3r_model.data.crop import (
    compute_crop,
    crop_depth,
    crop_image,
    crop_rgbd,
    principal_centre,
)
from spann3r_model.geometry.camera import backproject

DATA = Path(__file__).parent.parent / 'data' / 'preprocess'
IMAGES = json.loads((DATA / 'preprocess_summary.json').read_text())['images']
IDS = [entry['file'] for entry in IMAGES]


# -- the official run ---------------------------------------------------------------------

@pytest.mark.parametrize('entry', IMAGES, ids=IDS)
def test_crop_geometry_is_the_official_one(entry: dict) -> None:
    width, height = entry['orig_WH']
    crop = compute_crop(width, height, 224)
    assert list(crop.crop1) == entry['crop1_box_ltrb']
    assert list(crop.resized_wh) == entry['size_after_resize_WH']
    left, top, right, bottom = entry['crop2_box_ltrb']
    assert crop.offset == (left, top) and (right - left, bottom - top) == (224, 224)
    assert crop.scale == pytest.approx(entry['scale_final'], rel=1e-15)
    # The official demo centres on (W // 2, H // 2), the same box as that principal point.
    assert compute_crop(width, height, 224, tuple(entry['principal_point_cx_cy'])) == crop


@pytest.mark.parametrize('entry', IMAGES, ids=IDS)
def test_float32_intrinsics_are_the_official_values_bit_for_bit(entry: dict) -> None:
    width, height = entry['orig_WH']
    K = np.array([[1.0, 0, width // 2], [0, 1.0, height // 2], [0, 0, 1]], np.float32)
    out = compute_crop(width, height).input_to_model_intrinsics(K, np.float32)
    assert out.dtype == np.float32
    assert np.array_equal(out.astype(np.float64), np.array(entry['K_final']))
    # In float64 the same update differs only by the float32 rounding of the official run.
    out64 = compute_crop(width, height).input_to_model_intrinsics(K)
    np.testing.assert_allclose(out64, np.array(entry['K_final']), rtol=1e-6, atol=2e-5)


def test_half_margins_round_to_even() -> None:
    # 300x500: margin 149 -> 74.5 -> 74; 223x167: margin 75 -> 37.5 -> 38. Only half-to-even
    # rounding gets both (half-up gives 75 for the first, floor gives 37 for the second).
    portrait, tiny = IMAGES[3], IMAGES[6]
    assert portrait['half_margins'] == [0.0, 74.5] and tiny['half_margins'] == [37.5, 0.0]
    assert compute_crop(300, 500).offset == (0, 74)
    assert compute_crop(223, 167).offset == (38, 0)
    # 223x167 also needs the official +1e-8 in the scale: 166 * 224 / 166 floors to 223.
    assert compute_crop(223, 167).resized_wh == (299, 224)


# -- by hand ------------------------------------------------------------------------------

def test_image_centre_crop_of_640x480_by_hand() -> None:
    # The first crop keeps the whole image, the scale is 224 / 480 = 7 / 15, the resize is
    # 298x224 (640 * 7 / 15 = 298.67 floored) and the final crop starts at x = 37. The flooring
    # residual shifts the pixel centres by (298.67 - 298) / 2 = 1 / 3.
    crop = compute_crop(640, 480)
    assert (crop.crop1, crop.resized_wh, crop.offset) == ((0, 0, 640, 480), (298, 224), (37, 0))
    K = np.array([[500.0, 0.0, 330.0], [0.0, 510.0, 250.0], [0.0, 0.0, 1.0]])
    s = 7.0 / 15.0
    expected = np.array([[500.0 * s, 0.0, (330.0 + 0.5) * s - 0.5 - 37.0 - 1.0 / 3.0],
                         [0.0, 510.0 * s, (250.0 + 0.5) * s - 0.5],
                         [0.0, 0.0, 1.0]])
    np.testing.assert_allclose(expected[:2, 2], [116.4, 116.4], atol=1e-9)
    np.testing.assert_allclose(crop.input_to_model_intrinsics(K), expected, atol=1e-5)


def test_principal_point_crop_of_640x480_by_hand() -> None:
    # cx = 319.5, cy = 239.5 round half to even to (320, 240): the box of the image centre.
    # Exactly, cx' = (319.5 + 0.5) * 7 / 15 - 1 / 3 - 0.5 - 37 = 111.5; the official float32
    # arithmetic gives 111.499985.
    K = np.array([[525.0, 0, 319.5], [0, 525.0, 239.5], [0, 0, 1]])
    assert principal_centre(K) == (320, 240)
    depth = np.ones((480, 640), np.float32)
    depth[:, 300:] = 2.0
    out = crop_rgbd(np.zeros((480, 640, 3), np.uint8), depth, K, 224)
    assert out.crop == compute_crop(640, 480)
    assert out.K.dtype == np.float32
    np.testing.assert_allclose(out.K[[0, 1, 0, 1], [0, 1, 2, 2]],
                               [245.0, 245.0, 111.499985, 111.5], atol=2e-5)
    # Nearest-neighbour depth: no blended values at the step.
    assert set(np.unique(out.depth)) == {1.0, 2.0}


def test_off_centre_principal_point_by_hand() -> None:
    # (300.4, 250.6) rounds to (300, 251): margins min(300, 340) = 300 and min(251, 229) = 229,
    # so the first crop is (0, 22, 600, 480), 600x458. The scale is 224 / 458, the resize
    # floor(600 * 224 / 458) = floor(293.45) = 293 by 224, and the offset round(69 / 2) = 34
    # (half to even).
    K = np.array([[400.0, 0, 300.4], [0, 410.0, 250.6], [0, 0, 1]])
    crop = compute_crop(640, 480, 224, principal_centre(K))
    assert crop.crop1 == (0, 22, 600, 480)
    assert crop.resized_wh == (293, 224) and crop.offset == (34, 0)
    s = 224.0 / 458.0
    rx, ry = (600 * s - 293) / 2, (458 * s - 224) / 2
    expected = [400.0 * s, 410.0 * s, (300.4 + 0.5) * s - 0.5 - rx - 34,
                (250.6 - 22 + 0.5) * s - 0.5 - ry]
    out = crop.input_to_model_intrinsics(K)
    np.testing.assert_allclose(out[[0, 1, 0, 1], [0, 1, 2, 2]], expected, atol=1e-5)
    rgbd = crop_rgbd(np.zeros((480, 640, 3), np.uint8), np.ones((480, 640)), K, 224)
    assert rgbd.crop == crop
    np.testing.assert_allclose(rgbd.K, out, atol=1e-4)
    # The image centre gives another box for the same frame.
    image = crop_rgbd(np.zeros((480, 640, 3), np.uint8), np.ones((480, 640)), K, 224, 'image')
    assert image.crop == compute_crop(640, 480) != crop


def test_principal_point_rounds_half_to_even() -> None:
    K = np.eye(3)
    K[:2, 2] = (320.5, 321.5)
    assert principal_centre(K) == (320, 322)


def test_model_pixels_map_back_to_input_pixels() -> None:
    for width, height, centre in ((640, 480, None), (223, 167, None), (640, 480, (300, 251))):
        crop = compute_crop(width, height, 224, centre)
        K = np.array([[300.0, 0, width / 2 - 3.0], [0, 310.0, height / 2 + 2.0], [0, 0, 1]])
        K_model = crop.input_to_model_intrinsics(K)
        # A 3D point projects to pixels that model_to_input maps onto each other.
        point = np.array([0.3, -0.2, 2.0])
        uv_in = (K @ point)[:2] / point[2]
        uv_model = (K_model @ point)[:2] / point[2]
        np.testing.assert_allclose(crop.model_to_input(uv_model), uv_in, atol=1e-9)


def test_colour_is_resized_to_the_depth_resolution_first() -> None:
    # Colour at twice the depth resolution, constant over 2x2 blocks: the bilinear halving
    # gives back the blocks exactly, so the crop is that of the block image.
    rng = np.random.default_rng(0)
    K = np.array([[100.0, 0, 80.0], [0, 100.0, 60.0], [0, 0, 1]])
    small = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
    rgb = np.repeat(np.repeat(small, 2, axis=0), 2, axis=1)
    depth = rng.uniform(1, 3, (120, 160)).astype(np.float32)
    out = crop_rgbd(rgb, depth, K, 64)
    assert out.crop == compute_crop(160, 120, 64, (80, 60))
    assert out.rgb.shape == (64, 64, 3) and out.rgb.dtype == np.uint8
    assert np.array_equal(out.rgb, crop_image(small, out.crop))
    assert np.array_equal(out.depth, crop_depth(depth, out.crop))
    assert set(np.unique(out.depth)) <= set(np.unique(depth))


def test_bad_frames_are_refused() -> None:
    with pytest.raises(ValueError, match='positive'):
        compute_crop(0, 10)
    with pytest.raises(ValueError, match='too small'):
        compute_crop(1, 1)
    with pytest.raises(ValueError, match=r'\(640, 100\).*border'):
        compute_crop(640, 480, 224, (640, 100))
    K = np.array([[100.0, 0, 80.0], [0, 100.0, 60.0], [0, 0, 1]])
    with pytest.raises(ValueError, match='centre must be one of'):
        crop_rgbd(np.zeros((120, 160, 3), np.uint8), np.ones((120, 160)), K, 64, 'middle')
    with pytest.raises(ValueError, match='uint8'):
        crop_rgbd(np.zeros((120, 160, 3), np.float32), np.ones((120, 160)), K, 64)
    with pytest.raises(ValueError, match='depth map'):
        crop_rgbd(np.zeros((120, 160, 3), np.uint8), np.ones((120, 160, 1)), K, 64)
    with pytest.raises(ValueError, match=r'\[3, 3\]'):
        compute_crop(160, 120).input_to_model_intrinsics(np.eye(4))


# -- back-projection ----------------------------------------------------------------------

def _rotated_pose() -> np.ndarray:
    # 90 degrees about z: (x, y, z) -> (-y, x, z), then a shift of (1, 2, 3).
    T = np.eye(4)
    T[:3, :3] = [[0, -1, 0], [1, 0, 0], [0, 0, 1]]
    T[:3, 3] = (1.0, 2.0, 3.0)
    return T


def test_backprojection_of_valid_depth_by_hand() -> None:
    K = np.array([[2.0, 0, 1.0], [0, 4.0, 0.5], [0, 0, 1]])
    depth = np.array([[2.0, 4.0]], np.float32)
    pts, valid = backproject(depth, K, _rotated_pose())
    # Pixel (0, 0): camera (-1 * 2 / 2, -0.5 * 2 / 4, 2) = (-1, -0.25, 2) -> (0.25, -1, 2) + t.
    # Pixel (1, 0): camera (0, -0.5 * 4 / 4, 4) = (0, -0.5, 4) -> (0.5, 0, 4) + t.
    assert pts.dtype == np.float32 and pts.shape == (1, 2, 3)
    np.testing.assert_allclose(pts[0], [[1.25, 1.0, 5.0], [1.5, 2.0, 7.0]], atol=1e-6)
    assert valid.tolist() == [[True, True]]


def test_every_invalid_depth_lands_on_the_camera_centre() -> None:
    K = np.array([[2.0, 0, 1.0], [0, 4.0, 0.5], [0, 0, 1]])
    depth = np.array([[2.0, 0.0, -1.0, 1e-6], [np.nan, np.inf, -np.inf, -0.0]], np.float32)
    with np.errstate(all='raise'):
        pts, valid = backproject(depth, K, _rotated_pose())
    assert valid.tolist() == [[True, False, False, True], [False, False, False, False]]
    assert np.isfinite(pts).all()
    # 0, negative, NaN and +/-inf are all invalid: their points are the camera centre, none
    # behind the camera (a negative depth is not back-projected as one).
    assert np.array_equal(pts[~valid], np.tile(np.float32([1.0, 2.0, 3.0]), (6, 1)))
    np.testing.assert_allclose(pts[0, 0], [1.25, 1.0, 5.0], atol=1e-6)
    with pytest.raises(ValueError, match=r'\[H, W\]'):
        backproject(np.ones((2, 2, 1)), K, np.eye(4))
