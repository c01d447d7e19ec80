"""ocsight needs SQLite 3.35: an older one is a one-line error naming the version needed."""

from __future__ import annotations

import pytest

from ocsight.errors import OcsightError
from ocsight.sqlite_support import MINIMUM, require_sqlite


def test_an_older_sqlite_is_refused_with_the_version_needed():
    with pytest.raises(OcsightError) as e:
        require_sqlite((3, 34, 1))
    message = str(e.value)
    assert "SQLite 3.35.0 or later" in message and "3.34.1" in message and "\n" not in message


def test_the_oldest_supported_sqlite_and_newer_ones_are_accepted():
    require_sqlite(MINIMUM)
    require_sqlite((3, 51, 0))
