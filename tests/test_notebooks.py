"""The Colab notebooks of colab/: stored without outputs, installing ssl_jax the same way, calling
the library's public API only, and each executed top to bottom (slow) on the CPU at its smallest
setting, its figures written as non-empty PNGs.

The executions are slow: ``python -m pytest -m slow tests/test_notebooks.py``. Each writes its
figures to ``FIGURES`` under the test's temporary directory (``--basetemp=DIR`` keeps them).
"""

from __future__ import annotations

import ast
import importlib.util
import json
import math
import os
import re
import sys
import uuid

import jax
import pytest
from nbclient import output_widget
from notebooks import COLAB, NOTEBOOKS, ROOT, code_cells, execute, parameters_index, read

from ssl_jax.train import checkpoint

# A notebook kernel on the CPU: one device (a Colab CPU runtime's count) and this suite's
# compilation cache.
KERNEL_ENV = {
    "XLA_FLAGS": "--xla_force_host_platform_device_count=1",
    "JAX_PLATFORMS": "cpu",
    "JAX_COMPILATION_CACHE_DIR": jax.config.jax_compilation_cache_dir or "",
    "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0.5",
    "MPLBACKEND": "module://matplotlib_inline.backend_inline",
}
SMALL_TRUNK = {"model.depth": 18, "model.width": 0.125}
# Quick runs log often, so that the live plot has several points to draw.
QUICK_RUN = {**SMALL_TRUNK, "train.log_every": 2}


def stored_notebooks() -> list[str]:
    return sorted(f[: -len(".ipynb")] for f in os.listdir(COLAB) if f.endswith(".ipynb"))


def test_every_promised_notebook_is_there():
    assert stored_notebooks() == sorted(NOTEBOOKS)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_stored_without_outputs(name):
    """Outputs and execution counts stay out of git (strip them before committing, e.g. with
    ``jupyter nbconvert --clear-output --inplace colab/*.ipynb``)."""
    dirty = [
        n
        for n, cell in enumerate(code_cells(read(name)), 1)
        if cell.get("outputs") or cell.get("execution_count") is not None
    ]
    assert not dirty, f"colab/{name}.ipynb: code cells {dirty} hold outputs or execution counts."


def install_cell(name: str) -> str:
    return code_cells(read(name))[0].source


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_first_cell_installs_from_one_repository_url(name):
    """The same install cell everywhere, its URL the one README.md's badges point to."""
    source = install_cell(name)
    assert source == install_cell("quickstart")
    url = re.search(r'^REPO_URL = "https://github.com/([^"]+?)(\.git)?"$', source, re.M)
    assert url, "the install cell sets REPO_URL to a GitHub repository"
    readme = open(os.path.join(ROOT, "README.md")).read()
    badge = f"https://colab.research.google.com/github/{url.group(1)}/blob/main/colab/{name}.ipynb"
    assert badge in readme, f"README.md has no 'Open in Colab' badge for {name}: {badge}"
    assert f"({badge})" in read(name).cells[0].source, "the notebook's title cell has its badge"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebooks_use_the_public_api_only(name):
    """Whatever a notebook needs is in the library: no functions or classes defined in cells,
    no private ssl_jax names, a parameters cell of plain assignments."""
    notebook = read(name)
    cells = code_cells(notebook)
    for number, cell in enumerate(cells, 1):
        tree = ast.parse(cell.source)
        for node in ast.walk(tree):
            assert not isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.Lambda)), (
                f"colab/{name}.ipynb code cell {number} defines {getattr(node, 'name', 'a lambda')}"
                "; put it in the library"
            )
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("ssl_jax"):
                private = [a.name for a in node.names if a.name.startswith("_")]
                assert not private, f"code cell {number} imports private {private}"
            if isinstance(node, ast.Attribute) and re.match(r"_(?!_.*__$)", node.attr):
                raise AssertionError(f"code cell {number} uses a private name .{node.attr}")
    parameters = notebook.cells[parameters_index(notebook)]
    for node in ast.parse(parameters.source).body:
        assert isinstance(node, ast.Assign), "the parameters cell holds assignments only"


def pngs(folder) -> dict[str, int]:
    """The PNG files under ``folder`` and their sizes; each must be a real PNG."""
    found = {}
    for name in sorted(os.listdir(folder)):
        if name.endswith(".png"):
            with open(os.path.join(folder, name), "rb") as f:
                head = f.read(8)
            assert head == b"\x89PNG\r\n\x1a\n", f"{name} is not a PNG"
            found[name] = os.path.getsize(os.path.join(folder, name))
    return found


def assert_figures(folder, expected: set[str]) -> None:
    found = pngs(folder)
    assert expected <= set(found), f"figures missing: {sorted(expected - set(found))}"
    empty = [n for n, size in found.items() if size < 2000]
    assert not empty, f"figures with (almost) nothing in them: {empty}"


def outputs_text(notebook) -> str:
    return "\n".join(
        o.get("text", "") for cell in code_cells(notebook) for o in cell.get("outputs", [])
    )


@pytest.mark.slow
def test_quickstart_runs_on_a_cpu(tmp_path):
    figures = tmp_path / "figures"
    notebook = execute(
        "quickstart",
        {
            "WORKDIR": str(tmp_path / "runs"),
            "FIGURES": str(figures),
            "STEPS": 10,
            "OVERRIDES": QUICK_RUN,
        },
        str(tmp_path),
        environ=KERNEL_ENV,
    )
    assert_figures(
        figures,
        {"jigsaw_training.png", "jigsaw_puzzles.png", "colorize_training.png",
         "colorization_picture.png"},
    )  # fmt: skip
    text = outputs_text(notebook)
    assert "backend cpu: 1 device(s)" in text
    assert re.search(r"step 10: loss \d", text), text[-2000:]
    # The live plot was redrawn in place: one display, updated (not one figure per row).
    displays = [
        o for cell in code_cells(notebook) for o in cell.outputs if o.output_type == "display_data"
    ]
    assert any("image/png" in o.get("data", {}) for o in displays)


@pytest.mark.slow
def test_tpu_pretraining_runs_its_small_setting_on_a_cpu(gcs_bucket, tmp_path):
    """On a CPU runtime the notebook picks its small setting by itself; the puzzle stays the
    paper's (255-pixel crop, 64-pixel tiles, |P| = 2000) and the checkpoints land in the bucket
    WORKDIR names (the GCS emulator here), where they restore."""
    figures = tmp_path / "figures"
    workdir = f"{gcs_bucket}/notebooks/{uuid.uuid4().hex[:8]}/jigsaw_r50"
    notebook = execute(
        "tpu_pretraining",
        {
            "WORKDIR": workdir,
            "FIGURES": str(figures),
            "STEPS": 6,
            "LOG_EVERY": 2,
            "CHECKPOINT_EVERY": 4,
        },
        str(tmp_path),
        environ=KERNEL_ENV,
    )
    assert_figures(figures, {"tpu_pretraining_training.png"})
    text = outputs_text(notebook)
    assert "ResNet-18 at width 0.125, 255-pixel crops, 64-pixel tiles, |P| = 2000, batch 4" in text
    speed = re.search(r"= (\d+\.\d) per chip on 1 x cpu", text)
    assert speed and float(speed.group(1)) > 0, text[-2000:]
    assert f"checkpoints in {workdir}/checkpoints at steps [4, 6]" in text
    state = checkpoint.read_state(workdir, 6)
    assert int(state["step"]) == 6


def load_installer():
    """colab/install.py, the notebooks' installer (a script: Colab runs it before ssl_jax is
    importable)."""
    spec = importlib.util.spec_from_file_location(
        "colab_install", os.path.join(COLAB, "install.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_installer_keeps_the_runtime_tensorflow_and_jax():
    installer = load_installer()
    requirements = [
        "jax>=0.6.0",
        "tensorflow-cpu>=2.16; sys_platform == 'linux'",
        "tensorflow>=2.16; sys_platform != 'linux'",
        "gcsfs>=2026.4.0",
    ]
    colab = {"jax": "0.7.1", "tensorflow": "2.19.0", "gcsfs": "2025.3.0"}
    needed = installer.missing(requirements, colab.get, lambda module: module == "tensorflow")
    if sys.platform == "linux":
        assert needed == ["gcsfs>=2026.4.0"]  # too old; Colab's TensorFlow and JAX stay
    bare = installer.missing(requirements, {}.get, lambda module: False)
    assert bare[0] == "jax>=0.6.0" and "gcsfs>=2026.4.0" in bare and len(bare) == 3


def test_installer_has_nothing_to_add_to_the_test_environment():
    """This environment holds every requirement: the installer adds only the editable repo."""
    commands = load_installer().commands()
    assert len(commands) == 1, commands
    assert commands[0][-3:] == ["--no-deps", "-e", ROOT]


DETECTION_DEVKIT = os.path.join(ROOT, "..", "shared", "data", "detection", "VOCdevkit")


@pytest.mark.slow
def test_detection_runs_on_a_cpu(tmp_path):
    """A Jigsaw trunk pretrained for 2 steps, then a Faster R-CNN with its body frozen, 24 steps
    at short side 128 on the shared two-class set, scored on 8 test images."""
    if not os.path.isdir(os.path.join(DETECTION_DEVKIT, "VOC2007")):
        pytest.skip(f"{DETECTION_DEVKIT} is not present")
    figures = tmp_path / "figures"
    workdir = tmp_path / "runs"
    notebook = execute(
        "detection",
        {
            "WORKDIR": str(workdir),
            "FIGURES": str(figures),
            "TRUNK_STEPS": 2,
            "TRUNK_OVERRIDES": QUICK_RUN,
            "DEVKIT": os.path.abspath(DETECTION_DEVKIT),
            "FREEZE_AT": 4,
            "STEPS": 24,
            "TEST_IMAGES": 8,
            "DETECTION_OVERRIDES": {"input.short_side": 128, "input.max_side": 224,
                                    "train.log_every": 4},
        },
        str(tmp_path),
        environ=KERNEL_ENV,
    )  # fmt: skip
    assert_figures(figures, {"jigsaw_trunk_training.png", "detections.png",
                             "detection_losses.png"})  # fmt: skip
    results = json.load(open(workdir / "detector_pretrained_f4" / "results.json"))
    assert results["freeze_at"] == 4 and results["step"] == 24
    assert results["test"]["images"] == 8 and results["test"]["dataset"].endswith("[8 of 91]")
    assert set(results["classes"]) == {"kangaroo", "raccoon"}
    for name, row in results["classes"].items():
        assert row["num_gt"] > 0 and 0 <= row["ap"] <= 100, (name, row)
    assert math.isfinite(results["mAP"]) and 0 <= results["mAP"] <= 100
    text = outputs_text(notebook)
    assert "trainval: 273 images" in text and "test: 91 images" in text
    tables = [
        o.data["text/markdown"]
        for cell in code_cells(notebook)
        for o in cell.outputs
        if "text/markdown" in o.get("data", {})
    ]
    assert len(tables) == 1 and re.search(r"\| raccoon \| 5 \| \d+\.\d\d \|", tables[0])
    assert f"mAP {results['mAP']:.2f} (11-point)" in text


@pytest.mark.slow
def test_detection_without_data_names_the_fix(tmp_path):
    """Colab's default (TFDS voc/2007) with the download switched off and nothing prepared: the
    data cell stops, before any training, with the library's message saying how to prepare it."""
    with pytest.raises(AssertionError) as failure:
        execute(
            "detection",
            {
                "WORKDIR": str(tmp_path / "runs"),
                "FIGURES": str(tmp_path / "figures"),
                "TFDS_DATA_DIR": str(tmp_path / "tfds"),
                "DOWNLOAD_VOC": False,
            },
            str(tmp_path),
            environ=KERNEL_ENV,
        )
    message = str(failure.value)
    assert "--- its source ---\nif DEVKIT:" in message and "ConfigError" in message, message[:3000]
    assert f"tfds build voc/2007 --data_dir={tmp_path / 'tfds'}" in message
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("interactive", ["auto", pytest.param(True, marks=pytest.mark.slow)])
def test_scaling_runs_on_a_cpu(tmp_path, monkeypatch, interactive):
    """The repository's CIFAR-10 axes drawn (no training: about 10 s, so the static run is a
    default test): static outside Colab ("auto"), and with the dropdowns (True, slow), whose
    first views the kernel draws into the widgets' outputs."""
    # nbclient stands in for the frontend's Output widgets by sending every output they capture
    # back to the kernel on the shell channel; after that the kernel now and then sees the next
    # cell's execute_request only when the cell timeout runs out (6 runs in 10 here stalled for
    # the whole timeout; see jupyter/nbclient#312). The outputs are recorded in the notebook's
    # widget state without that echo.
    monkeypatch.setattr(output_widget.OutputWidget, "sync_state", lambda self: None)
    figures = tmp_path / "figures"
    notebook = execute(
        "scaling",
        {"FIGURES": str(figures), "INTERACTIVE": interactive},
        str(tmp_path),
        environ=KERNEL_ENV,
    )
    assert_figures(
        figures,
        {"scaling_data_size.png", "scaling_model_capacity.png", "scaling_permutations.png",
         "scaling_colorization_k.png"},
    )  # fmt: skip
    text = outputs_text(notebook)
    assert "24 runs from " in text and "the figures plot voc07_svm by default" in text
    images = [
        o for cell in code_cells(notebook) for o in cell.outputs if "image/png" in o.get("data", {})
    ]
    widget_outputs = [
        o
        for model in notebook.metadata.get("widgets", {})
        .get("application/vnd.jupyter.widget-state+json", {})
        .get("state", {})
        .values()
        if model["model_name"] == "OutputModel"
        for o in model["state"].get("outputs", [])
    ]
    if interactive == "auto":
        assert "Static figures only: not in Colab" in text
        assert len(images) == 4 and not widget_outputs
    else:
        assert "Interactive figures" in text and not images
        errors = [f"{o['ename']}: {o['evalue']}" for o in widget_outputs if "ename" in o]
        assert not errors, errors
        drawn = [o for o in widget_outputs if "image/png" in o.get("data", {})]
        assert len(drawn) == 3  # one view per axis
