"""Every number is what it was before the core's redesign (`tests/before.py`): reports, exports and the
OTLP output of every recorded corpus and a generated store equal the saved "before" outputs."""

from __future__ import annotations

import json

import pytest

from before import STORES, outputs, path_of


@pytest.mark.parametrize("name", STORES)
def test_every_output_equals_the_one_recorded_before_the_redesign(name: str):
    before = json.loads(path_of(name).read_text())
    now = json.loads(json.dumps(outputs(name)))
    assert sorted(now) == sorted(before)
    differ = [label for label in before if now[label] != before[label]]
    assert not differ, f"{name}: outputs differ from before: {differ}"
