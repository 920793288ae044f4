"""Write an evaluation's report: ``report.json``, ``report.md``, PNG plots and PLY clouds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import numpy as np

from spann3r_model.io.atomic import atomic_write
from spann3r_model.io.ply import write_ply


def _plt():
    # Agg: reports are written on headless machines; imported lazily to keep start-up fast.
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path: Path) -> None:
    tmp = path.with_name('.' + path.name + '.tmp.png')
    fig.savefig(tmp, dpi=100, bbox_inches='tight')
    tmp.replace(path)


def plot_trajectory(path: Path, gt: np.ndarray, est: Optional[np.ndarray]) -> None:
    """Top view of ``[N, 3]`` ground-truth and aligned estimated camera centres.

    The view plane is spanned by the two main axes of the ground-truth positions, so the plot
    is a top view whatever the world's up axis is.
    """
    plt = _plt()
    centre = gt.mean(axis=0)
    _, _, Vt = np.linalg.svd(gt - centre) if len(gt) > 1 else (None, None, np.eye(3))
    axes = Vt[:2]
    fig, ax = plt.subplots(figsize=(5, 5))
    g = (gt - centre) @ axes.T
    ax.plot(g[:, 0], g[:, 1], 'k.-', label='ground truth')
    if est is not None:
        e = (est - centre) @ axes.T
        ax.plot(e[:, 0], e[:, 1], 'r.-', label='estimated (Sim(3)-aligned)')
    ax.set_aspect('equal', adjustable='datalim')
    ax.set_xlabel('m')
    ax.legend()
    ax.set_title('camera trajectory, top view')
    _save(fig, path)
    plt.close(fig)


def plot_latency(path: Path, seconds: np.ndarray) -> None:
    """Per-frame latency in milliseconds."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.plot(np.arange(len(seconds)), np.asarray(seconds) * 1e3, '.-')
    ax.set_xlabel('frame')
    ax.set_ylabel('latency [ms]')
    ax.set_title('per-frame latency')
    _save(fig, path)
    plt.close(fig)


def plot_errors(path: Path, acc_dist: np.ndarray, comp_dist: np.ndarray) -> None:
    """Histograms of the accuracy and completion nearest-neighbour distances."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3))
    top = float(np.percentile(np.concatenate([acc_dist, comp_dist]), 99)) or 1e-6
    bins = np.linspace(0, top, 60)
    ax.hist(acc_dist, bins=bins, alpha=0.6, label='accuracy (pred -> GT)')
    ax.hist(comp_dist, bins=bins, alpha=0.6, label='completion (GT -> pred)')
    ax.set_xlabel('distance [m]')
    ax.set_ylabel('points')
    ax.legend()
    ax.set_title('nearest-neighbour distances (99th percentile range)')
    _save(fig, path)
    plt.close(fig)


def _fmt(v: object) -> str:
    return f'{v:.6g}' if isinstance(v, float) else str(v)


def markdown(report: dict) -> str:
    """Render a short human-readable summary of ``report``."""
    lines = [f'# Evaluation of {report.get("sequence", "?")}', '',
             f'Frames evaluated: {report.get("n_frames")}; source: {report.get("source")}', '']
    m = report.get('metrics')
    if m:
        lines += ['| metric | mean | median |', '|---|---|---|']
        for key, label in (('acc', 'Acc'), ('comp', 'Comp'), ('nc1', 'NC1'), ('nc2', 'NC2'),
                           ('nc', 'NC')):
            lines.append(f'| {label} | {_fmt(m[key])} | {_fmt(m[key + "_med"])} |')
        lines += [f'| chamfer | {_fmt(m["chamfer"])} | |', '']
    ate = report.get('ate')
    if ate:
        lines += [f'ATE (Sim(3)-aligned, {ate["n"]} poses): RMSE {_fmt(ate["rmse"])} m, '
                  f'median {_fmt(ate["median"])} m, scale {_fmt(ate["scale"])}', '']
    lat = report.get('latency')
    if lat:
        lines += [f'Throughput {_fmt(lat["fps"])} FPS; latency p50 {_fmt(lat["p50_ms"])} ms, '
                  f'p90 {_fmt(lat["p90_ms"])} ms, p99 {_fmt(lat["p99_ms"])} ms, max '
                  f'{_fmt(lat["max_ms"])} ms', '']
    icp = report.get('icp')
    if icp:
        lines += [f'ICP: fitness {_fmt(icp["fitness"])}, inlier RMSE {_fmt(icp["inlier_rmse"])}, '
                  f'{icp["iterations"]} updates', '']
    return '\n'.join(lines)


def json_ready(value: object) -> object:
    """Return a strict-JSON copy: NumPy values to Python, non-finite floats to None."""
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_ready(value.tolist())
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return value if np.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def write_report(out: Path, report: dict, clouds: Optional[dict] = None,
                 text: Optional[str] = None) -> None:
    """Write ``report.json`` and ``report.md`` (and PLYs named after ``clouds`` keys).

    :param clouds: ``{name: (xyz [N, 3], rgb [N, 3] uint8 or None)}``.
    :param text: the content of ``report.md``; :func:`markdown` of ``report`` when None.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / 'report.json', (json.dumps(json_ready(report), indent=1) + '\n').encode())
    atomic_write(out / 'report.md', (markdown(report) if text is None else text).encode())
    for name, (xyz, rgb) in (clouds or {}).items():
        write_ply(out / f'{name}.ply', np.asarray(xyz, np.float32), rgb)
