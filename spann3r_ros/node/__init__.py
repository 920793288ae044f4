"""The rclpy layer: the node, its parameters, message conversions and clients."""
