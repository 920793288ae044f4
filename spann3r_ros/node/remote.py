"""Talk to a running node from outside: an rclpy context, find the node, read a parameter."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Optional

from spann3r_ros.node.discovery import find_node, image_topic, NodeTarget


@contextmanager
def ros_context() -> Iterator[None]:
    """Initialise rclpy for the block unless it already is; shut down only what it started."""
    import rclpy

    owns_context = not rclpy.ok()
    if owns_context:
        rclpy.init()
    try:
        yield
    finally:
        if owns_context:
            rclpy.try_shutdown()


def node_min_confidence(full_name: str, timeout: float) -> float:
    """Ask the running node for its ``min_confidence`` parameter.

    rclpy must be initialised.

    :param full_name: the node's fully qualified name, e.g. ``/spann3r/spann3r_node``.
    :raises ValueError: when the node's parameter service does not answer within ``timeout``.
    """
    from rcl_interfaces.msg import ParameterType
    from rcl_interfaces.srv import GetParameters
    import rclpy

    node = rclpy.create_node('spann3r_eval_live_params')
    try:
        client = node.create_client(GetParameters, f'{full_name}/get_parameters')
        if not client.wait_for_service(timeout_sec=timeout):
            raise ValueError(f'node {full_name} has no parameter service (waited {timeout:.0f} '
                             's); is it running? Pass --namespace and --node-name, or '
                             '--min-confidence')
        future = client.call_async(GetParameters.Request(names=['min_confidence']))
        rclpy.spin_until_future_complete(node, future, timeout_sec=timeout)
        response = future.result()
        value = response.values[0] if response is not None and response.values else None
        if value is None or value.type != ParameterType.PARAMETER_DOUBLE:
            raise ValueError(f'node {full_name} did not report a float min_confidence; '
                             'pass --min-confidence')
        return float(value.double_value)
    finally:
        node.destroy_node()


def locate_node(namespace: Optional[str], node_name: Optional[str], topic: Optional[str],
                timeout: float) -> tuple[NodeTarget, str]:
    """Find the node to play into and the image topic to publish on.

    rclpy must be initialised.

    :param namespace: the node's namespace, or None to find it on the graph.
    :param node_name: the node's name, or None to find it on the graph.
    :param topic: the image topic (relative names resolve in the node's namespace), or None
        for the raw image topic the node subscribes to.
    :return: the node and the absolute image topic.
    :raises ValueError: when no node or several match, or its image topic is not clear.
    """
    import rclpy

    node = rclpy.create_node('spann3r_eval_live_discovery')
    try:
        target = find_node(node, namespace=namespace, name=node_name, timeout=timeout)
        if topic is None:
            return target, image_topic(node, target, timeout)
        return target, target.topic(topic)
    finally:
        node.destroy_node()
