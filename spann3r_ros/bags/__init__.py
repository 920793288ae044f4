"""rosbags reading and writing, the dataset exporter and its TF buffer."""
