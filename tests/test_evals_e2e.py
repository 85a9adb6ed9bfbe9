"""SVM benchmarks through the main entry point: from a pretraining workdir, and attached to
pretraining."""

import json
import os

import numpy as np
import pytest

from ssl_jax import main as main_lib
from ssl_jax.train.metrics import read_metrics

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
TINY = "configs/jigsaw_r50.py:runlocal,depth=18,width=0.125"
EVAL_LAYERS = "--config.features.layers=('conv1','res4','pool5')"


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A 4-step Jigsaw run with the VOC07 SVM benchmark (demo data) attached at its last step."""
    workdir = str(tmp_path_factory.mktemp("pretrain"))
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        rc = main_lib.main(
            [
                f"--config={os.path.join(ROOT, TINY)}",
                f"--workdir={workdir}",
                "--config.train.progress_bar=False",
                "--config.train.log_every=2",
                "--config.train.checkpoint_every=2",
                "--config.train.stop_after_steps=4",
                "--config.evals.voc07_svm.every_steps=4",  # on the demo photos, as :runlocal
                "--config.evals.voc07_svm.features.layers=('res4','pool5')",
            ]
        )
    finally:
        os.chdir(cwd)
    assert rc == 0
    return workdir


def _run_eval(spec, pretrained, workdir, *extra):
    return main_lib.main(
        [
            f"--config={os.path.join(ROOT, spec)}",
            f"--config.pretrained={pretrained}",
            f"--workdir={workdir}",
            EVAL_LAYERS,
            *extra,
        ]
    )


def test_attached_evaluation_logs_map(pretrained):
    results = os.path.join(pretrained, "evals", "voc07_svm", "step_4", "results.json")
    with open(results) as f:
        r = json.load(f)
    assert set(r["layers"]) == {"res4", "pool5"}
    assert r["pretrained_step"] == 4
    logged = [m for m in read_metrics(pretrained) if "voc07_svm/res4" in m]
    assert len(logged) == 1 and logged[0]["step"] == 4
    assert logged[0]["voc07_svm/res4"] == pytest.approx(100 * r["layers"]["res4"]["mAP"])


def test_runlocal_probe_logs_per_layer_accuracy(pretrained):
    # :runlocal configs run the few-shot probe on the demo photos; here at the last step.
    logged = [m for m in read_metrics(pretrained) if any(k.startswith("probe/") for k in m)]
    assert [m["step"] for m in logged] == [4]
    for layer in ("conv1", "res2", "res3", "res4", "res5", "pool5"):
        for shots in (1, 5, 10):
            assert 0.0 <= logged[0][f"probe/{layer}/{shots}shot"] <= 100.0
    assert os.path.isfile(os.path.join(pretrained, "evals", "probe", "step_4", "results.json"))


def test_voc07_svm_runlocal_end_to_end(pretrained, tmp_path):
    out = str(tmp_path / "svm")
    assert _run_eval("configs/evals/voc07_svm.py:runlocal", pretrained, out) == 0
    with open(os.path.join(out, "results.json")) as f:
        r = json.load(f)
    assert list(r["layers"]) == ["conv1", "res4", "pool5"]  # the table's order
    assert r["train"]["images"] == r["test"]["images"] > 0
    for layer in r["layers"].values():
        assert 0.0 <= layer["mAP"] <= 1.0
        assert len(layer["classes"]) == 6  # the six demo photos
        for c in layer["classes"]:
            assert c["cost"] in (1e-2, 0.1, 1.0, 10.0)
    table = open(os.path.join(out, "results.md")).read()
    assert "| conv1 |" in table and "| pool5 |" in table
    # Rerunning reuses the stored features (same weights and data) and gives the same numbers.
    assert _run_eval("configs/evals/voc07_svm.py:runlocal", pretrained, out) == 0
    with open(os.path.join(out, "results.json")) as f:
        again = json.load(f)
    for name in r["layers"]:
        assert again["layers"][name]["mAP"] == r["layers"][name]["mAP"]


def test_random_init_and_lowshot(pretrained, tmp_path):
    out = str(tmp_path / "lowshot")
    rc = _run_eval(
        "configs/evals/voc07_lowshot.py:runlocal", pretrained, out, "--config.random_init=True"
    )
    assert rc == 0
    with open(os.path.join(out, "results.json")) as f:
        r = json.load(f)
    assert r["random_init"] and r["pretrained_step"] is None
    for layer in r["layers"].values():
        assert layer["selection"] == "test-selected"
        assert sorted(layer["ks"], key=int) == ["1", "2", "4"]
        for stats in layer["ks"].values():
            assert len(stats["maps"]) == 3
            assert stats["min"] <= stats["mean"] <= stats["max"]
    assert "test-selected" in open(os.path.join(out, "results.md")).read()


def test_bad_evaluation_configs(tmp_path, pretrained):
    # No pretrained workdir, and a workdir that is not one: config errors, exit code 2.
    assert _run_eval("configs/evals/voc07_svm.py:runlocal", "", str(tmp_path / "a")) == 2
    assert _run_eval("configs/evals/voc07_svm.py:runlocal", str(tmp_path), str(tmp_path)) == 2
    rc = _run_eval(
        "configs/evals/voc07_svm.py:runlocal", pretrained, str(tmp_path / "b"),
        "--config.svm.solver=liblinear",
    )  # fmt: skip
    assert rc == 2
    # A layer the trunk does not have.
    rc = main_lib.main(
        [
            f"--config={os.path.join(ROOT, 'configs/evals/voc07_svm.py:runlocal')}",
            f"--config.pretrained={pretrained}",
            f"--workdir={tmp_path / 'c'}",
            "--config.features.layers=('conv9',)",
        ]
    )
    assert rc == 2


def test_places205_lowshot_config_needs_paths():
    from ssl_jax import config_lib

    config = config_lib.load_config(os.path.join(ROOT, "configs/evals/places205_lowshot.py"))
    assert config.data.train.source == "folder" and config.evaluation == "places205_lowshot"
    assert np.isclose(min(config.svm.costs), 1e-7) and len(config.svm.costs) == 26


def test_random_init_reads_no_pretraining_data(tmp_path):
    """The random-init baseline of a Colorization run builds the trunk from the run's config
    alone: its pretraining data (here a folder that does not exist) is never read and no bin
    priors are estimated."""
    from ssl_jax import config_lib

    config = config_lib.load_config(
        os.path.join(ROOT, "configs/colorize_r50.py:runlocal,depth=18,width=0.125")
    )
    missing = str(tmp_path / "no_such_folder")
    config_lib.apply_overrides(config, [("data.source", "folder"), ("data.path", missing)])
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(config.to_json_best_effort())
    out = str(tmp_path / "svm")
    spec = "configs/evals/voc07_svm.py:runlocal"
    rc = _run_eval(spec, str(run), out, "--config.random_init=True")
    assert rc == 0
    with open(os.path.join(out, "results.json")) as f:
        r = json.load(f)
    assert r["random_init"] and r["task"] == "colorization"
    assert os.listdir(run) == ["config.json"]  # no priors, nothing else
