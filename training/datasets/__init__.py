"""Dataset layouts of the official training recipe and what they share."""
