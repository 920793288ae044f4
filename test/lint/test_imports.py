"""The import graph of the project: no cycles, one dependency direction, ROS in few modules.

Every module of ``spann3r_model/``, ``spann3r_ros/`` and ``training/`` is parsed with ``ast``;
imports anywhere in a module count (module level and inside functions: a lazy import still ties
the two modules together), relative imports are resolved against the module's package.
"""

from __future__ import annotations

import ast
from pathlib import Path
import textwrap
from typing import Optional

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Import name -> folder.
PACKAGES = {'spann3r_model': 'spann3r_model', 'spann3r_ros': 'spann3r_ros', 'training': 'training'}

# Which package (or subpackage, with everything under it) must not import which. The direction:
# training -> spann3r_model <- spann3r_ros; inside spann3r_ros, cli -> node -> pipeline, and the
# ROS-free layers (pipeline, bags, formats, synthetic) never reach up to node or cli.
FORBIDDEN = {
    'spann3r_model': ('spann3r_ros', 'training'),
    'training': ('spann3r_ros',),
    'spann3r_ros.node': ('spann3r_ros.cli',),
    'spann3r_ros.pipeline': ('spann3r_ros.node', 'spann3r_ros.cli', 'spann3r_ros.bags'),
    'spann3r_ros.bags': ('spann3r_ros.node', 'spann3r_ros.cli', 'spann3r_ros.pipeline'),
    'spann3r_ros.formats': ('spann3r_ros.node', 'spann3r_ros.cli', 'spann3r_ros.pipeline',
                            'spann3r_ros.bags', 'spann3r_ros.synthetic'),
    'spann3r_ros.synthetic': ('spann3r_ros.node', 'spann3r_ros.cli', 'spann3r_ros.pipeline',
                              'spann3r_ros.bags'),
}

ROS_PACKAGES = frozenset({
    'rclpy', 'sensor_msgs', 'std_msgs', 'geometry_msgs', 'nav_msgs', 'diagnostic_msgs',
    'std_srvs', 'builtin_interfaces', 'rcl_interfaces', 'tf2_ros', 'tf2_msgs',
    'visualization_msgs',
})

# The one package that talks to ROS: the node, its glue, and the clients that drive a running node.
ROS_HOME = 'spann3r_ros.node'


def module_files(root: Path, packages: dict[str, str]) -> dict[str, Path]:
    """Return ``{dotted module name: file}`` for every ``.py`` file of ``packages``."""
    modules = {}
    for name, folder in packages.items():
        for path in sorted((root / folder).rglob('*.py')):
            parts = [name, *path.relative_to(root / folder).with_suffix('').parts]
            if parts[-1] == '__init__':
                parts.pop()
            modules['.'.join(parts)] = path
    return modules


def _absolute(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The module a ``from ... import`` names, relative levels resolved."""
    base = node.module or ''
    if node.level:
        package = module.split('.') if is_package else module.split('.')[:-1]
        anchor = package[:len(package) - node.level + 1]
        base = '.'.join(anchor + ([base] if base else []))
    return _canonical(base)


def _canonical(name: str) -> str:
    return name


def _imported(module: str, is_package: bool, tree: ast.AST, files: dict) -> set[str]:
    """Every dotted name ``tree`` imports, anywhere in the module.

    ``from a.b import c`` imports the module ``a.b.c`` when there is one, else the name ``c``
    of ``a.b``.
    """
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {_canonical(alias.name) for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(module, is_package, node)
            for alias in node.names:
                sub = f'{base}.{alias.name}'
                names.add(sub if sub in files else base)
    return names


def import_graph(root: Path, packages: dict[str, str]
                 ) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """Return ``(first_party, external)``: per module, first-party modules and external packages.

    An import of a name the project does not define as a module (``a.b.f``) counts as an
    import of the nearest enclosing module (``a.b``).
    """
    files = module_files(root, packages)
    first_party: dict[str, set[str]] = {m: set() for m in files}
    external: dict[str, set[str]] = {m: set() for m in files}
    for module, path in files.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        for name in _imported(module, path.name == '__init__.py', tree, files):
            if name.split('.')[0] not in packages:
                external[module].add(name.split('.')[0])
                continue
            parts = name.split('.')
            while parts and '.'.join(parts) not in files:
                parts.pop()
            target = '.'.join(parts)
            if target and target != module:
                first_party[module].add(target)
    return first_party, external


def find_cycle(graph: dict[str, set[str]]) -> Optional[list[str]]:
    """Return one import cycle as a path ``[a, b, ..., a]``, or None when the graph has none."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> Optional[list[str]]:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            found = visit(start)
            if found:
                return found
    return None


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + '.')


def direction_violations(graph: dict[str, set[str]]) -> list[str]:
    """Return ``'a -> b'`` for every import against the dependency direction."""
    bad = []
    for module, targets in sorted(graph.items()):
        forbidden = [f for key, fs in FORBIDDEN.items() if _within(module, key) for f in fs]
        bad += [f'{module} -> {t}' for t in sorted(targets)
                if any(_within(t, f) for f in forbidden)]
    return bad


def ros_importers(external: dict[str, set[str]]) -> dict[str, set[str]]:
    """Return ``{module: ROS packages it imports}`` for every module that imports one."""
    return {m: pkgs & ROS_PACKAGES for m, pkgs in external.items() if pkgs & ROS_PACKAGES}


@pytest.fixture(scope='module')
def project_graph() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    return import_graph(ROOT, PACKAGES)


def test_the_graph_covers_the_project(project_graph):
    first_party, _ = project_graph
    assert {'spann3r_model.session', 'spann3r_ros.node.node', 'training.train',
            'spann3r_model.layers.attention', 'training.datasets.base'} <= set(first_party)
    assert 'spann3r_model.config' in first_party['spann3r_model.session']
    # an import inside a function counts
    assert 'spann3r_model.geometry.camera' in first_party['spann3r_model.pose_estimation']


def test_no_import_cycles(project_graph):
    first_party, _ = project_graph
    cycle = find_cycle(first_party)
    assert cycle is None, 'import cycle: ' + ' -> '.join(cycle)


def test_dependencies_point_one_way(project_graph):
    first_party, _ = project_graph
    assert direction_violations(first_party) == []


def test_ros_only_in_the_allowed_modules(project_graph):
    _, external = project_graph
    importers = ros_importers(external)
    outside = {m: sorted(p) for m, p in importers.items() if not _within(m, ROS_HOME)}
    assert outside == {}, f'ROS imports outside {ROS_HOME}: {outside}'
    assert 'spann3r_ros.node.node' in importers


def _write_package(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


def test_checker_reports_a_cycle_through_a_lazy_relative_import(tmp_path):
    _write_package(tmp_path, {
        'spann3r_ros/__init__.py': '',
        'spann3r_ros/a.py': 'from .b import f\n',
        'spann3r_ros/b.py': 'from . import c\n',
        'spann3r_ros/c.py': 'def g():\n    from .a import h\n',
        'spann3r_ros/d.py': 'from spann3r_ros import a\n',
    })
    first_party, _ = import_graph(tmp_path, {'spann3r_ros': 'spann3r_ros'})
    assert first_party['spann3r_ros.d'] == {'spann3r_ros.a'}
    assert find_cycle(first_party) == ['spann3r_ros.a', 'spann3r_ros.b', 'spann3r_ros.c',
                                       'spann3r_ros.a']
    first_party['spann3r_ros.c'].clear()
    assert find_cycle(first_party) is None


def test_checker_reports_imports_against_the_direction(tmp_path):
    _write_package(tmp_path, {
        'spann3r_model/__init__.py': '',
        'spann3r_model/core.py': 'def f():\n    from spann3r_ros.tool import x\n',
        'spann3r_ros/__init__.py': '',
        'spann3r_ros/tool.py': 'from spann3r_model import core\n',
        'training/__init__.py': '',
        'training/sub/__init__.py': '',
        'training/sub/loop.py': ('from .. import x\n\n\n'
                                 'def f():\n    from spann3r_ros.tool import y\n'),
        'training/x.py': 'from training.sub import loop\n',
    })
    packages = {'spann3r_model': 'spann3r_model', 'spann3r_ros': 'spann3r_ros',
                'training': 'training'}
    first_party, _ = import_graph(tmp_path, packages)
    assert direction_violations(first_party) == ['spann3r_model.core -> spann3r_ros.tool',
                                                 'training.sub.loop -> spann3r_ros.tool']
    assert first_party['training.x'] == {'training.sub.loop'}
    assert first_party['training.sub.loop'] == {'training.x', 'spann3r_ros.tool'}


def test_checker_reports_ros_imports(tmp_path):
    _write_package(tmp_path, {
        'spann3r_ros/__init__.py': '',
        'spann3r_ros/glue.py': 'import rclpy.node\n',
        'spann3r_ros/lazy.py': 'def f():\n    from tf2_msgs.msg import TFMessage\n',
        'spann3r_ros/plain.py': 'import numpy\nfrom rosbags.typesys import Stores\n',
    })
    _, external = import_graph(tmp_path, {'spann3r_ros': 'spann3r_ros'})
    assert ros_importers(external) == {'spann3r_ros.glue': {'rclpy'},
                                       'spann3r_ros.lazy': {'tf2_msgs'}}


def test_every_module_says_what_it_is_for_and_stays_small():
    files = module_files(ROOT, PACKAGES)
    undocumented = [m for m, p in files.items() if not ast.get_docstring(ast.parse(p.read_text()))]
    assert undocumented == []
    long = {m: n for m, p in files.items() if (n := len(p.read_text().splitlines())) > 420}
    assert long == {}, f'modules over ~400 lines: {long}'


def test_checker_reports_the_folder_rules_inside_the_ros_layer(tmp_path):
    _write_package(tmp_path, {
        'spann3r_ros/__init__.py': '',
        'spann3r_ros/node/__init__.py': '',
        'spann3r_ros/node/node.py': 'import rclpy\nfrom spann3r_ros.pipeline import worker\n',
        'spann3r_ros/pipeline/__init__.py': '',
        'spann3r_ros/pipeline/worker.py': 'def f():\n    from spann3r_ros.node import node\n',
        'spann3r_ros/formats/__init__.py': '',
        'spann3r_ros/formats/images.py': 'from sensor_msgs.msg import Image\n',
    })
    first_party, external = import_graph(tmp_path, {'spann3r_ros': 'spann3r_ros'})
    assert direction_violations(first_party) == [
        'spann3r_ros.pipeline.worker -> spann3r_ros.node.node']
    outside = sorted(m for m in ros_importers(external) if not _within(m, ROS_HOME))
    assert outside == ['spann3r_ros.formats.images']
