"""ssl_jax.evals.plots: the SVM benchmarks' per-layer and low-shot figures and the per-layer
table, checked on the data they draw (tiny results dicts shaped like results.json)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from matplotlib.figure import Figure

from ssl_jax.evals import plots


def svm_results(maps: dict[str, float]) -> dict:
    """voc07_svm results.json with these mAPs (fractions) per layer."""
    return {
        "evaluation": "voc07_svm",
        "weights": "W step 10",
        "train": {"images": 300},
        "test": {"images": 500},
        "layers": {name: {"mAP": value, "dims": 8} for name, value in maps.items()},
    }


def lowshot_results(curves: dict[str, dict[int, tuple[float, float]]]) -> dict:
    """voc07_lowshot results.json: per layer {k: (mean, std)} (fractions), ks stored as
    strings in the order given."""
    return {
        "evaluation": "voc07_lowshot",
        "weights": "W step 10",
        "layers": {
            name: {
                "samples": 3,
                "ks": {str(k): {"mean": m, "std": s} for k, (m, s) in ks.items()},
            }
            for name, ks in curves.items()
        },
    }


PRETRAINED = svm_results({"conv1": 0.30, "res2": 0.42, "res3": 0.38})
RANDOM = svm_results({"conv1": 0.29, "res2": 0.35, "res3": 0.31})


def data_lines(fig: Figure):
    (ax,) = fig.axes
    return ax, ax.get_lines()


def test_layer_figure_draws_each_weights_map_per_layer():
    fig = plots.layer_figure({"pretrained": PRETRAINED, "random": RANDOM})
    ax, lines = data_lines(fig)
    assert len(lines) == 2
    np.testing.assert_allclose(lines[0].get_ydata(), [30.0, 42.0, 38.0])
    np.testing.assert_allclose(lines[1].get_ydata(), [29.0, 35.0, 31.0])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["conv1", "res2", "res3"]
    np.testing.assert_array_equal(lines[0].get_xdata(), [0, 1, 2])
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["pretrained (best res2: 42.0)", "random (best res2: 35.0)"]
    assert ax.get_ylabel() == "mAP (%)" and "300 train / 500 test" in ax.get_title()


def test_layer_figure_aligns_weights_with_different_layers():
    """A trunk without a layer gets a gap there, not a shifted line."""
    fewer = svm_results({"conv1": 0.1, "res3": 0.2})
    fig = plots.layer_figure({"a": PRETRAINED, "b": fewer})
    _, lines = data_lines(fig)
    y = lines[1].get_ydata()
    assert y[0] == pytest.approx(10.0) and math.isnan(y[1]) and y[2] == pytest.approx(20.0)


def test_lowshot_figure_at_each_weights_best_layer():
    # res2 is best at the largest k (16) although res3 is best at k = 1.
    pretrained = lowshot_results(
        {
            "res3": {16: (0.30, 0.01), 1: (0.20, 0.03), 2: (0.25, 0.02)},
            "res2": {1: (0.15, 0.02), 2: (0.24, 0.01), 16: (0.40, 0.005)},
        }
    )
    random = lowshot_results({"res2": {1: (0.11, 0.01), 2: (0.12, 0.01), 16: (0.14, 0.0)}})
    fig = plots.lowshot_figure({"pretrained": pretrained, "random": random})
    ax, lines = data_lines(fig)
    np.testing.assert_array_equal(lines[0].get_xdata(), [1, 2, 16])  # ks sorted as numbers
    np.testing.assert_allclose(lines[0].get_ydata(), [15.0, 24.0, 40.0])
    np.testing.assert_allclose(lines[1].get_ydata(), [11.0, 12.0, 14.0])
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "pretrained (res2)",
        "random (res2)",
    ]
    assert ax.get_xscale() == "log"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "2", "16"]
    # The band is mean +- std: its vertices span [15 - 2, 40 + 0.5] for pretrained res2.
    band = ax.collections[0].get_paths()[0].vertices[:, 1]
    assert band.min() == pytest.approx(13.0) and band.max() == pytest.approx(40.5)
    assert "3 samples" in ax.get_title() and ax.get_xlabel() == "k (positives per class)"


def test_lowshot_figure_at_a_chosen_layer():
    results = lowshot_results(
        {"res2": {1: (0.2, 0.0), 2: (0.3, 0.0)}, "res3": {1: (0.1, 0.0), 2: (0.15, 0.0)}}
    )
    fig = plots.lowshot_figure({"pretrained": results}, layer="res3")
    _, lines = data_lines(fig)
    np.testing.assert_allclose(lines[0].get_ydata(), [10.0, 15.0])
    assert plots.best_lowshot_layer(results) == "res2"


def test_layer_table():
    table = plots.layer_table({"pretrained": PRETRAINED, "random": RANDOM})
    lines = table.strip().splitlines()
    assert lines[0] == "| layer | pretrained | random | pretrained − random |"
    assert lines[3] == "| res2 | 42.00 | 35.00 | +7.00 |"
    assert len(lines) == 2 + 3


def test_wrong_results_are_named():
    lowshot = lowshot_results({"res2": {1: (0.2, 0.0)}})
    with pytest.raises(ValueError, match=r"'random' are of evaluation='voc07_lowshot'.*voc07_svm"):
        plots.layer_figure({"pretrained": PRETRAINED, "random": lowshot})
    with pytest.raises(ValueError, match=r"evaluation='voc07_svm'.*lowshot"):
        plots.lowshot_figure({"pretrained": PRETRAINED})
    with pytest.raises(ValueError, match=r"Layer 'res9' .* its layers: res2"):
        plots.lowshot_figure({"pretrained": lowshot}, layer="res9")
    with pytest.raises(ValueError, match="No results given"):
        plots.layer_figure({})


def test_lowshot_table():
    pretrained = lowshot_results(
        {"res2": {16: (0.4, 0.005), 1: (0.15, 0.02)}, "res3": {1: (0.2, 0.03), 16: (0.3, 0.01)}}
    )
    random = lowshot_results({"res3": {1: (0.11, 0.01), 16: (0.14, 0.0)}})
    table = plots.lowshot_table({"pretrained": pretrained, "random": random})
    assert table.strip().splitlines() == [
        "| k | pretrained (res2) | random (res3) |",
        "|---|---|---|",
        "| 1 | 15.00 ± 2.00 | 11.00 ± 1.00 |",
        "| 16 | 40.00 ± 0.50 | 14.00 ± 0.00 |",
    ]
    at_res3 = plots.lowshot_table({"pretrained": pretrained}, layer="res3")
    assert "| 1 | 20.00 ± 3.00 |" in at_res3
