"""Where training metrics go: W/metrics.jsonl, TensorBoard, and a progress bar on process 0."""

from __future__ import annotations

import contextlib
import json
import math
import sys
from collections.abc import Callable, Iterator
from typing import Any

import jax
import numpy as np
from tqdm import tqdm

from ssl_jax import paths

METRICS_FILE = "metrics.jsonl"

# Called with every row written on process 0 (``listening``): a notebook's live plot.
_listeners: list[Callable[[dict[str, Any]], None]] = []


@contextlib.contextmanager
def listening(listener: Callable[[dict[str, Any]], None]) -> Iterator[None]:
    """Calls ``listener(row)`` with every metrics row any run in this process writes (process 0
    only), as it is written, while the context is open."""
    _listeners.append(listener)
    try:
        yield
    finally:
        _listeners.remove(listener)


def read_metrics(workdir: str) -> list[dict[str, Any]]:
    path = paths.join(workdir, METRICS_FILE)
    if not paths.exists(path):
        return []
    return [json.loads(line) for line in paths.read_text(path).splitlines() if line.strip()]


class MetricsWriter:
    """Appends one JSON row per log step and mirrors scalars to TensorBoard (process 0 only).

    On resume from step ``start_step``, rows logged after that step by the interrupted run are
    dropped, so the file reads as if the run had never stopped.
    """

    def __init__(self, workdir: str, start_step: int, tensorboard: bool = True):
        self.active = jax.process_index() == 0
        self.path = paths.join(workdir, METRICS_FILE)
        self._tb = None
        if not self.active:
            return
        rows = [r for r in read_metrics(workdir) if r.get("step", 0) <= start_step]
        paths.write_text(self.path, "".join(json.dumps(r) + "\n" for r in rows))
        if tensorboard:
            self._tb = paths.summary_writer(paths.join(workdir, "tensorboard"))

    def write(self, step: int, scalars: dict[str, float]) -> None:
        if not self.active:
            return
        row = {"step": int(step)}
        row.update({k: _plain(v) for k, v in scalars.items()})
        with paths.open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
        for listener in list(_listeners):
            listener(dict(row))
        if self._tb is not None:
            self._tb.scalars(
                {k: v for k, v in row.items() if k != "step" and isinstance(v, (int, float))},
                int(step),
            )

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def _plain(value: Any) -> Any:
    if isinstance(value, (np.generic, np.ndarray)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class Progress:
    """A progress bar with ETA and images/s, on process 0 and only when enabled."""

    def __init__(self, total: int, initial: int, enabled: bool):
        self._bar = None
        if enabled and jax.process_index() == 0:
            self._bar = tqdm(
                total=total,
                initial=initial,
                unit="step",
                dynamic_ncols=True,
                file=sys.stderr,
                mininterval=1.0,
                smoothing=0.1,
            )

    @property
    def enabled(self) -> bool:
        return self._bar is not None

    def update(self, steps: int = 1, **postfix: Any) -> None:
        if self._bar is None:
            return
        if postfix:
            self._bar.set_postfix(postfix, refresh=False)
        self._bar.update(steps)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
