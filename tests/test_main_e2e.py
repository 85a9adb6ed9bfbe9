"""The main command end to end, in subprocesses: the README demo, SIGKILL + resume, SIGTERM.

Slow (minutes on 2 cores): run with ``python -m pytest -m slow``.
"""

import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from ssl_jax.train import checkpoint as ckpt_lib
from ssl_jax.train import metrics as metrics_lib

pytestmark = pytest.mark.slow

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
DEMO = ["-m", "ssl_jax.main", "--config=configs/jigsaw_r50.py:runlocal"]
QUIET = ["--config.train.progress_bar=false"]


def command(workdir, *extra):
    return [sys.executable, *DEMO, f"--workdir={workdir}", *QUIET, *extra]


def env():
    e = dict(os.environ)
    e.pop("XLA_FLAGS", None)  # one CPU device, as a user's machine
    e["JAX_PLATFORMS"] = "cpu"
    return e


def start(workdir, *extra, log="log.txt"):
    os.makedirs(workdir, exist_ok=True)
    out = open(os.path.join(workdir, log), "w")
    return subprocess.Popen(
        command(workdir, *extra), cwd=ROOT, env=env(), stdout=out, stderr=subprocess.STDOUT
    )


def read_metrics(workdir):
    """The training rows of metrics.jsonl (the :runlocal probe logs rows of its own)."""
    return [r for r in metrics_lib.read_metrics(workdir) if "loss" in r]


def probe_rows(workdir):
    return [r for r in metrics_lib.read_metrics(workdir) if any(k.startswith("probe/") for k in r)]


def checkpoints(workdir):
    d = os.path.join(workdir, "checkpoints")
    return sorted(int(s) for s in os.listdir(d) if s.isdigit()) if os.path.isdir(d) else []


def saved_state(workdir):
    """The train state of a run's latest checkpoint (params, batch_stats, opt_state, step, rng)."""
    return ckpt_lib.read_state(str(workdir), checkpoints(workdir)[-1])


def wait_for(predicate, proc, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        assert proc.poll() is None, "the run ended early"
        time.sleep(0.5)
    raise AssertionError("timed out")


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """README command 1, uninterrupted."""
    workdir = tmp_path_factory.mktemp("demo")
    t0 = time.time()
    proc = start(workdir)
    assert proc.wait(timeout=900) == 0, open(workdir / "log.txt").read()[-3000:]
    return workdir, time.time() - t0


def test_demo_learns(demo_run):
    workdir, seconds = demo_run
    rows = read_metrics(str(workdir))
    assert rows[-1]["step"] == 640
    first = np.mean([r["loss"] for r in rows[:3]])
    last = np.mean([r["loss"] for r in rows[-3:]])
    assert last < first - 0.5, (first, last)
    assert rows[-1]["top1"] > 0.05  # chance is 0.01
    assert checkpoints(workdir)[-1] == 640
    assert probe_rows(str(workdir))[-1]["step"] == 640  # the :runlocal probe ran at the end
    print(f"demo: {seconds:.0f} s, loss {first:.3f} -> {last:.3f}")


def test_sigkill_then_resume(demo_run, tmp_path, tmp_path_factory):
    """Killed without warning after a checkpoint, the same command resumes and logs as if whole,
    and ends in the same state, bit for bit, as the same command run without interruption."""
    extra = ("--config.train.checkpoint_every=20", "--config.train.stop_after_steps=60")
    proc = start(tmp_path, *extra)
    wait_for(lambda: 40 in checkpoints(tmp_path), proc, timeout=600)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = max(r["step"] for r in read_metrics(str(tmp_path)))
    proc = start(tmp_path, *extra, log="log2.txt")
    assert proc.wait(timeout=600) == 0
    log = open(tmp_path / "log2.txt").read()
    assert "Resumed from the checkpoint at step" in log
    resumed = read_metrics(str(tmp_path))
    reference = [r for r in read_metrics(str(demo_run[0])) if r["step"] <= 60]
    assert [r["step"] for r in resumed] == [10, 20, 30, 40, 50, 60], killed_at
    for a, b in zip(resumed, reference, strict=True):
        np.testing.assert_allclose(
            [a["loss"], a["top1"], a["lr"]], [b["loss"], b["top1"], b["lr"]], rtol=1e-5
        )

    # Weights, not only scalars (BN running statistics never reach the loss): the demo run keeps
    # no step-60 checkpoint, so the same command runs once more, uninterrupted. One machine, one
    # device, the same programs and batches: the states must be identical.
    whole = tmp_path_factory.mktemp("uninterrupted")
    proc = start(whole, *extra)
    assert proc.wait(timeout=600) == 0, open(whole / "log.txt").read()[-3000:]
    assert checkpoints(whole)[-1] == checkpoints(tmp_path)[-1] == 60
    state, state_resumed = saved_state(whole), saved_state(tmp_path)
    assert jax.tree.structure(state) == jax.tree.structure(state_resumed)
    flat = jax.tree_util.tree_flatten_with_path(state)[0]
    for (path, a), b in zip(flat, jax.tree.leaves(state_resumed), strict=True):
        np.testing.assert_array_equal(a, b, err_msg=jax.tree_util.keystr(path))


def test_sigterm_saves_a_checkpoint(tmp_path):
    proc = start(tmp_path)
    wait_for(lambda: len(read_metrics(str(tmp_path))) >= 2, proc, timeout=600)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=300) == 0
    saved = checkpoints(tmp_path)
    last_logged = read_metrics(str(tmp_path))[-1]["step"]
    assert saved and saved[-1] == last_logged and saved[-1] < 640, saved
    assert "Stopped by SIGTERM" in open(tmp_path / "log.txt").read()


def test_colorization_demo(tmp_path):
    """README's Colorization demo: the loss falls and the picture is written."""
    workdir = tmp_path / "colorize"
    os.makedirs(workdir)
    t0 = time.time()
    with open(workdir / "log.txt", "w") as out:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "ssl_jax.main",
                "--config=configs/colorize_r50.py:runlocal",
                f"--workdir={workdir}",
                *QUIET,
            ],
            cwd=ROOT,
            env=env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=1200,
        )
    seconds = time.time() - t0
    assert proc.returncode == 0, open(workdir / "log.txt").read()[-3000:]
    rows = read_metrics(str(workdir))
    assert rows[-1]["step"] == 384
    first = np.mean([r["loss"] for r in rows[:3]])
    last = np.mean([r["loss"] for r in rows[-3:]])
    assert last < first - 1.0, (first, last)
    assert os.path.isfile(workdir / "evals" / "samples" / "step_384" / "picture.png")
    assert os.path.isfile(workdir / "colorization_priors.npy")
    print(f"colorization demo: {seconds:.0f} s, loss {first:.3f} -> {last:.3f}")


def test_failed_attached_evaluation_keeps_its_checkpoint(tmp_path):
    """An attached benchmark that fails on its data (a folder without class subfolders) after
    its step's checkpoint: a one-line error naming the fix, exit 2, and that checkpoint complete
    (the asynchronous save is finished before the run stops, not abandoned)."""
    flat = tmp_path / "flat"
    flat.mkdir()
    for i in range(4):
        shutil.copy(
            os.path.join(ROOT, "ssl_jax", "data", "demo_photos", "chelsea.jpg"), flat / f"{i}.jpg"
        )
    workdir = tmp_path / "run"
    workdir.mkdir()
    args = [
        sys.executable,
        "-m",
        "ssl_jax.main",
        "--config=configs/jigsaw_r50.py:runlocal,depth=18,width=0.125",
        f"--workdir={workdir}",
        *QUIET,
        "--config.train.stop_after_steps=4",
        "--config.train.checkpoint_every=4",
        "--config.train.log_every=2",
        "--config.evals.probe.every_steps=0",
        "--config.evals.voc07_svm.every_steps=4",
        "--config.evals.voc07_svm.data.train.source=folder",
        f"--config.evals.voc07_svm.data.train.path={flat}",
    ]
    proc = subprocess.run(args, cwd=ROOT, env=env(), capture_output=True, text=True, timeout=600)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 2, log[-3000:]
    assert "have no label" in log and "class subfolder" in log
    assert "Traceback" not in log
    assert checkpoints(workdir) == [4]
    assert int(saved_state(workdir)["step"]) == 4
