"""Building blocks of the network, with the official parameter names."""
