"""Camera geometry on pointmaps: focal, pose, depth, alignment, frame conventions."""
