"""Every module imports (stale imports are how example repos rot), and the arrows go one way."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("flows", "tasks", "workspaces")
MODULES = sorted(
    ".".join(path.relative_to(ROOT).with_suffix("").parts)
    for package in PACKAGES for path in (ROOT / package).rglob("*.py")
)


@pytest.mark.parametrize("module", MODULES)
def test_module_imports(module):
    importlib.import_module(module)


def imported_names(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("package", ["flows", "tasks"])
def test_flows_and_tasks_never_import_azure_or_mlflow(package):
    for path in (ROOT / package).rglob("*.py"):
        bad = {name for name in imported_names(path) if name.split(".")[0] in {"azure", "mlflow"}}
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}: only workspaces/ talks to outside systems"


def test_arrows_go_one_way():
    for path in (ROOT / "workspaces").rglob("*.py"):
        assert not {n for n in imported_names(path) if n.split(".")[0] in {"flows", "tasks"}}, path
    for path in (ROOT / "tasks").rglob("*.py"):
        assert not {n for n in imported_names(path) if n.split(".")[0] == "flows"}, path
