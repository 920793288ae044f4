"""The command-line tools and the demo."""
