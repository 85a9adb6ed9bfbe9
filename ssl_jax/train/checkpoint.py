"""Checkpoints with orbax: periodic async saves, keep the last N, resume from the latest.

A checkpoint holds the train state (params, batch_stats, opt_state, step, rng) and, as JSON, the
input pipeline's position on every process, so a resumed run reads the same images in the same
order with the same augmentations as an uninterrupted one. Orbax writes each checkpoint to a
temporary directory and renames it when complete, so a run killed mid-save keeps the previous one.
"""

from __future__ import annotations

import logging
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from ssl_jax import paths


class Checkpoints:
    """The checkpoints of a workdir (``workdir/checkpoints``, local or in a bucket)."""

    def __init__(self, workdir: str, keep: int, async_save: bool = True):
        self.directory = paths.join(paths.abspath(workdir), "checkpoints")
        self.manager = ocp.CheckpointManager(
            paths.checkpoint_directory(self.directory),
            options=ocp.CheckpointManagerOptions(
                max_to_keep=keep,
                enable_async_checkpointing=async_save,
                create=True,
            ),
        )
        self._closed = False

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(int(s) for s in self.manager.all_steps())

    def save(self, step: int, state: dict[str, Any], data_positions: np.ndarray) -> None:
        """Starts saving; returns before the files are written when saving asynchronously."""
        self.manager.save(
            int(step),
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state),
                data=ocp.args.JsonSave({"positions": np.asarray(data_positions).tolist()}),
            ),
            force=True,
        )

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

    def close(self) -> None:
        """Waits for any save in flight, then releases orbax's threads; a second call is a no-op."""
        if self._closed:
            return
        self._closed = True
        self.manager.wait_until_finished()
        self.manager.close()


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
