"""Deterministic synthetic RGB-D rooms with exact ground truth."""
