"""Linear SVMs on frozen features: VOC07 per layer, and low-shot (VOC07, Places205).

  python -m ssl_jax.main --config=configs/evals/voc07_svm.py --config.pretrained=W --workdir=E

``evaluation`` is "voc07_svm" (PROTOCOLS.md, "VOC07 linear SVMs": costs by 3-fold CV, refit,
test AP), "voc07_lowshot" or "places205_lowshot" ("Low-shot": k per class, samples, results at
the test-selected cost). Features of ``data.train`` and ``data.test`` go to
``workdir/features/{train,test}`` (``ssl_jax.evals.features``; resumable, reused for the same
weights and data); the SVMs take a VOC set's rows in image-id order, as FAIR's benchmark,
whatever order its source stores (``svm_rows``). Results go to workdir/results.json and
results.md (mAP per layer, in %), and the metrics returned are that mAP per layer (``LAYER``,
and ``LAYER/kK`` for low-shot).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import ml_collections
import numpy as np

from ssl_jax import config_lib, paths
from ssl_jax.evals import base, svm
from ssl_jax.evals import features as features_lib
from ssl_jax.pretext import Pretext
from ssl_jax.train import preemption

_log = logging.getLogger(__name__)

EVALUATIONS = ("voc07_svm", "voc07_lowshot", "places205_lowshot")


def defaults(evaluation: str = "voc07_svm") -> ml_collections.ConfigDict:
    """The benchmark's fields at PROTOCOLS.md's values (VOC07 from TFDS)."""
    c = base.evaluator_config(evaluation)
    c.features = ml_collections.ConfigDict()
    c.features.layers = ()  # () = every tap of the trunk's pooling table
    c.features.batch_size = 64
    c.features.size = 0  # 0: 224 (ResNet) / 227 (AlexNet), as PROTOCOLS.md
    c.features.pooling = "table"  # table | adaptive (other input sizes)

    c.data = ml_collections.ConfigDict()
    c.data.train = base.labelled_split("voc07_tfds", "trainval")
    c.data.test = base.labelled_split("voc07_tfds", "test")

    c.svm = ml_collections.ConfigDict()
    c.svm.solver = "sklearn"  # sklearn (liblinear, the reference) | jax (batched, accelerator)
    c.svm.costs = tuple(svm.COSTS)
    c.svm.n_jobs = -1  # sklearn solver: parallel fits (-1: every core)

    c.low_shot = ml_collections.ConfigDict()
    c.low_shot.ks = (1, 2, 4, 8, 16, 32, 64, 96)
    c.low_shot.samples = 5
    return c


ARGS = dict(runlocal=False, solver="sklearn", vocdevkit="", train="", test="")


def apply_args(c: ml_collections.ConfigDict, arg: ml_collections.ConfigDict) -> None:
    """The config arguments: ``solver=jax``, ``vocdevkit=PATH`` (VOC2007 from a VOCdevkit),
    ``train=DIR,test=DIR`` (single-label image folders), ``runlocal`` (the demo photos)."""
    c.svm.solver = arg.solver
    if arg.vocdevkit:
        c.data.train = base.labelled_split("vocdevkit", "trainval", arg.vocdevkit)
        c.data.test = base.labelled_split("vocdevkit", "test", arg.vocdevkit)
    if bool(arg.train) != bool(arg.test):
        raise config_lib.ConfigError(
            f"Give both train=DIR and test=DIR as config arguments, not only one "
            f"(got train={arg.train!r}, test={arg.test!r})."
        )
    if arg.train:
        c.data.train = base.labelled_split("folder", "train", arg.train)
        c.data.test = base.labelled_split("folder", "test", arg.test)
    if arg.runlocal:
        runlocal(c)


def runlocal(c: ml_collections.ConfigDict) -> None:
    """The built-in demo images as labelled data (which photo a crop shows: 120 crops to train,
    the next 120 to test), a few costs."""
    c.data.train, c.data.test = demo_splits()
    c.features.batch_size = 16
    c.svm.costs = (1e-2, 0.1, 1.0, 10.0)
    c.low_shot.ks = (1, 2, 4)
    c.low_shot.samples = 3


def demo_splits(per_split: int = 120) -> tuple[ml_collections.ConfigDict, ...]:
    """Train and test splits of the demo photos: crops [0, n) and [n, 2n)."""
    train = base.labelled_split("demo", "train")
    train.demo_size = per_split
    test = base.labelled_split("demo", "test")
    test.demo_size, test.first = 2 * per_split, per_split
    return train, test


class SvmBenchmark:
    """VOC07-protocol SVMs or low-shot SVMs on every frozen layer (``ssl_jax.evals.base``)."""

    def __init__(self, config: ml_collections.ConfigDict, task: Pretext):
        if config.evaluation not in EVALUATIONS:
            raise config_lib.ConfigError(
                f"config.evaluation={config.evaluation!r}; this benchmark runs {EVALUATIONS}."
            )
        if config.svm.solver not in svm.SOLVERS:
            raise config_lib.ConfigError(
                f"config.svm.solver={config.svm.solver!r}; allowed: {', '.join(svm.SOLVERS)}."
            )
        costs = tuple(config.svm.costs)
        if not costs or any(not float(c) > 0 for c in costs):
            raise config_lib.ConfigError(f"config.svm.costs={costs} must be positive numbers.")
        features_lib.check_config(config.features, task.config.model)
        base.check_splits(config)
        self.config, self.task = config, task

    def _features(self, which: str, weights: base.Weights, workdir: str):
        from ssl_jax.data import labelled  # TensorFlow: only where data is read

        dataset = labelled.make_labelled(self.config.data[which], config_key=f"config.data.{which}")
        out_dir = paths.join(workdir, "features", which)
        features_lib.extract(
            self.task,
            self.config.features,
            features_lib.trunk_variables(weights.variables),
            dataset,
            out_dir,
            batch_size=self.config.features.batch_size,
            size=self.config.features.size or None,
            description=weights.description,
        )
        return features_lib.load(out_dir)

    def run(self, weights: base.Weights, workdir: str) -> dict[str, float]:
        config = self.config
        start = time.perf_counter()
        train = self._features("train", weights, workdir)
        test = self._features("test", weights, workdir)
        train_rows, train_skipped = svm_rows(train, "train")
        test_rows, test_skipped = svm_rows(test, "test")
        class_names = train.meta["class_names"]
        if test.meta["class_names"] != class_names:
            raise ValueError(
                f"Train and test classes differ: {class_names} vs {test.meta['class_names']}; "
                "config.data.train and config.data.test must be the same label space."
            )
        # liblinear fits on the host, without collectives: on a pod process 0 alone fits the
        # SVMs and writes the results, and the others read them back, rather than every process
        # fitting every SVM. Every process still takes part in each layer's preemption check.
        fits_here = config.svm.solver != "sklearn" or base.is_leader()
        costs = tuple(float(c) for c in config.svm.costs)
        layers = {}
        for name, dims in train.meta["layers"].items():
            preemption.check(f"before the SVMs of layer {name}; features saved in {workdir}")
            if not fits_here:
                continue
            _log.info("%s: layer %s (%d dims)", config.evaluation, name, dims)
            x_train = train.layer(name)[train_rows]
            x_test = test.layer(name)[test_rows]
            y_train, y_test = train.labels[train_rows], test.labels[test_rows]
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
        if not fits_here:
            base.barrier(f"results {workdir}")
            return scalars(paths.read_json(paths.join(workdir, base.RESULTS_FILE)))
        results = {
            **base.results_header(config, self.task, weights),
            "train": {"dataset": train.meta["dataset"], "images": int(len(train_rows)),
                      "skipped": train_skipped},
            "test": {"dataset": test.meta["dataset"], "images": int(len(test_rows)),
                     "skipped": test_skipped},
            "solver": config.svm.solver,
            "layers": layers,
            "seconds": time.perf_counter() - start,
            "config": config.to_dict(),
        }  # fmt: skip
        table = markdown_table(results)
        base.write_results(workdir, results, table)
        _log.info("\n%s", table)
        return scalars(results)


def scalars(results: dict[str, Any]) -> dict[str, float]:
    """The numbers an attached run logs, in %: mAP per layer, or the mean per layer and k."""
    out = {}
    for name, result in results["layers"].items():
        if "ks" in result:
            for k, stats in result["ks"].items():
                out[f"{name}/k{k}"] = 100.0 * float(stats["mean"])
        else:
            out[name] = 100.0 * float(result["mAP"])
    return out


def svm_rows(stored: features_lib.Stored, which: str) -> tuple[np.ndarray, int]:
    """The stored rows the SVMs take, in their order, and how many were left out.

    Rows with a decoded image; a VOC set's in image-id order, whatever order the features were
    stored in (``ssl_jax.data.labelled.svm_row_order``: FAIR's order, on which the unshuffled
    CV folds and the low-shot draws depend).

    Returns:
        (rows (M,) int64 positions into the stored rows, number of undecodable images).
    """
    from ssl_jax.data import labelled  # TensorFlow: only where data is read

    ok = np.asarray(stored.ok, bool)
    skipped = int((~ok).sum())
    if skipped:
        _log.warning("%d %s images could not be decoded and are left out", skipped, which)
    order = labelled.svm_row_order(stored.meta["dataset"], stored.ids)
    return order[ok[order]], skipped


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
