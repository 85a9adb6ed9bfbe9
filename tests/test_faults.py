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

import contextlib
import errno
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from ssl_jax import local_pod, paths
from ssl_jax import main as main_lib
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


# ---------------------------------------------------------------------------------------------
# One process cannot read part of its shard

NOBODY = 65534
FOLDER_STEPS, LOCAL_BATCH = 4, 16  # the :runlocal global batch of 32 over 2 processes
PREFETCH = 1  # config.data.prefetch: bounds how far decoding runs ahead of the steps


def world_readable_dir(prefix: str, owner: int | None = None) -> str:
    """A folder another user can read (pytest's tmp_path is private to root)."""
    path = tempfile.mkdtemp(prefix=prefix)
    os.chmod(path, 0o755)
    if owner is not None:
        os.chown(path, owner, owner)
    return path


def stream(shard: list[str], seed: int, process_index: int, epochs: int) -> list[str]:
    """A process's records epoch after epoch, as ssl_jax.data.records.array_epoch orders them
    (re-derived here so that the test does not trust the code it checks)."""
    out = []
    for epoch in range(epochs):
        words = [int(v) & 0xFFFFFFFFFFFFFFFF for v in (seed, epoch, process_index)]
        out += [shard[i] for i in np.random.default_rng(words).permutation(len(shard))]
    return out


@pytest.mark.slow
def test_a_process_that_cannot_read_part_of_its_shard_skips_and_counts(
    gcs_bucket, tmp_path, cifar10_dir
):
    """A 2-process pod trains on a folder of 48 CIFAR-10 JPEGs; process 1 reads records 1, 3,
    5, ... and runs as an unprivileged user who may not read half of them (mode 000; process 0,
    root, reads its own share and would read those too). Process 1 skips them, saying why; both
    exit 0 after the 4 steps; process 1 used exactly 64 images, so its position in the
    checkpoint is that of its 64th readable record: it passed over exactly the unreadable
    records before it. The skipped_images count logged is that number plus those that decoding
    had read ahead of the steps."""
    from ssl_jax import config_lib
    from ssl_jax import data as data_lib  # TensorFlow: only in this test

    data_dir = world_readable_dir("faults_data_")
    try:
        for name in ("airplane", "automobile"):
            os.makedirs(os.path.join(data_dir, name), mode=0o755)
            for k in range(24):
                src = os.path.join(cifar10_dir, "train", name, f"{k:04d}.jpg")
                dst = os.path.join(data_dir, name, f"{k:04d}.jpg")
                shutil.copyfile(src, dst)
                os.chmod(dst, 0o644)
        config = config_lib.load_config(CONFIG.split("=", 1)[1])
        config.data.source, config.data.path = "folder", data_dir
        files = [p.decode() for p in data_lib.make_source(config.data).paths]
        shard = files[1::2]  # process 1 of 2
        unreadable = set(shard[::2])
        for path in unreadable:
            os.chmod(path, 0)

        workdir = f"{gcs_bucket}/unreadable-{uuid.uuid4().hex[:8]}"
        args = [
            CONFIG, f"--workdir={workdir}", "--config.data.source=folder",
            f"--config.data.path={data_dir}", "--config.train.progress_bar=False",
            "--config.train.log_every=2", "--config.train.checkpoint_every=2",
            f"--config.train.stop_after_steps={FOLDER_STEPS}",
            "--config.evals.probe.every_steps=0", f"--config.data.prefetch={PREFETCH}",
            "--config.data.num_parallel_calls=2",
        ]  # fmt: skip
        wrap, home, environ = {}, None, pod_environ()
        if os.getuid() == 0:  # root reads anything: process 1 runs as nobody
            wrap[1] = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
            home = world_readable_dir("faults_home_", owner=NOBODY)
            environ["HOME"] = home  # caches of matplotlib and Keras
        start = time.monotonic()
        pod = local_pod.start(
            2, args, logdir=str(tmp_path / "pod"), environ=environ, cwd=str(tmp_path), wrap=wrap
        )
        if wrap:  # its own temporary disk, before its interpreter has started
            os.chown(pod.tmpdirs[1], NOBODY, NOBODY)
        codes = pod.wait(timeout=TIMEOUT)
        logs = [pod.log(i) for i in range(2)]
        seconds = time.monotonic() - start
    finally:
        for path in files if "files" in locals() else ():
            os.chmod(path, 0o644)
        shutil.rmtree(data_dir, ignore_errors=True)
        if home:
            shutil.rmtree(home, ignore_errors=True)
    assert codes == [0, 0], logs[1][-4000:]
    assert re.search(r"Skipping image \S+: unreadable \(permission denied for user id", logs[1])
    assert "Skipping image" not in logs[0]

    records = stream(shard, config.seed, 1, epochs=20)
    readable_at = [i for i, path in enumerate(records) if path not in unreadable]

    def unreadable_before(images: int) -> int:
        """Unreadable records the stream passes before its images-th readable one."""
        return readable_at[images - 1] + 1 - images

    used = FOLDER_STEPS * LOCAL_BATCH
    last = readable_at[used - 1]  # the last record of step 4
    assert ckpt_lib.saved_steps(workdir) == [2, FOLDER_STEPS]
    positions = ckpt_lib.read_positions(workdir, FOLDER_STEPS)
    assert tuple(positions[1]) == divmod(last, len(shard)), (positions, seconds)
    row = [r for r in read_metrics(workdir) if "loss" in r][-1]
    assert row["step"] == FOLDER_STEPS
    # The count is of decode events (ssl_jax.data.decode), and decoding runs ahead of the steps:
    # the prefetched batch, the batch being built, the parallel map's buffers (45 more unreadable
    # records, about 3 batches, when measured). Exact is the position above: 64 images used.
    ahead = 4 * LOCAL_BATCH
    assert unreadable_before(used) <= row["skipped_images"] <= unreadable_before(used + ahead), (
        row, unreadable_before(used), unreadable_before(used + ahead), seconds
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------
# The local disk full

SHORT_RUN = [
    CONFIG,
    "--config.train.progress_bar=False",
    "--config.train.log_every=2",
    "--config.train.checkpoint_every=2",
    "--config.evals.probe.every_steps=0",
]


@contextlib.contextmanager
def small_disk(kib: int):
    """A tmpfs of ``kib`` KiB (root only: a real full disk, not a simulated error)."""
    if os.getuid() != 0:
        pytest.skip("mounting a tmpfs needs root (the CI machine runs as root)")
    path = tempfile.mkdtemp(prefix="faults_disk_")
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={kib}k", "tmpfs", path], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", path], check=True)
        os.rmdir(path)


def fill(directory: str) -> str:
    """Writes a file in ``directory`` until the disk is full; returns its path."""
    path = os.path.join(directory, "filler")
    with open(path, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError as e:
            assert e.errno == errno.ENOSPC, e
    return path


@contextlib.contextmanager
def main_process(args, cwd, log, **environ) -> Iterator[subprocess.Popen]:
    """``python -m ssl_jax.main ARGS`` (2 devices), killed if still running at the end."""
    env = pod_environ(XLA_FLAGS="--xla_force_host_platform_device_count=2", **environ)
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ssl_jax.main", *args], cwd=cwd, env=env, stdout=out,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def restorable(workdir: str, step: int) -> dict:
    return ckpt_lib.read_state(workdir, step)


@pytest.mark.slow
def test_full_temporary_disk_costs_a_bucket_run_nothing(gcs_bucket, tmp_path):
    """TMPDIR, SSL_JAX_CACHE and HOME on a full tmpfs, the workdir in the bucket: with its
    workdir in a bucket a training run writes to local disk only at start-up (the permutation
    cache; Python's, Matplotlib's and Keras' probes, which fall back elsewhere), so it trains to
    the end, says the cache could not be written, and its checkpoints restore."""
    workdir = f"{gcs_bucket}/full-tmp-{uuid.uuid4().hex[:8]}"
    with small_disk(64) as disk:
        fill(disk)
        log = tmp_path / "log.txt"
        with main_process(
            [*SHORT_RUN, f"--workdir={workdir}", "--config.train.stop_after_steps=4"], tmp_path,
            log, TMPDIR=disk, SSL_JAX_CACHE=f"{disk}/cache", HOME=disk,
        ) as proc:  # fmt: skip
            assert proc.wait(timeout=TIMEOUT) == 0, log.read_text()[-4000:]
    text = log.read_text()
    assert f"Could not cache permutations in {disk}/cache/permutations" in text
    assert "No space left on device" in text
    assert ckpt_lib.saved_steps(workdir) == [2, 4]
    assert int(restorable(workdir, 4)["step"]) == 4


@pytest.mark.parametrize(
    "error, code, said",
    [
        (ValueError("Image 'a.jpg' is 1x1 pixels; crop needs 64."), 2, "1x1 pixels"),
        # tensorstore's wording when orbax's array writer meets a full disk
        (
            ValueError(
                'RESOURCE_EXHAUSTED: Error writing local file "/d/ck/4/_sharding": Failed '
                'writing: "/d/ck/4/_sharding.__lock": No space left on device [os_error_code=28]'
            ),
            1,
            "No space left on device writing /d/ck/4/_sharding.__lock",
        ),
    ],
    ids=["bad-input", "disk-full"],
)
def test_a_full_disk_reported_as_value_error_is_not_taken_for_bad_input(
    tmp_path, monkeypatch, capsys, error, code, said
):
    """ValueError means bad input (exit 2) except when it carries a full disk (exit 1 with the
    disk message): tensorstore reports both with the same type."""

    def fail(config, workdir):
        raise error

    monkeypatch.setattr(main_lib.pretrain_lib, "pretrain", fail)
    monkeypatch.setattr(main_lib, "LAST_WORDS", [])
    got = main_lib.main([CONFIG, f"--workdir={tmp_path / 'run'}"])
    assert got == code
    assert said in capsys.readouterr().err  # main() logs to stderr


@pytest.mark.slow
def test_local_disk_full_mid_run_stops_with_a_clear_error(tmp_path):
    """A local workdir and TMPDIR on a 24 MiB tmpfs that the test fills once the step-2
    checkpoint is complete: the run's next write fails; it stops with exit status 1 and one
    error line, its last, naming the full disk and the fix (orbax's writer threads log their
    own tracebacks before it), and the
    checkpoints it completed restore (a half-written one is not counted)."""
    with small_disk(24 * 1024) as disk:
        workdir = os.path.join(disk, "run")
        log = tmp_path / "log.txt"
        with main_process(
            [*SHORT_RUN, f"--workdir={workdir}", "--config.train.stop_after_steps=400",
             "--config.train.keep_checkpoints=100"],
            tmp_path, log, TMPDIR=disk, SSL_JAX_CACHE=f"{disk}/cache",
        ) as proc:  # fmt: skip
            deadline = time.monotonic() + TIMEOUT
            while not ckpt_lib.saved_steps(workdir) and proc.poll() is None:
                assert time.monotonic() < deadline, log.read_text()[-4000:]
                time.sleep(0.05)
            filler = fill(disk)
            code = proc.wait(timeout=300)
        text = log.read_text()
        saved = ckpt_lib.saved_steps(workdir)
        os.remove(filler)
        assert code == 1, text[-4000:]
        last = text.strip().splitlines()[-1]
        assert "ERROR No space left on device" in last, text[-4000:]
        assert f"Full: {workdir} (the workdir" in last and f"{disk} (TMPDIR" in last, last
        assert "Free space on that disk, or point the temporary directory (TMPDIR)" in last
        assert f"The last complete checkpoint is step {saved[-1]} in {workdir}" in last
        assert saved and saved[-1] < 400
        for step in saved:
            assert int(restorable(workdir, step)["step"]) == step
