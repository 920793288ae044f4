#!/usr/bin/env python3
"""Raw images from a second process on the same machine: how many arrive, per DDS transport.

A publisher process stands in for a camera driver (``rgb8`` frames at camera rate, reliable,
depth 10, as ``create_publisher(Image, topic, 10)`` gives) and a subscriber process uses the
node's image QoS (``qos_reliability``, ``qos_depth``: best effort, depth 5 by default). Both get
one transport configuration through their environment before rclpy initialises:

- ``default``: Fast DDS's builtin transports (UDPv4 and a 512 KiB shared-memory segment);
- ``large_data``: ``FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA`` (TCP and shared memory for data);
- ``profile``: ``config/fastdds_large_images.xml`` (a 16 MiB shared-memory segment and UDPv4).

``PUB:SUB`` (e.g. ``default:profile``) gives the two sides different configurations.

Usage: ``python benchmarks/ros_large_images.py [--frames 40] [--rate 30]
[--configs default profile] [--sizes 640x480 1280x720] [--reliabilities best_effort reliable]
[--repeat N] [--profile my_profile.xml]``; each run is on a random domain, with the discovery
range of the shell (``ROS_AUTOMATIC_DISCOVERY_RANGE``, default ``SUBNET``). Prints one line per
run and ends with exit code 0. The roles ``publish`` and ``count`` run one
side each and print one JSON line; ``test/ros/test_large_images.py`` uses them.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
import random
import subprocess
import sys
import time
from typing import Optional, TYPE_CHECKING

if TYPE_CHECKING:
    from rclpy.qos import QoSProfile

ROOT = Path(__file__).resolve().parents[1]
PROFILE = ROOT / 'config' / 'fastdds_large_images.xml'
TRANSPORT_VARIABLES = ('FASTDDS_BUILTIN_TRANSPORTS', 'FASTRTPS_DEFAULT_PROFILES_FILE',
                       'FASTDDS_DEFAULT_PROFILES_FILE', 'RMW_FASTRTPS_USE_QOS_FROM_XML')
CONFIGS = ('default', 'large_data', 'profile')


def transport_env(config: str, base: Optional[dict[str, str]] = None,
                  profile: Path = PROFILE) -> dict[str, str]:
    """Give one side ``base``'s environment without transport settings, plus ``config``'s.

    :param config: ``default``, ``large_data`` or ``profile``.
    :param base: the environment to start from (default: this process's).
    :param profile: the XML profile of ``profile``.
    :return: the environment for the subprocess.
    """
    if config not in CONFIGS:
        raise ValueError(f'unknown transport configuration {config!r}: use one of {CONFIGS}')
    env = {k: v for k, v in (os.environ if base is None else base).items()
           if k not in TRANSPORT_VARIABLES}
    env['RMW_IMPLEMENTATION'] = 'rmw_fastrtps_cpp'
    if config == 'large_data':
        env['FASTDDS_BUILTIN_TRANSPORTS'] = 'LARGE_DATA'
    elif config == 'profile':
        env['FASTRTPS_DEFAULT_PROFILES_FILE'] = str(profile)  # Fast DDS 2.x
        env['FASTDDS_DEFAULT_PROFILES_FILE'] = str(profile)  # Fast DDS 3.x
    return env


def _qos(reliability: str, depth: int) -> QoSProfile:
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth,
                      reliability=(ReliabilityPolicy.RELIABLE if reliability == 'reliable'
                                   else ReliabilityPolicy.BEST_EFFORT),
                      durability=DurabilityPolicy.VOLATILE)


def publish(args: argparse.Namespace) -> dict:
    """Publish ``args.frames`` frames at ``args.rate`` once a subscriber has matched.

    :param args: ``frames``, ``rate``, ``width``, ``height``, ``topic``, ``timeout`` (to wait
        for a subscriber), ``settle`` and ``linger`` (seconds before the first frame and after
        the last).
    :return: ``published`` (frames), ``seconds`` (publishing time), ``acked`` (reliable
        subscribers acknowledged every frame before the publisher left).
    """
    import rclpy
    from rclpy.duration import Duration
    from sensor_msgs.msg import Image

    rclpy.init()
    node = rclpy.create_node('large_image_publisher')
    pub = node.create_publisher(Image, args.topic, _qos('reliable', 10))
    width, height = args.width, args.height
    row = bytes(range(256)) * (width * 3 // 256 + 1)
    msg = Image(height=height, width=width, encoding='rgb8', step=width * 3,
                data=row[:width * 3] * height)
    msg.header.frame_id = 'camera'
    deadline = time.monotonic() + args.timeout
    while pub.get_subscription_count() < 1:
        if time.monotonic() > deadline:
            raise SystemExit('no subscriber matched')
        time.sleep(0.01)
    time.sleep(args.settle)  # the subscriber's side of the match completes too
    start = time.monotonic()
    for i in range(args.frames):
        msg.header.stamp.sec = i
        pub.publish(msg)
        time.sleep(max(0.0, start + (i + 1) / args.rate - time.monotonic()))
    seconds = time.monotonic() - start
    acked = pub.wait_for_all_acked(Duration(seconds=2.0))
    time.sleep(args.linger)
    node.destroy_node()
    rclpy.try_shutdown()
    return {'published': args.frames, 'seconds': round(seconds, 3), 'acked': bool(acked)}


def count(args: argparse.Namespace) -> dict:
    """Count the intact frames that arrive until the publisher leaves (or ``args.timeout``).

    Prints ``ready`` once subscribed. A frame is intact when it has all ``width * height * 3``
    bytes; its stamp (``sec`` = frame index) tells it apart from the others.

    :param args: ``frames``, ``width``, ``height``, ``reliability``, ``depth``, ``topic``,
        ``timeout``.
    :return: ``received`` (distinct intact frames), ``broken`` (frames of the wrong size),
        ``missing`` (the indices that never arrived).
    """
    import rclpy
    from sensor_msgs.msg import Image

    rclpy.init()
    node = rclpy.create_node('large_image_counter')
    expected = args.width * args.height * 3
    seen: set[int] = set()
    broken = [0]

    def on_image(msg: Image) -> None:
        if len(msg.data) == expected == msg.height * msg.step:
            seen.add(msg.header.stamp.sec)
        else:
            broken[0] += 1

    node.create_subscription(Image, args.topic, on_image, _qos(args.reliability, args.depth))
    print('ready', flush=True)
    deadline = time.monotonic() + args.timeout
    had_publisher = False
    while time.monotonic() < deadline and len(seen) < args.frames:
        rclpy.spin_once(node, timeout_sec=0.05)
        publishers = node.count_publishers(args.topic)
        if publishers:
            had_publisher = True
        elif had_publisher:
            break
    for _ in range(10):  # what is still queued
        rclpy.spin_once(node, timeout_sec=0.01)
    node.destroy_node()
    rclpy.try_shutdown()
    return {'received': len(seen), 'broken': broken[0],
            'missing': sorted(set(range(args.frames)) - seen)}


def _ranges(values: list[int]) -> str:
    """``[0, 1, 2, 7]`` as ``0-2,7``."""
    parts: list[str] = []
    for v in values:
        if parts and int(parts[-1].split('-')[-1]) == v - 1:
            parts[-1] = f"{parts[-1].split('-')[0]}-{v}"
        else:
            parts.append(str(v))
    return ','.join(parts) or '-'


def _role_args(args: argparse.Namespace) -> list[str]:
    return ['--frames', str(args.frames), '--rate', str(args.rate), '--width', str(args.width),
            '--height', str(args.height), '--reliability', args.reliability, '--depth',
            str(args.depth), '--topic', args.topic, '--timeout', str(args.timeout)]


def run_pair(args: argparse.Namespace, pub_env: dict[str, str],
             sub_env: dict[str, str]) -> dict:
    """Run a counter and a publisher as two processes; return both JSON results merged.

    :param args: ``frames``, ``rate``, ``width``, ``height``, ``reliability``, ``depth``,
        ``topic``, ``timeout``.
    :param pub_env: the publisher's environment.
    :param sub_env: the counter's environment.
    :return: ``published``, ``seconds``, ``acked``, ``received``, ``broken``, ``missing``;
        ``errors``: the two processes' stderr when one failed or wrote a Fast DDS error.
    """
    script = str(Path(__file__).resolve())
    counter = subprocess.Popen([sys.executable, script, 'count'] + _role_args(args),
                               env=sub_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    try:
        if counter.stdout.readline().strip() != 'ready':
            raise RuntimeError(f'the counter did not start: {counter.communicate()[1]}')
        publisher = subprocess.run([sys.executable, script, 'publish'] + _role_args(args),
                                   env=pub_env, capture_output=True, text=True,
                                   timeout=args.timeout + 30)
        out, err = counter.communicate(timeout=args.timeout + 30)
    finally:
        if counter.poll() is None:
            counter.kill()
            counter.wait()
    result: dict = {}
    for stdout in (publisher.stdout, out):
        lines = [ln for ln in stdout.splitlines() if ln.startswith('{')]
        if lines:
            result.update(json.loads(lines[-1]))
    errors = '\n'.join(e for e in (publisher.stderr, err) if e.strip())
    if publisher.returncode or counter.returncode or 'Error' in errors:
        result['errors'] = errors
    return result


def isolated_env() -> dict[str, str]:
    """Return this process's environment on a random DDS domain of its own."""
    env = dict(os.environ)
    env['ROS_DOMAIN_ID'] = str(random.SystemRandom().randint(100, 200))
    env.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'SUBNET')
    return env


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('role', nargs='?', choices=('matrix', 'publish', 'count'),
                        default='matrix')
    parser.add_argument('--frames', type=int, default=40)
    parser.add_argument('--rate', type=float, default=30.0)
    parser.add_argument('--width', type=int, default=640)
    parser.add_argument('--height', type=int, default=480)
    parser.add_argument('--reliability', default='best_effort',
                        choices=('best_effort', 'reliable'))
    parser.add_argument('--depth', type=int, default=5)
    parser.add_argument('--topic', default='large_image')
    parser.add_argument('--timeout', type=float, default=20.0)
    parser.add_argument('--settle', type=float, default=0.5)
    parser.add_argument('--linger', type=float, default=0.5)
    parser.add_argument('--configs', nargs='+', default=list(CONFIGS))
    parser.add_argument('--sizes', nargs='+', default=['640x480', '1280x720'])
    parser.add_argument('--reliabilities', nargs='+', default=['best_effort', 'reliable'])
    parser.add_argument('--repeat', type=int, default=1)
    parser.add_argument('--profile', type=Path, default=PROFILE,
                        help='XML profile of the profile configuration.')
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    args = _parser().parse_args(argv)
    if args.role != 'matrix':
        result = publish(args) if args.role == 'publish' else count(args)
        print(json.dumps(result), flush=True)
        return 0
    base = isolated_env()
    print(f"discovery range {base['ROS_AUTOMATIC_DISCOVERY_RANGE']}, {args.frames} frames at "
          f'{args.rate:g} Hz, subscriber depth {args.depth}')
    for config in args.configs:
        pub_config, _, sub_config = config.partition(':')
        pub_env = transport_env(pub_config, base, args.profile)
        sub_env = transport_env(sub_config or pub_config, base, args.profile)
        for size in args.sizes:
            args.width, args.height = (int(v) for v in size.split('x'))
            for reliability in args.reliabilities:
                args.reliability = reliability
                for _ in range(args.repeat):
                    result = run_pair(args, pub_env, sub_env)
                    missing = _ranges(result.get('missing', []))
                    print(f"{config:22s} {size:9s} {reliability:11s} received "
                          f"{result.get('received', '?')}/{args.frames} broken "
                          f"{result.get('broken', '?')} missing {missing}"
                          + (f"\n  {result['errors'][-600:]}" if 'errors' in result else ''),
                          flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
