"""The spatial memory of Spann3R as explicit state with read, write and prune.

The memory holds one key and one value token per image patch of every stored frame. Its rules,
kept exactly as the official implementation has them:

* **read** (one query token per patch): ``softmax(norm_q(q) norm_k(K)^T / sqrt(C))``; in
  training, dropout on the attention; otherwise values below ``attn_thresh`` are zeroed and the
  rows renormalised (a row with nothing left, which the official code turns into NaN, keeps its
  unthresholded softmax weights instead). The readout ``attn norm_v(V)`` plus the
  *un-normalised* query is returned, and every memory token accumulates the (clipped) attention
  it received.
* **write** (evaluation): the new key is compared, patch by patch, with each frame of the working
  memory, which is simply the last ``wm * P`` slots; a mean cosine similarity above
  ``sim_thresh`` skips the frame. Otherwise the tokens are appended, older tokens age by one, and
  the ``wm`` / ``lm`` counters move. Once ``lm`` exceeds ``long_mem_size`` the memory is pruned.
* **prune**: weight ``accumulated attention / age``, tokens younger than ``work_mem_size + 5``
  protected, top-k over the *whole* memory with ``k = long_mem_size``. The kept tokens are stored
  in descending weight order, so afterwards the "working memory" slots are the lowest-weight kept
  tokens, not the newest frame. That quirk changes later similarity checks and is preserved.
* **training**: every frame is stored, no similarity check, no counters, no pruning.

Inference writes into preallocated buffers (capacity ``long_mem_size + (work_mem_size + 1) P``
tokens, the most the rules above can hold), so nothing is concatenated per frame. When the
tensors carry gradients the memory is built functionally with ``torch.cat`` instead, because
in-place writes would invalidate tensors saved for the backward pass; both give equal values.
"""

from __future__ import annotations

from dataclasses import dataclass
import logging
from typing import Optional

import torch
from torch import nn
import torch.nn.functional as F

from spann3r_model.config import MemoryConfig

_LOG = logging.getLogger(__name__)

#: Weight that protects the newest tokens from pruning (the official constant).
PROTECTED_WEIGHT = 1e8
#: Tokens stored fewer than ``work_mem_size + PROTECT_EXTRA_FRAMES`` writes ago are protected.
PROTECT_EXTRA_FRAMES = 5


@dataclass
class WriteReport:
    """Outcome of one :meth:`SpatialMemory.write`.

    :param stored: False when the similarity rule skipped the frame.
    :param similarity: largest mean cosine similarity to a working-memory frame, when checked.
    :param pruned: ``(tokens_before, tokens_after)`` when the write triggered a prune.
    """

    stored: bool
    similarity: Optional[float] = None
    pruned: Optional[tuple[int, int]] = None


class SpatialMemory:
    """Keys, values and bookkeeping of the memory for one batch of sequences.

    :param config: limits and thresholds.
    :param norm_q: LayerNorm applied to queries.
    :param norm_k: LayerNorm applied to keys.
    :param norm_v: LayerNorm applied to values.
    :param tokens_per_frame: P, tokens written per frame (196 at 224x224 with 16-pixel patches).
    :param train: official training behaviour (store every frame, dropout, no clipping).
    :param dropout: attention dropout probability in training.
    """

    def __init__(self, config: MemoryConfig, norm_q: nn.Module, norm_k: nn.Module,
                 norm_v: nn.Module, *, tokens_per_frame: int, train: bool = False,
                 dropout: float = 0.15) -> None:
        if tokens_per_frame <= 0:
            raise ValueError(f'tokens_per_frame must be positive, got {tokens_per_frame}')
        lm = config.long_mem_size
        if not train and 0 < lm < config.work_mem_size * tokens_per_frame:
            raise ValueError(
                f'long_mem_size {lm} is smaller than the working memory '
                f'({config.work_mem_size} frames x {tokens_per_frame} tokens); pruning would '
                'leave fewer tokens than the working memory needs')
        self.config = config
        self.norm_q, self.norm_k, self.norm_v = norm_q, norm_k, norm_v
        self.P = tokens_per_frame
        self.train = train
        self.dropout = dropout
        self.attn_thresh = 0.0 if train else config.attn_thresh
        self.capacity = lm + (config.work_mem_size + 1) * tokens_per_frame
        self.reset()

    def reset(self) -> None:
        """Forget everything (buffers are re-created on the next write)."""
        self.n = 0
        self.wm = 0
        self.lm = 0
        self.keys: Optional[torch.Tensor] = None         # [B, cap, C] raw keys (for similarity)
        self.keys_normed: Optional[torch.Tensor] = None  # [B, cap, C] norm_k(keys)
        self.values_normed: Optional[torch.Tensor] = None  # [B, cap, C] norm_v(values)
        self.attn: Optional[torch.Tensor] = None         # [B, cap] accumulated attention
        self.count: Optional[torch.Tensor] = None        # [B, cap] writes since stored (float)
        self.origin: Optional[torch.Tensor] = None       # [B, cap, 2] (frame, patch) int64
        self._functional = False

    # ------------------------------------------------------------------ views
    @property
    def num_tokens(self) -> int:
        """Tokens currently stored."""
        return self.n

    def frames(self) -> list[int]:
        """Frame indices with at least one token stored (batch element 0), ascending."""
        if self.origin is None or self.n == 0:
            return []
        return sorted(set(self.origin[0, :self.n, 0].tolist()))

    # ------------------------------------------------------------------ read
    def read(self, query: torch.Tensor) -> torch.Tensor:
        """Read the memory with one query per patch and accumulate the attention.

        :param query: ``[B, P, C]`` query tokens.
        :return: ``[B, P, C]`` readout plus the query.
        """
        if self.n == 0:
            raise ValueError('cannot read an empty memory')
        k = self.keys_normed[:, :self.n]
        v = self.values_normed[:, :self.n]
        affinity = torch.matmul(self.norm_q(query), k.transpose(1, 2))
        affinity = affinity / self._sqrt_dim(query.shape[-1])
        attn = torch.softmax(affinity, dim=-1)
        if self.train and self.dropout > 0:
            attn = F.dropout(attn, self.dropout, training=True)
        if self.attn_thresh > 0:
            attn = self._clip(attn)
        out = torch.matmul(attn, v.to(attn.dtype)) + query
        received = attn.detach().sum(dim=1).to(self.attn.dtype)
        if self._functional:
            self.attn = self.attn + received
        else:
            self.attn[:, :self.n] += received
        return out

    def _clip(self, attn: torch.Tensor) -> torch.Tensor:
        """Zero attention below ``attn_thresh`` and renormalise each row by its sum.

        A row with no weight at or above the threshold (a flat query over more than
        ``1 / attn_thresh`` tokens) would be 0 / 0, and its NaN would reach the readout and the
        accumulated attention that every later prune ranks by. Such a row keeps its
        unthresholded softmax weights instead (renormalised like every other row): it stays a
        distribution, so its readout, the mean of the values weighted by similarity, is on the
        scale of every other row's, and each token receives its share of the query's unit of
        attention. Zeroing the row would instead drop the memory from that patch altogether.
        Other rows go through exactly the official operations, so they are bit-identical.

        :param attn: ``[B, P, N]`` softmax attention.
        :return: ``[B, P, N]`` clipped attention, each row summing to one.
        """
        keep = attn >= self.attn_thresh
        # A mask, not a branch: no host synchronisation on the device.
        keep = keep | ~keep.any(dim=-1, keepdim=True)
        attn = attn.masked_fill(~keep, 0.0)
        return attn / attn.sum(dim=-1, keepdim=True)

    @staticmethod
    def _sqrt_dim(dim: int) -> float:
        # float32 square root, as the official code computes it, as a plain number so that no
        # tensor is created (or copied to the device) on every read.
        return float(torch.tensor(float(dim)).sqrt())

    # ------------------------------------------------------------------ write
    def similarity(self, key: torch.Tensor) -> Optional[float]:
        """Largest mean per-patch cosine similarity of ``key`` to a working-memory frame.

        :param key: ``[B, P, C]``.
        :return: the similarity, or None when the memory is empty.
        """
        if self.n == 0 or self.wm == 0:
            return None
        b, p, c = key.shape
        wm = self.keys[:, self.n - self.wm * p:self.n].reshape(b, self.wm, p, c)
        with torch.no_grad():
            corr = torch.einsum('bpc,btpc->btp', F.normalize(key, dim=-1),
                                F.normalize(wm, dim=-1))
            return float(corr.mean(dim=-1).max())

    def write(self, key: torch.Tensor, value: torch.Tensor, frame: int = -1) -> WriteReport:
        """Store a frame's keys and values following the official rules.

        :param key: ``[B, P, C]`` key tokens.
        :param value: ``[B, P, C]`` value tokens (memory-encoder output plus the key).
        :param frame: frame index recorded as the tokens' provenance.
        :return: what happened.
        """
        if key.shape != value.shape or key.ndim != 3 or key.shape[1] != self.P:
            raise ValueError(f'expected key and value of shape [B, {self.P}, C], got '
                             f'{tuple(key.shape)} and {tuple(value.shape)}')
        if self.train:
            self._append(key, value, frame)
            return WriteReport(stored=True)
        sim = None
        if self.config.sim_thresh < 1.0:
            sim = self.similarity(key)
            if sim is not None and sim > self.config.sim_thresh:
                _LOG.debug('frame %d not stored: similarity %.4f', frame, sim)
                return WriteReport(stored=False, similarity=sim)
        self._append(key, value, frame)
        self.wm += 1
        if self.wm > self.config.work_mem_size:
            self.wm -= 1
            if self.config.long_mem_size == 0:
                self._drop_oldest_frame()
            else:
                self.lm += self.P
        pruned = None
        if self.lm > self.config.long_mem_size:
            before = self.n
            self._prune()
            self.lm = self.config.long_mem_size - self.wm * self.P
            pruned = (before, self.n)
            _LOG.debug('memory pruned: %d -> %d tokens', before, self.n)
        return WriteReport(stored=True, similarity=sim, pruned=pruned)

    def _allocate(self, key: torch.Tensor, functional: Optional[bool] = None) -> None:
        b, _, c = key.shape
        if functional is None:
            functional = key.requires_grad or torch.is_grad_enabled() and any(
                p.requires_grad for p in self.norm_k.parameters())
        self._functional = functional
        cap = 0 if self._functional else self.capacity
        dt = key.dtype if key.dtype in (torch.float32, torch.float64) else torch.float32
        kw = {'device': key.device, 'dtype': dt}
        self.keys = torch.zeros(b, cap, c, **kw)
        self.keys_normed = torch.zeros(b, cap, c, **kw)
        self.values_normed = torch.zeros(b, cap, c, **kw)
        self.attn = torch.zeros(b, cap, **kw)
        self.count = torch.zeros(b, cap, **kw)
        self.origin = torch.zeros(b, cap, 2, device=key.device, dtype=torch.int64)

    def _append(self, key: torch.Tensor, value: torch.Tensor, frame: int) -> None:
        if self.keys is None:
            self._allocate(key)
        b, p, _ = key.shape
        kn, vn = self.norm_k(key), self.norm_v(value)
        origin = torch.stack([torch.full((p,), frame, dtype=torch.int64, device=key.device),
                              torch.arange(p, device=key.device)], dim=-1).expand(b, p, 2)
        zeros = torch.zeros(b, p, device=key.device, dtype=self.attn.dtype)
        if self._functional:
            self.count = torch.cat([self.count + 1, zeros], dim=1)
            self.attn = torch.cat([self.attn, zeros], dim=1)
            self.keys = torch.cat([self.keys, key.to(self.keys.dtype)], dim=1)
            self.keys_normed = torch.cat([self.keys_normed, kn.to(self.keys.dtype)], dim=1)
            self.values_normed = torch.cat([self.values_normed, vn.to(self.keys.dtype)], dim=1)
            self.origin = torch.cat([self.origin, origin], dim=1)
        else:
            n = self.n
            if n + p > self.keys.shape[1]:
                raise RuntimeError(f'memory capacity {self.keys.shape[1]} exceeded')
            self.count[:, :n] += 1
            self.count[:, n:n + p] = 0
            self.attn[:, n:n + p] = 0
            self.keys[:, n:n + p] = key
            self.keys_normed[:, n:n + p] = kn
            self.values_normed[:, n:n + p] = vn
            self.origin[:, n:n + p] = origin
        self.n += p

    def _buffers(self) -> list[str]:
        return ['keys', 'keys_normed', 'values_normed', 'attn', 'count', 'origin']

    def _drop_oldest_frame(self) -> None:
        p, n = self.P, self.n
        for name in self._buffers():
            t = getattr(self, name)
            if self._functional:
                setattr(self, name, t[:, p:])
            else:
                t[:, :n - p] = t[:, p:n].clone()
        self.n -= p

    def _prune(self) -> None:
        n, top_k = self.n, self.config.long_mem_size
        count = self.count[:, :n]
        weights = self.attn[:, :n] / count
        weights = weights.masked_fill(count < self.config.work_mem_size + PROTECT_EXTRA_FRAMES,
                                      PROTECTED_WEIGHT)
        # Same call shape as the official code ([B, T, 1], dim=1) so that ties among the
        # protected tokens come out in the same order.
        _, idx = torch.topk(weights.unsqueeze(-1), top_k, dim=1)
        idx = idx.squeeze(-1)
        for name in self._buffers():
            t = getattr(self, name)[:, :n]
            gather_idx = idx if t.ndim == 2 else idx.unsqueeze(-1).expand(-1, -1, t.shape[-1])
            kept = torch.gather(t, 1, gather_idx)
            if self._functional:
                setattr(self, name, kept)
            else:
                getattr(self, name)[:, :top_k] = kept
        self.n = top_k

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, torch.Tensor]:
        """Return the stored tokens and bookkeeping (CPU copies) for persistence."""
        if self.keys is None:
            return {}
        out = {name: getattr(self, name)[:, :self.n].detach().cpu().clone()
               for name in self._buffers()}
        out['counters'] = torch.tensor([self.n, self.wm, self.lm], dtype=torch.int64)
        return out

    def load_state_dict(self, state: dict[str, torch.Tensor], device: torch.device | str,
                        dtype: torch.dtype = torch.float32) -> None:
        """Restore a memory saved by :meth:`state_dict`.

        :param state: tensors from :meth:`state_dict` (empty for an empty memory).
        :param device: device of the buffers.
        :param dtype: floating dtype of the buffers.
        """
        self.reset()
        if not state:
            return
        missing = set(self._buffers() + ['counters']) - set(state)
        if missing:
            raise ValueError(f'memory state lacks {sorted(missing)}')
        n, wm, lm = (int(x) for x in state['counters'])
        keys = state['keys']
        if keys.ndim != 3 or keys.shape[1] != n or n > self.capacity:
            raise ValueError(f'memory state holds {tuple(keys.shape)} keys for {n} tokens; '
                             f'capacity is {self.capacity}')
        for name in self._buffers():
            if state[name].shape[:2] != keys.shape[:2]:
                raise ValueError(f'memory state {name!r} has shape {tuple(state[name].shape)}, '
                                 f'expected leading dims {tuple(keys.shape[:2])}')
        self._allocate(keys.to(device=device, dtype=dtype), functional=False)
        with torch.no_grad():
            for name in self._buffers():
                getattr(self, name)[:, :n] = state[name].to(device)
        self.n, self.wm, self.lm = n, wm, lm
