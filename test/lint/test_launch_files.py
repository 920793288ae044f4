"""Launch files and parameter YAML, checked without the (non-PyPI) launch packages."""

import ast
from pathlib import Path
import re

import pytest
import yaml

from spann3r_ros.pipeline.config import NodeConfig, param_specs

ROOT = Path(__file__).resolve().parents[2]
LAUNCH_FILES = sorted((ROOT / 'launch').glob('*.launch.py'))
SPECS = {s.name: s for s in param_specs()}
RCLPY_PARAMETERS = {'use_sim_time'}  # declared by every rclpy node
PY_TYPES = {'bool': (bool,), 'int': (int,), 'float': (float, int), 'str': (str,),
            'list[str]': (list,), 'list[float]': (list,)}


def test_there_are_launch_files():
    assert {p.name for p in LAUNCH_FILES} >= {'live.launch.py', 'replay.launch.py'}


@pytest.mark.parametrize('path', LAUNCH_FILES, ids=lambda p: p.name)
def test_launch_file_compiles_and_defines_the_entry_point(path):
    tree = ast.parse(path.read_text(), str(path))
    compile(tree, str(path), 'exec')
    names = [n.name for n in tree.body if isinstance(n, ast.FunctionDef)]
    assert 'generate_launch_description' in names


def _join_calls(tree):
    """Yield the constant parts of every os.path.join(share, ...) call."""
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr == 'join'):
            parts = [a.value for a in node.args if isinstance(a, ast.Constant)]
            if parts and len(parts) == len(node.args) - 1:
                yield parts


@pytest.mark.parametrize('path', LAUNCH_FILES, ids=lambda p: p.name)
def test_every_referenced_file_exists_and_is_installed(path):
    tree = ast.parse(path.read_text())
    referenced = [Path(*parts) for parts in _join_calls(tree)]
    assert referenced, 'expected share-relative file references'
    setup = (ROOT / 'setup.py').read_text()
    for rel in referenced:
        assert (ROOT / rel).is_file(), f'{path.name} references missing {rel}'
        assert f"glob('{rel.parent}/*{''.join(rel.suffixes[-1:])}')" in setup or \
            f"glob('{rel.parent}/*.launch.py')" in setup, f'{rel} is not installed by setup.py'


@pytest.mark.parametrize('path', LAUNCH_FILES, ids=lambda p: p.name)
def test_node_executables_and_parameter_overrides_exist(path):
    tree = ast.parse(path.read_text())
    setup = (ROOT / 'setup.py').read_text()
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and getattr(node.func, 'id', '') == 'Node'):
            continue
        kw = {k.arg: k.value for k in node.keywords}
        if kw['package'].value != 'spann3r_ros':
            continue
        executable = kw['executable'].value
        assert re.search(rf"'{executable} = ", setup), executable
        for item in kw['parameters'].elts:
            if isinstance(item, ast.Dict):
                for key in item.keys:
                    assert key.value in SPECS or key.value in RCLPY_PARAMETERS, \
                        f'{path.name} overrides unknown {key.value}'


def _yaml_params(path):
    data = yaml.safe_load(path.read_text())
    params = {}
    for node_name, section in data.items():
        assert set(section) == {'ros__parameters'}, f'{path}: {node_name}'
        params.update(section['ros__parameters'])
    return params


YAMLS = sorted((ROOT / 'config').glob('*.yaml'))


@pytest.mark.parametrize('path', YAMLS, ids=lambda p: p.name)
def test_yaml_parameters_are_declared_with_matching_types(path):
    params = _yaml_params(path)
    for name, value in params.items():
        assert name in SPECS, f'{path.name}: {name} is not a node parameter'
        spec = SPECS[name]
        assert isinstance(value, PY_TYPES[spec.type_name]), f'{name}: {value!r}'
        assert not (spec.type_name != 'bool' and isinstance(value, bool)), name
        if spec.type_name == 'list[str]':
            assert all(isinstance(v, str) for v in value), name
    # The values together must form a valid configuration.
    NodeConfig.from_mapping(params)


def test_live_yaml_lists_every_parameter_and_matches_the_generator():
    from tools_gen import yaml_text  # noqa: I001 - provided by the fixture below

    assert set(_yaml_params(ROOT / 'config' / 'live.yaml')) == set(SPECS)
    assert (ROOT / 'config' / 'live.yaml').read_text() == yaml_text()


@pytest.fixture(autouse=True)
def tools_gen(monkeypatch):
    """Make tools/gen_param_docs.py importable as ``tools_gen`` (tools/ is not a package)."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location('tools_gen', ROOT / 'tools' /
                                                  'gen_param_docs.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setitem(sys.modules, 'tools_gen', module)


def test_param_docs_table_has_a_row_per_parameter():
    from tools_gen import markdown

    text = markdown()
    for name in SPECS:
        assert f'| `{name}` |' in text
    assert '`~/save_map`' in text and '`points`' in text
