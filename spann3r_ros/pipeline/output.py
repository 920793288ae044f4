"""What the reconstruction worker hands to the node for one frame, and the geometry behind it.

:class:`Output` is the per-frame record ``publish`` receives; :class:`ResultGeometry` is what
both the map and that record need of one result, computed once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from spann3r_model.data.crop import CropBox
from spann3r_model.geometry.align import Sim3
from spann3r_model.results import MemoryStats
from spann3r_ros.pipeline.frame_queue import Frame


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
    :param crop: the model crop of the input image, when known.
    :param frame_id: the frame ``points_map``, ``T_map_cam`` and the map are in: ``map_frame``,
        or ``odom_frame`` once aligned to odometry.
    :param metric_held: True when metric outputs are withheld because the alignment is not yet
        known (then ``points_map``, ``T_map_cam`` and ``depth`` are in the reconstruction's frame
        and must not be published).
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
    crop: Optional[CropBox] = None
    frame_id: str = ''
    metric_held: bool = False


@dataclass
class ResultGeometry:
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


def finite_points(points: np.ndarray) -> np.ndarray:
    """Return ``[H, W]`` bool: all three coordinates of ``[H, W, 3]`` points are finite.

    One ``isfinite`` per coordinate plane is about twenty times faster than reducing a
    ``[H, W, 3]`` bool array over its short last axis.
    """
    return np.isfinite(points[..., 0]) & np.isfinite(points[..., 1]) & np.isfinite(points[..., 2])


def express_output(output: Output, to_frame: Optional[Sim3], frame_id: str) -> None:
    """Re-express an output's geometry in the output frame, in place.

    :param to_frame: the reconstruction-to-output Sim(3); None while it is unknown (the output
        is then marked :attr:`Output.metric_held`).
    :param frame_id: the output frame's name.
    """
    output.frame_id = frame_id
    if to_frame is None:
        output.metric_held = True
        return
    if to_frame.is_identity():
        return
    output.points_map = to_frame.apply_points(output.points_map)
    if output.T_map_cam is not None:
        output.T_map_cam = to_frame.apply_pose(output.T_map_cam)
    if output.depth is not None:
        output.depth = (output.depth * np.float32(to_frame.scale)).astype(np.float32)
