"""``spann3r-export``: the command line of the rosbag-to-dataset exporter."""

from __future__ import annotations

import argparse
from pathlib import Path
import sys
from typing import Optional

from spann3r_ros.bags.export import export_bag
from spann3r_ros.bags.export_options import ExportOptions
from spann3r_ros.cli.common import run_tool


def build_parser() -> argparse.ArgumentParser:
    """Command-line interface of ``spann3r-export``."""
    p = argparse.ArgumentParser(prog='spann3r-export',
                                description='Turn an RGB-D bag into a dataset in the '
                                'ScanNet layout (no ROS needed).')
    p.add_argument('bag', type=Path,
                   help='rosbag2 directory (sqlite3 / mcap), a bare .mcap or .db3 file or a '
                        'folder of them, or a ROS 1 .bag')
    p.add_argument('--out', type=Path, required=True, help='output dataset root')
    p.add_argument('--image-topic')
    p.add_argument('--depth-topic')
    p.add_argument('--camera-info-topic')
    p.add_argument('--pose', default='auto',
                   help="auto (TF from the root of the image frame's tree, else the only pose "
                        'topic, else none) | none | tf:PARENT:CHILD | topic:NAME '
                        '(PoseStamped / Odometry)')
    k = p.add_mutually_exclusive_group()
    k.add_argument('--intrinsics', metavar='FX,FY,CX,CY',
                   help='colour intrinsics in pixels (replace camera_info; needed when the bag '
                        'has none and the export is to be evaluated or trained on)')
    k.add_argument('--calibration', metavar='FILE',
                   help='camera calibration YAML as ROS camera_calibration / '
                        'camera_info_manager writes it')
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
    return run_tool(build_parser(), _main, argv)


def _main(args: argparse.Namespace) -> int:
    opts = ExportOptions(
        image_topic=args.image_topic, depth_topic=args.depth_topic,
        camera_info_topic=args.camera_info_topic, pose=args.pose, every=args.every,
        min_translation=args.min_translation, max_dt=args.max_dt, scene=args.scene,
        color_format=args.color_format, jpeg_quality=args.jpeg_quality,
        intrinsics=args.intrinsics, calibration=args.calibration)
    manifest = export_bag(args.bag, args.out, opts, progress=not args.quiet)
    counts = manifest['counts']
    intrinsics = manifest['intrinsics']
    print(f'exported {counts["exported"]} frames to {args.out} '  # noqa: T201
          f'(skipped {counts["skipped"]}: {counts["skipped_by_reason"]}); '
          f'poses: {manifest["pose"]["description"]}; intrinsics: {intrinsics["source"]}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
