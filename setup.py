"""ament_python package: the ROS node, the ROS-free model core, bag tools and trainer."""

from glob import glob
import os

from setuptools import find_packages, setup

PACKAGE = 'spann3r_ros'
CONSOLE_SCRIPTS = [
    'spann3r-parity = spann3r_model.cli.parity:main',
    'spann3r-schema = spann3r_model.cli.schema:main',
    'spann3r_node = spann3r_ros.node.node:main',
    'spann3r-synth = spann3r_ros.cli.synth:main',
    'spann3r-export = spann3r_ros.cli.export:main',
    'spann3r-eval = spann3r_ros.cli.eval:main',
    'spann3r-reconstruct = spann3r_ros.cli.reconstruct:main',
    'spann3r-train = training.train:main',
]
# ament_python installs console scripts into lib/<package> (for `ros2 run`, see setup.cfg). In a
# colcon build the command-line tools also get a wrapper in bin/, which colcon puts on PATH, so
# the README's commands work after `source install/setup.bash`. pip installs put them on PATH
# already and must not get the wrappers (same names).
COLCON_BIN = [('bin', sorted(f"resource/bin/{line.split(' = ')[0]}" for line in CONSOLE_SCRIPTS
                             if line.startswith('spann3r-')))] if os.environ.get('COLCON') else []

setup(
    name=PACKAGE,
    version='0.1.0',
    packages=find_packages(include=['spann3r_model', 'spann3r_model.*', 'spann3r_ros',
                                    'spann3r_ros.*', 'training', 'training.*']),
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + PACKAGE]),
        ('share/' + PACKAGE, ['package.xml']),
        ('share/' + PACKAGE + '/launch', glob('launch/*.launch.py')),
        ('share/' + PACKAGE + '/config', glob('config/*.yaml') + glob('config/*.rviz')
         + glob('config/*.xml')),
        ('share/' + PACKAGE + '/config/training', glob('config/training/*.yaml')),
    ] + COLCON_BIN,
    install_requires=['setuptools'],
    zip_safe=True,
    maintainer='spann3r_ros maintainers',
    maintainer_email='maintainers@spann3r-ros.dev',
    description='Live dense 3D reconstruction with Spann3R for ROS 2.',
    license='Apache-2.0',
    tests_require=['pytest'],
    entry_points={
        'console_scripts': CONSOLE_SCRIPTS,
    },
)
