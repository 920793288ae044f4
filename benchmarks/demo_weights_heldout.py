"""Held-out quality of the demo weights against the same network untrained.

Renders synthetic test rooms whose seeds the training and validation data never used (once,
into ``--data``), streams each through :class:`StreamingSession` with the trained weights and
with the untrained initialisation (``torch.manual_seed(0)`` then ``Spann3R(TINY)``, exactly what
the trainer starts from with ``run.seed: 0``), and scores both with ``spann3r-eval``'s official
protocol: Acc / Comp / NC after median shift/scale alignment and ICP, and ATE after Sim(3).

Example (the numbers in weights/README.md)::

    .venv/bin/python benchmarks/demo_weights_heldout.py
        --weights weights/spann3r_tiny_demo.safetensors --out out/heldout.json
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
import sys
import time

import numpy as np
import torch

from spann3r_model.checkpoint import load_model
from spann3r_model.config import EngineConfig, TINY
from spann3r_model.data.scannet import ScanNetScene
from spann3r_model.evaluation.scoring import evaluate, run_session
from spann3r_model.session import StreamingSession
from spann3r_model.spann3r import Spann3R
from spann3r_ros.cli.synth import write_scannet
from spann3r_ros.synthetic.scene import SyntheticConfig, SyntheticScene

#: Test rooms: disjoint from the training (1000-1019) and validation (2000-2003) seeds.
TEST_SEEDS = (3000, 3001, 3002, 3003)
KEYS = ('acc', 'acc_med', 'comp', 'comp_med', 'nc', 'nc_med')


def render_test_scenes(root: Path, frames: int, fps: float) -> list[Path]:
    """Render the test rooms under ``root/scans`` (skipping those already there)."""
    dirs = []
    for seed in TEST_SEEDS:
        name = f'test_{seed}'
        folder = root / 'scans' / name
        if not folder.is_dir():
            scene = SyntheticScene(SyntheticConfig(width=320, height=240, num_frames=frames,
                                                   fps=fps, seed=seed))
            write_scannet(scene, root, name, color_format='png', progress=False)
        dirs.append(folder)
    return dirs


def score(model: Spann3R, scene_dir: Path, image_size: int) -> dict:
    """Stream one scene through ``model``; return metrics, ATE RMSE and the mean step time."""
    session = StreamingSession(model, engine_config=EngineConfig(device='cpu',
                                                                 image_size=image_size))
    scene = ScanNetScene(scene_dir)
    preds, latencies = run_session(session, scene, scene.frame_ids)
    report, _, _ = evaluate(scene, scene.frame_ids, preds, latencies)
    row = {k: float(report['metrics'][k]) for k in KEYS}
    ate = report.get('ate')
    row['ate_rmse'] = float(ate['rmse']) if ate else float('nan')
    row['posed_frames'] = int(ate['n']) if ate else 0
    row['step_ms'] = float(np.mean(latencies) * 1e3)
    return row


def _mean_finite(values: list[float]) -> float:
    """Mean of the finite values (NaN when there is none, e.g. ATE without any pose)."""
    finite = [v for v in values if np.isfinite(v)]
    return float(np.mean(finite)) if finite else float('nan')


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--weights', type=Path, help='trained .safetensors (for the trained model)')
    p.add_argument('--models', nargs='+', choices=('untrained', 'trained'),
                   default=['untrained', 'trained'], help='which models to score')
    p.add_argument('--data', type=Path, default=Path('/tmp/demo_data/test'))
    p.add_argument('--frames', type=int, default=40)
    p.add_argument('--fps', type=float, default=5.0)
    p.add_argument('--image-size', type=int, default=112)
    p.add_argument('--out', type=Path, help='write the results as JSON here')
    args = p.parse_args(argv)
    if 'trained' in args.models and args.weights is None:
        p.error('--weights is needed to score the trained model')
    logging.basicConfig(level=logging.ERROR)
    torch.set_num_threads(1)
    scenes = render_test_scenes(args.data, args.frames, args.fps)
    results: dict = {'weights': str(args.weights), 'image_size': args.image_size,
                     'frames': args.frames, 'fps': args.fps, 'seeds': list(TEST_SEEDS),
                     'models': {}}
    for name in args.models:
        if name == 'trained':
            model, _ = load_model(args.weights, device='cpu')
        else:
            torch.manual_seed(0)
            model = Spann3R(TINY)
        model.eval()
        rows = []
        for scene_dir in scenes:
            t0 = time.perf_counter()
            rows.append(score(model, scene_dir, args.image_size))
            print(f'{name:9s} {scene_dir.name}: ' + ', '.join(
                f'{k} {v:.4g}' for k, v in rows[-1].items()) +
                f' ({time.perf_counter() - t0:.0f} s)', flush=True)
        mean = {k: _mean_finite([r[k] for r in rows]) for k in rows[0]}
        results['models'][name] = {'per_scene': rows, 'mean': mean}
    print('\n| model | Acc | Acc med | Comp | Comp med | NC | NC med | ATE RMSE | posed |')
    print('|---|---|---|---|---|---|---|---|---|')
    for name, res in results['models'].items():
        m = res['mean']
        print(f'| {name} | ' + ' | '.join(f'{m[k]:.4f}' for k in KEYS + ('ate_rmse',)) +
              f' | {m["posed_frames"]:.1f} |')
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + '\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
