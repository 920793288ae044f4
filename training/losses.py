"""The Spann3R training objective: confidence-weighted 3D regression plus a one-sided scale loss.

For a sequence of ``N`` frames the network gives ``2 (N - 1)`` pointmaps, all in frame 0's
camera: head 1 of frames ``0 .. N-2`` and head 2 of frames ``1 .. N-1``. Ground-truth points are
moved into frame 0's camera, both sides are divided by their average distance to the origin
(``avg_dis``), and every map contributes ``2 * mean(||x_hat - x|| * c - alpha * log c)`` over the
valid pixels of its frame. The scale loss pushes the prediction's average distance down when it
exceeds the ground truth's.

Two behaviours are available:

* per sample (default): every sample is normalised by its own valid-pixel count, each map's term
  is a mean over samples of per-sample pixel means, and the scale loss is
  ``mean_b relu(pr_factor[b] - gt_factor[b])``. A sample's loss does not depend on its batch mates.
* ``official_batch_coupling=True``: the released training code's arithmetic, bit for bit in
  float32. Its normalisation divides by the valid-pixel count of the whole batch, each map's mean
  is pooled over the batch, and the scale loss compares every selected predicted factor with
  every sample's ground-truth factor. For a batch of one both behaviours agree.

A frame without any valid pixel in the whole batch makes the released code raise; here that map
is left out of the mean instead (and a sample without valid pixels in a frame is left out of the
per-sample mean).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import torch

Tensor = torch.Tensor

_FACTOR_FLOOR = 1e-8


@dataclass
class LossOutput:
    """Result of :func:`spann3r_loss`.

    :param total: the objective to back-propagate (``conf_loss + scale_loss``), 0-dim.
    :param conf_loss: mean over maps of the doubled confidence-weighted regression term.
    :param scale_loss: the one-sided scale term, 0-dim (zero when nothing over-predicts).
    :param gt_factor: ``[B]`` ground-truth normalisation factors.
    :param pr_factor: ``[B]`` prediction normalisation factors.
    :param map_losses: ``[M]`` the per-map doubled terms in the official map order
        (head-1 f0, head-1 f1, head-2 f1, ..., head-1 f(N-2), head-2 f(N-2), head-2 f(N-1)).
    :param details: scalar diagnostics for logging (floats), including the released code's
        logging keys (``conf_loss_1``, ``Regr3D_tloss_left`` ...).
    """

    total: Tensor
    conf_loss: Tensor
    scale_loss: Tensor
    gt_factor: Tensor
    pr_factor: Tensor
    map_losses: Tensor
    details: dict[str, float] = field(default_factory=dict)


def _check_inputs(views: Sequence[Mapping[str, Tensor]],
                  preds_all: Sequence[tuple[Mapping[str, Tensor], Mapping[str, Tensor]]]) -> None:
    if len(views) < 2:
        raise ValueError(f'the loss needs at least 2 frames, got {len(views)}')
    if len(preds_all) != len(views) - 1:
        raise ValueError(f'expected {len(views) - 1} prediction pairs for {len(views)} frames, '
                         f'got {len(preds_all)}')
    shape = views[0]['pts3d'].shape
    for i, view in enumerate(views):
        for key in ('pts3d', 'valid_mask', 'camera_pose'):
            if key not in view:
                raise ValueError(f'view {i} lacks {key!r}')
        if view['pts3d'].shape != shape or view['valid_mask'].shape != shape[:-1]:
            raise ValueError(f'view {i}: pts3d {tuple(view["pts3d"].shape)} / valid_mask '
                             f'{tuple(view["valid_mask"].shape)} do not match view 0 '
                             f'{tuple(shape)}')
    for j, pair in enumerate(preds_all):
        for head, res in enumerate(pair, start=1):
            if res['pts3d'].shape != shape or res['conf'].shape != shape[:-1]:
                raise ValueError(f'prediction pair {j} head {head}: pts3d '
                                 f'{tuple(res["pts3d"].shape)} / conf {tuple(res["conf"].shape)} '
                                 f'do not match the ground truth {tuple(shape)}')


def _to_first_camera(views: Sequence[Mapping[str, Tensor]]) -> list[Tensor]:
    """Return every frame's GT points ``[B, H, W, 3]`` in frame 0's camera."""
    T_cam0_world = torch.linalg.inv(views[0]['camera_pose'])
    rot, trans = T_cam0_world[:, :3, :3], T_cam0_world[:, :3, 3]
    return [torch.einsum('bij,bhwj->bhwi', rot, v['pts3d']) + trans[:, None, None, :]
            for v in views]


def _avg_dis_factor(maps: Sequence[Tensor], masks: Sequence[Tensor], coupled: bool) -> Tensor:
    """Average distance to the origin over the valid pixels, ``[B]``.

    :param coupled: divide every sample's sum by the valid count of the whole batch (official).
    """
    sums = sum((p.norm(dim=-1) * m).flatten(1).sum(1) for p, m in zip(maps, masks))
    counts = sum(m.flatten(1).sum(1) for m in masks)
    if coupled:
        # The released code adds 1e-8 in float32, which leaves any count >= 1 unchanged.
        denom = counts.sum().to(sums.dtype) + 1e-8
    else:
        denom = counts.to(sums.dtype).clamp_min(1)
    return (sums / denom).clamp_min(_FACTOR_FLOOR)


def _masked_mean(values: Tensor, mask: Tensor, coupled: bool) -> Tensor | None:
    """Mean of ``values`` over ``mask`` (both ``[B, H, W]``); None when nothing is valid.

    Coupled: one mean pooled over every valid pixel of the batch. Otherwise: the mean over
    samples (that have valid pixels) of each sample's pixel mean.
    """
    if coupled:
        if not bool(mask.any()):
            return None
        return values[mask].mean()
    counts = mask.flatten(1).sum(1)
    keep = counts > 0
    if not bool(keep.any()):
        return None
    per_sample = (values * mask).flatten(1).sum(1)[keep] / counts[keep].to(values.dtype)
    return per_sample.mean()


def _scale_loss(pr_factor: Tensor, gt_factor: Tensor, coupled: bool) -> Tensor:
    over = pr_factor > gt_factor
    if not coupled:
        return torch.relu(pr_factor - gt_factor).mean()
    if not bool(over.any()):
        return pr_factor.new_zeros(())
    # The released code broadcasts the selected factors [k] against every GT factor [B].
    selected = pr_factor[over]
    return (selected[None, :] - gt_factor[:, None]).abs().mean()


def spann3r_loss(views: Sequence[Mapping[str, Tensor]],
                 preds_all: Sequence[tuple[Mapping[str, Tensor], Mapping[str, Tensor]]],
                 alpha: float = 0.4, *, official_batch_coupling: bool = False) -> LossOutput:
    """Evaluate the Spann3R training objective on one batch of sequences.

    :param views: ``N`` ground-truth frames, each with ``pts3d`` ``[B, H, W, 3]`` (world),
        ``valid_mask`` ``[B, H, W]`` (bool) and ``camera_pose`` ``[B, 4, 4]`` (camera-to-world;
        only frame 0's is used).
    :param preds_all: ``N - 1`` pairs ``(res1, res2)``: ``res1`` is head 1 of frame ``j``,
        ``res2`` head 2 of frame ``j + 1``; each has ``pts3d`` ``[B, H, W, 3]`` in frame 0's
        camera and ``conf`` ``[B, H, W]`` (> 0).
    :param alpha: weight of the ``-log c`` confidence regulariser.
    :param official_batch_coupling: reproduce the released code's cross-sample coupling.
    :return: the loss and its parts.
    :raises ValueError: on mismatched shapes or when no frame has a valid pixel.
    """
    _check_inputs(views, preds_all)
    coupled = official_batch_coupling
    n_frames = len(views)
    gt_pts = _to_first_camera(views)
    masks = [v['valid_mask'].bool() for v in views]

    head1 = [pair[0] for pair in preds_all]                # frames 0 .. N-2
    head2 = [pair[1] for pair in preds_all]                # frames 1 .. N-1
    # The prediction's scale uses the maps the evaluation reads: head 1 then head 2 of the last.
    scale_maps = [r['pts3d'] for r in head1] + [head2[-1]['pts3d']]
    gt_factor = _avg_dis_factor(gt_pts, masks, coupled)
    pr_factor = _avg_dis_factor(scale_maps, masks, coupled)
    gt_norm = [p / gt_factor[:, None, None, None] for p in gt_pts]

    # (frame, prediction) in the official map order.
    ordered: list[tuple[int, Mapping[str, Tensor], int]] = [(0, head1[0], 1)]
    for i in range(1, n_frames - 1):
        ordered += [(i, head1[i], 1), (i, head2[i - 1], 2)]
    ordered.append((n_frames - 1, head2[-1], 2))

    map_losses, regr_means, conf_means, map_losses_by_slot = [], [], [], []
    for frame, res, _ in ordered:
        pred_norm = res['pts3d'] / pr_factor[:, None, None, None]
        dist = (pred_norm - gt_norm[frame]).norm(dim=-1)
        conf = res['conf']
        term = dist * conf - alpha * torch.log(conf)
        mean = _masked_mean(term, masks[frame], coupled)
        if mean is None:
            regr_means.append(None)
            conf_means.append(None)
            map_losses_by_slot.append(None)
            continue
        map_losses.append(2.0 * mean)
        map_losses_by_slot.append(map_losses[-1].detach())
        regr_means.append(_masked_mean(dist.detach(), masks[frame], coupled))
        conf_means.append(_masked_mean(conf.detach(), masks[frame], coupled))
    if not map_losses:
        raise ValueError('no frame of the batch has a valid ground-truth pixel')
    stacked = torch.stack(map_losses)
    conf_loss = stacked.mean()
    scale_loss = _scale_loss(pr_factor, gt_factor, coupled)
    total = conf_loss + scale_loss

    details = {
        'conf_loss': float(conf_loss.detach()),
        'scale_loss': float(scale_loss.detach()),
        'gt_factor': float(gt_factor.detach().mean()),
        'pr_factor': float(pr_factor.detach().mean()),
        'conf_mean': float(torch.stack([c for c in conf_means if c is not None]).mean()),
        'regr_first': float(regr_means[0]) if regr_means[0] is not None else float('nan'),
        'regr_mean': float(torch.stack([r for r in regr_means if r is not None]).mean()),
        'alpha': float(alpha),
    }
    details.update(_official_details(ordered, map_losses_by_slot, regr_means, conf_means))
    return LossOutput(total=total, conf_loss=conf_loss, scale_loss=scale_loss,
                      gt_factor=gt_factor, pr_factor=pr_factor, map_losses=stacked,
                      details=details)


def _official_details(ordered: list, map_losses: list, regr_means: list, conf_means: list
                      ) -> dict[str, float]:
    """Return the released code's logging dict under its key names (means pooled per mode).

    ``Regr3D_tconf_*`` average the confidence over all pixels, invalid ones included, as the
    released code does; a map without valid pixels contributes nothing.
    """
    def value(x: Tensor | None) -> float:
        return float(x) if x is not None else float('nan')

    last = ordered[-1][0]
    # Frames 1 .. N-2 have one map of each head; the details sum over them per head.
    left = [k for k, (frame, _, head) in enumerate(ordered) if 0 < frame < last and head == 1]
    right = [k for k, (frame, _, head) in enumerate(ordered) if 0 < frame < last and head == 2]
    valid_conf = [c for c in conf_means if c is not None]
    out = {
        'conf_loss_1': value(map_losses[0]) if map_losses else float('nan'),
        'conf_loss2': value(map_losses[1]) if len(map_losses) > 1 else float('nan'),
        'conf_mean': float(torch.stack(valid_conf).mean()) if valid_conf else float('nan'),
        'Regr3D_t_pts3d_1': value(regr_means[0]),
        'Regr3D_t_pts3d_2': value(regr_means[1]) if len(regr_means) > 1 else float('nan'),
        'Regr3D_tloss_left': sum(value(regr_means[k]) for k in left),
        'Regr3D_tloss_right': sum(value(regr_means[k]) for k in right),
        'Regr3D_tconf_left': sum(float(ordered[k][1]['conf'].detach().mean()) for k in left),
        'Regr3D_tconf_right': sum(float(ordered[k][1]['conf'].detach().mean()) for k in right),
    }
    return out
