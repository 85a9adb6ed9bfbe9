"""The SVM protocol on real features: CIFAR-10 images through a Jigsaw checkpoint and through a
random-init trunk (slow: a short pretraining run, feature extraction and the CV grid).

The sklearn path must reproduce the straight implementation written in tests/test_svm.py
(LinearSVC + 3-fold StratifiedKFold + AP) in chosen costs and test APs; the jax path must match
the sklearn path's mAP within 0.1 points and its chosen cost for at least 90% of classes.
"""

import os
import warnings

import jax
import numpy as np
import pytest
from test_svm import straight_protocol

from ssl_jax import config_lib
from ssl_jax import main as main_lib
from ssl_jax.data import labelled
from ssl_jax.evals import features as F
from ssl_jax.evals import svm

pytestmark = pytest.mark.slow

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
COSTS = (1e-4, 1e-2, 0.0625, 0.5, 1.0, 10.0)


@pytest.fixture(scope="module")
def cifar_features(cifar10_dir, tmp_path_factory):
    """{"jigsaw": (train_x, train_y, test_x, test_y), "random": ...} at res3 and pool5."""
    workdir = str(tmp_path_factory.mktemp("jigsaw_cifar"))
    spec = f"configs/jigsaw_r50.py:runlocal,depth=18,width=0.125,folder={cifar10_dir}/train"
    rc = main_lib.main(
        [
            f"--config={os.path.join(ROOT, spec)}",
            f"--workdir={workdir}",
            "--config.train.progress_bar=False",
            "--config.train.log_every=10",
            "--config.train.checkpoint_every=20",
            "--config.train.stop_after_steps=20",
            "--config.evals.probe.every_steps=0",
        ]
    )
    assert rc == 0
    from ssl_jax.train import state as state_lib

    features = {"layers": ("res3", "pool5"), "pooling": "adaptive"}
    _, pretext, _, trained = state_lib.restore_variables(workdir)
    random = pretext.model.init(jax.random.PRNGKey(1), pretext.example_inputs, train=False)
    train = labelled.single_label("folder", os.path.join(cifar10_dir, "train"))
    test = labelled.single_label("folder", os.path.join(cifar10_dir, "test"))
    train = train.subset(0, 600)
    test = test.subset(0, 400)
    out = {}
    for name, variables in (("jigsaw", trained), ("random", random)):
        split = {}
        for which, dataset in (("train", train), ("test", test)):
            d = str(tmp_path_factory.mktemp(f"{name}_{which}"))
            trunk = F.trunk_variables(variables)
            F.extract(pretext, features, trunk, dataset, d, batch_size=40, size=64)
            split[which] = F.load(d)
        for layer in ("res3", "pool5"):
            out[(name, layer)] = (
                split["train"].layer(layer), split["train"].labels,
                split["test"].layer(layer), split["test"].labels,
            )  # fmt: skip
    return out


@pytest.mark.parametrize("layer", ["res3", "pool5"])
@pytest.mark.parametrize("weights", ["jigsaw", "random"])
def test_real_features_all_paths_agree(cifar_features, weights, layer):
    data = cifar_features[(weights, layer)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = straight_protocol(*data, COSTS)
    skl = svm.evaluate(*data, costs=COSTS, solver="sklearn")
    assert [c["cost"] for c in skl["classes"]] == [c for c, _ in ref]
    for c, (_, ap) in zip(skl["classes"], ref, strict=True):
        assert c["test_ap"] == pytest.approx(ap, abs=1e-6)
    jx = svm.evaluate(*data, costs=COSTS, solver="jax")
    assert abs(jx["mAP"] - skl["mAP"]) <= 0.001, (jx["mAP"], skl["mAP"])
    same = [a["cost"] == b["cost"] for a, b in zip(jx["classes"], skl["classes"], strict=True)]
    assert np.mean(same) >= 0.9
    assert 0.1 < skl["mAP"] < 1.0  # ten classes: chance is about 0.1


def test_config_loads():
    config_lib.load_config(os.path.join(ROOT, "configs/evals/voc07_svm.py"))
