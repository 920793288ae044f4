"""Dataset layouts and the official crop, shared by export, evaluation and training."""
