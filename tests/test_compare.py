"""ssl_jax.compare: per-layer means over seeds, the best layer and its spread, bad input."""

import json
import os

import pytest

from ssl_jax import compare


def _write(root, name, layers):
    os.makedirs(root / name)
    results = {"layers": {k: {"mAP": v / 100} for k, v in layers.items()}}
    (root / name / "results.json").write_text(json.dumps(results))


def test_means_best_layer_and_spread(tmp_path, capsys):
    _write(tmp_path, "a_s0", {"res4": 40.0, "res5": 30.0})
    _write(tmp_path, "a_s1", {"res4": 44.0, "res5": 50.0})
    _write(tmp_path, "b_s0", {"res4": 20.0, "res5": 10.0})
    assert compare.main([f"A={tmp_path}/a_s*", f"B={tmp_path}/b_s*"]) == 0
    row = compare.summarise("A", compare.collect(f"{tmp_path}/a_s*"))
    assert row["mean"] == pytest.approx({"res4": 42.0, "res5": 40.0})
    assert row["best_layer"] == "res4" and row["best_spread"] == pytest.approx(4.0)
    out = capsys.readouterr().out
    assert "| A | 42.00 | 40.00 | res4 | 42.00 | 4.00 | 2 |" in out
    assert "| B | 20.00 | 10.00 | res4 | 20.00 | 0.00 | 1 |" in out


def test_linear_top1_and_errors(tmp_path, capsys):
    os.makedirs(tmp_path / "lin")
    (tmp_path / "lin" / "results.json").write_text(
        json.dumps({"layers": {"pool5": {"top1": 55.5}}})
    )
    assert compare.summarise("L", compare.collect(str(tmp_path / "lin")))["best_mean"] == 55.5
    assert compare.main([f"X={tmp_path}/missing*"]) == 2
    assert compare.main(["no_equals_sign"]) == 2
    _write(tmp_path, "c_s0", {"res4": 1.0})
    _write(tmp_path, "c_s1", {"res5": 1.0})
    assert compare.main([f"C={tmp_path}/c_s*"]) == 2
    assert "same evaluation" in capsys.readouterr().err
