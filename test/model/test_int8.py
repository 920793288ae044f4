"""int8 dynamic quantisation runs and stays close to the float model."""

import torch
from torch import nn

from spann3r_model.cli.parity import run_parity
from spann3r_model.quantize import quantize_linear_int8


def test_quantized_copy_leaves_original_untouched(parity_model):
    q = quantize_linear_int8(parity_model)
    assert any(isinstance(m, torch.ao.nn.quantized.dynamic.Linear) for m in q.modules())
    assert not any(type(m) is nn.Linear for m in q.modules())
    assert any(type(m) is nn.Linear for m in parity_model.modules())
    x = torch.zeros(1, 3, 224, 224)
    with torch.no_grad():
        a, _ = parity_model.encode_image(x)
        b, _ = q.encode_image(x)
    assert 0 < (a - b).abs().max() < 0.5


def test_int8_error_on_parity_fixture(parity_dir):
    report = run_parity(parity_dir, precision='int8')
    pts_err = max(e[0] for e in report.frame_errors)
    conf_err = max(e[1] for e in report.frame_errors)
    # Measured: 0.14 (pts3d, values up to ~6) and 0.084 (conf); quantisation is really active.
    assert 1e-3 < pts_err < 0.25
    assert 1e-3 < conf_err < 0.15
    # The memory decisions (skips at steps 3 and 7, prune at step 9) are unchanged.
    for problems in report.bookkeeping:
        assert not any(p.startswith(('similarity skip', 'prune', 'tokens after'))
                       for p in problems), problems
