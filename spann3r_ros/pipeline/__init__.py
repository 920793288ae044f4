"""The ROS-free live pipeline the node drives: queue, gate, worker, store."""
