"""spann3r-eval --live finds the node where live.launch.py starts it (real rclpy, in-process).

The node runs as the launch file starts it: namespace ``spann3r`` and its image topic remapped
to an absolute camera topic. Without options the player finds it on the graph, publishes on the
remapped topic and listens in the namespace; options choose among several nodes.
"""

import json
from pathlib import Path
import threading

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from node_harness import synthetic_scannet
import pytest
from rclpy.executors import MultiThreadedExecutor
from rclpy.parameter import Parameter

from spann3r_ros.cli.eval import main as eval_main
from spann3r_ros.node.discovery import NodeTarget
from spann3r_ros.node.node import Spann3rNode
from spann3r_ros.node.player import frames_processed

WEIGHTS = Path(__file__).resolve().parents[2] / 'weights' / 'spann3r_tiny_demo.safetensors'
FRAMES = 3
CAMERA = '/cam/image_raw'


class Nodes:
    """Spann3R nodes, each spinning in its own executor thread so each can stop alone."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.running = {}

    def start(self, namespace: str, cli_args=None) -> Spann3rNode:
        params = {'checkpoint': str(WEIGHTS), 'device': 'cpu', 'min_confidence': 1.0,
                  'image_size': 112, 'num_threads': 1, 'map_publish_rate': 0.0,
                  'diagnostics_rate': 20.0, 'output_dir': str(self.out_dir / namespace)}
        node = Spann3rNode(namespace=namespace, cli_args=cli_args,
                           parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
        executor = MultiThreadedExecutor(num_threads=2)
        executor.add_node(node)
        thread = threading.Thread(target=executor.spin, daemon=True)
        thread.start()
        self.running[node] = (executor, thread)
        return node

    def stop(self, node: Spann3rNode) -> None:
        executor, thread = self.running.pop(node)
        node.shutdown()
        executor.shutdown()
        thread.join(timeout=5)
        node.destroy_node()

    def close(self) -> None:
        for node in list(self.running):
            self.stop(node)


@pytest.fixture(scope='module')
def nodes(ros, tmp_path_factory):
    started = Nodes(tmp_path_factory.mktemp('out'))
    yield started
    started.close()


@pytest.fixture(scope='module')
def launched(nodes):
    """The node as live.launch.py starts it."""
    return nodes.start('spann3r', cli_args=['--ros-args', '-r', f'image:={CAMERA}'])


@pytest.fixture(scope='module')
def sequence(tmp_path_factory):
    return synthetic_scannet(tmp_path_factory.mktemp('synth'), FRAMES)


def _live(sequence: Path, out: Path, *options: str) -> int:
    return eval_main([str(sequence), '--live', '--no-icp', '--out', str(out), '--timeout', '60',
                      *options])


def _report(out: Path) -> dict:
    return json.loads((out / 'report.json').read_text())['live']


@pytest.fixture(scope='module')
def found_run(launched, sequence, tmp_path_factory):
    """One playback with no option: the node is found on the graph."""
    out = tmp_path_factory.mktemp('found')
    assert _live(sequence, out) == 0
    return out


def test_without_options_the_node_is_found_in_its_namespace(found_run):
    live = _report(found_run)
    assert live['node'] == '/spann3r/spann3r_node'
    # The topic it subscribes to after remapping, not the player's own /image.
    assert live['image_topic'] == CAMERA
    # Its outputs came back from /spann3r/points etc. and its ~/reset answered.
    assert live['frames_answered'] == live['frames_evaluated'] == FRAMES - 1
    assert '`/spann3r/spann3r_node` (frames on `/cam/image_raw`)' in (
        found_run / 'report.md').read_text()


def test_explicit_namespace_name_and_topic(launched, sequence, tmp_path):
    out = tmp_path / 'explicit'
    assert _live(sequence, out, '--namespace', 'spann3r', '--node-name', 'spann3r_node',
                 '--topic', CAMERA) == 0
    live = _report(out)
    assert live['node'] == '/spann3r/spann3r_node' and live['image_topic'] == CAMERA
    assert live['frames_answered'] == FRAMES - 1


def test_a_relative_topic_resolves_in_the_node_namespace(launched, sequence, tmp_path, capsys):
    # /spann3r/image is not what the remapped node listens to: the player waits for it.
    code = eval_main([str(sequence), '--live', '--namespace', '/spann3r', '--topic', 'image',
                      '--out', str(tmp_path / 'r'), '--timeout', '2'])
    assert code == 2
    assert '/spann3r/image' in capsys.readouterr().err


def test_no_matching_node_lists_the_ones_there(launched, sequence, tmp_path, capsys):
    code = eval_main([str(sequence), '--live', '--namespace', 'elsewhere', '--out',
                      str(tmp_path / 'r'), '--timeout', '1'])
    assert code == 2
    err = capsys.readouterr().err
    assert 'no Spann3R node in namespace /elsewhere' in err
    assert '/spann3r/spann3r_node' in err and '--namespace' in err
    assert not (tmp_path / 'r' / 'report.json').exists()
    # Both options name the node directly; its image topic is looked up on the graph.
    code = eval_main([str(sequence), '--live', '--namespace', 'elsewhere', '--node-name',
                      'spann3r_node', '--out', str(tmp_path / 'r'), '--timeout', '1'])
    assert code == 2
    err = capsys.readouterr().err
    assert 'node /elsewhere/spann3r_node is not on the ROS graph' in err
    assert 'Spann3R nodes on the graph: /spann3r/spann3r_node' in err


def test_two_nodes_are_an_error_listing_both_and_options_choose(nodes, found_run, sequence,
                                                                tmp_path, capsys):
    # found_run made /spann3r/spann3r_node process frames; the second node, same name in
    # another namespace, has processed none: their diagnostics must not be mixed up.
    other = nodes.start('other')
    try:
        code = eval_main([str(sequence), '--live', '--out', str(tmp_path / 'none'),
                          '--timeout', '10'])
        assert code == 2
        err = capsys.readouterr().err
        assert '2 Spann3R nodes on the ROS graph' in err
        assert '/other/spann3r_node' in err and '/spann3r/spann3r_node' in err
        assert '--namespace' in err and '--node-name' in err
        assert not (tmp_path / 'none' / 'report.json').exists()

        out = tmp_path / 'other'
        assert _live(sequence, out, '--namespace', 'other') == 0
        live = _report(out)
        assert live['node'] == '/other/spann3r_node' and live['image_topic'] == '/other/image'
        assert live['frames_answered'] == FRAMES - 1
        assert other.worker.processed >= FRAMES - 1
    finally:
        nodes.stop(other)


def _status(name, **values):
    return DiagnosticStatus(name=name, values=[KeyValue(key=k, value=str(v))
                                               for k, v in values.items()])


def test_diagnostics_of_same_named_nodes_are_told_apart():
    msg = DiagnosticArray(status=[
        _status('spann3r_node: reconstruction', node='/a/spann3r_node', frames_processed=5),
        _status('spann3r_node: reconstruction', node='/b/spann3r_node', frames_processed=1),
        _status('mapper: reconstruction', node='/b/mapper', frames_processed=9)])
    assert frames_processed(msg, NodeTarget('/b', 'spann3r_node')) == 1
    assert frames_processed(msg, NodeTarget('/a', 'spann3r_node')) == 5
    assert frames_processed(msg, NodeTarget('/c', 'spann3r_node')) is None
    # A node that does not report its full name is taken by its status name.
    legacy = DiagnosticArray(status=[_status('spann3r_node: reconstruction',
                                             frames_processed=3)])
    assert frames_processed(legacy, NodeTarget('/', 'spann3r_node')) == 3


def test_names_resolve_like_the_node_resolves_them():
    from spann3r_ros.node.discovery import normalize_namespace
    assert [normalize_namespace(ns) for ns in ('', '/', 'spann3r', '/spann3r/', 'a/b')] == [
        '/', '/', '/spann3r', '/spann3r', '/a/b']
    for bad in ('1cam', 'a//b', 'a-b'):
        with pytest.raises(ValueError, match='invalid namespace'):
            normalize_namespace(bad)
    target = NodeTarget('/spann3r', 'spann3r_node')
    assert target.full_name == '/spann3r/spann3r_node'
    assert target.service('reset') == '/spann3r/spann3r_node/reset'
    assert [target.topic(t) for t in ('image', '/cam/image_raw', '~/debug')] == [
        '/spann3r/image', '/cam/image_raw', '/spann3r/spann3r_node/debug']
    root = NodeTarget('/', 'spann3r_node')
    assert (root.full_name, root.topic('image')) == ('/spann3r_node', '/image')
