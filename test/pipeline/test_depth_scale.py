"""Metric scale from a depth camera: sampling through the model crop, robust ratios, buffers.

The depth images are known functions of their pixel coordinates, so the value each model pixel
must sample follows from where that pixel lies in the input image: the official crop of a
640x480 image to 224 keeps its full height and the central 4:3 -> 1:1 part of its width, so
model pixel ``u`` sits at input ``x = 319.5 + (u - 111.5) * 480 / 224`` (likewise ``y``).
"""

import numpy as np
import pytest

from spann3r_model.data.crop import compute_crop
from spann3r_ros.pipeline.depth_scale import (
    DepthBuffer,
    DepthScaleEstimator,
    frame_scale,
    sample_depth,
)

SIZE = 224
K_SCALE = 1.7


def model_in_input(width, height):
    """Input-image ``(x, y)`` ``[S, S]`` of the model pixel centres for a centred crop."""
    step = min(width, height) / SIZE
    u = np.arange(SIZE, dtype=np.float64)
    x = (width - 1) / 2 + (u - (SIZE - 1) / 2) * step
    y = (height - 1) / 2 + (u - (SIZE - 1) / 2) * step
    return np.meshgrid(x, y)


def ramp(width, height, along, every=1.0):
    """``1 + coordinate / 1000`` of the full-resolution pixel at each pixel centre."""
    # A pixel of an image ``every`` times coarser covers ``every`` full-resolution pixels.
    i = np.arange(width if along == 'x' else height, dtype=np.float64)
    coord = (i + 0.5) * every - 0.5
    values = 1.0 + coord / 1000.0
    out = np.broadcast_to(values[None, :] if along == 'x' else values[:, None], (height, width))
    return np.ascontiguousarray(out, dtype=np.float32)


def test_an_identity_crop_returns_the_image():
    crop = compute_crop(SIZE, SIZE, SIZE)
    depth = np.random.default_rng(0).uniform(0.2, 5.0, (SIZE, SIZE)).astype(np.float32)
    sampled = sample_depth(depth, crop, (SIZE, SIZE))
    assert sampled.shape == (SIZE, SIZE) and sampled.dtype == np.float32
    np.testing.assert_array_equal(sampled, depth)


@pytest.mark.parametrize('along', ['x', 'y'])
def test_the_official_crop_samples_where_the_model_pixels_are(along):
    crop = compute_crop(640, 480, SIZE)
    sampled = sample_depth(ramp(640, 480, along), crop, (640, 480))
    x, y = model_in_input(640, 480)
    expected = 1.0 + (x if along == 'x' else y) / 1000.0
    # Nearest neighbour: within half an input pixel of the exact position.
    np.testing.assert_allclose(sampled, expected, rtol=0, atol=0.5 / 1000 + 1e-6)
    # The crop's own mapping agrees.
    uv = crop.model_to_input(np.stack(np.meshgrid(np.arange(SIZE), np.arange(SIZE)), axis=-1))
    np.testing.assert_allclose(uv[..., 0], x, atol=1e-5)
    np.testing.assert_allclose(uv[..., 1], y, atol=1e-5)
    # The model centre is the input centre: (319.5, 239.5).
    centre = sampled[SIZE // 2 - 1:SIZE // 2 + 1, SIZE // 2 - 1:SIZE // 2 + 1].mean()
    assert centre == pytest.approx(1.0 + (319.5 if along == 'x' else 239.5) / 1000.0,
                                   abs=1.5 / 1000)


@pytest.mark.parametrize('along', ['x', 'y'])
def test_a_half_resolution_depth_image_samples_the_same_values(along):
    crop = compute_crop(640, 480, SIZE)
    full = sample_depth(ramp(640, 480, along), crop, (640, 480))
    half = sample_depth(ramp(320, 240, along, every=2.0), crop, (640, 480))
    x, y = model_in_input(640, 480)
    expected = 1.0 + (x if along == 'x' else y) / 1000.0
    # Half a half-resolution pixel is one input pixel.
    np.testing.assert_allclose(half, expected, rtol=0, atol=1.0 / 1000 + 1e-6)
    np.testing.assert_allclose(half, full, rtol=0, atol=1.5 / 1000 + 1e-6)
    assert (half > 0).all()


@pytest.mark.parametrize('depth_hw, colour_wh', [((360, 640), (640, 480)),
                                                 ((480, 640), (640, 360)),
                                                 ((240, 240), (640, 480))])
def test_an_aspect_mismatch_raises(depth_hw, colour_wh):
    crop = compute_crop(colour_wh[0], colour_wh[1], SIZE)
    with pytest.raises(ValueError, match='aspect'):
        sample_depth(np.ones(depth_hw, np.float32), crop, colour_wh)


def predicted_depth(size=64):
    """A smooth predicted depth between 0.5 and about 3 reconstruction units."""
    u, v = np.meshgrid(np.linspace(0.0, 1.0, size), np.linspace(0.0, 1.0, size))
    return (0.5 + 2.0 * u + 0.5 * v ** 2).astype(np.float32)


def test_frame_scale_recovers_k_through_noise_and_invalid_pixels():
    rng = np.random.default_rng(1)
    predicted = predicted_depth()
    sensor = K_SCALE * predicted * (1.0 + rng.normal(0.0, 0.02, predicted.shape))
    invalid = rng.random(predicted.shape) < 0.1
    sensor[invalid] = 0.0
    result = frame_scale(sensor.astype(np.float32), predicted, np.ones_like(invalid),
                         min_depth=0.1, max_depth=10.0, min_pixels=500)
    assert abs(result.scale / K_SCALE - 1.0) < 0.01
    assert result.pixels == int((~invalid).sum())


def test_too_few_valid_pixels_give_no_scale():
    predicted = predicted_depth()
    sensor = K_SCALE * predicted
    mask = np.zeros(predicted.shape, dtype=bool)
    mask[:5, :20] = True
    result = frame_scale(sensor, predicted, mask, 0.1, 10.0, min_pixels=500)
    assert result.scale is None and result.pixels == 100
    # Out of the sensor's range, or a predicted depth that is not positive and finite.
    far = frame_scale(np.full_like(sensor, 20.0), predicted, ~mask, 0.1, 10.0, 500)
    assert far.scale is None and far.pixels == 0
    bad = predicted.copy()
    bad[10:] = -1.0
    bad[:10] = np.nan
    assert frame_scale(sensor, bad, ~mask, 0.1, 10.0, 1).scale is None


def test_a_region_of_wrong_depth_does_not_move_the_scale():
    rng = np.random.default_rng(2)
    predicted = predicted_depth(50)
    sensor = K_SCALE * predicted * (1.0 + rng.normal(0.0, 0.05, predicted.shape))
    sensor[:10] *= 3.0  # a reflection over a fifth of the image
    mask = np.ones(predicted.shape, dtype=bool)
    result = frame_scale(sensor.astype(np.float32), predicted, mask, 0.1, 20.0, 500)
    assert abs(result.scale / K_SCALE - 1.0) < 0.01
    assert result.pixels == 40 * 50
    # The plain median of every ratio is pulled by more than that.
    assert np.median(sensor / predicted) / K_SCALE - 1.0 > 0.01


def test_the_estimator_takes_the_median_of_its_window():
    estimator = DepthScaleEstimator(window=3)
    assert estimator.scale is None and len(estimator) == 0 and estimator.spread == 0.0
    assert estimator.add(1.0) == 1.0 and estimator.spread == 0.0
    assert estimator.add(3.0) == 2.0
    assert estimator.add(2.5) == 2.5
    # 1.0 leaves the window: median of (3.0, 2.5, 10.0).
    assert estimator.add(10.0) == 3.0 and len(estimator) == 3
    assert estimator.spread == pytest.approx(0.5 / 3.0)
    estimator.clear()
    assert estimator.scale is None and len(estimator) == 0


def test_the_depth_buffer_answers_with_the_nearest_image_within_max_dt():
    buf = DepthBuffer(max_dt=0.02, size=3)
    assert buf.at(1.0) is None
    images = {stamp: np.full((2, 2), stamp, np.float32) for stamp in (1.0, 1.1, 1.2, 1.3)}
    for stamp in (1.0, 1.1, 1.2):
        buf.add(stamp, images[stamp])
    assert buf.at(1.11) is images[1.1]
    assert buf.at(1.185) is images[1.2]
    assert buf.at(0.99) is images[1.0]
    assert buf.at(1.15) is None and buf.at(1.23) is None
    buf.add(1.3, images[1.3])
    assert buf.at(1.0) is None and buf.at(1.3) is images[1.3]
    buf.clear()
    assert buf.at(1.3) is None
