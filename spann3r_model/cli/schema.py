"""``spann3r-schema PRESET``: print the state_dict schema of a model preset as JSON.

The model is built on the ``meta`` device, so even the released preset costs no memory. The
output lists every state_dict key (aliased DPT keys under both names) with its shape and dtype,
in state_dict order, plus the number of unique parameters::

    {"preset": "released", "num_parameters_unique": 658691976,
     "keys": [{"key": "dust3r.mask_token", "shape": [1, 1, 768], "dtype": "float32"}, ...]}
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Optional, Sequence

import torch

from spann3r_model.config import ModelConfig, PRESETS
from spann3r_model.io.atomic import atomic_write_text


def preset_schema(name: str) -> dict[str, Any]:
    """Return the schema of preset ``name``.

    :raises ValueError: for an unknown preset.
    """
    # Imported here so that ``--help`` and argument errors do not pay for the network import.
    from spann3r_model.spann3r import Spann3R

    model = Spann3R(ModelConfig.preset(name), device='meta')
    keys = [{'key': key, 'shape': list(tensor.shape),
             'dtype': str(tensor.dtype).replace('torch.', '')}
            for key, tensor in model.state_dict(keep_vars=True).items()]
    # named_parameters() yields each shared parameter once.
    unique = sum(p.numel() for _, p in model.named_parameters())
    return {'preset': name, 'num_parameters_unique': unique, 'keys': keys}


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``spann3r-schema``."""
    parser = argparse.ArgumentParser(prog='spann3r-schema', description=__doc__.splitlines()[0])
    parser.add_argument('preset', choices=sorted(PRESETS), help='model preset')
    parser.add_argument('--output', '-o', help='write the JSON to this file instead of stdout')
    args = parser.parse_args(argv)
    with torch.no_grad():
        schema = preset_schema(args.preset)
    text = json.dumps(schema, indent=1) + '\n'
    if args.output:
        atomic_write_text(args.output, text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == '__main__':
    sys.exit(main())
