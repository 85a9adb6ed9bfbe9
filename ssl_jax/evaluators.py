"""The benchmarks ssl_jax knows, by ``config.evaluation``, and the two ways they run.

Standalone (``python -m ssl_jax.main`` with an evaluation config): ``evaluate(config, workdir)``
loads the weights of ``config.pretrained`` (its latest checkpoint, ``pretrained_step``, or the
same trunk with fresh weights for ``random_init``) and runs the benchmark in ``workdir``.

Attached to pretraining: every entry ``config.evals.LABEL`` of a pretraining config with
``every_steps`` set is built at start-up (its checks run before any step) and run by the loop
at checkpoints every ``every_steps`` (-1: every checkpoint) and at the last step; its metrics
are logged as ``LABEL/NAME``, its results written to ``W/evals/LABEL/step_N``. SIGTERM stops an
evaluation at its next safe point (``ssl_jax.train.preemption``); the same command run again
resumes at that step and runs the evaluations whose results file is missing there first.

Adding a benchmark: a module with a class that satisfies ``ssl_jax.evals.base.Evaluator`` and a
``defaults()`` config, one line in ``EVALUATORS``, and a config file in configs/evals/.
"""

from __future__ import annotations

import logging
from typing import Any

import jax
import ml_collections

from ssl_jax import config_lib, paths, tasks
from ssl_jax.colorization.picture import Picture
from ssl_jax.evals import detection, linear, probe, svm_benchmark
from ssl_jax.evals.base import RESULTS_FILE, Evaluator, Weights
from ssl_jax.pretext import Pretext
from ssl_jax.train import preemption
from ssl_jax.train import state as state_lib

_log = logging.getLogger(__name__)

EVALUATORS: dict[str, type] = {
    "voc07_svm": svm_benchmark.SvmBenchmark,
    "voc07_lowshot": svm_benchmark.SvmBenchmark,
    "places205_lowshot": svm_benchmark.SvmBenchmark,
    "linear": linear.LinearBenchmark,
    "probe": probe.Probe,
    "colorization_picture": Picture,
    "voc07_detection": detection.DetectionBenchmark,
}


def create(config: ml_collections.ConfigDict, task: Pretext) -> Evaluator:
    """The benchmark ``config.evaluation`` for ``task``'s trunk; raises ConfigError."""
    name = config.get("evaluation")
    if name not in EVALUATORS:
        raise config_lib.ConfigError(
            f"config.evaluation={name!r} is not a known benchmark; allowed: {sorted(EVALUATORS)}."
        )
    return EVALUATORS[name](config, task)


def is_evaluation(config: ml_collections.ConfigDict) -> bool:
    """Whether a config is an evaluation config (it names a benchmark) or a pretraining one."""
    return "evaluation" in config


# ---------------------------------------------------------------------------------------------
# Standalone


def check(config: ml_collections.ConfigDict) -> tuple[ml_collections.ConfigDict, Pretext]:
    """The start-up checks of a standalone evaluation config; returns the pretraining run's
    config and its task (nothing is read beyond the run's config.json)."""
    if not config.pretrained:
        raise config_lib.ConfigError(
            "config.pretrained is empty: name the pretraining workdir to evaluate, "
            "--config.pretrained=/path/to/workdir (add --config.random_init=True for the same "
            "trunk with random weights)."
        )
    try:
        run_config = state_lib.load_run_config(config.pretrained)
    except FileNotFoundError:
        raise config_lib.ConfigError(
            f"config.pretrained={config.pretrained!r} has no config.json: it is not a workdir "
            "written by `python -m ssl_jax.main`."
        ) from None
    task = tasks.create(run_config, check_values=False)
    create(config, task)
    return run_config, task


def load_weights(config: ml_collections.ConfigDict) -> tuple[Pretext, Weights]:
    """The task of ``config.pretrained`` and the weights to evaluate: a checkpoint of the run
    (``pretrained_step``, -1 the latest), or with ``random_init`` its model with fresh weights
    (seed ``config.seed``)."""
    if config.random_init:
        run_config = state_lib.load_run_config(config.pretrained)
        task = tasks.create(run_config, check_values=False, workdir=config.pretrained)
        rng = jax.random.PRNGKey(config.seed)
        variables = task.model.init(rng, task.example_inputs, train=False)
        description = f"random init (seed {config.seed}) of the trunk of {config.pretrained}"
        return task, Weights(variables, None, description)
    step = None if config.pretrained_step < 0 else int(config.pretrained_step)
    _, task, step, variables = state_lib.restore_variables(config.pretrained, step)
    return task, Weights(variables, step, f"{paths.abspath(config.pretrained)} step {step}")


def evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
    """Runs a standalone evaluation config in ``workdir``; returns its metrics."""
    check(config)
    paths.makedirs(workdir)
    task, weights = load_weights(config)
    with preemption.listen():  # SIGTERM: Preempted at the benchmark's next safe point
        return create(config, task).run(weights, workdir)


# ---------------------------------------------------------------------------------------------
# Attached to pretraining


def attached(config: ml_collections.ConfigDict, task: Pretext) -> list[tuple[str, int, Evaluator]]:
    """(label, every_steps, evaluator) of every evaluation attached to a pretraining config,
    checked at start-up (ConfigError names the ``config.evals.LABEL`` key to change)."""
    out = []
    for label, entry in (config.get("evals") or {}).items():
        if not entry.get("every_steps"):
            continue
        key = f"config.evals.{label}"
        every = config.train.checkpoint_every if entry.every_steps == -1 else entry.every_steps
        if every < 0 or every % config.train.checkpoint_every:
            raise config_lib.ConfigError(
                f"{key}.every_steps={entry.every_steps} must be a multiple of "
                f"config.train.checkpoint_every={config.train.checkpoint_every} (evaluations "
                "run on checkpointed weights), -1 (every checkpoint) or 0 (off)."
            )
        try:
            evaluator = create(entry, task)
        except config_lib.ConfigError as e:
            raise config_lib.ConfigError(str(e).replace("config.", f"{key}.")) from None
        out.append((label, int(every), evaluator))
    return out


def run_attached(
    evaluator: Evaluator, label: str, variables: dict[str, Any], step: int, workdir: str
) -> dict[str, float]:
    """Runs one attached evaluation on the live weights at ``step``, in W/evals/LABEL/step_N."""
    out_dir = attached_dir(workdir, label, step)
    _log.info("evaluation %s at step %d -> %s", label, step, out_dir)
    weights = Weights(
        {"params": variables["params"], "batch_stats": variables["batch_stats"]},
        step,
        f"{workdir} step {step}",
    )
    return evaluator.run(weights, out_dir)


def attached_dir(workdir: str, label: str, step: int) -> str:
    """W/evals/LABEL/step_N, where the attached evaluation LABEL at ``step`` writes."""
    return paths.join(workdir, "evals", label, f"step_{step}")


def attached_done(evaluator: Evaluator, label: str, step: int, workdir: str) -> bool:
    """Whether the attached evaluation LABEL at ``step`` finished: the file it writes last (its
    ``results_file``, else results.json) is there."""
    name = getattr(evaluator, "results_file", RESULTS_FILE)
    return paths.isfile(paths.join(attached_dir(workdir, label, step), name))
