"""The Jigsaw task module: siamese network shapes, taps, loss, and the optimizer's decay mask."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from ssl_jax import config_lib, tasks
from ssl_jax.jigsaw import task as jigsaw_task
from ssl_jax.train import optim

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


def build(name, *overrides):
    c = config_lib.load_config(os.path.join(ROOT, "configs", name) + ":runlocal")
    c = config_lib.apply_overrides(c, list(overrides))
    task = tasks.create(c)
    task.fit(None)
    return c, task


@pytest.mark.parametrize(
    "name,overrides,taps",
    [
        (
            "jigsaw_r50.py",
            [("model.depth", "18"), ("model.width", "0.0625")],
            ("conv1", "res2", "res3", "res4", "res5"),
        ),
        (
            "jigsaw_alexnet.py",
            [("model.width", "0.125")],
            ("conv1", "conv2", "conv3", "conv4", "conv5"),
        ),
    ],
)
def test_siamese_network(name, overrides, taps):
    c, pretext = build(name, *overrides, ("optim.batch_size", "16"), ("model.bn_group_size", "8"))
    images = jax.random.randint(
        jax.random.PRNGKey(0), (16, c.input.crop, c.input.crop, 3), 0, 256
    ).astype(jnp.uint8)
    tiles, labels = pretext.prepare(jax.random.PRNGKey(1), {"image": images})
    assert tiles.shape == (16, 9, c.jigsaw.tile, c.jigsaw.tile, 3)
    variables = pretext.model.init(jax.random.PRNGKey(2), pretext.example_inputs, train=False)
    (logits, tap_values), _ = pretext.model.apply(
        variables, tiles, train=True, mutable=["batch_stats"]
    )
    assert logits.shape == (16, c.jigsaw.num_perms) and logits.dtype == jnp.float32
    assert tuple(tap_values) == taps
    assert all(v.shape[0] == 16 * 9 for v in tap_values.values())
    loss, metrics = pretext.loss(logits, labels)
    assert abs(float(loss) - np.log(c.jigsaw.num_perms)) < 1.5
    assert set(metrics) == {"loss", "top1"}
    # Head layers as PROTOCOLS.md: per-tile fc (+BN), optional hidden fc, classifier.
    head = set(variables["params"]) - {"trunk"}
    expected = {"tile_fc", "tile_bn", "classifier"}
    if c.jigsaw.hidden_features:
        expected |= {"hidden_fc", "hidden_bn"}
    assert head == expected
    assert variables["params"]["classifier"]["kernel"].shape == (
        9 * c.jigsaw.tile_features if not c.jigsaw.hidden_features else c.jigsaw.hidden_features,
        c.jigsaw.num_perms,
    )
    # Weight decay reaches every kernel and no BatchNorm parameter.
    mask = traverse_util.flatten_dict(
        optim.decay_mask(variables["params"], variables["batch_stats"])
    )
    bn_modules = {p[:-1] for p in traverse_util.flatten_dict(variables["batch_stats"])}
    assert bn_modules
    for path, decays in mask.items():
        assert decays == (path[:-1] not in bn_modules), path
        if path[-1] == "kernel":
            assert decays


def test_paper_head_widths():
    r50 = config_lib.load_config(os.path.join(ROOT, "configs", "jigsaw_r50.py"))
    alex = config_lib.load_config(os.path.join(ROOT, "configs", "jigsaw_alexnet.py"))
    assert (r50.jigsaw.tile_features, r50.jigsaw.hidden_features) == (1000, 0)
    assert (alex.jigsaw.tile_features, alex.jigsaw.hidden_features) == (1024, 4096)


def test_permutation_file(tmp_path):
    perms = np.stack([np.random.default_rng(i).permutation(9) for i in range(5)]) + 1
    path = tmp_path / "perms.npy"
    np.save(path, perms)
    c = config_lib.load_config(os.path.join(ROOT, "configs", "jigsaw_r50.py"))
    config_lib.apply_overrides(c, [("jigsaw.perm_file", str(path)), ("jigsaw.num_perms", "5")])
    np.testing.assert_array_equal(jigsaw_task.load_permutation_set(c.jigsaw), perms - 1)
    config_lib.apply_overrides(c, [("jigsaw.num_perms", "6")])
    with pytest.raises(config_lib.ConfigError, match="holds 5 permutations"):
        jigsaw_task.load_permutation_set(c.jigsaw)
