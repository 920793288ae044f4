"""The node's metric inputs: odometry (TF or a topic) and an aligned depth topic.

Mixed into :class:`~spann3r_ros.node.node.Spann3rNode`. :meth:`MetricInput._make_metric`
builds the :class:`~spann3r_ros.pipeline.metric_frame.MetricAlignment` the worker expresses
its outputs with, and subscribes to what ``metric_source`` needs:

* ``odometry_source: tf``: ``/tf`` and ``/tf_static`` (``tf2_msgs/TFMessage``) into a
  :class:`~spann3r_ros.pipeline.tf_lookup.LiveTf`, looked up as ``odom_frame -> <image
  frame_id>`` at each frame's stamp;
* ``odometry_topic`` / ``pose_topic``: ``nav_msgs/Odometry`` or ``geometry_msgs/PoseStamped``
  of the base in ``odom_frame``, composed with ``base_to_camera``, into a
  :class:`~spann3r_ros.pipeline.pose_buffer.PoseBuffer`;
* ``depth`` / ``both``: ``depth_topic`` (or its ``compressedDepth``) and the camera_info
  beside it, into a :class:`~spann3r_ros.pipeline.depth_scale.DepthBuffer`.

What a message becomes is :class:`~spann3r_ros.pipeline.metric_inputs.MetricInputs` (ROS-free,
shared with ``spann3r-eval --metric``); the callbacks here only subscribe, decode depth and
contain failures. A message that cannot be used is dropped and counted (in diagnostics).
"""

from __future__ import annotations

from typing import Any, Optional

from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    qos_profile_sensor_data,
    QoSProfile,
    ReliabilityPolicy,
)
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from spann3r_ros.formats.images import decode_depth, ImageRejected
from spann3r_ros.node.conversions import stamp_to_seconds
from spann3r_ros.pipeline.config import NodeConfig
from spann3r_ros.pipeline.metric_frame import MetricAlignment
from spann3r_ros.pipeline.metric_inputs import MetricInputs

#: QoS of ``/tf`` and ``/tf_static`` as tf2 publishes them.
TF_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100,
                    reliability=ReliabilityPolicy.RELIABLE,
                    durability=DurabilityPolicy.VOLATILE)
TF_STATIC_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100,
                           reliability=ReliabilityPolicy.RELIABLE,
                           durability=DurabilityPolicy.TRANSIENT_LOCAL)


def tf_message_type() -> Any:
    """Return ``tf2_msgs.msg.TFMessage``.

    :raises ValueError: when ``tf2_msgs`` is not importable (``make setup`` builds it).
    """
    try:
        from tf2_msgs.msg import TFMessage
    except ImportError:
        raise ValueError('odometry_source tf needs the tf2_msgs message package (part of '
                         'every ROS 2 install; make setup builds it); use odometry_source '
                         'odometry_topic or pose_topic without it') from None
    return TFMessage


class MetricInput(Node):
    """Odometry and depth subscriptions, and the metric alignment built from them."""

    def _make_metric(self, cfg: NodeConfig) -> MetricAlignment:
        inputs = self._metric_inputs = MetricInputs(cfg)
        # The buffers the callbacks fill (None where metric_source does not need them).
        self._pose_buffer, self._live_tf = inputs.pose_buffer, inputs.live_tf
        self._depth_buffer = inputs.depth_buffer
        settings = cfg.metric_settings()
        if settings.uses_odometry:
            self._subscribe_odometry(cfg)
        if settings.uses_depth:
            self._subscribe_depth(cfg)
        return inputs.alignment(self.get_logger())

    @property
    def _metric_faults(self) -> Any:
        return self._metric_inputs.faults

    @property
    def _depth_info(self) -> Optional[tuple[int, int]]:
        return self._metric_inputs.depth_info

    def _subscribe_odometry(self, cfg: NodeConfig) -> None:
        group = MutuallyExclusiveCallbackGroup()
        inputs = self._metric_inputs
        if cfg.odometry_source == 'tf':
            TFMessage = tf_message_type()
            self.create_subscription(TFMessage, '/tf', self._contained(
                'tf', lambda msg: inputs.on_tf(msg, static=False)), TF_QOS, callback_group=group)
            self.create_subscription(TFMessage, '/tf_static', self._contained(
                'tf_static', lambda msg: inputs.on_tf(msg, static=True)), TF_STATIC_QOS,
                callback_group=group)
            return
        from geometry_msgs.msg import PoseStamped
        from nav_msgs.msg import Odometry
        msg_type = Odometry if cfg.odometry_source == 'odometry_topic' else PoseStamped
        self.create_subscription(msg_type, cfg.odometry_topic,
                                 self._contained('odometry', inputs.on_odometry),
                                 QoSProfile(depth=100), callback_group=group)

    def _subscribe_depth(self, cfg: NodeConfig) -> None:
        from spann3r_ros.node.image_input import camera_info_topic
        group = MutuallyExclusiveCallbackGroup()
        if cfg.depth_transport == 'compressedDepth':
            topic, msg_type = cfg.depth_topic.rstrip('/') + '/compressedDepth', CompressedImage
        else:
            topic, msg_type = cfg.depth_topic, Image
        if self.resolve_topic_name(topic) == self.resolve_topic_name('depth'):
            raise ValueError(f'depth_topic {cfg.depth_topic!r} resolves to the depth output of '
                             "this node; remap it to the camera's aligned depth topic")
        self.create_subscription(msg_type, topic, self._contained('depth', self._on_depth),
                                 qos_profile_sensor_data, callback_group=group)
        info = camera_info_topic(self.resolve_topic_name(cfg.depth_topic))
        self.create_subscription(CameraInfo, info, self._contained(
            'depth camera_info', self._metric_inputs.on_depth_info), qos_profile_sensor_data,
            callback_group=group)

    # -- callbacks ----------------------------------------------------------------------------
    def _contained(self, name: str, handler: Any) -> Any:
        def callback(msg: Any) -> None:
            try:
                handler(msg)
            except Exception as exc:  # one bad message must not end the executor
                self._metric_inputs.count(f'{name.replace(" ", "_")}_malformed')
                self._log_failure(f'{name} callback', exc)
        return callback

    def _on_depth(self, msg: Any) -> None:
        try:
            depth = decode_depth(msg, self.config.max_image_pixels)
        except ImageRejected as exc:
            self._metric_inputs.count(f'depth_{exc.reason}')
            return
        self._metric_inputs.on_depth(stamp_to_seconds(msg.header), depth)

    # -- reporting ----------------------------------------------------------------------------
    def metric_input_status(self) -> dict[str, str]:
        """Return the diagnostics values of the metric inputs (counts of dropped messages)."""
        return self._metric_inputs.status()
