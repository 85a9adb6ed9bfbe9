"""The one training loop, for pretraining and for the linear-classifier benchmark.

A caller hands it a state (a pytree of arrays: params, batch_stats, opt_state, step, ...), a jitted
step ``(state, batch) -> (state, metrics)``, a way to open its batches at a position, and periodic
evaluations; the loop owns the rest:

- the device mesh (one "data" axis over every device of every process) and the per-process batch;
- the state's creation (``create_state``: one function for every state in the library);
- resuming: the latest orbax checkpoint in ``workdir/checkpoints`` restores the state and every
  process's position in its input stream, so a resumed run sees the batches an uninterrupted one
  would have seen;
- the gates, checked between steps: log (``train.log_every``: a metrics.jsonl / TensorBoard row
  averaging the window's steps, with images/s, epoch and images skipped by the decoder summed over
  processes), divergence (a NaN or infinite loss stops the run, keeping the last good checkpoint),
  checkpoint (``train.checkpoint_every`` and the last step), evaluate (each periodic evaluation at
  its multiple of steps and at the last step, after that step's checkpoint), preemption (SIGTERM
  saves a checkpoint and stops at the next log step, on every process at the same step; during an
  evaluation, it stops the evaluation at its next safe point, ``ssl_jax.train.preemption``);
- an evaluation that did not finish (interrupted, or its process lost) runs again when the run
  resumes at its step, before any further step.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from ssl_jax import config_lib, paths
from ssl_jax.train import checkpoint as ckpt_lib
from ssl_jax.train import metrics as metrics_lib
from ssl_jax.train import preemption

_log = logging.getLogger(__name__)


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class InputPipelineError(RuntimeError):
    """The input pipeline could not produce a batch; the last checkpoint is kept."""


def make_mesh() -> Mesh:
    """A 1-D mesh over every device of every process; the batch is split along 'data'."""
    return Mesh(np.asarray(jax.devices()), ("data",))


def local_batch_size(batch_size: int, mesh: Mesh, key: str = "config.optim.batch_size") -> int:
    """The per-process batch; the global batch must split evenly over processes and devices."""
    devices, processes = mesh.size, jax.process_count()
    if batch_size <= 0 or batch_size % devices or batch_size % processes:
        raise config_lib.ConfigError(
            f"{key}={batch_size} does not split evenly over {devices} devices in {processes} "
            f"processes; use a positive multiple of {devices}."
        )
    return batch_size // processes


def create_state(
    init: Callable[[jax.Array], dict[str, Any]],
    make_tx: Callable[[Any], optax.GradientTransformation],
    seed: int,
    sharding: NamedSharding,
    *,
    rng: jax.Array | None = None,
    abstract: bool = False,
) -> tuple[dict[str, Any], optax.GradientTransformation]:
    """A new train state and its optimizer; every state of the library is made here.

    Args:
      init: ``rng -> {"params", "batch_stats"?}``, a model's initial variables.
      make_tx: the optimizer, given the batch_stats' structure (its weight-decay mask leaves
        BatchNorm parameters out).
      seed: the initialisation seed (``jax.random.PRNGKey(seed)`` goes to ``init``).
      sharding: where the state lives (replicated over the mesh).
      rng: a key stored in the state as "rng" (pretraining draws its per-step randomness from
        it); None for none.
      abstract: return ShapeDtypeStructs with shardings instead of arrays (to restore into).

    Returns:
      ({"params", "batch_stats", "opt_state", "step"[, "rng"]}, the optimizer).
    """
    init_rng = jax.random.PRNGKey(seed)
    shapes = jax.eval_shape(lambda: init(init_rng))
    tx = make_tx(shapes.get("batch_stats", {}))

    def new_state(key):
        variables = init(key)
        state = {
            "params": variables["params"],
            "batch_stats": variables.get("batch_stats", {}),
            "opt_state": tx.init(variables["params"]),
            "step": jnp.zeros((), jnp.int32),
        }
        if rng is not None:
            state["rng"] = rng
        return state

    if abstract:
        return jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
            jax.eval_shape(new_state, init_rng),
        ), tx
    # Initialisation is jitted straight into the state's sharding.
    return jax.jit(new_state, out_shardings=sharding)(init_rng), tx


@dataclasses.dataclass(frozen=True)
class Periodic:
    """An evaluation the loop runs at log steps: every ``every`` steps and at the last step.

    ``run(state, step) -> scalars``; the loop logs them as ``{name}/{key}``. ``every`` must be a
    multiple of train.log_every (0: at the last step only). It runs after that step's checkpoint.
    It may raise ``preemption.Preempted`` (SIGTERM): the run then stops with that step's
    checkpoint. ``done(step)``, if given, says whether its results at ``step`` exist: a run that
    resumes at a step where they are missing runs it first.
    """

    name: str
    every: int
    run: Callable[[dict[str, Any], int], dict[str, float]]
    done: Callable[[int], bool] | None = None

    def due(self, step: int, end_step: int) -> bool:
        return bool(self.every and step % self.every == 0) or step >= end_step


@dataclasses.dataclass(frozen=True)
class Outcome:
    """How a run of the loop ended: its state and step, the last logged training metrics, and
    whether SIGTERM stopped it before its last step."""

    state: dict[str, Any]
    step: int
    metrics: dict[str, float]
    preempted: bool


def run(
    state: dict[str, Any],
    train_step: Callable[[dict[str, Any], dict[str, jax.Array]], tuple[dict[str, Any], Any]],
    batches: Callable[[tuple[int, int] | None], Iterator[dict[str, np.ndarray]]],
    *,
    workdir: str,
    train: ml_collections.ConfigDict,
    total_steps: int,
    batch_size: int,
    steps_per_epoch: int,
    mesh: Mesh,
    batch_keys: Sequence[str] = ("image", "label"),
    periodic: Sequence[Periodic] = (),
    skipped_images: Callable[[], int] | None = None,
    what: str = "training",
    diverged_fix: str = "Lower the learning rate (config.optim.base_lr) or check the data",
) -> Outcome:
    """Trains ``state`` in ``workdir`` until ``total_steps`` (or train.stop_after_steps),
    resuming from the workdir's latest checkpoint.

    Args:
      state: the initial state (replicated on ``mesh``); replaced by the checkpoint's on resume.
      train_step: the jitted step; batches arrive as global arrays sharded along "data".
      batches: ``start -> iterator`` of this process's batches (dicts of NumPy arrays with
        ``batch_keys`` and the "epoch" / "index" of each record), starting right after the
        record at ``start`` = (epoch, index), or at the beginning for None.
      workdir: checkpoints/, metrics.jsonl and tensorboard/ go here.
      train: config.train (log_every, checkpoint_every, keep_checkpoints, stop_after_steps,
        progress_bar).
      total_steps, batch_size, steps_per_epoch: the run's length, global batch and epoch.
      periodic: evaluations run at log steps (see ``Periodic``).
      skipped_images: this process's count of images the decoder skipped so far (logged summed
        over processes), or None.
      what: the run's name in messages; diverged_fix: what to change when the loss diverges.

    Raises:
      TrainingDiverged, InputPipelineError: with the last checkpoint kept and named.
      paths.StoreUnreachable: the workdir's store did not answer for config.train.
        store_retry_seconds; the message names the last complete checkpoint.
      ckpt_lib.CheckpointUnreadable: no checkpoint of the workdir can be read (nothing changed).
    """
    for p in periodic:
        if p.every % train.log_every:
            raise config_lib.ConfigError(
                f"The evaluation {p.name!r} runs every {p.every} steps, not a multiple of "
                f"config.train.log_every={train.log_every}."
            )
    batch_sharding = NamedSharding(mesh, P("data"))
    checkpoints = ckpt_lib.Checkpoints(workdir, keep=train.keep_checkpoints, writer=True)
    start_step, start_position = 0, None
    restored = checkpoints.restore_latest(ckpt_lib.abstract_like(state))
    if restored is not None:
        _, state, positions = restored
        start_step = int(jax.device_get(state["step"]))
        start_position = ckpt_lib.process_position(positions, start_step)
        _log.info("Resumed from the checkpoint at step %d in %s (%s)", start_step, workdir, what)
    end_step = total_steps
    if train.get("stop_after_steps"):
        end_step = min(end_step, train.stop_after_steps)
    # An evaluation at the resumed step that did not finish (SIGTERM, a lost process) runs first.
    unfinished = [p for p in periodic if p.done and start_step and p.due(start_step, end_step)]
    unfinished = [p for p in unfinished if not p.done(start_step)]
    if start_step >= end_step and not unfinished:
        checkpoints.close()
        return Outcome(state, start_step, {}, False)

    try:
        writer = metrics_lib.MetricsWriter(workdir, start_step)
        last: dict[str, float] = {}
        step = start_step
        interrupted = False
        with preemption.listen():
            if unfinished:
                _log.info(
                    "Running the evaluation(s) at step %d that did not finish: %s",
                    start_step,
                    ", ".join(p.name for p in unfinished),
                )
                if not _evaluate(unfinished, state, step, writer):
                    checkpoints.close()
                    writer.close()
                    return Outcome(state, step, last, True)
            if step >= end_step:
                checkpoints.close()
                writer.close()
                return Outcome(state, step, last, False)
            progress = metrics_lib.Progress(total_steps, start_step, train.progress_bar)
            window = _Window(batch_size, steps_per_epoch, skipped_images)
            iterator = batches(start_position)
            position = np.asarray(start_position or (0, -1), np.int64)
            while step < end_step:
                try:
                    local = next(iterator)
                except Exception as e:  # tf.errors.* raised from inside tf.data
                    checkpoints.close()
                    raise InputPipelineError(
                        f"The {what} input pipeline failed before step {step + 1}: "
                        f"{_error_text(e)} {_kept(checkpoints)}; fix the data and rerun to resume."
                    ) from e
                position = np.asarray([local["epoch"][-1], local["index"][-1]], np.int64)
                batch = {
                    key: jax.make_array_from_process_local_data(batch_sharding, local[key])
                    for key in batch_keys
                }
                state, step_metrics = train_step(state, batch)
                step += 1
                window.add(step_metrics)
                progress.update(1)
                stopping = step >= end_step or _stop_requested(step, train.log_every)
                if step % train.log_every and not stopping:
                    continue
                last = window.close(step)
                writer.write(step, last)
                _show(progress, step, last)
                if not _finite(last["loss"]):
                    checkpoints.close()
                    raise TrainingDiverged(
                        f"The loss of the {what} became {last['loss']} by step {step}. "
                        f"{_kept(checkpoints, good=True)}. {diverged_fix}, then rerun to resume."
                    )
                saved = step % train.checkpoint_every == 0 or stopping
                if saved:
                    checkpoints.save(step, state, gather_positions(position))
                due = [p for p in periodic if p.due(step, end_step)]
                if due:
                    interrupted = not _evaluate(due, state, step, writer)
                    # SIGTERM in an evaluation that still finished: stop now, not a window later.
                    stopping = stopping or interrupted or _stop_requested(step, train.log_every)
                    if stopping and not saved:  # the rerun resumes here
                        checkpoints.save(step, state, gather_positions(position))
                if stopping:
                    break
            progress.close()
        checkpoints.close()
        writer.close()
    except paths.StoreUnreachable as e:
        raise paths.StoreUnreachable(
            f"{e}. {checkpoints.last_complete_text()}; the {what} stopped. Run the same command "
            "once the store answers to resume from it."
        ) from None
    except BaseException:
        # An error after a save (an evaluation's, an interrupt) never costs that checkpoint:
        # orbax finishes writing it before the error goes on.
        checkpoints.close()
        raise
    preempted = interrupted or (preemption.requested() and step < end_step)
    if preempted:
        _log.warning(
            "Stopped by SIGTERM at step %d of the %s; checkpoint saved. Run the same command to "
            "resume.",
            step,
            what,
        )
    return Outcome(state, step, last, preempted)


def _evaluate(
    periodic: Sequence[Periodic],
    state: dict[str, Any],
    step: int,
    writer: metrics_lib.MetricsWriter,
) -> bool:
    """Runs ``periodic`` at ``step`` and logs their scalars; False if SIGTERM interrupted one."""
    for p in periodic:
        try:
            scalars = p.run(state, step)
        except preemption.Preempted as e:
            _log.warning(
                "The evaluation %s at step %d was interrupted by SIGTERM (%s). The checkpoint at "
                "step %d is kept; running the same command again runs this evaluation first, "
                "reusing what it saved.",
                p.name,
                step,
                e,
                step,
            )
            return False
        if scalars:
            writer.write(step, {f"{p.name}/{k}": v for k, v in scalars.items()})
    return True


class _Window:
    """The per-step metrics since the last log step, averaged into one row."""

    def __init__(self, batch_size: int, steps_per_epoch: int, skipped: Callable[[], int] | None):
        self.batch_size, self.steps_per_epoch, self.skipped = batch_size, steps_per_epoch, skipped
        self.pending: list[dict[str, jax.Array]] = []
        self.start: float | None = None  # the first step includes compilation: time from its end
        self.timed_steps = 0

    def add(self, step_metrics: dict[str, jax.Array]) -> None:
        self.pending.append(step_metrics)
        if self.start is None:
            jax.block_until_ready(step_metrics)
            self.start, self.timed_steps = time.perf_counter(), 0
        else:
            self.timed_steps += 1

    def close(self, step: int) -> dict[str, float]:
        fetched = jax.device_get(self.pending)
        scalars = {k: float(np.mean([m[k] for m in fetched])) for k in fetched[0]}
        if "lr" in fetched[-1]:
            scalars["lr"] = float(fetched[-1]["lr"])
        if self.timed_steps > 0:
            elapsed = time.perf_counter() - self.start
            scalars["images_per_sec"] = self.timed_steps * self.batch_size / elapsed
        scalars["epoch"] = step / self.steps_per_epoch
        if self.skipped is not None:
            skipped = _sum_over_processes(self.skipped())
            if skipped:
                scalars["skipped_images"] = skipped
        self.pending, self.start, self.timed_steps = [], time.perf_counter(), 0
        return scalars


def _show(progress: metrics_lib.Progress, step: int, scalars: dict[str, float]) -> None:
    shown = {k: f"{v:.4g}" for k, v in scalars.items() if k in ("loss", "top1", "images_per_sec")}
    progress.update(0, **shown)
    if not progress.enabled:
        _log.info("step %d: %s", step, shown)


def _kept(checkpoints: ckpt_lib.Checkpoints, good: bool = False) -> str:
    latest = checkpoints.latest_step()
    if latest is None:
        return "No checkpoint was written yet"
    return (
        f"The last {'good ' if good else ''}checkpoint is step {latest} in {checkpoints.directory}"
    )


def _error_text(error: Exception) -> str:
    """The Python error inside a tf.data failure, without TensorFlow's op and iterator names."""
    text = str(error).strip()
    match = re.search(r"\b\w*(?:Error|Exception): (.+)", text)
    return (match.group(1) if match else text or type(error).__name__).strip()


def _stop_requested(step: int, log_every: int) -> bool:
    if jax.process_count() == 1:
        return preemption.requested()
    # Every process must stop at the same step: agree at log steps.
    if step % log_every:
        return False
    return preemption.agreed()


def gather_positions(position: np.ndarray) -> np.ndarray:
    """Every process's input position (processes, 2), for the checkpoint."""
    if jax.process_count() == 1:
        return position[None]
    return np.asarray(multihost_utils.process_allgather(position))


def _sum_over_processes(count: int) -> int:
    if jax.process_count() == 1:
        return int(count)
    return int(np.sum(multihost_utils.process_allgather(np.asarray(count, np.int64))))


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)
