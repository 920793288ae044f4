"""Latest-frame queue and input gate: drops, interleaving, keyframing, stamp order."""

import threading
import time

from spann3r_ros.pipeline.frame_queue import Frame, LatestFrameQueue
from spann3r_ros.pipeline.input_gate import (
    InputGate,
    KEYFRAME_SKIP,
    STAMP_BACKWARDS,
    STAMP_INVALID,
)


def test_newest_frame_wins_and_drops_are_counted():
    q = LatestFrameQueue()
    for i in range(5):
        q.put(Frame(camera=0, stamp=float(i), rgb=i))
    assert len(q) == 1 and q.dropped == 4 and q.enqueued == 5
    assert q.get(timeout=0.1).rgb == 4
    assert q.get(timeout=0.05) is None


def test_cameras_are_interleaved_by_stamp():
    q = LatestFrameQueue()
    q.put(Frame(camera=1, stamp=2.0, rgb='b'))
    q.put(Frame(camera=0, stamp=3.0, rgb='a'))
    q.put(Frame(camera=2, stamp=1.0, rgb='c'))
    assert [q.get(0.1).rgb for _ in range(3)] == ['c', 'b', 'a']
    assert q.dropped == 0


def test_close_wakes_a_blocked_consumer():
    q = LatestFrameQueue()
    got = []
    t = threading.Thread(target=lambda: got.append(q.get(timeout=10)))
    t.start()
    time.sleep(0.05)
    q.close()
    t.join(2)
    assert not t.is_alive() and got == [None]


def test_clear_discards_without_counting_drops():
    q = LatestFrameQueue()
    q.put(Frame(camera=0, stamp=0.0, rgb=None))
    assert q.clear() == 1 and len(q) == 0 and q.dropped == 0


def test_gate_rejects_backwards_and_invalid_stamps_per_camera():
    gate = InputGate()
    assert gate.check(0, 10.0) is None
    assert gate.check(0, 9.0) == STAMP_BACKWARDS
    assert gate.check(1, 5.0) is None  # other camera, own clock
    assert gate.check(0, float('nan')) == STAMP_INVALID
    assert gate.check(0, 10.0) is None  # equal stamps are not backwards
    gate.reset()
    assert gate.check(0, 1.0) is None


def test_gate_keyframing_every_n_and_min_interval():
    gate = InputGate(keyframe_every=3)
    kept = [i for i in range(9) if gate.check(0, float(i)) is None]
    assert kept == [0, 3, 6]
    gate = InputGate(keyframe_min_interval=0.25)
    kept = [i for i in range(10) if gate.check(0, i * 0.1) is None]
    assert kept == [0, 3, 6, 9]
    gate.configure(1, 0.0)
    assert gate.check(0, 1.0) is None and gate.check(0, 1.05) is None
    assert InputGate(2).check(0, 0.0) is None and KEYFRAME_SKIP == 'keyframe_skip'
