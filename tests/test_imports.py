"""Every module imports (stale imports are how example repos rot), and the arrows go one way:
flows -> tasks -> workspaces / data, with all I/O to outside systems in workspaces/ and data/."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("flows", "tasks", "workspaces", "data")
MODULES = sorted(
    ".".join(path.relative_to(ROOT).with_suffix("").parts)
    for package in PACKAGES
    for path in (ROOT / package).rglob("*.py")
)
# what speaks to outside systems: SDKs, HTTP, sockets, processes, file formats and databases
IO_MODULES = {
    "azure",
    "mlflow",
    "httpx",
    "requests",
    "urllib3",
    "urllib.request",
    "http",
    "socket",
    "subprocess",
    "multiprocessing",
    "pyarrow",
    "pandas",
    "datasets",
    "sqlite3",
    "pickle",
    "shutil",
    "uvicorn",
    "fastapi",
    "transformers",
    "torch",
    "peft",
}
# file I/O by method or builtin (json.dumps of a value in memory is fine; json.dump to a file is not)
IO_CALLS = {"open", "read_text", "write_text", "read_bytes", "write_bytes", "mkdir", "unlink", "rmtree", "load", "dump"}


def imported_names(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def io_calls(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
            if name in IO_CALLS:
                found.add(f"{name}() at line {node.lineno}")
    return found


def _is_io(name: str) -> bool:
    return any(name == module or name.startswith(module + ".") for module in IO_MODULES)


@pytest.mark.parametrize("module", MODULES)
def test_module_imports(module):
    importlib.import_module(module)


@pytest.mark.parametrize(
    "path",
    sorted((ROOT / "flows").rglob("*.py")) + sorted((ROOT / "tasks").rglob("*.py")),
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_flows_and_tasks_do_no_io_of_their_own(path):
    bad_imports = {name for name in imported_names(path) if _is_io(name)}
    assert not bad_imports, f"{path.relative_to(ROOT)} imports {bad_imports}: only workspaces/ and data/ do I/O"
    assert not io_calls(path), f"{path.relative_to(ROOT)} does file I/O itself: {io_calls(path)}"


def test_arrows_go_one_way():
    for package in ("workspaces", "data"):
        for path in (ROOT / package).rglob("*.py"):
            assert not {n for n in imported_names(path) if n.split(".")[0] in {"flows", "tasks"}}, path
    for path in (ROOT / "tasks").rglob("*.py"):
        assert not {n for n in imported_names(path) if n.split(".")[0] == "flows"}, path


def test_validating_a_profile_never_imports_a_backend_sdk():
    import subprocess
    import sys

    code = (
        "import sys; from flows.params import load_profile; load_profile('deployments/azure.yaml', "
        "['workspace.subscription_id=s', 'workspace.resource_group=g', 'workspace.workspace_name=w']); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in {'azure', 'mlflow', 'torch'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out


def test_listing_local_sizes_imports_torch_only_where_a_gpu_may_be():
    """Validating compute asks for the local sizes: importing torch (seconds) only to learn that a machine without
    any GPU device node has no GPU cost every run that."""
    import subprocess
    import sys

    from workspaces.local.compute import gpu_device_nodes

    code = (
        "import sys; from workspaces.local.compute import list_sizes; "
        "print([s.name for s in list_sizes()], 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    if gpu_device_nodes():  # a GPU machine: torch is asked, as before
        assert "'local-cpu'" in out, out
    else:
        assert out.strip() == "['local-cpu'] False", out
