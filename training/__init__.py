"""Standalone trainer for Spann3R (installed as ``training``)."""
