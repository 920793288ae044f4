"""``spann3r-train CONFIG.yaml [key=value ...]``: the standalone Spann3R trainer.

Runs as one process or under ``torchrun --nproc_per_node N`` (DDP: NCCL on GPUs, gloo on CPU).
Rank 0 logs (console, TensorBoard), validates and saves. The run directory receives
``config.yaml`` (the resolved config), ``checkpoint-last.pt`` / ``checkpoint-best.pt``
(resumable, written atomically) and, at the end, ``model.safetensors`` (what the node loads)
and ``spann3r.pth`` (the official container).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
from pathlib import Path
import sys
import time
from typing import Any, Sequence

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
import yaml

from spann3r_model.checkpoint_official import save_official
from spann3r_model.checkpoint_safetensors import save_safetensors
from spann3r_model.config import ModelConfig
from training import distributed
from training.config import load_config, TrainConfig
from training.datasets.mixture import EpochBatchSampler
from training.datasets.registry import build_mix
from training.losses import spann3r_loss
from training.model_setup import build_model, parameter_groups, TrainingForward
from training.schedules import alpha_at, curriculum_ratio, learning_rate
from training.state import load_training_state, restore_rng, save_training_state
from training.validation import validate

LOG = logging.getLogger('training')

LAST = 'checkpoint-last.pt'
BEST = 'checkpoint-best.pt'


def split_views(batch: dict[str, torch.Tensor], device: torch.device
                ) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    """Turn a collated batch (``[B, N, ...]`` tensors) into per-frame images and GT views."""
    n_frames = batch['img'].shape[1]
    imgs = [batch['img'][:, i].to(device, non_blocking=True) for i in range(n_frames)]
    views = [{k: batch[k][:, i].to(device, non_blocking=True)
              for k in ('pts3d', 'valid_mask', 'camera_pose')} for i in range(n_frames)]
    return imgs, views


def _float_preds(preds_all: Sequence) -> list:
    return [tuple({k: v.float() for k, v in res.items()} for res in pair) for pair in preds_all]


class Trainer:
    """One training run (construct, then :meth:`fit`)."""

    def __init__(self, config: TrainConfig) -> None:
        self.config = config
        if config.run.num_threads > 0:
            torch.set_num_threads(config.run.num_threads)
        self.dist = distributed.setup(config.run.device)
        self.out = Path(config.run.output_dir)
        self.device = self.dist.device
        self.state = self._find_resume_state()
        if self.state is not None:
            # The architecture of a resumed run is the checkpoint's, whatever the config says.
            self.model_config = ModelConfig.from_dict(self.state['model_config'])
        else:
            self.model_config = ModelConfig.preset(config.model.preset)
        # Every rank uses the same seed: the initial weights agree, and the ranks' torch random
        # states stay identical (same shapes drawn), so rank 0's saved state resumes them all.
        torch.manual_seed(config.run.seed)
        init = 'scratch' if self.state is not None else config.model.init
        self.model = build_model(self.model_config, init, config.model.checkpoint, self.device)
        self.forward = TrainingForward(self.model, config.model.memory_dropout)
        if self.dist.world_size > 1:
            ids = [self.device.index] if self.device.type == 'cuda' else None
            # Some parameters get no gradient from a sequence (e.g. the query head of the last
            # frame), as in the official training.
            self.forward = DistributedDataParallel(self.forward, device_ids=ids,
                                                   find_unused_parameters=True)
        o = config.optim
        self.optimizer = torch.optim.AdamW(parameter_groups(self.model, o.weight_decay),
                                           lr=o.lr, betas=tuple(o.betas))
        use_amp = self.device.type == 'cuda' and o.precision != 'fp32'
        self.autocast_dtype = {'bf16': torch.bfloat16, 'fp16': torch.float16}.get(o.precision)
        self.use_amp = use_amp
        self.scaler = torch.amp.GradScaler('cuda', enabled=use_amp and o.precision == 'fp16')
        defaults = {'num_frames': config.data.num_frames, 'image_size': config.data.image_size,
                    'seed': config.run.seed}
        self.train_set = build_mix(config.data.train, defaults=defaults, seed=config.run.seed)
        self.val_set = (build_mix(config.data.val, defaults={**defaults, 'color_jitter': False},
                                  seed=config.run.seed + 1) if config.data.val else None)
        self.sampler = EpochBatchSampler(len(self.train_set), config.data.batch_size,
                                         rank=self.dist.rank, world_size=self.dist.world_size,
                                         seed=config.run.seed)
        self.steps_per_epoch = len(self.sampler) // o.accum_steps
        if self.steps_per_epoch == 0:
            raise ValueError(f'one epoch has {len(self.sampler)} batches, fewer than '
                             f'optim.accum_steps={o.accum_steps}')
        self.epoch, self.step_in_epoch, self.global_step = 0, 0, 0
        self.best_metric = math.inf
        self.writer = None
        if self.state is not None:
            self._restore(self.state)
            self.state = None  # the tensors now live in the model and optimiser

    # -- set-up helpers -------------------------------------------------------------------
    def _find_resume_state(self) -> dict[str, Any] | None:
        resume = self.config.run.resume
        if resume == 'never':
            return None
        path = self.out / LAST if resume == 'auto' else Path(resume)
        if resume == 'auto' and not path.is_file():
            return None
        return load_training_state(path)

    def _restore(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state['model'], strict=True)
        self.optimizer.load_state_dict(state['optimizer'])
        if state['scaler']:
            self.scaler.load_state_dict(state['scaler'])
        self.epoch = int(state['epoch'])
        self.step_in_epoch = int(state['step_in_epoch'])
        self.global_step = int(state['global_step'])
        self.best_metric = float(state['best_metric'])
        self._rng_state = state['rng']
        LOG.info('resumed at epoch %d, step %d (%d in the epoch)', self.epoch,
                 self.global_step, self.step_in_epoch)

    def _save(self, name: str) -> None:
        if not self.dist.is_main:
            return
        save_training_state(self.out / name, model=self.model, optimizer=self.optimizer,
                            scaler=self.scaler if self.scaler.is_enabled() else None,
                            epoch=self.epoch, step_in_epoch=self.step_in_epoch,
                            global_step=self.global_step, best_metric=self.best_metric,
                            train_config=self.config.to_dict(),
                            model_config=self.model_config.to_dict())

    def _loader(self) -> DataLoader:
        generator = torch.Generator().manual_seed(self.config.run.seed * 1000 + self.epoch)
        workers = self.config.data.num_workers
        return DataLoader(self.train_set, batch_sampler=self.sampler, num_workers=workers,
                          pin_memory=self.device.type == 'cuda', generator=generator,
                          persistent_workers=False)

    # -- the loop -------------------------------------------------------------------------
    def fit(self) -> None:
        """Train until ``optim.epochs`` (or ``optim.max_steps``), then export the weights."""
        cfg = self.config
        if self.dist.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / 'config.yaml').write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
            if cfg.log.tensorboard:
                from torch.utils.tensorboard import SummaryWriter
                self.writer = SummaryWriter(str(self.out / 'tensorboard'))
            # CPU kernels reduce in an order set by the thread count: a resume is bit-exact
            # only with the count the run started with, so the log records it.
            LOG.info('torch intra-op threads: %d', torch.get_num_threads())
        if getattr(self, '_rng_state', None) is not None:
            restore_rng(self._rng_state)
        # A run resumed at (or past) its step budget trains nothing more and only exports.
        stopped = bool(cfg.optim.max_steps) and self.global_step >= cfg.optim.max_steps
        while self.epoch < cfg.optim.epochs and not stopped:
            stopped = self._train_epoch()
            if stopped:
                break
            self.epoch += 1
            self.step_in_epoch = 0
            self._end_of_epoch()
        if stopped:
            self._save(LAST)
        distributed.barrier()
        if self.dist.is_main:
            self.export()
            if self.writer is not None:
                self.writer.close()
        distributed.teardown()

    def _end_of_epoch(self) -> None:
        metric = math.inf
        if self.val_set is not None and self.dist.is_main:
            scores = validate(self.model, self.val_set, self.device, epoch=self.epoch - 1)
            metric = scores.get('chamfer', scores['loss'])
            for key, value in scores.items():
                self._scalar(f'val/{key}', value)
            LOG.info('epoch %d validation: %s', self.epoch - 1,
                     ', '.join(f'{k} {v:.5g}' for k, v in scores.items()))
        if self.dist.is_main and self.val_set is not None and metric < self.best_metric:
            self.best_metric = metric
            self._save(BEST)
        # Saved after the best metric is updated, so a resumed run compares against it.
        self._save(LAST)
        distributed.barrier()

    def _train_epoch(self) -> bool:
        cfg, o = self.config, self.config.optim
        ratio = (curriculum_ratio(self.epoch, o.epochs) if cfg.loss.curriculum else 1.0)
        self.train_set.set_epoch(self.epoch, ratio)
        alpha = alpha_at(self.epoch, o.epochs, cfg.loss.alpha, cfg.loss.alpha_drop)
        self.sampler.set_epoch(self.epoch, skip_batches=self.step_in_epoch * o.accum_steps)
        self.forward.train()
        progress = None
        if self.dist.is_main and cfg.log.progress:
            from tqdm import tqdm
            progress = tqdm(total=self.steps_per_epoch, initial=self.step_in_epoch,
                            desc=f'epoch {self.epoch}', file=sys.stderr, leave=False)
        micro = 0
        tick = time.perf_counter()
        for batch in self._loader():
            if self.step_in_epoch >= self.steps_per_epoch:
                break
            if micro == 0:
                lr = learning_rate(self.epoch + self.step_in_epoch / self.steps_per_epoch,
                                   lr=o.lr, min_lr=o.min_lr, warmup_epochs=o.warmup_epochs,
                                   epochs=o.epochs)
                for group in self.optimizer.param_groups:
                    group['lr'] = lr
            micro += 1
            last_micro = micro == o.accum_steps
            sync = contextlib.nullcontext()
            if not last_micro and isinstance(self.forward, DistributedDataParallel):
                sync = self.forward.no_sync()
            imgs, views = split_views(batch, self.device)
            with sync:
                with torch.autocast(self.device.type, dtype=self.autocast_dtype or torch.float32,
                                    enabled=self.use_amp):
                    preds_all = self.forward(imgs)
                loss = spann3r_loss(views, _float_preds(preds_all), alpha,
                                    official_batch_coupling=cfg.loss.official_batch_coupling)
                if not torch.isfinite(loss.total):
                    raise FloatingPointError(f'non-finite loss at step {self.global_step}: '
                                             f'{loss.details}')
                self.scaler.scale(loss.total / o.accum_steps).backward()
            if not last_micro:
                continue
            micro = 0
            self.scaler.unscale_(self.optimizer)
            grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), o.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.optimizer.zero_grad(set_to_none=True)
            self.step_in_epoch += 1
            self.global_step += 1
            if progress is not None:
                progress.update(1)
            if self.global_step % cfg.log.every == 0:
                elapsed = time.perf_counter() - tick
                samples = (cfg.log.every * o.accum_steps * cfg.data.batch_size
                           * self.dist.world_size)
                tick = time.perf_counter()
                total = distributed.mean_over_ranks(float(loss.total.detach()), self.device)
                self._scalar('train/loss', total)
                for key in ('conf_loss', 'scale_loss', 'regr_mean', 'conf_mean'):
                    self._scalar(f'train/{key}', loss.details[key])
                self._scalar('train/lr', lr)
                self._scalar('train/grad_norm', float(grad_norm))
                self._scalar('train/samples_per_s', samples / max(elapsed, 1e-9))
                self._scalar('train/alpha', alpha)
                self._scalar('train/curriculum_ratio', ratio)
                if self.dist.is_main:
                    LOG.info('epoch %d step %d loss %.5f lr %.3g grad %.3g', self.epoch,
                             self.global_step, total, lr, float(grad_norm))
            if cfg.log.checkpoint_every and self.global_step % cfg.log.checkpoint_every == 0:
                self._save(LAST)
            if o.max_steps and self.global_step >= o.max_steps:
                if progress is not None:
                    progress.close()
                return True
        if progress is not None:
            progress.close()
        return False

    def _scalar(self, tag: str, value: float) -> None:
        if self.writer is not None:
            self.writer.add_scalar(tag, value, self.global_step)

    def export(self) -> None:
        """Write ``model.safetensors`` (+ config) and the official ``spann3r.pth`` container."""
        self.model.eval()
        meta = {'global_step': str(self.global_step), 'epoch': str(self.epoch)}
        save_safetensors(self.model, self.model_config, self.out / 'model.safetensors',
                         metadata=meta)
        args = argparse.Namespace(train_config=json.dumps(self.config.to_dict()),
                                  global_step=self.global_step, epoch=self.epoch)
        save_official(self.model, self.out / 'spann3r.pth', args=args, config=self.model_config)
        LOG.info('exported %s and %s', self.out / 'model.safetensors', self.out / 'spann3r.pth')


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse ``CONFIG.yaml [key=value ...]``."""
    parser = argparse.ArgumentParser(prog='spann3r-train', description=__doc__.splitlines()[0])
    parser.add_argument('config', help='training config (YAML)')
    parser.add_argument('overrides', nargs='*', help='dotted.key=value overrides')
    parser.add_argument('--log-level', default='INFO')
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point."""
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format='%(asctime)s %(levelname)s %(name)s: %(message)s')
    try:
        config = load_config(args.config, args.overrides)
        Trainer(config).fit()
    except ValueError as err:
        LOG.error('%s', err)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
