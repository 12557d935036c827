import os
import tempfile

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

import pytest


def pytest_configure(config):
    """Under pytest-xdist each worker is a process of its own: the newcomer's Prefect home of the end-to-end runs is
    one per worker (two temporary servers never migrate one database at once), and the fault matrix's rows go to
    one file the controller prints."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker is None:  # the controller (or a run without xdist): workers inherit what it sets here
        rows = tempfile.NamedTemporaryFile(prefix="tunegate-fault-matrix-", suffix=".jsonl", delete=False)
        rows.close()
        os.environ["TUNEGATE_FAULT_MATRIX_ROWS"] = rows.name
    elif "PREFECT_HOME_E2E" not in os.environ:
        os.environ["PREFECT_HOME_E2E"] = os.path.join(os.environ.get("HOME", "/tmp"), f".prefect-e2e-{worker}")


# the modules that take longest (real trainer, servers, CLI runs) go out first: under pytest-xdist a long module
# started last would run alone while the other workers are idle
LONGEST_FIRST = (
    "test_local_keep_mode.py",
    "test_approval_server.py",
    "test_cli_e2e.py",
    "test_local_workspace.py",
    "test_promptflow.py",
    "test_approval_ui.py",
    "test_model_import.py",
)


def pytest_collection_modifyitems(session, config, items):
    def rank(item) -> int:
        name = item.path.name
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: within a module, and among the rest, the order stays as collected


@pytest.fixture(scope="session")
def prefect_harness(tmp_path_factory):
    """One temporary Prefect server (sqlite) for the whole session: starting one per test costs ~8 s."""
    from prefect.testing.utilities import prefect_test_harness

    os.environ["PREFECT_HOME"] = str(tmp_path_factory.mktemp("prefect-home"))
    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory):
    """A real `prefect server start` on a free loopback port (PREFECT_HOME in a temp dir, analytics off)."""
    from tests.prefect_server import PrefectServer

    server = PrefectServer(tmp_path_factory.mktemp("prefect-server")).start()
    yield server
    server.stop()


def pytest_terminal_summary(terminalreporter):
    """The fault matrix (tests/test_fault_matrix.py) as a table, when it ran."""
    rows = os.environ.get("TUNEGATE_FAULT_MATRIX_ROWS")
    if os.environ.get("PYTEST_XDIST_WORKER") or not rows or not os.path.exists(rows):
        return  # a worker's summary is not printed: the controller prints the table once
    if os.path.getsize(rows) > 0:
        from tests.test_fault_matrix import matrix_markdown

        terminalreporter.section("fault matrix")
        terminalreporter.write_line(matrix_markdown())
    os.unlink(rows)
