"""Iterate RGB frames from a folder of images, a video file, a bag or a ScanNet scene."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Optional

import cv2
import numpy as np

IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp')
VIDEO_SUFFIXES = ('.mp4', '.avi', '.mov', '.mkv', '.webm', '.m4v')
BAG_SUFFIXES = ('.bag', '.mcap', '.db3')


def describe(path: Path) -> str:
    """``images``, ``video``, ``bag`` or ``scannet`` for ``path``.

    :raises ValueError: when ``path`` is none of them.
    """
    path = Path(path)
    if not path.exists():
        raise ValueError(f'input {path} does not exist')
    if path.is_file():
        if path.suffix.lower() in VIDEO_SUFFIXES:
            return 'video'
        if path.suffix.lower() in BAG_SUFFIXES:
            return 'bag'
        raise ValueError(f'{path}: unknown input file type (expected a video {VIDEO_SUFFIXES} '
                         f'or a bag {BAG_SUFFIXES})')
    if (path / 'metadata.yaml').exists():
        return 'bag'
    if (path / 'sensor_data').is_dir():
        return 'scannet'
    if any(p.suffix.lower() in IMAGE_SUFFIXES for p in path.iterdir()):
        return 'images'
    raise ValueError(f'{path} holds no images, no rosbag2 metadata.yaml and no ScanNet scene')


def iter_frames(path: Path, image_topic: Optional[str] = None
                ) -> Iterator[tuple[float, np.ndarray, str]]:
    """Yield ``(stamp seconds, rgb [H, W, 3] uint8, name)`` in input order.

    Unreadable images in a folder raise ``ValueError`` naming the file.
    """
    path = Path(path)
    kind = describe(path)
    if kind == 'images':
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        for i, f in enumerate(files):
            bgr = cv2.imread(str(f), cv2.IMREAD_COLOR)
            if bgr is None:
                raise ValueError(f'cannot decode image {f}')
            yield float(i), np.ascontiguousarray(bgr[..., ::-1]), f.name
    elif kind == 'video':
        cap = cv2.VideoCapture(str(path))
        if not cap.isOpened():
            raise ValueError(f'cannot open video {path}')
        try:
            i = 0
            while True:
                ok, bgr = cap.read()
                if not ok:
                    break
                stamp = cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
                yield stamp, np.ascontiguousarray(bgr[..., ::-1]), f'frame{i:06d}'
                i += 1
        finally:
            cap.release()
        if i == 0:
            raise ValueError(f'video {path} has no decodable frame')
    elif kind == 'scannet':
        from spann3r_model.data.scannet import ScanNetScene
        from spann3r_model.evaluation.scoring import model_input
        scene = ScanNetScene(path)
        for fid in scene.frame_ids:
            yield float(fid), model_input(scene, fid), f'frame-{fid:06d}'
    else:
        from spann3r_ros.bags.messages import stamp_to_ns
        from spann3r_ros.bags.reader import BagReader, select_topics
        from spann3r_ros.formats.images import decode_color
        with BagReader(path) as bag:
            topic = select_topics(bag.topics, image_topic, need_depth=False).image
            for i, (_, ns, msg) in enumerate(bag.messages([topic])):
                stamp = stamp_to_ns(msg.header.stamp) or ns
                yield stamp / 1e9, decode_color(msg), f'msg{i:06d}'
