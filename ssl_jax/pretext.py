"""What a pretext task is: the contract between a task and the code that trains and evaluates it.

A task is a class (``ssl_jax.jigsaw.task.Jigsaw``, ``ssl_jax.colorization.task.Colorization``,
``ssl_jax.supervised.task.Supervised``) built from a pretraining config, listed in
``ssl_jax.tasks.TASKS``. The trainer, the frozen-feature benchmarks and the linear classifiers ask
the task; none of them tests its name. A third task (rotation prediction, say) is one new module
with such a class and one config file (README, "Adding a pretext task").
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Protocol, runtime_checkable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np


@runtime_checkable
class Pretext(Protocol):
    """A pretext task built from a pretraining config.

    Class attributes:
      name: the ``config.task`` value that selects it.
      schema: allowed values of its own config fields, ``{"jigsaw.num_perms": check, ...}``
        (see ``ssl_jax.config_lib``); checked with the shared fields before anything compiles.

    Attributes (set by ``__init__(config)``, which also makes the task's cross-field config
    checks and raises ``config_lib.ConfigError``):
      config: the pretraining config.
      model: ``apply(variables, inputs, train=...) -> (outputs, taps)``; its trunk is the
        submodule named "trunk" (what the benchmarks evaluate). A task whose model depends on
        its data (Colorization's data bins) has it only after ``fit`` or ``restore``.
      example_inputs: a small NumPy batch of inputs (shapes and dtypes) to initialise the model
        with (NumPy, so that building a task touches no device).
      rows_per_image: trunk rows per image of a batch (Jigsaw: its 9 tiles; others 1), which the
        BatchNorm groups count in.
      trunk_input: (config key, size in pixels) of what the trunk sees (the crop, or Jigsaw's
        tiles), checked against the trunk's smallest input.
      input_channels: channels of the trunk's input (3 for RGB, 1 for Colorization's L).
      linear_augment: the training augmentation of the linear-classifier benchmark for this
        task's trunks ("random_resized_crop", or "resize_crop" for Colorization; PROTOCOLS.md).
      linear_bn_scale_shift: whether the linear heads' BatchNorm learns scale and shift
        (PROTOCOLS.md: only for Colorization ResNets).

    Methods:
      check_source(source): refuses pretraining data the task cannot use (e.g. no labels).
      fit(workdir): the task's data-derived state (Colorization's ab-bin priors, and its bins for
        bin sizes other than 10), read from the workdir or estimated from the pretraining data
        and stored there; the explicit step the trainer takes before ``prepare`` and before it
        builds the state from ``model``. A no-op for tasks that derive nothing.
      restore(workdir): what a run stored in its workdir that shapes ``model`` (Colorization's
        data bins: one logit per bin), read back without reading any data; ``tasks.create``
        calls it when given the run's workdir (evaluations of a checkpoint). A no-op for tasks
        whose model the config alone decides.
      prepare(rng, batch) -> (inputs, targets): runs on device inside the jitted step; ``batch``
        holds the pipeline's arrays (``image`` uint8 (B, H, W, 3), ``label`` int32 (B,)).
      loss(outputs, targets) -> (scalar loss, dict of scalar metrics).
      model_inputs(images) -> the trunk's input for uint8 RGB images (B, S, S, 3): the input
        convention the frozen-feature benchmarks use (normalised RGB, or Colorization's L - 50).
    """

    name: ClassVar[str]
    schema: ClassVar[Mapping[str, tuple[Any, str]]]
    config: ml_collections.ConfigDict
    model: nn.Module
    example_inputs: np.ndarray
    rows_per_image: int
    trunk_input: tuple[str, int]
    input_channels: int
    linear_augment: str
    linear_bn_scale_shift: bool

    def check_source(self, source: Any) -> None: ...

    def fit(self, workdir: str | None) -> None: ...

    def restore(self, workdir: str) -> None: ...

    def prepare(self, rng: jax.Array, batch: dict[str, jax.Array]) -> tuple[Any, Any]: ...

    def loss(self, outputs: Any, targets: Any) -> tuple[jax.Array, dict[str, jax.Array]]: ...

    def model_inputs(self, images: jax.Array) -> jax.Array: ...


def compute_dtype(name: str) -> jnp.dtype:
    """The dtype of activations: 'auto' is bfloat16 on GPU/TPU and float32 on CPU."""
    if name == "auto":
        return jnp.bfloat16 if jax.default_backend() in ("gpu", "tpu") else jnp.float32
    return jnp.dtype(name)


def normalised_rgb(config: ml_collections.ConfigDict, images: jax.Array) -> jax.Array:
    """uint8 RGB (B, H, W, 3) -> float32 (images / 255 - config.input.mean) / config.input.std,
    mean and std given in RGB order; the channels reversed at the end when
    ``config.input.channel_order`` is "bgr" (a trunk whose conv1 reads BGR)."""
    mean = jnp.asarray(tuple(config.input.mean), jnp.float32)
    std = jnp.asarray(tuple(config.input.std), jnp.float32)
    x = (images.astype(jnp.float32) / 255.0 - mean) / std
    if config.input.get("channel_order", "rgb") == "bgr":
        x = x[..., ::-1]
    return x
