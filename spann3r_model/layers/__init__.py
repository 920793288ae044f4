"""Building blocks of the network, with the official parameter names."""

from .attention import Attention, CrossAttention
from .blocks import Block, DecoderBlock
from .dpt_head import DPTHead
from .patch_embed import PatchEmbed
from .rope import patch_positions, RoPE2D

__all__ = ['Attention', 'Block', 'CrossAttention', 'DecoderBlock', 'DPTHead', 'PatchEmbed',
           'patch_positions', 'RoPE2D']
