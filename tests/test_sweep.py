"""Sweeps (ssl_jax.sweep) and their results (ssl_jax.sweep_results), without training anything:
grid expansion, per-run overrides, skipping finished runs, emitted commands, the local launcher
with a stand-in interpreter, and the table and figures from fabricated results.json files."""

import csv
import json
import os
import stat
import sys
import textwrap

import numpy as np
import pytest

from ssl_jax import config_lib, sweep, sweep_results
from ssl_jax import paths as ssl_paths
from ssl_jax.train import optim as optim_lib

PAPER = "configs/sweeps/paper_axes.py"
CIFAR = "configs/sweeps/cifar_small.py"


@pytest.fixture(scope="module")
def paper_runs():
    return sweep.expand(sweep.load_sweep(PAPER))


@pytest.fixture(scope="module")
def cifar(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar_sweep")
    config = sweep.load_sweep(f"{CIFAR}:sweep_dir={root},data=/nonexistent/cifar10")
    return config, sweep.expand(config)


def _final(step):
    return dict(step.overrides).get("train.stop_after_steps") and int(
        dict(step.overrides)["train.stop_after_steps"]
    )


# ---------------------------------------------------------------------------------------------
# Expansion


def test_paper_axes_counts(paper_runs):
    # One axis at a time: 4 sizes at the default complexity, + the other complexities at 1M.
    per_model = {"jigsaw": 4 + 4, "colorization": 4 + 7}
    assert len(paper_runs) == 2 * sum(per_model.values()) == 38
    for task, n in per_model.items():
        for model in ("alexnet", "r50"):
            assert sum(r.task == task and r.model == model for r in paper_runs) == n
    assert {r.complexity for r in paper_runs if r.task == "jigsaw"} == {100, 701, 2000, 5000, 10000}
    assert {r.complexity for r in paper_runs if r.task == "colorization"} == {
        2, 5, 10, 20, 40, 80, 160, 313
    }  # fmt: skip
    assert len({r.name for r in paper_runs}) == len(paper_runs)
    product = sweep.expand(sweep.load_sweep(f"{PAPER}:product"))
    assert len(product) == 2 * 4 * (5 + 8) == 104


def test_paper_axes_run_overrides(paper_runs):
    run = next(r for r in paper_runs if r.name == "colorization_r50_n10000000_K10")
    overrides = dict(run.pretrain.overrides)
    assert run.pretrain.spec.endswith("configs/colorize_r50.py")
    assert overrides["data.data_size"] == "10000000"
    assert overrides["colorization.k"] == "10"
    assert "jigsaw.num_perms" not in overrides
    assert overrides["data.source"] == "filelist"
    assert overrides["optim.decay_epochs"] == "(3.0, 6.0, 9.0)"
    assert "train.stop_after_steps" not in overrides  # steps = 0: the epochs schedule
    assert run.pretrain.workdir == os.path.join(run.directory, "pretrain")
    assert sorted(s.name for s in run.benchmarks) == [
        "eval_places205_linear", "eval_voc07_lowshot", "eval_voc07_svm"
    ]  # fmt: skip
    for step in run.benchmarks:
        assert dict(step.overrides)["pretrained"] == run.pretrain.workdir
        assert step.workdir == os.path.join(run.directory, step.name)
    jig = next(r for r in paper_runs if r.name == "jigsaw_alexnet_n1000000_P701")
    assert dict(jig.pretrain.overrides)["jigsaw.num_perms"] == "701"
    # The overrides apply to the base config: the resolved config has the run's values.
    config = sweep.check_overrides(jig.pretrain.spec, None, jig.pretrain.overrides, "test")
    assert config.jigsaw.num_perms == 701 and config.data.data_size == 1_000_000
    assert config.model.name == "alexnet" and config.optim.epochs == 10.0
    # The paper's YFCC schedule: lr 0.1 (batch 256) from the first step, x0.1 at epochs 3, 6, 9.
    assert config.optim.warmup_epochs == 0.0
    plan = optim_lib.make_plan(config.optim, 1_000_000)
    schedule = optim_lib.make_schedule(plan, config.optim.decay_factor)
    epoch = plan.steps_per_epoch
    lrs = [float(schedule(s)) for s in (0, 3 * epoch - 1, 3 * epoch, 6 * epoch, 9 * epoch)]
    np.testing.assert_allclose(lrs, [0.1, 0.1, 0.01, 0.001, 0.0001], rtol=1e-6)


def test_cifar_small_budget(cifar):
    config, runs = cifar
    assert [r.name for r in runs] == [
        "jigsaw_r18tiny_n1000_P10", "jigsaw_r18tiny_n1000_P100",
        "jigsaw_r18tiny_n4000_P10", "jigsaw_r18tiny_n4000_P100",
    ]  # fmt: skip
    for run in runs:
        resolved = sweep.check_overrides(run.pretrain.spec, None, run.pretrain.overrides, "test")
        assert resolved.model.depth == 18 and resolved.model.width == 0.125
        assert resolved.jigsaw.num_perms == run.complexity
        # The scaled schedule ends exactly after `steps` updates at this data size.
        plan = optim_lib.make_plan(resolved.optim, run.data_size)
        assert plan.total_steps == config.steps == resolved.train.stop_after_steps
        assert plan.decay_steps == (round(0.8 * config.steps),)
        assert plan.warmup_steps == round(0.1 * config.steps)
        assert sweep.final_step(run.pretrain) == config.steps


def test_cifar_axes_grid(tmp_path):
    """RESULTS.md's axes sweep: 24 runs, each 3120 updates of the small-scale recipe."""
    config = sweep.load_sweep(f"configs/sweeps/cifar_axes.py:sweep_dir={tmp_path},seed=3")
    runs = sweep.expand(config)
    assert len(runs) == 24
    by_name = {r.name: r for r in runs}
    run = by_name["colorization_alexnet_n2500_K10"]
    resolved = sweep.check_overrides(run.pretrain.spec, None, run.pretrain.overrides, "test")
    assert (resolved.task, resolved.model.name, resolved.seed) == ("colorization", "alexnet", 3)
    assert resolved.data.data_size == 2500 and resolved.colorization.k == 10
    plan = optim_lib.make_plan(resolved.optim, run.data_size)
    assert plan.total_steps == 3120 == resolved.train.stop_after_steps
    run = by_name["jigsaw_r18_n10000_P1000"]
    resolved = sweep.check_overrides(run.pretrain.spec, None, run.pretrain.overrides, "test")
    assert (resolved.model.depth, resolved.model.width, resolved.jigsaw.num_perms) == (
        18,
        0.125,
        1000,
    )
    assert "configs/cifar/svm.py" in run.benchmarks[0].spec
    # Only AlexNet's runs read features at 112 pixels (its Colorization trunk needs >= 67).
    assert ("features.size", "112") not in run.benchmarks[0].overrides
    alexnet = by_name["colorization_alexnet_n2500_K10"].benchmarks[0]
    assert alexnet.overrides[-1] == ("features.size", "112")
    resolved = sweep.check_overrides(alexnet.spec, None, alexnet.overrides[1:], "test")
    assert resolved.features.size == 112


def test_select_exact_name_or_substring(tmp_path):
    runs = sweep.expand(sweep.load_sweep(f"configs/sweeps/cifar_axes.py:sweep_dir={tmp_path}"))
    names = lambda only: [r.name for r in sweep.select(runs, only)]  # noqa: E731
    assert names(["jigsaw_r18_n10000_P10"]) == ["jigsaw_r18_n10000_P10"]
    assert names(["jigsaw_r18_n10000_P1"]) == [
        "jigsaw_r18_n10000_P100",
        "jigsaw_r18_n10000_P10",
        "jigsaw_r18_n10000_P1000",
    ]
    assert len(names(["_r18_"])) == 12 and len(names([])) == 24
    assert names(["jigsaw_r18_n1000_P100", "K40"]) == [
        "jigsaw_r18_n1000_P100",
        "colorization_alexnet_n10000_K40",
        "colorization_r18_n10000_K40",
    ]


def test_benchmark_model_overrides_checked(tmp_path):
    config = sweep.load_sweep(f"configs/sweeps/cifar_axes.py:sweep_dir={tmp_path}")
    spec = config.benchmarks.voc07_svm.config
    config.benchmarks.voc07_svm = sweep.benchmark(spec, model_overrides={"vgg": ("svm.c=1",)})
    with pytest.raises(config_lib.ConfigError, match=r"\['vgg'\].*config.models"):
        sweep.expand(config)
    config.benchmarks.voc07_svm = sweep.benchmark(spec, model_overrides={"r18": ("features.s=1",)})
    with pytest.raises(config_lib.ConfigError, match=r"benchmark voc07_svm \(r18\)"):
        sweep.expand(config)


def test_config_errors(cifar):
    config, _ = cifar
    bad = sweep.load_sweep(CIFAR, [("grid", "diagonal")])
    with pytest.raises(config_lib.ConfigError, match="product"):
        sweep.expand(bad)
    bad = sweep.load_sweep(CIFAR, [("overrides", "('optim.base_lrr=0.1',)")])
    with pytest.raises(config_lib.ConfigError, match="optim.base_lr"):
        sweep.expand(bad)
    bad = sweep.load_sweep(CIFAR, [("data_sizes", "(0.5,)")])
    with pytest.raises(config_lib.ConfigError, match="config.steps"):
        sweep.expand(bad)
    bad = sweep.load_sweep(CIFAR, [("models", "('r50',)")])
    with pytest.raises(config_lib.ConfigError, match="config.pretrain.jigsaw_r50"):
        sweep.expand(bad)


# ---------------------------------------------------------------------------------------------
# Finished runs, emitted commands


def _finish_pretrain(run, step):
    os.makedirs(os.path.join(run.pretrain.workdir, "checkpoints", str(step)), exist_ok=True)


def _finish_benchmark(step, results=None):
    os.makedirs(step.workdir, exist_ok=True)
    with open(os.path.join(step.workdir, "results.json"), "w") as f:
        json.dump(results or {}, f)


def test_skip_finished(tmp_path):
    config = sweep.load_sweep(f"{CIFAR}:sweep_dir={tmp_path}")
    runs = sweep.expand(config)
    a, b, c, d = runs
    _finish_pretrain(a, 300)
    _finish_benchmark(a.benchmarks[0])
    _finish_pretrain(b, 200)  # interrupted: resumes
    os.makedirs(os.path.join(c.pretrain.workdir, "checkpoints", "300.orbax-checkpoint-tmp-1"))
    _finish_pretrain(d, 300)  # pretrained, benchmark missing
    assert sweep.pending_steps(a) == []
    assert sweep.pending_steps(b, _final) == [b.pretrain, *b.benchmarks]
    assert sweep.latest_checkpoint(c.pretrain.workdir) is None
    assert sweep.pending_steps(c, _final) == [c.pretrain, *c.benchmarks]
    assert sweep.pending_steps(d, _final) == list(d.benchmarks)

    commands = sweep.emit_commands(runs, "python", _final)
    lines = commands.splitlines()
    assert f"# {a.name}: finished" in lines
    assert sum("-m ssl_jax.main" in line for line in lines) == 3
    d_line = next(line for line in lines if d.name in line and "mkdir" in line)
    assert f"--config.pretrained={d.pretrain.workdir}" in d_line
    assert d_line.count("-m ssl_jax.main") == 1  # only its benchmark
    b_line = next(line for line in lines if b.name in line and "mkdir" in line)
    assert "--config.data.data_size=1000" in b_line and "--config.jigsaw.num_perms=100" in b_line
    assert b_line.index("/pretrain ") < b_line.index("--config.pretrained=")
    assert f"> {b.pretrain.log} 2>&1 &&" in b_line

    script = sweep.emit_slurm(runs, "python", config.slurm, _final)
    assert script.startswith("#!/bin/bash")
    assert f"# {a.name}: finished" in script
    sbatch = [line for line in script.splitlines() if "sbatch --parsable" in line]
    assert len(sbatch) == 5  # b: pretrain + svm, c: pretrain + svm, d: svm
    b_jobs = [line for line in sbatch if f"--job-name={b.name}/" in line]
    assert b_jobs[0].startswith("JOB_1=$(sbatch --parsable")
    assert "--dependency=afterok:$JOB_1" in b_jobs[1]
    d_jobs = [line for line in sbatch if f"--job-name={d.name}/" in line]
    assert len(d_jobs) == 1 and "--dependency" not in d_jobs[0]
    assert all(config.slurm.pretrain_args in line for line in sbatch)


FAKE_PYTHON = """\
#!{python}
# Stands in for `python -m ssl_jax.main`: writes what a finished step leaves behind.
import json, os, sys
args = dict(a[2:].split("=", 1) for a in sys.argv[3:] if a.startswith("--") and "=" in a)
workdir = args["workdir"]
if os.environ.get("FAIL_ON") and os.environ["FAIL_ON"] in workdir:
    print("boom", file=sys.stderr)
    sys.exit(3)
if "config.pretrained" in args:
    os.makedirs(workdir, exist_ok=True)
    json.dump({{"evaluation": "voc07_svm", "layers": {{"res5": {{"mAP": 0.5}}}}}},
              open(os.path.join(workdir, "results.json"), "w"))
else:
    os.makedirs(os.path.join(workdir, "checkpoints", args["config.train.stop_after_steps"]))
print("ok")
"""


def test_launch_runs_skips_and_stops(tmp_path, monkeypatch):
    fake = tmp_path / "fake_python"
    fake.write_text(FAKE_PYTHON.format(python=sys.executable))
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    config = sweep.load_sweep(f"{CIFAR}:sweep_dir={tmp_path / 'sweep'}")
    runs = sweep.expand(config)
    messages = []

    monkeypatch.setenv("FAIL_ON", "n1000_P100/eval")
    failed = sweep.launch(runs, str(fake), final=_final, out=messages.append)
    assert failed == [runs[1].name]
    assert sweep.pending_steps(runs[0], _final) == []
    assert sweep.pending_steps(runs[1], _final) == list(runs[1].benchmarks)
    assert not os.path.exists(runs[2].directory)  # stopped at the first failure
    assert any("FAILED" in m and "exit code 3" in m and "boom" in m for m in messages)
    with open(os.path.join(runs[0].directory, "run.json")) as f:
        described = json.load(f)
    assert described["data_size"] == 1000 and described["complexity"] == 10
    assert "--config.jigsaw.num_perms=10" in described["pretrain"]["command"]

    messages.clear()
    failed = sweep.launch(runs, str(fake), keep_going=True, final=_final, out=messages.append)
    assert failed == [runs[1].name]
    assert all(sweep.pending_steps(r, _final) == [] for r in (runs[0], runs[2], runs[3]))
    assert f"[1/4] {runs[0].name}: finished, skipped" in messages

    monkeypatch.delenv("FAIL_ON")
    assert sweep.launch(runs, str(fake), final=_final, out=messages.append) == []
    assert all(sweep.pending_steps(r, _final) == [] for r in runs)


def test_main_dry_run_and_errors(tmp_path, capsys):
    assert (
        sweep.main(["--config", f"{CIFAR}:sweep_dir={tmp_path}", "--dry_run", "--only=P100"]) == 0
    )
    out = capsys.readouterr().out
    assert "2 runs" in out and "jigsaw_r18tiny_n4000_P100: to run: pretrain, eval_voc07_svm" in out
    assert not os.listdir(tmp_path)  # a dry run writes nothing
    assert sweep.main(["--config", CIFAR, "--config.gridd=axes", "--dry_run"]) == 2
    assert "config.grid" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# Results: table and figures from fabricated results.json files


def _svm(values):
    layers = {k: {"mAP": v / 100, "dims": 8} for k, v in values.items()}
    return {"evaluation": "voc07_svm", "layers": layers}


def _lowshot(values):
    layers = {
        k: {"ks": {"1": {"mean": v / 200}, "8": {"mean": v / 100}}} for k, v in values.items()
    }
    return {"evaluation": "voc07_lowshot", "layers": layers}


def _linear(values):
    return {"evaluation": "linear", "layers": {k: {"top1": v} for k, v in values.items()}}


def _fabricate(root, runs, single_size=False):
    """Scores rising with log data size and complexity; r50 gains more from data than alexnet."""
    import math

    for run in runs:
        if single_size and run.data_size != 1_000_000:
            continue
        _finish_pretrain(run, 100)
        gain = 3.0 if run.model == "r50" else 1.0
        base = 20 + gain * math.log10(run.data_size / 1e6) + math.log10(run.complexity)
        layers = {"conv1": base - 10, "res4": base + 2, "res5": base}
        for step in run.benchmarks:
            kind = step.name.removeprefix("eval_")
            make = {"voc07_svm": _svm, "voc07_lowshot": _lowshot, "places205_linear": _linear}[kind]
            _finish_benchmark(step, make(layers))
        with open(os.path.join(run.directory, "run.json"), "w") as f:
            json.dump(run.describe(), f)


@pytest.fixture(scope="module")
def fabricated(tmp_path_factory):
    root = tmp_path_factory.mktemp("paper_sweep")
    config = sweep.load_sweep(f"{PAPER}:sweep_dir={root}")
    runs = sweep.expand(config)
    _fabricate(str(root), runs)
    return str(root), runs


def test_collect_and_table(fabricated):
    root, runs = fabricated
    rows = sweep_results.collect(root)
    assert len(rows) == len(runs) == 38
    row = next(r for r in rows if r["run"] == "jigsaw_r50_n10000000_P2000")
    svm = row["benchmarks"]["voc07_svm"]
    assert svm["best_layer"] == "res4"
    assert svm["best"] == pytest.approx(20 + 3 + 3.30103 + 2, abs=1e-4)
    assert svm["layers"]["conv1"] == pytest.approx(svm["best"] - 12, abs=1e-4)
    low = row["benchmarks"]["voc07_lowshot"]  # the largest k (8) by default
    assert low["best"] == pytest.approx(svm["best"], abs=1e-4) and "k=8" in low["note"]
    low1 = sweep_results.collect(root, lowshot_k=1)
    assert next(r for r in low1 if r["run"] == row["run"])["benchmarks"]["voc07_lowshot"][
        "best"
    ] == pytest.approx(svm["best"] / 2, abs=1e-4)
    assert row["benchmarks"]["places205_linear"]["unit"] == "top-1 (%)"
    assert row["pretrain_step"] == 100

    paths = sweep_results.write(root, gap_models=("alexnet", "r50"))
    with open(paths[0]) as f:
        table = list(csv.DictReader(f))
    assert len(table) == 38
    columns = {"run", "task", "model", "data_size", "axis", "complexity", "voc07_svm",
               "voc07_svm_layer", "voc07_svm/res4", "places205_linear/conv1"}  # fmt: skip
    assert columns <= set(table[0])
    csv_row = next(r for r in table if r["run"] == row["run"])
    assert float(csv_row["voc07_svm"]) == pytest.approx(svm["best"], abs=0.01)
    with open(paths[1]) as f:
        md = f.read()
    assert f"| {row['run']} | jigsaw | r50 | 10M | P=2000 | 100 | {svm['best']:.2f} (res4)" in md
    assert "## voc07_lowshot" in md and "left out" not in md
    assert sorted(os.path.basename(p) for p in paths[2:]) == [
        "fig_colorization_k.png", "fig_data_size.png", "fig_model_gap.png", "fig_permutations.png"
    ]  # fmt: skip
    for path in paths[2:]:
        with open(path, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
        assert os.path.getsize(path) > 10_000


def test_figures(fabricated):
    root, _ = fabricated
    rows = sweep_results.collect(root)
    figs, notes = sweep_results.figures(rows, "voc07_svm", ("alexnet", "r50"))
    assert notes == [] and set(figs) == {"data_size", "permutations", "colorization_k", "model_gap"}
    for key, fig in figs.items():
        for ax in fig.axes:
            assert ax.get_xlabel() and ax.get_ylabel() and ax.get_title(), key
            assert ax.get_xscale() == "log", key
            assert ax.get_legend() is not None, key
    panels = figs["data_size"].axes
    assert [ax.get_title().split(":")[0] for ax in panels] == ["colorization", "jigsaw"]
    jigsaw_lines = {line.get_label(): line for line in panels[1].get_lines()}
    assert set(jigsaw_lines) == {"alexnet, P=2000", "r50, P=2000"}
    assert list(jigsaw_lines["r50, P=2000"].get_xdata()) == [1e6, 1e7, 5e7, 1e8]
    perm_lines = figs["permutations"].axes[0].get_lines()
    assert {len(line.get_xdata()) for line in perm_lines} == {5}
    assert len(figs["colorization_k"].axes[0].get_lines()[0].get_xdata()) == 8
    # The gap (r50 - alexnet) grows with data size: 2 * log10(N / 1M).
    gap_ax = figs["model_gap"].axes[0]
    gap_line = next(l for l in gap_ax.get_lines() if l.get_label() == "jigsaw, P=2000")  # noqa: E741
    assert list(gap_line.get_ydata()) == pytest.approx([0.0, 2.0, 3.39794, 4.0], abs=1e-4)
    assert "alexnet" in gap_ax.get_ylabel() and "r50" in gap_ax.get_ylabel()


def test_figures_left_out_with_notes(tmp_path):
    config = sweep.load_sweep(f"{PAPER}:sweep_dir={tmp_path}")
    _fabricate(str(tmp_path), sweep.expand(config), single_size=True)
    paths = sweep_results.write(str(tmp_path))
    names = sorted(os.path.basename(p) for p in paths[2:])
    assert names == ["fig_colorization_k.png", "fig_permutations.png"]
    with open(paths[1]) as f:
        md = f.read()
    assert "fig_data_size.png left out: one data size in the sweep (1M)" in md
    assert "fig_model_gap.png left out" in md


def test_results_cli(fabricated, tmp_path, capsys):
    root, _ = fabricated
    out = tmp_path / "out"
    args = [f"--sweep_dir={root}", f"--out_dir={out}", "--gap_models=r50,alexnet"]
    assert sweep_results.main(args) == 0
    printed = capsys.readouterr().out.split()
    assert str(out / "runs.md") in printed and str(out / "fig_model_gap.png") in printed
    assert sweep_results.main([f"--sweep_dir={tmp_path / 'missing'}"]) == 2
    # One layer's figures.
    assert sweep_results.main(args + ["--metric=voc07_svm/conv1"]) == 0
    with open(out / "runs.md") as f:
        assert "Transfer metric in the figures: voc07_svm, layer conv1." in f.read()


def test_config_docstrings_document_the_format():
    for path in (PAPER, CIFAR):
        with open(os.path.join(sweep.REPO_ROOT, path)) as f:
            text = f.read()
        assert "python -m ssl_jax.sweep --config=" in text
    with open(os.path.join(sweep.REPO_ROOT, PAPER)) as f:
        doc = f.read()
    for field in ("sweep_dir", "pretrain", "data_sizes", "complexity", "benchmarks", "steps",
                  "overrides", "slurm", "results"):  # fmt: skip
        assert textwrap.dedent(f"  {field}") in doc


# ---------------------------------------------------------------------------------------------
# Colorization's ab bin size as a second axis


def test_bin_size_axis_runs_names_and_overrides(tmp_path):
    runs = sweep.expand(sweep.load_sweep(f"{PAPER}:bins,sweep_dir={tmp_path}"))
    assert len(runs) == 38 + 2 * 3
    named = {r.name: r for r in runs}
    for model in ("alexnet", "r50"):
        for size in (5, 15, 20):
            run = named[f"colorization_{model}_n1000000_K10_bin{size}"]
            overrides = dict(run.pretrain.overrides)
            assert overrides["colorization.bin_size"] == str(size)
            assert overrides["colorization.k"] == "10"
            resolved = sweep.check_overrides(run.pretrain.spec, None, run.pretrain.overrides, "t")
            assert resolved.colorization.bin_size == size
            assert run.describe()["extra_axes"] == {"bin": size}
            assert run.describe()["extra_defaults"] == {"bin": 10}
    # Runs at the default bin size keep their names, and set it explicitly.
    default = named["colorization_r50_n10000000_K10"]
    assert dict(default.pretrain.overrides)["colorization.bin_size"] == "10"
    assert "colorization_r50_n1000000_K10_bin10" not in named
    assert all("bin_size" not in dict(r.pretrain.overrides) for r in runs if r.task == "jigsaw")
    # The CIFAR axes sweep: the same axis at its defaults (10,000 images, K = 10).
    cifar_runs = sweep.expand(
        sweep.load_sweep(f"configs/sweeps/cifar_axes.py:bins,sweep_dir={tmp_path}")
    )
    assert sorted(r.name for r in cifar_runs if "_bin" in r.name) == sorted(
        f"colorization_{m}_n10000_K10_bin{s}" for m in ("alexnet", "r18") for s in (5, 15, 20)
    )
    # A K the bin size cannot hold is refused before anything runs, naming both keys.
    with pytest.raises(
        config_lib.ConfigError, match="colorization.k=160.*colorization.bin_size=20"
    ):
        sweep.expand(sweep.load_sweep(f"{PAPER}:bins,product,sweep_dir={tmp_path}"))
    config = sweep.load_sweep(f"{PAPER}:bins,sweep_dir={tmp_path}")
    config.extra_axes.colorization.bin.default = 12
    with pytest.raises(config_lib.ConfigError, match="extra_axes.colorization.bin.default"):
        sweep.expand(config)


def test_bin_size_axis_results_and_figure(tmp_path):
    config = sweep.load_sweep(f"{PAPER}:bins,sweep_dir={tmp_path}")
    runs = sweep.expand(config)
    _fabricate(str(tmp_path), runs)
    rows = sweep_results.collect(str(tmp_path))
    assert len(rows) == 44
    row = next(r for r in rows if r["run"] == "colorization_r50_n1000000_K10_bin15")
    assert sweep_results.off_default(row) == {"bin": 15}
    figs, notes = sweep_results.figures(rows, "voc07_svm")
    assert notes == []
    assert set(figs) == {"data_size", "permutations", "colorization_k", "colorization_bin",
                         "model_gap"}  # fmt: skip
    # The K figure holds the default-bin runs only; the bin figure the 4 sizes at K = 10, 1M.
    assert len(figs["colorization_k"].axes[0].get_lines()[0].get_xdata()) == 8
    lines = figs["colorization_bin"].axes[0].get_lines()
    assert {line.get_label() for line in lines} == {
        "alexnet, 1M images, K=10",
        "r50, 1M images, K=10",
    }
    assert [list(line.get_xdata()) for line in lines] == [[5, 10, 15, 20]] * 2
    paths = sweep_results.write(str(tmp_path))
    assert "fig_colorization_bin.png" in {os.path.basename(p) for p in paths}
    with open(paths[1]) as f:
        assert (
            "| colorization_r50_n1000000_K10_bin15 | colorization | r50 | 1M | K=10, bin=15 |"
            in f.read()
        )
    with open(paths[0]) as f:
        table = {r["run"]: r for r in csv.DictReader(f)}
    assert table["colorization_r50_n1000000_K10_bin15"]["extra_axes"] == "bin=15"
    assert table["colorization_r50_n1000000_K10"]["extra_axes"] == ""
    # Without run.json the name alone gives the off-default axis.
    for run in runs:
        os.remove(os.path.join(run.directory, "run.json"))
    row = next(r for r in sweep_results.collect(str(tmp_path)) if r["run"].endswith("_bin20"))
    assert (row["model"], row["complexity"], sweep_results.off_default(row)) == (
        "alexnet",
        10,
        {"bin": 20},
    )


# ---------------------------------------------------------------------------------------------
# runs.csv read back, and the per-axis figures of the notebook


def _plotted(figs):
    """What each figure shows: per axes its titles and labels, per line its label and points."""
    return {
        key: [
            (ax.get_title(), ax.get_xlabel(), ax.get_ylabel(),
             [(line.get_label(), list(line.get_xdata()), list(line.get_ydata()))
              for line in ax.get_lines()])
            for ax in fig.axes
        ]
        for key, fig in figs.items()
    }  # fmt: skip


def _assert_same_plots(got, want):
    assert set(got) == set(want)
    for key in want:
        for (*labels, lines), (*want_labels, want_lines) in zip(got[key], want[key], strict=True):
            assert labels == want_labels, key
            assert [(name, x) for name, x, _ in lines] == [(name, x) for name, x, _ in want_lines]
            for (name, _, y), (_, _, want_y) in zip(lines, want_lines, strict=True):
                assert y == pytest.approx(want_y, abs=0.005), (key, name)  # the CSV's 2 decimals


def test_csv_reads_back_into_the_same_figures(tmp_path):
    """write_csv -> read_csv draws what the run directories draw, second axis included."""
    config = sweep.load_sweep(f"{PAPER}:bins,sweep_dir={tmp_path / 'sweep'}")
    _fabricate(str(tmp_path / "sweep"), sweep.expand(config))
    rows = sweep_results.collect(str(tmp_path / "sweep"))
    table = str(tmp_path / "runs.csv")
    sweep_results.write_csv(rows, table)
    back = sweep_results.read_csv(table)
    assert [r["run"] for r in back] == [r["run"] for r in rows]
    row = next(r for r in back if r["run"] == "colorization_r50_n1000000_K10_bin15")
    assert (row["data_size"], row["complexity"], row["pretrain_step"]) == (1_000_000, 10, 100)
    assert sweep_results.off_default(row) == {"bin": 15}
    assert row["benchmarks"]["places205_linear"]["unit"] == "top-1 (%)"
    for metric in ("voc07_svm", "voc07_svm/conv1", "places205_linear"):
        want, want_notes = sweep_results.figures(rows, metric)
        got, notes = sweep_results.figures(back, metric)
        assert notes == want_notes == []
        _assert_same_plots(_plotted(got), _plotted(want))
    # A results folder reads through its runs.csv, a sweep folder through its run directories.
    assert [r["run"] for r in sweep_results.read(str(tmp_path))] == [r["run"] for r in rows]
    assert sweep_results.read(str(tmp_path / "sweep"))[0]["benchmarks"] == rows[0]["benchmarks"]
    with pytest.raises(FileNotFoundError, match="no runs.csv and no run directories"):
        sweep_results.read(str(tmp_path / "sweep" / rows[0]["run"]))
    with open(table, "w") as f:
        f.write("run,task,model\nx,jigsaw,r50\n")
    with pytest.raises(ValueError, match=r"no column\(s\) \['data_size', 'axis', 'complexity'\]"):
        sweep_results.read_csv(table)


def test_read_the_repository_results():
    """The CIFAR-10 axes in the repository (a runs.csv written before the extra_axes column)
    read back into every figure, per layer as well."""
    rows = sweep_results.read(os.path.join(sweep.REPO_ROOT, "benchmarks/results/cifar_axes"))
    assert len(rows) == 24
    row = next(r for r in rows if r["run"] == "jigsaw_r18_n10000_P1000")
    svm = row["benchmarks"]["voc07_svm"]
    assert (svm["best"], svm["best_layer"], svm["layers"]["res5"]) == (41.11, "res2", 20.76)
    assert "conv2" not in svm["layers"]  # blank cells: layers the r18 trunk does not have
    figs, notes = sweep_results.figures(rows, gap_models=("alexnet", "r18"))
    assert notes == [] and set(figs) == {"data_size", "permutations", "colorization_k",
                                         "model_gap"}  # fmt: skip
    assert sweep_results.measures(rows)[:2] == [
        ("voc07_svm: best layer", "voc07_svm"),
        ("voc07_svm: conv1", "voc07_svm/conv1"),
    ]


def test_read_results_from_a_bucket(gcs_bucket):
    local = os.path.join(sweep.REPO_ROOT, "benchmarks/results/cifar_axes")
    with open(os.path.join(local, "runs.csv")) as f:
        ssl_paths.write_text(f"{gcs_bucket}/cifar_axes/runs.csv", f.read())
    assert sweep_results.read(f"{gcs_bucket}/cifar_axes") == sweep_results.read(local)
    with pytest.raises(FileNotFoundError, match="gs://ssl-test/nothing holds no runs.csv"):
        sweep_results.read(f"{gcs_bucket}/nothing")


def test_per_axis_figures_plot_the_chosen_measure(fabricated):
    rows = sweep_results.collect(fabricated[0])
    assert ("voc07_svm: res5", "voc07_svm/res5") in sweep_results.measures(rows)
    # A layer's values, not the best layer's (res4 = conv1 + 12 in the fabricated results).
    best = _plotted({"f": sweep_results.data_size_figure(rows, "voc07_svm")})["f"]
    conv1 = _plotted({"f": sweep_results.data_size_figure(rows, "voc07_svm/conv1")})["f"]
    assert [ax[2] for ax in conv1] == ["voc07_svm mAP (%), conv1"] * 2
    for (*_, lines), (*_, best_lines) in zip(conv1, best, strict=True):
        for (_, _, y), (_, _, best_y) in zip(lines, best_lines, strict=True):
            assert np.allclose(np.array(y) + 12, best_y)
    jigsaw = sweep_results.complexity_figure(rows, "jigsaw", "voc07_svm/res5").axes[0]
    colorization = sweep_results.complexity_figure(rows, "colorization").axes[0]
    assert "|P|" in jigsaw.get_xlabel() and "K" in colorization.get_xlabel()
    perms = sorted({r["complexity"] for r in rows if r["task"] == "jigsaw"})
    assert [t.get_text() for t in jigsaw.get_xticklabels()] == [str(p) for p in perms]
    gap = sweep_results.model_gap_figure(rows, "voc07_lowshot/res5", ("alexnet", "r50")).axes[0]
    assert gap.get_ylabel() == "r50 - alexnet: voc07_lowshot mAP (%), res5"
    # Nothing to draw: a figure that says why; a bad choice: an error naming the known ones.
    note = sweep_results.model_gap_figure(rows, models=("alexnet", "r18"))
    assert "Nothing to draw: no runs with results of model(s) ['r18']" in note.texts[0].get_text()
    with pytest.raises(ValueError, match=r"measure='voc07_svm/res9'.*'voc07_svm/res5'"):
        sweep_results.data_size_figure(rows, "voc07_svm/res9")
    with pytest.raises(ValueError, match="task='rotation'"):
        sweep_results.complexity_figure(rows, "rotation")
