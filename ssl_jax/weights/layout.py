"""One weight layout between every format and ssl_jax: PyTorch-style names and OIHW kernels.

Every importer first turns its checkpoint into a flat ``{name: numpy array}`` in torchvision's
ResNet names (``conv1.weight``, ``bn1.running_var``, ``layer1.0.conv2.weight``,
``layer1.0.downsample.0.weight``, ``layer1.0.downsample.1.bias``) or, for AlexNet,
``conv{i}.weight``, ``conv{i}.bias`` and ``bn{i}.*``; every exporter starts from it. This module
maps that layout to and from a trunk's ssl_jax variables (``params``/``batch_stats`` trees of
ssl_jax.models, HWIO kernels), leaf by leaf, from the trunk's own variable tree, so a name that
does not map, a missing tensor or a wrong shape is found before anything is written.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ssl_jax.models import make_trunk

# Variable leaf -> torch suffix.
_LEAF = {
    ("params", "kernel"): "weight",
    ("params", "bias"): "bias",
    ("params", "scale"): "weight",
    ("batch_stats", "mean"): "running_mean",
    ("batch_stats", "var"): "running_var",
}
# Torch entries that are bookkeeping, not weights.
IGNORED = re.compile(r"(^|\.)num_batches_tracked$")


class WeightsError(ValueError):
    """A checkpoint that does not fit the model: the message is a table of what failed."""


def _module_name(path: tuple[str, ...]) -> str:
    out = []
    for part in path:
        block = re.fullmatch(r"res(\d)_(\d+)", part)
        if block:
            out.append(f"layer{int(block.group(1)) - 1}.{block.group(2)}")
        elif part == "downsample_conv":
            out.append("downsample.0")
        elif part == "downsample_bn":
            out.append("downsample.1")
        else:
            out.append(part)
    return ".".join(out)


def trunk_shapes(model_config: ml_collections.ConfigDict, input_channels: int) -> dict[str, Any]:
    """The trunk's variables as ShapeDtypeStructs (nothing is computed)."""
    trunk = make_trunk(model_config, jnp.float32)
    size = 227 if model_config.name == "alexnet" else 64
    example = jax.ShapeDtypeStruct((1, size, size, input_channels), jnp.float32)
    return jax.eval_shape(lambda x: trunk.init(jax.random.PRNGKey(0), x, train=False), example)


def leaves(shapes: Mapping[str, Any]) -> list[tuple[tuple[str, ...], str, tuple[int, ...]]]:
    """(variable path, torch name, ssl_jax shape) of every trunk variable, in tree order."""
    out = []
    for collection in ("params", "batch_stats"):
        flat = jax.tree_util.tree_flatten_with_path(shapes.get(collection, {}))[0]
        for keypath, leaf in flat:
            path = tuple(k.key for k in keypath)
            suffix = _LEAF[(collection, path[-1])]
            name = f"{_module_name(path[:-1])}.{suffix}"
            out.append(((collection, *path), name, tuple(leaf.shape)))
    return out


def _to_ssl_jax(name: str, value: np.ndarray) -> np.ndarray:
    if name.endswith(".weight") and value.ndim == 4:
        return np.transpose(value, (2, 3, 1, 0))  # OIHW -> HWIO
    return value


def _to_torch(name: str, value: np.ndarray) -> np.ndarray:
    if name.endswith(".weight") and value.ndim == 4:
        return np.transpose(value, (3, 2, 0, 1))  # HWIO -> OIHW
    return value


def is_trunk_name(name: str) -> bool:
    """Whether a torch-style name belongs to a trunk (anything else is a head or extra)."""
    return bool(re.match(r"(conv\d|bn\d|layer\d+|unmapped)\.", name))


def to_variables(
    state: Mapping[str, np.ndarray], model_config: ml_collections.ConfigDict, input_channels: int
) -> tuple[dict[str, Any], list[str]]:
    """The trunk variables of a torch-style state dict.

    Returns:
      ({"params": ..., "batch_stats": ...} float32 numpy trees, the names left over: heads and
      anything else that is not the trunk's).

    Raises:
      WeightsError: a table of every trunk tensor missing, every shape that differs and every
        trunk-looking name that maps to nothing.
    """
    shapes = trunk_shapes(model_config, input_channels)
    variables: dict[str, Any] = {}
    problems = []
    used = set()
    for path, name, shape in leaves(shapes):
        if name not in state:
            problems.append((name, "missing", f"expected shape {_torch_shape(name, shape)}"))
            continue
        value = _to_ssl_jax(name, np.asarray(state[name]))
        used.add(name)
        if value.shape != shape:
            problems.append(
                (
                    name,
                    "shape",
                    f"{np.asarray(state[name]).shape}, expected {_torch_shape(name, shape)}",
                )
            )
            continue
        node = variables
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = np.asarray(value, np.float32)
    rest = [n for n in state if n not in used and not IGNORED.search(n)]
    for name in rest:
        if is_trunk_name(name):
            problems.append((name, "unmapped", "looks like a trunk tensor but this model has none"))
    if problems:
        raise WeightsError(failure_table(problems))
    return variables, [n for n in rest if not is_trunk_name(n)]


def from_variables(variables: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """A trunk's variables as a torch-style state dict (float32, OIHW kernels)."""
    out = {}
    for path, name, _ in leaves(variables):
        node: Any = variables
        for key in path:
            node = node[key]
        out[name] = _to_torch(name, np.asarray(node, np.float32))
    return out


def _torch_shape(name: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    if name.endswith(".weight") and len(shape) == 4:
        return (shape[3], shape[2], shape[0], shape[1])
    return shape


def failure_table(problems: list[tuple[str, str, str]], limit: int = 40) -> str:
    """A plain-text table of (tensor, problem, detail) rows."""
    width = max(len(p[0]) for p in problems)
    lines = [f"{'tensor':<{width}}  problem   detail", f"{'-' * width}  --------  ------"]
    lines += [f"{n:<{width}}  {k:<8}  {d}" for n, k, d in problems[:limit]]
    if len(problems) > limit:
        lines.append(f"... and {len(problems) - limit} more")
    return "\n".join(lines)
