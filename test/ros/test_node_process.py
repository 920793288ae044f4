"""The node as a subprocess (``python -m spann3r_ros.node.node``): clean exits, startup errors."""

import os
from pathlib import Path
import signal
import subprocess
import sys
import time

from node_harness import isolate_dds, write_tiny_checkpoint
import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp('ckpt') / 'tiny.safetensors'
    write_tiny_checkpoint(path)
    return path


def _start(*params, tmp_path):
    isolate_dds()
    args = [sys.executable, '-m', 'spann3r_ros.node.node', '--ros-args']
    for p in params:
        args += ['-p', p]
    return subprocess.Popen(args, cwd=ROOT, env=dict(os.environ, HOME=str(tmp_path)),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize('sig', [signal.SIGINT, signal.SIGTERM])
def test_a_stop_signal_ends_the_node_with_exit_code_0(checkpoint, tmp_path, sig):
    proc = _start(f'checkpoint:={checkpoint}', 'device:=cpu', f'output_dir:={tmp_path}',
                  tmp_path=tmp_path)
    deadline = time.monotonic() + 60
    lines = []
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        lines.append(line)
        if 'ready on' in line or not line:
            break
    assert any('ready on' in ln for ln in lines), ''.join(lines)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert 'Traceback' not in err + out, err


@pytest.mark.parametrize('params, message', [
    (['checkpoint:=/nonexistent/weights.pth'], 'does not exist'),
    (['checkpoint:=CKPT', 'precision:=fp8'], 'precision'),
])
def test_bad_startup_gives_one_clear_message_and_exit_code_1(checkpoint, tmp_path, params,
                                                              message):
    params = [p.replace('CKPT', str(checkpoint)) for p in params]
    proc = _start(*params, tmp_path=tmp_path)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert 'Traceback' not in err + out, err
    assert 'cannot start' in err and message in err
