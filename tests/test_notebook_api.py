"""The library's side of the notebooks: ssl_jax.notebook (configs by spec, the live plot's
series, throughput, the loss figure, whether figures are interactive), metrics listeners, and
the Jigsaw puzzles picture."""

from __future__ import annotations

import json
import math
import os
import sys
import types

import jax
import matplotlib.pyplot as plt
import numpy as np
import pytest
from PIL import Image

from ssl_jax import config_lib, notebook, tasks
from ssl_jax.jigsaw import picture as jigsaw_picture
from ssl_jax.jigsaw import tiles as tiles_lib
from ssl_jax.train import metrics as metrics_lib

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


def test_config_takes_python_values_as_the_command_line_does():
    config = notebook.config(
        "configs/jigsaw_r50.py:runlocal",
        {
            "model.depth": 18,
            "model.width": 0.25,
            "optim.decay_epochs": (4.0, 6.0),
            "train.progress_bar": False,
            "data.source": "demo",
        },
    )
    reference = config_lib.load_config(os.path.join(ROOT, "configs/jigsaw_r50.py:runlocal"))
    config_lib.apply_overrides(
        reference,
        [("model.depth", "18"), ("model.width", "0.25"), ("optim.decay_epochs", "(4.0, 6.0)"),
         ("train.progress_bar", "false"), ("data.source", "demo")],
    )  # fmt: skip
    assert config.to_dict() == reference.to_dict()


def test_config_refuses_an_unknown_key_by_name():
    with pytest.raises(config_lib.ConfigError, match="config.model.dept"):
        notebook.config("configs/jigsaw_r50.py:runlocal", {"model.dept": 18})


def test_listeners_get_each_written_row_while_listening(tmp_path):
    got = []
    writer = metrics_lib.MetricsWriter(str(tmp_path), 0, tensorboard=False)
    with metrics_lib.listening(got.append):
        writer.write(2, {"loss": np.float32(1.5), "images_per_sec": 10.0})
    writer.write(4, {"loss": 1.0})
    assert got == [{"step": 2, "loss": 1.5, "images_per_sec": 10.0}]
    assert [r["step"] for r in metrics_lib.read_metrics(str(tmp_path))] == [2, 4]


def test_live_plot_series_per_device_and_gaps():
    plot = notebook.LivePlot("test")
    plot.add_rows(
        [
            {"step": 2, "loss": 4.0, "images_per_sec": 80.0},
            {"step": 3, "epoch": 1.0},  # not a training row: ignored
            {"step": 4, "loss": "nan", "images_per_sec": 40.0, "top1": 0.5},
        ]
    )
    devices = jax.device_count()
    assert plot.series("images_per_sec", per_device=True) == (
        [2, 4],
        [80.0 / devices, 40.0 / devices],
    )
    steps, loss = plot.series("loss")
    assert steps == [2, 4] and loss[0] == 4.0 and math.isnan(loss[1])
    assert plot.series("top1") == ([4], [0.5])
    assert plot.axes[2].lines[0].get_ydata().tolist() == [80.0 / devices, 40.0 / devices]


def test_throughput_is_the_median_after_compilation():
    rows = [
        {"step": s, "loss": 1.0, "images_per_sec": v}
        for s, v in [(1, 5.0), (2, 30.0), (3, 10.0), (4, 20.0)]
    ]
    speed = notebook.throughput(rows)
    assert speed["images_per_sec"] == 20.0
    assert speed["per_device"] == 20.0 / jax.device_count()
    assert notebook.throughput(rows[:1]) == {}


def test_reassemble_undoes_the_task_shuffle():
    """The picture puts tiles back as tiles_lib.unshuffle_tiles does (an independent inverse)."""
    rng = np.random.default_rng(0)
    perms = np.stack([rng.permutation(9) for _ in range(20)]).astype(np.int32)
    tiles = rng.normal(size=(20, 9, 2, 2, 3)).astype(np.float32)
    labels = np.arange(20, dtype=np.int32)
    shuffled = np.asarray(tiles_lib.shuffle_tiles(tiles, perms, labels))
    expected = np.asarray(tiles_lib.unshuffle_tiles(shuffled, perms, labels))
    for b in range(20):
        np.testing.assert_array_equal(jigsaw_picture.reassemble(shuffled[b], perms[b]), tiles[b])
        np.testing.assert_array_equal(jigsaw_picture.reassemble(shuffled[b], perms[b]), expected[b])


def test_puzzles_picture_of_a_fresh_model(tmp_path):
    config = config_lib.load_config(os.path.join(ROOT, "configs/jigsaw_r50.py:runlocal"))
    config_lib.apply_overrides(config, [("model.depth", "18"), ("jigsaw.gray_prob", "0.0")])
    task = tasks.create(config)
    task.fit(None)
    variables = task.model.init(jax.random.PRNGKey(0), task.example_inputs, train=False)
    crops = np.random.default_rng(1).integers(0, 256, (3, 111, 111, 3), dtype=np.uint8)
    solved = jigsaw_picture.solve(task, variables, crops)
    assert solved["tiles"].shape == (3, 9, 32, 32, 3)
    assert np.all((solved["probability"] > 0) & (solved["probability"] <= 1))
    assert np.all(solved["predicted"] < config.jigsaw.num_perms)
    # The true-order grid holds the crop's own pixels: tile k comes from cell k (offsets < 5).
    truth = jigsaw_picture.reassemble(
        solved["tiles"][0], np.asarray(task.permutations)[solved["labels"][0]]
    )
    mean, std = np.asarray(config.input.mean), np.asarray(config.input.std)
    pixels = np.rint((truth * std + mean) * 255.0)
    for k in range(9):
        row, col = divmod(k, 3)
        cell = crops[0, row * 37 : row * 37 + 37, col * 37 : col * 37 + 37].astype(np.float64)
        found = any(
            np.abs(cell[dy : dy + 32, dx : dx + 32] - pixels[k]).max() <= 1
            for dy in range(6) for dx in range(6)
        )  # fmt: skip
        assert found, f"tile {k} of the true order is not cut from cell {k}"
    path = jigsaw_picture.draw(task, solved, str(tmp_path / "puzzles.png"))
    with Image.open(path) as image:
        width, height = image.size
    side = 3 * 64 + 2 * 3  # tiles enlarged to 64 pixels, 3-pixel gaps
    assert (width, height) == (3 * side + 2 * 12, 3 * (side + 14 + 12))


def write_metrics(workdir, rows):
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_plot_losses_draws_the_total_its_parts_and_the_rate(tmp_path):
    rows = [
        {"step": s, "loss": 3.0 / s, "loss_rpn_cls": 1.0 / s, "loss_cls": 2.0 / s,
         "accuracy": 0.5, "lr": 0.001 * s}
        for s in (4, 8, 12)
    ]  # fmt: skip
    rows.insert(1, {"step": 8, "voc07/mAP": 3.0})  # an attached evaluation's row: not a loss
    write_metrics(tmp_path / "run", rows)
    fig = notebook.plot_losses(str(tmp_path / "run"), str(tmp_path / "figs" / "losses.png"))
    losses, rate = fig.axes
    lines = {line.get_label(): line for line in losses.get_lines()}
    assert set(lines) == {"loss", "loss_cls", "loss_rpn_cls"}
    assert list(lines["loss_cls"].get_xdata()) == [4, 8, 12]
    assert list(lines["loss"].get_ydata()) == pytest.approx([0.75, 0.375, 0.25])
    assert list(rate.get_lines()[0].get_ydata()) == pytest.approx([0.004, 0.008, 0.012])
    assert "step 12" in losses.get_title()
    assert (tmp_path / "figs" / "losses.png").read_bytes()[:4] == b"\x89PNG"


def test_plot_losses_without_a_rate_or_a_run(tmp_path):
    write_metrics(tmp_path / "run", [{"step": 1, "loss": 2.0}, {"step": 2, "loss": "nan"}])
    fig = notebook.plot_losses(str(tmp_path / "run"), title="t")
    assert len(fig.axes) == 1 and fig.get_suptitle() == "t"
    with pytest.raises(ValueError, match=r"no logged loss.*log_every"):
        notebook.plot_losses(str(tmp_path / "nothing"))


def test_interactive_only_where_widgets_show(monkeypatch, capsys):
    """Dropdowns in Colab with ipywidgets, or when asked for; static figures otherwise, saying
    why."""
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    assert notebook.interactive("auto") is False
    assert "Static figures only: not in Colab" in capsys.readouterr().out
    assert notebook.interactive(True) is True
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    assert notebook.interactive("auto") is True
    assert notebook.interactive(False) is False
    assert "INTERACTIVE = False" in capsys.readouterr().out
    monkeypatch.setitem(sys.modules, "ipywidgets", None)  # as if not installed
    assert notebook.interactive("auto") is False
    assert notebook.interactive(True) is False
    assert "ipywidgets is not installed" in capsys.readouterr().out
    with pytest.raises(ValueError, match="INTERACTIVE='yes'"):
        notebook.interactive("yes")


def test_figure_with_dropdowns_saves_the_default_view(tmp_path):
    drawn = []

    def draw(rows, measure):
        drawn.append(measure)
        fig = plt.figure()
        fig.gca().plot(rows, [1, 2, 3] if measure == "b" else [3, 2, 1])
        return fig

    options = [("first", "a"), ("second", "b")]
    path = str(tmp_path / "figures" / "axis.png")
    fig = notebook.figure_with_dropdowns(
        draw, path, False, fixed={"rows": [0, 1, 2]}, choices={"measure": (options, "b")}
    )
    assert drawn == ["b"] and fig.gca().lines[0].get_ydata().tolist() == [1, 2, 3]
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="measure='c' is not one of its options"):
        notebook.figure_with_dropdowns(draw, path, False, choices={"measure": (options, "c")})
