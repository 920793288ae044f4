"""The node's input: image and camera_info subscriptions, admission and decoding of frames.

Mixed into :class:`~spann3r_ros.node.node.Spann3rNode`, which sets ``config``, ``stats``,
``paused``, ``gate``, ``worker`` and the camera_info state in its constructor. A callback only
decodes and enqueues; one that raises drops and counts the frame.
"""

from __future__ import annotations

import time
from typing import Any, Optional

import numpy as np
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, qos_profile_sensor_data, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from spann3r_ros.formats.images import compressed_to_rgb, image_to_rgb, ImageRejected
from spann3r_ros.formats.message_fields import camera_info_K
from spann3r_ros.node.conversions import stamp_to_seconds
from spann3r_ros.pipeline.config import NodeConfig
from spann3r_ros.pipeline.frame_queue import Frame
from spann3r_ros.pipeline.input_gate import KEYFRAME_SKIP


class ImageInput(Node):
    """Subscriptions and callbacks of the node's cameras (one image and one camera_info each)."""

    def _make_subscriptions(self, cfg: NodeConfig) -> None:
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=cfg.qos_depth,
                         reliability=(ReliabilityPolicy.RELIABLE if cfg.qos_reliability ==
                                      'reliable' else ReliabilityPolicy.BEST_EFFORT),
                         durability=qos_profile_sensor_data.durability)
        self._input_topics = []
        for camera, topic in enumerate(cfg.image_topics):
            if cfg.transport == 'compressed':
                name, msg_type = topic.rstrip('/') + '/compressed', CompressedImage
            else:
                name, msg_type = topic, Image
            # One exclusive group per camera: its frames are decoded one at a time, in arrival
            # order, while several cameras still decode in parallel.
            subscription = self.create_subscription(
                msg_type, name, self._make_callback(camera), qos,
                callback_group=MutuallyExclusiveCallbackGroup())
            # The resolved name, after namespace and remapping: what the node really listens to.
            self._input_topics.append(subscription.topic_name)
            info_topic = camera_info_topic(self.resolve_topic_name(topic))
            if info_topic == self.resolve_topic_name('camera_info'):
                # An image topic in the node's own namespace would pair with its own output.
                self.get_logger().warning(
                    f'camera {camera}: its camera_info topic {info_topic} is the output '
                    'of this node; its focal is estimated from the images')
                continue
            self.create_subscription(
                CameraInfo, info_topic, self._make_camera_info_callback(camera),
                qos_profile_sensor_data, callback_group=MutuallyExclusiveCallbackGroup())

    def _make_callback(self, camera: int) -> Any:
        def callback(msg: Any) -> None:
            try:
                self._on_image(camera, msg)
            except Exception as exc:  # one bad message must not end the executor
                self._reject(f'error_{type(exc).__name__}',
                             f'{type(exc).__name__} in the image callback: {exc}')
        return callback

    def _make_camera_info_callback(self, camera: int) -> Any:
        def callback(msg: CameraInfo) -> None:
            try:
                self._on_camera_info(camera, msg)
            except Exception as exc:  # one bad message must not end the executor
                self._log_failure(f'camera_info callback of camera {camera}', exc)
        return callback

    def _on_camera_info(self, camera: int, msg: CameraInfo) -> None:
        try:
            info = camera_info_K(msg)
        except ValueError as exc:
            # An uncalibrated driver publishes K = 0; the focal is estimated instead.
            self._ignore_camera_info(camera, 'uncalibrated', str(exc))
            return
        with self._camera_info_lock:
            self._camera_info[camera] = info

    def _ignore_camera_info(self, camera: int, reason: str, detail: str) -> None:
        with self._camera_info_lock:
            self._camera_info_ignored[reason] += 1
            first = (camera, reason) not in self._camera_info_warned
            self._camera_info_warned.add((camera, reason))
        if first:
            self.get_logger().warning(f'camera {camera}: camera_info ignored ({reason}): '
                                      f'{detail}; its focal is estimated from the images')

    def _intrinsics_for(self, camera: int, width: int, height: int) -> Optional[np.ndarray]:
        """Return the K of the camera's newest camera_info, if it is for images of this size."""
        with self._camera_info_lock:
            info = self._camera_info.get(camera)
        if info is None:
            return None
        K, info_width, info_height = info
        if (info_width, info_height) != (width, height) and (info_width or info_height):
            self._ignore_camera_info(camera, 'size_mismatch',
                                     f'it is for {info_width}x{info_height} images, the images '
                                     f'are {width}x{height}')
            return None
        return K

    def _on_image(self, camera: int, msg: Any) -> None:
        received = time.monotonic()
        self.stats.count('received')
        if self.paused:
            self.stats.count('paused')
            return
        # Admission first: a frame that keyframing drops or whose stamp goes backwards is never
        # decoded.
        stamp = stamp_to_seconds(msg.header)
        decision = self.gate.check(camera, stamp)
        if decision == KEYFRAME_SKIP:
            self.stats.count('skipped')
            return
        if decision is not None:
            self._reject(decision, f'stamp {stamp:.6f} of camera {camera} rejected')
            return
        try:
            if isinstance(msg, CompressedImage):
                rgb = compressed_to_rgb(msg, self.config.max_image_pixels)
            else:
                rgb = image_to_rgb(msg, self.config.max_image_pixels)
        except ImageRejected as exc:
            self._reject(exc.reason, str(exc))
            return
        K = self._intrinsics_for(camera, rgb.shape[1], rgb.shape[0])
        # The depth image of this stamp, if it came first (else the output stage looks again).
        depth = self._depth_buffer.at(stamp) if camera == 0 and self._depth_buffer else None
        self.worker.queue.put(Frame(camera=camera, stamp=stamp, rgb=rgb, header=msg.header,
                                    received=received, K=K, depth=depth))

    def _reject(self, reason: str, detail: str) -> None:
        if self.stats.reject(reason):
            self.get_logger().warning(f'dropped malformed frame ({reason}): {detail}; '
                                      f'{self.stats.rejected[reason]} so far')

    def intrinsics_status(self) -> dict[str, str]:
        """Return the diagnostics values on intrinsics: their source per camera, ignored infos.

        ``intrinsics_camera_<i>`` is ``camera_info``, ``estimated`` or ``pending`` (no output of
        that camera yet); ``camera_info_ignored_<reason>`` counts camera_info messages
        (``uncalibrated``) or frames (``size_mismatch``) whose camera_info was not used.
        """
        values = {f'intrinsics_camera_{camera}': self._intrinsics_used.get(camera, 'pending')
                  for camera in range(len(self.config.image_topics))}
        with self._camera_info_lock:
            values.update({f'camera_info_ignored_{reason}': str(n)
                           for reason, n in sorted(self._camera_info_ignored.items())})
        return values


def camera_info_topic(image_topic: str) -> str:
    """Return the camera_info topic next to an image topic, as image_transport pairs them.

    ``/cam/color/image_raw`` -> ``/cam/color/camera_info``.

    :param image_topic: the resolved (absolute, remapped) image topic.
    """
    namespace = image_topic.rstrip('/').rsplit('/', 1)[0]
    return f'{namespace}/camera_info'
