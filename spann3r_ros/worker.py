"""The inference worker: one thread owns the streaming session, the map and the trajectory.

ROS-free on purpose: the node feeds :class:`LatestFrameQueue` from its callbacks and receives
:class:`Output` objects through a callback; everything that touches the model happens here, under
one lock, so ``reset``/``save`` requests from service threads never race a running step.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
import logging
import threading
import time
from typing import Any, Callable, Optional

import numpy as np

from spann3r_model.geometry import (
    depth_from_pointmap,
    optical_to_rep103_points,
    optical_to_rep103_pose,
)
from spann3r_model.results import FrameResult, MemoryStats

from .frame_queue import Frame, LatestFrameQueue
from .node_config import NodeConfig
from .segments import correspondences, fit_segment, Sim3

_LOG = logging.getLogger(__name__)


@dataclass
class Output:
    """One frame's result, ready to publish (all geometry in the map frame).

    :param frame: the input frame (camera, stamp, original header).
    :param index: frame index in the reconstruction.
    :param points_map: ``[H, W, 3]`` float32 points in the map frame (REP 103).
    :param conf: ``[H, W]`` float32 confidence.
    :param rgb: ``[H, W, 3]`` uint8 colours of the points.
    :param mask: ``[H, W]`` bool, finite points at or above ``min_confidence``.
    :param T_map_cam: ``[4, 4]`` pose of the camera optical frame in the map, when estimated.
    :param depth: ``[H, W]`` float32 depth along the optical axis, when the pose is known.
    :param focal: focal length of the model crop in pixels, when estimated.
    :param provisional: True for the head-2 estimate.
    :param segment: memory segment number.
    :param memory: memory bookkeeping after the step.
    :param model_time: seconds spent in the session step.
    """

    frame: Frame
    index: int
    points_map: np.ndarray
    conf: np.ndarray
    rgb: np.ndarray
    mask: np.ndarray
    T_map_cam: Optional[np.ndarray]
    depth: Optional[np.ndarray]
    focal: Optional[float]
    provisional: bool
    segment: int
    memory: MemoryStats
    model_time: float


@dataclass
class _ResultGeometry:
    """What both the map and the published output need of one result, computed once.

    :param points_world: ``[H, W, 3]`` float32 points in the reconstruction's world frame.
    :param points_map: ``[H, W, 3]`` float32 the same points in the map frame.
    :param conf: ``[H, W]`` float32 confidence.
    :param finite: ``[H, W]`` bool, all three coordinates finite.
    :param mask: ``[H, W]`` bool, finite and at or above ``min_confidence``.
    """

    points_world: np.ndarray
    points_map: np.ndarray
    conf: np.ndarray
    finite: np.ndarray
    mask: np.ndarray


class ReconstructionWorker:
    """Consume frames, run the session, integrate the map and hand outputs to ``publish``.

    :param session: a :class:`spann3r_model.session.StreamingSession` (owned from now on).
    :param voxel_map: the global map (points in the map frame).
    :param config: node settings (min_confidence and segment settings are read live).
    :param publish: called from the worker thread with every :class:`Output`.
    :param logger: where warnings go.
    """

    def __init__(self, session: Any, voxel_map: Any, config: NodeConfig,
                 publish: Callable[[Output], None],
                 logger: Optional[logging.Logger] = None) -> None:
        self.session = session
        self.voxel_map = voxel_map
        self.config = config
        self.publish = publish
        self.log = logger or _LOG
        self.queue = LatestFrameQueue()
        self.lock = threading.RLock()
        self.trajectory: list[tuple[float, np.ndarray]] = []
        #: Incremented whenever the trajectory is cleared (readers cache what they derive).
        self.trajectory_resets = 0
        #: Incremented whenever the map changes (the node republishes it when this moves).
        self.map_version = 0
        self.segment = 0
        self.segment_to_world = Sim3()
        self.processed = 0
        self.published = 0
        self.nonfinite_outputs = 0
        self.model_times: deque[float] = deque(maxlen=200)
        self.latencies: deque[float] = deque(maxlen=200)
        self.last_memory = MemoryStats()
        self.error: Optional[BaseException] = None
        self._pending: dict[int, Frame] = {}
        # A refined result published but not yet fused into the map (see process()).
        self._unmapped: Optional[tuple[FrameResult, _ResultGeometry]] = None
        self._step_count = 0
        self._skip_below = 0
        self._segment_frames = 0
        # After a failed alignment, no new attempt before this many frames of the segment.
        self._segment_retry_at = 0
        # Recent refined frames of this segment: (frame, points_world [H,W,3], conf [H,W]).
        self._recent: deque[tuple[Frame, np.ndarray, np.ndarray]] = deque(
            maxlen=config.segment_overlap)
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    # -- thread control ---------------------------------------------------------------------
    def start(self) -> None:
        """Start the worker thread."""
        self._thread = threading.Thread(target=self._run, name='spann3r-worker', daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread after the current step."""
        self._stop.set()
        self.queue.close()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        """True while the worker thread runs."""
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        while not self._stop.is_set():
            frame = self.queue.get(timeout=0.2)
            if frame is None:
                continue
            try:
                self.process(frame)
            except Exception as exc:  # keep the node alive; report through diagnostics
                self.error = exc
                self.log.error(f'frame at stamp {frame.stamp:.3f} failed: {exc!r}')

    # -- public operations (thread-safe) ----------------------------------------------------
    def reset(self) -> None:
        """Start a new reconstruction: clear memory, map, trajectory and pending frames."""
        with self.lock:
            self.queue.clear()
            self.session.reset()
            self._unmapped = None
            self.voxel_map.clear()
            self.map_version += 1
            self.trajectory.clear()
            self.trajectory_resets += 1
            self._pending.clear()
            self._recent.clear()
            self._step_count = self._skip_below = self._segment_frames = 0
            self._segment_retry_at = 0
            self.segment = 0
            self.segment_to_world = Sim3()
            self.last_memory = MemoryStats()

    def flush_map(self) -> None:
        """Fuse a result that is published but not yet in the map (call before reading it)."""
        with self.lock:
            if self._unmapped is not None:
                refined, geometry = self._unmapped
                self._unmapped = None
                self._integrate(refined, geometry)
                self.map_version += 1

    def map_arrays(self, flush: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return a consistent copy of the map ``(xyz [M, 3], rgb [M, 3], conf [M])``.

        :param flush: first fuse the last published frame if the worker has not yet (False
            leaves that to the worker thread, which does it right after publishing).
        """
        with self.lock:
            if flush:
                self.flush_map()
            xyz, rgb, conf = self.voxel_map.arrays()
            return np.array(xyz, np.float32), np.array(rgb, np.uint8), np.array(conf, np.float32)

    def trajectory_copy(self) -> list[tuple[float, np.ndarray]]:
        """Return the published trajectory as ``[(stamp, T_map_cam [4, 4])]``."""
        with self.lock:
            return [(s, T.copy()) for s, T in self.trajectory]

    # -- the step ---------------------------------------------------------------------------
    def process(self, frame: Frame) -> None:
        """Run one frame through the session and publish what became available.

        ``processed`` counts a frame once everything it released is published and mapped.
        """
        self._process(frame)
        self.processed += 1

    def _process(self, frame: Frame) -> None:
        with self.lock:
            self._pending[self._step_count] = frame
            self._step_count += 1
            t0 = time.monotonic()
            out = self.session.step(frame.rgb, frame.stamp)
            model_time = time.monotonic() - t0
            self.model_times.append(model_time)
            self.last_memory = out.memory
            refined, provisional = out.refined, out.provisional
            refined_geometry = None
            if refined is not None and refined.index >= self._skip_below:
                refined_geometry = self._geometry(refined)
                self._remember(refined, refined_geometry)
                # Fusing into the map costs more than everything else around the model, and
                # nothing published needs it: it runs after publishing, or earlier when
                # someone reads the map (flush_map).
                self.flush_map()
                self._unmapped = (refined, refined_geometry)
            shown = provisional if self.config.provisional else refined
            if shown is None or shown.index < self._skip_below:
                self.flush_map()
                return
            # Without provisional output the integrated result is the shown one: reuse its
            # points, masks and map-frame copy instead of computing them a second time.
            output = self._make_output(shown, refined_geometry if shown is refined else None,
                                       out.memory, model_time)
            if refined is not None:
                for index in [i for i in self._pending if i < refined.index]:
                    del self._pending[index]
            if output is None:
                self.flush_map()
                return
            if output.T_map_cam is not None:
                self.trajectory.append((output.frame.stamp, output.T_map_cam))
            self._segment_frames += 1
        self.publish(output)
        self.published += 1
        self.latencies.append(time.monotonic() - frame.received)
        self.flush_map()
        if refined is not None and self._segment_due(refined):
            self.restart_segment()

    def _geometry(self, result: FrameResult) -> _ResultGeometry:
        points_world = self.segment_to_world.apply_points(result.pts3d)
        conf = np.asarray(result.conf, np.float32)
        finite = _finite_points(points_world)
        return _ResultGeometry(points_world=points_world,
                               points_map=optical_to_rep103_points(points_world), conf=conf,
                               finite=finite,
                               mask=finite & (conf >= self.config.min_confidence))

    def _remember(self, refined: FrameResult, geometry: _ResultGeometry) -> None:
        # The newest refined frames of the segment, to align the next segment to (see
        # restart_segment).
        frame = self._pending.get(refined.index)
        if frame is not None:
            self._recent.append((frame, geometry.points_world, geometry.conf))

    def _integrate(self, refined: FrameResult, geometry: _ResultGeometry) -> None:
        # Gathering by index is several times faster than boolean indexing of [H, W, 3].
        keep = np.flatnonzero(geometry.mask)
        if len(keep):
            self.voxel_map.integrate(np.take(geometry.points_map.reshape(-1, 3), keep, axis=0),
                                     np.take(np.asarray(refined.rgb).reshape(-1, 3), keep,
                                             axis=0),
                                     np.take(geometry.conf.reshape(-1), keep))

    def _make_output(self, result: FrameResult, geometry: Optional[_ResultGeometry],
                     memory: MemoryStats, model_time: float) -> Optional[Output]:
        frame = self._pending.get(result.index)
        if frame is None or frame.stamp != result.stamp:
            frame = next((f for f in self._pending.values() if f.stamp == result.stamp), None)
        if frame is None:
            self.log.warning(f'no input frame for result index {result.index}; dropped')
            return None
        if geometry is None:
            geometry = self._geometry(result)
        if not geometry.finite.any():
            self.nonfinite_outputs += 1
            return None
        T_map_cam = depth = None
        if result.T_world_cam is not None:
            T_world_cam = self.segment_to_world.apply_pose(np.asarray(result.T_world_cam))
            T_map_cam = optical_to_rep103_pose(T_world_cam)
            depth = np.asarray(depth_from_pointmap(geometry.points_world, T_world_cam),
                               np.float32)
        return Output(frame=frame, index=result.index, points_map=geometry.points_map,
                      conf=geometry.conf, rgb=np.asarray(result.rgb, np.uint8),
                      mask=geometry.mask, T_map_cam=T_map_cam, depth=depth,
                      focal=result.focal, provisional=result.provisional,
                      segment=self.segment, memory=memory, model_time=model_time)

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
        with self.lock:
            shared = list(self._recent)
            if len(shared) < 2:
                return False
            saved_state = (self.session.state_dict(), self.session.metadata())
            saved_pending = dict(self._pending)
            self.session.reset()
            self._pending.clear()
            new_points: dict[int, FrameResult] = {}
            for i, (frame, _, _) in enumerate(shared):
                self._pending[i] = frame
                refined = self.session.step(frame.rgb, frame.stamp).refined
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


def _finite_points(points: np.ndarray) -> np.ndarray:
    """Return ``[H, W]`` bool: all three coordinates of ``[H, W, 3]`` points are finite.

    One ``isfinite`` per coordinate plane is about twenty times faster than reducing a
    ``[H, W, 3]`` bool array over its short last axis.
    """
    return np.isfinite(points[..., 0]) & np.isfinite(points[..., 1]) & np.isfinite(points[..., 2])
