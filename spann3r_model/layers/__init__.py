"""Building blocks of the network, with the official parameter names."""

from spann3r_model.layers.attention import Attention, CrossAttention
from spann3r_model.layers.blocks import Block, DecoderBlock
from spann3r_model.layers.dpt_head import DPTHead
from spann3r_model.layers.patch_embed import PatchEmbed
from spann3r_model.layers.rope import patch_positions, RoPE2D

__all__ = ['Attention', 'Block', 'CrossAttention', 'DecoderBlock', 'DPTHead', 'PatchEmbed',
           'patch_positions', 'RoPE2D']
