"""The token rule (`ocsight.normalise`) is the specification; the SQL the index stages with
(`ocsight.sources.normalise_sql`) gives exactly what it gives, in every era, with and without
`tokens.total`, for any stored value."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ocsight import normalise
from ocsight.model import Tokens
from ocsight.normalise import CACHED_IN_INPUT, DISJOINT, ERAS, REASONING_IN_OUTPUT, Stored
from ocsight.sources import normalise_sql

KEYS = ("input", "output", "reasoning", "cache_read", "cache_write")
PROVIDERS = ("anthropic", "openai", "amazon-bedrock", "google", "")
SQL = sqlite3.connect(":memory:")


def _sql(expression: str, stored: dict[str, Any]) -> Any:
    """An SQL expression over `x.t_<key>` and `x.cost` as `json_extract` reads them from `stored`."""
    columns = ", ".join(f"json_extract(:doc, '$.{k}') AS t_{k}" for k in (*KEYS, "total"))
    row = f"(SELECT {columns}, json_extract(:doc, '$.cost') AS cost, :provider AS provider, :era AS era) AS x"
    return SQL.execute(f"SELECT {expression} FROM {row}", {"doc": json.dumps(stored), "provider": stored.get("p", ""),
                                                           "era": stored.get("e", DISJOINT)}).fetchone()[0]


def _stored(doc: dict[str, Any]) -> Stored:
    return Stored(*(doc.get(k) for k in (*KEYS, "total")))


def sql_normalise(doc: dict[str, Any], era: str, provider: str) -> Tokens | None:
    counts = {k: normalise_sql.count(f"x.t_{k}") for k in KEYS}
    n = normalise_sql.normalised(counts, "x.era", "x.provider")
    row = _sql(f"json_array({n['valid']}, {', '.join(n[k] for k in KEYS)})", {**doc, "p": provider, "e": era})
    valid, *values = json.loads(row)
    return Tokens(*values) if valid else None


def sql_era(doc: dict[str, Any], session_era: str) -> str:
    stored = {k: f"x.t_{k}" for k in KEYS}
    return str(_sql(normalise_sql.era(stored, "x.t_total", f"'{session_era}'"), doc))


counts = st.one_of(st.none(), st.integers(0, 10**9), st.integers(-5, -1), st.floats(0, 1e9).map(float),
                   st.sampled_from([12.0, 12.5, "12", True, False]))
sane = st.one_of(st.none(), st.integers(0, 10**9))


@st.composite
def messages(draw: st.DrawFn, value: st.SearchStrategy[Any] = counts) -> dict[str, Any]:
    doc = {k: draw(value) for k in KEYS}
    doc = {k: v for k, v in doc.items() if v is not None}
    total = draw(st.sampled_from(["none", "disjoint", "inside", "other"]))
    numbers = {k: v if isinstance(v, int) and not isinstance(v, bool) else 0 for k, v in doc.items()}
    every = sum(numbers.values())
    if total == "disjoint":
        doc["total"] = every
    elif total == "inside":
        doc["total"] = every - numbers.get("reasoning", 0)
    elif total == "other":
        doc["total"] = draw(st.integers(0, 10**10))
    return doc


@settings(max_examples=400, deadline=None)
@given(messages(), st.sampled_from(ERAS), st.sampled_from(PROVIDERS))
def test_the_sql_normalises_any_stored_counts_as_the_rule_does(doc, era, provider):
    assert sql_normalise(doc, era, provider) == normalise.normalise(_stored(doc), era, provider)


@settings(max_examples=400, deadline=None)
@given(messages(sane), st.sampled_from(ERAS))
def test_the_sql_tells_a_messages_era_as_the_rule_does(doc, session_era):
    assert sql_era(doc, session_era) == normalise.era_of(_stored(doc), session_era)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.none(), st.integers(-10, 10**12), st.floats(-1, 1e6, allow_nan=False), st.booleans(),
                 st.text(max_size=3)))
def test_the_sql_reads_a_stored_cost_as_the_rule_does(cost):
    assert _sql(normalise_sql.cost_pico("x.cost"), {"cost": cost}) == normalise.cost_pico(cost)


@pytest.mark.parametrize(("version", "era"), [
    ("0.15.31", CACHED_IN_INPUT), ("1.0.40", CACHED_IN_INPUT), ("1.0.61", CACHED_IN_INPUT),
    ("1.0.62", REASONING_IN_OUTPUT), ("1.1.65", REASONING_IN_OUTPUT), ("1.13.9", REASONING_IN_OUTPUT),
    ("1.14.0", DISJOINT), ("1.18.33", DISJOINT), (None, DISJOINT), ("dev", DISJOINT), ("v1.2.3", REASONING_IN_OUTPUT),
])
def test_a_version_falls_back_to_the_era_it_wrote(version, era):
    assert normalise.era_for_version(version) == era


def test_cached_input_is_taken_out_of_the_prompt_before_1_0_62_but_for_cache_exclusive_providers():
    stored = Stored(input=1000, output=50, reasoning=10, cache_read=300, cache_write=100)
    assert normalise.normalise(stored, CACHED_IN_INPUT, "openai") == Tokens(600, 40, 10, 300, 100)
    assert normalise.normalise(stored, CACHED_IN_INPUT, "anthropic") == Tokens(1000, 40, 10, 300, 100)


def test_reasoning_is_taken_out_of_the_output_until_1_14():
    stored = Stored(input=10, output=50, reasoning=20)
    assert normalise.normalise(stored, REASONING_IN_OUTPUT, "openai") == Tokens(10, 30, 20, 0, 0)
    assert normalise.normalise(stored, DISJOINT, "openai") == Tokens(10, 50, 20, 0, 0)


def test_a_total_with_reasoning_outside_the_output_says_disjoint_whatever_the_session():
    stored = Stored(input=10, output=50, reasoning=20, total=80)
    assert normalise.era_of(stored, REASONING_IN_OUTPUT) == DISJOINT
    assert normalise.era_of(Stored(input=10, output=50, reasoning=20, total=60), DISJOINT) == REASONING_IN_OUTPUT


# JSON values a token count or a cost can hold: (JSON text, as a count, as a cost in picodollars);
# None: not a number of that kind (the record is skipped).
STORED_VALUES = [
    ("null", 0, 0), ("0", 0, 0), ("12", 12, 12_000_000_000_000), ("12.0", 12, 12_000_000_000_000),
    ("12.5", None, 12_500_000_000_000), ("0.0000015", None, 1_500_000), ("-5", None, None), ("-0.5", None, None),
    ('"12"', None, None), ('""', None, None), ('"abc"', None, None), ("true", 1, 1_000_000_000_000),
    ("[1]", None, None), ('{"a": 1}', None, None), ("9007199254740993", 9007199254740993, 9223372036854775807),
]


@pytest.mark.parametrize(("text", "count", "pico"), STORED_VALUES)
def test_a_stored_value_is_a_count_or_a_cost_only_when_it_is_a_non_negative_number(text, count, pico):
    value = json.loads(text)
    assert normalise.count(value) == count and normalise.cost_pico(value) == pico
    doc = {"input": value, "cost": value}
    got = _sql(f"json_array({normalise_sql.count('x.t_input')}, {normalise_sql.cost_pico('x.cost')})", doc)
    assert json.loads(got) == [count, pico]


def _ascending_id(ms: int, counter: int, tail: str = "AbCdEfGhIjKlMn") -> str:
    """An OpenCode message ID made at `ms` (`Identifier.create`: ms * 0x1000 + counter, in 48 bits)."""
    return f"msg_{(ms * 0x1000 + counter) % (1 << 48):012x}{tail}"


@given(st.integers(0, 1 << 42), st.integers(1, 4095), st.integers(-10**4, 10**11),
       st.one_of(st.none(), st.floats(0, 1e13, allow_nan=False), st.text(max_size=3)))  # SQLite has no booleans
def test_the_sql_reads_a_message_ids_lag_as_the_rule_does(ms, counter, lag, odd):
    con = sqlite3.connect(":memory:")
    expr = normalise_sql.id_lag("?1", "?2")
    for mid, created in ((_ascending_id(ms + lag, counter), ms), (_ascending_id(ms, counter), odd),
                         (f"prt_{ms:012x}", ms), ("msg_notanid", ms)):
        assert con.execute(f"SELECT {expr}", (mid, created)).fetchone()[0] == normalise.id_lag(mid, created)


def test_an_original_ids_lag_is_its_few_milliseconds_and_a_copys_the_time_until_the_fork():
    created = 1796676603458  # near the edge of the ID's 2**36 ms: the lag is taken modulo it
    assert normalise.id_lag(_ascending_id(created, 1), created) == 0
    assert normalise.id_lag(_ascending_id(created - 2, 3), created) == -2
    assert normalise.id_lag(_ascending_id(created + 90_000, 1), created) == 90_000
    assert normalise.id_lag("msg_hello", created) is None and normalise.id_lag(_ascending_id(created, 1), None) is None


def test_among_alike_messages_the_one_whose_id_was_made_soonest_counts():
    assert normalise.counted_among([(90_000, "ses_b"), (0, "ses_c"), (120_000, "ses_a")]) == (0, "ses_c")
    assert normalise.counted_among([(90_000, "ses_b"), (120_000, "ses_a")]) == (90_000, "ses_b")  # source gone
    assert normalise.counted_among([(None, "ses_b"), (90_000, "ses_a")]) == (None, "ses_b")
