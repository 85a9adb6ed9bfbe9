"""The one pretraining loop, for every pretext task.

Reads top to bottom: mesh, data, task (model, targets, loss), optimizer, state and shardings, the
jitted update step, then the loop with its log / checkpoint / stop gates. The task module is the
only thing that differs between Jigsaw and Colorization.
"""

from __future__ import annotations

import json
import logging
import math
import re
import signal
import threading
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from ssl_jax import config_lib, fileio, tasks
from ssl_jax.train import checkpoint as ckpt_lib
from ssl_jax.train import metrics as metrics_lib
from ssl_jax.train import optim as optim_lib


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class InputPipelineError(RuntimeError):
    """The input pipeline could not produce a batch; the last checkpoint is kept."""


def make_mesh() -> Mesh:
    """A 1-D mesh over every device of every process; the batch is split along 'data'."""
    return Mesh(np.asarray(jax.devices()), ("data",))


def check_batch(batch_size: int, mesh: Mesh) -> int:
    """The per-process batch; the global batch must split evenly over processes and devices."""
    devices, processes = mesh.size, jax.process_count()
    if batch_size % devices or batch_size % processes:
        raise config_lib.ConfigError(
            f"config.optim.batch_size={batch_size} does not split evenly over {devices} devices "
            f"in {processes} processes; use a multiple of {devices}."
        )
    return batch_size // processes


def init_state(config, pretext: tasks.Pretext, tx, rng: jax.Array) -> dict[str, Any]:
    variables = pretext.model.init(rng, pretext.example_inputs, train=False)
    params = variables["params"]
    batch_stats = variables.get("batch_stats", {})
    return {
        "params": params,
        "batch_stats": batch_stats,
        "opt_state": tx.init(params),
        "step": jnp.zeros((), jnp.int32),
        "rng": jax.random.PRNGKey(config.seed + 1),
    }


def make_train_step(pretext: tasks.Pretext, tx, schedule):
    """(state, batch) -> (state, metrics); batch holds global arrays sharded along 'data'."""

    def train_step(state, batch):
        step_rng = jax.random.fold_in(state["rng"], state["step"])
        inputs, targets = pretext.prepare(step_rng, batch)

        def loss_fn(params):
            (outputs, _), updates = pretext.model.apply(
                {"params": params, "batch_stats": state["batch_stats"]},
                inputs,
                train=True,
                mutable=["batch_stats"],
            )
            loss, metrics = pretext.loss(outputs, targets)
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


class _StopSignal:
    """Turns SIGTERM (preemption) into a flag the loop checks between steps."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum, frame):
        logging.warning("SIGTERM received: saving a checkpoint and stopping after this step.")
        self.requested = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def train(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
    """Pretrains ``config.task`` in ``workdir``, resuming from its latest checkpoint if any.

    Returns the last logged metrics.
    """
    tasks.validate(config)
    fileio.makedirs(workdir)
    mesh = make_mesh()
    replicated = NamedSharding(mesh, P())
    batch_sharding = NamedSharding(mesh, P("data"))
    local_batch = check_batch(config.optim.batch_size, mesh)

    from ssl_jax import data as data_lib  # TensorFlow: only where data is read

    # Data: only its size is needed before the iterator is opened at the resume position.
    source = data_lib.make_source(config.data)
    tasks.check_source(config, source)
    # Which images (config.data.data_size's subset): recorded once, checked on every restart.
    data_lib.record_subset(workdir, source, write=jax.process_index() == 0)
    plan = optim_lib.make_plan(config.optim, source.num_examples)
    logging.info(
        "%d images, %d steps per epoch, %d steps; lr %.4g (batch %d), warm-up %d steps from %.4g",
        plan.num_examples,
        plan.steps_per_epoch,
        plan.total_steps,
        plan.peak_lr,
        plan.batch_size,
        plan.warmup_steps,
        plan.warmup_start_lr,
    )

    # Evaluations attached to the run (config.evals), loaded and checked before any step.
    from ssl_jax.evals import probe as probe_lib
    from ssl_jax.evals import run as evals_run

    evaluations = evals_run.attached(config)
    probe_lib.check_config(config)

    # Task, optimizer, state. Initialisation is jitted straight into the replicated sharding.
    pretext = tasks.build(config, workdir)
    schedule = optim_lib.make_schedule(plan, config.optim.decay_factor)
    init_rng = jax.random.PRNGKey(config.seed)
    variables_shape = jax.eval_shape(
        lambda: pretext.model.init(init_rng, pretext.example_inputs, train=False)
    )
    tx = optim_lib.make_optimizer(config.optim, schedule, variables_shape.get("batch_stats", {}))
    state = jax.jit(lambda rng: init_state(config, pretext, tx, rng), out_shardings=replicated)(
        init_rng
    )
    num_params = sum(x.size for x in jax.tree.leaves(state["params"]))
    logging.info("%s: %.2fM parameters", config.task, num_params / 1e6)

    checkpoints = ckpt_lib.Checkpoints(workdir, keep=config.train.keep_checkpoints)
    start_step, start_position = 0, None
    latest = checkpoints.latest_step()
    if latest is not None:
        state, positions = checkpoints.restore(latest, ckpt_lib.abstract_like(state))
        start_step = int(jax.device_get(state["step"]))
        start_position = ckpt_lib.process_position(positions, start_step)
        logging.info("Resumed from the checkpoint at step %d in %s", start_step, workdir)

    batches = data_lib.pretrain_iterator(
        config.data,
        config.input,
        local_batch_size=local_batch,
        seed=config.seed,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
        start=start_position,
        source=source,
    )
    train_step = jax.jit(
        make_train_step(pretext, tx, schedule),
        in_shardings=(replicated, batch_sharding),
        out_shardings=(replicated, replicated),
        donate_argnums=0,
    )

    end_step = plan.total_steps
    if config.train.stop_after_steps:
        end_step = min(end_step, config.train.stop_after_steps)
    writer = metrics_lib.MetricsWriter(workdir, start_step)
    progress = metrics_lib.Progress(plan.total_steps, start_step, config.train.progress_bar)
    position = np.asarray(start_position or (0, -1), np.int64)
    last = {}
    pending: list[dict[str, jax.Array]] = []
    step = start_step
    window_start, window_steps = None, 0
    with _StopSignal() as stop:
        while step < end_step:
            try:
                local = next(batches)
            except Exception as e:  # tf.errors.* raised from inside tf.data
                latest = checkpoints.latest_step()
                checkpoints.close()
                kept = (
                    f"The last checkpoint (step {latest}) is kept in {checkpoints.directory}"
                    if latest is not None
                    else "No checkpoint was written yet"
                )
                raise InputPipelineError(
                    f"The input pipeline failed before step {step + 1}: {_error_text(e)} "
                    f"{kept}; fix the data (config.data) and rerun to resume."
                ) from e
            position = np.asarray([local["epoch"][-1], local["index"][-1]], np.int64)
            # Labels travel too (-1 where unlabelled); only the supervised task reads them.
            batch = {
                key: jax.make_array_from_process_local_data(batch_sharding, local[key])
                for key in ("image", "label")
            }
            state, step_metrics = train_step(state, batch)
            pending.append(step_metrics)
            step += 1
            if window_start is None:  # the first step includes compilation: time from its end
                jax.block_until_ready(step_metrics)
                window_start, window_steps = time.perf_counter(), 0
            else:
                window_steps += 1
            progress.update(1)

            stopping = step >= end_step or _stop_requested(stop, step, config)
            if step % config.train.log_every == 0 or stopping:
                last = _log(pending, step, plan, window_start, window_steps, writer, progress)
                pending, window_start, window_steps = [], time.perf_counter(), 0
                if not _finite(last["loss"]):
                    latest = checkpoints.latest_step()
                    checkpoints.close()
                    raise TrainingDiverged(
                        f"The loss became {last['loss']} by step {step}. The last good checkpoint "
                        f"is step {latest} in {checkpoints.directory}. Lower the learning rate "
                        "(config.optim.base_lr) or check the data, then rerun to resume."
                    )
                if step % config.train.checkpoint_every == 0 or stopping:
                    positions = _gather_positions(position)
                    checkpoints.save(step, state, positions)
                    if pretext.report is not None and jax.process_index() == 0:
                        # Host copies: a jitted call on the global arrays from one process alone
                        # would wait for the others.
                        variables = {"params": state["params"], "batch_stats": state["batch_stats"]}
                        pretext.report(jax.device_get(variables), step)
                    probe = config.evals.probe if probe_lib.enabled(config) else None
                    if probe is not None and (step % probe.every_steps == 0 or stopping):
                        scalars = probe_lib.run(
                            config,
                            {"params": state["params"], "batch_stats": state["batch_stats"]},
                            step,
                            workdir,
                        )
                        if scalars:
                            writer.write(step, scalars)
                    if evaluations:
                        scalars = evals_run.during_training(
                            config,
                            evaluations,
                            {"params": state["params"], "batch_stats": state["batch_stats"]},
                            step,
                            stopping,
                            workdir,
                        )
                        if scalars:
                            writer.write(step, scalars)
            if stopping:
                break
    checkpoints.close()
    progress.close()
    writer.close()
    if stop.requested:
        logging.warning(
            "Stopped by SIGTERM at step %d; checkpoint saved. Run the same command to resume.", step
        )
    return last


def restore_variables(
    config: ml_collections.ConfigDict, workdir: str, step: int | None = None
) -> tuple[tasks.Pretext, int, dict[str, Any]]:
    """The model variables of a pretraining run's checkpoint, for evaluation and pictures.

    Args:
      config: the run's config (``workdir/config.json`` holds it).
      step: the checkpoint to read; None for the latest.

    Returns:
      (the task as built for this config, the step, {"params", "batch_stats"}), replicated.
    """
    pretext = tasks.build(config, workdir)
    replicated = NamedSharding(make_mesh(), P())
    rng = jax.random.PRNGKey(config.seed)
    variables_shape = jax.eval_shape(
        lambda: pretext.model.init(rng, pretext.example_inputs, train=False)
    )
    # The optimizer state's structure does not depend on the schedule's values.
    tx = optim_lib.make_optimizer(
        config.optim, lambda count: 0.0, variables_shape.get("batch_stats", {})
    )
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated),
        jax.eval_shape(lambda r: init_state(config, pretext, tx, r), rng),
    )
    checkpoints = ckpt_lib.Checkpoints(workdir, keep=config.train.keep_checkpoints)
    try:
        step = checkpoints.latest_step() if step is None else step
        available = list(checkpoints.manager.all_steps())
        if step is None or step not in available:
            raise FileNotFoundError(
                f"No checkpoint {'at all' if step is None else f'at step {step}'} in "
                f"{checkpoints.directory}; available steps: {available}."
            )
        state, _ = checkpoints.restore(step, abstract)
    finally:
        checkpoints.close()
    return pretext, int(step), {"params": state["params"], "batch_stats": state["batch_stats"]}


def load_run_config(workdir: str) -> ml_collections.ConfigDict:
    """The config a run was started with (``workdir/config.json``, written by ssl_jax.main)."""
    path = fileio.join(workdir, "config.json")
    if not fileio.isfile(path):
        raise FileNotFoundError(
            f"{path} does not exist: {workdir!r} is not a workdir written by "
            "`python -m ssl_jax.main`."
        )
    with fileio.open_file(path) as f:
        return ml_collections.ConfigDict(json.load(f))


def _error_text(error: Exception) -> str:
    """The Python error inside a tf.data failure, without TensorFlow's op and iterator names."""
    text = str(error).strip()
    match = re.search(r"\b\w*(?:Error|Exception): (.+)", text)
    return (match.group(1) if match else text or type(error).__name__).strip()


def _stop_requested(stop: _StopSignal, step: int, config) -> bool:
    if jax.process_count() == 1:
        return stop.requested
    # Every process must stop at the same step: agree at log steps.
    if step % config.train.log_every:
        return False
    flags = multihost_utils.process_allgather(np.asarray(stop.requested))
    return bool(np.any(flags))


def _gather_positions(position: np.ndarray) -> np.ndarray:
    if jax.process_count() == 1:
        return position[None]
    return np.asarray(multihost_utils.process_allgather(position))


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _log(pending, step, plan, window_start, window_steps, writer, progress) -> dict[str, float]:
    """Averages the window's per-step metrics, adds throughput and bookkeeping, writes a row."""
    fetched = jax.device_get(pending)
    scalars = {k: float(np.mean([m[k] for m in fetched])) for k in fetched[0]}
    scalars["lr"] = float(fetched[-1]["lr"])
    if window_start is not None and window_steps > 0:
        elapsed = time.perf_counter() - window_start
        scalars["images_per_sec"] = window_steps * plan.batch_size / elapsed
    scalars["epoch"] = plan.epoch(step)
    from ssl_jax import data as data_lib

    skipped = data_lib.skip_counts()
    if skipped:
        scalars["skipped_images"] = int(sum(skipped.values()))
    writer.write(step, scalars)
    shown = {k: f"{v:.4g}" for k, v in scalars.items() if k in ("loss", "top1", "images_per_sec")}
    progress.update(0, **shown)
    if not progress.enabled:
        logging.info("step %d: %s", step, shown)
    return scalars
