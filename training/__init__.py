"""Standalone trainer for Spann3R (installed as ``spann3r_training``)."""
