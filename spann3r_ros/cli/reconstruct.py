"""``spann3r-reconstruct``: offline reconstruction of images, a video, a bag or a ScanNet scene.

Outputs (written into ``<out>.partial`` and renamed when complete)::

    frames/frame-NNNNNN.npz   per-frame pointmap, confidence, crop RGB, pose (see predictions.py)
    imgs/img_NNNN.png         the model's input crops (referenced by transforms.json)
    points.ply                points with (c - 1) / c > --conf-thresh, coloured, with confidence
    trajectory.tum            estimated camera poses (TUM RGB-D format)
    transforms.json           Nerfstudio cameras (OpenGL convention), as the official demo
    reconstruction.json       inputs, frame order, settings

Frames in input order stream through: each is decoded, stepped and dropped, and each result is
written as soon as it exists, so a long video needs no more memory than a short one.
``--unordered`` is the official offline mode for unordered photo sets: the most confident pair
starts the reconstruction, then the remaining view that the current memory explains with the
highest confidence is added, one at a time. It decodes and holds every frame first.
"""

from __future__ import annotations

import argparse
import itertools
import logging
from pathlib import Path
import shutil
import sys
from typing import Any, Iterable, Iterator, Optional

import cv2
import numpy as np

from spann3r_model.evaluation.predictions import write_frame, write_info
from spann3r_model.io.atomic import atomic_write
from spann3r_model.io.progress import Progress
from spann3r_model.results import FrameResult
from spann3r_ros.cli.common import (
    add_engine_options,
    add_frame_options,
    check_frame_options,
    run_tool,
    session_from_args,
)
from spann3r_ros.cli.frame_sources import describe, iter_frames

LOG = logging.getLogger(__name__)

#: One decoded input frame: ``(stamp seconds, rgb [H, W, 3] uint8, name)``.
_Input = tuple[float, np.ndarray, str]


def confidence_score(conf: np.ndarray) -> float:
    """Mean of ``(c - 1) / c``, the official ranking score of a prediction."""
    return float(np.mean((conf - 1.0) / conf))


def _pair_score(session: Any, a: np.ndarray, b: np.ndarray) -> float:
    session.reset()
    session.step(a, 0.0)
    out = session.step(b, 1.0)
    return confidence_score(out.refined.conf) + confidence_score(session.flush().conf)


def unordered_order(session: Any, images: list[np.ndarray], progress: bool = False
                    ) -> list[int]:
    """Order ``images`` as the official offline mode does.

    The initial pair maximises the summed confidence score of both views; each next view is
    the one whose step from the current state (restored before every trial) gives the highest
    summed score of the refined previous view and the new view.

    :return: indices into ``images``; the session is left reset.
    """
    n = len(images)
    if n < 2:
        return list(range(n))
    estimate_pose = session.estimate_pose
    session.estimate_pose = False  # trials only need confidences
    bar = Progress('ordering', n * (n - 1)) if progress else None
    try:
        best, pair = -np.inf, (0, 1)
        for i in range(n):
            for j in range(n):
                if i != j:
                    score = _pair_score(session, images[i], images[j])
                    if score > best:
                        best, pair = score, (i, j)
                    if bar:
                        bar.update()
        order = list(pair)
        session.reset()
        for k in order:
            session.step(images[k], float(k))
        while len(order) < n:
            tensors, meta = session.state_dict(), session.metadata()
            best, pick = -np.inf, -1
            for k in (k for k in range(n) if k not in order):
                session.load_state(tensors, meta)
                out = session.step(images[k], float(k))
                score = confidence_score(out.refined.conf) + \
                    confidence_score(session.flush().conf)
                if score > best:
                    best, pick = score, k
                if bar:
                    bar.update()
            session.load_state(tensors, meta)
            session.step(images[pick], float(pick))
            order.append(pick)
    finally:
        session.estimate_pose = estimate_pose
        session.reset()
        if bar:
            bar.close()
    return order


class _Outputs:
    """Writes each result as it comes and keeps only what the last files need (poses)."""

    def __init__(self, out: Path, conf_thresh: float) -> None:
        from spann3r_model.io.ply import PlyStream
        self.out, self.conf_thresh = out, conf_thresh
        self.ply = PlyStream(out / 'points.ply', rgb=True, conf=True)
        # (index, stamp, T_world_cam, focal, width) of the frames with a pose.
        self.posed: list[tuple[int, float, np.ndarray, Optional[float], int]] = []

    def add(self, r: FrameResult, source: int) -> None:
        write_frame(self.out, r, source)
        keep = np.isfinite(r.pts3d).all(axis=-1) & ((r.conf - 1.0) / r.conf > self.conf_thresh)
        self.ply.append(r.pts3d[keep], r.rgb[keep], r.conf[keep].astype(np.float32))
        ok, png = cv2.imencode('.png', np.ascontiguousarray(r.rgb[..., ::-1]))
        atomic_write(self.out / 'imgs' / f'img_{r.index:04d}.png', png.tobytes())
        if r.T_world_cam is not None:
            self.posed.append((r.index, r.stamp, r.T_world_cam, r.focal, r.rgb.shape[1]))

    def finish(self, info: dict) -> None:
        from spann3r_model.io.trajectory import write_transforms_json, write_tum
        self.ply.close()
        info['frames_with_pose'] = len(self.posed)
        if self.posed:
            poses = np.stack([p[2] for p in self.posed])
            write_tum(self.out / 'trajectory.tum', [p[1] for p in self.posed], poses)
            focal = next((p[3] for p in self.posed if p[3]), None)
            if focal:
                size = self.posed[0][4]
                files = [f'imgs/img_{p[0]:04d}.png' for p in self.posed]
                write_transforms_json(self.out / 'transforms.json', width=size, height=size,
                                      focal=float(focal), T_world_cams=poses, file_paths=files,
                                      ply_file_path='points.ply')
        write_info(self.out, info)


def _select(frames: Iterable[_Input], every: int, max_frames: int) -> Iterator[_Input]:
    # islice keeps no reference to what it yielded (a generator's loop variable would keep the
    # previous frame alive while the next one decodes) and reads nothing past the last frame.
    stop = (max_frames - 1) * every + 1 if max_frames else None
    return itertools.islice(frames, 0, stop, every)


def _drain(head: list[_Input], rest: Iterator[_Input]) -> Iterator[_Input]:
    # Pops rather than iterates, so that the list does not keep the frames alive.
    while head:
        yield head.pop(0)
    yield from rest


def reconstruct(session: Any, source: Path, out: Path, every: int = 1, max_frames: int = 0,
                unordered: bool = False, conf_thresh: float = 1e-3,
                image_topic: Optional[str] = None, progress: bool = True) -> dict:
    """Reconstruct ``source`` into ``out``; see the module docstring for the files.

    In input order the frames stream: each is decoded, stepped and dropped, and each result is
    written out as soon as it exists, so memory does not grow with the input's length (beyond
    the poses kept for the trajectory). ``unordered`` decodes and holds every frame, because
    the ordering steps every pair. A failure part way leaves ``<out>.partial`` behind.

    :return: the ``reconstruction.json`` content.
    :raises ValueError: for bad input, fewer than 2 frames, or an existing ``out``.
    """
    out = Path(out)
    if out.exists():
        raise ValueError(f'{out} already exists')
    kind = describe(source)
    selected = _select(iter_frames(source, image_topic), every, max_frames)
    held = list(selected) if unordered else list(itertools.islice(selected, 2))
    if len(held) < 2:
        raise ValueError(f'{source} yields {len(held)} frame(s); at least 2 are needed')
    partial = out.with_name(out.name + '.partial')
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    order: list[int] = []
    if unordered:
        order = unordered_order(session, [f[1] for f in held], progress)
        frames = _drain([held[k] for k in order], iter(()))
    else:
        frames = _drain(held, selected)
    del held
    session.reset()
    names: list[str] = []
    outputs = _Outputs(partial, conf_thresh)
    total = len(order) if unordered else max_frames or None  # a stream's length is unknown
    bar = Progress('reconstruct', total) if progress else None
    with outputs.ply:
        # No enumerate(): it keeps the item it yielded last, the previous frame, alive.
        for stamp, rgb, name in frames:
            if not unordered:
                order.append(len(names))
            names.append(name)
            step = session.step(rgb, stamp)
            del rgb  # not alive while the next frame decodes
            if step.refined is not None:
                outputs.add(step.refined, order[step.refined.index])
            if bar:
                bar.update()
        last = session.flush()
        outputs.add(last, order[last.index])
        if bar:
            bar.close()
        info = {'input': str(Path(source).resolve()), 'input_kind': kind,
                'n_frames': len(order), 'order': order, 'names': names,
                'unordered': unordered, 'every': every, 'conf_thresh': conf_thresh,
                'crop_centre': 'image'}
        outputs.finish(info)
    partial.rename(out)
    return info


def build_parser() -> argparse.ArgumentParser:
    """Command-line interface of ``spann3r-reconstruct``."""
    p = argparse.ArgumentParser(prog='spann3r-reconstruct', description=__doc__.splitlines()[0])
    p.add_argument('input', type=Path, help='image folder, video file, bag or ScanNet scene')
    p.add_argument('--out', type=Path, required=True)
    p.add_argument('--checkpoint', type=Path, required=True)
    add_engine_options(p)
    add_frame_options(p, 'use every K-th input frame')
    p.add_argument('--image-topic', help='bag input: colour topic')
    p.add_argument('--conf-thresh', type=float, default=1e-3,
                   help='keep points with (c - 1) / c above this in points.ply')
    p.add_argument('--unordered', action='store_true',
                   help='official offline mode for unordered photo sets (O(N^2) model steps); '
                   'holds every decoded frame in memory, unlike the default streaming mode')
    p.add_argument('--quiet', action='store_true')
    return p


def main(argv: Optional[list[str]] = None) -> int:
    """Entry point of ``spann3r-reconstruct``."""
    return run_tool(build_parser(), _main, argv)


def _main(args: argparse.Namespace) -> int:
    check_frame_options(args)
    session = session_from_args(args, args.checkpoint)
    info = reconstruct(session, args.input, args.out, args.every, args.max_frames,
                       args.unordered, args.conf_thresh, args.image_topic,
                       progress=not args.quiet)
    print(f'reconstructed {info["n_frames"]} frames into {args.out}')  # noqa: T201
    return 0


if __name__ == '__main__':
    sys.exit(main())
