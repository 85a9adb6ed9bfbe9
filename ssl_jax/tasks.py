"""The seam between the trainer and a pretext task.

A pretext task is a module ``ssl_jax.<task>.task`` with

- ``SCHEMA``: allowed values of its own config fields (see ``ssl_jax.config_lib``);
- ``build(config, workdir) -> Pretext``: its network (trunk + head), how a batch becomes inputs
  and targets on device, and its loss. ``workdir`` (None outside a run) is where a task keeps
  what it derives from the data (Colorization's bin priors) and writes its pictures.

The trainer knows nothing else about the task.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from ssl_jax import config_lib
from ssl_jax.models import alexnet

TASKS = {
    "jigsaw": "ssl_jax.jigsaw.task",
    "colorization": "ssl_jax.colorization.task",
    "supervised": "ssl_jax.supervised.task",
}


class Pretext(NamedTuple):
    """What the trainer needs from a pretext task.

    model: ``apply(variables, inputs, train=...) -> (outputs, taps)``.
    example_inputs: a small batch of inputs (shapes and dtypes) to initialise the model with.
    prepare: ``(rng, batch) -> (inputs, targets)``, runs on device inside the jitted step; ``batch``
      holds the pipeline's arrays (``image`` uint8 (B, H, W, 3), ...).
    loss: ``(outputs, targets) -> (scalar loss, dict of scalar metrics)``.
    report: optional ``(variables, step) -> None``, called on process 0 after each checkpoint
      with the model's ``{"params", "batch_stats"}`` (Colorization writes a picture).
    """

    model: nn.Module
    example_inputs: jax.Array
    prepare: Callable[[jax.Array, dict[str, jax.Array]], tuple[Any, Any]]
    loss: Callable[[Any, Any], tuple[jax.Array, dict[str, jax.Array]]]
    report: Callable[[dict[str, Any], int], None] | None = None


def task_module(name: str):
    if name not in TASKS:
        raise config_lib.ConfigError(
            f"config.task={name!r} is not a known task; allowed: {sorted(TASKS)}."
        )
    return importlib.import_module(TASKS[name])


def validate(config: ml_collections.ConfigDict) -> None:
    """All config checks, shared and task-specific; raises ConfigError before anything compiles."""
    module = task_module(config.task)
    config_lib.validate(config, extra=getattr(module, "SCHEMA", None))
    if hasattr(module, "check_config"):
        module.check_config(config)
    check_trunk_input(config, module)


def check_trunk_input(config: ml_collections.ConfigDict, module) -> None:
    """Refuses an input smaller than the trunk takes (AlexNet's strided conv1 and three max-pools
    leave nothing below 39 or 67 pixels). The input is config.input.crop unless the task module
    names another (`trunk_input(config) -> (field, size)`, e.g. Jigsaw's tiles)."""
    if config.model.name != "alexnet":
        return
    field, size = (
        module.trunk_input(config)
        if hasattr(module, "trunk_input")
        else ("config.input.crop", config.input.crop)
    )
    variant = config.model.get("alexnet_variant", "jigsaw")
    smallest = alexnet.min_input_size(variant)
    if size < smallest:
        raise config_lib.ConfigError(
            f"{field}={size} is too small for the AlexNet trunk ({variant} variant): its conv1 "
            f"and three max-pools need at least {smallest} pixels. Raise {field}."
        )


def check_source(config: ml_collections.ConfigDict, source: Any) -> None:
    """The task's checks of the opened data source (e.g. labels present), if it has any."""
    module = task_module(config.task)
    if hasattr(module, "check_source"):
        module.check_source(config, source)


def build(config: ml_collections.ConfigDict, workdir: str | None = None) -> Pretext:
    return task_module(config.task).build(config, workdir)


def compute_dtype(name: str) -> jnp.dtype:
    """The dtype of activations: 'auto' is bfloat16 on GPU/TPU and float32 on CPU."""
    if name == "auto":
        return jnp.bfloat16 if jax.default_backend() in ("gpu", "tpu") else jnp.float32
    return jnp.dtype(name)
