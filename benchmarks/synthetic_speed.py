"""Rendering speed of the synthetic RGB-D generator (frames per second).

Renders the default scene along its trajectory at 640x480 and 320x240 and prints frames per
second by the wall clock and by this process's CPU time (the better figure on a shared machine),
the ratio to the 2.5 frames/s the first NumPy ray caster reached at 640x480 on the development
machine, and the load average before and after. ``--baseline`` also times that plain ray caster
(kept as the reference of ``test/tools/test_synthetic_speed_equivalence.py``) here and now.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
from pathlib import Path
import time
from typing import Callable

import numpy as np

from spann3r_ros.synthetic.scene import SyntheticConfig, SyntheticScene

OLD_FPS_640 = 2.5
REFERENCE = (Path(__file__).resolve().parents[1] / 'test' / 'tools'
             / 'test_synthetic_speed_equivalence.py')


def measure(render: Callable[[np.ndarray], object], poses: list) -> tuple[float, float]:
    """Frames per second (wall clock, process CPU time) over ``poses``, after one warm-up."""
    render(poses[0])
    wall, cpu = time.perf_counter(), time.process_time()
    for T in poses:
        render(T)
    return (len(poses) / (time.perf_counter() - wall),
            len(poses) / (time.process_time() - cpu))


def load_reference() -> Callable:
    """Import the plain per-pixel ray caster of the equivalence test."""
    spec = importlib.util.spec_from_file_location('synthetic_reference', REFERENCE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.reference_render


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--frames', type=int, default=60, help='frames per resolution')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--baseline', action='store_true',
                        help='also time the plain ray caster (slow: a few frames only)')
    args = parser.parse_args()
    print(f'load average before: {" ".join(f"{x:.2f}" for x in os.getloadavg())} '
          f'({os.cpu_count()} CPUs)')
    reference = load_reference() if args.baseline else None
    for width, height in ((640, 480), (320, 240)):
        scene = SyntheticScene(SyntheticConfig(width=width, height=height, seed=args.seed,
                                               num_frames=args.frames))
        poses = [scene.pose_at(i / scene.config.fps) for i in range(args.frames)]
        wall, cpu = measure(scene.render, poses)
        line = (f'{width}x{height}: {wall:6.1f} frames/s wall, {cpu:6.1f} frames/s CPU time '
                f'({args.frames} frames)')
        if width == 640:
            line += f'; x{wall / OLD_FPS_640:.1f} / x{cpu / OLD_FPS_640:.1f} the old ' \
                    f'{OLD_FPS_640} frames/s'
        print(line)
        if reference is not None:
            few = poses[:max(3, args.frames // 20)]
            ref_wall, ref_cpu = measure(lambda T: reference(scene, T), few)
            print(f'{"":9s}plain ray caster: {ref_wall:6.2f} frames/s wall, {ref_cpu:6.2f} '
                  f'frames/s CPU time -> x{wall / ref_wall:.1f} wall, x{cpu / ref_cpu:.1f} CPU')
    print(f'load average after:  {" ".join(f"{x:.2f}" for x in os.getloadavg())}')


if __name__ == '__main__':
    main()
