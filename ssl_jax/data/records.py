"""Shared pieces of the sources: seeding and the in-memory epoch of a shard."""

from __future__ import annotations

import numpy as np
import tensorflow as tf


def seed_words(*values: int) -> list[int]:
    """Non-negative words for np.random.SeedSequence, from possibly negative ints."""
    return [int(v) & 0xFFFFFFFFFFFFFFFF for v in values]


def check_shard(size: int, total: int, process_index: int, process_count: int, what: str):
    """Raises ValueError for a bad process index or a process left without records."""
    if not 0 <= process_index < process_count:
        raise ValueError(
            f"process_index={process_index} is not in [0, process_count={process_count})."
        )
    if size == 0:
        raise ValueError(
            f"Process {process_index} of {process_count} gets no records of {what} "
            f"({total} in all): use fewer processes or more data (config.data.path)."
        )


def array_epoch(
    columns: dict[str, np.ndarray],
    epoch: tf.Tensor,
    first: tf.Tensor,
    seed: int,
    process_index: int,
) -> tf.data.Dataset:
    """One epoch of a shard held in memory: rows of `columns` in a seeded random order.

    The permutation is drawn in NumPy from (seed, epoch, process_index) when the epoch starts;
    rows before position `first` are dropped before anything is read.
    """
    names = sorted(columns)
    size = len(columns[names[0]])
    dtypes = [tf.as_dtype(np.int64)] + [
        tf.string if columns[k].dtype == object else tf.as_dtype(columns[k].dtype) for k in names
    ]

    def order(epoch_value, first_value):
        rng = np.random.default_rng(seed_words(seed, epoch_value, process_index))
        perm = rng.permutation(size)[int(first_value) :]
        index = np.arange(int(first_value), size, dtype=np.int64)
        return [index] + [columns[k][perm] for k in names]

    out = tf.numpy_function(order, [epoch, first], dtypes, stateful=False)
    record = {k: v for k, v in zip(names, out[1:], strict=True)}
    for k, v in record.items():
        v.set_shape([None, *columns[k].shape[1:]])
    record["index"] = out[0]
    record["index"].set_shape([None])
    record["epoch"] = tf.fill(tf.shape(out[0]), tf.cast(epoch, tf.int64))
    return tf.data.Dataset.from_tensor_slices(record)


def strided_shard_size(total: int, process_index: int, process_count: int) -> int:
    """Records of process ``process_index`` when it takes every ``process_count``-th one."""
    return len(range(process_index, total, process_count))


def strided_epoch(
    columns: dict[str, np.ndarray],
    epoch: tf.Tensor,
    first: tf.Tensor,
    *,
    seed: int,
    process_index: int,
    process_count: int,
    what: str,
) -> tf.data.Dataset:
    """One epoch of this process's shard (every ``process_count``-th row) of in-memory columns."""
    total = len(next(iter(columns.values())))
    size = strided_shard_size(total, process_index, process_count)
    check_shard(size, total, process_index, process_count, what)
    shard = {k: v[process_index::process_count] for k, v in columns.items()}
    return array_epoch(shard, epoch, first, seed, process_index)


def ordered_shard(
    columns: dict[str, np.ndarray], process_index: int, process_count: int
) -> tf.data.Dataset:
    """This process's rows p, p + n, p + 2n, ... of in-memory columns, in the fixed order, each
    with its "position" (int64 row); every process may get none when n exceeds the rows."""
    total = len(next(iter(columns.values())))
    rows = np.arange(process_index, total, process_count, dtype=np.int64)
    return tf.data.Dataset.from_tensor_slices(
        {"position": rows, **{k: v[rows] for k, v in columns.items()}}
    )
