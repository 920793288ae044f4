"""The reduced-precision CPU mode runs and stays close to the float model."""

import pytest
import torch
from torch import nn

from spann3r_model.backends import int8 as quantize
from spann3r_model.backends.int8 import Bf16Conv2d, quantize_for_cpu, quantize_linear_int8
from spann3r_model.cli.parity import run_parity


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


def test_bf16_heads_replace_every_3x3_head_convolution_and_keep_aliases(parity_model):
    q = quantize_for_cpu(parity_model, head_bf16=True)
    for which in (1, 2):
        head = getattr(q.dust3r, f'downstream_head{which}').dpt
        assert not any(type(m) is nn.Conv2d and m.kernel_size == (3, 3) for m in head.modules())
        for i in range(4):
            layer = getattr(head.scratch, f'layer{i + 1}_rn')
            assert type(layer) is Bf16Conv2d and layer is head.scratch.layer_rn[i]
    # the encoder's patch embedding is not a head convolution and stays float32
    assert type(q.dust3r.patch_embed.proj) is nn.Conv2d
    assert any(type(m) is nn.Conv2d and m.kernel_size == (3, 3)
               for m in parity_model.dust3r.downstream_head1.modules())
    plain = quantize_for_cpu(parity_model, head_bf16=False)
    assert not any(type(m) is Bf16Conv2d for m in plain.modules())


def test_bf16_convolution_is_close_to_float32():
    torch.manual_seed(0)
    conv = nn.Conv2d(16, 24, 3, padding=1, stride=2)
    x = torch.randn(2, 16, 15, 17)
    with torch.no_grad():
        ref = conv(x)
        out = Bf16Conv2d(conv)(x)
    assert out.dtype == torch.float32 and out.shape == ref.shape
    err = ((out - ref).abs().max() / ref.abs().max()).item()
    assert 1e-5 < err < 2e-2  # rounded to bfloat16, so not exact, but close


@pytest.mark.parametrize('head_bf16', [False, True])
def test_int8_error_on_parity_fixture(parity_dir, monkeypatch, head_bf16):
    monkeypatch.setattr(quantize, 'native_bf16', lambda: head_bf16)
    report = run_parity(parity_dir, precision='int8')
    pts_err = max(e[0] for e in report.frame_errors)
    conf_err = max(e[1] for e in report.frame_errors)
    # Measured: 0.15 / 0.10 (linear layers only) and 0.18 / 0.12 (with bfloat16 heads) for
    # pointmap values up to ~6; quantisation is really active.
    assert 1e-3 < pts_err < 0.25
    assert 1e-3 < conf_err < 0.15
    # The memory decisions (skips at steps 3 and 7, prune at step 9) are unchanged.
    for problems in report.bookkeeping:
        assert not any(p.startswith(('similarity skip', 'prune', 'tokens after'))
                       for p in problems), problems
