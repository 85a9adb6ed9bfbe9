"""Times the VOC07 SVM protocol three ways on the same features: the reference, sklearn, jax.

Usage:
  python benchmarks/svm.py [--train train.npz --test test.npz] [--classes N] [--costs a,b,...]
      [--n_train 5011 --n_test 4952 --dim 9216] [--skip_reference] [--solvers sklearn,jax]
      [--out FILE]

The protocol is the full one (PROTOCOLS.md "VOC07 linear SVMs"): per class, every cost with
3-fold CV (unshuffled StratifiedKFold, non-interpolated AP), the first best cost, a refit on all
training rows, and the all-points VOC AP on test.
- reference: FAIR's benchmark's way, one liblinear fit (sklearn LinearSVC) at a time in one
  process, written out here independently of the library;
- sklearn: `ssl_jax.evals.svm.evaluate(solver="sklearn")`, liblinear fits in parallel with joblib
  over all cores;
- jax: `ssl_jax.evals.svm.evaluate(solver="jax")`, all classes x folds of one cost at once on a
  shared Gram matrix (jit compilation included in its time).
--classes N keeps the first N classes (all three ways see the same subset); --costs keeps a
subset of the 26 costs. What was run is printed and written, never extrapolated.

Features: --train/--test .npz with `features` (N, D) and `labels` (N, C) in {1, 0, -1}; without
them a synthetic VOC-like set is generated (seed 0): 20 classes driven by a 64-d latent code,
positive rates spread over 2-20 %, 10 % of the positives near the decision boundary marked
difficult (-1), features ReLU(latent @ P + noise) so they are non-negative like pooled post-ReLU
activations; class signal is partial, so APs are far from 1.
Output: a table and benchmarks/results/svm.json (machine info from benchmarks/machine.py).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from benchmarks.machine import machine_info  # noqa: E402
from ssl_jax.evals import svm  # noqa: E402


def synthetic(n_train: int, n_test: int, dim: int, classes: int = 20, seed: int = 0):
    """(train_x, train_y, test_x, test_y): float32 (N, dim) features, int8 (N, classes) labels."""
    rng = np.random.default_rng(seed)
    latent_dim = 64
    proj = rng.standard_normal((latent_dim, dim)).astype(np.float32) / np.sqrt(latent_dim)
    heads = rng.standard_normal((latent_dim, classes)) / np.sqrt(latent_dim)
    rates = np.linspace(0.02, 0.20, classes)
    n = n_train + n_test
    z = rng.standard_normal((n, latent_dim)).astype(np.float32)
    # Label noise keeps APs well below 1: the latent code explains only part of each label.
    logit = z @ heads + 0.7 * rng.standard_normal((n, classes))
    thresh = np.array([np.quantile(logit[:, c], 1 - rates[c]) for c in range(classes)])
    labels = (logit > thresh).astype(np.int8)
    margin = logit - thresh
    for c in range(classes):
        pos = np.flatnonzero(labels[:, c] == 1)
        near = pos[np.argsort(margin[pos, c])[: max(1, len(pos) // 10)]]
        labels[near, c] = -1
    feats = np.empty((n, dim), np.float32)
    for s in range(0, n, 2048):
        block = z[s : s + 2048] @ proj + rng.standard_normal((len(z[s : s + 2048]), dim)).astype(
            np.float32
        )
        feats[s : s + 2048] = np.maximum(block, 0.0)
    return feats[:n_train], labels[:n_train], feats[n_train:], labels[n_train:]


def reference(train_x, train_y, test_x, test_y, costs):
    """FAIR's way, one fit at a time: LinearSVC + StratifiedKFold(3) + AP scorer, first best."""
    from sklearn.metrics import average_precision_score
    from sklearn.model_selection import StratifiedKFold
    from sklearn.svm import LinearSVC

    def norm(x):
        x = np.asarray(x, np.float32)
        return x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-5)

    def make(cost):
        return LinearSVC(
            C=cost, class_weight={1: 2, -1: 1}, intercept_scaling=1.0, penalty="l2",
            loss="squared_hinge", tol=1e-4, dual=True, max_iter=2000,
        )  # fmt: skip

    x, xt = norm(train_x), norm(test_x)
    out = []
    for c in range(train_y.shape[1]):
        y = np.where(train_y[:, c] == 1, 1, -1)
        means = []
        for cost in costs:
            aps = []
            for tr, te in StratifiedKFold(3).split(x, y):
                clf = make(cost).fit(x[tr], y[tr])
                aps.append(average_precision_score(y[te] == 1, clf.decision_function(x[te])))
            means.append(np.mean(aps))
        best = int(np.argmax(means))
        clf = make(costs[best]).fit(x, y)
        out.append((costs[best], svm.voc07_ap(clf.decision_function(xt), test_y[:, c])))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train")
    parser.add_argument("--test")
    parser.add_argument("--classes", type=int, default=20)
    parser.add_argument("--costs", default=None, help="comma-separated subset; default all 26")
    parser.add_argument("--n_train", type=int, default=5011)
    parser.add_argument("--n_test", type=int, default=4952)
    parser.add_argument("--dim", type=int, default=9216)
    parser.add_argument("--skip_reference", action="store_true")
    parser.add_argument(
        "--solvers", default="sklearn,jax", help="ssl_jax solvers to time: sklearn, jax or both"
    )
    parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "svm.json"))
    args = parser.parse_args()
    info = machine_info()
    if args.train and args.test:
        tr, te = np.load(args.train), np.load(args.test)
        train_x, train_y = tr["features"], tr["labels"]
        test_x, test_y = te["features"], te["labels"]
        source = f"{args.train} / {args.test}"
    else:
        train_x, train_y, test_x, test_y = synthetic(args.n_train, args.n_test, args.dim)
        source = "synthetic VOC-like (benchmarks/svm.py: synthetic, seed 0)"
    train_y, test_y = train_y[:, : args.classes], test_y[:, : args.classes]
    costs = tuple(float(c) for c in args.costs.split(",")) if args.costs else svm.COSTS
    run = {
        "features": source,
        "train_shape": list(train_x.shape),
        "test_shape": list(test_x.shape),
        "classes": int(train_y.shape[1]),
        "costs": list(costs),
        "fits": int(train_y.shape[1] * (len(costs) * 3 + 1)),
    }
    print(f"features: {source}; train {train_x.shape}, test {test_x.shape}")
    print(
        f"run: {run['classes']} classes x {len(costs)} costs x 3 folds + refit = {run['fits']} fits"
    )
    rows = {}
    if not args.skip_reference:
        t = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = reference(train_x, train_y, test_x, test_y, costs)
        aps = [ap for _, ap in ref if not np.isnan(ap)]
        rows["reference (1 liblinear fit at a time)"] = {
            "seconds": time.perf_counter() - t,
            "mAP": float(np.mean(aps)),
            "chosen_costs": [c for c, _ in ref],
        }
    solvers = [s.strip() for s in args.solvers.split(",") if s.strip()]
    unknown = sorted(set(solvers) - {"sklearn", "jax"})
    if unknown:
        parser.error(f"--solvers={args.solvers!r}: unknown {unknown}; allowed: sklearn, jax.")
    for solver in solvers:
        t = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = svm.evaluate(train_x, train_y, test_x, test_y, costs=costs, solver=solver)
        rows[f"ssl_jax {solver}" + (" (joblib, all cores)" if solver == "sklearn" else "")] = {
            "seconds": time.perf_counter() - t,
            "mAP": res["mAP"],
            "chosen_costs": [c["cost"] for c in res["classes"]],
            "not_converged": res["not_converged"],
        }
    base = next(iter(rows.values()))
    print(f"\n{'way':<40} {'seconds':>9} {'mAP %':>7} {'speed-up':>9} {'same cost':>10}")
    for name, r in rows.items():
        pairs = zip(r["chosen_costs"], base["chosen_costs"], strict=True)
        same = np.mean([a == b for a, b in pairs])
        r["speedup_vs_first"] = base["seconds"] / r["seconds"]
        r["same_cost_fraction_vs_first"] = float(same)
        print(f"{name:<40} {r['seconds']:9.1f} {100 * r['mAP']:7.2f} "
              f"{r['speedup_vs_first']:8.2f}x {100 * same:9.0f}%")  # fmt: skip
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"machine": info, "run": run, "results": rows}, f, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
