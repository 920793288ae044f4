"""Play a bag through the node's reconstruction and online metric alignment, without ROS.

What :mod:`spann3r_ros.node.metric_input` and :mod:`spann3r_ros.node.image_input` do with live
messages is done here with the bag's, read once in bag order: ``/tf`` and ``/tf_static`` go
into a :class:`~spann3r_ros.pipeline.tf_lookup.LiveTf` (or the odometry / pose topic, composed
with ``base_to_camera``, into a :class:`~spann3r_ros.pipeline.pose_buffer.PoseBuffer`), depth
images into a :class:`~spann3r_ros.pipeline.depth_scale.DepthBuffer`, and each colour frame,
once every message before it has been handed over (as a live robot delivers them), goes
through the node's :class:`~spann3r_ros.pipeline.input_gate.InputGate` to a serial
:class:`~spann3r_ros.pipeline.worker.ReconstructionWorker` with the node's
:class:`~spann3r_ros.pipeline.metric_frame.MetricAlignment`. Every published
:class:`~spann3r_ros.pipeline.output.Output` is kept as the node would have published it.
The ground truth is gathered on the way (:mod:`spann3r_ros.cli.metric_truth`).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
import logging
import math
from pathlib import Path
import time
from typing import Any, Optional

import numpy as np

from spann3r_model.geometry.align import Sim3
from spann3r_ros.bags.reader import BagReader
from spann3r_ros.cli.metric_topics import MetricTopics
from spann3r_ros.cli.metric_truth import TruthCollector
from spann3r_ros.formats.images import decode_color, decode_depth, ImageRejected
from spann3r_ros.formats.message_fields import camera_info_K, msg_pose
from spann3r_ros.pipeline.config import NodeConfig
from spann3r_ros.pipeline.frame_queue import Frame
from spann3r_ros.pipeline.input_gate import InputGate
from spann3r_ros.pipeline.metric_inputs import MetricInputs, stamp_seconds
from spann3r_ros.pipeline.output import Output

LOG = logging.getLogger(__name__)
#: After this many colour frames, odometry that never connected is an error (not a wait).
EARLY_CHECK_FRAMES = 3


@dataclass
class Published:
    """One output as the node published it.

    :param stamp: its frame's stamp, seconds.
    :param points: ``[S, S, 3]`` float32 in the output frame (the reconstruction's when held).
    :param mask: ``[S, S]`` bool, the pixels the node publishes.
    :param rgb: ``[S, S, 3]`` uint8 colours.
    :param T: ``[4, 4]`` camera pose in the output frame (the reconstruction's when held).
    :param held: True while the alignment was unknown (nothing metric was published).
    :param to_output: the reconstruction-to-output transform that expressed it (None: held).
    :param frame_id: the frame the node stamped it with.
    """

    stamp: float
    points: np.ndarray
    mask: np.ndarray
    rgb: np.ndarray
    T: Optional[np.ndarray]
    held: bool
    to_output: Optional[Sim3]
    frame_id: str

    def reconstruction_points(self) -> np.ndarray:
        """Return ``[S, S, 3]`` float64 points in the reconstruction's frame."""
        pts = self.points.astype(np.float64)
        s = self.to_output
        return pts if s is None else (pts - s.t) @ s.R / s.scale


@dataclass
class MetricRun:
    """Everything a metric run produced, for the scorer."""

    config: NodeConfig
    topics: MetricTopics
    published: list[Published]
    trajectory: list[tuple[float, np.ndarray]]
    transform: Optional[Sim3]
    frame_id: str
    status: dict[str, str]
    truth: TruthCollector
    first_stamp: Optional[float]
    odometry_poses: dict[float, np.ndarray] = field(default_factory=dict)
    frames_fed: int = 0
    input_faults: dict[str, int] = field(default_factory=dict)
    wall_s: float = 0.0


class BagInputs(MetricInputs):
    """The node's metric inputs, fed from bag messages (see the module docstring).

    :param cfg: the node configuration.
    :param topics: the topics read.
    """

    def __init__(self, cfg: NodeConfig, topics: MetricTopics) -> None:
        super().__init__(cfg)
        self.topics = topics
        #: ``{stamp: T_odom_cam}`` of every frame the alignment found odometry for.
        self.odometry_poses: dict[float, np.ndarray] = {}
        if self.lookup is not None:
            self.lookup = self._recorded(self.lookup)

    def _recorded(self, lookup: Any) -> Any:
        def recorded(stamp: float, camera_frame: str) -> Any:
            found = lookup(stamp, camera_frame)
            if found.T is not None:
                self.odometry_poses.setdefault(stamp, found.T)
            return found
        return recorded

    def check_connected(self, stamp: float, camera_frame: str) -> None:
        """Refuse odometry that never connected the odometry frame to the camera.

        :raises ValueError: naming the missing TF chain or topic content.
        """
        if self.lookup is None:
            return
        found = self.lookup(stamp, camera_frame)
        if found.state != 'waiting' or not math.isnan(found.age):
            return
        odom = self.cfg.odom_frame
        if self.live_tf is not None:
            raise ValueError(f"no odometry: the bag's TF has no chain {odom} -> "
                             f'{camera_frame} (the image frame_id); TF frames: '
                             f'{sorted(self.tf_frames) or "none"}; use --odometry-source and '
                             '--odom-frame')
        raise ValueError(f'no odometry: topic {self.topics.odometry} gave no pose in '
                         f'--odom-frame {odom!r} (its frames: '
                         f'{sorted(self.odometry_frames) or "no message yet"})')


def open_session(cfg: NodeConfig) -> Any:
    """Open the streaming session as the node does (its engine, memory and output settings).

    :raises ValueError: for a missing or bad checkpoint.
    """
    from spann3r_model.backends.process import apply_process_settings
    from spann3r_model.session import StreamingSession

    path = Path(cfg.checkpoint).expanduser()
    if not path.is_file():
        raise ValueError(f'checkpoint {str(path)!r} does not exist or is not a file')
    apply_process_settings(cfg.engine_config())
    return StreamingSession.from_checkpoint(
        str(path), engine_config=cfg.engine_config(), memory_config=cfg.memory_config(),
        preset=cfg.model_preset or None, provisional=cfg.provisional,
        estimate_pose=cfg.estimate_pose)


def run_metric(bag_path: Path, cfg: NodeConfig, topics: MetricTopics, session: Any,
               every: int = 1, max_frames: int = 0) -> MetricRun:
    """Play the bag through the node's worker and metric alignment; gather the ground truth.

    :param session: a streaming session opened as the node opens it.
    :param every: give the node every ``every``-th colour frame.
    :param max_frames: give it at most this many (0: all).
    :raises ValueError: for a bag that cannot be read or odometry that never connects.
    """
    from spann3r_model.mapping.voxel_map import VoxelMap
    from spann3r_ros.pipeline.worker import ReconstructionWorker

    inputs = BagInputs(cfg, topics)
    metric = inputs.alignment(LOG)
    published: list[Published] = []

    def publish(output: Output) -> None:
        # Serial worker: the transform now is the one express_output has just applied.
        to_output = None if output.metric_held else metric.transform()
        published.append(Published(
            stamp=output.frame.stamp, points=np.array(output.points_map, np.float32),
            mask=np.array(output.mask, bool), rgb=np.array(output.rgb, np.uint8),
            T=None if output.T_map_cam is None else np.array(output.T_map_cam),
            held=output.metric_held, to_output=to_output, frame_id=output.frame_id))

    worker = ReconstructionWorker(session, VoxelMap(cfg.map_voxel_size, cfg.map_max_points),
                                  cfg, publish, LOG, pipelined=False, metric=metric)
    truth = TruthCollector(cfg.image_size, cfg.depth_max_dt, tf_chain=topics.gt_tf)
    gate = InputGate(cfg.keyframe_every, cfg.keyframe_min_interval)
    colour_info: Optional[tuple[np.ndarray, int, int]] = None
    seen = fed = 0
    first_stamp = None
    tf, truth_tf = dict(topics.tf), dict(topics.truth_tf)
    t0 = time.monotonic()
    with BagReader(bag_path) as bag:
        for topic, _, msg in bag.messages(topics.all()):
            if topic == topics.depth_info:  # may be the colour camera_info too
                inputs.on_depth_info(msg)
            if topic in truth_tf:
                truth.add_tf(msg, truth_tf[topic])
            if topic in tf:
                inputs.on_tf(msg, tf[topic])
            elif topic == topics.odometry:
                inputs.on_odometry(msg)
            elif topic == topics.camera_info:
                try:
                    colour_info = camera_info_K(msg)
                except ValueError:
                    colour_info = None  # uncalibrated: the node estimates the focal
            elif topic == topics.gt_pose:
                frame_id, T = msg_pose(msg)
                truth.add_pose(stamp_seconds(msg.header), T, frame_id)
            elif topic == topics.depth:
                stamp = stamp_seconds(msg.header)
                try:
                    depth = decode_depth(msg, cfg.max_image_pixels)
                except ImageRejected as exc:
                    inputs.count(f'depth_{exc.reason}')
                    continue
                truth.add_depth(stamp, depth)
                if inputs.depth_buffer is not None:
                    inputs.on_depth(stamp, depth)
            elif topic == topics.image:
                seen += 1
                if (seen - 1) % every:
                    continue
                if max_frames and fed >= max_frames:
                    break
                frame = _colour_frame(msg, cfg, colour_info, gate, inputs.faults)
                if frame is None:
                    continue
                fed += 1
                first_stamp = frame.stamp if first_stamp is None else first_stamp
                last = (frame.stamp, msg.header.frame_id)
                truth.add_colour(frame.stamp, frame.rgb, frame.K)
                worker.process(frame)
                if fed == EARLY_CHECK_FRAMES:
                    inputs.check_connected(*last)
                    truth.check_tf()
    if 0 < fed < EARLY_CHECK_FRAMES:
        inputs.check_connected(*last)
    truth.check_tf()
    return MetricRun(config=cfg, topics=topics, published=published,
                     trajectory=worker.trajectory_copy(), transform=metric.transform(),
                     frame_id=metric.frame_id, status=metric.status(), truth=truth,
                     first_stamp=first_stamp, odometry_poses=inputs.odometry_poses,
                     frames_fed=fed, input_faults=dict(inputs.faults),
                     wall_s=time.monotonic() - t0)


def _colour_frame(msg: Any, cfg: NodeConfig, info: Optional[tuple[np.ndarray, int, int]],
                  gate: InputGate, faults: Counter) -> Optional[Frame]:
    """Admit and decode a colour message as the node's image callback does, or None."""
    stamp = stamp_seconds(msg.header)
    decision = gate.check(0, stamp)
    if decision is not None:
        faults[f'image_{decision}'] += 1
        return None
    try:
        rgb = decode_color(msg, cfg.max_image_pixels)
    except ImageRejected as exc:
        faults[f'image_{exc.reason}'] += 1
        return None
    K = None
    if info is not None:
        K, width, height = info
        if (width, height) != (rgb.shape[1], rgb.shape[0]) and (width or height):
            faults['camera_info_size_mismatch'] += 1
            K = None
    return Frame(camera=0, stamp=stamp, rgb=rgb, header=msg.header,
                 received=time.monotonic(), K=K)
