"""Synthetic bags of a robot with odometry, read back with rosbags; spann3r-synth's noise flags."""

import numpy as np
import pytest
from rosbags.highlevel import AnyReader
from scipy.spatial.transform import Rotation

from spann3r_model.data.scannet import find_scenes, ScanNetScene
from spann3r_ros.bags.export import export_bag
from spann3r_ros.bags.export_options import ExportOptions
from spann3r_ros.bags.writer import BagOptions, OPTICAL_FRAME, TOPIC_DEPTH, write_synthetic_bag
from spann3r_ros.cli.synth import main as synth_main
from spann3r_ros.synthetic.odometry import (
    base_poses,
    odometry_poses,
    OdometryNoise,
    optical_poses,
    T_BASE_CAMERA_LINK,
)

NOISE = OdometryNoise(noise_m=0.01, noise_rad=0.005, drift=0.02, seed=5)


def _matrix(translation, rotation):
    T = np.eye(4)
    T[:3, :3] = Rotation.from_quat([rotation.x, rotation.y, rotation.z, rotation.w]).as_matrix()
    T[:3, 3] = [translation.x, translation.y, translation.z]
    return T


def _stamp(header):
    return header.stamp.sec * 1_000_000_000 + header.stamp.nanosec


def _read(bag):
    """``{topic: [(receive ns, message)]}`` and ``{topic: msgtype}`` of a bag."""
    out, types = {}, {}
    with AnyReader([bag]) as reader:
        for conn, ns, raw in reader.messages():
            out.setdefault(conn.topic, []).append((ns, reader.deserialize(raw, conn.msgtype)))
            types[conn.topic] = conn.msgtype
    return out, types


def _tf_edges(messages):
    """``{(parent, child): {stamp ns: [4, 4]}}`` of TF messages."""
    edges = {}
    for _, msg in messages:
        for tf in msg.transforms:
            edge = edges.setdefault((tf.header.frame_id, tf.child_frame_id), {})
            edge[_stamp(tf.header)] = _matrix(tf.transform.translation, tf.transform.rotation)
    return edges


def _expected_odometry_cameras(scene, noise):
    truth = np.stack([f.T_world_cam for f in scene.frames()])
    return optical_poses(odometry_poses(base_poses(truth), noise))


@pytest.mark.parametrize('storage', ['sqlite3', 'mcap', 'ros1'])
def test_the_tf_tree_and_odom_topic_are_the_noisy_odometry(tmp_path, tiny_scene, tiny_frames,
                                                             storage):
    name = 'b.bag' if storage == 'ros1' else 'b'
    bag = write_synthetic_bag(tiny_scene, tmp_path / name, storage,
                              BagOptions(odometry=True, odometry_noise=NOISE))
    topics, types = _read(bag)
    assert types['/odom'] == 'nav_msgs/msg/Odometry'
    assert types['/tf'] == types['/tf_static'] == 'tf2_msgs/msg/TFMessage'
    static, moving = _tf_edges(topics['/tf_static']), _tf_edges(topics['/tf'])
    assert set(static) == {('base_link', 'camera_link'), ('camera_link', OPTICAL_FRAME)}
    assert set(moving) == {('odom', 'base_link')}
    (T_base_link,), (T_link_optical,) = (list(static[e].values()) for e in sorted(static))
    assert np.allclose(T_base_link, T_BASE_CAMERA_LINK, atol=1e-12)
    # Composing TF at each image stamp gives the odometry's camera pose.
    expected = _expected_odometry_cameras(tiny_scene, NOISE)
    images = topics['/camera/color/image_raw']
    assert len(images) == len(tiny_frames) == len(moving[('odom', 'base_link')])
    for (ns, image), T_expected in zip(images, expected):
        assert image.header.frame_id == OPTICAL_FRAME
        T = moving[('odom', 'base_link')][_stamp(image.header)] @ T_base_link @ T_link_optical
        assert np.abs(T - T_expected).max() < 1e-6
    # /odom: the same poses at the same stamps, a covariance from the noise; truth unchanged.
    tf_poses = moving[('odom', 'base_link')]
    for ns, odom in topics['/odom']:
        assert (odom.header.frame_id, odom.child_frame_id) == ('odom', 'base_link')
        pose = _matrix(odom.pose.pose.position, odom.pose.pose.orientation)
        assert np.abs(pose - tf_poses[_stamp(odom.header)]).max() < 1e-9
        cov = np.asarray(odom.pose.covariance).reshape(6, 6)
        assert np.all(np.diag(cov)[:3] >= 1e-4) and np.all(np.diag(cov)[3:] >= 2.5e-5)
        assert np.count_nonzero(cov - np.diag(np.diag(cov))) == 0
        assert np.count_nonzero(odom.twist.covariance) == 0 and odom.twist.twist.linear.x == 0
    assert len(topics['/odom']) == len(tiny_frames)
    for (ns, gt), frame in zip(topics['/ground_truth/pose'], tiny_frames):
        assert gt.header.frame_id == 'map'
        assert np.abs(_matrix(gt.pose.position, gt.pose.orientation)
                      - frame.T_world_cam).max() < 1e-6


def test_without_noise_the_odometry_is_the_ground_truth(tmp_path, tiny_scene):
    bag = write_synthetic_bag(tiny_scene, tmp_path / 'b', 'mcap', BagOptions(odometry=True))
    topics, _ = _read(bag)
    static, moving = _tf_edges(topics['/tf_static']), _tf_edges(topics['/tf'])
    mount, optical = (next(iter(static[e].values()))
                      for e in (('base_link', 'camera_link'), ('camera_link', OPTICAL_FRAME)))
    for ns, gt in topics['/ground_truth/pose']:
        T = moving[('odom', 'base_link')][_stamp(gt.header)] @ mount @ optical
        assert np.abs(T - _matrix(gt.pose.position, gt.pose.orientation)).max() < 1e-6


def test_odometry_at_three_times_the_image_rate(tmp_path, tiny_scene, tiny_frames):
    bag = write_synthetic_bag(tiny_scene, tmp_path / 'b', 'sqlite3',
                              BagOptions(odometry=True, odometry_noise=NOISE, tf_rate=3,
                                         tf_offset=0.5))
    topics, _ = _read(bag)
    tf_stamps = [_stamp(m.transforms[0].header) for _, m in topics['/tf']]
    odom_stamps = [_stamp(m.header) for _, m in topics['/odom']]
    assert tf_stamps == odom_stamps == sorted(tf_stamps)
    assert len(tf_stamps) == 3 * len(tiny_frames)
    image_stamps = {_stamp(m.header) for _, m in topics['/camera/color/image_raw']}
    assert not image_stamps & set(tf_stamps)
    assert [ns for ns, _ in topics['/odom']] == odom_stamps


def test_the_exporter_takes_the_odometry_from_tf_and_the_truth_from_its_topic(tmp_path,
                                                                             tiny_scene,
                                                                             tiny_frames):
    bag = write_synthetic_bag(tiny_scene, tmp_path / 'b', 'sqlite3',
                              BagOptions(odometry=True, odometry_noise=NOISE))
    m = export_bag(bag, tmp_path / 'odo', ExportOptions(color_format='png'), progress=False)
    assert m['pose']['chain'] == ['odom', 'base_link', 'camera_link', OPTICAL_FRAME]
    odo = ScanNetScene(find_scenes(tmp_path / 'odo')[0])
    expected = _expected_odometry_cameras(tiny_scene, NOISE)
    for fid, T in zip(odo.frame_ids, expected):
        assert np.abs(odo.pose(fid) - T).max() < 1e-6
    m = export_bag(bag, tmp_path / 'gt', ExportOptions(color_format='png',
                                                       pose='topic:/ground_truth/pose'),
                   progress=False)
    assert m['pose']['topic'] == '/ground_truth/pose'
    gt = ScanNetScene(find_scenes(tmp_path / 'gt')[0])
    for fid, frame in zip(gt.frame_ids, tiny_frames):
        assert np.abs(gt.pose(fid) - frame.T_world_cam).max() < 1e-6


def test_degraded_depth_in_the_bag(tmp_path, tiny_scene, tiny_frames):
    bag = write_synthetic_bag(tiny_scene, tmp_path / 'b', 'mcap',
                              BagOptions(depth='32FC1', depth_noise=0.02, depth_invalid=0.1))
    topics, _ = _read(bag)
    zeros, rel = [], []
    for (ns, msg), frame in zip(topics[TOPIC_DEPTH], tiny_frames):
        depth = np.frombuffer(bytes(msg.data), '<f4').reshape(msg.height, msg.width)
        zeros.append(np.mean(depth == 0))
        valid = depth > 0
        rel.append(depth[valid] / frame.depth[valid] - 1)
    assert np.mean(zeros) == pytest.approx(0.1, abs=0.01) and len(set(zeros)) > 1
    assert np.concatenate(rel).std() == pytest.approx(0.02, rel=0.05)
    again, _ = _read(write_synthetic_bag(tiny_scene, tmp_path / 'c', 'mcap', BagOptions(
        depth='32FC1', depth_noise=0.02, depth_invalid=0.1)))
    assert all(bytes(a.data) == bytes(b.data) for (_, a), (_, b) in zip(topics[TOPIC_DEPTH],
                                                                       again[TOPIC_DEPTH]))
    with pytest.raises(ValueError, match='depth topic'):
        BagOptions(depth='none', depth_invalid=0.1)
    with pytest.raises(ValueError, match='needs odometry'):
        BagOptions(odometry_noise=NOISE)


def test_synth_writes_odometry_bags(tmp_path):
    out = tmp_path / 'o'
    assert synth_main(['--out', str(out), '--frames', '3', '--width', '32', '--height', '24',
                       '--bag', 'mcap', '--odometry', '--odometry-noise', '0.01',
                       '--odometry-rotation-noise', '0.002', '--odometry-drift', '0.01',
                       '--depth-noise', '0.02', '--depth-invalid', '0.05']) == 0
    topics, _ = _read(out / 'synthetic_mcap')
    assert len(topics['/odom']) == 3 and '/ground_truth/pose' in topics
    cov = np.asarray(topics['/odom'][0][1].pose.covariance).reshape(6, 6)
    assert np.allclose(np.diag(cov), [1e-4] * 3 + [4e-6] * 3)


@pytest.mark.parametrize('argv,message', [
    (['--odometry', '--odometry-drift', '0.7'], 'drift must be below 0.5'),
    (['--odometry', '--odometry-noise', '-1'], 'noise_m must be'),
    (['--odometry-noise', '0.1'], '--odometry-noise needs --odometry'),
    (['--depth-invalid', '1.5'], 'invalid depth fraction'),
    (['--depth-noise', '0.1', '--depth', 'none'], 'depth topic'),
])
def test_synth_refuses_bad_noise(tmp_path, capsys, argv, message):
    out = tmp_path / 'o'
    assert synth_main(['--out', str(out), '--bag', 'mcap', *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('spann3r-synth: error:') and message in err[0]
    assert not out.exists()
    assert synth_main(['--out', str(out), '--scannet', '--odometry']) == 2
    assert 'bags only' in capsys.readouterr().err
