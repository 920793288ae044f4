"""Live reconstruction, e.g. ``ros2 launch spann3r_ros live.launch.py image:=/camera/image``."""

import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PythonExpression
from launch_ros.actions import Node

from launch import LaunchDescription


def generate_launch_description() -> LaunchDescription:
    """Declare the arguments and start the node (and RViz on request)."""
    share = get_package_share_directory('spann3r_ros')
    args = [
        DeclareLaunchArgument('image', default_value='/camera/color/image_raw',
                              description='Base image topic (without /compressed).'),
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
        DeclareLaunchArgument('rviz', default_value='true', description='Start RViz.'),
    ]
    transport = PythonExpression(["'compressed' if '", LaunchConfiguration('compressed'),
                                  "'.lower() == 'true' else 'raw'"])
    node = Node(
        package='spann3r_ros', executable='spann3r_node', name='spann3r_node',
        namespace=LaunchConfiguration('namespace'), output='screen',
        parameters=[LaunchConfiguration('params_file'), {
            'image_topics': [LaunchConfiguration('image')],
            'transport': transport,
            'checkpoint': LaunchConfiguration('checkpoint'),
            'device': LaunchConfiguration('device'),
        }],
    )
    rviz = Node(package='rviz2', executable='rviz2', name='rviz2',
                arguments=['-d', os.path.join(share, 'config', 'spann3r.rviz')],
                condition=IfCondition(LaunchConfiguration('rviz')))
    return LaunchDescription(args + [node, rviz])
