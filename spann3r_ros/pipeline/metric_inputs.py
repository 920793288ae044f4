"""What the metric alignment reads: odometry, TF and aligned depth, from messages (ROS-free).

One :class:`MetricInputs` holds the buffers ``metric_source`` needs and turns messages into their
samples, the same way for the live node (:mod:`spann3r_ros.node.metric_input`, rclpy messages)
and for ``spann3r-eval --metric`` (bag messages): the message types only need the fields of
``tf2_msgs/TFMessage``, ``nav_msgs/Odometry`` / ``geometry_msgs/PoseStamped`` and
``sensor_msgs/CameraInfo``. A message that cannot be used is dropped and counted in
:attr:`MetricInputs.faults`.
"""

from __future__ import annotations

from collections import Counter
import logging
import threading
from typing import Any, Callable, Optional

import numpy as np

from spann3r_ros.formats.message_fields import camera_info_K, matrix_from, msg_pose
from spann3r_ros.pipeline.config import NodeConfig
from spann3r_ros.pipeline.depth_scale import DepthBuffer
from spann3r_ros.pipeline.metric_frame import MetricAlignment
from spann3r_ros.pipeline.pose_buffer import PoseBuffer, PoseLookup
from spann3r_ros.pipeline.tf_lookup import LiveTf, lookup_fn


def stamp_seconds(header: Any) -> float:
    """Return a header's stamp in float seconds (as the node's image stamps are)."""
    return header.stamp.sec + header.stamp.nanosec * 1e-9


class MetricInputs:
    """The odometry, TF and depth buffers of one node configuration (thread-safe counters).

    :param cfg: the node configuration (``metric_source`` and its parameters).
    """

    def __init__(self, cfg: NodeConfig) -> None:
        self.cfg = cfg
        settings = cfg.metric_settings()
        self._lock = threading.Lock()
        #: Messages dropped, by reason (``odometry_wrong_frame``, ``depth_size_mismatch``, ...).
        self.faults: Counter[str] = Counter()
        #: Frame names seen in TF and in odometry messages (for error messages).
        self.tf_frames: set[str] = set()
        self.odometry_frames: set[str] = set()
        self.live_tf: Optional[LiveTf] = None
        self.pose_buffer: Optional[PoseBuffer] = None
        self.depth_buffer: Optional[DepthBuffer] = None
        #: ``(width, height)`` of the newest depth camera_info, or None.
        self.depth_info: Optional[tuple[int, int]] = None
        #: ``lookup(stamp, camera_frame_id) -> PoseLookup`` of ``T_odom_cam``, or None.
        self.lookup: Optional[Callable[[float, str], PoseLookup]] = None
        if settings.uses_odometry and cfg.odometry_source == 'tf':
            self.live_tf = LiveTf(cfg.odometry_timeout, cfg.odometry_tolerance)
            self.lookup = lookup_fn(self.live_tf, cfg.odom_frame)
        elif settings.uses_odometry:
            self.pose_buffer = PoseBuffer(cfg.odometry_timeout, cfg.odometry_tolerance)
            self._T_base_cam = cfg.base_to_camera_matrix()
            buffer, T_base_cam = self.pose_buffer, self._T_base_cam

            # The base pose is interpolated, then the mount applied (as tf2 does): on a
            # turning robot the camera then follows the arc, not the chord between samples.
            def lookup(stamp: float, _camera_frame: str) -> PoseLookup:
                found = buffer.lookup(stamp)
                if found.T is None:
                    return found
                return PoseLookup(found.state, found.T @ T_base_cam, found.age)
            self.lookup = lookup
        if settings.uses_depth:
            self.depth_buffer = DepthBuffer(cfg.depth_max_dt)

    def alignment(self, logger: Optional[logging.Logger] = None) -> MetricAlignment:
        """Return the :class:`MetricAlignment` these inputs feed."""
        return MetricAlignment(self.cfg.metric_settings(), self.lookup, self.depth_buffer,
                               logger, odometry_cameras='all' if self.live_tf is not None
                               else 'first')

    def count(self, reason: str) -> None:
        """Count one dropped message."""
        with self._lock:
            self.faults[reason] += 1

    def on_tf(self, msg: Any, static: bool) -> None:
        """Take a ``/tf`` (``static=False``) or ``/tf_static`` message."""
        for t in msg.transforms:
            self.tf_frames.update((t.header.frame_id.lstrip('/'), t.child_frame_id.lstrip('/')))
            try:
                T = matrix_from(t.transform.translation, t.transform.rotation)
                self.live_tf.add(t.header.frame_id, t.child_frame_id, stamp_seconds(t.header),
                                 T, static)
            except ValueError:
                self.count('tf_malformed')

    def on_odometry(self, msg: Any) -> None:
        """Take an Odometry or PoseStamped of the base (``base_to_camera`` applied on lookup)."""
        frame_id, T_odom_base = msg_pose(msg)
        self.odometry_frames.add(frame_id)
        if frame_id.lstrip('/') != self.cfg.odom_frame.lstrip('/'):
            self.count('odometry_wrong_frame')
            return
        self.pose_buffer.add(stamp_seconds(msg.header), T_odom_base)

    def on_depth_info(self, msg: Any) -> None:
        """Take the camera_info beside the depth topic (the depth images must match it)."""
        try:
            _, width, height = camera_info_K(msg)
        except ValueError:  # an uncalibrated K still gives the image size
            width, height = int(msg.width), int(msg.height)
        self.depth_info = (width, height)

    def on_depth(self, stamp: float, depth: np.ndarray) -> None:
        """Keep a decoded ``[h, w]`` depth image in metres unless it cannot be used."""
        info = self.depth_info
        if info is not None and info != (depth.shape[1], depth.shape[0]):
            self.count('depth_size_mismatch')
        elif not (depth > 0).any():
            self.count('depth_all_invalid')
        else:
            self.depth_buffer.add(stamp, depth)

    def status(self) -> dict[str, str]:
        """Return the diagnostics values: dropped messages, odometry going back in time."""
        with self._lock:
            values = {f'metric_input_{k}': str(v) for k, v in sorted(self.faults.items())}
        source = self.pose_buffer or self.live_tf
        if source is not None:
            values['odometry_backwards'] = str(source.backwards)
        if self.pose_buffer is not None:
            values['odometry_restarts'] = str(self.pose_buffer.restarts)
        if self.live_tf is not None:
            values['tf_reparented'] = str(self.live_tf.reparented)
        return values
