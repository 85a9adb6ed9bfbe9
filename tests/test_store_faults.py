"""Object-store and checkpoint faults: a store that stops answering, a run killed while a
checkpoint is written, checkpoints that cannot be read.

The fast tests drive the retry helper with fake failures and the checkpoint fallback on a tiny
state. The slow ones run ``python -m ssl_jax.main`` (a :runlocal Jigsaw ResNet-18 at 1/8 width)
with its workdir on ``RestartableEmulator`` (tests/gcs.py), an emulator that keeps its objects
on disk so that it can be stopped and started again mid-run.
"""

from __future__ import annotations

import errno
import gc
import logging
import os
import re
import signal
import subprocess
import sys
import time
import uuid

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from gcs import RestartableEmulator

from ssl_jax import paths
from ssl_jax.train import checkpoint as ckpt_lib
from ssl_jax.train import metrics as metrics_lib

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
JIGSAW = f"{ROOT}/configs/jigsaw_r50.py:runlocal,depth=18,width=0.125"


# ----------------------------------------------------------------------------- retries


@pytest.fixture(autouse=True, scope="module")
def collect_left_behind_loops():
    """Orbax's and tensorstore's asyncio loops, closed under the fallback tests, are finalized
    here rather than in whatever test the garbage collector next runs in."""
    yield
    gc.collect()


@pytest.fixture
def retry_limit():
    """Restores the retry limit a test sets; sleeps are not slept."""
    saved = paths.retry_seconds()
    yield paths.set_retry_seconds
    paths.set_retry_seconds(saved)


class Flaky:
    """Fails with ``error`` the first ``failures`` calls, then returns "done"."""

    def __init__(self, failures: int, error: Exception):
        self.failures, self.error, self.calls = failures, error, 0

    def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return "done"


def test_transient_errors_are_retried_until_they_pass(retry_limit, monkeypatch, caplog):
    sleeps = []
    monkeypatch.setattr(paths.time, "sleep", sleeps.append)
    retry_limit(60)
    flaky = Flaky(3, ConnectionRefusedError(errno.ECONNREFUSED, "Connect call failed"))
    with caplog.at_level(logging.WARNING, logger="ssl_jax.paths"):
        assert paths.retrying(flaky, "reading", "gs://b/run/metrics.jsonl") == "done"
    assert flaky.calls == 4
    retries = [r.getMessage() for r in caplog.records if "retry" in r.getMessage()]
    assert len(retries) == 3 and all("gs://b/run/metrics.jsonl" in m for m in retries)
    # Exponential backoff with jitter: each wait in [0.5, 1.5) of 1, 2, 4 s.
    assert all(0.5 * 2**i <= s < 1.5 * 2**i for i, s in enumerate(sleeps)), sleeps


def test_past_the_limit_the_error_names_the_store_the_path_and_the_limit(retry_limit):
    retry_limit(0.2)
    always = Flaky(10**9, TimeoutError("timed out"))
    start = time.monotonic()
    with pytest.raises(paths.StoreUnreachable) as raised:
        paths.retrying(always, "writing", "gs://b/run/config.json")
    assert time.monotonic() - start < 2.0
    message = str(raised.value)
    for part in ("gs://b", "gs://b/run/config.json", "0.2 s", "config.train.store_retry_seconds"):
        assert part in message, message


def test_errors_that_are_not_transient_are_not_retried(retry_limit):
    retry_limit(60)
    for error in (FileNotFoundError("gs://b/x"), PermissionError("no"), ValueError("bad")):
        flaky = Flaky(1, error)
        with pytest.raises(type(error)):
            paths.retrying(flaky, "reading", "gs://b/x")
        assert flaky.calls == 1


class HttpStatus(Exception):
    def __init__(self, code: int):
        super().__init__(f"HTTP {code}")
        self.code = code


def test_which_errors_are_transient():
    wrapped = RuntimeError("save failed")
    wrapped.__cause__ = ConnectionResetError(errno.ECONNRESET, "reset")
    for error in (
        ConnectionRefusedError(errno.ECONNREFUSED, "refused"),
        TimeoutError(),
        OSError(errno.ETIMEDOUT, "timed out"),
        HttpStatus(503),
        HttpStatus(429),
        ValueError("UNAVAILABLE: Connection refused"),
        ValueError("ABORTED: Error reading gs://b/x: All 5 retry attempts failed: CURL error"),
        wrapped,
    ):
        assert paths.is_transient(error), error
    for error in (FileNotFoundError(), HttpStatus(404), HttpStatus(403), ValueError("bad")):
        assert not paths.is_transient(error), error


# ----------------------------------------------------------------------------- fallback


def tiny_state(value: float) -> dict:
    return {"w": jnp.full((4, 3), value), "step": jnp.asarray(int(value), jnp.int32)}


def save_steps(workdir: str, steps: list[int]) -> None:
    checkpoints = ckpt_lib.Checkpoints(workdir, keep=5, writer=True)
    for step in steps:
        checkpoints.save(step, tiny_state(step), np.zeros((1, 2), np.int64))
    checkpoints.close()


def object_bytes(root: str) -> dict[str, bytes]:
    return {
        paths.join(d, n): paths.read_bytes(paths.join(d, n))
        for d, _, names in paths.walk(root)
        for n in names
    }


def corrupt(step_dir: str) -> None:
    """Truncates every array data file of a checkpoint (tensorstore's OCDBT files)."""
    data = [
        paths.join(d, n)
        for d, _, names in paths.walk(paths.join(step_dir, "state"))
        for n in names
        if "/d/" in paths.join(d, n)
    ]
    assert data, sorted(object_bytes(step_dir))
    for path in data:
        paths.write_bytes(path, paths.read_bytes(path)[:7])


@pytest.mark.parametrize("where", ["local", "bucket"])
def test_an_unreadable_latest_checkpoint_falls_back_and_is_moved_aside(
    where, tmp_path, gcs_bucket, caplog
):
    workdir = str(tmp_path) if where == "local" else f"{gcs_bucket}/fallback-{uuid.uuid4().hex[:8]}"
    save_steps(workdir, [1, 2])
    corrupt(paths.join(workdir, "checkpoints", "2"))
    checkpoints = ckpt_lib.Checkpoints(workdir, keep=5, writer=True)
    with caplog.at_level(logging.WARNING, logger="ssl_jax.train.checkpoint"):
        step, state, _ = checkpoints.restore_latest(jax.tree.map(np.asarray, tiny_state(0)))
    assert step == 1 and float(state["w"][0, 0]) == 1.0
    log = caplog.text
    assert "step 2" in log and "cannot be read" in log and "Resuming from step 1" in log
    assert checkpoints.all_steps() == [1]
    assert paths.isdir(paths.join(workdir, "checkpoints_unreadable", "2", "state"))
    # Step 2 can be saved again where the unreadable one was.
    checkpoints.save(2, tiny_state(2), np.zeros((1, 2), np.int64))
    checkpoints.close()
    assert ckpt_lib.saved_steps(workdir) == [1, 2]


def test_no_readable_checkpoint_is_an_error_that_changes_nothing(tmp_path):
    workdir = str(tmp_path)
    save_steps(workdir, [1, 2])
    for step in (1, 2):
        corrupt(paths.join(workdir, "checkpoints", str(step)))
    before = object_bytes(workdir)
    checkpoints = ckpt_lib.Checkpoints(workdir, keep=5, writer=True)
    with pytest.raises(ckpt_lib.CheckpointUnreadable) as raised:
        checkpoints.restore_latest(jax.tree.map(np.asarray, tiny_state(0)))
    checkpoints.close()
    message = str(raised.value)
    assert paths.join(workdir, "checkpoints") in message and "step 2" in message
    assert "Nothing was changed" in message
    assert object_bytes(workdir) == before


# ----------------------------------------------------------------------------- training runs


def train_command(workdir: str, steps: int, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "ssl_jax.main", f"--config={JIGSAW}", f"--workdir={workdir}",
        "--config.train.progress_bar=False", "--config.train.log_every=2",
        "--config.train.checkpoint_every=2", "--config.train.keep_checkpoints=100",
        f"--config.train.stop_after_steps={steps}", "--config.evals.probe.every_steps=0", *extra,
    ]  # fmt: skip


def start(cwd, workdir: str, steps: int, *extra: str) -> subprocess.Popen:
    """The training run in the background, its output in cwd/stdout.txt and cwd/stderr.txt."""
    env = dict(os.environ, PYTHONPATH=ROOT)
    with open(cwd / "stdout.txt", "w") as out, open(cwd / "stderr.txt", "w") as err:
        return subprocess.Popen(
            train_command(workdir, steps, *extra), cwd=cwd, env=env, stdout=out, stderr=err
        )


def finish(proc: subprocess.Popen, cwd, timeout: float = 900) -> tuple[int, str]:
    proc.wait(timeout=timeout)
    return proc.returncode, (cwd / "stderr.txt").read_text()


def run(cwd, workdir: str, steps: int, *extra: str) -> tuple[int, str]:
    return finish(start(cwd, workdir, steps, *extra), cwd)


def wait_for(condition, proc: subprocess.Popen, timeout: float = 600, every: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, "the run ended before the fault was injected"
        assert time.monotonic() < deadline, "timed out waiting to inject the fault"
        time.sleep(every)


@pytest.fixture
def restartable_bucket(tmp_path, monkeypatch):
    """(emulator, a workdir URL in its bucket), STORAGE_EMULATOR_HOST pointing at it."""
    data = tmp_path / "store"
    data.mkdir()
    with RestartableEmulator(str(data)) as emulator:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", emulator.url)
        yield emulator, f"gs://ssl-test/run-{uuid.uuid4().hex[:8]}"
    monkeypatch.undo()
    paths.configure()


def last_log_line(stderr: str) -> str:
    """The run's last logged line ("HH:MM:SS LEVEL message"). Tensorstore callbacks that find
    orbax's event loop closed may still print "Event loop is closed" tracebacks after it."""
    return [line for line in stderr.splitlines() if re.match(r"\d\d:\d\d:\d\d [A-Z]+ ", line)][-1]


def loss_steps(workdir: str) -> list[int]:
    return [r["step"] for r in metrics_lib.read_metrics(workdir) if "loss" in r]


@pytest.mark.slow
def test_a_store_outage_shorter_than_the_limit_is_ridden_out(restartable_bucket, tmp_path):
    """The store stops for 45 s (longer than gcsfs's own retries, about 30 s) while the run
    logs and checkpoints every 2 steps; the run carries on, nothing is lost."""
    emulator, workdir = restartable_bucket
    proc = start(tmp_path, workdir, 16)
    wait_for(lambda: ckpt_lib.saved_steps(workdir), proc)
    emulator.stop()
    time.sleep(45)
    emulator.start()
    code, stderr = finish(proc, tmp_path)
    assert code == 0, stderr[-3000:]
    assert "failed (" in stderr and "retry 1" in stderr  # it did meet the outage
    assert loss_steps(workdir) == list(range(2, 17, 2))
    assert ckpt_lib.saved_steps(workdir) == list(range(2, 17, 2))
    code, stderr = run(tmp_path, workdir, 16)  # the last checkpoint restores
    assert code == 0 and "Resumed from the checkpoint at step 16" in stderr, stderr[-3000:]


@pytest.mark.slow
def test_a_store_outage_past_the_limit_stops_with_the_last_checkpoint_kept(
    restartable_bucket, tmp_path
):
    emulator, workdir = restartable_bucket
    proc = start(tmp_path, workdir, 40, "--config.train.store_retry_seconds=20")
    wait_for(lambda: ckpt_lib.saved_steps(workdir), proc)
    emulator.stop()
    stopped = time.monotonic()
    code, stderr = finish(proc, tmp_path, timeout=300)
    took = time.monotonic() - stopped
    last_line = last_log_line(stderr)
    print(f"stopped {took:.0f} s after the store went away: {last_line}")
    assert code == 1, stderr[-3000:]
    assert "ERROR The object store" in last_line
    for part in ("did not answer", "past the limit of 20 s", "config.train.store_retry_seconds",
                 "the pretraining stopped", "ssl-test"):  # fmt: skip
        assert part in last_line, last_line
    assert "last complete checkpoint is step" in last_line, last_line
    assert took < 20 + 120, took
    kept = int(last_line.split("last complete checkpoint is step ")[1].split()[0])
    emulator.start()
    assert kept in ckpt_lib.saved_steps(workdir)
    code, stderr = run(tmp_path, workdir, kept)  # it restores
    assert code == 0 and f"Resumed from the checkpoint at step {kept}" in stderr, stderr[-3000:]


def half_written(workdir: str, step: int) -> bool:
    """Whether orbax has started and not finished the checkpoint at ``step``: a STEP/ without
    commit_success.txt in a bucket, a STEP.orbax-checkpoint-tmp-* folder on a local disk."""
    directory = paths.join(workdir, "checkpoints")
    if not paths.isdir(directory):
        return False
    names = paths.listdir(directory)
    if paths.is_url(workdir):
        done = paths.exists(paths.join(directory, str(step), "commit_success.txt"))
        return str(step) in names and not done
    return any(n.startswith(f"{step}.orbax-checkpoint-tmp") for n in names)


@pytest.mark.slow
@pytest.mark.parametrize("where", ["bucket", "local"])
def test_sigkill_during_an_async_checkpoint_write(where, gcs_bucket, tmp_path):
    """SIGKILL as soon as the second checkpoint's first objects appear: the rerun resumes from
    the first, deletes the half-written one and writes that step again."""
    workdir = (
        f"{gcs_bucket}/kill-{uuid.uuid4().hex[:8]}" if where == "bucket" else str(tmp_path / "work")
    )
    proc = start(tmp_path, workdir, 6)
    wait_for(lambda: half_written(workdir, 4), proc, every=0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert half_written(workdir, 4) and ckpt_lib.saved_steps(workdir) == [2]
    code, stderr = run(tmp_path, workdir, 6)
    assert code == 0 and "Resumed from the checkpoint at step 2" in stderr, stderr[-3000:]
    assert ckpt_lib.saved_steps(workdir) == [2, 4, 6]
    assert not half_written(workdir, 4)
    assert loss_steps(workdir) == [2, 4, 6]


@pytest.mark.slow
def test_unreadable_checkpoints_in_a_real_run(gcs_bucket, tmp_path):
    """All checkpoints truncated: a clear error, exit 1, not a byte changed. The first one put
    back: the rerun falls back to it, says so, moves the unreadable one aside and goes on."""
    workdir = f"{gcs_bucket}/corrupt-{uuid.uuid4().hex[:8]}"
    code, stderr = run(tmp_path, workdir, 4)
    assert code == 0, stderr[-3000:]
    checkpoints = paths.join(workdir, "checkpoints")
    first = object_bytes(paths.join(checkpoints, "2"))
    for step in (2, 4):
        corrupt(paths.join(checkpoints, str(step)))
    before = object_bytes(workdir)

    code, stderr = run(tmp_path, workdir, 6)
    last_line = last_log_line(stderr)
    assert code == 1, stderr[-3000:]
    assert f"No checkpoint in {checkpoints} can be read" in last_line, last_line
    assert "Nothing was changed" in last_line and "then rerun" in last_line
    after = object_bytes(workdir)
    assert {k: v for k, v in after.items() if "/checkpoints/" in k} == {
        k: v for k, v in before.items() if "/checkpoints/" in k
    }

    for path, data in first.items():
        paths.write_bytes(path, data)
    code, stderr = run(tmp_path, workdir, 6)
    assert code == 0, stderr[-3000:]
    assert "The checkpoint at step 4" in stderr and "cannot be read" in stderr
    assert "Resumed from the checkpoint at step 2" in stderr
    assert ckpt_lib.saved_steps(workdir) == [2, 4, 6]
    assert paths.isdir(paths.join(workdir, "checkpoints_unreadable", "4"))
    assert loss_steps(workdir) == [2, 4, 6]
