"""The inference worker without ROS: real tiny session and voxel map, work done once."""

import time

from node_harness import smooth_frame
import numpy as np
import pytest
import torch

from spann3r_model.config import EngineConfig, MemoryConfig, TINY
from spann3r_model.geometry import optical_to_rep103_points
from spann3r_model.mapping import VoxelMap
from spann3r_model.session import StreamingSession
from spann3r_model.spann3r import Spann3R
from spann3r_ros import worker as worker_module
from spann3r_ros.frame_queue import Frame
from spann3r_ros.node_config import NodeConfig
from spann3r_ros.worker import ReconstructionWorker


@pytest.fixture(scope='module')
def model():
    torch.manual_seed(0)
    return Spann3R(TINY).eval()


@pytest.fixture(scope='module')
def reference(model):
    """Refined results of frames 0..2 straight from a session, and a threshold inside them."""
    session = _session(model, provisional=False)
    results = [session.step(smooth_frame(i), 1.0 + i).refined for i in range(4)][1:]
    return results, float(np.median(results[0].conf))


def _session(model, provisional):
    return StreamingSession(model, MemoryConfig(), EngineConfig(device='cpu', num_threads=1),
                            provisional=provisional)


def _run(model, provisional, n=4, min_confidence=1.0):
    outputs = []
    worker = ReconstructionWorker(_session(model, provisional), VoxelMap(0.001, 10**6),
                                  NodeConfig(min_confidence=min_confidence,
                                             provisional=provisional),
                                  outputs.append)
    for i in range(n):
        worker.process(Frame(camera=0, stamp=1.0 + i, rgb=smooth_frame(i),
                             received=time.monotonic()))
    return worker, outputs


def test_finite_points_matches_the_plain_reduction():
    rng = np.random.default_rng(0)
    pts = rng.normal(size=(9, 11, 3)).astype(np.float32)
    for axis, value in enumerate((np.nan, np.inf, -np.inf)):
        pts[axis, axis + 1, axis] = value
        pts[5, axis, axis] = value
    finite = worker_module._finite_points(pts)
    np.testing.assert_array_equal(finite, np.isfinite(pts).all(-1))
    assert finite.sum() == 9 * 11 - 6


def test_outputs_and_map_equal_the_session_results_computed_directly(model, reference):
    results, min_conf = reference
    worker, outputs = _run(model, provisional=False, min_confidence=min_conf)
    assert [o.index for o in outputs] == [r.index for r in results] == [0, 1, 2]
    expected_map = VoxelMap(0.001, 10**6)
    for out, result in zip(outputs, results):
        points_map = optical_to_rep103_points(result.pts3d)
        mask = np.isfinite(points_map).all(-1) & (result.conf >= min_conf)
        assert out.frame.stamp == result.stamp and not out.provisional
        np.testing.assert_array_equal(out.points_map, points_map)
        np.testing.assert_array_equal(out.mask, mask)
        assert 0 < mask.sum() < mask.size  # the threshold really selects
        expected_map.integrate(points_map[mask], result.rgb[mask], result.conf[mask])
    for got, want in zip(worker.voxel_map.arrays(), expected_map.arrays()):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize('provisional, per_step', [(False, 1), (True, 2)])
def test_each_result_is_prepared_once(model, monkeypatch, provisional, per_step):
    calls = []
    original = ReconstructionWorker._geometry

    def counting(self, result):
        calls.append((result.index, result.provisional))
        return original(self, result)

    monkeypatch.setattr(ReconstructionWorker, '_geometry', counting)
    worker, outputs = _run(model, provisional=provisional, n=4)
    # Frame 0 gives nothing; each later step integrates one refined result and, with
    # provisional output, also shows its frame's head-2 estimate.
    assert len(calls) == 3 * per_step and len(outputs) == 3
    assert len(set(calls)) == len(calls)


def _worker(model, publish):
    return ReconstructionWorker(_session(model, False), VoxelMap(0.001, 10**6),
                                NodeConfig(min_confidence=1.0), publish)


def _frame(i):
    return Frame(camera=0, stamp=1.0 + i, rgb=smooth_frame(i), received=time.monotonic())


def test_outputs_are_published_before_the_map_fuses_them(model):
    seen = []
    worker = _worker(model, lambda out: seen.append((out.index, len(worker.voxel_map),
                                                     worker.map_version)))
    for i in range(3):
        worker.process(_frame(i))
        assert worker.processed == i + 1
    # Each output went out before its points reached the map; once process() returned, they
    # had (the map only grows on this static scene).
    assert [s[0] for s in seen] == [0, 1]
    assert seen[0][1:] == (0, 0) and seen[1][2] == 1 and 0 < seen[1][1] < len(worker.voxel_map)
    assert worker.map_version == 2


def test_reading_the_map_while_publishing_includes_the_published_frame(model):
    reads = []
    worker = _worker(model, lambda out: reads.append(worker.map_arrays()[0].shape[0]))
    for i in range(2):
        worker.process(_frame(i))
    assert reads[0] > 0 and reads[0] == len(worker.voxel_map)
    assert worker.map_arrays(flush=False)[0].shape[0] == reads[0]


def test_a_reset_while_publishing_keeps_the_old_frame_out_of_the_new_map(model):
    worker = _worker(model, lambda out: worker.reset())
    for i in range(2):
        worker.process(_frame(i))
    assert len(worker.voxel_map) == 0 and worker.trajectory == []


def _segment_run(model, n, **config):
    outputs = []
    worker = ReconstructionWorker(_session(model, False), VoxelMap(0.001, 10**6),
                                  NodeConfig(min_confidence=1.0, **config), outputs.append)
    for i in range(n):
        worker.process(_frame(i))
    return worker, outputs


def test_a_failed_segment_fit_leaves_the_current_segment_untouched(model, monkeypatch):
    attempts = []

    def failing_fit(src, dst):
        attempts.append(len(src))
        return None

    monkeypatch.setattr(worker_module, 'fit_segment', failing_fit)
    plain, plain_outputs = _segment_run(model, 9)
    worker, outputs = _segment_run(model, 9, segment_max_frames=4, segment_overlap=2)
    # Tried at the 4th published frame, then every segment_overlap frames (6th, 8th).
    assert len(attempts) == 3
    assert worker.segment == 0 and worker.segment_to_world.is_identity()
    assert worker.session.frame_count == plain.session.frame_count == 9
    assert [o.index for o in outputs] == [o.index for o in plain_outputs] == list(range(8))
    for got, want in zip(outputs, plain_outputs):
        assert got.segment == 0
        np.testing.assert_array_equal(got.points_map, want.points_map)
    for got, want in zip(worker.voxel_map.arrays(), plain.voxel_map.arrays()):
        np.testing.assert_array_equal(got, want)


def test_a_successful_segment_fit_starts_an_aligned_segment(model):
    worker, outputs = _segment_run(model, 7, segment_max_frames=4, segment_overlap=2)
    assert worker.segment == 1 and not worker.segment_to_world.is_identity()
    assert [o.segment for o in outputs][-1] == 1
    assert [o.frame.stamp for o in outputs] == sorted({o.frame.stamp for o in outputs})
