"""The first pass of a bag export: which frames are exported, with which poses and intrinsics.

The small messages (camera_info, TF, pose topics) and the stamps of the colour and depth images
are read, the first image of each stream is decoded, and the pose source (:mod:`.pose_source`),
the intrinsics (:mod:`.camera_intrinsics`) and the frames that can be synchronised are decided.
"""

from __future__ import annotations

from dataclasses import dataclass, field
import logging
from typing import Any, Callable, Optional

import numpy as np

from spann3r_model.data.scannet import SUPPLY_HINT
from spann3r_ros.bags import messages as bm
from spann3r_ros.bags.camera_intrinsics import from_camera_info, Intrinsics
from spann3r_ros.bags.export_options import ExportOptions
from spann3r_ros.bags.pose_source import choose_pose_source, poses_at, PoseSamples, PoseSource
from spann3r_ros.bags.reader import BagReader, CameraTopics, pose_candidates, tf_topics
from spann3r_ros.bags.tf_buffer import TfBuffer
from spann3r_ros.formats import images
from spann3r_ros.formats.message_fields import camera_info_K, matrix_from, msg_pose

LOG = logging.getLogger(__name__)


@dataclass
class _Scan:
    """What the first pass reads: stamps, the first image of each stream, TF and poses."""

    image_stamps: list[float] = field(default_factory=list)
    depth_stamps: list[float] = field(default_factory=list)
    frame_id: str = ''
    first_image: Any = None
    first_depth: Any = None
    camera_info: Optional[Intrinsics] = None
    camera_info_error: str = ''
    K_depth_info: Optional[np.ndarray] = None
    tf: TfBuffer = field(default_factory=TfBuffer)
    pose_samples: dict[str, PoseSamples] = field(default_factory=dict)


@dataclass
class ExportPlan:
    """What the first pass decides: the frames to export, their poses and intrinsics."""

    stamps: list[float]
    image_index: list[int]
    depth_index: list[Optional[int]]
    poses: list[Optional[np.ndarray]]
    skipped: list[dict]
    intrinsics: Intrinsics
    K_depth: Optional[np.ndarray]
    depth_source: Optional[str]
    size: tuple[int, int]
    frame_id: str
    pose: PoseSource


def _header_seconds(msg: Any, receive_ns: int) -> float:
    ns = bm.stamp_to_ns(msg.header.stamp)
    return (ns if ns > 0 else receive_ns) / 1e9


def _add_transforms(buffer: TfBuffer, msg: Any, static: bool) -> None:
    for tf in msg.transforms:
        try:
            T = matrix_from(tf.transform.translation, tf.transform.rotation)
        except ValueError:
            continue  # a zero quaternion: a broken sample, not a transform
        buffer.add(tf.header.frame_id, tf.child_frame_id, bm.stamp_to_ns(tf.header.stamp) / 1e9,
                   T, static=static)


def _scan(bag: BagReader, topics: CameraTopics, pose_spec: tuple[str, ...], max_dt: float
          ) -> _Scan:
    scan = _Scan(tf=TfBuffer(tolerance=max_dt))
    names = [topics.image] + [t for t in (topics.depth, topics.camera_info) if t]
    depth_info = None
    if topics.depth:
        sibling = topics.depth.rsplit('/', 1)[0] + '/camera_info'
        if bag.topics.get(sibling) == 'sensor_msgs/msg/CameraInfo' and \
                sibling != topics.camera_info:
            depth_info = sibling
            names.append(sibling)
    tf_names = tf_topics(bag.topics) if pose_spec[0] in ('auto', 'tf') else {}
    pose_names = {'auto': pose_candidates(bag.topics), 'topic': list(pose_spec[1:])}.get(
        pose_spec[0], [])
    scan.pose_samples = {t: PoseSamples() for t in pose_names}
    for topic, ns, msg in bag.messages(names + list(tf_names) + pose_names):
        if topic == topics.image:
            scan.image_stamps.append(_header_seconds(msg, ns))
            if scan.first_image is None:
                scan.first_image, scan.frame_id = msg, msg.header.frame_id
        elif topic == topics.depth:
            scan.depth_stamps.append(_header_seconds(msg, ns))
            scan.first_depth = msg if scan.first_depth is None else scan.first_depth
        elif topic == topics.camera_info:
            if scan.camera_info is None and not scan.camera_info_error:
                try:
                    scan.camera_info = from_camera_info(msg, topic)
                except ValueError as exc:  # uncalibrated drivers publish K = 0
                    scan.camera_info_error = f'{topic}: {exc}'
        elif topic == depth_info:
            if scan.K_depth_info is None:
                try:
                    scan.K_depth_info = camera_info_K(msg)[0]
                except ValueError:
                    depth_info = None
        elif topic in tf_names:
            _add_transforms(scan.tf, msg, static=tf_names[topic])
        if topic in scan.pose_samples:
            try:
                pose = msg_pose(msg)[1]
            except ValueError:
                continue  # a zero quaternion (trackers publish one before they initialise)
            scan.pose_samples[topic].stamps.append(_header_seconds(msg, ns))
            scan.pose_samples[topic].poses.append(pose)
    if not scan.image_stamps:
        raise ValueError(f'topic {topics.image} has no message')
    return scan


def _probe(decode: Callable[[Any], np.ndarray], msg: Any, topic: str, flag: str
           ) -> np.ndarray:
    """Decode the first message of ``topic`` so that an unreadable stream is refused early."""
    try:
        return decode(msg)
    except ValueError as exc:
        raise ValueError(f'cannot decode the images of {topic}: {exc}; choose another topic '
                         f'with {flag}') from None


def _intrinsics(scan: _Scan, supplied: Optional[Intrinsics], size: tuple[int, int],
                depth_size: Optional[tuple[int, int]]
                ) -> tuple[Intrinsics, Optional[np.ndarray], Optional[str]]:
    """Colour intrinsics, depth K and where the depth K came from."""
    if supplied is not None and scan.camera_info is not None:
        LOG.info('intrinsics from %s replace those of camera_info %s', supplied.source,
                 scan.camera_info.origin)
    colour = supplied or scan.camera_info or Intrinsics(None, 'unknown')
    if colour.K is None and scan.camera_info_error:
        LOG.warning('ignoring camera_info %s', scan.camera_info_error)
    colour.check_image(size[1], size[0])
    if colour.K is None:
        return colour, None, None
    if scan.K_depth_info is not None and not (supplied is not None and depth_size == size):
        return colour, scan.K_depth_info, 'camera_info'
    # Depth at the colour resolution is registered to colour (or there is no depth at all).
    return colour, colour.K, 'color'


def first_pass(bag: BagReader, topics: CameraTopics, pose_spec: tuple[str, ...],
               opts: ExportOptions, supplied: Optional[Intrinsics]) -> ExportPlan:
    """Read the bag once and decide what the second pass writes.

    :raises ValueError: for images nobody decodes, a pose source that gives no pose, or when
        no frame can be exported.
    """
    scan = _scan(bag, topics, pose_spec, opts.max_dt)
    first = _probe(images.decode_color, scan.first_image, topics.image, '--image-topic')
    size = (int(first.shape[0]), int(first.shape[1]))
    depth_size = None
    if topics.depth:
        if scan.first_depth is None:
            raise ValueError(f'depth topic {topics.depth} has no message; choose another with '
                             '--depth-topic')
        depth_size = _probe(images.decode_depth, scan.first_depth, topics.depth,
                            '--depth-topic').shape[:2]
    intrinsics, K_depth, depth_source = _intrinsics(scan, supplied, size, depth_size)
    source = choose_pose_source(pose_spec, scan.tf, scan.frame_id, scan.pose_samples)
    poses = poses_at(source, scan.tf, scan.pose_samples, scan.image_stamps, opts.max_dt)
    order = np.argsort(scan.depth_stamps, kind='stable')
    depth_sorted = np.asarray(scan.depth_stamps)[order]
    plan = ExportPlan([], [], [], [], [], intrinsics, K_depth, depth_source, size,
                      scan.frame_id, source)
    last_position = None
    candidates = 0
    for idx, (t, pose) in enumerate(zip(scan.image_stamps, poses)):
        d_idx = None
        if topics.depth:
            j = int(np.searchsorted(depth_sorted, t))
            near = [k for k in (j - 1, j) if 0 <= k < len(depth_sorted)]
            best = min(near, key=lambda k: abs(depth_sorted[k] - t)) if near else None
            if best is None or abs(depth_sorted[best] - t) > opts.max_dt:
                plan.skipped.append({'stamp': t, 'reason': 'no_depth_within_max_dt'})
                continue
            d_idx = int(order[best])
        if source.kind != 'none' and pose is None:
            plan.skipped.append({'stamp': t, 'reason': 'no_pose'})
            continue
        candidates += 1
        if (candidates - 1) % opts.every:
            continue
        if opts.min_translation > 0 and pose is not None:
            if last_position is not None and \
                    np.linalg.norm(pose[:3, 3] - last_position) < opts.min_translation:
                continue
            last_position = pose[:3, 3]
        plan.stamps.append(t)
        plan.image_index.append(idx)
        plan.depth_index.append(d_idx)
        plan.poses.append(pose)
    if not plan.stamps:
        raise ValueError(f'no frame of {topics.image} can be exported: '
                         f'{count_reasons(plan.skipped)}; widen --max-dt or choose other '
                         'topics')
    return plan


def count_reasons(skipped: list[dict]) -> dict[str, int]:
    """Return how many skipped frames each reason (its part before ``:``) accounts for."""
    reasons: dict[str, int] = {}
    for s in skipped:
        key = s['reason'].split(':')[0]
        reasons[key] = reasons.get(key, 0) + 1
    return reasons


def log_choices(plan: ExportPlan) -> None:
    """Log the pose source and the intrinsics the plan uses, warning when there are none."""
    if plan.pose.kind == 'none':
        LOG.warning('pose source: none (%s); pose files hold NaN', plan.pose.reason)
    else:
        LOG.info('pose source: %s (%s)', plan.pose.describe(), plan.pose.reason)
    if plan.intrinsics.known:
        LOG.info('intrinsics: %s', plan.intrinsics.describe())
        if any(plan.intrinsics.distortion or ()):
            LOG.info('the camera has %s distortion; frames are exported as recorded, not '
                     'undistorted', plan.intrinsics.distortion_model or 'some')
    else:
        LOG.warning('intrinsics: unknown (no usable camera_info); no intrinsic/ files are '
                    'written and readers that need intrinsics refuse the scene: %s', SUPPLY_HINT)
