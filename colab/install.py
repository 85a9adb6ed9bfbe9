"""Installs ssl_jax from this repository into a Colab runtime (or any Python environment) without
replacing what the runtime already has.

    python colab/install.py [--dry-run]

It installs the repository in editable mode without its dependencies, then only those of
pyproject.toml's requirements that are missing or too old. Colab's own JAX (built for its TPU or
GPU) and TensorFlow stay: TensorFlow counts as present when ``tensorflow`` imports, so the
``tensorflow-cpu`` wheel that a plain ``pip install -e .`` would lay over Colab's GPU build is
not installed; nor is OpenCV when ``cv2`` imports. ``--dry-run`` prints the pip commands
instead of running them.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import os
import subprocess
import sys
import tomllib
from collections.abc import Callable, Sequence

from packaging.requirements import Requirement

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Distributions that provide the same importable package: present if the module imports.
SAME_MODULE = {
    "tensorflow-cpu": "tensorflow",
    "tensorflow": "tensorflow",
    "opencv-python-headless": "cv2",  # Colab has opencv-python
}


def installed_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def missing(
    requirements: Sequence[str],
    version: Callable[[str], str | None] = installed_version,
    importable: Callable[[str], bool] = lambda m: importlib.util.find_spec(m) is not None,
) -> list[str]:
    """The requirements (PEP 508 strings) this environment lacks or holds too old; those whose
    marker does not apply here are left out, as pip leaves them out."""
    out = []
    for text in requirements:
        requirement = Requirement(text)
        if requirement.marker and not requirement.marker.evaluate():
            continue
        module = SAME_MODULE.get(requirement.name.lower())
        if module and importable(module):
            continue
        have = version(requirement.name)
        if have is None or not requirement.specifier.contains(have, prereleases=True):
            out.append(text)
    return out


def commands(repo: str = REPO) -> list[list[str]]:
    with open(os.path.join(repo, "pyproject.toml"), "rb") as f:
        requirements = tomllib.load(f)["project"]["dependencies"]
    pip = [sys.executable, "-m", "pip", "install", "-q"]
    out = [[*pip, "--no-deps", "-e", repo]]
    needed = missing(requirements)
    if needed:
        out.append([*pip, *needed])
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="print the pip commands only")
    args = parser.parse_args(argv)
    for command in commands():
        print(" ".join(command), flush=True)
        if not args.dry_run:
            subprocess.run(command, check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
