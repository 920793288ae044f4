"""``spann3r-export``: turn an RGB-D bag into a dataset in the ScanNet layout (no ROS needed).

Two passes over the bag: the first (:mod:`.export_plan`) reads the small messages (camera_info,
TF, pose topics) and the stamps of the colour and depth images, decodes the first image of each
stream, and decides the pose source (:mod:`.pose_source`), the intrinsics
(:mod:`.camera_intrinsics`) and which frames can be synchronised; the second decodes and writes
those frames. Without poses the pose files hold NaN; without intrinsics no ``intrinsic/`` file is
written; the manifest says which source each came from. The export goes into ``<out>.partial``
and is renamed to ``<out>`` when complete; rerunning an interrupted export keeps the frames
already written (:mod:`.export_state`). A refusal (nothing to export, images nobody decodes, a
pose source that gives no pose) writes nothing.
"""

from __future__ import annotations

from pathlib import Path
import shutil
from typing import Any, Optional

import numpy as np

from spann3r_model.data.scannet import depth_to_millimetres, ScanNetWriter
from spann3r_model.io.progress import Progress
from spann3r_ros.bags.export_options import ExportOptions
from spann3r_ros.bags.export_plan import count_reasons, ExportPlan, first_pass, log_choices
from spann3r_ros.bags.export_state import complete_partial, export_manifest, resume_partial
from spann3r_ros.bags.pose_source import parse_pose_spec
from spann3r_ros.bags.reader import BagReader, CameraTopics, select_topics
from spann3r_ros.formats import images


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
        plan = first_pass(bag, topics, pose_spec, opts, supplied)
        log_choices(plan)
        resume_partial(partial, bag_path, opts)
        writer = ScanNetWriter(partial / 'scans' / scene, opts.color_format, opts.jpeg_quality)
        if plan.intrinsics.K is not None:
            writer.write_intrinsics(plan.intrinsics.K, plan.K_depth)
        skipped = list(plan.skipped)
        written = _second_pass(bag, topics, plan, writer, skipped, progress)
        bag_topics = bag.topics  # the reader forgets its connections once closed
    if not written:
        shutil.rmtree(partial)
        raise ValueError(f'no frame of {topics.image} could be written: '
                         f'{count_reasons(skipped)} (first: {skipped[0]["reason"]})')
    manifest = export_manifest(bag_path, bag_topics, topics, plan, skipped, written, opts)
    complete_partial(partial, out, scene, manifest)
    return manifest


def _second_pass(bag: BagReader, topics: CameraTopics, plan: ExportPlan, writer: ScanNetWriter,
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
           plan: ExportPlan) -> None:
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
