"""Where the node's outputs live: the reconstruction's own frame, or metres in the robot's frames.

The reconstruction itself always stays in its own frame (the first camera, REP 103 axes, the
network's scale): the map, the trajectory and the segments are kept there, so a better
alignment later re-expresses all of them without losing a point. :class:`MetricAlignment`
holds the similarity from that frame to the frame the outputs are published in, chosen by the
``metric_source`` parameter:

* ``none``: no alignment; outputs in ``map_frame`` at the network's scale.
* ``odometry``: a Sim(3) to ``odom_frame`` fitted online to the robot's odometry camera poses
  (:mod:`~spann3r_ros.pipeline.odometry_alignment`); outputs in ``odom_frame``, metres.
* ``depth``: a scale from an aligned depth topic (:mod:`~spann3r_ros.pipeline.depth_scale`);
  outputs in ``map_frame`` (the first camera), metres.
* ``both``: the depth scale, and the rotation and translation to ``odom_frame`` from odometry.

The state it is in (:data:`STATES`) is reported in diagnostics and logged when it changes;
``inconsistent`` means the trajectory would determine the fit but the odometry and the
reconstruction disagree (camera centres by more than ``alignment_max_residual``, orientations by
more than ``alignment_max_rotation_residual``: a poor model, a wrong ``base_to_camera``, or
odometry of another camera).
Until the first alignment nothing metric is published (points, depth, pose, path, TF, map):
they would be in a frame they are not in. A lost odometry (no pose within ``timeout`` of a
frame) keeps the last alignment, says so, and refines nothing until odometry returns.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
import logging
import threading
import time
from typing import Any, Callable, Optional

import numpy as np

from spann3r_model.geometry.align import Sim3
from spann3r_ros.pipeline.depth_scale import (
    DepthBuffer,
    DepthScaleEstimator,
    frame_scale,
    sample_depth,
)
from spann3r_ros.pipeline.odometry_alignment import AlignmentThresholds, OdometryAligner
from spann3r_ros.pipeline.pose_buffer import PoseLookup

#: Values of the ``metric_source`` parameter.
METRIC_SOURCES = ('none', 'odometry', 'depth', 'both')
#: States of the alignment.
STATES = ('off', 'waiting_for_odometry', 'waiting_for_depth', 'waiting_for_baseline',
          'inconsistent', 'aligned', 'lost')
#: A new fit is published (the map and path re-expressed) when it moves the scale by this
#: fraction, a point 1 m away by this many metres, or the rotation by this many degrees.
REFIT_SCALE, REFIT_METRES, REFIT_DEG = 1e-3, 1e-3, 0.05

#: ``lookup(stamp, camera_frame_id) -> PoseLookup`` of ``T_odom_cam``.
OdometryLookup = Callable[[float, str], PoseLookup]


@dataclass(frozen=True)
class MetricSettings:
    """What :class:`MetricAlignment` needs of the node's parameters.

    :param source: one of :data:`METRIC_SOURCES`.
    :param map_frame: the reconstruction's frame (outputs of ``none`` and ``depth``).
    :param odom_frame: the odometry frame (outputs of ``odometry`` and ``both``).
    :param thresholds: when the odometry fit is accepted.
    :param depth_min: sensor depths below this are invalid, metres.
    :param depth_max: sensor depths above this are invalid, metres.
    :param depth_min_pixels: a frame with fewer pixels valid in both depths gives no scale.
    :param depth_window: frames whose depth scales are combined.
    """

    source: str = 'none'
    map_frame: str = 'map'
    odom_frame: str = 'odom'
    thresholds: AlignmentThresholds = AlignmentThresholds()
    depth_min: float = 0.1
    depth_max: float = 10.0
    depth_min_pixels: int = 500
    depth_window: int = 30

    def __post_init__(self) -> None:
        """Reject an unknown source."""
        if self.source not in METRIC_SOURCES:
            raise ValueError(f'metric_source must be one of {list(METRIC_SOURCES)}, got '
                             f'{self.source!r}')

    @property
    def uses_odometry(self) -> bool:
        """True for ``odometry`` and ``both``."""
        return self.source in ('odometry', 'both')

    @property
    def uses_depth(self) -> bool:
        """True for ``depth`` and ``both``."""
        return self.source in ('depth', 'both')


class MetricAlignment:
    """The transform from the reconstruction's frame to the output frame, kept up to date.

    ``observe`` runs on the worker's output thread; ``transform`` and ``status`` may be called
    from any thread.

    :param settings: the source and its thresholds.
    :param odometry: looks up ``T_odom_cam`` at a stamp (needed by ``odometry`` and ``both``).
    :param depth: the depth images (needed by ``depth`` and ``both``).
    :param logger: where state changes are logged.
    :param odometry_cameras: ``'all'`` when the odometry gives every camera's pose (TF, by the
        image frame_id), ``'first'`` when it gives only the first camera's (a topic composed
        with ``base_to_camera``). Depth is registered to the first camera.
    """

    def __init__(self, settings: MetricSettings, odometry: Optional[OdometryLookup] = None,
                 depth: Optional[DepthBuffer] = None,
                 logger: Optional[logging.Logger] = None, odometry_cameras: str = 'all') -> None:
        if odometry_cameras not in ('all', 'first'):
            raise ValueError(f'odometry_cameras must be all or first, got {odometry_cameras!r}')
        self._odometry_all = odometry_cameras == 'all'
        if settings.uses_odometry and odometry is None:
            raise ValueError(f'metric_source {settings.source!r} needs an odometry source')
        if settings.uses_depth and depth is None:
            raise ValueError(f'metric_source {settings.source!r} needs a depth topic')
        self.settings = settings
        self.odometry = odometry
        self.depth = depth
        self.log = logger or logging.getLogger(__name__)
        self._lock = threading.Lock()
        self.aligner = OdometryAligner(settings.thresholds)
        self.depth_scale = DepthScaleEstimator(settings.depth_window)
        #: Frames not used for the alignment, by reason (odometry_stale, depth_missing, ...).
        self.faults: Counter[str] = Counter()
        self._transform: Optional[Sim3] = None if self.active else Sim3()
        #: Incremented whenever the published transform changes (readers re-express then).
        self.version = 0
        self.state = 'off' if not self.active else (
            'waiting_for_depth' if settings.uses_depth else 'waiting_for_odometry')
        self._last_detail = ''
        self._odometry_age = float('nan')
        self._depth_pixels = 0
        self._aligned_at: Optional[float] = None

    @property
    def active(self) -> bool:
        """True unless the source is ``none``."""
        return self.settings.source != 'none'

    @property
    def frame_id(self) -> str:
        """The frame the outputs are published in."""
        s = self.settings
        return s.odom_frame if s.uses_odometry else s.map_frame

    def transform(self) -> Optional[Sim3]:
        """Return the reconstruction-to-output Sim(3), or None while not aligned."""
        with self._lock:
            return self._transform

    def reset(self) -> None:
        """Forget the alignment (a new reconstruction has a new first camera)."""
        with self._lock:
            self.aligner.clear()
            self.depth_scale.clear()
            if self.active:
                self._transform = None
                self.version += 1
            self._set_state('waiting_for_depth' if self.settings.uses_depth
                            else 'waiting_for_odometry' if self.active else 'off', 'reset')

    # -- observing one output -----------------------------------------------------------------
    def observe(self, stamp: float, camera_frame_id: str, T_map_cam: Optional[np.ndarray],
                depth: Optional[np.ndarray], mask: np.ndarray, crop: Any,
                colour_wh: tuple[int, int], camera: int = 0,
                sensor_depth: Optional[np.ndarray] = None) -> None:
        """Update the alignment with one published frame.

        :param stamp: the frame's stamp, seconds.
        :param camera_frame_id: the frame_id of its image (the TF frame of its camera).
        :param T_map_cam: ``[4, 4]`` its pose in the reconstruction frame, when estimated.
        :param depth: ``[S, S]`` its predicted depth, reconstruction units, when known.
        :param mask: ``[S, S]`` bool, pixels trusted (finite, confident).
        :param crop: the model crop of its colour image.
        :param colour_wh: ``(W, H)`` of its colour image.
        :param camera: the camera's index (depth and odometry topics serve camera 0).
        :param sensor_depth: ``[h, w]`` metres of the depth image paired with it on arrival;
            None to look it up in the depth buffer by stamp.
        """
        if not self.active:
            return
        if T_map_cam is None:
            with self._lock:
                self._fault('no_pose')
            return
        with self._lock:
            scale = self.depth_scale.scale
            if self.settings.uses_depth and camera == 0:
                scale = self._observe_depth(stamp, depth, mask, crop, colour_wh, sensor_depth)
            if self.settings.uses_depth and scale is None:
                return
            if self.settings.uses_odometry:
                if camera == 0 or self._odometry_all:
                    self._observe_odometry(stamp, camera_frame_id, T_map_cam, scale)
            else:
                self._publish(Sim3(scale=scale), 'aligned',
                              f'scale {scale:.4f} m/unit from {len(self.depth_scale)} frames')

    def _observe_depth(self, stamp: float, depth: Optional[np.ndarray], mask: np.ndarray,
                       crop: Any, colour_wh: tuple[int, int],
                       sensor: Optional[np.ndarray]) -> Optional[float]:
        s = self.settings
        if sensor is None:
            sensor = self.depth.at(stamp)
        if sensor is None or depth is None:
            self._fault('depth_missing')
            return self.depth_scale.scale
        try:
            sampled = sample_depth(sensor, crop, colour_wh)
        except ValueError as exc:
            self._fault('depth_aspect_mismatch', str(exc))
            return self.depth_scale.scale
        result = frame_scale(sampled, depth, mask, s.depth_min, s.depth_max,
                             s.depth_min_pixels)
        self._depth_pixels = result.pixels
        if result.scale is None:
            self._fault('depth_invalid', f'{result.pixels} pixels valid in both depths')
            return self.depth_scale.scale
        return self.depth_scale.add(result.scale)

    def _observe_odometry(self, stamp: float, camera_frame_id: str, T_map_cam: np.ndarray,
                          scale: Optional[float]) -> None:
        found = self.odometry(stamp, camera_frame_id)
        self._odometry_age = found.age
        if found.state != 'ok':
            self._fault(f'odometry_{found.state}')
            if found.state == 'stale':
                held = 'holding the last alignment' if self._transform is not None \
                    else 'nothing metric is published'
                self._set_state('lost', f'no odometry within the timeout of stamp '
                                f'{stamp:.3f} (newest {found.age:.2f} s older); {held}')
            return
        fit = self.aligner.add(T_map_cam, found.T, scale)
        if fit is None:
            tried = self.aligner.last_try
            detail = f'{len(self.aligner)} frames'
            if tried is not None:
                detail += (f', baseline {tried.baseline_m:.3f} m of '
                           f'{self.settings.thresholds.min_baseline:.3f}, rotation '
                           f'{tried.rotation_deg:.1f} deg, residual {tried.residual_m:.3f} m '
                           f'and {tried.rotation_residual_deg:.1f} deg, '
                           f'scale uncertainty {100 * tried.scale_error:.1f}% of '
                           f'{100 * self.settings.thresholds.max_scale_error:.1f}%')
            # A resumed alignment stays in use (and stated) until the new frames refine it.
            state = 'aligned' if self._transform is not None else (
                'inconsistent' if self.aligner.waiting_for == 'consistent motion'
                else 'waiting_for_baseline')
            self._set_state(state, f'waiting for {self.aligner.waiting_for}: {detail}')
            return
        # With the depth scale (both), an earlier fit still held gets the scale of now.
        sim3 = fit.sim3 if scale is None else fit.with_scale(scale)
        self._publish(sim3, 'aligned', f'scale {sim3.scale:.4f} m/unit, residual '
                      f'{fit.residual_m:.3f} m and {fit.rotation_residual_deg:.1f} deg, '
                      f'{fit.used} of {len(self.aligner)} frames')

    def _publish(self, sim3: Sim3, state: str, detail: str) -> None:
        if self._transform is None or _moved(self._transform, sim3):
            self._transform = sim3
            self.version += 1
        if self._aligned_at is None:
            self._aligned_at = time.monotonic()
        self._set_state(state, detail)

    def _fault(self, reason: str, detail: str = '') -> None:
        self.faults[reason] += 1
        if self.faults[reason] == 1:
            self.log.warning(f'metric alignment: {reason.replace("_", " ")}'
                             f'{": " + detail if detail else ""} (counted in diagnostics)')

    def _set_state(self, state: str, detail: str) -> None:
        self._last_detail = detail
        if state != self.state:
            self.state = state
            self.log.info(f'metric alignment ({self.settings.source}): {state}; {detail}')

    # -- reporting ----------------------------------------------------------------------------
    def status(self) -> dict[str, str]:
        """Return the diagnostics values: state, detail, scale, residual, frames, faults."""
        with self._lock:
            values = {'metric_source': self.settings.source, 'metric_state': self.state,
                      'metric_frame': self.frame_id, 'metric_detail': self._last_detail}
            if not self.active:
                return values
            t = self._transform
            values['metric_scale'] = f'{t.scale:.6f}' if t is not None else 'n/a'
            fit = self.aligner.fit
            if self.settings.uses_odometry:
                values.update({
                    'metric_frames_used': str(fit.used if fit else 0),
                    'metric_frames_held': str(len(self.aligner)),
                    'metric_residual_m': f'{fit.residual_m:.4f}' if fit else 'n/a',
                    'metric_rotation_residual_deg':
                        f'{fit.rotation_residual_deg:.2f}' if fit else 'n/a',
                    'metric_scale_uncertainty': f'{fit.scale_error:.4f}' if fit else 'n/a',
                    'metric_baseline_m': f'{fit.baseline_m:.3f}' if fit else 'n/a',
                    'odometry_age_s': f'{self._odometry_age:.3f}'})
            if self.settings.uses_depth:
                values.update({'depth_scale_frames': str(len(self.depth_scale)),
                               'depth_scale_spread': f'{self.depth_scale.spread:.4f}',
                               'depth_pixels': str(self._depth_pixels)})
            values.update({f'metric_fault_{k}': str(v) for k, v in sorted(self.faults.items())})
            return values

    def state_dict(self) -> dict[str, Any]:
        """Return what a saved session keeps: the source and the transform."""
        with self._lock:
            t = self._transform
            return {'source': self.settings.source,
                    'transform': None if t is None else t.to_list()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue with a saved transform (refined again once new frames determine it).

        :raises ValueError: when the session was saved with another ``metric_source``.
        """
        source = state.get('source', 'none')
        if source != self.settings.source:
            raise ValueError(f'the session was saved with metric_source {source!r}, the node '
                             f'runs with {self.settings.source!r}')
        with self._lock:
            if state.get('transform') is not None and self.active:
                self._transform = Sim3.from_list(state['transform'])
                self.version += 1
                self._set_state('aligned', 'resumed from a saved session')


def _moved(old: Sim3, new: Sim3) -> bool:
    dR = old.R.T @ new.R
    angle = np.degrees(np.arccos(np.clip((np.trace(dR) - 1.0) / 2.0, -1.0, 1.0)))
    return (abs(new.scale / old.scale - 1.0) > REFIT_SCALE or angle > REFIT_DEG
            or float(np.linalg.norm(new.t - old.t)) > REFIT_METRES)
