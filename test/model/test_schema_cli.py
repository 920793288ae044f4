"""``spann3r-schema``: the released preset's schema equals the official state_dict's."""

import json
from pathlib import Path
import subprocess
import sys

import pytest

from spann3r_model.cli.schema import main


def test_released_schema_equals_the_official_one(data_dir: Path, capsys) -> None:
    assert main(['released']) == 0
    printed = json.loads(capsys.readouterr().out)
    official = json.loads((data_dir / 'checkpoint' / 'released_schema.json').read_text())
    assert len(printed['keys']) == 1101
    assert printed['keys'] == official['keys']
    assert printed['num_parameters_unique'] == official['num_parameters_unique'] == 658691976


def test_tiny_schema_to_file(tmp_path: Path) -> None:
    out = tmp_path / 'tiny.json'
    assert main(['tiny', '--output', str(out)]) == 0
    schema = json.loads(out.read_text())
    assert schema['preset'] == 'tiny'
    keys = [entry['key'] for entry in schema['keys']]
    assert len(keys) == len(set(keys)) and 'dust3r.enc_norm.weight' in keys
    assert all(entry['dtype'] == 'float32' for entry in schema['keys'])


def test_unknown_preset_is_an_argument_error(capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(['huge'])
    assert info.value.code == 2
    assert 'invalid choice' in capsys.readouterr().err


def test_runs_as_a_module() -> None:
    done = subprocess.run([sys.executable, '-m', 'spann3r_model.cli.schema', 'tiny'],
                          capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).parents[2])
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)['keys']
