"""``python -m spann3r_ros.cli.demo`` (``make demo``): the whole live pipeline on a synthetic room.

1. Renders a synthetic RGB-D sequence (deterministic from its seed; a few seconds) into a
   rosbag2 (sqlite3) and its ground truth into the ScanNet layout, under ``OUT/sequence/``.
2. Starts the real node (``python -m spann3r_ros.node.node``) as a subprocess with the demo
   weights, on a random ``ROS_DOMAIN_ID`` restricted to localhost.
3. Plays the bag's colour frames into it over ROS 2 topics in lock-step, collects its clouds,
   confidence images and poses, and calls ``~/save_map``.
4. Scores the run against the ground truth (official Acc / Comp / NC protocol, ATE after Sim(3),
   latency and throughput) and writes ``map.ply``, ``report.json``, ``report.md`` and
   ``preview.png`` into ``OUT``.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
import json
import logging
import os
from pathlib import Path
import random
import shutil
import signal
import subprocess
import sys
import time
from typing import IO, Optional, Sequence

from spann3r_model.data.scannet import ScanNetScene
from spann3r_model.evaluation.gt_views import load_views
from spann3r_model.io.ply import read_ply
from spann3r_ros.bags.writer import BagOptions, TOPIC_COLOR, write_synthetic_bag
from spann3r_ros.cli.common import run_tool
from spann3r_ros.cli.demo_preview import render_preview
from spann3r_ros.cli.demo_report import first_camera_pose, map_points_to_gt_world, write_reports
from spann3r_ros.cli.playback_score import score_playback
from spann3r_ros.cli.synth import write_scannet
from spann3r_ros.node.player import play_lockstep, Playback, read_bag_frames
from spann3r_ros.node.remote import ros_context
from spann3r_ros.synthetic.scene import SyntheticConfig, SyntheticScene

LOG = logging.getLogger('spann3r_demo')

REPO = Path(__file__).resolve().parents[2]
DEFAULT_WEIGHTS = REPO / 'weights' / 'spann3r_tiny_demo.safetensors'
NODE_NAME = 'spann3r_node'
SCENE_NAME = 'demo_room'


@dataclass(frozen=True)
class SequenceSpec:
    """The rendered demo sequence (everything that changes its content).

    :param seed: scene layout and trajectory seed (not among the training seeds).
    :param frames: number of frames.
    :param fps: frame rate; at 5 Hz consecutive frames are about 3 degrees apart.
    :param width: image width.
    :param height: image height.
    """

    seed: int = 3000
    frames: int = 40
    fps: float = 5.0
    width: int = 320
    height: int = 240

    def synthetic(self) -> SyntheticConfig:
        """Return the generator's configuration."""
        return SyntheticConfig(width=self.width, height=self.height, num_frames=self.frames,
                               fps=self.fps, seed=self.seed)


def _say(message: str) -> None:
    print(f'[demo] {message}', flush=True)  # noqa: T201


def prepare_sequence(spec: SequenceSpec, folder: Path) -> tuple[Path, Path]:
    """Render the bag and the ground truth into ``folder`` unless they are there already.

    :return: ``(bag path, ScanNet scene folder)``.
    """
    folder = Path(folder)
    stamp_file = folder / 'sequence.json'
    wanted = json.dumps(spec.__dict__, sort_keys=True)
    bag, scene_dir = folder / f'{SCENE_NAME}_sqlite3', folder / 'scans' / SCENE_NAME
    if stamp_file.is_file() and stamp_file.read_text() == wanted and bag.is_dir() \
            and scene_dir.is_dir():
        return bag, scene_dir
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    scene = SyntheticScene(spec.synthetic())
    write_scannet(scene, folder, SCENE_NAME, color_format='png', progress=False)
    write_synthetic_bag(scene, bag, 'sqlite3', BagOptions(raw_color=True, compressed='none',
                                                          depth='16UC1'))
    stamp_file.write_text(wanted)
    return bag, scene_dir


def dds_environment() -> dict[str, str]:
    """Return an environment with a random localhost-only ``ROS_DOMAIN_ID`` (no other ROS)."""
    env = dict(os.environ)
    env['ROS_DOMAIN_ID'] = str(random.SystemRandom().randint(1, 100))
    env['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
    env['ROS_LOCALHOST_ONLY'] = '1'  # the Humble spelling of the same
    return env


@dataclass
class NodeProcess:
    """The node subprocess and the log file its output goes to."""

    proc: subprocess.Popen
    log: IO[str]


def start_node(checkpoint: Path, out: Path, env: dict[str, str], *, image_size: int,
               device: str, threads: int, min_confidence: float, log_path: Path,
               timeout: float) -> NodeProcess:
    """Start ``python -m spann3r_ros.node.node`` and wait until it reports ready.

    :raises RuntimeError: when it exits or does not get ready within ``timeout`` seconds.
    """
    params = {'checkpoint': str(checkpoint), 'device': device, 'image_size': image_size,
              'num_threads': threads, 'output_dir': str(out), 'map_filename': 'map.ply',
              'qos_reliability': 'reliable', 'min_confidence': float(min_confidence),
              'diagnostics_rate': 20.0, 'map_publish_rate': 0.0}
    cmd = [sys.executable, '-m', 'spann3r_ros.node.node', '--ros-args',
           '-r', f'__node:={NODE_NAME}']
    for name, value in params.items():
        cmd += ['-p', f'{name}:={value}']
    # Several torch threads fight over a busy CPU; one per process is the robust default.
    child_env = dict(env, PYTHONPATH=os.pathsep.join(
        p for p in (str(REPO), env.get('PYTHONPATH', '')) if p))
    if threads:
        child_env['OMP_NUM_THREADS'] = str(threads)
    log = open(log_path, 'w')  # the child writes it; stop_node closes it
    node = NodeProcess(subprocess.Popen(cmd, cwd=REPO, env=child_env, stdout=log,
                                        stderr=subprocess.STDOUT), log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log_path.read_text(errors='replace')
        if 'ready on' in text:
            return node
        if node.proc.poll() is not None:
            log.close()
            raise RuntimeError(f'the node exited with code {node.proc.returncode}:\n'
                               f'{text[-3000:]}')
        time.sleep(0.2)
    stop_node(node)
    raise RuntimeError(f'the node did not get ready in {timeout:.0f} s; see {log_path}')


def stop_node(node: NodeProcess, timeout: float = 30.0) -> Optional[int]:
    """Stop the node with SIGINT (as Ctrl-C does); kill it if it does not exit in time."""
    proc = node.proc
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            LOG.warning('the node ignored SIGINT for %.0f s; killing it', timeout)
            proc.kill()
            proc.wait()
    node.log.close()
    return proc.returncode


def run_demo(args: argparse.Namespace) -> dict:
    """Run every step; return the report (also written to ``args.out``)."""
    t0 = time.monotonic()
    out = Path(args.out).absolute()
    out.mkdir(parents=True, exist_ok=True)
    checkpoint = Path(args.checkpoint).absolute()
    if not checkpoint.is_file():
        raise ValueError(f'weights {checkpoint} do not exist; pass --checkpoint (a .safetensors '
                         'or official spann3r.pth)')
    spec = SequenceSpec(seed=args.seed, frames=args.frames)
    _say(f'rendering the synthetic sequence (seed {spec.seed}, {spec.frames} frames)')
    bag, scene_dir = prepare_sequence(spec, out / 'sequence')
    frames = read_bag_frames(bag, TOPIC_COLOR)
    stages = {'render_s': time.monotonic() - t0}
    env = dds_environment()
    _say(f'starting the node (ROS_DOMAIN_ID={env["ROS_DOMAIN_ID"]}, weights {checkpoint.name})')
    for stale in ('map.ply', 'map_trajectory.txt'):
        (out / stale).unlink(missing_ok=True)
    node_log = out / 'node.log'
    node = start_node(checkpoint, out, env, image_size=args.image_size, device=args.device,
                      threads=args.threads, min_confidence=args.min_confidence,
                      log_path=node_log, timeout=args.timeout)
    stages['node_start_s'] = time.monotonic() - t0 - sum(stages.values())
    try:
        os.environ.update({k: env[k] for k in ('ROS_DOMAIN_ID', 'ROS_AUTOMATIC_DISCOVERY_RANGE',
                                               'ROS_LOCALHOST_ONLY')})
        with ros_context():
            _say(f'playing {len(frames)} frames from {bag.name} into the node (lock-step)')
            playback = play_lockstep(frames, node_name=NODE_NAME, timeout=args.timeout,
                                     on_frame=_progress)
    finally:
        code = stop_node(node)
    if code not in (0, None):
        LOG.warning('the node exited with code %s; see %s', code, node_log)
    stages['playback_s'] = time.monotonic() - t0 - sum(stages.values())
    _say(f'the node answered {len(playback.outputs)} frames; map saved to {playback.saved_map}')
    _say('scoring against the ground truth (official protocol: alignment, ICP, Acc/Comp/NC)')
    report = score(out, scene_dir, len(frames), playback, args)
    stages['evaluation_s'] = time.monotonic() - t0 - sum(stages.values())
    report['run'].update(total_seconds=time.monotonic() - t0, stages=stages)
    write_reports(out, report)
    return report


def _progress(done: int, total: int) -> None:
    if done % 10 == 0 or done == total - 1:
        _say(f'  {done}/{total - 1} frames answered')


def score(out: Path, scene_dir: Path, n_frames: int, playback: Playback,
          args: argparse.Namespace) -> dict:
    """Evaluate the run, render the preview and assemble the report."""
    scene = ScanNetScene(scene_dir)
    frame_ids = scene.frame_ids[:n_frames]
    report, clouds, plot = score_playback(scene, frame_ids, playback, args.min_confidence,
                                     node_name=f'/{NODE_NAME}')
    preds, ev = plot['dense'], plot['evaluation']
    map_path = out / 'map.ply'
    cloud = read_ply(map_path)
    if len(cloud['xyz']) == 0:
        raise ValueError(f'{map_path} holds no point')
    report['map_points'] = int(len(cloud['xyz']))
    T0 = first_camera_pose(scene, frame_ids[0])
    map_world = map_points_to_gt_world(cloud['xyz'], ev, T0)
    middle = len(preds.frame_index) // 2
    view = load_views(scene, [frame_ids[int(preds.frame_index[middle])]],
                      size=preds.pts.shape[1], centre='image')[0]
    # The evaluated ground-truth points with their colours, in the order the evaluation used.
    gt_points, gt_rgb = clouds['ground_truth']
    m = report['metrics']
    title = (f'{scene.name}: Acc {m["acc"]:.3f} m, Comp {m["comp"]:.3f} m, NC {m["nc"]:.3f}'
             f' | {report["map_points"]} map points')
    preview = render_preview(out / 'preview.png', map_world, cloud.get('rgb'), gt_points,
                             gt_rgb, preds.conf[middle], view.rgb, title)
    report['run'] = {'checkpoint': str(Path(args.checkpoint).absolute()),
                     'image_size': args.image_size, 'device': args.device,
                     'threads': args.threads, 'min_confidence': args.min_confidence,
                     'seed': args.seed, 'frames': n_frames}
    report['files'] = {'map': str(map_path), 'report_json': str(out / 'report.json'),
                       'report_md': str(out / 'report.md'), 'preview': str(preview),
                       'node_log': str(out / 'node.log'),
                       'bag': str(out / 'sequence' / f'{SCENE_NAME}_sqlite3')}
    return report


def build_parser() -> argparse.ArgumentParser:
    """Command-line interface of the demo."""
    p = argparse.ArgumentParser(prog='python -m spann3r_ros.cli.demo',
                                description=__doc__.splitlines()[0])
    p.add_argument('--out', type=Path, default=Path('out/demo'), help='output folder')
    p.add_argument('--checkpoint', type=Path, default=DEFAULT_WEIGHTS,
                   help='weights the node loads (default: the shipped demo weights)')
    p.add_argument('--image-size', type=int, default=112,
                   help='model resolution (the demo weights were trained at 112)')
    p.add_argument('--frames', type=int, default=40, help='frames to render and play')
    p.add_argument('--seed', type=int, default=3000, help='seed of the synthetic room')
    p.add_argument('--device', default='auto', help='auto, cpu, cuda or cuda:N')
    p.add_argument('--threads', type=int, default=1,
                   help='torch CPU threads of the node (0 = torch default)')
    p.add_argument('--min-confidence', type=float, default=1.0,
                   help='node min_confidence (1.0 publishes every finite point)')
    p.add_argument('--timeout', type=float, default=180.0,
                   help='seconds to wait for the node to start and for each answer')
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point; exit code 0 on success, 2 on bad input, 1 when the pipeline fails."""
    return run_tool(build_parser(), _main, argv, failures=(RuntimeError, TimeoutError),
                    log_format='%(levelname)s %(name)s: %(message)s')


def _main(args: argparse.Namespace) -> int:
    if args.frames < 3:
        raise ValueError(f'--frames must be >= 3, got {args.frames}')
    report = run_demo(args)
    m, lat = report['metrics'], report.get('latency') or {}
    ate = report.get('ate') or {}
    _say(f'Acc {m["acc"]:.4f}  Comp {m["comp"]:.4f}  NC {m["nc"]:.4f}  '
         f'ATE {ate.get("rmse", float("nan")):.4f}  '
         f'{report["live"]["throughput_fps"] or 0:.2f} frames/s, '
         f'latency p50 {lat.get("p50_ms", float("nan")):.0f} ms')
    for name, path in report['files'].items():
        _say(f'{name:12s} {path}')
    _say(f'done in {report["run"]["total_seconds"]:.0f} s')
    return 0


if __name__ == '__main__':
    sys.exit(main())
