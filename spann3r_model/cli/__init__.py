"""Command-line tools of the model core."""
