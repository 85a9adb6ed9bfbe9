"""Linear classifiers on frozen taps: frozen trunk, 8 vs 1 devices, resume, heads, errors."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from jax.sharding import Mesh

from ssl_jax import config_lib, paths, tasks
from ssl_jax.evals import features as features_lib
from ssl_jax.evals import linear
from ssl_jax.evals.base import Weights
from ssl_jax.models import make_trunk
from ssl_jax.train import metrics as metrics_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 4


def _config(path: str):
    return config_lib.load_config(os.path.join(ROOT, path))


def _eval_config(**overrides):
    """A tiny run: 64 demo crops, 32-pixel inputs, batch 16, 4 steps, lr decay at step 2."""
    c = _config("configs/evals/linear.py:runlocal")
    c.data.train.demo_size = 64
    c.data.test.demo_size, c.data.test.first = 96, 64
    c.features.size = 32
    c.optim.batch_size = 16
    c.optim.steps = STEPS
    c.optim.decay_every = 2
    c.optim.lr = 0.1  # large enough that the heads move visibly in 4 steps
    c.test.batch_size = 16
    c.train.log_every = 1
    c.train.checkpoint_every = 2
    c.train.progress_bar = False
    for key, value in overrides.items():
        config_lib.apply_overrides(c, [(key, str(value))])
    return c


@pytest.fixture(scope="module")
def weights():
    """A ResNet-18 (1/8 width) Jigsaw trunk with non-trivial BN statistics."""
    run_config = _config("configs/jigsaw_r50.py:runlocal,depth=18,width=0.125")
    trunk = make_trunk(run_config.model)
    variables = trunk.init(jax.random.PRNGKey(1), jnp.zeros((1, 32, 32, 3)), train=False)
    rng = np.random.default_rng(0)
    stats = jax.tree.map(
        lambda x: jnp.asarray(rng.uniform(0.5, 1.5, x.shape), jnp.float32),
        variables["batch_stats"],
    )
    variables = {"params": {"trunk": variables["params"]}, "batch_stats": {"trunk": stats}}
    return tasks.create(run_config), Weights(variables, 0, "test trunk")


def _evaluate(config, workdir, weights, mesh=None):
    """Runs the benchmark; returns its results.json."""
    task, trained = weights
    linear.LinearBenchmark(config, task, mesh=mesh).run(trained, workdir)
    return paths.read_json(os.path.join(workdir, "results.json"))


def _heads(workdir: str, step: int = STEPS):
    """The heads' state of the checkpoint at ``step``, as NumPy arrays."""
    path = os.path.join(workdir, "checkpoints", str(step), "state")
    with ocp.StandardCheckpointer() as checkpointer:
        return jax.tree.map(np.asarray, checkpointer.restore(path))


def _losses(workdir: str) -> list[float]:
    return [r["loss"] for r in metrics_lib.read_metrics(workdir) if "loss" in r]


@pytest.fixture(scope="module")
def eight_devices(weights, tmp_path_factory):
    """The uninterrupted run on the 8 virtual devices, with host copies of the trunk before."""
    assert jax.device_count() == 8
    before = jax.tree.map(lambda x: np.array(x, copy=True), weights[1].variables)
    workdir = str(tmp_path_factory.mktemp("linear8"))
    results = _evaluate(_eval_config(), workdir, weights)
    return before, workdir, results


def test_trunk_bitwise_unchanged(weights, eight_devices):
    before, workdir, _ = eight_devices
    after = jax.tree.map(np.asarray, weights[1].variables)  # still readable: never donated
    for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after), strict=True):
        np.testing.assert_array_equal(a, b)
    state = _heads(workdir)
    # Only the heads are optimised: the state holds no trunk variables.
    assert set(state) == {"params", "batch_stats", "opt_state", "step"}
    assert all(k.endswith(("_bn", "_fc")) for k in state["params"])
    assert int(state["step"]) == STEPS


def test_results_written(eight_devices):
    _, workdir, results = eight_devices
    assert set(results["layers"]) == {"conv1", "res2", "res3", "res4", "res5", "pool5"}
    for r in results["layers"].values():
        assert 0.0 <= r["top1"] <= r["top5"] <= 100.0
    assert results["test"]["images"] == 32 and results["step"] == STEPS
    assert os.path.isfile(os.path.join(workdir, "results.json"))
    with open(os.path.join(workdir, "results.md")) as f:
        assert "| res4 |" in f.read()
    lr = [r["lr"] for r in metrics_lib.read_metrics(workdir) if "lr" in r]
    np.testing.assert_allclose(lr, [0.1, 0.1, 0.01, 0.01], rtol=1e-6)  # x0.1 every 2 steps
    assert all(np.isfinite(_losses(workdir)))


def test_one_device_matches_eight(weights, eight_devices, tmp_path_factory):
    _, workdir8, results8 = eight_devices
    workdir1 = str(tmp_path_factory.mktemp("linear1"))
    mesh = Mesh(np.asarray(jax.devices()[:1]), ("data",))
    results1 = _evaluate(_eval_config(), workdir1, weights, mesh=mesh)
    np.testing.assert_allclose(_losses(workdir1), _losses(workdir8), rtol=1e-5, atol=1e-6)
    heads1, heads8 = _heads(workdir1), _heads(workdir8)
    for a, b in zip(jax.tree.leaves(heads1), jax.tree.leaves(heads8), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    for name, r in results8["layers"].items():
        assert abs(results1["layers"][name]["top1"] - r["top1"]) <= 100 / 32 + 1e-9


def test_resume_continues_identically(weights, eight_devices, tmp_path_factory):
    _, workdir_full, _ = eight_devices
    workdir = str(tmp_path_factory.mktemp("linear_resume"))
    _evaluate(_eval_config(**{"train.stop_after_steps": 2}), workdir, weights)
    assert _heads(workdir, 2)["step"] == 2
    _evaluate(_eval_config(), workdir, weights)
    assert _losses(workdir) == _losses(workdir_full)
    resumed, full = jax.tree.leaves(_heads(workdir)), jax.tree.leaves(_heads(workdir_full))
    for a, b in zip(resumed, full, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "spec, scale_shift",
    [
        ("configs/jigsaw_r50.py", False),
        ("configs/jigsaw_alexnet.py", False),
        ("configs/colorize_alexnet.py", False),
        ("configs/colorize_r50.py", True),
    ],
)
def test_head_batchnorm_scale_shift(spec, scale_shift):
    task = tasks.create(_config(spec))
    c = _config("configs/evals/imagenet_linear.py")
    benchmark = linear.LinearBenchmark(c, task)
    assert benchmark.scale_shift is scale_shift
    heads = linear.LinearHeads(("a",), 10, benchmark.scale_shift)
    params = heads.init(jax.random.PRNGKey(0), {"a": jnp.zeros((2, 8))}, train=False)["params"]
    bn = params.get("a_bn", {})
    assert ("scale" in bn and "bias" in bn) is scale_shift
    assert ("a_bn" in params) is scale_shift  # no parameters at all without scale/shift
    for setting, expected in (("on", True), ("off", False)):
        c.head.bn_scale_shift = setting
        assert linear.LinearBenchmark(c, task).scale_shift is expected


def test_head_init_normal_001():
    heads = linear.LinearHeads(("a", "b"), 200, False)
    example = {"a": jnp.zeros((2, 500)), "b": jnp.zeros((2, 9))}
    params = heads.init(jax.random.PRNGKey(3), example, train=False)
    kernel = np.asarray(params["params"]["a_fc"]["kernel"])
    assert kernel.shape == (500, 200)
    assert abs(kernel.std() - 0.01) < 0.0003 and abs(kernel.mean()) < 0.0003
    np.testing.assert_array_equal(np.asarray(params["params"]["a_fc"]["bias"]), 0.0)
    np.testing.assert_array_equal(params["batch_stats"]["b_bn"]["var"], np.ones(9))


def test_test_step_counts_against_argsort():
    """Top-1 / top-5 counts of the test step on fixed logits (the heads reduced to an identity
    layer), against numpy's argsort; padded rows ("valid" False) count nowhere."""
    rng = np.random.default_rng(7)
    n, classes = 24, 10
    # Distinct values in every row, so no ties; the label of row i is ranked i % 6 in layer "a"
    # and (3 * i) % 10 in layer "b" (rank 0 = largest logit).
    labels = rng.integers(0, classes, n)
    ranks = np.stack([np.arange(n) % 6, (3 * np.arange(n)) % 10], -1)
    logits = np.zeros((n, classes, 2), np.float32)
    for i in range(n):
        for j in range(2):
            others = rng.permutation(np.delete(np.arange(classes), labels[i]))
            ranked = np.insert(others, ranks[i, j], labels[i])  # classes, largest logit first
            logits[i, ranked, j] = np.linspace(2.5, -1.0, classes)
    valid = np.ones(n, bool)
    valid[[4, 10, 20, 21, 22, 23]] = False  # padded rows include top-1 and top-5 hits

    heads = linear.LinearHeads(("a", "b"), classes, False)
    example = {"a": jnp.zeros((2, classes)), "b": jnp.zeros((2, classes))}
    variables = heads.init(jax.random.PRNGKey(0), example, train=False)
    params = {
        f"{name}_fc": {"kernel": jnp.eye(classes), "bias": jnp.zeros(classes)}
        for name in ("a", "b")
    }
    variables = {"params": params, "batch_stats": variables["batch_stats"]}  # mean 0, var 1

    def feature_fn(trunk, image):
        del trunk
        return {"a": image[..., 0], "b": image[..., 1]}

    step = jax.jit(linear.make_test_step(feature_fn, heads, classes))
    batch = {
        "image": jnp.asarray(logits),
        "label": jnp.asarray(labels, jnp.int32),
        "valid": jnp.asarray(valid),
    }
    counts = jax.device_get(step(variables, None, batch))

    expected = {"count": int(valid.sum())}
    for j, name in enumerate(("a", "b")):
        ranked = np.argsort(-logits[..., j], axis=1)
        expected[f"top1/{name}"] = int(np.sum((ranked[:, 0] == labels) & valid))
        expected[f"top5/{name}"] = int(np.sum((ranked[:, :5] == labels[:, None]).any(1) & valid))
    assert {k: int(v) for k, v in counts.items()} == expected
    # By hand: valid rows 0-3, 5-9, 11-19. Layer a, ranks i % 6: rank 0 at rows 0, 6, 12, 18
    # -> top-1 4; ranks < 5 at rows 0-3, 6-9, 12-16, 18, 19 -> top-5 15. Layer b, ranks 3i % 10:
    # rank 0 at row 0 -> 1; ranks 3, 1, 4, 3, 2, 1, 4, 0 at rows 1, 7, 8, 11, 14, 17, 18, 0 -> 8.
    assert expected == {"count": 18, "top1/a": 4, "top5/a": 15, "top1/b": 1, "top5/b": 8}


def test_default_recipe_is_the_protocol():
    c = _config("configs/evals/imagenet_linear.py")
    o = c.optim
    assert (o.batch_size, o.lr, o.momentum, o.nesterov) == (256, 0.01, 0.9, True)
    assert (o.steps, o.decay_every, o.decay_factor) == (140_000, 40_000, 0.1)
    assert c.data.train.source == "tfds" and c.data.train.name == "imagenet2012"
    resnet, alexnet, colorize = (
        linear.LinearBenchmark(c, tasks.create(_config(f"configs/{name}.py")))
        for name in ("jigsaw_r50", "jigsaw_alexnet", "colorize_r50")
    )
    assert resnet.weight_decay == 1e-4 and alexnet.weight_decay == 5e-4
    assert resnet.input_size == 224 and alexnet.input_size == 227
    assert resnet.resize_short == 256 and alexnet.resize_short == 256
    assert resnet.augment == "random_resized_crop" and colorize.augment == "resize_crop"


def test_config_arguments(tmp_path):
    c = _config(f"configs/evals/linear.py:train={tmp_path},test={tmp_path}")
    assert c.data.train.source == c.data.test.source == "folder"
    c = _config("configs/evals/linear.py:tfds=cifar10,test_split=test")
    assert (c.data.train.name, c.data.test.split) == ("cifar10", "test")
    with pytest.raises(config_lib.ConfigError, match="test=PATH"):
        _config(f"configs/evals/places205_linear.py:train={tmp_path}")


def test_errors_name_value_and_key(weights, tmp_path):
    task = weights[0]
    with pytest.raises(config_lib.ConfigError, match=r"config.features.layers.*'fc7'"):
        linear.LinearBenchmark(_eval_config(**{"features.layers": "('res4','fc7')"}), task)
    with pytest.raises(config_lib.ConfigError, match=r"config.optim.batch_size=12 .*8 devices"):
        linear.LinearBenchmark(_eval_config(**{"optim.batch_size": 12}), task)
    with pytest.raises(config_lib.ConfigError, match="config.input.train_augment='jitter'"):
        linear.LinearBenchmark(_eval_config(**{"input.train_augment": "jitter"}), task)
    with pytest.raises(config_lib.ConfigError, match="config.head.bn_scale_shift='yes'"):
        linear.LinearBenchmark(_eval_config(**{"head.bn_scale_shift": "yes"}), task)
    with pytest.raises(config_lib.ConfigError, match="config.data.train.source='voc'"):
        linear.LinearBenchmark(_eval_config(**{"data.train.source": "voc"}), task)
    # A flat folder has no labels; the error names the split's config key and the path.
    flat = tmp_path / "flat"
    flat.mkdir()
    from PIL import Image

    Image.new("RGB", (8, 8)).save(flat / "a.png")
    config = _eval_config()
    config.data.train.source, config.data.train.path = "folder", str(flat)
    with pytest.raises(ValueError, match=r"config.data.train.path=.*have no label"):
        _evaluate(config, str(tmp_path / "run"), weights)
    config.data.train.path = str(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="config.data.train.path="):
        _evaluate(config, str(tmp_path / "run"), weights)


def test_pooled_features_come_from_features_module(weights):
    """The heads see exactly features.make_feature_fn's pooled taps (shared code path)."""
    c = _eval_config()
    task, trained = weights
    dims = features_lib.feature_dims(task, c.features, 32)
    fn = features_lib.make_feature_fn(task, c.features, 32)
    out = fn(features_lib.trunk_variables(trained.variables), jnp.zeros((2, 32, 32, 3), jnp.uint8))
    assert {k: v.shape[1] for k, v in out.items()} == dims
