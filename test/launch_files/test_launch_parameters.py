"""The launch files, run against a model of launch / launch_ros and checked by the real rclpy.

Each launch runs with the arguments a user types; the node it would start gets its evaluated
parameters in a parameter file and its remappings on the command line, exactly as launch_ros
passes them, and the node's own declaration code (:func:`declare_node_config`) reads them on a
real rclpy node. A value of the wrong type fails there as it fails on a robot.
"""

import importlib.metadata
import importlib.util
import os
from pathlib import Path
import typing

import launch_model as lm
import pytest

ROOT = Path(__file__).resolve().parents[2]
LIVE = ROOT / 'launch' / 'live.launch.py'
REPLAY = ROOT / 'launch' / 'replay.launch.py'
SHARES = {'spann3r_ros': str(ROOT)}
CHECKPOINT = 'weights/spann3r_tiny_demo.safetensors'

if os.environ.get('SPANN3R_REQUIRE_ROS') == '1':
    import rclpy  # fail loudly in CI when rclpy is missing
else:
    rclpy = pytest.importorskip('rclpy')


TRANSPORT_VARIABLES = ('FASTRTPS_DEFAULT_PROFILES_FILE', 'FASTDDS_DEFAULT_PROFILES_FILE',
                       'FASTDDS_BUILTIN_TRANSPORTS', 'RMW_IMPLEMENTATION')
PROFILE = str(ROOT / 'config' / 'fastdds_large_images.xml')


@pytest.fixture(autouse=True)
def plain_transport_env(monkeypatch):
    """A shell that exported no DDS transport settings (the launch reads them)."""
    for name in TRANSPORT_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope='module')
def ros():
    """rclpy initialised for this module (nodes only read parameters; nothing is published)."""
    rclpy.init()
    yield
    rclpy.try_shutdown()


def _declared(run_node: lm.EvaluatedNode, tmp_path: Path):
    """Start a real rclpy node with the launch's arguments and declare the node's parameters."""
    from rclpy.node import Node

    from spann3r_ros.node.params import declare_node_config
    node = Node('launch_check', cli_args=run_node.ros_args(tmp_path / 'launch_params.yaml'))
    try:
        return declare_node_config(node), node.get_fully_qualified_name(), {
            name: node.resolve_topic_name(name) for name in ('image', 'image/compressed')}
    finally:
        node.destroy_node()


USER_ARGUMENTS = [
    {'checkpoint': CHECKPOINT},
    {'image': '/cam/image_raw', 'checkpoint': CHECKPOINT, 'device': 'cpu', 'rviz': 'false'},
    {'image': '/usb_cam/image_raw', 'compressed': 'true', 'checkpoint': '123',
     'device': 'cuda:0', 'namespace': 'robot1/spann3r'},
    {'image': 'camera/image', 'compressed': 'True', 'checkpoint': 'true', 'device': 'cuda',
     'use_sim_time': 'true'},
]


@pytest.mark.parametrize('arguments', USER_ARGUMENTS, ids=lambda a: ' '.join(
    f'{k}:={v}' for k, v in a.items()))
def test_live_launch_gives_the_node_parameters_of_its_declared_types(ros, tmp_path, arguments):
    run = lm.run_launch(LIVE, arguments, SHARES)
    node = run.node('spann3r_node')
    cfg, fqn, resolved = _declared(node, tmp_path)
    namespace = '/' + arguments.get('namespace', 'spann3r')
    assert fqn == f'{namespace}/spann3r_node'
    assert cfg.checkpoint == arguments['checkpoint']
    assert cfg.device == arguments.get('device', 'auto')
    compressed = arguments.get('compressed', 'false').lower() == 'true'
    assert cfg.transport == ('compressed' if compressed else 'raw')
    image = arguments.get('image', '/camera/color/image_raw')
    if not image.startswith('/'):
        image = f'{namespace}/{image}'
    assert resolved == {'image': image, 'image/compressed': image + '/compressed'}
    assert list(cfg.image_topics) == ['image']
    assert node.parameters['use_sim_time'] is (arguments.get('use_sim_time') == 'true')


def test_metric_arguments_reach_the_node_and_remap_its_odometry_and_depth(ros, tmp_path):
    from rclpy.node import Node

    from spann3r_ros.node.params import declare_node_config
    arguments = {'checkpoint': CHECKPOINT, 'metric_source': 'both',
                 'odometry_source': 'odometry_topic', 'odom_frame': 'odom_ekf',
                 'odometry_topic': '/wheel/odometry', 'depth': '/rgbd/depth/image_rect'}
    run_node = lm.run_launch(LIVE, arguments, SHARES).node('spann3r_node')
    node = Node('launch_check', cli_args=run_node.ros_args(tmp_path / 'launch_params.yaml'))
    try:
        cfg = declare_node_config(node)
        resolved = {name: node.resolve_topic_name(name) for name in
                    (cfg.odometry_topic, cfg.depth_topic, cfg.depth_topic + '/compressedDepth')}
    finally:
        node.destroy_node()
    assert (cfg.metric_source, cfg.odometry_source, cfg.odom_frame) == (
        'both', 'odometry_topic', 'odom_ekf')
    assert resolved == {'odom': '/wheel/odometry',
                        'aligned_depth/image_raw': '/rgbd/depth/image_rect',
                        'aligned_depth/image_raw/compressedDepth':
                            '/rgbd/depth/image_rect/compressedDepth'}
    default = lm.run_launch(LIVE, {'checkpoint': CHECKPOINT}, SHARES).node('spann3r_node')
    node = Node('launch_check', cli_args=default.ros_args(tmp_path / 'default_params.yaml'))
    try:
        assert declare_node_config(node).metric_source == 'none'
        assert node.resolve_topic_name('odom') == '/odom'
    finally:
        node.destroy_node()


@pytest.mark.parametrize('arguments, fixed', [
    ({}, None), ({'metric_source': 'odometry'}, 'odom'),
    ({'metric_source': 'both', 'odom_frame': 'odom_ekf'}, 'odom_ekf'),
    ({'metric_source': 'depth'}, None), ({'fixed_frame': 'base_link'}, 'base_link')])
def test_rviz_fixed_frame_follows_the_metric_source(monkeypatch, arguments, fixed):
    shares = dict(SHARES, rviz2='/opt/ros/jazzy/share/rviz2')
    monkeypatch.setenv('DISPLAY', ':0')
    run = lm.run_launch(LIVE, {'checkpoint': CHECKPOINT, **arguments}, shares)
    args = run.node('rviz2').arguments
    assert (args[args.index('-f') + 1] if '-f' in args else None) == fixed


def test_a_list_of_substitutions_reaches_the_node_as_a_string_and_is_refused(ros, tmp_path):
    """The checker sees the mistake the launch file once made (``[LaunchConfiguration]``)."""
    ctx = lm.Context({'image': '/cam/image_raw'})
    value = lm.evaluate_parameter(ctx, 'image_topics', [lm.LaunchConfiguration('image')])
    assert value == '/cam/image_raw'
    node = lm.EvaluatedNode(None, 'spann3r_ros', 'spann3r_node', 'spann3r_node', '/spann3r', [],
                            {'image_topics': value}, [], [])
    with pytest.raises(ValueError, match='image_topics.*STRING_ARRAY'):
        _declared(node, tmp_path)


def test_a_path_that_yaml_reads_as_a_number_stays_a_string_only_when_typed():
    ctx = lm.Context({'checkpoint': '123'})
    assert lm.evaluate_parameter(ctx, 'checkpoint', lm.LaunchConfiguration('checkpoint')) == 123
    typed = lm.ParameterValue(lm.LaunchConfiguration('checkpoint'), value_type=str)
    assert lm.evaluate_parameter(ctx, 'checkpoint', typed) == '123'


def test_the_live_launch_requires_a_checkpoint():
    with pytest.raises(RuntimeError, match='checkpoint'):
        lm.run_launch(LIVE, {}, SHARES)


def test_without_rviz2_the_node_starts_and_the_user_is_told_why_rviz_did_not():
    run = lm.run_launch(LIVE, {'checkpoint': CHECKPOINT}, SHARES)
    assert [n.executable for n in run.nodes] == ['spann3r_node']
    assert len(run.logs) == 1 and 'rviz2 is not installed' in run.logs[0]
    assert 'rviz:=false' in run.logs[0]


def test_rviz_starts_where_it_is_installed_and_a_display_exists(monkeypatch):
    shares = dict(SHARES, rviz2='/opt/ros/jazzy/share/rviz2')
    monkeypatch.setenv('DISPLAY', ':0')
    run = lm.run_launch(LIVE, {'checkpoint': CHECKPOINT}, shares)
    rviz = run.node('rviz2')
    config = Path(rviz.arguments[rviz.arguments.index('-d') + 1])
    assert config.is_file() and config.suffix == '.rviz'
    assert run.logs == []
    monkeypatch.delenv('DISPLAY')
    monkeypatch.delenv('WAYLAND_DISPLAY', raising=False)
    headless = lm.run_launch(LIVE, {'checkpoint': CHECKPOINT}, shares)
    assert [n.executable for n in headless.nodes] == ['spann3r_node']
    assert 'no display' in headless.logs[0]
    off = lm.run_launch(LIVE, {'checkpoint': CHECKPOINT, 'rviz': 'false'}, shares)
    assert [n.executable for n in off.nodes] == ['spann3r_node'] and off.logs == []


def test_a_node_that_cannot_start_fails_the_launch_with_its_message():
    run = lm.run_launch(LIVE, {'checkpoint': '/missing.pth'}, SHARES)
    node = run.node('spann3r_node')
    run.process_output(node, '[INFO] [1.0] [spann3r.spann3r_node]: loading\n')
    run.process_output(node, "[FATAL] [1796179684.7] [spann3r_node]: cannot start: checkpoint "
                             "'/missing.pth' does not exist or is not a file\n")
    with pytest.raises(RuntimeError) as err:
        run.process_exit(node, 1)
    assert str(err.value) == ("spann3r_node exited with code 1: cannot start: checkpoint "
                              "'/missing.pth' does not exist or is not a file")


def test_a_node_that_ends_cleanly_ends_the_launch():
    run = lm.run_launch(LIVE, {'checkpoint': CHECKPOINT}, SHARES)
    actions = run.process_exit(run.node('spann3r_node'), 0)
    assert [type(a.event) for a in actions] == [lm.Shutdown]
    assert run.context.is_shutdown


def test_a_node_stopped_by_the_launch_shutdown_is_not_an_error():
    run = lm.run_launch(LIVE, {'checkpoint': CHECKPOINT}, SHARES)
    run.context.is_shutdown = True
    run.process_exit(run.node('spann3r_node'), -2)


@pytest.mark.parametrize('distro, names', [
    ('humble', ['FASTRTPS_DEFAULT_PROFILES_FILE']),
    ('jazzy', ['FASTRTPS_DEFAULT_PROFILES_FILE']),
    ('kilted', ['FASTDDS_DEFAULT_PROFILES_FILE']),
    ('rolling', ['FASTDDS_DEFAULT_PROFILES_FILE']),
    # No sourced ROS: the installed wheels name the distribution (ros-kilted-* here).
    (None, ['FASTDDS_DEFAULT_PROFILES_FILE']),
    # Neither: both names, whichever Fast DDS it is.
    ('', ['FASTRTPS_DEFAULT_PROFILES_FILE', 'FASTDDS_DEFAULT_PROFILES_FILE']),
])
def test_the_node_and_only_the_node_gets_the_large_image_profile(monkeypatch, distro, names):
    if not distro:
        monkeypatch.delenv('ROS_DISTRO', raising=False)
        if distro == '':
            monkeypatch.setattr(importlib.metadata, 'distributions', lambda: [])
    else:
        monkeypatch.setenv('ROS_DISTRO', distro)
    monkeypatch.setenv('DISPLAY', ':0')
    shares = dict(SHARES, rviz2='/opt/ros/jazzy/share/rviz2')
    run = lm.run_launch(LIVE, {'checkpoint': CHECKPOINT}, shares)
    node = run.node('spann3r_node')
    profile_env = {k: v for k, v in node.env.items() if k in TRANSPORT_VARIABLES}
    assert profile_env == {name: PROFILE for name in names}
    assert Path(PROFILE).is_file() and run.logs == []
    assert node.env['DISPLAY'] == ':0'  # the rest of the environment is inherited
    rviz = run.node('rviz2')
    assert not set(rviz.env) & set(TRANSPORT_VARIABLES), 'the profile leaked out of its scope'
    assert not set(run.context.environment) & set(TRANSPORT_VARIABLES)


def test_large_images_false_leaves_the_node_on_the_defaults():
    run = lm.run_launch(LIVE, {'checkpoint': CHECKPOINT, 'large_images': 'false'}, SHARES)
    assert not set(run.node('spann3r_node').env) & set(TRANSPORT_VARIABLES)
    assert [log for log in run.logs if 'large_images' in log] == []


@pytest.mark.parametrize('name, value', [
    ('FASTDDS_DEFAULT_PROFILES_FILE', '/etc/robot/discovery_server.xml'),
    ('FASTRTPS_DEFAULT_PROFILES_FILE', '/etc/robot/discovery_server.xml'),
    ('FASTDDS_BUILTIN_TRANSPORTS', 'LARGE_DATA'),
])
def test_an_exported_transport_configuration_is_kept_and_the_user_told(monkeypatch, name,
                                                                        value):
    monkeypatch.setenv(name, value)
    monkeypatch.setenv('ROS_DISTRO', 'kilted')
    run = lm.run_launch(LIVE, {'checkpoint': CHECKPOINT}, SHARES)
    env = run.node('spann3r_node').env
    assert {k: v for k, v in env.items() if k in TRANSPORT_VARIABLES} == {name: value}
    assert [log for log in run.logs if 'large_images' in log] == [
        f'large_images: keeping the exported {name}={value} for the node (unset it to use '
        'fastdds_large_images.xml).']


def test_the_profile_exported_for_the_driver_is_not_reported_as_foreign(monkeypatch):
    monkeypatch.setenv('FASTDDS_DEFAULT_PROFILES_FILE', PROFILE)
    monkeypatch.setenv('ROS_DISTRO', 'kilted')
    run = lm.run_launch(LIVE, {'checkpoint': CHECKPOINT}, SHARES)
    assert run.node('spann3r_node').env['FASTDDS_DEFAULT_PROFILES_FILE'] == PROFILE
    assert [log for log in run.logs if 'large_images' in log] == []


def test_another_rmw_gets_no_fast_dds_profile(monkeypatch):
    monkeypatch.setenv('RMW_IMPLEMENTATION', 'rmw_cyclonedds_cpp')
    run = lm.run_launch(LIVE, {'checkpoint': CHECKPOINT}, SHARES)
    env = run.node('spann3r_node').env
    assert not {k for k in env if k.endswith('PROFILES_FILE')}
    assert any('rmw_cyclonedds_cpp is not Fast DDS' in log for log in run.logs)


def test_a_scoped_group_restores_the_environment_and_an_include_does_not():
    ctx = lm.Context({}, environment={'KEEP': '1'})
    run = lm.LaunchRun(ctx)
    run._visit(lm.GroupAction([lm.SetEnvironmentVariable('INNER', 'x'),
                               lm.Node(package='p', executable='inside')]))
    run._visit(lm.Node(package='p', executable='outside'))
    assert run.node('inside').env == {'KEEP': '1', 'INNER': 'x'}
    assert run.node('outside').env == {'KEEP': '1'}
    run._visit(lm.GroupAction([lm.SetEnvironmentVariable('LEAK', 'y')], scoped=False))
    run._visit(lm.Node(package='p', executable='after', additional_env={'OWN': 'z'}))
    assert run.node('after').env == {'KEEP': '1', 'LEAK': 'y', 'OWN': 'z'}


def test_replay_refuses_a_missing_bag_before_the_node_starts(tmp_path):
    with pytest.raises(RuntimeError, match='does not exist'):
        lm.run_launch(REPLAY, {'bag': str(tmp_path / 'nope'), 'checkpoint': CHECKPOINT}, SHARES)


def test_replay_refuses_to_start_without_rosbag2(tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, 'find_spec',
                        lambda name, *a: None if name == 'ros2bag' else real(name, *a))
    with pytest.raises(RuntimeError, match='rosbag2'):
        lm.run_launch(REPLAY, {'bag': str(tmp_path), 'checkpoint': CHECKPOINT}, SHARES)


def test_replay_plays_the_bag_on_sim_time_once_the_node_is_ready(ros, tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, 'find_spec',
                        lambda name, *a: object() if name == 'ros2bag' else real(name, *a))
    run = lm.run_launch(REPLAY, {'bag': str(tmp_path), 'checkpoint': CHECKPOINT,
                                 'image': '/cam/image_raw', 'rate': '0.5'}, SHARES)
    node = run.node('spann3r_node')
    cfg, _, resolved = _declared(node, tmp_path)
    assert node.parameters['use_sim_time'] is True
    assert resolved['image'] == '/cam/image_raw'
    assert run.processes == []
    run.process_output(node, '[INFO] [1.0] [spann3r.spann3r_node]: loading the model\n')
    assert run.processes == []
    run.process_output(node, '[INFO] [2.0] [spann3r.spann3r_node]: ready on cpu (fp32)\n')
    run.process_output(node, '[INFO] [3.0] [spann3r.spann3r_node]: ready on cpu (fp32)\n')
    assert run.processes == [['ros2', 'bag', 'play', str(tmp_path), '--clock', '--rate', '0.5']]


if importlib.util.find_spec('launch_ros') is not None:  # a ROS install: check the model too

    def test_launch_model_agrees_with_launch_ros():
        """The model's parameter rules give what the real launch_ros gives."""
        from launch.substitutions import LaunchConfiguration, TextSubstitution
        from launch_ros.parameter_descriptions import ParameterValue
        from launch_ros.utilities import evaluate_parameters, normalize_parameters

        from launch import LaunchContext

        values = {'image': '/cam/image_raw', 'flag': 'true', 'number': '123', 'empty': ''}

        def shapes(lc, text, pv):
            return {
                'plain': 'some/path', 'int': 3, 'bool': True, 'strings': ['a', 'b'],
                'subst': lc('image'), 'number': lc('number'), 'flag': lc('flag'),
                'list_of_subst': [lc('image')],
                'joined': [text(text='['), lc('image'), text(text=']')],
                'list_of_lists': [[lc('image')], [text(text='x')]],
                'typed_str': pv(lc('number'), value_type=str),
                'typed_bool': pv(lc('flag'), value_type=bool),
                'typed_list': pv([text(text='['), lc('image'), text(text=', x]')],
                                 value_type=typing.List[str]),
                'typed_items': pv([[lc('image')], [lc('number')]], value_type=typing.List[str]),
            }

        context = LaunchContext()
        for name, value in values.items():
            context.launch_configurations[name] = value
        real = evaluate_parameters(context, normalize_parameters(
            [shapes(LaunchConfiguration, TextSubstitution, ParameterValue)]))[0]
        model_ctx = lm.Context(values)
        model = {k: lm.evaluate_parameter(model_ctx, k, v) for k, v in shapes(
            lm.LaunchConfiguration, lm.TextSubstitution, lm.ParameterValue).items()}
        assert {k: list(v) if isinstance(v, tuple) else v for k, v in real.items()} == model
