"""End to end: the bundled demo weights and the node's online metric alignment on a robot bag.

``spann3r-synth`` writes one synthetic room as a robot would record it (``--odometry`` with
noise and drift, aligned depth with noise and invalid pixels, the ground truth beside it), and
``spann3r-eval --metric`` plays it through the node's inputs, worker and alignment for each
route, as a user runs it. Figures per route: the final state, outputs held back, the scale
error against the Sim(3) oracle of the camera path and against the scale of the reconstructed
geometry (camera-to-point distances), and Acc / Comp / ATE in metres with no alignment of the
evaluation's own; beside them, the same model output scored the old way (``metric_source
none`` with the official median scale / ICP protocol and ATE after Sim(3): every route
publishes the same reconstruction, so this block is one figure). ``odometry, gates relaxed``
shows what the acceptance gates refuse (residual, scale uncertainty, rotation residual).

Accuracy only (no timing targets). Each route's ``metric_map.png`` is copied beside the JSON
report. Example::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/metric_end_to_end.py
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
import shutil
import tempfile
import time
from typing import Any, Optional, Sequence

from spann3r_ros.cli.eval import main as eval_main
from spann3r_ros.cli.synth import main as synth_main

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / 'weights' / 'spann3r_tiny_demo.safetensors'
OUTPUT = ROOT / 'benchmarks' / 'results' / 'metric_end_to_end.json'
RELAXED = ['alignment_max_residual=1.0', 'alignment_max_scale_error=1.0',
           'alignment_max_rotation_residual=180']
#: ``(name, --metric, --param values)``.
ROUTES = (('odometry', 'odometry', []), ('depth', 'depth', []), ('both', 'both', []),
          ('odometry, gates relaxed', 'odometry', RELAXED))


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    """Parse the command line (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--weights', type=Path, default=WEIGHTS)
    p.add_argument('--image-size', type=int, default=112, help='the weights run at 112 px')
    p.add_argument('--seed', type=int, default=3000, help='room (3000: a held-out room)')
    p.add_argument('--frames', type=int, default=40)
    p.add_argument('--fps', type=float, default=5.0)
    p.add_argument('--odometry-noise', type=float, default=0.01, help='metres per axis')
    p.add_argument('--odometry-drift', type=float, default=0.01)
    p.add_argument('--depth-noise', type=float, default=0.02)
    p.add_argument('--depth-invalid', type=float, default=0.1)
    p.add_argument('--output', type=Path, default=OUTPUT, help='JSON report')
    p.add_argument('--figures', type=Path, help='folder for each route metric_map.png')
    return p.parse_args(argv)


def _route_figures(report: dict[str, Any]) -> dict[str, Any]:
    a, m = report['alignment'], report.get('metric') or {}
    ate = m.get('ate') or {}
    return {'final_state': a['final_state'], 'frames_until_aligned': a['frames_until_aligned'],
            'held_fraction': a['held_fraction'], 'scale': a['scale'],
            'oracle_scale': a['oracle_scale'], 'scale_error': a['scale_error'],
            'geometry_scale': a['geometry_scale'],
            'scale_error_geometry': a['scale_error_geometry'],
            'acc_m': m.get('acc'), 'comp_m': m.get('comp'), 'nc': m.get('nc'),
            'ate_m': ate.get('rmse'), 'frame_id': a['frame_id'],
            'detail': a['status'].get('metric_detail')}


def _sim3_figures(report: dict[str, Any]) -> dict[str, Any]:
    s = report['sim3']
    return {'acc_m': s['metrics']['acc'], 'comp_m': s['metrics']['comp'],
            'nc': s['metrics']['nc'], 'ate_m': (s.get('ate') or {}).get('rmse')}


def _cell(value: Any, fmt: str = '.3f') -> str:
    return 'n/a' if value is None else format(value, fmt)


def _pct(value: Optional[float]) -> str:
    return 'n/a' if value is None else f'{100 * value:+.1f}%'


def main(argv: Optional[Sequence[str]] = None) -> dict[str, Any]:
    """Write the bag, run every route, print the table, write the JSON; return the report."""
    args = parse_args(argv)
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix='metric-e2e-') as work:
        work = Path(work)
        synth = ['--out', str(work), '--name', 'room', '--seed', str(args.seed),
                 '--frames', str(args.frames), '--fps', str(args.fps), '--bag', 'sqlite3',
                 '--odometry', '--odometry-noise', str(args.odometry_noise),
                 '--odometry-drift', str(args.odometry_drift),
                 '--depth-noise', str(args.depth_noise),
                 '--depth-invalid', str(args.depth_invalid)]
        if synth_main(synth) != 0:
            raise SystemExit('spann3r-synth failed')
        bag = work / 'room_sqlite3'
        routes, sim3 = {}, None
        for k, (name, source, params) in enumerate(ROUTES):
            out = work / f'route{k}'
            argv_eval = [str(bag), '--checkpoint', str(args.weights), '--image-size',
                         str(args.image_size), '--device', 'cpu', '--metric', source,
                         '--out', str(out)]
            for param in params:
                argv_eval += ['--param', param]
            if eval_main(argv_eval) != 0:
                raise SystemExit(f'spann3r-eval --metric {source} failed')
            report = json.loads((out / 'report.json').read_text())
            routes[name] = _route_figures(report)
            sim3 = sim3 or _sim3_figures(report)
            if args.figures is not None and (out / 'metric_map.png').exists():
                args.figures.mkdir(parents=True, exist_ok=True)
                target = args.figures / f'metric_map_{name.split(",")[0]}' \
                    f'{"_relaxed" if params else ""}.png'
                shutil.copyfile(out / 'metric_map.png', target)
                routes[name]['figure'] = str(target.relative_to(ROOT)) \
                    if target.is_relative_to(ROOT) else str(target)
    print(f'\nroom {args.seed}, {args.frames} frames at {args.fps:g} fps, demo weights at '
          f'{args.image_size} px; odometry noise {args.odometry_noise} m, drift '
          f'{args.odometry_drift:.0%}, depth noise {args.depth_noise:.0%}, invalid '
          f'{args.depth_invalid:.0%}')
    print('| route | final state | held | scale error (trajectory oracle) | scale error '
          '(geometry) | Acc (m) | Comp (m) | ATE (m) |')
    print('|---|---|---|---|---|---|---|---|')
    for name, f in routes.items():
        held = 'n/a' if f['held_fraction'] is None else f'{f["held_fraction"]:.0%}'
        print(f'| {name} | {f["final_state"]} | {held} | {_pct(f["scale_error"])} | '
              f'{_pct(f["scale_error_geometry"])} | {_cell(f["acc_m"])} | '
              f'{_cell(f["comp_m"])} | {_cell(f["ate_m"])} |')
    print(f'| none, Sim(3)-aligned (official protocol) | | | | | {_cell(sim3["acc_m"])} | '
          f'{_cell(sim3["comp_m"])} | {_cell(sim3["ate_m"])} |')
    elapsed = time.perf_counter() - began
    print(f'{elapsed:.0f} s')
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                if k not in ('output', 'figures')}
    settings['weights'] = str(Path(settings['weights']).name)
    report = {'settings': settings, 'routes': routes, 'none_sim3': sim3, 'runtime_s': elapsed}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2, allow_nan=False) + '\n')
    return report


if __name__ == '__main__':
    main()
