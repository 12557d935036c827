import os

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

import pytest


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
    import sys

    matrix = sys.modules.get("tests.test_fault_matrix")
    if matrix is not None and matrix.ROWS:
        terminalreporter.section("fault matrix")
        terminalreporter.write_line(matrix.matrix_markdown())
