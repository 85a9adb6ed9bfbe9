"""A fast probe during pretraining: few-shot ridge regression on each frozen layer.

At chosen checkpoints the pooled taps (``ssl_jax.evals.features``, PROTOCOLS.md's table) of a
small labelled set are extracted and, per layer and per shot count, a closed-form ridge
regression from features to +-1 class targets is fitted (as big_vision's few-shot evaluator):
one eigendecomposition of the training Gram matrix serves every regularisation strength. The
strength is chosen on a held-out fifth of the training shots (its own eigendecomposition), then
the fit on all shots is scored on the test split. Metrics ``LAYER/Kshot`` (top-1 in %), logged as
``probe/LAYER/Kshot`` when attached as ``config.evals.probe``; results.json in its workdir.

Config (``defaults``): ``data.train`` / ``data.test`` (single-label sets, ``labelled_split``),
``shots`` (training images per class), ``lambdas``, ``features`` (layers, size (0: 224 / 227),
pooling (table | adaptive), batch_size).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import ml_collections
import numpy as np

from ssl_jax import config_lib, paths
from ssl_jax.evals import base
from ssl_jax.evals import features as features_lib
from ssl_jax.pretext import Pretext

_log = logging.getLogger(__name__)


def defaults(every_steps: int = 0) -> ml_collections.ConfigDict:
    """The probe's fields (off until every_steps and the data are set)."""
    p = base.evaluator_config("probe")
    p.every_steps = every_steps
    p.data = ml_collections.ConfigDict()
    p.data.train = base.labelled_split("folder", "train")
    p.data.test = base.labelled_split("folder", "test")
    p.shots = (1, 5, 10)  # training images per class
    p.lambdas = tuple(float(2.0**e) for e in range(-10, 11, 2))
    p.features = ml_collections.ConfigDict()
    p.features.layers = ()  # () = every tap of the pooling table
    p.features.size = 0  # 0: 224 (ResNet) / 227 (AlexNet)
    p.features.pooling = "table"  # table | adaptive (other input sizes)
    p.features.batch_size = 64
    return p


def sample_shots(labels: np.ndarray, shots: int, seed: int) -> np.ndarray:
    """Rows with ``shots`` images per class (fewer where a class has fewer), sorted."""
    rng = np.random.default_rng(seed)
    rows = []
    for c in range(labels.shape[1]):
        members = np.flatnonzero(labels[:, c] == 1)
        rows.append(rng.choice(members, min(shots, len(members)), replace=False))
    return np.sort(np.concatenate(rows))


def _eig(x: np.ndarray):
    """Eigendecomposition of the Gram matrix of centred rows x (n, d), float64."""
    gram = x @ x.T
    values, vectors = np.linalg.eigh(gram)
    return np.maximum(values, 0.0), vectors


def ridge_predictions(
    x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, lambdas
) -> np.ndarray:
    """Test predictions (len(lambdas), m, C) of ridge regression for every lambda.

    W = X^T (X X^T + lambda I)^-1 Y on mean-centred features and targets (the intercept is the
    mean target); with X X^T = V S V^T, (X X^T + lambda I)^-1 = V (S + lambda)^-1 V^T, so one
    eigendecomposition serves every lambda.
    """
    x_train = np.asarray(x_train, np.float64)
    mean = x_train.mean(0)
    xc = x_train - mean
    y_mean = y_train.mean(0)
    values, vectors = _eig(xc)
    projected = vectors.T @ (y_train - y_mean)  # (n, C)
    cross = (np.asarray(x_test, np.float64) - mean) @ xc.T @ vectors  # (m, n)
    out = []
    for lam in lambdas:
        out.append(cross @ (projected / (values + lam)[:, None]) + y_mean)
    return np.stack(out)


def fit_and_score(
    x_train: np.ndarray,
    labels_train: np.ndarray,
    x_test: np.ndarray,
    labels_test: np.ndarray,
    lambdas,
    seed: int = 0,
) -> dict[str, Any]:
    """Ridge few-shot accuracy: lambda chosen on a held-out fifth of the training rows.

    Args:
      x_train: (n, D); labels_train: (n, C) one-hot in {1, 0}; likewise the test split.

    Returns:
      {"top1": test accuracy at the chosen lambda, "lambda", "val_top1" per lambda}.
    """
    targets = np.where(labels_train == 1, 1.0, -1.0)
    truth = np.argmax(labels_test, 1)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(x_train))
    held = order[: max(1, len(order) // 5)]
    kept = order[len(held) :]
    if len(kept) >= 2:
        val = ridge_predictions(x_train[kept], targets[kept], x_train[held], lambdas)
        val_top1 = (val.argmax(-1) == np.argmax(labels_train[held], 1)).mean(-1)
        best = int(np.argmax(val_top1))  # the first best: the smallest such lambda
    else:
        val_top1, best = np.full(len(lambdas), np.nan), len(lambdas) // 2
    test = ridge_predictions(x_train, targets, x_test, [lambdas[best]])[0]
    return {
        "top1": float((test.argmax(-1) == truth).mean()),
        "lambda": float(lambdas[best]),
        "val_top1": [float(v) for v in val_top1],
    }


class Probe:
    """The few-shot ridge probe (``ssl_jax.evals.base``)."""

    def __init__(self, config: ml_collections.ConfigDict, task: Pretext):
        base.check_splits(config)
        if not config.shots or min(config.shots) < 1:
            raise config_lib.ConfigError(f"config.shots={config.shots} must be >= 1 each.")
        if not config.lambdas or min(config.lambdas) <= 0:
            raise config_lib.ConfigError(f"config.lambdas={config.lambdas} must be > 0.")
        features_lib.check_config(config.features, task.config.model)
        self.config, self.task = config, task

    def run(self, weights: base.Weights, workdir: str) -> dict[str, float]:
        from ssl_jax.data import labelled  # TensorFlow: only where data is read

        p = self.config
        start = time.perf_counter()
        trunk = features_lib.trunk_variables(weights.variables)
        split = {}
        for which in ("train", "test"):
            key = f"config.data.{which}"
            dataset = labelled.make_labelled(p.data[which], config_key=key)
            dataset.check_single_label(key)
            out_dir = paths.join(workdir, "features", which)
            features_lib.extract(
                self.task, p.features, trunk, dataset, out_dir,
                batch_size=p.features.batch_size, size=p.features.size or None,
                description=weights.description,
            )  # fmt: skip
            split[which] = features_lib.load(out_dir)
        train, test = split["train"], split["test"]
        ok_train, ok_test = np.flatnonzero(train.ok), np.flatnonzero(test.ok)
        labels_train, labels_test = train.labels[ok_train], test.labels[ok_test]
        results: dict[str, Any] = {"step": weights.step, "weights": weights.description}
        results["layers"], metrics = {}, {}
        for layer in train.meta["layers"]:
            x_train = np.asarray(train.layer(layer)[ok_train], np.float64)
            x_test = np.asarray(test.layer(layer)[ok_test], np.float64)
            per_shot = {}
            for shots in p.shots:
                rows = sample_shots(labels_train, shots, p.seed + shots)
                r = fit_and_score(
                    x_train[rows], labels_train[rows], x_test, labels_test,
                    tuple(p.lambdas), p.seed,
                )  # fmt: skip
                per_shot[str(shots)] = r
                metrics[f"{layer}/{shots}shot"] = 100.0 * r["top1"]
            results["layers"][layer] = per_shot
        base.barrier(f"probe features {workdir}")  # every process has read them
        if base.is_leader():  # transient: only the scores are kept
            paths.rmtree(paths.join(workdir, "features"), missing_ok=True)
        results["seconds"] = time.perf_counter() - start
        table = ["| layer | " + " | ".join(f"{k}-shot" for k in p.shots) + " |"]
        table.append("|---|" + "---|" * len(p.shots))
        for layer, per_shot in results["layers"].items():
            cells = " | ".join(f"{100 * per_shot[str(k)]['top1']:.1f}" for k in p.shots)
            table.append(f"| {layer} | {cells} |")
        base.write_results(workdir, results, "\n".join(table) + "\n")
        _log.info(
            "probe at step %s (%.1f s): %s",
            weights.step,
            results["seconds"],
            {k: round(v, 1) for k, v in metrics.items()},
        )
        return metrics
