"""save_session / resume_from and automatic segment restarts, with the real node."""

import json

from node_harness import Harness, smooth_frame
import numpy as np
import pytest
from rclpy.parameter import Parameter
from std_srvs.srv import Trigger

from spann3r_ros.node.node import Spann3rNode


def _node(checkpoint, out_dir, **overrides):
    params = {'checkpoint': str(checkpoint), 'device': 'cpu', 'min_confidence': 1.0,
              'output_dir': str(out_dir), 'map_voxel_size': 0.001, 'num_threads': 1}
    params.update(overrides)
    return Spann3rNode(parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])


def test_save_session_and_resume_continue_the_same_reconstruction(ros, checkpoint, tmp_path):
    harness = Harness(_node(checkpoint, tmp_path))
    try:
        harness.feed([smooth_frame(i) for i in range(4)])
        response = harness.call(Trigger, '/spann3r_node/save_session', Trigger.Request())
        assert response.success, response.message
        saved = response.message
        worker = harness.node.worker
        map_before = worker.map_arrays()
        trajectory_before = worker.trajectory_copy()
        frames_before = worker.session.frame_count
    finally:
        harness.close()
    meta = json.loads((tmp_path / saved.split('/')[-1] / 'session.json').read_text())
    assert meta['identity']['checkpoint_sha256'] and meta['extra']['segment'] == 0
    assert not [p for p in tmp_path.iterdir() if p.name.startswith('.')]  # no temp leftovers

    resumed = _node(checkpoint, tmp_path, resume_from=saved)
    try:
        worker = resumed.worker
        assert worker.session.frame_count == frames_before
        for a, b in zip(worker.map_arrays(), map_before):
            np.testing.assert_array_equal(a, b)
        assert [s for s, _ in worker.trajectory] == [s for s, _ in trajectory_before]
        # The next frame continues the trajectory instead of starting a new one.
        harness = Harness(resumed)
        harness.feed([smooth_frame(4)], start_stamp=200.0)
        harness.wait_for(lambda: len(worker.trajectory) == len(trajectory_before) + 1, 10,
                         'continued trajectory')
    finally:
        harness.close()

    with pytest.raises(ValueError, match='different model or configuration.*sim_thresh'):
        _node(checkpoint, tmp_path, resume_from=saved, sim_thresh=0.9)
    with pytest.raises(ValueError, match='not a saved session'):
        _node(checkpoint, tmp_path, resume_from=str(tmp_path))


def test_segment_restart_aligns_the_new_segment_through_shared_frames(ros, checkpoint,
                                                                        tmp_path):
    harness = Harness(_node(checkpoint, tmp_path, segment_max_frames=4, segment_overlap=2))
    try:
        worker = harness.node.worker
        harness.feed([smooth_frame(i) for i in range(7)])
        harness.wait_for(lambda: worker.segment >= 1, 10, 'segment restart')
        sim3 = worker.segment_to_world
        assert np.isfinite(sim3.scale) and sim3.scale > 0
        np.testing.assert_allclose(sim3.R @ sim3.R.T, np.eye(3), atol=1e-9)
        map_size = len(worker.voxel_map)
        published = worker.published
        harness.feed([smooth_frame(i) for i in range(7, 9)], start_stamp=200.0)
        assert worker.published == published + 2  # the shared frames are not published again
        assert len(worker.voxel_map) >= map_size
        stamps = [s for s, _ in worker.trajectory]
        assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    finally:
        harness.close()


def test_segment_fit_recovers_a_known_similarity():
    from spann3r_model.geometry.align import Sim3
    from spann3r_model.mapping.segments import correspondences, fit_segment
    rng = np.random.default_rng(1)
    truth = Sim3(scale=1.7, R=np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]),
                 t=np.array([0.3, -0.2, 1.0]))
    new = [rng.normal(size=(16, 16, 3)) for _ in range(2)]
    old = [truth.apply_points(p) for p in new]
    conf = [np.full((16, 16), 3.0)] * 2
    low = [c.copy() for c in conf]
    low[0][:8] = 1.0  # low-confidence pixels are left out
    src, dst = correspondences(old, low, new, conf, min_confidence=2.0)
    assert len(src) == 256 + 128
    fit = fit_segment(src, dst)
    assert fit.scale == pytest.approx(1.7, rel=1e-5)
    np.testing.assert_allclose(fit.R, truth.R, atol=1e-5)
    np.testing.assert_allclose(fit.t, truth.t, atol=1e-5)
    assert fit_segment(src[:10], dst[:10]) is None
    T = np.eye(4)
    T[:3, 3] = [1.0, 0.0, 0.0]
    moved = fit.apply_pose(T)
    np.testing.assert_allclose(moved[:3, 3], truth.apply_points(np.array([1.0, 0.0, 0.0])),
                               atol=1e-5)
    assert Sim3.from_list(fit.to_list()).scale == fit.scale
