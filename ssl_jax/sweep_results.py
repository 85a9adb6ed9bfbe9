r"""A sweep's results in one table, and the paper's scaling figures.

  python -m ssl_jax.sweep_results --sweep_dir=D [--out_dir=D/results] [--metric=voc07_svm]
      [--lowshot_k=0] [--gap_models=alexnet,r50]

(``python -m ssl_jax.sweep --config=... --results_only`` does the same with the sweep config's
``results`` fields; a local sweep does it after its last run.)

Reads every run directory of ``D`` (``<task>_<model>_n<size>_<P|K><value>``, then
``_<label><value>`` for a second axis off its default such as ``_bin15``, with the run.json that
ssl_jax.sweep writes there) and its benchmarks' ``eval_<name>/results.json``. Metrics, all in
%:
- voc07_svm: test mAP per layer (``layers[layer]["mAP"]``, a fraction, x100);
- voc07_lowshot, places205_lowshot: mean test mAP over samples at k = ``lowshot_k`` (0: the
  largest k evaluated) per layer (``layers[layer]["ks"][k]["mean"]`` x100);
- linear: top-1 per layer (``layers[layer]["top1"]``, already %).
A benchmark's score for a run is its best layer's value (the paper reports the best layer).

Writes to ``out_dir``:
- runs.csv: one row per run: axes, pretraining step, per benchmark the best value, the best
  layer and one column per layer;
- runs.md: the same as markdown tables (best layers; then per-layer values per benchmark), and
  notes on figures left out;
- one PNG per claim, the transfer metric being ``metric``'s best-layer value (or one layer's,
  with ``--metric=voc07_svm/res4``):
  fig_data_size.png (against data size, log axis, a panel per task, a line per model),
  fig_permutations.png (Jigsaw, against |P|), fig_colorization_k.png (Colorization, against K),
  fig_model_gap.png (second minus first of ``gap_models`` against data size), and per second axis
  fig_<task>_<label>.png (e.g. fig_colorization_bin.png, against the ab bin size). Runs with a
  second axis off its default appear only in that axis's figure.
  A figure whose axis has a single value in the sweep (or, for the gap, lacks one of the two
  models) is left out with a note in runs.md.

Read back (colab/scaling.ipynb does): ``read(folder)`` gives the rows of a results folder's
runs.csv (or of a sweep folder's runs); ``data_size_figure``, ``complexity_figure`` and
``model_gap_figure`` draw one axis for any of ``measures(rows)``: a benchmark's best layer
("voc07_svm") or one layer ("voc07_svm/conv2").
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import re
import sys
import textwrap
from collections.abc import Sequence
from typing import Any

from matplotlib.figure import Figure

from ssl_jax import paths
from ssl_jax.train import checkpoint as ckpt_lib

RUN_NAME = re.compile(
    r"^(?P<task>[a-z]+)_(?P<model>.+?)_n(?P<size>[^_]+)_(?P<axis>[PK])(?P<value>\d+)"
    r"(?P<extras>(?:_[a-z]+\d+)*)$"
)
AXIS_NAMES = {"P": "|P| (Jigsaw permutations)", "K": "K (Colorization soft-encoding neighbours)"}
EXTRA_AXIS_NAMES = {"bin": "ab bin size (Colorization)"}
UNITS = {"voc07_svm": "mAP (%)", "voc07_lowshot": "mAP (%)", "places205_lowshot": "mAP (%)",
         "linear": "top-1 (%)"}  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Collecting


def collect(sweep_dir: str, lowshot_k: int = 0) -> list[dict[str, Any]]:
    """One dict per run directory, sorted by (task, model, data size, complexity):

    {"run", "task", "model", "data_size", "axis", "complexity", "pretrain_step" (latest
     checkpoint or None), "benchmarks": {name: {"evaluation", "unit", "best", "best_layer",
     "layers": {layer: value in %}, "note"}}}.
    """
    rows = []
    for name in sorted(paths.listdir(sweep_dir)):
        directory = paths.join(sweep_dir, name)
        if not paths.isdir(directory):
            continue
        axes = _run_axes(directory, name)
        if axes is None:
            continue
        steps = ckpt_lib.saved_steps(paths.join(directory, "pretrain"))
        row = dict(axes, pretrain_step=steps[-1] if steps else None)
        row["benchmarks"] = {}
        for entry in sorted(paths.listdir(directory)):
            path = paths.join(directory, entry, "results.json")
            if entry.startswith("eval_") and paths.isfile(path):
                results = paths.read_json(path)
                row["benchmarks"][entry.removeprefix("eval_")] = benchmark_scores(
                    results, lowshot_k
                )
        rows.append(row)
    rows.sort(key=lambda r: (r["task"], r["model"], r["data_size"], r["complexity"]))
    return rows


def _run_axes(directory: str, name: str) -> dict[str, Any] | None:
    """The run's axes from its run.json, else from its directory name; None if neither."""
    path = paths.join(directory, "run.json")
    if paths.isfile(path):
        run = paths.read_json(path)
        return {k: run[k] for k in ("task", "model", "data_size", "axis", "complexity")} | {
            "run": name,
            "extra_axes": run.get("extra_axes", {}),
            "extra_defaults": run.get("extra_defaults", {}),
        }
    match = RUN_NAME.match(name)
    if match is None:
        return None
    size = match["size"]
    data_size = 0 if size == "all" else float(size)
    if data_size > 1:
        data_size = int(data_size)
    # A name lists only the second axes off their defaults (which it does not give).
    extras = {m[1]: int(m[2]) for m in re.finditer(r"_([a-z]+)(\d+)", match["extras"])}
    return {"run": name, "task": match["task"], "model": match["model"], "data_size": data_size,
            "axis": match["axis"], "complexity": int(match["value"]),
            "extra_axes": extras, "extra_defaults": {}}  # fmt: skip


def off_default(row: dict[str, Any]) -> dict[str, int]:
    """The row's second axes that are off their defaults (as in its name, e.g. {"bin": 15})."""
    defaults = row.get("extra_defaults", {})
    return {k: v for k, v in row.get("extra_axes", {}).items() if defaults.get(k) != v}


def benchmark_scores(results: dict[str, Any], lowshot_k: int = 0) -> dict[str, Any]:
    """Per-layer values (%) and the best layer of one results.json."""
    evaluation = results.get("evaluation", "")
    layers: dict[str, float] = {}
    note = ""
    for layer, r in results.get("layers", {}).items():
        if evaluation == "voc07_svm":
            value = r.get("mAP")
            value = None if value is None else 100.0 * value
        elif evaluation in ("voc07_lowshot", "places205_lowshot"):
            ks = sorted(int(k) for k in r.get("ks", {}))
            k = lowshot_k or (ks[-1] if ks else 0)
            entry = r.get("ks", {}).get(str(k))
            value = None if entry is None else 100.0 * entry["mean"]
            note = f"k={k}, mean over samples, test-selected cost"
        elif evaluation == "linear":
            value = r.get("top1")
        else:
            raise ValueError(f"results.json has evaluation={evaluation!r}; known: {sorted(UNITS)}.")
        if value is not None and math.isfinite(value):
            layers[layer] = float(value)
    best_layer = max(layers, key=layers.get) if layers else None
    return {
        "evaluation": evaluation,
        "unit": UNITS.get(evaluation, ""),
        "best": layers[best_layer] if best_layer else None,
        "best_layer": best_layer,
        "layers": layers,
        "note": note,
    }


# ---------------------------------------------------------------------------------------------
# Tables


def benchmark_names(rows: Sequence[dict[str, Any]]) -> list[str]:
    return sorted({b for r in rows for b in r["benchmarks"]})


def flat_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """CSV rows: axes, then per benchmark <b>, <b>_layer and <b>/<layer> columns."""
    layer_names = {b: _layers(rows, b) for b in benchmark_names(rows)}
    out = []
    for r in rows:
        flat = {k: r[k] for k in ("run", "task", "model", "data_size", "axis", "complexity",
                                  "pretrain_step")}  # fmt: skip
        flat["extra_axes"] = _extras_text(r)
        flat["extra_defaults"] = _axes_text(r.get("extra_defaults", {}))
        for b, layers in layer_names.items():
            scores = r["benchmarks"].get(b, {})
            flat[b] = _round(scores.get("best"))
            flat[f"{b}_layer"] = scores.get("best_layer") or ""
            for layer in layers:
                flat[f"{b}/{layer}"] = _round(scores.get("layers", {}).get(layer))
        out.append(flat)
    return out


def _extras_text(row: dict[str, Any]) -> str:
    return _axes_text(off_default(row))


def _axes_text(axes: dict[str, int]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(axes.items()))


def _axes_values(text: str) -> dict[str, int]:
    """The inverse of ``_axes_text``: "bin=15, x=2" -> {"bin": 15, "x": 2}."""
    pairs = (item.partition("=") for item in text.split(",") if item.strip())
    return {k.strip(): int(v) for k, _, v in pairs}


def _layers(rows: Sequence[dict[str, Any]], benchmark: str) -> list[str]:
    """The layers of a benchmark over all runs, in the order the results list them."""
    names = (layer for r in rows for layer in r["benchmarks"].get(benchmark, {}).get("layers", {}))
    return list(dict.fromkeys(names))


def _round(value: float | None) -> float | str:
    return "" if value is None else round(value, 2)


def write_csv(rows: Sequence[dict[str, Any]], path: str) -> None:
    flat = flat_rows(rows)
    fields = list(dict.fromkeys(k for r in flat for k in r))
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=fields)
    writer.writeheader()
    writer.writerows(flat)
    paths.write_text(path, text.getvalue())


def markdown(rows: Sequence[dict[str, Any]], notes: Sequence[str] = ()) -> str:
    """Best layer per benchmark for every run, then a per-layer table per benchmark."""
    benchmarks = benchmark_names(rows)
    head = ["run", "task", "model", "data size", "P/K", "pretrain step"]
    lines = [
        "| " + " | ".join(head + [f"{b} best {_unit(rows, b)}" for b in benchmarks]) + " |",
        "|" + "---|" * (len(head) + len(benchmarks)),
    ]
    for r in rows:
        extras = _extras_text(r)
        cells = [r["run"], r["task"], r["model"], _size(r["data_size"]),
                 f"{r['axis']}={r['complexity']}" + (f", {extras}" if extras else ""),
                 "" if r["pretrain_step"] is None else str(r["pretrain_step"])]  # fmt: skip
        for b in benchmarks:
            s = r["benchmarks"].get(b)
            cells.append(
                f"{s['best']:.2f} ({s['best_layer']})" if s and s["best"] is not None else ""
            )
        lines.append("| " + " | ".join(cells) + " |")
    out = ["# Sweep results", "", "\n".join(lines), ""]
    for b in benchmarks:
        layers = _layers(rows, b)
        extra = {s["note"] for r in rows if (s := r["benchmarks"].get(b)) and s["note"]}
        out += [
            f"## {b}: {_unit(rows, b)} per layer"
            + (f" ({'; '.join(sorted(extra))})" if extra else ""),
            "",
        ]
        out.append("| run | " + " | ".join(layers) + " |")
        out.append("|---|" + "---|" * len(layers))
        for r in rows:
            values = r["benchmarks"].get(b, {}).get("layers", {})
            cells = [f"{values[layer]:.2f}" if layer in values else "" for layer in layers]
            out.append(f"| {r['run']} | " + " | ".join(cells) + " |")
        out.append("")
    if notes:
        out += ["## Figures", ""] + [f"- {n}" for n in notes] + [""]
    return "\n".join(out)


def _unit(rows: Sequence[dict[str, Any]], benchmark: str) -> str:
    for r in rows:
        if benchmark in r["benchmarks"]:
            return r["benchmarks"][benchmark]["unit"]
    return ""


def _size(size: float) -> str:
    if size == 0:
        return "all"
    if size > 1:
        n = int(size)
        for div, suffix in ((1_000_000, "M"), (1_000, "k")):
            if n >= div and n % (div // 10) == 0:
                return f"{n / div:g}{suffix}"
        return str(n)
    return f"{size:g} (fraction)"


# ---------------------------------------------------------------------------------------------
# Reading results back

AXIS_COLUMNS = ("run", "task", "model", "data_size", "axis", "complexity", "pretrain_step",
                "extra_axes", "extra_defaults")  # fmt: skip


def read(results: str, lowshot_k: int = 0) -> list[dict[str, Any]]:
    """A sweep's rows, as ``collect`` gives them, from ``results`` (local or gs://): its runs.csv
    when it has one (a results folder that ``write`` filled), else the run directories of a sweep
    folder (``collect``, with ``lowshot_k``)."""
    table = paths.join(results, "runs.csv")
    if paths.isfile(table):
        return read_csv(table)
    rows = collect(results, lowshot_k) if paths.isdir(results) else []
    if not rows:
        raise FileNotFoundError(
            f"{results} holds no runs.csv and no run directories: give a sweep's results folder "
            "(python -m ssl_jax.sweep_results --sweep_dir=D writes D/results/runs.csv) or the "
            "sweep folder D itself."
        )
    return rows


def read_csv(path: str) -> list[dict[str, Any]]:
    """A runs.csv that ``write_csv`` wrote, back as ``collect``'s rows (what ``figures``,
    ``markdown`` and the per-axis figures take). The CSV does not keep: digits beyond 0.01, the
    low-shot notes; a benchmark's evaluation and unit come from its name (voc07_svm,
    places205_linear). Second axes: extra_axes holds those off their defaults ("bin=15"),
    extra_defaults every default ("bin=10"; a CSV without it reads as all runs at defaults)."""
    reader = csv.DictReader(io.StringIO(paths.read_text(path)))
    fields = reader.fieldnames or []
    if not fields:
        return []
    missing = [c for c in AXIS_COLUMNS[:6] if c not in fields]
    if missing:
        raise ValueError(
            f"{path} has no column(s) {missing}: not a runs.csv written by "
            "python -m ssl_jax.sweep_results (its columns: run, task, model, data_size, axis, "
            "complexity, pretrain_step, then per benchmark B: B, B_layer and B/<layer>)."
        )
    benchmarks = [
        f for f in fields if f not in AXIS_COLUMNS and "/" not in f and f"{f}_layer" in fields
    ]
    layer_columns = {b: [f for f in fields if f.startswith(f"{b}/")] for b in benchmarks}
    rows = []
    for number, flat in enumerate(reader, 1):
        try:
            rows.append(_csv_row(flat, layer_columns))
        except (TypeError, ValueError) as e:
            raise ValueError(f"{path}, row {number} (run {flat.get('run')!r}): {e}") from None
    rows.sort(key=lambda r: (r["task"], r["model"], r["data_size"], r["complexity"]))
    return rows


def _csv_row(flat: dict[str, str], layer_columns: dict[str, list[str]]) -> dict[str, Any]:
    step = flat.get("pretrain_step") or ""
    defaults = _axes_values(flat.get("extra_defaults") or "")
    row = {
        "run": flat["run"],
        "task": flat["task"],
        "model": flat["model"],
        "data_size": _int_or_float(flat["data_size"]),
        "axis": flat["axis"],
        "complexity": int(flat["complexity"]),
        "pretrain_step": int(step) if step else None,
        # The axes at their defaults, then those off them (the only ones an older CSV has).
        "extra_axes": defaults | _axes_values(flat.get("extra_axes") or ""),
        "extra_defaults": defaults,
        "benchmarks": {},
    }
    for b, columns in layer_columns.items():
        layers = {c.split("/", 1)[1]: float(flat[c]) for c in columns if flat[c] != ""}
        if flat[b] == "" and not layers:
            continue  # this run has no results of b
        evaluation = evaluation_of(b)
        row["benchmarks"][b] = {
            "evaluation": evaluation,
            "unit": UNITS.get(evaluation, ""),
            "best": float(flat[b]) if flat[b] != "" else None,
            "best_layer": flat[f"{b}_layer"] or None,
            "layers": layers,
            "note": "",
        }
    return row


def _int_or_float(text: str) -> int | float:
    """A number as ``str`` wrote it: "1000" -> 1000, "0.1" -> 0.1."""
    try:
        return int(text)
    except ValueError:
        return float(text)


def evaluation_of(benchmark: str) -> str:
    """The evaluation a benchmark's name ends with ("places205_linear" -> "linear"), or ""."""
    for evaluation in sorted(UNITS, key=len, reverse=True):
        if benchmark.endswith(evaluation):
            return evaluation
    return ""


# ---------------------------------------------------------------------------------------------
# Figures

# Problem complexity, per task: figure key, axis letter, what the axis is.
COMPLEXITY_FIGURES = {
    "jigsaw": ("permutations", "P", "|P|, permutations"),
    "colorization": ("colorization_k", "K", "K, nearest ab bins"),
}


def choose_metric(rows: Sequence[dict[str, Any]], metric: str = "") -> str:
    """``metric`` if given, else voc07_svm when present, else the first benchmark found."""
    names = benchmark_names(rows)
    if metric:
        return metric
    if "voc07_svm" in names:
        return "voc07_svm"
    return names[0] if names else ""


def measures(rows: Sequence[dict[str, Any]]) -> list[tuple[str, str]]:
    """What a figure can plot, as (label, measure) pairs for a dropdown: per benchmark its best
    layer ("voc07_svm"), then each layer ("voc07_svm/conv2"), as runs.csv names its columns."""
    out = []
    for b in benchmark_names(rows):
        out.append((f"{b}: best layer", b))
        out += [(f"{b}: {layer}", f"{b}/{layer}") for layer in _layers(rows, b)]
    return out


def score(row: dict[str, Any], measure: str) -> float | None:
    """The run's value (%) of ``measure``: "voc07_svm" its best layer's, "voc07_svm/conv2" that
    layer's; None when the run has none."""
    benchmark, _, layer = measure.partition("/")
    s = row["benchmarks"].get(benchmark)
    if s is None:
        return None
    return s["layers"].get(layer) if layer else s["best"]


def _check_measure(rows: Sequence[dict[str, Any]], measure: str) -> str:
    measure = choose_metric(rows, measure)
    known = [m for _, m in measures(rows)]
    if measure not in known:
        raise ValueError(
            f"measure={measure!r} is not in these results; known: {known} (a benchmark for its "
            "best layer, or benchmark/layer)."
        )
    return measure


def _ylabel(rows: Sequence[dict[str, Any]], measure: str) -> str:
    benchmark, _, layer = measure.partition("/")
    return f"{benchmark} {_unit(rows, benchmark)}, {layer or 'best layer'}"


def _paper_rows(rows: Sequence[dict[str, Any]], measure: str) -> list[dict[str, Any]]:
    """The runs with a value of ``measure`` and every second axis at its default."""
    return [r for r in rows if score(r, measure) is not None and not off_default(r)]


def _series(rows, measure, x_key, group_keys):
    """{group tuple: sorted [(x, y)]} over rows with a score, for groups with two points or
    more (a lone point is no trend: grid="axes" puts the other complexities at one size)."""
    out: dict[tuple, list[tuple[float, float]]] = {}
    for r in rows:
        y = score(r, measure)
        if y is None:
            continue
        out.setdefault(tuple(r[k] for k in group_keys), []).append((r[x_key], y))
    return {k: sorted(v) for k, v in sorted(out.items()) if len(v) >= 2}


def _distinct(rows, key) -> list:
    return sorted({r[key] for r in rows})


def data_size_figure(rows: Sequence[dict[str, Any]], measure: str = "") -> Figure:
    """Transfer (``measure``: "voc07_svm" for its best layer, "voc07_svm/conv2" for a layer;
    default ``choose_metric``'s) against the pretraining data size, log axis: a panel per task,
    a line per model and complexity, over the runs with second axes at their defaults. With
    nothing to draw, a figure that says why."""
    return _or_note(*_data_size(rows, _check_measure(rows, measure)))


def complexity_figure(
    rows: Sequence[dict[str, Any]], task: str = "jigsaw", measure: str = ""
) -> Figure:
    """Transfer against the problem complexity of ``task``: |P| for jigsaw, K for colorization
    (log axis), a line per model and data size; ``measure`` as in ``data_size_figure``."""
    if task not in COMPLEXITY_FIGURES:
        raise ValueError(f"task={task!r}: the complexity axes are {list(COMPLEXITY_FIGURES)}.")
    return _or_note(*_complexity(rows, task, _check_measure(rows, measure)))


def model_gap_figure(
    rows: Sequence[dict[str, Any]], measure: str = "", models: Sequence[str] = ("alexnet", "r50")
) -> Figure:
    """Model capacity: the second of ``models`` minus the first (``measure`` as in
    ``data_size_figure``) against the data size, a line per task and complexity."""
    return _or_note(*_model_gap(rows, _check_measure(rows, measure), models))


def note_figure(text: str) -> Figure:
    """A small figure holding ``text`` (why there is nothing to draw)."""
    fig = Figure(figsize=(6, 1.2))
    fig.text(0.5, 0.5, textwrap.fill(f"Nothing to draw: {text}", 80), ha="center", va="center")
    return fig


def _or_note(fig: Figure | None, reason: str) -> Figure:
    return note_figure(reason) if fig is None else fig


def _data_size(rows, measure) -> tuple[Figure | None, str]:
    """Transfer against data size, or None and the reason."""
    scored = _paper_rows(rows, measure)
    sizes = _distinct(scored, "data_size")
    if not sizes:
        return None, f"no run at the second axes' defaults has results for {measure}."
    if len(sizes) < 2:
        return None, f"one data size in the sweep ({_size(sizes[0])})."
    by_task = {
        task: _series([r for r in scored if r["task"] == task], measure, "data_size",
                      ("model", "axis", "complexity"))
        for task in _distinct(scored, "task")
    }  # fmt: skip
    by_task = {task: series for task, series in by_task.items() if series}
    if not by_task:
        return None, "no model and complexity with results at two data sizes."
    fig = Figure(figsize=(5.5 * len(by_task), 4.2), layout="constrained")
    axes = fig.subplots(1, len(by_task), squeeze=False)[0]
    for ax, (task, series) in zip(axes, by_task.items(), strict=True):
        for (model, axis, value), pts in series.items():
            xs, ys = zip(*pts, strict=True)
            ax.plot(xs, ys, marker="o", label=f"{model}, {axis}={value}")
        ax.set_xscale("log")
        ax.set_xlabel("pretraining images (log scale)")
        ax.set_ylabel(_ylabel(rows, measure))
        ax.set_title(f"{task}: transfer vs data size")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize="small")
    return fig, ""


def _complexity(rows, task, measure) -> tuple[Figure | None, str]:
    """Transfer against ``task``'s problem complexity, or None and the reason."""
    _, axis, what = COMPLEXITY_FIGURES[task]
    task_rows = [r for r in _paper_rows(rows, measure) if r["task"] == task]
    values = _distinct(task_rows, "complexity")
    if len(values) < 2:
        return None, f"{task} has " + (
            f"one value of {axis} ({values[0]})." if values else "no runs with results."
        )
    series = _series(task_rows, measure, "complexity", ("model", "data_size"))
    if not series:
        return None, f"no model and data size with results at two values of {axis}."
    lines = {f"{model}, {_size(size)} images": pts for (model, size), pts in series.items()}
    title = f"{task}: transfer vs problem complexity {AXIS_NAMES[axis].split()[0]}"
    return _log_axis_figure(
        lines, values, f"problem complexity {what} (log scale)", _ylabel(rows, measure), title
    ), ""


def _log_axis_figure(
    lines: dict[str, list], values: Sequence, xlabel: str, ylabel: str, title: str
) -> Figure:
    """A line per label (points (x, y)) against a log x axis ticked at ``values``."""
    fig = Figure(figsize=(6, 4.2), layout="constrained")
    ax = fig.subplots()
    for label, pts in lines.items():
        xs, ys = zip(*pts, strict=True)
        ax.plot(xs, ys, marker="o", label=label)
    ax.set_xscale("log")
    ax.set_xticks(values, [str(v) for v in values])
    ax.minorticks_off()
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    return fig


def _second_axis(rows, task, label, measure) -> tuple[Figure | None, str]:
    """Transfer against a second axis (e.g. Colorization's ab bin size), or None and the
    reason: its runs, and the runs with every second axis at its default."""
    axis_rows = [
        dict(r, extra_value=r["extra_axes"][label])
        for r in rows
        if score(r, measure) is not None
        and r["task"] == task
        and label in r["extra_axes"]
        and not {k for k in off_default(r) if k != label}
    ]
    values = _distinct(axis_rows, "extra_value")
    series = _series(axis_rows, measure, "extra_value", ("model", "data_size", "complexity"))
    if len(values) < 2 or not series:
        return None, (
            f"{task} has no model, data size and "
            f"{axis_rows[0]['axis'] if axis_rows else 'complexity'} with results at two "
            f"values of {label}."
        )
    axis = axis_rows[0]["axis"]
    lines = {
        f"{model}, {_size(size)} images, {axis}={value}": pts
        for (model, size, value), pts in series.items()
    }
    what = EXTRA_AXIS_NAMES.get(label, label)
    return _log_axis_figure(
        lines, values, f"{what} (log scale)", _ylabel(rows, measure), f"{task}: transfer vs {what}"
    ), ""


def _model_gap(rows, measure, models) -> tuple[Figure | None, str]:
    """The gap between two models against data size, or None and the reason."""
    small, large = models
    scored = _paper_rows(rows, measure)
    present = set(_distinct(scored, "model"))
    missing = [m for m in (small, large) if m not in present]
    if missing:
        return None, (
            f"no runs with results of model(s) {missing} (the gap's models: {list(models)}; "
            f"models here: {sorted(present)})."
        )
    by_key = {(r["task"], r["model"], r["data_size"], r["complexity"]): score(r, measure)
              for r in scored}  # fmt: skip
    gaps: dict[tuple, list[tuple[float, float]]] = {}
    for (task, model, size, value), y in by_key.items():
        if model == large and (task, small, size, value) in by_key:
            gaps.setdefault((task, value), []).append(
                (size, y - by_key[(task, small, size, value)])
            )
    if len({x for pts in gaps.values() for x, _ in pts}) < 2:
        return None, f"fewer than two data sizes with both {small} and {large} results."
    fig = Figure(figsize=(6, 4.2), layout="constrained")
    ax = fig.subplots()
    for (task, value), pts in sorted(gaps.items()):
        xs, ys = zip(*sorted(pts), strict=True)
        axis = next(r["axis"] for r in scored if r["task"] == task)
        ax.plot(xs, ys, marker="o", label=f"{task}, {axis}={value}")
    ax.axhline(0.0, color="gray", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("pretraining images (log scale)")
    benchmark, _, layer = measure.partition("/")
    ax.set_ylabel(
        f"{large} - {small}: {benchmark} {_unit(rows, benchmark)}" + (f", {layer}" if layer else "")
    )
    ax.set_title(f"Model capacity: {large} vs {small} gap vs data size")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")
    return fig, ""


def figures(
    rows: Sequence[dict[str, Any]],
    metric: str = "",
    gap_models: Sequence[str] = ("alexnet", "r50"),
) -> tuple[dict[str, Figure], list[str]]:
    """The paper's figures, one per claim, as matplotlib Figures (not yet saved), and notes on
    those left out. Keys: data_size, permutations, colorization_k, model_gap, and
    <task>_<label> per second axis (colorization_bin). ``metric``: a benchmark (its best layer)
    or benchmark/layer, default ``choose_metric``'s."""
    measure = choose_metric(rows, metric)
    scored = [r for r in rows if score(r, measure) is not None]
    if not scored:
        return {}, [f"No run has results for {measure or 'any benchmark'}: no figures."]
    drawn = [("data_size", _data_size(rows, measure))]
    drawn += [(key, _complexity(rows, task, measure))
              for task, (key, _, _) in COMPLEXITY_FIGURES.items()]  # fmt: skip
    labels = sorted({(r["task"], label) for r in scored for label in r.get("extra_axes", {})})
    drawn += [(f"{task}_{label}", _second_axis(rows, task, label, measure))
              for task, label in labels]  # fmt: skip
    drawn.append(("model_gap", _model_gap(rows, measure, gap_models)))
    figs = {key: fig for key, (fig, _) in drawn if fig is not None}
    notes = [f"fig_{key}.png left out: {reason}" for key, (fig, reason) in drawn if fig is None]
    return figs, notes


# ---------------------------------------------------------------------------------------------
# Everything at once


def write(
    sweep_dir: str,
    out_dir: str | None = None,
    metric: str = "",
    lowshot_k: int = 0,
    gap_models: Sequence[str] = ("alexnet", "r50"),
) -> list[str]:
    """Collects ``sweep_dir`` and writes runs.csv, runs.md and the figures; returns their paths."""
    if not paths.isdir(sweep_dir):
        raise FileNotFoundError(f"--sweep_dir={sweep_dir!r} is not a directory.")
    out_dir = out_dir or paths.join(sweep_dir, "results")
    paths.makedirs(out_dir)
    rows = collect(sweep_dir, lowshot_k)
    figs, notes = figures(rows, metric, gap_models)
    written = [paths.join(out_dir, "runs.csv"), paths.join(out_dir, "runs.md")]
    write_csv(rows, written[0])
    for key, fig in figs.items():
        path = paths.join(out_dir, f"fig_{key}.png")
        png = io.BytesIO()
        fig.savefig(png, dpi=120, format="png")
        paths.write_bytes(path, png.getvalue())
        written.append(path)
    metric = choose_metric(rows, metric)
    benchmark, _, layer = metric.partition("/")
    notes = [f"Transfer metric in the figures: {benchmark}, "
             + (f"layer {layer}." if layer else "best layer per run.")] + notes  # fmt: skip
    paths.write_text(written[1], markdown(rows, notes))
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ssl_jax.sweep_results",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--sweep_dir", required=True)
    parser.add_argument("--out_dir", default=None, help="default: SWEEP_DIR/results")
    parser.add_argument(
        "--metric",
        default=None,
        help="benchmark of the figures (its best layer), or benchmark/layer (voc07_svm/res4)",
    )
    parser.add_argument("--lowshot_k", type=int, default=None, help="0: the largest k")
    parser.add_argument("--gap_models", default=None, help="two model names, e.g. alexnet,r50")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    # Defaults from the sweep's own config (sweep.json), if the sweep command wrote one.
    settings = {"metric": "", "lowshot_k": 0, "gap_models": ["alexnet", "r50"]}
    sweep_json = paths.join(args.sweep_dir, "sweep.json")
    if paths.isfile(sweep_json):
        settings.update(paths.read_json(sweep_json).get("results", {}))
    metric = settings["metric"] if args.metric is None else args.metric
    lowshot_k = settings["lowshot_k"] if args.lowshot_k is None else args.lowshot_k
    gap = settings["gap_models"] if args.gap_models is None else args.gap_models.split(",")
    if len(gap) != 2:
        parser.error(f"--gap_models={','.join(gap)} must name two models, e.g. alexnet,r50")
    try:
        written = write(args.sweep_dir, args.out_dir, metric, lowshot_k, tuple(gap))
    except FileNotFoundError as e:
        print(e, file=sys.stderr)
        return 2
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
