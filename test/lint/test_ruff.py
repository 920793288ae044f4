"""Lint checks: ruff agrees with ament's linters and keeps ROS out of the core."""

from pathlib import Path
import shutil
import subprocess
import sys

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _ruff(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, '-m', 'ruff', *args], cwd=cwd,
                          capture_output=True, text=True, check=False)


def test_repository_passes_ruff():
    result = _ruff('check', '.')
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize('package', ['spann3r_model', 'training'])
@pytest.mark.parametrize('statement', [
    'import rclpy',
    'from rclpy.node import Node',
    'from sensor_msgs.msg import Image',
    'import tf2_ros',
])
def test_ros_imports_are_banned_in_core(tmp_path, package, statement):
    # Run ruff with the project's configuration on a copy that contains one offending module.
    shutil.copy(ROOT / 'pyproject.toml', tmp_path / 'pyproject.toml')
    (tmp_path / package).mkdir()
    (tmp_path / package / 'bad.py').write_text(f'"""Offending module."""\n\n{statement}\n')
    result = _ruff('check', '--select', 'TID251', '.', cwd=tmp_path)
    assert result.returncode != 0
    assert 'TID251' in result.stdout


def test_ros_imports_are_allowed_in_ros_layer(tmp_path):
    shutil.copy(ROOT / 'pyproject.toml', tmp_path / 'pyproject.toml')
    (tmp_path / 'spann3r_ros').mkdir()
    source = '"""ROS layer."""\n\nimport rclpy  # noqa: F401\n'
    (tmp_path / 'spann3r_ros' / 'ok.py').write_text(source)
    result = _ruff('check', '--select', 'TID251', '.', cwd=tmp_path)
    assert result.returncode == 0, result.stdout


def test_double_quotes_are_rejected(tmp_path):
    shutil.copy(ROOT / 'pyproject.toml', tmp_path / 'pyproject.toml')
    (tmp_path / 'spann3r_model').mkdir()
    (tmp_path / 'spann3r_model' / 'q.py').write_text('"""Quotes."""\n\nNAME = "x"\n')
    result = _ruff('check', '.', cwd=tmp_path)
    assert 'Q000' in result.stdout
