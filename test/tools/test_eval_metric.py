"""spann3r-eval --metric: a bag through the node's online metric alignment, scored in metres."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation
import test_replay_reconstruct

from spann3r_model.io.ply import read_ply
from spann3r_ros.bags.reader import BagReader
from spann3r_ros.bags.writer import BagOptions, BagWriter, write_synthetic_bag
from spann3r_ros.cli.eval import main as eval_main
from spann3r_ros.cli.metric_options import parse_params
from spann3r_ros.cli.metric_preview import height_band, render_metric_map
from spann3r_ros.cli.metric_truth import TruthCollector
from spann3r_ros.synthetic.odometry import OdometryNoise
from spann3r_ros.synthetic.scene import SyntheticConfig, SyntheticScene

DEMO = Path(__file__).resolve().parents[2] / 'weights' / 'spann3r_tiny_demo.safetensors'
DEMO_ARGS = ['--checkpoint', str(DEMO), '--image-size', '112', '--device', 'cpu']
# The demo weights run at 112 px. 12 frames move the camera 0.04 m (RMS), below the default
# alignment_min_baseline; alignment_min_frames 10 would leave two aligned outputs; and so short
# a drive cannot fix the scale to the default alignment_max_scale_error of 2%.
SHORT_RUN = ['--param', 'alignment_min_baseline=0.02', '--param', 'alignment_min_frames=5',
             '--param', 'alignment_max_scale_error=0.5']
# The randomly initialised tiny model, for runs that end before anything is scored.
tiny_checkpoint = test_replay_reconstruct.tiny_checkpoint


#: A motion-capture world: the room's ground truth moved and turned, so it is not ``odom``.
T_MOCAP_MAP = np.eye(4)
T_MOCAP_MAP[:3, :3] = Rotation.from_euler('xyz', [5.0, -3.0, 70.0], degrees=True).as_matrix()
T_MOCAP_MAP[:3, 3] = [4.0, -2.5, 0.3]


def _as_mocap_tf(source, target):
    """Copy ``source`` with its ground-truth topic replaced by TF ``mocap -> camera_gt``."""
    with BagReader(source) as bag, BagWriter(target) as out:
        types = out.typestore.types
        Tf = types['tf2_msgs/msg/TFMessage']
        Stamped = types['geometry_msgs/msg/TransformStamped']
        Transform = types['geometry_msgs/msg/Transform']
        Vector3 = types['geometry_msgs/msg/Vector3']
        Quaternion, Header = types['geometry_msgs/msg/Quaternion'], types['std_msgs/msg/Header']
        for topic, ns, msg in bag.messages(list(bag.topics)):
            if topic != '/ground_truth/pose':
                out.write(topic, msg, ns)
                continue
            p, q = msg.pose.position, msg.pose.orientation
            T = np.eye(4)
            T[:3, :3] = Rotation.from_quat([q.x, q.y, q.z, q.w]).as_matrix()
            T[:3, 3] = [p.x, p.y, p.z]
            T = T_MOCAP_MAP @ T
            qx, qy, qz, qw = Rotation.from_matrix(T[:3, :3]).as_quat()
            stamped = Stamped(header=Header(stamp=msg.header.stamp, frame_id='mocap'),
                              child_frame_id='camera_gt',
                              transform=Transform(translation=Vector3(x=T[0, 3], y=T[1, 3],
                                                                      z=T[2, 3]),
                                                  rotation=Quaternion(x=qx, y=qy, z=qz, w=qw)))
            out.write('/tf', Tf(transforms=[stamped]), ns)
    return target


@pytest.fixture(scope='module')
def bags(tmp_path_factory):
    """A robot bag (odometry with drift and noise, noisy depth), a plain one, one without GT."""
    root = tmp_path_factory.mktemp('metric_bags')
    scene = SyntheticScene(SyntheticConfig(width=160, height=120, num_frames=12, seed=0))
    robot = BagOptions(odometry=True, odometry_noise=OdometryNoise(noise_m=0.002, drift=0.01),
                       depth_noise=0.02, depth_invalid=0.1)
    robot_bag = write_synthetic_bag(scene, root / 'robot', options=robot)
    return {'robot': robot_bag, 'mocap': _as_mocap_tf(robot_bag, root / 'mocap'),
            'plain': write_synthetic_bag(scene, root / 'plain'),
            'no_gt': write_synthetic_bag(scene, root / 'no_gt',
                                         options=BagOptions(gt_pose=False))}


def _strict(text):
    def refuse(name):
        raise AssertionError(f'report.json holds {name}')
    return json.loads(text, parse_constant=refuse)


def _run(bag, out, *extra):
    assert eval_main([str(bag), *DEMO_ARGS, '--out', str(out), *extra]) == 0
    report = _strict((out / 'report.json').read_text())
    assert (out / 'report.md').read_text().startswith('# Metric evaluation')
    return report


def _figures(report):
    """Every figure the report must have, by name."""
    a, m, s = report['alignment'], report['metric'], report['sim3']
    figures = {f'alignment.{k}': a[k] for k in ('scale', 'oracle_scale', 'scale_error',
                                                'held_fraction', 'frames_until_aligned')}
    figures.update({f'metric.{k}': m[k] for k in ('acc', 'acc_med', 'comp', 'comp_med', 'nc')})
    figures.update({f'metric.ate.{k}': v for k, v in m['ate'].items()})
    figures.update({f'unaligned.{k}': v for k, v in report['unaligned'].items()})
    figures.update({f'sim3.{k}': v for k, v in s['metrics'].items()})
    figures.update({f'sim3.ate.{k}': v for k, v in s['ate'].items()})
    return figures


def test_odometry_run_is_scored_in_the_odom_frame(bags, tmp_path, capsys):
    report = _run(bags['robot'], tmp_path, '--metric', 'odometry', *SHORT_RUN)
    a, m = report['alignment'], report['metric']
    bad = {k: v for k, v in _figures(report).items()
           if not isinstance(v, (int, float)) or not math.isfinite(v)}
    assert bad == {}
    assert a['final_state'] == 'aligned' and a['frame_id'] == 'odom'
    assert a['published_frame_ids'] == ['odom']
    # Outputs before the fit are held back; the rest are scored.
    assert a['frames_until_aligned'] >= 5 and a['frames_held'] == a['frames_until_aligned'] - 1
    assert m['frames'] == a['frames_published'] - a['frames_held'] >= 3
    # Skipping the alignment would leave the points in the reconstruction's own frame, where
    # they are at least twice as far from the ground truth.
    assert m['acc'] < 0.5 * report['unaligned']['acc']
    assert m['ate']['rmse'] < 0.2
    assert 'Sim(3)-aligned' in capsys.readouterr().out
    # The figure of what was published on the ground truth, and the clouds it is drawn from.
    assert (tmp_path / 'metric_map.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    published = read_ply(tmp_path / 'published_path.ply')['xyz']
    truth = read_ply(tmp_path / 'true_path.ply')['xyz']
    assert len(published) == len(truth) == m['ate']['n']
    rmse = np.sqrt(np.mean(np.sum((published - truth) ** 2, axis=1)))
    assert rmse == pytest.approx(m['ate']['rmse'], rel=1e-5)


@pytest.mark.parametrize('metric', ['odometry', 'depth'])
def test_ground_truth_from_a_tf_chain_in_another_world_scores_the_same(bags, tmp_path, metric):
    """A motion-capture world is not odom: it is related to it where the scoring starts."""
    topic = _run(bags['robot'], tmp_path / 'topic', '--metric', metric, *SHORT_RUN)
    tf = _run(bags['mocap'], tmp_path / 'tf', '--metric', metric, *SHORT_RUN,
              '--gt-pose-tf', 'mocap:camera_gt')
    assert tf['topics']['gt_tf'] == ['mocap', 'camera_gt'] and tf['topics']['gt_pose'] is None
    for key in ('acc', 'comp', 'nc'):
        assert tf['metric'][key] == pytest.approx(topic['metric'][key], rel=1e-3, abs=1e-4), key
    assert tf['metric']['ate']['rmse'] == pytest.approx(topic['metric']['ate']['rmse'],
                                                        rel=1e-3, abs=1e-4)
    assert tf['alignment']['scale_error'] == pytest.approx(topic['alignment']['scale_error'],
                                                           rel=1e-3, abs=1e-5)


def test_depth_scale_matches_the_scale_of_the_reconstructed_geometry(bags, tmp_path):
    report = _run(bags['robot'], tmp_path, '--metric', 'depth')
    a = report['alignment']
    assert a['frame_id'] == 'map' and a['frames_until_aligned'] == 1
    assert math.isfinite(a['scale_error']) and math.isfinite(a['oracle_scale'])
    # Against the scale of the reconstructed geometry (true over reconstructed camera-to-point
    # distances, from the ground truth alone) the depth scale agrees to a few per cent; the
    # Sim(3) fit of the model's short, poor path is no reference for it.
    assert abs(a['scale_error_geometry']) < 0.05
    assert a['scale'] / a['geometry_scale'] - 1.0 == pytest.approx(a['scale_error_geometry'])
    # The network's own scale (identity) is far from metric on these weights.
    assert abs(1.0 / a['geometry_scale'] - 1.0) > 0.25


def test_both_takes_the_depth_scale_and_the_odom_frame(bags, tmp_path):
    report = _run(bags['robot'], tmp_path, '--metric', 'both', *SHORT_RUN)
    a = report['alignment']
    assert a['final_state'] == 'aligned' and a['published_frame_ids'] == ['odom']
    assert int(a['status']['depth_scale_frames']) > 0
    # The scale comes from depth: as close to the geometry's scale as depth alone.
    assert abs(a['scale_error_geometry']) < 0.05
    assert report['metric']['acc'] < 0.4 * report['unaligned']['acc']


@pytest.mark.parametrize('bag, extra, message', [
    ('plain', ['--metric', 'odometry'],
     "no odometry: the bag's TF has no chain odom -> camera_color_optical_frame"),
    ('plain', ['--metric', 'odometry', '--odometry-source', 'odometry_topic'],
     'no odometry: the bag has no topic /odom (--odometry-topic)'),
    ('robot', ['--metric', 'both', '--odometry-source', 'pose_topic'],
     'odometry topic /odom has type nav_msgs/msg/Odometry'),
    ('no_gt', ['--metric', 'depth'],
     'no ground truth: the bag has no topic /ground_truth/pose (--gt-pose-topic)'),
    ('robot', ['--metric', 'depth', '--depth-topic', '/nope'], "topic '/nope' (--depth-topic)"),
    ('robot', ['--odom-frame', 'odom'], '--odom-frame needs --metric'),
    ('robot', ['--metric', 'depth', '--pose', 'topic:/ground_truth/pose'],
     '--pose does not apply'),
    ('mocap', ['--metric', 'depth', '--gt-pose-tf', 'mocap'], 'WORLD:CAMERA_FRAME'),
    ('mocap', ['--metric', 'depth', '--gt-pose-tf', 'a:b', '--gt-pose-topic', '/x'],
     'choose one'),
    ('mocap', ['--metric', 'depth'], 'for a TF chain use --gt-pose-tf'),
    ('plain', ['--metric', 'depth', '--gt-pose-tf', 'mocap:camera_gt'],
     "no ground truth: --gt-pose-tf mocap:camera_gt: frame 'mocap' never appears in TF"),
    ('robot', ['--metric', 'depth', '--no-pose'], '--metric needs camera poses'),
    ('robot', ['--metric', 'depth', '--param', 'min_confidence'], 'NAME=VALUE'),
    ('robot', ['--metric', 'depth', '--param', 'metric_source=none'], 'set it with --metric'),
    ('robot', ['--metric', 'depth', '--param', 'depth_min=-1'], 'depth_min=-1.0 is outside'),
])
def test_bad_input_exits_2_with_one_line(bags, tiny_checkpoint, tmp_path, capsys, bag, extra,
                                         message):
    rc = eval_main([str(bags[bag]), '--checkpoint', str(tiny_checkpoint), '--device', 'cpu',
                    '--image-size', '32', '--out', str(tmp_path / 'out'), *extra])
    errors = [line for line in capsys.readouterr().err.splitlines()
              if line.startswith('spann3r-eval: error:')]
    assert rc == 2 and len(errors) == 1 and message in errors[0], errors
    assert not (tmp_path / 'out').exists()


def test_the_metric_map_slices_the_room_between_floor_and_ceiling(tmp_path):
    floor = np.column_stack([np.random.default_rng(0).uniform(0, 4, (500, 2)), np.zeros(500)])
    wall = np.column_stack([np.full(200, 4.0), np.linspace(0, 4, 200), np.linspace(0, 2.5, 200)])
    gt = np.concatenate([floor, floor + [0, 0, 2.5], wall])
    low, high = height_band(gt)
    assert low == pytest.approx(0.5) and high == pytest.approx(2.0)
    out = render_metric_map(tmp_path / 'm.png', gt * 0.9, None, gt, gt[:3], gt[:3], 'odom')
    assert out.read_bytes()[:4] == b'\x89PNG'
    with pytest.raises(ValueError, match='empty'):
        render_metric_map(tmp_path / 'e.png', gt[:0], None, gt, gt[:3], gt[:3], 'odom')
    assert not (tmp_path / 'e.png').exists()


@pytest.mark.parametrize('pose, source, names', [
    (None, 'tf', 'odom'), ('topic:/ground_truth/pose', 'topic', '/ground_truth/pose')])
def test_plain_evaluation_of_a_robot_bag_says_where_its_truth_came_from(
        bags, tiny_checkpoint, tmp_path, pose, source, names):
    extra = [] if pose is None else ['--pose', pose]
    assert eval_main([str(bags['robot']), '--checkpoint', str(tiny_checkpoint), '--device',
                      'cpu', '--image-size', '32', '--out', str(tmp_path), '--every', '4',
                      *extra]) == 0
    truth = _strict((tmp_path / 'report.json').read_text())['ground_truth_pose']
    assert truth['source'] == source and names in truth['description'], truth


def test_pose_is_refused_for_a_dataset_folder(tiny_checkpoint, tmp_path, capsys):
    (tmp_path / 'data' / 'scans').mkdir(parents=True)
    rc = eval_main([str(tmp_path / 'data'), '--checkpoint', str(tiny_checkpoint), '--out',
                    str(tmp_path / 'out'), '--pose', 'topic:/x'])
    assert rc == 2 and '--pose applies to bags' in capsys.readouterr().err


def test_params_are_yaml_and_strings_stay_strings():
    assert parse_params(['alignment_min_baseline=0.05', 'odometry_timeout=1',
                         'base_to_camera=[0, 0, 0.3, 0, 0, 0, 1]', 'map_frame=123']) == {
        'alignment_min_baseline': 0.05, 'odometry_timeout': 1,
        'base_to_camera': [0, 0, 0.3, 0, 0, 0, 1], 'map_frame': '123'}
    with pytest.raises(ValueError, match='no such node parameter'):
        parse_params(['nope=1'])


@pytest.mark.parametrize('depth_first', [False, True])
def test_ground_truth_pairs_colour_and_depth_in_either_order(depth_first):
    truth = TruthCollector(size=32, max_dt=0.02)
    rgb = np.zeros((48, 64, 3), np.uint8)
    depth = np.full((48, 64), 2.0, np.float32)
    K = np.array([[50.0, 0, 32], [0, 50.0, 24], [0, 0, 1]])
    steps = [lambda: truth.add_depth(1.005, depth), lambda: truth.add_colour(1.0, rgb, K)]
    for step in steps if depth_first else steps[::-1]:
        step()
    T = np.eye(4)
    T[:3, 3] = [1.0, 2.0, 3.0]
    truth.add_pose(0.9, T)
    truth.add_pose(1.1, T)
    view = truth.view(1.0)
    assert view is not None and view.valid.all()
    assert np.allclose(view.pts_world[16, 16], [1.0, 2.0, 5.0], atol=0.1)
    assert truth.view(1.005) is None
