"""Checkpoints with orbax: periodic async saves, keep the last N, resume from the latest.

A checkpoint holds the train state (params, batch_stats, opt_state, step, rng) and, as JSON, the
input pipeline's position on every process, so a resumed run reads the same images in the same
order with the same augmentations as an uninterrupted one.

What survives what:

- a run killed while a checkpoint is being written keeps the previous one. On a local disk orbax
  writes under ``STEP.orbax-checkpoint-tmp-*`` and renames the folder when complete; on an object
  store (no rename) it writes ``STEP/`` in place and ``STEP/commit_success.txt`` last. Either way
  the half-written one is not listed as a checkpoint, and the training run (``writer=True``)
  deletes it when it opens the directory (orbax's ``cleanup_tmp_directories``), so the step can
  be saved again. Readers (evaluations of a workdir being trained) never delete anything.
- a store that does not answer: opening, starting a save and waiting for one retry for
  ``paths.retry_seconds()`` (config.train.store_retry_seconds), then raise
  ``paths.StoreUnreachable``; tensorstore, which writes the arrays in the background, gets about
  as many retries (its own ``gcs_request_retries``, set from the same limit). A background write
  that still fails is logged as lost and the next checkpoint is written as usual;
  ``last_complete`` is the latest step known to be complete, for the message when the run stops.
- a latest checkpoint that cannot be read (truncated or deleted files): ``restore_latest`` falls
  back to the one before, logging which step failed and why, and moves the unreadable ones to
  ``workdir/checkpoints_unreadable/STEP`` (kept for inspection; out of orbax's directory, where
  they would block saving that step again and, on an object store, be taken for half-written
  ones). If none can be read it raises CheckpointUnreadable and changes nothing.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from ssl_jax import paths

try:  # where orbax keeps its tensorstore context defaults (bound_tensorstore_retries)
    from orbax.checkpoint._src.serialization import tensorstore_utils as _orbax_ts
except ImportError:
    _orbax_ts = None

_log = logging.getLogger(__name__)
UNREADABLE_DIR = "checkpoints_unreadable"


class CheckpointUnreadable(RuntimeError):
    """Every checkpoint of a workdir failed to restore; nothing was changed."""


class Checkpoints:
    """The checkpoints of a workdir (``workdir/checkpoints``, local or in a bucket).

    ``writer``: this is the training run that saves here: half-written checkpoints left by a
    killed run are deleted on opening, and unreadable ones moved aside on a fallback.
    """

    def __init__(self, workdir: str, keep: int, async_save: bool = True, writer: bool = False):
        self.workdir = paths.abspath(workdir)
        self.directory = paths.join(self.workdir, "checkpoints")
        self.writer = writer
        bound_tensorstore_retries(paths.retry_seconds())
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep,
            enable_async_checkpointing=async_save,
            create=True,
            cleanup_tmp_directories=writer,
        )
        self._closed = False
        self.manager = paths.retrying(
            lambda: ocp.CheckpointManager(
                paths.checkpoint_directory(self.directory), options=options
            ),
            "opening the checkpoints in",
            self.directory,
        )
        self.pending: int | None = None  # a save started and not yet known to be complete
        self.last_complete: int | None = self.latest_step()

    def latest_step(self) -> int | None:
        return paths.retrying(self.manager.latest_step, "listing", self.directory)

    def all_steps(self) -> list[int]:
        steps = paths.retrying(self.manager.all_steps, "listing", self.directory)
        return sorted(int(s) for s in steps)

    def save(self, step: int, state: dict[str, Any], data_positions: np.ndarray) -> None:
        """Starts saving; returns before the files are written when saving asynchronously."""
        self.finish_pending()
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            data=ocp.args.JsonSave({"positions": np.asarray(data_positions).tolist()}),
        )
        paths.retrying(
            lambda: self.manager.save(int(step), args=args, force=True),
            f"saving the checkpoint at step {step} in",
            self.directory,
        )
        self.pending = int(step)

    def finish_pending(self, lost_ok: bool = True) -> None:
        """Waits for the save in progress. A write that failed for good is logged as lost, or
        with ``lost_ok=False`` (the run's last checkpoint) raises paths.StoreUnreachable."""
        if self.pending is None:
            return
        step, self.pending = self.pending, None
        try:
            # Once: orbax raises a failed background write once, and it cannot be redone.
            self.manager.wait_until_finished()
        except Exception as e:
            if not (paths.is_transient(e) or isinstance(e, paths.StoreUnreachable)):
                raise
            why = " ".join(str(e).split())[:300]
            if not lost_ok:
                raise paths.StoreUnreachable(
                    f"The checkpoint at step {step} could not be written to {self.directory} "
                    f"({why})"
                ) from e
            _log.warning(
                "The checkpoint at step %d was not completed (%s); the last complete one is %s. "
                "Its remains are deleted when the run next starts.",
                step,
                why,
                "none" if self.last_complete is None else f"step {self.last_complete}",
            )
            return
        self.last_complete = step

    def last_complete_text(self) -> str:
        """Where the run can resume from, without asking the store (for messages)."""
        if self.last_complete is None:
            return f"No checkpoint was completed in {self.directory}"
        return f"The last complete checkpoint is step {self.last_complete} in {self.directory}"

    def restore(self, step: int, abstract_state: dict[str, Any]) -> tuple[dict[str, Any], Any]:
        """Restores ``step`` onto the shardings of ``abstract_state`` (any device count)."""
        restored = self.manager.restore(
            int(step),
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state),
                data=ocp.args.JsonRestore(),
            ),
        )
        positions = restored.data["positions"] if restored.data else None
        return restored.state, positions

    def restore_latest(
        self, abstract_state: dict[str, Any]
    ) -> tuple[int, dict[str, Any], Any] | None:
        """(step, state, input positions) of the latest checkpoint that can be read, or None if
        there is no checkpoint. Falls back past unreadable ones (logged; moved aside when this
        is the writer, see the module docstring).

        Raises:
          CheckpointUnreadable: there are checkpoints and none can be read (nothing changed).
          paths.StoreUnreachable: the store did not answer (not taken for a bad checkpoint).
        """
        failed: list[tuple[int, str]] = []
        for step in reversed(self.all_steps()):
            try:
                state, positions = self.restore(step, abstract_state)
            except Exception as e:  # orbax, tensorstore and JSON each have their own errors
                if paths.is_transient(e):
                    raise
                why = " ".join(str(e).split())[:300] or type(e).__name__
                failed.append((step, f"{type(e).__name__}: {why}"))
                _log.warning(
                    "The checkpoint at step %d in %s cannot be read (%s: %s); trying the one "
                    "before it.",
                    step,
                    self.directory,
                    type(e).__name__,
                    why,
                )
                continue
            if failed:
                _log.warning(
                    "Resuming from step %d instead of the unreadable %s.",
                    step,
                    ", ".join(f"step {s}" for s, _ in failed),
                )
                if self.writer:
                    self.move_aside([s for s, _ in failed])
            return step, state, positions
        if not failed:
            return None
        listed = "; ".join(f"step {s}: {why}" for s, why in failed)
        raise CheckpointUnreadable(
            f"No checkpoint in {self.directory} can be read ({listed}). Nothing was changed. "
            f"Restore the checkpoints from a copy, or move {self.directory} away to train "
            "from scratch, then rerun."
        )

    def move_aside(self, steps: list[int]) -> None:
        """Moves unreadable checkpoints out of orbax's directory, to
        ``workdir/checkpoints_unreadable/STEP`` (with a time suffix if that is taken)."""
        self.manager.reload()  # lets go of anything it holds of them
        for step in steps:
            target = paths.join(self.workdir, UNREADABLE_DIR, str(step))
            if paths.exists(target):
                target += time.strftime("-%Y%m%d-%H%M%S")
            paths.move_tree(paths.join(self.directory, str(step)), target)
            _log.warning("Moved the unreadable checkpoint at step %d to %s", step, target)
        self.manager.reload()

    def close(self) -> None:
        """Waits for any save in flight, then releases orbax's threads; a second call is a no-op."""
        if self._closed:
            return
        self._closed = True
        self.finish_pending(lost_ok=False)
        self.manager.close()


def bound_tensorstore_retries(seconds: float) -> None:
    """Makes tensorstore, which writes orbax's arrays, retry a GCS request for about ``seconds``
    (its default is 32 retries, up to 32 s apart: about 15 minutes) before the save fails.

    Orbax builds every tensorstore context from the module-level dicts read here; if they are
    not there (another orbax version), tensorstore keeps its default and a warning says so.
    """
    delays, total = [], 0.0
    while total < seconds:
        delays.append(min(2.0 ** len(delays), 32.0))
        total += delays[-1]
    retries = {"max_retries": max(len(delays), 1), "initial_delay": "1s", "max_delay": "32s"}
    try:
        contexts = [_orbax_ts._BASE_TS_CONTEXT, _orbax_ts._DEFAULT_OCDBT_TS_CONTEXT]
    except AttributeError:
        _log.warning("orbax has changed: tensorstore keeps its own GCS retries (~15 minutes)")
        return
    for context in contexts:
        context["gcs_request_retries"] = dict(retries)


def read_positions(workdir: str, step: int) -> np.ndarray:
    """The input positions (processes, 2) saved with the checkpoint at ``step``, read without
    changing the workdir (any process count)."""
    return np.asarray(_read(workdir, step, data=ocp.args.JsonRestore()).data["positions"])


def read_state(workdir: str, step: int) -> dict[str, Any]:
    """The train state of the checkpoint at ``step`` as NumPy arrays, read without changing the
    workdir, onto the devices it was saved from (so: a checkpoint of this machine's devices)."""
    state = _read(workdir, step, state=ocp.args.StandardRestore()).state
    return jax.tree.map(np.asarray, state)


def _read(workdir: str, step: int, **items: Any) -> Any:
    checkpoints = Checkpoints(workdir, keep=1_000_000, async_save=False)
    try:
        return checkpoints.manager.restore(int(step), args=ocp.args.Composite(**items))
    finally:
        checkpoints.close()


def saved_steps(workdir: str) -> list[int]:
    """The completed checkpoints' steps in workdir/checkpoints, without opening orbax. On a local
    disk orbax writes each checkpoint under a temporary name and renames it when complete, so
    finished ones have plain integer names; an object store has no rename, and a finished one
    holds commit_success.txt."""
    directory = paths.join(workdir, "checkpoints")
    if not paths.isdir(directory):
        return []
    steps = [name for name in paths.listdir(directory) if name.isdigit()]
    if paths.is_url(directory):
        steps = [s for s in steps if paths.exists(paths.join(directory, s, "commit_success.txt"))]
    return sorted(int(s) for s in steps)


def abstract_like(tree: Any) -> Any:
    """ShapeDtypeStructs with shardings, as StandardRestore wants them."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


def process_position(positions: Any, step: int) -> tuple[int, int] | None:
    """This process's input position (epoch, index) from a checkpoint's saved positions.

    With the same number of processes the saved row is exact. With a different number the
    per-process streams differ, so the run continues from the start of the epoch it was in
    (logged), which keeps every image's epoch count within one of an uninterrupted run.
    """
    if positions is None:
        return None
    positions = np.asarray(positions, np.int64)
    if positions.shape[0] == jax.process_count():
        epoch, index = positions[jax.process_index()]
        return int(epoch), int(index)
    epoch = int(positions[:, 0].min())
    logging.warning(
        "The checkpoint at step %d was written by %d processes, this run has %d: the input "
        "pipeline restarts at the beginning of epoch %d instead of the exact position.",
        step,
        positions.shape[0],
        jax.process_count(),
        epoch,
    )
    return epoch, -1
