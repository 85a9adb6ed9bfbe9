"""The pretext tasks ssl_jax knows, by ``config.task``, and the checks every task shares.

    task = tasks.create(config)   # validated; a ``ssl_jax.pretext.Pretext``
    task.fit(workdir)             # before training: its data-derived state (priors, permutations)
    task = tasks.create(run_config, check_values=False, workdir=W)  # a run's task, for evaluation

Adding a task: a module with a class that satisfies ``ssl_jax.pretext.Pretext``, one line in
``TASKS``, and a config file (README, "Adding a pretext task").
"""

from __future__ import annotations

import ml_collections

from ssl_jax import config_lib
from ssl_jax.colorization.task import Colorization
from ssl_jax.jigsaw.task import Jigsaw
from ssl_jax.models import alexnet
from ssl_jax.pretext import Pretext
from ssl_jax.supervised.task import Supervised

TASKS: dict[str, type] = {task.name: task for task in (Jigsaw, Colorization, Supervised)}


def task_class(name: str) -> type:
    if name not in TASKS:
        raise config_lib.ConfigError(
            f"config.task={name!r} is not a known task; allowed: {sorted(TASKS)}."
        )
    return TASKS[name]


def create(
    config: ml_collections.ConfigDict, *, check_values: bool = True, workdir: str | None = None
) -> Pretext:
    """The task of a pretraining config, after every config check (shared and the task's own).

    ``check_values=False`` skips the value checks of the schemas (a finished run's config read
    back for evaluation: what mattered for its training no longer does); the task's own checks
    of what it builds still run. ``workdir``: the run's workdir, from which the task reads back
    what shapes its model (``task.restore``: Colorization's data bins); reads no data.

    Raises:
      config_lib.ConfigError: before anything is compiled or read.
    """
    cls = task_class(config.task)
    if check_values:
        config_lib.validate(config, extra=cls.schema)
    task = cls(config)
    check_trunk_input(config, task)
    if workdir is not None:
        task.restore(workdir)
    return task


def validate(config: ml_collections.ConfigDict) -> None:
    """All config checks of a pretraining config; raises ConfigError before anything compiles."""
    create(config)


def check_trunk_input(config: ml_collections.ConfigDict, task: Pretext) -> None:
    """Refuses an input smaller than the trunk takes (AlexNet's strided conv1 and three max-pools
    leave nothing below 39 or 67 pixels); the input is what the task says its trunk sees."""
    if config.model.name != "alexnet":
        return
    field, size = task.trunk_input
    variant = config.model.get("alexnet_variant", "jigsaw")
    smallest = alexnet.min_input_size(variant)
    if size < smallest:
        raise config_lib.ConfigError(
            f"{field}={size} is too small for the AlexNet trunk ({variant} variant): its conv1 "
            f"and three max-pools need at least {smallest} pixels. Raise {field}."
        )
