"""The package's shape: no import cycle among ssl_jax modules, no private name imported across
modules, and function-level imports only of heavy optional packages, each with its reason."""

from __future__ import annotations

import ast
import gc
import os
import pathlib
import re
import sys
import tomllib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "ssl_jax"
# Imported inside functions on purpose: TensorFlow / TFDS (ssl_jax.data), TensorBoard and gcsfs
# are heavy and needed only where data is read, events written or a bucket used (accelerator
# hosts may carry JAX alone); IPython and ipywidgets exist only in notebooks (ssl_jax.notebook).
HEAVY = (
    "ssl_jax.data",
    "tensorflow",
    "tensorflow_datasets",
    "tensorboard",
    "gcsfs",
    "IPython",
    "ipywidgets",
)


def module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imported(node: ast.AST, module: str) -> list[tuple[str, list[str]]]:
    """(module imported, names taken from it) of an import statement, with relative imports
    resolved; ``from a.b import c`` names the module a.b.c when there is one."""
    if isinstance(node, ast.Import):
        return [(alias.name, []) for alias in node.names]
    if isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            package = module.split(".")[: -node.level] if module in MODULES else module.split(".")
            base = ".".join([*package, base]) if base else ".".join(package)
        out = []
        for alias in node.names:
            full = f"{base}.{alias.name}"
            out.append((full, []) if full in MODULES else (base, [alias.name]))
        return out
    return []


def parse(source: str, filename: str) -> ast.Module:
    """ast.parse with the garbage collector off: on CPython 3.11 a finalizer that runs inside
    the AST constructor (e.g. of an asyncio loop another test left behind) fails the parse with
    "SystemError: AST constructor recursion depth mismatch"."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        return ast.parse(source, filename)
    finally:
        if enabled:
            gc.enable()


def graph() -> dict[str, set[str]]:
    """Module -> the ssl_jax modules it imports at module level or in functions (an import of
    a package counts as its __init__; a submodule's import does not import its parents here)."""
    edges: dict[str, set[str]] = {}
    for module, path in MODULES.items():
        tree = parse(path.read_text(), str(path))
        edges[module] = {
            target
            for node in ast.walk(tree)
            for target, _ in imported(node, module)
            if target in MODULES and target != module
        }
    return edges


def test_no_import_cycle():
    edges = graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        stack.append(module)
        for target in sorted(edges[module]):
            if state.get(target) == 1:
                cycle = stack[stack.index(target) :] + [target]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target)
        stack.pop()
        state[module] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module)


def test_the_cycle_check_sees_a_cycle(monkeypatch):
    """The walk above fails on a cycle (a -> b -> a), not only passes."""
    fake = {"a": {"b"}, "b": {"a"}}
    monkeypatch.setattr(f"{__name__}.graph", lambda: fake)
    with pytest.raises(pytest.fail.Exception, match="a -> b -> a"):
        test_no_import_cycle()


def test_no_private_name_imported_across_modules():
    offenders = []
    for module, path in MODULES.items():
        tree = parse(path.read_text(), str(path))
        aliases = set()  # local names of imported ssl_jax modules
        for node in ast.walk(tree):
            for target, names in imported(node, module):
                private = [n for n in names if n.startswith("_") and not n.startswith("__")]
                if target.startswith("ssl_jax") and private:
                    offenders.append(f"{path.name}:{node.lineno} imports {private} of {target}")
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for alias, (target, names) in zip(node.names, imported(node, module), strict=True):
                    if target in MODULES and not names:
                        aliases.add(alias.asname or alias.name.split(".")[0])
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in aliases
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
            ):
                offenders.append(f"{path.name}:{node.lineno} uses {node.value.id}.{node.attr}")
    assert not offenders, "\n".join(offenders)


def test_function_level_imports_are_heavy_and_say_so():
    offenders = []
    for module, path in MODULES.items():
        lines = path.read_text().splitlines()
        tree = parse("\n".join(lines), str(path))
        for function in ast.walk(tree):
            if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(function):
                if not isinstance(node, (ast.Import, ast.ImportFrom)):
                    continue
                targets = [t for t, _ in imported(node, module)]
                heavy = all(any(t == h or t.startswith(h + ".") for h in HEAVY) for t in targets)
                commented = "#" in lines[node.lineno - 1] or "#" in lines[node.end_lineno - 1]
                if not (heavy and commented):
                    where = f"{os.path.relpath(path, PACKAGE.parent)}:{node.lineno}"
                    offenders.append(f"{where}: {lines[node.lineno - 1].strip()}")
    assert not offenders, "function-level imports:\n" + "\n".join(offenders)


# Top-level modules installed under another distribution's name, or by a declared dependency.
PROVIDED = {
    "cv2": "opencv-python-headless",
    "PIL": "Pillow",
    "sklearn": "scikit-learn",
    "joblib": "scikit-learn",  # scikit-learn's own dependency
    "fsspec": "gcsfs",  # gcsfs pins it
    "google": "google-cloud-storage",
    "orbax": "orbax-checkpoint",
    "etils": "orbax-checkpoint",  # orbax's dependencies
    "tensorstore": "orbax-checkpoint",
    "absl": "jax",  # via orbax and TensorFlow
    "tensorflow": "tensorflow-cpu",
}
# Imported inside functions only, where present: notebooks' IPython, the bench extra's torch.
OPTIONAL = {"IPython", "ipywidgets", "torch"}


def test_every_imported_package_is_a_declared_dependency():
    """A module the package imports at module level is installed by ``pip install -e .``
    (README command 1): one left to a test extra fails a fresh install at import."""
    with open(PACKAGE.parent / "pyproject.toml", "rb") as f:
        dependencies = tomllib.load(f)["project"]["dependencies"]
    declared = {re.split(r"[<>=;\[ ]", d, maxsplit=1)[0].lower() for d in dependencies}
    missing = set()
    for module, path in MODULES.items():
        for node in parse(path.read_text(), str(path)).body:
            for target, _ in imported(node, module):
                top = target.split(".")[0]
                if top in ("ssl_jax", "__future__") or top in sys.stdlib_module_names:
                    continue
                dist = PROVIDED.get(top, top).lower().replace("_", "-")
                if top not in OPTIONAL and dist not in declared:
                    missing.add(f"{module} imports {top} ({dist})")
    assert not missing, f"not in pyproject's [project] dependencies: {sorted(missing)}"
