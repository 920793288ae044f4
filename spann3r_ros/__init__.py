"""ROS 2 layer over the ROS-free Spann3R core."""
