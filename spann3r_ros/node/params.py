"""Typed :class:`NodeConfig` <-> ROS 2 parameters (descriptors, ranges, validation)."""

from __future__ import annotations

import array
from typing import Any, Callable

from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    ParameterType,
    SetParametersResult,
)
from rclpy.node import Node
from rclpy.parameter import Parameter

from spann3r_ros.pipeline.config import NodeConfig, param_specs, ParamSpec

_ROS_TYPES = {
    'bool': (ParameterType.PARAMETER_BOOL, Parameter.Type.BOOL),
    'int': (ParameterType.PARAMETER_INTEGER, Parameter.Type.INTEGER),
    'float': (ParameterType.PARAMETER_DOUBLE, Parameter.Type.DOUBLE),
    'str': (ParameterType.PARAMETER_STRING, Parameter.Type.STRING),
    'list[str]': (ParameterType.PARAMETER_STRING_ARRAY, Parameter.Type.STRING_ARRAY),
    'list[float]': (ParameterType.PARAMETER_DOUBLE_ARRAY, Parameter.Type.DOUBLE_ARRAY),
}


def descriptor_for(spec: ParamSpec) -> ParameterDescriptor:
    """Return the ROS descriptor (type, description, range, read-only flag) of one parameter."""
    desc = ParameterDescriptor(name=spec.name, type=_ROS_TYPES[spec.type_name][0],
                               description=spec.description, read_only=spec.read_only)
    if spec.choices is not None:
        desc.additional_constraints = 'one of: ' + ', '.join(repr(c) for c in spec.choices)
    if spec.range is not None:
        lo, hi = spec.range
        if spec.type_name == 'int':
            desc.integer_range = [IntegerRange(from_value=int(lo), to_value=int(hi), step=0)]
        else:
            desc.floating_point_range = [FloatingPointRange(from_value=float(lo),
                                                            to_value=float(hi), step=0.0)]
    return desc


def _plain(value: Any) -> Any:
    """Return a parameter value as NodeConfig takes it (rclpy gives arrays as array.array)."""
    return list(value) if isinstance(value, array.array) else value


def declare_node_config(node: Node) -> NodeConfig:
    """Declare every :class:`NodeConfig` parameter on ``node`` and return the validated config.

    :param node: the node; overrides from ``--ros-args`` and parameter files apply here.
    :return: the configuration built from the declared values.
    :raises ValueError: when a value is invalid (one message naming the parameter).
    """
    values: dict[str, Any] = {}
    for spec in param_specs():
        try:
            param = node.declare_parameter(spec.name, spec.default, descriptor_for(spec))
        except Exception as exc:  # rclpy raises several types for a bad override
            raise ValueError(f'parameter {spec.name}: {exc}') from None
        values[spec.name] = _plain(param.value)
    return NodeConfig.from_mapping(values)


def make_set_callback(get_config: Callable[[], NodeConfig],
                      apply: Callable[[NodeConfig], None]
                      ) -> Callable[[list[Parameter]], SetParametersResult]:
    """Return an ``on_set_parameters`` callback that validates changes through :class:`NodeConfig`.

    :param get_config: returns the current configuration.
    :param apply: called with the new configuration once the change is accepted.
    :return: the callback to pass to ``add_on_set_parameters_callback``.
    """
    def callback(params: list[Parameter]) -> SetParametersResult:
        names = {spec.name for spec in param_specs()}
        # Parameters that are not ours (use_sim_time, qos overrides) are rclpy's business.
        changes = {p.name: _plain(p.value) for p in params if p.name in names}
        if not changes:
            return SetParametersResult(successful=True)
        try:
            new = get_config().replace(**changes)
        except (ValueError, TypeError) as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        apply(new)
        return SetParametersResult(successful=True)

    return callback
