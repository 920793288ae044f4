"""Replay a rosbag through the live node: ``ros2 launch spann3r_ros replay.launch.py bag:=...``.

The bag and ``ros2 bag`` are checked before the node loads its model; playback starts once the
node reports that it is ready, so no frame is lost to the model's loading time. The node runs on
the bag's clock (``use_sim_time``) and keeps running when the bag ends, so the map stays in RViz.
"""

import importlib.util
import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import (
    DeclareLaunchArgument,
    ExecuteProcess,
    IncludeLaunchDescription,
    OpaqueFunction,
    RegisterEventHandler,
)
from launch.event_handlers import OnProcessIO
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration

from launch import LaunchDescription

READY = 'ready on'
FORWARDED = ('image', 'compressed', 'checkpoint', 'device', 'namespace', 'rviz')


def _replay(context, share: str) -> list:
    """Check the bag and rosbag2, then start the live launch and ``ros2 bag play``."""
    bag = os.path.expanduser(LaunchConfiguration('bag').perform(context))
    if not os.path.exists(bag):
        raise RuntimeError(f'bag {bag!r} does not exist (pass bag:=<bag directory or file>)')
    if importlib.util.find_spec('ros2bag') is None:
        raise RuntimeError('replay needs rosbag2 for `ros2 bag play`: install '
                           'ros-$ROS_DISTRO-rosbag2 (and ros-$ROS_DISTRO-rosbag2-storage-mcap '
                           'for .mcap bags)')
    live = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(os.path.join(share, 'launch', 'live.launch.py')),
        launch_arguments=[(name, LaunchConfiguration(name)) for name in FORWARDED]
        + [('use_sim_time', 'true')],
    )
    play = ExecuteProcess(
        cmd=['ros2', 'bag', 'play', bag, '--clock', '--rate', LaunchConfiguration('rate')],
        output='screen')
    started = []

    def on_output(event) -> list:
        ready = (event.process_name.startswith('spann3r_node') and not started
                 and READY in event.text.decode(errors='replace'))
        if ready:
            started.append(True)
            return [play]
        return []

    return [RegisterEventHandler(OnProcessIO(on_stdout=on_output, on_stderr=on_output)), live]


def generate_launch_description() -> LaunchDescription:
    """Declare the arguments; the node and the player start once the bag is checked."""
    share = get_package_share_directory('spann3r_ros')
    args = [
        DeclareLaunchArgument('bag', description='Bag directory or file (sqlite3 or mcap).'),
        DeclareLaunchArgument('image', default_value='/camera/color/image_raw',
                              description='Image topic inside the bag.'),
        DeclareLaunchArgument('compressed', default_value='false',
                              description='The bag holds <image>/compressed.'),
        DeclareLaunchArgument('checkpoint', description='spann3r.pth or .safetensors weights.'),
        DeclareLaunchArgument('device', default_value='auto', description='Inference device.'),
        DeclareLaunchArgument('namespace', default_value='spann3r',
                              description='Namespace of the node and its topics.'),
        DeclareLaunchArgument('rate', default_value='1.0', description='Playback rate.'),
        DeclareLaunchArgument('rviz', default_value='true',
                              description='Start RViz where rviz2 and a display exist.'),
    ]
    return LaunchDescription(args + [OpaqueFunction(function=_replay,
                                                    kwargs={'share': share})])
