"""Per-epoch validation on held-out sequences with the metrics of ``spann3r-eval``.

Each held-out sequence runs through the network in inference mode (the online memory with the
official limits), then through the official evaluation protocol: median shift/scale alignment,
ICP, Acc / Comp / NC. The loss is reported as well; ``chamfer`` = (Acc + Comp) / 2 selects the
best checkpoint.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from spann3r_model.evaluation.metrics import evaluate_pointmaps
from spann3r_model.spann3r import Spann3R
from training.datasets.mixture import MixedDataset
from training.losses import spann3r_loss

LOG = logging.getLogger(__name__)


@torch.no_grad()
def validate(model: Spann3R, dataset: MixedDataset, device: torch.device, epoch: int = 0,
             use_icp: bool = True) -> dict[str, float]:
    """Score the model on every sequence of ``dataset``.

    :param epoch: only for logs; the held-out samples are the same every epoch.
    :return: means over sequences of ``loss``, ``acc``, ``comp``, ``nc`` and ``chamfer``.
    """
    was_training = model.training
    model.eval()
    dataset.set_epoch(0, 1.0)
    rows: dict[str, list[float]] = {'loss': [], 'acc': [], 'comp': [], 'nc': [], 'chamfer': []}
    try:
        for index in range(len(dataset)):
            sample = dataset[index]
            n_frames = sample['img'].shape[0]
            imgs = [sample['img'][i:i + 1].to(device) for i in range(n_frames)]
            views = [{k: sample[k][i:i + 1].to(device)
                      for k in ('pts3d', 'valid_mask', 'camera_pose')} for i in range(n_frames)]
            out = model.forward_sequence(imgs, train=False)
            preds_all = [tuple({k: v.float() for k, v in r.items()} for r in pair)
                         for pair in out.preds_all]
            rows['loss'].append(float(spann3r_loss(views, preds_all).total))
            pred = np.stack([p['pts3d'][0].float().cpu().numpy() for p in out.preds])
            T0 = sample['camera_pose'][0].double().numpy()
            world = sample['pts3d'].double().numpy()
            T_cam0_world = np.linalg.inv(T0)
            gt = world @ T_cam0_world[:3, :3].T + T_cam0_world[:3, 3]
            valid = sample['valid_mask'].numpy()
            result = evaluate_pointmaps(pred, gt, valid, T0, use_icp=use_icp)
            m = result.metrics
            rows['acc'].append(m.acc)
            rows['comp'].append(m.comp)
            rows['nc'].append(0.5 * (m.nc1 + m.nc2))
            rows['chamfer'].append(0.5 * (m.acc + m.comp))
    finally:
        model.train(was_training)
    LOG.debug('validated %d sequences after epoch %d', len(rows['loss']), epoch)
    return {k: float(np.mean(v)) for k, v in rows.items() if v}
