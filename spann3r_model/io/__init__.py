"""Files in and out: PLY, TUM, transforms.json, atomic writes, safe pickles."""
