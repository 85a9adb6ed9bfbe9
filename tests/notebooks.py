"""Executes the notebooks of colab/ as Colab would, top to bottom, in a fresh IPython kernel.

``execute(name, parameters, cwd)`` puts a cell setting ``parameters`` right after the notebook's
cell tagged "parameters" (papermill's convention: the defaults stay visible in the notebook, the
test's values win), runs every cell with nbclient and returns the executed notebook. A failing
cell fails the caller with that cell's number, source and traceback.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any
from unittest import mock

import nbformat
from nbclient import NotebookClient, output_widget
from nbclient.exceptions import CellExecutionError, CellTimeoutError

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
COLAB = os.path.join(ROOT, "colab")
NOTEBOOKS = ("quickstart", "tpu_pretraining", "benchmarks", "scaling", "detection")
PARAMETERS_TAG = "parameters"
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def path(name: str) -> str:
    return os.path.join(COLAB, f"{name}.ipynb")


def read(name: str) -> nbformat.NotebookNode:
    return nbformat.read(path(name), as_version=4)


def code_cells(notebook: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    return [c for c in notebook.cells if c.cell_type == "code"]


def parameters_index(notebook: nbformat.NotebookNode) -> int:
    tagged = [
        i
        for i, c in enumerate(notebook.cells)
        if PARAMETERS_TAG in c.get("metadata", {}).get("tags", [])
    ]
    if len(tagged) != 1:
        raise AssertionError(f"{len(tagged)} cells tagged {PARAMETERS_TAG!r}; expected one.")
    return tagged[0]


def _failure(name: str, notebook: nbformat.NotebookNode, error: Exception) -> str:
    """The failing cell's number (as Colab counts code cells, from 1), source and traceback."""
    for number, cell in enumerate(code_cells(notebook), 1):
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                trace = _ANSI.sub("", "\n".join(output.get("traceback", [])))
                return (
                    f"colab/{name}.ipynb: code cell {number} failed.\n"
                    f"--- its source ---\n{cell.source}\n--- its traceback ---\n{trace}"
                )
    return f"colab/{name}.ipynb: {type(error).__name__}: {_ANSI.sub('', str(error))}"


def execute(
    name: str,
    parameters: Mapping[str, Any],
    cwd: str,
    *,
    timeout: int = 1800,
    environ: Mapping[str, str] | None = None,
) -> nbformat.NotebookNode:
    """Runs colab/NAME.ipynb in ``cwd`` with ``parameters`` (Python literals) set after its
    parameters cell; returns the executed notebook, or fails with the failing cell's source and
    traceback. ``timeout``: seconds per cell."""
    notebook = read(name)
    index = parameters_index(notebook)
    lines = [f"{key} = {value!r}" for key, value in parameters.items()]
    injected = nbformat.v4.new_code_cell("# Parameters set by the test\n" + "\n".join(lines))
    injected.metadata["tags"] = ["injected-parameters"]
    notebook.cells.insert(index + 1, injected)
    client = NotebookClient(
        notebook,
        timeout=timeout,
        kernel_name="python3",
        resources={"metadata": {"path": cwd}},
        allow_errors=False,
    )
    # nbclient stands in for the frontend's Output widgets by sending every output they capture
    # back to the kernel on the shell channel; after that the kernel now and then sees the next
    # cell's execute_request only when the cell timeout runs out (6 runs in 10 of the scaling
    # notebook's dropdowns stalled so; jupyter/nbclient#312). Without that echo the outputs are
    # still recorded in the notebook's widget state.
    no_echo = mock.patch.object(output_widget.OutputWidget, "sync_state", lambda self: None)
    try:
        # The kernel inherits this process's environment: ``environ`` is set while it starts.
        with mock.patch.dict(os.environ, dict(environ or {})), no_echo:
            client.execute()
    except (CellExecutionError, CellTimeoutError) as e:
        raise AssertionError(_failure(name, notebook, e)) from None
    return notebook
