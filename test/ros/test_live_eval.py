"""spann3r-eval --live against the real node (real rclpy, in-process, isolated DDS domain)."""

import json

from node_harness import isolate_dds, write_tiny_checkpoint
import pytest
import rclpy
from rclpy.executors import MultiThreadedExecutor
from rclpy.parameter import Parameter

from spann3r_ros.node import Spann3rNode
from spann3r_ros.replay import main as eval_main
from spann3r_ros.synthetic_cli import main as synth_main


@pytest.fixture(scope='module')
def running_node(tmp_path_factory):
    import threading

    isolate_dds()
    rclpy.init()
    ckpt = tmp_path_factory.mktemp('ckpt') / 'tiny.safetensors'
    write_tiny_checkpoint(ckpt)
    params = {'checkpoint': str(ckpt), 'device': 'cpu', 'min_confidence': 1.0,
              'image_size': 64, 'num_threads': 1, 'map_publish_rate': 0.0,
              # Random weights give a meaningless (here negative) focal: no PnP poses.
              'estimate_pose': False,
              'output_dir': str(tmp_path_factory.mktemp('out'))}
    node = Spann3rNode(parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
    executor = MultiThreadedExecutor(num_threads=2)
    executor.add_node(node)
    thread = threading.Thread(target=executor.spin, daemon=True)
    thread.start()
    yield node
    node.shutdown()
    executor.shutdown()
    thread.join(timeout=5)
    node.destroy_node()
    rclpy.try_shutdown()


def test_live_eval_publishes_frames_and_collects_outputs(running_node, tmp_path):
    root = tmp_path / 'synth'
    assert synth_main(['--out', str(root), '--name', 'room', '--frames', '5', '--width', '160',
                       '--height', '120', '--scannet']) == 0
    out = tmp_path / 'report'
    assert eval_main([str(root), '--live', '--out', str(out),
                      '--rate', '2', '--timeout', '60']) == 0
    report = json.loads((out / 'report.json').read_text())
    assert report['frames_published'] == 5
    # The refined result of frame i arrives with frame i + 1: four of five come back.
    assert report['clouds_received'] == 4
    assert report['latency']['n'] == 4 and report['latency']['p50_ms'] > 0
    assert running_node.worker.processed >= 4
    assert (out / 'report.md').exists() and (out / 'trajectory.png').exists()
