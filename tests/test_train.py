"""The trainer end to end at tiny width: metrics, checkpoints, resume, device count, divergence."""

import json
import os

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from jax.sharding import Mesh

from ssl_jax import config_lib, tasks
from ssl_jax.train import checkpoint, loop, optim
from ssl_jax.train import metrics as metrics_lib
from ssl_jax.train.loop import InputPipelineError, TrainingDiverged
from ssl_jax.train.pretrain import pretrain

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))

TINY = [
    ("model.depth", "18"),
    ("model.width", "0.125"),
    ("model.bn_group_size", "4"),
    ("data.demo_size", "256"),
    ("input.resize_short", "56"),
    ("input.crop", "48"),
    ("jigsaw.cell", "16"),
    ("jigsaw.tile", "12"),
    ("jigsaw.num_perms", "10"),
    ("jigsaw.tile_features", "32"),
    ("optim.batch_size", "16"),
    ("optim.epochs", "1.0"),
    ("optim.warmup_epochs", "0.25"),
    ("optim.decay_epochs", "(0.75,)"),
    ("train.log_every", "2"),
    ("train.checkpoint_every", "4"),
    ("train.progress_bar", "false"),
    ("evals.probe.every_steps", "0"),  # the :runlocal probe has its own tests (test_probe.py)
]


def tiny_config(*extra):
    c = config_lib.load_config(os.path.join(ROOT, "configs", "jigsaw_r50.py") + ":runlocal")
    return config_lib.apply_overrides(c, TINY + list(extra))


def rows(workdir):
    return metrics_lib.read_metrics(str(workdir))


def same_curves(a, b):
    assert [r["step"] for r in a] == [r["step"] for r in b]
    for ra, rb in zip(a, b, strict=True):
        for key in ("loss", "top1", "lr"):
            np.testing.assert_allclose(ra[key], rb[key], rtol=1e-5, atol=1e-6, err_msg=key)


def saved_state(workdir, step=None):
    """The train state in a run's checkpoint (the latest by default) as numpy arrays: params,
    batch_stats, opt_state, step and rng, restored as saved (no target tree needed)."""
    checkpoints = checkpoint.Checkpoints(str(workdir), keep=100, async_save=False)
    try:
        step = checkpoints.latest_step() if step is None else step
        restored = checkpoints.manager.restore(
            step, args=ocp.args.Composite(state=ocp.args.StandardRestore())
        )
    finally:
        checkpoints.close()
    return jax.tree.map(np.asarray, restored.state)


def initial_variables(config):
    """params and batch_stats as the trainer initialises them (same seed, same example inputs)."""
    pretext = tasks.create(config)
    variables = pretext.model.init(
        jax.random.PRNGKey(config.seed), pretext.example_inputs, train=False
    )
    return {"params": variables["params"], "batch_stats": variables["batch_stats"]}


def assert_same_state(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    flat = jax.tree_util.tree_flatten_with_path(a)[0]
    for (path, x), y in zip(flat, jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(x, y, err_msg=jax.tree_util.keystr(path))


def assert_close_relative_to_training(a, b, start, rel):
    """Each leaf of `a` equals `b` to `rel` times how far training moved that leaf from `start`
    (its largest element change), plus 1e-9 for leaves that hardly move at all."""
    assert jax.tree.structure(a) == jax.tree.structure(b) == jax.tree.structure(start)
    flat = jax.tree_util.tree_flatten_with_path(a)[0]
    for (path, x), y, s in zip(flat, jax.tree.leaves(b), jax.tree.leaves(start), strict=True):
        moved = float(np.abs(np.asarray(y) - np.asarray(s)).max())
        np.testing.assert_allclose(
            x, y, rtol=0, atol=rel * moved + 1e-9, err_msg=jax.tree_util.keystr(path)
        )


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("uninterrupted")
    pretrain(tiny_config(("train.stop_after_steps", "8")), str(workdir))
    return workdir


def test_metrics_and_checkpoints(uninterrupted):
    logged = rows(uninterrupted)
    assert [r["step"] for r in logged] == [2, 4, 6, 8]
    for r in logged:
        assert {"loss", "top1", "lr", "images_per_sec", "epoch"} <= set(r)
        assert np.isfinite(r["loss"]) and 0 <= r["top1"] <= 1
    assert logged[0]["loss"] == pytest.approx(np.log(10), abs=1.0)
    steps = sorted(int(s) for s in os.listdir(uninterrupted / "checkpoints") if s.isdigit())
    assert steps == [4, 8]
    assert os.path.isdir(uninterrupted / "tensorboard")


def test_resume_matches_uninterrupted(uninterrupted, tmp_path):
    pretrain(tiny_config(("train.stop_after_steps", "4")), str(tmp_path))
    assert [r["step"] for r in rows(tmp_path)] == [2, 4]
    # A stale row past the checkpoint, as a killed run would leave behind, is dropped on resume.
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"step": 6, "loss": 123.0}) + "\n")
    pretrain(tiny_config(("train.stop_after_steps", "8")), str(tmp_path))
    same_curves(rows(uninterrupted), rows(tmp_path))
    # The whole final state, bit for bit (one machine, same programs, same batches): a resume
    # that lost, say, the BN running statistics would still log the same losses.
    assert_same_state(saved_state(uninterrupted), saved_state(tmp_path))


def test_eight_devices_match_one(tmp_path, monkeypatch):
    """The same run on 8 devices and on 1 logs the same losses and ends with the same weights,
    to float32 rounding.

    Compared over the first steps only: rounding differences of 1e-7 (the summation order of a
    sharded gradient) flip near-ties of max-pooling later on, after which two runs of a tiny
    network drift apart like any two runs on different hardware.

    Weights (params and BN running statistics, read from each run's last checkpoint): each leaf
    must agree to 1e-3 of how far the two steps moved it from its initial value. The rounding
    differences measured here reach ~7e-5 of that movement (a 15x margin). BN running statistics
    never enter the training loss, and the last step's update enters no logged loss, so only this
    comparison sees them.
    """
    if jax.device_count() < 8:
        pytest.skip("needs 8 (virtual) devices")
    extra = [
        ("train.stop_after_steps", "2"),
        ("train.log_every", "1"),
        ("train.checkpoint_every", "1"),
    ]
    pretrain(tiny_config(*extra), str(tmp_path / "eight"))
    monkeypatch.setattr(loop, "make_mesh", lambda: Mesh(np.asarray(jax.devices()[:1]), ("data",)))
    pretrain(tiny_config(*extra), str(tmp_path / "one"))
    eight, one = rows(tmp_path / "eight"), rows(tmp_path / "one")
    assert [r["step"] for r in eight] == [1, 2]
    same_curves(eight, one)

    eight, one = saved_state(tmp_path / "eight"), saved_state(tmp_path / "one")
    assert int(eight["step"]) == int(one["step"]) == 2
    keys = ("params", "batch_stats")
    assert_close_relative_to_training(
        {k: eight[k] for k in keys},
        {k: one[k] for k in keys},
        initial_variables(tiny_config(*extra)),
        rel=1e-3,
    )


def test_divergence_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    real = optim.make_schedule

    def exploding(plan, decay_factor):
        base = real(plan, decay_factor)
        return lambda step: jax.numpy.where(step >= 4, 1e30, base(step))

    monkeypatch.setattr(optim, "make_schedule", exploding)
    with pytest.raises(TrainingDiverged, match="last good checkpoint is step 4"):
        pretrain(tiny_config(("train.stop_after_steps", "8")), str(tmp_path))
    steps = sorted(int(s) for s in os.listdir(tmp_path / "checkpoints") if s.isdigit())
    assert steps == [4]


def test_restore_positions_other_process_count():
    assert checkpoint.process_position([[3, 17]], 10) == (3, 17)
    assert checkpoint.process_position(None, 0) is None
    assert checkpoint.process_position([[3, 17], [2, 40]], 10) == (2, -1)


def test_batch_must_split_over_devices():
    mesh = Mesh(np.asarray(jax.devices()), ("data",))
    if mesh.size > 1:
        with pytest.raises(config_lib.ConfigError, match="batch_size=3"):
            loop.local_batch_size(3, mesh)


def test_unreadable_data_stops_with_a_message(tmp_path):
    """A folder where nothing decodes ends the run with one clear error, not a tf.data trace."""
    images = tmp_path / "images"
    images.mkdir()
    for i in range(20):
        (images / f"{i}.jpg").write_bytes(os.urandom(100))
    config = tiny_config(("data.source", "folder"), ("data.path", str(images)))
    with pytest.raises(InputPipelineError, match="input pipeline failed before step 1.*decode"):
        pretrain(config, str(tmp_path / "work"))
