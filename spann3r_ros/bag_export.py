"""``spann3r-export``: turn an RGB-D bag into a dataset in the ScanNet layout (no ROS needed).

Two passes over the bag: the first reads the small messages (camera_info, TF, pose topics) and
the stamps of the colour and depth images and decides which frames can be synchronised; the
second decodes and writes those frames. The export goes into ``<out>.partial`` and is renamed
to ``<out>`` when complete; rerunning an interrupted export keeps the frames already written.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass
import hashlib
import json
import logging
import os
from pathlib import Path
import shutil
import sys
from typing import Any, Optional

import numpy as np

from spann3r_model import __version__

from . import bag_messages as bm
from .bag_io import BagReader, CameraTopics, pose_candidates, select_topics, TF
from .progress import Progress
from .scannet import atomic_write, depth_to_millimetres, ScanNetWriter
from .tf_buffer import TfBuffer, TfLookupError

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

    def __post_init__(self) -> None:
        """Validate the values a user types."""
        if self.every < 1:
            raise ValueError(f'--every must be >= 1, got {self.every}')
        if self.min_translation < 0 or self.max_dt < 0:
            raise ValueError('--min-translation and --max-dt must be >= 0')
        if self.color_format not in ('jpg', 'png'):
            raise ValueError(f'--color-format must be jpg or png, got {self.color_format!r}')
        parse_pose_spec(self.pose)


def parse_pose_spec(spec: str) -> tuple[str, ...]:
    """``auto``, ``none``, ``tf:PARENT:CHILD`` or ``topic:NAME`` as a tuple.

    :raises ValueError: for anything else.
    """
    if spec in ('auto', 'none'):
        return (spec,)
    kind, _, rest = spec.partition(':')
    if kind == 'tf':
        parent, _, child = rest.partition(':')
        if parent and child:
            return ('tf', parent, child)
    elif kind == 'topic' and rest:
        return ('topic', rest)
    raise ValueError(f'--pose must be auto, none, tf:PARENT:CHILD or topic:NAME, got {spec!r}')


@dataclass
class _Plan:
    stamps: list[float]
    image_index: list[int]
    depth_index: list[Optional[int]]
    poses: list[Optional[np.ndarray]]
    skipped: list[dict]
    K: np.ndarray
    K_depth: np.ndarray
    size: tuple[int, int]
    frame_id: str
    pose_source: str


def _header_seconds(msg: Any, receive_ns: int) -> float:
    ns = bm.stamp_to_ns(msg.header.stamp)
    return (ns if ns > 0 else receive_ns) / 1e9


def _interpolate_pose(stamps: np.ndarray, poses: np.ndarray, t: float, max_dt: float
                      ) -> Optional[np.ndarray]:
    """Pose at ``t`` when a pose sample lies within ``max_dt``; bracketed stamps interpolate."""
    i = int(np.searchsorted(stamps, t))
    near = [k for k in (i - 1, i) if 0 <= k < len(stamps)]
    if not near or min(abs(stamps[k] - t) for k in near) > max_dt:
        return None
    buffer = TfBuffer(tolerance=max_dt)
    for k in near:
        buffer.add('world', 'cam', float(stamps[k]), poses[k], static=False)
    return buffer.lookup('world', 'cam', t)


def _first_pass(bag: BagReader, topics: CameraTopics, pose_spec: tuple[str, ...],
                opts: ExportOptions) -> _Plan:
    names = [topics.image] + [t for t in (topics.depth, topics.camera_info, topics.pose_topic)
                              if t]
    depth_info = None
    if topics.depth:
        sibling = topics.depth.rsplit('/', 1)[0] + '/camera_info'
        if bag.topics.get(sibling) == 'sensor_msgs/msg/CameraInfo':
            depth_info = sibling
            names.append(sibling)
    if pose_spec[0] == 'tf':
        names += [t for t in ('/tf', '/tf_static') if bag.topics.get(t) == TF]
    buffer = TfBuffer(tolerance=opts.max_dt)
    image_stamps, depth_stamps, pose_stamps, pose_mats = [], [], [], []
    K = K_depth = None
    size = None
    frame_id = ''
    for topic, ns, msg in bag.messages(names):
        if topic == topics.image:
            image_stamps.append(_header_seconds(msg, ns))
            frame_id = frame_id or msg.header.frame_id
        elif topic == topics.depth:
            depth_stamps.append(_header_seconds(msg, ns))
        elif topic == topics.camera_info and K is None:
            K, w, h = bm.camera_info_K(msg)
            size = (h, w)
        elif topic == depth_info and K_depth is None:
            K_depth = bm.camera_info_K(msg)[0]
        elif topic == topics.pose_topic:
            pose_stamps.append(_header_seconds(msg, ns))
            pose_mats.append(bm.msg_pose(msg)[1])
        elif topic in ('/tf', '/tf_static'):
            for tf in msg.transforms:
                buffer.add(tf.header.frame_id, tf.child_frame_id,
                           bm.stamp_to_ns(tf.header.stamp) / 1e9,
                           bm.matrix_from(tf.transform.translation, tf.transform.rotation),
                           static=topic == '/tf_static')
    if not image_stamps:
        raise ValueError(f'topic {topics.image} has no message')
    if K is None:
        raise ValueError('no camera_info message: intrinsics are needed '
                         f'(topic {topics.camera_info or "none found"})')
    if pose_spec[0] == 'tf':
        try:
            buffer.check_chain(pose_spec[1], pose_spec[2])
        except TfLookupError as exc:
            raise ValueError(f'cannot resolve the pose chain {pose_spec[1]} -> {pose_spec[2]}: '
                             f'{exc}') from None
    order = np.argsort(depth_stamps, kind='stable')
    depth_sorted = np.asarray(depth_stamps)[order]
    if pose_stamps:
        porder = np.argsort(pose_stamps, kind='stable')
        pose_t, pose_m = np.asarray(pose_stamps)[porder], np.stack(pose_mats)[porder]
    plan = _Plan([], [], [], [], [], K, K if K_depth is None else K_depth, size, frame_id,
                 ':'.join(pose_spec))
    last_position = None
    candidates = 0
    for idx, t in enumerate(image_stamps):
        d_idx = None
        if topics.depth:
            j = int(np.searchsorted(depth_sorted, t))
            near = [k for k in (j - 1, j) if 0 <= k < len(depth_sorted)]
            best = min(near, key=lambda k: abs(depth_sorted[k] - t)) if near else None
            if best is None or abs(depth_sorted[best] - t) > opts.max_dt:
                plan.skipped.append({'stamp': t, 'reason': 'no_depth_within_max_dt'})
                continue
            d_idx = int(order[best])
        pose = None
        if pose_spec[0] == 'tf':
            try:
                pose = buffer.lookup(pose_spec[1], pose_spec[2], t)
            except TfLookupError:
                pose = None
        elif pose_spec[0] == 'topic':
            pose = _interpolate_pose(pose_t, pose_m, t, opts.max_dt) if pose_stamps else None
        if pose_spec[0] != 'none' and pose is None:
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
    return plan


def _resolve_pose(spec: tuple[str, ...], topics: dict[str, str], frame_hint: str
                  ) -> tuple[str, ...]:
    if spec[0] != 'auto':
        return spec
    cands = pose_candidates(topics)
    if len(cands) == 1:
        return ('topic', cands[0])
    if len(cands) > 1:
        raise ValueError(f'several pose topics: {cands}; choose with --pose topic:NAME or '
                         '--pose tf:PARENT:CHILD')
    if TF in topics.values():
        raise ValueError('no pose topic; poses from TF need --pose tf:PARENT:CHILD (e.g. '
                         f'tf:map:{frame_hint or "CAMERA_FRAME"}), or --pose none')
    raise ValueError('the bag has no pose topic and no /tf: pass --pose none to export '
                     'without poses')


def _fingerprint(bag: Path, opts: ExportOptions) -> str:
    files = sorted(bag.rglob('*')) if bag.is_dir() else [bag]
    sig = [(str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files if f.is_file()]
    return hashlib.sha256(json.dumps([sig, asdict(opts)], default=str).encode()).hexdigest()


def export_bag(bag_path: Path, out: Path, opts: Optional[ExportOptions] = None,
               progress: bool = True) -> dict:
    """Export ``bag_path`` to ``out`` (ScanNet layout + manifest.json).

    :return: the manifest.
    :raises ValueError: for a missing or unreadable bag, unknown topics, an unresolvable pose
        chain, or an ``out`` that already holds a finished export.
    """
    opts = opts or ExportOptions()
    bag_path, out = Path(bag_path), Path(out)
    if out.exists():
        raise ValueError(f'{out} already exists; choose another --out or remove it')
    partial = out.with_name(out.name + '.partial')
    scene = opts.scene or (bag_path.stem if bag_path.suffix == '.bag' else bag_path.name)
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
    with BagReader(bag_path) as bag:
        pose_spec = parse_pose_spec(opts.pose)
        pose_topic = pose_spec[1] if pose_spec[0] == 'topic' else None
        topics = select_topics(bag.topics, opts.image_topic, opts.depth_topic,
                               opts.camera_info_topic, pose_topic)
        pose_spec = _resolve_pose(pose_spec, bag.topics, '')
        if pose_spec[0] == 'topic':
            topics = select_topics(bag.topics, topics.image, topics.depth, topics.camera_info,
                                   pose_spec[1])
        plan = _first_pass(bag, topics, pose_spec, opts)
        partial.mkdir(parents=True, exist_ok=True)
        atomic_write(state_path, json.dumps({'fingerprint': fingerprint}).encode())
        writer = ScanNetWriter(partial / 'scans' / scene, opts.color_format, opts.jpeg_quality)
        writer.write_intrinsics(plan.K, plan.K_depth)
        skipped = list(plan.skipped)
        written = _second_pass(bag, topics, plan, writer, skipped, progress)
    manifest = _manifest(bag_path, bag.topics, topics, plan, skipped, written, opts)
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
                        depth[k] = bm.decode_depth(msg)
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
    fmt = getattr(msg, 'format', None)
    if fmt is not None and writer.color_format == 'jpg' and 'jpeg' in fmt.lower():
        # Keep the camera's JPEG bytes: no second lossy encoding, and much faster.
        color_bytes = np.asarray(msg.data, np.uint8).tobytes()
        if color_bytes[:2] != b'\xff\xd8':
            raise ValueError('compressed image is not a JPEG')
    else:
        rgb = bm.decode_color(msg)
        if rgb.shape[:2] != plan.size:
            raise ValueError(f'image is {rgb.shape[1]}x{rgb.shape[0]}, camera_info says '
                             f'{plan.size[1]}x{plan.size[0]}')
    depth_mm = None if depth is None else depth_to_millimetres(depth)
    writer.write_frame(k, rgb, depth_mm, plan.poses[k], color_bytes=color_bytes,
                       image_size=plan.size)


def _manifest(bag_path: Path, all_topics: dict, topics: CameraTopics, plan: _Plan,
              skipped: list[dict], written: list[dict], opts: ExportOptions) -> dict:
    reasons: dict[str, int] = {}
    for s in skipped:
        key = s['reason'].split(':')[0]
        reasons[key] = reasons.get(key, 0) + 1
    return {
        'tool': 'spann3r-export', 'version': __version__,
        'source_bag': str(bag_path.resolve()),
        'topics': {'image': topics.image, 'depth': topics.depth,
                   'camera_info': topics.camera_info, 'pose': plan.pose_source},
        'bag_topics': all_topics, 'camera_frame': plan.frame_id,
        'options': asdict(opts),
        'counts': {'exported': len(written), 'skipped': len(skipped),
                   'skipped_by_reason': reasons},
        'skipped_frames': skipped[:MAX_LISTED_SKIPS],
        'frames': written,
    }


def build_parser() -> argparse.ArgumentParser:
    """Command-line interface of ``spann3r-export``."""
    p = argparse.ArgumentParser(prog='spann3r-export', description=__doc__.splitlines()[0])
    p.add_argument('bag', type=Path, help='rosbag2 directory (sqlite3 / mcap) or ROS 1 .bag')
    p.add_argument('--out', type=Path, required=True, help='output dataset root')
    p.add_argument('--image-topic')
    p.add_argument('--depth-topic')
    p.add_argument('--camera-info-topic')
    p.add_argument('--pose', default='auto',
                   help='auto | none | tf:PARENT:CHILD | topic:NAME (PoseStamped / Odometry)')
    g = p.add_mutually_exclusive_group()
    g.add_argument('--every', type=int, default=1, help='keep every N-th synchronised frame')
    g.add_argument('--min-translation', type=float, default=0.0,
                   help='keep a frame only after the camera moved this far (metres)')
    p.add_argument('--max-dt', type=float, default=0.02,
                   help='synchronisation tolerance between image, depth and pose (seconds)')
    p.add_argument('--scene', help='scene name (default: the bag name)')
    p.add_argument('--color-format', choices=('jpg', 'png'), default='jpg')
    p.add_argument('--jpeg-quality', type=int, default=95)
    p.add_argument('--quiet', action='store_true', help='no progress bar')
    return p


def main(argv: Optional[list[str]] = None) -> int:
    """Entry point of ``spann3r-export``."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='%(levelname)s %(message)s')
    try:
        opts = ExportOptions(args.image_topic, args.depth_topic, args.camera_info_topic,
                             args.pose, args.every, args.min_translation, args.max_dt,
                             args.scene, args.color_format, args.jpeg_quality)
        manifest = export_bag(args.bag, args.out, opts, progress=not args.quiet)
    except ValueError as exc:
        print(f'spann3r-export: error: {exc}', file=sys.stderr)  # noqa: T201
        return 2
    counts = manifest['counts']
    print(f'exported {counts["exported"]} frames to {args.out} '  # noqa: T201
          f'(skipped {counts["skipped"]}: {counts["skipped_by_reason"]})')
    return 0


if __name__ == '__main__':
    sys.exit(main())
