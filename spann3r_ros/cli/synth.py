"""``spann3r-synth``: render a synthetic RGB-D sequence to the ScanNet layout and/or bags."""

from __future__ import annotations

import argparse
from pathlib import Path
import shutil
import sys
from typing import Optional

from spann3r_model.data.scannet import ScanNetWriter
from spann3r_model.io.progress import Progress
from spann3r_ros.bags.writer import BagOptions, STORAGES, write_synthetic_bag
from spann3r_ros.cli.common import run_tool
from spann3r_ros.synthetic.odometry import OdometryNoise
from spann3r_ros.synthetic.scene import SyntheticConfig, SyntheticScene


def write_scannet(scene: SyntheticScene, root: Path, name: str, color_format: str = 'png',
                  progress: bool = True) -> Path:
    """Write the sequence as ``<root>/scans/<name>``; it appears only when complete.

    :return: the scene folder.
    """
    final = Path(root) / 'scans' / name
    if final.exists():
        raise ValueError(f'{final} exists already')
    staging = final.with_name(f'.{name}.partial')
    if staging.exists():
        shutil.rmtree(staging)
    writer = ScanNetWriter(staging, color_format)
    writer.write_intrinsics(scene.K)
    bar = Progress('render', scene.config.num_frames) if progress else None
    for frame in scene.frames():
        writer.write_frame(frame.index, frame.rgb, frame.depth, frame.T_world_cam)
        if bar:
            bar.update()
    if bar:
        bar.close()
    staging.rename(final)
    return final


#: The noise flags (all floats, default 0): flag, metavar, help.
_NOISE_FLAGS = (
    ('--odometry-noise', 'METRES',
     'white position noise of the odometry per axis (standard deviation)'),
    ('--odometry-rotation-noise', 'RAD',
     'white rotation noise of the odometry per axis (standard deviation)'),
    ('--odometry-drift', 'FRACTION',
     'odometry scale drift, a fraction of the path length (0.01 = 1%%), with a heading bias in '
     'proportion'),
    ('--depth-noise', 'FRACTION', 'relative Gaussian depth noise (0.02 = 2%%)'),
    ('--depth-invalid', 'FRACTION', 'fraction of depth pixels set to 0 (invalid), drawn per '
     'frame'),
)


def build_parser() -> argparse.ArgumentParser:
    """Command-line interface of ``spann3r-synth``."""
    p = argparse.ArgumentParser(prog='spann3r-synth', description=__doc__.splitlines()[0])
    p.add_argument('--out', type=Path, required=True, help='output folder')
    p.add_argument('--name', default='synthetic', help='scene / bag name')
    p.add_argument('--frames', type=int, default=30)
    p.add_argument('--fps', type=float, default=10.0)
    p.add_argument('--width', type=int, default=640)
    p.add_argument('--height', type=int, default=480)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--scannet', action='store_true', help='write <out>/scans/<name>')
    p.add_argument('--bag', action='append', choices=STORAGES, default=[],
                   help='write a bag in this storage (repeatable): sqlite3, mcap, ros1')
    p.add_argument('--compressed', choices=('none', 'jpeg', 'png'), default='jpeg')
    p.add_argument('--no-raw', action='store_true', help='omit the raw rgb8 Image topic')
    p.add_argument('--depth', choices=('16UC1', '32FC1', 'compressedDepth', 'none'),
                   default='16UC1')
    p.add_argument('--color-format', choices=('jpg', 'png'), default='png')
    bags = p.add_argument_group('robot and sensor noise (bags only; the ScanNet layout keeps '
                                'the truth)')
    bags.add_argument('--odometry', action='store_true',
                      help='publish odometry (odom -> base_link on /tf and /odom, the camera '
                      'mount on /tf_static) instead of the ground-truth TF')
    for flag, metavar, text in _NOISE_FLAGS:
        bags.add_argument(flag, type=float, default=0.0, metavar=metavar, help=text)
    return p


def _bag_options(args: argparse.Namespace) -> BagOptions:
    """Build the bag options of the command line.

    :raises ValueError: for a bad noise value, or a noise option without what it degrades.
    """
    noise_flags = {'--odometry-noise': args.odometry_noise,
                   '--odometry-rotation-noise': args.odometry_rotation_noise,
                   '--odometry-drift': args.odometry_drift}
    given = [flag for flag, value in noise_flags.items() if value]
    if given and not args.odometry:
        raise ValueError(f'{", ".join(given)} needs --odometry')
    if (args.odometry or args.depth_noise or args.depth_invalid) and not args.bag:
        raise ValueError('--odometry and the noise options apply to bags only: pass --bag '
                         'STORAGE')
    try:
        noise = OdometryNoise(noise_m=args.odometry_noise, noise_rad=args.odometry_rotation_noise,
                              drift=args.odometry_drift, seed=args.seed)
    except ValueError as exc:
        raise ValueError(f'odometry: {exc}') from None
    return BagOptions(raw_color=not args.no_raw, compressed=args.compressed, depth=args.depth,
                      odometry=args.odometry, odometry_noise=noise if args.odometry
                      else OdometryNoise(), depth_noise=args.depth_noise,
                      depth_invalid=args.depth_invalid)


def main(argv: Optional[list[str]] = None) -> int:
    """Entry point of ``spann3r-synth``."""
    return run_tool(build_parser(), _main, argv)


def _main(args: argparse.Namespace) -> int:
    if not args.scannet and not args.bag:
        raise ValueError('nothing to write: pass --scannet and/or --bag STORAGE')
    cfg = SyntheticConfig(width=args.width, height=args.height, num_frames=args.frames,
                          fps=args.fps, seed=args.seed)
    opts = _bag_options(args)
    scene = SyntheticScene(cfg)
    args.out.mkdir(parents=True, exist_ok=True)
    written = []
    if args.scannet:
        written.append(write_scannet(scene, args.out, args.name, args.color_format))
    for storage in args.bag:
        suffix = {'sqlite3': '_sqlite3', 'mcap': '_mcap', 'ros1': '.bag'}[storage]
        written.append(write_synthetic_bag(scene, args.out / f'{args.name}{suffix}',
                                           storage, opts))
    for path in written:
        print(path)  # noqa: T201
    return 0


if __name__ == '__main__':
    sys.exit(main())
