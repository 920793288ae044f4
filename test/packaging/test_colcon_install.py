"""A colcon workspace build gives the user every command the README names, as it names them.

The package is copied into ``<tmp>/ws/src`` as ``git clone`` would leave it, built with colcon
(from PyPI) like a ROS user builds it, and the workspace's ``setup.bash`` is sourced in a fresh
shell: the command-line tools must be on PATH, the executables where ``ros2 run`` looks, and the
launch and config files in the package's share directory.
"""

from pathlib import Path
import re
import shutil
import subprocess
import sys

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _tracked_files() -> list[str]:
    out = subprocess.run(['git', 'ls-files', '-z'], cwd=ROOT, check=True, capture_output=True)
    return [p for p in out.stdout.decode().split('\0') if p]


def _readme_tools() -> set[str]:
    """The ``spann3r-*`` commands the README runs at the start of a command line."""
    text = (ROOT / 'README.md').read_text()
    blocks = re.findall(r'```bash\n(.*?)```', text, flags=re.S)
    return {m.group(1) for block in blocks for line in block.splitlines()
            if (m := re.match(r'\s*(spann3r-[a-z]+)\b', line))}


@pytest.fixture(scope='module')
def workspace(tmp_path_factory) -> Path:
    ws = tmp_path_factory.mktemp('ws')
    src = ws / 'src' / 'spann3r_ros'
    for rel in _tracked_files():
        target = src / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if (ROOT / rel).is_symlink():
            target.symlink_to((ROOT / rel).readlink())
        elif (ROOT / rel).is_file():
            shutil.copy2(ROOT / rel, target)
    build = subprocess.run([str(BIN / 'colcon'), 'build', '--event-handlers', 'console_direct-'],
                           cwd=ws, capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stdout + build.stderr
    return ws


def _in_workspace(ws: Path, command: str) -> subprocess.CompletedProcess:
    script = f'source {ws}/install/setup.bash && {command}'
    return subprocess.run(['bash', '-c', script], cwd=ws, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.slow
def test_the_readme_names_tools_that_the_package_installs():
    tools = _readme_tools()
    assert {'spann3r-export', 'spann3r-eval', 'spann3r-train'} <= tools
    setup = (ROOT / 'setup.py').read_text()
    for tool in tools:
        assert f"'{tool} = " in setup, f'the README runs {tool}, which setup.py does not install'


@pytest.mark.slow
def test_after_sourcing_the_workspace_the_readme_tools_are_on_path_and_run(workspace):
    tools = sorted(_readme_tools())
    result = _in_workspace(workspace, ' && '.join(
        f'command -v {t} && {t} --help > /dev/null' for t in tools))
    assert result.returncode == 0, result.stdout + result.stderr
    found = [Path(line) for line in result.stdout.splitlines()]
    assert [p.name for p in found] == tools
    assert all(p.parent == workspace / 'install' / 'spann3r_ros' / 'bin' for p in found), found


@pytest.mark.slow
def test_ros2_run_finds_the_node_and_the_tools_and_the_share_has_the_launch_files(workspace):
    prefix = workspace / 'install' / 'spann3r_ros'
    lib = prefix / 'lib' / 'spann3r_ros'
    assert (lib / 'spann3r_node').is_file()
    for tool in _readme_tools():
        assert (lib / tool).is_file(), tool
    share = prefix / 'share' / 'spann3r_ros'
    for rel in ('launch/live.launch.py', 'launch/replay.launch.py', 'config/live.yaml',
                'config/spann3r.rviz', 'package.xml'):
        assert (share / rel).is_file(), rel
    assert (prefix / 'share' / 'ament_index' / 'resource_index' / 'packages' /
            'spann3r_ros').is_file()
    node = _in_workspace(workspace, f'{lib}/spann3r_node --ros-args -p checkpoint:=/missing.pth')
    assert node.returncode == 1
    assert 'cannot start' in node.stderr and '/missing.pth' in node.stderr
