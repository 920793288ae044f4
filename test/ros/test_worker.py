"""The inference worker without ROS: real tiny session and voxel map, work done once."""

import threading
import time

from node_harness import smooth_frame
import numpy as np
import pytest
import torch

from spann3r_model.config import EngineConfig, MemoryConfig, TINY
from spann3r_model.geometry.frames import optical_to_rep103_points
from spann3r_model.mapping.voxel_map import VoxelMap
from spann3r_model.session import StreamingSession
from spann3r_model.spann3r import Spann3R
from spann3r_ros.pipeline import reconstruction_state
from spann3r_ros.pipeline import worker as worker_module
from spann3r_ros.pipeline.config import NodeConfig
from spann3r_ros.pipeline.frame_queue import Frame
from spann3r_ros.pipeline.output import finite_points
from spann3r_ros.pipeline.worker import ReconstructionWorker


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
    finite = finite_points(pts)
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

    def counting(self, result, *args):
        calls.append((result.index, result.provisional))
        return original(self, result, *args)

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

    monkeypatch.setattr(reconstruction_state, 'fit_segment', failing_fit)
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


def test_each_output_carries_the_arrival_time_of_its_own_frame(model):
    outputs = []
    worker = _worker(model, outputs.append)
    start = time.monotonic()
    for i in range(4):
        worker.process(Frame(camera=0, stamp=1.0 + i, rgb=smooth_frame(i),
                             received=start - 1000.0 + 100.0 * i))
    # Refined output k comes out of step k + 1; its latency is measured from frame k.
    assert [o.index for o in outputs] == [0, 1, 2]
    assert [o.received for o in outputs] == [start - 1000.0 + 100.0 * k for k in range(3)]
    assert [o.frame.received for o in outputs] == [o.received for o in outputs]
    for k, latency in enumerate(worker.latencies):
        assert 1000.0 - 100.0 * k < latency < 1000.0 - 100.0 * k + 60.0


class _StandInSession:
    """Returns fixed pointmaps after ``delay`` seconds; records when each step ran."""

    def __init__(self, delay=0.0, started=None):
        rng = np.random.default_rng(0)
        self.pts3d = rng.normal(size=(8, 8, 3)).astype(np.float32) + (0, 0, 3)
        self.conf = np.full((8, 8), 2.0, np.float32)
        self.rgb = np.zeros((8, 8, 3), np.uint8)
        self.delay, self.started, self.steps, self.finished = delay, started, [], []
        self.count = 0

    def reset(self):
        self.count = 0

    def _result(self, index, stamp):
        from spann3r_model.results import FrameResult
        return FrameResult(index=index, stamp=stamp, pts3d=self.pts3d, conf=self.conf,
                           rgb=self.rgb, crop=None)

    def step(self, rgb, stamp, camera=0, K=None):
        from spann3r_model.results import MemoryStats, StepOutput
        self.steps.append(time.monotonic())
        if self.started is not None:
            self.started.set()
        time.sleep(self.delay)
        refined = self._result(self.count - 1, self.prev_stamp) if self.count else None
        self.count, self.prev_stamp = self.count + 1, stamp
        self.finished.append(time.monotonic())
        return StepOutput(refined=refined, provisional=None, memory=MemoryStats())


def _stand_in_worker(session, publish, **kwargs):
    return ReconstructionWorker(session, VoxelMap(0.01, 10**5), NodeConfig(min_confidence=1.0),
                                publish, **kwargs)


def _wait(condition, seconds=10.0):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, 'timed out'
        time.sleep(0.005)


def test_a_slow_output_stage_holds_the_model_back_and_every_step_is_published():
    session = _StandInSession(delay=0.002)
    published, unpublished = [], []

    def slow_publish(out):
        # Steps run with a result (the first has none) but not yet published, this one included.
        unpublished.append(len(session.steps) - 1 - len(published))
        time.sleep(0.05)
        published.append(out.index)

    worker = _stand_in_worker(session, slow_publish)
    worker.start()
    try:
        for i in range(30):
            worker.queue.put(Frame(camera=0, stamp=1.0 + i, rgb=None, received=time.monotonic()))
            time.sleep(0.01)
        _wait(lambda: len(worker.queue) == 0 and worker.processed == len(session.steps))
    finally:
        assert worker.stop()
    # The model ran only when its result had room: the one being published, the queued ones
    # and the one in progress are all that were ever ahead of publishing.
    assert max(unpublished) <= worker_module.RESULT_QUEUE_SIZE + 2
    # Frames the model had no room for were replaced by newer ones at the input, and counted.
    assert 2 < len(session.steps) < 30
    assert worker.queue.dropped == 30 - len(session.steps)
    # Every step's result was published, once and in order; none was computed for nothing.
    assert published == list(range(len(session.steps) - 1))
    assert worker.published == len(published) and len(worker.trajectory) == 0
    assert len(worker.model_waits) == len(session.steps) and max(worker.model_waits) > 0


def test_stop_is_prompt_while_the_model_waits_for_room():
    session = _StandInSession()
    release = threading.Event()
    worker = _stand_in_worker(session, lambda out: release.wait(10))
    worker.start()
    try:
        for i in range(6):
            worker.queue.put(Frame(camera=0, stamp=1.0 + i, rgb=None))
            time.sleep(0.02)
        # One result is being published and the queue is full: the model waits for room.
        _wait(lambda: worker.pending_results == worker_module.RESULT_QUEUE_SIZE)
        steps = len(session.steps)
        assert steps == worker_module.RESULT_QUEUE_SIZE + 2 and len(worker.queue) == 1
        stopped = threading.Thread(target=worker.stop, kwargs={'timeout': 5.0})
        stopped.start()
        _wait(lambda: not worker._threads[0].is_alive())  # the model thread ended at once
        release.set()
        stopped.join(10)
        assert not worker.alive and len(session.steps) == steps
    finally:
        release.set()


def test_stop_waits_for_the_step_in_progress_and_publishing_ends_with_it():
    started = threading.Event()
    session = _StandInSession(delay=0.4, started=started)
    published = []
    worker = _stand_in_worker(session, published.append)
    worker.start()
    for i in range(2):
        worker.queue.put(Frame(camera=0, stamp=1.0 + i, rgb=None))
        _wait(lambda: len(session.steps) == i + 1)
    assert worker.stop(timeout=5.0) is True
    stopped_at = time.monotonic()
    assert worker.stop(timeout=0.5) is True  # again: nothing left to wait for
    assert session.finished and session.finished[-1] <= stopped_at
    assert not worker.alive and not any(t.is_alive() for t in threading.enumerate()
                                        if t.name.startswith('spann3r-'))
    count = len(published)
    time.sleep(0.1)
    assert len(published) == count


def test_stop_reports_a_step_that_outlasts_the_timeout(caplog):
    started = threading.Event()
    session = _StandInSession(delay=1.0, started=started)
    worker = _stand_in_worker(session, lambda out: None)
    worker.start()
    worker.queue.put(Frame(camera=0, stamp=1.0, rgb=None))
    started.wait(5)
    assert worker.stop(timeout=0.1) is False
    assert 'still run' in caplog.text
    _wait(lambda: not worker.alive)


def test_serial_mode_publishes_the_same_outputs_as_the_pipeline(model):
    results = {}
    for pipelined in (False, True):
        outputs = []
        worker = ReconstructionWorker(_session(model, False), VoxelMap(0.001, 10**6),
                                      NodeConfig(min_confidence=1.0), outputs.append,
                                      pipelined=pipelined)
        worker.start()
        try:
            for i in range(4):
                worker.queue.put(_frame(i))
                _wait(lambda: worker.processed == i + 1, 30)
        finally:
            assert worker.stop()
        results[pipelined] = (outputs, worker.map_arrays(), worker.trajectory_copy())
    serial, serial_map, serial_path = results[False]
    piped, piped_map, piped_path = results[True]
    assert [o.index for o in serial] == [o.index for o in piped] == [0, 1, 2]
    for a, b in zip(serial, piped):
        np.testing.assert_array_equal(a.points_map, b.points_map)
        np.testing.assert_array_equal(a.T_map_cam, b.T_map_cam)
    for a, b in zip(serial_map, piped_map):
        np.testing.assert_array_equal(a, b)
    assert len(serial_path) == len(piped_path) == 3
