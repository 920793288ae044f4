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

Callbacks only convert and store; a message that cannot be used is dropped and counted
(:meth:`MetricInput.metric_input_status`, in diagnostics).
"""

from __future__ import annotations

from collections import Counter
import threading
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

from spann3r_ros.bags.messages import camera_info_K, matrix_from, msg_pose
from spann3r_ros.formats.images import decode_depth, ImageRejected
from spann3r_ros.node.conversions import stamp_to_seconds
from spann3r_ros.pipeline.config import NodeConfig
from spann3r_ros.pipeline.depth_scale import DepthBuffer
from spann3r_ros.pipeline.metric_frame import MetricAlignment
from spann3r_ros.pipeline.pose_buffer import PoseBuffer, PoseLookup
from spann3r_ros.pipeline.tf_lookup import LiveTf, lookup_fn

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
        settings = cfg.metric_settings()
        self._metric_faults: Counter[str] = Counter()
        self._metric_faults_lock = threading.Lock()
        self._pose_buffer: Optional[PoseBuffer] = None
        self._live_tf: Optional[LiveTf] = None
        self._depth_buffer: Optional[DepthBuffer] = None
        self._depth_info: Optional[tuple[int, int]] = None
        odometry = None
        if settings.uses_odometry:
            odometry = self._make_odometry(cfg)
        if settings.uses_depth:
            self._make_depth(cfg)
        return MetricAlignment(settings, odometry, self._depth_buffer, self.get_logger(),
                               odometry_cameras='all' if cfg.odometry_source == 'tf'
                               else 'first')

    def _make_odometry(self, cfg: NodeConfig) -> Any:
        group = MutuallyExclusiveCallbackGroup()
        if cfg.odometry_source == 'tf':
            TFMessage = tf_message_type()
            self._live_tf = LiveTf(cfg.odometry_timeout, cfg.odometry_tolerance)
            self.create_subscription(TFMessage, '/tf', self._contained('tf', self._on_tf),
                                     TF_QOS, callback_group=group)
            self.create_subscription(TFMessage, '/tf_static',
                                     self._contained('tf_static', self._on_tf_static),
                                     TF_STATIC_QOS, callback_group=group)
            return lookup_fn(self._live_tf, cfg.odom_frame)
        from geometry_msgs.msg import PoseStamped
        from nav_msgs.msg import Odometry
        msg_type = Odometry if cfg.odometry_source == 'odometry_topic' else PoseStamped
        self._pose_buffer = PoseBuffer(cfg.odometry_timeout, cfg.odometry_tolerance)
        self._T_base_cam = cfg.base_to_camera_matrix()
        self.create_subscription(msg_type, cfg.odometry_topic,
                                 self._contained('odometry', self._on_odometry),
                                 QoSProfile(depth=100), callback_group=group)
        buffer = self._pose_buffer

        def lookup(stamp: float, _camera_frame: str) -> PoseLookup:
            return buffer.lookup(stamp)
        return lookup

    def _make_depth(self, cfg: NodeConfig) -> None:
        from spann3r_ros.node.image_input import camera_info_topic
        self._depth_buffer = DepthBuffer(cfg.depth_max_dt)
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
        self.create_subscription(CameraInfo, info,
                                 self._contained('depth camera_info', self._on_depth_info),
                                 qos_profile_sensor_data, callback_group=group)

    # -- callbacks ----------------------------------------------------------------------------
    def _contained(self, name: str, handler: Any) -> Any:
        def callback(msg: Any) -> None:
            try:
                handler(msg)
            except Exception as exc:  # one bad message must not end the executor
                self._metric_fault(f'{name.replace(" ", "_")}_malformed')
                self._log_failure(f'{name} callback', exc)
        return callback

    def _metric_fault(self, reason: str) -> None:
        with self._metric_faults_lock:
            self._metric_faults[reason] += 1

    def _on_tf(self, msg: Any, static: bool = False) -> None:
        for t in msg.transforms:
            try:
                T = matrix_from(t.transform.translation, t.transform.rotation)
                self._live_tf.add(t.header.frame_id, t.child_frame_id,
                                  stamp_to_seconds(t.header), T, static)
            except ValueError:
                self._metric_fault('tf_malformed')

    def _on_tf_static(self, msg: Any) -> None:
        self._on_tf(msg, static=True)

    def _on_odometry(self, msg: Any) -> None:
        frame_id, T_odom_base = msg_pose(msg)
        if frame_id.lstrip('/') != self.config.odom_frame.lstrip('/'):
            self._metric_fault('odometry_wrong_frame')
            return
        self._pose_buffer.add(stamp_to_seconds(msg.header), T_odom_base @ self._T_base_cam)

    def _on_depth_info(self, msg: CameraInfo) -> None:
        try:
            _, width, height = camera_info_K(msg)
        except ValueError:
            width, height = int(msg.width), int(msg.height)
        self._depth_info = (width, height)

    def _on_depth(self, msg: Any) -> None:
        try:
            depth = decode_depth(msg, self.config.max_image_pixels)
        except ImageRejected as exc:
            self._metric_fault(f'depth_{exc.reason}')
            return
        info = self._depth_info
        if info is not None and info != (depth.shape[1], depth.shape[0]):
            self._metric_fault('depth_size_mismatch')
            return
        if not (depth > 0).any():
            self._metric_fault('depth_all_invalid')
            return
        self._depth_buffer.add(stamp_to_seconds(msg.header), depth)

    # -- reporting ----------------------------------------------------------------------------
    def metric_input_status(self) -> dict[str, str]:
        """Return the diagnostics values of the metric inputs (counts of dropped messages)."""
        values = {}
        with self._metric_faults_lock:
            values.update({f'metric_input_{k}': str(v)
                           for k, v in sorted(self._metric_faults.items())})
        source = self._pose_buffer or self._live_tf
        if source is not None:
            values['odometry_backwards'] = str(source.backwards)
        if self._pose_buffer is not None:
            values['odometry_restarts'] = str(self._pose_buffer.restarts)
        if self._live_tf is not None:
            values['tf_reparented'] = str(self._live_tf.reparented)
        return values
