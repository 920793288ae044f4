"""The training loss against the official fixture and hand-built batches."""

import json

from safetensors.torch import load_file
import torch

from training.losses import spann3r_loss


def _fixture(data_dir, case):
    root = data_dir / 'training' / 'loss'
    inputs = load_file(root / 'inputs.safetensors')
    meta = json.loads((root / 'outputs.json').read_text())
    n = meta['layout']['N']
    views = [{'pts3d': inputs[f'gt.frame{i}.pts3d'],
              'valid_mask': inputs[f'gt.frame{i}.valid_mask'],
              'camera_pose': inputs[f'gt.frame{i}.camera_pose']} for i in range(n)]
    leaves = {}

    def leaf(head, frame):
        out = {}
        for key in ('pts3d', 'conf'):
            name = f'{head}.frame{frame}.{key}'
            t = inputs[f'{case}.{name}'].clone().requires_grad_(True)
            leaves[name] = t
            out[key] = t
        return out

    preds_all = [(leaf('head1', j), leaf('head2', j + 1)) for j in range(n - 1)]
    return views, preds_all, leaves, meta['cases'][case], load_file(root / 'grads.safetensors')


def _close(a, b, rtol=1e-5):
    return abs(a - b) <= rtol * max(abs(b), 1e-12)


def test_matches_official_fixture_scalars_and_gradients(data_dir):
    for case in ('main', 'lowscale'):
        for coupled in (False, True):
            views, preds_all, leaves, expected, grads = _fixture(data_dir, case)
            out = spann3r_loss(views, preds_all, alpha=0.4, official_batch_coupling=coupled)
            assert _close(out.total.item(), expected['total_loss']), case
            assert _close(float(out.conf_loss.detach()), expected['conf_loss_mean'])
            assert _close(float(out.scale_loss.detach()), float(expected['scale_loss']))
            assert _close(float(out.gt_factor[0].detach()), expected['gt_factor'][0])
            assert _close(float(out.pr_factor[0].detach()), expected['pr_factor'][0])
            for key, want in expected['details'].items():
                assert _close(out.details[key], want), (case, key, out.details[key], want)
            per_map = [m['conf_loss_x2'] for m in expected['maps']]
            for got, want in zip(out.map_losses.tolist(), per_map):
                assert _close(got, want)
            out.total.backward()
            for name, t in leaves.items():
                want = grads[f'{case}.grad.{name}']
                err = (t.grad - want).abs().max() / want.abs().max()
                assert err <= 1e-4, (case, name, float(err))


def _batch_of_two(scale0=1.3, scale1=0.8):
    gen = torch.Generator().manual_seed(0)
    b, n, h, w = 2, 3, 6, 8
    views, preds_all = [], []
    poses = torch.eye(4).repeat(b, 1, 1)
    poses[1, :3, 3] = torch.tensor([0.5, -0.2, 1.0])
    cam_pts = [torch.rand(b, h, w, 3, generator=gen) + torch.tensor([0, 0, 2.0]) for _ in range(n)]
    cam_pts = [p * torch.tensor([1.0, 3.0]).view(b, 1, 1, 1) for p in cam_pts]
    for i in range(n):
        world = cam_pts[i] + poses[:, None, None, :3, 3]
        mask = torch.ones(b, h, w, dtype=torch.bool)
        mask[1, : 2 + i] = False  # sample 1 has fewer valid pixels
        views.append({'pts3d': world, 'valid_mask': mask, 'camera_pose': poses})
    scales = torch.tensor([scale0, scale1]).view(b, 1, 1, 1)
    conf = torch.full((b, h, w), 2.0)

    def pred(i):
        return {'pts3d': cam_pts[i] * scales, 'conf': conf}

    preds_all = [(pred(j), pred(j + 1)) for j in range(n - 1)]
    return views, preds_all


def _hand_factors(views, preds_all, per_sample):
    # GT points are in camera 0 by construction (pose is a pure translation).
    t = views[0]['camera_pose'][:, :3, 3]
    gts = [v['pts3d'] - t[:, None, None, :] for v in views]
    preds = [p[0]['pts3d'] for p in preds_all] + [preds_all[-1][1]['pts3d']]
    gt_f, pr_f = [], []
    total_count = sum(float(v['valid_mask'].sum()) for v in views)
    for b in range(2):
        count = sum(float(v['valid_mask'][b].sum()) for v in views)
        denom = count if per_sample else total_count
        masks = [v['valid_mask'][b] for v in views]
        gsum = sum(float(g[b][m].norm(dim=-1).sum()) for g, m in zip(gts, masks))
        psum = sum(float(p[b][m].norm(dim=-1).sum()) for p, m in zip(preds, masks))
        gt_f.append(gsum / denom)
        pr_f.append(psum / denom)
    return gt_f, pr_f


def test_per_sample_and_official_coupling_differ_as_specified():
    views, preds_all = _batch_of_two()
    ours = spann3r_loss(views, preds_all, official_batch_coupling=False)
    official = spann3r_loss(views, preds_all, official_batch_coupling=True)
    for out, per_sample in ((ours, True), (official, False)):
        gt_f, pr_f = _hand_factors(views, preds_all, per_sample)
        assert torch.allclose(out.gt_factor, torch.tensor(gt_f), rtol=1e-5)
        assert torch.allclose(out.pr_factor, torch.tensor(pr_f), rtol=1e-5)
    # Per sample: the prediction's scale error is exactly its own factor ratio.
    assert torch.allclose(ours.pr_factor / ours.gt_factor, torch.tensor([1.3, 0.8]), rtol=1e-5)
    gt_f, pr_f = _hand_factors(views, preds_all, True)
    assert abs(float(ours.scale_loss) - max(pr_f[0] - gt_f[0], 0) / 2) < 1e-5
    # Official: only sample 0 over-predicts, yet it is compared with both GT factors.
    gt_f, pr_f = _hand_factors(views, preds_all, False)
    want = (abs(pr_f[0] - gt_f[0]) + abs(pr_f[0] - gt_f[1])) / 2
    assert abs(float(official.scale_loss) - want) < 1e-5
    assert abs(float(ours.scale_loss) - float(official.scale_loss)) > 1e-2


def test_per_sample_loss_ignores_batch_mates():
    views, preds_all = _batch_of_two()
    both = spann3r_loss(views, preds_all)
    alone = spann3r_loss([{k: v[:1] for k, v in view.items()} for view in views],
                         [tuple({k: v[:1] for k, v in r.items()} for r in pair)
                          for pair in preds_all])
    other = spann3r_loss([{k: v[1:] for k, v in view.items()} for view in views],
                         [tuple({k: v[1:] for k, v in r.items()} for r in pair)
                          for pair in preds_all])
    assert torch.allclose(both.total, (alone.total + other.total) / 2, rtol=1e-5)
    # The official arithmetic couples them: the batch loss is not the mean of the singles.
    coupled = spann3r_loss(views, preds_all, official_batch_coupling=True)
    assert abs(float(coupled.total) - float(both.total)) > 1e-3


def test_frame_without_valid_pixels_is_left_out_and_shapes_checked():
    views, preds_all = _batch_of_two()
    views[1]['valid_mask'] = torch.zeros_like(views[1]['valid_mask'])
    out = spann3r_loss(views, preds_all)
    assert out.map_losses.numel() == 2 and torch.isfinite(out.total)
    bad = [dict(v) for v in views]
    bad[0]['pts3d'] = bad[0]['pts3d'][..., :2]
    try:
        spann3r_loss(bad, preds_all)
    except ValueError as err:
        assert 'pts3d' in str(err)
    else:
        raise AssertionError('mismatched shapes were accepted')


def test_official_scale_loss_on_the_documented_batch_of_two():
    # README of the loss reference, case "mixed" (B = 2): only sample 0 over-predicts, the
    # official term compares it with both GT factors: (|4.18002-3.21546| + |4.18002-4.83540|)/2,
    # and its gradient with respect to both predicted factors is zero.
    from training.losses import _scale_loss

    gt = torch.tensor([3.21546, 4.83540])
    pr = torch.tensor([4.18002, 3.86737], requires_grad=True)
    loss = _scale_loss(pr, gt, coupled=True)
    loss.backward()
    assert abs(loss.item() - 0.809972) < 1e-5
    assert torch.equal(pr.grad, torch.zeros(2))
    pr.grad = None
    ours = _scale_loss(pr, gt, coupled=False)
    ours.backward()
    assert abs(ours.item() - 0.48228) < 1e-5  # the README's "per-sample mean of relu"
    assert torch.allclose(pr.grad, torch.tensor([0.5, 0.0]))
    # both_above: gradient [0, 0.5] in the README's convention (second factor is the larger).
    pr2 = torch.tensor([3.5, 5.0], requires_grad=True)
    _scale_loss(pr2, gt, coupled=True).backward()
    assert torch.allclose(pr2.grad, torch.tensor([0.0, 0.5]))
