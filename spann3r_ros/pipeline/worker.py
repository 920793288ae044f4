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

The map, the trajectory, the segments and saved sessions are kept by the base class,
:class:`~spann3r_ros.pipeline.reconstruction_state.ReconstructionState`; what ``publish``
receives is an :class:`~spann3r_ros.pipeline.output.Output`.

Lock order: :attr:`~ReconstructionWorker.model_lock` before :attr:`~ReconstructionWorker.lock`.
"""

from __future__ import annotations

from collections import deque
import logging
import threading
import time
from typing import Any, Callable, Optional

import numpy as np

from spann3r_model.geometry.align import Sim3
from spann3r_model.geometry.camera import depth_from_pointmap
from spann3r_model.geometry.frames import optical_to_rep103_points, optical_to_rep103_pose
from spann3r_model.pose_estimation import attach_pnp_pose
from spann3r_model.results import FrameResult, MemoryStats
from spann3r_ros.pipeline.config import NodeConfig
from spann3r_ros.pipeline.frame_queue import Frame, LatestFrameQueue
from spann3r_ros.pipeline.metric_frame import MetricAlignment
from spann3r_ros.pipeline.output import express_output, finite_points, Output, ResultGeometry
from spann3r_ros.pipeline.reconstruction_state import ReconstructionState, step_session
from spann3r_ros.pipeline.step_queue import Step, StepQueue

_LOG = logging.getLogger(__name__)

#: Steps that may wait between the inference and the output stage; the model stage waits for room.
RESULT_QUEUE_SIZE = 2
#: Default seconds :meth:`ReconstructionWorker.stop` waits for the threads (a model step on the
#: CPU takes up to a few seconds; a step in progress is never interrupted).
STOP_TIMEOUT = 30.0
#: Names of the per-stage timings in :attr:`ReconstructionWorker.stage_times`.
STAGES = ('model', 'pose', 'geometry', 'alignment', 'publish', 'fusion')


class ReconstructionWorker(ReconstructionState):
    """Consume frames, run the session, integrate the map and hand outputs to ``publish``.

    :param session: a :class:`spann3r_model.session.StreamingSession` (owned from now on; its
        PnP pose moves to the output stage).
    :param voxel_map: the global map (points in the map frame).
    :param config: node settings (min_confidence and segment settings are read live).
    :param publish: called from the output thread with every :class:`Output`, in frame order.
    :param logger: where warnings go.
    :param pipelined: run the model and the output stage on two threads (see the module).
    :param metric: the alignment of the outputs to metres and the robot's frames; None for
        ``metric_source`` none.
    """

    def __init__(self, session: Any, voxel_map: Any, config: NodeConfig,
                 publish: Callable[[Output], None],
                 logger: Optional[logging.Logger] = None, *, pipelined: bool = True,
                 metric: Optional[MetricAlignment] = None) -> None:
        #: Seconds per frame of each stage in :data:`STAGES`, the newest 200.
        self.stage_times: dict[str, deque[float]] = {name: deque(maxlen=200) for name in STAGES}
        super().__init__(session, voxel_map, config, logger or _LOG, self.stage_times['fusion'],
                         metric)
        self.publish = publish
        self.pipelined = pipelined
        # The session computes the focal; the PnP pose runs after the model (see _finish).
        self._pnp_max_points = getattr(session, 'pnp_max_points', None)
        if hasattr(session, 'defer_pnp'):
            session.defer_pnp = True
        self.queue = LatestFrameQueue()
        self.processed = 0
        self.published = 0
        self.nonfinite_outputs = 0
        self.model_times: deque[float] = deque(maxlen=200)
        #: Seconds from the arrival of each published frame to its publishing, the newest 200.
        self.latencies: deque[float] = deque(maxlen=200)
        #: Seconds the model stage waited for room in the result queue before each step (the
        #: output stage was behind), the newest 200; empty in serial mode.
        self.model_waits: deque[float] = deque(maxlen=200)
        self.last_memory = MemoryStats()
        self.error: Optional[BaseException] = None
        self._steps = StepQueue(RESULT_QUEUE_SIZE)
        self._generation = 0
        self._stop = threading.Event()
        # Held around every publish call: once stop() holds it, no publish starts any more.
        self._publish_gate = threading.Lock()
        self._gate_held = False
        self._threads: list[threading.Thread] = []

    # -- public state -----------------------------------------------------------------------
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
            self._clear_state()
            self.metric.reset()
            self.last_memory = MemoryStats()

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
            return self._state_copy()

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

    def _infer(self, frame: Frame) -> tuple[Step, bool]:
        """Run the model on one frame.

        :return: the step for the output stage, and whether a new segment is due.
        """
        self._pending[self._step_count] = frame
        self._step_count += 1
        t0 = time.monotonic()
        out = step_session(self.session, frame)
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
        step = Step(generation=self._generation, refined=refined, shown=shown,
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

    def _finish(self, step: Step) -> None:
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
        t_align = time.perf_counter()
        times['geometry'].append(t_align - t1)
        if output is None:
            self.flush_map()
            return
        if step.generation != self._generation:
            return
        T_recon_cam = output.T_map_cam
        self._align(output)
        t2 = time.perf_counter()
        times['alignment'].append(t2 - t_align)
        with self.lock:
            if step.generation != self._generation:
                return
            if T_recon_cam is not None:
                self.trajectory.append((output.frame.stamp, T_recon_cam))
        with self._publish_gate:
            if self._stop.is_set():
                return
            self.publish(output)
        times['publish'].append(time.perf_counter() - t2)
        self.published += 1
        self.latencies.append(time.monotonic() - output.received)
        self.flush_map()

    def _align(self, output: Output) -> None:
        """Update the metric alignment with one output and express the output in its frame."""
        metric = self.metric
        if metric.active:
            frame = output.frame
            header = frame.header
            camera_frame = getattr(header, 'frame_id', '') if header is not None else ''
            rgb = frame.rgb
            colour_wh = (rgb.shape[1], rgb.shape[0]) if rgb is not None else (0, 0)
            metric.observe(frame.stamp, camera_frame, output.T_map_cam, output.depth,
                           output.mask, output.crop, colour_wh, camera=frame.camera,
                           sensor_depth=frame.depth)
        express_output(output, metric.transform(), metric.frame_id)

    def _geometry(self, result: FrameResult, segment_to_world: Sim3) -> ResultGeometry:
        points_world = segment_to_world.apply_points(result.pts3d)
        conf = np.asarray(result.conf, np.float32)
        finite = finite_points(points_world)
        return ResultGeometry(points_world=points_world,
                              points_map=optical_to_rep103_points(points_world), conf=conf,
                              finite=finite,
                              mask=finite & (conf >= self.config.min_confidence))

    def _make_output(self, step: Step, geometry: Optional[ResultGeometry]) -> Optional[Output]:
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
                      received=frame.received, K=result.K, intrinsics=result.intrinsics,
                      crop=result.crop)
