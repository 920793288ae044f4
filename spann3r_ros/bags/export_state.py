"""The resumable state and the manifest of a bag export.

The export is written into ``<out>.partial``, whose state file holds a fingerprint of the bag's
files and the options: a rerun of an interrupted export keeps the frames already written, a
folder of another export is discarded. A complete export gets its manifest (which source each
part came from, what was skipped and why) and is renamed to ``<out>``.
"""

from __future__ import annotations

from dataclasses import asdict
import hashlib
import json
import logging
import os
from pathlib import Path
import shutil

from spann3r_model import __version__
from spann3r_model.io.atomic import atomic_write
from spann3r_ros.bags.camera_intrinsics import manifest_entry as intrinsics_manifest
from spann3r_ros.bags.export_options import ExportOptions
from spann3r_ros.bags.export_plan import count_reasons, ExportPlan
from spann3r_ros.bags.reader import CameraTopics

LOG = logging.getLogger(__name__)
STATE_FILE = 'export_state.json'
MAX_LISTED_SKIPS = 1000


def _fingerprint(bag: Path, opts: ExportOptions) -> str:
    files = sorted(bag.rglob('*')) if bag.is_dir() else [bag]
    sig = [(str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files if f.is_file()]
    if opts.calibration is not None:
        sig.append(hashlib.sha256(Path(opts.calibration).read_bytes()).hexdigest())
    return hashlib.sha256(json.dumps([sig, asdict(opts)], default=str).encode()).hexdigest()


def resume_partial(partial: Path, bag_path: Path, opts: ExportOptions) -> None:
    """Prepare ``partial`` for this export and record its fingerprint there.

    What an interrupted run of the same export (same bag files, same options) wrote is
    kept; a folder left by another bag or other options is removed first.
    """
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


def complete_partial(partial: Path, out: Path, scene: str, manifest: dict) -> None:
    """Write the manifest, drop the state file and rename ``partial`` to ``out``."""
    atomic_write(partial / 'scans' / scene / 'manifest.json',
                 json.dumps(manifest, indent=1).encode())
    os.unlink(partial / STATE_FILE)
    partial.rename(out)


def export_manifest(bag_path: Path, all_topics: dict, topics: CameraTopics, plan: ExportPlan,
                    skipped: list[dict], written: list[dict], opts: ExportOptions) -> dict:
    """Return the manifest of a finished export: its sources, choices, counts and frames."""
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
                   'skipped_by_reason': count_reasons(skipped)},
        'skipped_frames': skipped[:MAX_LISTED_SKIPS],
        'frames': written,
    }
