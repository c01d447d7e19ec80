"""The old-SQLite tier (`make test-sqlite336`): the processes the tests start run on it too."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import EXPECT_SQLITE

pytestmark = pytest.mark.skipif(not EXPECT_SQLITE, reason="only in `make test-sqlite336` (OCSIGHT_EXPECT_SQLITE)")


def test_the_ocsight_processes_the_tests_start_run_on_the_expected_sqlite():
    """`ocsight` subprocesses (the CLI, the sidecar, the MCP server) inherit the tests' environment:
    the installed command says which SQLite it runs on."""
    out = subprocess.run([sys.executable, "-m", "ocsight", "--version"], capture_output=True, text=True,
                         check=True).stdout
    assert f"SQLite {EXPECT_SQLITE}" in out
