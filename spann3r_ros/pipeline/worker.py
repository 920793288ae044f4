"""The reconstruction worker: the streaming session, the map and the trajectory, off the executor.

ROS-free on purpose: the node feeds :class:`LatestFrameQueue` from its callbacks and receives
:class:`Output` objects through a callback.

Two stages, each on its own thread (``pipelined=True``, the default):

* **inference** (``spann3r-model``) takes the newest frame and runs only what needs the model:
  preprocessing, the session step with its memory write, the focal of each camera's first
  frame, and segment restarts (which re-run frames through the model). It holds
  :attr:`ReconstructionWorker.model_lock` while it does.
* **output** (``spann3r-output``) does everything after the model, in frame order: the PnP pose,
  map-frame points and masks, the trajectory, the ``publish`` callback, and fusion into the voxel
  map. It holds :attr:`ReconstructionWorker.lock` only around the map and the trajectory.

Between them sits a bounded queue of :data:`RESULT_QUEUE_SIZE` steps with backpressure: the
model stage takes a frame only once the queue has room, so every step it runs reaches the
output stage (no work is computed to be thrown away; only :meth:`~ReconstructionWorker.reset`
and :meth:`~ReconstructionWorker.stop` discard queued steps), and while it waits, the cores go
to the output stage. Frames that arrive meanwhile wait in :class:`LatestFrameQueue`, where a
newer frame of the same camera replaces an older one (counted in its ``dropped``): the frame
the model takes next is the newest, and staleness is decided once, at the input. What is
published stays in frame order. The seconds the model stage waited for room before each step
are kept in :attr:`ReconstructionWorker.model_waits`. With ``pipelined=False`` one thread runs
both stages frame by frame (:meth:`ReconstructionWorker.process`), as tests and the
benchmark's serial mode do.

Lock order: :attr:`~ReconstructionWorker.model_lock` before :attr:`~ReconstructionWorker.lock`.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
import logging
import threading
import time
from typing import Any, Callable, Optional

import numpy as np

from spann3r_model.geometry.align import Sim3
from spann3r_model.geometry.camera import depth_from_pointmap
from spann3r_model.geometry.frames import optical_to_rep103_points, optical_to_rep103_pose
from spann3r_model.mapping.segments import correspondences, fit_segment
from spann3r_model.results import FrameResult, MemoryStats
from spann3r_model.session import attach_pnp_pose
from spann3r_ros.pipeline.config import NodeConfig
from spann3r_ros.pipeline.frame_queue import Frame, LatestFrameQueue

_LOG = logging.getLogger(__name__)

#: Steps that may wait between the inference and the output stage; the model stage waits for room.
RESULT_QUEUE_SIZE = 2
#: Default seconds :meth:`ReconstructionWorker.stop` waits for the threads (a model step on the
#: CPU takes up to a few seconds; a step in progress is never interrupted).
STOP_TIMEOUT = 30.0
#: Names of the per-stage timings in :attr:`ReconstructionWorker.stage_times`.
STAGES = ('model', 'pose', 'geometry', 'publish', 'fusion')


@dataclass
class Output:
    """One frame's result, ready to publish (all geometry in the map frame).

    :param frame: the input frame of this result (camera, stamp, original header).
    :param index: frame index in the reconstruction.
    :param points_map: ``[H, W, 3]`` float32 points in the map frame (REP 103).
    :param conf: ``[H, W]`` float32 confidence.
    :param rgb: ``[H, W, 3]`` uint8 colours of the points.
    :param mask: ``[H, W]`` bool, finite points at or above ``min_confidence``.
    :param T_map_cam: ``[4, 4]`` pose of the camera optical frame in the map, when estimated.
    :param depth: ``[H, W]`` float32 depth along the optical axis, when the pose is known.
    :param focal: focal length (``fx``) of the model crop in pixels, when known.
    :param provisional: True for the head-2 estimate.
    :param segment: memory segment number.
    :param memory: memory bookkeeping after the step.
    :param model_time: seconds spent in the session step.
    :param received: monotonic time the node received *this result's* frame (in refined mode
        the frame before the one whose step produced it), for its latency.
    :param K: ``[3, 3]`` intrinsics of the model crop, when known.
    :param intrinsics: where they come from, ``'camera_info'`` or ``'estimated'``.
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
    received: float = 0.0
    K: Optional[np.ndarray] = None
    intrinsics: Optional[str] = None


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


@dataclass
class _Step:
    """What one model step hands to the output stage.

    :param generation: :meth:`ReconstructionWorker.reset` count when the step ran.
    :param refined: the refined result to map (None when there is none or it is a re-run).
    :param shown: the result to publish (refined or provisional), if any.
    :param shown_frame: the input frame of ``shown``.
    :param memory: memory bookkeeping after the step.
    :param model_time: seconds in the session step.
    :param segment: segment number of the results.
    :param segment_to_world: their segment's transform.
    """

    generation: int
    refined: Optional[FrameResult]
    shown: Optional[FrameResult]
    shown_frame: Optional[Frame]
    memory: MemoryStats
    model_time: float
    segment: int
    segment_to_world: Sim3


class _StepQueue:
    """FIFO of steps between the two stages; its one producer waits for room before each step."""

    def __init__(self, size: int) -> None:
        self._items: deque[_Step] = deque()
        self._size = size
        self._cond = threading.Condition()
        self._busy = 0  # steps put and not yet finished (queued or being handled)
        self._closed = False

    def wait_room(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds until a step fits; False on timeout or once closed."""
        with self._cond:
            self._cond.wait_for(lambda: len(self._items) < self._size or self._closed, timeout)
            return len(self._items) < self._size and not self._closed

    def put(self, step: _Step) -> None:
        """Append ``step`` (the producer has seen room with :meth:`wait_room`; nothing is lost)."""
        with self._cond:
            self._busy += 1
            self._items.append(step)
            self._cond.notify_all()

    def get(self, timeout: float) -> Optional[_Step]:
        """Take the oldest step, waiting up to ``timeout`` seconds (None when there is none)."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._items, timeout):
                return None
            return self._items.popleft()

    def done(self) -> None:
        """Mark a step taken with :meth:`get` as handled."""
        with self._cond:
            self._busy -= 1
            self._cond.notify_all()

    def close(self) -> None:
        """Wake every waiter; :meth:`wait_room` returns False from now on."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def clear(self) -> int:
        """Discard the queued steps; return how many there were."""
        with self._cond:
            n = len(self._items)
            self._items.clear()
            self._busy -= n
            self._cond.notify_all()
            return n

    def wait_idle(self, timeout: float) -> bool:
        """Wait until every step put is handled; return False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._busy == 0, timeout)

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)


class ReconstructionWorker:
    """Consume frames, run the session, integrate the map and hand outputs to ``publish``.

    :param session: a :class:`spann3r_model.session.StreamingSession` (owned from now on; its
        PnP pose moves to the output stage).
    :param voxel_map: the global map (points in the map frame).
    :param config: node settings (min_confidence and segment settings are read live).
    :param publish: called from the output thread with every :class:`Output`, in frame order.
    :param logger: where warnings go.
    :param pipelined: run the model and the output stage on two threads (see the module).
    """

    def __init__(self, session: Any, voxel_map: Any, config: NodeConfig,
                 publish: Callable[[Output], None],
                 logger: Optional[logging.Logger] = None, *, pipelined: bool = True) -> None:
        self.session = session
        self.voxel_map = voxel_map
        self.config = config
        self.publish = publish
        self.log = logger or _LOG
        self.pipelined = pipelined
        # The session computes the focal; the PnP pose runs after the model (see _finish).
        self._pnp_max_points = getattr(session, 'pnp_max_points', None)
        if hasattr(session, 'defer_pnp'):
            session.defer_pnp = True
        self.queue = LatestFrameQueue()
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
        self.processed = 0
        self.published = 0
        self.nonfinite_outputs = 0
        self.model_times: deque[float] = deque(maxlen=200)
        #: Seconds from the arrival of each published frame to its publishing, the newest 200.
        self.latencies: deque[float] = deque(maxlen=200)
        #: Seconds the model stage waited for room in the result queue before each step (the
        #: output stage was behind), the newest 200; empty in serial mode.
        self.model_waits: deque[float] = deque(maxlen=200)
        #: Seconds per frame of each stage in :data:`STAGES`, the newest 200.
        self.stage_times: dict[str, deque[float]] = {name: deque(maxlen=200) for name in STAGES}
        self.last_memory = MemoryStats()
        self.error: Optional[BaseException] = None
        self._steps = _StepQueue(RESULT_QUEUE_SIZE)
        self._generation = 0
        self._pending: dict[int, Frame] = {}
        # A refined result published but not yet fused into the map (see _finish()).
        self._unmapped: Optional[tuple[FrameResult, _ResultGeometry]] = None
        self._step_count = 0
        self._skip_below = 0
        self._segment_frames = 0
        # After a failed alignment, no new attempt before this many frames of the segment.
        self._segment_retry_at = 0
        # Recent refined frames of this segment: (frame, pts3d [H,W,3] in the segment's frame,
        # conf [H,W]).
        self._recent: deque[tuple[Frame, np.ndarray, np.ndarray]] = deque(
            maxlen=config.segment_overlap)
        self._stop = threading.Event()
        # Held around every publish call: once stop() holds it, no publish starts any more.
        self._publish_gate = threading.Lock()
        self._gate_held = False
        self._threads: list[threading.Thread] = []

    # -- public state -----------------------------------------------------------------------
    @property
    def step_count(self) -> int:
        """Frames given to the session since the reconstruction (or segment) started."""
        return self._step_count

    @property
    def skip_below(self) -> int:
        """Results of frames with a lower index are not published (re-runs, resumed frames)."""
        return self._skip_below

    @property
    def pending_results(self) -> int:
        """Steps waiting for the output stage."""
        return len(self._steps)

    # -- thread control ---------------------------------------------------------------------
    def start(self) -> None:
        """Start the worker thread(s)."""
        if self.pipelined:
            self._threads = [
                threading.Thread(target=self._run_model, name='spann3r-model', daemon=True),
                threading.Thread(target=self._run_output, name='spann3r-output', daemon=True)]
        else:
            self._threads = [threading.Thread(target=self._run_serial, name='spann3r-worker',
                                              daemon=True)]
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float = STOP_TIMEOUT) -> bool:
        """Stop between steps and wait until the threads have ended.

        A step in progress finishes (it cannot be interrupted); queued frames and results are
        discarded; ``publish`` is not called again once this returns, even on a timeout.
        A repeated call does not wait for the gate an earlier call already holds.

        :param timeout: seconds to wait in all.
        :return: True when every thread ended. False when one still runs after ``timeout``
            (logged as an error): the caller must then keep alive everything the threads use
            (the session, and the objects ``publish`` touches).
        """
        deadline = time.monotonic() + timeout
        self._stop.set()
        self.queue.close()
        self._steps.close()
        self._steps.clear()
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        running = [t.name for t in self._threads if t.is_alive()]
        # A second stop() finds the gate held by the first, and must not wait for it.
        gate = self._gate_held or self._publish_gate.acquire(
            timeout=max(0.0, deadline - time.monotonic()))
        self._gate_held = gate
        if running or not gate:
            self.log.error(f'worker threads {running} still run {timeout:.1f} s after stop '
                           f'(a model step or publish in progress'
                           f'{"" if gate else ", publishing now"}); '
                           'their resources must stay alive')
            return False
        return True

    @property
    def alive(self) -> bool:
        """True while every worker thread runs."""
        return bool(self._threads) and all(t.is_alive() for t in self._threads)

    def _run_serial(self) -> None:
        while not self._stop.is_set():
            frame = self.queue.get(timeout=0.2)
            if frame is not None:
                self._guarded(frame.stamp, self.process, frame)

    def _run_model(self) -> None:
        while not self._stop.is_set():
            # Room first, then the frame: the frame taken is the newest one at that moment.
            t0 = time.monotonic()
            while not self._steps.wait_room(timeout=0.2):
                if self._stop.is_set():
                    return
            waited = time.monotonic() - t0
            frame = self.queue.get(timeout=0.2)
            if frame is not None:
                self.model_waits.append(waited)
                self._guarded(frame.stamp, self._infer_and_hand_over, frame)

    def _run_output(self) -> None:
        while not self._stop.is_set():
            step = self._steps.get(timeout=0.2)
            if step is None:
                continue
            try:
                stamp = step.shown_frame.stamp if step.shown_frame is not None else float('nan')
                self._guarded(stamp, self._finish, step)
            finally:
                self.processed += 1
                self._steps.done()

    def _guarded(self, stamp: float, work: Callable[..., Any], *args: Any) -> None:
        try:
            work(*args)
        except Exception as exc:  # keep the node alive; report through diagnostics
            self.error = exc
            self.log.error(f'frame at stamp {stamp:.3f} failed: {exc!r}')

    # -- public operations (thread-safe) ----------------------------------------------------
    def reset(self) -> None:
        """Start a new reconstruction: clear memory, map, trajectory and pending frames."""
        with self.model_lock, self.lock:
            self._generation += 1
            self.queue.clear()
            self._steps.clear()
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
                t0 = time.perf_counter()
                self._integrate(refined, geometry)
                self.stage_times['fusion'].append(time.perf_counter() - t0)
                self.map_version += 1

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
        """Return the published trajectory as ``[(stamp, T_map_cam [4, 4])]``."""
        with self.lock:
            return [(s, T.copy()) for s, T in self.trajectory]

    def snapshot(self, drain_timeout: float = 10.0) -> dict[str, Any]:
        """Return a consistent copy of everything a saved session holds (for ``session_store``).

        The model waits while results already computed reach the map (at most
        ``drain_timeout`` seconds), then everything is copied; writing the copy needs no lock.

        :return: ``{'session_tensors', 'session_meta', 'map_state', 'trajectory', 'extra'}``
            as :func:`spann3r_ros.pipeline.session_store.save` takes them (``extra`` holds the
            segment, its transform and the step count).
        """
        with self.model_lock:
            if self.pipelined and self._threads:
                self._steps.wait_idle(drain_timeout)
            with self.lock:
                self.flush_map()
                return {
                    'session_tensors': self.session.state_dict(),
                    'session_meta': self.session.metadata(),
                    'map_state': self.voxel_map.state_dict(),
                    'trajectory': self.trajectory_copy(),
                    'extra': {'segment': self.segment,
                              'segment_to_world': self.segment_to_world.to_list(),
                              'step_count': self._step_count},
                }

    def restore(self, state: dict[str, Any], prev_frame: Optional[Frame] = None) -> None:
        """Continue a session saved from :meth:`snapshot` (as ``session_store.load`` returns it).

        :param state: ``{'session_tensors', 'session_meta', 'map_state', 'trajectory',
            'extra'}``.
        :param prev_frame: the input frame of the last saved frame (its refined result arrives
            with the first new frame and is published then), when the state has one.
        """
        with self.model_lock, self.lock:
            self.session.load_state(state['session_tensors'], state['session_meta'])
            self.voxel_map.load_state_dict(state['map_state'])
            self.trajectory[:] = state['trajectory']
            self.trajectory_resets += 1
            self.map_version += 1
            extra = state.get('extra', {})
            self.segment = int(extra.get('segment', 0))
            self.segment_to_world = Sim3.from_list(extra.get('segment_to_world',
                                                             Sim3().to_list()))
            # New frames continue the saved indices.
            self._step_count = self._skip_below = int(extra.get('step_count', 0))
            prev = state['session_meta'].get('prev')
            if prev is not None and prev_frame is not None:
                self._pending[int(prev['index'])] = prev_frame
                self._skip_below = int(prev['index'])

    # -- the step ---------------------------------------------------------------------------
    def process(self, frame: Frame) -> None:
        """Run one frame through both stages on the calling thread and publish what it released.

        ``processed`` counts a frame once everything it released is published and mapped.
        """
        with self.model_lock:
            step, due = self._infer(frame)
            try:
                self._finish(step)
            finally:
                self.processed += 1
            if due:
                self.restart_segment()

    def _infer_and_hand_over(self, frame: Frame) -> None:
        with self.model_lock:
            step, due = self._infer(frame)
            self._steps.put(step)
            if due:
                self.restart_segment()

    def _infer(self, frame: Frame) -> tuple[_Step, bool]:
        """Run the model on one frame.

        :return: the step for the output stage, and whether a new segment is due.
        """
        self._pending[self._step_count] = frame
        self._step_count += 1
        t0 = time.monotonic()
        out = _step(self.session, frame)
        model_time = time.monotonic() - t0
        self.model_times.append(model_time)
        self.stage_times['model'].append(model_time)
        self.last_memory = out.memory
        refined = out.refined
        if refined is not None and refined.index < self._skip_below:
            refined = None
        shown = out.provisional if self.config.provisional else refined
        if shown is not None and shown.index < self._skip_below:
            shown = None
        if refined is not None:
            # The newest refined frames of the segment, to align the next segment to.
            refined_frame = self._pending.get(refined.index)
            if refined_frame is not None:
                self._recent.append((refined_frame, refined.pts3d, refined.conf))
        shown_frame = self._frame_for(shown) if shown is not None else None
        if out.refined is not None:
            for index in [i for i in self._pending if i < out.refined.index]:
                del self._pending[index]
        if shown_frame is not None:
            self._segment_frames += 1
        step = _Step(generation=self._generation, refined=refined, shown=shown,
                     shown_frame=shown_frame, memory=out.memory, model_time=model_time,
                     segment=self.segment, segment_to_world=self.segment_to_world)
        return step, refined is not None and shown_frame is not None and self._segment_due(
            refined)

    def _frame_for(self, result: FrameResult) -> Optional[Frame]:
        frame = self._pending.get(result.index)
        if frame is None or frame.stamp != result.stamp:
            frame = next((f for f in self._pending.values() if f.stamp == result.stamp), None)
        if frame is None:
            self.log.warning(f'no input frame for result index {result.index}; dropped')
        return frame

    def _finish(self, step: _Step) -> None:
        """Pose, geometry, trajectory, publishing and fusion of one step (output stage)."""
        times = self.stage_times
        t0 = time.perf_counter()
        for result in {id(r): r for r in (step.refined, step.shown) if r is not None}.values():
            if result.T_world_cam is None:
                attach_pnp_pose(result, self._pnp_max_points)
        t1 = time.perf_counter()
        times['pose'].append(t1 - t0)
        refined_geometry = None
        if step.refined is not None:
            refined_geometry = self._geometry(step.refined, step.segment_to_world)
            with self.lock:
                if step.generation != self._generation:
                    return
                # Fusing into the map costs more than everything else after the model, and
                # nothing published needs it: it runs after publishing, or earlier when
                # someone reads the map (flush_map).
                self.flush_map()
                self._unmapped = (step.refined, refined_geometry)
        output = None
        if step.shown is not None and step.shown_frame is not None:
            output = self._make_output(step, refined_geometry if step.shown is step.refined
                                       else None)
        times['geometry'].append(time.perf_counter() - t1)
        if output is None:
            self.flush_map()
            return
        with self.lock:
            if step.generation != self._generation:
                return
            if output.T_map_cam is not None:
                self.trajectory.append((output.frame.stamp, output.T_map_cam))
        t2 = time.perf_counter()
        with self._publish_gate:
            if self._stop.is_set():
                return
            self.publish(output)
        times['publish'].append(time.perf_counter() - t2)
        self.published += 1
        self.latencies.append(time.monotonic() - output.received)
        self.flush_map()

    def _geometry(self, result: FrameResult, segment_to_world: Sim3) -> _ResultGeometry:
        points_world = segment_to_world.apply_points(result.pts3d)
        conf = np.asarray(result.conf, np.float32)
        finite = _finite_points(points_world)
        return _ResultGeometry(points_world=points_world,
                               points_map=optical_to_rep103_points(points_world), conf=conf,
                               finite=finite,
                               mask=finite & (conf >= self.config.min_confidence))

    def _integrate(self, refined: FrameResult, geometry: _ResultGeometry) -> None:
        # Gathering by index is several times faster than boolean indexing of [H, W, 3].
        keep = np.flatnonzero(geometry.mask)
        if len(keep):
            self.voxel_map.integrate(np.take(geometry.points_map.reshape(-1, 3), keep, axis=0),
                                     np.take(np.asarray(refined.rgb).reshape(-1, 3), keep,
                                             axis=0),
                                     np.take(geometry.conf.reshape(-1), keep))

    def _make_output(self, step: _Step, geometry: Optional[_ResultGeometry]) -> Optional[Output]:
        result, frame = step.shown, step.shown_frame
        if geometry is None:
            geometry = self._geometry(result, step.segment_to_world)
        if not geometry.finite.any():
            self.nonfinite_outputs += 1
            return None
        T_map_cam = depth = None
        if result.T_world_cam is not None:
            T_world_cam = step.segment_to_world.apply_pose(np.asarray(result.T_world_cam))
            T_map_cam = optical_to_rep103_pose(T_world_cam)
            depth = np.asarray(depth_from_pointmap(geometry.points_world, T_world_cam),
                               np.float32)
        return Output(frame=frame, index=result.index, points_map=geometry.points_map,
                      conf=geometry.conf, rgb=np.asarray(result.rgb, np.uint8),
                      mask=geometry.mask, T_map_cam=T_map_cam, depth=depth,
                      focal=result.focal, provisional=result.provisional,
                      segment=step.segment, memory=step.memory, model_time=step.model_time,
                      received=frame.received, K=result.K, intrinsics=result.intrinsics)

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
                refined = _step(self.session, frame).refined
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


def _step(session: Any, frame: Frame) -> Any:
    """Run ``session.step`` on a frame with its camera and intrinsics."""
    return session.step(frame.rgb, frame.stamp, camera=frame.camera, K=frame.K)


def _finite_points(points: np.ndarray) -> np.ndarray:
    """Return ``[H, W]`` bool: all three coordinates of ``[H, W, 3]`` points are finite.

    One ``isfinite`` per coordinate plane is about twenty times faster than reducing a
    ``[H, W, 3]`` bool array over its short last axis.
    """
    return np.isfinite(points[..., 0]) & np.isfinite(points[..., 1]) & np.isfinite(points[..., 2])
