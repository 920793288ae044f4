"""``spann3r-reconstruct``: offline reconstruction of images, a video, a bag or a ScanNet scene.

Outputs (written into ``<out>.partial`` and renamed when complete)::

    frames/frame-NNNNNN.npz   per-frame pointmap, confidence, crop RGB, pose (see predictions.py)
    imgs/img_NNNN.png         the model's input crops (referenced by transforms.json)
    points.ply                points with (c - 1) / c > --conf-thresh, coloured, with confidence
    trajectory.tum            estimated camera poses (TUM RGB-D format)
    transforms.json           Nerfstudio cameras (OpenGL convention), as the official demo
    reconstruction.json       inputs, frame order, settings

``--unordered`` is the official offline mode for unordered photo sets: the most confident pair
starts the reconstruction, then the remaining view that the current memory explains with the
highest confidence is added, one at a time.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
import shutil
import sys
from typing import Any, Optional

import cv2
import numpy as np

from spann3r_model.results import FrameResult

from .frame_sources import describe, iter_frames
from .predictions import write_frame, write_info
from .progress import Progress
from .scannet import atomic_write

LOG = logging.getLogger(__name__)


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


def _finish(out: Path, results: list[FrameResult], conf_thresh: float, info: dict) -> None:
    xyz, rgb, conf = [], [], []
    for r in results:
        keep = np.isfinite(r.pts3d).all(axis=-1) & ((r.conf - 1.0) / r.conf > conf_thresh)
        xyz.append(r.pts3d[keep])
        rgb.append(r.rgb[keep])
        conf.append(r.conf[keep])
        ok, png = cv2.imencode('.png', np.ascontiguousarray(r.rgb[..., ::-1]))
        atomic_write(out / 'imgs' / f'img_{r.index:04d}.png', png.tobytes())
    from spann3r_model.export import write_ply, write_transforms_json, write_tum
    write_ply(out / 'points.ply', np.concatenate(xyz), np.concatenate(rgb),
              np.concatenate(conf).astype(np.float32))
    posed = [r for r in results if r.T_world_cam is not None]
    info['frames_with_pose'] = len(posed)
    if posed:
        poses = np.stack([r.T_world_cam for r in posed])
        write_tum(out / 'trajectory.tum', [r.stamp for r in posed], poses)
        focal = next((r.focal for r in posed if r.focal), None)
        if focal:
            size = posed[0].rgb.shape[1]
            write_transforms_json(out / 'transforms.json', width=size, height=size,
                                  focal=float(focal), T_world_cams=poses,
                                  file_paths=[f'imgs/img_{r.index:04d}.png' for r in posed],
                                  ply_file_path='points.ply')
    write_info(out, info)


def reconstruct(session: Any, source: Path, out: Path, every: int = 1, max_frames: int = 0,
                unordered: bool = False, conf_thresh: float = 1e-3,
                image_topic: Optional[str] = None, progress: bool = True) -> dict:
    """Reconstruct ``source`` into ``out``; see the module docstring for the files.

    :return: the ``reconstruction.json`` content.
    :raises ValueError: for bad input, fewer than 2 frames, or an existing ``out``.
    """
    out = Path(out)
    if out.exists():
        raise ValueError(f'{out} already exists')
    kind = describe(source)
    frames = []
    for i, (stamp, rgb, name) in enumerate(iter_frames(source, image_topic)):
        if i % every:
            continue
        frames.append((stamp, rgb, name))
        if max_frames and len(frames) >= max_frames:
            break
    if len(frames) < 2:
        raise ValueError(f'{source} yields {len(frames)} frame(s); at least 2 are needed')
    partial = out.with_name(out.name + '.partial')
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    order = list(range(len(frames)))
    if unordered:
        order = unordered_order(session, [f[1] for f in frames], progress)
    session.reset()
    results: list[FrameResult] = []
    bar = Progress('reconstruct', len(order)) if progress else None
    for k in order:
        stamp, rgb, _ = frames[k]
        step = session.step(rgb, stamp)
        if step.refined is not None:
            results.append(step.refined)
            write_frame(partial, step.refined, order[step.refined.index])
        if bar:
            bar.update()
    last = session.flush()
    results.append(last)
    write_frame(partial, last, order[last.index])
    if bar:
        bar.close()
    info = {'input': str(Path(source).resolve()), 'input_kind': kind, 'n_frames': len(order),
            'order': order, 'names': [frames[k][2] for k in order], 'unordered': unordered,
            'every': every, 'conf_thresh': conf_thresh, 'crop_centre': 'image'}
    _finish(partial, results, conf_thresh, info)
    partial.rename(out)
    return info


def build_parser() -> argparse.ArgumentParser:
    """Command-line interface of ``spann3r-reconstruct``."""
    p = argparse.ArgumentParser(prog='spann3r-reconstruct', description=__doc__.splitlines()[0])
    p.add_argument('input', type=Path, help='image folder, video file, bag or ScanNet scene')
    p.add_argument('--out', type=Path, required=True)
    p.add_argument('--checkpoint', type=Path, required=True)
    p.add_argument('--preset', help='architecture preset for checkpoints without a config')
    p.add_argument('--device', default='auto')
    p.add_argument('--image-size', type=int, default=224,
                   help='model resolution (224 for the released weights)')
    p.add_argument('--precision', default='fp32')
    p.add_argument('--every', type=int, default=1, help='use every K-th input frame')
    p.add_argument('--max-frames', type=int, default=0)
    p.add_argument('--image-topic', help='bag input: colour topic')
    p.add_argument('--conf-thresh', type=float, default=1e-3,
                   help='keep points with (c - 1) / c above this in points.ply')
    p.add_argument('--unordered', action='store_true',
                   help='official offline mode for unordered photo sets (O(N^2) model steps)')
    p.add_argument('--no-pose', action='store_true', help='skip focal / PnP pose estimation')
    p.add_argument('--quiet', action='store_true')
    return p


def main(argv: Optional[list[str]] = None) -> int:
    """Entry point of ``spann3r-reconstruct``."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='%(levelname)s %(message)s')
    try:
        if args.every < 1 or args.max_frames < 0:
            raise ValueError('--every must be >= 1 and --max-frames >= 0')
        from spann3r_model.config import EngineConfig
        from spann3r_model.session import StreamingSession
        session = StreamingSession.from_checkpoint(
            str(args.checkpoint), engine_config=EngineConfig(
                device=args.device, precision=args.precision, image_size=args.image_size),
            preset=args.preset, estimate_pose=not args.no_pose)
        info = reconstruct(session, args.input, args.out, args.every, args.max_frames,
                           args.unordered, args.conf_thresh, args.image_topic,
                           progress=not args.quiet)
    except ValueError as exc:
        print(f'spann3r-reconstruct: error: {exc}', file=sys.stderr)  # noqa: T201
        return 2
    print(f'reconstructed {info["n_frames"]} frames into {args.out}')  # noqa: T201
    return 0


if __name__ == '__main__':
    sys.exit(main())
