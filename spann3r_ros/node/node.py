"""The live Spann3R node: image topics in; clouds, images, pose, path, map and TF out.

Callbacks only decode and enqueue; one worker thread (:mod:`spann3r_ros.pipeline.worker`) owns the
streaming session. Frame conventions are documented in :mod:`spann3r_model.geometry.frames`.

No input can end the node: every callback contains its own failures. An image callback that
raises drops and counts the frame (the exception's type is in diagnostics), a service answers
``success: false`` with the reason, a timer logs and carries on.

The node's parts: its input (:mod:`.image_input`), its odometry and depth input
(:mod:`.metric_input`), its output (:mod:`.publishing`) and its services (:mod:`.services`);
this module builds the node, contains failures and runs it.
"""

from __future__ import annotations

from collections import Counter
import functools
import os
from pathlib import Path
import sys
import threading
import time
from typing import Any, Callable, Optional

from geometry_msgs.msg import PoseStamped
import numpy as np
import rclpy
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.signals import SignalHandlerOptions
from std_msgs.msg import Header

from spann3r_ros.formats.pointcloud import CloudPacker
from spann3r_ros.node.diagnostics import NodeStats
from spann3r_ros.node.image_input import ImageInput
from spann3r_ros.node.metric_input import MetricInput
from spann3r_ros.node.params import declare_node_config, make_set_callback
from spann3r_ros.node.publishing import OutputPublishing, PATH_PERIOD, time_msg
from spann3r_ros.node.services import NodeServices
from spann3r_ros.node.stop_request import StopRequest
from spann3r_ros.pipeline import session_store
from spann3r_ros.pipeline.config import NodeConfig
from spann3r_ros.pipeline.frame_queue import Frame
from spann3r_ros.pipeline.input_gate import InputGate
from spann3r_ros.pipeline.worker import ReconstructionWorker

#: Longest wait of the spin loop for work before it checks for a stop signal, in seconds.
SPIN_PERIOD = 0.2
#: Seconds between two log lines about failures of the same callback.
FAILURE_LOG_PERIOD = 5.0


class Spann3rNode(ImageInput, MetricInput, OutputPublishing, NodeServices):
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
        metric = self._make_metric(cfg)
        self.worker = ReconstructionWorker(session, voxel_map, cfg, self._publish_output,
                                           self.get_logger(), metric=metric)
        if cfg.resume_from:
            self._resume(cfg.resume_from)
        self._make_interfaces(cfg)
        self.add_on_set_parameters_callback(make_set_callback(lambda: self.config,
                                                              self._apply_config))
        self.worker.start()
        self._ready_message = (
            f'ready on {session.device} ({cfg.precision}), {cfg.transport} input from '
            f'{", ".join(self._input_topics)}; outputs in {metric.frame_id!r}'
            + ('' if not metric.active else f' once aligned ({cfg.metric_source})'))

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
            header = Header(stamp=time_msg(stamp), frame_id=self.config.camera_frame_for(camera))
            prev_frame = Frame(camera=camera, stamp=stamp, rgb=None, header=header)
        worker.restore(state, prev_frame)
        self.get_logger().info(f'resumed {directory}: {len(state["trajectory"])} poses, '
                               f'{len(worker.voxel_map)} map points')

    def _make_interfaces(self, cfg: NodeConfig) -> None:
        services = MutuallyExclusiveCallbackGroup()
        timers = MutuallyExclusiveCallbackGroup()
        self._make_subscriptions(cfg)
        self._make_publishers(cfg)
        self._make_services(services)
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

    def shutdown(self) -> bool:
        """Stop the worker threads.

        :return: True when they ended; False when a step still runs after the worker's stop
            timeout (logged), and the node must then not be destroyed.
        """
        return self.worker.stop()


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
