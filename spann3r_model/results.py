"""What the streaming session hands to its callers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from spann3r_model.data.crop import CropBox


@dataclass
class FrameResult:
    """One frame's reconstruction, on the CPU.

    :param index: frame index within the current reconstruction (0 for the first frame).
    :param stamp: the caller's timestamp of the input image, in seconds.
    :param pts3d: ``[H, W, 3]`` float32 pointmap in the first camera's frame (arbitrary scale).
    :param conf: ``[H, W]`` float32 confidence, ``>= 1``.
    :param rgb: ``[H, W, 3]`` uint8 preprocessed image (the pixels of ``pts3d``).
    :param crop: where the model image lies in the input image.
    :param provisional: True for the low-latency head-2 estimate, False for the refined result.
    :param focal: focal length (``fx``) in model pixels, when known.
    :param T_world_cam: ``[4, 4]`` camera-to-world pose (world = first camera), when estimated.
    :param camera: the camera that took the frame (its index in the caller's list).
    :param K: ``[3, 3]`` intrinsics of the model image, when known.
    :param intrinsics: where ``K`` comes from: ``'camera_info'`` (the camera's own calibration
        mapped through the crop) or ``'estimated'`` (the focal of the camera's first frame,
        principal point at the centre).
    """

    index: int
    stamp: float
    pts3d: np.ndarray
    conf: np.ndarray
    rgb: np.ndarray
    crop: CropBox
    provisional: bool = False
    focal: Optional[float] = None
    T_world_cam: Optional[np.ndarray] = None
    camera: int = 0
    K: Optional[np.ndarray] = None
    intrinsics: Optional[str] = None


@dataclass
class MemoryStats:
    """Bookkeeping of the spatial memory after a step.

    :param tokens: tokens stored (working + long-term).
    :param working_frames: the official ``wm`` counter.
    :param long_term_tokens: the official ``lm`` counter.
    :param skipped: True when the last write was skipped by the similarity rule.
    :param similarity: mean cosine similarity of the last checked key against the working memory.
    :param pruned: ``(before, after)`` token counts when the last write pruned, else None.
    """

    tokens: int = 0
    working_frames: int = 0
    long_term_tokens: int = 0
    skipped: bool = False
    similarity: Optional[float] = None
    pruned: Optional[tuple[int, int]] = None


@dataclass
class StepOutput:
    """What one :meth:`StreamingSession.step` produced.

    :param refined: refined result of the previous frame (None on the first frame).
    :param provisional: provisional result of this frame, when requested.
    :param memory: memory bookkeeping after this step.
    """

    refined: Optional[FrameResult]
    provisional: Optional[FrameResult]
    memory: MemoryStats
