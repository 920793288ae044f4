"""ROS message formats without rclpy: image encodings, PointCloud2 layout."""
