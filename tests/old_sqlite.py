"""A real SQLite 3.36.0 under Python's own `sqlite3` module, for the tests of `make test-sqlite336`.

ocsight must run on SQLite >= 3.35 (Ubuntu 22.04 ships 3.37.2, RHEL 9 3.34), but the tests
otherwise see only the system's SQLite (3.40 on Debian 12), so SQL newer than the oldest supported
release would go unnoticed. This module builds SQLite 3.36.0 as a shared library in
`$OCSIGHT_TEST_CACHE` (default `~/.cache/ocsight-tests`, as `harness.py` uses), once, from the
amalgamation in the `apsw-wheels==3.36.0.post1` sdist on PyPI, and gives the environment on which
the standard library's `_sqlite3` loads it (`LD_LIBRARY_PATH`), for the tests and every process
they start.

    python tests/old_sqlite.py                 builds it (if needed) and prints where it is
    python tests/old_sqlite.py COMMAND [ARG...]  builds it (if needed) and runs COMMAND on it
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
from collections.abc import Mapping
from pathlib import Path

VERSION = "3.36.0"
CACHE = Path(os.environ.get("OCSIGHT_TEST_CACHE", Path.home() / ".cache" / "ocsight-tests"))
LIBRARY = "libsqlite3.so.0"  # the soname Python's _sqlite3 asks the dynamic loader for

# PyPI's file URLs never change; the hash holds the amalgamation to the one this tier was made with.
SDIST = "apsw_wheels-3.36.0.post1.tar.gz"
SDIST_URL = ("https://files.pythonhosted.org/packages/74/ad/db15c54df12f41786f8b056f7618ad0727bef4502c9c7d321f97817fdc31/"
             + SDIST)
SDIST_SHA256 = "8721437c3362abb9e93411f057ea7869d3af4936fae36912f2976b12a8d79427"
AMALGAMATION = "apsw_wheels-3.36.0.post1/sqlite3/sqlite3.c"

# JSON1 is an extension before 3.38. The HAVE_* are what configure finds on Linux and the bare
# amalgamation lacks: without HAVE_USLEEP a busy connection would wait in whole seconds. Python's
# _sqlite3 needs no optional symbol of 3.36 (sqlite3_deserialize is in by default since 3.36.0);
# the limits stay SQLite's defaults (e.g. 32766 bound variables, as RHEL's build, where Debian's
# has 250000), the stricter choice.
CFLAGS = ["-O1", "-shared", "-fPIC", "-DSQLITE_ENABLE_JSON1", "-DHAVE_USLEEP=1", "-DHAVE_FDATASYNC=1",
          "-DHAVE_LOCALTIME_R=1", "-DHAVE_GMTIME_R=1"]


class BuildError(RuntimeError):
    """SQLite 3.36.0 could not be built here; the message says why, in one line."""


def library_dir() -> Path:
    """The directory holding SQLite 3.36.0's `libsqlite3.so.0`, built on first use."""
    target = CACHE / f"sqlite-{VERSION}"
    if not (target / LIBRARY).exists():
        _build(target)
    return target


def env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """`base` (default: this process's environment) with SQLite 3.36.0 first on `LD_LIBRARY_PATH`,
    and `OCSIGHT_EXPECT_SQLITE` for conftest to check that the tests really run on it."""
    base = dict(os.environ if base is None else base)
    path = [str(library_dir()), *filter(None, base.get("LD_LIBRARY_PATH", "").split(":"))]
    return {**base, "LD_LIBRARY_PATH": ":".join(path), "OCSIGHT_EXPECT_SQLITE": VERSION}


def _build(target: Path) -> None:
    """Downloads, compiles and checks the library in a temporary directory beside `target`, then
    renames it into place: a concurrent run sees either no library or a whole one."""
    if shutil.which("gcc") is None:
        raise BuildError(f"gcc is needed to build SQLite {VERSION} for the tests (apt-get install gcc)")
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".sqlite-{VERSION}-", dir=CACHE) as tmp:
        work = Path(tmp)
        source = work / "sqlite3.c"
        source.write_bytes(_amalgamation())
        staged = work / "lib"
        staged.mkdir()
        compiled = subprocess.run(["gcc", *CFLAGS, str(source), "-o", str(staged / LIBRARY), "-lpthread", "-ldl",
                                   "-lm"], capture_output=True, text=True)
        if compiled.returncode != 0:
            raise BuildError(f"gcc failed to build SQLite {VERSION}: {compiled.stderr.strip()[-500:]}")
        version = _python_sqlite_version(staged)
        if version != VERSION:
            raise BuildError(f"Python's sqlite3 module did not load the built SQLite {VERSION} (it reports {version})")
        try:
            staged.rename(target)
        except OSError:
            if not (target / LIBRARY).exists():  # else another run put it there first
                raise


def _amalgamation() -> bytes:
    """`sqlite3.c` of SQLite 3.36.0, from the sdist that ships it (checked against its hash)."""
    try:
        with urllib.request.urlopen(SDIST_URL, timeout=120) as response:
            sdist = response.read()
    except OSError as e:
        raise BuildError(f"could not download {SDIST_URL}: {e}") from None
    if hashlib.sha256(sdist).hexdigest() != SDIST_SHA256:
        raise BuildError(f"{SDIST} from PyPI does not have the expected SHA-256")
    with tempfile.TemporaryFile() as f:
        f.write(sdist)
        f.seek(0)
        with tarfile.open(fileobj=f, mode="r:gz") as tar:
            member = tar.extractfile(AMALGAMATION)
            if member is None:
                raise BuildError(f"{SDIST} holds no {AMALGAMATION}")
            return member.read()


def _python_sqlite_version(directory: Path) -> str:
    """The SQLite version Python's `sqlite3` module reports when `directory` leads `LD_LIBRARY_PATH`."""
    probe = subprocess.run([sys.executable, "-c", "import sqlite3; print(sqlite3.sqlite_version)"],
                           capture_output=True, text=True, env={**os.environ, "LD_LIBRARY_PATH": str(directory)})
    if probe.returncode == 0:
        return probe.stdout.strip()
    errors = probe.stderr.strip().splitlines()
    return errors[-1] if errors else f"exit {probe.returncode}"


def main(argv: list[str]) -> None:
    try:
        directory = library_dir()
        command_env = env()
    except BuildError as e:
        sys.exit(f"old_sqlite: {e}")
    if not argv:
        print(directory / LIBRARY)
        return
    os.execvpe(argv[0], argv, command_env)


if __name__ == "__main__":
    main(sys.argv[1:])
