"""ROS tests use the real rclpy (PyPI wheels or a sourced ROS install)."""

import os

import pytest

if os.environ.get('SPANN3R_REQUIRE_ROS') == '1':
    import rclpy  # noqa: F401  (fail loudly in CI when rclpy is missing)
else:
    pytest.importorskip('rclpy')
