"""Find a running Spann3R node on the ROS graph and the names of its topics and services.

A node counts as a Spann3R node when it offers the private services ``~/reset`` and
``~/save_session``, both ``std_srvs/srv/Trigger``: no other node offers that pair, and it
identifies the node whatever it was renamed to (``__node:=``) and in whatever namespace a
launch file put it (``live.launch.py`` uses ``/spann3r``). The node's topics are relative names,
so they live in its namespace (``/spann3r/points``); its services are private
(``/spann3r/spann3r_node/reset``).

The functions take an rclpy node to query the graph with; this module imports no ROS package.
"""

from __future__ import annotations

from dataclasses import dataclass
import re
import time
from typing import Any, Optional

#: The private services that identify a Spann3R node.
IDENTIFYING_SERVICES = ('reset', 'save_session')
TRIGGER_TYPE = 'std_srvs/srv/Trigger'
RAW_IMAGE_TYPE = 'sensor_msgs/msg/Image'
#: Seconds discovery keeps looking once a first node was found, for others that arrive later.
SETTLE_S = 1.0
_POLL_S = 0.05
_CHOOSE = 'choose one with --namespace and --node-name'
_SEGMENT = re.compile(r'[A-Za-z_][A-Za-z0-9_]*')


@dataclass(frozen=True)
class NodeTarget:
    """Where a Spann3R node is on the graph.

    :param namespace: absolute namespace, ``/`` for the root.
    :param name: the node's name (without namespace).
    """

    namespace: str
    name: str

    @property
    def full_name(self) -> str:
        """Return the fully qualified name, e.g. ``/spann3r/spann3r_node``."""
        return self.namespace.rstrip('/') + '/' + self.name

    def service(self, name: str) -> str:
        """Return the absolute name of the node's private service ``~/name``."""
        return f'{self.full_name}/{name}'

    def topic(self, name: str) -> str:
        """Return ``name`` resolved as the node resolves it (before remapping).

        Absolute names stay, ``~/x`` is private to the node, anything else is relative to
        its namespace: ``image`` in ``/spann3r`` is ``/spann3r/image``.
        """
        if name.startswith('/'):
            return name
        if name.startswith('~'):
            return self.service(name[1:].lstrip('/'))
        return self.namespace.rstrip('/') + '/' + name


def normalize_namespace(namespace: str) -> str:
    """Return ``namespace`` as an absolute namespace without trailing slash (``/`` for root).

    :raises ValueError: for an invalid namespace (characters other than letters, digits, ``_``
        and ``/``, empty segments, a segment that starts with a digit).
    """
    ns = '/' + namespace.strip().strip('/')
    segments = ns.split('/')[1:] if ns != '/' else []
    for segment in segments:
        if not _SEGMENT.fullmatch(segment):
            raise ValueError(f'invalid namespace {namespace!r}: segments are letters, digits '
                             'and _, and do not start with a digit')
    return ns


def is_spann3r_node(services: list[tuple[str, list[str]]], target: NodeTarget) -> bool:
    """Return whether ``services`` (as the graph lists them for ``target``) identify Spann3R.

    :param services: ``(service name, [type, ...])`` pairs of the node.
    """
    offered = {name: types for name, types in services}
    return all(TRIGGER_TYPE in offered.get(target.service(s), ())
               for s in IDENTIFYING_SERVICES)


def spann3r_nodes(graph_node: Any) -> list[NodeTarget]:
    """Return the Spann3R nodes ``graph_node`` sees on the graph now, sorted by full name."""
    found = []
    for name, namespace in graph_node.get_node_names_and_namespaces():
        target = NodeTarget(namespace or '/', name)
        try:
            services = graph_node.get_service_names_and_types_by_node(name, namespace)
        except RuntimeError:  # rclpy's NodeNameNonExistentError: the node just left
            continue
        if is_spann3r_node(services, target):
            found.append(target)
    return sorted(set(found), key=lambda t: t.full_name)


def find_node(graph_node: Any, *, namespace: Optional[str] = None, name: Optional[str] = None,
              timeout: float = 10.0, settle: float = SETTLE_S) -> NodeTarget:
    """Return the one Spann3R node that matches the options.

    With both ``namespace`` and ``name`` the answer is that node, without looking at the graph
    (its services and topics are waited for where they are used). Otherwise the graph is
    searched for Spann3R nodes, restricted to the given namespace or name, until one is
    found or ``timeout`` passes; then for ``settle`` more seconds, to see whether more come.

    :param graph_node: an rclpy node of an initialised context.
    :param namespace: the node's namespace (``spann3r`` or ``/spann3r``), or None for any.
    :param name: the node's name, or None for any.
    :raises ValueError: when no node or several nodes match; the message lists the Spann3R
        nodes seen (full names) and the options that choose one.
    """
    namespace = None if namespace is None else normalize_namespace(namespace)
    if namespace is not None and name is not None:
        return NodeTarget(namespace, name)

    def matching() -> list[NodeTarget]:
        return [t for t in spann3r_nodes(graph_node)
                if (namespace is None or t.namespace == namespace)
                and (name is None or t.name == name)]

    deadline = time.monotonic() + timeout
    found = matching()
    while not found and time.monotonic() < deadline:
        time.sleep(_POLL_S)
        found = matching()
    settle_until = min(deadline, time.monotonic() + settle)
    while found and time.monotonic() < settle_until:
        time.sleep(_POLL_S)
        found = sorted(set(found) | set(matching()), key=lambda t: t.full_name)
    if len(found) == 1:
        return found[0]
    wanted = ''.join(p for p in (
        '' if namespace is None else f' in namespace {namespace}',
        '' if name is None else f' named {name}'))
    if found:
        raise ValueError(f'{len(found)} Spann3R nodes{wanted} on the ROS graph: '
                         f'{", ".join(t.full_name for t in found)}; {_CHOOSE} '
                         f'(e.g. --namespace {found[0].namespace} --node-name {found[0].name})')
    raise ValueError(f'no Spann3R node{wanted} on the ROS graph (waited {timeout:.0f} s; a '
                     f'Spann3R node offers ~/reset and ~/save_session); {_seen(graph_node)}')


def _seen(graph_node: Any) -> str:
    """Say which Spann3R nodes (or, without any, which nodes) are on the graph."""
    everything = spann3r_nodes(graph_node)
    if everything:
        return (f'Spann3R nodes on the graph: {", ".join(t.full_name for t in everything)}; '
                f'{_CHOOSE}')
    others = sorted(NodeTarget(ns or '/', n).full_name
                    for n, ns in graph_node.get_node_names_and_namespaces())
    return (f'other nodes on the graph: {", ".join(others) or "none"} (is the Spann3R node '
            'running, with the same ROS_DOMAIN_ID?)')


def image_topic(graph_node: Any, target: NodeTarget, timeout: float = 10.0) -> str:
    """Return the raw ``sensor_msgs/Image`` topic ``target`` subscribes to (resolved name).

    The graph lists the name after namespacing and remapping, so ``image_topics: [image]`` in
    namespace ``/spann3r`` gives ``/spann3r/image``, and ``-r image:=/cam`` gives ``/cam``.

    :raises ValueError: when the node does not appear, subscribes to no raw image topic
        (``transport: compressed``) or to several (one per camera); the message says which
        topics it has and that ``--topic`` chooses one.
    """
    deadline = time.monotonic() + timeout
    present = False
    while True:
        try:
            subscriptions = graph_node.get_subscriber_names_and_types_by_node(
                target.name, target.namespace)
            present = True
        except RuntimeError:  # rclpy's NodeNameNonExistentError: not on the graph yet
            subscriptions = []
        topics = sorted(t for t, types in subscriptions if RAW_IMAGE_TYPE in types)
        if topics or time.monotonic() >= deadline:
            break
        time.sleep(_POLL_S)
    if not present:
        raise ValueError(f'node {target.full_name} is not on the ROS graph (waited '
                         f'{timeout:.0f} s); {_seen(graph_node)}')
    if len(topics) == 1:
        return topics[0]
    if topics:
        raise ValueError(f'node {target.full_name} subscribes to {len(topics)} image topics '
                         f'({", ".join(topics)}); choose one with --topic')
    listed = ', '.join(f'{t} ({"/".join(types)})' for t, types in sorted(subscriptions))
    raise ValueError(f'node {target.full_name} subscribes to no {RAW_IMAGE_TYPE} topic '
                     f'(waited {timeout:.0f} s; subscriptions: {listed or "none"}); the player '
                     'publishes raw images: run the node with transport raw, or name the topic '
                     'with --topic')
