"""A first read pads glibc's heaps while its two threads allocate, and only then."""

from __future__ import annotations

import os
import sys

import pytest

import storegen
from conftest import write_store
from ocsight import malloc_tuning, reader


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    made: list[tuple[int, int]] = []
    monkeypatch.setattr(malloc_tuning, "_mallopt", lambda: lambda option, value: made.append((option, value)) or 1)
    return made


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_glibcs_mallopt_is_found_on_a_glibc_system():
    if "glibc" not in (os.confstr("CS_GNU_LIBC_VERSION") or ""):
        pytest.skip("another C library")
    assert callable(malloc_tuning._mallopt())


def test_padding_is_set_for_the_read_and_put_back_after(calls):
    with malloc_tuning.padded_heaps():
        assert calls == [(malloc_tuning.M_TOP_PAD, malloc_tuning.READ_TOP_PAD)]
    assert calls[-1] == (malloc_tuning.M_TOP_PAD, malloc_tuning.DEFAULT_TOP_PAD)


def test_padding_is_put_back_when_the_read_fails(calls):
    with pytest.raises(RuntimeError), malloc_tuning.padded_heaps():
        raise RuntimeError("read failed")
    assert calls[-1] == (malloc_tuning.M_TOP_PAD, malloc_tuning.DEFAULT_TOP_PAD)


@pytest.mark.parametrize("lean", [False, True])
def test_a_refresh_pads_the_heaps_unless_its_consumer_runs_long(calls, tmp_path, lean: bool):
    root = write_store(storegen.plan_store(seed=3, sessions=6), tmp_path / "s", "db")
    reader.open_index(reader.ReadOptions(data_dirs=(str(root),), use_cache=False, lean_memory=lean)).close()
    assert bool(calls) is not lean
