"""The supervised baseline task: its loss against numpy, its checks of the data, a tiny run that
learns the demo photos' labels, and its trunk read back by the feature extractor."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from ssl_jax import config_lib, tasks
from ssl_jax.evals import features as features_lib
from ssl_jax.supervised import task as supervised
from ssl_jax.train import metrics as metrics_lib
from ssl_jax.train import state as state_lib
from ssl_jax.train.pretrain import pretrain

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))

TINY = [
    ("model.depth", "18"),
    ("model.width", "0.125"),
    ("model.bn_group_size", "4"),
    ("data.demo_size", "192"),
    ("input.resize_short", "40"),
    ("input.crop", "32"),
    ("optim.batch_size", "16"),
    ("optim.base_lr", "0.4"),
    ("optim.epochs", "8.0"),
    ("optim.warmup_epochs", "0.5"),
    ("optim.decay_epochs", "(6.0,)"),
    ("train.log_every", "12"),
    ("train.checkpoint_every", "48"),
    ("train.progress_bar", "false"),
    ("evals.probe.every_steps", "0"),
]


def config(*extra, arg="runlocal"):
    c = config_lib.load_config(os.path.join(ROOT, "configs", "supervised_r50.py") + ":" + arg)
    return config_lib.apply_overrides(c, TINY + list(extra))


def test_loss_matches_numpy_and_skips_missing_labels():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(12, 7)).astype(np.float32) * 3
    labels = rng.integers(0, 7, 12).astype(np.int32)
    labels[[2, 5]] = -1  # unlabelled
    labels[8] = 9  # out of range
    ce, metrics = supervised.loss(jnp.asarray(logits), jnp.asarray(labels))
    keep = (labels >= 0) & (labels < 7)
    shifted = logits - logits.max(axis=1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    expected = -np.mean(logp[keep, labels[keep]])
    np.testing.assert_allclose(float(ce), expected, rtol=1e-6)
    top1 = np.mean(logits[keep].argmax(1) == labels[keep])
    np.testing.assert_allclose(float(metrics["top1"]), top1, rtol=1e-6)
    np.testing.assert_allclose(float(metrics["unlabelled"]), 3 / 12, rtol=1e-6)


def _folder(root, layout):
    for rel in layout:
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        Image.fromarray(np.full((8, 8, 3), 100, np.uint8)).save(path)
    return str(root)


def test_refuses_data_without_labels_or_with_other_classes(tmp_path):
    from ssl_jax import data as data_lib

    flat = _folder(tmp_path / "flat", ["a.jpg", "b.jpg"])
    c = config(("data.source", "folder"), ("data.path", flat), ("supervised.num_classes", "2"))
    with pytest.raises(config_lib.ConfigError, match="needs labelled images"):
        tasks.create(c).check_source(data_lib.make_source(c.data))
    three = _folder(tmp_path / "three", ["x/a.jpg", "y/b.jpg", "z/c.jpg"])
    c = config(("data.source", "folder"), ("data.path", three), ("supervised.num_classes", "10"))
    with pytest.raises(config_lib.ConfigError, match="num_classes=3"):
        tasks.create(c).check_source(data_lib.make_source(c.data))
    with pytest.raises(config_lib.ConfigError, match="supervised.num_classes"):
        tasks.validate(config(("supervised.num_classes", "1")))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("supervised")
    with open(workdir / "config.json", "w") as f:  # as ssl_jax.main writes it
        f.write(config().to_json_best_effort())
    pretrain(config(), str(workdir))
    return workdir


def test_tiny_run_learns_the_demo_labels(trained):
    rows = [r for r in metrics_lib.read_metrics(str(trained)) if "loss" in r]
    assert rows[-1]["step"] == 96
    assert rows[0]["loss"] == pytest.approx(np.log(6), abs=0.7)
    assert rows[-1]["loss"] < rows[0]["loss"] - 0.3, [r["loss"] for r in rows]
    assert rows[-1]["top1"] > 0.35  # chance: 1/6
    assert rows[-1]["unlabelled"] == 0.0


def test_trunk_feeds_the_feature_extractor(trained):
    _, task, step, restored = state_lib.restore_variables(str(trained))
    assert step == 96
    trunk = features_lib.trunk_variables(restored)
    # 32-pixel inputs: the table's windows need 224.
    feature_fn = features_lib.make_feature_fn(task, {"pooling": "adaptive"}, 32)
    images = jnp.asarray(np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), np.uint8))
    out = jax.device_get(feature_fn(trunk, images))
    assert set(out) >= {"res5", "pool5"} and all(np.isfinite(v).all() for v in out.values())


def test_imagenet_recipe_defaults():
    c = config_lib.load_config(os.path.join(ROOT, "configs", "supervised_r50.py"))
    tasks.validate(c)
    assert (c.task, c.data.source, c.data.name) == ("supervised", "tfds", "imagenet2012")
    assert c.supervised.num_classes == 1000 and (c.input.resize_short, c.input.crop) == (256, 224)
    assert c.optim.epochs == 90 and c.optim.decay_epochs == (30, 60, 80)
    assert c.optim.batch_size == 256 and c.optim.base_lr == 0.1 and c.optim.weight_decay == 1e-4
    alex = config_lib.load_config(
        os.path.join(ROOT, "configs", "supervised_r50.py") + ":model=alexnet"
    )
    tasks.validate(alex)
    assert alex.model.name == "alexnet" and alex.input.crop == 227
