"""Live reconstruction, e.g. ``ros2 launch spann3r_ros live.launch.py image:=/camera/image``.

Every value reaches the node with the type it declares (``ParameterValue`` with an explicit
``value_type``; the image topic by remapping), so a path or a device name that YAML would read
as a number or a boolean is still a string. When the node stops with an error, the launch ends
with exit code 1 and repeats the node's message last; RViz starts only where it can. With
``large_images:=true`` (the default) the node's Fast DDS participant loads
``config/fastdds_large_images.xml``, a shared-memory segment that holds full-resolution raw
frames; the camera driver needs the same profile exported (see the README).
"""

import importlib.metadata
import os
import re

from ament_index_python.packages import (
    get_package_prefix,
    get_package_share_directory,
    PackageNotFoundError,
)
from launch.actions import (
    DeclareLaunchArgument,
    EmitEvent,
    GroupAction,
    LogInfo,
    OpaqueFunction,
    RegisterEventHandler,
    SetEnvironmentVariable,
)
from launch.event_handlers import OnProcessExit, OnProcessIO
from launch.events import Shutdown
from launch.substitutions import LaunchConfiguration, PythonExpression
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue

from launch import LaunchDescription

NODE_NAME = 'spann3r_node'
TRUE_WORDS = ('true', '1', 'yes', 'on')
# Fast DDS 2.x (Humble 2.6, Iron 2.10, Jazzy 2.14) reads FASTRTPS_DEFAULT_PROFILES_FILE only;
# Kilted's 3.x reads FASTDDS_DEFAULT_PROFILES_FILE and warns that the old name is deprecated.
FASTDDS_2_DISTROS = ('humble', 'iron', 'jazzy')
#: How the ROS 2 wheels on PyPI are named: ros-<distro>-<package>.
WHEEL_NAME = re.compile(r'ros-([a-z]+)-(?:rclpy|rmw-fastrtps-cpp)$')
PROFILE_VARIABLES = ('FASTRTPS_DEFAULT_PROFILES_FILE', 'FASTDDS_DEFAULT_PROFILES_FILE')
#: metric_source values whose outputs are in the odometry frame (RViz's fixed frame then).
ODOMETRY_SOURCES = ('odometry', 'both')


def _text(name: str) -> ParameterValue:
    return ParameterValue(LaunchConfiguration(name), value_type=str)


def _rviz(context, share: str) -> list:
    """Start RViz when asked for and possible; otherwise say once why not."""
    if LaunchConfiguration('rviz').perform(context).strip().lower() not in TRUE_WORDS:
        return []
    try:
        get_package_prefix('rviz2')
    except PackageNotFoundError:
        return [LogInfo(msg='RViz not started: package rviz2 is not installed (install '
                            'ros-$ROS_DISTRO-rviz2, or pass rviz:=false); the node runs without '
                            'it.')]
    if not (os.environ.get('DISPLAY') or os.environ.get('WAYLAND_DISPLAY')):
        return [LogInfo(msg='RViz not started: no display (DISPLAY and WAYLAND_DISPLAY are '
                            'unset); the node runs without it.')]
    arguments = ['-d', os.path.join(share, 'config', 'spann3r.rviz')]
    fixed = LaunchConfiguration('fixed_frame').perform(context).strip()
    if not fixed and LaunchConfiguration('metric_source').perform(context).strip() in \
            ODOMETRY_SOURCES:
        fixed = LaunchConfiguration('odom_frame').perform(context).strip()
    if fixed:
        arguments += ['-f', fixed]
    return [Node(package='rviz2', executable='rviz2', name='rviz2', output='screen',
                 arguments=arguments)]


def _large_images(context, share: str) -> list:
    """Set the node's (scoped) environment to the large-image Fast DDS profile when asked for.

    A transport configuration the user exported wins: replacing it could cut the node off from
    the driver (a ``LARGE_DATA`` participant does not talk to a UDP + shared-memory one).

    :param context: the launch context (``large_images`` is read from it).
    :param share: the package's share directory.
    :return: ``SetEnvironmentVariable`` actions for the node's scope, or one ``LogInfo`` saying
        why the profile is not used.
    """
    if LaunchConfiguration('large_images').perform(context).strip().lower() not in TRUE_WORDS:
        return []
    rmw = os.environ.get('RMW_IMPLEMENTATION', '') or 'rmw_fastrtps_cpp'
    if not rmw.startswith('rmw_fastrtps'):
        return [LogInfo(msg=f'large_images: {rmw} is not Fast DDS, its own configuration '
                            'applies (see the README for large raw images).')]
    profile = os.path.join(share, 'config', 'fastdds_large_images.xml')
    exported = [f'{name}={os.environ[name]}' for name in
                PROFILE_VARIABLES + ('FASTDDS_BUILTIN_TRANSPORTS',)
                if os.environ.get(name) and os.environ[name] != profile]
    if exported:
        return [LogInfo(msg=f'large_images: keeping the exported {", ".join(exported)} for '
                            'the node (unset it to use fastdds_large_images.xml).')]
    distro = os.environ.get('ROS_DISTRO', '') or _wheel_distro()
    if distro in FASTDDS_2_DISTROS:
        names = PROFILE_VARIABLES[:1]
    elif distro:
        names = PROFILE_VARIABLES[1:]
    else:
        names = PROFILE_VARIABLES
    return [SetEnvironmentVariable(name, profile) for name in names]


def _wheel_distro() -> str:
    """Return the distribution of the installed ROS 2 wheels (no sourced ROS), or ''."""
    for dist in importlib.metadata.distributions():
        match = WHEEL_NAME.match((dist.metadata['Name'] or '').lower())
        if match:
            return match.group(1)
    return ''


def _watch(node: Node) -> list:
    """End the launch when the node ends; a failure ends it with exit code 1 and its message."""
    last_line = {'text': ''}

    def on_stderr(event) -> None:
        lines = [line for line in event.text.decode(errors='replace').splitlines()
                 if line.strip()]
        if lines:
            last_line['text'] = lines[-1].split(']: ', 1)[-1].strip()

    def on_exit(event, context) -> list:
        if event.returncode != 0 and not context.is_shutdown:
            message = last_line['text'] or 'see its output above'
            raise RuntimeError(f'{NODE_NAME} exited with code {event.returncode}: {message}')
        return [EmitEvent(event=Shutdown(reason=f'{NODE_NAME} exited'))]

    return [RegisterEventHandler(OnProcessIO(target_action=node, on_stderr=on_stderr)),
            RegisterEventHandler(OnProcessExit(target_action=node, on_exit=on_exit))]


def generate_launch_description() -> LaunchDescription:
    """Declare the arguments and start the node (and RViz where it can run)."""
    share = get_package_share_directory('spann3r_ros')
    args = [
        DeclareLaunchArgument('image', default_value='/camera/color/image_raw',
                              description='Image topic (without /compressed).'),
        DeclareLaunchArgument('compressed', default_value='false',
                              description='Subscribe to <image>/compressed instead.'),
        DeclareLaunchArgument('params_file',
                              default_value=os.path.join(share, 'config', 'live.yaml'),
                              description='Parameter file of the node.'),
        DeclareLaunchArgument('checkpoint', description='spann3r.pth or .safetensors weights.'),
        DeclareLaunchArgument('device', default_value='auto',
                              description='auto, cpu, cuda or cuda:N.'),
        DeclareLaunchArgument('namespace', default_value='spann3r',
                              description='Namespace of the node and its topics.'),
        DeclareLaunchArgument('use_sim_time', default_value='false',
                              description='Use /clock (true when replaying a bag).'),
        DeclareLaunchArgument('rviz', default_value='true',
                              description='Start RViz where rviz2 and a display exist.'),
        DeclareLaunchArgument('large_images', default_value='true',
                              description='Fast DDS profile with a shared-memory segment for '
                                          'full-resolution raw images (the node only).'),
        DeclareLaunchArgument('metric_source', default_value='none',
                              description='none, odometry (outputs in odom_frame, metres), '
                                          'depth (metres from the depth topic) or both.'),
        DeclareLaunchArgument('odometry_source', default_value='tf',
                              description='tf, odometry_topic or pose_topic.'),
        DeclareLaunchArgument('odom_frame', default_value='odom',
                              description='Odometry frame of the robot (REP 105).'),
        DeclareLaunchArgument('odometry_topic', default_value='/odom',
                              description='nav_msgs/Odometry or PoseStamped topic '
                                          '(odometry_source odometry_topic / pose_topic).'),
        DeclareLaunchArgument('depth', default_value='/camera/aligned_depth_to_color/image_raw',
                              description='Aligned depth topic (metric_source depth / both).'),
        DeclareLaunchArgument('fixed_frame', default_value='',
                              description="RViz's fixed frame; empty: odom_frame with "
                                          "odometry, else the config file's."),
    ]
    transport = PythonExpression(["'compressed' if '", LaunchConfiguration('compressed'),
                                  "'.strip().lower() in ", repr(TRUE_WORDS), " else 'raw'"])
    image = LaunchConfiguration('image')
    depth = LaunchConfiguration('depth')
    node = Node(
        package='spann3r_ros', executable='spann3r_node', name=NODE_NAME,
        namespace=LaunchConfiguration('namespace'), output='screen',
        parameters=[LaunchConfiguration('params_file'), {
            'transport': ParameterValue(transport, value_type=str),
            'checkpoint': _text('checkpoint'),
            'device': _text('device'),
            'use_sim_time': ParameterValue(LaunchConfiguration('use_sim_time'),
                                           value_type=bool),
            'metric_source': _text('metric_source'),
            'odometry_source': _text('odometry_source'),
            'odom_frame': _text('odom_frame'),
        }],
        remappings=[('image', image), ('image/compressed', [image, '/compressed']),
                    ('odom', LaunchConfiguration('odometry_topic')),
                    ('aligned_depth/image_raw', depth),
                    ('aligned_depth/image_raw/compressedDepth', [depth, '/compressedDepth'])],
    )
    # Scoped: the profile reaches the node's process only, not RViz or an including launch.
    scoped_node = GroupAction([OpaqueFunction(function=_large_images, kwargs={'share': share}),
                               node], scoped=True)
    return LaunchDescription(args + [scoped_node] + _watch(node) + [
        OpaqueFunction(function=_rviz, kwargs={'share': share})])
