"""Workdirs in a bucket: the library on a local GCS emulator (tests/gcs.py), offline.

``STORAGE_EMULATOR_HOST`` is the one switch (set by the ``gcs_bucket`` fixture, inherited by the
``python -m ssl_jax.main`` subprocesses): checkpoints, metrics, config, TensorBoard events, the
permutation set, evaluation features and results, priors and pictures all land in the bucket, and
nothing is written under the working directory.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid

import numpy as np
import pytest
from PIL import Image

from ssl_jax import paths
from ssl_jax.train import checkpoint as ckpt_lib
from ssl_jax.train import metrics as metrics_lib

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
JIGSAW = os.path.join(ROOT, "configs", "jigsaw_r50.py") + ":runlocal,depth=18"
SHORT = [
    "--config.train.progress_bar=False",
    "--config.train.log_every=10",
    "--config.train.checkpoint_every=10",
    "--config.train.stop_after_steps=20",
    "--config.evals.probe.every_steps=20",
    "--config.evals.probe.features.layers=('res4',)",
]


def main_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "ssl_jax.main", *args]


def run_main(cwd, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    """``python -m ssl_jax.main ARGS`` in ``cwd`` (an empty folder), with the test's
    environment (the emulator's address, the virtual devices, the permutation cache)."""
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.run(
        main_command(*args), cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def listing(root: str) -> set[str]:
    """Every object under root, relative to it."""
    return {
        paths.join(directory, name)[len(root) + 1 :]
        for directory, _, names in paths.walk(root)
        for name in names
    }


def test_metrics_priors_and_pictures_in_the_bucket(gcs_bucket):
    from ssl_jax.colorization import predict
    from ssl_jax.colorization import task as col_task

    root = f"{gcs_bucket}/unit-{uuid.uuid4().hex[:8]}"
    writer = metrics_lib.MetricsWriter(root, start_step=0)
    writer.write(2, {"loss": 1.5})
    writer.write(4, {"loss": 1.25})
    writer.close()
    assert [r["step"] for r in metrics_lib.read_metrics(root)] == [2, 4]
    # A resume from step 2 drops the later row, as on a local disk.
    metrics_lib.MetricsWriter(root, start_step=2, tensorboard=False)
    assert metrics_lib.read_metrics(root) == [{"step": 2, "loss": 1.5}]
    assert any(n.startswith("tensorboard/events.out.tfevents.") for n in listing(root))

    priors = np.random.default_rng(0).random(313)
    col_task.save_priors(f"{root}/priors.npy", priors, {"images": 1})
    np.testing.assert_allclose(col_task.load_priors(f"{root}/priors.npy"), priors / priors.sum())
    assert paths.read_json(f"{root}/priors.json") == {"images": 1}
    image = np.zeros((8, 8, 3), np.uint8)
    out = predict.write_grid([[image, image]], f"{root}/samples/grid.png")
    assert paths.isfile(out)


@pytest.fixture(scope="module")
def jigsaw_run(gcs_bucket, tmp_path_factory):
    """The :runlocal Jigsaw pretraining (ResNet-18, 20 steps, the probe at the end) with its
    workdir in the bucket, run from an empty folder."""
    workdir = f"{gcs_bucket}/run-{uuid.uuid4().hex[:8]}"
    cwd = tmp_path_factory.mktemp("cwd")
    proc = run_main(cwd, f"--config={JIGSAW}", f"--workdir={workdir}", *SHORT)
    return workdir, cwd, proc


def test_pretraining_writes_to_the_bucket_only(jigsaw_run):
    workdir, cwd, _ = jigsaw_run
    names = listing(workdir)
    for name in ("config.json", "metrics.jsonl", "permutations.npy", "data_subset.json"):
        assert name in names, sorted(names)
    assert any(n.startswith("tensorboard/events.out.tfevents.") for n in names)
    assert ckpt_lib.saved_steps(workdir) == [10, 20]
    assert "evals/probe/step_20/results.json" in names
    rows = metrics_lib.read_metrics(workdir)
    assert [r["step"] for r in rows if "loss" in r] == [10, 20]
    assert any("probe/res4/1shot" in r for r in rows)
    assert paths.load_npy(f"{workdir}/permutations.npy").shape == (100, 9)
    assert os.listdir(cwd) == []  # nothing under the working directory


def test_svm_benchmark_from_and_to_the_bucket(jigsaw_run, gcs_bucket):
    workdir, cwd, _ = jigsaw_run
    out = f"{gcs_bucket}/svm-{uuid.uuid4().hex[:8]}"
    run_main(
        cwd,
        f"--config={os.path.join(ROOT, 'configs', 'evals', 'voc07_svm.py')}:runlocal",
        f"--config.pretrained={workdir}",
        f"--workdir={out}",
        "--config.features.layers=('res3','pool5')",
    )
    results = paths.read_json(f"{out}/results.json")
    assert results["pretrained"] == workdir and results["pretrained_step"] == 20
    assert set(results["layers"]) == {"res3", "pool5"}
    assert 0.0 <= results["layers"]["res3"]["mAP"] <= 1.0
    names = listing(out)
    assert {"results.md", "features/train/meta.json", "features/test/res3/000000000.npy"} <= names
    assert os.listdir(cwd) == []


@pytest.mark.slow
def test_runlocal_killed_after_its_first_checkpoint_resumes_from_the_bucket(gcs_bucket, tmp_path):
    """The :runlocal Jigsaw demo, as README's command, with --workdir in the bucket: SIGKILL
    once its first checkpoint is there, then the same command resumes from that checkpoint and
    finishes; everything lands in the bucket, nothing under the working directory."""
    workdir = f"{gcs_bucket}/run-{uuid.uuid4().hex[:8]}"
    args = (f"--config={ROOT}/configs/jigsaw_r50.py:runlocal", f"--workdir={workdir}")
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.Popen(
        main_command(*args, "--config.train.progress_bar=False"), cwd=tmp_path, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.time() + 900
    while not ckpt_lib.saved_steps(workdir) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.5)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert ckpt_lib.saved_steps(workdir) == [100], "killed after its first checkpoint"
    resumed = run_main(tmp_path, *args, "--config.train.progress_bar=False", timeout=1800)
    assert "Resumed from the checkpoint at step 100" in resumed.stderr
    assert ckpt_lib.saved_steps(workdir)[-1] == 640  # the last three are kept
    rows = [r for r in metrics_lib.read_metrics(workdir) if "loss" in r]
    assert [r["step"] for r in rows] == list(range(10, 641, 10))  # as if never interrupted
    names = listing(workdir)
    for name in ("config.json", "metrics.jsonl", "permutations.npy", "data_subset.json"):
        assert name in names
    assert any(n.startswith("tensorboard/events.out.tfevents.") for n in names)
    assert {f"evals/probe/step_{s}/results.json" for s in (300, 600, 640)} <= names
    assert os.listdir(tmp_path) == []


@pytest.mark.slow
def test_colorization_priors_and_pictures_in_the_bucket(gcs_bucket, tmp_path):
    """A :runlocal Colorization run (ResNet-18, 8 steps on 64-pixel crops) in the bucket:
    its priors, estimated from the data at start-up, and its pictures land there."""
    workdir = f"{gcs_bucket}/colorize-{uuid.uuid4().hex[:8]}"
    run_main(
        tmp_path,
        f"--config={os.path.join(ROOT, 'configs', 'colorize_r50.py')}:runlocal,depth=18",
        f"--workdir={workdir}",
        "--config.train.progress_bar=False",
        "--config.train.log_every=4",
        "--config.train.checkpoint_every=4",
        "--config.train.stop_after_steps=8",
        "--config.evals.probe.every_steps=0",
        "--config.input.resize_short=72",
        "--config.input.crop=64",
        "--config.colorization.prior_images=256",
    )
    names = listing(workdir)
    assert {"colorization_priors.npy", "colorization_priors.json"} <= names
    assert paths.load_npy(f"{workdir}/colorization_priors.npy").shape == (313,)
    for step in (4, 8):
        picture = f"{workdir}/evals/samples/step_{step}/picture.png"
        assert picture[len(workdir) + 1 :] in names
        with paths.open(picture, "rb") as f:
            assert Image.open(f).size == (3 * 68 + 4, 8 * 68 + 4)  # 8 rows of 64-pixel crops
    assert os.listdir(tmp_path) == []


def test_weights_import_and_export_through_the_bucket(gcs_bucket):
    from ssl_jax.weights import exports, imports, torchfile

    root = f"{gcs_bucket}/weights-{uuid.uuid4().hex[:8]}"
    local = os.path.join(
        os.path.dirname(__file__), "fixtures", "weights", "torchvision_resnet18.pth"
    )
    with open(local, "rb") as f:
        paths.write_bytes(f"{root}/resnet18.pth", f.read())
    record = imports.import_checkpoint(
        "torchvision", "resnet18_supervised", f"{root}/resnet18.pth", f"{root}/imported"
    )
    assert record["dropped"] == ["fc.bias", "fc.weight"]
    assert paths.read_json(f"{root}/imported/imported.json")["format"] == "torchvision"
    exports.export(f"{root}/imported", "torchvision", f"{root}/out.pth")
    source, out = torchfile.load(local), torchfile.load(f"{root}/out.pth")
    weights = [k for k in source if not k.startswith("fc.") and "num_batches" not in k]
    assert sorted(out) == sorted(weights)
    for name, value in out.items():
        np.testing.assert_array_equal(value, source[name])


def test_folder_in_the_bucket_has_class_labels(gcs_bucket):
    """Class subfolders in a bucket label their images as on a local disk."""
    from ssl_jax.data import files  # imports TensorFlow

    root = f"{gcs_bucket}/folder_{uuid.uuid4().hex[:8]}"
    for name in ("cat/0.jpg", "cat/1.jpg", "dog/0.jpg", "loose.jpg"):
        paths.write_bytes(f"{root}/{name}", b"x")
    source = files.folder_source(root)
    assert source.class_names == ("cat", "dog")
    assert source.labels.tolist() == [0, 0, 1, -1]
    assert [i.decode() for i in source.ids] == ["cat/0.jpg", "cat/1.jpg", "dog/0.jpg", "loose.jpg"]
