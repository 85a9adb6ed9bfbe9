"""VOC07 linear SVMs and low-shot SVMs on frozen features (Goyal et al. 2019, FAIR's benchmark).

Protocol (PROTOCOLS.md, "VOC07 linear SVMs"):
- features are L2-normalised per row, x / (||x|| + 1e-5);
- per class, an L2-regularised squared-hinge linear SVM with the bias as a regularised extra
  feature of value 1 (liblinear intercept_scaling=1), class weights {+1: 2, -1: 1}, tol 1e-4;
- training labels: present (1) -> +1, absent (0) and difficult (-1) -> -1;
- the cost of each class is chosen from `COSTS` by 3-fold cross-validation (sklearn's unshuffled
  StratifiedKFold on that class's +-1 labels, so the folds follow the row order: VOC07 rows go
  in image-id order, as FAIR's, which svm_benchmark ensures), scored by non-interpolated AP
  (sklearn `average_precision_score` on the held-out decision values), mean over folds; the
  first cost in `COSTS` order reaching the best mean wins ties; the SVM is refit on all
  training rows;
- test AP is the all-points VOC AP (`voc07_ap`) with difficult rows removed; mAP is the mean over
  the classes that have test positives.

Edge cases (counted, never silent):
- a CV fold whose training part has no positives, or whose held-out part has none, is left out of
  that class's CV mean (sklearn would either fail to fit or return an AP of 0); if every fold is
  left out, the class uses the first cost and its `cv_ap` is None;
- a class without training positives is not trained: test_ap None, listed in "skipped";
- a class without test positives (after removing difficult rows) is trained but has test_ap None,
  is left out of the mAP, and is listed in "skipped".

Two solvers, one option: `solver="sklearn"` runs liblinear (sklearn LinearSVC, the reference) in
parallel over classes x costs x folds with joblib; `solver="jax"` solves all problems of one
cost at once on a shared Gram matrix (ssl_jax/evals/svm_jax.py).

Command line:
  python -m ssl_jax.evals.svm --train=train.npz --test=test.npz --out=results.json
      [--solver=sklearn|jax] [--costs=1e-3,0.1] [--n_jobs=N]
      [--low_shot_k=1,2,4 --samples=5 --low_shot_mode=voc07|places] [--class_names=a,b,...]
Each .npz holds `features` (N, D) and `labels` (N, C) in {1, 0, -1}. Exit code 2 on bad input.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time
import warnings
from collections.abc import Sequence

import numpy as np
from joblib import Parallel, delayed
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import average_precision_score
from sklearn.model_selection import StratifiedKFold
from sklearn.svm import LinearSVC

from ssl_jax import paths
from ssl_jax.evals import svm_jax

# The order matters: cost selection keeps the first best cost in this order.
COSTS: tuple[float, ...] = (
    1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 0.1, 1.0, 10.0, 100.0,
    *(0.5**k for k in range(4, 20)),
)  # fmt: skip
NUM_FOLDS = 3
CLASS_WEIGHT = {1: 2.0, -1: 1.0}
TOL = 1e-4
MAX_ITER = 2000  # liblinear iteration cap, as FAIR's benchmark
SOLVERS = ("sklearn", "jax")
LOW_SHOT_KS = (1, 2, 4, 8, 16, 32, 64, 96)
LOW_SHOT_MODES = ("voc07", "places")
NEGATIVES_PER_POSITIVE = 19  # VOC07 low-shot: k positives and 19k negatives per class


# ---------------------------------------------------------------------------------------------
# Average precision


def voc07_ap(scores: np.ndarray, labels: np.ndarray) -> float:
    """All-points VOC AP of one class, as VOCdevkit's VOCap and FAIR's benchmark.

    Args:
      scores: (N,) decision values, higher = more confident.
      labels: (N,) in {1, 0, -1}: present, absent, difficult. Difficult rows are removed.
    Returns:
      AP in [0, 1]: the area under the monotone (right-to-left running max) precision envelope,
      summed at every recall change. NaN if there are no positives.

    Ties: rows are ranked by a stable sort of -score, so tied rows keep their input order
    (MATLAB's `sort(-confidence)` in VOCdevkit is stable too); the result is deterministic.
    """
    scores = np.asarray(scores, np.float64).ravel()
    labels = np.asarray(labels).ravel()
    keep = labels != -1
    scores, labels = scores[keep], labels[keep]
    num_pos = int(np.sum(labels == 1))
    if num_pos == 0:
        return float("nan")
    order = np.argsort(-scores, kind="stable")
    tp = np.cumsum(labels[order] == 1)
    fp = np.cumsum(labels[order] != 1)
    rec = np.concatenate([[0.0], tp / num_pos, [1.0]])
    prec = np.concatenate([[0.0], tp / np.maximum(tp + fp, 1), [0.0]])
    prec = np.maximum.accumulate(prec[::-1])[::-1]
    change = np.nonzero(rec[1:] != rec[:-1])[0]
    return float(np.sum((rec[change + 1] - rec[change]) * prec[change + 1]))


def cv_ap(scores: np.ndarray, y: np.ndarray) -> float:
    """Non-interpolated AP for cross-validation: sklearn's `average_precision_score`.

    Args:
      scores: (N,) decision values; y: (N,) in {+1, -1}. Tied scores form one threshold.
    """

    return float(average_precision_score(y == 1, scores))


# ---------------------------------------------------------------------------------------------
# Input checks and preparation


def _check_split(features, labels, split: str) -> None:
    if features.ndim != 2:
        raise ValueError(
            f"{split} features must be (N, D); got shape {features.shape}. Flatten each "
            "example's feature map to one row."
        )
    if labels.ndim != 2:
        raise ValueError(
            f"{split} labels must be (N, C) in {{1, 0, -1}}; got shape {labels.shape}. Use one "
            "column per class (a single class is shape (N, 1))."
        )
    if features.shape[0] == 0:
        raise ValueError(f"the {split} split is empty (0 rows); pass at least one example.")
    if features.shape[0] != labels.shape[0]:
        raise ValueError(
            f"{split} features have {features.shape[0]} rows but {split} labels have "
            f"{labels.shape[0]}; they must describe the same examples in the same order."
        )
    bad = ~np.isin(labels, (1, 0, -1))
    if bad.any():
        raise ValueError(
            f"{split} labels contain {int(bad.sum())} value(s) outside {{1, 0, -1}} (e.g. "
            f"{labels[bad][0]!r}); use 1 = present, 0 = absent, -1 = difficult."
        )


def _check_pair(train_x, train_y, test_x, test_y) -> None:
    _check_split(train_x, train_y, "train")
    _check_split(test_x, test_y, "test")
    if train_x.shape[1] != test_x.shape[1]:
        raise ValueError(
            f"train features have D={train_x.shape[1]} but test features have "
            f"D={test_x.shape[1]}; extract both splits from the same layer."
        )
    if train_y.shape[1] != test_y.shape[1]:
        raise ValueError(
            f"train labels have C={train_y.shape[1]} classes but test labels have "
            f"C={test_y.shape[1]}; both splits need the same class columns."
        )


def l2_normalize(features: np.ndarray, split: str = "train", chunk: int = 4096) -> np.ndarray:
    """x / (||x|| + 1e-5) per row, as one float32 copy (a memmap is read once, by row chunks).

    Args:
      features: (N, D) any float dtype, may be an np.memmap.
      split: name used in the error message.
    Returns:
      (N, D) float32.
    Raises:
      ValueError if any row holds NaN or inf, naming how many rows and the split.
    """
    out = np.empty(features.shape, np.float32)
    bad_rows = 0
    first_bad = None
    for s in range(0, features.shape[0], chunk):
        block = np.asarray(features[s : s + chunk], np.float32)
        finite = np.isfinite(block).all(axis=1)
        if not finite.all():
            bad_rows += int((~finite).sum())
            first_bad = first_bad if first_bad is not None else s + int(np.argmin(finite))
        # float64 norms: sums of 9k squares lose digits in float32.
        norms = np.sqrt(np.einsum("ij,ij->i", block, block, dtype=np.float64))
        with np.errstate(invalid="ignore", over="ignore"):  # bad rows are reported below
            out[s : s + chunk] = block / (norms[:, None] + 1e-5).astype(np.float32)
    if bad_rows:
        raise ValueError(
            f"{split} features have {bad_rows} row(s) with NaN or inf (first at row {first_bad}); "
            "fix or drop those examples before evaluating."
        )
    return out


def _train_targets(labels: np.ndarray) -> np.ndarray:
    """{1, 0, -1} -> {+1, -1}: difficult counts as negative in training (FAIR's benchmark)."""
    return np.where(labels == 1, 1, -1).astype(np.int32)


def _check_options(costs, solver) -> tuple[float, ...]:
    if solver not in SOLVERS:
        raise ValueError(f"solver={solver!r} is not one of {SOLVERS}; set --solver / solver=.")
    costs = tuple(float(c) for c in costs)
    if not costs or any(not np.isfinite(c) or c <= 0 for c in costs):
        raise ValueError(f"costs={costs} must be a non-empty list of positive numbers (--costs).")
    return costs


def _class_names(class_names, num_classes: int) -> list[str]:
    if class_names is None:
        return [f"class_{c}" for c in range(num_classes)]
    names = list(class_names)
    if len(names) != num_classes:
        raise ValueError(
            f"class_names has {len(names)} names but the labels have {num_classes} columns; "
            "pass one name per label column (--class_names)."
        )
    return names


def _folds(y: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """sklearn's unshuffled StratifiedKFold(3) on one class's +-1 labels; folds without training
    or held-out positives are dropped (see module docstring)."""

    with warnings.catch_warnings():
        # Fewer positives than folds: sklearn warns and still splits; we drop empty folds below.
        warnings.simplefilter("ignore", UserWarning)
        splits = list(StratifiedKFold(NUM_FOLDS).split(np.zeros(len(y)), y))
    return [(tr, te) for tr, te in splits if (y[tr] == 1).any() and (y[te] == 1).any()]


def _n_jobs(n_jobs: int | None) -> int:
    return int(n_jobs) if n_jobs else (os.cpu_count() or 1)


# ---------------------------------------------------------------------------------------------
# sklearn / liblinear solver (the reference)


def _liblinear(cost: float):

    return LinearSVC(
        C=cost,
        class_weight=CLASS_WEIGHT,
        penalty="l2",
        loss="squared_hinge",
        dual=True,
        tol=TOL,
        max_iter=MAX_ITER,
        intercept_scaling=1.0,
        fit_intercept=True,
    )


def _fit_liblinear(x, rows, y, cost):
    """Fits one SVM on x[rows]; returns (w (D,), b, converged)."""

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        clf = _liblinear(cost).fit(x[rows] if rows is not None else x, y)
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    return clf.coef_[0].astype(np.float32), float(clf.intercept_[0]), converged


def _cv_task_sklearn(x, y, train_rows, test_rows, cost):
    w, b, converged = _fit_liblinear(x, train_rows, y[train_rows], cost)
    return cv_ap(x[test_rows] @ w + b, y[test_rows]), converged


def _fit_task_sklearn(x, rows, y, cost):
    return _fit_liblinear(x, rows, y, cost)


def _parallel(tasks, n_jobs):

    # loky memmaps the large shared feature array once instead of pickling it per task.
    return Parallel(n_jobs=_n_jobs(n_jobs))(delayed(f)(*a) for f, a in tasks)


# ---------------------------------------------------------------------------------------------
# Cross-validation and refit, both solvers


def _cv_matrix_sklearn(x, ys, folds, costs, n_jobs):
    """(C, len(costs)) mean held-out AP (NaN where no fold is usable); liblinear cap hits."""
    tasks, where = [], []
    for c, y in enumerate(ys):
        for j, cost in enumerate(costs):
            for tr, te in folds[c]:
                tasks.append((_cv_task_sklearn, (x, y, tr, te, cost)))
                where.append((c, j))
    out = _parallel(tasks, n_jobs)
    return _reduce_cv(out, where, len(ys), len(costs))


def _reduce_cv(out, where, num_classes, num_costs):
    sums = np.zeros((num_classes, num_costs))
    counts = np.zeros((num_classes, num_costs))
    not_converged = 0
    for (c, j), (ap, converged) in zip(where, out, strict=True):
        sums[c, j] += ap
        counts[c, j] += 1
        not_converged += not converged
    with np.errstate(invalid="ignore"):
        return sums / counts, not_converged


def _cv_matrix_jax(k, ys, folds, costs, tol):
    """Same as _cv_matrix_sklearn with the batched solver: one solve per cost, all classes x
    folds as masked problems on the shared trainval Gram matrix."""

    n = k.shape[0]
    ycols, masks, tests, where = [], [], [], []
    for c, y in enumerate(ys):
        for tr, te in folds[c]:
            m = np.zeros(n, np.float32)
            m[tr] = 1.0
            ycols.append(y)
            masks.append(m)
            tests.append(te)
            where.append(c)
    sums = np.zeros((len(ys), len(costs)))
    counts = np.zeros((len(ys), len(costs)))
    not_converged = 0
    if not ycols:
        return sums / np.where(counts > 0, counts, np.nan), 0
    y_mat = np.stack(ycols, 1).astype(np.float32)
    weight = np.where(y_mat > 0, CLASS_WEIGHT[1], CLASS_WEIGHT[-1]) * np.stack(masks, 1)
    for j, cost in enumerate(costs):
        _, o, info = svm_jax.solve(k, y_mat, cost * weight, tol=tol)
        o = np.asarray(o)
        not_converged += int((~info.converged).sum())
        for p, (c, te) in enumerate(zip(where, tests, strict=True)):
            sums[c, j] += cv_ap(o[te, p], y_mat[te, p])
            counts[c, j] += 1
    with np.errstate(invalid="ignore"):
        return sums / counts, not_converged


def _choose(cv_row: np.ndarray) -> int:
    """Index of the first best mean CV AP (NaN rows -> 0)."""
    if np.all(np.isnan(cv_row)):
        return 0
    return int(np.nanargmax(cv_row))  # argmax returns the first maximum


def _fit_many(x, k, ys, rows, costs_per_problem, solver, n_jobs, tol):
    """Fits one SVM per (y, rows, cost); returns W (D, P), b (P,), number not converged.

    Args:
      x: (N, D) normalised features; k: Gram matrix of x (jax solver) or None.
      ys: list of (N,) +-1 labels; rows: list of row-index arrays (None = all rows).
    """
    if solver == "sklearn":
        tasks = [
            (_fit_task_sklearn, (x, r, y if r is None else y[r], cost))
            for y, r, cost in zip(ys, rows, costs_per_problem, strict=True)
        ]
        out = _parallel(tasks, n_jobs)
        w = np.stack([o[0] for o in out], 1)
        b = np.array([o[1] for o in out], np.float32)
        return w, b, sum(not o[2] for o in out)

    n = x.shape[0]
    y_mat = np.stack(ys, 1).astype(np.float32)
    mask = np.zeros_like(y_mat)
    for p, r in enumerate(rows):
        mask[r if r is not None else slice(None), p] = 1.0
    weight = np.where(y_mat > 0, CLASS_WEIGHT[1], CLASS_WEIGHT[-1]) * mask
    cw = weight * np.asarray(costs_per_problem, np.float32)[None, :]
    beta, _, info = svm_jax.solve(k, y_mat, cw, tol=tol)
    w, b = svm_jax.primal_weights(x, beta)
    del n
    return w, b, int((~info.converged).sum())


# ---------------------------------------------------------------------------------------------
# Public API


def evaluate(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    test_features: np.ndarray,
    test_labels: np.ndarray,
    *,
    costs: Sequence[float] = COSTS,
    solver: str = "sklearn",
    class_names: Sequence[str] | None = None,
    n_jobs: int | None = None,
    jax_tol: float = 1e-5,
) -> dict:
    """The VOC07 SVM benchmark on one layer's features.

    Args:
      train_features: (N, D) float (may be an np.memmap); trainval.
      train_labels: (N, C) in {1, 0, -1}.
      test_features: (M, D); test_labels: (M, C) in {1, 0, -1}.
      costs: candidate costs, in tie-breaking order (first best wins).
      solver: "sklearn" (liblinear, the reference) or "jax" (batched Newton on a Gram matrix).
      class_names: C names; default class_0 ... .
      n_jobs: joblib workers for the sklearn solver; default all cores.
      jax_tol: relative gradient-norm tolerance of the jax solver. 1e-5: at 1e-4 the CV APs
        of real CIFAR-10 features were off by up to 0.003, enough to pick another cost for
        one class in ten (0.16 mAP points); 1e-5 agreed with liblinear (tests/test_svm_real).
    Returns:
      {"classes": [{"name", "cost", "cv_ap", "cv_aps" (per cost), "cv_folds", "test_ap",
        "train_positives", "test_positives"}], "mAP", "skipped": [{"name", "reason"}],
       "solver", "costs", "not_converged" (fits that hit the iteration cap), "seconds"}.
      Every AP is a fraction in [0, 1]; test_ap and cv_ap are None where undefined.
    """
    start = time.perf_counter()
    costs = _check_options(costs, solver)
    train_labels = np.asarray(train_labels)
    test_labels = np.asarray(test_labels)
    _check_pair(train_features, train_labels, test_features, test_labels)
    names = _class_names(class_names, train_labels.shape[1])
    x = l2_normalize(train_features, "train")
    xt = l2_normalize(test_features, "test")

    num_classes = train_labels.shape[1]
    ys = [_train_targets(train_labels[:, c]) for c in range(num_classes)]
    trained = [c for c in range(num_classes) if (ys[c] == 1).any()]
    folds = {c: _folds(ys[c]) for c in trained}
    k = None
    if solver == "jax":
        k = svm_jax.gram(x)
        cv, nc_cv = _cv_matrix_jax(k, [ys[c] for c in trained], [folds[c] for c in trained],
                                   costs, jax_tol)  # fmt: skip
    else:
        cv, nc_cv = _cv_matrix_sklearn(
            x, [ys[c] for c in trained], [folds[c] for c in trained], costs, n_jobs
        )
    chosen = [_choose(cv[i]) for i in range(len(trained))]
    w, b, nc_fit = _fit_many(
        x, k, [ys[c] for c in trained], [None] * len(trained),
        [costs[j] for j in chosen], solver, n_jobs, jax_tol,
    )  # fmt: skip
    scores = xt @ w + b if trained else np.zeros((len(xt), 0), np.float32)

    classes, skipped, aps = [], [], []
    for c in range(num_classes):
        entry = {
            "name": names[c],
            "train_positives": int((train_labels[:, c] == 1).sum()),
            "test_positives": int((test_labels[:, c] == 1).sum()),
            "cost": None,
            "cv_ap": None,
            "cv_aps": None,
            "cv_folds": 0,
            "test_ap": None,
        }
        if c not in trained:
            skipped.append({"name": names[c], "reason": "no training positives"})
            classes.append(entry)
            continue
        i = trained.index(c)
        entry["cost"] = costs[chosen[i]]
        entry["cv_folds"] = len(folds[c])
        entry["cv_aps"] = [None if np.isnan(v) else float(v) for v in cv[i]]
        entry["cv_ap"] = entry["cv_aps"][chosen[i]]
        if entry["test_positives"] == 0:
            skipped.append({"name": names[c], "reason": "no test positives"})
        else:
            entry["test_ap"] = voc07_ap(scores[:, i], test_labels[:, c])
            aps.append(entry["test_ap"])
        classes.append(entry)
    return {
        "classes": classes,
        "mAP": float(np.mean(aps)) if aps else None,
        "skipped": skipped,
        "solver": solver,
        "costs": list(costs),
        "not_converged": nc_cv + nc_fit,
        "seconds": time.perf_counter() - start,
    }


def sample_low_shot(
    train_labels: np.ndarray, k: int, sample: int, *, mode: str = "voc07", seed: int = 0
) -> list[np.ndarray]:
    """Training rows of one low-shot sample, per class.

    VOC07, as FAIR's extra_scripts/create_voc_low_shot_samples.py: per class, independently of
    the other classes, k positives (label 1) and 19k negatives (FAIR: (C - 1) k, 19k for VOC's
    20 classes), drawn without replacement; the negatives only from the rows where the class is
    absent (label 0), so a row that is difficult (-1) for a class is never drawn for it. All
    classes' positives are drawn first, then each class's negatives. Where a class has fewer
    than k positives or 19k absent rows, all of them are taken (FAIR's script stops with an
    error there).
    Places: k rows of each class (label 1), one shared training set for all classes, so every
    class gets the same rows. The draw is a function of (seed, k, sample) only, so it does not
    depend on which other k are evaluated.

    Returns:
      C arrays of sorted row indices into train_labels.
    """
    if mode not in LOW_SHOT_MODES:
        raise ValueError(f"mode={mode!r} is not one of {LOW_SHOT_MODES} (--low_shot_mode).")
    if k < 1:
        raise ValueError(f"low-shot k={k} must be >= 1 (--low_shot_k).")
    rng = np.random.default_rng([seed, k, sample])
    num_classes = train_labels.shape[1]
    pos_rows = [np.flatnonzero(train_labels[:, c] == 1) for c in range(num_classes)]
    picks = [rng.choice(r, min(k, len(r)), replace=False) for r in pos_rows]
    if mode == "places":
        shared = np.unique(np.concatenate(picks)) if picks else np.zeros(0, np.int64)
        return [shared] * num_classes
    out = []
    for c in range(num_classes):
        absent = np.flatnonzero(train_labels[:, c] == 0)
        negs = rng.choice(absent, min(NEGATIVES_PER_POSITIVE * k, len(absent)), replace=False)
        out.append(np.sort(np.concatenate([picks[c], negs])))
    return out


def low_shot(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    test_features: np.ndarray,
    test_labels: np.ndarray,
    *,
    ks: Sequence[int] = LOW_SHOT_KS,
    samples: int = 5,
    mode: str = "voc07",
    seed: int = 0,
    costs: Sequence[float] = COSTS,
    solver: str = "sklearn",
    class_names: Sequence[str] | None = None,
    n_jobs: int | None = None,
    jax_tol: float = 1e-5,
) -> dict:
    """Low-shot SVMs: every cost trained, no cross-validation, stats at the test-selected cost.

    Args: as `evaluate`, plus
      ks: positives per class (VOC07) or images per class (Places).
      samples: independent draws per k (`sample_low_shot`, seeded by (seed, k, sample)).
      mode: "voc07" or "places".
    Returns:
      {"selection": "test-selected", "mode", "solver", "costs", "samples", "seed",
       "ks": {str(k): {"cost", "mean", "min", "max", "std", "maps" (per sample at cost),
                       "mean_per_cost", "train_rows" (per sample, per class)}},
       "skipped": [{"name", "reason"}], "not_converged", "seconds"}.
      mAP over the classes with test positives; std with ddof=0 over samples.
    """
    start = time.perf_counter()
    costs = _check_options(costs, solver)
    if samples < 1:
        raise ValueError(f"samples={samples} must be >= 1 (--samples).")
    train_labels = np.asarray(train_labels)
    test_labels = np.asarray(test_labels)
    _check_pair(train_features, train_labels, test_features, test_labels)
    names = _class_names(class_names, train_labels.shape[1])
    x = l2_normalize(train_features, "train")
    xt = l2_normalize(test_features, "test")
    num_classes = train_labels.shape[1]
    scored = [c for c in range(num_classes) if (test_labels[:, c] == 1).any()]
    skipped = [
        {"name": names[c], "reason": "no test positives"}
        for c in range(num_classes)
        if c not in scored
    ]
    not_converged = 0
    result = {}
    for k in ks:
        maps = np.full((samples, len(costs)), np.nan)
        rows_used = []
        for s in range(samples):
            rows = sample_low_shot(train_labels, k, s, mode=mode, seed=seed)
            rows_used.append([len(r) for r in rows])
            union = np.unique(np.concatenate(rows))
            local = np.searchsorted(union, np.concatenate(rows)).astype(np.int64)
            splits = np.cumsum([len(r) for r in rows])[:-1]
            local_rows = np.split(local, splits)
            xs = x[union]
            ys_all = [_train_targets(train_labels[union, c]) for c in range(num_classes)]
            # A class with no positive in this sample cannot be trained; it scores AP of the
            # all-equal ranking (constant scores), i.e. its positive rate.
            probs = [
                (c, j)
                for c in scored
                for j in range(len(costs))
                if (ys_all[c][local_rows[c]] == 1).any()
            ]
            k_union = None
            if solver == "jax" and probs:
                k_union = svm_jax.gram(xs)
            w, b, nc = (
                _fit_many(
                    xs,
                    k_union,
                    [ys_all[c] for c, _ in probs],
                    [local_rows[c] for c, _ in probs],
                    [costs[j] for _, j in probs],
                    solver,
                    n_jobs,
                    jax_tol,
                )  # fmt: skip
                if probs
                else (np.zeros((x.shape[1], 0), np.float32), np.zeros(0, np.float32), 0)
            )
            not_converged += nc
            scores = xt @ w + b
            ap = np.zeros((num_classes, len(costs)))
            for c in scored:
                ap[c] = voc07_ap(np.zeros(len(xt)), test_labels[:, c])
            for p, (c, j) in enumerate(probs):
                ap[c, j] = voc07_ap(scores[:, p], test_labels[:, c])
            maps[s] = ap[scored].mean(0) if scored else np.nan
        mean_per_cost = maps.mean(0)
        best = _choose(mean_per_cost)
        at = maps[:, best]
        result[str(k)] = {
            "cost": costs[best],
            "mean": float(at.mean()),
            "min": float(at.min()),
            "max": float(at.max()),
            "std": float(at.std()),
            "maps": [float(v) for v in at],
            "mean_per_cost": [float(v) for v in mean_per_cost],
            "train_rows": rows_used,
        }
    return {
        "selection": "test-selected",
        "mode": mode,
        "solver": solver,
        "costs": list(costs),
        "samples": samples,
        "seed": seed,
        "ks": result,
        "skipped": skipped,
        "not_converged": not_converged,
        "seconds": time.perf_counter() - start,
    }


# ---------------------------------------------------------------------------------------------
# Command line


def _load_npz(path: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        data = np.load(io.BytesIO(paths.read_bytes(path)))
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read --{split}={path!r} as .npz: {e}") from e
    missing = [key for key in ("features", "labels") if key not in data]
    if missing:
        raise ValueError(
            f"--{split}={path!r} lacks {missing}; it needs `features` (N, D) and `labels` (N, C)."
        )
    return data["features"], data["labels"]


def _floats(text: str, flag: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError as e:
        raise ValueError(f"{flag}={text!r} must be comma-separated numbers") from e


def _ints(text: str, flag: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError as e:
        raise ValueError(f"{flag}={text!r} must be comma-separated integers") from e


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the benchmark from .npz files; returns the exit code (2 on bad input)."""
    parser = argparse.ArgumentParser(
        prog="python -m ssl_jax.evals.svm",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--train", required=True)
    parser.add_argument("--test", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--solver", default="sklearn", choices=SOLVERS)
    parser.add_argument("--costs", default=None, help="comma-separated; default the 26 COSTS")
    parser.add_argument("--n_jobs", type=int, default=None)
    parser.add_argument("--low_shot_k", default=None, help="e.g. 1,2,4; runs low-shot instead")
    parser.add_argument("--samples", type=int, default=5)
    parser.add_argument("--low_shot_mode", default="voc07", choices=LOW_SHOT_MODES)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--class_names", default=None, help="comma-separated, one per column")
    args = parser.parse_args(argv)
    try:
        costs = _floats(args.costs, "--costs") if args.costs else COSTS
        names = args.class_names.split(",") if args.class_names else None
        train_x, train_y = _load_npz(args.train, "train")
        test_x, test_y = _load_npz(args.test, "test")
        common = dict(costs=costs, solver=args.solver, class_names=names, n_jobs=args.n_jobs)
        if args.low_shot_k:
            ks = _ints(args.low_shot_k, "--low_shot_k")
            res = low_shot(train_x, train_y, test_x, test_y, ks=ks, samples=args.samples,
                           mode=args.low_shot_mode, seed=args.seed, **common)  # fmt: skip
        else:
            res = evaluate(train_x, train_y, test_x, test_y, **common)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    paths.write_json(args.out, res)
    if args.low_shot_k:
        print(f"low-shot {res['mode']} ({res['selection']}), solver {res['solver']}")
        print(f"{'k':>4} {'cost':>10} {'mean':>7} {'min':>7} {'max':>7} {'std':>7}")
        for k, r in res["ks"].items():
            print(f"{k:>4} {r['cost']:>10.3g} {100 * r['mean']:7.2f} {100 * r['min']:7.2f} "
                  f"{100 * r['max']:7.2f} {100 * r['std']:7.2f}")  # fmt: skip
    else:
        print(f"{'class':<16} {'cost':>10} {'cv AP':>7} {'test AP':>7}")
        for c in res["classes"]:
            cv = "-" if c["cv_ap"] is None else f"{100 * c['cv_ap']:.2f}"
            te = "-" if c["test_ap"] is None else f"{100 * c['test_ap']:.2f}"
            cost = "-" if c["cost"] is None else f"{c['cost']:.3g}"
            print(f"{c['name']:<16} {cost:>10} {cv:>7} {te:>7}")
        m = "-" if res["mAP"] is None else f"{100 * res['mAP']:.2f}"
        print(f"mAP {m} ({res['solver']}, {res['seconds']:.1f} s, skipped {len(res['skipped'])})")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
