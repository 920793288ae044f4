"""Streaming Spann3R at the released widths reproduces the official code (fixture B).

The weights are not stored: :mod:`released_weights` draws them, and their SHA-256 must match the
one the reference was made with. See ``test/data/model/parity_released/README.md``.
"""

import hashlib
from pathlib import Path

import numpy as np
import pytest
from released_weights import fingerprint, generate, generate_for, schema, std_of, tensor_for
from safetensors import safe_open
import torch

from spann3r_model.checkpoint import load_into
from spann3r_model.cli.parity import list_inputs, read_rgb
from spann3r_model.config import EngineConfig, MemoryConfig, RELEASED
from spann3r_model.preprocess import preprocess
from spann3r_model.session import StreamingSession
from spann3r_model.spann3r import Spann3R

FIXTURE = Path(__file__).parents[1] / 'data' / 'model' / 'parity_released'
#: |ours - official| <= ATOL + RTOL * |official| on every pointmap and confidence value; the
#: README gives the measured errors this bounds.
ATOL = 1e-4
RTOL = 1e-4


def _reference() -> tuple[dict[str, np.ndarray], dict[str, str]]:
    with safe_open(str(FIXTURE / 'outputs.safetensors'), 'np') as handle:
        return {k: handle.get_tensor(k) for k in handle.keys()}, dict(handle.metadata())


def run_released(image_size: int) -> tuple[list[np.ndarray], dict[str, np.ndarray], str]:
    """Run the fixture's frames through the released architecture with the generated weights.

    :return: the preprocessed images, our outputs keyed like the fixture's, and the weights'
        fingerprint.
    """
    weights = generate_for(RELEASED)
    digest = fingerprint(weights)
    # 'meta' then to_empty: no default initialisation, every value comes from the loader.
    model = Spann3R(RELEASED, device='meta').to_empty(device='cpu')
    load_into(model, weights, 'generated released weights')
    del weights
    engine = EngineConfig(device='cpu', image_size=image_size)
    session = StreamingSession(model, MemoryConfig(), engine, estimate_pose=False)
    images, results = [], []
    for index, path in enumerate(list_inputs(FIXTURE)):
        rgb = read_rgb(path)
        images.append(preprocess(rgb, image_size).img)
        out = session.step(rgb, stamp=float(index))
        if out.refined is not None:
            results.append(out.refined)
    results.append(session.flush())
    outputs = {}
    for j, res in enumerate(results):
        outputs[f'pred{j:02d}.pts3d'] = res.pts3d[None]
        outputs[f'pred{j:02d}.conf'] = res.conf[None]
    return images, outputs, digest


@pytest.mark.slow
def test_released_widths_match_official():
    expected, meta = _reference()
    images, ours, digest = run_released(int(meta['image_size']))
    assert digest == meta['weights_sha256'], 'the generator no longer draws the same weights'
    inputs = np.stack(images).astype(np.float32)
    assert hashlib.sha256(inputs.tobytes()).hexdigest() == meta['inputs_sha256']
    assert sorted(ours) == sorted(expected)
    for key, theirs in expected.items():
        mine = ours[key]
        assert mine.shape == theirs.shape and mine.dtype == np.float32, key
        assert np.isfinite(mine).all(), key
        err = np.abs(mine - theirs)
        bound = ATOL + RTOL * np.abs(theirs)
        worst = np.unravel_index(np.argmax(err - bound), err.shape)
        assert (err <= bound).all(), (f'{key}: max abs error {err.max():.3e}, worst at {worst}: '
                                      f'ours {mine[worst]}, official {theirs[worst]}')


def test_reference_is_not_degenerate():
    expected, meta = _reference()
    assert meta['weights_sha256'] and int(meta['image_size']) == 64
    pts = [expected[f'pred{j:02d}.pts3d'][0] for j in range(3)]
    conf = [expected[f'pred{j:02d}.conf'][0] for j in range(3)]
    for p, c in zip(pts, conf):
        assert p.shape == (64, 64, 3) and c.shape == (64, 64)
        assert np.isfinite(p).all() and np.isfinite(c).all()
        norm = np.linalg.norm(p, axis=-1)
        # Varies over the image on every axis, no overflow of the exponential depth mode.
        assert (p.std(axis=(0, 1)) > 0.1).all() and 0.5 < np.median(norm) and norm.max() < 50
        assert 1.0 < c.min() and c.std() > 0.05 and c.max() < 10
    # The frames differ from each other, by more than the tolerance by far.
    for a, b in ((0, 1), (1, 2), (0, 2)):
        assert np.abs(pts[a] - pts[b]).mean() > 0.5


def test_generator_covers_the_schema_and_is_reproducible():
    shapes = schema(RELEASED)
    model = Spann3R(RELEASED, device='meta')
    modules = dict(model.named_modules())
    assert shapes == {k: tuple(v.shape) for k, v in sorted(model.state_dict().items())}
    for key, shape in shapes.items():
        mean, _ = std_of(key, shape)
        if len(shape) == 1 and key.endswith('.weight'):
            # Only LayerNorms have 1-D weights, so only they are drawn around 1 (or 3).
            assert isinstance(modules[key.rsplit('.', 1)[0]], torch.nn.LayerNorm), key
            assert mean in (1.0, 3.0)
        else:
            assert mean == 0.0, key
    small = {k: v for k, v in shapes.items() if 'downstream_head1.dpt.scratch.layer' in k}
    drawn = generate(small)
    assert drawn['dust3r.downstream_head1.dpt.scratch.layer1_rn.weight'] is \
        drawn['dust3r.downstream_head1.dpt.scratch.layer_rn.0.weight']
    # Each name alone draws the same tensor as the pair.
    alone = generate({'dust3r.downstream_head1.dpt.scratch.layer_rn.0.weight':
                      small['dust3r.downstream_head1.dpt.scratch.layer_rn.0.weight']})
    assert torch.equal(alone['dust3r.downstream_head1.dpt.scratch.layer_rn.0.weight'],
                       drawn['dust3r.downstream_head1.dpt.scratch.layer1_rn.weight'])
    # A tensor depends on its own key only.
    key = 'dust3r.enc_blocks.3.attn.qkv.weight'
    assert torch.equal(tensor_for(key, shapes[key]), tensor_for(key, shapes[key]))
    other = tensor_for('dust3r.enc_blocks.4.attn.qkv.weight', shapes[key])
    assert not torch.equal(tensor_for(key, shapes[key]), other)
    w = tensor_for(key, shapes[key])
    assert abs(w.std().item() * 32 - 1) < 0.01 and w.abs().max().item() <= 3 ** 0.5 / 32


def test_generator_draws_the_recorded_bits():
    # The quick suite's early warning for what the slow test checks on all 2.6 GB.
    for key, shape, digest in (
            ('norm_q.weight', (1024,),
             '3f64bae8095ed332c43e03039704a7e1517f6d6004d9627ad248e1eaa28bc017'),
            ('dust3r.downstream_head2.dpt.head.4.weight', (4, 128, 1, 1),
             '57bb6a328a4d82150db37bd45d9167ff2e4ea0405cec1838c391589f256a22e6')):
        assert fingerprint({key: tensor_for(key, shape)}) == digest, key

