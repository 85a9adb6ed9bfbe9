"""Times Jigsaw permutation-set generation against the reference script's algorithm.

Usage: python benchmarks/permutations.py [--out benchmarks/results/permutations.json]

Measures, on this machine:
  * generate_permutations, cold (empty cache dir): candidate build + jit compile + greedy loop
    + cache write, for |P| in {100, 1000, 2000, 10000} ("max_avg") and 10000 ("max_min");
    and the warm (cache hit) load time;
  * the reference algorithm (Noroozi's select_permutations: every step recomputes
    scipy cdist(selected, remaining, "hamming").mean(0), takes the argmax and deletes it from
    the pool). Its step with k selected rows costs a k x 9! distance matrix:
      - measured: a real run to n = 120, timing every step;
      - measured: single steps at k = 500, 1000, 2000 (median of 3);
      - extrapolated (not run): totals for n > 120 sum a step-time model t(k) over
        k = 1 .. n-1, where t(k) is a least-squares line through the real run's steps up to
        k = 119, linear interpolation through the single-step medians up to k = 2000, and
        proportional to k beyond (cost per selected row taken from k = 2000).
    The reference's last step for n = 10000 needs a 29 GB float64 distance matrix.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import tempfile
import time

import numpy as np
from scipy.spatial.distance import cdist

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.machine import machine_info  # noqa: E402
from ssl_jax.jigsaw import permutations as pm  # noqa: E402

OURS = [
    (100, "max_avg"),
    (1000, "max_avg"),
    (2000, "max_avg"),
    (10000, "max_avg"),
    (10000, "max_min"),
]
TRAJECTORY_N = 120
CHECK_K = [500, 1000, 2000]
EXTRAPOLATE_N = [100, 1000, 2000, 5000, 10000]


def distance_stats(perms: np.ndarray, chunk: int = 2000) -> tuple[float, int]:
    """Mean and min pairwise Hamming distance (0..9) over distinct pairs, in row chunks."""
    total, low, n = 0, 9, len(perms)
    for start in range(0, n, chunk):
        dist = pm.hamming_distances(perms[start : start + chunk], perms)
        rows = np.arange(start, min(start + chunk, n))
        dist[rows - start, rows] = 99  # exclude self-pairs from the min
        low = min(low, int(dist.min()))
        dist[rows - start, rows] = 0
        total += int(dist.sum(dtype=np.int64))
    return total / (n * (n - 1)), low


def time_ours() -> list[dict]:
    rows = []
    for num, method in OURS:
        with tempfile.TemporaryDirectory() as cache:
            start = time.perf_counter()
            perms = pm.generate_permutations(num, method, seed=0, cache_dir=cache)
            cold = time.perf_counter() - start
            start = time.perf_counter()
            again = pm.generate_permutations(num, method, seed=0, cache_dir=cache)
            warm = time.perf_counter() - start
        assert np.array_equal(perms, again)
        mean_d, min_d = distance_stats(perms)
        rows.append(
            {
                "num_perms": num,
                "method": method,
                "cold_s": cold,
                "warm_s": warm,
                "mean_hamming": mean_d,
                "min_hamming": min_d,
            }
        )
        print(
            f"ours {method:7s} {num:6d}: cold {cold:7.2f} s, cache hit {warm * 1e3:6.1f} ms, "
            f"mean/min Hamming {mean_d:.3f}/{min_d}",
            flush=True,
        )
    return rows


def reference_step(selected: np.ndarray, pool: np.ndarray) -> tuple[int, np.ndarray]:
    """One step of the reference script: full distance matrix, argmax, delete from pool."""
    scores = cdist(selected, pool, metric="hamming").mean(axis=0)
    j = int(scores.argmax())
    return j, np.delete(pool, j, axis=0)


def time_reference(candidates: np.ndarray) -> dict:
    """Reference cost: measured to n = TRAJECTORY_N, extrapolated beyond (see module doc)."""
    # 1. A real run of the reference to n = TRAJECTORY_N, timing every step.
    selected = candidates[[pm.first_index(0)]]
    pool = np.delete(candidates, pm.first_index(0), axis=0)
    step_times = []
    while len(selected) < TRAJECTORY_N:
        start = time.perf_counter()
        j, next_pool = reference_step(selected, pool)
        step_times.append(time.perf_counter() - start)
        selected = np.concatenate([selected, pool[j][None]])
        pool = next_pool
    ours = pm.generate_permutations(TRAJECTORY_N, "max_avg", 0, cache_dir=tempfile.mkdtemp())
    same_rows = TRAJECTORY_N
    if not np.array_equal(selected, ours):
        same_rows = int(np.argmax(np.any(selected != ours, axis=1)))
    print(
        f"reference real run to n = {TRAJECTORY_N}: {sum(step_times):.1f} s; same rows as ours "
        f"up to row {same_rows} (its float means of d/9 reorder exact ties)",
        flush=True,
    )
    # 2. Single steps far beyond the run, with k random selected rows (the cost depends on
    # sizes only). Median of 3: the first call at a new size also pays fresh-memory faults.
    rng = np.random.default_rng(0)
    checks = []
    for k in CHECK_K:
        chosen = rng.choice(len(candidates), k, replace=False)
        check_selected = candidates[chosen]
        check_pool = np.delete(candidates, chosen, axis=0)
        reps = []
        for _ in range(3):
            start = time.perf_counter()
            reference_step(check_selected, check_pool)
            reps.append(time.perf_counter() - start)
        checks.append({"k": k, "step_s_reps": reps, "step_s": float(np.median(reps))})
        print(f"reference single step k = {k:5d}: " + ", ".join(f"{r:.2f}" for r in reps) + " s")
    # 3. Step-time model t(k): a least-squares line through the real run's steps up to its
    # last k, then linear interpolation through the single-step medians, then proportional
    # to k beyond the largest one (the k x 9! matrix no longer fits any cache, so cost per
    # selected row stops falling).
    ks = np.arange(1, TRAJECTORY_N)
    b, a = np.polyfit(ks, np.array(step_times), 1)
    knots_k = np.array([1, TRAJECTORY_N - 1] + [c["k"] for c in checks], float)
    knots_t = np.array([a + b, a + b * (TRAJECTORY_N - 1)] + [c["step_s"] for c in checks])

    def step_model(k: np.ndarray) -> np.ndarray:
        beyond = knots_t[-1] * k / knots_k[-1]
        return np.where(k <= knots_k[-1], np.interp(k, knots_k, knots_t), beyond)

    totals = {}
    for n in EXTRAPOLATE_N:
        if n <= TRAJECTORY_N:
            totals[str(n)] = {"s": float(sum(step_times[: n - 1])), "how": "measured"}
        else:
            steps = step_model(np.arange(1, n, dtype=float))
            totals[str(n)] = {"s": float(steps.sum()), "how": "extrapolated"}
        t = totals[str(n)]
        print(f"reference total n = {n:5d}: {t['s']:9.0f} s = {t['s'] / 3600:6.2f} h ({t['how']})")
    return {
        "trajectory_n": TRAJECTORY_N,
        "trajectory_step_s": step_times,
        "rows_equal_to_ours": same_rows,
        "line_fit_to_run": {"a_s": float(a), "b_s_per_selected_row": float(b)},
        "single_steps": checks,
        "totals": totals,
        "last_step_distance_matrix_gb": {
            str(n): 8 * n * pm.NUM_CANDIDATES / 1e9 for n in EXTRAPOLATE_N
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--out", default=os.path.join(os.path.dirname(__file__), "results", "permutations.json")
    )
    args = parser.parse_args()
    info = machine_info()
    print(json.dumps(info))
    ours = time_ours()
    reference = time_reference(pm.lexicographic_permutations(9))
    print("\n| set | ours, cold (s) | reference (s) |\n|---|---|---|")
    for row in ours:
        ref = reference["totals"].get(str(row["num_perms"]))
        ref_text = f"{ref['s']:,.0f} ({ref['how']})" if ref is not None else "-"
        print(f"| {row['num_perms']} {row['method']} | {row['cold_s']:.2f} | {ref_text} |")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(
            {
                "date": datetime.date.today().isoformat(),
                "machine": info,
                "ours": ours,
                "reference": reference,
                "load_avg_1min_at_end": os.getloadavg()[0],
            },
            f,
            indent=2,
        )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
