"""A pretraining run's state: how it is made, and what evaluations read back from a workdir.

The state is ``{"params", "batch_stats", "opt_state", "step", "rng"}`` of the task's model with the
config's optimizer (``ssl_jax.train.loop.create_state``); "rng" is ``PRNGKey(config.seed + 1)``,
from which each step draws its randomness (puzzles, tile offsets).
"""

from __future__ import annotations

from typing import Any

import jax
import ml_collections
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from ssl_jax import paths, tasks
from ssl_jax.pretext import Pretext
from ssl_jax.train import checkpoint as ckpt_lib
from ssl_jax.train import loop
from ssl_jax.train import optim as optim_lib

CONFIG_FILE = "config.json"


def pretext_state(
    config: ml_collections.ConfigDict,
    task: Pretext,
    sharding: NamedSharding,
    schedule: optax.Schedule | None = None,
    *,
    abstract: bool = False,
) -> tuple[dict[str, Any], optax.GradientTransformation]:
    """The initial state of ``task`` and its optimizer (schedule None: a constant 0, for a state
    whose structure alone matters, as when restoring)."""
    return loop.create_state(
        lambda rng: task.model.init(rng, task.example_inputs, train=False),
        lambda batch_stats: optim_lib.make_optimizer(
            config.optim, schedule or (lambda count: 0.0), batch_stats
        ),
        config.seed,
        sharding,
        rng=jax.random.PRNGKey(config.seed + 1),
        abstract=abstract,
    )


def load_run_config(workdir: str) -> ml_collections.ConfigDict:
    """The config a run was started with (``workdir/config.json``, written by ssl_jax.main)."""
    path = paths.join(workdir, CONFIG_FILE)
    if not paths.isfile(path):
        raise FileNotFoundError(
            f"{path} does not exist: {workdir!r} is not a workdir written by "
            "`python -m ssl_jax.main`."
        )
    return ml_collections.ConfigDict(_tuples(paths.read_json(path)))


def _tuples(value: Any) -> Any:
    """JSON's lists back to the tuples configs hold."""
    if isinstance(value, dict):
        return {k: _tuples(v) for k, v in value.items()}
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    return value


def restore_variables(
    workdir: str, step: int | None = None
) -> tuple[ml_collections.ConfigDict, Pretext, int, dict[str, Any]]:
    """The model variables of a pretraining run's checkpoint, for evaluations and pictures.

    Args:
      workdir: the pretraining workdir (its config.json and checkpoints/).
      step: the checkpoint to read; None for the latest.

    Returns:
      (the run's config, its task (not fitted: nothing is read from its data; what the run
      stored that shapes its model is read back, ``task.restore``), the step,
      {"params", "batch_stats"} replicated over every device).

    Raises:
      FileNotFoundError: no config.json, or no checkpoint (at that step).
    """
    config = load_run_config(workdir)
    task = tasks.create(config, check_values=False, workdir=workdir)
    replicated = NamedSharding(loop.make_mesh(), P())
    abstract, _ = pretext_state(config, task, replicated, abstract=True)
    checkpoints = ckpt_lib.Checkpoints(workdir, keep=config.train.keep_checkpoints)
    try:
        step = checkpoints.latest_step() if step is None else step
        available = checkpoints.all_steps()
        if step is None or step not in available:
            raise FileNotFoundError(
                f"No checkpoint {'at all' if step is None else f'at step {step}'} in "
                f"{checkpoints.directory}; available steps: {available}."
            )
        state, _ = checkpoints.restore(step, abstract)
    finally:
        checkpoints.close()
    return config, task, int(step), {"params": state["params"], "batch_stats": state["batch_stats"]}
