"""What one live reconstruction keeps: the session, the global map, the trajectory, the segments.

:class:`ReconstructionState` holds them with their two locks, fuses results into the map,
restarts memory segments aligned to the previous one, and copies and restores everything a
saved session holds. :class:`~spann3r_ros.pipeline.worker.ReconstructionWorker` adds the
threads and the stages that feed it.

Lock order: :attr:`~ReconstructionState.model_lock` before :attr:`~ReconstructionState.lock`.
"""

from __future__ import annotations

from collections import deque
import logging
import threading
import time
from typing import Any, Optional

import numpy as np

from spann3r_model.geometry.align import Sim3
from spann3r_model.mapping.segments import correspondences, fit_segment
from spann3r_model.results import FrameResult
from spann3r_ros.pipeline.config import NodeConfig
from spann3r_ros.pipeline.frame_queue import Frame
from spann3r_ros.pipeline.metric_frame import MetricAlignment, MetricSettings
from spann3r_ros.pipeline.output import ResultGeometry

#: Fused frames kept before the first metric alignment (about 1 MB each at 224 x 224).
PREALIGNED_FRAMES = 200


def step_session(session: Any, frame: Frame) -> Any:
    """Run ``session.step`` on a frame with its camera and intrinsics."""
    return session.step(frame.rgb, frame.stamp, camera=frame.camera, K=frame.K)


class ReconstructionState:
    """The session, map, trajectory and segment bookkeeping of one reconstruction.

    :param session: a :class:`spann3r_model.session.StreamingSession` (owned from now on).
    :param voxel_map: the global map (points in the map frame).
    :param config: node settings (min_confidence and segment settings are read live).
    :param logger: where warnings go.
    :param fusion_times: where the seconds of each fusion into the map are appended.
    :param metric: where outputs are expressed; None for the reconstruction's own frame.
    """

    def __init__(self, session: Any, voxel_map: Any, config: NodeConfig, logger: logging.Logger,
                 fusion_times: deque[float], metric: Optional[MetricAlignment] = None) -> None:
        self.session = session
        #: Where the outputs are expressed (metres and the robot's frames, or as they are).
        self.metric = metric or MetricAlignment(MetricSettings(map_frame=config.map_frame))
        # Until the first metric alignment the voxel edge in reconstruction units is unknown:
        # fused frames wait here (compacted, at most PREALIGNED_FRAMES) and are fused then.
        self._prealigned: deque[tuple[np.ndarray, np.ndarray, np.ndarray]] = deque(
            maxlen=PREALIGNED_FRAMES)
        self._voxels_metric = not self.metric.active
        #: Frames dropped from the map because more than PREALIGNED_FRAMES waited.
        self.prealigned_dropped = 0
        self.voxel_map = voxel_map
        self.config = config
        self.log = logger
        #: Guards the session, the segment state and the frame bookkeeping (model stage).
        self.model_lock = threading.RLock()
        #: Guards the map, the trajectory and their version counters (output stage, readers).
        self.lock = threading.RLock()
        self.trajectory: list[tuple[float, np.ndarray]] = []
        #: Incremented whenever the trajectory is cleared (readers cache what they derive).
        self.trajectory_resets = 0
        #: Incremented whenever the map changes (the node republishes it when this moves).
        self.map_version = 0
        self.segment = 0
        self.segment_to_world = Sim3()
        self._fusion_times = fusion_times
        self._pending: dict[int, Frame] = {}
        # A refined result published but not yet fused into the map (see flush_map()).
        self._unmapped: Optional[tuple[FrameResult, ResultGeometry]] = None
        self._step_count = 0
        self._skip_below = 0
        self._segment_frames = 0
        # After a failed alignment, no new attempt before this many frames of the segment.
        self._segment_retry_at = 0
        # Recent refined frames of this segment: (frame, pts3d [H,W,3] in the segment's frame,
        # conf [H,W]).
        self._recent: deque[tuple[Frame, np.ndarray, np.ndarray]] = deque(
            maxlen=config.segment_overlap)

    @property
    def step_count(self) -> int:
        """Frames given to the session since the reconstruction (or segment) started."""
        return self._step_count

    @property
    def skip_below(self) -> int:
        """Results of frames with a lower index are not published (re-runs, resumed frames)."""
        return self._skip_below

    # -- the map and the trajectory ---------------------------------------------------------
    def _clear_state(self) -> None:
        """Clear the session, map, trajectory, pending frames and segments."""
        with self.model_lock, self.lock:
            self.session.reset()
            self._unmapped = None
            self.voxel_map.clear()
            self.voxel_map.voxel_size = self.config.map_voxel_size
            self._prealigned.clear()
            self._voxels_metric = not self.metric.active
            self.map_version += 1
            self.trajectory.clear()
            self.trajectory_resets += 1
            self._pending.clear()
            self._recent.clear()
            self._step_count = self._skip_below = self._segment_frames = 0
            self._segment_retry_at = 0
            self.segment = 0
            self.segment_to_world = Sim3()

    def flush_map(self) -> None:
        """Fuse a result that is published but not yet in the map (call before reading it)."""
        with self.lock:
            if self._unmapped is not None:
                refined, geometry = self._unmapped
                self._unmapped = None
                t0 = time.perf_counter()
                self._integrate(refined, geometry)
                self._fusion_times.append(time.perf_counter() - t0)
                self.map_version += 1

    def _integrate(self, refined: FrameResult, geometry: ResultGeometry) -> None:
        # Gathering by index is several times faster than boolean indexing of [H, W, 3].
        keep = np.flatnonzero(geometry.mask)
        if not len(keep):
            return
        points = (np.take(geometry.points_map.reshape(-1, 3), keep, axis=0),
                  np.take(np.asarray(refined.rgb).reshape(-1, 3), keep, axis=0),
                  np.take(geometry.conf.reshape(-1), keep))
        if not self._voxels_metric:
            to_frame = self.metric.transform()
            if to_frame is None:
                if len(self._prealigned) == self._prealigned.maxlen:
                    self.prealigned_dropped += 1
                self._prealigned.append(points)
                return
            # The map stays in reconstruction units; its voxel edge is map_voxel_size metres.
            self.voxel_map.voxel_size = self.config.map_voxel_size / to_frame.scale
            self._voxels_metric = True
            while self._prealigned:
                self.voxel_map.integrate(*self._prealigned.popleft())
        self.voxel_map.integrate(*points)

    def map_arrays(self, flush: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return a consistent copy of the map ``(xyz [M, 3], rgb [M, 3], conf [M])``.

        :param flush: first fuse the last published frame if the worker has not yet (False
            leaves that to the output stage, which does it right after publishing).
        """
        with self.lock:
            if flush:
                self.flush_map()
            xyz, rgb, conf = self.voxel_map.arrays()
            return np.array(xyz, np.float32), np.array(rgb, np.uint8), np.array(conf, np.float32)

    def trajectory_copy(self) -> list[tuple[float, np.ndarray]]:
        """Return the trajectory in the reconstruction's frame, ``[(stamp, T [4, 4])]``."""
        with self.lock:
            return [(s, T.copy()) for s, T in self.trajectory]

    def output_map(self, flush: bool = True
                   ) -> Optional[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
        """Return the map in the output frame, ``(frame_id, xyz, rgb, conf)``.

        :return: None while a metric alignment is not yet known.
        """
        to_frame = self.metric.transform()
        if to_frame is None:
            return None
        xyz, rgb, conf = self.map_arrays(flush)
        return self.metric.frame_id, to_frame.apply_points(xyz), rgb, conf

    def output_trajectory(self) -> Optional[tuple[str, list[tuple[float, np.ndarray]]]]:
        """Return ``(frame_id, [(stamp, T_frame_cam)])`` in the output frame, or None."""
        to_frame = self.metric.transform()
        if to_frame is None:
            return None
        return self.metric.frame_id, [(s, to_frame.apply_pose(T))
                                      for s, T in self.trajectory_copy()]

    # -- saved sessions ---------------------------------------------------------------------
    def _state_copy(self) -> dict[str, Any]:
        """Fuse what is unmapped, then copy everything a saved session holds.

        :return: ``{'session_tensors', 'session_meta', 'map_state', 'trajectory', 'extra'}``
            as :func:`spann3r_ros.pipeline.session_store.save` takes them (``extra`` holds the
            segment, its transform and the step count).
        """
        with self.lock:
            self.flush_map()
            return {
                'session_tensors': self.session.state_dict(),
                'session_meta': self.session.metadata(),
                'map_state': self.voxel_map.state_dict(),
                'trajectory': self.trajectory_copy(),
                'extra': {'segment': self.segment,
                          'segment_to_world': self.segment_to_world.to_list(),
                          'step_count': self._step_count,
                          'metric': self.metric.state_dict()},
            }

    def restore(self, state: dict[str, Any], prev_frame: Optional[Frame] = None) -> None:
        """Continue a saved session, as ``session_store.load`` returns it.

        The state is what :meth:`~spann3r_ros.pipeline.worker.ReconstructionWorker.snapshot`
        copied.

        :param state: ``{'session_tensors', 'session_meta', 'map_state', 'trajectory',
            'extra'}``.
        :param prev_frame: the input frame of the last saved frame (its refined result arrives
            with the first new frame and is published then), when the state has one.
        """
        extra = state.get('extra', {})
        with self.model_lock, self.lock:
            # First: a session of another metric_source is refused before anything changes.
            self.metric.load_state_dict(extra.get('metric', {'source': 'none'}))
            self.session.load_state(state['session_tensors'], state['session_meta'])
            self.voxel_map.load_state_dict(state['map_state'])
            self.trajectory[:] = state['trajectory']
            self.trajectory_resets += 1
            self.map_version += 1
            self._voxels_metric = not self.metric.active or \
                self.metric.transform() is not None
            self.segment = int(extra.get('segment', 0))
            self.segment_to_world = Sim3.from_list(extra.get('segment_to_world',
                                                             Sim3().to_list()))
            # New frames continue the saved indices.
            self._step_count = self._skip_below = int(extra.get('step_count', 0))
            prev = state['session_meta'].get('prev')
            if prev is not None and prev_frame is not None:
                self._pending[int(prev['index'])] = prev_frame
                self._skip_below = int(prev['index'])

    # -- segments ---------------------------------------------------------------------------
    def _segment_due(self, refined: FrameResult) -> bool:
        cfg = self.config
        if self._segment_frames <= cfg.segment_overlap:
            return False
        if self._segment_frames < self._segment_retry_at:
            return False
        if cfg.segment_max_frames and self._segment_frames >= cfg.segment_max_frames:
            return True
        if cfg.segment_min_confidence:
            return float(np.mean(refined.conf)) < cfg.segment_min_confidence
        return False

    def restart_segment(self) -> bool:
        """Start a new memory segment aligned to the current one through shared frames.

        The shared frames run through the session after a reset, and the fit decides whether
        the reset is kept: only when the Sim(3) is found does the new segment replace the
        current one. Otherwise the session state saved before the reset is restored, so the
        current segment continues exactly as if no restart had been tried (same memory, frame
        indices and ``segment_to_world``), and the next attempt waits ``segment_overlap``
        frames.

        :return: True when the new segment was aligned and started; False when there were too
            few shared frames or correspondences (then the current segment continues).
        """
        with self.model_lock:
            shared = [(frame, self.segment_to_world.apply_points(pts3d), conf)
                      for frame, pts3d, conf in self._recent]
            if len(shared) < 2:
                return False
            saved_state = (self.session.state_dict(), self.session.metadata())
            saved_pending = dict(self._pending)
            self.session.reset()
            self._pending.clear()
            new_points: dict[int, FrameResult] = {}
            for i, (frame, _, _) in enumerate(shared):
                self._pending[i] = frame
                refined = step_session(self.session, frame).refined
                if refined is not None:
                    new_points[refined.index] = refined
            # The last shared frame's own estimate (head 2) without advancing the session.
            last = self.session.flush()
            if last is not None:
                new_points.setdefault(last.index, last)
            used = [i for i in range(len(shared)) if i in new_points]
            src, dst = correspondences([shared[i][1] for i in used], [shared[i][2] for i in used],
                                       [new_points[i].pts3d for i in used],
                                       [new_points[i].conf for i in used],
                                       self.config.min_confidence)
            sim3 = fit_segment(src, dst)
            if sim3 is None:
                self.session.load_state(*saved_state)
                self._pending = saved_pending
                self._segment_retry_at = self._segment_frames + self.config.segment_overlap
                self.log.warning(f'segment {self.segment + 1}: no alignment from {len(src)} '
                                 f'shared points; segment {self.segment} continues')
                return False
            self._step_count = len(shared)
            # Results of the re-run frames were published by the previous segment already.
            self._skip_below = len(shared)
            self._segment_frames = self._segment_retry_at = 0
            self._recent.clear()
            self.segment += 1
            self.segment_to_world = sim3
            self.log.info(f'segment {self.segment}: aligned through {len(used)} shared frames, '
                          f'{len(src)} points, scale {sim3.scale:.4f}')
            return True
