"""Read, write and prune rules of the spatial memory on small synthetic tensors."""

import pytest
import torch
from torch import nn

from spann3r_model.config import MemoryConfig
from spann3r_model.memory import SpatialMemory

P, C = 4, 8


def _norms(seed=0):
    torch.manual_seed(seed)
    norms = [nn.LayerNorm(C) for _ in range(3)]
    for n in norms:
        nn.init.normal_(n.weight, 1.0, 0.5)
        nn.init.normal_(n.bias, 0.0, 0.1)
    return norms


def _memory(train=False, **cfg):
    q, k, v = _norms()
    return SpatialMemory(MemoryConfig(**cfg), q, k, v, tokens_per_frame=P, train=train)


def _frame(seed, b=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, P, C, generator=g), torch.randn(b, P, C, generator=g)


def test_read_follows_the_official_formula():
    mem = _memory(attn_thresh=0.05, sim_thresh=1.0)
    for f in range(3):
        mem.write(*_frame(f), frame=f)
    query = _frame(10)[0] * 3
    with torch.no_grad():
        out = mem.read(query)
        # Independent float64 computation from the raw tokens.
        q, k, v = mem.norm_q, mem.norm_k, mem.norm_v
        keys = torch.cat([_frame(f)[0] for f in range(3)], 1).double()
        vals = torch.cat([_frame(f)[1] for f in range(3)], 1).double()
        kn = nn.functional.layer_norm(keys, (C,), k.weight.double(), k.bias.double(), 1e-5)
        vn = nn.functional.layer_norm(vals, (C,), v.weight.double(), v.bias.double(), 1e-5)
        qn = nn.functional.layer_norm(query.double(), (C,), q.weight.double(), q.bias.double(),
                                      1e-5)
        attn = torch.softmax(qn @ kn.transpose(1, 2) / C ** 0.5, dim=-1)
        clipped = torch.where(attn < 0.05, 0.0, attn)
        assert (clipped == 0).any() and (clipped > 0).any()
        clipped = clipped / clipped.sum(-1, keepdim=True)
        expected = clipped @ vn + query.double()
    assert torch.allclose(out.double(), expected, atol=1e-5)
    assert torch.allclose(mem.attn[0, :mem.n].double(), clipped.sum(1)[0], atol=1e-5)
    # A second read accumulates.
    with torch.no_grad():
        mem.read(query)
    assert torch.allclose(mem.attn[0, :mem.n].double(), 2 * clipped.sum(1)[0], atol=1e-5)


def test_similar_frame_is_skipped_without_touching_counters():
    mem = _memory(work_mem_size=2, long_mem_size=100)
    k, v = _frame(0)
    with torch.no_grad():
        assert mem.write(k, v, frame=0).stored
        count_before = mem.count[:, :mem.n].clone()
        report = mem.write(k * 2 + 1e-3, v, frame=1)  # same direction -> cosine ~ 1
    assert not report.stored and report.similarity > 0.99
    assert (mem.n, mem.wm, mem.lm) == (P, 1, 0)
    assert torch.equal(mem.count[:, :mem.n], count_before)
    # sim_thresh 1.0 disables the check, as in the official code.
    mem = _memory(sim_thresh=1.0)
    with torch.no_grad():
        mem.write(k, v, frame=0)
        assert mem.write(k, v, frame=1).stored


def test_counters_bound_and_prune_selection():
    # 7 frames (28 tokens) are protected, so 12 of the kept 40 are chosen by weight.
    wm, lm = 2, 40
    mem = _memory(work_mem_size=wm, long_mem_size=lm, sim_thresh=1.0, attn_thresh=0.0)
    prunes = 0
    for f in range(22):
        with torch.no_grad():
            if mem.n:
                mem.read(_frame(100 + f)[0] * 2)
                before = {name: getattr(mem, name)[0, :mem.n].clone()
                          for name in ('attn', 'count', 'origin')}
            else:
                before = {'attn': torch.zeros(0), 'count': torch.zeros(0),
                          'origin': torch.zeros(0, 2, dtype=torch.int64)}
            report = mem.write(*_frame(f), frame=f)
        assert report.stored
        assert mem.n <= lm + wm * P
        assert mem.wm == min(f + 1, wm)
        if report.pruned is None:
            assert mem.n == mem.lm + mem.wm * P
            continue
        prunes += 1
        assert report.pruned == (lm + wm * P + P, lm) and mem.n == lm
        assert mem.lm == lm - wm * P
        # Expected selection from the state before the write, aged by one.
        attn = torch.cat([before['attn'], torch.zeros(P)])
        count = torch.cat([before['count'] + 1, torch.zeros(P)])
        origin = torch.cat([before['origin'], torch.stack(
            [torch.full((P,), f), torch.arange(P)], -1)])
        weight = attn / count
        protected = count < wm + 5
        order = sorted(range(len(attn)), key=lambda i: (not protected[i], -float(weight[i])))
        keep = order[:lm]
        kept = {tuple(origin[i].tolist()) for i in keep}
        assert {tuple(r) for r in mem.origin[0, :mem.n].tolist()} == kept
        # Stored in descending weight: protected first, then decreasing attention / age.
        kept_w = torch.where(mem.count[0, :lm] < wm + 5, torch.tensor(1e8),
                             mem.attn[0, :lm] / mem.count[0, :lm])
        assert torch.all(kept_w[:-1] >= kept_w[1:])
    assert prunes == 4


def test_long_mem_size_zero_drops_the_oldest_frame():
    mem = _memory(work_mem_size=2, long_mem_size=0, sim_thresh=1.0)
    for f in range(5):
        with torch.no_grad():
            mem.write(*_frame(f), frame=f)
    assert mem.n == 2 * P and mem.lm == 0
    assert mem.frames() == [3, 4]
    assert torch.equal(mem.keys[:, :mem.n], torch.cat([_frame(3)[0], _frame(4)[0]], 1))


@torch.enable_grad()
def test_preallocated_and_functional_paths_agree():
    runs = []
    for functional in (False, True):
        mem = _memory(work_mem_size=1, long_mem_size=8, attn_thresh=0.05)
        outs = []
        for f in range(7):
            k, v = _frame(f, b=2)
            with torch.set_grad_enabled(functional):
                if functional:
                    k = k.requires_grad_()
                if mem.n:
                    outs.append(mem.read(_frame(50 + f, b=2)[0]).detach())
                mem.write(k, v, frame=f)
        assert mem._functional == functional
        runs.append((outs, mem.state_dict()))
    (o1, s1), (o2, s2) = runs
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(o1, o2))
    assert s1.keys() == s2.keys()
    for name in s1:
        assert torch.allclose(s1[name].double(), s2[name].double(), atol=1e-6), name


@torch.enable_grad()  # independent of whatever grad mode earlier code left behind
def test_training_stores_everything_and_keeps_gradients():
    mem = _memory(train=True, work_mem_size=1, long_mem_size=4)
    k0 = torch.randn(2, P, C, requires_grad=True)
    mem.write(k0, torch.randn(2, P, C), frame=0)
    for f in range(1, 5):
        mem.write(k0 * 1.0, torch.randn(2, P, C), frame=f)  # identical keys: no skip in training
    assert mem.n == 5 * P and mem.wm == 0 and mem.lm == 0
    torch.manual_seed(0)
    a = mem.read(torch.randn(2, P, C))
    a.sum().backward()
    assert k0.grad is not None and k0.grad.abs().sum() > 0
    # Attention dropout makes two reads differ.
    q = torch.randn(2, P, C)
    assert not torch.allclose(mem.read(q), mem.read(q))


def test_state_round_trip_and_validation():
    mem = _memory(work_mem_size=1, long_mem_size=8)
    with torch.no_grad():
        for f in range(4):
            mem.write(*_frame(f), frame=f)
    state = mem.state_dict()
    other = _memory(work_mem_size=1, long_mem_size=8)
    other.load_state_dict(state, 'cpu')
    assert (other.n, other.wm, other.lm) == (mem.n, mem.wm, mem.lm)
    q = _frame(99)[0]
    with torch.no_grad():
        assert torch.equal(mem.read(q), other.read(q))
    with pytest.raises(ValueError, match='lacks'):
        other.load_state_dict({'keys': state['keys']}, 'cpu')
    with pytest.raises(ValueError, match='shape'):
        mem.write(torch.zeros(1, P + 1, C), torch.zeros(1, P + 1, C))
    with pytest.raises(ValueError, match='empty'):
        _memory().read(torch.zeros(1, P, C))
    with pytest.raises(ValueError, match='smaller than the working memory'):
        _memory(work_mem_size=5, long_mem_size=10)


def _flat_query_memory(p, **cfg):
    # With a zero LayerNorm bias, a query row whose entries are all equal normalises to zero:
    # its affinity to every key is exactly 0 and its softmax row is exactly uniform (1 / N).
    q, k, v = _norms()
    with torch.no_grad():
        q.bias.zero_()
    return SpatialMemory(MemoryConfig(**cfg), q, k, v, tokens_per_frame=p)


def _random_tokens(seed, p):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, p, C, generator=g), torch.randn(1, p, C, generator=g)


def _unguarded_read(mem, query):
    """The read as the official code writes it: rows with nothing above the threshold are 0/0."""
    k, v = mem.keys_normed[:, :mem.n], mem.values_normed[:, :mem.n]
    affinity = torch.matmul(mem.norm_q(query), k.transpose(1, 2)) / mem._sqrt_dim(C)
    attn = torch.softmax(affinity, dim=-1)
    dense = attn
    attn = attn.masked_fill(attn < mem.attn_thresh, 0.0)
    attn = attn / attn.sum(dim=-1, keepdim=True)
    return torch.matmul(attn, v) + query, attn.sum(dim=1), dense


def test_rows_with_attention_above_the_threshold_are_unchanged_bit_for_bit():
    p = 4
    mem = _flat_query_memory(p, attn_thresh=0.05, sim_thresh=1.0)
    with torch.no_grad():
        for f in range(10):  # 40 tokens: a flat row (1/40 per token) is all below 0.05
            mem.write(*_random_tokens(f, p), frame=f)
        query = _random_tokens(99, p)[0] * 3
        query[0, 1] = 0.7  # a flat row
        attn_before = mem.attn[:, :mem.n].clone()
        expected, received, dense = _unguarded_read(mem, query)
        out = mem.read(query)
    flat = torch.tensor([False, True, False, False])
    assert torch.isnan(expected[0, flat]).all() and torch.isfinite(expected[0, ~flat]).all()
    assert torch.equal(out[0, ~flat], expected[0, ~flat])
    # The flat row reads the unthresholded softmax row: the mean of the values.
    vn = mem.values_normed[0, :mem.n]
    assert torch.allclose(dense[0, 1], torch.full((mem.n,), 1 / mem.n))
    assert torch.allclose(out[0, 1], vn.mean(0) + query[0, 1], atol=1e-6)
    # Statistics: the sharp rows contribute exactly what the unguarded formula gives.
    sharp_only = _unguarded_read(mem, query[:, ~flat])[1]
    got = mem.attn[:, :mem.n] - attn_before
    assert torch.isfinite(got).all()
    assert torch.allclose(got, sharp_only + dense[:, 1], atol=1e-7)
    # Without a degenerate row the whole read is bit-identical, output and statistics alike.
    with torch.no_grad():
        query = _random_tokens(98, p)[0] * 3
        attn_before = mem.attn[:, :mem.n].clone()
        expected, received, _ = _unguarded_read(mem, query)
        out = mem.read(query)
    assert torch.equal(out, expected)
    assert torch.equal(mem.attn[:, :mem.n], attn_before + received)


def test_flat_query_over_a_large_memory_keeps_statistics_and_pruning_finite():
    # Official limits: 5e-4 clipping, 4000 long-term tokens. Beyond 2000 tokens a flat query
    # has every weight below the threshold.
    p, wm, lm = 500, 5, 4000
    mem = _flat_query_memory(p)
    flat_query = torch.full((1, p, C), 0.3)
    prunes = 0
    with torch.no_grad():
        mem.write(*_random_tokens(0, p), frame=0)
        for f in range(1, 20):
            query = flat_query.clone()
            query[:, ::2] = _random_tokens(1000 + f, p)[0][:, ::2] * 3
            if mem.n > 2000:
                assert torch.isnan(_unguarded_read(mem, query)[0]).any()
            out = mem.read(query)
            assert torch.isfinite(out).all()
            assert torch.allclose(out[0, 1::2], mem.values_normed[0, :mem.n].mean(0)
                                  + query[0, 1::2], atol=1e-5)
            before = {name: getattr(mem, name)[0, :mem.n].clone()
                      for name in ('attn', 'count', 'origin')}
            report = mem.write(*_random_tokens(f, p), frame=f)
            assert report.stored
            assert torch.isfinite(mem.attn[:, :mem.n]).all()
            if report.pruned is None:
                continue
            prunes += 1
            assert report.pruned == (lm + wm * p + p, lm)
            # The kept tokens are the top-k of the finite weights of the state before the write.
            count = torch.cat([before['count'] + 1, torch.zeros(p)])
            weight = torch.cat([before['attn'], torch.zeros(p)]) / count
            weight = weight.masked_fill(count < wm + 5, 1e8)
            origin = torch.cat([before['origin'],
                                torch.stack([torch.full((p,), f), torch.arange(p)], -1)])
            keep = torch.topk(weight, lm).indices
            assert ({tuple(r) for r in mem.origin[0, :mem.n].tolist()}
                    == {tuple(r) for r in origin[keep].tolist()})
    assert prunes == 2
