"""``spann3r-parity FIXTURE_DIR``: check our streaming model against an official-code fixture.

A fixture directory holds ``config.json`` (the reduced architecture and the memory limits used),
``weights.safetensors`` (official key names), ``inputs/`` (images of any size, fed in name
order), ``outputs.safetensors`` (``predNN.pts3d`` ``[1, H, W, 3]`` and ``predNN.conf``
``[1, H, W]``; a ``subsample`` metadata entry ``s`` means every s-th pixel per axis was kept),
``run_summary.json`` (per-step memory bookkeeping) and optionally ``trace.safetensors``
(``stepNN.mem_provenance_after``: the (frame, patch) of every memory slot after each step).

Frames go through :func:`spann3r_model.preprocess.preprocess` and one
:class:`~spann3r_model.session.StreamingSession`; the last frame comes from ``flush()``. The
command prints per-frame maximum errors and the bookkeeping comparison, and exits 0 only when
every output is within tolerance and every memory decision agrees.
"""

from __future__ import annotations

import argparse
from collections import Counter
from dataclasses import dataclass, field
import json
from pathlib import Path
import re
import sys
from typing import Any, Optional, Sequence

import numpy as np

from spann3r_model.config import DPTConfig, MemoryConfig, ModelConfig

IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg', '.bmp')
#: Tolerance on the reported similarity values (they decide against a threshold far away).
SIMILARITY_ATOL = 1e-3


@dataclass
class ParityReport:
    """Everything the command compares.

    :param frame_errors: per frame ``(max |d pts3d|, max |d conf|)``.
    :param bookkeeping: per step a list of mismatch descriptions (empty when it agrees).
    :param atol: absolute tolerance used.
    :param rtol: relative tolerance used.
    """

    frame_errors: list[tuple[float, float]] = field(default_factory=list)
    frame_ok: list[bool] = field(default_factory=list)
    bookkeeping: list[list[str]] = field(default_factory=list)
    atol: float = 1e-4
    rtol: float = 0.0

    @property
    def ok(self) -> bool:
        """True when all outputs and all bookkeeping agree."""
        return (bool(self.frame_ok) and all(self.frame_ok) and
                all(not m for m in self.bookkeeping))


def _get(d: dict, *path: str, default: Any = None) -> Any:
    for key in path:
        if not isinstance(d, dict) or key not in d:
            return default
        d = d[key]
    return d


def configs_from_fixture(config: dict) -> tuple[ModelConfig, MemoryConfig]:
    """Derive the architecture and memory settings from a fixture's ``config.json``.

    :param config: the parsed JSON.
    :return: ``(ModelConfig, MemoryConfig)``.
    :raises ValueError: when a required dimension is missing.
    """
    rc = config.get('reduced_config', {})
    dust = _get(config, 'model', 'dust3r', default={})
    heads = dust.get('heads', {})
    vmem = _get(config, 'model', 'spann3r', 'value_encoder', default={})

    def pick(*candidates: Any, name: str) -> Any:
        for c in candidates:
            if c is not None:
                return c
        raise ValueError(f'config.json does not give {name}')

    dec_depth = int(pick(rc.get('dec_depth'), dust.get('dec_depth'), name='dec_depth'))
    hooks = heads.get('hooks') or [0, dec_depth * 2 // 4, dec_depth * 3 // 4, dec_depth]
    pos_embed = str(pick(dust.get('pos_embed'), rc.get('dust3r_args'), 'RoPE100',
                         name='pos_embed'))
    rope = re.search(r'RoPE(\d+(?:\.\d+)?)', pos_embed)
    dpt = DPTConfig(
        layer_dims=tuple(int(x) for x in pick(rc.get('dpt_layer_dims'),
                                              heads.get('layer_dims'), name='DPT layer_dims')),
        feature_dim=int(pick(rc.get('dpt_feature_dim'), heads.get('feature_dim'),
                             name='DPT feature_dim')),
        last_dim=int(pick(rc.get('dpt_last_dim'), heads.get('last_dim'), name='DPT last_dim')),
        hooks=tuple(int(h) for h in hooks),
        num_channels=int(heads.get('num_channels', 4)))
    model = ModelConfig(
        patch_size=int(pick(rc.get('patch_size'), dust.get('patch_size'), 16,
                            name='patch_size')),
        rope_base=float(rope.group(1)) if rope else 100.0,
        enc_embed_dim=int(pick(rc.get('enc_embed_dim'), dust.get('enc_embed_dim'),
                               name='enc_embed_dim')),
        enc_depth=int(pick(rc.get('enc_depth'), dust.get('enc_depth'), name='enc_depth')),
        enc_num_heads=int(pick(rc.get('enc_num_heads'), dust.get('enc_num_heads'),
                               name='enc_num_heads')),
        dec_embed_dim=int(pick(rc.get('dec_embed_dim'), dust.get('dec_embed_dim'),
                               name='dec_embed_dim')),
        dec_depth=dec_depth,
        dec_num_heads=int(pick(rc.get('dec_num_heads'), dust.get('dec_num_heads'),
                               name='dec_num_heads')),
        mlp_ratio=float(pick(dust.get('enc_mlp_ratio'), 4.0, name='mlp_ratio')),
        value_encoder_depth=int(pick(rc.get('mem_enc_depth'), vmem.get('blocks'),
                                     name='mem_enc_depth')),
        value_encoder_num_heads=int(pick(rc.get('mem_enc_num_heads'), vmem.get('num_heads'),
                                         name='mem_enc_num_heads')),
        dpt=dpt)
    used = _get(config, 'spatial_memory', 'used', default={}) or {}
    mem_fields = {}
    for name in ('work_mem_size', 'long_mem_size', 'attn_thresh', 'sim_thresh'):
        value = used.get(name, rc.get(name))
        if value is not None:
            mem_fields[name] = value
    return model, MemoryConfig(**mem_fields)


def read_rgb(path: Path) -> np.ndarray:
    """Read an image as ``[H, W, 3]`` uint8 RGB the way the official data path does (OpenCV)."""
    import cv2

    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f'cannot read image {path}')
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def list_inputs(fixture: Path) -> list[Path]:
    """Input images of a fixture in feeding order."""
    files = sorted(p for p in (fixture / 'inputs').iterdir()
                   if p.suffix.lower() in IMAGE_SUFFIXES)
    if len(files) < 2:
        raise ValueError(f'{fixture / "inputs"} holds {len(files)} images; at least 2 needed')
    return files


def _compare_step(expected: dict, stats: Any, tokens_at_read: Optional[int],
                  frames: Counter, provenance: Optional[set], exp_provenance: Optional[set]
                  ) -> list[str]:
    problems = []

    def check(name: str, ours: Any, theirs: Any) -> None:
        if ours != theirs:
            problems.append(f'{name}: ours {ours}, official {theirs}')

    if 'mem_tokens_at_read' in expected:
        check('tokens at read', tokens_at_read, expected['mem_tokens_at_read'])
    if 'similarity_detected' in expected:
        check('similarity skip', stats.skipped, bool(expected['similarity_detected']))
    pruned = expected.get('pruned')
    check('prune', stats.pruned, None if not pruned else (pruned['before'], pruned['after']))
    if 'mem_tokens_after' in expected:
        check('tokens after', stats.tokens, expected['mem_tokens_after'])
    if 'wm_frames_after' in expected:
        check('wm counter', stats.working_frames, expected['wm_frames_after'])
    if 'lm_counter_after' in expected:
        check('lm counter', stats.long_term_tokens, expected['lm_counter_after'])
    if 'tokens_per_frame_after' in expected:
        theirs = {int(k): int(v) for k, v in expected['tokens_per_frame_after'].items()}
        check('tokens per frame', dict(sorted(frames.items())), dict(sorted(theirs.items())))
    sims = expected.get('similarity_mean_corr_vs_wm')
    if sims:
        official = max(sims)
        if stats.similarity is None or abs(stats.similarity - official) > SIMILARITY_ATOL:
            problems.append(f'similarity: ours {stats.similarity}, official {official:.6f}')
    if exp_provenance is not None and provenance != exp_provenance:
        problems.append(f'memory contents differ: {len(provenance - exp_provenance)} slots only '
                        f'ours, {len(exp_provenance - provenance)} only official')
    return problems


@dataclass
class Simulation:
    """Our side of a parity run.

    :param results: one refined result per frame (the last from ``flush()``).
    :param stats: per step the memory statistics after the write.
    :param tokens_at_read: per step the memory size when it was read (None at step 0).
    :param contents: per step the (frame, patch) of every memory slot after the write.
    """

    results: list[Any] = field(default_factory=list)
    stats: list[Any] = field(default_factory=list)
    tokens_at_read: list[Optional[int]] = field(default_factory=list)
    contents: list[list[tuple[int, int]]] = field(default_factory=list)


def simulate(fixture: Path, precision: str = 'fp32', image_size: int = 224) -> Simulation:
    """Run a fixture's inputs through preprocessing and one :class:`StreamingSession`.

    :param fixture: fixture directory (layout in the module docstring).
    :param precision: engine precision (``fp32``; ``int8`` to measure quantisation error).
    :param image_size: model resolution the inputs are preprocessed to.
    :return: our outputs and memory bookkeeping.
    """
    from safetensors.torch import load_file

    from spann3r_model.backends.process import apply_process_settings
    from spann3r_model.checkpoint import load_into
    from spann3r_model.config import EngineConfig
    from spann3r_model.session import StreamingSession
    from spann3r_model.spann3r import Spann3R

    fixture = Path(fixture)
    model_cfg, memory_cfg = configs_from_fixture(json.loads((fixture / 'config.json').read_text()))
    model = Spann3R(model_cfg)
    load_into(model, load_file(str(fixture / 'weights.safetensors')), 'weights.safetensors')
    engine = EngineConfig(device='cpu', precision=precision, image_size=image_size)
    apply_process_settings(engine)
    session = StreamingSession(model, memory_cfg, engine, provisional=False,
                               estimate_pose=False)
    sim = Simulation()
    tokens_at_read = None
    for index, path in enumerate(list_inputs(fixture)):
        out = session.step(read_rgb(path), stamp=float(index))
        if out.refined is None:
            continue
        mem = session.memory
        sim.results.append(out.refined)
        sim.stats.append(out.memory)
        sim.tokens_at_read.append(tokens_at_read)
        sim.contents.append([tuple(r) for r in mem.origin[0, :mem.num_tokens].tolist()])
        tokens_at_read = mem.num_tokens
    sim.results.append(session.flush())
    return sim


def compare(fixture: Path, sim: Simulation, atol: float = 1e-4, rtol: float = 0.0
            ) -> ParityReport:
    """Compare a :class:`Simulation` with a fixture's official outputs and bookkeeping.

    :param fixture: fixture directory.
    :param sim: our run of its inputs.
    :param atol: absolute tolerance on pointmaps and confidences.
    :param rtol: relative tolerance (``|d| <= atol + rtol * |official|``).
    :return: the comparison.
    """
    from safetensors import safe_open
    from safetensors.torch import load_file

    fixture = Path(fixture)
    summary = json.loads((fixture / 'run_summary.json').read_text())
    steps = {s['step']: s for s in summary.get('steps', [])}
    trace: dict[str, Any] = {}
    if (fixture / 'trace.safetensors').exists():
        trace = load_file(str(fixture / 'trace.safetensors'))
    report = ParityReport(atol=atol, rtol=rtol)
    for step, stats in enumerate(sim.stats):
        if step not in steps:
            report.bookkeeping.append([f'run_summary has no step {step}'])
            continue
        key = f'step{step:02d}.mem_provenance_after'
        official = ({tuple(r) for r in trace[key].tolist()} if key in trace else None)
        contents = sim.contents[step]
        report.bookkeeping.append(_compare_step(
            steps[step], stats, sim.tokens_at_read[step], Counter(f for f, _ in contents),
            set(contents), official))
    if len(steps) > len(sim.stats):
        report.bookkeeping.append([f'run_summary has {len(steps)} steps, we ran '
                                   f'{len(sim.stats)}'])

    expected = load_file(str(fixture / 'outputs.safetensors'))
    with safe_open(str(fixture / 'outputs.safetensors'), 'pt') as handle:
        sub = int((handle.metadata() or {}).get('subsample', 1))
    for j, res in enumerate(sim.results):
        errs, ok = [], True
        for name, ours in (('pts3d', res.pts3d), ('conf', res.conf)):
            key = f'pred{j:02d}.{name}'
            if key not in expected:
                raise ValueError(f'outputs.safetensors lacks {key}')
            theirs = expected[key][0].numpy()
            ours = ours[::sub, ::sub]
            if ours.shape != theirs.shape:
                raise ValueError(f'{key}: our shape {ours.shape}, official {theirs.shape}')
            diff = np.abs(ours - theirs)
            errs.append(float(diff.max()))
            ok &= bool(np.all(diff <= atol + rtol * np.abs(theirs)))
        report.frame_errors.append((errs[0], errs[1]))
        report.frame_ok.append(ok)
    extra = sorted(k for k in expected if int(k[4:6]) >= len(sim.results))
    if extra:
        report.bookkeeping.append([f'official outputs for more frames: {extra[:4]}'])
    return report


def run_parity(fixture: Path, atol: float = 1e-4, rtol: float = 0.0,
               precision: str = 'fp32', image_size: int = 224) -> ParityReport:
    """Simulate a fixture and compare (see :func:`simulate` and :func:`compare`)."""
    return compare(fixture, simulate(fixture, precision, image_size), atol, rtol)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``spann3r-parity``."""
    parser = argparse.ArgumentParser(prog='spann3r-parity', description=__doc__.split('\n')[0])
    parser.add_argument('fixture', type=Path, help='fixture directory')
    parser.add_argument('--atol', type=float, default=1e-4, help='absolute tolerance (1e-4)')
    parser.add_argument('--rtol', type=float, default=0.0, help='relative tolerance (0)')
    parser.add_argument('--precision', default='fp32', choices=('fp32', 'int8'),
                        help='engine precision; int8 reports the quantisation error')
    parser.add_argument('--image-size', type=int, default=224, help='model resolution (224)')
    args = parser.parse_args(argv)
    try:
        report = run_parity(args.fixture, args.atol, args.rtol, args.precision, args.image_size)
    except (OSError, ValueError, KeyError) as exc:
        print(f'spann3r-parity: {exc}', file=sys.stderr)
        return 2
    print(f'{"frame":>5}  {"max|d pts3d|":>12}  {"max|d conf|":>12}  ok')
    for j, ((ep, ec), ok) in enumerate(zip(report.frame_errors, report.frame_ok)):
        print(f'{j:5d}  {ep:12.3e}  {ec:12.3e}  {"yes" if ok else "NO"}')
    print('memory bookkeeping:')
    for step, problems in enumerate(report.bookkeeping):
        print(f'  step {step:2d}: ' + ('agrees' if not problems else '; '.join(problems)))
    worst = max((max(e) for e in report.frame_errors), default=float('nan'))
    verdict = 'PASS' if report.ok else 'FAIL'
    print(f'{verdict}: max error {worst:.3e} (atol {args.atol:g}, rtol {args.rtol:g})')
    return 0 if report.ok else 1


if __name__ == '__main__':
    sys.exit(main())
