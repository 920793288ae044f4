"""Export throughput of ``spann3r-export`` on 640x480 JPEG RGB-D bags (frames per second).

Renders a few synthetic frames, writes them cyclically into sqlite3 and mcap bags (JPEG colour,
16UC1 depth, camera_info, PoseStamped), then times the export with the camera's JPEG bytes kept
(``--color-format jpg``) and with decoding and lossless re-encoding (``--color-format png``).
"""

from __future__ import annotations

import argparse
from pathlib import Path
import tempfile
import time

from spann3r_model.data.scannet import depth_to_millimetres
from spann3r_ros.bags import messages as bm
from spann3r_ros.bags.export import export_bag
from spann3r_ros.bags.export_options import ExportOptions
from spann3r_ros.bags.writer import (
    BagWriter,
    OPTICAL_FRAME,
    TOPIC_COMPRESSED,
    TOPIC_DEPTH,
    TOPIC_GT_POSE,
    TOPIC_INFO,
)
from spann3r_ros.synthetic.scene import SyntheticConfig, SyntheticScene


def write_bag(path: Path, storage: str, frames: list, n: int, fps: float = 30.0) -> None:
    with BagWriter(path, storage) as bag:
        ts = bag.typestore
        for i in range(n):
            f = frames[i % len(frames)]
            ns = 1_700_000_000_000_000_000 + int(i * 1e9 / fps)
            hdr = bm.header(ts, ns, OPTICAL_FRAME)
            bag.write(TOPIC_INFO, bm.camera_info_msg(ts, hdr, f.K, 640, 480), ns)
            bag.write(TOPIC_COMPRESSED, bm.compressed_msg(ts, hdr, f.rgb, 'jpeg', 90), ns)
            bag.write(TOPIC_DEPTH, bm.image_msg(ts, hdr, depth_to_millimetres(f.depth), '16UC1'),
                      ns)
            bag.write(TOPIC_GT_POSE, bm.pose_stamped(ts, bm.header(ts, ns, 'map'),
                                                     f.T_world_cam), ns)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--frames', type=int, default=100)
    args = parser.parse_args()
    scene = SyntheticScene(SyntheticConfig(num_frames=4))
    frames = list(scene.frames())
    with tempfile.TemporaryDirectory() as tmp:
        for storage in ('sqlite3', 'mcap'):
            bag = Path(tmp) / f'bag_{storage}'
            write_bag(bag, storage, frames, args.frames)
            for fmt in ('jpg', 'png'):
                out = Path(tmp) / f'out_{storage}_{fmt}'
                t0 = time.perf_counter()
                manifest = export_bag(bag, out, ExportOptions(color_format=fmt), progress=False)
                dt = time.perf_counter() - t0
                n = manifest['counts']['exported']
                print(f'{storage:8s} colour {fmt}: {n} frames 640x480 in {dt:.2f} s = '
                      f'{n / dt:.1f} fps')


if __name__ == '__main__':
    main()
