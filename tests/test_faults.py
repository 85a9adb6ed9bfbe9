"""Faults a pod run meets, injected on this machine (RELIABILITY.md's table names these tests).

- SIGTERM during an attached evaluation: the run stops at the evaluation's next safe point on
  every process, exits 0 and says so; the same command runs the evaluation again at that step,
  reusing the features it saved, and gets the results of an uninterrupted evaluation.
- The local disk full (a tiny tmpfs as each process's temporary directory).
- One process unable to read its share of the images (file permissions).

The pod tests start processes of ``python -m ssl_jax.main`` with ``ssl_jax.local_pod`` (2
processes of 2 virtual CPU devices, a workdir in the emulated bucket) and are slow: run them with
``python -m pytest -m slow tests/test_faults.py``.
"""

from __future__ import annotations

import os
import re
import signal
import time
import uuid

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from ssl_jax import local_pod, paths
from ssl_jax.train import checkpoint as ckpt_lib
from ssl_jax.train import loop, preemption
from ssl_jax.train.metrics import read_metrics

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
CONFIG = f"--config={ROOT}/configs/jigsaw_r50.py:runlocal,depth=18,width=0.125"
TIMEOUT = 900  # seconds per pod run, for a loaded 2-core machine


def pod_environ(**extra) -> dict[str, str]:
    """The test's environment for pod processes: the emulator's address (set by gcs_bucket),
    this checkout on PYTHONPATH, the tests' compilation cache; local_pod adds the rest."""
    e = {k: v for k, v in os.environ.items() if not k.startswith("SSL_JAX_")}
    e["PYTHONPATH"] = ROOT
    cache = jax.config.jax_compilation_cache_dir
    if cache:
        e["JAX_COMPILATION_CACHE_DIR"] = cache
        e["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0.5"
    e["SSL_JAX_HEARTBEAT_TIMEOUT_S"] = "30"
    e.update({k: str(v) for k, v in extra.items()})
    return e


def run_pod(args, tmp_path, name, count=2, **kwargs) -> tuple[list[int | None], list[str]]:
    """Runs a pod to its end; returns the exit codes and the logs."""
    pod = local_pod.start(
        count, args, logdir=str(tmp_path / name), environ=pod_environ(), cwd=str(tmp_path),
        **kwargs,
    )  # fmt: skip
    codes = pod.wait(timeout=TIMEOUT)
    return codes, [pod.log(i) for i in range(count)]


def wait_for_text(pod: local_pod.Pod, index: int, pattern: str, timeout: float = TIMEOUT) -> str:
    """Waits until process ``index``'s log matches ``pattern``; returns the match."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        match = re.search(pattern, pod.log(index))
        if match:
            return match.group(0)
        if any(p.poll() is not None for p in pod.processes):
            break
        time.sleep(0.1)
    pod.terminate_all()
    pod.wait(timeout=60)
    raise AssertionError(
        f"{pattern!r} not in the log of process {index}:\n{pod.log(index)[-4000:]}"
    )


# ---------------------------------------------------------------------------------------------
# SIGTERM during an evaluation: the loop's part, in this process


def test_an_interrupted_evaluation_runs_first_when_the_run_resumes(tmp_path):
    """A periodic evaluation that SIGTERM interrupts stops the run with its step's checkpoint;
    the rerun runs it at that step before training on, also when that step is the last."""
    mesh = loop.make_mesh()
    replicated = NamedSharding(mesh, P())
    train = ml_collections.ConfigDict(
        dict(log_every=2, checkpoint_every=2, keep_checkpoints=5, stop_after_steps=None,
             progress_bar=False)
    )  # fmt: skip
    batch = mesh.size

    def train_step(state, batch):
        loss = jnp.mean(batch["image"])
        return {"w": state["w"] + loss, "step": state["step"] + 1}, {"loss": loss}

    def batches(start):
        index = -1 if start is None else int(start[1])
        while True:
            rows = np.arange(index + 1, index + 1 + batch)
            index = int(rows[-1])
            yield {"image": rows.astype(np.float32), "epoch": 0 * rows, "index": rows}

    calls, finished, interrupt_at = [], set(), {4, 6}

    def evaluate(state, step):
        calls.append(step)
        if step in interrupt_at:
            interrupt_at.discard(step)
            os.kill(os.getpid(), signal.SIGTERM)  # as a preemption notice mid-evaluation
        preemption.check(f"step {step}")
        finished.add(step)
        return {"score": float(step)}

    def run():
        state = jax.device_put({"w": jnp.zeros(()), "step": jnp.zeros((), jnp.int32)}, replicated)
        return loop.run(
            state, jax.jit(train_step), batches, workdir=str(tmp_path), train=train,
            total_steps=6, batch_size=batch, steps_per_epoch=100, mesh=mesh,
            batch_keys=("image",),
            periodic=[loop.Periodic("bench", 2, evaluate, lambda step: step in finished)],
        )  # fmt: skip

    first = run()
    assert (first.step, first.preempted, calls) == (4, True, [2, 4])
    assert ckpt_lib.saved_steps(str(tmp_path)) == [2, 4]
    second = run()  # resumes at 4: the evaluation at 4 first, then steps 5, 6 and the one at 6
    assert (second.step, second.preempted, calls) == (6, True, [2, 4, 4, 6])
    third = run()  # the last step: only the evaluation left
    assert (third.step, third.preempted, calls) == (6, False, [2, 4, 4, 6, 6])
    assert run().step == 6 and calls == [2, 4, 4, 6, 6]  # nothing left to do
    assert finished == {2, 4, 6}
    rows = [r for r in read_metrics(str(tmp_path)) if "bench/score" in r]
    assert [r["step"] for r in rows] == [2, 4, 6]
    assert float(jax.device_get(third.state["w"])) == pytest.approx(sum(range(6 * batch)) / batch)


# ---------------------------------------------------------------------------------------------
# SIGTERM during an attached evaluation, in a pod

SVM_LAYERS = "('res3','pool5')"
ATTACHED_SVM = [
    "--config.train.progress_bar=False",
    "--config.train.log_every=2",
    "--config.train.checkpoint_every=2",
    "--config.train.stop_after_steps=2",
    "--config.evals.probe.every_steps=0",
    "--config.evals.voc07_svm.every_steps=2",
    # Batches of 4 make parts of 64 rows: the 120 training crops of the demo photos are stored
    # in two parts, so SIGTERM can come between them.
    "--config.evals.voc07_svm.features.batch_size=4",
    f"--config.evals.voc07_svm.features.layers={SVM_LAYERS}",
]


@pytest.mark.slow
def test_sigterm_during_an_attached_evaluation_and_the_rerun(gcs_bucket, tmp_path):
    """SIGTERM to both processes of a 2-process pod once the attached voc07_svm evaluation at
    step 2 has stored its first part of features: both exit 0 at the same safe point, saying the
    evaluation will rerun, with no results; the same command then resumes at step 2, runs the
    evaluation, reusing the stored part, and writes results.

    Its mAPs must equal, exactly, those of a standalone evaluation of the step-2 checkpoint run
    from scratch by the same pod (same programs, devices and batches, so the same floats): an
    uninterrupted pretraining would evaluate the same weights (the checkpoint holds the live
    float32 state bit for bit) and add only training time, while the standalone run checks what
    can go wrong in the resume, rows lost, doubled or misplaced between the stored part and the
    rest."""
    workdir = f"{gcs_bucket}/sigterm-eval-{uuid.uuid4().hex[:8]}"
    args = [CONFIG, f"--workdir={workdir}", *ATTACHED_SVM]
    pod = local_pod.start(
        2, args, logdir=str(tmp_path / "first"), environ=pod_environ(), cwd=str(tmp_path)
    )
    wait_for_text(pod, 0, r"features \S+: 64/120 images")
    pod.terminate_all()
    codes = pod.wait(timeout=300)
    logs = [pod.log(i) for i in range(2)]
    assert codes == [0, 0], logs[0][-4000:]
    stopped = [
        re.search(r"The evaluation voc07_svm at step 2 was interrupted by SIGTERM \((.*?)\)\.", log)
        for log in logs
    ]
    assert all(stopped), logs[0][-4000:]
    assert stopped[0].group(1) == stopped[1].group(1)  # the same safe point on both
    assert "running the same command again runs this evaluation first" in logs[0]
    out = f"{workdir}/evals/voc07_svm/step_2"
    assert not paths.exists(f"{out}/results.json")
    assert ckpt_lib.saved_steps(workdir) == [2]
    saved_rows = re.match(r"features \S+: (\d+)/120 rows saved", stopped[0].group(1))

    codes, logs = run_pod(args, tmp_path, "rerun")
    assert codes == [0, 0], logs[0][-4000:]
    assert "Resumed from the checkpoint at step 2" in logs[0]
    assert "Running the evaluation(s) at step 2 that did not finish: voc07_svm" in logs[0]
    if saved_rows and int(saved_rows.group(1)):  # SIGTERM came inside the features of a split
        assert f"resuming after the {saved_rows.group(1)}/120 rows saved" in logs[0]
    resumed = paths.read_json(f"{out}/results.json")
    rows = [r for r in read_metrics(workdir) if "voc07_svm/res3" in r]
    assert [r["step"] for r in rows] == [2]

    alone = f"{gcs_bucket}/sigterm-eval-alone-{uuid.uuid4().hex[:8]}"
    codes, logs = run_pod(
        [
            f"--config={ROOT}/configs/evals/voc07_svm.py:runlocal",
            f"--config.pretrained={workdir}",
            "--config.pretrained_step=2",
            f"--workdir={alone}",
            "--config.features.batch_size=4",
            f"--config.features.layers={SVM_LAYERS}",
        ],
        tmp_path,
        "standalone",
    )
    assert codes == [0, 0], logs[0][-4000:]
    expected = paths.read_json(f"{alone}/results.json")
    assert resumed["weights"] == expected["weights"] == f"{workdir} step 2"
    for layer in ("res3", "pool5"):
        assert resumed["layers"][layer]["mAP"] == expected["layers"][layer]["mAP"], layer
        aps = [[c["test_ap"] for c in r["layers"][layer]["classes"]] for r in (resumed, expected)]
        assert aps[0] == aps[1], layer
