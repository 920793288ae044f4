"""The Spann3R network: a DUSt3R encoder/decoder pair with DPT heads, plus memory encoders.

The module tree reproduces the official parameter names (``dust3r.*``, ``value_encoder.*``,
``value_norm.*``, ``value_out.*``, ``pos_patch_embed.*``, ``norm_q/k/v.*``,
``attn_head_1/2.*``), so the official ``state_dict`` loads strictly. Building the architecture
never reads a file; weights are loaded separately (see :mod:`spann3r_model.checkpoint`).
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch
from torch import nn

from spann3r_model.backends.onednn_linear import linear
from spann3r_model.config import MemoryConfig, ModelConfig
from spann3r_model.layers import Block, DecoderBlock, DPTHead, PatchEmbed, RoPE2D
from spann3r_model.layers.blocks import BLOCK_NORM_EPS, run_mlp
from spann3r_model.memory import SpatialMemory

Prediction = dict[str, torch.Tensor]

#: Attention dropout of the memory read in training (official value).
MEMORY_DROPOUT = 0.15


@dataclass
class SequenceOutput:
    """What :meth:`Spann3R.forward_sequence` returns.

    :param preds: N dicts ``{'pts3d': [B, H, W, 3], 'conf': [B, H, W]}`` in frame 0's camera:
        head 1 for frames 0..N-2, head 2 for frame N-1.
    :param preds_all: N-1 pairs ``(res1, res2)``: head 1 of frame i and head 2 of frame i+1.
    :param memory: the spatial memory after the last step.
    """

    preds: list[Prediction]
    preds_all: list[tuple[Prediction, Prediction]] = field(default_factory=list)
    memory: Optional[SpatialMemory] = None


class StereoBackbone(nn.Module):
    """The DUSt3R part (``dust3r.*``): ViT encoder, two interleaved decoders, two DPT heads.

    :param cfg: architecture.
    """

    def __init__(self, cfg: ModelConfig, *, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__()
        kw = {'device': device, 'dtype': dtype}
        enc, dec = cfg.enc_embed_dim, cfg.dec_embed_dim
        # Unused at inference but part of every official checkpoint.
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dec, **kw))
        self.rope = RoPE2D(cfg.rope_base)
        self.patch_embed = PatchEmbed(cfg.patch_size, 3, enc, **kw)
        self.enc_blocks = nn.ModuleList(
            Block(enc, cfg.enc_num_heads, cfg.mlp_ratio, rope=self.rope, **kw)
            for _ in range(cfg.enc_depth))
        self.enc_norm = nn.LayerNorm(enc, eps=BLOCK_NORM_EPS, **kw)
        self.decoder_embed = nn.Linear(enc, dec, **kw)
        self.dec_blocks = nn.ModuleList(
            DecoderBlock(dec, cfg.dec_num_heads, cfg.mlp_ratio, rope=self.rope, **kw)
            for _ in range(cfg.dec_depth))
        self.dec_norm = nn.LayerNorm(dec, eps=BLOCK_NORM_EPS, **kw)
        self.dec_blocks2 = nn.ModuleList(
            DecoderBlock(dec, cfg.dec_num_heads, cfg.mlp_ratio, rope=self.rope, **kw)
            for _ in range(cfg.dec_depth))
        d = cfg.dpt
        dims = (enc, dec, dec, dec)
        for name in ('downstream_head1', 'downstream_head2'):
            setattr(self, name, DPTHead(dims, d.layer_dims, d.feature_dim, d.last_dim,
                                        d.num_channels, cfg.patch_size, **kw))


class Spann3R(nn.Module):
    """Spann3R with the official parameter names.

    :param config: architecture (see :class:`~spann3r_model.config.ModelConfig`).
    :param device: device of the parameters (``'meta'`` builds without allocating).
    :param dtype: dtype of the parameters.
    """

    def __init__(self, config: ModelConfig, *, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__()
        if not isinstance(config, ModelConfig):
            raise ValueError(f'config must be a ModelConfig, got {type(config).__name__}')
        self.config = config
        kw = {'device': device, 'dtype': dtype}
        enc, dec = config.enc_embed_dim, config.dec_embed_dim
        self.dust3r = StereoBackbone(config, **kw)
        # The memory (value) encoder has no positional information (official mem_pos_enc=False).
        self.value_encoder = nn.ModuleList(
            Block(enc, config.value_encoder_num_heads, config.mlp_ratio, rope=None, **kw)
            for _ in range(config.value_encoder_depth))
        self.value_norm = nn.LayerNorm(enc, eps=BLOCK_NORM_EPS, **kw)
        self.value_out = nn.Linear(enc, config.key_dim, **kw)
        self.pos_patch_embed = PatchEmbed(config.patch_size, 3, enc, **kw)
        with torch.no_grad():
            # Official initialisation: a copy of the image patch embedding.
            self.pos_patch_embed.load_state_dict(self.dust3r.patch_embed.state_dict())
        # torch's default eps (1e-5) here, unlike every other LayerNorm of the model.
        self.norm_q = nn.LayerNorm(config.key_dim, **kw)
        self.norm_k = nn.LayerNorm(config.key_dim, **kw)
        self.norm_v = nn.LayerNorm(config.key_dim, **kw)
        for name in ('attn_head_1', 'attn_head_2'):
            setattr(self, name, nn.Sequential(
                nn.Linear(enc + dec, enc + dec, **kw), nn.GELU(),
                nn.Linear(enc + dec, config.key_dim, **kw)))

    # ------------------------------------------------------------------ parts
    def encode_image(self, img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode images.

        :param img: ``[B, 3, H, W]`` in [-1, 1].
        :return: tokens ``[B, P, enc_dim]`` and patch positions ``[B, P, 2]``.
        """
        if img.ndim != 4 or img.shape[1] != 3:
            raise ValueError(f'expected images [B, 3, H, W], got {tuple(img.shape)}')
        net = self.dust3r
        x, pos = net.patch_embed(img)
        for blk in net.enc_blocks:
            x = blk(x, pos)
        return net.enc_norm(x), pos

    def decode(self, feat1: torch.Tensor, pos1: torch.Tensor, feat2: torch.Tensor,
               pos2: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Run the two interleaved decoders.

        Layer l of each branch cross-attends to layer l-1 of the other branch.

        :param feat1: ``[B, P, enc_dim]`` input of decoder 1 (reference view).
        :param pos1: ``[B, P, 2]``.
        :param feat2: ``[B, P, enc_dim]`` input of decoder 2 (target view).
        :param pos2: ``[B, P, 2]``.
        :return: two lists of ``dec_depth + 1`` token maps: the decoder input (encoder width),
            then every block's output, the last one normalised by the shared ``dec_norm``.
        """
        net = self.dust3r
        out1, out2 = [feat1], [feat2]
        x1, x2 = linear(net.decoder_embed, feat1), linear(net.decoder_embed, feat2)
        for blk1, blk2 in zip(net.dec_blocks, net.dec_blocks2):
            x1, x2 = blk1(x1, x2, pos1, pos2), blk2(x2, x1, pos2, pos1)
            out1.append(x1)
            out2.append(x2)
        out1[-1] = net.dec_norm(out1[-1])
        out2[-1] = net.dec_norm(out2[-1])
        return out1, out2

    def hooked(self, dec: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Pick the four token maps the DPT heads read from a full decoder output list."""
        return [dec[i] for i in self.config.dpt.hooks]

    def regress(self, which: int, hooked: Sequence[torch.Tensor], image_hw: tuple[int, int]
                ) -> Prediction:
        """Run head 1 or head 2 in float32 (autocast disabled, as the official code does).

        :param which: 1 or 2.
        :param hooked: the four hooked token maps (see :meth:`hooked`).
        :param image_hw: ``(H, W)`` of the input images.
        :return: ``{'pts3d': [B, H, W, 3], 'conf': [B, H, W]}``.
        """
        head = self.dust3r.downstream_head1 if which == 1 else self.dust3r.downstream_head2
        dev = hooked[0].device.type
        ctx = torch.autocast(dev, enabled=False) if dev in ('cuda', 'cpu') else nullcontext()
        with ctx:
            return head([t.float() for t in hooked], image_hw)

    def key(self, which: int, feat: torch.Tensor, dec_last: torch.Tensor) -> torch.Tensor:
        """Memory key (``which=1``) or query (``which=2``) tokens.

        :param which: 1 for the reference view's key, 2 for the target view's query.
        :param feat: ``[B, P, enc_dim]`` raw encoder tokens of the view.
        :param dec_last: ``[B, P, dec_dim]`` last decoder output of the view.
        :return: ``[B, P, key_dim]``.
        """
        head = self.attn_head_1 if which == 1 else self.attn_head_2
        return run_mlp(head, torch.cat((feat, dec_last.to(feat.dtype)), dim=-1))

    def encode_value(self, pts3d: torch.Tensor) -> torch.Tensor:
        """Memory-encoder output for a pointmap (before the key is added).

        :param pts3d: ``[B, H, W, 3]`` pointmap.
        :return: ``[B, P, key_dim]``.
        """
        x, _ = self.pos_patch_embed(pts3d.permute(0, 3, 1, 2))
        for blk in self.value_encoder:
            x = blk(x)
        return linear(self.value_out, self.value_norm(x))

    def new_memory(self, memory_config: MemoryConfig, tokens_per_frame: int, train: bool = False,
                   dropout: float = MEMORY_DROPOUT) -> SpatialMemory:
        """Create an empty spatial memory bound to this model's q/k/v norms.

        :param dropout: attention dropout of the memory read, applied in training mode only.
        """
        return SpatialMemory(memory_config, self.norm_q, self.norm_k, self.norm_v,
                             tokens_per_frame=tokens_per_frame, train=train, dropout=dropout)

    # ------------------------------------------------------------------ whole sequence
    def forward_sequence(self, imgs: Sequence[torch.Tensor],
                         memory_config: Optional[MemoryConfig] = None, train: bool = False,
                         memory_dropout: float = MEMORY_DROPOUT) -> SequenceOutput:
        """Run the official online loop over a whole sequence.

        :param imgs: N >= 2 tensors ``[B, 3, H, W]`` in [-1, 1], all the same size.
        :param memory_config: memory limits (official defaults when None).
        :param train: official training forward: every frame stored, attention dropout,
            no clipping, no similarity skip, no pruning.
        :param memory_dropout: attention dropout in training mode (official 0.15).
        :return: see :class:`SequenceOutput`.
        """
        if len(imgs) < 2:
            raise ValueError(f'forward_sequence needs at least 2 frames, got {len(imgs)}')
        shape = imgs[0].shape
        for i, im in enumerate(imgs):
            if im.shape != shape:
                raise ValueError(f'frame {i} has shape {tuple(im.shape)}, frame 0 {tuple(shape)}')
        hw = (shape[-2], shape[-1])
        memory = None
        preds: list[Prediction] = []
        preds_all: list[tuple[Prediction, Prediction]] = []
        feat2, pos2 = self.encode_image(imgs[0])
        query = None
        res2 = None
        for i in range(len(imgs) - 1):
            feat1, pos1 = feat2, pos2
            feat2, pos2 = self.encode_image(imgs[i + 1])
            if memory is None:
                memory = self.new_memory(memory_config or MemoryConfig(), feat1.shape[1], train,
                                         memory_dropout)
            fused = feat1 if query is None else memory.read(query)
            dec1, dec2 = self.decode(fused, pos1, feat2, pos2)
            key = self.key(1, feat1, dec1[-1])
            query = self.key(2, feat2, dec2[-1])
            res1 = self.regress(1, self.hooked(dec1), hw)
            res2 = self.regress(2, self.hooked(dec2), hw)
            value = self.encode_value(res1['pts3d'])
            memory.write(key, value + key, frame=i)
            preds.append(res1)
            preds_all.append((res1, res2))
        preds.append(res2)
        return SequenceOutput(preds=preds, preds_all=preds_all, memory=memory)
