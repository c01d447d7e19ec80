"""The sidecar's lock: one `ocsight watch` per set of data directories."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ocsight.errors import OcsightError
from ocsight.telemetry import lock


def test_a_second_taker_of_a_held_lock_gets_a_one_line_error_naming_the_holder(tmp_path: Path):
    path = tmp_path / "state" / "watch.lock"
    held = lock.acquire(path, "/data/opencode")
    try:
        with pytest.raises(OcsightError) as e:
            lock.acquire(path, "/data/opencode")
    finally:
        held.release()
    message = str(e.value)
    assert "\n" not in message and "/data/opencode" in message and f"process {os.getpid()}" in message
    assert e.value.exit_code != 0


def test_a_released_lock_can_be_taken_again(tmp_path: Path):
    path = tmp_path / "watch.lock"
    lock.acquire(path, "d").release()
    lock.acquire(path, "d").release()


def test_the_lock_file_is_private_to_the_user(tmp_path: Path):
    old = os.umask(0o022)
    try:
        held = lock.acquire(tmp_path / "state" / "watch.lock", "d")
    finally:
        os.umask(old)
    held.release()
    assert (tmp_path / "state").stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "state" / "watch.lock").stat().st_mode & 0o777 == 0o600


def test_the_lock_of_some_data_dirs_is_in_ocsights_state_directory_whatever_their_order(tmp_path: Path):
    a, b = tmp_path / "a", tmp_path / "b"
    path = lock.default_path([a, b])
    assert path == lock.default_path([b, a]) != lock.default_path([a])
    assert path.parent == Path(os.environ["XDG_STATE_HOME"]) / "ocsight"
