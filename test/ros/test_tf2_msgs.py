"""tf2_msgs/msg/TFMessage travels on /tf and /tf_static with the real rclpy (in-process).

With the PyPI wheels, ``make setup`` builds tf2_msgs from ``interfaces/tf2_msgs`` into the venv
(tools/build_interfaces.sh); with a sourced ROS install it is the installed package. Either way
its type hash is the one every ROS 2 tf2 node announces, so the two talk to each other.
"""

import time

from geometry_msgs.msg import TransformStamped
import pytest
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from tf2_msgs.msg import TFMessage

TF_QOS_DEPTH = 100  # tf2_ros: /tf is reliable, volatile, depth 100; /tf_static transient local
# The type hash of tf2_msgs/msg/TFMessage that ROS 2 tf2 nodes announce (`ros2 topic info -v`).
TFMESSAGE_HASH = 'RIHS01_e369d0f05a23ae52508854b66f6aa0437f3449d652e8cbf22d5abe85d020f087'


def _transform(parent: str, child: str, sec: int, nanosec: int, translation, rotation):
    msg = TransformStamped()
    msg.header.frame_id = parent
    msg.header.stamp.sec = sec
    msg.header.stamp.nanosec = nanosec
    msg.child_frame_id = child
    t, r = msg.transform.translation, msg.transform.rotation
    t.x, t.y, t.z = translation
    r.x, r.y, r.z, r.w = rotation
    return msg


def _fields(msg) -> tuple:
    """A TransformStamped as plain values, field by field."""
    t, r = msg.transform.translation, msg.transform.rotation
    return (msg.header.frame_id, msg.child_frame_id, msg.header.stamp.sec,
            msg.header.stamp.nanosec, (t.x, t.y, t.z), (r.x, r.y, r.z, r.w))


DYNAMIC = [('map', 'camera_optical', 12, 345_000_000, (1.25, -0.5, 2.0),
            (0.0, 0.0, 0.38268343236508984, 0.9238795325112867)),
           ('camera_optical', 'camera_link', 12, 345_000_001, (-3.0, 4.5, 0.125),
            (0.5, -0.5, 0.5, 0.5))]
STATIC = ('base_link', 'camera_mount', 0, 0, (0.1, 0.0, 0.3), (0.0, 1.0, 0.0, 0.0))


@pytest.fixture(scope='module')
def graph(ros):
    """A node and an executor that spins it on demand."""
    node = rclpy.create_node('tf2_msgs_probe')
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    yield node, executor
    executor.shutdown()
    node.destroy_node()


def _spin_until(executor, predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f'timed out after {timeout}s waiting for {what}'
        executor.spin_once(timeout_sec=0.05)


def test_tfmessage_imports_from_the_venv():
    assert TFMessage.get_fields_and_field_types() == {
        'transforms': 'sequence<geometry_msgs/TransformStamped>'}
    assert TFMessage().transforms == []
    assert isinstance(TFMessage(transforms=[TransformStamped()]).transforms[0], TransformStamped)


def test_two_transforms_on_tf_arrive_field_by_field(graph):
    node, executor = graph
    qos = QoSProfile(depth=TF_QOS_DEPTH, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.VOLATILE)
    received = []
    sub = node.create_subscription(TFMessage, '/tf', received.append, qos)
    pub = node.create_publisher(TFMessage, '/tf', qos)
    try:
        _spin_until(executor, lambda: pub.get_subscription_count() == 1, 10, '/tf to match')
        pub.publish(TFMessage(transforms=[_transform(*t) for t in DYNAMIC]))
        _spin_until(executor, lambda: received, 10, 'the TFMessage on /tf')
        assert len(received) == 1
        assert [_fields(t) for t in received[0].transforms] == DYNAMIC
        infos = node.get_publishers_info_by_topic('/tf')
        assert [info.topic_type for info in infos] == ['tf2_msgs/msg/TFMessage']
        assert str(infos[0].topic_type_hash) == TFMESSAGE_HASH
    finally:
        node.destroy_subscription(sub)
        node.destroy_publisher(pub)


def test_a_latched_transform_on_tf_static_reaches_a_late_subscriber(graph):
    node, executor = graph
    qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)
    pub = node.create_publisher(TFMessage, '/tf_static', qos)
    pub.publish(TFMessage(transforms=[_transform(*STATIC)]))
    received = []
    sub = node.create_subscription(TFMessage, '/tf_static', received.append, qos)
    try:
        _spin_until(executor, lambda: received, 10, 'the latched TFMessage on /tf_static')
        executor.spin_once(timeout_sec=0.2)  # a second copy would arrive here
        assert len(received) == 1
        assert [_fields(t) for t in received[0].transforms] == [STATIC]
    finally:
        node.destroy_subscription(sub)
        node.destroy_publisher(pub)
