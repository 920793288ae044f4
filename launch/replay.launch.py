"""Replay a rosbag through the live node: ``ros2 launch spann3r_ros replay.launch.py bag:=...``."""

import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, ExecuteProcess, IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration

from launch import LaunchDescription


def generate_launch_description() -> LaunchDescription:
    """Start the live launch file and ``ros2 bag play`` with the clock."""
    share = get_package_share_directory('spann3r_ros')
    args = [
        DeclareLaunchArgument('bag', description='Bag directory (sqlite3 or mcap).'),
        DeclareLaunchArgument('image', default_value='/camera/color/image_raw',
                              description='Image topic inside the bag.'),
        DeclareLaunchArgument('compressed', default_value='false',
                              description='The bag holds <image>/compressed.'),
        DeclareLaunchArgument('checkpoint', description='spann3r.pth or .safetensors weights.'),
        DeclareLaunchArgument('device', default_value='auto', description='Inference device.'),
        DeclareLaunchArgument('rate', default_value='1.0', description='Playback rate.'),
        DeclareLaunchArgument('rviz', default_value='true', description='Start RViz.'),
    ]
    live = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(os.path.join(share, 'launch', 'live.launch.py')),
        launch_arguments={
            'image': LaunchConfiguration('image'),
            'compressed': LaunchConfiguration('compressed'),
            'checkpoint': LaunchConfiguration('checkpoint'),
            'device': LaunchConfiguration('device'),
            'rviz': LaunchConfiguration('rviz'),
        }.items(),
    )
    play = ExecuteProcess(
        cmd=['ros2', 'bag', 'play', LaunchConfiguration('bag'), '--clock',
             '--rate', LaunchConfiguration('rate')],
        output='screen')
    return LaunchDescription(args + [live, play])
