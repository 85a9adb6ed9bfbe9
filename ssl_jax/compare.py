r"""Side-by-side table of evaluation results, averaged over seeds.

  python -m ssl_jax.compare "Jigsaw=W/jigsaw_s*_svm" "Random init=W/random_s*_svm" [--out F.json]

Each argument is LABEL=PATTERN: a glob of evaluation workdirs (each with the results.json that
``python -m ssl_jax.main --config=configs/evals/... `` or configs/cifar/svm.py writes); the runs a
pattern matches are the seeds of one row. For every layer the table gives the mean over seeds,
and for the best layer (highest mean) the seed-to-seed spread (max - min) and the count, so a
difference between rows can be read against the spread within them. Metric: mAP (%) for the SVM
benchmarks, top-1 (%) for the linear one.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from ssl_jax import paths


def layer_scores(results: dict[str, Any]) -> dict[str, float]:
    """{layer: score in %} of one results.json (SVM mAP or linear top-1)."""
    out = {}
    for layer, r in results["layers"].items():
        if "mAP" in r:
            out[layer] = 100.0 * float(r["mAP"])
        elif "top1" in r:
            out[layer] = float(r["top1"])
    return out


def collect(pattern: str) -> list[dict[str, Any]]:
    found = paths.glob(paths.join(pattern, "results.json"))
    if not found:
        raise ValueError(f"No results.json under {pattern!r}; is the evaluation finished?")
    runs = []
    for path in found:
        runs.append({"workdir": paths.dirname(path), "scores": layer_scores(paths.read_json(path))})
    return runs


def summarise(label: str, runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    layers = list(runs[0]["scores"])
    for r in runs[1:]:
        if list(r["scores"]) != layers:
            raise ValueError(
                f"{label}: {r['workdir']} has layers {list(r['scores'])}, {runs[0]['workdir']} "
                f"has {layers}; compare runs of the same evaluation."
            )
    table = np.array([[r["scores"][name] for name in layers] for r in runs])
    mean = table.mean(axis=0)
    best = int(np.argmax(mean))
    return {
        "label": label,
        "runs": [r["workdir"] for r in runs],
        "layers": layers,
        "mean": dict(zip(layers, mean.tolist(), strict=True)),
        "per_run": table.tolist(),
        "best_layer": layers[best],
        "best_mean": float(mean[best]),
        "best_spread": float(table[:, best].max() - table[:, best].min()),
    }


def markdown(rows: Sequence[dict[str, Any]]) -> str:
    layers: list[str] = []
    for row in rows:
        layers += [name for name in row["layers"] if name not in layers]
    head = ["run", *layers, "best layer", "best (mean)", "spread (max-min)", "seeds"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [f"{row['mean'][name]:.2f}" if name in row["mean"] else "" for name in layers]
        cells += [
            row["best_layer"],
            f"{row['best_mean']:.2f}",
            f"{row['best_spread']:.2f}",
            str(len(row["runs"])),
        ]
        lines.append("| " + " | ".join([row["label"], *cells]) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("groups", nargs="+", help="LABEL=GLOB of evaluation workdirs")
    parser.add_argument("--out", default=None, help="also write the table as JSON")
    args = parser.parse_args(argv)
    rows = []
    try:
        for group in args.groups:
            label, sep, pattern = group.partition("=")
            if not sep or not label or not pattern:
                raise ValueError(f"{group!r} is not LABEL=GLOB.")
            rows.append(summarise(label, collect(pattern)))
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(markdown(rows))
    if args.out:
        paths.write_json(args.out, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
