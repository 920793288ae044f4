"""``spann3r-eval``: evaluate Spann3R on a bag or a ScanNet-layout sequence with ground truth.

Three ways to get the predictions:

* offline (default): run :class:`StreamingSession` from ``--checkpoint`` over the frames;
* ``--predictions DIR``: saved outputs (``spann3r-reconstruct`` or the official demo);
* ``--live``: play the frames into a running node over ROS 2 topics and rebuild its
  pointmaps from what it publishes (see :mod:`spann3r_ros.cli.live_eval`).

Every way is scored the same (:mod:`spann3r_model.evaluation.scoring`): the reconstruction
with the official protocol (:mod:`spann3r_model.evaluation.metrics`), poses with ATE after
Sim(3) alignment, the run with
FPS and latency percentiles.

``--metric SOURCE`` instead plays a bag through the node's own online metric alignment
(:mod:`spann3r_ros.cli.metric_run`) and scores its outputs in metres with no alignment of its
own, beside the Sim(3)-aligned scores of the same run (:mod:`spann3r_ros.cli.metric_score`);
``metric_map.png`` draws what it published on the ground truth, in the output frame
(:mod:`spann3r_ros.cli.metric_preview`).
"""

from __future__ import annotations

import argparse
from pathlib import Path
import sys
import tempfile
from typing import Optional

from spann3r_model.data.scannet import find_scenes, ScanNetScene
from spann3r_model.evaluation import report as eval_report
from spann3r_model.evaluation.predictions import load_predictions
from spann3r_model.evaluation.scoring import evaluate, run_session
from spann3r_ros.bags.export import export_bag
from spann3r_ros.bags.export_options import ExportOptions
from spann3r_ros.bags.reader import BagReader
from spann3r_ros.cli.common import (
    add_engine_options,
    add_frame_options,
    check_frame_options,
    frame_selection,
    run_tool,
    session_from_args,
)
from spann3r_ros.cli.live_eval import run_live
from spann3r_ros.cli.metric_options import (
    add_metric_options,
    check_metric_options,
    DEFAULT_GT_POSE_TOPIC,
    gt_tf_chain,
    node_config,
)
from spann3r_ros.cli.metric_preview import render_metric_map
from spann3r_ros.cli.metric_run import open_session, run_metric
from spann3r_ros.cli.metric_score import metric_markdown, score_metric_run
from spann3r_ros.cli.metric_topics import metric_topics
from spann3r_ros.cli.playback_score import report_markdown


def open_sequence(path: Path, workdir: Path, scene: Optional[str] = None,
                  pose: Optional[str] = None) -> tuple[ScanNetScene, Optional[dict]]:
    """Open a ScanNet scene: a dataset folder, or a bag exported into ``workdir``.

    :param pose: for a bag, where the ground-truth poses come from (``spann3r-export --pose``;
        None: ``auto``).
    :return: the scene, and for a bag the export manifest's ``pose`` entry (which source).
    :raises ValueError: when ``path`` is neither, holds several scenes and none is chosen, or
        ``pose`` is given for a dataset folder.
    """
    path = Path(path)
    if not path.exists():
        raise ValueError(f'{path} does not exist')
    is_bag = path.suffix in ('.bag', '.mcap', '.db3') or (path / 'metadata.yaml').exists()
    pose_info = None
    if is_bag:
        out = Path(workdir) / 'exported'
        manifest = export_bag(path, out, ExportOptions(color_format='png', pose=pose or 'auto'),
                              progress=False)
        pose_info = manifest.get('pose')
        path = out
    elif pose is not None:
        raise ValueError(f'--pose applies to bags; {path} is a dataset folder with its own poses')
    scenes = find_scenes(path)
    if scene is not None:
        scenes = [s for s in scenes if s.name == scene]
        if not scenes:
            raise ValueError(f'no scene named {scene!r} under {path}')
    if len(scenes) > 1:
        raise ValueError(f'{path} holds {len(scenes)} scenes; choose one with --scene: '
                         f'{[s.name for s in scenes]}')
    return ScanNetScene(scenes[0]), pose_info


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
    add_frame_options(p, 'use every K-th frame (kf_every)')
    add_engine_options(p)
    p.add_argument('--no-icp', action='store_true', help='skip the ICP refinement')
    p.add_argument('--pose',
                   help="a bag's ground-truth camera poses, as spann3r-export --pose: auto "
                   '(default), tf:PARENT:CHILD, topic:NAME. On a robot bag TF is the '
                   "odometry; spann3r-synth --odometry bags hold the truth on "
                   'topic:/ground_truth/pose')
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
    add_metric_options(p)
    return p


def main(argv: Optional[list[str]] = None) -> int:
    """Entry point of ``spann3r-eval``."""
    return run_tool(build_parser(), _main, argv)


def _main(args: argparse.Namespace) -> int:
    check_frame_options(args)
    check_metric_options(args)
    if args.metric is not None:
        report = _run_metric(args)
        print(metric_markdown(report))  # noqa: T201
        return 0
    with tempfile.TemporaryDirectory(prefix='spann3r-eval-') as work:
        report = _run(args, Path(work))
    print(report_markdown(report))  # noqa: T201
    return 0


def _run(args: argparse.Namespace, work: Path) -> dict:
    scene, pose_info = open_sequence(args.sequence, work, args.scene, args.pose)
    frame_ids = frame_selection(args, scene.frame_ids)
    latencies = None
    if args.live:
        report, clouds, plot = run_live(scene, frame_ids, node_name=args.node_name,
                                        namespace=args.namespace, topic=args.topic,
                                        rate=args.rate, timeout=args.timeout,
                                        min_confidence=args.min_confidence,
                                        use_icp=not args.no_icp)
        report['ground_truth_pose'] = pose_info
        write_outputs(args.out, report, clouds, plot)
        return report
    if args.predictions is not None:
        preds = load_predictions(args.predictions, scene.name)
    else:
        session = session_from_args(args, args.checkpoint)
        preds, latencies = run_session(session, scene, frame_ids)
    report, clouds, plot = evaluate(scene, frame_ids, preds, latencies, not args.no_icp)
    report['checkpoint'] = None if args.checkpoint is None else str(args.checkpoint)
    report['ground_truth_pose'] = pose_info
    write_outputs(args.out, report, clouds, plot)
    return report


def _run_metric(args: argparse.Namespace) -> dict:
    """``--metric``: the topics and configuration first, then the model, the run, the scores."""
    with BagReader(args.sequence) as bag:
        topics = bag.topics
    probe = node_config(args, depth_topic='depth')
    chosen = metric_topics(topics, probe, args.image_topic, args.depth_topic,
                           args.gt_pose_topic or DEFAULT_GT_POSE_TOPIC,
                           gt_tf_chain(args.gt_pose_tf))
    cfg = node_config(args, depth_topic=chosen.depth)
    run = run_metric(args.sequence, cfg, chosen, open_session(cfg), args.every, args.max_frames)
    report, clouds = score_metric_run(run, use_icp=not args.no_icp)
    report.update(sequence=args.sequence.name, checkpoint=str(args.checkpoint),
                  topics={k: v for k, v in chosen.__dict__.items() if k != 'tf'})
    eval_report.write_report(args.out, report, clouds, metric_markdown(report))
    if clouds:
        state = report['alignment'].get('final_state')
        render_metric_map(args.out / 'metric_map.png', *clouds['prediction'],
                          clouds['ground_truth'][0], clouds['published_path'][0],
                          clouds['true_path'][0], run.frame_id,
                          title=f'{args.sequence.name}: metric_source {cfg.metric_source}, '
                          f'final state {state}, scale error '
                          f'{_percent(report["alignment"].get("scale_error"))}')
    return report


def _percent(fraction: Optional[float]) -> str:
    return 'n/a' if fraction is None else f'{100 * fraction:+.1f}%'


if __name__ == '__main__':
    sys.exit(main())
