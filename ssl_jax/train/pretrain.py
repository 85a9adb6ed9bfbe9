"""Pretraining, for every pretext task: what it hands the loop.

Reads top to bottom: task, mesh, data, schedule, attached evaluations, the task's data-derived
state, the state and its jitted update step; then ``ssl_jax.train.loop.run`` trains with its
log / checkpoint / evaluate / stop gates. The task (``ssl_jax.pretext.Pretext``) is the only thing
that differs between Jigsaw, Colorization and the supervised baseline.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import jax
import ml_collections
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from ssl_jax import evaluators, paths, tasks
from ssl_jax.pretext import Pretext
from ssl_jax.train import loop
from ssl_jax.train import optim as optim_lib
from ssl_jax.train import state as state_lib

_log = logging.getLogger(__name__)


def make_train_step(task: Pretext, tx, schedule):
    """(state, batch) -> (state, metrics); batch holds global arrays sharded along 'data'."""

    def train_step(state, batch):
        step_rng = jax.random.fold_in(state["rng"], state["step"])
        inputs, targets = task.prepare(step_rng, batch)

        def loss_fn(params):
            (outputs, _), updates = task.model.apply(
                {"params": params, "batch_stats": state["batch_stats"]},
                inputs,
                train=True,
                mutable=["batch_stats"],
            )
            loss, metrics = task.loss(outputs, targets)
            return loss, (metrics, updates.get("batch_stats", {}))

        grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
        (_, (metrics, batch_stats)), grads = grad_fn(state["params"])
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        params = jax.tree.map(lambda p, u: p + u, state["params"], updates)
        metrics = dict(metrics, lr=schedule(state["step"]))
        new_state = {
            "params": params,
            "batch_stats": batch_stats,
            "opt_state": opt_state,
            "step": state["step"] + 1,
            "rng": state["rng"],
        }
        return new_state, metrics

    return train_step


def check(config: ml_collections.ConfigDict) -> None:
    """Every start-up check of a pretraining config (the task's, the attached evaluations');
    raises ConfigError before anything is read or compiled."""
    evaluators.attached(config, tasks.create(config))


def pretrain(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
    """Pretrains ``config.task`` in ``workdir``, resuming from its latest checkpoint if any.

    Returns the last logged training metrics.
    """
    task = tasks.create(config)
    paths.makedirs(workdir)
    mesh = loop.make_mesh()
    replicated = NamedSharding(mesh, P())
    batch_sharding = NamedSharding(mesh, P("data"))
    local_batch = loop.local_batch_size(config.optim.batch_size, mesh)

    from ssl_jax import data as data_lib  # TensorFlow: only where data is read

    # Data: only its size is needed before the iterator is opened at the resume position.
    source = data_lib.make_source(config.data)
    task.check_source(source)
    # Which images (config.data.data_size's subset): recorded once, checked on every restart.
    data_lib.record_subset(workdir, source, write=jax.process_index() == 0)
    plan = optim_lib.make_plan(config.optim, source.num_examples)
    _log.info(
        "%d images, %d steps per epoch, %d steps; lr %.4g (batch %d), warm-up %d steps from %.4g",
        plan.num_examples,
        plan.steps_per_epoch,
        plan.total_steps,
        plan.peak_lr,
        plan.batch_size,
        plan.warmup_steps,
        plan.warmup_start_lr,
    )
    # Evaluations attached to the run, built and checked before any step.
    attached = evaluators.attached(config, task)
    # The task's data-derived state (Colorization's priors, Jigsaw's permutation set).
    task.fit(workdir)

    schedule = optim_lib.make_schedule(plan, config.optim.decay_factor)
    state, tx = state_lib.pretext_state(config, task, replicated, schedule)
    num_params = sum(x.size for x in jax.tree.leaves(state["params"]))
    _log.info("%s: %.2fM parameters", config.task, num_params / 1e6)
    train_step = jax.jit(
        make_train_step(task, tx, schedule),
        in_shardings=(replicated, batch_sharding),
        out_shardings=(replicated, replicated),
        donate_argnums=0,
    )

    def batches(start):
        return data_lib.pretrain_iterator(
            config.data,
            config.input,
            local_batch_size=local_batch,
            seed=config.seed,
            process_index=jax.process_index(),
            process_count=jax.process_count(),
            start=start,
            source=source,
        )

    def evaluation(label, evaluator):
        def run(state: dict[str, Any], step: int) -> dict[str, float]:
            return evaluators.run_attached(evaluator, label, state, step, workdir)

        return run

    outcome = loop.run(
        state,
        train_step,
        batches,
        workdir=workdir,
        train=config.train,
        total_steps=plan.total_steps,
        batch_size=plan.batch_size,
        steps_per_epoch=plan.steps_per_epoch,
        mesh=mesh,
        periodic=[
            loop.Periodic(
                label,
                every,
                evaluation(label, evaluator),
                functools.partial(evaluators.attached_done, evaluator, label, workdir=workdir),
            )
            for label, every, evaluator in attached
        ],
        skipped_images=data_lib.skipped_count,
        what="pretraining",
    )
    return outcome.metrics
