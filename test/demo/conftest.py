"""The demo runs the real node: it needs rclpy (required in CI, where a skip fails the run)."""

import os

import pytest

if os.environ.get('SPANN3R_REQUIRE_ROS') == '1':
    __import__('rclpy')  # fail loudly in CI when rclpy is missing
else:
    pytest.importorskip('rclpy')
