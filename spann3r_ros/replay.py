"""``spann3r-eval``: evaluate Spann3R on a bag or a ScanNet-layout sequence with ground truth.

Three ways to get the predictions:

* offline (default): run :class:`StreamingSession` from ``--checkpoint`` over the frames;
* ``--predictions DIR``: saved outputs (``spann3r-reconstruct`` or the official demo);
* ``--live``: play the frames into a running node over ROS 2 topics and rebuild its
  pointmaps from what it publishes (see :mod:`spann3r_ros.live_eval`).

Every way is scored the same: the reconstruction with the official protocol
(:mod:`spann3r_model.evaluation`), poses with ATE after Sim(3) alignment, the run with FPS and
latency percentiles.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
import sys
import tempfile
import time
from typing import Optional

import cv2
import numpy as np

from spann3r_model.evaluation import (
    absolute_trajectory_error,
    CloudEvaluation,
    evaluate_pointmaps,
    latency_stats,
)

from . import eval_report
from .gt_views import GroundTruthView, load_views, to_first_camera
from .predictions import load_predictions, Predictions
from .scannet import find_scenes, ScanNetScene

LOG = logging.getLogger(__name__)


def open_sequence(path: Path, workdir: Path, scene: Optional[str] = None) -> ScanNetScene:
    """Open a ScanNet scene: a dataset folder, or a bag exported into ``workdir``.

    :raises ValueError: when ``path`` is neither, or holds several scenes and none is chosen.
    """
    path = Path(path)
    if not path.exists():
        raise ValueError(f'{path} does not exist')
    is_bag = path.suffix in ('.bag', '.mcap', '.db3') or (path / 'metadata.yaml').exists()
    if is_bag:
        from .bag_export import export_bag, ExportOptions
        out = Path(workdir) / 'exported'
        export_bag(path, out, ExportOptions(color_format='png'), progress=False)
        path = out
    scenes = find_scenes(path)
    if scene is not None:
        scenes = [s for s in scenes if s.name == scene]
        if not scenes:
            raise ValueError(f'no scene named {scene!r} under {path}')
    if len(scenes) > 1:
        raise ValueError(f'{path} holds {len(scenes)} scenes; choose one with --scene: '
                         f'{[s.name for s in scenes]}')
    return ScanNetScene(scenes[0])


def model_input(scene: ScanNetScene, frame_id: int) -> np.ndarray:
    """Return the RGB image the model sees: colour resized to the depth resolution.

    The official loader does the same, so prediction pixels line up with the depth crop.
    """
    rgb = scene.color(frame_id)
    depth_hw = scene.depth_mm(frame_id).shape
    if rgb.shape[:2] != depth_hw:
        rgb = cv2.resize(rgb, (depth_hw[1], depth_hw[0]), interpolation=cv2.INTER_LINEAR)
    return rgb


def run_session(session, scene: ScanNetScene, frame_ids: list[int]
                ) -> tuple[Predictions, np.ndarray]:
    """Stream the frames through ``session``; return the predictions and per-step latencies."""
    results, latencies = [], []
    session.reset()
    for fid in frame_ids:
        rgb = model_input(scene, fid)
        t0 = time.perf_counter()
        out = session.step(rgb, float(fid))
        latencies.append(time.perf_counter() - t0)
        if out.refined is not None:
            results.append(out.refined)
    t0 = time.perf_counter()
    last = session.flush()
    latencies[-1] += time.perf_counter() - t0
    if last is not None:
        results.append(last)
    if len(results) != len(frame_ids):
        raise ValueError(f'the session returned {len(results)} results for {len(frame_ids)} '
                         'frames (at least 2 frames are needed)')
    poses = np.stack([r.T_world_cam if r.T_world_cam is not None else np.full((4, 4), np.nan)
                      for r in results])
    preds = Predictions(np.stack([r.pts3d for r in results]),
                        np.stack([r.conf for r in results]), np.stack([r.rgb for r in results]),
                        np.arange(len(results)), poses, 'image', 'ours')
    return preds, np.asarray(latencies)


def score_pointmaps(scene: ScanNetScene, frame_ids: list[int], pts3d: np.ndarray,
                    centre: str, use_icp: bool = True
                    ) -> tuple[CloudEvaluation, list[GroundTruthView], np.ndarray]:
    """Run the official protocol on pointmaps of the frames ``frame_ids``.

    :param pts3d: ``[N, S, S, 3]`` predictions in the first frame's camera; NaN pixels (a live
        node did not publish them) are left out on both sides.
    :param centre: crop centre of the predictions (``image`` or ``principal``).
    :return: the evaluation, the ground-truth views and the ``[N, S, S]`` evaluated mask.
    """
    views = load_views(scene, frame_ids, size=pts3d.shape[1], centre=centre)
    gt_cam0, valid, T0 = to_first_camera(views)
    predicted = np.isfinite(pts3d).all(axis=-1)
    valid = valid & predicted
    pts = np.where(predicted[..., None], pts3d, 0).astype(np.float32)
    return evaluate_pointmaps(pts, gt_cam0, valid, T0, use_icp=use_icp), views, valid


def evaluate(scene: ScanNetScene, frame_ids: list[int], preds: Predictions,
             latencies: Optional[np.ndarray] = None, use_icp: bool = True
             ) -> tuple[dict, dict, dict]:
    """Score ``preds`` against the scene's ground truth.

    :return: ``(report, clouds, plot_data)``.
    """
    if preds.source is not None and preds.origin == 'ours':
        if preds.source.max(initial=-1) >= len(frame_ids):
            raise ValueError(f'predictions refer to input frame {int(preds.source.max())}, '
                             f'the sequence has {len(frame_ids)} selected frames: evaluate with '
                             'the --every / --max-frames the reconstruction used')
        frame_ids = [frame_ids[int(i)] for i in preds.source]
    if len(preds.pts3d) != len(frame_ids):
        raise ValueError(f'{len(preds.pts3d)} predicted frames for {len(frame_ids)} ground-truth '
                         'frames: match them with --every / --max-frames')
    ev, views, valid = score_pointmaps(scene, frame_ids, preds.pts3d, preds.crop_centre,
                                       use_icp)
    report = {'sequence': scene.name, 'n_frames': len(frame_ids), 'frame_ids': frame_ids,
              'source': preds.origin, 'crop_centre': preds.crop_centre,
              'evaluated_pixels': int(valid.sum()), **ev.to_dict()}
    report['icp'] = report['icp'] if use_icp else None
    plot: dict = {'gt_positions': np.stack([v.T_world_cam[:3, 3] for v in views]).astype(float)}
    if preds.poses is not None:
        ok = np.isfinite(preds.poses).all(axis=(1, 2))
        if ok.sum() >= 3:
            ate = absolute_trajectory_error(preds.poses[ok, :3, 3], plot['gt_positions'][ok])
            plot['est_positions'] = np.full_like(plot['gt_positions'], np.nan)
            plot['est_positions'][ok] = ate.pop('aligned')
            ate['R'], ate['t'] = ate['R'].tolist(), ate['t'].tolist()
            ate['frames_without_pose'] = int((~ok).sum())
            report['ate'] = ate
    if latencies is not None:
        report['latency'] = latency_stats(latencies)
        plot['latency'] = latencies
    plot['acc_dist'], plot['comp_dist'] = ev.distances['acc'], ev.distances['comp']
    gt_rgb = np.stack([v.rgb for v in views])[valid]
    pred_rgb = preds.rgb[valid] if preds.rgb is not None else gt_rgb
    clouds = {'prediction': (ev.pred_points, pred_rgb), 'ground_truth': (ev.gt_points, gt_rgb)}
    return report, clouds, plot


def write_outputs(out: Path, report: dict, clouds: dict, plot: dict) -> None:
    """report.json / report.md, PLYs and PNG plots into ``out``."""
    eval_report.write_report(out, report, clouds, report_markdown(report))
    est = plot.get('est_positions')
    eval_report.plot_trajectory(out / 'trajectory.png', plot['gt_positions'], est)
    if 'latency' in plot:
        eval_report.plot_latency(out / 'latency.png', plot['latency'])
    eval_report.plot_errors(out / 'errors.png', plot['acc_dist'], plot['comp_dist'])


def build_parser() -> argparse.ArgumentParser:
    """Command-line interface of ``spann3r-eval``."""
    p = argparse.ArgumentParser(prog='spann3r-eval', description=__doc__.splitlines()[0])
    p.add_argument('sequence', type=Path, help='bag, or ScanNet-layout root / scene folder')
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument('--checkpoint', type=Path, help='weights (.pth or .safetensors)')
    src.add_argument('--predictions', type=Path, help='saved predictions to evaluate')
    src.add_argument('--live', action='store_true',
                     help='play the frames into a running node over ROS 2 topics and score '
                     'what it publishes (the node is reset first; run it with min_confidence '
                     '1.0 for the full protocol)')
    p.add_argument('--out', type=Path, default=Path('eval_out'), help='report folder')
    p.add_argument('--scene', help='scene name when the dataset holds several')
    p.add_argument('--every', type=int, default=1, help='use every K-th frame (kf_every)')
    p.add_argument('--max-frames', type=int, default=0, help='evaluate at most this many')
    p.add_argument('--preset', help='architecture preset for checkpoints without a config')
    p.add_argument('--device', default='auto', help='auto, cpu, cuda or cuda:N')
    p.add_argument('--image-size', type=int, default=224,
                   help='model resolution (224 for the released weights)')
    p.add_argument('--precision', default='fp32', help='fp32, fp16, bf16 or int8')
    p.add_argument('--no-icp', action='store_true', help='skip the ICP refinement')
    p.add_argument('--no-pose', action='store_true',
                   help='do not estimate camera poses (no ATE; faster)')
    p.add_argument('--namespace',
                   help='--live: namespace of the running node (live.launch.py: spann3r). '
                   'Default: found on the ROS graph when exactly one Spann3R node runs')
    p.add_argument('--node-name',
                   help='--live: name of the running node (spann3r_node unless renamed). '
                   'Default: found on the ROS graph, like --namespace')
    p.add_argument('--topic',
                   help="--live: image topic to publish on (relative names resolve in the "
                   "node's namespace). Default: the raw image topic the node subscribes to")
    p.add_argument('--min-confidence', type=float,
                   help="--live: the node's min_confidence (default: asked from the node)")
    p.add_argument('--rate', type=float,
                   help='--live: publish at this fixed rate in Hz, like a camera; measures '
                   'what the node keeps up with (dropped frames, latency including one frame '
                   'period). Default: lock-step playback (the next frame goes out when the '
                   'node has answered; nothing dropped, latency = one model step plus '
                   "transport), which measures quality and the node's own speed")
    p.add_argument('--timeout', type=float, default=60.0,
                   help='--live: seconds to wait for the node and for each answer')
    return p


def main(argv: Optional[list[str]] = None) -> int:
    """Entry point of ``spann3r-eval``."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='%(levelname)s %(message)s')
    try:
        if args.every < 1 or args.max_frames < 0:
            raise ValueError('--every must be >= 1 and --max-frames >= 0')
        with tempfile.TemporaryDirectory(prefix='spann3r-eval-') as work:
            report = _run(args, Path(work))
    except ValueError as exc:
        print(f'spann3r-eval: error: {exc}', file=sys.stderr)  # noqa: T201
        return 2
    print(report_markdown(report))  # noqa: T201
    return 0


def report_markdown(report: dict) -> str:
    """Return ``report.md``: the summary plus, for a live run, how the node was played."""
    from .live_eval import markdown as live_markdown
    return eval_report.markdown(report) + live_markdown(report)


def _run(args: argparse.Namespace, work: Path) -> dict:
    scene = open_sequence(args.sequence, work, args.scene)
    frame_ids = scene.frame_ids[::args.every]
    if args.max_frames:
        frame_ids = frame_ids[:args.max_frames]
    latencies = None
    if args.live:
        from .live_eval import run_live
        report, clouds, plot = run_live(scene, frame_ids, node_name=args.node_name,
                                        namespace=args.namespace, topic=args.topic,
                                        rate=args.rate, timeout=args.timeout,
                                        min_confidence=args.min_confidence,
                                        use_icp=not args.no_icp)
        write_outputs(args.out, report, clouds, plot)
        return report
    if args.predictions is not None:
        preds = load_predictions(args.predictions, scene.name)
    else:
        from spann3r_model.config import EngineConfig
        from spann3r_model.session import StreamingSession
        engine = EngineConfig(device=args.device, precision=args.precision,
                              image_size=args.image_size)
        session = StreamingSession.from_checkpoint(str(args.checkpoint), engine_config=engine,
                                                   preset=args.preset,
                                                   estimate_pose=not args.no_pose)
        preds, latencies = run_session(session, scene, frame_ids)
    report, clouds, plot = evaluate(scene, frame_ids, preds, latencies, not args.no_icp)
    report['checkpoint'] = None if args.checkpoint is None else str(args.checkpoint)
    write_outputs(args.out, report, clouds, plot)
    return report


if __name__ == '__main__':
    sys.exit(main())
