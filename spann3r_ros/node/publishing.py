"""The node's output: clouds, images, camera_info, pose, path, map, TF and diagnostics.

Mixed into :class:`~spann3r_ros.node.node.Spann3rNode`, which sets ``config``, ``worker``,
``stats`` and the path state in its constructor. :meth:`OutputPublishing._publish_output` runs on
the worker's output thread; the map, path and diagnostics are also published by timers.
"""

from __future__ import annotations

import time
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped, TransformStamped
from nav_msgs.msg import Path as PathMsg
import numpy as np
from rclpy.node import Node
from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    qos_profile_sensor_data,
    QoSProfile,
    ReliabilityPolicy,
)
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import Header

from spann3r_model.geometry.frames import quaternion_xyzw
from spann3r_ros.node.conversions import camera_info_msg, cloud_msg, float_image_msg
from spann3r_ros.node.diagnostics import diagnostics_msg
from spann3r_ros.pipeline.config import NodeConfig
from spann3r_ros.pipeline.output import Output

#: The published path holds at most this many poses: the whole trajectory, thinned evenly as it
#: grows (the trajectory itself, saved by ``save_map``, keeps every pose).
MAX_PATH_POSES = 1000
#: The path is published at most this often, in seconds (and once more when poses are left).
PATH_PERIOD = 0.5


class OutputPublishing(Node):
    """Publishers of the node and the messages built from each output."""

    def _make_publishers(self, cfg: NodeConfig) -> None:
        sensor = qos_profile_sensor_data
        latched = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                             reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.pub_points = self.create_publisher(PointCloud2, 'points', sensor)
        self.pub_map = self.create_publisher(PointCloud2, 'map', latched)
        self.pub_conf = self.create_publisher(Image, 'confidence', sensor)
        self.pub_depth = self.create_publisher(Image, 'depth', sensor)
        self.pub_info = self.create_publisher(CameraInfo, 'camera_info', sensor)
        self.pub_pose = self.create_publisher(PoseStamped, 'pose', 10)
        self.pub_path = self.create_publisher(PathMsg, 'path', 10)
        self.pub_diag = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self.tf = None
        if cfg.publish_tf:
            self.tf = make_tf_broadcaster(self)
    def _publish_output(self, out: Output) -> None:
        cfg = self.config
        stamp = out.frame.header.stamp
        self._last_stamp = stamp
        map_header = Header(stamp=stamp, frame_id=out.frame_id or cfg.map_frame)
        cam_header = Header(stamp=stamp, frame_id=cfg.camera_frame_for(out.frame.camera))
        # Without a metric alignment yet, only what has no frame or scale goes out.
        metric = not out.metric_held
        if metric:
            self.pub_points.publish(cloud_msg(map_header, out.points_map, out.rgb, out.conf,
                                              mask=out.mask, packer=self._points_packer))
        self.pub_conf.publish(float_image_msg(cam_header, out.conf))
        if out.depth is not None and metric:
            self.pub_depth.publish(float_image_msg(cam_header, out.depth))
        if out.focal is not None or out.K is not None:
            self.pub_info.publish(camera_info_msg(cam_header, out.conf.shape[0], out.focal,
                                                  K=out.K))
        camera = out.frame.camera
        if out.intrinsics is not None and self._intrinsics_used.get(camera) != out.intrinsics:
            self._intrinsics_used[camera] = out.intrinsics
            fx, fy, cx, cy = (out.K[0, 0], out.K[1, 1], out.K[0, 2], out.K[1, 2]) \
                if out.K is not None else (out.focal, out.focal, np.nan, np.nan)
            source = ('from its camera_info' if out.intrinsics == 'camera_info'
                      else 'estimated from its first frame')
            self.get_logger().info(f'camera {camera}: intrinsics {source} (model crop fx '
                                   f'{fx:.1f}, fy {fy:.1f}, cx {cx:.1f}, cy {cy:.1f})')
        if out.T_map_cam is not None and metric:
            pose = pose_stamped(map_header, out.T_map_cam)
            self.pub_pose.publish(pose)
            self._publish_path(map_header, due_only=True)
            if self.tf is not None:
                t = TransformStamped(header=map_header, child_frame_id=cam_header.frame_id)
                t.transform.translation.x, t.transform.translation.y, \
                    t.transform.translation.z = (float(v) for v in out.T_map_cam[:3, 3])
                t.transform.rotation = pose.pose.orientation
                self.tf.sendTransform(t)

    def _publish_path(self, header: Header, due_only: bool = False) -> None:
        """Publish the path: at most every :data:`PATH_PERIOD` s, at most ``MAX_PATH_POSES``.

        Only poses added since the last call are converted, and the path is thinned evenly as
        the trajectory grows, so a frame's cost does not grow with the length of the run.
        """
        with self._path_lock:
            self._path_header = header
            now = time.monotonic()
            if due_only and now - self._path_published_at < PATH_PERIOD:
                return
            self._path_published_at = now
            self._path_header = None
            worker = self.worker
            # The trajectory is kept in the reconstruction's frame; a new metric alignment
            # re-expresses the whole path.
            metric = worker.metric
            version, to_frame = metric.version, metric.transform()
            if to_frame is None:
                return
            with worker.lock:
                total, resets = len(worker.trajectory), (worker.trajectory_resets, version)
                if resets != self._path_resets or total < self._path_synced:
                    self._path_poses.clear()
                    self._path_stride, self._path_synced, self._path_resets = 1, 0, resets
                start = self._path_synced
                new = worker.trajectory[start:total]
                self._path_synced = total
            header = Header(stamp=header.stamp, frame_id=metric.frame_id)
            new = [(stamp, to_frame.apply_pose(T)) for stamp, T in new]
            for index, (stamp, T) in enumerate(new, start):
                if index % self._path_stride == 0:
                    self._path_poses.append(pose_stamped(
                        Header(stamp=time_msg(stamp), frame_id=header.frame_id), T))
                if len(self._path_poses) > MAX_PATH_POSES:
                    self._path_poses = self._path_poses[::2]
                    self._path_stride *= 2
            path = PathMsg(header=header)
            path.poses = list(self._path_poses)
            if new and (total - 1) % self._path_stride:  # the newest pose is always shown
                stamp, T = new[-1]
                path.poses.append(pose_stamped(
                    Header(stamp=time_msg(stamp), frame_id=header.frame_id), T))
        self.pub_path.publish(path)

    def _publish_pending_path(self) -> None:
        header = self._path_header
        if header is not None:
            self._publish_path(header)

    def _publish_map(self) -> None:
        # Read before the arrays: a change in between is published again at the next tick. No
        # flush: the worker fuses the newest frame itself right after publishing it.
        version = (self.worker.map_version, self.worker.metric.version)
        if version == self._map_version_published:
            return
        expressed = self.worker.output_map(flush=False)
        if expressed is None:
            return  # no metric alignment yet: published once there is one
        self._map_version_published = version
        frame_id, xyz, rgb, conf = expressed
        stamp = self._last_stamp or self.get_clock().now().to_msg()
        self.pub_map.publish(cloud_msg(Header(stamp=stamp, frame_id=frame_id), xyz, rgb, conf))

    def _publish_diagnostics(self) -> None:
        self.pub_diag.publish(diagnostics_msg(
            self.get_clock().now().to_msg(), node_name=self.get_name(),
            full_name=self.get_fully_qualified_name(),
            device=str(self.worker.session.device), stats=self.stats, worker=self.worker,
            paused=self.paused, map_points=len(self.worker.voxel_map),
            error=self.worker.error,
            intrinsics={**self.intrinsics_status(), **self.metric_input_status()},
            metric=self.worker.metric.status()))


def make_tf_broadcaster(node: Node) -> Any:
    """Return an object with ``sendTransform(TransformStamped)`` publishing on ``/tf``.

    tf2_ros's broadcaster where it imports; otherwise a plain ``tf2_msgs/TFMessage`` publisher
    on ``/tf`` with tf2's QoS (what that broadcaster does); None, with a warning, when neither
    tf2_ros nor tf2_msgs is importable.
    """
    try:
        from tf2_ros import TransformBroadcaster
        return TransformBroadcaster(node)
    except ImportError:
        pass
    try:
        from tf2_msgs.msg import TFMessage
    except ImportError:
        node.get_logger().warning('neither tf2_ros nor tf2_msgs is importable: TF is not '
                                  'broadcast (pose and path are still published)')
        return None
    return TfPublisher(node.create_publisher(TFMessage, '/tf', QoSProfile(
        history=HistoryPolicy.KEEP_LAST, depth=100, reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.VOLATILE)), TFMessage)


class TfPublisher:
    """``sendTransform`` over a plain ``/tf`` publisher (without tf2_ros)."""

    def __init__(self, publisher: Any, message_type: Any) -> None:
        self.publisher = publisher
        self.message_type = message_type

    def sendTransform(self, transform: TransformStamped) -> None:  # noqa: N802 - tf2_ros API
        """Publish one transform."""
        self.publisher.publish(self.message_type(transforms=[transform]))


def time_msg(seconds: float) -> Any:
    from builtin_interfaces.msg import Time
    sec = int(np.floor(seconds))
    return Time(sec=sec, nanosec=min(int(round((seconds - sec) * 1e9)), 999_999_999))


def pose_stamped(header: Header, T: np.ndarray) -> PoseStamped:
    msg = PoseStamped(header=header)
    p, q = msg.pose.position, msg.pose.orientation
    p.x, p.y, p.z = (float(v) for v in T[:3, 3])
    q.x, q.y, q.z, q.w = (float(v) for v in quaternion_xyzw(T[:3, :3]))
    return msg
