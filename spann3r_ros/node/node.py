"""The live Spann3R node: image topics in; clouds, images, pose, path, map and TF out.

Callbacks only decode and enqueue; one worker thread (:mod:`spann3r_ros.pipeline.worker`) owns the
streaming session. Frame conventions are documented in :mod:`spann3r_ros.formats.frames`.

No input can end the node: every callback contains its own failures. An image callback that
raises drops and counts the frame (the exception's type is in diagnostics), a service answers
``success: false`` with the reason, a timer logs and carries on.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timezone
import functools
import os
from pathlib import Path
import sys
import threading
import time
from typing import Any, Callable, Optional

from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped, TransformStamped
from nav_msgs.msg import Path as PathMsg
import numpy as np
import rclpy
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node
from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    qos_profile_sensor_data,
    QoSProfile,
    ReliabilityPolicy,
)
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from std_msgs.msg import Header
from std_srvs.srv import SetBool, Trigger

from spann3r_model.geometry.frames import quaternion_xyzw
from spann3r_ros.bags.messages import camera_info_K
from spann3r_ros.formats.images import compressed_to_rgb, image_to_rgb, ImageRejected
from spann3r_ros.formats.pointcloud import CloudPacker
from spann3r_ros.node.conversions import (
    camera_info_msg,
    cloud_msg,
    float_image_msg,
    stamp_to_seconds,
)
from spann3r_ros.node.diagnostics import diagnostics_msg, NodeStats
from spann3r_ros.node.params import declare_node_config, make_set_callback
from spann3r_ros.node.stop_request import StopRequest
from spann3r_ros.pipeline import session_store
from spann3r_ros.pipeline.config import NodeConfig
from spann3r_ros.pipeline.frame_queue import Frame
from spann3r_ros.pipeline.input_gate import InputGate, KEYFRAME_SKIP
from spann3r_ros.pipeline.output import Output
from spann3r_ros.pipeline.worker import ReconstructionWorker

#: Longest wait of the spin loop for work before it checks for a stop signal, in seconds.
SPIN_PERIOD = 0.2
#: The published path holds at most this many poses: the whole trajectory, thinned evenly as it
#: grows (the trajectory itself, saved by ``save_map``, keeps every pose).
MAX_PATH_POSES = 1000
#: The path is published at most this often, in seconds (and once more when poses are left).
PATH_PERIOD = 0.5
#: Requests a service queues before it drops the oldest (rclpy's default keeps 10).
SERVICE_QUEUE_DEPTH = 128
#: Seconds between two log lines about failures of the same callback.
FAILURE_LOG_PERIOD = 5.0


class Spann3rNode(Node):
    """ROS 2 node around :class:`~spann3r_ros.pipeline.worker.ReconstructionWorker`.

    :raises ValueError: for an invalid parameter, a missing or unloadable checkpoint, or a
        session in ``resume_from`` that does not match; the message says which.
    """

    def __init__(self, node_name: str = 'spann3r_node', **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self.config: NodeConfig = declare_node_config(self)
        cfg = self.config
        self.stats = NodeStats()
        self.paused = False
        self.gate = InputGate(cfg.keyframe_every, cfg.keyframe_min_interval)
        # Started in _load_session: the checkpoint's SHA-256 for save_session and resume_from.
        self._checkpoint_digest: Optional[session_store.FileDigest] = None
        self._map_version_published = 0  # an empty map is not published at startup
        self._last_stamp = None
        # Used by the worker thread only. The map (1 Hz, up to map_max_points) is packed in
        # temporary buffers rather than pinning memory for its largest size.
        self._points_packer = CloudPacker()
        # Path poses already built, so a frame converts only its own pose (see _publish_path).
        self._path_lock = threading.Lock()
        self._path_poses: list[PoseStamped] = []
        self._path_stride = 1
        self._path_synced = 0
        self._path_resets = 0
        self._path_published_at = -PATH_PERIOD
        self._path_header: Optional[Header] = None
        self._failure_logged: dict[str, float] = {}
        # Per camera: the newest usable camera_info (K, width, height), written by its callback.
        self._camera_info_lock = threading.Lock()
        self._camera_info: dict[int, tuple[np.ndarray, int, int]] = {}
        self._camera_info_ignored: Counter[str] = Counter()
        self._camera_info_warned: set[tuple[int, str]] = set()
        # Per camera: where the intrinsics of its newest output came from (output thread).
        self._intrinsics_used: dict[int, str] = {}
        session, self.model_config = self._load_session(cfg)
        from spann3r_model.mapping.voxel_map import VoxelMap
        voxel_map = VoxelMap(cfg.map_voxel_size, cfg.map_max_points)
        self.worker = ReconstructionWorker(session, voxel_map, cfg, self._publish_output,
                                           self.get_logger())
        if cfg.resume_from:
            self._resume(cfg.resume_from)
        self._make_interfaces(cfg)
        self.add_on_set_parameters_callback(make_set_callback(lambda: self.config,
                                                              self._apply_config))
        self.worker.start()
        self._ready_message = (
            f'ready on {session.device} ({cfg.precision}), {cfg.transport} input from '
            f'{", ".join(self._input_topics)}; map frame {cfg.map_frame!r}')

    def announce_ready(self) -> None:
        """Log that the node is ready (once it spins; launch files and scripts wait for it)."""
        self.get_logger().info(self._ready_message)

    # -- setup ------------------------------------------------------------------------------
    def _load_session(self, cfg: NodeConfig) -> tuple[Any, Any]:
        if not cfg.checkpoint:
            raise ValueError('parameter checkpoint is required (official spann3r.pth or a '
                             '.safetensors file)')
        path = Path(os.path.expanduser(cfg.checkpoint))
        if not path.is_file():
            raise ValueError(f'checkpoint {str(path)!r} does not exist or is not a file')
        self._checkpoint_digest = session_store.FileDigest(path)
        from spann3r_model.backends.process import apply_process_settings
        from spann3r_model.session import StreamingSession
        apply_process_settings(cfg.engine_config())
        session = StreamingSession.from_checkpoint(
            path, engine_config=cfg.engine_config(), memory_config=cfg.memory_config(),
            preset=cfg.model_preset or None, provisional=cfg.provisional,
            estimate_pose=cfg.estimate_pose)
        return session, session.model.config

    def _identity(self) -> dict:
        model_cfg = self.model_config.to_dict() if self.model_config is not None else {}
        return session_store.identity(model_cfg, self._checkpoint_digest.result(), self.config)

    def _resume(self, directory: str) -> None:
        state = session_store.load(directory, self._identity())
        worker = self.worker
        # The last saved frame's refined result arrives with the first new frame.
        prev, prev_frame = state['session_meta'].get('prev'), None
        if prev is not None:
            stamp = float(prev['stamp'])
            camera = int(prev.get('camera', 0))
            header = Header(stamp=_time_msg(stamp), frame_id=self.config.camera_frame_for(camera))
            prev_frame = Frame(camera=camera, stamp=stamp, rgb=None, header=header)
        worker.restore(state, prev_frame)
        self.get_logger().info(f'resumed {directory}: {len(state["trajectory"])} poses, '
                               f'{len(worker.voxel_map)} map points')

    def _make_interfaces(self, cfg: NodeConfig) -> None:
        services = MutuallyExclusiveCallbackGroup()
        timers = MutuallyExclusiveCallbackGroup()
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
            try:
                from tf2_ros import TransformBroadcaster
                self.tf = TransformBroadcaster(self)
            except ImportError:
                self.get_logger().warning('tf2_ros is not importable: TF map -> camera is not '
                                          'broadcast (pose and path are still published)')
        service_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=SERVICE_QUEUE_DEPTH,
                                 reliability=ReliabilityPolicy.RELIABLE,
                                 durability=DurabilityPolicy.VOLATILE)
        for srv_type, name, handler in ((Trigger, 'reset', self._on_reset),
                                        (Trigger, 'save_map', self._on_save_map),
                                        (Trigger, 'save_session', self._on_save_session),
                                        (SetBool, 'pause', self._on_pause)):
            self.create_service(srv_type, f'~/{name}', self._contained_service(name, handler),
                                qos_profile=service_qos, callback_group=services)
        if cfg.map_publish_rate > 0:
            self.create_timer(1.0 / cfg.map_publish_rate,
                              self._contained_timer('map', self._publish_map),
                              callback_group=timers)
        if cfg.diagnostics_rate > 0:
            self.create_timer(1.0 / cfg.diagnostics_rate,
                              self._contained_timer('diagnostics', self._publish_diagnostics),
                              callback_group=timers)
        self.create_timer(PATH_PERIOD, self._contained_timer('path', self._publish_pending_path),
                          callback_group=timers)

    # -- failure containment ----------------------------------------------------------------
    def _log_failure(self, where: str, exc: BaseException) -> None:
        now = time.monotonic()
        if now - self._failure_logged.get(where, -FAILURE_LOG_PERIOD) >= FAILURE_LOG_PERIOD:
            self._failure_logged[where] = now
            self.get_logger().error(f'{where} failed: {type(exc).__name__}: {exc}')

    def _contained_service(self, name: str, handler: Callable[[Any, Any], Any]
                           ) -> Callable[[Any, Any], Any]:
        @functools.wraps(handler)
        def call(request: Any, response: Any) -> Any:
            try:
                return handler(request, response)
            except Exception as exc:  # the node answers instead of dying of one request
                response.success = False
                response.message = f'{name} failed: {type(exc).__name__}: {exc}'
                self._log_failure(f'service {name}', exc)
                return response
        return call

    def _contained_timer(self, name: str, callback: Callable[[], None]) -> Callable[[], None]:
        @functools.wraps(callback)
        def tick() -> None:
            try:
                callback()
            except Exception as exc:  # a timer logs and carries on
                self._log_failure(f'{name} timer', exc)
        return tick

    def _apply_config(self, new: NodeConfig) -> None:
        self.config = new
        self.worker.config = new
        self.gate.configure(new.keyframe_every, new.keyframe_min_interval)

    # -- input ------------------------------------------------------------------------------
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
        self.worker.queue.put(Frame(camera=camera, stamp=stamp, rgb=rgb, header=msg.header,
                                    received=received, K=K))

    def _reject(self, reason: str, detail: str) -> None:
        if self.stats.reject(reason):
            self.get_logger().warning(f'dropped malformed frame ({reason}): {detail}; '
                                      f'{self.stats.rejected[reason]} so far')

    # -- output -----------------------------------------------------------------------------
    def _publish_output(self, out: Output) -> None:
        cfg = self.config
        stamp = out.frame.header.stamp
        self._last_stamp = stamp
        map_header = Header(stamp=stamp, frame_id=cfg.map_frame)
        cam_header = Header(stamp=stamp, frame_id=cfg.camera_frame_for(out.frame.camera))
        self.pub_points.publish(cloud_msg(map_header, out.points_map, out.rgb, out.conf,
                                          mask=out.mask, packer=self._points_packer))
        self.pub_conf.publish(float_image_msg(cam_header, out.conf))
        if out.depth is not None:
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
        if out.T_map_cam is not None:
            pose = _pose_stamped(map_header, out.T_map_cam)
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
            with worker.lock:
                total, resets = len(worker.trajectory), worker.trajectory_resets
                if resets != self._path_resets or total < self._path_synced:
                    self._path_poses.clear()
                    self._path_stride, self._path_synced, self._path_resets = 1, 0, resets
                start = self._path_synced
                new = worker.trajectory[start:total]
                self._path_synced = total
            for index, (stamp, T) in enumerate(new, start):
                if index % self._path_stride == 0:
                    self._path_poses.append(_pose_stamped(
                        Header(stamp=_time_msg(stamp), frame_id=header.frame_id), T))
                if len(self._path_poses) > MAX_PATH_POSES:
                    self._path_poses = self._path_poses[::2]
                    self._path_stride *= 2
            path = PathMsg(header=header)
            path.poses = list(self._path_poses)
            if new and (total - 1) % self._path_stride:  # the newest pose is always shown
                stamp, T = new[-1]
                path.poses.append(_pose_stamped(
                    Header(stamp=_time_msg(stamp), frame_id=header.frame_id), T))
        self.pub_path.publish(path)

    def _publish_pending_path(self) -> None:
        header = self._path_header
        if header is not None:
            self._publish_path(header)

    def _publish_map(self) -> None:
        # Read before the arrays: a change in between is published again at the next tick. No
        # flush: the worker fuses the newest frame itself right after publishing it.
        version = self.worker.map_version
        if version == self._map_version_published:
            return
        self._map_version_published = version
        xyz, rgb, conf = self.worker.map_arrays(flush=False)
        stamp = self._last_stamp or self.get_clock().now().to_msg()
        self.pub_map.publish(cloud_msg(Header(stamp=stamp, frame_id=self.config.map_frame),
                                       xyz, rgb, conf))

    def _publish_diagnostics(self) -> None:
        self.pub_diag.publish(diagnostics_msg(
            self.get_clock().now().to_msg(), node_name=self.get_name(),
            full_name=self.get_fully_qualified_name(),
            device=str(self.worker.session.device), stats=self.stats, worker=self.worker,
            paused=self.paused, map_points=len(self.worker.voxel_map),
            error=self.worker.error, intrinsics=self.intrinsics_status()))

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

    # -- services ---------------------------------------------------------------------------
    def _on_reset(self, request: Trigger.Request, response: Trigger.Response
                  ) -> Trigger.Response:
        self.worker.reset()
        self.gate.reset()
        response.success, response.message = True, 'memory, map and path cleared'
        self.get_logger().info('reset: a new reconstruction starts with the next frame')
        return response

    def _on_pause(self, request: SetBool.Request, response: SetBool.Response
                  ) -> SetBool.Response:
        self.paused = bool(request.data)
        if self.paused:
            self.worker.queue.clear()
        response.success, response.message = True, 'paused' if self.paused else 'running'
        return response

    def map_path(self) -> Path:
        """Return where ``save_map`` writes now, refusing anything outside ``output_dir``.

        :raises ValueError: when the resolved path leaves the output directory.
        """
        out_dir = self.config.output_path()
        name = self.config.map_filename or (
            'map_' + datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%S_%fZ') + '.ply')
        return _inside(out_dir, name)

    def _on_save_map(self, request: Trigger.Request, response: Trigger.Response
                     ) -> Trigger.Response:
        from spann3r_model.io.ply import write_ply
        from spann3r_model.io.trajectory import write_tum
        try:
            path = self.map_path()
            xyz, rgb, conf = self.worker.map_arrays()
            trajectory = self.worker.trajectory_copy()
            write_ply(path, xyz, rgb, conf)
            if trajectory:
                write_tum(path.with_name(path.stem + '_trajectory.txt'),
                          [s for s, _ in trajectory], np.stack([T for _, T in trajectory]))
        except (ValueError, OSError) as exc:
            response.success, response.message = False, f'save_map refused: {exc}'
            self.get_logger().error(response.message)
            return response
        response.success, response.message = True, str(path)
        self.get_logger().info(f'saved {len(xyz)} map points to {path}')
        return response

    def _on_save_session(self, request: Trigger.Request, response: Trigger.Response
                         ) -> Trigger.Response:
        worker = self.worker
        try:
            name = 'session_' + datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%S_%fZ')
            target = _inside(self.config.output_path(), name)
            ident = self._identity()
            # Copied under the worker's locks; written and fsynced without them.
            snapshot = worker.snapshot()
            extra = {'map_frame_convention': 'first camera optical frame in REP 103 axes',
                     **snapshot['extra']}
            session_store.save(target, session_tensors=snapshot['session_tensors'],
                               session_meta=snapshot['session_meta'],
                               map_state=snapshot['map_state'],
                               trajectory=snapshot['trajectory'], ident=ident, extra=extra)
        except (ValueError, OSError) as exc:
            response.success, response.message = False, f'save_session failed: {exc}'
            self.get_logger().error(response.message)
            return response
        response.success, response.message = True, str(target)
        return response

    def shutdown(self) -> bool:
        """Stop the worker threads.

        :return: True when they ended; False when a step still runs after the worker's stop
            timeout (logged), and the node must then not be destroyed.
        """
        return self.worker.stop()


def camera_info_topic(image_topic: str) -> str:
    """Return the camera_info topic next to an image topic, as image_transport pairs them.

    ``/cam/color/image_raw`` -> ``/cam/color/camera_info``.

    :param image_topic: the resolved (absolute, remapped) image topic.
    """
    namespace = image_topic.rstrip('/').rsplit('/', 1)[0]
    return f'{namespace}/camera_info'


def _inside(directory: Path, name: str) -> Path:
    """Return ``directory / name`` after checking it cannot land outside ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    try:
        root = directory.resolve()
        target = (root / name).resolve()
    except (RuntimeError, OSError) as exc:  # a symlink loop (RuntimeError before Python 3.13)
        raise ValueError(f'{name!r} cannot be resolved inside {directory}: {exc}') from None
    if target.parent != root:
        raise ValueError(f'{name!r} resolves to {target}, outside the output directory {root}')
    return target


def _time_msg(seconds: float) -> Any:
    from builtin_interfaces.msg import Time
    sec = int(np.floor(seconds))
    return Time(sec=sec, nanosec=min(int(round((seconds - sec) * 1e9)), 999_999_999))


def _pose_stamped(header: Header, T: np.ndarray) -> PoseStamped:
    msg = PoseStamped(header=header)
    p, q = msg.pose.position, msg.pose.orientation
    p.x, p.y, p.z = (float(v) for v in T[:3, 3])
    q.x, q.y, q.z, q.w = (float(v) for v in quaternion_xyzw(T[:3, :3]))
    return msg


def main(args: Optional[list[str]] = None) -> int:
    """Run the node until Ctrl-C, SIGTERM or an external shutdown.

    :return: exit code 0, or 1 on a setup error.
    """
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    stop = StopRequest()
    stop.install()
    node: Optional[Spann3rNode] = None
    executor: Optional[MultiThreadedExecutor] = None
    code = 0
    try:
        node = Spann3rNode()
        stop.interruptible = False
        executor = MultiThreadedExecutor(num_threads=4)
        executor.add_node(node)
        node.announce_ready()
        while rclpy.ok() and not stop.requested:
            executor.spin_once(timeout_sec=SPIN_PERIOD)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass  # Ctrl-C, also while still starting up, is a normal way to stop
    except (ValueError, OSError) as exc:
        rclpy.logging.get_logger('spann3r_node').fatal(f'cannot start: {exc}')
        code = 1
    finally:
        stop.interruptible = False  # a second Ctrl-C must not interrupt the clean-up
        stopped = node.shutdown() if node is not None else False
        if executor is not None:
            executor.shutdown()
        if node is not None and stopped:
            node.destroy_node()
        rclpy.try_shutdown()
        stop.restore()
    return code


if __name__ == '__main__':
    sys.exit(main())
