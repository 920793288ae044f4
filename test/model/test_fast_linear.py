"""The oneDNN inference path of the linear layers agrees with ``nn.Linear``."""

from __future__ import annotations

import pytest
from timm.layers import Mlp
import torch
from torch import nn
import torch.nn.functional as F

from spann3r_model.backends import onednn_linear as linear_module
from spann3r_model.backends.int8 import quantize_linear_int8
from spann3r_model.backends.onednn_linear import _use_onednn, linear, onednn_linear_available
from spann3r_model.layers.blocks import run_mlp

# The oneDNN path runs where torch has it; the fallback (torch's own layers, nothing packed)
# runs everywhere, forced off where oneDNN is present.
ONEDNN_CASES = ([pytest.param(True, id='onednn')] if onednn_linear_available() else []) + [
    pytest.param(False, id='fallback')]


@pytest.fixture(params=ONEDNN_CASES)
def onednn(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    if not request.param:
        monkeypatch.setattr(linear_module, 'onednn_linear_available', lambda: False)
    return request.param


def _layer(n_in: int = 64, n_out: int = 96, bias: bool = True) -> nn.Linear:
    torch.manual_seed(0)
    return nn.Linear(n_in, n_out, bias=bias)


def test_matches_linear_and_gelu_in_float64_reference():
    x = torch.randn(2, 37, 64)
    for bias in (True, False):
        layer = _layer(bias=bias)
        ref = F.linear(x.double(), layer.weight.double(),
                       None if layer.bias is None else layer.bias.double())
        with torch.no_grad():
            out = linear(layer, x)
            fused = linear(layer, x, gelu=True)
        assert out.shape == (2, 37, 96) and out.dtype == torch.float32
        assert torch.allclose(out.double(), ref, atol=1e-5, rtol=1e-5)
        assert torch.allclose(fused.double(), F.gelu(ref), atol=1e-5, rtol=1e-5)
        # gelu really was applied: negative pre-activations shrink towards zero
        assert (fused < out - 1e-3).any()


def test_non_contiguous_input():
    layer = _layer()
    x = torch.randn(37, 2, 64).transpose(0, 1)
    with torch.no_grad():
        assert torch.allclose(linear(layer, x), layer(x), atol=1e-5)


def test_fast_path_taken_in_inference_only():
    layer = _layer()
    x = torch.randn(1, 5, 64)
    # autograd needs the differentiable torch layer
    assert not _use_onednn(layer, x)
    out = linear(layer, x, gelu=True)
    out.sum().backward()
    assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0
    with torch.no_grad():
        assert _use_onednn(layer, x) == onednn_linear_available()
        assert not _use_onednn(layer, x.double())


def test_mlp_fast_path_equals_module():
    torch.manual_seed(0)
    mlp = Mlp(32, 128).eval()
    x = torch.randn(1, 11, 32)
    with torch.no_grad():
        assert torch.allclose(run_mlp(mlp, x), mlp(x), atol=1e-5)
    mlp.train()
    # training keeps the module's own forward (dropout would live there)
    assert torch.equal(run_mlp(mlp, x), mlp(x))


def test_quantized_layer_is_called_as_is():
    model = nn.Sequential(_layer()).eval()
    q = quantize_linear_int8(model)[0]
    assert type(q) is not nn.Linear
    x = torch.randn(1, 7, 64)
    with torch.no_grad():
        assert torch.equal(linear(q, x), q(x))
        assert torch.equal(linear(q, x, gelu=True), F.gelu(q(x)))


def test_pointwise_conv_as_linear_matches_conv():
    from spann3r_model.layers.dpt_head import apply_conv
    torch.manual_seed(0)
    conv = nn.Conv2d(24, 40, 1)
    x = torch.randn(2, 24, 9, 13)
    ref = F.conv2d(x.double(), conv.weight.double(), conv.bias.double())
    with torch.no_grad():
        for inp in (x, x.contiguous(memory_format=torch.channels_last)):
            out = apply_conv(conv, inp)
            assert out.shape == (2, 40, 9, 13)
            assert torch.allclose(out.double(), ref, atol=1e-5)
        # a 3x3 convolution is left to torch
        conv3 = nn.Conv2d(24, 8, 3, padding=1)
        assert torch.equal(apply_conv(conv3, x), conv3(x))


def test_packed_weights_follow_the_parameter(onednn):
    import gc

    from spann3r_model.backends.onednn_linear import pack_onednn_weights
    from spann3r_model.backends.packed import packed_bytes
    torch.manual_seed(0)
    layer = _layer().eval()
    x = torch.randn(1, 7, 64)
    gc.collect()  # packed copies of layers that earlier tests left to the collector go now
    before = packed_bytes()
    with torch.no_grad():
        assert _use_onednn(layer, x) == onednn
        plain = linear(layer, x)
        assert torch.allclose(plain, layer(x), atol=1e-5)
        assert pack_onednn_weights([layer.weight]) == int(onednn)
        packed = linear(layer, x)
        assert torch.allclose(packed, plain, atol=1e-6)
        # only the oneDNN path keeps a packed copy
        assert packed_bytes() == before + onednn * layer.weight.numel() * 4
        # an in-place change of the weight (as load_state_dict makes) is picked up
        layer.weight.mul_(-1.0)
        assert torch.allclose(linear(layer, x), -(plain - layer.bias) + layer.bias, atol=1e-5)
    del layer
    gc.collect()
    assert packed_bytes() == before


def test_head_with_packed_weights_matches_plain_head(onednn):
    from spann3r_model.backends.onednn_linear import pack_onednn_weights
    from spann3r_model.backends.packed import packed_bytes
    from spann3r_model.config import ModelConfig
    from spann3r_model.layers.dpt_head import DPTHead
    cfg = ModelConfig.preset('tiny')
    torch.manual_seed(0)
    d = cfg.dpt
    head = DPTHead((cfg.enc_embed_dim,) + (cfg.dec_embed_dim,) * 3, d.layer_dims, d.feature_dim,
                   d.last_dim, d.num_channels, cfg.patch_size).eval()
    size = 64
    n = (size // cfg.patch_size) ** 2
    tokens = [torch.randn(1, n, c) for c in (cfg.enc_embed_dim,) + (cfg.dec_embed_dim,) * 3]
    with torch.no_grad():
        plain = head(tokens, (size, size))
        registered = pack_onednn_weights(
            m.weight for m in head.modules() if type(m) in (nn.Linear, nn.Conv2d))
        before = packed_bytes()
        fast = head(tokens, (size, size))
    for key in ('pts3d', 'conf'):
        assert torch.allclose(fast[key], plain[key], rtol=1e-4, atol=1e-5), key
    assert (registered > 0) == onednn and (packed_bytes() > before) == onednn


def test_residual_sum_is_fused_or_added_alike():
    layer = _layer(64, 64)
    x = torch.randn(1, 9, 64)
    res_t = torch.randn(1, 64, 9)
    res = res_t.transpose(1, 2).contiguous()
    ref = F.linear(x.double(), layer.weight.double(), layer.bias.double()) + res.double()
    with torch.no_grad():
        fused = linear(layer, x, residual=res)
        strided = linear(layer, x, residual=res_t.transpose(1, 2))  # not fusable: added after
        quant = quantize_linear_int8(nn.Sequential(layer).eval())[0]
        q = linear(quant, x, residual=res)
    for out in (fused, strided):
        assert torch.allclose(out.double(), ref, atol=1e-5)
    assert torch.equal(q, res + quant(x))
    with pytest.raises(ValueError, match='gelu and residual'):
        linear(layer, x, gelu=True, residual=res)


def test_packed_convolution_keeps_a_copy_per_input_shape():
    from spann3r_model.backends import packed
    from spann3r_model.layers.dpt_head import apply_conv
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 8, 3, padding=1).eval()
    packed.register([conv.weight])
    made = []

    def make():
        made.append(1)
        return conv.weight.detach().clone()

    for _ in range(3):  # two input shapes alternating: each packed once
        assert packed.packed_copy(conv.weight, (1, 8, 4, 6), make) is not None
        assert packed.packed_copy(conv.weight, (1, 8, 6, 4), make) is not None
    assert len(made) == 2
    with torch.no_grad():
        conv.weight.add_(1.0)  # a modified weight is packed again
    packed.packed_copy(conv.weight, (1, 8, 4, 6), make)
    assert len(made) == 3
    for shape in [(1, 8, 5 + i, 7) for i in range(packed.MAX_SPECS + 2)]:
        packed.packed_copy(conv.weight, shape, make)
    assert len(packed._REGISTRY[id(conv.weight)].packed) == packed.MAX_SPECS  # bounded
    x = torch.randn(1, 8, 6, 4).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():  # the real packed path (oneDNN) agrees with the module
        assert torch.allclose(apply_conv(conv, x, relu=True), F.relu(conv(x)), atol=1e-5)
