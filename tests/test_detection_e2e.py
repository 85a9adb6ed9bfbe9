"""The detection benchmark through the main command, in subprocesses: killed without warning
after a checkpoint, the same command resumes and ends as an uninterrupted run.

Slow (minutes on 2 cores): run with ``python -m pytest -m slow``.
"""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from ssl_jax.train import metrics as metrics_lib

pytestmark = pytest.mark.slow

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
DEVKIT = os.path.join(ROOT, "..", "shared", "data", "detection", "VOCdevkit")
SMALL = [
    "--config.input.short_side=128",
    "--config.input.max_side=224",
    "--config.optim.steps=24",
    "--config.optim.decay_steps=(18,)",
    "--config.optim.warmup_steps=4",
    "--config.train.log_every=4",
    "--config.train.checkpoint_every=8",
    "--config.test.roi_sampling_variants=()",
    "--config.train.progress_bar=False",
]


def env():
    e = dict(os.environ)
    e.pop("XLA_FLAGS", None)  # one CPU device, as a user's machine
    e["JAX_PLATFORMS"] = "cpu"
    return e


def start(args, workdir, log="log.txt"):
    os.makedirs(workdir, exist_ok=True)
    out = open(os.path.join(workdir, log), "w")
    return subprocess.Popen(
        [sys.executable, "-m", "ssl_jax.main", *args, f"--workdir={workdir}"],
        cwd=ROOT, env=env(), stdout=out, stderr=subprocess.STDOUT,
    )  # fmt: skip


def checkpoints(workdir):
    d = os.path.join(workdir, "checkpoints")
    return sorted(int(s) for s in os.listdir(d) if s.isdigit()) if os.path.isdir(d) else []


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    if not os.path.isdir(os.path.join(DEVKIT, "VOC2007")):
        pytest.skip(f"{DEVKIT} is not present")
    workdir = str(tmp_path_factory.mktemp("pretrain"))
    proc = start(
        ["--config=configs/jigsaw_r50.py:runlocal,depth=18,width=0.125",
         "--config.train.stop_after_steps=2", "--config.train.log_every=2",
         "--config.train.checkpoint_every=2", "--config.train.progress_bar=False"],
        workdir,
    )  # fmt: skip
    assert proc.wait(timeout=900) == 0, open(os.path.join(workdir, "log.txt")).read()[-3000:]
    return workdir


def detection_args(pretrained):
    return [
        f"--config={ROOT}/configs/evals/voc07_detection.py:runlocal,freeze_at=2,devkit={DEVKIT}",
        f"--config.pretrained={pretrained}",
        *SMALL,
    ]


def train_rows(workdir):
    return [r for r in metrics_lib.read_metrics(workdir) if "loss" in r]


def test_sigkill_then_resume_matches_an_uninterrupted_run(pretrained, tmp_path):
    whole = str(tmp_path / "whole")
    proc = start(detection_args(pretrained), whole)
    assert proc.wait(timeout=900) == 0, open(os.path.join(whole, "log.txt")).read()[-3000:]

    killed = str(tmp_path / "killed")
    proc = start(detection_args(pretrained), killed)
    deadline = time.time() + 900
    while 8 not in checkpoints(killed):
        assert proc.poll() is None, open(os.path.join(killed, "log.txt")).read()[-3000:]
        assert time.time() < deadline, "no checkpoint in time"
        time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not os.path.exists(os.path.join(killed, "results.json"))
    proc = start(detection_args(pretrained), killed, log="log2.txt")
    assert proc.wait(timeout=900) == 0, open(os.path.join(killed, "log2.txt")).read()[-3000:]
    assert "Resumed from the checkpoint at step" in open(os.path.join(killed, "log2.txt")).read()

    a, b = train_rows(whole), train_rows(killed)
    assert [r["step"] for r in a] == [4, 8, 12, 16, 20, 24]
    # Every logged step (before the kill, and after the resume) as in the whole run.
    after = {r["step"]: r for r in b}
    assert set(after) >= {12, 16, 20, 24}
    for row in a:
        if row["step"] in after:
            np.testing.assert_allclose(after[row["step"]]["loss"], row["loss"], rtol=1e-5)
    ra = json.load(open(os.path.join(whole, "results.json")))
    rb = json.load(open(os.path.join(killed, "results.json")))
    assert rb["step"] == ra["step"] == 24
    assert rb["mAP"] == pytest.approx(ra["mAP"], abs=1e-6)
    assert rb["mAP_all_points"] == pytest.approx(ra["mAP_all_points"], abs=1e-6)
