"""The node's services: ``reset``, ``pause``, ``save_map`` and ``save_session``.

Mixed into :class:`~spann3r_ros.node.node.Spann3rNode`, which sets ``config``, ``worker``,
``gate`` and ``paused`` and contains each handler's failures (the service answers
``success: false`` with the reason). Files are written only inside ``output_dir``.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from rclpy.callback_groups import CallbackGroup
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from std_srvs.srv import SetBool, Trigger

from spann3r_ros.pipeline import session_store

#: Requests a service queues before it drops the oldest (rclpy's default keeps 10).
SERVICE_QUEUE_DEPTH = 128


class NodeServices(Node):
    """The service handlers of the node."""

    def _make_services(self, group: CallbackGroup) -> None:
        service_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=SERVICE_QUEUE_DEPTH,
                                 reliability=ReliabilityPolicy.RELIABLE,
                                 durability=DurabilityPolicy.VOLATILE)
        for srv_type, name, handler in ((Trigger, 'reset', self._on_reset),
                                        (Trigger, 'save_map', self._on_save_map),
                                        (Trigger, 'save_session', self._on_save_session),
                                        (SetBool, 'pause', self._on_pause)):
            self.create_service(srv_type, f'~/{name}', self._contained_service(name, handler),
                                qos_profile=service_qos, callback_group=group)

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
            expressed = self.worker.output_map()
            if expressed is None:
                raise ValueError(f'no metric alignment yet (state '
                                 f'{self.worker.metric.state}); nothing would be in a known '
                                 f'frame')
            _, xyz, rgb, conf = expressed
            _, trajectory = self.worker.output_trajectory()
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
