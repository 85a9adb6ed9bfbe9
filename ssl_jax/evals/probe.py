"""A fast probe during pretraining: few-shot ridge regression on each frozen layer.

At chosen checkpoints the pooled taps (``ssl_jax.evals.features``, PROTOCOLS.md's table) of a
small labelled set are extracted and, per layer and per shot count, a closed-form ridge
regression from features to +-1 class targets is fitted (as big_vision's few-shot evaluator):
one eigendecomposition of the training Gram matrix serves every regularisation strength. The
strength is chosen on a held-out fifth of the training shots (its own eigendecomposition), then
the fit on all shots is scored on the test split. Logged as ``probe/LAYER/Kshot`` (top-1 in %)
to metrics.jsonl and TensorBoard; results under ``workdir/probe/step_N.json``.

Config (pretraining configs, ``config.evals.probe``): ``every_steps`` (0: off; a multiple of
``train.checkpoint_every``), ``data.train`` / ``data.test`` (labelled single-label sets,
``ssl_jax.evals.datasets.make_labelled``), ``shots`` (training images per class), ``lambdas``,
``layers``, ``size`` (input size, 0: 224 / 227), ``pooling`` (table | adaptive), ``batch_size``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from typing import Any

import jax
import ml_collections
import numpy as np

from ssl_jax import config_lib
from ssl_jax.evals import features as features_lib

_log = logging.getLogger(__name__)


def probe_config(every_steps: int = 0) -> ml_collections.ConfigDict:
    """Defaults of config.evals.probe (off until every_steps and the data are set)."""
    from ssl_jax import config_defaults

    p = ml_collections.ConfigDict()
    p.every_steps = every_steps
    p.data = ml_collections.ConfigDict()
    p.data.train = config_defaults.labelled_data("folder", "train")
    p.data.test = config_defaults.labelled_data("folder", "test")
    p.shots = (1, 5, 10)  # training images per class
    p.lambdas = tuple(float(2.0**e) for e in range(-10, 11, 2))
    p.layers = ()  # () = every tap of the pooling table
    p.size = 0  # 0: 224 (ResNet) / 227 (AlexNet)
    p.pooling = "table"  # table | adaptive (other input sizes)
    p.batch_size = 64
    p.seed = 0
    return p


def enabled(config: ml_collections.ConfigDict) -> bool:
    probe = (config.get("evals") or {}).get("probe")
    return bool(probe and probe.every_steps)


def check_config(config: ml_collections.ConfigDict) -> None:
    """Start-up checks of config.evals.probe; raises ConfigError."""
    if not enabled(config):
        return
    p = config.evals.probe
    if p.every_steps % config.train.checkpoint_every:
        raise config_lib.ConfigError(
            f"config.evals.probe.every_steps={p.every_steps} must be a multiple of "
            f"config.train.checkpoint_every={config.train.checkpoint_every}."
        )
    for which in ("train", "test"):
        d = p.data[which]
        if d.source in ("folder", "filelist", "vocdevkit") and not d.path:
            raise config_lib.ConfigError(
                f"config.evals.probe.data.{which}.source={d.source!r} needs "
                f"config.evals.probe.data.{which}.path (a labelled image folder or list)."
            )
    if not p.shots or min(p.shots) < 1:
        raise config_lib.ConfigError(f"config.evals.probe.shots={p.shots} must be >= 1 each.")
    if not p.lambdas or min(p.lambdas) <= 0:
        raise config_lib.ConfigError(f"config.evals.probe.lambdas={p.lambdas} must be > 0.")


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


def run(
    config: ml_collections.ConfigDict, variables: dict[str, Any], step: int, workdir: str
) -> dict[str, float]:
    """Runs the probe on a pretext model's variables; returns the scalars to log."""
    from ssl_jax.evals import datasets

    p = config.evals.probe
    start = time.perf_counter()
    run_config = ml_collections.ConfigDict(config.to_dict())
    run_config.features = ml_collections.ConfigDict(
        {"layers": tuple(p.layers), "pooling": p.pooling}
    )
    trunk = features_lib.trunk_variables(variables)
    scratch = os.path.join(workdir, "probe", "features")
    split = {}
    for which in ("train", "test"):
        dataset = datasets.make_labelled(
            p.data[which], config_key=f"config.evals.probe.data.{which}"
        )
        if dataset.labels.min() < 0 or (dataset.labels == 1).sum(1).max() != 1:
            raise ValueError(
                f"config.evals.probe.data.{which} ({dataset.name}) is not single-label; the "
                "probe needs one class per image (a folder of class subfolders or a list)."
            )
        out_dir = os.path.join(scratch, which)
        shutil.rmtree(out_dir, ignore_errors=True)  # new weights: always extract afresh
        features_lib.extract(
            run_config, trunk, dataset, out_dir, batch_size=p.batch_size, size=p.size or None,
            description=f"{workdir} step {step}",
        )  # fmt: skip
        split[which] = features_lib.load(out_dir)
    results = {"step": step, "layers": {}}
    scalars = {}
    if jax.process_index() == 0:
        train, test = split["train"], split["test"]
        ok_train, ok_test = np.flatnonzero(train["ok"]), np.flatnonzero(test["ok"])
        labels_train, labels_test = train["labels"][ok_train], test["labels"][ok_test]
        for layer in train["meta"]["layers"]:
            x_train = np.asarray(train["layers"][layer][ok_train], np.float64)
            x_test = np.asarray(test["layers"][layer][ok_test], np.float64)
            per_shot = {}
            for shots in p.shots:
                rows = sample_shots(labels_train, shots, p.seed + shots)
                r = fit_and_score(
                    x_train[rows], labels_train[rows], x_test, labels_test,
                    tuple(p.lambdas), p.seed,
                )  # fmt: skip
                per_shot[str(shots)] = r
                scalars[f"probe/{layer}/{shots}shot"] = 100.0 * r["top1"]
            results["layers"][layer] = per_shot
        results["seconds"] = time.perf_counter() - start
        with open(os.path.join(workdir, "probe", f"step_{step}.json"), "w") as f:
            json.dump(results, f, indent=1)
        _log.info(
            "probe at step %d (%.1f s): %s",
            step,
            results["seconds"],
            {k: round(v, 1) for k, v in scalars.items()},
        )
    return scalars
