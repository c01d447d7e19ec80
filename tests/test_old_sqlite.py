"""The old-SQLite tier (`make test-sqlite336`): the processes the tests start run on it too."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import EXPECT_SQLITE

pytestmark = pytest.mark.skipif(not EXPECT_SQLITE, reason="only in `make test-sqlite336` (OCSIGHT_EXPECT_SQLITE)")


def test_a_child_process_runs_on_the_expected_sqlite():
    """`ocsight` subprocesses (the CLI, the sidecar, the MCP server) inherit the tests' environment;
    a child started with it must load the same SQLite, and ocsight in it must read with that one."""
    code = ("import sqlite3; from ocsight.sqlite_library import sqlite3 as used; "
            "print(sqlite3.sqlite_version, used.__name__, used.sqlite_version)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == [EXPECT_SQLITE, "sqlite3", EXPECT_SQLITE]
