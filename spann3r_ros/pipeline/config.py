"""Typed, ROS-free configuration of the live node.

:class:`NodeConfig` is the single source of truth for the node's parameters: the ROS parameter
declarations (:mod:`spann3r_ros.node.params`), ``config/live.yaml`` and the README tables
(``tools/gen_param_docs.py``) are all derived from the field metadata below, so they cannot
disagree. Each field carries a description, an optional numeric range or list of choices and a
``read_only`` flag (read-only parameters can only be set at startup).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
import os
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional

import numpy as np
from scipy.spatial.transform import Rotation

from spann3r_model.config import EngineConfig, MemoryConfig, PRECISIONS, PRESETS
from spann3r_ros.pipeline.metric_frame import METRIC_SOURCES, MetricSettings
from spann3r_ros.pipeline.odometry_alignment import AlignmentThresholds

TRANSPORTS = ('raw', 'compressed')
RELIABILITIES = ('best_effort', 'reliable')
#: Where odometry comes from: TF, a nav_msgs/Odometry topic or a PoseStamped topic.
ODOMETRY_SOURCES = ('tf', 'odometry_topic', 'pose_topic')
DEPTH_TRANSPORTS = ('raw', 'compressedDepth')
#: ``base_to_camera`` default: the optical frame at the base origin (x, y, z, qx, qy, qz, qw).
OPTICAL_AT_BASE = [0.0, 0.0, 0.0, -0.5, 0.5, -0.5, 0.5]


def _param(default: Any, description: str, *, read_only: bool = True,
           range: Optional[tuple[float, float]] = None,
           choices: Optional[tuple[str, ...]] = None) -> Any:
    """Declare a dataclass field with the metadata the ROS layer and the docs need."""
    meta = {'description': description, 'read_only': read_only, 'range': range,
            'choices': choices}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class ParamSpec:
    """One parameter as the ROS layer declares it.

    :param name: parameter name (no namespace).
    :param default: default value; its Python type is the parameter type.
    :param type_name: ``bool``, ``int``, ``float``, ``str``, ``list[str]`` or ``list[float]``.
    :param description: one-line description.
    :param read_only: True when the value can only be set at startup.
    :param range: inclusive ``(low, high)`` for numbers, else None.
    :param choices: allowed strings, else None.
    """

    name: str
    default: Any
    type_name: str
    description: str
    read_only: bool
    range: Optional[tuple[float, float]]
    choices: Optional[tuple[str, ...]]


@dataclass(frozen=True)
class NodeConfig:
    """Every setting of the live reconstruction node (defaults are the shipped ones)."""

    # Model and engine.
    checkpoint: str = _param('', 'Model weights: official spann3r.pth or our .safetensors '
                             '(required).')
    model_preset: str = _param('', 'Architecture preset when the checkpoint does not carry its '
                               'config; empty = from the checkpoint.',
                               choices=('',) + tuple(sorted(PRESETS)))
    device: str = _param('auto', 'Inference device: auto, cpu, cuda or cuda:N.')
    precision: str = _param('fp32', 'Inference precision.', choices=PRECISIONS)
    image_size: int = _param(224, 'Square model resolution in pixels (multiple of 16).',
                             range=(16, 1024))
    num_threads: int = _param(0, 'CPU threads for torch (0 = torch default).', range=(0, 256))
    pack_weights: bool = _param(True, 'x86 CPU: keep oneDNN-packed copies of the float weights '
                                '(about 5% faster, +2.4 GB for the released model).')
    keep_freed_memory: bool = _param(True, 'Linux/glibc: keep freed tensor memory in the process '
                                     'instead of faulting in fresh pages every frame.')
    # Spatial memory.
    work_mem_size: int = _param(5, 'Working memory size in frames.', range=(1, 64))
    long_mem_size: int = _param(4000, 'Long-term memory size in tokens.', range=(0, 100000))
    attn_thresh: float = _param(5e-4, 'Memory attention values below this are zeroed.',
                                range=(0.0, 0.5))
    sim_thresh: float = _param(0.95, 'Frames this similar to the working memory are not '
                               'stored.', range=(0.01, 1.0))
    # Inputs.
    image_topics: list = _param(['image'], 'Base image topics; several cameras feed one memory, '
                                'interleaved by stamp.')
    transport: str = _param('raw', 'raw subscribes to <topic> (sensor_msgs/Image), compressed '
                            'to <topic>/compressed (CompressedImage).', choices=TRANSPORTS)
    qos_reliability: str = _param('best_effort', 'Reliability of the image subscriptions.',
                                  choices=RELIABILITIES)
    qos_depth: int = _param(5, 'History depth of the image subscriptions.', range=(1, 100))
    keyframe_every: int = _param(1, 'Process every n-th received frame.', read_only=False,
                                 range=(1, 1000))
    keyframe_min_interval: float = _param(0.0, 'Minimum stamp interval in seconds between '
                                          'processed frames.', read_only=False,
                                          range=(0.0, 60.0))
    max_image_pixels: int = _param(16_000_000, 'Larger input images are rejected as malformed.',
                                   range=(64, 100_000_000))
    # Outputs.
    provisional: bool = _param(False, 'Publish the low-latency head-2 estimate of each frame '
                               'instead of the refined result one frame later.')
    estimate_pose: bool = _param(True, 'Estimate focal and camera pose (PnP) for every frame.')
    min_confidence: float = _param(1.5, 'Points with a lower confidence (>= 1) are not '
                                   'published or mapped.', read_only=False, range=(0.0, 1000.0))
    map_voxel_size: float = _param(0.01, 'Voxel edge of the global map, in map units.',
                                   range=(1e-5, 100.0))
    map_max_points: int = _param(500_000, 'Hard cap on the number of map points.',
                                 range=(1, 50_000_000))
    map_publish_rate: float = _param(1.0, 'Rate of the map topic in Hz (0 = never).',
                                     range=(0.0, 100.0))
    diagnostics_rate: float = _param(1.0, 'Rate of /diagnostics in Hz (0 = never).',
                                     range=(0.0, 100.0))
    publish_tf: bool = _param(True, 'Broadcast TF map -> camera frame (when tf2_ros exists).')
    map_frame: str = _param('map', 'Frame of the map, pose, path and point clouds.')
    camera_frame: str = _param('spann3r_camera_optical', 'Optical frame of the (first) camera; '
                               'camera i > 0 gets the suffix _i.')
    # Files.
    output_dir: str = _param('~/.ros/spann3r', 'Directory for save_map and save_session '
                             '(nothing is written elsewhere).')
    map_filename: str = _param('', 'File name for save_map inside output_dir; empty = '
                               'map_<UTC time>.ply.', read_only=False)
    resume_from: str = _param('', 'Session directory written by save_session to continue at '
                              'startup.')
    # Long runs.
    segment_max_frames: int = _param(0, 'Start a new memory segment after this many frames '
                                     '(0 = never).', range=(0, 1_000_000))
    segment_min_confidence: float = _param(0.0, 'Start a new segment when the mean confidence '
                                           'of a frame drops below this (0 = never).',
                                           range=(0.0, 1000.0))
    segment_overlap: int = _param(3, 'Frames re-run in a new segment to align it (Sim(3)) to '
                                  'the previous one.', range=(2, 20))
    # Metric scale and the robot's frames.
    metric_source: str = _param('none', 'Scale and frame of the outputs: none (map_frame, the '
                                "network's scale), odometry (odom_frame, metres, from the "
                                "robot's odometry), depth (map_frame, metres, from depth_topic) "
                                'or both (depth for scale, odometry for the frame).',
                                choices=METRIC_SOURCES)
    odom_frame: str = _param('odom', 'Odometry frame the outputs are published in with '
                             'metric_source odometry or both.')
    odometry_source: str = _param('tf', 'tf: odom_frame -> the image frame_id through TF; '
                                  'odometry_topic: nav_msgs/Odometry on odometry_topic; '
                                  'pose_topic: geometry_msgs/PoseStamped on odometry_topic '
                                  '(both composed with base_to_camera).',
                                  choices=ODOMETRY_SOURCES)
    odometry_topic: str = _param('odom', 'Odometry or PoseStamped topic of the base in '
                                 'odom_frame (odometry_source odometry_topic or pose_topic).')
    base_to_camera: list = _param(list(OPTICAL_AT_BASE), 'Fixed base -> camera optical frame '
                                  'as x, y, z, qx, qy, qz, qw (odometry topics only; with TF '
                                  'the transform comes from TF).')
    odometry_timeout: float = _param(0.5, 'Odometry older than this (s) at a frame is lost; '
                                     'also the largest gap interpolated.', range=(0.01, 60.0))
    odometry_tolerance: float = _param(0.05, 'A frame may be this much (s) newer or older '
                                       'than the nearest odometry sample.', range=(0.0, 5.0))
    alignment_min_frames: int = _param(10, 'Frames with odometry needed before the first '
                                       'alignment.', range=(2, 10000))
    alignment_min_baseline: float = _param(0.08, 'Spread (RMS, m) of the camera centres needed '
                                           'before the scale is fitted.', range=(0.0, 100.0))
    alignment_min_rotation: float = _param(0.0, 'Rotation (deg) of the camera needed before '
                                           'the first alignment (0: the orientations fix the '
                                           'rotation).', range=(0.0, 180.0))
    alignment_max_residual: float = _param(0.1, 'Fits whose RMS centre residual exceeds this '
                                           '(m) are not used.', range=(1e-4, 100.0))
    alignment_max_scale_error: float = _param(0.02, 'Fits whose scale is less certain than '
                                              'this (relative standard error: residual over '
                                              'baseline) are not used.', range=(1e-5, 10.0))
    alignment_max_rotation_residual: float = _param(
        10.0, 'Fits whose camera orientations disagree with the odometry by more than this '
        '(RMS, deg) are not used.', range=(0.1, 180.0))
    alignment_window: int = _param(300, 'Newest frames the odometry fit uses.',
                                   range=(2, 100000))
    depth_topic: str = _param('aligned_depth/image_raw', 'Aligned depth image (16UC1 mm or '
                              '32FC1 m) registered to the first camera; its camera_info '
                              'beside it.')
    depth_transport: str = _param('raw', 'raw subscribes to depth_topic (Image), '
                                  'compressedDepth to <depth_topic>/compressedDepth.',
                                  choices=DEPTH_TRANSPORTS)
    depth_min: float = _param(0.1, 'Sensor depths below this (m) are invalid.',
                              range=(0.0, 100.0))
    depth_max: float = _param(10.0, 'Sensor depths above this (m) are invalid.',
                              range=(0.0, 1000.0))
    depth_max_dt: float = _param(0.02, 'Largest stamp difference (s) between a colour frame '
                                 'and its depth image.', range=(0.0, 1.0))
    depth_scale_window: int = _param(30, 'Frames whose depth scales are combined (median).',
                                     range=(1, 10000))

    def __post_init__(self) -> None:
        """Validate every field against its metadata and the cross-field rules."""
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            type_name = _type_name(f.default if f.default is not dataclasses.MISSING
                                   else f.default_factory())
            _check_type(f.name, value, type_name)
            # Normalise what YAML and ROS hand over (ints for floats, tuples for lists).
            if type_name == 'float':
                object.__setattr__(self, f.name, float(value))
            elif type_name == 'list[str]':
                object.__setattr__(self, f.name, list(value))
            elif type_name == 'list[float]':
                object.__setattr__(self, f.name, [float(v) for v in value])
            value = getattr(self, f.name)
            lo_hi = f.metadata.get('range')
            if lo_hi is not None and not lo_hi[0] <= value <= lo_hi[1]:
                raise ValueError(f'parameter {f.name}={value!r} is outside [{lo_hi[0]}, '
                                 f'{lo_hi[1]}]')
            choices = f.metadata.get('choices')
            if choices is not None and value not in choices:
                raise ValueError(f'parameter {f.name}={value!r} must be one of '
                                 f'{list(choices)}')
        if not self.image_topics or any(not t.strip() for t in self.image_topics):
            raise ValueError('parameter image_topics must list at least one non-empty topic')
        if len(set(self.image_topics)) != len(self.image_topics):
            raise ValueError(f'parameter image_topics has duplicates: {self.image_topics}')
        for name in ('map_frame', 'camera_frame', 'output_dir', 'odom_frame', 'odometry_topic',
                     'depth_topic'):
            if not getattr(self, name).strip():
                raise ValueError(f'parameter {name} must not be empty')
        if self.map_frame == self.camera_frame:
            raise ValueError('map_frame and camera_frame must differ')
        if self.odom_frame == self.camera_frame:
            raise ValueError('odom_frame and camera_frame must differ')
        if self.depth_min >= self.depth_max:
            raise ValueError(f'depth_min {self.depth_min} must be below depth_max '
                             f'{self.depth_max}')
        self.base_to_camera_matrix()
        validate_map_filename(self.map_filename)
        # The core configs validate their own fields; build them now so errors surface here.
        self.engine_config()
        self.memory_config()

    # -- derived configs -------------------------------------------------------------------
    def engine_config(self) -> EngineConfig:
        """Return the :class:`EngineConfig` these parameters describe."""
        try:
            return EngineConfig(device=self.device, precision=self.precision,
                                image_size=self.image_size, num_threads=self.num_threads,
                                pack_weights=self.pack_weights,
                                keep_freed_memory=self.keep_freed_memory)
        except ValueError as exc:
            raise ValueError(f'invalid engine parameter: {exc}') from None

    def memory_config(self) -> MemoryConfig:
        """Return the :class:`MemoryConfig` these parameters describe."""
        try:
            return MemoryConfig(work_mem_size=self.work_mem_size,
                                long_mem_size=self.long_mem_size,
                                attn_thresh=self.attn_thresh, sim_thresh=self.sim_thresh)
        except ValueError as exc:
            raise ValueError(f'invalid memory parameter: {exc}') from None

    def metric_settings(self) -> MetricSettings:
        """Return the :class:`MetricSettings` these parameters describe."""
        return MetricSettings(
            source=self.metric_source, map_frame=self.map_frame, odom_frame=self.odom_frame,
            thresholds=AlignmentThresholds(
                min_frames=self.alignment_min_frames, min_baseline=self.alignment_min_baseline,
                min_rotation_deg=self.alignment_min_rotation,
                max_residual=self.alignment_max_residual,
                max_scale_error=self.alignment_max_scale_error,
                max_rotation_residual_deg=self.alignment_max_rotation_residual,
                window=self.alignment_window),
            depth_min=self.depth_min, depth_max=self.depth_max,
            depth_window=self.depth_scale_window)

    def base_to_camera_matrix(self) -> np.ndarray:
        """Return ``base_to_camera`` as the ``[4, 4]`` pose of the camera in the base frame.

        :raises ValueError: unless it is 7 finite numbers with a non-zero quaternion.
        """
        values = np.asarray(self.base_to_camera, dtype=np.float64)
        if values.shape != (7,) or not np.isfinite(values).all():
            raise ValueError(f'parameter base_to_camera must be 7 finite numbers x, y, z, qx, '
                             f'qy, qz, qw, got {self.base_to_camera}')
        q = values[3:]
        if np.linalg.norm(q) < 1e-6:
            raise ValueError('parameter base_to_camera has a zero quaternion')
        T = np.eye(4)
        T[:3, :3] = Rotation.from_quat(q / np.linalg.norm(q)).as_matrix()
        T[:3, 3] = values[:3]
        return T

    def output_path(self) -> Path:
        """Return the absolute, user-expanded output directory."""
        return Path(os.path.expanduser(self.output_dir)).absolute()

    def camera_frame_for(self, camera: int) -> str:
        """Return the optical frame name of camera ``camera`` (0-based)."""
        return self.camera_frame if camera == 0 else f'{self.camera_frame}_{camera}'

    def replace(self, **changes: Any) -> 'NodeConfig':
        """Return a validated copy with ``changes`` applied."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> 'NodeConfig':
        """Build from a ``{name: value}`` mapping (a YAML file); unknown names are an error."""
        unknown = set(values) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f'unknown parameters: {sorted(unknown)}')
        return cls(**dict(values))

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict."""
        return dataclasses.asdict(self)


def validate_map_filename(name: str) -> None:
    """Reject a ``map_filename`` that is not a plain ``.ply`` file name.

    :param name: the candidate (empty means a timestamped name).
    :raises ValueError: for directory parts, ``..``, hidden names or another extension.
    """
    if name == '':
        return
    if '/' in name or '\\' in name or name in ('.', '..') or '\x00' in name:
        raise ValueError(f'map_filename {name!r} must be a plain file name inside output_dir')
    if name.startswith('.'):
        raise ValueError(f'map_filename {name!r} must not be a hidden file')
    if not name.endswith('.ply'):
        raise ValueError(f'map_filename {name!r} must end with .ply')


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return 'bool'
    if isinstance(value, int):
        return 'int'
    if isinstance(value, float):
        return 'float'
    if isinstance(value, str):
        return 'str'
    if isinstance(value, list):
        return 'list[float]' if value and all(isinstance(v, float) for v in value) \
            else 'list[str]'
    raise TypeError(f'unsupported parameter type {type(value).__name__}')


def _check_type(name: str, value: Any, type_name: str) -> None:
    ok = {
        'bool': lambda v: isinstance(v, bool),
        'int': lambda v: isinstance(v, int) and not isinstance(v, bool),
        'float': lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        'str': lambda v: isinstance(v, str),
        'list[str]': lambda v: isinstance(v, (list, tuple)) and all(isinstance(x, str)
                                                                    for x in v),
        'list[float]': lambda v: isinstance(v, (list, tuple)) and all(
            isinstance(x, (int, float)) and not isinstance(x, bool) for x in v),
    }[type_name](value)
    if not ok:
        raise ValueError(f'parameter {name} must be {type_name}, got {type(value).__name__} '
                         f'{value!r}')


def param_specs() -> Iterator[ParamSpec]:
    """Yield one :class:`ParamSpec` per :class:`NodeConfig` field, in declaration order."""
    for f in dataclasses.fields(NodeConfig):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        yield ParamSpec(name=f.name, default=default, type_name=_type_name(default),
                        description=f.metadata['description'],
                        read_only=f.metadata['read_only'], range=f.metadata['range'],
                        choices=f.metadata['choices'])
