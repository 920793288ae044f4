"""Export trained weights as the shipped demo file: safetensors with float16 storage.

The tiny preset has about 8 million parameters: 32 MB in float32, 16 MB in float16, under the
20 MB the repository allows. The loader casts them back to the model's float32 parameters;
the pointmaps then differ from the float32 weights' by about 1e-3 relative.

Usage::

    .venv/bin/python tools/export_demo_weights.py /tmp/demo_train/model.safetensors \
        weights/spann3r_tiny_demo.safetensors

The source may also be a trainer checkpoint (``checkpoint-last.pt``) of an unfinished run.
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path
import sys

from spann3r_model.checkpoint import load_model
from spann3r_model.checkpoint_safetensors import save_safetensors
from spann3r_model.config import ModelConfig
from spann3r_model.spann3r import Spann3R

MAX_BYTES = 20 * 1024 * 1024


def _load(source: Path) -> tuple[Spann3R, ModelConfig, dict[str, str]]:
    if source.suffix == '.pt':
        from training.state import load_training_state
        state = load_training_state(source)
        config = ModelConfig.from_dict(state['model_config'])
        model = Spann3R(config)
        model.load_state_dict(state['model'], strict=True)
        meta = {'global_step': str(state['global_step']), 'epoch': str(state['epoch'])}
        return model, config, meta
    model, config = load_model(source, device='cpu')
    return model, config, {}


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('source', type=Path, help='model.safetensors or checkpoint-*.pt')
    p.add_argument('out', type=Path, help='output .safetensors')
    args = p.parse_args(argv)
    if not args.source.is_file():
        print(f'error: {args.source} does not exist', file=sys.stderr)
        return 2
    model, config, meta = _load(args.source)
    meta.update(storage_dtype='float16', source=args.source.name)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_safetensors(model.half(), config, args.out, metadata=meta)
    size = args.out.stat().st_size
    if size > MAX_BYTES:
        args.out.unlink()
        print(f'error: {size / 1e6:.1f} MB exceeds the {MAX_BYTES / 1e6:.1f} MB limit',
              file=sys.stderr)
        return 1
    digest = hashlib.sha256(args.out.read_bytes()).hexdigest()
    print(f'{args.out}: {size / 1e6:.2f} MB, sha256 {digest}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
