"""The few-shot ridge probe: closed form against scikit-learn, shot sampling, config checks."""

import os

import numpy as np
import pytest
from sklearn.linear_model import Ridge

from ssl_jax import config_lib, evaluators, tasks
from ssl_jax.evals import probe

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("n,d", [(30, 50), (60, 8)])  # fewer and more rows than features
def test_ridge_predictions_match_sklearn(n, d):
    rng = np.random.default_rng(0)
    x, xt = rng.normal(size=(n, d)) + 3.0, rng.normal(size=(20, d)) + 3.0
    y = np.where(rng.integers(0, 4, n)[:, None] == np.arange(4), 1.0, -1.0)
    lambdas = (1e-3, 0.5, 10.0, 1e3)
    got = probe.ridge_predictions(x, y, xt, lambdas)
    for lam, pred in zip(lambdas, got, strict=True):
        ref = Ridge(alpha=lam, fit_intercept=True, solver="svd").fit(x, y).predict(xt)
        np.testing.assert_allclose(pred, ref, rtol=1e-7, atol=1e-8)


def test_fit_and_score_learns_separable_classes():
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(5, 16)) * 4
    labels = rng.integers(0, 5, 200)
    x = centres[labels] + rng.normal(size=(200, 16))
    onehot = (labels[:, None] == np.arange(5)).astype(np.int8)
    r = probe.fit_and_score(x[:50], onehot[:50], x[50:], onehot[50:], (0.01, 1.0, 100.0))
    assert r["top1"] > 0.9 and r["lambda"] in (0.01, 1.0, 100.0)
    assert len(r["val_top1"]) == 3
    # Random labels: chance level.
    shuffled = onehot[rng.permutation(200)]
    r = probe.fit_and_score(x[:50], shuffled[:50], x[50:], shuffled[50:], (1.0,))
    assert r["top1"] < 0.45


def test_sample_shots():
    labels = np.zeros((30, 3), np.int8)
    labels[np.arange(30), np.arange(30) % 3] = 1
    labels[-1] = [0, 0, 1]
    rows = probe.sample_shots(labels, 4, seed=0)
    assert len(rows) == 12 and (np.bincount(labels[rows].argmax(1)) == 4).all()
    np.testing.assert_array_equal(rows, probe.sample_shots(labels, 4, seed=0))
    assert len(probe.sample_shots(labels, 100, seed=0)) == 30  # all a class has


def test_probe_config_checks():
    config = config_lib.load_config(os.path.join(ROOT, "configs/jigsaw_r50.py"))
    task = tasks.create(config)
    attached = evaluators.attached(config, task)
    assert "probe" not in [label for label, _, _ in attached]  # off outside :runlocal
    with config.unlocked():
        config.evals.probe.every_steps = config.train.checkpoint_every
    with pytest.raises(config_lib.ConfigError, match=r"config.evals.probe.data.train.path"):
        evaluators.attached(config, task)
    with config.unlocked():
        config.evals.probe.every_steps = config.train.checkpoint_every + 1
    with pytest.raises(config_lib.ConfigError, match="config.evals.probe.every_steps.*multiple"):
        evaluators.attached(config, task)
    with config.unlocked():
        config.evals.probe.every_steps = -1
        config.evals.probe.data.train.path = config.evals.probe.data.test.path = "/data"
    ((label, every, probe_evaluator),) = evaluators.attached(config, task)
    assert (label, every) == ("probe", config.train.checkpoint_every)  # -1: every checkpoint
    assert isinstance(probe_evaluator, probe.Probe)
    local = config_lib.load_config(os.path.join(ROOT, "configs/colorize_r50.py:runlocal"))
    attached = {label: every for label, every, _ in evaluators.attached(local, tasks.create(local))}
    assert attached == {"probe": 3 * local.train.checkpoint_every, "samples": 128}
    assert local.evals.probe.data.train.source == "demo"
