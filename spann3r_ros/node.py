"""The live Spann3R node: image topics in; clouds, images, pose, path, map and TF out.

Callbacks only decode and enqueue; one worker thread (:mod:`spann3r_ros.worker`) owns the
streaming session. Frame conventions are documented in :mod:`spann3r_ros.frames`.
"""

from __future__ import annotations

from collections import deque
from datetime import datetime, timezone
import os
from pathlib import Path
import sys
import time
from typing import Any, Optional

from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped, TransformStamped
from nav_msgs.msg import Path as PathMsg
import numpy as np
import rclpy
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
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

from . import session_store
from .cloud_packer import CloudPacker
from .conversions import (
    camera_info_msg,
    cloud_msg,
    compressed_to_rgb,
    float_image_msg,
    image_to_rgb,
    ImageRejected,
    stamp_to_seconds,
)
from .diagnostics import diagnostics_msg, NodeStats
from .frame_queue import Frame
from .frames import quaternion_xyzw
from .input_gate import InputGate, KEYFRAME_SKIP
from .node_config import NodeConfig
from .params import declare_node_config, make_set_callback
from .segments import Sim3
from .stop_request import StopRequest
from .worker import Output, ReconstructionWorker

#: Longest wait of the spin loop for work before it checks for a stop signal, in seconds.
SPIN_PERIOD = 0.2
#: The published path keeps at most this many poses (the trajectory itself is unbounded).
MAX_PATH_POSES = 10000


class Spann3rNode(Node):
    """ROS 2 node around :class:`~spann3r_ros.worker.ReconstructionWorker`.

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
        self._checkpoint_sha: Optional[str] = None
        self._map_version_published = 0  # an empty map is not published at startup
        self._last_stamp = None
        # Used by the worker thread only. The map (1 Hz, up to map_max_points) is packed in
        # temporary buffers rather than pinning memory for its largest size.
        self._points_packer = CloudPacker()
        # Path poses already built, so a frame converts only its own pose (see _publish_path).
        self._path_poses: deque[PoseStamped] = deque(maxlen=MAX_PATH_POSES)
        self._path_synced = 0
        self._path_resets = 0
        session, self.model_config = self._load_session(cfg)
        from spann3r_model.mapping import VoxelMap
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
        from spann3r_model.session import StreamingSession
        session = StreamingSession.from_checkpoint(
            path, engine_config=cfg.engine_config(), memory_config=cfg.memory_config(),
            preset=cfg.model_preset or None, provisional=cfg.provisional,
            estimate_pose=cfg.estimate_pose)
        return session, session.model.config if hasattr(session, 'model') else None

    def _identity(self) -> dict:
        if self._checkpoint_sha is None:
            self._checkpoint_sha = session_store.file_sha256(
                os.path.expanduser(self.config.checkpoint))
        model_cfg = self.model_config.to_dict() if self.model_config is not None else {}
        return session_store.identity(model_cfg, self._checkpoint_sha, self.config)

    def _resume(self, directory: str) -> None:
        state = session_store.load(directory, self._identity())
        worker = self.worker
        with worker.lock:
            worker.session.load_state(state['session_tensors'], state['session_meta'])
            worker.voxel_map.load_state_dict(state['map_state'])
            worker.trajectory[:] = state['trajectory']
            worker.trajectory_resets += 1
            worker.map_version += 1
            extra = state['extra']
            worker.segment = int(extra.get('segment', 0))
            worker.segment_to_world = Sim3.from_list(extra.get('segment_to_world',
                                                               Sim3().to_list()))
            # New frames continue the saved indices; the last saved frame's refined result
            # arrives with the first new frame and is published then.
            worker._step_count = int(extra.get('step_count', 0))
            worker._skip_below = worker._step_count
            prev = state['session_meta'].get('prev')
            if prev is not None:
                stamp = float(prev['stamp'])
                header = Header(stamp=_time_msg(stamp), frame_id=self.config.camera_frame)
                worker._pending[int(prev['index'])] = Frame(camera=0, stamp=stamp, rgb=None,
                                                            header=header)
                worker._skip_below = int(prev['index'])
        self.get_logger().info(f'resumed {directory}: {len(state["trajectory"])} poses, '
                               f'{len(worker.voxel_map)} map points')

    def _make_interfaces(self, cfg: NodeConfig) -> None:
        inputs = ReentrantCallbackGroup()
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
            subscription = self.create_subscription(msg_type, name, self._make_callback(camera),
                                                    qos, callback_group=inputs)
            # The resolved name, after namespace and remapping: what the node really listens to.
            self._input_topics.append(subscription.topic_name)
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
        self.create_service(Trigger, '~/reset', self._on_reset, callback_group=services)
        self.create_service(Trigger, '~/save_map', self._on_save_map, callback_group=services)
        self.create_service(Trigger, '~/save_session', self._on_save_session,
                            callback_group=services)
        self.create_service(SetBool, '~/pause', self._on_pause, callback_group=services)
        if cfg.map_publish_rate > 0:
            self.create_timer(1.0 / cfg.map_publish_rate, self._publish_map,
                              callback_group=timers)
        if cfg.diagnostics_rate > 0:
            self.create_timer(1.0 / cfg.diagnostics_rate, self._publish_diagnostics,
                              callback_group=timers)

    def _apply_config(self, new: NodeConfig) -> None:
        self.config = new
        self.worker.config = new
        self.gate.configure(new.keyframe_every, new.keyframe_min_interval)

    # -- input ------------------------------------------------------------------------------
    def _make_callback(self, camera: int) -> Any:
        def callback(msg: Any) -> None:
            self._on_image(camera, msg)
        return callback

    def _on_image(self, camera: int, msg: Any) -> None:
        received = time.monotonic()
        self.stats.count('received')
        if self.paused:
            self.stats.count('paused')
            return
        stamp = stamp_to_seconds(msg.header)
        try:
            if isinstance(msg, CompressedImage):
                rgb = compressed_to_rgb(msg, self.config.max_image_pixels)
            else:
                rgb = image_to_rgb(msg, self.config.max_image_pixels)
        except ImageRejected as exc:
            self._reject(exc.reason, str(exc))
            return
        decision = self.gate.check(camera, stamp)
        if decision == KEYFRAME_SKIP:
            self.stats.count('skipped')
            return
        if decision is not None:
            self._reject(decision, f'stamp {stamp:.6f} of camera {camera} rejected')
            return
        self.worker.queue.put(Frame(camera=camera, stamp=stamp, rgb=rgb, header=msg.header,
                                    received=received))

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
        if out.focal is not None:
            self.pub_info.publish(camera_info_msg(cam_header, out.conf.shape[0], out.focal))
        if out.T_map_cam is not None:
            pose = _pose_stamped(map_header, out.T_map_cam)
            self.pub_pose.publish(pose)
            self._publish_path(map_header)
            if self.tf is not None:
                t = TransformStamped(header=map_header, child_frame_id=cam_header.frame_id)
                t.transform.translation.x, t.transform.translation.y, \
                    t.transform.translation.z = (float(v) for v in out.T_map_cam[:3, 3])
                t.transform.rotation = pose.pose.orientation
                self.tf.sendTransform(t)

    def _publish_path(self, header: Header) -> None:
        # Only poses added since the last call are converted: rebuilding every pose of a long
        # trajectory each frame made the cost of a frame grow with the length of the run.
        worker = self.worker
        with worker.lock:
            total, resets = len(worker.trajectory), worker.trajectory_resets
            if resets != self._path_resets or total < self._path_synced:
                self._path_poses.clear()
                self._path_synced, self._path_resets = 0, resets
            new = worker.trajectory[max(self._path_synced, total - MAX_PATH_POSES):total]
            self._path_synced = total
        for stamp, T in new:
            self._path_poses.append(_pose_stamped(
                Header(stamp=_time_msg(stamp), frame_id=header.frame_id), T))
        path = PathMsg(header=header)
        path.poses = list(self._path_poses)
        self.pub_path.publish(path)

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
            error=self.worker.error))

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
        from spann3r_model.export import write_ply, write_tum
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
            with worker.lock:
                worker.flush_map()
                extra = {'map_frame_convention': 'first camera optical frame in REP 103 axes',
                         'segment': worker.segment,
                         'segment_to_world': worker.segment_to_world.to_list(),
                         'step_count': worker._step_count}
                session_store.save(target, session_tensors=worker.session.state_dict(),
                                   session_meta=worker.session.metadata(),
                                   map_state=worker.voxel_map.state_dict(),
                                   trajectory=worker.trajectory_copy(), ident=ident,
                                   extra=extra)
        except (ValueError, OSError) as exc:
            response.success, response.message = False, f'save_session failed: {exc}'
            self.get_logger().error(response.message)
            return response
        response.success, response.message = True, str(target)
        return response

    def shutdown(self) -> None:
        """Stop the worker thread."""
        self.worker.stop()


def _inside(directory: Path, name: str) -> Path:
    """Return ``directory / name`` after checking it cannot land outside ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    root = directory.resolve()
    target = (root / name).resolve()
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
        if node is not None:
            node.shutdown()
        if executor is not None:
            executor.shutdown()
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
        stop.restore()
    return code


if __name__ == '__main__':
    sys.exit(main())
