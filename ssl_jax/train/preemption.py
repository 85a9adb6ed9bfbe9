"""SIGTERM, a preemption notice: training and long evaluations stop at a safe point and exit 0.

Cloud VMs and cluster schedulers send SIGTERM some seconds before they take a machine. While
``listen()`` is held (the training loop holds it while it runs, ``ssl_jax.evaluators.evaluate``
while a standalone evaluation runs), SIGTERM only sets this process's flag; the loop checks it
between steps, and evaluations between their units of work (a batch of features, a layer's
SVMs) with ``check``, which raises ``Preempted``. The flag is module state because the signal
is: one per process.

In a run of several processes each host gets its own SIGTERM, at its own moment, and a process
that stops while the others go on into a collective leaves them waiting. So ``agreed`` and
``check`` are collectives: every process calls them at the same points and all stop together
when any of them received the signal.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator

import jax
import numpy as np
from jax.experimental import multihost_utils

_log = logging.getLogger(__name__)

_requested = False


class Preempted(Exception):
    """SIGTERM stopped an evaluation at a safe point; what it saved is kept, and the same
    command run again continues it. The message says where it stopped."""


def _handle(signum, frame) -> None:
    global _requested
    if not _requested:
        _log.warning(
            "SIGTERM received: stopping at the next safe point (a log step, or between an "
            "evaluation's batches) with a checkpoint saved."
        )
    _requested = True


@contextlib.contextmanager
def listen() -> Iterator[None]:
    """Turns SIGTERM into this process's stop flag while inside (cleared on entry).

    Nested uses (an evaluation's own training loop inside pretraining's) share the outer one's
    flag. Outside the main thread, where Python cannot install handlers, it does nothing.
    """
    global _requested
    main_thread = threading.current_thread() is threading.main_thread()
    if not main_thread or signal.getsignal(signal.SIGTERM) is _handle:
        yield
        return
    _requested = False
    previous = signal.signal(signal.SIGTERM, _handle)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def requested() -> bool:
    """Whether this process received SIGTERM while listening."""
    return _requested


def agreed() -> bool:
    """Whether any process received SIGTERM. With several processes a collective: every process
    must call it at the same point of the run."""
    if jax.process_count() == 1:
        return _requested
    return bool(np.any(multihost_utils.process_allgather(np.asarray(_requested))))


def check(where: str) -> None:
    """Raises ``Preempted(where)`` when any process received SIGTERM (a collective, see
    ``agreed``); ``where`` says what is saved at this point."""
    if agreed():
        raise Preempted(where)
