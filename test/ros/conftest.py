"""ROS tests use the real rclpy (PyPI wheels or a sourced ROS install)."""

import os

import pytest

if os.environ.get('SPANN3R_REQUIRE_ROS') == '1':
    import rclpy  # noqa: F401  (fail loudly in CI when rclpy is missing)
else:
    pytest.importorskip('rclpy')


@pytest.fixture(scope='module')
def ros():
    """rclpy initialised on an isolated DDS domain for one test module."""
    from node_harness import isolate_dds
    import rclpy
    isolate_dds()
    rclpy.init()
    yield
    rclpy.try_shutdown()


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory):
    """A real tiny-preset checkpoint with random weights, written once per module."""
    from node_harness import write_tiny_checkpoint
    path = tmp_path_factory.mktemp('ckpt') / 'tiny.safetensors'
    write_tiny_checkpoint(path)
    return path
