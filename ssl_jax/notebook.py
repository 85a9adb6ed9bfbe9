"""What the notebooks in colab/ call (and any notebook may): the devices, configs by their spec,
runs of the main command in the notebook's own process with a live plot, figures saved as PNGs.

    from ssl_jax import notebook
    notebook.show_devices()
    config = notebook.config("configs/jigsaw_r50.py:runlocal", {"optim.batch_size": 16})
    rows = notebook.run(config, "/content/runs/jigsaw", figures="/content/figures")

A run here is ``python -m ssl_jax.main``'s (same config.json, checkpoints, metrics.jsonl,
resumption by running again) in the notebook's process, which on a TPU runtime is the one that
holds the chips. Errors are raised, with the messages the command prints, not exit statuses.
"""

from __future__ import annotations

import importlib.util
import io
import logging
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import matplotlib.pyplot as plt
import ml_collections
import numpy as np

from ssl_jax import config_lib, evaluators, paths, sweep
from ssl_jax import main as main_lib
from ssl_jax.train import metrics as metrics_lib
from ssl_jax.train import pretrain as pretrain_lib

_log = logging.getLogger(__name__)


def repo_root() -> str:
    """The checkout ssl_jax runs from (configs/, benchmarks/ beside the package); an error
    naming the fix when ssl_jax was installed without one."""
    if not os.path.isdir(os.path.join(sweep.REPO_ROOT, "configs")):
        raise FileNotFoundError(
            f"{sweep.REPO_ROOT} has no configs/ folder: ssl_jax was installed without its "
            "repository. Clone it (git clone URL) or upload the folder and `pip install -e` it, "
            "as the notebooks' first cell does."
        )
    return sweep.REPO_ROOT


def show_devices() -> str:
    """Prints and returns the JAX version, the backend and its devices."""
    devices = jax.devices()
    text = (
        f"JAX {jax.__version__}, backend {jax.default_backend()}: {len(devices)} device(s), "
        f"{devices[0].device_kind}; processes: {jax.process_count()}\n  {devices}"
    )
    print(text)
    return text


def interactive(requested: bool | str = "auto") -> bool:
    """Whether a notebook draws its figures with dropdowns (ipywidgets) rather than statically,
    and prints which. ``requested``: "auto" (in Colab, when ipywidgets is there), True (also in
    a Jupyter that shows widgets) or False."""
    if requested not in ("auto", True, False):
        raise ValueError(f'INTERACTIVE={requested!r}: use "auto", True or False.')
    if requested is False:
        reason = "INTERACTIVE = False"
    elif importlib.util.find_spec("ipywidgets") is None:
        reason = "ipywidgets is not installed (pip install ipywidgets, then run again)"
    elif requested == "auto" and "google.colab" not in sys.modules:
        reason = "not in Colab (INTERACTIVE = True draws the dropdowns in a Jupyter with widgets)"
    else:
        print("Interactive figures: each has a dropdown; its default view is saved as a PNG.")
        return True
    print(f"Static figures only: {reason}.")
    return False


def figure_with_dropdowns(
    draw: Callable[..., Any],
    path: str,
    interactive: bool,
    *,
    fixed: Mapping[str, Any] | None = None,
    choices: Mapping[str, tuple[Sequence[Any], Any]] | None = None,
):
    """Draws ``draw(**fixed, **defaults)``, saves it as a PNG at ``path`` and shows it; with
    ``interactive`` (``interactive()``'s answer), shows it with a dropdown per ``choices`` entry
    (name -> (options, default); an option is a value or a (label, value) pair, as ipywidgets
    takes them) that redraws it instead. Returns the default figure."""
    fixed = dict(fixed or {})
    choices = dict(choices or {})
    for name, (options, default) in choices.items():
        values = [o[1] if isinstance(o, tuple) and len(o) == 2 else o for o in options]
        if default not in values:
            raise ValueError(f"{name}={default!r} is not one of its options {values}.")
    figure = draw(**fixed, **{name: default for name, (_, default) in choices.items()})
    save_figure(figure, path)
    if not interactive:
        show_png(path)
        return figure
    import ipywidgets  # only with interactive=True: Colab has it

    controls = {name: ipywidgets.fixed(value) for name, value in fixed.items()}
    for name, (options, default) in choices.items():
        controls[name] = ipywidgets.Dropdown(options=list(options), value=default, description=name)
    ipywidgets.interact(draw, **controls)
    return figure


def config(spec: str, overrides: Mapping[str, Any] | None = None) -> ml_collections.ConfigDict:
    """The config of ``spec`` ("configs/jigsaw_r50.py:runlocal"; a relative path is looked up in
    the working directory, then in the repository) with ``overrides`` ({"optim.batch_size": 16},
    as the command's --config.optim.batch_size=16), checked as the command checks it."""
    config = config_lib.load_config(sweep.resolve_spec(spec))
    items = [(key, _raw(value)) for key, value in (overrides or {}).items()]
    config_lib.apply_overrides(config, items)
    if evaluators.is_evaluation(config):
        evaluators.check(config)
    else:
        pretrain_lib.check(config)
    return config


def _raw(value: Any) -> str:
    """A Python value as the command line would give it."""
    return value if isinstance(value, str) else repr(value)


def _show_logs() -> None:
    """The library's INFO lines in the notebook's output, once."""
    logger = logging.getLogger("ssl_jax")
    if not any(getattr(h, "_ssl_jax_notebook", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
        handler._ssl_jax_notebook = True
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


def run(
    config: ml_collections.ConfigDict,
    workdir: str,
    *,
    live: bool = True,
    figures: str | None = None,
    name: str | None = None,
) -> list[dict[str, Any]] | dict[str, float]:
    """Runs ``config`` in ``workdir`` as ``python -m ssl_jax.main`` would, in this process.

    Pretraining: with ``live``, a figure of the loss and the images/s per device redrawn at
    every logged step (``LivePlot``), saved as ``figures/NAME_training.png`` at the end (NAME:
    ``name`` or the workdir's last part); returns the run's training rows (metrics.jsonl's rows
    with a loss, in step order; attached evaluations' rows are in ``metrics_lib.read_metrics``).
    Evaluation: returns its metrics (results.json has the details; ``read_results``).
    """
    _show_logs()
    if evaluators.is_evaluation(config):
        return main_lib.execute(config, workdir)
    config = ml_collections.ConfigDict(config)  # the caller's stays as given
    config.train.progress_bar = False  # the live plot (or the log lines) instead
    name = name or paths.basename(workdir.rstrip("/"))
    if not live:
        main_lib.execute(config, workdir)
        return training_rows(workdir)
    model = config.model
    plot = LivePlot(f"{name}: {config.task}, {model.name}-{model.depth} at width {model.width}")
    with metrics_lib.listening(plot.add):
        plot.add_rows(metrics_lib.read_metrics(workdir))  # a resumed run's earlier rows
        try:
            main_lib.execute(config, workdir)
        finally:
            plot.finish(paths.join(figures, f"{name}_training.png") if figures else None)
    return training_rows(workdir)


def training_rows(workdir: str) -> list[dict[str, Any]]:
    """A pretraining run's logged training metrics (loss, top-1, images/s, ...) by step."""
    return [row for row in metrics_lib.read_metrics(workdir) if "loss" in row]


def throughput(rows: list[dict[str, Any]], skip: int = 1) -> dict[str, float]:
    """Training speed from a run's rows: the median images/s over the logged windows after the
    first ``skip`` (compilation), in all and per device. Empty if no window was timed."""
    speeds = [_number(r.get("images_per_sec")) for r in rows]
    speeds = [v for v in speeds if v is not None][skip:]
    if not speeds:
        return {}
    total = float(np.median(speeds))
    devices = jax.device_count()
    return {"images_per_sec": total, "per_device": total / devices, "devices": devices}


def read_results(workdir: str) -> dict[str, Any]:
    """An evaluation's results.json."""
    path = paths.join(workdir, "results.json")
    if not paths.isfile(path):
        raise FileNotFoundError(f"{path} does not exist: no evaluation finished in {workdir}.")
    return paths.read_json(path)


class LivePlot:
    """Loss, top-1 (when the task logs one) and images/s per device against the step, redrawn
    in the notebook's output as rows arrive; outside IPython it draws without showing."""

    def __init__(self, title: str):
        self.rows: list[dict[str, Any]] = []
        self.devices = jax.device_count()
        self.fig, self.axes = plt.subplots(1, 3, figsize=(13, 3.4))
        self.fig.suptitle(title)
        plt.close(self.fig)  # shown through the display handle only
        self.handle = _display(self.fig)

    def add(self, row: dict[str, Any]) -> None:
        self.add_rows([row])

    def add_rows(self, rows: list[dict[str, Any]]) -> None:
        rows = [r for r in rows if "loss" in r]
        if not rows:
            return
        self.rows.extend(rows)
        self._draw()
        if self.handle is not None:
            self.handle.update(self.fig)

    def series(self, key: str, per_device: bool = False) -> tuple[list[int], list[float]]:
        """(steps, values) of ``key`` in the rows so far (values divided by the device count
        with ``per_device``); rows without a number for it are left out."""
        points = [(r["step"], _number(r.get(key))) for r in self.rows]
        points = [(s, v / self.devices if per_device else v) for s, v in points if v is not None]
        return [s for s, _ in points], [v for _, v in points]

    def _draw(self) -> None:
        panels = (
            ("loss", "loss", False, "tab:blue"),
            ("top1", "top-1", False, "tab:orange"),
            ("images_per_sec", "images/s per device", True, "tab:green"),
        )
        for ax, (key, label, per_device, colour) in zip(self.axes, panels, strict=True):
            ax.clear()
            steps, values = self.series(key, per_device)
            ax.set(xlabel="step", ylabel=label)
            if not values:
                ax.set_title(f"no {label} logged")
                continue
            ax.plot(steps, values, marker=".", color=colour)
            where = f"({self.devices} devices)" if per_device else f"at step {steps[-1]}"
            ax.set_title(f"{label} {values[-1]:.4g} {where}")
        self.fig.tight_layout()

    def finish(self, path: str | None) -> None:
        """Saves the figure (local or gs://) if ``path`` is given and there is anything drawn."""
        if path and self.rows:
            save_figure(self.fig, path)


def plot_losses(workdir: str, path: str | None = None, *, title: str | None = None):
    """A run's logged losses against the step, from its metrics.jsonl: the total ("loss") and
    each part ("loss_*": a detector's RPN and box-head losses, for one), and beside them the
    learning rate ("lr") where it was logged. Shown in the notebook; saved as a PNG at ``path``
    (local or gs://) if given. Returns the matplotlib figure.

    Raises:
        ValueError: ``workdir`` has no logged losses (no run there, or none that got to its
            first log step).
    """
    rows = training_rows(workdir)
    if not rows:
        raise ValueError(
            f"{paths.join(workdir, metrics_lib.METRICS_FILE)} has no logged loss: no run in "
            f"{workdir}, or none that reached its first log step (config.train.log_every)."
        )
    keys = sorted({k for r in rows for k in r if k == "loss" or k.startswith("loss_")})
    with_lr = any(_number(r.get("lr")) is not None for r in rows)
    fig, axes = plt.subplots(1, 2 if with_lr else 1, figsize=(11 if with_lr else 6, 3.6))
    axes = list(axes) if with_lr else [axes]
    plt.close(fig)  # shown through display only
    for key in keys:
        points = [(r["step"], _number(r.get(key))) for r in rows if _number(r.get(key)) is not None]
        style = dict(color="black", linewidth=2) if key == "loss" else {}
        axes[0].plot(*zip(*points, strict=True), marker=".", label=key, **style)
    last = rows[-1]
    axes[0].set(xlabel="step", ylabel="loss",
                title=f"loss {_number(last['loss']):.4g} at step {last['step']}")  # fmt: skip
    axes[0].legend(fontsize="small")
    if with_lr:
        lr = [(r["step"], _number(r.get("lr"))) for r in rows if _number(r.get("lr")) is not None]
        axes[1].plot(*zip(*lr, strict=True), marker=".", color="tab:purple")
        axes[1].set(xlabel="step", ylabel="learning rate", title="learning rate")
    fig.suptitle(title or paths.basename(workdir.rstrip("/")))
    fig.tight_layout()
    _display(fig)
    if path:
        save_figure(fig, path)
    return fig


def _number(value: Any) -> float | None:
    """A metrics value as a float; None for absent ones ("nan" strings stay NaN)."""
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _display(fig):
    """A display handle for ``fig`` in IPython; None elsewhere."""
    if "IPython" not in sys.modules:
        return None
    from IPython import get_ipython  # IPython: present only in a notebook
    from IPython.display import display  # IPython: present only in a notebook

    if get_ipython() is None:
        return None
    return display(fig, display_id=True)


def save_figure(fig, path: str) -> str:
    """Writes a matplotlib figure as a PNG (local or gs://); returns the path."""
    png = io.BytesIO()
    fig.savefig(png, dpi=110, format="png", bbox_inches="tight")
    paths.makedirs(paths.dirname(path))
    paths.write_bytes(path, png.getvalue())
    _log.info("Wrote %s", path)
    return path


def show_png(path: str, copy_to: str | None = None):
    """Shows a PNG (local or gs://) in the notebook; with ``copy_to``, also copies it there
    (a figures folder). Returns the copy's path, or ``path``."""
    data = paths.read_bytes(path)
    if copy_to:
        paths.makedirs(paths.dirname(copy_to))
        paths.write_bytes(copy_to, data)
    if "IPython" in sys.modules:
        from IPython.display import Image, display  # IPython: present only in a notebook

        display(Image(data=data))
    return copy_to or path


def show_markdown(text: str) -> str:
    """Shows markdown (a results.md, say) rendered in the notebook, as text elsewhere; returns
    it."""
    if "IPython" in sys.modules:
        from IPython.display import Markdown, display  # IPython: present only in a notebook

        display(Markdown(text))
    else:
        print(text)
    return text
