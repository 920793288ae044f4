"""Spann3R in pure PyTorch: the network, its spatial memory and a streaming session."""

__version__ = '0.1.0'
