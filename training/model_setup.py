"""Building the network for training: architecture, initial weights, optimiser groups.

The training forward is wrapped in a small module so DistributedDataParallel sees one
``forward`` that runs the whole sequence with the official training-mode memory.
"""

from __future__ import annotations

import logging
from typing import Sequence

import torch
from torch import nn

from spann3r_model.checkpoint import load_into, read_state_dict
from spann3r_model.checkpoint_keys import filter_state_dict, match_state_dict
from spann3r_model.config import ModelConfig
from spann3r_model.spann3r import Spann3R

LOG = logging.getLogger(__name__)


class TrainingForward(nn.Module):
    """``forward(imgs) -> preds_all`` with the training-mode memory of the official recipe.

    :param model: the network.
    :param memory_dropout: attention dropout of the memory read (0.15 officially).
    """

    def __init__(self, model: Spann3R, memory_dropout: float) -> None:
        super().__init__()
        self.model = model
        self.memory_dropout = memory_dropout

    def forward(self, imgs: Sequence[torch.Tensor]) -> list:
        """Run the sequence; return the ``N - 1`` pairs ``(res1, res2)``."""
        return self.model.forward_sequence(list(imgs), train=True,
                                           memory_dropout=self.memory_dropout).preds_all


def build_model(config: ModelConfig, init: str, checkpoint: str, device: torch.device
                ) -> Spann3R:
    """Build the network and load its starting weights.

    :param init: ``scratch``; ``spann3r`` (a complete Spann3R checkpoint, strict); or
        ``dust3r`` (DUSt3R weights for ``dust3r.*``, with ``pos_patch_embed`` copied from the
        DUSt3R patch embedding as the official constructor does; the rest stays freshly
        initialised).
    :raises ValueError: if the checkpoint does not fit.
    """
    model = Spann3R(config)
    if init == 'spann3r':
        state_dict, _ = read_state_dict(checkpoint)
        load_into(model, state_dict, checkpoint)
        LOG.info('initialised from Spann3R weights %s', checkpoint)
    elif init == 'dust3r':
        state_dict, _ = read_state_dict(checkpoint)
        prefixed = {k if k.startswith('dust3r.') else f'dust3r.{k}': v
                    for k, v in state_dict.items()}
        own = model.state_dict()
        expected = {k: v.shape for k, v in own.items() if k.startswith('dust3r.')}
        # The same strict matching (aliases, prefixes, shapes) as a full load, on the subset.
        matched = match_state_dict(expected, filter_state_dict(prefixed, checkpoint), checkpoint)
        with torch.no_grad():
            for key, value in matched.items():
                own[key].copy_(value)
            for key in own:
                if key.startswith('pos_patch_embed.'):
                    source = 'dust3r.patch_embed.' + key[len('pos_patch_embed.'):]
                    if source in own:
                        own[key].copy_(own[source])
        LOG.info('initialised the dust3r part from %s', checkpoint)
    elif init != 'scratch':
        raise ValueError(f'unknown init {init!r}')
    return model.to(device)


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: weight decay on matrices, none on biases and 1-D parameters (norms)."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if param.ndim <= 1 or name.endswith('.bias'):
            no_decay.append(param)
        else:
            decay.append(param)
    return [{'params': decay, 'weight_decay': weight_decay},
            {'params': no_decay, 'weight_decay': 0.0}]
