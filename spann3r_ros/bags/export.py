"""``spann3r-export``: turn an RGB-D bag into a dataset in the ScanNet layout (no ROS needed).

Two passes over the bag: the first reads the small messages (camera_info, TF, pose topics) and
the stamps of the colour and depth images, decodes the first image of each stream, and decides
the pose source (:mod:`.pose_source`), the intrinsics (:mod:`.camera_intrinsics`) and which
frames can be synchronised; the second decodes and writes those frames. Without poses the pose
files hold NaN; without intrinsics no ``intrinsic/`` file is written; the manifest says which
source each came from. The export goes into ``<out>.partial`` and is renamed to ``<out>`` when
complete; rerunning an interrupted export keeps the frames already written. A refusal (nothing
to export, images nobody decodes, a pose source that gives no pose) writes nothing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
import hashlib
import json
import logging
import os
from pathlib import Path
import shutil
from typing import Any, Callable, Optional

import numpy as np

from spann3r_model import __version__
from spann3r_model.data.scannet import depth_to_millimetres, ScanNetWriter, SUPPLY_HINT
from spann3r_model.io.atomic import atomic_write
from spann3r_model.io.progress import Progress
from spann3r_ros.bags import messages as bm
from spann3r_ros.bags.camera_intrinsics import (
    from_camera_info,
    Intrinsics,
    load_calibration,
    parse_intrinsics,
)
from spann3r_ros.bags.camera_intrinsics import manifest_entry as intrinsics_manifest
from spann3r_ros.bags.pose_source import (
    choose_pose_source,
    parse_pose_spec,
    poses_at,
    PoseSamples,
    PoseSource,
)
from spann3r_ros.bags.reader import (
    BagReader,
    CameraTopics,
    pose_candidates,
    select_topics,
    tf_topics,
)
from spann3r_ros.bags.tf_buffer import TfBuffer
from spann3r_ros.formats import images

LOG = logging.getLogger(__name__)
STATE_FILE = 'export_state.json'
MAX_LISTED_SKIPS = 1000


@dataclass(frozen=True)
class ExportOptions:
    """Settings of one export (see ``spann3r-export --help``)."""

    image_topic: Optional[str] = None
    depth_topic: Optional[str] = None
    camera_info_topic: Optional[str] = None
    pose: str = 'auto'
    every: int = 1
    min_translation: float = 0.0
    max_dt: float = 0.02
    scene: Optional[str] = None
    color_format: str = 'jpg'
    jpeg_quality: int = 95
    intrinsics: Optional[str] = None
    calibration: Optional[str] = None

    def __post_init__(self) -> None:
        """Validate the values a user types."""
        if self.every < 1:
            raise ValueError(f'--every must be >= 1, got {self.every}')
        if self.min_translation < 0 or self.max_dt < 0:
            raise ValueError('--min-translation and --max-dt must be >= 0')
        if self.color_format not in ('jpg', 'png'):
            raise ValueError(f'--color-format must be jpg or png, got {self.color_format!r}')
        parse_pose_spec(self.pose)
        if self.intrinsics is not None and self.calibration is not None:
            raise ValueError('pass --intrinsics or --calibration, not both')
        if self.intrinsics is not None:
            parse_intrinsics(self.intrinsics)

    def supplied_intrinsics(self) -> Optional[Intrinsics]:
        """Return the intrinsics given on the command line, if any (reads ``--calibration``).

        :raises ValueError: for a calibration file that is missing or of another format.
        """
        if self.intrinsics is not None:
            return parse_intrinsics(self.intrinsics)
        if self.calibration is not None:
            return load_calibration(Path(self.calibration))
        return None


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
class _Plan:
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
            T = bm.matrix_from(tf.transform.translation, tf.transform.rotation)
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
                    scan.K_depth_info = bm.camera_info_K(msg)[0]
                except ValueError:
                    depth_info = None
        elif topic in tf_names:
            _add_transforms(scan.tf, msg, static=tf_names[topic])
        if topic in scan.pose_samples:
            try:
                pose = bm.msg_pose(msg)[1]
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


def _first_pass(bag: BagReader, topics: CameraTopics, pose_spec: tuple[str, ...],
                opts: ExportOptions, supplied: Optional[Intrinsics]) -> _Plan:
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
    plan = _Plan([], [], [], [], [], intrinsics, K_depth, depth_source, size, scan.frame_id,
                 source)
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
                         f'{_count_reasons(plan.skipped)}; widen --max-dt or choose other '
                         'topics')
    return plan


def _count_reasons(skipped: list[dict]) -> dict[str, int]:
    reasons: dict[str, int] = {}
    for s in skipped:
        key = s['reason'].split(':')[0]
        reasons[key] = reasons.get(key, 0) + 1
    return reasons


def _fingerprint(bag: Path, opts: ExportOptions) -> str:
    files = sorted(bag.rglob('*')) if bag.is_dir() else [bag]
    sig = [(str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files if f.is_file()]
    if opts.calibration is not None:
        sig.append(hashlib.sha256(Path(opts.calibration).read_bytes()).hexdigest())
    return hashlib.sha256(json.dumps([sig, asdict(opts)], default=str).encode()).hexdigest()


def _log_choices(plan: _Plan) -> None:
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


def export_bag(bag_path: Path, out: Path, opts: Optional[ExportOptions] = None,
               progress: bool = True) -> dict:
    """Export ``bag_path`` to ``out`` (ScanNet layout + manifest.json).

    :return: the manifest.
    :raises ValueError: for a missing or unreadable bag, unknown topics, images nobody
        decodes, a pose source that gives no pose, bad intrinsics options, nothing to export,
        or an ``out`` that already holds a finished export. Nothing is written then.
    """
    opts = opts or ExportOptions()
    bag_path, out = Path(bag_path), Path(out)
    if out.exists():
        raise ValueError(f'{out} already exists; choose another --out or remove it')
    supplied = opts.supplied_intrinsics()
    partial = out.with_name(out.name + '.partial')
    with BagReader(bag_path) as bag:
        scene = opts.scene or (bag_path.stem if bag_path.is_file() else bag_path.name)
        pose_spec = parse_pose_spec(opts.pose)
        pose_topic = pose_spec[1] if pose_spec[0] == 'topic' else None
        topics = select_topics(bag.topics, opts.image_topic, opts.depth_topic,
                               opts.camera_info_topic, pose_topic)
        plan = _first_pass(bag, topics, pose_spec, opts, supplied)
        _log_choices(plan)
        fingerprint = _fingerprint(bag_path, opts)
        state_path = partial / STATE_FILE
        if partial.exists():
            try:
                state = json.loads(state_path.read_text())
            except (OSError, ValueError):
                state = {}
            if state.get('fingerprint') != fingerprint:
                LOG.warning('discarding %s: it belongs to another bag or other options', partial)
                shutil.rmtree(partial)
        partial.mkdir(parents=True, exist_ok=True)
        atomic_write(state_path, json.dumps({'fingerprint': fingerprint}).encode())
        writer = ScanNetWriter(partial / 'scans' / scene, opts.color_format, opts.jpeg_quality)
        if plan.intrinsics.K is not None:
            writer.write_intrinsics(plan.intrinsics.K, plan.K_depth)
        skipped = list(plan.skipped)
        written = _second_pass(bag, topics, plan, writer, skipped, progress)
        bag_topics = bag.topics  # the reader forgets its connections once closed
    if not written:
        shutil.rmtree(partial)
        raise ValueError(f'no frame of {topics.image} could be written: '
                         f'{_count_reasons(skipped)} (first: {skipped[0]["reason"]})')
    manifest = _manifest(bag_path, bag_topics, topics, plan, skipped, written, opts)
    atomic_write(partial / 'scans' / scene / 'manifest.json',
                 json.dumps(manifest, indent=1).encode())
    os.unlink(state_path)
    partial.rename(out)
    return manifest


def _second_pass(bag: BagReader, topics: CameraTopics, plan: _Plan, writer: ScanNetWriter,
                 skipped: list[dict], progress: bool) -> list[dict]:
    slot_of_image = {img: k for k, img in enumerate(plan.image_index)}
    slots_of_depth: dict[int, list[int]] = {}
    for k, d in enumerate(plan.depth_index):
        if d is not None:
            slots_of_depth.setdefault(d, []).append(k)
    todo = {k for k in range(len(plan.stamps)) if not writer.has_frame(k)}
    colour: dict[int, Any] = {}
    depth: dict[int, np.ndarray] = {}
    failed: dict[int, str] = {}
    bar = Progress('export', len(plan.stamps)) if progress else None
    if bar:
        bar.update(len(plan.stamps) - len(todo))
    counters = {topics.image: -1, topics.depth: -1}
    names = [topics.image] + ([topics.depth] if topics.depth else [])
    for topic, _, msg in bag.messages(names) if todo else ():
        counters[topic] += 1
        i = counters[topic]
        if topic == topics.image and slot_of_image.get(i) in todo:
            colour[slot_of_image[i]] = msg
        elif topic == topics.depth:
            for k in slots_of_depth.get(i, ()):
                if k in todo:
                    try:
                        depth[k] = images.decode_depth(msg)
                    except ValueError as exc:
                        failed[k] = f'depth_decode_error: {exc}'
        for k in [k for k in colour if k in depth or topics.depth is None or k in failed]:
            msg_c = colour.pop(k)
            d = depth.pop(k, None)
            if k not in failed:
                try:
                    _write(writer, k, msg_c, d, plan)
                except ValueError as exc:
                    failed[k] = f'image_decode_error: {exc}'
            todo.discard(k)
            if bar:
                bar.update()
        if not todo:
            break
    if bar:
        bar.close()
    written = []
    for k, t in enumerate(plan.stamps):
        if k in failed:
            skipped.append({'stamp': t, 'reason': failed[k]})
        elif writer.has_frame(k):
            written.append({'index': k, 'stamp': t})
        else:
            skipped.append({'stamp': t, 'reason': 'missing_message'})
    return written


def _write(writer: ScanNetWriter, k: int, msg: Any, depth: Optional[np.ndarray],
           plan: _Plan) -> None:
    color_bytes = None
    rgb = None
    data = np.asarray(msg.data, np.uint8) if hasattr(msg, 'format') else None
    if data is not None and writer.color_format == 'jpg' and data[:2].tobytes() == b'\xff\xd8':
        # Keep the camera's JPEG bytes: no second lossy encoding, and much faster.
        color_bytes = data.tobytes()
    else:
        rgb = images.decode_color(msg)
        if rgb.shape[:2] != plan.size:
            raise ValueError(f'image is {rgb.shape[1]}x{rgb.shape[0]}, the first image is '
                             f'{plan.size[1]}x{plan.size[0]}')
    depth_mm = None if depth is None else depth_to_millimetres(depth)
    writer.write_frame(k, rgb, depth_mm, plan.poses[k], color_bytes=color_bytes,
                       image_size=plan.size)


def _manifest(bag_path: Path, all_topics: dict, topics: CameraTopics, plan: _Plan,
              skipped: list[dict], written: list[dict], opts: ExportOptions) -> dict:
    return {
        'tool': 'spann3r-export', 'version': __version__,
        'source_bag': str(bag_path.resolve()),
        'topics': {'image': topics.image, 'depth': topics.depth,
                   'camera_info': topics.camera_info, 'pose': plan.pose.spec()},
        'bag_topics': all_topics, 'camera_frame': plan.frame_id,
        'image_size': {'width': plan.size[1], 'height': plan.size[0]},
        'pose': plan.pose.manifest(opts.pose),
        'intrinsics': intrinsics_manifest(plan.intrinsics, plan.K_depth, plan.depth_source),
        'options': asdict(opts),
        'counts': {'exported': len(written), 'skipped': len(skipped),
                   'skipped_by_reason': _count_reasons(skipped)},
        'skipped_frames': skipped[:MAX_LISTED_SKIPS],
        'frames': written,
    }
