"""One process that trains on the global batches of a SHARDS-process run: the reference run.

  python tests/multihost_worker.py SHARDS [ssl_jax.main arguments ...]

A P-process run reads P shards (process p: records p::P, its own shuffle) and assembles each
global batch from the P local batches in process order, the order of the devices on the mesh.
This process opens the same P per-process streams, concatenates their local batches in that order
and records their P data positions in its checkpoints, so its losses and checkpoints are what the
P-process run should produce, computed by a single process. Only a fresh run is supported.
"""

from __future__ import annotations

import sys

import numpy as np

from ssl_jax import data as data_lib
from ssl_jax import main as main_lib
from ssl_jax.train import loop


def emulate(shards: int) -> None:
    real_iterator = data_lib.pretrain_iterator
    positions = np.zeros((shards, 2), np.int64)

    def sharded_iterator(data_config, input_config, *, local_batch_size, process_count, **kw):
        if process_count != 1 or kw.get("start") is not None:
            raise ValueError(
                f"the reference runs fresh in one process (process_count={process_count}, "
                f"start={kw.get('start')}); use an empty workdir."
            )
        if local_batch_size % shards:
            raise ValueError(f"batch {local_batch_size} does not split into {shards} shards.")
        kw.pop("process_index")
        streams = [
            real_iterator(
                data_config,
                input_config,
                local_batch_size=local_batch_size // shards,
                process_index=p,
                process_count=shards,
                **kw,
            )
            for p in range(shards)
        ]
        while True:
            parts = [next(s) for s in streams]
            for p, part in enumerate(parts):
                positions[p] = part["epoch"][-1], part["index"][-1]
            yield {k: np.concatenate([part[k] for part in parts]) for k in parts[0]}

    data_lib.pretrain_iterator = sharded_iterator
    # Checkpoints hold one (epoch, index) row per shard, as the P-process run writes them.
    loop.gather_positions = lambda position: positions.copy()


if __name__ == "__main__":
    emulate(int(sys.argv[1]))
    sys.exit(main_lib.main(sys.argv[2:]))
