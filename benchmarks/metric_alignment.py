"""Accuracy and cost of the metric alignment on synthetic rooms: ground truth plus noise.

The alignment method is measured without the network. Each room (a seed of
:class:`~spann3r_ros.synthetic.scene.SyntheticScene`) is rendered at the colour size
(default 320 x 240) and cropped to the model size (default 224 x 224) with the official crop
(:func:`~spann3r_model.data.crop.compute_crop` centred on the image, as the node's preprocessing
does, and :func:`~spann3r_model.data.crop.crop_depth`). What the worker would pass to
:meth:`~spann3r_ros.pipeline.metric_frame.MetricAlignment.observe` is made from the ground truth:

* ``T_map_cam``: the ground-truth pose in the first camera's frame, REP 103 axes
  (:func:`~spann3r_model.geometry.frames.optical_to_rep103_pose`), its centre multiplied by an
  unknown reconstruction scale ``r`` (uniform in ``--scale-range``, 1 m = ``r`` units). Every
  camera but the first (the frame's origin by definition) gets an isotropic Gaussian centre error
  of ``centre_m`` RMS in 3-D (``centre_m / sqrt(3)`` per axis, in metres before the scaling, so
  1 cm "equivalent") and a rotation error of ``rotation_deg`` RMS (a rotation vector with
  ``rotation_deg / sqrt(3)`` per axis, applied in the camera frame);
* the predicted depth: the cropped ground-truth depth times ``r``, with independent relative
  Gaussian noise of ``pointmap`` per pixel; the mask trusts every pixel;
* the crop and the colour size of the real sampling path.

The robot's side, as the node's callbacks would fill it:

* odometry at ``--odometry-rate`` times the frame rate, from half a second before the first frame
  to half a second after the last, offset by ``--odometry-phase`` of its period (0: every third
  sample falls on a frame stamp): ``odometry_poses(base_poses(GT optical poses), OdometryNoise(
  noise_m, noise_rad, drift, seed))`` (so ``odom`` is the world frame of the room). It goes into a
  :class:`~spann3r_ros.pipeline.pose_buffer.PoseBuffer` as the base pose, looked up and then
  carried through the mount (:func:`~spann3r_ros.synthetic.odometry.optical_poses`), as
  :class:`~spann3r_ros.pipeline.metric_inputs.MetricInputs` does on the odometry topic path,
  and into a
  :class:`~spann3r_ros.pipeline.tf_lookup.LiveTf` as the moving edge ``odom -> base_link`` with
  the static ``base_link -> camera_link -> camera_optical_frame`` (the TF path). Samples up to
  ``--latency`` seconds after a frame's stamp are in before that frame is observed (the network's
  latency);
* the sensor depth: the full-resolution ground-truth depth through
  :func:`~spann3r_ros.synthetic.sensor_noise.degrade_depth` into a
  :class:`~spann3r_ros.pipeline.depth_scale.DepthBuffer` at the frame's stamp.

Routes (``MetricSettings(source=...)`` with default thresholds), interleaved frame by frame, the
order rotating each frame: ``odometry_topic``, ``odometry_tf``, ``depth``, ``both``. After the
last frame:

* scale error: ``|s * r - 1|``, ``s`` the published map-to-output scale (metres per unit) and
  ``1 / r`` the true one;
* ATE (odometry routes): RMS over all frames of the distance between the centre of
  ``transform().apply_pose(T_map_cam)`` and the ground-truth camera centre, in ``odom`` (the room's
  world frame: the odometry starts at the ground truth);
* the frame (1-based count) after which the state first was ``aligned``;
* the odometry fit's own diagnostics (pairs used, baseline, residuals) and the rotation error.

Five rooms are a small sample of a fit whose scale, after a short drive, is limited by the
noise over the baseline; the odometry route is therefore also run on ``--pose-rooms`` rooms
without rendering (seeds from :data:`POSE_SEEDS`): the share that aligned within the frames and
the median, p90 and worst scale error of those. The same figures after the long sequence below
show where the odometry fit converges (its floor is the odometry's scale drift). Both
odometry paths must give the same figures, to :data:`AGREE_SCALE` / :data:`AGREE_M`.

Cost: the wall time of each ``observe`` call (after a warm-up room; the targets), and the CPU
time of the thread beside it (which other processes on a shared machine do not inflate),
median and p95 over every frame of every room; and, on one long sequence of ``--long-frames``
frames (its depth images those of the rendered frames, reused in turn), over the frames whose
odometry window (``AlignmentThresholds.window`` pairs) is full. Faults (robustness, not
targets): 5 % of the odometry samples moved by 0.5 m; a camera turning in place and one
standing still (odometry, ``--long-frames`` frames); the sensor depth all invalid (depth, both).

Every figure is printed beside its target with PASS / MISS and written as strict JSON to
``--output``. No assertion: figures only. ``--zero-noise`` (with ``--odometry-phase 0``, which
takes the interpolation of a curved path out) checks the machinery: every error is then at
rounding level. Example::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/metric_alignment.py --rooms 5 --frames 30
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, replace
import json
import logging
import math
import os
from pathlib import Path
import time
from typing import Any, Optional, Sequence

import numpy as np

from spann3r_model.data.crop import compute_crop, crop_depth, CropBox
from spann3r_model.evaluation.report import json_ready
from spann3r_model.geometry.align import Sim3
from spann3r_model.geometry.frames import optical_to_rep103_pose, R_BODY_OPTICAL
from spann3r_ros.pipeline.depth_scale import DepthBuffer
from spann3r_ros.pipeline.metric_frame import MetricAlignment, MetricSettings
from spann3r_ros.pipeline.odometry_alignment import AlignmentThresholds
from spann3r_ros.pipeline.pose_buffer import PoseBuffer, PoseLookup
from spann3r_ros.pipeline.tf_lookup import LiveTf, lookup_fn
from spann3r_ros.synthetic.odometry import (
    base_poses,
    odometry_poses,
    OdometryNoise,
    optical_poses,
    rotvec_matrices,
    T_BASE_CAMERA_LINK,
    T_CAMERA_LINK_OPTICAL,
)
from spann3r_ros.synthetic.scene import SyntheticConfig, SyntheticScene
from spann3r_ros.synthetic.sensor_noise import degrade_depth

OUTPUT = Path(__file__).resolve().parent / 'results' / 'metric_alignment.json'
#: The routes, in the order of the first frame.
ROUTES = ('odometry_topic', 'odometry_tf', 'depth', 'both')
SOURCES = {'odometry_topic': 'odometry', 'odometry_tf': 'odometry', 'depth': 'depth',
           'both': 'both'}
CAMERA_FRAME = 'camera_optical_frame'
#: Targets: scale error (fraction), ATE (metres), ``observe`` time (milliseconds).
TARGET_SCALE, TARGET_ATE, TARGET_MS = 0.02, 0.03, 2.0
#: How far the odometry topic and TF paths' figures may differ (scale error, ATE in metres).
#: Both interpolate the base pose between odometry samples and then apply the mount (as tf2
#: does), one in a PoseBuffer, the other through the TF tree's edges: they differ only by the
#: rounding of the composition order.
AGREE_SCALE, AGREE_M = 1e-9, 1e-9
#: Turn rate of the camera of the pure-rotation fault, rad/s.
TURN_RATE = 0.5
#: Odometry glitches of the jump fault: this fraction of the samples moved by this many metres.
JUMP_FRACTION, JUMP_M = 0.05, 0.5
#: First seed of the pose-only rooms (no rendering: the odometry route's statistics).
POSE_SEEDS = 1000
#: Seconds of odometry before the first frame and after the last.
ODOMETRY_PAD = 0.5
#: A logger that swallows the alignment's state changes and fault warnings.
QUIET = logging.getLogger('metric_alignment_benchmark')
QUIET.addHandler(logging.NullHandler())
QUIET.propagate = False


@dataclass(frozen=True)
class Noise:
    """The errors added to the ground truth (see the module docstring).

    :param centre_m: RMS 3-D error of a reconstructed camera centre, metres equivalent.
    :param rotation_deg: RMS rotation error of a reconstructed camera, degrees.
    :param pointmap: relative per-pixel error of the predicted depth.
    :param odometry_m: white position noise of the odometry per axis, metres.
    :param odometry_rad: white rotation noise of the odometry per axis, radians.
    :param drift: odometry scale drift (and heading bias), a fraction of the path.
    :param depth_relative: relative noise of the sensor depth.
    :param depth_invalid: fraction of invalid sensor depth pixels.
    """

    centre_m: float = 0.01
    rotation_deg: float = 0.5
    pointmap: float = 0.01
    odometry_m: float = 0.005
    odometry_rad: float = 0.002
    drift: float = 0.01
    depth_relative: float = 0.02
    depth_invalid: float = 0.10


ZERO_NOISE = Noise(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)


@dataclass(frozen=True)
class Room:
    """One sequence: ground truth, what the worker observes and what the robot publishes.

    :param seed: the room's seed.
    :param recon_scale: reconstruction units per metre (the true map scale is its inverse).
    :param stamps: ``[N]`` frame stamps, seconds.
    :param T_world_cam: ``[N, 4, 4]`` ground-truth optical-frame poses.
    :param T_map_cam: ``[N, 4, 4]`` reconstruction poses (first camera, REP 103 axes).
    :param depths: ``(predicted [S, S], sensor [h, w])`` per rendered frame, used in turn.
    :param odom_stamps: ``[M]`` odometry stamps.
    :param T_odom_base: ``[M, 4, 4]`` odometry base poses.
    :param crop: the model crop of the colour image.
    :param colour_wh: ``(W, H)`` of the colour image.
    """

    seed: int
    recon_scale: float
    stamps: np.ndarray
    T_world_cam: np.ndarray
    T_map_cam: np.ndarray
    depths: tuple[tuple[np.ndarray, np.ndarray], ...]
    odom_stamps: np.ndarray
    T_odom_base: np.ndarray
    crop: CropBox
    colour_wh: tuple[int, int]


def _rot_z(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def camera_path(scene: SyntheticScene, times: np.ndarray, motion: str) -> np.ndarray:
    """Return ``[N, 4, 4]`` camera poses at ``times`` (seconds after the start).

    :param motion: ``orbit`` (the room's trajectory), ``rotation`` (turning in place about the
        vertical at :data:`TURN_RATE`) or ``still`` (the first pose throughout).
    """
    if motion == 'orbit':
        return np.stack([scene.pose_at(float(t)) for t in times])
    first = scene.pose_at(0.0)
    poses = np.repeat(first[None], len(times), axis=0)
    if motion == 'rotation':
        for T, t in zip(poses, times):
            T[:3, :3] = _rot_z(TURN_RATE * float(t)) @ first[:3, :3]
    return poses


def _rigid_inverse(T: np.ndarray) -> np.ndarray:
    out = np.eye(4)
    out[:3, :3] = T[:3, :3].T
    out[:3, 3] = -T[:3, :3].T @ T[:3, 3]
    return out


def reconstruction_poses(T_world_cam: np.ndarray, recon_scale: float, noise: Noise,
                         rng: np.random.Generator) -> np.ndarray:
    """Return the ``T_map_cam`` the worker would give for ground-truth poses (module docstring)."""
    T = _rigid_inverse(T_world_cam[0]) @ T_world_cam
    n = len(T) - 1
    T[1:, :3, 3] += rng.normal(0.0, noise.centre_m / math.sqrt(3.0), (n, 3))
    rotation = rng.normal(0.0, math.radians(noise.rotation_deg) / math.sqrt(3.0), (n, 3))
    T[1:, :3, :3] = T[1:, :3, :3] @ rotvec_matrices(rotation)
    T[:, :3, 3] *= recon_scale
    return np.stack([optical_to_rep103_pose(pose) for pose in T])


def make_room(seed: int, args: argparse.Namespace, noise: Noise, frames: int,
              motion: str = 'orbit', rendered: Optional[int] = None) -> Room:
    """Build one sequence of ``frames`` frames, rendering the first ``rendered`` (all: None)."""
    width, height = args.width, args.height
    scene = SyntheticScene(SyntheticConfig(width=width, height=height, num_frames=frames,
                                           fps=args.fps, seed=seed))
    rng = np.random.default_rng((seed, 1))
    recon_scale = float(rng.uniform(*args.scale_range))
    pose_rng = np.random.default_rng((seed, 3))  # the same pose noise however many are rendered
    times = np.arange(frames) / args.fps
    T_world_cam = camera_path(scene, times, motion)
    crop = compute_crop(width, height, args.size)
    depths = []
    for i in range(frames if rendered is None else min(rendered, frames)):
        depth = scene.render(T_world_cam[i])[1]
        predicted = crop_depth(depth, crop) * np.float32(recon_scale)
        if noise.pointmap:
            predicted *= (1.0 + noise.pointmap * rng.standard_normal(predicted.shape)
                          ).astype(np.float32)
        sensor = degrade_depth(depth, noise.depth_relative, noise.depth_invalid, seed, i)
        depths.append((predicted, sensor))
    hz = args.fps * args.odometry_rate
    first, last = -math.ceil(ODOMETRY_PAD * hz), math.ceil((times[-1] + ODOMETRY_PAD) * hz)
    odom_times = (np.arange(first, last + 1) + args.odometry_phase) / hz
    T_odom_base = odometry_poses(
        base_poses(camera_path(scene, odom_times, motion)),
        OdometryNoise(noise.odometry_m, noise.odometry_rad, noise.drift, seed))
    start = scene.config.start_time
    return Room(seed=seed, recon_scale=recon_scale, stamps=start + times,
                T_world_cam=T_world_cam,
                T_map_cam=reconstruction_poses(T_world_cam, recon_scale, noise, pose_rng),
                depths=tuple(depths), odom_stamps=start + odom_times, T_odom_base=T_odom_base,
                crop=crop, colour_wh=(width, height))


def with_jumps(room: Room, seed: int) -> Room:
    """Return ``room`` with :data:`JUMP_FRACTION` of its odometry samples moved by ``JUMP_M``."""
    rng = np.random.default_rng((seed, 2))
    T = room.T_odom_base.copy()
    picked = rng.choice(len(T), size=max(1, round(JUMP_FRACTION * len(T))), replace=False)
    direction = rng.normal(size=(len(picked), 3))
    T[picked, :3, 3] += JUMP_M * direction / np.linalg.norm(direction, axis=1, keepdims=True)
    return replace(room, T_odom_base=T)


def without_depth(room: Room) -> Room:
    """Return ``room`` with every sensor depth pixel invalid (0)."""
    return replace(room, depths=tuple((p, np.zeros_like(s)) for p, s in room.depths))


class Inputs:
    """The node's metric inputs of one room, filled as its stamps pass.

    :param room: the sequence.
    """

    def __init__(self, room: Room) -> None:
        self.room = room
        self.poses = PoseBuffer()
        self.tf = LiveTf()
        self.tf.add('base_link', 'camera_link', 0.0, T_BASE_CAMERA_LINK, static=True)
        self.tf.add('camera_link', CAMERA_FRAME, 0.0, T_CAMERA_LINK_OPTICAL, static=True)
        self.depth = DepthBuffer()
        self._next = 0

    def advance(self, until: float) -> None:
        """Add the odometry samples stamped up to ``until``."""
        room = self.room
        while self._next < len(room.odom_stamps) and room.odom_stamps[self._next] <= until:
            k, stamp = self._next, float(room.odom_stamps[self._next])
            self.poses.add(stamp, room.T_odom_base[k])
            self.tf.add('odom', 'base_link', stamp, room.T_odom_base[k], static=False)
            self._next += 1

    def topic(self, stamp: float, _camera_frame: str) -> PoseLookup:
        """Look ``T_odom_cam`` up as the odometry topic path does (base pose, then the mount)."""
        found = self.poses.lookup(stamp)
        if found.T is None:
            return found
        return PoseLookup(found.state, optical_poses(found.T[None])[0], found.age)

    def alignment(self, route: str) -> MetricAlignment:
        """Return a fresh alignment of ``route`` fed by these inputs."""
        settings = MetricSettings(source=SOURCES[route])
        odometry = lookup_fn(self.tf, 'odom') if route == 'odometry_tf' else self.topic
        return MetricAlignment(settings, odometry if settings.uses_odometry else None,
                               self.depth if settings.uses_depth else None, QUIET)


@dataclass
class RouteRun:
    """What one route did on one room.

    :param alignment: the alignment after the last frame.
    :param aligned_after: frames observed when the state first was ``aligned`` (None: never).
    :param times_ms: ``observe`` wall time per frame.
    :param cpu_ms: ``observe`` CPU time of this thread per frame (what other processes on the
        machine do not inflate).
    :param held: odometry pairs held after each frame.
    """

    alignment: MetricAlignment
    aligned_after: Optional[int]
    times_ms: list[float]
    cpu_ms: list[float]
    held: list[int]


def run_room(room: Room, routes: Sequence[str], latency: float, rotate: int = 0
             ) -> dict[str, RouteRun]:
    """Observe every frame of ``room`` with every route, interleaved, the order rotating."""
    inputs = Inputs(room)
    runs = {r: RouteRun(inputs.alignment(r), None, [], [], []) for r in routes}
    size = room.crop.size
    mask = np.ones((size, size), dtype=bool)
    for i, stamp in enumerate(room.stamps):
        stamp = float(stamp)
        inputs.advance(stamp + latency)
        predicted = None
        if room.depths:
            predicted, sensor = room.depths[i % len(room.depths)]
            inputs.depth.add(stamp, sensor)
        k = (i + rotate) % len(routes)
        for route in list(routes[k:]) + list(routes[:k]):
            run = runs[route]
            start, cpu = time.perf_counter(), time.thread_time()
            run.alignment.observe(stamp, CAMERA_FRAME, room.T_map_cam[i], predicted, mask,
                                  room.crop, room.colour_wh)
            run.times_ms.append(1e3 * (time.perf_counter() - start))
            run.cpu_ms.append(1e3 * (time.thread_time() - cpu))
            run.held.append(len(run.alignment.aligner))
            if run.aligned_after is None and run.alignment.state == 'aligned':
                run.aligned_after = i + 1
    return runs


def _angle_deg(R: np.ndarray) -> float:
    return math.degrees(math.acos(float(np.clip((np.trace(R) - 1.0) / 2.0, -1.0, 1.0))))


def evaluate(room: Room, run: RouteRun) -> dict[str, Any]:
    """Return the figures of one route on one room (None where not aligned or not defined)."""
    alignment = run.alignment
    S: Optional[Sim3] = alignment.transform()
    out: dict[str, Any] = {'seed': room.seed, 'recon_scale': room.recon_scale,
                           'state': alignment.state, 'aligned_after_frames': run.aligned_after,
                           'scale_error': None, 'scale_error_signed': None}
    odometry = alignment.settings.uses_odometry
    if odometry:
        out.update(ate_m=None, rotation_error_deg=None)
        fit = alignment.aligner.fit
        out['fit'] = None if fit is None else {
            'used': fit.used, 'baseline_m': fit.baseline_m, 'residual_m': fit.residual_m,
            'rotation_residual_deg': fit.rotation_residual_deg}
    out['faults'] = dict(sorted(alignment.faults.items()))
    if S is None:
        return out
    out['scale_error_signed'] = S.scale * room.recon_scale - 1.0
    out['scale_error'] = abs(out['scale_error_signed'])
    if odometry:
        centres = np.stack([S.apply_pose(T)[:3, 3] for T in room.T_map_cam])
        error = np.linalg.norm(centres - room.T_world_cam[:, :3, 3], axis=1)
        out['ate_m'] = float(np.sqrt(np.mean(error ** 2)))
        R_true = room.T_world_cam[0, :3, :3] @ R_BODY_OPTICAL.T
        out['rotation_error_deg'] = _angle_deg(S.R.T @ R_true)
    return out


def run_rooms(rooms: Sequence[Room], routes: Sequence[str], latency: float
              ) -> tuple[dict[str, list[dict[str, Any]]], dict[str, dict[str, Any]]]:
    """Run ``routes`` on every room (the order rotating with the room too).

    :return: the figures per route and room, and the cost of ``observe`` per route over every
        frame of every room.
    """
    rows: dict[str, list[dict[str, Any]]] = {r: [] for r in routes}
    runs: dict[str, list[RouteRun]] = {r: [] for r in routes}
    for index, room in enumerate(rooms):
        for route, run in run_room(room, routes, latency, rotate=index).items():
            rows[route].append(evaluate(room, run))
            runs[route].append(run)
    return rows, {r: cost(v) for r, v in runs.items()}


def worst(rows: Sequence[dict[str, Any]], key: str) -> Optional[float]:
    """Return the largest ``key`` over ``rows``; None when a row has none (not aligned)."""
    values = [row[key] for row in rows]
    return None if any(v is None for v in values) else float(max(values))


def summarise(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Worst and mean figures of one route over the rooms, and the rooms' rows."""
    out: dict[str, Any] = {'rooms': len(rows),
                           'not_aligned': sum(row['scale_error'] is None for row in rows)}
    for key in ('scale_error', 'ate_m', 'rotation_error_deg'):
        if key in rows[0]:
            values = [row[key] for row in rows if row[key] is not None]
            out[f'{key}_worst'] = worst(rows, key)
            out[f'{key}_mean'] = float(np.mean(values)) if values else None
    out['aligned_after_frames'] = [row['aligned_after_frames'] for row in rows]
    out['states'] = sorted({row['state'] for row in rows})
    out['per_room'] = list(rows)
    return out


def cost(runs: Sequence[RouteRun], min_held: int = 0) -> dict[str, Any]:
    """Median and p95 of the wall and CPU times of ``observe`` over ``runs``.

    :param min_held: only frames after which at least this many odometry pairs were held.
    """
    picked = [(t, c) for run in runs for t, c, held in zip(run.times_ms, run.cpu_ms, run.held)
              if held >= min_held]
    wall, cpu = np.asarray(picked).T
    return {'frames': len(wall), 'median_ms': float(np.median(wall)),
            'p95_ms': float(np.percentile(wall, 95)), 'cpu_median_ms': float(np.median(cpu)),
            'cpu_p95_ms': float(np.percentile(cpu, 95))}


class Checks:
    """Figures beside their targets."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def at_most(self, name: str, figure: Optional[float], target: float, unit: str) -> None:
        """Add ``figure <= target`` (a missing figure misses)."""
        self.rows.append({'name': name, 'figure': figure, 'relation': '<=', 'target': target,
                          'unit': unit, 'passed': figure is not None and figure <= target})

    def equals(self, name: str, figure: Any, expected: Any) -> None:
        """Add ``figure == expected``."""
        self.rows.append({'name': name, 'figure': figure, 'relation': '==', 'target': expected,
                          'unit': '', 'passed': figure == expected})

    def accuracy(self, name: str, summary: dict[str, Any]) -> None:
        """Add the worst scale error and, where there is one, the worst ATE of a summary."""
        self.at_most(f'{name}: scale error (worst room)', _percent(summary['scale_error_worst']),
                     100 * TARGET_SCALE, '%')
        if 'ate_m_worst' in summary:
            self.at_most(f'{name}: ATE (worst room)', summary['ate_m_worst'], TARGET_ATE, 'm')

    def cost(self, name: str, c: dict[str, Any]) -> None:
        """Add the median and the p95 of the wall times of a :func:`cost`."""
        self.at_most(f'{name}: observe median', c['median_ms'], TARGET_MS, 'ms')
        self.at_most(f'{name}: observe p95', c['p95_ms'], TARGET_MS, 'ms')


def _percent(value: Optional[float]) -> Optional[float]:
    return None if value is None else 100.0 * value


def _show(row: dict[str, Any]) -> str:
    """One line of the table: name, figure, target, PASS / MISS (metres shown in cm)."""
    unit = row['unit']

    def text(value: Any) -> str:
        if value is None:
            return 'n/a'
        if unit == 'm':
            return f'{100 * value:.3g} cm'
        if unit in ('%', 'ms'):
            return f'{value:.3g} {unit}'
        return str(value)
    return (f'  {row["name"]:<46} {text(row["figure"]):>11}  {row["relation"]} '
            f'{text(row["target"]):<21} {"PASS" if row["passed"] else "MISS"}')


def _cell(value: Optional[float], scale: float, unit: str) -> str:
    return 'n/a' if value is None else f'{scale * value:.3f} {unit}'


def print_rooms(rows: dict[str, list[dict[str, Any]]]) -> None:
    """Print the figures of every route and room."""
    print(f'\n{"seed":>4} {"units/m":>7} | {"route":<14} {"aligned@":>8} {"scale err":>10} '
          f'{"ATE":>9} {"rot err":>9}  state')
    for route, route_rows in rows.items():
        for row in route_rows:
            print(f'{row["seed"]:>4} {row["recon_scale"]:>7.3f} | {route:<14} '
                  f'{str(row["aligned_after_frames"]):>8} '
                  f'{_cell(row["scale_error"], 100, "%"):>10} '
                  f'{_cell(row.get("ate_m"), 100, "cm"):>9} '
                  f'{_cell(row.get("rotation_error_deg"), 1, "deg"):>9}  {row["state"]}')


def odometry_statistics(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Return how the odometry route's figures spread over many rooms."""
    aligned = [row for row in rows if row['scale_error'] is not None]
    errors = np.asarray([row['scale_error'] for row in aligned])
    signed = [row['scale_error_signed'] for row in aligned]
    out: dict[str, Any] = {'rooms': len(rows), 'aligned': f'{len(aligned)} of {len(rows)}',
                           'aligned_after_frames': [row['aligned_after_frames'] for row in rows]}
    for key, value in (('median', 50), ('p90', 90), ('worst', 100)):
        out[f'scale_error_{key}'] = float(np.percentile(errors, value)) if aligned else None
    out['scale_error_signed_mean'] = float(np.mean(signed)) if aligned else None
    out['ate_m_worst'] = max((row['ate_m'] for row in aligned), default=None)
    out['fit_baseline_m'] = [row['fit']['baseline_m'] for row in aligned]
    return out


def run_faults(rooms: Sequence[Room], args: argparse.Namespace, noise: Noise
               ) -> dict[str, Any]:
    """Run the fault table (see the module docstring)."""
    faults: dict[str, Any] = {}
    jumped = [with_jumps(room, room.seed) for room in rooms]
    faults['odometry_jumps'] = summarise(
        run_rooms(jumped, ('odometry_topic',), args.latency)[0]['odometry_topic'])
    for name, motion in (('pure_rotation', 'rotation'), ('standing_still', 'still')):
        moved = [make_room(room.seed, args, noise, args.long_frames, motion=motion, rendered=0)
                 for room in rooms]
        faults[name] = summarise(
            run_rooms(moved, ('odometry_topic',), args.latency)[0]['odometry_topic'])
    blind = run_rooms([without_depth(room) for room in rooms], ('depth', 'both'),
                      args.latency)[0]
    faults['depth_all_invalid'] = {r: summarise(v) for r, v in blind.items()}
    return faults


def fault_checks(faults: dict[str, Any]) -> Checks:
    """Return the fault table's figures beside what they should be."""
    checks = Checks()
    checks.accuracy('odometry jumps', faults['odometry_jumps'])
    for name in ('pure_rotation', 'standing_still'):
        checks.equals(f'{name}: rooms ever aligned',
                      sum(a is not None for a in faults[name]['aligned_after_frames']), 0)
        checks.equals(f'{name}: states', faults[name]['states'], ['waiting_for_baseline'])
    for route in ('depth', 'both'):
        checks.equals(f'depth all invalid, {route}: states',
                      faults['depth_all_invalid'][route]['states'], ['waiting_for_depth'])
    return checks


def topic_tf_agreement(rows: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Largest differences between the odometry topic and TF paths' figures."""
    topic, tf = rows['odometry_topic'], rows['odometry_tf']
    agree: dict[str, Any] = {
        key: max((abs(a[key] - b[key]) for a, b in zip(topic, tf)
                  if a[key] is not None and b[key] is not None), default=None)
        for key in ('scale_error', 'ate_m')}
    agree['aligned_after_frames_equal'] = \
        [a['aligned_after_frames'] for a in topic] == [b['aligned_after_frames'] for b in tf]
    return agree


def _unproject(depth: np.ndarray, K: np.ndarray, T: np.ndarray) -> np.ndarray:
    """Return ``[P, 3]`` points of the valid pixels of ``depth`` posed by ``T`` (optical)."""
    v, u = np.nonzero(np.isfinite(depth) & (depth > 0))
    z = depth[v, u].astype(np.float64)
    cam = np.stack([(u - K[0, 2]) * z / K[0, 0], (v - K[1, 2]) * z / K[1, 1], z], axis=1)
    return cam @ T[:3, :3].T + T[:3, 3]


def draw_room_map(room: Room, args: argparse.Namespace, path: Path) -> dict[str, Any]:
    """Draw the odometry_tf route's map of ``room`` in odom on its ground truth.

    The map is what the node would publish from these observations: each frame's predicted
    depth unprojected with the model crop's intrinsics, posed by its ``T_map_cam`` and carried
    by the final alignment; the ground truth is the same pixels' true depth posed by the true
    camera pose (``odom`` is the room's world frame).

    :return: the figures drawn beside it (scale error, ATE, points).
    """
    from spann3r_ros.cli.metric_preview import render_metric_map

    run = run_room(room, ('odometry_tf',), args.latency)['odometry_tf']
    S = run.alignment.transform()
    figures = evaluate(room, run)
    if S is None:
        raise ValueError(f'room {room.seed} did not align: {run.alignment.state}')
    scene = SyntheticScene(SyntheticConfig(width=args.width, height=args.height,
                                           num_frames=len(room.stamps), fps=args.fps,
                                           seed=room.seed))
    K = room.crop.input_to_model_intrinsics(scene.K)
    pred, gt = [], []
    for i, (predicted, _) in enumerate(room.depths):
        pred.append(S.apply_points(_unproject(predicted, K, room.T_map_cam[i])))
        true = crop_depth(scene.render(room.T_world_cam[i])[1], room.crop)
        gt.append(_unproject(true, K, room.T_world_cam[i]))
    est = np.stack([S.apply_pose(T)[:3, 3] for T in room.T_map_cam])
    render_metric_map(path, np.concatenate(pred), None, np.concatenate(gt), est,
                      room.T_world_cam[:, :3, 3], 'odom',
                      title=f'room {room.seed}: ground-truth pointmaps with noise through the '
                      f'odometry (TF) alignment; scale error '
                      f'{100 * figures["scale_error_signed"]:+.2f}%, ATE '
                      f'{100 * figures["ate_m"]:.1f} cm')
    return {'path': str(path), 'scale_error_signed': figures['scale_error_signed'],
            'ate_m': figures['ate_m']}


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    """Parse the command line (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--rooms', type=int, default=5, help='rooms (seeds 0 .. N-1)')
    p.add_argument('--frames', type=int, default=30, help='frames per room')
    p.add_argument('--width', type=int, default=320, help='colour width')
    p.add_argument('--height', type=int, default=240, help='colour height')
    p.add_argument('--size', type=int, default=224, help='model crop side')
    p.add_argument('--fps', type=float, default=2.0,
                   help='rate of the frames the node processes: Spann3R runs on keyframes, '
                   'and 2 Hz (keyframe_every 5 of a 10 Hz camera) gives 30 of them 15 s of '
                   'motion; at 10 Hz the 30 frames span 3 s and about 0.3 m, too little '
                   'baseline for a 2%% scale under 1 cm pose noise')
    p.add_argument('--odometry-rate', type=float, default=3.0,
                   help='odometry samples per frame')
    p.add_argument('--odometry-phase', type=float, default=0.5,
                   help='offset of the odometry samples, a fraction of their period')
    p.add_argument('--latency', type=float, default=0.1,
                   help='odometry seconds past a frame that are in when it is observed')
    p.add_argument('--scale-range', type=float, nargs=2, default=(0.2, 3.0),
                   help='reconstruction units per metre, drawn uniformly')
    p.add_argument('--pose-rooms', type=int, default=60,
                   help='rooms of the pose-only odometry statistics (seeds 1000 ..)')
    p.add_argument('--long-frames', type=int, default=None,
                   help='frames of the full-window sequence and of the still faults '
                        '(default: window + 60)')
    p.add_argument('--zero-noise', action='store_true', help='no noise anywhere')
    p.add_argument('--output', type=Path, default=OUTPUT, help='JSON report')
    p.add_argument('--figure', type=Path,
                   help="also draw room 0's map through the odometry_tf route, in odom, on "
                   'its ground truth (PNG)')
    args = p.parse_args(argv)
    window = AlignmentThresholds().window
    if args.long_frames is None:
        args.long_frames = window + 60
    if args.rooms < 1 or args.pose_rooms < 1 or args.frames < 2 or args.long_frames < window:
        p.error(f'need --rooms >= 1, --pose-rooms >= 1, --frames >= 2 and --long-frames >= '
                f'{window}')
    return args


def main(argv: Optional[Sequence[str]] = None) -> dict[str, Any]:
    """Run the benchmark, print the table, write the JSON; return the report."""
    args = parse_args(argv)
    began = time.perf_counter()
    noise = ZERO_NOISE if args.zero_noise else Noise()
    window = AlignmentThresholds().window
    rooms = [make_room(seed, args, noise, args.frames) for seed in range(args.rooms)]
    long_room = make_room(0, args, noise, args.long_frames, rendered=args.frames)
    print(f'{args.rooms} rooms x {args.frames} frames at {args.fps:g} fps, colour '
          f'{args.width}x{args.height} -> model {args.size}x{args.size} (official crop), '
          f'odometry at {args.odometry_rate:g}x the frame rate, phase {args.odometry_phase:g}; '
          f'noise: {"none" if args.zero_noise else noise}; '
          f'load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs')

    run_room(rooms[0], ROUTES, args.latency)  # warm-up
    rows, costs = run_rooms(rooms, ROUTES, args.latency)
    routes = {r: summarise(v) for r, v in rows.items()}
    long_routes = ('odometry_topic', 'odometry_tf', 'both')
    long_runs = run_room(long_room, long_routes, args.latency)
    long_figures = {r: evaluate(long_room, run) for r, run in long_runs.items()}
    full = {r: cost([run], window) for r, run in long_runs.items()}
    pose_rooms = [make_room(seed, args, noise, args.frames, rendered=0)
                  for seed in range(POSE_SEEDS, POSE_SEEDS + args.pose_rooms)]
    statistics = odometry_statistics(
        run_rooms(pose_rooms, ('odometry_topic',), args.latency)[0]['odometry_topic'])
    faults = run_faults(rooms, args, noise)
    agree = topic_tf_agreement(rows)

    checks = Checks()
    for route in ROUTES:
        checks.accuracy(route, routes[route])
    checks.equals('odometry topic and TF: same frame of alignment',
                  agree['aligned_after_frames_equal'], True)
    checks.at_most('odometry topic and TF: scale error difference',
                   _percent(agree['scale_error']), 100 * AGREE_SCALE, '%')
    checks.at_most('odometry topic and TF: ATE difference', agree['ate_m'], AGREE_M, 'm')
    for route in ROUTES:
        checks.cost(route, costs[route])
    for route in long_routes:
        checks.cost(f'{route}, {window}-pair window', full[route])
    spread = Checks()
    spread.equals(f'rooms aligned after {args.frames} frames', statistics['aligned'],
                  f'{args.pose_rooms} of {args.pose_rooms}')
    for key in ('median', 'p90', 'worst'):
        spread.at_most(f'scale error {key} of the aligned rooms',
                       _percent(statistics[f'scale_error_{key}']), 100 * TARGET_SCALE, '%')
    spread.at_most('ATE worst of the aligned rooms', statistics['ate_m_worst'], TARGET_ATE, 'm')
    robustness = fault_checks(faults)

    print_rooms(rows)
    print(f'\nafter the {args.long_frames}-frame sequence (room 0): ' + '; '.join(
        f'{r} scale err {_cell(f["scale_error"], 100, "%")}, '
        f'ATE {_cell(f["ate_m"], 100, "cm")}' for r, f in long_figures.items()))
    print('\nobserve per frame, wall (CPU of the thread), ms: ' + '; '.join(
        f'{name} {c["median_ms"]:.2f} ({c["cpu_median_ms"]:.2f}) median, {c["p95_ms"]:.2f} '
        f'({c["cpu_p95_ms"]:.2f}) p95' for name, c in
        [*costs.items(), *((f'{r} {window}-pair window', c) for r, c in full.items())]))
    print('\ntargets:')
    for row in checks.rows:
        print(_show(row))
    print(f'odometry_topic over {args.pose_rooms} pose-only rooms (seeds {POSE_SEEDS} ..; '
          f'mean signed scale error {_cell(statistics["scale_error_signed_mean"], 100, "%")}):')
    for row in spread.rows:
        print(_show(row))
    print('faults (robustness, not targets):')
    for row in robustness.rows:
        print(_show(row))
    elapsed = time.perf_counter() - began
    print(f'{elapsed:.1f} s; load average at the end {os.getloadavg()[0]:.2f}')

    figure = None if args.figure is None else draw_room_map(rooms[0], args, args.figure)
    if figure is not None:
        print(f'figure: {figure["path"]}')
    settings = {k: v for k, v in vars(args).items() if k not in ('output', 'figure')}
    report = {
        'settings': {**settings, 'noise': asdict(noise), 'seeds': [r.seed for r in rooms],
                     'window': window, 'turn_rate_rad_s': TURN_RATE,
                     'jump_fraction': JUMP_FRACTION, 'jump_m': JUMP_M},
        'targets': {'scale_error': TARGET_SCALE, 'ate_m': TARGET_ATE, 'observe_ms': TARGET_MS},
        'routes': routes, 'topic_tf_agreement': agree,
        'cost_ms': costs, 'cost_full_window_ms': full,
        'long_sequence': long_figures, 'odometry_statistics': statistics, 'faults': faults,
        'checks': checks.rows, 'statistics_checks': spread.rows, 'robustness': robustness.rows,
        'runtime_s': elapsed, 'figure': figure,
    }
    report = json_ready(report)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2, allow_nan=False) + '\n')
    return report


if __name__ == '__main__':
    main()
