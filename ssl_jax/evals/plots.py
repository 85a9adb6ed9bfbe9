"""Figures and a table of the SVM benchmarks' results, comparing weights (pretrained against
random, or any others) layer by layer.

    svm = {"pretrained": notebook.read_results(E1), "random": notebook.read_results(E2)}
    fig = plots.layer_figure(svm)        # voc07_svm: mAP per layer, a line per weights
    fig = plots.lowshot_figure(lowshot)  # voc07_lowshot / places205_lowshot: mAP against k
    print(plots.layer_table(svm), plots.lowshot_table(lowshot))

Each takes ``{label: results.json dict}``, drawn in that order (the same colour for the same
position in both figures). Values are in % (results.json holds fractions). The figures are
matplotlib Figures, not shown or saved (``notebook.save_figure`` writes them).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from matplotlib.figure import Figure

SVM = "voc07_svm"
LOWSHOT = ("voc07_lowshot", "places205_lowshot")
Results = Mapping[str, Any]


def _check(label: str, results: Results, allowed: tuple[str, ...], use: str) -> None:
    evaluation = results.get("evaluation") if isinstance(results, Mapping) else None
    if evaluation not in allowed or not isinstance(results.get("layers"), Mapping):
        raise ValueError(
            f"The results of {label!r} are of evaluation={evaluation!r}; this needs "
            f"{' or '.join(allowed)} results (a results.json with 'layers'). {use}"
        )


def _weights(by_weights: Mapping[str, Results], allowed: tuple[str, ...], use: str) -> None:
    if not by_weights:
        raise ValueError("No results given: pass {label: results.json dict}, one per weights.")
    for label, results in by_weights.items():
        _check(label, results, allowed, use)


def layer_maps(results: Results, label: str = "results") -> dict[str, float]:
    """mAP (%) per layer of voc07_svm results, in the trunk's order (conv1 ... pool5)."""
    _check(label, results, (SVM,), "Low-shot results go to lowshot_curve.")
    return {name: 100.0 * float(r["mAP"]) for name, r in results["layers"].items()}


def lowshot_curve(
    results: Results, layer: str, label: str = "results"
) -> tuple[list[int], list[float], list[float]]:
    """One layer of low-shot results: (k ascending, mean mAP %, std % over the samples)."""
    _check(label, results, LOWSHOT, "voc07_svm results go to layer_maps.")
    layers = results["layers"]
    if layer not in layers:
        raise ValueError(
            f"Layer {layer!r} is not in the low-shot results of {label!r}; "
            f"its layers: {', '.join(layers)}."
        )
    ks = sorted(layers[layer]["ks"], key=int)
    stats = [layers[layer]["ks"][k] for k in ks]
    return (
        [int(k) for k in ks],
        [100.0 * float(s["mean"]) for s in stats],
        [100.0 * float(s["std"]) for s in stats],
    )


def best_lowshot_layer(results: Results, label: str = "results") -> str:
    """The layer with the highest mean mAP at the largest k evaluated (the first on ties)."""
    _check(label, results, LOWSHOT, "voc07_svm results: take the max of layer_maps.")
    means = {}
    for name in results["layers"]:
        ks, mean, _ = lowshot_curve(results, name, label)
        if ks:
            means[name] = mean[-1]
    if not means:
        raise ValueError(f"The low-shot results of {label!r} hold no k for any layer.")
    return max(means, key=means.get)


def _layer_order(per_weights: list[dict[str, float]]) -> list[str]:
    """Every layer in first-seen order (weights of different trunks may tap different ones)."""
    order: list[str] = []
    for maps in per_weights:
        order.extend(name for name in maps if name not in order)
    return order


def layer_figure(by_weights: Mapping[str, Results], title: str = "") -> Figure:
    """voc07_svm mAP (%) against the layer, one line per weights; the legend names each line's
    best layer and its mAP."""
    _weights(by_weights, (SVM,), "Low-shot results go to lowshot_figure.")
    maps = {label: layer_maps(r, label) for label, r in by_weights.items()}
    layers = _layer_order(list(maps.values()))
    fig = Figure(figsize=(6.4, 4.0))
    ax = fig.subplots()
    for label, values in maps.items():
        y = [values.get(name, math.nan) for name in layers]
        best = max(values, key=values.get)
        ax.plot(
            range(len(layers)), y, marker="o", label=f"{label} (best {best}: {values[best]:.1f})"
        )
    ax.set_xticks(range(len(layers)), layers)
    first = next(iter(by_weights.values()))
    train, test = (first.get(split, {}).get("images") for split in ("train", "test"))
    images = f" ({train} train / {test} test images)" if train and test else ""
    ax.set(xlabel="frozen layer", ylabel="mAP (%)", title=title or f"VOC07-protocol SVMs{images}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def lowshot_figure(by_weights: Mapping[str, Results], layer: str = "", title: str = "") -> Figure:
    """Low-shot mAP (%) against k (log axis), one line per weights with a band of +- one std
    over the samples; at ``layer``, or ("") each weights' best layer at the largest k."""
    _weights(by_weights, LOWSHOT, "voc07_svm results go to layer_figure.")
    fig = Figure(figsize=(6.4, 4.0))
    ax = fig.subplots()
    all_ks: set[int] = set()
    for label, results in by_weights.items():
        name = layer or best_lowshot_layer(results, label)
        ks, mean, std = lowshot_curve(results, name, label)
        (line,) = ax.plot(ks, mean, marker="o", label=f"{label} ({name})")
        low = [m - s for m, s in zip(mean, std, strict=True)]
        high = [m + s for m, s in zip(mean, std, strict=True)]
        ax.fill_between(ks, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
        all_ks.update(ks)
    first = next(iter(by_weights.values()))
    some_layer = next(iter(first["layers"].values()))
    per_class = "positives" if first["evaluation"] == "voc07_lowshot" else "images"
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted(all_ks), [str(k) for k in sorted(all_ks)])
    ax.minorticks_off()
    samples = some_layer.get("samples", "?")
    ax.set(
        xlabel=f"k ({per_class} per class)",
        ylabel="mAP (%)",
        title=title or f"Low-shot SVMs (mean ± std over {samples} samples, test-selected cost)",
    )
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def layer_table(by_weights: Mapping[str, Results]) -> str:
    """voc07_svm mAP (%) per layer as a markdown table, a column per weights; with two weights,
    a last column of the first minus the second."""
    _weights(by_weights, (SVM,), "Low-shot results: see lowshot_curve.")
    maps = {label: layer_maps(r, label) for label, r in by_weights.items()}
    labels = list(maps)
    diff = len(labels) == 2
    head = ["layer", *labels] + ([f"{labels[0]} − {labels[1]}"] if diff else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in _layer_order(list(maps.values())):
        values = [maps[label].get(name) for label in labels]
        cells = ["" if v is None else f"{v:.2f}" for v in values]
        if diff:
            cells.append("" if None in values else f"{values[0] - values[1]:+.2f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def lowshot_table(by_weights: Mapping[str, Results], layer: str = "") -> str:
    """Low-shot mAP (%) as a markdown table, a row per k and a column per weights (mean ± std
    over the samples), at ``layer`` or ("") each weights' best layer at the largest k."""
    _weights(by_weights, LOWSHOT, "voc07_svm results: see layer_table.")
    columns = {}
    for label, results in by_weights.items():
        name = layer or best_lowshot_layer(results, label)
        ks, mean, std = lowshot_curve(results, name, label)
        cells = {k: f"{m:.2f} ± {s:.2f}" for k, m, s in zip(ks, mean, std, strict=True)}
        columns[f"{label} ({name})"] = cells
    ks = sorted({k for cells in columns.values() for k in cells})
    lines = ["| k | " + " | ".join(columns) + " |", "|" + "---|" * (1 + len(columns))]
    for k in ks:
        lines.append(f"| {k} | " + " | ".join(c.get(k, "") for c in columns.values()) + " |")
    return "\n".join(lines) + "\n"
