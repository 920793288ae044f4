"""A model of the ``launch`` / ``launch_ros`` API surface our launch files use.

The launch packages are not on PyPI, so CI cannot run ``ros2 launch``. This module lets a test
execute the real launch files against stand-ins for the classes they import and records what a
launch would do: the nodes with their evaluated parameters, remappings and environment, the
processes, the log lines and the event handlers. The environment starts as the test process's;
``SetEnvironmentVariable`` changes it for the actions after it, and a scoped ``GroupAction``
(launch's default) restores it and the launch configurations after its actions, as launch does.
Parameter values are evaluated with launch_ros's rules, which are the ones that matter for the
node's declared types:

- a plain ``str`` stays a string; ``int``, ``float`` and ``bool`` stay as they are;
- a substitution, or a list whose items are all strings or substitutions, is performed into ONE
  string that is then read as YAML (so ``[LaunchConfiguration('image')]`` becomes the string
  ``'/cam/image_raw'``, not a list);
- a ``ParameterValue`` with a ``value_type`` is coerced to that type (``str`` unchanged, ``bool``
  read as YAML and required to be a bool); for ``List[...]`` a list of texts and substitutions
  is again ONE string, read as a YAML list, and only a list of lists is coerced item by item.

Where the real launch_ros imports, ``test_launch_model_agrees_with_launch_ros`` checks these
rules against it.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
import importlib.util
import os
from pathlib import Path
import sys
import types
from typing import Any, Iterator, Optional

import yaml


class Context:
    """The launch context: launch configurations (arguments), environment, shutdown flag."""

    def __init__(self, configurations: dict[str, str],
                 environment: Optional[dict[str, str]] = None) -> None:
        self.launch_configurations = dict(configurations)
        self.environment = dict(os.environ if environment is None else environment)
        self.is_shutdown = False


class Substitution:
    """Base of the substitutions."""

    def perform(self, context: Context) -> str:  # pragma: no cover - overridden
        raise NotImplementedError


class TextSubstitution(Substitution):
    """A literal text."""

    def __init__(self, text: str) -> None:
        self.text = text

    def perform(self, context: Context) -> str:
        return self.text


class LaunchConfiguration(Substitution):
    """The value of a launch argument."""

    def __init__(self, name: str, default: Optional[str] = None) -> None:
        self.name = name
        self.default = default

    def perform(self, context: Context) -> str:
        if self.name in context.launch_configurations:
            return context.launch_configurations[self.name]
        if self.default is not None:
            return self.default
        raise KeyError(f'launch configuration {self.name!r} does not exist')


class PythonExpression(Substitution):
    """A Python expression made of texts and substitutions, evaluated as launch does."""

    def __init__(self, expression: list) -> None:
        self.expression = expression

    def perform(self, context: Context) -> str:
        import math
        return str(eval(perform(context, self.expression), math.__dict__))  # noqa: S307


def perform(context: Context, value: Any) -> str:
    """Perform a substitution, a text, or a list of them into one string."""
    if isinstance(value, str):
        return value
    if isinstance(value, Substitution):
        return value.perform(context)
    return ''.join(perform(context, item) for item in value)


class ParameterValue:
    """``launch_ros.parameter_descriptions.ParameterValue``."""

    def __init__(self, value: Any, *, value_type: Any = None) -> None:
        self.value = value
        self.value_type = value_type


def _coerce(text: str, value_type: Any) -> Any:
    """launch's ``coerce_to_type`` for the scalar types and ``List[...]``."""
    item_type = getattr(value_type, '__args__', (None,))[0]
    if item_type is not None:
        loaded = yaml.safe_load(text) if text else text
        if not isinstance(loaded, list) or not all(isinstance(v, item_type) for v in loaded):
            raise ValueError(f"Cannot convert value '{text}' to a list of '{item_type}'")
        return loaded
    if value_type is str:
        return text
    if value_type in (int, float):
        return value_type(text)
    if value_type is bool:
        loaded = yaml.safe_load(text)
        if isinstance(loaded, bool):
            return loaded
        raise ValueError(f"Cannot convert value '{text}' to '{bool}'")
    raise ValueError(f'unsupported value_type {value_type!r}')


def _as_yaml_value(text: str, name: str) -> Any:
    if not text:
        text = "''"
    loaded = yaml.safe_load(text)
    if isinstance(loaded, (bool, int, float, str, bytes)):
        return loaded
    if isinstance(loaded, list) and loaded and \
            all(type(v) is type(loaded[0]) for v in loaded) and \
            type(loaded[0]) in (bool, int, float, str):
        return loaded
    raise TypeError(f'parameter {name}: value {text!r} is not an allowed parameter type')


def _is_substitution(value: Any) -> bool:
    """launch's ``is_substitution``: texts and substitutions that perform into ONE string."""
    return isinstance(value, Substitution) or (
        isinstance(value, (list, tuple)) and len(value) > 0
        and all(isinstance(v, (Substitution, str)) for v in value)
        and any(isinstance(v, Substitution) for v in value))


def evaluate_parameter(context: Context, name: str, value: Any) -> Any:
    """Evaluate one entry of a node's parameter dictionary as launch_ros does."""
    if isinstance(value, ParameterValue):
        if value.value_type is None:
            return _as_yaml_value(perform(context, value.value), name)
        item_type = getattr(value.value_type, '__args__', (None,))[0]
        if item_type is not None and isinstance(value.value, (list, tuple)) and \
                not _is_substitution(value.value):
            return [v if isinstance(v, item_type) and not isinstance(v, str)
                    else _coerce(perform(context, v), item_type) for v in value.value]
        return _coerce(perform(context, value.value), value.value_type)
    if isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, str):
        return value
    if isinstance(value, Substitution):
        return _as_yaml_value(value.perform(context), name)
    if isinstance(value, (list, tuple)):
        kinds = {Substitution if isinstance(v, Substitution) else type(v) for v in value}
        if Substitution in kinds and kinds <= {Substitution, str}:
            return _as_yaml_value(perform(context, value), name)
        if kinds == {str}:
            return list(value)
        if all(isinstance(v, (list, tuple)) for v in value):
            return [yaml.safe_load(perform(context, v)) for v in value]
        return list(value)
    raise TypeError(f'parameter {name}: unexpected value {value!r}')


@dataclass
class DeclareLaunchArgument:
    """A launch argument (``default_value`` None: required)."""

    name: str
    default_value: Optional[str] = None
    description: str = ''
    choices: Optional[list] = None


@dataclass
class Node:
    """``launch_ros.actions.Node``: what the launch file asked for, before evaluation."""

    package: str
    executable: str
    name: Optional[str] = None
    namespace: Any = ''
    output: str = 'log'
    parameters: list = field(default_factory=list)
    remappings: list = field(default_factory=list)
    arguments: list = field(default_factory=list)
    condition: Any = None
    additional_env: Optional[dict] = None


@dataclass
class ExecuteProcess:
    """``launch.actions.ExecuteProcess``."""

    cmd: list
    output: str = 'log'


@dataclass
class LogInfo:
    """``launch.actions.LogInfo``."""

    msg: Any


@dataclass
class OpaqueFunction:
    """``launch.actions.OpaqueFunction``."""

    function: Any
    args: list = field(default_factory=list)
    kwargs: dict = field(default_factory=dict)


@dataclass
class SetEnvironmentVariable:
    """``launch.actions.SetEnvironmentVariable``: for the actions after it (in its scope)."""

    name: Any
    value: Any
    condition: Any = None


@dataclass
class GroupAction:
    """``launch.actions.GroupAction``; ``scoped`` keeps environment and configuration changes."""

    actions: list
    scoped: bool = True
    forwarding: bool = True
    launch_configurations: Optional[dict] = None


@dataclass
class RegisterEventHandler:
    """``launch.actions.RegisterEventHandler``."""

    event_handler: Any


@dataclass
class OnProcessExit:
    """``launch.event_handlers.OnProcessExit``."""

    target_action: Any = None
    on_exit: Any = None


@dataclass
class OnProcessIO:
    """``launch.event_handlers.OnProcessIO``."""

    target_action: Any = None
    on_stdin: Any = None
    on_stdout: Any = None
    on_stderr: Any = None


@dataclass
class Shutdown:
    """``launch.events.Shutdown``."""

    reason: str = ''


@dataclass
class EmitEvent:
    """``launch.actions.EmitEvent``."""

    event: Any


@dataclass
class IfCondition:
    """``launch.conditions.IfCondition``."""

    predicate: Any

    def evaluate(self, context: Context) -> bool:
        return perform(context, self.predicate).strip().lower() in ('true', '1')


@dataclass
class PythonLaunchDescriptionSource:
    """``launch.launch_description_sources.PythonLaunchDescriptionSource``."""

    path: str


@dataclass
class IncludeLaunchDescription:
    """``launch.actions.IncludeLaunchDescription``."""

    source: PythonLaunchDescriptionSource
    launch_arguments: Any = ()


class LaunchDescription(list):
    """``launch.LaunchDescription``: the list of entities."""


@dataclass
class ProcessEvent:
    """What the process events carry: ``returncode`` for exits, ``text`` for output."""

    process_name: str
    returncode: int = 0
    text: bytes = b''


@dataclass
class EvaluatedNode:
    """A node as the launch would start it."""

    action: Node
    package: str
    executable: str
    name: Optional[str]
    namespace: str
    parameter_files: list[str]
    parameters: dict[str, Any]
    remappings: list[tuple[str, str]]
    arguments: list[str]
    env: dict[str, str] = field(default_factory=dict)

    def ros_args(self, params_yaml: Path) -> list[str]:
        """The ``--ros-args`` launch_ros passes, with the evaluated dict in ``params_yaml``."""
        args = ['--ros-args']
        if self.name:
            args += ['-r', f'__node:={self.name}']
        if self.namespace:
            args += ['-r', f'__ns:={self.namespace}']
        for path in self.parameter_files:
            args += ['--params-file', path]
        if self.parameters:
            fqn = f'{self.namespace.rstrip("/")}/{self.name}'
            params_yaml.write_text(yaml.safe_dump({fqn: {'ros__parameters': self.parameters}}))
            args += ['--params-file', str(params_yaml)]
        for src, dst in self.remappings:
            args += ['-r', f'{src}:={dst}']
        return args


@dataclass
class LaunchRun:
    """What one launch did, up to the point where processes would start."""

    context: Context
    nodes: list[EvaluatedNode] = field(default_factory=list)
    processes: list[list[str]] = field(default_factory=list)
    logs: list[str] = field(default_factory=list)
    handlers: list[Any] = field(default_factory=list)

    def node(self, executable: str) -> EvaluatedNode:
        """The one node started from ``executable``."""
        found = [n for n in self.nodes if n.executable == executable]
        assert len(found) == 1, f'{len(found)} nodes run {executable}'
        return found[0]

    def process_output(self, node: EvaluatedNode, text: str, stream: str = 'stderr') -> list:
        """Deliver a line the node's process wrote; return the actions the handlers give."""
        event = ProcessEvent(f'{node.executable}-1', text=text.encode())
        return self._deliver(node, lambda h: getattr(h, f'on_{stream}', None)
                             if isinstance(h, OnProcessIO) else None, (event,))

    def process_exit(self, node: EvaluatedNode, returncode: int) -> list:
        """Deliver the node's exit; return the actions the handlers give (they may raise)."""
        event = ProcessEvent(f'{node.executable}-1', returncode=returncode)
        return self._deliver(node, lambda h: h.on_exit if isinstance(h, OnProcessExit) else None,
                             (event, self.context))

    def _deliver(self, node: EvaluatedNode, pick: Any, args: tuple) -> list:
        actions: list = []
        for handler in list(self.handlers):
            if handler.target_action is not None and handler.target_action is not node.action:
                continue
            callback = pick(handler)
            if callback is not None:
                actions += callback(*args) or []
        for action in actions:
            self._visit(action)
        return actions

    def _visit(self, entity: Any) -> None:
        ctx = self.context
        if isinstance(entity, DeclareLaunchArgument):
            if entity.name not in ctx.launch_configurations:
                if entity.default_value is None:
                    raise RuntimeError(f'missing required argument {entity.name!r}')
                ctx.launch_configurations[entity.name] = perform(ctx, entity.default_value)
        elif isinstance(entity, Node):
            if entity.condition is not None and not entity.condition.evaluate(ctx):
                return
            files, params = [], {}
            for item in entity.parameters:
                if isinstance(item, dict):
                    for name, value in item.items():
                        params[name] = evaluate_parameter(ctx, name, value)
                else:
                    files.append(perform(ctx, item))
            namespace = perform(ctx, entity.namespace)
            if namespace and not namespace.startswith('/'):
                namespace = '/' + namespace
            env = dict(ctx.environment)
            env.update({perform(ctx, k): perform(ctx, v)
                        for k, v in (entity.additional_env or {}).items()})
            self.nodes.append(EvaluatedNode(
                entity, entity.package, entity.executable, entity.name, namespace, files, params,
                [(perform(ctx, a), perform(ctx, b)) for a, b in entity.remappings],
                [perform(ctx, a) for a in entity.arguments], env))
        elif isinstance(entity, SetEnvironmentVariable):
            if entity.condition is None or entity.condition.evaluate(ctx):
                ctx.environment[perform(ctx, entity.name)] = perform(ctx, entity.value)
        elif isinstance(entity, GroupAction):
            if not entity.forwarding:
                raise TypeError('the launch model knows GroupAction(forwarding=True) only')
            saved = dict(ctx.environment), dict(ctx.launch_configurations)
            for name, value in (entity.launch_configurations or {}).items():
                ctx.launch_configurations[perform(ctx, name)] = perform(ctx, value)
            for action in entity.actions:
                self._visit(action)
            if entity.scoped:
                ctx.environment, ctx.launch_configurations = saved
        elif isinstance(entity, ExecuteProcess):
            self.processes.append([perform(ctx, part) for part in entity.cmd])
        elif isinstance(entity, LogInfo):
            self.logs.append(perform(ctx, entity.msg))
        elif isinstance(entity, OpaqueFunction):
            for action in entity.function(ctx, *entity.args, **entity.kwargs) or []:
                self._visit(action)
        elif isinstance(entity, RegisterEventHandler):
            self.handlers.append(entity.event_handler)
        elif isinstance(entity, IncludeLaunchDescription):
            arguments = {perform(ctx, k): perform(ctx, v) for k, v in entity.launch_arguments}
            included = Context(arguments, ctx.environment)
            description = _generate(Path(perform(ctx, entity.source.path)))
            run = LaunchRun(included)
            for item in description:
                run._visit(item)
            ctx.environment = included.environment  # an include is not a scope
            self.nodes += run.nodes
            self.processes += run.processes
            self.logs += run.logs
            self.handlers += run.handlers
        elif isinstance(entity, EmitEvent):
            if isinstance(entity.event, Shutdown):
                ctx.is_shutdown = True
        else:
            raise TypeError(f'the launch model does not know {entity!r}')


class PackageNotFoundError(KeyError):
    """``ament_index_python.packages.PackageNotFoundError``."""


@dataclass
class AmentIndex:
    """The packages the model's ament index knows: name -> share directory."""

    shares: dict[str, str]

    def get_package_share_directory(self, name: str) -> str:
        if name not in self.shares:
            raise PackageNotFoundError(f"package '{name}' not found")
        return self.shares[name]

    def get_package_prefix(self, name: str) -> str:
        return str(Path(self.get_package_share_directory(name)).parent.parent)


_INDEX = AmentIndex({})


def _modules() -> dict[str, types.ModuleType]:
    """The stand-in modules, named as the launch files import them."""
    def module(name: str, **members: Any) -> types.ModuleType:
        mod = types.ModuleType(name)
        mod.__dict__.update(members)
        return mod

    return {
        'launch': module('launch', LaunchDescription=LaunchDescription),
        'launch.actions': module(
            'launch.actions', DeclareLaunchArgument=DeclareLaunchArgument, EmitEvent=EmitEvent,
            ExecuteProcess=ExecuteProcess, GroupAction=GroupAction,
            IncludeLaunchDescription=IncludeLaunchDescription, LogInfo=LogInfo,
            OpaqueFunction=OpaqueFunction, RegisterEventHandler=RegisterEventHandler,
            SetEnvironmentVariable=SetEnvironmentVariable),
        'launch.conditions': module('launch.conditions', IfCondition=IfCondition),
        'launch.event_handlers': module('launch.event_handlers', OnProcessExit=OnProcessExit,
                                        OnProcessIO=OnProcessIO),
        'launch.events': module('launch.events', Shutdown=Shutdown),
        'launch.launch_description_sources': module(
            'launch.launch_description_sources',
            PythonLaunchDescriptionSource=PythonLaunchDescriptionSource),
        'launch.substitutions': module(
            'launch.substitutions', LaunchConfiguration=LaunchConfiguration,
            PythonExpression=PythonExpression, TextSubstitution=TextSubstitution),
        'launch_ros': module('launch_ros'),
        'launch_ros.actions': module('launch_ros.actions', Node=Node),
        'launch_ros.parameter_descriptions': module('launch_ros.parameter_descriptions',
                                                    ParameterValue=ParameterValue),
        'ament_index_python': module('ament_index_python'),
        'ament_index_python.packages': module(
            'ament_index_python.packages', PackageNotFoundError=PackageNotFoundError,
            get_package_share_directory=lambda n: _INDEX.get_package_share_directory(n),
            get_package_prefix=lambda n: _INDEX.get_package_prefix(n)),
    }


@contextlib.contextmanager
def _stand_ins() -> Iterator[None]:
    saved = {name: sys.modules.get(name) for name in _modules()}
    sys.modules.update(_modules())
    try:
        yield
    finally:
        for name, mod in saved.items():
            if mod is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = mod


def _generate(path: Path) -> LaunchDescription:
    spec = importlib.util.spec_from_file_location(f'launch_file_{path.stem}', path)
    module = importlib.util.module_from_spec(spec)
    with _stand_ins():
        spec.loader.exec_module(module)
        return module.generate_launch_description()


def run_launch(path: Path, arguments: dict[str, str], shares: dict[str, str]) -> LaunchRun:
    """Run ``path`` with ``arguments`` against the stand-ins, up to starting processes.

    :param path: the launch file.
    :param arguments: launch arguments as ``name:=value`` on the command line.
    :param shares: the packages installed: name -> share directory.
    :return: what the launch did.
    """
    _INDEX.shares = dict(shares)
    run = LaunchRun(Context(arguments))
    with _stand_ins():
        for entity in _generate(path):
            run._visit(entity)
    return run
