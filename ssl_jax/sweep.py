r"""Scaling sweeps: a grid over task x model x data size x problem complexity, run end to end.

  python -m ssl_jax.sweep --config=configs/sweeps/paper_axes.py[:ARG] [--config.KEY=VALUE ...]
      [--dry_run] [--emit=commands|slurm] [--only=SUBSTR] [--keep_going] [--results_only]

A sweep config (configs/sweeps/*.py, format in configs/sweeps/paper_axes.py) is expanded into runs.
Each run is one pretraining (``python -m ssl_jax.main`` with a base config and per-run overrides)
followed by its chained benchmarks (evaluation configs with ``--config.pretrained`` set to the
pretraining workdir). Layout, under ``sweep_dir``::

  sweep.json                           the resolved sweep config (read by ssl_jax.sweep_results)
  <task>_<model>_n<size>_<P|K><value>[_<label><value>]/  (_bin15: a second axis off its default)
    run.json                           the run's axes, steps and exact commands
    pretrain/                          pretraining workdir (checkpoints/, metrics.jsonl, ...)
    eval_<benchmark>/results.json      one workdir per chained benchmark
    logs/{pretrain,eval_<benchmark>}.log
  results/                             runs.csv, runs.md and the figures (ssl_jax.sweep_results)

A run counts as finished when its pretraining checkpoint reached the final step (the step count
the trainer derives from the run's config and data size, capped by train.stop_after_steps) and
every benchmark wrote results.json; finished steps are skipped, so rerunning the command resumes
a sweep (an interrupted pretraining resumes from its last checkpoint).

Modes:
  (default)            run every unfinished step locally, one after another, logs to files; stop at
                       the first failure (--keep_going: skip that run's benchmarks and go on); then
                       collect the results table and figures into sweep_dir/results.
  --dry_run            print the runs and their state; launch nothing, write nothing.
  --emit=commands      print one shell line per unfinished run (pretraining && benchmarks).
  --emit=slurm         print a bash script of ``sbatch`` calls: one job per pretraining, one per
                       benchmark with ``--dependency=afterok:$PRETRAIN_JOB`` (config.slurm.*).
  --only=SUBSTR        only the run named SUBSTR if there is one, else the runs whose name
                       contains SUBSTR (repeatable; "--only=jigsaw_r18_n10000_P10" is that run
                       alone, not also P100 and P1000).
  --results_only       only collect the table and figures (same as python -m ssl_jax.sweep_results).

Exit code: 0 when every selected run finished, 1 when a step failed, 2 for a config error.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

import ml_collections

from ssl_jax import config_lib, paths, sweep_results, tasks
from ssl_jax.train import checkpoint as ckpt_lib
from ssl_jax.train import optim as optim_lib

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# CIFAR-10 as class folders (train/, test/) beside the repository: the small-scale configs' default.
CIFAR10 = os.path.join(os.path.dirname(REPO_ROOT), "shared", "data", "cifar10")
GRIDS = ("product", "axes")


@dataclasses.dataclass(frozen=True)
class Step:
    """One ``python -m ssl_jax.main`` call: a config spec, its overrides, a workdir and a log."""

    name: str  # "pretrain" or "eval_<benchmark>"
    spec: str
    overrides: tuple[tuple[str, str], ...]
    workdir: str
    log: str

    def argv(self, python: str) -> list[str]:
        return [
            python, "-m", "ssl_jax.main", f"--config={self.spec}", f"--workdir={self.workdir}",
            *(f"--config.{key}={value}" for key, value in self.overrides),
        ]  # fmt: skip

    def shell(self, python: str) -> str:
        """The command line with its output sent to the log file."""
        return f"{shlex.join(self.argv(python))} > {shlex.quote(self.log)} 2>&1"


@dataclasses.dataclass(frozen=True)
class Run:
    """One point of the grid: a pretraining and its chained benchmarks."""

    name: str
    task: str
    model: str
    data_size: int | float
    axis: str  # "P" (Jigsaw permutations) or "K" (Colorization neighbours)
    complexity: int
    directory: str
    pretrain: Step
    benchmarks: tuple[Step, ...]
    # The task's second axes (config.extra_axes), every one: (label, value, default).
    extra_axes: tuple[tuple[str, int, int], ...] = ()

    def describe(self) -> dict[str, Any]:
        """run.json: the axes, and each step's command (the run's own config, reproducible)."""
        python = "python"
        return {
            "name": self.name, "task": self.task, "model": self.model,
            "data_size": self.data_size, "axis": self.axis, "complexity": self.complexity,
            "extra_axes": {label: value for label, value, _ in self.extra_axes},
            "extra_defaults": {label: default for label, _, default in self.extra_axes},
            "pretrain": _step_json(self.pretrain, python),
            "benchmarks": {s.name.removeprefix("eval_"): _step_json(s, python)
                           for s in self.benchmarks},
        }  # fmt: skip


def _step_json(step: Step, python: str) -> dict[str, Any]:
    return {
        "config": step.spec,
        "overrides": {k: v for k, v in step.overrides},
        "workdir": step.workdir,
        "log": step.log,
        "command": shlex.join(step.argv(python)),
    }


# ---------------------------------------------------------------------------------------------
# Pieces of sweep configs (configs/sweeps/*.py)


def benchmark(
    spec: str,
    overrides: Sequence[str] = (),
    model_overrides: dict[str, Sequence[str]] | None = None,
) -> ml_collections.ConfigDict:
    """config.benchmarks.NAME: an evaluation config spec, its "key=value" overrides, and more
    overrides for the runs of some models only (model_overrides: model -> overrides, e.g. a
    larger input for AlexNet)."""
    b = ml_collections.ConfigDict()
    b.config = spec
    b.overrides = tuple(overrides)
    b.model_overrides = ml_collections.ConfigDict(
        {model: tuple(items) for model, items in (model_overrides or {}).items()}
    )
    return b


def bin_size_axis(
    values: Sequence[int] = (5, 10, 15, 20), default: int = 10
) -> ml_collections.ConfigDict:
    """config.extra_axes.colorization: Colorization's ab bin size as a second axis ("bin" in run
    names: ..._K10_bin15); 10 is Zhang's 313 bins, 5, 15, 20 FAIR's bins found in the data."""
    axis = ml_collections.ConfigDict()
    axis.bin = ml_collections.ConfigDict(
        {"key": "colorization.bin_size", "values": tuple(values), "default": default}
    )
    return axis


def results_config(
    metric: str = "voc07_svm", gap_models: Sequence[str] = ("alexnet", "r50")
) -> ml_collections.ConfigDict:
    """config.results: the figures' benchmark, the low-shot k, the two models of the gap."""
    r = ml_collections.ConfigDict()
    r.metric = metric  # "" = voc07_svm if present, else the first benchmark
    r.lowshot_k = 0  # 0 = the largest k evaluated
    r.gap_models = tuple(gap_models)
    return r


# ---------------------------------------------------------------------------------------------
# Expanding a sweep config into runs


def resolve_spec(spec: str) -> str:
    """A config spec with its path made absolute: relative to the working directory if the file
    is there, else to the repository root (so emitted commands run from anywhere)."""
    path, arg = config_lib.split_spec(spec)
    if not os.path.isabs(path):
        here = os.path.abspath(path)
        path = here if os.path.exists(here) else os.path.join(REPO_ROOT, path)
    return path if arg is None else f"{path}:{arg}"


def parse_overrides(items: Sequence[str], where: str) -> list[tuple[str, str]]:
    """("optim.base_lr=0.05", ...) -> [("optim.base_lr", "0.05"), ...]."""
    out = []
    for item in items:
        key, sep, value = str(item).partition("=")
        key = key.strip().removeprefix("--").removeprefix("config.")
        if not sep or not key:
            raise config_lib.ConfigError(
                f"{where} has {item!r}; each override is 'key=value', e.g. 'optim.base_lr=0.05'."
            )
        out.append((key, value.strip()))
    return out


def format_size(size: int | float) -> str:
    """A data size as it appears in run names: 1000000, 0.1 (a fraction) or all (0)."""
    if size == 0:
        return "all"
    return str(int(size)) if float(size).is_integer() and size >= 1 else repr(float(size))


def extra_axes(sweep: ml_collections.ConfigDict, task: str) -> list[tuple[str, str, tuple, int]]:
    """The task's second axes (``config.extra_axes[task]``, optional): (label, config key,
    values, default) each, e.g. ("bin", "colorization.bin_size", (5, 10, 15, 20), 10)."""
    entries = (sweep.get("extra_axes") or {}).get(task) or {}
    out = []
    for label, axis in entries.items():
        where = f"config.extra_axes.{task}.{label}"
        if not re.fullmatch(r"[a-z]+", label) or label in ("n", "P", "K"):
            raise config_lib.ConfigError(
                f"{where}: the label {label!r} goes into run names; use lower-case letters "
                "other than 'n', e.g. 'bin'."
            )
        missing = [f for f in ("key", "values", "default") if f not in axis]
        if missing:
            raise config_lib.ConfigError(f"{where} lacks {missing}; it needs key, values, default.")
        values = tuple(int(v) for v in axis["values"])
        if int(axis["default"]) not in values:
            raise config_lib.ConfigError(
                f"{where}.default={axis['default']} is not one of its values {list(values)}."
            )
        out.append((label, axis["key"], values, int(axis["default"])))
    return out


def grid_points(sweep: ml_collections.ConfigDict) -> list[tuple[str, str, int | float, int, tuple]]:
    """(task, model, data size, complexity, extras) for every run, in launch order; extras are
    ((label, value), ...) of the task's second axes (``extra_axes``), every one.

    ``grid="product"`` takes every combination; ``grid="axes"`` varies one axis at a time (the
    paper's figures): every data size at the task's ``default_complexity``, every complexity at
    ``default_data_size``, and every value of a second axis at both defaults (the other axes at
    their defaults throughout).
    """
    if sweep.grid not in GRIDS:
        raise config_lib.ConfigError(
            f"config.grid={sweep.grid!r} is not one of {list(GRIDS)}; set --config.grid=product."
        )
    points = []
    for task in sweep.tasks:
        if task not in sweep.complexity:
            raise config_lib.ConfigError(
                f"config.complexity has no entry for task {task!r} (config.tasks); it has "
                f"{sorted(sweep.complexity)}."
            )
        values = tuple(sweep.complexity[task])
        extras = extra_axes(sweep, task)
        defaults = tuple((label, default) for label, _, _, default in extras)
        for model in sweep.models:
            if sweep.grid == "product":
                combos = [()]
                for label, _, extra_values, _ in extras:
                    combos = [c + ((label, x),) for c in combos for x in extra_values]
                triples = [(n, v, c) for n in sweep.data_sizes for v in values for c in combos]
            else:
                default_v = sweep.default_complexity[task]
                default_n = sweep.default_data_size
                triples = [(n, default_v, defaults) for n in sweep.data_sizes]
                triples += [(default_n, v, defaults) for v in values]
                for i, (label, _, extra_values, _) in enumerate(extras):
                    for x in extra_values:
                        changed = defaults[:i] + ((label, x),) + defaults[i + 1 :]
                        triples.append((default_n, default_v, changed))
                triples = list(dict.fromkeys(triples))  # the defaults' run once
            points.extend((task, model, n, v, c) for n, v, c in triples)
    return points


def expand(sweep: ml_collections.ConfigDict) -> list[Run]:
    """The sweep's runs, with every per-run override checked against its base config.

    Raises:
      ConfigError: a missing base config for a (task, model), an unknown override key, or a
        value the base config rejects; before anything is launched.
    """
    sweep_dir = paths.abspath(sweep.sweep_dir)
    common = parse_overrides(sweep.overrides, "config.overrides")
    benchmarks = []
    for name, bench in sweep.benchmarks.items():
        per_model = bench.get("model_overrides") or {}
        unknown = sorted(set(per_model) - set(sweep.models))
        if unknown:
            raise config_lib.ConfigError(
                f"config.benchmarks.{name}.model_overrides names {unknown}, which are not in "
                f"config.models {list(sweep.models)}."
            )
        benchmarks.append(
            (
                name,
                resolve_spec(bench.config),
                parse_overrides(bench.overrides, f"config.benchmarks.{name}.overrides"),
                {
                    model: parse_overrides(
                        items, f"config.benchmarks.{name}.model_overrides.{model}"
                    )
                    for model, items in per_model.items()
                },
            )
        )
    base_configs: dict[str, ml_collections.ConfigDict] = {}
    runs = []
    for task, model, size, value, extras in grid_points(sweep):
        key = f"{task}_{model}"
        if key not in sweep.pretrain:
            raise config_lib.ConfigError(
                f"config.pretrain has no base config for {key!r} (task {task!r}, model "
                f"{model!r}); it has {sorted(sweep.pretrain)}. Add config.pretrain.{key}."
            )
        spec = resolve_spec(sweep.pretrain[key])
        if spec not in base_configs:
            base_configs[spec] = config_lib.load_config(spec)
        axis = sweep.complexity_label[task]
        extra_specs = {label: (key, default) for label, key, _, default in extra_axes(sweep, task)}
        name = f"{task}_{model}_n{format_size(size)}_{axis}{value}" + "".join(
            f"_{label}{x}" for label, x in extras if x != extra_specs[label][1]
        )
        directory = paths.join(sweep_dir, name)
        overrides = [*common, (sweep.data_size_key, repr(size)),
                     (sweep.complexity_key[task], str(value)),
                     *((extra_specs[label][0], str(x)) for label, x in extras)]  # fmt: skip
        overrides += budget_overrides(sweep, base_configs[spec], overrides, size)
        resolved = check_overrides(spec, base_configs[spec], overrides, f"run {name}")
        try:  # the checks ssl_jax.main makes before training, now rather than hours later
            tasks.validate(resolved)
        except config_lib.ConfigError as e:
            raise config_lib.ConfigError(f"In run {name} ({spec}): {e}") from None
        pretrain_dir = paths.join(directory, "pretrain")
        pretrain = Step(
            "pretrain", spec, tuple(overrides), pretrain_dir,
            log_path(directory, "pretrain"),
        )  # fmt: skip
        evals = tuple(
            Step(
                f"eval_{bench}",
                bench_spec,
                (("pretrained", pretrain_dir), *bench_overrides, *per_model.get(model, ())),
                paths.join(directory, f"eval_{bench}"),
                log_path(directory, f"eval_{bench}"),
            )  # fmt: skip
            for bench, bench_spec, bench_overrides, per_model in benchmarks
        )
        described = tuple((label, int(x), extra_specs[label][1]) for label, x in extras)
        runs.append(
            Run(name, task, model, size, axis, int(value), directory, pretrain, evals, described)
        )
    for name, spec, overrides, per_model in benchmarks:
        check_overrides(spec, None, overrides, f"benchmark {name}")
        for model, extra in per_model.items():
            check_overrides(spec, None, overrides + extra, f"benchmark {name} ({model})")
    return runs


def check_overrides(
    spec: str,
    base: ml_collections.ConfigDict | None,
    overrides: Sequence[tuple[str, str]],
    where: str,
) -> ml_collections.ConfigDict:
    """Applies ``overrides`` to a copy of ``base`` (or of ``spec``'s config); returns it."""
    config = config_lib.load_config(spec) if base is None else _copy(base)
    try:
        config_lib.apply_overrides(config, overrides)
    except config_lib.ConfigError as e:
        raise config_lib.ConfigError(f"In {where} ({spec}): {e}") from None
    return config


def _copy(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    copy = ml_collections.ConfigDict(config.to_dict(preserve_field_references=True))
    copy.lock()
    return copy


def budget_overrides(
    sweep: ml_collections.ConfigDict,
    base: ml_collections.ConfigDict,
    overrides: Sequence[tuple[str, str]],
    size: int | float,
) -> list[tuple[str, str]]:
    """``config.steps > 0``: the same number of updates at every data size.

    The base config's schedule (warm-up, decay epochs, total epochs) is scaled in proportion so
    that it ends exactly after ``steps`` updates of ``optim.batch_size`` images from ``size``
    images; the run also stops there (train.stop_after_steps). ``steps = 0`` keeps the base
    config's epochs (more data, more steps).
    """
    if not sweep.steps:
        return []
    if not _is_count(size):
        raise config_lib.ConfigError(
            f"config.steps={sweep.steps} (a fixed number of updates) needs image counts in "
            f"config.data_sizes, got {size!r}; give counts or set --config.steps=0 for the base "
            "config's epochs."
        )
    config = check_overrides("", base, overrides, "the sweep's overrides")
    batch = int(config.optim.batch_size)
    if size < batch:
        raise config_lib.ConfigError(
            f"Data size {size} in config.data_sizes is smaller than one batch "
            f"(optim.batch_size={batch})."
        )
    size = int(size)
    steps_per_epoch = size // batch
    epochs = sweep.steps / steps_per_epoch
    scale = epochs / float(config.optim.epochs)
    decay = tuple(round(e * scale, 6) for e in config.optim.decay_epochs)
    decay = tuple(e for e in decay if e < epochs)
    return [
        ("optim.epochs", repr(epochs)),
        ("optim.warmup_epochs", repr(round(float(config.optim.warmup_epochs) * scale, 6))),
        ("optim.decay_epochs", repr(decay)),
        ("train.stop_after_steps", str(sweep.steps)),
    ]


# ---------------------------------------------------------------------------------------------
# Which steps are done


def _is_count(size: Any) -> bool:
    """A data size that is an image count (> 1, whole), not 0 (all) or a fraction."""
    return (
        isinstance(size, (int, float))
        and not isinstance(size, bool)
        and size > 1
        and float(size).is_integer()
    )


def latest_checkpoint(workdir: str) -> int | None:
    """The highest completed checkpoint step in workdir/checkpoints, or None."""
    steps = ckpt_lib.saved_steps(workdir)
    return steps[-1] if steps else None


def final_step(step: Step) -> int:
    """The step a pretraining ends at: the trainer's plan for its config and data size, capped
    by train.stop_after_steps. Counts the images only when data_size is not a count."""
    config = check_overrides(step.spec, None, step.overrides, step.workdir)
    size = config.data.get("data_size", 0)
    if _is_count(size):
        # A count is exact: the data code refuses one larger than the source.
        num_examples = int(size)
    else:
        from ssl_jax import data as data_lib  # TensorFlow: only where data is read

        num_examples = data_lib.make_source(config.data).num_examples
    plan = optim_lib.make_plan(config.optim, num_examples)
    stop = config.train.stop_after_steps
    return min(plan.total_steps, stop) if stop else plan.total_steps


def pretrain_done(run: Run, final: Callable[[Step], int] = final_step) -> bool:
    latest = latest_checkpoint(run.pretrain.workdir)
    return latest is not None and latest >= final(run.pretrain)


def benchmark_done(step: Step) -> bool:
    return paths.isfile(paths.join(step.workdir, "results.json"))


def pending_steps(run: Run, final: Callable[[Step], int] = final_step) -> list[Step]:
    """The steps of ``run`` still to do, in order; [] for a finished run."""
    todo = [] if pretrain_done(run, final) else [run.pretrain]
    return todo + [s for s in run.benchmarks if not benchmark_done(s)]


# ---------------------------------------------------------------------------------------------
# Emitting commands for a cluster


def emit_commands(runs: Sequence[Run], python: str, final=final_step) -> str:
    """One shell line per unfinished run: its pending steps chained with &&."""
    lines = [
        f"# {len(runs)} runs; finished ones are listed as comments",
        f"cd {shlex.quote(REPO_ROOT)}",
    ]
    for run in runs:
        todo = pending_steps(run, final)
        if not todo:
            lines.append(f"# {run.name}: finished")
            continue
        logs = shlex.quote(os.path.dirname(run.pretrain.log))
        lines.append(f"mkdir -p {logs} && " + " && ".join(s.shell(python) for s in todo))
    return "\n".join(lines) + "\n"


def emit_slurm(
    runs: Sequence[Run], python: str, slurm: ml_collections.ConfigDict, final=final_step
) -> str:
    """A bash script of sbatch calls: a job per pretraining and one per benchmark, each
    benchmark with --dependency=afterok on its run's pretraining job."""
    lines = [
        "#!/bin/bash",
        f"# {len(runs)} runs: one sbatch job per pretraining, one per benchmark after it.",
        "set -euo pipefail",
        f"cd {shlex.quote(REPO_ROOT)}",
    ]
    for i, run in enumerate(runs):
        todo = pending_steps(run, final)
        if not todo:
            lines.append(f"# {run.name}: finished")
            continue
        lines.append(f"# {run.name}")
        lines.append(f"mkdir -p {shlex.quote(os.path.dirname(run.pretrain.log))}")
        dependency = ""
        for step in todo:
            wrap = f"cd {shlex.quote(REPO_ROOT)} && {shlex.join(step.argv(python))}"
            args = slurm.pretrain_args if step.name == "pretrain" else slurm.eval_args
            sbatch = (
                f"sbatch --parsable --job-name={shlex.quote(f'{run.name}/{step.name}')} "
                f"--output={shlex.quote(step.log)} {args} {dependency}"
                f"--wrap={shlex.quote(wrap)}"
            )
            sbatch = re.sub(r" +", " ", sbatch)
            if step.name == "pretrain":
                lines.append(f"JOB_{i}=$({sbatch})")
                dependency = f"--dependency=afterok:$JOB_{i} "
            else:
                lines.append(sbatch)
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# Running locally


class StepFailed(RuntimeError):
    pass


def run_step(step: Step, python: str) -> float:
    """Runs one step as a subprocess (output to its log); returns seconds; raises StepFailed."""
    os.makedirs(os.path.dirname(step.log), exist_ok=True)
    start = time.perf_counter()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with open(step.log, "a") as log:
        log.write(f"$ {shlex.join(step.argv(python))}\n")
        log.flush()
        rc = subprocess.run(
            step.argv(python), stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT, env=env
        ).returncode
    seconds = time.perf_counter() - start
    if paths.is_url(run_dir := paths.dirname(step.workdir)):
        paths.write_bytes(paths.join(run_dir, "logs", os.path.basename(step.log)), _read(step.log))
    if rc != 0:
        raise StepFailed(
            f"exit code {rc} after {seconds:.0f} s; log {step.log}:\n{_tail(step.log)}"
        )
    return seconds


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _tail(path: str, lines: int = 15) -> str:
    text = _read(path).decode("utf-8", "replace")
    return "".join("    " + line for line in text.splitlines(keepends=True)[-lines:])


def log_path(run_directory: str, step: str) -> str:
    """A step's log: run_directory/logs/STEP.log; for a sweep in a bucket, a local file (a
    subprocess writes it) under the temporary folder, copied to the bucket when the step ends."""
    if paths.is_url(run_directory):
        name = run_directory.split("://", 1)[1]
        return os.path.join(tempfile.gettempdir(), "ssl_jax_sweep_logs", name, f"{step}.log")
    return os.path.join(run_directory, "logs", f"{step}.log")


def launch(
    runs: Sequence[Run],
    python: str,
    keep_going: bool = False,
    final: Callable[[Step], int] = final_step,
    out: Callable[[str], None] = print,
) -> list[str]:
    """Runs every pending step, one after another; returns the names of the failed runs.

    Stops at the first failure unless ``keep_going`` (then the failed run's later steps are
    skipped and the next run starts).
    """
    failed = []
    for i, run in enumerate(runs, 1):
        todo = pending_steps(run, final)
        if not todo:
            out(f"[{i}/{len(runs)}] {run.name}: finished, skipped")
            continue
        paths.write_json(paths.join(run.directory, "run.json"), run.describe())
        for step in todo:
            out(f"[{i}/{len(runs)}] {run.name}: {step.name} (log {step.log})")
            try:
                seconds = run_step(step, python)
                if step.name == "pretrain" and not pretrain_done(run, final):
                    raise StepFailed(
                        f"it exited before its final step {final(step)} (latest checkpoint: "
                        f"{latest_checkpoint(step.workdir)}; stopped by a signal?); rerun to "
                        "resume"
                    )
            except StepFailed as e:
                out(f"[{i}/{len(runs)}] {run.name}: {step.name} FAILED: {e}")
                failed.append(run.name)
                break
            out(f"[{i}/{len(runs)}] {run.name}: {step.name} done in {seconds:.0f} s")
        if failed and not keep_going:
            out(f"Stopped after the failure of {failed[0]} (--keep_going runs the others).")
            break
    return failed


# ---------------------------------------------------------------------------------------------
# Command line


def load_sweep(spec: str, overrides: Sequence[tuple[str, str]] = ()) -> ml_collections.ConfigDict:
    """A sweep config file with its --config.KEY=VALUE overrides applied."""
    sweep = config_lib.load_config(resolve_spec(spec))
    config_lib.apply_overrides(sweep, overrides)
    return sweep


def select(runs: Sequence[Run], only: Sequence[str]) -> list[Run]:
    """The runs `only` names: a run's exact name selects that run, anything else every run
    whose name contains it."""
    names = {r.name for r in runs}

    def selected(run: Run) -> bool:
        return any(run.name == s if s in names else s in run.name for s in only)

    return [r for r in runs if not only or selected(r)]


def status_table(runs: Sequence[Run], final=final_step) -> str:
    lines = []
    for run in runs:
        todo = pending_steps(run, final)
        state = "finished" if not todo else "to run: " + ", ".join(s.name for s in todo)
        lines.append(f"{run.name}: {state}")
    return "\n".join(lines)


def parse_args(argv: Sequence[str]) -> tuple[argparse.Namespace, list[tuple[str, str]]]:
    parser = argparse.ArgumentParser(
        prog="python -m ssl_jax.sweep",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", required=True, help="a sweep config, configs/sweeps/X.py[:ARG]")
    parser.add_argument("--dry_run", action="store_true")
    parser.add_argument("--emit", choices=("commands", "slurm"), default=None)
    parser.add_argument("--only", action="append", default=[])
    parser.add_argument("--keep_going", action="store_true")
    parser.add_argument("--results_only", action="store_true")
    args, rest = parser.parse_known_args(list(argv))
    overrides = []
    for item in rest:
        key, sep, value = item.removeprefix("--config.").partition("=")
        if not item.startswith("--config.") or not sep:
            parser.error(f"unrecognised argument {item!r}; overrides look like --config.key=value")
        overrides.append((key, value))
    return args, overrides


def main(argv: Sequence[str] | None = None) -> int:
    args, overrides = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        sweep = load_sweep(args.config, overrides)
        if args.results_only:
            return _results(sweep)
        runs = select(expand(sweep), args.only)
    except config_lib.ConfigError as e:
        print(f"Config error: {e}", file=sys.stderr)
        return 2
    if not runs:
        print(f"No run name contains any of {args.only}.", file=sys.stderr)
        return 2
    python = sweep.python or sys.executable
    if args.dry_run:
        print(f"Sweep {sweep.name}: {len(runs)} runs in {paths.abspath(sweep.sweep_dir)}")
        print(status_table(runs))
        return 0
    _write_sweep_json(sweep)
    if args.emit == "commands":
        print(emit_commands(runs, python), end="")
        return 0
    if args.emit == "slurm":
        print(emit_slurm(runs, python, sweep.slurm), end="")
        return 0
    start = time.perf_counter()
    print(f"Sweep {sweep.name}: {len(runs)} runs in {paths.abspath(sweep.sweep_dir)}", flush=True)
    failed = launch(runs, python, keep_going=args.keep_going, out=lambda s: print(s, flush=True))
    print(f"Sweep {sweep.name}: {time.perf_counter() - start:.0f} s", flush=True)
    rc = _results(sweep)
    if failed:
        print(f"Failed runs: {', '.join(failed)}", file=sys.stderr)
        return 1
    return rc


def _write_sweep_json(sweep: ml_collections.ConfigDict) -> None:
    sweep_dir = paths.abspath(sweep.sweep_dir)
    paths.write_text(paths.join(sweep_dir, "sweep.json"), sweep.to_json_best_effort(indent=1))


def _results(sweep: ml_collections.ConfigDict) -> int:
    written = sweep_results.write(
        paths.abspath(sweep.sweep_dir),
        metric=sweep.results.metric,
        lowshot_k=sweep.results.lowshot_k,
        gap_models=tuple(sweep.results.gap_models),
    )
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
