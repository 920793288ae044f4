"""CPU speed, opt-in: oneDNN linear layers, packed weights, int8, allocator."""
