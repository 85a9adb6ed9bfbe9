"""Transfer benchmarks from a pretraining workdir, through ``python -m ssl_jax.main``.

  python -m ssl_jax.main --config=configs/evals/voc07_svm.py --config.pretrained=W --workdir=E

An evaluation config names ``evaluation`` (one of EVALUATIONS), the weights (``pretrained``: a
pretraining workdir, its latest checkpoint or ``pretrained_step``; ``random_init`` for the same
trunk with fresh weights, the baseline), the labelled data (``data.train``, ``data.test``, read by
``ssl_jax.evals.datasets.make_labelled``) and the benchmark's settings (``svm``, ``low_shot``).
Features go to ``E/features/{train,test}`` (resumable; reused when the weights and data are the
same), results to ``E/results.json`` and a table to ``E/results.md``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any

import jax
import ml_collections
import numpy as np

from ssl_jax import config_lib
from ssl_jax.evals import features as features_lib

_log = logging.getLogger(__name__)

SVM_EVALUATIONS = ("voc07_svm", "voc07_lowshot", "places205_lowshot")
EVALUATIONS = (*SVM_EVALUATIONS, "linear")


def check_config(config: ml_collections.ConfigDict) -> None:
    """Raises ConfigError for an evaluation config that cannot run; before anything loads."""
    if config.evaluation not in EVALUATIONS:
        raise config_lib.ConfigError(
            f"config.evaluation={config.evaluation!r} is not one of {list(EVALUATIONS)}."
        )
    if config.evaluation == "linear":
        from ssl_jax.evals import linear

        linear.check_config(config)
        return
    if not config.pretrained:
        raise config_lib.ConfigError(
            "config.pretrained is empty: name the pretraining workdir to evaluate, "
            "--config.pretrained=/path/to/workdir (add --config.random_init=True for the same "
            "trunk with random weights)."
        )
    if not os.path.isfile(os.path.join(config.pretrained, "config.json")):
        raise config_lib.ConfigError(
            f"config.pretrained={config.pretrained!r} has no config.json: it is not a workdir "
            "written by `python -m ssl_jax.main`."
        )
    if config.svm.solver not in ("sklearn", "jax"):
        raise config_lib.ConfigError(
            f"config.svm.solver={config.svm.solver!r}; allowed: 'sklearn', 'jax'."
        )
    costs = tuple(config.svm.costs)
    if not costs or any(not float(c) > 0 for c in costs):
        raise config_lib.ConfigError(f"config.svm.costs={costs} must be positive numbers.")
    if config.features.batch_size % jax.device_count():
        raise config_lib.ConfigError(
            f"config.features.batch_size={config.features.batch_size} must be a multiple of the "
            f"{jax.device_count()} devices."
        )


def load_weights(config: ml_collections.ConfigDict):
    """(pretraining config, trunk variables, description) for config.pretrained."""
    from ssl_jax.train import trainer

    run_config = trainer.load_run_config(config.pretrained)
    if config.random_init:
        from ssl_jax import tasks

        pretext = tasks.build(run_config)
        rng = jax.random.PRNGKey(config.seed)
        variables = pretext.model.init(rng, pretext.example_inputs, train=False)
        description = f"random init (seed {config.seed}) of the trunk of {config.pretrained}"
        return run_config, features_lib.trunk_variables(variables), description, None
    step = None if config.pretrained_step < 0 else int(config.pretrained_step)
    _, step, variables = trainer.restore_variables(run_config, config.pretrained, step)
    description = f"{os.path.abspath(config.pretrained)} step {step}"
    return run_config, features_lib.trunk_variables(variables), description, step


def _split_features(config, run_config, variables, description, which: str, workdir: str):
    from ssl_jax.evals import datasets

    dataset = datasets.make_labelled(config.data[which], config_key=f"config.data.{which}")
    out_dir = os.path.join(workdir, "features", which)
    features_lib.extract(
        run_config,
        variables,
        dataset,
        out_dir,
        batch_size=config.features.batch_size,
        size=config.features.size or None,
        description=description,
    )
    return features_lib.load(out_dir)


def _usable(split: dict[str, Any], which: str) -> tuple[np.ndarray, int]:
    """Rows with a decoded image, and how many were left out."""
    ok = np.asarray(split["ok"], bool)
    skipped = int((~ok).sum())
    if skipped:
        _log.warning("%d %s images could not be decoded and are left out", skipped, which)
    return np.flatnonzero(ok), skipped


def evaluate(
    config: ml_collections.ConfigDict, workdir: str, weights: tuple | None = None
) -> dict[str, Any]:
    """Runs ``config.evaluation`` and writes workdir/results.json and results.md.

    Args:
      weights: (pretraining config, trunk variables, description, step) to evaluate instead of
        loading config.pretrained (evaluations attached to pretraining pass the live weights).
    """
    if config.evaluation == "linear":
        from ssl_jax.evals import linear

        if weights is None:
            check_config(config)
        return linear.evaluate(config, workdir, weights)
    from ssl_jax.evals import svm

    if weights is None:
        check_config(config)
    os.makedirs(workdir, exist_ok=True)
    start = time.perf_counter()
    run_config, variables, description, step = weights or load_weights(config)
    # The evaluation's feature settings (layers, pooling) on a copy of the pretraining config.
    run_config = ml_collections.ConfigDict(run_config.to_dict())
    run_config.features = config.features
    train = _split_features(config, run_config, variables, description, "train", workdir)
    test = _split_features(config, run_config, variables, description, "test", workdir)
    train_rows, train_skipped = _usable(train, "train")
    test_rows, test_skipped = _usable(test, "test")
    class_names = train["meta"]["class_names"]
    if test["meta"]["class_names"] != class_names:
        raise ValueError(
            f"Train and test classes differ: {class_names} vs {test['meta']['class_names']}; "
            "config.data.train and config.data.test must be the same label space."
        )
    costs = tuple(float(c) for c in config.svm.costs)
    layers = {}
    for name in train["meta"]["layers"]:
        _log.info("%s: layer %s (%d dims)", config.evaluation, name, train["meta"]["layers"][name])
        x_train = np.asarray(train["layers"][name][train_rows], np.float32)
        x_test = np.asarray(test["layers"][name][test_rows], np.float32)
        y_train, y_test = train["labels"][train_rows], test["labels"][test_rows]
        if config.evaluation == "voc07_svm":
            result = svm.evaluate(
                x_train, y_train, x_test, y_test,
                costs=costs, solver=config.svm.solver, class_names=class_names,
                n_jobs=config.svm.n_jobs,
            )  # fmt: skip
        else:
            result = svm.low_shot(
                x_train, y_train, x_test, y_test,
                ks=tuple(config.low_shot.ks), samples=config.low_shot.samples,
                mode="voc07" if config.evaluation == "voc07_lowshot" else "places",
                seed=config.seed, costs=costs, solver=config.svm.solver,
                class_names=class_names, n_jobs=config.svm.n_jobs,
            )  # fmt: skip
        result["dims"] = int(x_train.shape[1])
        layers[name] = result
    results = {
        "evaluation": config.evaluation,
        "weights": description,
        "pretrained": os.path.abspath(config.pretrained) if config.pretrained else None,
        "pretrained_step": step,
        "random_init": bool(config.random_init),
        "task": run_config.task,
        "model": run_config.model.to_dict(),
        "train": {"dataset": train["meta"]["dataset"], "images": int(len(train_rows)),
                  "skipped": train_skipped},
        "test": {"dataset": test["meta"]["dataset"], "images": int(len(test_rows)),
                 "skipped": test_skipped},
        "solver": config.svm.solver,
        "layers": layers,
        "seconds": time.perf_counter() - start,
        "config": config.to_dict(),
    }  # fmt: skip
    if jax.process_index() == 0:
        with open(os.path.join(workdir, "results.json"), "w") as f:
            json.dump(results, f, indent=1, default=_json_default)
        with open(os.path.join(workdir, "results.md"), "w") as f:
            f.write(markdown_table(results))
    _log.info("\n%s", markdown_table(results))
    return results


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value)} is not JSON serialisable")


def markdown_table(results: dict[str, Any]) -> str:
    """mAP (in %) per layer; for low-shot, one column per k (mean +- std over samples)."""
    head = f"{results['evaluation']}: {results['weights']}\n\n"
    layers = results["layers"]
    if results["evaluation"] == "voc07_svm":
        lines = ["| layer | dims | mAP |", "|---|---|---|"]
        for name, r in layers.items():
            lines.append(f"| {name} | {r['dims']} | {100 * r['mAP']:.2f} |")
        return head + "\n".join(lines) + "\n"
    ks = sorted({int(k) for r in layers.values() for k in r["ks"]})
    lines = [
        "| layer | dims | " + " | ".join(f"k={k}" for k in ks) + " |",
        "|---|---|" + "---|" * len(ks),
    ]
    for name, r in layers.items():
        cells = []
        for k in ks:
            s = r["ks"].get(str(k))
            cells.append(f"{100 * s['mean']:.2f} ± {100 * s['std']:.2f}" if s else "")
        lines.append(f"| {name} | {r['dims']} | " + " | ".join(cells) + " |")
    note = (
        "\nmAP (%) mean ± std over samples, at the cost with the best mean test mAP "
        "(test-selected).\n"
    )
    return head + "\n".join(lines) + "\n" + note


# ---------------------------------------------------------------------------------------------
# Evaluations attached to pretraining (config.evals of a pretraining config)


def _resolve_spec(spec: str) -> str:
    """A config spec relative to the working directory, else to the repository root."""
    path, arg = config_lib.split_spec(spec)
    if not os.path.exists(path):
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        candidate = os.path.join(root, path)
        if os.path.exists(candidate):
            path = candidate
    return path if arg is None else f"{path}:{arg}"


def attached(config: ml_collections.ConfigDict) -> dict[str, ml_collections.ConfigDict]:
    """The evaluation configs attached to a pretraining config, by name, checked at start-up.

    ``config.evals.NAME`` has ``every_steps`` (0: off; else run at checkpoints whose step is a
    multiple, and at the last step) and ``config`` (an evaluation config spec, e.g.
    ``configs/evals/voc07_svm.py:runlocal``); ``overrides`` (``key=value`` pairs separated by
    ``;``) sets its fields.
    """
    out = {}
    for name, entry in (config.get("evals") or {}).items():
        if not entry.get("every_steps"):
            continue
        if "config" not in entry or not entry.config:
            continue  # an in-training probe (ssl_jax.evals.probe) has no evaluation config
        if entry.every_steps % config.train.checkpoint_every:
            raise config_lib.ConfigError(
                f"config.evals.{name}.every_steps={entry.every_steps} must be a multiple of "
                f"config.train.checkpoint_every={config.train.checkpoint_every} (evaluations "
                "run on checkpointed weights)."
            )
        eval_config = config_lib.load_config(_resolve_spec(entry.config))
        overrides = [
            tuple(part.split("=", 1)) for part in entry.get("overrides", "").split(";") if part
        ]
        config_lib.apply_overrides(eval_config, overrides)
        if "evaluation" not in eval_config or eval_config.evaluation not in EVALUATIONS:
            raise config_lib.ConfigError(
                f"config.evals.{name}.config={entry.config!r} is not an evaluation config "
                f"(its evaluation must be one of {list(EVALUATIONS)})."
            )
        out[name] = eval_config
    return out


def during_training(
    config: ml_collections.ConfigDict,
    evaluations: dict[str, ml_collections.ConfigDict],
    variables: dict[str, Any],
    step: int,
    last: bool,
    workdir: str,
) -> dict[str, float]:
    """Runs the attached evaluations due at ``step``; returns scalars to log
    (``evals/NAME/LAYER``: mAP in %), results under workdir/evals/NAME/step_STEP."""
    scalars = {}
    for name, eval_config in evaluations.items():
        every = config.evals[name].every_steps
        if not (step % every == 0 or last):
            continue
        weights = (config, features_lib.trunk_variables(variables), f"{workdir} step {step}", step)
        out_dir = os.path.join(workdir, "evals", name, f"step_{step}")
        _log.info("evaluation %s at step %d -> %s", name, step, out_dir)
        results = evaluate(eval_config, out_dir, weights=weights)
        for layer, r in results["layers"].items():
            if "mAP" in r:
                scalars[f"evals/{name}/{layer}"] = 100.0 * float(r["mAP"])
            if "top1" in r:  # linear classifiers: top-1 in %
                scalars[f"evals/{name}/{layer}"] = float(r["top1"])
            for k, stats in r.get("ks", {}).items():
                scalars[f"evals/{name}/{layer}/k{k}"] = 100.0 * float(stats["mean"])
    return scalars
