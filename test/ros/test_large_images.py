"""Full-resolution raw images from a driver's process reach a subscriber with the node's QoS.

Two real processes on this machine (a publisher at 30 Hz and a counter with best effort, depth
5), both with ``config/fastdds_large_images.xml`` as ``live.launch.py`` and the README set it.
With Fast DDS's defaults the same stream loses most frames: its 512 KiB shared-memory segment
cannot hold the fragments of a 921 kB frame.
"""

import importlib.util
from pathlib import Path
import xml.etree.ElementTree as ET

from node_harness import isolate_dds
import pytest

ROOT = Path(__file__).resolve().parents[2]
PROFILE = ROOT / 'config' / 'fastdds_large_images.xml'
FRAMES = 40
FRAME_720P = 1280 * 720 * 3


@pytest.fixture(scope='module')
def bench():
    """``benchmarks/ros_large_images.py``, whose ``publish`` and ``count`` roles run each side."""
    spec = importlib.util.spec_from_file_location(
        'ros_large_images', ROOT / 'benchmarks' / 'ros_large_images.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    isolate_dds()  # the two processes inherit the test's private domain, localhost only
    return module


def _stream(bench, config: str, width: int, height: int) -> dict:
    args = bench._parser().parse_args([
        'matrix', '--frames', str(FRAMES), '--rate', '30', '--width', str(width), '--height',
        str(height), '--reliability', 'best_effort', '--depth', '5', '--timeout', '15',
        '--topic', f'large_image_{config}_{width}x{height}'])
    env = bench.transport_env(config)
    return bench.run_pair(args, env, env)


def test_the_profile_keeps_udp_and_has_a_segment_for_several_720p_frames():
    root = ET.parse(PROFILE).getroot()
    ns = {'p': root.tag.partition('}')[0].lstrip('{')}
    descriptors = {d.findtext('p:transport_id', namespaces=ns): d
                   for d in root.iterfind('p:transport_descriptors/p:transport_descriptor', ns)}
    [participant] = [p for p in root.iterfind('p:participant', ns)
                     if p.get('is_default_profile') == 'true']
    used = [descriptors[t.text] for t in participant.iterfind('p:rtps/p:userTransports/'
                                                              'p:transport_id', ns)]
    kinds = {d.findtext('p:type', namespaces=ns): d for d in used}
    assert set(kinds) == {'SHM', 'UDPv4'}  # UDPv4: other machines still get everything
    assert int(kinds['SHM'].findtext('p:segment_size', namespaces=ns)) >= 5 * FRAME_720P
    assert participant.findtext('p:rtps/p:useBuiltinTransports', namespaces=ns) == 'false'


@pytest.mark.parametrize('width, height', [(640, 480), (1280, 720)])
def test_raw_frames_at_camera_rate_from_another_process_arrive(bench, width, height):
    result = _stream(bench, 'profile', width, height)
    assert 'errors' not in result, result['errors']
    assert result['published'] == FRAMES and result['broken'] == 0
    assert result['received'] >= FRAMES - 2, f"missing frames {result['missing']}"


def test_with_fast_dds_defaults_the_same_stream_loses_frames(bench):
    """The reason for the profile: if this passes no more, the defaults carry such frames."""
    result = _stream(bench, 'default', 640, 480)
    assert result['published'] == FRAMES
    assert result['received'] < FRAMES - 2, result
