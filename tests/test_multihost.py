"""Multi-process training with jax.distributed: two processes on 127.0.0.1 against one process.

Two processes with 4 virtual CPU devices each (gloo collectives over TCP) train one run; one
process with 8 devices trains the same run on the same global batches (tests/multihost_worker.py
opens the two per-process data shards and joins their batches in process order). Then each run's
checkpoint is continued by a single process.

Tolerances. Step 1 starts from the same parameters on the same images, so its loss agrees to
float32 rounding (rtol 1e-5). From step 2 on, the parameters carry the rounding of the gradient
sums, whose order differs between gloo's cross-process all-reduce and the in-process one; in this
network (BatchNorm in groups of 16 behind every conv) that rounding is amplified to ~0.5% of the
first update of BatchNorm parameters, the same size as between 1 and 8 devices of one process.
The losses of steps 2-6 then agree to ~1e-4 ... 3e-3 (rtol 1e-2 below), while another batch of
images moves the loss by several percent.

Slow (a few minutes on 2 cores, mostly start-up and compilation): ``python -m pytest -m slow``.
"""

import os
import shutil
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from ssl_jax import data as data_lib
from ssl_jax.train import checkpoint as ckpt_lib
from ssl_jax.train import state as state_lib
from ssl_jax.train.metrics import read_metrics

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
WORKER = os.path.join(ROOT, "tests", "multihost_worker.py")
CONFIG = "--config=configs/jigsaw_r50.py:runlocal,depth=18,width=0.125"
FLAGS = [
    "--config.train.log_every=1",
    "--config.train.checkpoint_every=2",
    "--config.train.progress_bar=false",
    "--config.evals.probe.every_steps=0",
]
FIRST_STEPS, MORE_STEPS = 4, 6
TIMEOUT = 900  # seconds per run, for a loaded 2-core machine


def env(devices, **extra):
    e = dict(os.environ)
    for name in ("SSL_JAX_MULTIHOST", "SSL_JAX_COORDINATOR", "SSL_JAX_NUM_PROCESSES"):
        e.pop(name, None)
    e.pop("SSL_JAX_PROCESS_ID", None)
    e["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    e["JAX_PLATFORMS"] = "cpu"
    # The children share the tests' compilation cache: a rerun skips most compilation.
    cache = jax.config.jax_compilation_cache_dir
    if cache:
        e["JAX_COMPILATION_CACHE_DIR"] = cache
        e["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0.5"
    e.update({k: str(v) for k, v in extra.items()})
    return e


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(args, workdir, log, environ):
    os.makedirs(workdir, exist_ok=True)
    out = open(os.path.join(workdir, log), "w")
    proc = subprocess.Popen(
        [sys.executable, *args, f"--workdir={workdir}"],
        cwd=ROOT,
        env=environ,
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    out.close()
    proc.log = os.path.join(workdir, log)
    return proc


def finish(procs):
    """Waits for every process; on any failure kills the rest and shows every log."""
    try:
        codes = [p.wait(timeout=TIMEOUT) for p in procs]
    except subprocess.TimeoutExpired:
        codes = None
    if codes != [0] * len(procs):
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        logs = "\n".join(f"--- {p.log} (exit {p.returncode})\n{tail(p.log)}" for p in procs)
        pytest.fail(f"a run failed or timed out (exit codes {codes}):\n{logs}")


def tail(path, chars=4000):
    with open(path) as f:
        return f.read()[-chars:]


def main_args(*extra):
    return ["-m", "ssl_jax.main", CONFIG, *FLAGS, *extra]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """W2: two processes x 4 devices; W1: one process x 8 devices on the same global batches."""
    root = tmp_path_factory.mktemp("multihost")
    w1, w2 = str(root / "one_process"), str(root / "two_processes")
    stop = f"--config.train.stop_after_steps={FIRST_STEPS}"
    port = free_port()
    procs = [
        start(
            main_args(stop, "--multihost"),
            w2,
            f"log{p}.txt",
            env(
                4,
                SSL_JAX_COORDINATOR=f"127.0.0.1:{port}",
                SSL_JAX_NUM_PROCESSES=2,
                SSL_JAX_PROCESS_ID=p,
            ),
        )
        for p in (0, 1)
    ]
    procs.append(start([WORKER, "2", CONFIG, *FLAGS, stop], w1, "log.txt", env(8)))
    finish(procs)

    # Both checkpoints continued by one process with 8 devices.
    more = f"--config.train.stop_after_steps={MORE_STEPS}"
    continued = {}
    procs = []
    for name, workdir in (("one", w1), ("two", w2)):
        continued[name] = str(root / f"{name}_continued")
        shutil.copytree(workdir, continued[name])
        procs.append(start(main_args(more), continued[name], "log_continued.txt", env(8)))
    finish(procs)
    return w1, w2, continued


def losses(workdir):
    return {r["step"]: r["loss"] for r in read_metrics(workdir)}


def positions(workdir, step):
    return ckpt_lib.read_positions(workdir, step)


@pytest.mark.slow
def test_two_processes_log_the_losses_of_one(runs):
    w1, w2, _ = runs
    one, two = losses(w1), losses(w2)
    assert sorted(two) == sorted(one) == list(range(1, FIRST_STEPS + 1))
    np.testing.assert_allclose(two[1], one[1], rtol=1e-5)
    steps = sorted(one)
    np.testing.assert_allclose([two[s] for s in steps], [one[s] for s in steps], rtol=1e-2)
    print("losses, 2 processes:", [two[s] for s in steps], "1 process:", [one[s] for s in steps])
    # Only process 0 writes the metrics; process 1 logs the same numbers to its own stream.
    assert "step 4: {'loss'" in tail(os.path.join(w2, "log1.txt"))


@pytest.mark.slow
def test_each_process_reads_only_its_shard(runs):
    """Checkpointed positions say how far each process read its own stream; the records they
    cover are every other demo image, disjoint between the processes."""
    _, w2, _ = runs
    saved = positions(w2, FIRST_STEPS)
    batch = 32  # runlocal's config.optim.batch_size
    # After 4 steps of 16 images per process, each is at (epoch 0, index 63) of its own shard.
    np.testing.assert_array_equal(saved, [[0, FIRST_STEPS * batch // 2 - 1]] * 2)
    np.testing.assert_array_equal(saved, positions(runs[0], FIRST_STEPS))

    config = state_lib.load_run_config(w2)
    source = data_lib.make_source(config.data)
    read = []
    for p in (0, 1):
        records = source.epoch_records(
            np.int64(0),
            np.int64(0),
            seed=config.seed,
            process_index=p,
            process_count=2,
            shuffle_buffer=0,
        )
        taken = records.take(int(saved[p, 1]) + 1).as_numpy_iterator()
        boxes = np.stack([r["box"] for r in taken])
        ids = [int(np.flatnonzero((source.boxes == b).all(axis=1))[0]) for b in boxes]
        assert all(i % 2 == p for i in ids), (p, ids)
        read.append(set(ids))
    assert len(read[0]) == len(read[1]) == FIRST_STEPS * batch // 2
    assert not read[0] & read[1]


@pytest.mark.slow
def test_checkpoint_written_by_both_processes(runs):
    _, w2, _ = runs
    state_dir = os.path.join(w2, "checkpoints", str(FIRST_STEPS), "state")
    written = sorted(n for n in os.listdir(state_dir) if n.startswith("ocdbt.process_"))
    assert written == ["ocdbt.process_0", "ocdbt.process_1"]


@pytest.mark.slow
def test_restore_onto_one_process(runs):
    """The two-process checkpoint continues in one process as the one-process checkpoint does.

    Saved positions hold one row per process of the writing run. With another process count the
    per-process streams are different ones, so both runs restart their (now single) stream at the
    beginning of the epoch they were in (ssl_jax.train.checkpoint.process_position) and see the
    same images; their losses differ only by the drift already present at the checkpoint.
    """
    w1, w2, continued = runs
    log = tail(os.path.join(continued["two"], "log_continued.txt"), 100_000)
    assert f"Resumed from the checkpoint at step {FIRST_STEPS}" in log
    assert "written by 2 processes, this run has 1" in log
    one, two = losses(continued["one"]), losses(continued["two"])
    assert sorted(two) == sorted(one) == list(range(1, MORE_STEPS + 1))
    # Rows before the checkpoint are the two-process run's own.
    first = range(1, FIRST_STEPS + 1)
    assert [two[s] for s in first] == [losses(w2)[s] for s in first]
    later = range(FIRST_STEPS + 1, MORE_STEPS + 1)
    np.testing.assert_allclose([two[s] for s in later], [one[s] for s in later], rtol=1e-2)
    print("continued in 1 process:", [two[s] for s in later], "reference:", [one[s] for s in later])

    # Read here by one process, the two-process checkpoint holds that run's step-4 state: it is
    # far closer to the reference's step 4 than to its own step 2.
    _, _, step, restored = state_lib.restore_variables(w2, FIRST_STEPS)
    _, _, _, earlier = state_lib.restore_variables(w2, FIRST_STEPS - 2)
    _, _, _, reference = state_lib.restore_variables(w1, FIRST_STEPS)
    assert step == FIRST_STEPS

    def distance(a, b):
        pairs = zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
        return np.sqrt(sum(np.sum((x - y) ** 2) for x, y in pairs))

    drift, moved = distance(restored, reference), distance(restored, earlier)
    assert drift < 0.1 * moved, (drift, moved)


def test_distributed_arguments_from_environment():
    from ssl_jax import main as main_lib

    assert main_lib.distributed_arguments({}) == {}
    assert main_lib.distributed_arguments(
        {
            "SSL_JAX_COORDINATOR": "127.0.0.1:1234",
            "SSL_JAX_NUM_PROCESSES": "2",
            "SSL_JAX_PROCESS_ID": "1",
        }
    ) == {"coordinator_address": "127.0.0.1:1234", "num_processes": 2, "process_id": 1}
    with pytest.raises(ValueError, match="SSL_JAX_PROCESS_ID=2"):
        main_lib.distributed_arguments({"SSL_JAX_NUM_PROCESSES": "2", "SSL_JAX_PROCESS_ID": "2"})
    assert main_lib.distributed_arguments({"SSL_JAX_HEARTBEAT_TIMEOUT_S": "20"}) == {
        "heartbeat_timeout_seconds": 20
    }
    with pytest.raises(ValueError, match="SSL_JAX_HEARTBEAT_TIMEOUT_S=0"):
        main_lib.distributed_arguments({"SSL_JAX_HEARTBEAT_TIMEOUT_S": "0"})
    with pytest.raises(ValueError, match="'two'"):
        main_lib.distributed_arguments({"SSL_JAX_NUM_PROCESSES": "two"})
